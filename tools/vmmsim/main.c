/* main.c - vmmsim: plays the Firecracker (VMM) side of a lazy snapshot
 * restore for pagein's tests, demo and benchmarks. Dispatches to the
 * subcommands. */
#include "cmd.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
	"usage: vmmsim COMMAND [options]   (vmmsim COMMAND --help for details)\n"
	"  gen        write a synthetic raw memory snapshot\n"
	"  run        restore through a handler and run a verifying guest workload\n"
	"  handshake  send a chosen (maybe bad) handshake; report refused/accepted\n"
	"\n"
	"Exit codes: 0 ok, 1 wrong byte or protocol violation, 2 bad option or setup\n"
	"failure, 3 watchdog (\"handler made no progress for N s\"), 4 handshake\n"
	"accepted, 77 skipped (no 2 MiB huge pages).\n"
	"\n";

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		FILE *f = argc < 2 ? stderr : stdout;

		fputs(usage, f);
		fputs(gen_usage, f);
		fputc('\n', f);
		fputs(run_usage, f);
		fputc('\n', f);
		fputs(handshake_usage, f);
		return argc < 2 ? EXIT_SETUP : EXIT_OK;
	}
	if (!strcmp(argv[1], "gen"))
		return cmd_gen(argc - 1, argv + 1);
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "handshake"))
		return cmd_handshake(argc - 1, argv + 1);
	msg("unknown command '%s' (gen, run or handshake; try vmmsim --help)", argv[1]);
	return EXIT_SETUP;
}
