/* server_internal.h - what server.c (listening, workers) and conn.c (one
 * VMM connection) share. */
#ifndef PAGEIN_SERVER_INTERNAL_H
#define PAGEIN_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pagein.h"

struct json_decoder;

enum conn_state { CONN_HANDSHAKE, CONN_SESSION };

/* One VMM connection; becomes a session once its handshake is accepted. */
struct conn {
	atomic_int refs;       /* the table's + one per worker handling it */
	uint32_t slot, gen;    /* where the table keeps it; gen guards reuse */
	int sock;
	pid_t pid;             /* the VMM's, from SO_PEERCRED */
	char name[48];         /* "vm3 pid 1234", the prefix of its log lines */
	enum conn_state state;
	struct json_decoder *dec;
	int fds[3];            /* received with the handshake */
	int nfds;
	bool extra_fds;        /* more fds arrived than any protocol sends */
	unsigned id;           /* the N of vmN */
	size_t handshake_bytes;
	struct pagein_session *session;
	_Atomic(struct pagein_session *) published; /* for reports from other threads */
};

struct conn_table {
	pthread_mutex_t lock;
	struct conn **slot;
	uint32_t *gen;
	uint32_t cap, live;
};

struct pagein_server {
	struct pagein_server_config cfg;
	char *socket_path, *snapshot_path;
	struct pagein_source *source;
	int listen_fd, epfd, stop_fd;
	unsigned nworkers;
	pthread_t *workers;
	struct conn_table conns;
	atomic_uint next_id;
	uint64_t *working_set; /* --prefetch, loaded once, replayed per VM */
	size_t working_set_len;
	char *record_path;
};

/* epoll tags: what an event is about. */
enum watch_kind { WATCH_SOCK = 0, WATCH_UFFD = 1 };

void server_log(struct pagein_server *srv, enum pagein_log_level lvl,
		const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* conn.c */
struct conn *conn_new(struct pagein_server *srv, int sock);
void conn_free(struct conn *c);
/* Handles readiness of the connection's socket or uffd. Returns true to
 * keep watching, false when the connection must end (already logged). */
bool conn_on_sock(struct pagein_server *srv, struct conn *c, uint32_t events);
bool conn_on_uffd(struct pagein_server *srv, struct conn *c);
/* Logs the end of a session with its statistics. */
void conn_log_end(struct pagein_server *srv, struct conn *c, const char *why);
void conn_log_stats(struct pagein_server *srv, struct conn *c);

/* server.c: start watching the session's uffd. */
int server_watch_uffd(struct pagein_server *srv, struct conn *c);

#endif
