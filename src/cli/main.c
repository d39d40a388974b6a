/* main.c - the pagein command: `pagein serve` (the daemon) and
 * `pagein snapshot ...` (format tools). A thin front end over libpagein. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>


#include "control.h"
#include "keeper.h"
#include "keeper_link.h"
#include "log_time.h"
#include "pagein.h"
#include "serve_opts.h"

/* How often STATUS= is sent to systemd while NOTIFY_SOCKET is set. */
#define STATUS_INTERVAL_S 1

/* Provided by snapshot_cmd.c when the snapshot format is built in. */
int cmd_snapshot(int argc, char **argv) __attribute__((weak));
int cmd_ctl(int argc, char **argv); /* ctl_cmd.c */

/* main()'s argv: what the keeper runs again as its engine. */
static char **main_argv;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: pagein <command> [options]\n"
		"\n"
		"Restores VM memory snapshots lazily over userfaultfd.\n"
		"\n"
		"commands:\n"
		"  serve      serve Firecracker-style VMMs on a Unix socket\n"
		"  snapshot   convert, merge, inspect and verify snapshot files\n"
		"  ctl        add, remove, list and show the sockets of a daemon\n"
		"             started with --control\n"
		"\n"
		"`pagein <command> --help` describes each; `pagein --version`.\n");
}

static void serve_usage(FILE *f)
{
	fprintf(f,
		"usage: pagein serve --snapshot FILE --socket PATH [options]\n"
		"       pagein serve --control PATH [--snapshot FILE --socket PATH] [options]\n"
		"\n"
		"Listens on PATH for VMMs speaking Firecracker's UFFD backend protocol\n"
		"(mainline: JSON regions + uffd; secret hiding: + guest memory fd and\n"
		"userfault bitmap, then fault requests) and serves each VM's memory from\n"
		"FILE (a raw memory file, or a pagein snapshot file). One session per\n"
		"connection; a session ends when its VMM exits (learnt from a pidfd: a\n"
		"closed socket only means \"no more messages\", as Firecracker < 1.12\n"
		"closes it after the handshake) or when it cannot be served.\n"
		"\n"
		"  --snapshot FILE     memory snapshot served to every VM (required)\n"
		"  --socket PATH       Unix socket to create (required unless a socket\n"
		"                      is inherited, see below; a stale socket file is\n"
		"                      replaced, a live one is refused; removed at exit\n"
		"                      only if it is still the file created)\n"
		"  --threads N         worker threads (default: one per CPU)\n"
		"  --log-level L       error|warn|info|debug (default info)\n"
		"  --log-format F      text|json (default text): json writes one object\n"
		"                      per line: ts, level, vm, pid, event, msg, fields\n"
		"  --on-corrupt MODE   fail|poison: when the snapshot cannot give a page,\n"
		"                      end that session (fail, default) or poison that\n"
		"                      page only (the guest sees a memory error there)\n"
		"  --fault-around N|auto  on a fault also fill the absent pages of an\n"
		"                      aligned window of N 4 KiB pages (power of two,\n"
		"                      <= 512, 0 = off); the window grows while faults\n"
		"                      run sequentially. auto (default): the window is\n"
		"                      learnt from the guest: 1 to 64 pages, halved\n"
		"                      while the pages filled ahead go unused (seen by\n"
		"                      leaving a probe page of some windows absent),\n"
		"                      doubled while they are used, up to 512 pages on\n"
		"                      sequential runs\n"
		"  --populate MODE     none|background|eager: after the working set, fill\n"
		"                      the rest at idle priority (background, default),\n"
		"                      not at all (none), or everything before serving\n"
		"                      any fault (eager, like Firecracker's fault_all);\n"
		"                      holes of the snapshot are never filled ahead\n"
		"                      (zeros when touched)\n"
		"  --prefetch FILE     working set to fill first, in recorded order, from\n"
		"                      the moment a VM's handshake arrives\n"
		"  --record FILE       write each session's first-touch order there when\n"
		"                      it ends (FILE must contain %%n, the VM's number).\n"
		"                      Recording is exact whatever the other options: a\n"
		"                      page filled ahead never faults, so while recording\n"
		"                      nothing is filled ahead (fault-around off, no\n"
		"                      --prefetch, no population: as --populate none\n"
		"                      --fault-around 0); the log says so at start\n"
		"  --on-failure MODE   kill|keep: when a VM cannot be served (a session\n"
		"                      error, a corrupt page with --on-corrupt fail, a\n"
		"                      refused handshake that handed over a uffd), kill\n"
		"                      its VMM (kill, default: fail closed, no guest runs\n"
		"                      on memory nobody serves) or leave it (keep)\n"
		"  --handshake-timeout S  close a connection that sent no complete\n"
		"                      handshake within S seconds (default 10)\n"
		"  --max-connections N connections open at once; more are closed at\n"
		"                      accept (default 1024)\n"
		"  --metrics ADDR      serve Prometheus metrics at GET /metrics on ADDR:\n"
		"                      HOST:PORT (e.g. 127.0.0.1:9184) or unix:PATH\n"
		"  --log-file PATH     append log lines (and anything else written to\n"
		"                      stderr) to PATH instead of stderr; SIGHUP reopens\n"
		"                      it (after logrotate has renamed it)\n"
		"  --drain-timeout S   on SIGTERM, wait up to S seconds for open sessions\n"
		"                      to end (default %.0f; 0 = stop at once)\n"
		"  --s3-endpoint URL   for an s3://BUCKET/KEY snapshot: an S3-compatible\n"
		"                      service (path-style), instead of AWS\n"
		"  --ca-file FILE      PEM CA certificates to trust for https:// (and\n"
		"                      https S3 endpoints), e.g. a private CA\n"
		"  --cache-dir DIR     chunk cache for an http(s):// or s3:// snapshot,\n"
		"                      shared by sessions, restarts and processes\n"
		"  --cache-size SIZE   bound of --cache-dir (default 1G; LRU eviction)\n"
		"  --fetch-parallel N  range requests in flight (default 8)\n"
		"  --fetch-deadline S  a chunk not fetched within S seconds (retries\n"
		"                      included) fails the session needing it (default 30)\n"
		"  --socket-mode MODE  octal mode of the socket (e.g. 0660), set before\n"
		"                      it listens (default: what the umask gives)\n"
		"  --socket-owner USER\n"
		"                      user name or uid to give the socket to (root only)\n"
		"  --socket-group GROUP\n"
		"                      group name or gid to give the socket to\n"
		"  --allow-uid LIST    serve only peers with one of these uids (comma-\n"
		"                      separated numbers or user names), checked with\n"
		"                      SO_PEERCRED before anything is read from them\n"
		"  --allow-gid LIST    serve only peers with one of these groups (primary\n"
		"                      or supplementary); with --allow-uid, either\n"
		"                      matching allows; others are closed and logged\n"
		"                      (refused_peer), never killed. Default: everyone\n"
		"                      who can open the socket\n"
		"  --control PATH      also listen for `pagein ctl` on this Unix socket\n"
		"                      (mode 0600; root and the daemon's user only):\n"
		"                      more snapshots, each on a socket of its own,\n"
		"                      added and removed while the daemon runs; then\n"
		"                      --snapshot/--socket are optional, and the daemon\n"
		"                      runs until SIGTERM even with no socket left\n"
		"  --no-keeper         one process, without the keeper (see below);\n"
		"                      --keeper (the default) asks for it; with\n"
		"                      --control there is no keeper yet\n"
		"  -h, --help          this text\n"
		"\n"
		"Log lines go to stderr (or --log-file), one per event, prefixed with\n"
		"the VM they are about (vmN pid P), or as JSON objects with --log-format\n"
		"json.\n"
		"\n"
		"Signals: SIGTERM or SIGINT drains: the socket stops accepting (its file\n"
		"stays until exit), open sessions go on until their VMMs exit or\n"
		"--drain-timeout passes, then the daemon stops and exits 0; sessions\n"
		"still open then are ended (cause server_stopping; their VMMs are not\n"
		"killed). A second SIGTERM or SIGINT stops at once. SIGHUP reopens\n"
		"--log-file (there is no configuration file to re-read). SIGUSR1 logs\n"
		"every open session's statistics. SIGUSR2 upgrades: every session is\n"
		"handed to the binary now at the path pagein was started from.\n"
		"\n"
		"The keeper: pagein serve is a small process that holds the listening\n"
		"socket and every session's fds and state, and runs the engine as its\n"
		"child; signals go to the keeper, which forwards them. If the engine\n"
		"dies, a new one takes every session over at once (the guests pause,\n"
		"they do not freeze); five deaths within 1 s of start in a row make the\n"
		"keeper apply --on-failure and exit 1.\n"
		"\n"
		"systemd: with NOTIFY_SOCKET set (Type=notify) the daemon sends READY=1\n"
		"once it listens, STATUS= lines (sessions open, draining) and STOPPING=1\n"
		"when it drains or stops. With LISTEN_FDS/LISTEN_PID (socket activation,\n"
		"one listening Unix stream socket) it serves the inherited socket instead\n"
		"of creating one: --socket may then be left out, or must name the same\n"
		"path; the daemon never unlinks a socket file it did not create.\n"
		"fd store: with NOTIFY_SOCKET set the keeper also stores every fd it\n"
		"holds in systemd's fd store (FDNAME=s<id>-state|sock|uffd|pidfd|mem|\n"
		"bitmap, and listen for a socket it created; FileDescriptorStoreMax=\n"
		"in the unit) and removes them when the session ends; started again\n"
		"with them in LISTEN_FDS/LISTEN_FDNAMES, it adopts every VM: a crash or\n"
		"SIGKILL of the whole service loses none (SIGTERM still drains).\n",
		DEFAULT_DRAIN_TIMEOUT_S);
}

/* opaque: the server's enum pagein_log_format. A JSON line is a complete
 * object with its own timestamp: written as it is. Lines go to stderr,
 * which --log-file makes the log file (so that sanitizer reports and
 * anything else written there land in it too). */
static void log_line(void *opaque, enum pagein_log_level lvl, const char *line)
{
	if (*(const enum pagein_log_format *)opaque == PAGEIN_LOG_JSON) {
		fprintf(stderr, "%s\n", line);
		return;
	}
	char when[40];
	log_utc_now(when, sizeof(when));
	fprintf(stderr, "%s pagein %s: %s\n", when, log_level_names[lvl], line);
}

/* The daemon's own lines (signals, the log file), in the servers' format. */
#define cli_log(lvl, event, ...) daemon_log(lvl, event, __VA_ARGS__)

/* ---- --log-file ------------------------------------------------------- */

static const char *log_path;

static int open_log(void)
{
	return open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

/* SIGHUP: logrotate renamed the file; write to a new one at the same path.
 * dup2() swaps stderr in one step: no line is lost or split. If the new
 * file cannot be opened, the old one stays. */
static void reopen_log(void)
{
	if (!log_path) {
		cli_log(PAGEIN_LOG_INFO, "sighup", "SIGHUP: no --log-file to reopen and no configuration file to re-read");
		return;
	}
	int fd = open_log();
	if (fd < 0) {
		cli_log(PAGEIN_LOG_ERROR, "log_reopen_failed", "SIGHUP: cannot reopen --log-file %s: %s (still writing to the old file)",
			log_path, strerror(errno));
		return;
	}
	dup2(fd, STDERR_FILENO);
	close(fd);
	cli_log(PAGEIN_LOG_INFO, "log_reopened", "SIGHUP: reopened --log-file %s", log_path);
}

/* ---- systemd: readiness and socket activation -------------------------- */

/* sd_notify(3) by hand: the protocol is one datagram per message to the
 * AF_UNIX socket in $NOTIFY_SOCKET (a path, or @name for an abstract
 * one), documented and stable; a dependency on libsystemd for it is not
 * worth its weight. Nothing is sent when NOTIFY_SOCKET is unset. */
static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;

static void notify_init(void)
{
	const char *p = getenv("NOTIFY_SOCKET");
	if (!p || (p[0] != '/' && p[0] != '@') || strlen(p) >= sizeof(notify_addr.sun_path))
		return;
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, p, strlen(p));
	if (p[0] == '@')
		notify_addr.sun_path[0] = 0;
	notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(p));
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

static void notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void notify(const char *fmt, ...)
{
	if (notify_fd < 0)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n > 0 && sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
			    (struct sockaddr *)&notify_addr, notify_len) < 0)
		cli_log(PAGEIN_LOG_DEBUG, "notify_failed", "sd_notify to $NOTIFY_SOCKET: %s", strerror(errno));
}

/* Socket activation (sd_listen_fds(3) by hand): the listening socket fd 3
 * when LISTEN_PID names this process and LISTEN_FDS is 1; 0 if none was
 * passed; -1 (said on stderr) if more were. The variables are removed so
 * that nothing started later takes them for its own. */
static int inherited_socket(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	long n = strtol(fds, NULL, 10);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (n == 0)
		return 0;
	if (n != 1) {
		fprintf(stderr, "pagein serve: LISTEN_FDS=%ld: pagein serves one socket: pass exactly one (one ListenStream= in the .socket unit)\n",
			n);
		return -1;
	}
	return 3; /* SD_LISTEN_FDS_START */
}

/* The signals the signal thread takes (blocked in every other thread). */
static void serve_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	if (keeper_link_active())
		sigaddset(set, SIGUSR2); /* keeper: hand over (an upgrade) */
}

struct sig_ctx {
	unsigned drain_ms;
	bool draining;
	bool handing_over; /* keeper: SIGUSR2 came */
	/* keeper with systemd's fd store: when a drain gives up, the sessions
	 * still open go to the store for the next start instead of ending
	 * (the servers' own deadline is set later, as a backstop). */
	uint64_t store_at_ns;
};

#define DRAIN_BACKSTOP_MS 60000

static uint64_t mono_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* keeper + fd store: every session still open goes to the next start. */
static void hand_to_store(struct sig_ctx *x, const char *why)
{
	unsigned n = daemon_sessions();
	cli_log(PAGEIN_LOG_INFO, "handed_to_fdstore",
		"%s: leaving the %u session%s still open in the service manager's fd store for the next start",
		why, n, n == 1 ? "" : "s");
	x->handing_over = true;
	x->store_at_ns = 0;
	daemon_hand_over();
}

static void send_status(struct sig_ctx *x)
{
	unsigned n = daemon_sessions();
	if (x->draining)
		notify("STATUS=draining: %u session%s left", n, n == 1 ? "" : "s");
	else
		notify("STATUS=serving %u session%s", n, n == 1 ? "" : "s");
}

/* Signals, and (with NOTIFY_SOCKET) a STATUS= line every second. The
 * thread is cancelled only while it waits. */
static void *signal_thread(void *arg)
{
	struct sig_ctx *x = arg;
	sigset_t set;
	serve_signals(&set);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	for (;;) {
		struct timespec every = {STATUS_INTERVAL_S, 0};
		if (x->store_at_ns) {
			uint64_t now = mono_now_ns(), left = x->store_at_ns > now ? x->store_at_ns - now : 0;
			if (left < 1000000000ull * STATUS_INTERVAL_S)
				every = (struct timespec){(time_t)(left / 1000000000ull), (long)(left % 1000000000ull)};
		}
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		int sig = notify_fd >= 0 || x->store_at_ns ? sigtimedwait(&set, NULL, &every) : sigwaitinfo(&set, NULL);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		if (sig < 0) {
			if (errno == EAGAIN && x->store_at_ns && mono_now_ns() >= x->store_at_ns) {
				if (daemon_sessions())
					hand_to_store(x, "drain timeout");
				x->store_at_ns = 0;
			}
			if (errno == EAGAIN)
				send_status(x);
			continue;
		}
		switch (sig) {
		case SIGUSR2: /* keeper: an upgrade */
			cli_log(PAGEIN_LOG_INFO, "handover", "SIGUSR2: stopping the workers to hand every session over to a new engine");
			x->handing_over = true;
			daemon_hand_over();
			break;
		case SIGUSR1:
			daemon_report_all();
			break;
		case SIGHUP:
			reopen_log();
			break;
		default: /* SIGTERM, SIGINT */
			if (x->handing_over) {
				/* Every session goes to the next engine as it is
				 * (after the keeper died with systemd's fd store,
				 * systemd's SIGTERM follows the handover); the
				 * keeper asks the next engine again. */
				cli_log(PAGEIN_LOG_INFO, "signal", "%s during a handover: ignored",
					sig == SIGTERM ? "SIGTERM" : "SIGINT");
				break;
			}
			notify("STOPPING=1");
			if (!x->draining && keeper_link_fdstore()) {
				x->draining = true;
				cli_log(PAGEIN_LOG_INFO, "signal",
					"%s: draining; sessions still open in %.1f s go to the fd store for the next start (send it again to do that at once)",
					sig == SIGTERM ? "SIGTERM" : "SIGINT", x->drain_ms / 1000.0);
				x->store_at_ns = mono_now_ns() + (uint64_t)x->drain_ms * 1000000ull;
				daemon_drain_all(x->drain_ms + DRAIN_BACKSTOP_MS);
			} else if (x->draining && keeper_link_fdstore()) {
				hand_to_store(x, sig == SIGTERM ? "SIGTERM during the drain" : "SIGINT during the drain");
			} else if (!x->draining) {
				x->draining = true;
				cli_log(PAGEIN_LOG_INFO, "signal", "%s: draining (send SIGTERM or SIGINT again to stop at once)",
					sig == SIGTERM ? "SIGTERM" : "SIGINT");
				daemon_drain_all(x->drain_ms);
			} else {
				cli_log(PAGEIN_LOG_WARN, "signal", "%s during the drain: stopping at once",
					sig == SIGTERM ? "SIGTERM" : "SIGINT");
				daemon_stop_all();
			}
			send_status(x);
			break;
		}
	}
	return NULL;
}

/* keeper: what the keeper hands over, until DONE: the control socket and
 * the sockets `ctl add` made (--control), then sessions and connections
 * in their handshake, each to its socket's server. */
static int adopt_sessions(const char *control_path, bool *control_adopted)
{
	static char payload[KMSG_MAX_PAYLOAD];
	for (;;) {
		struct keeper_msg m;
		int fds[KMSG_MAX_FDS], nfds;
		size_t plen;
		int r = keeper_recv_payload(keeper_link_fd(), &m, payload, sizeof(payload), &plen, fds, &nfds, true);
		if (r <= 0) {
			fprintf(stderr, "pagein serve: the keeper's link: %s\n", r ? strerror(-r) : "closed");
			return -1;
		}
		if (m.type == KMSG_DONE) {
			keeper_link_done(&m);
			daemon_sids_from((uint32_t)m.conn.sid);
			return 0;
		}
		struct opt_err e = {{0}};
		if (m.type == KMSG_CONTROL && nfds == 1 && control_path && !*control_adopted) {
			*control_adopted = control_serve(control_path, fds[0], m.file.dev, m.file.ino, &e) == 0;
			if (!*control_adopted)
				daemon_log(PAGEIN_LOG_ERROR, "adopt_failed", "the control socket: %s", e.msg);
			continue;
		}
		if (m.type == KMSG_SOCKET && nfds == 1) {
			if (daemon_add_kept(m.id, payload, plen, fds[0], m.file.dev, m.file.ino,
					    (m.flags & KMSG_DRAINING) != 0, &e) < 0)
				daemon_log(PAGEIN_LOG_ERROR, "adopt_failed", "socket %u (and its sessions): %s", m.id, e.msg);
			continue;
		}
		struct pagein_server *srv = daemon_server_by_sid((uint32_t)m.conn.sid);
		if ((m.type != KMSG_ADOPT && m.type != KMSG_ADOPT_PENDING) || !srv) {
			if (m.type == KMSG_ADOPT || m.type == KMSG_ADOPT_PENDING)
				keeper_orphan(&m, fds, nfds); /* fails closed */
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
			continue;
		}
		struct pagein_error err = {{0}};
		int ar = m.type == KMSG_ADOPT ? keeper_adopt(srv, &m, fds, nfds, &err)
					     : keeper_adopt_pending(srv, &m, fds, nfds, &err);
		if (ar < 0 && err.msg[0])
			pagein_server_log(srv, PAGEIN_LOG_ERROR, "adopt_failed", "%s: %s", m.name, err.msg);
	}
}

static int cmd_serve(int argc, char **argv)
{
	static enum pagein_log_format log_format;
	struct serve_opts o = {
		.drain_s = DEFAULT_DRAIN_TIMEOUT_S,
		.keeper = true, /* --no-keeper: one process, as before */
		.cfg = {
			.log_level = PAGEIN_LOG_INFO,
			.fault_around = DEFAULT_FAULT_AROUND,
			.populate = PAGEIN_POPULATE_BACKGROUND,
		},
	};
	struct opt_err e = {{0}};
	if (serve_opts_parse(argc, argv, true, &o, &e) < 0) {
		fprintf(stderr, "pagein serve: %s\n", e.msg);
		serve_opts_free(&o);
		return 2;
	}
	if (o.help) {
		serve_usage(stdout);
		serve_opts_free(&o);
		return 0;
	}
	log_format = o.log_format;
	log_path = o.log_path;
	/* keeper: this process is the engine of a keeper (keeper.c). */
	const char *kfd = getenv(KEEPER_ENV);
	if (kfd) {
		int fd = atoi(kfd);
		unsetenv(KEEPER_ENV);
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		keeper_link_attach(fd);
	}
	/* Before any thread exists: it edits the environment. */
	o.cfg.listen_fd = o.keeper && !kfd && !o.control_path ? keeper_listen_fds() : inherited_socket();
	if (o.cfg.listen_fd < 0)
		return 2;
	/* One socket from the command line, and/or any number added later
	 * through --control. */
	bool one = o.cfg.snapshot_path || o.cfg.socket_path || o.cfg.listen_fd;
	if ((one || !o.control_path) &&
	    (!o.cfg.snapshot_path || (!o.cfg.socket_path && !o.cfg.listen_fd))) {
		fprintf(stderr, "pagein serve: %s\n",
			o.cfg.snapshot_path ? "--socket PATH is required: name the Unix socket the VMMs connect to (see pagein serve --help)"
					    : "--snapshot FILE is required: name the memory snapshot to serve, or give --control PATH to add snapshots later (see pagein serve --help)");
		serve_opts_free(&o);
		return 2;
	}
	int log_fd = -1;
	if (log_path && (log_fd = open_log()) < 0) {
		fprintf(stderr, "pagein serve: --log-file %s: %s: create its directory, or give pagein write access to it\n",
			log_path, strerror(errno));
		serve_opts_free(&o);
		return 2;
	}
	if (o.keeper && !kfd) { /* keeper: this process keeps */
		int r = keeper_run(main_argv, &o, log_fd);
		serve_opts_free(&o);
		return r;
	}

	/* Signals go to one thread (drain, stop, reopen the log, report);
	 * workers inherit the blocked mask. */
	sigset_t set;
	serve_signals(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct pagein_metrics *metrics = NULL;
	struct pagein_error err = {{0}};
	if (o.cfg.metrics_addr && pagein_metrics_new(o.cfg.metrics_addr, &metrics, &err) < 0) {
		fprintf(stderr, "pagein serve: %s\n", err.msg);
		if (log_fd >= 0)
			close(log_fd);
		serve_opts_free(&o);
		return 1;
	}
	unsigned drain_ms = (unsigned)(o.drain_s * 1000);
	daemon_init(&(struct daemon_cfg){
		.log_level = o.cfg.log_level, .log_format = &log_format, .log = log_line,
		.metrics = metrics, .drain_ms = drain_ms,
	});
	bool control = o.control_path != NULL, control_adopted = false;
	/* keeper: what a dead engine served comes back before the control
	 * socket takes requests (or is made, by the first engine). */
	int started = one ? daemon_add_parsed(&o, &e) : 0;
	if (started == 0 && kfd && adopt_sessions(o.control_path, &control_adopted) < 0) {
		started = -1;
		e.msg[0] = 0;
	}
	if (started == 0 && control && !control_adopted)
		started = control_start(o.control_path, &e);
	if (started < 0) {
		if (e.msg[0])
			fprintf(stderr, "pagein serve: %s\n", e.msg);
		control_stop();
		daemon_stop_all();
		daemon_wait(false);
		pagein_metrics_free(metrics);
		if (log_fd >= 0)
			close(log_fd);
		serve_opts_free(&o);
		return 1;
	}
	/* It listens: from here on, everything goes to the log file. Errors
	 * at start went to the terminal (or the journal) instead. */
	if (log_fd >= 0) {
		dup2(log_fd, STDERR_FILENO);
		close(log_fd);
	}
	daemon_launch();
	notify_init();
	struct sig_ctx x = {.drain_ms = drain_ms};
	pthread_t sig;
	pthread_create(&sig, NULL, signal_thread, &x);
	/* Connections queue on the sockets until the workers start. */
	/* Under a keeper, the keeper is the main process systemd watches. */
	notify("READY=1\nSTATUS=serving 0 sessions\nMAINPID=%ld", (long)(kfd ? getppid() : getpid()));
	if (kfd)
		keeper_send_ready(daemon_server_by_sid(0)); /* the command line's socket */
	daemon_wait(control);
	pthread_cancel(sig);
	pthread_join(sig, NULL);
	control_stop();
	notify("STOPPING=1");
	pagein_metrics_free(metrics);
	serve_opts_free(&o);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	main_argv = argv;
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version")) {
		printf("pagein %s\n", pagein_version());
		return 0;
	}
	if (!strcmp(cmd, "serve"))
		return cmd_serve(argc - 1, argv + 1);
	if (!strcmp(cmd, "ctl"))
		return cmd_ctl(argc - 1, argv + 1);
	if (!strcmp(cmd, "snapshot")) {
		if (!cmd_snapshot) {
			fprintf(stderr, "pagein: this build has no snapshot tools: build pagein with src/cli/snapshot_cmd.c\n");
			return 2;
		}
		return cmd_snapshot(argc - 1, argv + 1);
	}
	fprintf(stderr, "pagein: unknown command '%s': use serve, snapshot or ctl\n", cmd);
	usage(stderr);
	return 2;
}
