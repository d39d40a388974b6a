/* metrics.h - `pagein serve --metrics ADDR`: Prometheus text exposition at
 * GET /metrics, served by libmicrohttpd on its own thread (scrapes never
 * run on the workers that serve faults).
 *
 * Daemon-wide counters survive session ends: a session that ends has its
 * final statistics folded into the daemon's totals (metrics_session_end),
 * and a scrape adds the live sessions' current statistics, under one lock,
 * so every counter only grows. */
#ifndef PAGEIN_METRICS_H
#define PAGEIN_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pagein.h"

struct pagein_server;
struct conn;
struct MHD_Daemon;

/* Live sessions beyond this many get no per-VM series (they count in the
 * totals only). */
#define METRICS_MAX_SESSION_SERIES 64
#define METRICS_END_CAUSES 6 /* enum conn_end_why */

struct metrics {
	/* The endpoint this server is registered with (config.metrics, or
	 * its own from config.metrics_addr), or NULL. */
	struct pagein_metrics *endpoint;
	bool own_endpoint;
	/* Held briefly by a worker when a session starts or ends, and by a
	 * scrape while it reads the live sessions' counters (relaxed atomic
	 * loads): never across I/O. */
	pthread_mutex_t lock;
	struct conn **live; /* sessions registered, oldest first */
	size_t nlive, cap;
	uint64_t connections;        /* accepted */
	uint64_t sessions_started;
	uint64_t sessions_failed;    /* VMs that could not be served */
	uint64_t ended[METRICS_END_CAUSES];
	struct pagein_stats done;    /* ended sessions, summed */
	struct pagein_latency done_latency;
	atomic_uint_fast64_t corrupt_chunks;
};

/* Registers srv with its endpoint: config.metrics, or a new one of its
 * own on config.metrics_addr (0, or -errno with a sentence naming
 * --metrics ADDR in err). */
int metrics_start(struct pagein_server *srv, const struct pagein_server_config *cfg,
		  struct pagein_error *err);
/* Unregisters srv (no scrape reads it after this returns) and stops an
 * endpoint of its own. */
void metrics_stop(struct pagein_server *srv);
void metrics_init(struct metrics *m);
void metrics_fini(struct metrics *m);

/* Hooks (cheap; no-ops are fine when --metrics is off). */
void metrics_conn_accepted(struct pagein_server *srv);
void metrics_session_start(struct pagein_server *srv, struct conn *c);
/* Once per connection, after its session (if any) was stopped: counts the
 * cause and folds the session's final statistics into the totals. */
void metrics_conn_end(struct pagein_server *srv, struct conn *c, int why);
void metrics_corrupt_chunk(struct pagein_server *srv);

#endif
