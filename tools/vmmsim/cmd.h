/* cmd.h - the subcommands, each called with argv[0] = its own name. They
 * return the process exit code (see util.h). */
#ifndef VMMSIM_CMD_H
#define VMMSIM_CMD_H

int cmd_gen(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_handshake(int argc, char **argv);

extern const char gen_usage[];
extern const char run_usage[];
extern const char handshake_usage[];

#endif
