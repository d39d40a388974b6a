/* snapshot_cmd.h - `pagein snapshot ...`: convert, merge, inspect, verify,
 * extract and bench pagein snapshot files (format: docs/format.md). */
#ifndef PAGEIN_SNAPSHOT_CMD_H
#define PAGEIN_SNAPSHOT_CMD_H

/* argv[0] is "snapshot", argv[1] the subcommand. Returns the exit code:
 * 0 ok, 1 verification failure, corrupt input or I/O error, 2 usage error. */
int cmd_snapshot(int argc, char **argv);

#endif
