/* conn.c - one VMM connection: receive the handshake (JSON + fds), turn it
 * into a session, then serve its uffd and (secret hiding) its request
 * stream. Every refusal is logged once, naming the VM and the field.
 *
 * A VMM is not trusted: it can send any bytes and fds, flood requests,
 * stop reading replies, close its socket or vanish. Each of these costs at
 * most its own VM: reads never block, a wake-up serves a bounded budget,
 * replies that cannot be sent wait in a buffer while the connection's
 * requests are not read, and the VMM's exit is learnt from a pidfd. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <json-c/json.h>

#include "error.h"
#include "protocol.h"
#include "server_internal.h"
#include "source.h"
#include "keeper_link.h"
#include "state.h"
#include "recover.h"
#include "session.h"
#include "workingset.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
/* Request bytes read per wake-up of one connection before its worker moves
 * on: about 64 requests of ~60 bytes. One flooding VMM cannot hold a
 * worker: others' turns come in between, round-robin through epoll. */
#define REQUEST_BYTES_PER_WAKE 4096
/* Handshake reads per wake-up (16 KiB each). */
#define READS_PER_WAKE 4

/* The VMM process, pinned now: its exit makes the pidfd readable, and a
 * kill through it can never hit a recycled pid. SO_PEERPIDFD (6.5+) names
 * the process that connected; pidfd_open of the SO_PEERCRED pid is the
 * fallback (racy only if the VMM already exited). */
static int pin_peer(int sock, pid_t pid)
{
	int fd = -1;
	socklen_t len = sizeof(fd);
	if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0)
		return fd;
	if (pid <= 0)
		return -1;
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	return fd;
}

/* Connection numbers (the N of vmN, --record's %n, the keeper's key):
 * one sequence for the whole process, every socket's connections. */
static atomic_uint next_id;

void conn_ids_from(unsigned id)
{
	unsigned cur = atomic_load(&next_id);
	while (cur < id && !atomic_compare_exchange_weak(&next_id, &cur, id))
		;
}

struct conn *conn_new(struct pagein_server *srv, int sock)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->dec = json_decoder_new(PROTOCOL_MAX_HANDSHAKE);
	if (!c->dec) {
		free(c);
		return NULL;
	}
	atomic_init(&c->refs, 1);
	pthread_mutex_init(&c->sock_lock, NULL);
	pthread_mutex_init(&c->event_lock, NULL);
	c->srv = srv;
	c->sock = sock;
	c->fds[0] = c->fds[1] = c->fds[2] = -1;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	c->pid = getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 ? cr.pid : 0;
	c->pidfd = pin_peer(sock, c->pid);
	c->accepted_ns = now_ns();
	c->id = atomic_fetch_add(&next_id, 1) + 1;
	snprintf(c->name, sizeof(c->name), "vm%u pid %d", c->id, (int)c->pid);
	return c;
}

static void close_received_fds(struct conn *c)
{
	for (int i = 0; i < c->nfds; i++)
		if (c->fds[i] >= 0)
			close(c->fds[i]);
	c->nfds = 0;
}

void conn_free(struct conn *c)
{
	if (c->session)
		pagein_session_free(c->session); /* closes the fds it owns */
	else
		close_received_fds(c);
	kstate_free(c->kst); /* keeper: after the session, whose tables it holds */
	json_decoder_free(c->dec);
	if (c->pidfd >= 0)
		close(c->pidfd);
	close(c->sock);
	free(c->out);
	pthread_mutex_destroy(&c->sock_lock);
	pthread_mutex_destroy(&c->event_lock);
	free(c);
}

/* ---- the end ---------------------------------------------------------- */

static void save_recording(struct pagein_server *srv, struct conn *c);
static void remote_suffix(struct pagein_server *srv, char *line, size_t len);

/* The cause field of session_ended / connection_closed (JSON). */
static const char *why_name(enum conn_end_why why)
{
	switch (why) {
	case END_VMM_EXITED: return "vmm_exited";
	case END_VMM_GONE: return "vmm_gone";
	case END_HUNG_UP: return "hung_up";
	case END_REFUSED: return "refused";
	case END_FAILED: return "failed";
	case END_SERVER_STOP: return "server_stopping";
	}
	return "?";
}

static const char *why_text(enum conn_end_why why)
{
	switch (why) {
	case END_VMM_EXITED: return "VMM exited";
	case END_VMM_GONE: return "VMM gone";
	case END_HUNG_UP: return "VMM hung up";
	case END_REFUSED: return "handshake refused";
	case END_FAILED: return "failed";
	case END_SERVER_STOP: return "server stopping";
	}
	return "?";
}

/* Fail closed: the VM must not run on memory nobody serves. A peer that
 * never handed over a uffd has no VM here and is only disconnected. */
static void apply_failure_policy(struct pagein_server *srv, struct conn *c,
				 enum conn_end_why why)
{
	if (why != END_FAILED && why != END_REFUSED)
		return;
	if (!c->got_fds && !c->session)
		return;
	if (srv->cfg.on_failure == PAGEIN_FAILURE_KEEP) {
		server_log(srv, PAGEIN_LOG_WARN, c, "left_vmm_running",
			   "VMM left running (--on-failure keep): its guest memory is no longer served");
		return;
	}
	if (c->pidfd < 0) {
		server_log(srv, PAGEIN_LOG_ERROR, c, "kill_failed",
			   "cannot kill the VMM: no pidfd for it (its guest memory is no longer served)");
		return;
	}
	if (syscall(SYS_pidfd_send_signal, c->pidfd, SIGKILL, NULL, 0) == 0)
		server_log(srv, PAGEIN_LOG_WARN, c, "killed_vmm",
			   "killed the VMM (--on-failure kill): its VM cannot be served");
	else if (errno != ESRCH)
		server_log(srv, PAGEIN_LOG_ERROR, c, "kill_failed", "killing the VMM: %s", strerror(errno));
}

/* JSON fields of an end: its cause, and what the text says after it. */
static struct json_object *end_fields(enum conn_end_why why, const char *detail)
{
	struct json_object *f = json_object_new_object();
	if (!f)
		return NULL;
	json_object_object_add(f, "cause", json_object_new_string(why_name(why)));
	if (detail)
		json_object_object_add(f, "detail", json_object_new_string(detail));
	return f;
}

/* A session's statistics as JSON numbers (added to f, or a new object). */
static struct json_object *stats_fields(const struct pagein_stats *st, struct json_object *f)
{
	if (!f && !(f = json_object_new_object()))
		return NULL;
#define U(name) json_object_object_add(f, #name, json_object_new_uint64(st->name))
	U(faults_missing);
	U(faults_minor);
	U(requests);
	U(pages_copied);
	U(pages_zeroed);
	U(pages_continued);
	U(pages_written);
	U(wakes);
	U(eexist);
	U(eagain);
	U(removes);
	U(pages_removed);
	U(bytes_read);
	U(pages_poisoned);
	U(filled_fault);
	U(filled_fault_around);
	U(filled_prefetch);
	U(filled_background);
	U(filled_request);
	U(pages_total);
	U(pages_hole);
	U(faults_on_filling);
#undef U
	json_object_object_add(f, "elapsed_s", json_object_new_double((double)st->elapsed_ns / 1e9));
	json_object_object_add(f, "complete", json_object_new_boolean(st->complete_ns != 0));
	if (st->complete_ns)
		json_object_object_add(f, "complete_s",
				       json_object_new_double((double)st->complete_ns / 1e9));
	/* Over the time to complete, or so far while not complete. */
	json_object_object_add(f, "throughput_mb_s", json_object_new_double(pagein_stats_throughput(st)));
	return f;
}

void conn_finish(struct pagein_server *srv, struct conn *c,
		 enum conn_end_why why, const char *detail)
{
	enum pagein_log_level lvl = why == END_FAILED || why == END_REFUSED
					    ? PAGEIN_LOG_ERROR : PAGEIN_LOG_INFO;
	/* keeper: it holds the socket from the accept on (and the session's
	 * fds once kept): it forgets them. */
	bool kept = c->hs_peek || c->kst;
	if (!c->session) {
		struct json_object *f = end_fields(why, detail);
		if (why == END_REFUSED)
			server_log_fields(srv, lvl, c, "refused_handshake", f, "refused handshake: %s",
					  detail ? detail : "?");
		else
			server_log_fields(srv, lvl, c, "connection_closed", f, "connection closed (%s%s%s)",
					  why_text(why), detail ? ": " : "", detail ? detail : "");
		apply_failure_policy(srv, c, why);
		if (kept)
			keeper_send_drop(c);
		return;
	}
	/* Stop the session's helpers before the policy acts, so that the
	 * statistics are final. */
	pagein_session_stop(c->session);
	/* A round another worker is serving counts its last fills (the fill
	 * wakes the vCPU before it counts: a VMM that exits at once could
	 * otherwise end its session one page short of "complete"). */
	session_quiesce(c->session);
	/* Lines the rate limit held back and no later line reported. */
	pthread_mutex_lock(&c->event_lock);
	uint64_t held[2] = {c->event_log[0].held, c->event_log[1].held};
	pthread_mutex_unlock(&c->event_lock);
	if (held[0] || held[1]) {
		struct json_object *h = json_object_new_object();
		if (h) {
			json_object_object_add(h, "poisoned", json_object_new_uint64(held[0]));
			json_object_object_add(h, "corrupt_chunk", json_object_new_uint64(held[1]));
		}
		server_log_fields(srv, PAGEIN_LOG_WARN, c, "held_back", h,
				  "%" PRIu64 " poisoned and %" PRIu64 " corrupt snapshot lines were held back (at most one a second)",
				  held[0], held[1]);
	}
	struct pagein_stats st;
	char line[1024];
	pagein_session_stats(c->session, &st);
	pagein_stats_format(&st, line, sizeof(line));
	remote_suffix(srv, line, sizeof(line));
	struct json_object *f = stats_fields(&st, end_fields(why, detail));
	server_log_fields(srv, lvl, c, "session_ended", f, "session ended (%s%s%s): %s", why_text(why),
			  detail ? ": " : "", detail ? detail : "", line);
	const char *perr = pagein_session_prefetch_error(c->session);
	if (perr)
		server_log(srv, PAGEIN_LOG_ERROR, c, "prefetch_stopped", "prefetch stopped: %s", perr);
	apply_failure_policy(srv, c, why);
	if (kept)
		keeper_send_drop(c);
	save_recording(srv, c);
}

/* A remote snapshot's fetch counters (daemon-wide: the fetcher and its
 * cache are shared by every session), appended to a statistics line. */
static void remote_suffix(struct pagein_server *srv, char *line, size_t len)
{
	struct source_remote_stats rs;
	if (!source_remote_stats(srv->source, &rs))
		return;
	size_t n = strlen(line);
	snprintf(line + n, len - n,
		 "; remote (daemon totals): %" PRIu64 " fetches, %.1f MiB fetched, %" PRIu64
		 " retries, cache %" PRIu64 " hits/%" PRIu64 " misses, %" PRIu64 " faults parked, %s%s%s",
		 rs.fetches, (double)rs.bytes / (1 << 20), rs.retries, rs.cache_hits,
		 rs.cache_misses, rs.parked, rs.http_version[0] ? rs.http_version : "HTTP ?",
		 rs.last_error[0] ? "; last fetch error: " : "",
		 rs.last_error);
}

void conn_log_stats(struct pagein_server *srv, struct conn *c)
{
	/* Called from another thread than the connection's own: only a
	 * session published by start_session is looked at. */
	struct pagein_session *s = atomic_load_explicit(&c->published, memory_order_acquire);
	if (!s)
		return;
	struct pagein_stats st;
	char line[1024];
	pagein_session_stats(s, &st);
	pagein_stats_format(&st, line, sizeof(line));
	remote_suffix(srv, line, sizeof(line));
	server_log_fields(srv, PAGEIN_LOG_INFO, c, "stats", stats_fields(&st, NULL), "stats: %s", line);
}

/* --record: the session's first-touch order, written when it ends. */
static void save_recording(struct pagein_server *srv, struct conn *c)
{
	uint64_t *off;
	size_t n;
	if (!srv->record_path || pagein_session_recorded(c->session, &off, &n) < 0)
		return;
	char path[4096];
	const char *tpl = srv->record_path, *mark = strstr(tpl, "%n");
	/* The server refuses a path without %n: one file per VM. */
	snprintf(path, sizeof(path), "%.*s%u%s", (int)(mark - tpl), tpl, c->id, mark + 2);
	struct workingset ws = {
		.page_size = 4096,
		.snapshot_size = pagein_source_size(srv->source),
		.count = n,
		.offsets = off,
	};
	struct pagein_error err = {{0}};
	if (workingset_save(path, &ws, &err) < 0)
		server_log(srv, PAGEIN_LOG_ERROR, c, "record_failed", "%s", err.msg);
	else
		server_log(srv, PAGEIN_LOG_INFO, c, "recorded", "recorded %zu pages of working set in %s",
			   n, path);
	free(off);
}

/* A session's poisoned pages and corrupt chunks: one line each, at most
 * one per kind per EVENT_LOG_INTERVAL_NS per VM (the next line says how
 * many were held back). Called from any thread serving the session. */
#define EVENT_LOG_INTERVAL_NS (1000ull * 1000 * 1000)

static void on_session_event(void *opaque, const struct pagein_event *ev)
{
	struct conn *c = opaque;
	unsigned k = ev->kind == PAGEIN_EVENT_POISONED ? 0 : 1;
	if (ev->kind == PAGEIN_EVENT_CORRUPT_CHUNK)
		metrics_corrupt_chunk(c->srv);
	uint64_t held;
	pthread_mutex_lock(&c->event_lock);
	bool log = rate_limit_pass(&c->event_log[k], EVENT_LOG_INTERVAL_NS, &held);
	pthread_mutex_unlock(&c->event_lock);
	if (!log)
		return;
	char more[64] = "";
	if (held)
		snprintf(more, sizeof(more), " (%" PRIu64 " more such lines held back)", held);
	struct json_object *f = json_object_new_object();
	if (f) {
		json_object_object_add(f, "offset", json_object_new_uint64(ev->offset));
		json_object_object_add(f, "held_back", json_object_new_uint64(held));
		if (ev->kind == PAGEIN_EVENT_POISONED) {
			json_object_object_add(f, "pages", json_object_new_uint64(ev->pages));
		} else {
			json_object_object_add(f, "chunk", json_object_new_uint64(ev->chunk));
			json_object_object_add(f, "error", json_object_new_string(strerror(-ev->error)));
		}
	}
	if (ev->kind == PAGEIN_EVENT_POISONED)
		server_log_fields(c->srv, PAGEIN_LOG_WARN, c, "poisoned", f,
				  "poisoned %" PRIu64 " page%s at offset 0x%" PRIx64
				  ": the snapshot could not give them (the guest sees a memory error there)%s",
				  ev->pages, ev->pages == 1 ? "" : "s", ev->offset, more);
	else
		server_log_fields(c->srv, PAGEIN_LOG_ERROR, c, "corrupt_chunk", f,
				  "corrupt snapshot: chunk %" PRIu64 " (page at offset 0x%" PRIx64 "): %s%s",
				  ev->chunk, ev->offset, strerror(-ev->error), more);
}

/* ---- the handshake ---------------------------------------------------- */

/* Keeps the fds of one SCM_RIGHTS message; more than three is no protocol
 * we speak: close the extras and remember to refuse. */
static void take_fds(struct conn *c, struct msghdr *mh)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *fds = (int *)CMSG_DATA(cm);
		for (size_t i = 0; i < n; i++) {
			c->got_fds = true;
			if (c->nfds < 3)
				c->fds[c->nfds++] = fds[i];
			else {
				close(fds[i]);
				c->extra_fds = true;
			}
		}
	}
}

static bool refuse(struct pagein_server *srv, struct conn *c, const char *why)
{
	server_end_conn(srv, c, END_REFUSED, why);
	return false;
}

static bool feed_requests(struct pagein_server *srv, struct conn *c,
			  const char *buf, size_t len);

/* The session every connection of srv gets, over these regions and fds
 * (a new one, or one the keeper hands over). */
static struct pagein_session_config session_cfg(struct pagein_server *srv, struct conn *c,
						 const struct pagein_region *regions, size_t nregions,
						 int uffd, int mem_fd, int bitmap_fd)
{
	return (struct pagein_session_config){
		.regions = regions,
		.nregions = nregions,
		.uffd = uffd,
		.mem_fd = mem_fd,
		.bitmap_fd = bitmap_fd,
		.source = srv->source,
		.name = c->name,
		.on_corrupt = srv->cfg.on_corrupt,
		.fault_around = srv->cfg.fault_around,
		.record = srv->record_path != NULL,
		.on_event = on_session_event,
		.event_opaque = c,
	};
}

/* keeper: a handshake peeked at, for a session the keeper does not keep
 * (its layout does not fit a state memfd): taken off the socket here, and
 * the keeper forgets the connection. */
static bool consume_handshake(struct conn *c, size_t len)
{
	if (!keeper_discard(c->sock, len))
		return false;
	conn_unpeek_handshake(c);
	keeper_send_drop(c);
	return true;
}

/* The handshake is complete: check the fds, build the session. consume:
 * its length if it was only peeked at (keeper), else 0. */
static bool start_session(struct pagein_server *srv, struct conn *c,
			  struct handshake *hs, size_t consume)
{
	char why[300];
	if (c->extra_fds || (c->nfds != 1 && c->nfds != 3)) {
		snprintf(why, sizeof(why),
			 "expected 1 fd (mainline: uffd) or 3 fds (secret hiding: uffd, guest memory, bitmap), got %s%d",
			 c->extra_fds ? "more than " : "", c->nfds);
		return refuse(srv, c, why);
	}
	struct pagein_session_config cfg = session_cfg(srv, c, hs->regions, hs->nregions, c->fds[0],
						       c->nfds == 3 ? c->fds[1] : -1,
						       c->nfds == 3 ? c->fds[2] : -1);
	struct pagein_error err = {{0}};
	struct pagein_session *s;
	int r;
	if (keeper_link_active()) {
		/* keeper: page tables and journals in a memfd the keeper holds */
		r = kstate_create(&c->kst, c->name, c->id, (int)c->pid, (unsigned)c->nfds,
				  hs->regions, hs->nregions);
		/* A layout the state cannot hold (more than 64 regions, or
		 * regions the session will refuse anyway): not kept. */
		r = r < 0 ? pagein_session_new(&cfg, &s, &err)
			  : session_new_state(&cfg, c->kst, &s, &err);
		if (r == 0 && !c->kst)
			server_log(srv, PAGEIN_LOG_WARN, c, "not_kept",
				   "this session's layout does not fit a state memfd: it will not survive an engine restart");
	} else {
		r = pagein_session_new(&cfg, &s, &err);
	}
	if (r < 0)
		return refuse(srv, c, err.msg[0] ? err.msg : strerror(-r));
	c->session = s;
	c->nfds = 0; /* the session owns them now */
	/* keeper: it holds the session's fds from now on, and takes the
	 * handshake off the socket; a session it does not keep takes it off
	 * here. */
	if (c->kst && keeper_send_keep(c, consume) < 0)
		return refuse(srv, c, "the keeper could not take the session over");
	if (!c->kst && consume && !consume_handshake(c, consume))
		return refuse(srv, c, "cannot read the handshake off the socket");
	metrics_session_start(srv, c);
	c->state = CONN_SESSION;
	server_charge_handshake(srv, c, 0); /* gives the handshake's bytes back */
	/* From here the decoder parses fault requests: smaller values. */
	json_decoder_free(c->dec);
	c->dec = json_decoder_new(PROTOCOL_MAX_REQUEST);
	if (!c->dec)
		return refuse(srv, c, "out of memory");
	server_log(srv, PAGEIN_LOG_INFO, c, "session_started",
		   "session started: %zu region%s, %s protocol%s%s", hs->nregions, hs->nregions == 1 ? "" : "s",
		   cfg.mem_fd >= 0 ? "secret-hiding" : "mainline",
		   c->pidfd < 0 ? " (no pidfd: the VMM's exit is only seen as a closed socket)" : "",
		   srv->record_path ? " (recording first touches: nothing filled ahead)" : "");
	for (size_t i = 0; i < hs->nregions; i++)
		server_log(srv, PAGEIN_LOG_DEBUG, c, "region",
			   "region %zu: 0x%" PRIx64 " size %" PRIu64 " offset %" PRIu64 " page %" PRIu64, i, hs->regions[i].host_addr, hs->regions[i].size,
			   hs->regions[i].offset, hs->regions[i].page_size);
	struct pagein_prefetch pf = {
		.offsets = srv->working_set,
		.count = srv->working_set_len,
		.populate = srv->cfg.populate,
	};
	r = pagein_session_prefetch(c->session, &pf, &err);
	if (r < 0) {
		server_end_conn(srv, c, r == -ESRCH ? END_VMM_GONE : END_FAILED,
				err.msg[0] ? err.msg : strerror(-r));
		return false;
	}
	atomic_store_explicit(&c->published, c->session, memory_order_release);
	if (server_watch_session(srv, c) < 0)
		return refuse(srv, c, "cannot watch the session's fds");
	return true;
}

static bool feed_handshake(struct pagein_server *srv, struct conn *c,
			   const char *buf, size_t len)
{
	/* Every byte counts, whitespace included, for this connection and
	 * for the daemon-wide budget of bytes held by half-sent handshakes. */
	c->handshake_bytes += len;
	if (c->handshake_bytes > PROTOCOL_MAX_HANDSHAKE) {
		char why[96];
		snprintf(why, sizeof(why), "handshake larger than %u bytes", PROTOCOL_MAX_HANDSHAKE);
		return refuse(srv, c, why);
	}
	if (!server_charge_handshake(srv, c, len))
		return refuse(srv, c, "too many handshake bytes buffered daemon-wide (try again)");
	size_t used;
	struct handshake hs;
	struct pagein_error err = {{0}};
	enum decode_result r = protocol_feed_handshake(c->dec, buf, len, &used, &hs, &err);
	if (r == DECODE_MORE)
		return true;
	if (r == DECODE_ERROR)
		return refuse(srv, c, err.msg);
	/* Peeked at (keeper): what follows the handshake is still in the
	 * socket, and is read as requests from there. */
	bool peeked = c->hs_peek;
	bool ok = start_session(srv, c, &hs, peeked ? c->handshake_bytes - (len - used) : 0);
	handshake_fini(&hs);
	if (ok && used < len && c->kst && !peeked)
		kstate_raw_append(c->kst, buf + used, len - used); /* keeper */
	if (ok && used < len && !peeked)
		ok = feed_requests(srv, c, buf + used, len - used);
	return ok;
}

/* ---- requests and replies --------------------------------------------- */

/* Sends what is buffered without waiting. False if the peer is gone. */
static bool flush_out(struct conn *c)
{
	size_t done = 0;
	if (c->kst && c->out_len)
		kstate_sending(c->kst, c->out_len); /* keeper */
	while (done < c->out_len) {
		ssize_t n = send(c->sock, c->out + done, c->out_len - done,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			return false;
		}
		done += (size_t)n;
	}
	if (c->kst)
		kstate_sent(c->kst, done); /* keeper: replies sent are done */
	memmove(c->out, c->out + done, c->out_len - done);
	c->out_len -= done;
	return true;
}

static bool queue_reply(struct conn *c, const char *buf, size_t len)
{
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + len)
			cap *= 2;
		char *n = realloc(c->out, cap);
		if (!n)
			return false;
		c->out = n;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
	return flush_out(c);
}

static uint32_t conn_sock_events(const struct conn *c)
{
	/* While replies wait, requests are not read: a VMM that does not
	 * read its replies stops its own stream, and holds no worker. */
	if (c->out_len)
		return EPOLLOUT;
	return c->sock_eof ? 0 : EPOLLIN | EPOLLRDHUP;
}

static bool serve_request(struct pagein_server *srv, struct conn *c,
			  const struct fault_request *rq, struct state_request *je)
{
	uint64_t len;
	bool zero;
	struct pagein_error err = {{0}};
	int r = pagein_session_populate_offset(c->session, rq->offset, &len, &zero, &err);
	char reply[768];
	int n;
	if (r == -EINVAL || r == -ENOTSUP || r == -EHWPOISON) {
		/* A bad request, or a poisoned page: that request only is
		 * refused; the reply says why (len 0) so the vCPU is not left
		 * waiting for nothing, and the bit stays set. */
		server_log(srv, PAGEIN_LOG_WARN, c, "refused_request",
			   "refused fault request (vcpu %" PRId64 "): %s", rq->vcpu, err.msg);
		n = protocol_format_reply(reply, sizeof(reply), rq, 0, false, err.msg);
	} else if (r < 0) {
		server_end_conn(srv, c, r == -ESRCH ? END_VMM_GONE : END_FAILED,
				err.msg[0] ? err.msg : strerror(-r));
		return false;
	} else {
		n = protocol_format_reply(reply, sizeof(reply), rq, len, zero, NULL);
	}
	if (c->kst && n >= 0)
		kstate_request_queued(c->kst, je, (size_t)n); /* keeper */
	if (n < 0 || !queue_reply(c, reply, (size_t)n)) {
		server_end_conn(srv, c, END_FAILED, "cannot send a fault reply");
		return false;
	}
	return true;
}

static bool feed_requests(struct pagein_server *srv, struct conn *c,
			  const char *buf, size_t len)
{
	/* keeper: buf was appended to the journal's raw bytes, after what
	 * the decoder already holds (carry). */
	size_t carry = 0;
	if (c->kst) {
		size_t l;
		kstate_raw(c->kst, &l);
		carry = l >= len ? l - len : 0;
	}
	while (len) {
		size_t used;
		struct fault_request rq;
		struct pagein_error err = {{0}};
		enum decode_result r = protocol_feed_request(c->dec, buf, len, &used, &rq, &err);
		if (r == DECODE_ERROR) {
			char why[320];
			snprintf(why, sizeof(why), "bad fault-request stream: %s", err.msg);
			server_end_conn(srv, c, END_FAILED, why);
			return false;
		}
		struct state_request *je = NULL;
		if (r == DECODE_VALUE && c->kst) { /* keeper: pending, then parsed */
			je = kstate_request_push(c->kst, &rq);
			kstate_raw_consume(c->kst, carry + used);
			carry = 0;
		}
		if (r == DECODE_VALUE && !serve_request(srv, c, &rq, je))
			return false;
		buf += used;
		len -= used;
		if (r == DECODE_MORE)
			break;
	}
	return true;
}

/* EOF on the socket. On the handshake: refused. After it: only "no more
 * messages" (Firecracker before v1.12 closes the socket right after its
 * sendmsg and runs on with its own copy of the uffd): the VMM's exit comes
 * from its pidfd. Without a pidfd, EOF is the only sign we have. */
static bool on_eof(struct pagein_server *srv, struct conn *c)
{
	if (c->state == CONN_HANDSHAKE) {
		char why[128];
		if (atomic_load(&c->timed_out))
			snprintf(why, sizeof(why),
				 "no complete handshake within --handshake-timeout (%zu bytes received)",
				 c->handshake_bytes);
		else
			snprintf(why, sizeof(why),
				 "connection closed before the handshake was complete (%zu bytes received)",
				 c->handshake_bytes);
		if (!c->got_fds) {
			server_end_conn(srv, c, END_HUNG_UP, why);
			return false;
		}
		return refuse(srv, c, why);
	}
	if (c->pidfd < 0) {
		server_end_conn(srv, c, END_VMM_GONE, "socket closed and no pidfd to tell more");
		return false;
	}
	c->sock_eof = true;
	server_log(srv, PAGEIN_LOG_DEBUG, c, "socket_closed",
		   "VMM closed its socket; serving on until it exits");
	return true;
}

/* keeper: a request-stream read that a SIGKILL cannot lose: the bytes
 * are peeked, journalled as raw bytes, then consumed. */
static ssize_t journalled_recv(struct conn *c, struct msghdr *mh)
{
	ssize_t n = recv(c->sock, mh->msg_iov[0].iov_base, mh->msg_iov[0].iov_len,
			 MSG_PEEK | MSG_DONTWAIT);
	if (n <= 0)
		return n < 0 ? n : recvmsg(c->sock, mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	kstate_raw_append(c->kst, mh->msg_iov[0].iov_base, (size_t)n);
	kstate_peeked(c->kst, (size_t)n);
	mh->msg_iov[0].iov_len = (size_t)n;
	ssize_t m = recvmsg(c->sock, mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	kstate_peeked(c->kst, 0);
	return m;
}

static bool on_sock_locked(struct pagein_server *srv, struct conn *c)
{
	if (c->out_len) {
		if (!flush_out(c)) {
			server_end_conn(srv, c, c->pidfd < 0 ? END_VMM_GONE : END_FAILED,
					"cannot send fault replies");
			return false;
		}
		if (c->out_len)
			return true; /* still waiting for the VMM to read */
	}
	if (c->sock_eof)
		return true;
	char buf[16384];
	for (int reads = 0; reads < READS_PER_WAKE; reads++) {
		/* A request stream is read one budget at a time, so that a
		 * flood is served about REQUESTS_PER_WAKE per turn. */
		if (c->state == CONN_SESSION && reads > 0)
			break;
		union {
			struct cmsghdr align;
			char b[CMSG_SPACE(sizeof(int) * 8)];
		} ctl;
		struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = ctl.b,
			.msg_controllen = sizeof(ctl.b),
		};
		if (c->state == CONN_SESSION)
			iov.iov_len = REQUEST_BYTES_PER_WAKE;
		/* keeper: the handshake is peeked at (keeper_link.h) and the
		 * requests journalled. */
		ssize_t n = c->kst && c->state == CONN_SESSION
				    ? journalled_recv(c, &mh)
				    : recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT |
							     (c->hs_peek ? MSG_PEEK : 0));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return true;
			if (errno == ECONNRESET)
				return on_eof(srv, c);
			char why[128];
			snprintf(why, sizeof(why), "recvmsg: %s", strerror(errno));
			server_end_conn(srv, c, c->state == CONN_HANDSHAKE ? END_HUNG_UP : END_FAILED, why);
			return false;
		}
		if (c->state == CONN_HANDSHAKE) {
			take_fds(c, &mh);
			if (mh.msg_flags & MSG_CTRUNC)
				c->extra_fds = true;
		} else {
			/* No protocol sends fds after the handshake: drop them. */
			struct conn tmp = {.fds = {-1, -1, -1}};
			take_fds(&tmp, &mh);
			close_received_fds(&tmp);
		}
		if (n == 0)
			return on_eof(srv, c);
		/* After a mainline handshake nothing should come; whatever does
		 * is read as fault requests, which that session refuses. */
		bool ok = c->state == CONN_HANDSHAKE
				  ? feed_handshake(srv, c, buf, (size_t)n)
				  : feed_requests(srv, c, buf, (size_t)n);
		if (!ok)
			return false;
		if (c->out_len)
			return true; /* replies wait: stop reading until they go */
	}
	return true; /* budget spent: back to the end of the queue */
}

bool conn_on_sock(struct pagein_server *srv, struct conn *c, uint32_t *next)
{
	pthread_mutex_lock(&c->sock_lock);
	bool keep = on_sock_locked(srv, c);
	*next = conn_sock_events(c);
	pthread_mutex_unlock(&c->sock_lock);
	return keep;
}

bool conn_on_uffd(struct pagein_server *srv, struct conn *c)
{
	struct pagein_error err = {{0}};
	int r = pagein_session_handle_uffd(c->session, &err);
	if (r == 0)
		return true;
	server_end_conn(srv, c, r == -ESRCH ? END_VMM_GONE : END_FAILED,
			err.msg[0] ? err.msg : strerror(-r));
	return false;
}

bool conn_on_event(struct pagein_server *srv, struct conn *c)
{
	struct pagein_error err = {{0}};
	int r = pagein_session_error(c->session, &err);
	if (r == 0)
		return true;
	server_end_conn(srv, c, r == -ESRCH ? END_VMM_GONE : END_FAILED, err.msg);
	return false;
}

bool conn_on_pidfd(struct pagein_server *srv, struct conn *c)
{
	server_end_conn(srv, c, END_VMM_EXITED, NULL);
	return false;
}

/* ---- keeper: a session handed over by the keeper ---------------------- */

/* Serves again the requests whose replies never completely left (a page
 * already PRESENT just gets its reply), then the bytes read but not yet
 * parsed. Caller holds sock_lock. */
static bool resume_requests(struct pagein_server *srv, struct conn *c)
{
	struct state_hdr *h = c->kst->hdr;
	kstate_recover_sent(c->kst);
	char sock_head[STATE_RAW_CAP];
	ssize_t hn = recv(c->sock, sock_head, sizeof(sock_head), MSG_PEEK | MSG_DONTWAIT);
	kstate_recover_peeked(c->kst, sock_head, hn > 0 ? (size_t)hn : 0);
	uint64_t head = atomic_load(&h->rq_head), tail = atomic_load(&h->rq_tail);
	size_t n = tail - head > STATE_REQUEST_SLOTS ? STATE_REQUEST_SLOTS : (size_t)(tail - head);
	struct fault_request *rqs = n ? calloc(n, sizeof(*rqs)) : NULL;
	if (n && !rqs)
		return refuse(srv, c, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const struct state_request *e = &c->kst->rq[(head + i) % STATE_REQUEST_SLOTS];
		rqs[i].vcpu = e->vcpu;
		rqs[i].offset = e->offset;
		rqs[i].flags = e->flags;
		memcpy(rqs[i].token, e->token, sizeof(rqs[i].token));
	}
	atomic_store(&h->rq_head, 0);
	atomic_store(&h->rq_tail, 0);
	atomic_store(&h->out_queued, 0);
	atomic_store(&h->out_sent, 0);
	atomic_store(&h->out_sending, 0);
	if (n)
		server_log(srv, PAGEIN_LOG_INFO, c, "requests_replayed",
			   "serving again %zu fault request%s whose reply was not sent", n, n == 1 ? "" : "s");
	for (size_t i = 0; i < n; i++)
		if (!serve_request(srv, c, &rqs[i], kstate_request_push(c->kst, &rqs[i]))) {
			free(rqs);
			return false;
		}
	free(rqs);
	size_t len;
	const char *raw = kstate_raw(c->kst, &len);
	if (!len)
		return true;
	char buf[STATE_RAW_CAP];
	memcpy(buf, raw, len);
	return feed_requests(srv, c, buf, len);
}

int conn_adopt(struct pagein_server *srv, struct kstate *k, int sock, int pidfd,
	       int uffd, int mem_fd, int bitmap_fd, struct pagein_error *err)
{
	struct conn *c = conn_new(srv, sock);
	if (!c || server_add_conn(srv, c) < 0) {
		if (c)
			conn_free(c);
		else
			close(sock);
		int fds[] = {pidfd, uffd, mem_fd, bitmap_fd};
		for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
			if (fds[i] >= 0)
				close(fds[i]);
		kstate_free(k);
		return pagein_fail(err, ENOMEM, "out of memory adopting a session");
	}
	struct state_hdr *h = k->hdr;
	if (pidfd >= 0) { /* the one pinned at the first accept */
		if (c->pidfd >= 0)
			close(c->pidfd);
		c->pidfd = pidfd;
	}
	c->kst = k;
	conn_unpeek_handshake(c); /* an engine may have died before it did */
	c->id = h->id;
	c->pid = h->pid;
	snprintf(c->name, sizeof(c->name), "vm%u pid %d", c->id, (int)c->pid);
	conn_ids_from(c->id);
	c->got_fds = true;
	c->fds[0] = uffd;
	c->fds[1] = mem_fd;
	c->fds[2] = bitmap_fd;
	c->nfds = 3;
	atomic_fetch_add(&c->refs, 1); /* ours, while ending it may drop the table's */
	pthread_mutex_lock(&c->sock_lock);
	struct pagein_region regions[STATE_MAX_REGIONS];
	for (uint32_t i = 0; i < h->nregions; i++)
		regions[i] = (struct pagein_region){
			.host_addr = h->regions[i].host_addr,
			.size = h->regions[i].size,
			.offset = h->regions[i].offset,
			.page_size = h->regions[i].page_size,
		};
	struct pagein_session_config cfg = session_cfg(srv, c, regions, h->nregions, uffd, mem_fd,
						       bitmap_fd);
	struct pagein_session *s;
	int r = session_new_state(&cfg, k, &s, err);
	bool ok = r == 0;
	if (!ok) {
		char why[320];
		snprintf(why, sizeof(why), "cannot adopt the session: %s", err->msg);
		refuse(srv, c, why);
		goto out;
	}
	c->session = s;
	for (int i = 0; i < 3; i++)
		c->fds[i] = -1;
	c->nfds = 0;
	struct recover_stats rs;
	r = session_recover(s, &rs);
	if (r < 0) {
		server_end_conn(srv, c, r == -ESRCH ? END_VMM_GONE : END_FAILED,
				"recovering the session's state failed");
		ok = false;
		goto out;
	}
	metrics_session_start(srv, c);
	c->state = CONN_SESSION;
	json_decoder_free(c->dec);
	c->dec = json_decoder_new(PROTOCOL_MAX_REQUEST);
	if (!c->dec) {
		ok = refuse(srv, c, "out of memory");
		goto out;
	}
	server_log(srv, PAGEIN_LOG_INFO, c, "session_adopted",
		   "session adopted from the keeper: %u region%s, %s protocol; fills in flight: %" PRIu64
		   " present, %" PRIu64 " absent, %" PRIu64 " removed; %" PRIu64 " discard%s replayed; %" PRIu64 " pages present",
		   h->nregions, h->nregions == 1 ? "" : "s", mem_fd >= 0 ? "secret-hiding" : "mainline",
		   rs.filling_present, rs.filling_absent, rs.filling_removed, rs.removes_replayed,
		   rs.removes_replayed == 1 ? "" : "s", rs.pages_present);
	struct pagein_prefetch pf = {
		.offsets = srv->working_set,
		.count = srv->working_set_len,
		.populate = srv->cfg.populate,
	};
	r = pagein_session_prefetch(s, &pf, err);
	if (r < 0) {
		server_end_conn(srv, c, r == -ESRCH ? END_VMM_GONE : END_FAILED,
				err->msg[0] ? err->msg : strerror(-r));
		ok = false;
		goto out;
	}
	atomic_store_explicit(&c->published, s, memory_order_release);
	if (server_watch_session(srv, c) < 0) {
		ok = refuse(srv, c, "cannot watch the session's fds");
		goto out;
	}
	ok = resume_requests(srv, c);
	if (ok && server_watch_sock(srv, c, conn_sock_events(c)) < 0)
		ok = refuse(srv, c, "cannot watch the socket");
out:
	pthread_mutex_unlock(&c->sock_lock);
	if (atomic_fetch_sub(&c->refs, 1) == 1)
		conn_free(c);
	return ok ? 0 : -EIO;
}

/* ---- keeper: a connection handed over in its handshake ----------------- */

bool conn_peek_handshake(struct conn *c)
{
	int off = 0;
	if (setsockopt(c->sock, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)) < 0)
		return false;
	c->hs_peek = true;
	return true;
}

void conn_unpeek_handshake(struct conn *c)
{
	int off = -1;
	setsockopt(c->sock, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	c->hs_peek = false;
}

int conn_adopt_pending(struct pagein_server *srv, unsigned id, int sock,
		       struct pagein_error *err)
{
	struct conn *c = conn_new(srv, sock);
	if (!c) {
		close(sock);
		return pagein_fail(err, ENOMEM, "out of memory adopting a connection");
	}
	c->id = id;
	snprintf(c->name, sizeof(c->name), "vm%u pid %d", c->id, (int)c->pid);
	conn_ids_from(id);
	/* From its first byte again: the offset the dead engine had peeked
	 * to is the socket's, and stayed. */
	if (!conn_peek_handshake(c) || server_add_conn(srv, c) < 0) {
		conn_free(c);
		return pagein_fail(err, ENOMEM, "cannot adopt connection %u", id);
	}
	server_log(srv, PAGEIN_LOG_INFO, c, "connection_adopted",
		   "connection adopted from the keeper in its handshake: reading the handshake again");
	if (server_watch_sock(srv, c, EPOLLIN | EPOLLRDHUP) < 0)
		server_end_conn(srv, c, END_HUNG_UP, "cannot watch the socket");
	return 0;
}
