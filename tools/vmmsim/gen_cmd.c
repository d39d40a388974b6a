/* gen_cmd.c - `vmmsim gen`: writes a synthetic raw memory snapshot. */
#include "cmd.h"
#include "snapshot_gen.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char gen_usage[] =
	"usage: vmmsim gen -o FILE --size SIZE [--seed N] [--zero-fraction F] [--dense]\n"
	"Writes a raw guest memory snapshot, a pure function of (seed, page index).\n"
	"  -o, --output FILE     file to write (created or truncated)\n"
	"  --size SIZE           bytes, K/M/G suffixes (binary); multiple of 4096\n"
	"  --seed N              content seed (default 1)\n"
	"  --zero-fraction F     fraction of all-zero pages, 0..1 (default 0.3)\n"
	"  --dense               write zero pages explicitly (default: leave holes)\n";

struct gen_opts {
	const char *out;
	uint64_t size, seed;
	double zero_fraction;
	bool dense;
};

static int parse_gen(int argc, char **argv, struct gen_opts *o)
{
	static const struct option lo[] = {
		{ "output", required_argument, 0, 'o' },
		{ "size", required_argument, 0, 's' },
		{ "seed", required_argument, 0, 'S' },
		{ "zero-fraction", required_argument, 0, 'z' },
		{ "dense", no_argument, 0, 'd' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	bool have_size = false;
	int c;

	*o = (struct gen_opts){ .seed = 1, .zero_fraction = 0.3 };
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
		switch (c) {
		case 'o': o->out = optarg; break;
		case 's':
			if (!parse_size("--size", optarg, &o->size))
				return EXIT_SETUP;
			have_size = true;
			break;
		case 'S': if (!parse_u64("--seed", optarg, &o->seed)) return EXIT_SETUP; break;
		case 'z':
			if (!parse_double("--zero-fraction", optarg, 0, 1, &o->zero_fraction))
				return EXIT_SETUP;
			break;
		case 'd': o->dense = true; break;
		case 'h': fputs(gen_usage, stdout); return -1;
		default: bad_option("gen", argv); return EXIT_SETUP;
		}
	}
	if (optind < argc) {
		msg("gen: unexpected argument '%s'", argv[optind]);
		return EXIT_SETUP;
	}
	if (!o->out || !have_size) {
		msg("gen: %s is required", !o->out ? "-o FILE" : "--size SIZE");
		return EXIT_SETUP;
	}
	if (!o->size || o->size % SNAPGEN_PAGE_SIZE) {
		msg("--size %" PRIu64 ": must be a non-zero multiple of 4096", o->size);
		return EXIT_SETUP;
	}
	return 0;
}

/* Progress on a terminal only: logs and test output stay clean. */
static void show_progress(uint64_t done, uint64_t total, void *arg)
{
	(void)arg;
	fprintf(stderr, "\rvmmsim gen: %" PRIu64 "/%" PRIu64 " MiB", done >> 20, total >> 20);
	if (done == total)
		fputc('\n', stderr);
}

int cmd_gen(int argc, char **argv)
{
	struct gen_opts o;
	struct snapgen g;
	int rc = parse_gen(argc, argv, &o);

	if (rc)
		return rc < 0 ? EXIT_OK : rc;
	rc = snapgen_init(&g, o.seed, o.zero_fraction, o.size);
	if (rc) {
		msg("gen: cannot build the layout of %" PRIu64 " bytes: %s", o.size, strerror(-rc));
		return EXIT_SETUP;
	}
	int fd = open(o.out, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0) {
		msg("gen: cannot open %s: %m", o.out);
		snapgen_fini(&g);
		return EXIT_SETUP;
	}
	struct snapgen_write_opts wo = {
		.dense = o.dense,
		.progress = isatty(STDERR_FILENO) ? show_progress : NULL,
	};
	uint64_t t0 = now_ns();

	rc = snapgen_write_fd(&g, fd, &wo);
	if (!rc && close(fd))
		rc = -errno;
	else if (rc)
		close(fd);
	if (rc) {
		msg("gen: writing %s failed: %s", o.out, strerror(-rc));
		snapgen_fini(&g);
		return EXIT_SETUP;
	}
	double secs = (double)(now_ns() - t0) / 1e9;

	printf("vmmsim gen: %s: %" PRIu64 " bytes, %" PRIu64 " pages, %" PRIu64
	       " zero (%.1f%%), seed %" PRIu64 ", %s, %.2f s (%.0f MB/s)\n",
	       o.out, o.size, g.npages, g.zero_pages,
	       g.npages ? 100.0 * (double)g.zero_pages / (double)g.npages : 0.0, o.seed,
	       o.dense ? "dense" : "sparse", secs, (double)o.size / 1e6 / (secs > 0 ? secs : 1e-9));
	snapgen_fini(&g);
	return EXIT_OK;
}
