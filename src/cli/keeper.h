/* keeper.h - `pagein serve --keeper` (keeper.c). */
#ifndef PAGEIN_CLI_KEEPER_H
#define PAGEIN_CLI_KEEPER_H

#include "serve_opts.h"

/* Runs the keeper until the engine exits 0 after a drain or stop (0), or
 * a crash loop (1). argv: pagein's own, to run again. Takes log_fd. */
int keeper_run(char **argv, struct serve_opts *o, int log_fd);

/* Before any thread exists (it edits the environment): the fds passed
 * through LISTEN_FDS/LISTEN_FDNAMES, systemd's socket activation and fd
 * store. Session fds (named s<id>-<role>) become kept sessions the first
 * engine adopts; returns the listening socket among the rest (0: none). */
int keeper_listen_fds(void);

#endif
