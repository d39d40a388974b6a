/* server.c - the listening socket, one epoll set, a pool of workers.
 *
 * Every fd (listening socket, each VMM socket, each session's uffd) sits in
 * one epoll set with EPOLLONESHOT: an event goes to exactly one worker, so
 * one session's uffd is read by one thread at a time (a uffd serialises on
 * its wait queue anyway), while different VMs run on different workers.
 * An event names its connection by (slot, generation) in a table instead
 * of a pointer, so a connection ended by one worker is never touched by
 * another that still holds a stale event. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "server_internal.h"
#include "source.h"
#include "workingset.h"
#include "snapshot_format.h"

#define TAG_STOP UINT64_MAX
#define TAG_LISTEN (UINT64_MAX - 1)
#define GEN_MASK 0x3fffffffu

static uint64_t tag_of(const struct conn *c, enum watch_kind k)
{
	return ((uint64_t)c->slot << 32) | ((uint64_t)(c->gen & GEN_MASK) << 2) | k;
}

void server_log(struct pagein_server *srv, enum pagein_log_level lvl,
		const char *fmt, ...)
{
	if (lvl > srv->cfg.log_level)
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (srv->cfg.log) {
		srv->cfg.log(srv->cfg.log_opaque, lvl, line);
		return;
	}
	static const char *names[] = {"error", "warn", "info", "debug"};
	fprintf(stderr, "pagein: %s: %s\n", names[lvl], line);
}

/* ---- connection table ------------------------------------------------- */

static int table_add(struct conn_table *t, struct conn *c)
{
	pthread_mutex_lock(&t->lock);
	uint32_t i;
	for (i = 0; i < t->cap && t->slot[i]; i++)
		;
	if (i == t->cap) {
		uint32_t cap = t->cap ? t->cap * 2 : 16;
		struct conn **s = realloc(t->slot, cap * sizeof(*s));
		uint32_t *g = s ? realloc(t->gen, cap * sizeof(*g)) : NULL;
		if (s)
			t->slot = s;
		if (!s || !g) {
			pthread_mutex_unlock(&t->lock);
			return -ENOMEM;
		}
		t->gen = g;
		memset(t->slot + t->cap, 0, (cap - t->cap) * sizeof(*s));
		memset(t->gen + t->cap, 0, (cap - t->cap) * sizeof(*g));
		t->cap = cap;
	}
	t->slot[i] = c;
	c->slot = i;
	c->gen = t->gen[i];
	t->live++;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

/* The connection an event tag names, with a reference, or NULL if it has
 * ended since. */
static struct conn *table_get(struct conn_table *t, uint64_t tag)
{
	uint32_t slot = (uint32_t)(tag >> 32), gen = (uint32_t)(tag >> 2) & GEN_MASK;
	struct conn *c = NULL;
	pthread_mutex_lock(&t->lock);
	if (slot < t->cap && t->slot[slot] && (t->gen[slot] & GEN_MASK) == gen) {
		c = t->slot[slot];
		atomic_fetch_add(&c->refs, 1);
	}
	pthread_mutex_unlock(&t->lock);
	return c;
}

static void conn_unref(struct conn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) == 1)
		conn_free(c);
}

/* Ends a connection once, whoever gets there first. */
static void conn_end(struct pagein_server *srv, struct conn *c)
{
	struct conn_table *t = &srv->conns;
	pthread_mutex_lock(&t->lock);
	bool mine = t->slot[c->slot] == c && t->gen[c->slot] == c->gen;
	if (mine) {
		t->slot[c->slot] = NULL;
		t->gen[c->slot]++;
		t->live--;
	}
	pthread_mutex_unlock(&t->lock);
	if (!mine)
		return;
	epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->sock, NULL);
	if (c->session)
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, pagein_session_uffd(c->session), NULL);
	conn_unref(c); /* the table's reference */
}

/* ---- epoll ------------------------------------------------------------ */

static int watch(struct pagein_server *srv, int op, int fd, uint32_t events,
		 uint64_t tag)
{
	struct epoll_event ev = {.events = events | EPOLLONESHOT, .data.u64 = tag};
	return epoll_ctl(srv->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

#define SOCK_EVENTS (EPOLLIN | EPOLLRDHUP)

int server_watch_uffd(struct pagein_server *srv, struct conn *c)
{
	return watch(srv, EPOLL_CTL_ADD, pagein_session_uffd(c->session), EPOLLIN,
		     tag_of(c, WATCH_UFFD));
}

static void accept_all(struct pagein_server *srv)
{
	for (;;) {
		int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				server_log(srv, PAGEIN_LOG_ERROR, "accept: %s", strerror(errno));
			break;
		}
		struct conn *c = conn_new(srv, fd);
		if (!c || table_add(&srv->conns, c) < 0) {
			server_log(srv, PAGEIN_LOG_ERROR, "out of memory: dropping a connection");
			if (c)
				conn_free(c);
			else
				close(fd);
			continue;
		}
		server_log(srv, PAGEIN_LOG_INFO, "%s: connected", c->name);
		/* Until the handshake, the socket is the connection's only fd. */
		if (watch(srv, EPOLL_CTL_ADD, fd, SOCK_EVENTS, tag_of(c, WATCH_SOCK)) < 0)
			conn_end(srv, c);
	}
	watch(srv, EPOLL_CTL_MOD, srv->listen_fd, EPOLLIN, TAG_LISTEN);
}

static void handle_event(struct pagein_server *srv, const struct epoll_event *ev)
{
	struct conn *c = table_get(&srv->conns, ev->data.u64);
	if (!c)
		return;
	enum watch_kind kind = (enum watch_kind)(ev->data.u64 & 3);
	bool keep;
	int fd;
	uint32_t events;
	if (kind == WATCH_UFFD) {
		keep = conn_on_uffd(srv, c);
		fd = pagein_session_uffd(c->session);
		events = EPOLLIN;
	} else {
		keep = conn_on_sock(srv, c, ev->events);
		fd = c->sock;
		events = SOCK_EVENTS;
	}
	if (keep)
		watch(srv, EPOLL_CTL_MOD, fd, events, ev->data.u64);
	else
		conn_end(srv, c);
	conn_unref(c);
}

static void *worker(void *arg)
{
	struct pagein_server *srv = arg;
	struct epoll_event evs[16];
	for (;;) {
		int n = epoll_wait(srv->epfd, evs, 16, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			server_log(srv, PAGEIN_LOG_ERROR, "epoll_wait: %s", strerror(errno));
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == TAG_STOP)
				return NULL;
			if (evs[i].data.u64 == TAG_LISTEN)
				accept_all(srv);
			else
				handle_event(srv, &evs[i]);
		}
	}
}

/* ---- life ------------------------------------------------------------- */

static int listen_on(const char *path, struct pagein_error *err)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path))
		return pagein_fail(err, ENAMETOOLONG, "socket path %s is longer than %zu bytes",
				   path, sizeof(a.sun_path) - 1);
	strcpy(a.sun_path, path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return pagein_fail(err, EEXIST, "socket path %s exists and is not a socket", path);
		unlink(path); /* a stale socket from an earlier run */
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return pagein_fail(err, errno, "socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 128) < 0) {
		int e = errno;
		close(fd);
		return pagein_fail(err, e, "listen on %s: %s", path, strerror(e));
	}
	return fd;
}

int pagein_server_new(const struct pagein_server_config *cfg,
		      struct pagein_server **out, struct pagein_error *err)
{
	if (!cfg->socket_path || !cfg->snapshot_path)
		return pagein_fail(err, EINVAL, "a socket path and a snapshot are required");
	struct pagein_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->cfg = *cfg;
	srv->listen_fd = srv->epfd = srv->stop_fd = -1;
	pthread_mutex_init(&srv->conns.lock, NULL);
	srv->socket_path = strdup(cfg->socket_path);
	srv->snapshot_path = strdup(cfg->snapshot_path);
	int r = -ENOMEM;
	if (!srv->socket_path || !srv->snapshot_path)
		goto fail;
	srv->cfg.socket_path = srv->socket_path;
	srv->cfg.snapshot_path = srv->snapshot_path;
	r = pagein_source_open(cfg->snapshot_path, &srv->source, err);
	if (r < 0)
		goto fail;
	if (cfg->prefetch_path) {
		struct workingset ws;
		r = workingset_load(cfg->prefetch_path, &ws, err);
		if (r < 0)
			goto fail;
		if (ws.snapshot_size != pagein_source_size(srv->source))
			server_log(srv, PAGEIN_LOG_WARN,
				   "working set %s was recorded on a %llu-byte snapshot, this one has %llu bytes",
				   cfg->prefetch_path, (unsigned long long)ws.snapshot_size,
				   (unsigned long long)pagein_source_size(srv->source));
		srv->working_set = ws.offsets;
		srv->working_set_len = ws.count;
	} else if (source_is_pagein(srv->source) && source_pagein_meta(srv->source)->has_ws) {
		/* A pagein snapshot carries its working set: replay it unless
		 * --prefetch names another one. */
		const struct workingset *ws = &source_pagein_meta(srv->source)->ws;
		srv->working_set = malloc((ws->count ? ws->count : 1) * sizeof(uint64_t));
		if (!srv->working_set) {
			r = -ENOMEM;
			goto fail;
		}
		memcpy(srv->working_set, ws->offsets, ws->count * sizeof(uint64_t));
		srv->working_set_len = ws->count;
	}
	if (cfg->record_path && !(srv->record_path = strdup(cfg->record_path))) {
		r = -ENOMEM;
		goto fail;
	}
	srv->cfg.prefetch_path = NULL; /* not kept; the offsets are */
	srv->cfg.record_path = srv->record_path;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	srv->nworkers = cfg->threads ? cfg->threads : (unsigned)(ncpu > 0 ? ncpu : 1);
	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->epfd < 0 || srv->stop_fd < 0) {
		r = pagein_fail(err, errno, "epoll/eventfd: %s", strerror(errno));
		goto fail;
	}
	r = listen_on(cfg->socket_path, err);
	if (r < 0)
		goto fail;
	srv->listen_fd = r;
	/* Level-triggered and not one-shot: every worker sees the stop. */
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_STOP};
	epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->stop_fd, &ev);
	r = watch(srv, EPOLL_CTL_ADD, srv->listen_fd, EPOLLIN, TAG_LISTEN);
	if (r < 0)
		goto fail;
	*out = srv;
	return 0;
fail:
	pagein_server_free(srv);
	return r;
}

int pagein_server_run(struct pagein_server *srv)
{
	srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
	if (!srv->workers)
		return -ENOMEM;
	server_log(srv, PAGEIN_LOG_INFO, "serving %s (%s, %" PRIu64 " bytes) on %s with %u worker%s",
		   srv->snapshot_path, srv->source->ops->kind, pagein_source_size(srv->source),
		   srv->socket_path, srv->nworkers, srv->nworkers == 1 ? "" : "s");
	unsigned started = 0;
	for (; started < srv->nworkers; started++)
		if (pthread_create(&srv->workers[started], NULL, worker, srv) != 0)
			break;
	if (started == 0)
		return -EAGAIN;
	for (unsigned i = 0; i < started; i++)
		pthread_join(srv->workers[i], NULL);
	server_log(srv, PAGEIN_LOG_INFO, "stopping: %u session%s still open", srv->conns.live,
		   srv->conns.live == 1 ? "" : "s");
	return 0;
}

void pagein_server_stop(struct pagein_server *srv)
{
	uint64_t one = 1;
	ssize_t n = write(srv->stop_fd, &one, sizeof(one));
	(void)n;
}

void pagein_server_report(struct pagein_server *srv)
{
	struct conn_table *t = &srv->conns;
	pthread_mutex_lock(&t->lock);
	server_log(srv, PAGEIN_LOG_INFO, "report: %u connection%s", t->live, t->live == 1 ? "" : "s");
	for (uint32_t i = 0; i < t->cap; i++)
		if (t->slot[i])
			conn_log_stats(srv, t->slot[i]);
	pthread_mutex_unlock(&t->lock);
}

void pagein_server_free(struct pagein_server *srv)
{
	if (!srv)
		return;
	for (uint32_t i = 0; i < srv->conns.cap; i++) {
		struct conn *c = srv->conns.slot[i];
		if (c) {
			conn_log_end(srv, c, "server stopping");
			conn_end(srv, c);
		}
	}
	free(srv->conns.slot);
	free(srv->conns.gen);
	pthread_mutex_destroy(&srv->conns.lock);
	if (srv->listen_fd >= 0) {
		close(srv->listen_fd);
		unlink(srv->socket_path);
	}
	if (srv->epfd >= 0)
		close(srv->epfd);
	if (srv->stop_fd >= 0)
		close(srv->stop_fd);
	if (srv->source)
		pagein_source_unref(srv->source);
	free(srv->workers);
	free(srv->working_set);
	free(srv->record_path);
	free(srv->socket_path);
	free(srv->snapshot_path);
	free(srv);
}
