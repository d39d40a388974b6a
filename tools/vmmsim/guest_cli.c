/* guest_cli.c - see guest_cli.h. */
#include "guest_cli.h"
#include "util.h"
#include "uffd_compat.h"

#include <inttypes.h>
#include <string.h>

void guest_cli_defaults(struct guest_cli *g)
{
	*g = (struct guest_cli){ .memory = GUEST_ANON, .regions = 1, .gap = 256ULL << 20,
				 .page_size = 4096 };
}

static int parse_register(struct guest_cli *g, const char *arg)
{
	if (!strcmp(arg, "missing"))
		g->reg_mode = UFFDIO_REGISTER_MODE_MISSING;
	else if (!strcmp(arg, "minor"))
		g->reg_mode = UFFDIO_REGISTER_MODE_MINOR;
	else if (!strcmp(arg, "missing+minor") || !strcmp(arg, "minor+missing"))
		g->reg_mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR;
	else {
		msg("--register %s: must be missing, minor or missing+minor", arg);
		return -1;
	}
	return 1;
}

int guest_cli_option(struct guest_cli *g, int c, const char *arg)
{
	switch (c) {
	case OPT_MEMORY:
		if (!strcmp(arg, "anon"))
			g->memory = GUEST_ANON;
		else if (!strcmp(arg, "memfd"))
			g->memory = GUEST_MEMFD;
		else {
			msg("--memory %s: must be anon or memfd", arg);
			return -1;
		}
		return 1;
	case OPT_MEM_SIZE: return parse_size("--mem-size", arg, &g->mem_size) ? 1 : -1;
	case OPT_REGIONS:
		return parse_uint("--regions", arg, 1, GUEST_MAX_REGIONS, &g->regions) ? 1 : -1;
	case OPT_GAP: return parse_size("--gap", arg, &g->gap) ? 1 : -1;
	case OPT_PAGE_SIZE:
		if (!strcasecmp(arg, "4k") || !strcmp(arg, "4096"))
			g->page_size = 4096;
		else if (!strcasecmp(arg, "2m") || !strcmp(arg, "2097152"))
			g->page_size = 2ULL << 20;
		else {
			msg("--page-size %s: must be 4k or 2m", arg);
			return -1;
		}
		return 1;
	case OPT_REGISTER: return parse_register(g, arg);
	}
	return 0;
}

bool guest_cli_resolve(const struct guest_cli *g, uint64_t file_size, const char *file_opt,
		       struct guest_config *out)
{
	uint64_t size = g->mem_size ? g->mem_size : file_size, ps = g->page_size;

	*out = (struct guest_config){ .memory = g->memory, .mem_size = size,
				      .nregions = g->regions, .gap = g->gap, .page_size = ps,
				      .reg_mode = g->reg_mode, .event_remove = true };
	if (!out->reg_mode)
		out->reg_mode = g->memory == GUEST_MEMFD
					? UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR
					: UFFDIO_REGISTER_MODE_MISSING;
	if (!size) {
		msg("guest memory size unknown: give --mem-size or %s", file_opt);
		return false;
	}
	if (size % ps) {
		msg("--mem-size %" PRIu64 ": must be a multiple of the page size (%" PRIu64 ")%s",
		    size, ps, g->mem_size ? "" : " (it defaults to the snapshot's size)");
		return false;
	}
	if (file_size && size > file_size) {
		msg("--mem-size %" PRIu64 ": larger than %s (%" PRIu64 " bytes)", size, file_opt,
		    file_size);
		return false;
	}
	if (size / ps > UINT32_MAX) {
		msg("--mem-size %" PRIu64 ": more than 2^32-1 pages", size);
		return false;
	}
	if (g->regions > size / ps) {
		msg("--regions %u: more regions than the %" PRIu64 " pages of guest memory",
		    g->regions, size / ps);
		return false;
	}
	if (g->gap % ps) {
		msg("--gap %" PRIu64 ": must be a multiple of the page size (%" PRIu64 ")", g->gap, ps);
		return false;
	}
	if (g->memory == GUEST_ANON && (out->reg_mode & UFFDIO_REGISTER_MODE_MINOR)) {
		msg("--register with minor needs --memory memfd (minor faults need a page cache)");
		return false;
	}
	return true;
}
