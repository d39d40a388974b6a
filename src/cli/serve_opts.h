/* serve_opts.h - the options of `pagein serve` (and of one socket added
 * with `pagein ctl add`), parsed into a server configuration. */
#ifndef PAGEIN_CLI_SERVE_OPTS_H
#define PAGEIN_CLI_SERVE_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "pagein.h"

/* Fault-around: learnt from the guest (fault_window.c). Of the fixed
 * windows docs/benchmarks.md sweeps, 64 (256 KiB) made random 25% touches
 * 1.5x faster than 16; auto keeps that on random guests, shrinks on short
 * runs (w5) and grows on scans. */
#define DEFAULT_FAULT_AROUND PAGEIN_FAULT_AROUND_AUTO
/* SIGTERM lets open sessions end for this long before stopping. */
#define DEFAULT_DRAIN_TIMEOUT_S 30.0

struct serve_opts {
	struct pagein_server_config cfg; /* strings point into argv */
	enum pagein_log_format log_format;
	double drain_s;
	const char *log_path;     /* --log-file */
	const char *control_path; /* --control */
	uint32_t *allow_uids, *allow_gids; /* cfg's lists; owned */
	bool help;                /* --help: nothing else was parsed */
	bool keeper;              /* --keeper (keeper.c) */
};

/* One sentence: what is wrong and what to do. */
struct opt_err {
	char msg[512];
};

/* Fills o (set its defaults first) from argv[1..]. daemon: the options
 * of the daemon as a whole (--log-*, --metrics, --drain-timeout,
 * --control) are allowed; otherwise they are refused. 0, or -1 with
 * e->msg set. Not thread-safe (getopt): one caller at a time. */
int serve_opts_parse(int argc, char **argv, bool daemon, struct serve_opts *o,
		     struct opt_err *e);
void serve_opts_free(struct serve_opts *o);

int parse_level(const char *s, enum pagein_log_level *out);
/* A size: "4096", "256K", "1M", "1MiB", "2G" (binary multiples). 0 or -1. */
int parse_size(const char *s, uint64_t *out);

#endif
