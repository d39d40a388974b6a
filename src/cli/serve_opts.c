/* serve_opts.c - the options of one served socket, parsed the same way
 * for `pagein serve` and for `pagein ctl add` (the control thread). */
#include "serve_opts.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Options of the daemon as a whole (log, metrics, control, drain):
 * refused by `pagein ctl add`. */
#define DAEMON_WIDE "lLMWDCKN"

static void opt_fail(struct opt_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void opt_fail(struct opt_err *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}
#define FAIL(...) opt_fail(e, __VA_ARGS__)

int parse_level(const char *s, enum pagein_log_level *out)
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
static int parse_id(struct opt_err *e, const char *opt, const char *s, bool group, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(s, &end, 10);
	if (*s && !*end && *s != '-') {
		if (errno || n >= UINT32_MAX) {
			FAIL("%s %s: that %s is out of range: give a %s name or a number below 4294967295", opt, s, group ? "gid" : "uid", group ? "group" : "user");
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
	FAIL("%s %s: no such %s on this host: give an existing %s name (see %s) or a numeric %s", opt, s, group ? "group" : "user", group ? "group" : "user",
		group ? "getent group" : "getent passwd", group ? "gid" : "uid");
	return -1;
}

/* "0,1000,alice": a comma-separated list of ids, appended to *list. */
static int parse_id_list(struct opt_err *e, const char *opt, const char *arg, bool group,
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
		if ((r = parse_id(e, opt, tok, group, &id)) < 0)
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
		FAIL("%s '%s': the list is empty: give %s names or numbers separated by commas", opt, arg, group ? "group" : "user");
		r = -1;
	}
	free(copy);
	return r;
}

/* "4096", "256K", "1M", "1MiB", "2G" (binary multiples). */
int parse_size(const char *s, uint64_t *out)
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
	else if (*end == 'B' || *end == 'b')
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

int serve_opts_parse(int argc, char **argv, bool daemon, struct serve_opts *o,
		     struct opt_err *e)
{
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
		{"ca-file", required_argument, NULL, 1006},
		{"control", required_argument, NULL, 'C'},
		{"keeper", no_argument, NULL, 'K'},
		{"no-keeper", no_argument, NULL, 'N'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	int c;
	optind = 0; /* a fresh scan (the control thread parses again) */
	opterr = 0; /* unknown options are reported below, into e */
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		char *end;
		if (!daemon && c > 0 && c < 128 && strchr(DAEMON_WIDE, c)) {
			const char *name = "?";
			for (const struct option *p = opts; p->name; p++)
				if (p->val == c)
					name = p->name;
			FAIL("--%s is daemon-wide: give it to pagein serve itself, not to one socket", name);
			return -1;
		}
		switch (c) {
		case 's':
			o->cfg.snapshot_path = optarg;
			break;
		case 'S':
			o->cfg.socket_path = optarg;
			break;
		case 't': {
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256) {
				FAIL("--threads %s: expected 1 to 256", optarg);
				return -1;
			}
			o->cfg.threads = (unsigned)n;
			break;
		}
		case 'l':
			if (parse_level(optarg, &o->cfg.log_level) < 0) {
				FAIL("--log-level %s: expected error, warn, info or debug", optarg);
				return -1;
			}
			break;
		case 'L':
			if (!strcmp(optarg, "text"))
				o->log_format = PAGEIN_LOG_TEXT;
			else if (!strcmp(optarg, "json"))
				o->log_format = PAGEIN_LOG_JSON;
			else {
				FAIL("--log-format %s: expected text or json", optarg);
				return -1;
			}
			break;
		case 'c':
			if (!strcmp(optarg, "fail"))
				o->cfg.on_corrupt = PAGEIN_CORRUPT_FAIL;
			else if (!strcmp(optarg, "poison"))
				o->cfg.on_corrupt = PAGEIN_CORRUPT_POISON;
			else {
				FAIL("--on-corrupt %s: expected fail or poison", optarg);
				return -1;
			}
			break;
		case 'f': {
			if (!strcmp(optarg, "auto")) {
				o->cfg.fault_around = PAGEIN_FAULT_AROUND_AUTO;
				break;
			}
			long n = strtol(optarg, &end, 10);
			if (*end || n < 0 || n > (long)PAGEIN_FAULT_AROUND_MAX || (n & (n - 1))) {
				FAIL("--fault-around %s: expected auto, 0 or a power of two up to %u", optarg, PAGEIN_FAULT_AROUND_MAX);
				return -1;
			}
			o->cfg.fault_around = (unsigned)n;
			break;
		}
		case 'p':
			if (!strcmp(optarg, "none"))
				o->cfg.populate = PAGEIN_POPULATE_NONE;
			else if (!strcmp(optarg, "background"))
				o->cfg.populate = PAGEIN_POPULATE_BACKGROUND;
			else if (!strcmp(optarg, "eager"))
				o->cfg.populate = PAGEIN_POPULATE_EAGER;
			else {
				FAIL("--populate %s: expected none, background or eager", optarg);
				return -1;
			}
			break;
		case 'P':
			o->cfg.prefetch_path = optarg;
			break;
		case 'r':
			o->cfg.record_path = optarg;
			break;
		case 'F':
			if (!strcmp(optarg, "kill"))
				o->cfg.on_failure = PAGEIN_FAILURE_KILL;
			else if (!strcmp(optarg, "keep"))
				o->cfg.on_failure = PAGEIN_FAILURE_KEEP;
			else {
				FAIL("--on-failure %s: expected kill or keep", optarg);
				return -1;
			}
			break;
		case 'T': {
			double t = strtod(optarg, &end);
			if (*end || !(t >= 0.1 && t <= 3600)) {
				FAIL("--handshake-timeout %s: expected seconds from 0.1 to 3600", optarg);
				return -1;
			}
			o->cfg.handshake_timeout_ms = (unsigned)(t * 1000);
			break;
		}
		case 'm': {
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 1000000) {
				FAIL("--max-connections %s: expected 1 to 1000000", optarg);
				return -1;
			}
			o->cfg.max_connections = (unsigned)n;
			break;
		}
		case 'M':
			o->cfg.metrics_addr = optarg;
			break;
		case 'W':
			o->log_path = optarg;
			break;
		case 'D':
			o->drain_s = strtod(optarg, &end);
			if (*end || !(o->drain_s >= 0 && o->drain_s <= 86400)) {
				FAIL("--drain-timeout %s: expected seconds from 0 to 86400", optarg);
				return -1;
			}
			break;
		case 'o': {
			long n = strtol(optarg, &end, 8);
			if (!*optarg || *end || n < 1 || n > 0777) {
				FAIL("--socket-mode %s: expected an octal mode from 0001 to 0777, e.g. 0660", optarg);
				return -1;
			}
			o->cfg.socket_mode = (unsigned)n;
			break;
		}
		case 'O':
			if (parse_id(e, "--socket-owner", optarg, false, &o->cfg.socket_owner) < 0)
				return -1;
			o->cfg.socket_owner_set = true;
			break;
		case 'g':
			if (parse_id(e, "--socket-group", optarg, true, &o->cfg.socket_group) < 0)
				return -1;
			o->cfg.socket_group_set = true;
			break;
		case 'u':
			if (parse_id_list(e, "--allow-uid", optarg, false, &o->allow_uids, &o->cfg.nallow_uids) < 0)
				return -1;
			o->cfg.allow_uids = o->allow_uids;
			break;
		case 'G':
			if (parse_id_list(e, "--allow-gid", optarg, true, &o->allow_gids, &o->cfg.nallow_gids) < 0)
				return -1;
			o->cfg.allow_gids = o->allow_gids;
			break;
		case 'C':
			o->control_path = optarg;
			break;
		case 1001:
			o->cfg.s3_endpoint = optarg;
			break;
		case 1006:
			if (access(optarg, R_OK) < 0) {
				FAIL("--ca-file %s: cannot read it: %s", optarg, strerror(errno));
				return -1;
			}
			o->cfg.ca_file = optarg;
			break;
		case 1002:
			o->cfg.cache_dir = optarg;
			break;
		case 1003:
			if (parse_size(optarg, &o->cfg.cache_size) < 0 || o->cfg.cache_size < (1u << 20)) {
				FAIL("--cache-size %s: expected a size of at least 1M, e.g. 512M, 20G", optarg);
				return -1;
			}
			break;
		case 1004: {
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256) {
				FAIL("--fetch-parallel %s: expected 1 to 256", optarg);
				return -1;
			}
			o->cfg.fetch_parallel = (uint32_t)n;
			break;
		}
		case 1005: {
			double d = strtod(optarg, &end);
			if (*end || !(d >= 0.1 && d <= 3600)) {
				FAIL("--fetch-deadline %s: expected seconds from 0.1 to 3600", optarg);
				return -1;
			}
			o->cfg.fetch_deadline_ms = (uint32_t)(d * 1000);
			break;
		}
		case 'K':
			o->keeper = true;
			break;
		case 'N':
			o->keeper = false;
			break;
		case 'h':
			o->help = true;
			return 0;
		case ':':
			FAIL("%s needs a value (see pagein serve --help)", argv[optind - 1]);
			return -1;
		default:
			FAIL("unknown option '%s' (see pagein serve --help)", argv[optind - 1]);
			return -1;
		}
	}
	if (optind < argc) {
		FAIL("unexpected argument '%s': every option is --name VALUE (see pagein serve --help)", argv[optind]);
		return -1;
	}
	return 0;
}

void serve_opts_free(struct serve_opts *o)
{
	free(o->allow_uids);
	free(o->allow_gids);
	o->allow_uids = o->allow_gids = NULL;
}
