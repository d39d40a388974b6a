/* keeper_link.h - the engine's side of the keeper (docs/architecture.md,
 * "The keeper"): the messages on the SOCK_SEQPACKET socketpair between
 * `pagein serve` (the keeper) and the engine it runs, and the calls the
 * engine makes on it. */
#ifndef PAGEIN_KEEPER_LINK_H
#define PAGEIN_KEEPER_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "pagein.h"

/* Engine -> keeper: PENDING (the socket) when a connection is accepted,
 * KEEP (fds) when its session starts, DROP when it ends.
 * Keeper -> engine at start: ADOPT (fds) per session and ADOPT_PENDING
 * (the socket) per connection still in its handshake, then DONE.
 * Keeper -> engine later: KEPT, the answer to a KEEP with KMSG_CONSUME.
 *
 * A handshake is only peeked at (SO_PEEK_OFF) while it arrives, so that
 * its bytes and fds stay in the socket, which the keeper holds from the
 * accept on: a new engine reads the same handshake again. Once it is
 * complete, the keeper takes its bytes off the socket (KEEP with
 * KMSG_CONSUME) in the same step as it takes the session: no moment
 * exists where a crash loses either. */
enum { KMSG_KEEP = 1, KMSG_DROP = 2, KMSG_ADOPT = 3, KMSG_DONE = 4,
       KMSG_READY = 5, /* engine -> keeper: it serves (start went well) */
       KMSG_PENDING = 6, KMSG_KEPT = 7, KMSG_ADOPT_PENDING = 8,
       /* --control (docs/architecture.md, "The keeper"): both ways, the
	* control socket (CONTROL) and each socket added by `pagein ctl
	* add` (SOCKET: id = its number, the listening fd, and its serve
	* options as a payload of NUL-terminated strings); engine ->
	* keeper: a socket's drain began (SOCKET_DRAIN), it is gone
	* (SOCKET_GONE). Sessions and pending connections name their
	* socket (conn.sid; 0: the one given on the command line). */
       KMSG_CONTROL = 9, KMSG_SOCKET = 10, KMSG_SOCKET_DRAIN = 11, KMSG_SOCKET_GONE = 12 };
#define KMSG_PIDFD 1u   /* a pidfd follows the uffd */
#define KMSG_MEM 2u     /* guest memory fd and bitmap fd come last */
#define KMSG_CONSUME 4u /* KEEP: take keep.consume handshake bytes off the
			 * socket, then answer KEPT */
#define KMSG_FAILED 8u  /* KEPT: could not (the session is not kept) */
#define KMSG_CAN_PENDING 16u /* DONE: the keeper takes PENDING and CONSUME
			      * (an older keeper, after an upgrade, does not) */
#define KMSG_DRAINING 32u /* SOCKET (keeper -> engine): its drain had begun */
#define KMSG_FDSTORE 64u  /* DONE: systemd's fd store holds every session:
			   * a drain that gives up hands them over (exit 3)
			   * instead of ending them */
/* The largest payload (SOCKET's options). */
#define KMSG_MAX_PAYLOAD 65536
/* fds, in order: state memfd, socket, uffd, [pidfd], [memory, bitmap] */
#define KMSG_MAX_FDS 6

struct keeper_msg {
	uint32_t type, id, flags;
	int32_t pid;
	char name[48];
	union {
		/* READY, CONTROL, SOCKET: the socket file created (0, 0:
		 * inherited, not ours to unlink) */
		struct { uint64_t dev, ino; } file;
		/* PENDING, KEEP, ADOPT, ADOPT_PENDING: the socket it came
		 * to; KEEP with KMSG_CONSUME: the handshake's length */
		struct { uint64_t consume, sid; } conn;
	};
};

/* The env var naming the engine's end of the socketpair. */
#define KEEPER_ENV "PAGEIN_KEEPER_FD"

/* Engine: the link to use from now on (-1: none, the default). */
void keeper_link_attach(int fd);
bool keeper_link_active(void);
int keeper_link_fd(void);

struct conn;
struct pagein_server;
/* A connection just accepted (or adopted in its handshake): its socket to
 * the keeper, and its handshake peeked at from now on. False without a
 * keeper that takes it (the handshake is then read as without one). */
bool keeper_send_pending(struct conn *c);
/* Hands the session to the keeper; consume: the handshake's length when
 * it was peeked at (0 otherwise). Negative if the keeper could not take
 * the handshake off the socket: the session must end. */
int keeper_send_keep(struct conn *c, size_t consume);
void keeper_send_drop(struct conn *c);
/* The engine serves: READY, with its listening socket if the keeper has
 * none yet (the first engine creates it, as without a keeper). */
void keeper_send_ready(struct pagein_server *srv);

/* Engine, at a handover, once the workers have stopped: stops and joins
 * every session's fill-ahead thread without ending any session. */
void keeper_quiesce(struct pagein_server *srv);

/* Engine, at start: DONE said what the keeper understands, and the
 * highest connection number an engine gave out (id): numbers go on from
 * there, so that no two VMs of one daemon share a name or a --record %n. */
void keeper_link_done(const struct keeper_msg *m);
bool keeper_link_fdstore(void);

/* Engine: a session or connection whose socket no longer exists (nothing
 * can serve it): its VMM is killed through its pidfd (fail closed), the
 * keeper forgets it. Does not close fds. */
void keeper_orphan(const struct keeper_msg *m, const int *fds, int nfds);
/* Engine: takes one ADOPT_PENDING (its socket), as a new connection. */
int keeper_adopt_pending(struct pagein_server *srv, const struct keeper_msg *m,
			 int *fds, int nfds, struct pagein_error *err);
/* Engine: takes one ADOPT bundle (fds consumed either way). */
int keeper_adopt(struct pagein_server *srv, const struct keeper_msg *m,
		 int *fds, int nfds, struct pagein_error *err);

/* Takes a handshake's len bytes off a stream socket that were peeked at,
 * closing the fds that came with them (the peek installed copies). */
bool keeper_discard(int sock, uint64_t len);

/* One message with its fds (SCM_RIGHTS); 0 on EOF, <0 -errno, else bytes.
 * A payload follows the message (plen bytes; keeper_recv drops it). */
int keeper_recv(int fd, struct keeper_msg *m, int *fds, int *nfds, bool block);
int keeper_recv_payload(int fd, struct keeper_msg *m, char *payload, size_t cap, size_t *plen,
			int *fds, int *nfds, bool block);
int keeper_send(int fd, const struct keeper_msg *m, const int *fds, int nfds);
int keeper_send_payload(int fd, const struct keeper_msg *m, const void *payload, size_t plen,
			const int *fds, int nfds);

/* --control, engine side. The socket number a server has (0 unless set),
 * and the socket file it now owns (unlinked when it is removed or at the
 * end) though its fd came from the keeper. */
void keeper_set_sid(struct pagein_server *srv, uint32_t sid);
void keeper_claim_socket(struct pagein_server *srv, uint64_t dev, uint64_t ino);
/* A socket `pagein ctl add` started serving: its listening fd and its
 * options (argv[1..argc-1]) to the keeper. */
void keeper_send_socket(struct pagein_server *srv, int argc, char **argv);
void keeper_send_socket_msg(uint32_t type, uint32_t sid); /* DRAIN, GONE */
/* The control socket just created (path's dev, ino: ours). */
void keeper_send_control(int fd, uint64_t dev, uint64_t ino);

#endif
