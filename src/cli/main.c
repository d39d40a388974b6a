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


#include "pagein.h"

/* Fault-around window in pages. docs/benchmarks.md sweeps 0/4/16/64/256:
 * 64 (256 KiB) made random 25% touches 1.5x faster than 16 and scans as
 * fast as any; 256 was faster still on random touches but quadrupled the
 * faulting vCPU's p99. */
#define DEFAULT_FAULT_AROUND 64u
/* SIGTERM lets open sessions end for this long before stopping. */
#define DEFAULT_DRAIN_TIMEOUT_S 30.0
/* How often STATUS= is sent to systemd while NOTIFY_SOCKET is set. */
#define STATUS_INTERVAL_S 1

/* Provided by snapshot_cmd.c when the snapshot format is built in. */
int cmd_snapshot(int argc, char **argv) __attribute__((weak));

/* "512M", "20G", "1048576" (binary multiples). */
static int parse_bytes(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	int shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (shift && !strcmp(end, "iB"))
		end += 2;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

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
		"\n"
		"`pagein <command> --help` describes each; `pagein --version`.\n");
}

static void serve_usage(FILE *f)
{
	fprintf(f,
		"usage: pagein serve --snapshot FILE --socket PATH [options]\n"
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
		"  --fault-around N    on a fault also fill the absent pages of an aligned\n"
		"                      window of N 4 KiB pages (power of two, <= 512;\n"
		"                      grows while faults run sequentially; default %u,\n"
		"                      0 = off)\n"
		"  --populate MODE     none|background|eager: after the working set, fill\n"
		"                      the rest at idle priority (background, default),\n"
		"                      not at all (none), or everything before serving\n"
		"                      any fault (eager, like Firecracker's fault_all)\n"
		"  --prefetch FILE     working set to fill first, in recorded order, from\n"
		"                      the moment a VM's handshake arrives\n"
		"  --record FILE       write each session's first-touch order there when\n"
		"                      it ends (FILE must contain %%n, the VM's number;\n"
		"                      record with --populate none --fault-around 0 for\n"
		"                      an exact set)\n"
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
		"every open session's statistics.\n"
		"\n"
		"systemd: with NOTIFY_SOCKET set (Type=notify) the daemon sends READY=1\n"
		"once it listens, STATUS= lines (sessions open, draining) and STOPPING=1\n"
		"when it drains or stops. With LISTEN_FDS/LISTEN_PID (socket activation,\n"
		"one listening Unix stream socket) it serves the inherited socket instead\n"
		"of creating one: --socket may then be left out, or must name the same\n"
		"path; the daemon never unlinks a socket file it did not create.\n",
		DEFAULT_FAULT_AROUND, DEFAULT_DRAIN_TIMEOUT_S);
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
	static const char *names[] = {"error", "warn", "info", "debug"};
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[32];
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ pagein %s: %s\n", when, ts.tv_nsec / 1000000,
		names[lvl], line);
}

/* The daemon's own lines (signals, the log file), in the server's format. */
static struct pagein_server *server;
#define cli_log(lvl, event, ...) pagein_server_log(server, lvl, event, __VA_ARGS__)

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

static int parse_level(const char *s, enum pagein_log_level *out)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, names[i])) {
			*out = (enum pagein_log_level)i;
			return 0;
		}
	return -1;
}

/* The signals the signal thread takes (blocked in every other thread). */
static void serve_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
}

struct sig_ctx {
	struct pagein_server *srv;
	unsigned drain_ms;
	bool draining;
};

static void send_status(struct sig_ctx *x)
{
	unsigned n = pagein_server_connections(x->srv);
	if (x->draining)
		notify("STATUS=draining: %u session%s left", n, n == 1 ? "" : "s");
	else
		notify("STATUS=serving %u session%s", n, n == 1 ? "" : "s");
}

/* Signals, and (with NOTIFY_SOCKET) a STATUS= line every second. The
 * thread is cancelled only while it waits. */
/* A user (group) as a name or a number: the id, or -1 with the error
 * printed, naming the option. */
static int parse_id(const char *opt, const char *s, bool group, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(s, &end, 10);
	if (*s && !*end && *s != '-') {
		if (errno || n >= UINT32_MAX) {
			fprintf(stderr, "pagein serve: %s %s: that %s is out of range: give a %s name or a number below 4294967295\n",
				opt, s, group ? "gid" : "uid", group ? "group" : "user");
			return -1;
		}
		*out = (uint32_t)n;
		return 0;
	}
	if (group) {
		struct group *g = *s ? getgrnam(s) : NULL;
		if (g) {
			*out = g->gr_gid;
			return 0;
		}
	} else {
		struct passwd *pw = *s ? getpwnam(s) : NULL;
		if (pw) {
			*out = pw->pw_uid;
			return 0;
		}
	}
	fprintf(stderr, "pagein serve: %s %s: no such %s on this host: give an existing %s name (see %s) or a numeric %s\n",
		opt, s, group ? "group" : "user", group ? "group" : "user",
		group ? "getent group" : "getent passwd", group ? "gid" : "uid");
	return -1;
}

/* "0,1000,alice": a comma-separated list of ids, appended to *list. */
static int parse_id_list(const char *opt, const char *arg, bool group,
			 uint32_t **list, size_t *n)
{
	char *copy = strdup(arg);
	if (!copy)
		return -1;
	int r = 0;
	char *save = NULL;
	bool any = false;
	for (char *tok = strtok_r(copy, ",", &save); tok && r == 0;
	     tok = strtok_r(NULL, ",", &save)) {
		uint32_t id;
		uint32_t *l = NULL;
		if ((r = parse_id(opt, tok, group, &id)) < 0)
			break;
		if (!(l = realloc(*list, (*n + 1) * sizeof(*l)))) {
			r = -1;
			break;
		}
		*list = l;
		(*list)[(*n)++] = id;
		any = true;
	}
	if (r == 0 && !any) {
		fprintf(stderr, "pagein serve: %s '%s': the list is empty: give %s names or numbers separated by commas\n",
			opt, arg, group ? "group" : "user");
		r = -1;
	}
	free(copy);
	return r;
}

static void *signal_thread(void *arg)
{
	struct sig_ctx *x = arg;
	sigset_t set;
	serve_signals(&set);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	for (;;) {
		struct timespec every = {STATUS_INTERVAL_S, 0};
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		int sig = notify_fd >= 0 ? sigtimedwait(&set, NULL, &every) : sigwaitinfo(&set, NULL);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		if (sig < 0) {
			if (errno == EAGAIN)
				send_status(x);
			continue;
		}
		switch (sig) {
		case SIGUSR1:
			pagein_server_report(x->srv);
			break;
		case SIGHUP:
			reopen_log();
			break;
		default: /* SIGTERM, SIGINT */
			notify("STOPPING=1");
			if (!x->draining) {
				x->draining = true;
				cli_log(PAGEIN_LOG_INFO, "signal", "%s: draining (send SIGTERM or SIGINT again to stop at once)",
					sig == SIGTERM ? "SIGTERM" : "SIGINT");
				pagein_server_drain(x->srv, x->drain_ms);
			} else {
				cli_log(PAGEIN_LOG_WARN, "signal", "%s during the drain: stopping at once",
					sig == SIGTERM ? "SIGTERM" : "SIGINT");
				pagein_server_stop(x->srv);
			}
			send_status(x);
			break;
		}
	}
	return NULL;
}

static int cmd_serve(int argc, char **argv)
{
	double drain_s = DEFAULT_DRAIN_TIMEOUT_S;
	struct pagein_server_config cfg = {
		.log_level = PAGEIN_LOG_INFO,
		.log = log_line,
		.fault_around = DEFAULT_FAULT_AROUND,
		.populate = PAGEIN_POPULATE_BACKGROUND,
	};
	static enum pagein_log_format log_format;
	/* --allow-uid/--allow-gid; the server copies them. Freed at exit. */
	static uint32_t *allow_uids, *allow_gids;
	cfg.log_opaque = &log_format;
	static const struct option opts[] = {
		{"snapshot", required_argument, NULL, 's'},
		{"socket", required_argument, NULL, 'S'},
		{"threads", required_argument, NULL, 't'},
		{"log-level", required_argument, NULL, 'l'},
		{"log-format", required_argument, NULL, 'L'},
		{"on-corrupt", required_argument, NULL, 'c'},
		{"fault-around", required_argument, NULL, 'f'},
		{"populate", required_argument, NULL, 'p'},
		{"prefetch", required_argument, NULL, 'P'},
		{"record", required_argument, NULL, 'r'},
		{"on-failure", required_argument, NULL, 'F'},
		{"handshake-timeout", required_argument, NULL, 'T'},
		{"max-connections", required_argument, NULL, 'm'},
		{"metrics", required_argument, NULL, 'M'},
		{"log-file", required_argument, NULL, 'W'},
		{"drain-timeout", required_argument, NULL, 'D'},
		{"socket-mode", required_argument, NULL, 'o'},
		{"socket-owner", required_argument, NULL, 'O'},
		{"socket-group", required_argument, NULL, 'g'},
		{"allow-uid", required_argument, NULL, 'u'},
		{"allow-gid", required_argument, NULL, 'G'},
		{"s3-endpoint", required_argument, NULL, 1001},
		{"cache-dir", required_argument, NULL, 1002},
		{"cache-size", required_argument, NULL, 1003},
		{"fetch-parallel", required_argument, NULL, 1004},
		{"fetch-deadline", required_argument, NULL, 1005},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end;
		switch (o) {
		case 's':
			cfg.snapshot_path = optarg;
			break;
		case 'S':
			cfg.socket_path = optarg;
			break;
		case 't': {
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256) {
				fprintf(stderr, "pagein serve: --threads %s: expected 1 to 256\n", optarg);
				return 2;
			}
			cfg.threads = (unsigned)n;
			break;
		}
		case 'l':
			if (parse_level(optarg, &cfg.log_level) < 0) {
				fprintf(stderr, "pagein serve: --log-level %s: expected error, warn, info or debug\n", optarg);
				return 2;
			}
			break;
		case 'L':
			if (!strcmp(optarg, "text"))
				log_format = PAGEIN_LOG_TEXT;
			else if (!strcmp(optarg, "json"))
				log_format = PAGEIN_LOG_JSON;
			else {
				fprintf(stderr, "pagein serve: --log-format %s: expected text or json\n", optarg);
				return 2;
			}
			break;
		case 'c':
			if (!strcmp(optarg, "fail"))
				cfg.on_corrupt = PAGEIN_CORRUPT_FAIL;
			else if (!strcmp(optarg, "poison"))
				cfg.on_corrupt = PAGEIN_CORRUPT_POISON;
			else {
				fprintf(stderr, "pagein serve: --on-corrupt %s: expected fail or poison\n", optarg);
				return 2;
			}
			break;
		case 'f': {
			long n = strtol(optarg, &end, 10);
			if (*end || n < 0 || n > (long)PAGEIN_FAULT_AROUND_MAX || (n & (n - 1))) {
				fprintf(stderr, "pagein serve: --fault-around %s: expected 0 or a power of two up to %u\n",
					optarg, PAGEIN_FAULT_AROUND_MAX);
				return 2;
			}
			cfg.fault_around = (unsigned)n;
			break;
		}
		case 'p':
			if (!strcmp(optarg, "none"))
				cfg.populate = PAGEIN_POPULATE_NONE;
			else if (!strcmp(optarg, "background"))
				cfg.populate = PAGEIN_POPULATE_BACKGROUND;
			else if (!strcmp(optarg, "eager"))
				cfg.populate = PAGEIN_POPULATE_EAGER;
			else {
				fprintf(stderr, "pagein serve: --populate %s: expected none, background or eager\n", optarg);
				return 2;
			}
			break;
		case 'P':
			cfg.prefetch_path = optarg;
			break;
		case 'r':
			cfg.record_path = optarg;
			break;
		case 'F':
			if (!strcmp(optarg, "kill"))
				cfg.on_failure = PAGEIN_FAILURE_KILL;
			else if (!strcmp(optarg, "keep"))
				cfg.on_failure = PAGEIN_FAILURE_KEEP;
			else {
				fprintf(stderr, "pagein serve: --on-failure %s: expected kill or keep\n", optarg);
				return 2;
			}
			break;
		case 'T': {
			double t = strtod(optarg, &end);
			if (*end || !(t >= 0.1 && t <= 3600)) {
				fprintf(stderr, "pagein serve: --handshake-timeout %s: expected seconds from 0.1 to 3600\n", optarg);
				return 2;
			}
			cfg.handshake_timeout_ms = (unsigned)(t * 1000);
			break;
		}
		case 'm': {
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 1000000) {
				fprintf(stderr, "pagein serve: --max-connections %s: expected 1 to 1000000\n", optarg);
				return 2;
			}
			cfg.max_connections = (unsigned)n;
			break;
		}
		case 'M':
			cfg.metrics_addr = optarg;
			break;
		case 1001:
			cfg.s3_endpoint = optarg;
			break;
		case 1002:
			cfg.cache_dir = optarg;
			break;
		case 1003:
			if (parse_bytes(optarg, &cfg.cache_size) < 0 || cfg.cache_size < (1u << 20)) {
				fprintf(stderr, "pagein serve: --cache-size %s: expected a size of at least 1M, e.g. 512M, 20G\n", optarg);
				return 2;
			}
			break;
		case 1004: {
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256) {
				fprintf(stderr, "pagein serve: --fetch-parallel %s: expected 1 to 256\n", optarg);
				return 2;
			}
			cfg.fetch_parallel = (uint32_t)n;
			break;
		}
		case 1005: {
			double d = strtod(optarg, &end);
			if (*end || !(d >= 0.1 && d <= 3600)) {
				fprintf(stderr, "pagein serve: --fetch-deadline %s: expected seconds from 0.1 to 3600\n", optarg);
				return 2;
			}
			cfg.fetch_deadline_ms = (uint32_t)(d * 1000);
			break;
		}
		case 'W':
			log_path = optarg;
			break;
		case 'D':
			drain_s = strtod(optarg, &end);
			if (*end || !(drain_s >= 0 && drain_s <= 86400)) {
				fprintf(stderr, "pagein serve: --drain-timeout %s: expected seconds from 0 to 86400\n", optarg);
				return 2;
			}
			break;
		case 'o': {
			long n = strtol(optarg, &end, 8);
			if (!*optarg || *end || n < 1 || n > 0777) {
				fprintf(stderr, "pagein serve: --socket-mode %s: expected an octal mode from 0001 to 0777, e.g. 0660\n", optarg);
				return 2;
			}
			cfg.socket_mode = (unsigned)n;
			break;
		}
		case 'O':
			if (parse_id("--socket-owner", optarg, false, &cfg.socket_owner) < 0)
				return 2;
			cfg.socket_owner_set = true;
			break;
		case 'g':
			if (parse_id("--socket-group", optarg, true, &cfg.socket_group) < 0)
				return 2;
			cfg.socket_group_set = true;
			break;
		case 'u':
			if (parse_id_list("--allow-uid", optarg, false, &allow_uids, &cfg.nallow_uids) < 0)
				return 2;
			cfg.allow_uids = allow_uids;
			break;
		case 'G':
			if (parse_id_list("--allow-gid", optarg, true, &allow_gids, &cfg.nallow_gids) < 0)
				return 2;
			cfg.allow_gids = allow_gids;
			break;
		case 'h':
			serve_usage(stdout);
			return 0;
		default:
			serve_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pagein serve: unexpected argument '%s': every option is --name VALUE (see pagein serve --help)\n",
			argv[optind]);
		return 2;
	}
	/* Before any thread exists: it edits the environment. */
	cfg.listen_fd = inherited_socket();
	if (cfg.listen_fd < 0)
		return 2;
	if (!cfg.snapshot_path || (!cfg.socket_path && !cfg.listen_fd)) {
		fprintf(stderr, "pagein serve: %s\n",
			cfg.snapshot_path ? "--socket PATH is required: name the Unix socket the VMMs connect to (see pagein serve --help)"
					  : "--snapshot FILE is required: name the memory snapshot to serve (see pagein serve --help)");
		return 2;
	}
	int log_fd = -1;
	if (log_path && (log_fd = open_log()) < 0) {
		fprintf(stderr, "pagein serve: --log-file %s: %s: create its directory, or give pagein write access to it\n",
			log_path, strerror(errno));
		return 2;
	}
	/* Signals go to one thread (drain, stop, reopen the log, report);
	 * workers inherit the blocked mask. */
	sigset_t set;
	serve_signals(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	cfg.log_format = log_format;
	struct pagein_server *srv;
	struct pagein_error err = {{0}};
	int r = pagein_server_new(&cfg, &srv, &err);
	if (r < 0) {
		fprintf(stderr, "pagein serve: %s\n", err.msg[0] ? err.msg : strerror(-r));
		if (log_fd >= 0)
			close(log_fd);
		return 1;
	}
	/* It listens: from here on, everything goes to the log file. Errors
	 * at start went to the terminal (or the journal) instead. */
	if (log_fd >= 0) {
		dup2(log_fd, STDERR_FILENO);
		close(log_fd);
	}
	server = srv;
	notify_init();
	struct sig_ctx x = {.srv = srv, .drain_ms = (unsigned)(drain_s * 1000)};
	pthread_t sig;
	pthread_create(&sig, NULL, signal_thread, &x);
	/* Connections queue on the socket until the workers start. */
	notify("READY=1\nSTATUS=serving 0 sessions\nMAINPID=%ld", (long)getpid());
	r = pagein_server_run(srv);
	pthread_cancel(sig);
	pthread_join(sig, NULL);
	notify("STOPPING=1");
	pagein_server_free(srv);
	return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
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
	if (!strcmp(cmd, "snapshot")) {
		if (!cmd_snapshot) {
			fprintf(stderr, "pagein: this build has no snapshot tools: build pagein with src/cli/snapshot_cmd.c\n");
			return 2;
		}
		return cmd_snapshot(argc - 1, argv + 1);
	}
	fprintf(stderr, "pagein: unknown command '%s': use serve or snapshot\n", cmd);
	usage(stderr);
	return 2;
}
