/* keeper_link.h - the engine's side of the keeper (docs/architecture.md,
 * "The keeper"): the messages on the SOCK_SEQPACKET socketpair between
 * `pagein serve` (the keeper) and the engine it runs, and the calls the
 * engine makes on it. */
#ifndef PAGEIN_KEEPER_LINK_H
#define PAGEIN_KEEPER_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "pagein.h"

/* Engine -> keeper: KEEP (fds) when a session starts, DROP when it ends.
 * Keeper -> engine at start: ADOPT (fds) per session, then DONE. */
enum { KMSG_KEEP = 1, KMSG_DROP = 2, KMSG_ADOPT = 3, KMSG_DONE = 4,
       KMSG_READY = 5 /* engine -> keeper: it serves (start went well) */ };
#define KMSG_PIDFD 1u /* a pidfd follows the uffd */
#define KMSG_MEM 2u   /* guest memory fd and bitmap fd come last */
/* fds, in order: state memfd, socket, uffd, [pidfd], [memory, bitmap] */
#define KMSG_MAX_FDS 6

struct keeper_msg {
	uint32_t type, id, flags;
	int32_t pid;
	char name[48];
	uint64_t dev, ino; /* READY with a listening fd: the socket file it created */
};

/* The env var naming the engine's end of the socketpair. */
#define KEEPER_ENV "PAGEIN_KEEPER_FD"

/* Engine: the link to use from now on (-1: none, the default). */
void keeper_link_attach(int fd);
bool keeper_link_active(void);
int keeper_link_fd(void);

struct conn;
struct pagein_server;
void keeper_send_keep(struct conn *c);
void keeper_send_drop(struct conn *c);
/* The engine serves: READY, with its listening socket if the keeper has
 * none yet (the first engine creates it, as without a keeper). */
void keeper_send_ready(struct pagein_server *srv);

/* Engine, at a handover, once the workers have stopped: stops and joins
 * every session's fill-ahead thread without ending any session. */
void keeper_quiesce(struct pagein_server *srv);

/* Engine: takes one ADOPT bundle (fds consumed either way). */
int keeper_adopt(struct pagein_server *srv, const struct keeper_msg *m,
		 int *fds, int nfds, struct pagein_error *err);

/* One message with its fds (SCM_RIGHTS); 0 on EOF, <0 -errno, else bytes. */
int keeper_recv(int fd, struct keeper_msg *m, int *fds, int *nfds, bool block);
int keeper_send(int fd, const struct keeper_msg *m, const int *fds, int nfds);

#endif
