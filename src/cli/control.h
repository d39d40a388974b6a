/* control.h - the sockets one `pagein serve` process serves, and its
 * control socket (`pagein serve --control PATH`, driven by `pagein ctl`).
 *
 * Every served socket is a pagein_server of its own (its snapshot, its
 * options, its workers), run on a thread of its own; they share the
 * daemon's log and one metrics endpoint. The control protocol (JSON lines)
 * is in docs/protocols.md. */
#ifndef PAGEIN_CLI_CONTROL_H
#define PAGEIN_CLI_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagein.h"
#include "serve_opts.h"

struct daemon_cfg {
	enum pagein_log_level log_level;
	enum pagein_log_format *log_format; /* the log callback's opaque */
	void (*log)(void *opaque, enum pagein_log_level lvl, const char *line);
	struct pagein_metrics *metrics; /* shared endpoint, or NULL */
	unsigned drain_ms;              /* for `ctl remove` */
};

void daemon_init(const struct daemon_cfg *cfg);

/* Starts serving a socket. argv: serve options (argv[0] is ignored),
 * copied. 0, or -1 with e->msg set. */
int daemon_add(int argc, char **argv, struct opt_err *e);

/* Starts serving the socket `pagein serve` itself was given; takes o's
 * allow lists; argv strings must outlive the daemon. */
int daemon_add_parsed(struct serve_opts *o, struct opt_err *e);
/* Starts the servers added so far (and from now on, each at once):
 * called once the log goes where it should. */
void daemon_launch(void);
/* SIGUSR1: every open session's statistics, on every socket. */
void daemon_report_all(void);

/* Sockets served now, and sessions open over all of them. */
unsigned daemon_sockets(void);
unsigned daemon_sessions(void);

/* SIGTERM: every socket drains; SIGTERM again: every socket stops. */
void daemon_drain_all(unsigned drain_ms);
void daemon_stop_all(void);

/* Blocks until the daemon is done: every server's run() has returned
 * and, with a control socket, a drain or stop was asked. Then frees the
 * servers. */
void daemon_wait(bool control);

/* Opens the control socket at path (mode 0600; a live one is refused, a
 * stale one replaced) and serves it on a thread of its own. 0, or -1
 * with e->msg set. */
int control_start(const char *path, struct opt_err *e);
/* keeper: serves the control socket fd a dead engine made at path (dev,
 * ino: its file, unlinked at the end if it is still that file). */
int control_serve(const char *path, int fd, uint64_t dev, uint64_t ino, struct opt_err *e);
void control_stop(void);

/* A line in the daemon's log, in its format (text or JSON). */
void daemon_log(enum pagein_log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* keeper: SIGUSR2: stop the workers without ending any session, then
 * exit DAEMON_EXIT_HANDOVER from daemon_wait() for the next engine. */
#define DAEMON_EXIT_HANDOVER 3
void daemon_hand_over(void);

/* keeper: the server of socket number sid (0: the command line's), or
 * NULL; a socket added by a dead engine, given back by the keeper (its
 * options as NUL-terminated strings; draining: removed again). */
struct pagein_server *daemon_server_by_sid(uint32_t sid);
/* keeper: socket numbers go on after sid (DONE's: the highest given out). */
void daemon_sids_from(uint32_t sid);
int daemon_add_kept(uint32_t sid, const char *payload, size_t plen, int listen_fd, uint64_t dev,
		    uint64_t ino, bool draining, struct opt_err *e);

#endif
