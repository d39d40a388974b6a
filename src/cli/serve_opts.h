/* serve_opts.h - the options of `pagein serve` (and of one socket added
 * with `pagein ctl add`), parsed into a server configuration. */
#ifndef PAGEIN_CLI_SERVE_OPTS_H
#define PAGEIN_CLI_SERVE_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "pagein.h"

/* Fault-around window in pages. docs/benchmarks.md sweeps 0/4/16/64/256:
 * 64 (256 KiB) made random 25% touches 1.5x faster than 16 and scans as
 * fast as any; 256 was faster still on random touches but quadrupled the
 * faulting vCPU's p99. */
#define DEFAULT_FAULT_AROUND 64u
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

#endif
