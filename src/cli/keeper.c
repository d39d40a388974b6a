/* keeper.c - `pagein serve --keeper`: a small process that holds the
 * listening socket and every session's fds (connection, uffd, pidfd,
 * guest memory, bitmap, state memfd) and runs the engine (the daemon
 * proper) as a child. If the engine dies, a new one is started at once
 * and handed every session; SIGUSR2 makes the engine hand over to the
 * binary now at the path pagein was started from (an upgrade).
 *
 * Single-threaded, no engine code: signalfd + the link to the engine in
 * one poll loop. See docs/architecture.md, "The keeper". */
#include "keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

#include "keeper_link.h"
#include "log_time.h"
#include "server_internal.h"

/* A crash loop: this many engines in a row that died within
 * CRASH_WINDOW_NS of their start. */
#define CRASH_LOOP 5
#define CRASH_WINDOW_NS 1000000000ull
/* The engine's exit status after a handover (SIGUSR2). */
#define EXIT_HANDOVER 3
/* A connection still in its handshake: only its socket is kept. */
#define KEPT_PENDING 0x100u

struct kept {
	uint32_t id, flags;
	uint32_t sid;     /* the socket it came to (--control; 0: --socket) */
	int32_t pid;
	char name[48];
	int fds[KMSG_MAX_FDS];
	int nfds;
};

/* --control: a socket `pagein ctl add` made, and its serve options. */
struct ksock {
	uint32_t sid;
	int fd;
	bool draining;    /* `ctl remove` began: the next engine drains it */
	dev_t dev;        /* the socket file created (0, 0: none) */
	ino_t ino;
	char *args;       /* NUL-terminated strings, alen bytes */
	size_t alen;
};

static struct {
	struct kept *s;
	size_t n, cap;
	struct ksock *socks;
	size_t nsocks;
	int control_fd;   /* --control's socket, once the first engine made it */
	dev_t control_dev;
	ino_t control_ino;
	bool json;
	bool ready;       /* the engine said it serves */
	const char *log_path;
	int listen_fd;    /* -1 until the first engine created it */
	bool created;     /* it created the socket file (dev, ino): unlink it */
	bool listen_stored; /* listen_fd is in systemd's fd store as "listen" */
	uint32_t max_id;  /* the highest connection number given out */
	uint32_t max_sid; /* the highest socket number given out (--control) */
	dev_t dev;
	ino_t ino;
} K;

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void klog(const char *lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void klog(const char *lvl, const char *event, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	char when[40];
	log_utc_now(when, sizeof(when));
	if (K.json)
		fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"msg\":\"keeper: %s\"}\n",
			when, lvl, event, msg); /* msg has no quotes */
	else
		fprintf(stderr, "%s pagein %s: keeper: %s\n", when, lvl, msg);
}

static void close_kept(struct kept *k)
{
	for (int i = 0; i < k->nfds; i++)
		close(k->fds[i]);
	k->nfds = 0;
}

/* ---- systemd's fd store (docs/operations.md, "Restarts, upgrades and
 * crashes"): with NOTIFY_SOCKET set, every fd the keeper holds is also
 * sent there (FDSTORE=1, one datagram per fd, FDNAME=s<id>-<role>), and
 * removed when its session ends, so that a restart of the whole service
 * (keeper included) gets them back through LISTEN_FDS/LISTEN_FDNAMES. */
static struct {
	int fd;
	struct sockaddr_un addr;
	socklen_t len;
} N = {.fd = -1};

static const char *const ROLES[KMSG_MAX_FDS] = {"state", "sock", "uffd", "pidfd", "mem", "bitmap"};

static void fdstore_init(void)
{
	if (N.fd >= 0)
		return;
	const char *p = getenv("NOTIFY_SOCKET");
	if (!p || (p[0] != '/' && p[0] != '@') || strlen(p) >= sizeof(N.addr.sun_path))
		return;
	N.addr.sun_family = AF_UNIX;
	memcpy(N.addr.sun_path, p, strlen(p));
	if (p[0] == '@')
		N.addr.sun_path[0] = 0;
	N.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(p));
	N.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

/* The role of each of a session's fds, in the order they are kept. */
static int kept_roles(uint32_t flags, int *roles)
{
	int n = 0;
	if (flags & KEPT_PENDING) {
		roles[n++] = 1;
		return n;
	}
	roles[n++] = 0;
	roles[n++] = 1;
	roles[n++] = 2;
	if (flags & KMSG_PIDFD)
		roles[n++] = 3;
	if (flags & KMSG_MEM) {
		roles[n++] = 4;
		roles[n++] = 5;
	}
	return n;
}

static void fdstore_msg(const char *text, int fd)
{
	if (N.fd < 0)
		return;
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
	struct msghdr mh = {.msg_name = &N.addr, .msg_namelen = N.len, .msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	ssize_t r;
	do
		r = sendmsg(N.fd, &mh, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		klog("warn", "fdstore_failed", "%.40s to $NOTIFY_SOCKET: %s (a restart of the service would lose it)",
		     text, strerror(errno));
}

/* FDPOLL=0: systemd must not drop an fd on POLLHUP/POLLERR by itself;
 * the keeper removes a session's fds when the session ends. */
static void fdstore_put(const char *name, int fd)
{
	char msg[320];
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDPOLL=0\nFDNAME=%s", name);
	fdstore_msg(msg, fd);
}

static void fdstore_remove(const char *name)
{
	char msg[320];
	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	fdstore_msg(msg, -1);
}

static void fdstore_session(const struct kept *k, bool put)
{
	if (N.fd < 0)
		return;
	int roles[KMSG_MAX_FDS];
	int n = kept_roles(k->flags, roles);
	for (int i = 0; i < n && i < k->nfds; i++) {
		char name[64];
		snprintf(name, sizeof(name), "s%u-%s", k->id, ROLES[roles[i]]);
		if (put)
			fdstore_put(name, k->fds[i]);
		else
			fdstore_remove(name);
	}
}

static bool push_kept(const struct kept *k)
{
	if (k->id > K.max_id)
		K.max_id = k->id;
	if (K.n == K.cap) {
		size_t cap = K.cap ? K.cap * 2 : 16;
		struct kept *v = realloc(K.s, cap * sizeof(*v));
		if (!v)
			return false;
		K.s = v;
		K.cap = cap;
	}
	K.s[K.n++] = *k;
	return true;
}

/* The name of a listening socket the keeper stored itself (one the first
 * engine created; a .socket unit's is systemd's already). */
#define FDNAME_LISTEN "listen"

int keeper_listen_fds(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	long n = strtol(fds, NULL, 10);
	const char *names = getenv("LISTEN_FDNAMES");
	char *copy = strdup(names ? names : "");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (n <= 0 || n > 1 << 20 || !copy) {
		free(copy);
		return 0;
	}
	fdstore_init();
	int listen = 0;
	bool listen_stored = false;
	struct {
		uint32_t id;
		int fd[KMSG_MAX_FDS];
	} *b = calloc((size_t)n, sizeof(*b));
	size_t nb = 0;
	char *save = NULL, *tok = strtok_r(copy, ":", &save);
	for (long i = 0; i < n; i++, tok = tok ? strtok_r(NULL, ":", &save) : NULL) {
		int fd = 3 + (int)i;
		const char *name = tok ? tok : "unknown";
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		unsigned id = 0;
		char role[16] = "";
		int used = 0, r = -1;
		if (sscanf(name, "s%u-%15[a-z]%n", &id, role, &used) == 2 && name[used] == 0)
			for (int j = 0; j < KMSG_MAX_FDS; j++)
				if (!strcmp(role, ROLES[j]))
					r = j;
		if (r < 0) { /* a listening socket */
			bool stored = !strcmp(name, FDNAME_LISTEN);
			if (!listen) {
				listen = fd;
				listen_stored = stored;
			} else if (listen_stored && !stored) { /* the .socket unit's wins */
				close(listen);
				listen = fd;
				listen_stored = false;
			} else {
				close(fd);
			}
			continue;
		}
		size_t j = 0;
		while (j < nb && b[j].id != id)
			j++;
		if (!b || j == nb) {
			if (!b) {
				close(fd);
				continue;
			}
			b[nb].id = id;
			for (int q = 0; q < KMSG_MAX_FDS; q++)
				b[nb].fd[q] = -1;
			nb++;
		}
		if (b[j].fd[r] >= 0)
			close(b[j].fd[r]); /* stored twice: one is enough */
		b[j].fd[r] = fd;
	}
	free(copy);
	for (size_t j = 0; j < nb; j++) {
		struct kept k = {.id = b[j].id};
		snprintf(k.name, sizeof(k.name), "vm%u", k.id);
		if (b[j].fd[3] >= 0)
			k.flags |= KMSG_PIDFD;
		if (b[j].fd[4] >= 0 && b[j].fd[5] >= 0)
			k.flags |= KMSG_MEM;
		bool ok = b[j].fd[0] >= 0 && b[j].fd[1] >= 0 && b[j].fd[2] >= 0 &&
			  (b[j].fd[4] >= 0) == (b[j].fd[5] >= 0);
		bool only_sock = b[j].fd[1] >= 0;
		for (int q = 0; q < KMSG_MAX_FDS; q++)
			only_sock &= q == 1 || b[j].fd[q] < 0;
		if (only_sock) { /* a connection in its handshake */
			k.flags = KEPT_PENDING;
			ok = true;
		}
		int roles[KMSG_MAX_FDS];
		int nr = kept_roles(k.flags, roles);
		for (int q = 0; q < nr; q++)
			k.fds[k.nfds++] = b[j].fd[roles[q]];
		if (!ok || !push_kept(&k)) {
			klog("error", "fdstore_incomplete",
			     "session %u: the fds passed back are incomplete (state, sock and uffd are needed; mem and bitmap go together): dropped",
			     k.id);
			for (int q = 0; q < KMSG_MAX_FDS; q++)
				if (b[j].fd[q] >= 0) {
					char name[64];
					snprintf(name, sizeof(name), "s%u-%s", k.id, ROLES[q]);
					fdstore_remove(name);
					close(b[j].fd[q]);
				}
		}
	}
	free(b);
	if (nb)
		klog("info", "fdstore_restored", "%zu session%s passed back by the service manager (LISTEN_FDS): the first engine adopts them",
		     K.n, K.n == 1 ? "" : "s");
	K.listen_stored = listen_stored;
	return listen;
}

static void drop_kept(uint32_t id, bool pending)
{
	for (size_t i = 0; i < K.n; i++)
		if (K.s[i].id == id && (!pending || (K.s[i].flags & KEPT_PENDING))) {
			fdstore_session(&K.s[i], false);
			close_kept(&K.s[i]);
			K.s[i] = K.s[--K.n];
			return;
		}
}


/* CONTROL or SOCKET (--control): kept for the next engines. */
static void on_socket(const struct keeper_msg *m, const char *payload, size_t plen, int *fds, int nfds)
{
	if (nfds != 1) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return;
	}
	if (m->type == KMSG_CONTROL) {
		if (K.control_fd >= 0)
			close(K.control_fd);
		K.control_fd = fds[0];
		K.control_dev = (dev_t)m->file.dev;
		K.control_ino = (ino_t)m->file.ino;
		return;
	}
	struct ksock k = {.sid = m->id, .fd = fds[0], .dev = (dev_t)m->file.dev, .ino = (ino_t)m->file.ino,
			  .args = malloc(plen ? plen : 1), .alen = plen};
	struct ksock *v = k.args ? realloc(K.socks, (K.nsocks + 1) * sizeof(*v)) : NULL;
	if (!v) {
		klog("error", "keeper_oom", "out of memory: socket %u not kept", m->id);
		free(k.args);
		close(fds[0]);
		return;
	}
	memcpy(k.args, payload, plen);
	if (k.sid > K.max_sid)
		K.max_sid = k.sid;
	K.socks = v;
	K.socks[K.nsocks++] = k;
}

static void on_message(int link, const struct keeper_msg *m, const char *payload, size_t plen,
		       int *fds, int nfds)
{
	if (m->type == KMSG_CONTROL || m->type == KMSG_SOCKET) {
		on_socket(m, payload, plen, fds, nfds);
		return;
	}
	if ((m->type == KMSG_SOCKET_DRAIN || m->type == KMSG_SOCKET_GONE) && m->id == 0) {
		/* `ctl remove` of the command line's socket */
		if (m->type == KMSG_SOCKET_DRAIN && K.listen_fd >= 0 && K.created)
			shutdown(K.listen_fd, SHUT_RD);
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return;
	}
	if (m->type == KMSG_SOCKET_DRAIN || m->type == KMSG_SOCKET_GONE) {
		for (size_t i = 0; i < K.nsocks; i++) {
			struct ksock *k = &K.socks[i];
			if (k->sid != m->id)
				continue;
			if (m->type == KMSG_SOCKET_DRAIN) {
				/* `ctl remove`: our copy refuses connections too */
				k->draining = true;
				if (k->dev || k->ino)
					shutdown(k->fd, SHUT_RD);
				break;
			}
			close(k->fd);
			free(k->args);
			K.socks[i] = K.socks[--K.nsocks];
			break;
		}
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return;
	}
	if (m->type == KMSG_PENDING) {
		struct kept k = {.id = m->id, .flags = KEPT_PENDING, .pid = m->pid, .sid = (uint32_t)m->conn.sid};
		memcpy(k.name, m->name, sizeof(k.name));
		k.name[sizeof(k.name) - 1] = 0;
		if (nfds == 1) {
			k.fds[k.nfds++] = fds[0];
			nfds = 0;
			if (push_kept(&k))
				fdstore_session(&k, true);
			else
				close_kept(&k);
		}
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return;
	}
	if (m->type == KMSG_KEEP && (m->flags & KMSG_CONSUME)) {
		/* The session, and its handshake off the socket, in one step
		 * (keeper_link.h): the connection is no longer pending. */
		drop_kept(m->id, true);
		bool ok = nfds >= 2 && keeper_discard(fds[1], m->conn.consume);
		struct keeper_msg r = {.type = KMSG_KEPT, .id = m->id, .flags = ok ? 0 : KMSG_FAILED};
		if (!ok) {
			klog("error", "keeper_consume_failed", "%.48s: cannot take its handshake (%llu bytes) off the socket: %s",
			     m->name, (unsigned long long)m->conn.consume, strerror(errno));
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
			keeper_send(link, &r, NULL, 0);
			return;
		}
		struct keeper_msg kept = *m;
		kept.flags &= KMSG_PIDFD | KMSG_MEM;
		on_message(link, &kept, NULL, 0, fds, nfds);
		keeper_send(link, &r, NULL, 0);
		return;
	}
	if (m->type == KMSG_KEEP) {
		struct kept k = {.id = m->id, .flags = m->flags, .pid = m->pid, .nfds = nfds,
				 .sid = (uint32_t)m->conn.sid};
		memcpy(k.name, m->name, sizeof(k.name));
		k.name[sizeof(k.name) - 1] = 0;
		memcpy(k.fds, fds, sizeof(int) * (size_t)nfds);
		if (!push_kept(&k)) {
			klog("error", "keeper_oom", "out of memory: session %u not kept", m->id);
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
			return;
		}
		fdstore_session(&k, true);
		return;
	}
	if (m->type == KMSG_READY) {
		K.ready = true;
		if (nfds == 1 && K.listen_fd < 0) {
			K.listen_fd = fds[0];
			nfds = 0;
			K.created = m->file.dev || m->file.ino;
			K.dev = (dev_t)m->file.dev;
			K.ino = (ino_t)m->file.ino;
			fdstore_put(FDNAME_LISTEN, K.listen_fd);
			K.listen_stored = true;
		}
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (m->type == KMSG_DROP)
		drop_kept(m->id, false);
}

/* Everything the engine said; false once it closed its end. */
static bool read_link(int fd)
{
	static char payload[KMSG_MAX_PAYLOAD];
	for (;;) {
		struct keeper_msg m;
		int fds[KMSG_MAX_FDS], nfds;
		size_t plen;
		int r = keeper_recv_payload(fd, &m, payload, sizeof(payload), &plen, fds, &nfds, false);
		if (r == -EAGAIN)
			return true;
		if (r == 0 || (r < 0 && r != -EPROTO))
			return false;
		if (r > 0)
			on_message(fd, &m, payload, plen, fds, nfds);
	}
}

/* A drain: the sockets this daemon created refuse new connections, our
 * copies too (connect() gets ECONNREFUSED once one is shut down). One a
 * .socket unit passed, or one kept in systemd's fd store, is left as it
 * is: connections queue there for the next start, which is what socket
 * activation is for (a shut-down socket would refuse them for good). */
static void refuse_new(void)
{
	/* With the fd store the socket is stored for the next start (a
	 * drain may leave sessions there for it): connections queue. */
	if (K.listen_fd >= 0 && K.created && N.fd < 0)
		shutdown(K.listen_fd, SHUT_RD);
	for (size_t i = 0; i < K.nsocks; i++)
		if (K.socks[i].dev || K.socks[i].ino)
			shutdown(K.socks[i].fd, SHUT_RD);
}

/* At exit: a socket file created by an engine of this keeper, if it is
 * still the same file (an engine removes its own; this is for one that
 * could not). */
static void unlink_created(int fd, dev_t dev, ino_t ino)
{
	struct sockaddr_un a;
	socklen_t al = sizeof(a);
	memset(&a, 0, sizeof(a));
	if ((!dev && !ino) || getsockname(fd, (struct sockaddr *)&a, &al) < 0 ||
	    al <= offsetof(struct sockaddr_un, sun_path) || !a.sun_path[0])
		return;
	char path[sizeof(a.sun_path) + 1];
	snprintf(path, sizeof(path), "%.*s", (int)(al - offsetof(struct sockaddr_un, sun_path)), a.sun_path);
	server_unlink_socket(path, dev, ino);
}

/* The path pagein was started from, absolute, looked up in PATH if it has
 * no slash: an upgrade replaces that file. */
static int resolve_self(const char *argv0, char *out, size_t len)
{
	if (strchr(argv0, '/')) {
		if (argv0[0] == '/')
			return snprintf(out, len, "%s", argv0) < (int)len ? 0 : -1;
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)))
			return -1;
		return snprintf(out, len, "%s/%s", cwd, argv0) < (int)len ? 0 : -1;
	}
	const char *path = getenv("PATH");
	while (path && *path) {
		const char *e = strchr(path, ':');
		size_t l = e ? (size_t)(e - path) : strlen(path);
		if (snprintf(out, len, "%.*s/%s", (int)l, path, argv0) < (int)len && access(out, X_OK) == 0)
			return out[0] == '/' ? 0 : -1;
		path = e ? e + 1 : NULL;
	}
	return -1;
}

/* Starts an engine: fd 3 the listening socket (LISTEN_FDS), fd 4 its end
 * of a new link; then every kept session, then DONE. */
static pid_t spawn(const char *exe, char **argv, int listen_fd, int *link_out)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		int l = listen_fd >= 0 ? fcntl(listen_fd, F_DUPFD_CLOEXEC, 10) : -1;
		int k = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
		if (k < 0 || (listen_fd >= 0 && (l < 0 || dup2(l, 3) < 0)) || dup2(k, 4) < 0)
			_exit(127);
		if (listen_fd < 0)
			close(3); /* the first engine creates the socket */
		char pidbuf[32];
		snprintf(pidbuf, sizeof(pidbuf), "%ld", (long)getpid());
		if (listen_fd >= 0) {
			setenv("LISTEN_PID", pidbuf, 1);
			setenv("LISTEN_FDS", "1", 1);
		} else {
			unsetenv("LISTEN_PID");
			unsetenv("LISTEN_FDS");
		}
		unsetenv("LISTEN_FDNAMES");
		setenv(KEEPER_ENV, "4", 1);
		/* The keeper gone, the engine drains: no orphan serves on.
		 * With systemd's fd store, every session is there for the
		 * next keeper: the engine hands over instead (SIGUSR2: stop
		 * the workers, end no session, exit). */
		prctl(PR_SET_PDEATHSIG, N.fd >= 0 ? SIGUSR2 : SIGTERM);
		if (getppid() == 1)
			_exit(1);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		execv(exe, argv);
		fprintf(stderr, "pagein serve: keeper: cannot run %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	K.ready = false;
	int link = sv[0];
	if (K.control_fd >= 0) {
		struct keeper_msg m = {.type = KMSG_CONTROL};
		m.file.dev = (uint64_t)K.control_dev;
		m.file.ino = (uint64_t)K.control_ino;
		keeper_send(link, &m, &K.control_fd, 1);
	}
	for (size_t i = 0; i < K.nsocks; i++) {
		struct ksock *k = &K.socks[i];
		struct keeper_msg m = {.type = KMSG_SOCKET, .id = k->sid, .flags = k->draining ? KMSG_DRAINING : 0};
		m.file.dev = (uint64_t)k->dev;
		m.file.ino = (uint64_t)k->ino;
		keeper_send_payload(link, &m, k->args, k->alen, &k->fd, 1);
	}
	for (size_t i = 0; i < K.n; i++) {
		bool pending = K.s[i].flags & KEPT_PENDING;
		struct keeper_msg m = {.type = pending ? KMSG_ADOPT_PENDING : KMSG_ADOPT, .id = K.s[i].id,
				       .flags = pending ? 0 : K.s[i].flags, .pid = K.s[i].pid};
		m.conn.sid = K.s[i].sid;
		memcpy(m.name, K.s[i].name, sizeof(m.name));
		if (keeper_send(link, &m, K.s[i].fds, K.s[i].nfds) < 0)
			break; /* it died already: the next one gets them */
	}
	struct keeper_msg done = {.type = KMSG_DONE, .flags = KMSG_CAN_PENDING | (N.fd >= 0 ? KMSG_FDSTORE : 0),
				  .id = K.max_id};
	done.conn.sid = K.max_sid;
	keeper_send(link, &done, NULL, 0);
	fcntl(link, F_SETFL, fcntl(link, F_GETFL) | O_NONBLOCK);
	*link_out = link;
	return pid;
}

static void describe_status(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "status 0x%x", st);
}

int keeper_run(char **argv, struct serve_opts *o, int log_fd)
{
	K.json = o->log_format == PAGEIN_LOG_JSON;
	K.log_path = o->log_path;
	char exe[PATH_MAX];
	if (resolve_self(argv[0], exe, sizeof(exe)) < 0) {
		fprintf(stderr, "pagein serve: --keeper: cannot find the path pagein was started from (%s): start it by an absolute path\n",
			argv[0]);
		return 2;
	}
	/* Inherited (socket activation), or created by the first engine,
	 * which hands it over with READY. */
	K.listen_fd = o->cfg.listen_fd > 0 ? o->cfg.listen_fd : -1;
	K.control_fd = -1;
	if (!o->control_path) /* --control: sockets come and go; no fd store */
		fdstore_init();
	/* Our own socket, back from the fd store: its file is ours to
	 * unlink at a clean exit, as if this keeper's engine created it. */
	struct stat sst;
	if (K.listen_fd >= 0 && K.listen_stored && o->cfg.socket_path && stat(o->cfg.socket_path, &sst) == 0 &&
	    S_ISSOCK(sst.st_mode)) {
		K.created = true;
		K.dev = sst.st_dev;
		K.ino = sst.st_ino;
	}
	if (log_fd >= 0) {
		dup2(log_fd, STDERR_FILENO);
		close(log_fd);
	}
	sigset_t set;
	sigemptyset(&set);
	int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, "pagein serve: keeper: signalfd: %s\n", strerror(errno));
		return 1;
	}
	int link = -1;
	uint64_t started = mono_ns();
	pid_t engine = spawn(exe, argv, K.listen_fd, &link);
	if (engine < 0) {
		fprintf(stderr, "pagein serve: keeper: cannot start the engine: %s\n", strerror(errno));
		return 1;
	}
	unsigned fast_deaths = 0, stops = 0, resend = 0;
	uint64_t link_closed = 0, restarted_at = 0;
	bool upgrading = false, first = true, announced = false;
	bool in_store = false; /* a drain left the sessions in the fd store */
	int rc = 0;
	for (;;) {
		struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = link, .events = POLLIN}};
		if (poll(p, link >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
			break;
		if (link >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) && !read_link(link)) {
			close(link);
			link = -1;
			link_closed = mono_ns();
		}
		if (!first && K.ready && restarted_at) {
			klog("info", "engine_ready", "engine pid %ld serves %zu session%s, %.1f ms after the old engine's link closed",
			     (long)engine, K.n, K.n == 1 ? "" : "s", (double)(mono_ns() - restarted_at) / 1e6);
			restarted_at = 0;
		}
		for (; K.ready && resend; resend--)
			kill(engine, SIGTERM); /* its signals are handled from READY on */
		if (first && K.ready && !announced) {
			announced = true;
			klog("info", "keeper_started", "keeper pid %ld holds %s%s%s; engine pid %ld (%s)", (long)getpid(),
			     o->cfg.socket_path ? o->cfg.socket_path : K.listen_fd >= 0 ? "the inherited socket" : "",
			     o->control_path && K.listen_fd >= 0 ? " and " : "",
			     o->control_path ? "the sockets added through --control" : "", (long)engine, exe);
		}
		struct signalfd_siginfo si;
		bool child = false;
		while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			int sig = (int)si.ssi_signo;
			if (sig == SIGCHLD) {
				child = true;
			} else if (!K.ready) {
				/* An engine before READY may not handle signals
				 * yet (their default would kill it): a drain or
				 * stop is asked once it serves; a new engine is
				 * already what SIGUSR2 asks for; the rest waits
				 * for nothing (it opens its log itself). */
				if (sig == SIGTERM || sig == SIGINT) {
					stops++;
					resend += resend < 2;
					refuse_new();
				}
			} else if (sig == SIGUSR2) {
				klog("info", "upgrade", "SIGUSR2: the engine (pid %ld) hands over to %s", (long)engine, exe);
				upgrading = true;
				kill(engine, SIGUSR2);
			} else {
				if (sig == SIGTERM || sig == SIGINT) {
					stops++;
					refuse_new();
				}
				if (sig == SIGHUP && K.log_path) { /* logrotate: ours too */
					int fd = open(K.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
					if (fd >= 0) {
						dup2(fd, STDERR_FILENO);
						close(fd);
					}
				}
				kill(engine, sig);
			}
		}
		if (!child)
			continue;
		int st;
		pid_t w = waitpid(engine, &st, WNOHANG);
		if (w != engine)
			continue;
		if (link >= 0) { /* whatever it said before dying */
			read_link(link);
			close(link);
			link = -1;
		}
		char how[96];
		describe_status(st, how, sizeof(how));
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && !upgrading) {
			klog("info", "keeper_exit", "engine %s; exiting", how);
			rc = 0;
			break;
		}
		if (WIFEXITED(st) && WEXITSTATUS(st) == EXIT_HANDOVER && !upgrading && stops && N.fd >= 0) {
			/* A drain that gave up with the fd store in use: every
			 * session, the listening socket and its file stay for
			 * the next start (systemd keeps the store across a
			 * restart). */
			klog("info", "keeper_exit", "engine handed %zu session%s to the fd store; exiting",
			     K.n, K.n == 1 ? "" : "s");
			in_store = true;
			rc = 0;
			break;
		}
		if (first && !K.ready) {
			/* The first engine failed at start (the snapshot
			 * unreadable, the metrics port taken): it said why;
			 * nothing to keep alive. */
			rc = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
			break;
		}
		first = false;
		bool handover = upgrading && WIFEXITED(st) && WEXITSTATUS(st) == EXIT_HANDOVER;
		if (!handover && mono_ns() - started < CRASH_WINDOW_NS)
			fast_deaths++;
		else
			fast_deaths = 0;
		if (fast_deaths >= CRASH_LOOP) {
			klog("error", "crash_loop",
			     "the engine died %u times in a row within 1 s of its start (last: %s): giving up; %s the %zu VMM%s still restoring",
			     fast_deaths, how, o->cfg.on_failure == PAGEIN_FAILURE_KEEP ? "leaving (--on-failure keep)" : "killing (--on-failure kill)",
			     K.n, K.n == 1 ? "" : "s");
			for (size_t i = 0; i < K.n; i++) {
				if (o->cfg.on_failure == PAGEIN_FAILURE_KEEP || !(K.s[i].flags & KMSG_PIDFD))
					continue;
				syscall(SYS_pidfd_send_signal, K.s[i].fds[3], SIGKILL, NULL, 0);
				fdstore_session(&K.s[i], false);
			}
			rc = 1;
			break;
		}
		uint64_t t0 = mono_ns();
		if (!link_closed)
			link_closed = t0;
		started = t0;
		engine = spawn(exe, argv, K.listen_fd, &link);
		if (engine < 0) {
			klog("error", "engine_spawn_failed", "cannot start an engine: %s", strerror(errno));
			rc = 1;
			break;
		}
		restarted_at = link_closed;
		klog(handover ? "info" : "warn", handover ? "engine_upgraded" : "engine_restarted",
		     "engine %s; engine pid %ld started, %zu session%s handed over (%.1f ms after the old one closed its link)",
		     how, (long)engine, K.n, K.n == 1 ? "" : "s", (double)(mono_ns() - link_closed) / 1e6);
		link_closed = 0;
		upgrading = false;
		resend = stops > 2 ? 2 : stops; /* a drain or stop asked before goes on, once it serves */
	}
	for (size_t i = 0; i < K.n; i++)
		close_kept(&K.s[i]);
	free(K.s);
	for (size_t i = 0; i < K.nsocks; i++) {
		unlink_created(K.socks[i].fd, K.socks[i].dev, K.socks[i].ino);
		close(K.socks[i].fd);
		free(K.socks[i].args);
	}
	free(K.socks);
	if (K.control_fd >= 0) {
		unlink_created(K.control_fd, K.control_dev, K.control_ino);
		close(K.control_fd);
	}
	if (K.listen_fd >= 0)
		close(K.listen_fd);
	if (rc == 0 && K.listen_stored && !in_store)
		fdstore_remove(FDNAME_LISTEN);
	if (K.created && !in_store)
		server_unlink_socket(o->cfg.socket_path, K.dev, K.ino);
	return rc;
}
