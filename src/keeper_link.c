/* keeper_link.c - the engine's side of the keeper link (keeper_link.h). */
#include "keeper_link.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "server_internal.h"
#include "session.h"
#include "state.h"

static int link_fd = -1;

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

int keeper_send(int fd, const struct keeper_msg *m, const int *fds, int nfds)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int) * KMSG_MAX_FDS)];
	} ctl;
	struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof(*m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
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

int keeper_recv(int fd, struct keeper_msg *m, int *fds, int *nfds, bool block)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int) * KMSG_MAX_FDS)];
	} ctl;
	struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b)};
	*nfds = 0;
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
	if ((size_t)n != sizeof(*m)) {
		for (int i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
		return -EPROTO;
	}
	return (int)n;
}

void keeper_send_keep(struct conn *c)
{
	struct pagein_session *s = c->session;
	struct keeper_msg m = {.type = KMSG_KEEP, .id = c->id, .pid = (int32_t)c->pid};
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
	int r = keeper_send(link_fd, &m, fds, n);
	if (r < 0)
		server_log(c->srv, PAGEIN_LOG_WARN, c, "keeper_keep_failed",
			   "cannot hand the session to the keeper: %s (it will not survive a crash of this process)",
			   strerror(-r));
	/* The keeper holds the memfd now; our mapping is enough. */
	close(c->kst->fd);
	c->kst->fd = -1;
}

void keeper_send_drop(struct conn *c)
{
	struct keeper_msg m = {.type = KMSG_DROP, .id = c->id, .pid = (int32_t)c->pid};
	keeper_send(link_fd, &m, NULL, 0);
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
		m.dev = (uint64_t)srv->sock_dev;
		m.ino = (uint64_t)srv->sock_ino;
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
