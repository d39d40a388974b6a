/* run_opts.c - `vmmsim run` options: parsing, defaults, and the checks
 * that reject combinations that cannot work, before anything is set up. */
#include "cmd.h"
#include "guest_cli.h"
#include "sim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char run_usage[] =
	"usage: vmmsim run --socket PATH --snapshot FILE [options]\n"
	"Plays Firecracker restoring a VM from FILE through the handler at PATH,\n"
	"then a guest workload that verifies every byte it reads.\n"
	"Handshake:\n"
	"  --socket PATH         the handler's Unix socket (retried for 5 s)\n"
	"  --snapshot FILE       the snapshot the handler serves\n"
	"  --expect FILE         raw file of the expected bytes (default: --snapshot)\n"
	"  --protocol mainline|secret-hiding\n"
	"                        fds [uffd], or [uffd, memfd, bitmap] (default mainline)\n"
	"  --fc-version 1.1|1.7|1.12  the Firecracker to play (default 1.12): its\n"
	"                        region fields, socket lifetime, UFFDIO_API\n"
	"                        features and balloon discards (see below)\n"
	"  --close-after-handshake  close the socket right after the handshake's\n"
	"                        sendmsg() and run on, as Firecracker before v1.12\n"
	"                        does (default with --fc-version 1.1 and 1.7);\n"
	"                        refused with secret-hiding (it needs the socket)\n"
	"  --keep-socket         keep the socket open until exit, as v1.12+ does\n"
	"                        (default with 1.12 and with secret-hiding); the\n"
	"                        handler closing it during the workload fails the run\n"
	"  --reset-socket        secret-hiding: after the report (before --hold),\n"
	"                        send one more stage-2 request, wait for its reply\n"
	"                        and close the socket without reading it: unread\n"
	"                        data makes a Unix socket's close a reset, and the\n"
	"                        handler's next read gets ECONNRESET, not EOF\n"
	"                        (SO_LINGER {1, 0} does not do it for AF_UNIX)\n"
	"  --extra-field         add an unknown \"gpa_start\" field to every region\n"
	"  --split-handshake N   send the JSON in N pieces 20 ms apart (default 1)\n"
	"Guest memory:\n" GUEST_CLI_USAGE
	"Workload:\n"
	"  --vcpus K             vCPU threads, 1..256 (default 2)\n"
	"  --pattern seq|random|hot|trace:FILE  access order (default random);\n"
	"                        trace: one guest page index per line, round-robin\n"
	"  --touch SIZE|F        pages to touch: a size (64M) or a fraction (default 1.0);\n"
	"                        hot: the number of accesses\n"
	"  --share split|same    seq/random: split the pages between vCPUs, or every\n"
	"                        vCPU walks all of them (default: same with --stage2,\n"
	"                        else split)\n"
	"  --seed N              seed of every random choice (default 1)\n"
	"  --write-fraction F    after a read, write a pattern with probability F (0)\n"
	"  --vmm-thread          also read 1/8 as many pages by write(2) into a pipe\n"
	"                        (kernel-mode faults)\n"
	"  --stage2 F            secret-hiding: fraction of accesses by fault request +\n"
	"                        memfd pread instead of the mapping (default 0.5)\n"
	"  --bad-request OFFSET  secret-hiding: first send a request for OFFSET and\n"
	"                        ignore any reply to it; the run must still pass\n"
	"  --balloon N           discard N random 1..16-page ranges during the run (0);\n"
	"                        UFFDIO_API asks for EVENT_REMOVE with 1.12 always,\n"
	"                        with 1.1/1.7 only when N > 0\n"
	"  --balloon-advice dontneed|remove|remap  how to discard (default memfd:\n"
	"                        remove; anon: dontneed with 1.12, remap with 1.1/1.7);\n"
	"                        remap = mmap a fresh anonymous range over it, then\n"
	"                        MADV_DONTNEED (Firecracker up to v1.10): the range\n"
	"                        leaves the uffd and the handler gets no REMOVE event\n"
	"  --verify-all          afterwards read and verify every guest page\n"
	"  --on-sigbus exit|skip a SIGBUS in guest memory (a page the handler\n"
	"                        poisoned): exit (default), or skip that access,\n"
	"                        count it (sigbus_skipped) and go on\n"
	"Run:\n"
	"  --timeout S           exit 3 if no access completes for S s (default 30)\n"
	"  --hold S              stay alive S s after the report, the socket still\n"
	"                        open if kept (0)\n"
	"  --report-json FILE    also write the report as JSON\n"
	"Benchmarks:\n"
	"  --backend uffd|file|populated\n"
	"                        file = no handler: guest memory is --snapshot mmap'd\n"
	"                        MAP_PRIVATE (Firecracker without UFFD); populated =\n"
	"                        anonymous memory holding --snapshot's bytes before\n"
	"                        the workload (the touch floor: no faults); neither\n"
	"                        takes --socket (default uffd)\n"
	"  --expect-prefault     map all of --expect before the run, so verifying\n"
	"                        takes no page fault (give a copy, e.g. on tmpfs)\n"
	"  --evict FILE          drop FILE from the page cache (POSIX_FADV_DONTNEED)\n"
	"                        after setup, right before the handshake (repeatable)\n"
	"  --latency-out FILE    write every first-touch latency (ns), one per line\n"
	"Exit: 0 verified, 1 wrong byte/protocol error, 2 bad option/setup error,\n"
	"3 watchdog, 77 no huge pages. Report on stdout, last line \"verify: ok\".\n";

enum {
	OPT_SOCKET = OPT_GUEST_LAST + 1, OPT_SNAPSHOT, OPT_EXPECT, OPT_PROTOCOL, OPT_FC,
	OPT_EXTRA, OPT_SPLIT, OPT_VCPUS, OPT_PATTERN, OPT_TOUCH, OPT_SHARE, OPT_SEED,
	OPT_WRITE, OPT_VMM, OPT_STAGE2, OPT_BAD, OPT_BALLOON, OPT_ADVICE, OPT_VERIFY_ALL,
	OPT_TIMEOUT, OPT_HOLD, OPT_REPORT_JSON, OPT_HELP,
	OPT_BACKEND, OPT_EXPECT_PREFAULT, OPT_EVICT, OPT_LATENCY_OUT,
	OPT_CLOSE_SOCKET, OPT_KEEP_SOCKET, OPT_RESET_SOCKET, OPT_ON_SIGBUS,
};

static const struct option run_long[] = {
	GUEST_CLI_LONG_OPTIONS,
	{ "socket", required_argument, 0, OPT_SOCKET },
	{ "snapshot", required_argument, 0, OPT_SNAPSHOT },
	{ "expect", required_argument, 0, OPT_EXPECT },
	{ "protocol", required_argument, 0, OPT_PROTOCOL },
	{ "fc-version", required_argument, 0, OPT_FC },
	{ "close-after-handshake", no_argument, 0, OPT_CLOSE_SOCKET },
	{ "keep-socket", no_argument, 0, OPT_KEEP_SOCKET },
	{ "reset-socket", no_argument, 0, OPT_RESET_SOCKET },
	{ "extra-field", no_argument, 0, OPT_EXTRA },
	{ "split-handshake", required_argument, 0, OPT_SPLIT },
	{ "vcpus", required_argument, 0, OPT_VCPUS },
	{ "pattern", required_argument, 0, OPT_PATTERN },
	{ "touch", required_argument, 0, OPT_TOUCH },
	{ "share", required_argument, 0, OPT_SHARE },
	{ "seed", required_argument, 0, OPT_SEED },
	{ "write-fraction", required_argument, 0, OPT_WRITE },
	{ "vmm-thread", no_argument, 0, OPT_VMM },
	{ "stage2", required_argument, 0, OPT_STAGE2 },
	{ "bad-request", required_argument, 0, OPT_BAD },
	{ "balloon", required_argument, 0, OPT_BALLOON },
	{ "balloon-advice", required_argument, 0, OPT_ADVICE },
	{ "verify-all", no_argument, 0, OPT_VERIFY_ALL },
	{ "on-sigbus", required_argument, 0, OPT_ON_SIGBUS },
	{ "timeout", required_argument, 0, OPT_TIMEOUT },
	{ "hold", required_argument, 0, OPT_HOLD },
	{ "report-json", required_argument, 0, OPT_REPORT_JSON },
	{ "help", no_argument, 0, OPT_HELP },
	{ "backend", required_argument, 0, OPT_BACKEND },
	{ "expect-prefault", no_argument, 0, OPT_EXPECT_PREFAULT },
	{ "evict", required_argument, 0, OPT_EVICT },
	{ "latency-out", required_argument, 0, OPT_LATENCY_OUT },
	{ 0, 0, 0, 0 },
};

/* What the command line said, before defaults that depend on other options. */
struct run_cli {
	struct guest_cli guest;
	int share;        /* -1 unset, 0 split, 1 same */
	int advice;       /* -1 unset */
	bool close_given, keep_given;
	bool stage2_given;
	const char *touch;
};

static bool parse_pattern(struct run_opts *o, const char *arg)
{
	if (!strcmp(arg, "seq"))
		o->plan.kind = PAT_SEQ;
	else if (!strcmp(arg, "random"))
		o->plan.kind = PAT_RANDOM;
	else if (!strcmp(arg, "hot"))
		o->plan.kind = PAT_HOT;
	else if (!strncmp(arg, "trace:", 6) && arg[6]) {
		o->plan.kind = PAT_TRACE;
		o->plan.trace = arg + 6;
	} else {
		msg("--pattern %s: must be seq, random, hot or trace:FILE", arg);
		return false;
	}
	return true;
}

static bool parse_enum(const char *opt, const char *arg, const char *const *names, int n, int *out)
{
	for (int i = 0; i < n; i++) {
		if (!strcmp(arg, names[i])) {
			*out = i;
			return true;
		}
	}
	msg("%s %s: must be %s%s%s%s%s", opt, arg, names[0], n > 1 ? " or " : "",
	    n > 1 ? names[1] : "", n > 2 ? " or " : "", n > 2 ? names[2] : "");
	return false;
}

/* One option; returns false on a bad value (message printed). */
static bool run_option(struct run_opts *o, struct run_cli *cli, int c, const char *arg)
{
	static const char *const protos[] = { "mainline", "secret-hiding" };
	static const char *const fcs[] = { "1.1", "1.7", "1.12" };
	static const char *const shares[] = { "split", "same" };
	static const char *const advices[] = { "dontneed", "remove", "remap" };
	static const char *const backends[] = { "uffd", "file", "populated" };
	int v, g = guest_cli_option(&cli->guest, c, arg);

	if (g)
		return g > 0;
	switch (c) {
	case OPT_SOCKET: o->socket = arg; return true;
	case OPT_SNAPSHOT: o->snapshot = arg; return true;
	case OPT_EXPECT: o->expect = arg; return true;
	case OPT_PROTOCOL:
		if (!parse_enum("--protocol", arg, protos, 2, &v))
			return false;
		o->protocol = (enum protocol)v;
		return true;
	case OPT_FC:
		if (!parse_enum("--fc-version", arg, fcs, 3, &v))
			return false;
		o->fc = (enum fc_version)v;
		return true;
	case OPT_CLOSE_SOCKET: cli->close_given = true; return true;
	case OPT_KEEP_SOCKET: cli->keep_given = true; return true;
	case OPT_EXTRA: o->extra_field = true; return true;
	case OPT_SPLIT: return parse_uint("--split-handshake", arg, 1, 4096, &o->split);
	case OPT_VCPUS: return parse_uint("--vcpus", arg, 1, 256, &o->plan.nvcpus);
	case OPT_PATTERN: return parse_pattern(o, arg);
	case OPT_TOUCH: cli->touch = arg; return true;
	case OPT_SHARE: return parse_enum("--share", arg, shares, 2, &cli->share);
	case OPT_SEED: return parse_u64("--seed", arg, &o->seed);
	case OPT_WRITE: return parse_double("--write-fraction", arg, 0, 1, &o->write_frac);
	case OPT_VMM: o->vmm_thread = true; return true;
	case OPT_RESET_SOCKET: o->reset_socket = true; return true;
	case OPT_STAGE2:
		cli->stage2_given = true;
		return parse_double("--stage2", arg, 0, 1, &o->stage2_frac);
	case OPT_BAD: o->has_bad = true; return parse_u64("--bad-request", arg, &o->bad_offset);
	case OPT_BALLOON: return parse_uint("--balloon", arg, 0, 1000000, &o->balloon);
	case OPT_ADVICE: return parse_enum("--balloon-advice", arg, advices, 3, &cli->advice);
	case OPT_VERIFY_ALL: o->verify_all = true; return true;
	case OPT_ON_SIGBUS:
		if (!strcmp(arg, "skip") || !strcmp(arg, "exit")) {
			o->sigbus_skip = !strcmp(arg, "skip");
			return true;
		}
		msg("--on-sigbus %s: must be exit or skip", arg);
		return false;
	case OPT_TIMEOUT: return parse_double("--timeout", arg, 0.1, 1e6, &o->timeout_s);
	case OPT_HOLD: return parse_double("--hold", arg, 0, 1e6, &o->hold_s);
	case OPT_REPORT_JSON: o->report_json = arg; return true;
	case OPT_BACKEND:
		if (!parse_enum("--backend", arg, backends, 3, &v))
			return false;
		o->backend_file = v >= 1;
		o->backend_populated = v == 2;
		return true;
	case OPT_EXPECT_PREFAULT: o->expect_prefault = true; return true;
	case OPT_EVICT:
		if (o->nevict == VMMSIM_MAX_EVICT) {
			msg("--evict %s: at most %d files", arg, VMMSIM_MAX_EVICT);
			return false;
		}
		o->evict[o->nevict++] = arg;
		return true;
	case OPT_LATENCY_OUT: o->latency_out = arg; return true;
	}
	return false;
}

/* --touch: a plain number up to 1 is a fraction of memory, anything else a
 * size (64M, or bytes). Resolved to pages once the page size is known. */
static bool resolve_touch(struct run_opts *o, const char *arg, uint64_t npages, uint64_t ps)
{
	char *end;
	double f = arg ? strtod(arg, &end) : 1.0;

	if (arg && end != arg && !*end && strchr(arg, '.') && f > 1.0) {
		msg("--touch %s: a fraction must be in (0, 1]; for a size use bytes or K/M/G", arg);
		return false;
	}
	if (arg && (end == arg || *end || f > 1.0)) {
		uint64_t bytes;

		if (!parse_size("--touch", arg, &bytes))
			return false;
		o->plan.touch = (bytes + ps - 1) / ps;
	} else if (!(f > 0.0)) {
		msg("--touch %s: must be a fraction in (0, 1] or a size", arg);
		return false;
	} else {
		o->plan.touch = (uint64_t)(f * (double)npages + 0.5);
	}
	if (!o->plan.touch)
		o->plan.touch = 1;
	if (o->plan.touch > npages && o->plan.kind != PAT_HOT) {
		msg("--touch %s: %" PRIu64 " pages, more than the %" PRIu64 " of guest memory", arg,
		    o->plan.touch, npages);
		return false;
	}
	return true;
}

static bool file_size(const char *opt, const char *path, uint64_t *size)
{
	struct stat st;

	if (stat(path, &st)) {
		msg("%s %s: %m", opt, path);
		return false;
	}
	*size = (uint64_t)st.st_size;
	return true;
}

/* --backend file has no handler: nothing that needs one, and no discards
 * (MADV_DONTNEED on a private file mapping brings back the file's bytes,
 * not the zeros a uffd handler must serve). */
static bool backend_file_ok(struct run_opts *o, const struct run_cli *cli)
{
	const char *bad = o->socket ? "--socket"
		: o->protocol != PROTO_MAINLINE ? "--protocol secret-hiding"
		: cli->guest.memory != GUEST_ANON ? "--memory memfd"
		: cli->guest.page_size != 4096 && !o->backend_populated ? "--page-size 2m"
		: cli->guest.reg_mode ? "--register"
		: cli->close_given ? "--close-after-handshake"
		: cli->keep_given ? "--keep-socket"
		: o->balloon ? "--balloon" : NULL;

	if (bad) {
		msg("--backend file: %s does not apply (guest memory is the snapshot file itself)",
		    bad);
		return false;
	}
	return true;
}

/* What the Firecracker version played decides unless an option says
 * otherwise: the socket's fate after the handshake, the REMOVE feature and
 * how the balloon discards. Secret hiding needs its socket (the fault
 * requests travel on it), whatever the version. */
static bool resolve_version(struct run_opts *o, const struct run_cli *cli)
{
	bool sh = o->protocol == PROTO_SECRET_HIDING, old = o->fc < FC_1_12;
	bool memfd = o->guest.memory == GUEST_MEMFD;

	if (cli->close_given && cli->keep_given) {
		msg("--close-after-handshake and --keep-socket contradict each other");
		return false;
	}
	if (sh && cli->close_given) {
		msg("--close-after-handshake does not work with --protocol secret-hiding: its "
		    "fault requests and replies travel on the handshake socket");
		return false;
	}
	o->close_socket = cli->close_given || (!cli->keep_given && !sh && old);
	o->guest.event_remove = !old || o->balloon > 0;
	o->advice = cli->advice >= 0 ? (enum advice)cli->advice
		  : memfd ? ADVICE_REMOVE
		  : old ? ADVICE_REMAP : ADVICE_DONTNEED;
	if (o->advice == ADVICE_REMOVE && !memfd) {
		msg("--balloon-advice remove needs --memory memfd (MADV_REMOVE works on shared memory only)");
		return false;
	}
	if (o->advice == ADVICE_REMAP && memfd) {
		msg("--balloon-advice remap needs --memory anon (an anonymous mapping over a memfd "
		    "range would hide the memfd from the mapping)");
		return false;
	}
	return true;
}

/* Defaults that depend on other options, and the combinations refused. */
static bool resolve(struct run_opts *o, struct run_cli *cli)
{
	bool sh = o->protocol == PROTO_SECRET_HIDING;
	uint64_t size;

	if ((!o->socket && !o->backend_file) || !o->snapshot) {
		msg("run: %s is required", !o->snapshot ? "--snapshot FILE" : "--socket PATH");
		return false;
	}
	if (o->backend_file && !backend_file_ok(o, cli))
		return false;
	if (!o->expect)
		o->expect = o->snapshot;
	if (!file_size("--snapshot", o->snapshot, &size) ||
	    !file_size("--expect", o->expect, &size))
		return false;
	if (!guest_cli_resolve(&cli->guest, size, "--expect/--snapshot file", &o->guest))
		return false;
	o->guest.bitmap = sh;
	if (o->backend_file) {
		o->guest.file = o->snapshot;
		o->guest.populate = o->backend_populated;
	}
	if (sh && o->guest.memory != GUEST_MEMFD) {
		msg("--protocol secret-hiding needs --memory memfd (the handler fills the guest memfd)");
		return false;
	}
	if (!sh && (cli->stage2_given || o->has_bad || o->reset_socket)) {
		msg("%s needs --protocol secret-hiding",
		    o->has_bad ? "--bad-request" : o->reset_socket ? "--reset-socket" : "--stage2");
		return false;
	}
	if (sh && !cli->stage2_given)
		o->stage2_frac = 0.5;
	if (!resolve_version(o, cli))
		return false;
	if (o->plan.kind == PAT_TRACE && cli->touch) {
		msg("--touch %s: not used with --pattern trace (the trace says what to touch)",
		    cli->touch);
		return false;
	}
	/* A valid page offset would make real replies look like the bad one's. */
	if (o->has_bad && o->bad_offset < o->guest.mem_size &&
	    o->bad_offset % o->guest.page_size == 0) {
		msg("--bad-request %" PRIu64 ": a valid page offset; use one beyond guest memory "
		    "(%" PRIu64 " bytes) or not page-aligned", o->bad_offset, o->guest.mem_size);
		return false;
	}
	o->plan.npages = o->guest.mem_size / o->guest.page_size;
	o->plan.seed = o->seed;
	o->plan.same = cli->share >= 0 ? cli->share == 1 : sh && o->stage2_frac > 0;
	return resolve_touch(o, cli->touch, o->plan.npages, o->guest.page_size);
}

int run_parse(int argc, char **argv, struct run_opts *o)
{
	struct run_cli cli = { .share = -1, .advice = -1 };
	int c;

	*o = (struct run_opts){ .fc = FC_1_12, .split = 1, .seed = 1, .timeout_s = 30,
				.plan = { .kind = PAT_RANDOM, .nvcpus = 2 } };
	guest_cli_defaults(&cli.guest);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", run_long, NULL)) != -1) {
		if (c == OPT_HELP || c == 'h') {
			fputs(run_usage, stdout);
			return -1;
		}
		if (c == '?' || c == ':') {
			bad_option("run", argv);
			return EXIT_SETUP;
		}
		if (!run_option(o, &cli, c, optarg))
			return EXIT_SETUP;
	}
	if (optind < argc) {
		msg("run: unexpected argument '%s'", argv[optind]);
		return EXIT_SETUP;
	}
	return resolve(o, &cli) ? 0 : EXIT_SETUP;
}
