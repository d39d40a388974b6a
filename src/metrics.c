/* metrics.c - Prometheus metrics for `pagein serve --metrics ADDR`.
 *
 * libmicrohttpd serves GET /metrics on a thread of its own (its internal
 * polling thread, a few connections at once): a scrape never runs on a
 * worker. A scrape takes the metrics lock, copies the totals of ended
 * sessions and reads the live sessions' counters (relaxed atomic loads,
 * no I/O), then formats the text without any lock. Workers take the same
 * lock only when a session starts or ends. */
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "metrics.h"
#include "server_internal.h"
#include "snapshot_format.h"
#include "source.h"

#if MHD_VERSION < 0x00097002
typedef int MHD_Result_t;
#else
typedef enum MHD_Result MHD_Result_t;
#endif

/* Scrapes served at once; more wait in the listen backlog. */
#define HTTP_CONNECTION_LIMIT 8
#define HTTP_TIMEOUT_S 10

static const char *const cause_label[METRICS_END_CAUSES] = {
	[END_VMM_EXITED] = "vmm_exited", [END_VMM_GONE] = "vmm_gone",
	[END_HUNG_UP] = "hung_up",       [END_REFUSED] = "refused",
	[END_FAILED] = "failed",         [END_SERVER_STOP] = "server_stop",
};

void metrics_init(struct metrics *m)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	atomic_init(&m->corrupt_chunks, 0);
}

void metrics_fini(struct metrics *m)
{
	free(m->live);
	pthread_mutex_destroy(&m->lock);
}

/* One endpoint, the servers registered with it. */
struct pagein_metrics {
	struct MHD_Daemon *httpd;
	char *unix_path; /* unix:PATH, removed at the end if still ours */
	dev_t unix_dev;  /* that socket file, as created */
	ino_t unix_ino;
	/* Held by a scrape for all of its work (in memory, no I/O) and by a
	 * server registering or leaving: a server is never read after
	 * metrics_stop() returns. */
	pthread_mutex_t lock;
	struct pagein_server **srv;
	size_t n, cap;
};

/* ---- hooks ------------------------------------------------------------ */

void metrics_conn_accepted(struct pagein_server *srv)
{
	pthread_mutex_lock(&srv->metrics.lock);
	srv->metrics.connections++;
	pthread_mutex_unlock(&srv->metrics.lock);
}

void metrics_session_start(struct pagein_server *srv, struct conn *c)
{
	struct metrics *m = &srv->metrics;
	pthread_mutex_lock(&m->lock);
	m->sessions_started++;
	if (m->nlive == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 16;
		struct conn **n = realloc(m->live, cap * sizeof(*n));
		if (n) {
			m->live = n;
			m->cap = cap;
		}
	}
	/* Out of memory: the session is left out of the live sums (its
	 * totals still count when it ends). */
	if (m->nlive < m->cap)
		m->live[m->nlive++] = c;
	pthread_mutex_unlock(&m->lock);
}

static void add_stats(struct pagein_stats *to, const struct pagein_stats *st)
{
#define ADD(f) to->f += st->f
	ADD(faults_missing); ADD(faults_minor); ADD(requests);
	ADD(pages_copied); ADD(pages_zeroed); ADD(pages_continued);
	ADD(pages_written); ADD(wakes); ADD(eexist); ADD(eagain);
	ADD(removes); ADD(pages_removed); ADD(bytes_read); ADD(pages_poisoned);
	ADD(filled_fault); ADD(filled_fault_around); ADD(filled_prefetch);
	ADD(filled_background); ADD(filled_request); ADD(pages_total);
	ADD(faults_on_filling);
#undef ADD
}

static void add_latency(struct pagein_latency *to, const struct pagein_latency *l)
{
	for (unsigned b = 0; b <= PAGEIN_LATENCY_BUCKETS; b++)
		to->count[b] += l->count[b];
	to->sum_ns += l->sum_ns;
}

/* Reads a session's counters into *st and adds them to the sums. */
static void add_session(const struct pagein_session *ps, struct pagein_stats *to,
			struct pagein_latency *lat_to, struct pagein_stats *st)
{
	struct pagein_latency lat;
	pagein_session_stats(ps, st);
	pagein_session_latency(ps, &lat);
	add_stats(to, st);
	add_latency(lat_to, &lat);
}

void metrics_conn_end(struct pagein_server *srv, struct conn *c, int why)
{
	struct metrics *m = &srv->metrics;
	/* As the --on-failure policy sees it: a VM that cannot be served. */
	bool failed = why == END_FAILED ||
		      (why == END_REFUSED && (c->got_fds || c->session));
	pthread_mutex_lock(&m->lock);
	if (why >= 0 && why < METRICS_END_CAUSES)
		m->ended[why]++;
	if (failed)
		m->sessions_failed++;
	for (size_t i = 0; i < m->nlive; i++) {
		if (m->live[i] != c)
			continue;
		/* Its final statistics move from the live sums to the totals
		 * under the lock: no scrape sees them twice or not at all. */
		struct pagein_stats st;
		add_session(c->session, &m->done, &m->done_latency, &st);
		memmove(m->live + i, m->live + i + 1, (m->nlive - i - 1) * sizeof(*m->live));
		m->nlive--;
		break;
	}
	pthread_mutex_unlock(&m->lock);
}

void metrics_corrupt_chunk(struct pagein_server *srv)
{
	atomic_fetch_add_explicit(&srv->metrics.corrupt_chunks, 1, memory_order_relaxed);
}

/* ---- the scrape ------------------------------------------------------- */

struct vm_series {
	unsigned id;
	const char *socket; /* its server's; valid while the scrape holds the lock */
	struct pagein_stats st;
};

struct snapshot {
	uint64_t connections, sessions_started, sessions_failed;
	uint64_t ended[METRICS_END_CAUSES];
	struct pagein_stats all;   /* ended + live */
	struct pagein_latency latency;
	uint64_t open_sessions, open_connections, present, total;
	struct vm_series vm[METRICS_MAX_SESSION_SERIES];
	size_t nvm, unlabelled;
	uint64_t corrupt_chunks;
	struct source_pagein_stats cache; /* summed over pagein-format sources */
	bool any_pagein;
	struct source_remote_stats remote; /* summed over remote sources */
	bool any_remote;
};

static uint64_t filled_of(const struct pagein_stats *st)
{
	return st->filled_fault + st->filled_fault_around + st->filled_prefetch +
	       st->filled_background + st->filled_request;
}

/* Adds one server's figures to s (zeroed by the caller). */
static void take_snapshot(struct pagein_server *srv, struct snapshot *s)
{
	struct metrics *m = &srv->metrics;
	const char *sock = srv->socket_path ? srv->socket_path : "inherited";
	pthread_mutex_lock(&m->lock);
	s->connections += m->connections;
	s->sessions_started += m->sessions_started;
	s->sessions_failed += m->sessions_failed;
	for (int i = 0; i < METRICS_END_CAUSES; i++)
		s->ended[i] += m->ended[i];
	add_stats(&s->all, &m->done);
	add_latency(&s->latency, &m->done_latency);
	s->open_sessions += m->nlive;
	for (size_t i = 0; i < m->nlive; i++) {
		struct conn *c = m->live[i];
		struct pagein_stats st;
		add_session(c->session, &s->all, &s->latency, &st);
		uint64_t f = filled_of(&st);
		s->present += f < st.pages_total ? f : st.pages_total;
		s->total += st.pages_total;
		if (s->nvm < METRICS_MAX_SESSION_SERIES)
			s->vm[s->nvm++] = (struct vm_series){.id = c->id, .socket = sock, .st = st};
		else
			s->unlabelled++;
	}
	pthread_mutex_unlock(&m->lock);
	s->corrupt_chunks += atomic_load_explicit(&m->corrupt_chunks, memory_order_relaxed);
	pthread_mutex_lock(&srv->conns.lock);
	s->open_connections += srv->conns.live;
	pthread_mutex_unlock(&srv->conns.lock);
	if (source_is_pagein(srv->source)) {
		struct source_pagein_stats cs;
		source_pagein_stats(srv->source, &cs);
		s->cache.hits += cs.hits;
		s->cache.misses += cs.misses;
		s->cache.evictions += cs.evictions;
		s->cache.cached_bytes += cs.cached_bytes;
		s->cache.cache_limit += cs.cache_limit;
		s->any_pagein = true;
	}
	struct source_remote_stats rs;
	if (source_remote_stats(srv->source, &rs)) {
		s->remote.fetches += rs.fetches;
		s->remote.bytes += rs.bytes;
		s->remote.retries += rs.retries;
		s->remote.cache_hits += rs.cache_hits;
		s->remote.cache_misses += rs.cache_misses;
		s->remote.cache_bad += rs.cache_bad;
		s->remote.cache_evictions += rs.cache_evictions;
		s->remote.failed_chunks += rs.failed_chunks;
		s->remote.parked += rs.parked;
		s->any_remote = true;
	}
}

void pagein_server_totals(struct pagein_server *srv, struct pagein_server_totals *out)
{
	struct snapshot *s = calloc(1, sizeof(*s));
	memset(out, 0, sizeof(*out));
	if (!s)
		return;
	take_snapshot(srv, s);
	out->connections = s->connections;
	out->sessions_started = s->sessions_started;
	out->sessions_failed = s->sessions_failed;
	out->sessions_open = s->open_sessions;
	out->pages_present = s->present;
	out->pages_total = s->total;
	out->all = s->all;
	free(s);
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(FILE *f, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', f);
		if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

/* name{vm="vmN",socket="PATH"} */
static void vm_series_name(FILE *f, const char *name, const struct vm_series *v)
{
	fprintf(f, "%s{vm=\"vm%u\",socket=\"", name, v->id);
	label_value(f, v->socket);
	fputs("\"} ", f);
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(FILE *f, const char *name, const char *type, const char *help,
		uint64_t v)
{
	head(f, name, type, help);
	fprintf(f, "%s %" PRIu64 "\n", name, v);
}

struct labelled {
	const char *label;
	uint64_t v;
};

/* One metric with one label, a series per value. */
static void labelled(FILE *f, const char *name, const char *type, const char *help,
		     const char *label, const struct labelled *rows, size_t n)
{
	head(f, name, type, help);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, rows[i].label, rows[i].v);
}
#define ROWS(a) (a), sizeof(a) / sizeof((a)[0])

/* The exposition text (malloc'd), or NULL. */
static char *render(struct pagein_metrics *pm, size_t *len)
{
	struct snapshot *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);
	if (!f) {
		free(s);
		return NULL;
	}
	/* The lock for the whole scrape: the per-VM series name their
	 * server's socket, which lives until the server leaves. */
	pthread_mutex_lock(&pm->lock);
	for (size_t i = 0; i < pm->n; i++)
		take_snapshot(pm->srv[i], s);
	const struct pagein_stats *a = &s->all;
	one(f, "pagein_connections_accepted_total", "counter",
	    "VMM connections accepted.", s->connections);
	one(f, "pagein_sessions_started_total", "counter",
	    "Sessions started (handshakes accepted).", s->sessions_started);
	struct labelled ended[METRICS_END_CAUSES];
	for (int i = 0; i < METRICS_END_CAUSES; i++)
		ended[i] = (struct labelled){cause_label[i], s->ended[i]};
	labelled(f, "pagein_sessions_ended_total", "counter",
		 "Connections ended, by cause (hung_up and refused ones never started a session).",
		 "cause", ROWS(ended));
	one(f, "pagein_sessions_failed_total", "counter",
	    "VMs that could not be served (a session failure, or a refused handshake that handed over a uffd).",
	    s->sessions_failed);
	one(f, "pagein_sessions_open", "gauge", "Sessions open now.", s->open_sessions);
	one(f, "pagein_connections_open", "gauge",
	    "Connections open now (sessions and handshakes).", s->open_connections);
	one(f, "pagein_sessions_unlabelled", "gauge",
	    "Open sessions beyond the first 64, which get no per-VM series.", s->unlabelled);

	const struct labelled faults[] = {
		{"missing", a->faults_missing}, {"minor", a->faults_minor}, {"request", a->requests},
	};
	labelled(f, "pagein_faults_total", "counter",
		 "Faults served, by kind (request: stage-2 fault requests).", "kind", ROWS(faults));
	const struct labelled paths[] = {
		{"fault", a->filled_fault}, {"fault_around", a->filled_fault_around},
		{"prefetch", a->filled_prefetch}, {"background", a->filled_background},
		{"request", a->filled_request},
	};
	labelled(f, "pagein_pages_filled_total", "counter",
		 "Pages filled, by the path that filled them.", "path", ROWS(paths));
	one(f, "pagein_source_read_bytes_total", "counter",
	    "Snapshot bytes copied or written into guest memory.", a->bytes_read);
	const struct labelled ops[] = {
		{"copied", a->pages_copied}, {"zeroed", a->pages_zeroed},
		{"continued", a->pages_continued}, {"written", a->pages_written},
		{"poisoned", a->pages_poisoned},
	};
	labelled(f, "pagein_ioctl_ops_total", "counter",
		 "Page operations, by kind (copied: UFFDIO_COPY, zeroed: zero pages, continued: UFFDIO_CONTINUE, written: pwrite into guest memory, poisoned: UFFDIO_POISON).",
		 "op", ROWS(ops));
	const struct labelled results[] = {
		{"eexist", a->eexist}, {"eagain", a->eagain}, {"wake", a->wakes},
	};
	labelled(f, "pagein_ioctl_results_total", "counter",
		 "Fill outcomes other than success: eexist (already there), eagain (retried after pending events), wake (UFFDIO_WAKE issued).",
		 "result", ROWS(results));
	one(f, "pagein_faults_on_filling_total", "counter",
	    "Faults that found their page being filled ahead: the guest caught up with a filler.",
	    a->faults_on_filling);
	one(f, "pagein_removes_total", "counter", "UFFD_EVENT_REMOVE messages (balloon discards).", a->removes);
	one(f, "pagein_pages_removed_total", "counter", "Pages those discards covered.", a->pages_removed);
	one(f, "pagein_pages_poisoned_total", "counter",
	    "Pages the snapshot could not give (poisoned, --on-corrupt poison).", a->pages_poisoned);
	one(f, "pagein_corrupt_chunks_total", "counter",
	    "Times the snapshot could not give a chunk (checksum, decompression or read error).",
	    s->corrupt_chunks);

	one(f, "pagein_pages_present", "gauge", "Pages filled in the open sessions.", s->present);
	one(f, "pagein_pages", "gauge", "Guest pages of the open sessions.", s->total);

	head(f, "pagein_fault_latency_seconds", "histogram",
	     "Fault service latency, from the uffd read to the fault served.");
	uint64_t cum = 0;
	for (unsigned b = 0; b < PAGEIN_LATENCY_BUCKETS; b++) {
		cum += s->latency.count[b];
		fprintf(f, "pagein_fault_latency_seconds_bucket{le=\"%.9g\"} %" PRIu64 "\n",
			(double)pagein_latency_bound_ns(b) / 1e9, cum);
	}
	cum += s->latency.count[PAGEIN_LATENCY_BUCKETS];
	fprintf(f, "pagein_fault_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
	fprintf(f, "pagein_fault_latency_seconds_sum %.9f\n", (double)s->latency.sum_ns / 1e9);
	fprintf(f, "pagein_fault_latency_seconds_count %" PRIu64 "\n", cum);

	if (s->any_pagein) {
		one(f, "pagein_chunk_cache_hits_total", "counter",
		    "Chunk reads answered from the decompressed-chunk cache.", s->cache.hits);
		one(f, "pagein_chunk_cache_misses_total", "counter",
		    "Chunk reads that decompressed the chunk.", s->cache.misses);
		one(f, "pagein_chunk_cache_evictions_total", "counter",
		    "Chunks evicted from the cache.", s->cache.evictions);
		one(f, "pagein_chunk_cache_bytes", "gauge",
		    "Decompressed bytes held in the cache.", s->cache.cached_bytes);
		one(f, "pagein_chunk_cache_limit_bytes", "gauge",
		    "The cache's bound.", s->cache.cache_limit);
	}

	if (s->any_remote) {
		const struct source_remote_stats *rs = &s->remote;
		one(f, "pagein_remote_fetches_total", "counter",
		    "Range requests made for a remote snapshot.", rs->fetches);
		one(f, "pagein_remote_fetched_bytes_total", "counter",
		    "Bytes received for a remote snapshot.", rs->bytes);
		one(f, "pagein_remote_retries_total", "counter",
		    "Chunks fetched again after a transient failure.", rs->retries);
		one(f, "pagein_remote_cache_hits_total", "counter",
		    "Remote chunks read from the cache directory.", rs->cache_hits);
		one(f, "pagein_remote_cache_misses_total", "counter",
		    "Remote chunks that had to be fetched.", rs->cache_misses);
		one(f, "pagein_remote_cache_bad_total", "counter",
		    "Cache files that failed their checksum (deleted, fetched again).", rs->cache_bad);
		one(f, "pagein_remote_cache_evictions_total", "counter",
		    "Cache files evicted over --cache-size.", rs->cache_evictions);
		one(f, "pagein_remote_failed_chunks_total", "counter",
		    "Chunks not fetched by the deadline, or refused.", rs->failed_chunks);
		one(f, "pagein_remote_parked_faults_total", "counter",
		    "Faults parked on a chunk in flight.", rs->parked);
	}

	/* Per VM: the first METRICS_MAX_SESSION_SERIES open sessions, labelled
	 * by VM and by the socket it came in on (VM numbers are per socket). */
	head(f, "pagein_vm_faults_total", "counter", "Faults of one open VM (missing + minor + requests).");
	for (size_t i = 0; i < s->nvm; i++) {
		vm_series_name(f, "pagein_vm_faults_total", &s->vm[i]);
		fprintf(f, "%" PRIu64 "\n",
			s->vm[i].st.faults_missing + s->vm[i].st.faults_minor + s->vm[i].st.requests);
	}
	head(f, "pagein_vm_pages_present", "gauge", "Pages filled in one open VM.");
	for (size_t i = 0; i < s->nvm; i++) {
		uint64_t fl = filled_of(&s->vm[i].st), t = s->vm[i].st.pages_total;
		vm_series_name(f, "pagein_vm_pages_present", &s->vm[i]);
		fprintf(f, "%" PRIu64 "\n", fl < t ? fl : t);
	}
	head(f, "pagein_vm_pages", "gauge", "Guest pages of one open VM.");
	for (size_t i = 0; i < s->nvm; i++) {
		vm_series_name(f, "pagein_vm_pages", &s->vm[i]);
		fprintf(f, "%" PRIu64 "\n", s->vm[i].st.pages_total);
	}
	head(f, "pagein_vm_source_read_bytes_total", "counter", "Snapshot bytes read for one open VM.");
	for (size_t i = 0; i < s->nvm; i++) {
		vm_series_name(f, "pagein_vm_source_read_bytes_total", &s->vm[i]);
		fprintf(f, "%" PRIu64 "\n", s->vm[i].st.bytes_read);
	}
	head(f, "pagein_vm_complete", "gauge", "1 once every page of one open VM is in.");
	for (size_t i = 0; i < s->nvm; i++) {
		vm_series_name(f, "pagein_vm_complete", &s->vm[i]);
		fprintf(f, "%d\n", s->vm[i].st.complete_ns != 0);
	}
	pthread_mutex_unlock(&pm->lock);
	free(s);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static MHD_Result_t answer(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version,
			   const char *upload_data, size_t *upload_size, void **req)
{
	struct pagein_metrics *pm = cls;
	static const char not_found[] = "not found: pagein serves GET /metrics\n";
	static const char bad_method[] = "method not allowed: GET /metrics\n";
	struct MHD_Response *resp;
	unsigned code;
	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		resp = MHD_create_response_from_buffer(sizeof(bad_method) - 1, (void *)bad_method,
						       MHD_RESPMEM_PERSISTENT);
		code = MHD_HTTP_METHOD_NOT_ALLOWED;
		if (resp)
			MHD_add_response_header(resp, "Allow", "GET, HEAD");
	} else if (strcmp(url, "/metrics")) {
		resp = MHD_create_response_from_buffer(sizeof(not_found) - 1, (void *)not_found,
						       MHD_RESPMEM_PERSISTENT);
		code = MHD_HTTP_NOT_FOUND;
	} else {
		size_t len = 0;
		char *body = render(pm, &len);
		if (!body)
			return MHD_NO;
		resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
		if (!resp)
			free(body);
		code = MHD_HTTP_OK;
		if (resp)
			MHD_add_response_header(resp, "Content-Type",
						"text/plain; version=0.0.4; charset=utf-8");
	}
	if (!resp)
		return MHD_NO;
	MHD_Result_t r = MHD_queue_response(conn, code, resp);
	MHD_destroy_response(resp);
	return r;
}

/* ---- the listening socket --------------------------------------------- */

static int bad_addr(struct pagein_error *err, const char *addr)
{
	return pagein_fail(err, EINVAL, "--metrics %s: expected HOST:PORT or unix:PATH", addr);
}

static int bind_tcp(const char *addr, struct pagein_error *err)
{
	/* HOST:PORT; an IPv6 host in brackets: [::1]:9184. */
	const char *colon = strrchr(addr, ':');
	if (!colon || colon == addr || !colon[1])
		return bad_addr(err, addr);
	char host[256];
	size_t hl = (size_t)(colon - addr);
	if (addr[0] == '[') {
		if (hl < 3 || addr[hl - 1] != ']')
			return bad_addr(err, addr);
		hl -= 2;
		memcpy(host, addr + 1, hl);
	} else {
		if (hl >= sizeof(host) || memchr(addr, ':', hl))
			return bad_addr(err, addr);
		memcpy(host, addr, hl);
	}
	host[hl] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 1 || port > 65535)
		return pagein_fail(err, EINVAL, "--metrics %s: the port must be 1 to 65535", addr);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV},
			*res;
	int g = getaddrinfo(host, colon + 1, &hints, &res);
	if (g != 0)
		return pagein_fail(err, EINVAL, "--metrics %s: cannot resolve %s: %s", addr, host,
				   gai_strerror(g));
	int fd = -1, e = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return pagein_fail(err, e, "--metrics %s: cannot listen: %s%s", addr, strerror(e),
				   e == EADDRINUSE ? " (another process has that port)" : "");
	return fd;
}

int pagein_metrics_new(const char *addr, struct pagein_metrics **out,
		       struct pagein_error *err)
{
	*out = NULL;
	struct pagein_metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return pagein_fail(err, ENOMEM, "--metrics %s: out of memory", addr);
	pthread_mutex_init(&m->lock, NULL);
	int fd;
	if (!strncmp(addr, "unix:", 5)) {
		if (!addr[5]) {
			pagein_metrics_free(m);
			return bad_addr(err, addr);
		}
		fd = server_listen_unix("--metrics unix:", addr + 5, NULL, &m->unix_dev,
				       &m->unix_ino, err);
		if (fd >= 0 && !(m->unix_path = strdup(addr + 5))) {
			close(fd);
			fd = -ENOMEM;
		}
	} else {
		fd = bind_tcp(addr, err);
	}
	if (fd < 0) {
		pagein_metrics_free(m);
		return fd;
	}
	/* Its own polling thread: scrapes never run on a worker. */
	m->httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
				    answer, m,
				    MHD_OPTION_LISTEN_SOCKET, fd,
				    MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTION_LIMIT,
				    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
				    MHD_OPTION_END);
	if (!m->httpd) {
		close(fd);
		pagein_metrics_free(m);
		return pagein_fail(err, EIO, "--metrics %s: the HTTP server (libmicrohttpd) did not start",
				   addr);
	}
	*out = m;
	return 0;
}

void pagein_metrics_free(struct pagein_metrics *m)
{
	if (!m)
		return;
	if (m->httpd)
		MHD_stop_daemon(m->httpd); /* closes the listening socket */
	if (m->unix_path)
		server_unlink_socket(m->unix_path, m->unix_dev, m->unix_ino);
	free(m->unix_path);
	free(m->srv);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

int metrics_start(struct pagein_server *srv, const struct pagein_server_config *cfg,
		  struct pagein_error *err)
{
	struct metrics *m = &srv->metrics;
	if (cfg->metrics && cfg->metrics_addr)
		return pagein_fail(err, EINVAL,
				   "metrics and metrics_addr are both set: give the server one endpoint");
	struct pagein_metrics *pm = cfg->metrics;
	if (!pm && cfg->metrics_addr) {
		int r = pagein_metrics_new(cfg->metrics_addr, &pm, err);
		if (r < 0)
			return r;
		m->own_endpoint = true;
	}
	if (!pm)
		return 0;
	pthread_mutex_lock(&pm->lock);
	if (pm->n == pm->cap) {
		size_t cap = pm->cap ? pm->cap * 2 : 4;
		struct pagein_server **v = realloc(pm->srv, cap * sizeof(*v));
		if (!v) {
			pthread_mutex_unlock(&pm->lock);
			if (m->own_endpoint)
				pagein_metrics_free(pm);
			m->own_endpoint = false;
			return pagein_fail(err, ENOMEM, "metrics: out of memory");
		}
		pm->srv = v;
		pm->cap = cap;
	}
	pm->srv[pm->n++] = srv;
	pthread_mutex_unlock(&pm->lock);
	m->endpoint = pm;
	return 0;
}

void metrics_stop(struct pagein_server *srv)
{
	struct metrics *m = &srv->metrics;
	struct pagein_metrics *pm = m->endpoint;
	if (!pm)
		return;
	pthread_mutex_lock(&pm->lock);
	for (size_t i = 0; i < pm->n; i++)
		if (pm->srv[i] == srv) {
			pm->srv[i] = pm->srv[--pm->n];
			break;
		}
	pthread_mutex_unlock(&pm->lock);
	if (m->own_endpoint)
		pagein_metrics_free(pm);
	m->endpoint = NULL;
	m->own_endpoint = false;
}
