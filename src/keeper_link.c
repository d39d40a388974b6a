/* keeper_link.c - the engine's side of the keeper link (keeper_link.h). */
#include "keeper_link.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <signal.h>
#include <unistd.h>

#include "error.h"
#include "server_internal.h"
#include "session.h"
#include "state.h"

static int link_fd = -1;
/* The keeper takes PENDING and KEEP with KMSG_CONSUME (its DONE said so). */
static bool can_pending;
static bool fdstore; /* DONE said KMSG_FDSTORE */
/* One KEEP waiting for its KEPT at a time: the only message the keeper
 * sends after DONE, so the waiter that holds this reads its own answer. */
static pthread_mutex_t keep_lock = PTHREAD_MUTEX_INITIALIZER;

void keeper_link_attach(int fd)
{
	link_fd = fd;
}

bool keeper_link_active(void)
{
	return link_fd >= 0;
}

int keeper_link_fd(void)
{
	return link_fd;
}

int keeper_send_payload(int fd, const struct keeper_msg *m, const void *payload, size_t plen,
			const int *fds, int nfds)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int) * KMSG_MAX_FDS)];
	} ctl;
	struct iovec iov[2] = {{.iov_base = (void *)m, .iov_len = sizeof(*m)},
			       {.iov_base = (void *)payload, .iov_len = plen}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = plen ? 2 : 1};
	if (nfds > 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	for (;;) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n >= 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

int keeper_send(int fd, const struct keeper_msg *m, const int *fds, int nfds)
{
	return keeper_send_payload(fd, m, NULL, 0, fds, nfds);
}

int keeper_recv_payload(int fd, struct keeper_msg *m, char *payload, size_t cap, size_t *plen,
			int *fds, int *nfds, bool block)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int) * KMSG_MAX_FDS)];
	} ctl;
	char sink[1];
	struct iovec iov[2] = {{.iov_base = m, .iov_len = sizeof(*m)},
			       {.iov_base = payload ? payload : sink, .iov_len = payload ? cap : sizeof(sink)}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b)};
	*nfds = 0;
	if (plen)
		*plen = 0;
	ssize_t n;
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | (block ? 0 : MSG_DONTWAIT));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *p = (int *)CMSG_DATA(cm);
		for (size_t i = 0; i < k; i++) {
			if (*nfds < KMSG_MAX_FDS)
				fds[(*nfds)++] = p[i];
			else
				close(p[i]);
		}
	}
	if (n == 0)
		return 0;
	if ((size_t)n < sizeof(*m) || (payload && (mh.msg_flags & MSG_TRUNC))) {
		for (int i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
		return -EPROTO;
	}
	if (plen && payload)
		*plen = (size_t)n - sizeof(*m);
	return (int)n;
}

bool keeper_discard(int sock, uint64_t len)
{
	char buf[4096];
	while (len) {
		union {
			struct cmsghdr align;
			char b[CMSG_SPACE(sizeof(int) * 8)];
		} ctl;
		struct iovec iov = {.iov_base = buf, .iov_len = len < sizeof(buf) ? (size_t)len : sizeof(buf)};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
				    .msg_controllen = sizeof(ctl.b)};
		ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); n >= 0 && cm; cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
				for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
					close(((int *)CMSG_DATA(cm))[i]);
		if (n <= 0)
			return false;
		len -= (uint64_t)n;
	}
	return true;
}

int keeper_recv(int fd, struct keeper_msg *m, int *fds, int *nfds, bool block)
{
	return keeper_recv_payload(fd, m, NULL, 0, NULL, fds, nfds, block);
}

void keeper_link_done(const struct keeper_msg *m)
{
	can_pending = (m->flags & KMSG_CAN_PENDING) != 0;
	fdstore = (m->flags & KMSG_FDSTORE) != 0;
	conn_ids_from(m->id);
}

bool keeper_link_fdstore(void)
{
	return fdstore;
}

bool keeper_send_pending(struct conn *c)
{
	if (link_fd < 0 || !can_pending || !conn_peek_handshake(c))
		return false;
	struct keeper_msg m = {.type = KMSG_PENDING, .id = c->id, .pid = (int32_t)c->pid};
	m.conn.sid = c->srv->keeper_sid;
	snprintf(m.name, sizeof(m.name), "%s", c->name);
	int r = keeper_send(link_fd, &m, &c->sock, 1);
	if (r < 0) {
		server_log(c->srv, PAGEIN_LOG_WARN, c, "keeper_pending_failed",
			   "cannot hand the connection to the keeper: %s (its handshake would not survive a crash of this process)",
			   strerror(-r));
		conn_unpeek_handshake(c);
		return false;
	}
	return true;
}

/* KEPT for id, or why not. Caller holds keep_lock. */
static int wait_kept(uint32_t id)
{
	for (;;) {
		struct keeper_msg m;
		int fds[KMSG_MAX_FDS], nfds;
		int r = keeper_recv(link_fd, &m, fds, &nfds, true);
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		if (r == 0)
			return -EPIPE;
		if (r < 0 && r != -EPROTO)
			return r;
		if (r > 0 && m.type == KMSG_KEPT && m.id == id)
			return (m.flags & KMSG_FAILED) ? -EIO : 0;
	}
}

int keeper_send_keep(struct conn *c, size_t consume)
{
	struct pagein_session *s = c->session;
	struct keeper_msg m = {.type = KMSG_KEEP, .id = c->id, .pid = (int32_t)c->pid};
	m.conn.sid = c->srv->keeper_sid;
	if (consume) {
		m.flags |= KMSG_CONSUME;
		m.conn.consume = consume;
	}
	snprintf(m.name, sizeof(m.name), "%s", c->name);
	int fds[KMSG_MAX_FDS], n = 0;
	fds[n++] = c->kst->fd;
	fds[n++] = c->sock;
	fds[n++] = s->uffd;
	if (c->pidfd >= 0) {
		m.flags |= KMSG_PIDFD;
		fds[n++] = c->pidfd;
	}
	if (s->mem_fd >= 0) {
		m.flags |= KMSG_MEM;
		fds[n++] = s->mem_fd;
		fds[n++] = s->bitmap_fd;
	}
	pthread_mutex_lock(&keep_lock);
	int r = keeper_send(link_fd, &m, fds, n);
	if (r == 0 && consume)
		r = wait_kept(c->id);
	pthread_mutex_unlock(&keep_lock);
	if (r < 0 && consume)
		return r; /* the handshake may still be in the socket */
	if (consume)
		conn_unpeek_handshake(c);
	if (r < 0)
		server_log(c->srv, PAGEIN_LOG_WARN, c, "keeper_keep_failed",
			   "cannot hand the session to the keeper: %s (it will not survive a crash of this process)",
			   strerror(-r));
	/* The keeper holds the memfd now; our mapping is enough. */
	close(c->kst->fd);
	c->kst->fd = -1;
	return 0;
}

void keeper_send_drop(struct conn *c)
{
	struct keeper_msg m = {.type = KMSG_DROP, .id = c->id, .pid = (int32_t)c->pid};
	keeper_send(link_fd, &m, NULL, 0);
}

void keeper_orphan(const struct keeper_msg *m, const int *fds, int nfds)
{
	/* fds as in KEEP: state, socket, uffd, then the pidfd if flagged. */
	bool killed = m->type == KMSG_ADOPT && (m->flags & KMSG_PIDFD) && nfds > 3 &&
		      syscall(SYS_pidfd_send_signal, fds[3], SIGKILL, NULL, 0) == 0;
	fprintf(stderr, "pagein serve: %.48s: its socket (number %llu) is no longer served: nothing can serve it%s\n",
		m->name, (unsigned long long)m->conn.sid,
		killed ? "; its VMM was killed" : m->type == KMSG_ADOPT ? "; its VMM could not be killed" : "; closed");
	struct keeper_msg d = {.type = KMSG_DROP, .id = m->id};
	keeper_send(link_fd, &d, NULL, 0);
}

int keeper_adopt_pending(struct pagein_server *srv, const struct keeper_msg *m,
			 int *fds, int nfds, struct pagein_error *err)
{
	if (nfds != 1) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return pagein_fail(err, EPROTO, "keeper: connection %u came with %d fds, expected 1",
				   m->id, nfds);
	}
	return conn_adopt_pending(srv, m->id, fds[0], err);
}

int keeper_adopt(struct pagein_server *srv, const struct keeper_msg *m,
		 int *fds, int nfds, struct pagein_error *err)
{
	int need = 3 + ((m->flags & KMSG_PIDFD) ? 1 : 0) + ((m->flags & KMSG_MEM) ? 2 : 0);
	if (nfds != need) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return pagein_fail(err, EPROTO, "keeper: session %u came with %d fds, expected %d",
				   m->id, nfds, need);
	}
	int i = 0;
	int state = fds[i++], sock = fds[i++], uffd = fds[i++];
	int pidfd = (m->flags & KMSG_PIDFD) ? fds[i++] : -1;
	int mem = (m->flags & KMSG_MEM) ? fds[i++] : -1;
	int bitmap = (m->flags & KMSG_MEM) ? fds[i++] : -1;
	struct kstate *k;
	int r = kstate_open(&k, state, err);
	if (r < 0) {
		int rest[] = {sock, uffd, pidfd, mem, bitmap};
		for (size_t j = 0; j < 5; j++)
			if (rest[j] >= 0)
				close(rest[j]);
		return r;
	}
	/* The session's fds must not leak into the VMMs' or the keeper's
	 * next engine by exec: they came CLOEXEC (MSG_CMSG_CLOEXEC). */
	return conn_adopt(srv, k, sock, pidfd, uffd, mem, bitmap, err);
}

void keeper_send_ready(struct pagein_server *srv)
{
	struct keeper_msg m = {.type = KMSG_READY};
	int fd = -1;
	if (srv) {
		pthread_mutex_lock(&srv->listen_lock);
		if (srv->listen_fd >= 0)
			fd = fcntl(srv->listen_fd, F_DUPFD_CLOEXEC, 0);
		pthread_mutex_unlock(&srv->listen_lock);
	}
	if (fd >= 0 && srv->own_socket) {
		m.file.dev = (uint64_t)srv->sock_dev;
		m.file.ino = (uint64_t)srv->sock_ino;
	}
	keeper_send(link_fd, &m, &fd, fd >= 0 ? 1 : 0);
	if (fd >= 0)
		close(fd);
}

void keeper_quiesce(struct pagein_server *srv)
{
	struct conn_table *t = &srv->conns;
	pthread_mutex_lock(&t->lock);
	for (uint32_t i = 0; i < t->cap; i++) {
		struct conn *c = t->slot[i];
		if (!c || !c->session)
			continue;
		/* Fill-ahead finishes the run it is on (its pages settle),
		 * then its thread is joined; the session itself goes on in
		 * the next engine. */
		pagein_session_stop(c->session);
		prefetch_stop(c->session);
	}
	pthread_mutex_unlock(&t->lock);
}

/* ---- --control ---------------------------------------------------------- */

void keeper_set_sid(struct pagein_server *srv, uint32_t sid)
{
	srv->keeper_sid = sid;
}

void keeper_claim_socket(struct pagein_server *srv, uint64_t dev, uint64_t ino)
{
	if (!dev && !ino)
		return;
	srv->own_socket = true;
	srv->sock_dev = (dev_t)dev;
	srv->sock_ino = (ino_t)ino;
}

void keeper_send_socket(struct pagein_server *srv, int argc, char **argv)
{
	if (link_fd < 0)
		return;
	struct keeper_msg m = {.type = KMSG_SOCKET, .id = srv->keeper_sid};
	if (srv->own_socket) {
		m.file.dev = (uint64_t)srv->sock_dev;
		m.file.ino = (uint64_t)srv->sock_ino;
	}
	char *payload = malloc(KMSG_MAX_PAYLOAD);
	size_t len = 0;
	bool fits = payload != NULL;
	for (int i = 1; i < argc && fits; i++) {
		size_t l = strlen(argv[i]) + 1;
		fits = len + l <= KMSG_MAX_PAYLOAD;
		if (fits)
			memcpy(payload + len, argv[i], l);
		len += l;
	}
	int fd = -1;
	pthread_mutex_lock(&srv->listen_lock);
	if (srv->listen_fd >= 0)
		fd = fcntl(srv->listen_fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&srv->listen_lock);
	int r = fits && fd >= 0 ? keeper_send_payload(link_fd, &m, payload, len, &fd, 1) : -E2BIG;
	if (r < 0)
		server_log(srv, PAGEIN_LOG_WARN, NULL, "keeper_socket_failed",
			   "cannot hand the socket to the keeper: %s (it and its sessions will not survive a crash of this process)",
			   fits ? strerror(-r) : "its options are over 64 KiB");
	if (fd >= 0)
		close(fd);
	free(payload);
}

void keeper_send_socket_msg(uint32_t type, uint32_t sid)
{
	if (link_fd < 0)
		return;
	struct keeper_msg m = {.type = type, .id = sid};
	keeper_send(link_fd, &m, NULL, 0);
}

void keeper_send_control(int fd, uint64_t dev, uint64_t ino)
{
	if (link_fd < 0)
		return;
	struct keeper_msg m = {.type = KMSG_CONTROL};
	m.file.dev = dev;
	m.file.ino = ino;
	keeper_send(link_fd, &m, &fd, 1);
}
