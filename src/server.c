/* server.c - the listening socket, one epoll set, a pool of workers.
 *
 * Every fd (listening socket, each VMM socket, each session's uffd, event
 * fd and the VMM's pidfd) sits in one epoll set with EPOLLONESHOT: an
 * event goes to exactly one worker, which handles a bounded budget and
 * re-arms the fd, so a ready fd goes to the back of the line and busy VMs
 * take turns (round-robin) instead of one holding a worker. An event names
 * its connection by (slot, generation) in a table instead of a pointer, so
 * a connection ended by one worker is never touched by another that still
 * holds a stale event.
 *
 * Limits a hostile or broken peer meets: --max-connections open at once;
 * --handshake-timeout to complete a handshake; HANDSHAKE_BUDGET bytes held
 * by half-sent handshakes daemon-wide; accept() failing for lack of fds or
 * memory pauses accepting (no busy loop) while open sessions go on. */
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "error.h"
#include "keeper_link.h"
#include "log_time.h"
#include "server_internal.h"
#include "source.h"
#include "workingset.h"
#include "snapshot_format.h"

#define TAG_STOP UINT64_MAX
#define TAG_LISTEN (UINT64_MAX - 1)
#define TAG_TIMER (UINT64_MAX - 2)
#define TAG_DRAIN (UINT64_MAX - 3)
#define GEN_MASK 0x3fffffffu
/* The housekeeping tick: handshake timeouts, resuming accept(). */
#define TICK_NS (100ull * 1000 * 1000)
/* After accept() fails for lack of fds or memory, wait this long before
 * trying again: the condition lasts until sessions end. */
#define ACCEPT_BACKOFF_NS (100ull * 1000 * 1000)
/* At most one line per this interval for a condition that repeats. */
#define LOG_INTERVAL_NS (10ull * 1000 * 1000 * 1000)
/* Bytes all half-sent handshakes may hold together: 16 one-MiB handshakes
 * (no real one is near 1 MiB; Firecracker's are a few hundred bytes). The
 * JSON parser may hold about twice what it was fed (its buffers double),
 * so this bounds the daemon's handshake memory to some 32 MiB. */
#define HANDSHAKE_BUDGET (16ull << 20)
#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u
#define DEFAULT_MAX_CONNECTIONS 1024u
/* The smallest snapshot the daemon serves. No VM boots in less: a
 * Firecracker guest has at least a few MiB (its kernel alone is more), and
 * the test scripts use 4 MiB and up. What is smaller is nearly always
 * the wrong file: the VM state file (some KiB) given for the memory file.
 * 64 KiB stays far below any real guest yet above every such mistake.
 * The library (pagein_source_open, sessions) has no such floor. */
#define MIN_GUEST_BYTES (64u << 10)
/* Connections accepted per wake-up of the listening socket. */
#define ACCEPTS_PER_WAKE 16

static uint64_t tag_of(const struct conn *c, enum watch_kind k)
{
	return ((uint64_t)c->slot << 32) | ((uint64_t)(c->gen & GEN_MASK) << 2) | k;
}


void server_log_fields(struct pagein_server *srv, enum pagein_log_level lvl,
		       const struct conn *c, const char *event,
		       struct json_object *fields, const char *fmt, ...)
{
	if (lvl > srv->cfg.log_level) {
		json_object_put(fields);
		return;
	}
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	char text[1100];
	const char *line = text;
	struct json_object *o = NULL;
	if (srv->cfg.log_format == PAGEIN_LOG_JSON) {
		char ts[40];
		log_utc_now(ts, sizeof(ts));
		o = json_object_new_object();
		if (!o) { /* out of memory: the text line, not nothing */
			snprintf(text, sizeof(text), "%s%s%s", c ? c->name : "", c ? ": " : "", msg);
			goto out;
		}
		json_object_object_add(o, "ts", json_object_new_string(ts));
		json_object_object_add(o, "level", json_object_new_string(log_level_names[lvl]));
		if (c) {
			char vm[16];
			snprintf(vm, sizeof(vm), "vm%u", c->id);
			json_object_object_add(o, "vm", json_object_new_string(vm));
			json_object_object_add(o, "pid", json_object_new_int64(c->pid));
		}
		json_object_object_add(o, "event", json_object_new_string(event));
		json_object_object_add(o, "msg", json_object_new_string(msg));
		if (fields) {
			json_object_object_foreach(fields, k, v)
				json_object_object_add(o, k, json_object_get(v));
		}
		line = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							 JSON_C_TO_STRING_NOSLASHESCAPE);
		if (!line)
			line = msg;
	} else {
		snprintf(text, sizeof(text), "%s%s%s", c ? c->name : "", c ? ": " : "", msg);
	}
out:
	if (srv->cfg.log)
		srv->cfg.log(srv->cfg.log_opaque, lvl, line);
	else if (o)
		fprintf(stderr, "%s\n", line);
	else
		fprintf(stderr, "pagein: %s: %s\n", log_level_names[lvl], line);
	json_object_put(o);
	json_object_put(fields);
}

/* {"held_back": n}: lines of a repeating condition not written since the
 * last one. */
static struct json_object *held_fields(uint64_t n)
{
	struct json_object *f = json_object_new_object();
	if (f)
		json_object_object_add(f, "held_back", json_object_new_uint64(n));
	return f;
}

bool rate_limit_pass(struct rate_limit *r, uint64_t interval_ns, uint64_t *held)
{
	uint64_t now = now_ns();
	if (r->last_ns && now - r->last_ns < interval_ns) {
		r->held++;
		*held = r->held;
		return false;
	}
	r->last_ns = now;
	*held = r->held;
	r->held = 0;
	return true;
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

bool server_charge_handshake(struct pagein_server *srv, struct conn *c, size_t n)
{
	struct conn_table *t = &srv->conns;
	bool ok = true;
	pthread_mutex_lock(&t->lock);
	if (n == 0) { /* the handshake is over: give its bytes back */
		t->handshake_bytes -= c->charged;
		c->charged = 0;
	} else if (t->handshake_bytes + n > HANDSHAKE_BUDGET) {
		ok = false;
	} else {
		t->handshake_bytes += n;
		c->charged += n;
	}
	pthread_mutex_unlock(&t->lock);
	return ok;
}

void server_end_conn(struct pagein_server *srv, struct conn *c,
		     enum conn_end_why why, const char *detail)
{
	struct conn_table *t = &srv->conns;
	pthread_mutex_lock(&t->lock);
	bool mine = t->slot[c->slot] == c && t->gen[c->slot] == c->gen;
	if (mine) {
		t->slot[c->slot] = NULL;
		t->gen[c->slot]++;
		t->live--;
		t->handshake_bytes -= c->charged;
		c->charged = 0;
	}
	pthread_mutex_unlock(&t->lock);
	if (!mine)
		return;
	/* ESRCH from a fill means the VMM's memory is gone: it is exiting.
	 * Its pidfd says so a moment later (the mm goes before the exit is
	 * reported): wait briefly, so the cause is "VMM exited", the same
	 * whichever of the two a worker saw first. */
	if (why == END_VMM_GONE && c->pidfd >= 0) {
		struct pollfd p = {.fd = c->pidfd, .events = POLLIN};
		if (poll(&p, 1, 200) == 1 && (p.revents & POLLIN)) {
			why = END_VMM_EXITED;
			detail = NULL;
		}
	}
	epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->sock, NULL);
	if (c->pidfd >= 0)
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->pidfd, NULL);
	if (c->session) {
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, pagein_session_uffd(c->session), NULL);
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, pagein_session_event_fd(c->session), NULL);
	}
	conn_finish(srv, c, why, detail);
	metrics_conn_end(srv, c, why); /* folds the session's final counters */
	conn_unref(c); /* the table's reference */
}

/* ---- epoll ------------------------------------------------------------ */

static int watch(struct pagein_server *srv, int op, int fd, uint32_t events,
		 uint64_t tag)
{
	struct epoll_event ev = {.events = events | EPOLLONESHOT, .data.u64 = tag};
	return epoll_ctl(srv->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

int server_watch_session(struct pagein_server *srv, struct conn *c)
{
	int r = watch(srv, EPOLL_CTL_ADD, pagein_session_uffd(c->session), EPOLLIN,
		      tag_of(c, WATCH_UFFD));
	if (r == 0)
		r = watch(srv, EPOLL_CTL_ADD, pagein_session_event_fd(c->session), EPOLLIN,
			  tag_of(c, WATCH_EVENT));
	if (r == 0 && c->pidfd >= 0)
		r = watch(srv, EPOLL_CTL_ADD, c->pidfd, EPOLLIN, tag_of(c, WATCH_PIDFD));
	return r;
}

/* keeper: an adopted connection (conn_adopt). */
int server_add_conn(struct pagein_server *srv, struct conn *c)
{
	return table_add(&srv->conns, c);
}

int server_watch_sock(struct pagein_server *srv, struct conn *c, uint32_t events)
{
	return events ? watch(srv, EPOLL_CTL_ADD, c->sock, events, tag_of(c, WATCH_SOCK)) : 0;
}

static bool accept_paused_for_fds(int e)
{
	return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

static bool id_in(const uint32_t *list, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] == id)
			return true;
	return false;
}

/* --allow-uid / --allow-gid: true if the peer on fd may be served. Only
 * the kernel's record of the peer is read (SO_PEERCRED, SO_PEERGROUPS:
 * its credentials when it connected), nothing it sent. */
static bool peer_allowed(struct pagein_server *srv, int fd, struct ucred *cr)
{
	if (!srv->cfg.nallow_uids && !srv->cfg.nallow_gids)
		return true; /* no policy: whoever can open the socket */
	socklen_t len = sizeof(*cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &len) < 0)
		return false; /* cannot tell who it is: not served */
	if (id_in(srv->allow_uids, srv->cfg.nallow_uids, cr->uid) ||
	    id_in(srv->allow_gids, srv->cfg.nallow_gids, cr->gid))
		return true;
	if (!srv->cfg.nallow_gids)
		return false;
	/* Supplementary groups, as they were at connect(). */
	gid_t small[64], *groups = small;
	len = sizeof(small);
	int r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
	if (r < 0 && errno == ERANGE && (groups = malloc(len)))
		r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
	bool ok = false;
	for (size_t i = 0; r == 0 && groups && i < len / sizeof(gid_t); i++)
		if (id_in(srv->allow_gids, srv->cfg.nallow_gids, groups[i]))
			ok = true;
	if (groups != small)
		free(groups);
	return ok;
}

/* rate_limit_pass() for a condition met at accept, under accept_lock. */
static bool accept_log_allowed(struct pagein_server *srv, struct rate_limit *r,
			       uint64_t *supp)
{
	pthread_mutex_lock(&srv->accept_lock);
	bool log = rate_limit_pass(r, LOG_INTERVAL_NS, supp);
	pthread_mutex_unlock(&srv->accept_lock);
	return log;
}

static void refuse_peer(struct pagein_server *srv, int fd, const struct ucred *cr)
{
	close(fd);
	uint64_t supp;
	if (!accept_log_allowed(srv, &srv->refused_log, &supp))
		return;
	struct json_object *f = held_fields(supp);
	if (f) {
		json_object_object_add(f, "peer_pid", json_object_new_int64(cr->pid));
		json_object_object_add(f, "peer_uid", json_object_new_uint64(cr->uid));
		json_object_object_add(f, "peer_gid", json_object_new_uint64(cr->gid));
	}
	server_log_fields(srv, PAGEIN_LOG_WARN, NULL, "refused_peer", f,
			  "refused a connection from pid %d uid %u gid %u: not in --allow-uid/--allow-gid "
			  "(closed, not killed; %" PRIu64 " more since the last line)",
			  (int)cr->pid, (unsigned)cr->uid, (unsigned)cr->gid, supp);
}

static void accept_some_locked(struct pagein_server *srv)
{
	unsigned cap = srv->cfg.max_connections ? srv->cfg.max_connections
						: DEFAULT_MAX_CONNECTIONS;
	for (int k = 0; k < ACCEPTS_PER_WAKE; k++) {
		int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int e = errno;
			if (e == EINTR || e == ECONNABORTED)
				continue;
			if (e == EAGAIN)
				break;
			pthread_mutex_lock(&srv->accept_lock);
			uint64_t supp;
			bool log = rate_limit_pass(&srv->accept_err_log, LOG_INTERVAL_NS, &supp);
			if (accept_paused_for_fds(e))
				srv->accept_resume_ns = now_ns() + ACCEPT_BACKOFF_NS;
			pthread_mutex_unlock(&srv->accept_lock);
			if (log)
				server_log_fields(srv, PAGEIN_LOG_ERROR, NULL, "accept_error", held_fields(supp),
					   "accept: %s%s (open sessions go on; %" PRIu64 " more since the last line)",
					   strerror(e),
					   accept_paused_for_fds(e) ? ": pausing new connections" : "", supp);
			if (accept_paused_for_fds(e))
				return; /* the tick re-arms the listening socket */
			break;
		}
		struct ucred cr = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
		if (!peer_allowed(srv, fd, &cr)) {
			refuse_peer(srv, fd, &cr);
			continue;
		}
		pthread_mutex_lock(&srv->conns.lock);
		bool full = srv->conns.live >= cap;
		pthread_mutex_unlock(&srv->conns.lock);
		if (full) {
			close(fd);
			uint64_t supp;
			if (accept_log_allowed(srv, &srv->cap_log, &supp))
				server_log_fields(srv, PAGEIN_LOG_WARN, NULL, "refused_connection", held_fields(supp),
					   "refused a connection: %u connections open (--max-connections; %" PRIu64 " more since the last line)",
					   cap, supp);
			continue;
		}
		struct conn *c = conn_new(srv, fd);
		if (!c || table_add(&srv->conns, c) < 0) {
			server_log(srv, PAGEIN_LOG_ERROR, NULL, "dropped_connection",
				   "out of memory: dropping a connection");
			if (c)
				conn_free(c);
			else
				close(fd);
			continue;
		}
		metrics_conn_accepted(srv);
		server_log(srv, PAGEIN_LOG_INFO, c, "connected", "connected");
		keeper_send_pending(c); /* keeper: it holds the socket from now on */
		/* Until the handshake, the socket is the connection's only fd. */
		if (watch(srv, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLRDHUP, tag_of(c, WATCH_SOCK)) < 0)
			server_end_conn(srv, c, END_HUNG_UP, "cannot watch the socket");
	}
	watch(srv, EPOLL_CTL_MOD, srv->listen_fd, EPOLLIN, TAG_LISTEN);
}

/* Accepts unless a drain closed the listening socket meanwhile. */
static void accept_some(struct pagein_server *srv)
{
	pthread_mutex_lock(&srv->listen_lock);
	if (srv->listen_fd >= 0)
		accept_some_locked(srv);
	pthread_mutex_unlock(&srv->listen_lock);
}

static unsigned live_conns(struct pagein_server *srv)
{
	pthread_mutex_lock(&srv->conns.lock);
	unsigned n = srv->conns.live;
	pthread_mutex_unlock(&srv->conns.lock);
	return n;
}

unsigned pagein_server_connections(struct pagein_server *srv)
{
	return live_conns(srv);
}

/* During a drain (each tick, and when it starts): stop once no connection
 * is left, or at the deadline. Logged once. */
static void drain_check(struct pagein_server *srv)
{
	if (!atomic_load(&srv->draining) || atomic_load(&srv->drain_over))
		return;
	unsigned n = live_conns(srv);
	pthread_mutex_lock(&srv->accept_lock);
	bool late = now_ns() >= srv->drain_deadline_ns;
	pthread_mutex_unlock(&srv->accept_lock);
	if (n && !late)
		return;
	if (atomic_exchange(&srv->drain_over, true))
		return;
	if (n == 0)
		server_log(srv, PAGEIN_LOG_INFO, NULL, "drained", "drained: every session has ended; stopping");
	else
		server_log(srv, PAGEIN_LOG_WARN, NULL, "drain_timeout",
			   "drain timeout (%.1f s): ending the %u session%s still open (cause server_stopping)",
			   atomic_load(&srv->drain_timeout_ms) / 1000.0, n, n == 1 ? "" : "s");
	pagein_server_stop(srv);
}

/* pagein_server_drain(), on a worker: close the listening socket (its
 * file stays until pagein_server_free()), then wait for the sessions. */
static void on_drain(struct pagein_server *srv)
{
	uint64_t v;
	ssize_t r = read(srv->drain_fd, &v, sizeof(v));
	(void)r;
	unsigned ms = atomic_load(&srv->drain_timeout_ms);
	/* The deadline before the flag: a tick or a session end on another
	 * worker runs drain_check() as soon as it sees the flag. */
	pthread_mutex_lock(&srv->accept_lock);
	srv->drain_deadline_ns = now_ns() + (uint64_t)ms * 1000000ull;
	pthread_mutex_unlock(&srv->accept_lock);
	atomic_store(&srv->draining, true);
	pthread_mutex_lock(&srv->listen_lock);
	if (srv->listen_fd >= 0) {
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, srv->listen_fd, NULL);
		close(srv->listen_fd);
		srv->listen_fd = -1;
	}
	pthread_mutex_unlock(&srv->listen_lock);
	pthread_mutex_lock(&srv->accept_lock);
	srv->accept_resume_ns = 0;
	pthread_mutex_unlock(&srv->accept_lock);
	unsigned n = live_conns(srv);
	server_log(srv, PAGEIN_LOG_INFO, NULL, "draining",
		   "draining: no longer accepting connections; %u session%s open, stopping when %s end%s or in %.1f s",
		   n, n == 1 ? "" : "s", n == 1 ? "it" : "they", n == 1 ? "s" : "", ms / 1000.0);
	drain_check(srv);
}

/* The housekeeping tick: connections that sent no complete handshake in
 * time are shut down (their worker then ends them), and accepting resumes
 * after a pause. */
static void on_tick(struct pagein_server *srv)
{
	uint64_t expirations;
	ssize_t n = read(srv->timer_fd, &expirations, sizeof(expirations));
	(void)n;
	uint64_t now = now_ns();
	uint64_t limit = (uint64_t)(srv->cfg.handshake_timeout_ms ? srv->cfg.handshake_timeout_ms
					       : DEFAULT_HANDSHAKE_TIMEOUT_MS) * 1000000ull;
	struct conn_table *t = &srv->conns;
	pthread_mutex_lock(&t->lock);
	for (uint32_t i = 0; i < t->cap; i++) {
		struct conn *c = t->slot[i];
		if (c && atomic_load(&c->state) == CONN_HANDSHAKE &&
		    now - c->accepted_ns > limit && !atomic_exchange(&c->timed_out, true))
			shutdown(c->sock, SHUT_RDWR);
	}
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_lock(&srv->accept_lock);
	bool resume = srv->accept_resume_ns && now >= srv->accept_resume_ns;
	if (resume)
		srv->accept_resume_ns = 0;
	pthread_mutex_unlock(&srv->accept_lock);
	if (resume) {
		pthread_mutex_lock(&srv->listen_lock);
		if (srv->listen_fd >= 0)
			watch(srv, EPOLL_CTL_MOD, srv->listen_fd, EPOLLIN, TAG_LISTEN);
		pthread_mutex_unlock(&srv->listen_lock);
	}
	drain_check(srv);
	watch(srv, EPOLL_CTL_MOD, srv->timer_fd, EPOLLIN, TAG_TIMER);
}

static void handle_event(struct pagein_server *srv, const struct epoll_event *ev)
{
	struct conn *c = table_get(&srv->conns, ev->data.u64);
	if (!c)
		return;
	enum watch_kind kind = (enum watch_kind)(ev->data.u64 & 3);
	bool keep;
	int fd;
	uint32_t events = EPOLLIN;
	switch (kind) {
	case WATCH_UFFD:
		keep = conn_on_uffd(srv, c);
		fd = pagein_session_uffd(c->session);
		break;
	case WATCH_EVENT:
		keep = conn_on_event(srv, c);
		fd = pagein_session_event_fd(c->session);
		break;
	case WATCH_PIDFD:
		keep = conn_on_pidfd(srv, c);
		fd = c->pidfd;
		break;
	default:
		keep = conn_on_sock(srv, c, &events);
		fd = c->sock;
		break;
	}
	if (keep && events)
		watch(srv, EPOLL_CTL_MOD, fd, events, ev->data.u64);
	else if (keep)
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, fd, NULL); /* closed socket: nothing more to read */
	conn_unref(c);
}

/* Events taken per epoll_wait(): one. Events a worker has taken wait for
 * it alone (EPOLLONESHOT), so a batch would queue other VMs behind a slow
 * one (a handshake with eager population); a syscall per event costs ~1 us
 * against a fault's ~40 us round trip. */
#define EVENTS_PER_WAIT 1

static void *worker(void *arg)
{
	struct pagein_server *srv = arg;
	struct epoll_event evs[EVENTS_PER_WAIT];
	for (;;) {
		int n = epoll_wait(srv->epfd, evs, EVENTS_PER_WAIT, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			server_log(srv, PAGEIN_LOG_ERROR, NULL, "epoll_error", "epoll_wait: %s",
				   strerror(errno));
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == TAG_STOP)
				return NULL;
			if (evs[i].data.u64 == TAG_LISTEN)
				accept_some(srv);
			else if (evs[i].data.u64 == TAG_TIMER)
				on_tick(srv);
			else if (evs[i].data.u64 == TAG_DRAIN)
				on_drain(srv);
			else
				handle_event(srv, &evs[i]);
		}
	}
}

/* ---- life ------------------------------------------------------------- */

/* The directory a path names its file in ("." for a bare name), in buf. */
static const char *dir_of(const char *path, char *buf, size_t len)
{
	snprintf(buf, len, "%s", path);
	return dirname(buf);
}

/* True if a server accepts connections on the socket at a. */
static bool socket_is_live(const struct sockaddr_un *a)
{
	/* Non-blocking: a listener with a full backlog must not hang us. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	/* ECONNREFUSED: nobody listens (stale); EAGAIN: a listener whose
	 * backlog is full, alive. */
	bool live = connect(fd, (const struct sockaddr *)a, sizeof(*a)) == 0 || errno == EAGAIN;
	close(fd);
	return live;
}

/* Listens on a Unix socket at path; `what` names it in messages ("--socket "
 * or "--metrics unix:"). Every refusal says what is wrong and what to do. */
int server_listen_unix(const char *what, const char *path,
		       const struct pagein_server_config *perm,
		       dev_t *dev, ino_t *ino, struct pagein_error *err)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path))
		return pagein_fail(err, ENAMETOOLONG,
				   "%s%s is longer than the %zu bytes a Unix socket path may have: choose a shorter path",
				   what, path, sizeof(a.sun_path) - 1);
	strcpy(a.sun_path, path);
	char buf[sizeof(a.sun_path)];
	const char *dir = dir_of(path, buf, sizeof(buf));
	struct stat st;
	if (stat(dir, &st) < 0 && (errno == ENOENT || errno == ENOTDIR))
		return pagein_fail(err, ENOENT,
				   "the directory of %s%s does not exist: create it (mkdir -p %s) or choose another path",
				   what, path, dir);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return pagein_fail(err, EEXIST,
					   "%s%s exists and is not a socket: remove it if it is not needed, or choose another path",
					   what, path);
		if (socket_is_live(&a))
			return pagein_fail(err, EADDRINUSE,
					   "%s%s: a server is already listening there: stop it, or choose another path",
					   what, path);
		unlink(path); /* a stale socket from an earlier run */
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return pagein_fail(err, errno, "cannot create a Unix socket: %s (raise the open-file limit if it is reached)",
				   strerror(errno));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		close(fd);
		if (e == EACCES || e == EPERM)
			return pagein_fail(err, e,
					   "cannot create %s%s: permission denied: pagein needs write access to the directory %s "
					   "(run it as a user who has it, or choose another directory)", what, path, dir);
		if (e == EROFS)
			return pagein_fail(err, e,
					   "cannot create %s%s: %s is on a read-only file system: choose a writable directory (e.g. /run)",
					   what, path, dir);
		if (e == EADDRINUSE)
			return pagein_fail(err, e,
					   "%s%s: another process created it meanwhile: stop it, or choose another path", what, path);
		return pagein_fail(err, e, "cannot listen on %s%s: %s", what, path, strerror(e));
	}
	/* Bound, not yet listening: a connect() now is refused, so the mode,
	 * owner and group below hold before any VMM can get in. The file's
	 * identity is kept so that exit removes this file and no other. */
	if (lstat(path, &st) < 0) {
		int e = errno;
		close(fd);
		return pagein_fail(err, e, "%s%s vanished right after it was created: %s (is another program cleaning that directory?)",
				   what, path, strerror(e));
	}
	*dev = st.st_dev;
	*ino = st.st_ino;
	const char *step = NULL;
	if (perm && perm->socket_mode && chmod(path, perm->socket_mode) < 0)
		step = "set the mode of";
	else if (perm && (perm->socket_owner_set || perm->socket_group_set) &&
		 lchown(path, perm->socket_owner_set ? perm->socket_owner : (uid_t)-1,
			perm->socket_group_set ? perm->socket_group : (gid_t)-1) < 0)
		step = "change the owner or group of";
	else if (listen(fd, 128) < 0)
		step = "listen on";
	if (step) {
		int e = errno;
		close(fd);
		server_unlink_socket(path, *dev, *ino);
		if (e == EPERM)
			return pagein_fail(err, e,
					   "cannot %s %s%s: operation not permitted: only root (or CAP_CHOWN) may give a socket "
					   "to another user or to a group it is not in: run pagein as root or drop --socket-owner/--socket-group",
					   step, what, path);
		return pagein_fail(err, e, "cannot %s %s%s: %s", step, what, path, strerror(e));
	}
	return fd;
}

/* An inherited listening socket (socket activation) must be a listening
 * Unix stream socket, bound to a path (in path), which is socket_path if
 * one is given. */
static int check_inherited(int fd, const char *socket_path, char *path, size_t len,
			   struct pagein_error *err)
{
	int type = 0, acc = 0;
	socklen_t l = sizeof(type);
	struct sockaddr_un a;
	socklen_t al = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
		return pagein_fail(err, EBADF, "the inherited fd %d is not a socket (%s): pass a listening Unix socket (ListenStream=)",
				   fd, strerror(errno));
	l = sizeof(acc);
	if (getsockname(fd, (struct sockaddr *)&a, &al) < 0 || a.sun_family != AF_UNIX || type != SOCK_STREAM ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) < 0 || !acc)
		return pagein_fail(err, EINVAL,
				   "the inherited fd %d is not a listening Unix stream socket: pass one (ListenStream=/path in the .socket unit)",
				   fd);
	if (al <= offsetof(struct sockaddr_un, sun_path) || !a.sun_path[0])
		return pagein_fail(err, EINVAL,
				   "the inherited socket (fd %d) has no path (abstract or unnamed): pass one bound to a path", fd);
	snprintf(path, len, "%.*s", (int)(al - offsetof(struct sockaddr_un, sun_path)), a.sun_path);
	if (socket_path && strcmp(socket_path, path))
		return pagein_fail(err, EINVAL,
				   "--socket %s does not match the inherited socket %s: drop --socket, or make it the same path",
				   socket_path, path);
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return pagein_fail(err, errno, "the inherited socket (fd %d): %s", fd, strerror(errno));
	return 0;
}

void server_unlink_socket(const char *path, dev_t dev, ino_t ino)
{
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev && st.st_ino == ino)
		unlink(path);
}

/* --record must name one file per VM, in a directory that exists: said at
 * start, not when the first VM ends. */
static int check_record_path(const char *path, struct pagein_error *err)
{
	if (!strstr(path, "%n"))
		return pagein_fail(err, EINVAL,
				   "--record %s: the path must contain %%n (the VM's number), one file per VM: add it, e.g. ws-%%n.pgws",
				   path);
	char buf[4096];
	const char *dir = dir_of(path, buf, sizeof(buf));
	struct stat st;
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return pagein_fail(err, ENOENT,
				   "--record %s: the directory %s does not exist: create it or choose another path", path, dir);
	if (access(dir, W_OK) < 0)
		return pagein_fail(err, EACCES,
				   "--record %s: permission denied: pagein needs write access to the directory %s "
				   "(run it as a user who has it, or choose another directory)", path, dir);
	return 0;
}

int pagein_server_new(const struct pagein_server_config *cfg,
		      struct pagein_server **out, struct pagein_error *err)
{
	int rr = reserved_check(cfg->reserved, RESERVED_WORDS_OF(cfg), "pagein_server_config", err);
	if (rr < 0)
		return rr;
	if ((!cfg->socket_path && cfg->listen_fd <= 0) || !cfg->snapshot_path)
		return pagein_fail(err, EINVAL,
				   "a socket path and a snapshot are required: set socket_path and snapshot_path (--socket and --snapshot)");
	char inherited[sizeof(((struct sockaddr_un *)0)->sun_path)];
	if (cfg->listen_fd > 0) {
		int e = check_inherited(cfg->listen_fd, cfg->socket_path, inherited, sizeof(inherited), err);
		if (e < 0)
			return e;
	}
	if (cfg->record_path) {
		int e = check_record_path(cfg->record_path, err);
		if (e < 0)
			return e;
	}
	struct pagein_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->cfg = *cfg;
	srv->listen_fd = srv->epfd = srv->stop_fd = srv->timer_fd = srv->drain_fd = -1;
	if (cfg->listen_fd > 0)
		srv->listen_fd = cfg->listen_fd; /* ours once new() succeeds (see fail:) */
	pthread_mutex_init(&srv->conns.lock, NULL);
	pthread_mutex_init(&srv->listen_lock, NULL);
	pthread_mutex_init(&srv->accept_lock, NULL);
	metrics_init(&srv->metrics);
	srv->socket_path = strdup(cfg->listen_fd > 0 ? inherited : cfg->socket_path);
	srv->snapshot_path = strdup(cfg->snapshot_path);
	int r = -ENOMEM;
	if (!srv->socket_path || !srv->snapshot_path)
		goto fail;
	srv->cfg.socket_path = srv->socket_path;
	srv->cfg.snapshot_path = srv->snapshot_path;
	if ((cfg->nallow_uids && !cfg->allow_uids) || (cfg->nallow_gids && !cfg->allow_gids)) {
		r = pagein_fail(err, EINVAL, "nallow_uids or nallow_gids is set but its list is NULL: give the list or a count of 0");
		goto fail;
	}
	if (cfg->nallow_uids) {
		if (!(srv->allow_uids = malloc(cfg->nallow_uids * sizeof(uint32_t))))
			goto fail;
		memcpy(srv->allow_uids, cfg->allow_uids, cfg->nallow_uids * sizeof(uint32_t));
	}
	if (cfg->nallow_gids) {
		if (!(srv->allow_gids = malloc(cfg->nallow_gids * sizeof(uint32_t))))
			goto fail;
		memcpy(srv->allow_gids, cfg->allow_gids, cfg->nallow_gids * sizeof(uint32_t));
	}
	srv->cfg.allow_uids = srv->allow_uids;
	srv->cfg.allow_gids = srv->allow_gids;
	struct source_remote_opts ro = {
		.s3_endpoint = cfg->s3_endpoint, .cache_dir = cfg->cache_dir,
		.cache_size = cfg->cache_size, .parallel = cfg->fetch_parallel,
		.deadline_ms = cfg->fetch_deadline_ms, .ca_file = cfg->ca_file,
	};
	r = source_open_opts(cfg->snapshot_path, &ro, &srv->source, err);
	if (r < 0)
		goto fail;
	if (pagein_source_size(srv->source) < MIN_GUEST_BYTES) {
		r = pagein_fail(err, EINVAL,
				"--snapshot %s holds %llu bytes, too small to be a VM's guest memory (at least %u KiB): "
				"give the memory file the VMM wrote (Firecracker's mem_file_path), not the VM state file",
				cfg->snapshot_path, (unsigned long long)pagein_source_size(srv->source),
				MIN_GUEST_BYTES >> 10);
		goto fail;
	}
	if (cfg->prefetch_path) {
		struct workingset ws;
		r = workingset_load(cfg->prefetch_path, &ws, err);
		if (r < 0)
			goto fail;
		if (ws.snapshot_size != pagein_source_size(srv->source))
			server_log(srv, PAGEIN_LOG_WARN, NULL, "working_set_mismatch",
				   "working set %s was recorded on a %llu-byte snapshot, this one has %llu bytes: "
				   "it may be another template's; record one on this snapshot (--record) if restores are slow",
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
	if (cfg->record_path) {
		/* Exact recording: a page filled ahead of the guest never faults,
		 * so its first touch could not be seen. While recording, nothing
		 * is filled ahead, whatever the population options say. */
		bool ahead = cfg->populate != PAGEIN_POPULATE_NONE || srv->working_set_len ||
			     (cfg->fault_around >= 2);
		if (ahead)
			server_log(srv, PAGEIN_LOG_INFO, NULL, "record_exact",
				   "recording first touches exactly: nothing is filled ahead of the guest while --record is on "
				   "(fault-around off, no population, no working-set replay), as with --populate none --fault-around 0");
		srv->cfg.populate = PAGEIN_POPULATE_NONE;
		srv->cfg.fault_around = 0;
		free(srv->working_set);
		srv->working_set = NULL;
		srv->working_set_len = 0;
	}
	srv->cfg.prefetch_path = NULL; /* not kept; the offsets are */
	srv->cfg.record_path = srv->record_path;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	srv->nworkers = cfg->threads ? cfg->threads : (unsigned)(ncpu > 0 ? ncpu : 1);
	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srv->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	srv->drain_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->epfd < 0 || srv->stop_fd < 0 || srv->timer_fd < 0 || srv->drain_fd < 0) {
		r = pagein_fail(err, errno, "cannot create the daemon's epoll/eventfd/timerfd: %s (raise the open-file limit if it is reached)",
				strerror(errno));
		goto fail;
	}
	struct itimerspec tick = {
		.it_interval = {0, (long)TICK_NS},
		.it_value = {0, (long)TICK_NS},
	};
	timerfd_settime(srv->timer_fd, 0, &tick, NULL);
	if (srv->listen_fd < 0) {
		r = server_listen_unix("--socket ", cfg->socket_path, cfg, &srv->sock_dev,
				       &srv->sock_ino, err);
		if (r < 0)
			goto fail;
		srv->listen_fd = r;
		srv->own_socket = true;
	}
	if ((r = metrics_start(srv, cfg, err)) < 0)
		goto fail;
	srv->cfg.metrics_addr = NULL; /* not kept */
	srv->cfg.metrics = NULL;
	/* Level-triggered and not one-shot: every worker sees the stop. */
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_STOP};
	epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->stop_fd, &ev);
	r = watch(srv, EPOLL_CTL_ADD, srv->listen_fd, EPOLLIN, TAG_LISTEN);
	if (r == 0)
		r = watch(srv, EPOLL_CTL_ADD, srv->timer_fd, EPOLLIN, TAG_TIMER);
	if (r == 0) /* one-shot, never re-armed: one worker handles the drain */
		r = watch(srv, EPOLL_CTL_ADD, srv->drain_fd, EPOLLIN, TAG_DRAIN);
	if (r < 0)
		goto fail;
	*out = srv;
	return 0;
fail:
	if (cfg->listen_fd > 0 && srv->listen_fd == cfg->listen_fd)
		srv->listen_fd = -1; /* not taken: still the caller's */
	pagein_server_free(srv);
	return r;
}

int pagein_server_run(struct pagein_server *srv)
{
	srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
	if (!srv->workers)
		return -ENOMEM;
	server_log(srv, PAGEIN_LOG_INFO, NULL, "serving", "serving %s (%s, %" PRIu64 " bytes) on %s with %u worker%s",
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
	server_log(srv, PAGEIN_LOG_INFO, NULL, "stopping", "stopping: %u session%s still open", srv->conns.live,
		   srv->conns.live == 1 ? "" : "s");
	return 0;
}

void pagein_server_stop(struct pagein_server *srv)
{
	uint64_t one = 1;
	ssize_t n = write(srv->stop_fd, &one, sizeof(one));
	(void)n;
}

void pagein_server_drain(struct pagein_server *srv, unsigned timeout_ms)
{
	if (atomic_exchange(&srv->drain_asked, true))
		return; /* the first call's timeout stands */
	atomic_store(&srv->drain_timeout_ms, timeout_ms);
	uint64_t one = 1;
	ssize_t n = write(srv->drain_fd, &one, sizeof(one));
	(void)n;
}

void pagein_server_log(struct pagein_server *srv, enum pagein_log_level lvl,
		       const char *event, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	server_log(srv, lvl, NULL, event, "%s", msg);
}

void pagein_server_report(struct pagein_server *srv)
{
	struct conn_table *t = &srv->conns;
	pthread_mutex_lock(&t->lock);
	server_log(srv, PAGEIN_LOG_INFO, NULL, "report", "report: %u connection%s", t->live, t->live == 1 ? "" : "s");
	for (uint32_t i = 0; i < t->cap; i++)
		if (t->slot[i])
			conn_log_stats(srv, t->slot[i]);
	pthread_mutex_unlock(&t->lock);
}

void pagein_server_free(struct pagein_server *srv)
{
	if (!srv)
		return;
	metrics_stop(srv); /* no scrape runs from here on */
	for (uint32_t i = 0; i < srv->conns.cap; i++) {
		struct conn *c = srv->conns.slot[i];
		if (c)
			server_end_conn(srv, c, END_SERVER_STOP, NULL);
	}
	free(srv->conns.slot);
	free(srv->conns.gen);
	pthread_mutex_destroy(&srv->conns.lock);
	pthread_mutex_destroy(&srv->accept_lock);
	pthread_mutex_destroy(&srv->listen_lock);
	metrics_fini(&srv->metrics);
	if (srv->listen_fd >= 0)
		close(srv->listen_fd);
	/* A drain closed the fd but left the file until now; an inherited
	 * socket's file belongs to whoever created it, and a file that is no
	 * longer the one we created (same device and inode) is someone
	 * else's. */
	if (srv->own_socket)
		server_unlink_socket(srv->socket_path, srv->sock_dev, srv->sock_ino);
	if (srv->drain_fd >= 0)
		close(srv->drain_fd);
	if (srv->epfd >= 0)
		close(srv->epfd);
	if (srv->stop_fd >= 0)
		close(srv->stop_fd);
	if (srv->timer_fd >= 0)
		close(srv->timer_fd);
	if (srv->source)
		pagein_source_unref(srv->source);
	free(srv->workers);
	free(srv->working_set);
	free(srv->record_path);
	free(srv->allow_uids);
	free(srv->allow_gids);
	free(srv->socket_path);
	free(srv->snapshot_path);
	free(srv);
}

const char *pagein_server_socket(const struct pagein_server *srv)
{
	return srv->socket_path;
}

const char *pagein_server_snapshot(const struct pagein_server *srv)
{
	return srv->snapshot_path;
}
