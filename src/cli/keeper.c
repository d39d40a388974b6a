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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keeper_link.h"
#include "server_internal.h"

/* A crash loop: this many engines in a row that died within
 * CRASH_WINDOW_NS of their start. */
#define CRASH_LOOP 5
#define CRASH_WINDOW_NS 1000000000ull
/* The engine's exit status after a handover (SIGUSR2). */
#define EXIT_HANDOVER 3

struct kept {
	uint32_t id, flags;
	int32_t pid;
	char name[48];
	int fds[KMSG_MAX_FDS];
	int nfds;
};

static struct {
	struct kept *s;
	size_t n, cap;
	bool json;
	bool ready;       /* the engine said it serves */
	const char *log_path;
	int listen_fd;    /* -1 until the first engine created it */
	bool created;     /* it created the socket file (dev, ino): unlink it */
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
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[32];
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	if (K.json)
		fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"event\":\"%s\",\"msg\":\"keeper: %s\"}\n",
			when, ts.tv_nsec / 1000000, lvl, event, msg); /* msg has no quotes */
	else
		fprintf(stderr, "%s.%03ldZ pagein %s: keeper: %s\n", when, ts.tv_nsec / 1000000, lvl, msg);
}

static void close_kept(struct kept *k)
{
	for (int i = 0; i < k->nfds; i++)
		close(k->fds[i]);
	k->nfds = 0;
}

static void on_message(const struct keeper_msg *m, int *fds, int nfds)
{
	if (m->type == KMSG_KEEP) {
		if (K.n == K.cap) {
			size_t cap = K.cap ? K.cap * 2 : 16;
			struct kept *v = realloc(K.s, cap * sizeof(*v));
			if (!v) {
				klog("error", "keeper_oom", "out of memory: session %u not kept", m->id);
				for (int i = 0; i < nfds; i++)
					close(fds[i]);
				return;
			}
			K.s = v;
			K.cap = cap;
		}
		struct kept *k = &K.s[K.n++];
		*k = (struct kept){.id = m->id, .flags = m->flags, .pid = m->pid, .nfds = nfds};
		memcpy(k->name, m->name, sizeof(k->name));
		k->name[sizeof(k->name) - 1] = 0;
		memcpy(k->fds, fds, sizeof(int) * (size_t)nfds);
		return;
	}
	if (m->type == KMSG_READY) {
		K.ready = true;
		if (nfds == 1 && K.listen_fd < 0) {
			K.listen_fd = fds[0];
			nfds = 0;
			K.created = m->dev || m->ino;
			K.dev = (dev_t)m->dev;
			K.ino = (ino_t)m->ino;
		}
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (m->type == KMSG_DROP)
		for (size_t i = 0; i < K.n; i++)
			if (K.s[i].id == m->id) {
				close_kept(&K.s[i]);
				K.s[i] = K.s[--K.n];
				break;
			}
}

/* Everything the engine said; false once it closed its end. */
static bool read_link(int fd)
{
	for (;;) {
		struct keeper_msg m;
		int fds[KMSG_MAX_FDS], nfds;
		int r = keeper_recv(fd, &m, fds, &nfds, false);
		if (r == -EAGAIN)
			return true;
		if (r == 0 || (r < 0 && r != -EPROTO))
			return false;
		if (r > 0)
			on_message(&m, fds, nfds);
	}
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
		/* The keeper gone, the engine drains: no orphan serves on. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
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
	for (size_t i = 0; i < K.n; i++) {
		struct keeper_msg m = {.type = KMSG_ADOPT, .id = K.s[i].id, .flags = K.s[i].flags,
				       .pid = K.s[i].pid};
		memcpy(m.name, K.s[i].name, sizeof(m.name));
		if (keeper_send(link, &m, K.s[i].fds, K.s[i].nfds) < 0)
			break; /* it died already: the next one gets them */
	}
	struct keeper_msg done = {.type = KMSG_DONE};
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
			klog("info", "keeper_started", "keeper pid %ld holds %s; engine pid %ld (%s)", (long)getpid(),
			     o->cfg.socket_path ? o->cfg.socket_path : "the inherited socket", (long)engine, exe);
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
					if (K.listen_fd >= 0)
						shutdown(K.listen_fd, SHUT_RD);
				}
			} else if (sig == SIGUSR2) {
				klog("info", "upgrade", "SIGUSR2: the engine (pid %ld) hands over to %s", (long)engine, exe);
				upgrading = true;
				kill(engine, SIGUSR2);
			} else {
				if (sig == SIGTERM || sig == SIGINT) {
					stops++;
					/* The drain refuses new connections: our copy
					 * of the socket too (connect() gets
					 * ECONNREFUSED once it is shut down). */
					if (K.listen_fd >= 0)
						shutdown(K.listen_fd, SHUT_RD);
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
	if (K.listen_fd >= 0)
		close(K.listen_fd);
	if (K.created)
		server_unlink_socket(o->cfg.socket_path, K.dev, K.ino);
	return rc;
}
