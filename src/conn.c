/* conn.c - one VMM connection: receive the handshake (JSON + fds), turn it
 * into a session, then serve its uffd and (secret hiding) its request
 * stream. Every refusal is logged once, naming the VM and the field. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "protocol.h"
#include "server_internal.h"
#include "source.h"
#include "workingset.h"

/* Replies are small; a VMM that does not read them for this long is stuck. */
#define REPLY_TIMEOUT_MS 1000

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
	c->sock = sock;
	c->fds[0] = c->fds[1] = c->fds[2] = -1;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	c->pid = getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 ? cr.pid : 0;
	c->id = atomic_fetch_add(&srv->next_id, 1) + 1;
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
	json_decoder_free(c->dec);
	close(c->sock);
	free(c);
}

static void save_recording(struct pagein_server *srv, struct conn *c);

void conn_log_end(struct pagein_server *srv, struct conn *c, const char *why)
{
	if (!c->session) {
		server_log(srv, PAGEIN_LOG_INFO, "%s: connection closed (%s)", c->name, why);
		return;
	}
	struct pagein_stats st;
	char line[1024];
	pagein_session_stats(c->session, &st);
	pagein_stats_format(&st, line, sizeof(line));
	server_log(srv, PAGEIN_LOG_INFO, "%s: session ended (%s): %s", c->name, why, line);
	const char *perr = pagein_session_prefetch_error(c->session);
	if (perr)
		server_log(srv, PAGEIN_LOG_ERROR, "%s: prefetch stopped: %s", c->name, perr);
	save_recording(srv, c);
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
	server_log(srv, PAGEIN_LOG_INFO, "%s: stats: %s", c->name, line);
}

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
	server_log(srv, PAGEIN_LOG_ERROR, "%s: refused handshake: %s", c->name, why);
	return false;
}

static bool feed_requests(struct pagein_server *srv, struct conn *c,
			  const char *buf, size_t len);

/* The handshake is complete: check the fds, build the session. */
static bool start_session(struct pagein_server *srv, struct conn *c,
			  struct handshake *hs)
{
	char why[300];
	if (c->extra_fds || (c->nfds != 1 && c->nfds != 3)) {
		snprintf(why, sizeof(why),
			 "expected 1 fd (mainline: uffd) or 3 fds (secret hiding: uffd, guest memory, bitmap), got %s%d",
			 c->extra_fds ? "more than " : "", c->nfds);
		return refuse(srv, c, why);
	}
	struct pagein_session_config cfg = {
		.regions = hs->regions,
		.nregions = hs->nregions,
		.uffd = c->fds[0],
		.mem_fd = c->nfds == 3 ? c->fds[1] : -1,
		.bitmap_fd = c->nfds == 3 ? c->fds[2] : -1,
		.source = srv->source,
		.name = c->name,
		.on_corrupt = srv->cfg.on_corrupt,
		.fault_around = srv->cfg.fault_around,
		.record = srv->record_path != NULL,
	};
	struct pagein_error err = {{0}};
	int r = pagein_session_new(&cfg, &c->session, &err);
	if (r < 0) {
		c->session = NULL;
		return refuse(srv, c, err.msg[0] ? err.msg : strerror(-r));
	}
	c->nfds = 0; /* the session owns them now */
	c->state = CONN_SESSION;
	/* From here the decoder parses fault requests: smaller values. */
	json_decoder_free(c->dec);
	c->dec = json_decoder_new(PROTOCOL_MAX_REQUEST);
	if (!c->dec)
		return refuse(srv, c, "out of memory");
	server_log(srv, PAGEIN_LOG_INFO, "%s: session started: %zu region%s, %s protocol",
		   c->name, hs->nregions, hs->nregions == 1 ? "" : "s",
		   cfg.mem_fd >= 0 ? "secret-hiding" : "mainline");
	for (size_t i = 0; i < hs->nregions; i++)
		server_log(srv, PAGEIN_LOG_DEBUG,
			   "%s: region %zu: 0x%" PRIx64 " size %" PRIu64 " offset %" PRIu64 " page %" PRIu64,
			   c->name, i, hs->regions[i].host_addr, hs->regions[i].size,
			   hs->regions[i].offset, hs->regions[i].page_size);
	struct pagein_prefetch pf = {
		.offsets = srv->working_set,
		.count = srv->working_set_len,
		.populate = srv->cfg.populate,
	};
	r = pagein_session_prefetch(c->session, &pf, &err);
	if (r < 0) {
		server_log(srv, PAGEIN_LOG_ERROR, "%s: %s", c->name, err.msg[0] ? err.msg : strerror(-r));
		conn_log_end(srv, c, r == -ESRCH ? "VMM gone" : "fatal error");
		return false;
	}
	atomic_store_explicit(&c->published, c->session, memory_order_release);
	if (server_watch_uffd(srv, c) < 0)
		return refuse(srv, c, "cannot watch the uffd");
	return true;
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
	if (mark)
		snprintf(path, sizeof(path), "%.*s%u%s", (int)(mark - tpl), tpl, c->id, mark + 2);
	else
		snprintf(path, sizeof(path), "%s", tpl);
	struct workingset ws = {
		.page_size = 4096,
		.snapshot_size = pagein_source_size(srv->source),
		.count = n,
		.offsets = off,
	};
	struct pagein_error err = {{0}};
	if (workingset_save(path, &ws, &err) < 0)
		server_log(srv, PAGEIN_LOG_ERROR, "%s: %s", c->name, err.msg);
	else
		server_log(srv, PAGEIN_LOG_INFO, "%s: recorded %zu pages of working set in %s",
			   c->name, n, path);
	free(off);
}

static bool feed_handshake(struct pagein_server *srv, struct conn *c,
			   const char *buf, size_t len)
{
	c->handshake_bytes += len;
	size_t used;
	struct handshake hs;
	struct pagein_error err = {{0}};
	enum decode_result r = protocol_feed_handshake(c->dec, buf, len, &used, &hs, &err);
	if (r == DECODE_MORE)
		return true;
	if (r == DECODE_ERROR)
		return refuse(srv, c, err.msg);
	bool ok = start_session(srv, c, &hs);
	handshake_fini(&hs);
	if (ok && used < len)
		ok = feed_requests(srv, c, buf + used, len - used);
	return ok;
}

static bool send_all(struct conn *c, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(c->sock, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return false;
			struct pollfd p = {.fd = c->sock, .events = POLLOUT};
			if (poll(&p, 1, REPLY_TIMEOUT_MS) <= 0)
				return false;
			continue;
		}
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

static bool serve_request(struct pagein_server *srv, struct conn *c,
			  const struct fault_request *rq)
{
	uint64_t len;
	bool zero;
	struct pagein_error err = {{0}};
	int r = pagein_session_populate_offset(c->session, rq->offset, &len, &zero, &err);
	char reply[768];
	int n;
	if (r == -EINVAL || r == -ENOTSUP) {
		/* A bad request refuses that request only; the reply says why
		 * (len 0) so the vCPU is not left waiting for nothing. */
		server_log(srv, PAGEIN_LOG_WARN, "%s: refused fault request (vcpu %" PRId64 "): %s",
			   c->name, rq->vcpu, err.msg);
		n = protocol_format_reply(reply, sizeof(reply), rq, 0, false, err.msg);
	} else if (r < 0) {
		server_log(srv, PAGEIN_LOG_ERROR, "%s: fault request at offset 0x%" PRIx64 ": %s",
			   c->name, rq->offset, err.msg[0] ? err.msg : strerror(-r));
		return false;
	} else {
		n = protocol_format_reply(reply, sizeof(reply), rq, len, zero, NULL);
	}
	if (n < 0 || !send_all(c, reply, (size_t)n)) {
		server_log(srv, PAGEIN_LOG_ERROR, "%s: cannot send fault reply", c->name);
		return false;
	}
	return true;
}

static bool feed_requests(struct pagein_server *srv, struct conn *c,
			  const char *buf, size_t len)
{
	while (len) {
		size_t used;
		struct fault_request rq;
		struct pagein_error err = {{0}};
		enum decode_result r = protocol_feed_request(c->dec, buf, len, &used, &rq, &err);
		if (r == DECODE_ERROR) {
			server_log(srv, PAGEIN_LOG_ERROR, "%s: bad fault-request stream: %s",
				   c->name, err.msg);
			return false;
		}
		if (r == DECODE_VALUE && !serve_request(srv, c, &rq))
			return false;
		buf += used;
		len -= used;
		if (r == DECODE_MORE)
			break;
	}
	return true;
}

bool conn_on_sock(struct pagein_server *srv, struct conn *c, uint32_t events)
{
	char buf[16384];
	for (;;) {
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
		ssize_t n = recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return true;
			server_log(srv, PAGEIN_LOG_ERROR, "%s: recvmsg: %s", c->name, strerror(errno));
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
		if (n == 0) {
			if (c->state == CONN_HANDSHAKE) {
				char why[128];
				snprintf(why, sizeof(why),
					 "connection closed before the handshake was complete (%zu bytes received)",
					 c->handshake_bytes);
				return refuse(srv, c, why);
			}
			conn_log_end(srv, c, "VMM hung up");
			return false;
		}
		/* After a mainline handshake nothing should come; whatever does
		 * is read as fault requests, which that session refuses. */
		bool ok = c->state == CONN_HANDSHAKE
				  ? feed_handshake(srv, c, buf, (size_t)n)
				  : feed_requests(srv, c, buf, (size_t)n);
		if (!ok)
			return false;
	}
}

bool conn_on_uffd(struct pagein_server *srv, struct conn *c)
{
	struct pagein_error err = {{0}};
	int r = pagein_session_handle_uffd(c->session, &err);
	if (r == 0)
		return true;
	if (r == -ESRCH) {
		conn_log_end(srv, c, "VMM gone");
	} else {
		server_log(srv, PAGEIN_LOG_ERROR, "%s: %s", c->name, err.msg[0] ? err.msg : strerror(-r));
		conn_log_end(srv, c, "fatal error");
	}
	return false;
}
