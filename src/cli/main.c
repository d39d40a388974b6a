/* main.c - the pagein command: `pagein serve` (the daemon) and
 * `pagein snapshot ...` (format tools). A thin front end over libpagein. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "pagein.h"

/* Fault-around window in pages. docs/benchmarks.md sweeps 0/4/16/64/256:
 * 64 (256 KiB) made random 25% touches 1.5x faster than 16 and scans as
 * fast as any; 256 was faster still on random touches but quadrupled the
 * faulting vCPU's p99. */
#define DEFAULT_FAULT_AROUND 64u

/* Provided by snapshot_cmd.c when the snapshot format is built in. */
int cmd_snapshot(int argc, char **argv) __attribute__((weak));

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
		"SIGINT/SIGTERM stop.\n"
		"\n"
		"  --snapshot FILE     memory snapshot served to every VM (required)\n"
		"  --socket PATH       Unix socket to create (required; a stale socket\n"
		"                      file is replaced, a live one is refused; removed\n"
		"                      at exit only if it is still the file created)\n"
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
		"Log lines go to stderr, one per event, prefixed with the VM they are\n"
		"about (vmN pid P), or as JSON objects with --log-format json. SIGUSR1\n"
		"logs every open session's statistics.\n",
		DEFAULT_FAULT_AROUND);
}

/* opaque: the server's enum pagein_log_format. A JSON line is a complete
 * object with its own timestamp: written as it is. */
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
	struct pagein_server *srv = arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGUSR1);
	int sig;
	while (sigwait(&set, &sig) == 0) {
		if (sig == SIGUSR1) {
			pagein_server_report(srv);
			continue;
		}
		pagein_server_stop(srv);
		break;
	}
	return NULL;
}

static int cmd_serve(int argc, char **argv)
{
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
		{"socket-mode", required_argument, NULL, 'o'},
		{"socket-owner", required_argument, NULL, 'O'},
		{"socket-group", required_argument, NULL, 'g'},
		{"allow-uid", required_argument, NULL, 'u'},
		{"allow-gid", required_argument, NULL, 'G'},
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
	if (!cfg.snapshot_path || !cfg.socket_path) {
		fprintf(stderr, "pagein serve: %s\n",
			cfg.snapshot_path ? "--socket PATH is required: name the Unix socket the VMMs connect to (see pagein serve --help)"
					  : "--snapshot FILE is required: name the memory snapshot to serve (see pagein serve --help)");
		return 2;
	}
	/* Signals go to one thread that asks the server to stop; workers
	 * inherit the blocked mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	cfg.log_format = log_format;
	struct pagein_server *srv;
	struct pagein_error err = {{0}};
	int r = pagein_server_new(&cfg, &srv, &err);
	if (r < 0) {
		fprintf(stderr, "pagein serve: %s\n", err.msg[0] ? err.msg : strerror(-r));
		return 1;
	}
	pthread_t sig;
	pthread_create(&sig, NULL, signal_thread, srv);
	r = pagein_server_run(srv);
	pthread_cancel(sig);
	pthread_join(sig, NULL);
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
