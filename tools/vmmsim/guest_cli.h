/* guest_cli.h - the guest memory options shared by `run` and `handshake`:
 * --memory, --mem-size, --regions, --gap, --page-size, --register. */
#ifndef VMMSIM_GUEST_CLI_H
#define VMMSIM_GUEST_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "guest_memory.h"

enum {
	OPT_MEMORY = 0x1000, OPT_MEM_SIZE, OPT_REGIONS, OPT_GAP, OPT_PAGE_SIZE, OPT_REGISTER,
	OPT_GUEST_LAST,
};

#define GUEST_CLI_LONG_OPTIONS                                   \
	{ "memory", required_argument, 0, OPT_MEMORY },          \
	{ "mem-size", required_argument, 0, OPT_MEM_SIZE },      \
	{ "regions", required_argument, 0, OPT_REGIONS },        \
	{ "gap", required_argument, 0, OPT_GAP },                \
	{ "page-size", required_argument, 0, OPT_PAGE_SIZE },    \
	{ "register", required_argument, 0, OPT_REGISTER }

#define GUEST_CLI_USAGE                                                                    \
	"  --memory anon|memfd   guest memory backing (default anon)\n"                     \
	"  --mem-size SIZE       guest memory size (default: the snapshot's size)\n"        \
	"  --regions N           regions, 1..64, cumulative snapshot offsets (default 1)\n" \
	"  --gap SIZE            unmapped gap between regions (default 256M)\n"             \
	"  --page-size 4k|2m     2m = hugetlb; exit 77 if none available (default 4k)\n"    \
	"  --register missing|minor|missing+minor\n"                                        \
	"                        uffd modes (default anon: missing, memfd: missing+minor)\n"

struct guest_cli {
	enum guest_mem memory;
	uint64_t mem_size; /* 0 = the file's size */
	unsigned regions;
	uint64_t gap, page_size;
	uint64_t reg_mode; /* 0 = by memory type */
};

void guest_cli_defaults(struct guest_cli *g);
/* Handles option c if it is a guest option: returns 1 if handled, -1 if
 * handled but the value is bad (message printed), 0 if not a guest option. */
int guest_cli_option(struct guest_cli *g, int c, const char *arg);
/* Applies defaults and checks consistency. file_size is the size of the
 * snapshot the memory is compared with (0 = none given). Prints why and
 * returns false when the combination is unusable. */
bool guest_cli_resolve(const struct guest_cli *g, uint64_t file_size, const char *file_opt,
		       struct guest_config *out);

#endif
