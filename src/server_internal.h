/* server_internal.h - what server.c (listening, workers, timers) and
 * conn.c (one VMM connection) share. */
#ifndef PAGEIN_SERVER_INTERNAL_H
#define PAGEIN_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "metrics.h"
#include "pagein.h"

struct json_decoder;

enum conn_state { CONN_HANDSHAKE, CONN_SESSION };

/* A log line for a condition that repeats: at most one per interval, the
 * next one saying how many were held back. The caller holds a lock. */
struct rate_limit {
	uint64_t last_ns; /* when the last line went out (0: never) */
	uint64_t held;    /* lines held back since */
};
/* True if a line may go out now; *held gets the count it must report. */
bool rate_limit_pass(struct rate_limit *r, uint64_t interval_ns, uint64_t *held);

/* CLOCK_MONOTONIC in ns (session.c). */
uint64_t now_ns(void);

/* One VMM connection; becomes a session once its handshake is accepted.
 * Several workers may handle its fds at once (socket, uffd, pidfd, the
 * session's event fd); the session is thread-safe, the socket side is
 * one worker's at a time (EPOLLONESHOT). */
struct conn {
	atomic_int refs;       /* the table's + one per worker handling it */
	uint32_t slot, gen;    /* where the table keeps it; gen guards reuse */
	int sock;
	/* The socket side (decoder, replies, fds received) is one worker's at
	 * a time by EPOLLONESHOT; this lock says so to the reader of the code
	 * and to TSan, which does not see the epoll re-arm as a hand-off. */
	pthread_mutex_t sock_lock;
	pid_t pid;             /* the VMM's, from SO_PEERCRED */
	int pidfd;             /* the VMM process, pinned at accept, or -1 */
	char name[48];         /* "vm3 pid 1234", the prefix of its log lines */
	_Atomic enum conn_state state; /* read by the timer's sweep too */
	atomic_bool timed_out; /* the sweep shut the socket: no handshake in time */
	uint64_t accepted_ns;
	size_t charged;        /* handshake bytes charged to the daemon budget */
	struct json_decoder *dec;
	int fds[3];            /* received with the handshake */
	int nfds;
	bool got_fds;          /* the VMM handed over fds (a uffd): it is a VM */
	bool extra_fds;        /* more fds arrived than any protocol sends */
	bool sock_eof;         /* the VMM closed its end (no more messages) */
	unsigned id;           /* the N of vmN */
	size_t handshake_bytes;
	char *out;             /* replies not yet sent (the VMM reads slowly) */
	size_t out_len, out_cap;
	struct pagein_session *session;
	struct pagein_server *srv;  /* for the session's event callback */
	/* Event lines, rate-limited per kind: when the last was logged and
	 * how many were held back since. */
	pthread_mutex_t event_lock;
	struct rate_limit event_log[2];
	_Atomic(struct pagein_session *) published; /* for reports from other threads */
	struct kstate *kst;    /* keeper: the session's state memfd, or NULL */
	bool hs_peek;          /* keeper: the handshake is peeked at, and the
				* keeper holds the socket (keeper_link.h) */
};

struct conn_table {
	pthread_mutex_t lock;
	struct conn **slot;
	uint32_t *gen;
	uint32_t cap, live;
	size_t handshake_bytes; /* buffered by connections still handshaking */
};

struct pagein_server {
	struct pagein_server_config cfg;
	char *socket_path, *snapshot_path;
	struct pagein_source *source;
	int listen_fd, epfd, stop_fd, timer_fd, drain_fd;
	/* listen_fd is closed by a drain while another worker may accept on
	 * it: both hold this lock (accept_some for its whole loop). */
	pthread_mutex_t listen_lock;
	bool own_socket;       /* created socket_path (not inherited): unlink it */
	/* pagein_server_drain(): the timeout asked for, and (under
	 * accept_lock) when the drain gives up; drain_over once drained or
	 * timed out (logged once). */
	atomic_uint drain_timeout_ms;
	atomic_bool drain_asked, draining, drain_over;
	uint64_t drain_deadline_ns;
	unsigned nworkers;
	pthread_t *workers;
	struct conn_table conns;
	uint64_t *working_set; /* --prefetch, loaded once, replayed per VM */
	size_t working_set_len;
	char *record_path;
	/* accept() backoff after EMFILE/ENFILE/ENOMEM: the listening socket
	 * is left out of epoll until this time (the timer puts it back). */
	pthread_mutex_t accept_lock;
	uint64_t accept_resume_ns;
	struct rate_limit accept_err_log, cap_log;
	struct rate_limit refused_log; /* --allow-uid/gid */
	uint32_t *allow_uids, *allow_gids; /* copies of the config's */
	dev_t sock_dev; /* the socket file created, unlinked at exit if still it */
	ino_t sock_ino;
	struct metrics metrics; /* --metrics: totals kept whether served or not */
	uint32_t keeper_sid;    /* keeper: the socket's number (--control) */
};

/* epoll tags: what an event is about (the low 2 bits of a connection's). */
enum watch_kind { WATCH_SOCK = 0, WATCH_UFFD = 1, WATCH_PIDFD = 2, WATCH_EVENT = 3 };

struct json_object;

/* One log line. event names what happened (snake_case: "session_ended");
 * c is the VM it is about, or NULL; fields (may be NULL; taken) are extra
 * values for the JSON format. Text: "vm3 pid 1234: " + the message, as
 * ever; JSON (--log-format json): one object per line, {"ts", "level",
 * "vm", "pid", "event", "msg", fields...}. */
void server_log_fields(struct pagein_server *srv, enum pagein_log_level lvl,
		       const struct conn *c, const char *event,
		       struct json_object *fields, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
#define server_log(srv, lvl, c, event, ...) \
	server_log_fields(srv, lvl, c, event, NULL, __VA_ARGS__)

/* Why a connection ends: decides the log line and, for failures, the
 * --on-failure policy. */
enum conn_end_why {
	END_VMM_EXITED,   /* its pidfd said so */
	END_VMM_GONE,     /* a fill answered ESRCH, or EOF with no pidfd */
	END_HUNG_UP,      /* closed before a session existed */
	END_REFUSED,      /* handshake refused (failure if it sent a uffd) */
	END_FAILED,       /* the session cannot go on */
	END_SERVER_STOP,  /* the daemon stops */
};

/* conn.c */
struct conn *conn_new(struct pagein_server *srv, int sock);
void conn_free(struct conn *c);
/* Handlers of readiness of the connection's fds. Return true to keep
 * watching the fd; false after calling server_end_conn(). */
/* The socket: *next is what to watch it for now (EPOLLIN, EPOLLOUT while
 * replies wait, 0 once the VMM closed its end). */
bool conn_on_sock(struct pagein_server *srv, struct conn *c, uint32_t *next);
bool conn_on_uffd(struct pagein_server *srv, struct conn *c);
bool conn_on_pidfd(struct pagein_server *srv, struct conn *c);
bool conn_on_event(struct pagein_server *srv, struct conn *c);
/* Logs the end (statistics, recording) and applies the failure policy.
 * Called once per connection, by whoever ends it. */
void conn_finish(struct pagein_server *srv, struct conn *c,
		 enum conn_end_why why, const char *detail);
void conn_log_stats(struct pagein_server *srv, struct conn *c);

/* server.c */
/* Ends a connection once, whoever gets there first (others' calls do
 * nothing). */
void server_end_conn(struct pagein_server *srv, struct conn *c,
		     enum conn_end_why why, const char *detail);
/* Starts watching the session's uffd and event fd, and the pidfd. */
int server_watch_session(struct pagein_server *srv, struct conn *c);
/* A listening Unix socket (non-blocking) at path; a stale socket file is
 * replaced, a live one or any other file refused. what prefixes the path
 * in refusals ("--socket "). perm (may be NULL): its socket_mode and
 * owner/group are applied after bind, before listen. *dev and *ino get
 * the socket file created, for server_unlink_socket. The fd, or -errno
 * with err filled. */
int server_listen_unix(const char *what, const char *path,
		       const struct pagein_server_config *perm,
		       dev_t *dev, ino_t *ino, struct pagein_error *err);
/* Removes the socket file at path only if it is still the one created
 * (dev, ino): a file someone put there since is left alone. */
void server_unlink_socket(const char *path, dev_t dev, ino_t ino);
/* Charges handshake bytes to the daemon-wide budget; false if over. */
bool server_charge_handshake(struct pagein_server *srv, struct conn *c, size_t n);

/* keeper (keeper_link.c, conn.c, server.c) */
struct kstate;
/* A session the keeper hands over: resumes in the session state. Takes
 * sock, pidfd (may be -1), uffd, mem_fd, bitmap_fd and k either way. */
int conn_adopt(struct pagein_server *srv, struct kstate *k, int sock, int pidfd,
	       int uffd, int mem_fd, int bitmap_fd, struct pagein_error *err);
/* A connection the keeper holds in its handshake (a dead engine's):
 * read again from its first byte. Takes sock either way. */
int conn_adopt_pending(struct pagein_server *srv, unsigned id, int sock,
		       struct pagein_error *err);
/* The handshake is peeked at from its first byte on (SO_PEEK_OFF), or
 * read as usual again (peek offset off). False if the socket cannot. */
bool conn_peek_handshake(struct conn *c);
void conn_unpeek_handshake(struct conn *c);
/* Connection numbers go on after id (one sequence per process). */
void conn_ids_from(unsigned id);
/* Puts c in the connection table / watches its socket for events. */
int server_add_conn(struct pagein_server *srv, struct conn *c);
int server_watch_sock(struct pagein_server *srv, struct conn *c, uint32_t events);

#endif
