/* keeper.h - `pagein serve --keeper` (keeper.c). */
#ifndef PAGEIN_CLI_KEEPER_H
#define PAGEIN_CLI_KEEPER_H

#include "serve_opts.h"

/* Runs the keeper until the engine exits 0 after a drain or stop (0), or
 * a crash loop (1). argv: pagein's own, to run again. Takes log_fd. */
int keeper_run(char **argv, struct serve_opts *o, int log_fd);

#endif
