/* handshake.h - the VMM side of the Firecracker UFFD handshake: connect to
 * the handler's Unix socket and send one JSON array of regions with the
 * file descriptors as SCM_RIGHTS (see docs/protocols.md). */
#ifndef VMMSIM_HANDSHAKE_H
#define VMMSIM_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "guest_memory.h"

/* The Firecracker a run plays, named by the release that changed what a
 * handler sees. 1.1 (v1.1-v1.6) sends base_host_virt_addr, size, offset;
 * 1.7 (v1.7-v1.11) adds page_size_kib; 1.12 (v1.12 to today) adds
 * page_size. Before v1.12 the socket is closed right after the handshake
 * and UFFDIO_API asks for REMOVE events only with a balloon; since, the
 * socket stays open until exit and REMOVE is always asked for. */
enum fc_version { FC_1_1, FC_1_7, FC_1_12 };

#define HS_MAX_FDS 3

/* Connects to a SOCK_STREAM Unix socket, retrying for up to 5 s while it
 * does not exist yet or refuses (the handler may still be starting).
 * Prints why and returns -1 on failure. */
int hs_connect(const char *path);

/* The regions of g as the JSON array that version v sends; extra adds an
 * unknown "gpa_start" field to each region. malloc'd, caller frees. */
char *hs_build_json(const struct guest *g, enum fc_version v, bool extra);

/* Sends len bytes in `pieces` sendmsg()s 20 ms apart (1 = a single
 * message), the fds attached to the first one. Prints why and returns -1
 * on failure. */
int hs_send(int sock, const char *data, size_t len, const int *fds, unsigned nfds,
	    unsigned pieces);

#endif
