/* handshake_cmd.c - `vmmsim handshake`: sends an arbitrary (possibly
 * malformed) handshake over real, registered guest memory and reports
 * whether the handler refused it (closed the connection) or kept it. */
#include "cmd.h"
#include "expect.h"
#include "guest_cli.h"
#include "handshake.h"
#include "watchdog.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

const char handshake_usage[] =
	"usage: vmmsim handshake --socket PATH (--json STRING | --json-file F) [options]\n"
	"Sends the JSON bytes verbatim (@BASE@ / @BASE1@ = decimal host address of\n"
	"region 0 / 1) with the chosen fds over real registered guest memory, then\n"
	"waits for the handler to close the connection.\n"
	"  --socket PATH         the handler's Unix socket\n"
	"  --json STRING         handshake payload\n"
	"  --json-file F         handshake payload read from a file\n"
	"  --fds uffd|uffd,memfd,bitmap|none|devnull|devnull3\n"
	"                        SCM_RIGHTS to attach (default uffd); devnull = one\n"
	"                        /dev/null fd instead of the uffd, devnull3 = three\n"
	GUEST_CLI_USAGE
	"  --snapshot FILE       raw snapshot: default --mem-size (else 16M), and the\n"
	"                        --then-touch data\n"
	"  --eof auto|yes|no     half-close (shutdown SHUT_WR) after sending, like a VMM\n"
	"                        that died mid-send; auto = only if the JSON is an\n"
	"                        incomplete prefix (default auto)\n"
	"  --wait S              how long to wait for the close (default 3)\n"
	"  --then-touch N        if accepted, read and verify the first N pages of\n"
	"                        region 0 against --snapshot\n"
	"  --timeout S           watchdog for --then-touch (default 30)\n"
	"Prints \"refused: connection closed by handler\" (exit 0; exit 1 with\n"
	"--then-touch) or \"accepted: connection still open\" (exit 4; with\n"
	"--then-touch exit 0 if the pages verified).\n";

enum {
	OPT_SOCKET = OPT_GUEST_LAST + 1, OPT_JSON, OPT_JSON_FILE, OPT_FDS, OPT_SNAPSHOT,
	OPT_WAIT, OPT_THEN_TOUCH, OPT_TIMEOUT, OPT_EOF, OPT_HELP,
};

/* Guest memory when neither --mem-size nor --snapshot says: enough for the
 * bad-input tests' regions, small enough to cost nothing. */
#define DEFAULT_MEM_SIZE (16ULL << 20)

enum eof_choice { EOF_AUTO, EOF_YES, EOF_NO };

enum fds_choice { FDS_UFFD, FDS_THREE, FDS_NONE, FDS_DEVNULL, FDS_DEVNULL3 };

struct hs_opts {
	struct guest_cli guest;
	const char *socket, *json, *json_file, *snapshot;
	enum fds_choice fds;
	enum eof_choice eof;
	double wait_s, timeout_s;
	uint64_t then_touch;
};

static bool parse_fds(struct hs_opts *o, const char *arg)
{
	static const char *const names[] = { "uffd", "uffd,memfd,bitmap", "none", "devnull",
					     "devnull3" };

	for (int i = 0; i < 5; i++) {
		if (!strcmp(arg, names[i])) {
			o->fds = (enum fds_choice)i;
			return true;
		}
	}
	msg("--fds %s: must be uffd, uffd,memfd,bitmap, none, devnull or devnull3", arg);
	return false;
}

static bool hs_option(struct hs_opts *o, int c, const char *arg)
{
	int g = guest_cli_option(&o->guest, c, arg);

	if (g)
		return g > 0;
	switch (c) {
	case OPT_SOCKET: o->socket = arg; return true;
	case OPT_JSON: o->json = arg; return true;
	case OPT_JSON_FILE: o->json_file = arg; return true;
	case OPT_FDS: return parse_fds(o, arg);
	case OPT_SNAPSHOT: o->snapshot = arg; return true;
	case OPT_WAIT: return parse_double("--wait", arg, 0, 1e6, &o->wait_s);
	case OPT_THEN_TOUCH: return parse_u64("--then-touch", arg, &o->then_touch);
	case OPT_TIMEOUT: return parse_double("--timeout", arg, 0.1, 1e6, &o->timeout_s);
	case OPT_EOF:
		if (!strcmp(arg, "auto"))
			o->eof = EOF_AUTO;
		else if (!strcmp(arg, "yes"))
			o->eof = EOF_YES;
		else if (!strcmp(arg, "no"))
			o->eof = EOF_NO;
		else {
			msg("--eof %s: must be auto, yes or no", arg);
			return false;
		}
		return true;
	}
	return false;
}

static int hs_parse(int argc, char **argv, struct hs_opts *o)
{
	static const struct option lo[] = {
		GUEST_CLI_LONG_OPTIONS,
		{ "socket", required_argument, 0, OPT_SOCKET },
		{ "json", required_argument, 0, OPT_JSON },
		{ "json-file", required_argument, 0, OPT_JSON_FILE },
		{ "fds", required_argument, 0, OPT_FDS },
		{ "snapshot", required_argument, 0, OPT_SNAPSHOT },
		{ "wait", required_argument, 0, OPT_WAIT },
		{ "then-touch", required_argument, 0, OPT_THEN_TOUCH },
		{ "timeout", required_argument, 0, OPT_TIMEOUT },
		{ "eof", required_argument, 0, OPT_EOF },
		{ "help", no_argument, 0, OPT_HELP },
		{ 0, 0, 0, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	guest_cli_defaults(&o->guest);
	o->wait_s = 3;
	o->timeout_s = 30;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (c == OPT_HELP || c == 'h') {
			fputs(handshake_usage, stdout);
			return -1;
		}
		if (c == '?' || c == ':') {
			bad_option("handshake", argv);
			return EXIT_SETUP;
		}
		if (!hs_option(o, c, optarg))
			return EXIT_SETUP;
	}
	if (optind < argc) {
		msg("handshake: unexpected argument '%s'", argv[optind]);
		return EXIT_SETUP;
	}
	if (!o->socket || (!o->json == !o->json_file)) {
		msg("handshake: %s", !o->socket ? "--socket PATH is required"
						: "give exactly one of --json and --json-file");
		return EXIT_SETUP;
	}
	if (o->then_touch && !o->snapshot) {
		msg("--then-touch needs --snapshot FILE (the bytes to verify against)");
		return EXIT_SETUP;
	}
	return 0;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t cap = 0;

	*len = 0;
	if (!f) {
		msg("--json-file %s: %m", path);
		return NULL;
	}
	for (;;) {
		if (*len == cap) {
			char *nb = realloc(buf, cap ? cap * 2 : 4096);

			if (!nb)
				fail_now(EXIT_SETUP, "out of memory reading %s", path);
			buf = nb;
			cap = cap ? cap * 2 : 4096;
		}
		size_t n = fread(buf + *len, 1, cap - *len, f);

		*len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		msg("--json-file %s: read error", path);
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

/* Replaces every @BASE@ / @BASE1@ with region 0 / 1's host address. */
static char *substitute(const char *in, size_t len, const struct guest *g, size_t *out_len)
{
	/* Each 6-byte token grows to at most 20 digits. */
	char *out = xcalloc(len + (len / 6 + 1) * 20 + 1, 1);
	size_t o = 0;

	for (size_t i = 0; i < len;) {
		bool b0 = len - i >= 6 && !memcmp(in + i, "@BASE@", 6);
		bool b1 = len - i >= 7 && !memcmp(in + i, "@BASE1@", 7);

		if (b1 && g->nregions < 2) {
			msg("--json uses @BASE1@ but there is only one region (add --regions 2)");
			free(out);
			return NULL;
		}
		if (b0 || b1) {
			o += (size_t)sprintf(out + o, "%" PRIuPTR, (uintptr_t)g->region[b1].base);
			i += b1 ? 7 : 6;
		} else {
			out[o++] = in[i++];
		}
	}
	*out_len = o;
	return out;
}

static unsigned pick_fds(const struct hs_opts *o, const struct guest *g, int *fds)
{
	switch (o->fds) {
	case FDS_UFFD: fds[0] = g->uffd; return 1;
	case FDS_THREE:
		fds[0] = g->uffd;
		fds[1] = g->memfd;
		fds[2] = g->bitmap_fd;
		return 3;
	case FDS_NONE: return 0;
	case FDS_DEVNULL:
	case FDS_DEVNULL3: {
		unsigned n = o->fds == FDS_DEVNULL ? 1 : 3;

		for (unsigned i = 0; i < n; i++) {
			fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
			if (fds[i] < 0)
				fail_now(EXIT_SETUP, "open /dev/null: %m");
		}
		return n;
	}
	}
	return 0;
}

/* True if json is the beginning of a JSON value that has not ended: a live
 * VMM never stops there, only one that died mid-send. */
static bool json_incomplete(const char *json, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o;
	bool more;

	if (!tok)
		fail_now(EXIT_SETUP, "out of memory");
	o = json_tokener_parse_ex(tok, json, (int)len);
	more = json_tokener_get_error(tok) == json_tokener_continue;
	json_object_put(o);
	json_tokener_free(tok);
	return more;
}

/* Models the VMM's side going quiet for good: the handler reads EOF after
 * the bytes but can still close its end, which we watch for. */
static int maybe_half_close(const struct hs_opts *o, int sock, const char *json, size_t len)
{
	if (o->eof == EOF_NO || (o->eof == EOF_AUTO && !json_incomplete(json, len)))
		return 0;
	if (o->eof == EOF_AUTO)
		msg("note: the JSON is incomplete: half-closing like a VMM that died mid-send");
	if (shutdown(sock, SHUT_WR)) {
		msg("shutdown(SHUT_WR) of the handshake socket: %m");
		return -1;
	}
	return 0;
}

/* True if the handler closed (or reset) the connection within wait_s.
 * Anything it sends meanwhile is shown and otherwise ignored. */
static bool wait_for_close(int sock, double wait_s)
{
	uint64_t deadline = now_ns() + (uint64_t)(wait_s * 1e9);
	char buf[512];

	for (;;) {
		uint64_t now = now_ns();
		int ms = now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
		struct pollfd p = { sock, POLLIN | POLLRDHUP, 0 };
		int n = poll(&p, 1, ms);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		ssize_t r = recv(sock, buf, sizeof(buf), MSG_DONTWAIT);

		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			return true;
		if (r > 0)
			msg("note: handler sent %zd bytes: %.*s", r, (int)r, buf);
	}
}

static int touch_pages(const struct hs_opts *o, const struct guest *g)
{
	const struct guest_region *r = &g->region[0];
	uint64_t n = o->then_touch;
	_Atomic uint64_t progress = 0;
	struct expect e;
	struct watchdog wd;

	if (n > r->npages) {
		msg("--then-touch %" PRIu64 ": region 0 has only %" PRIu64 " pages", n, r->npages);
		return EXIT_SETUP;
	}
	if (expect_open(&e, g, o->snapshot))
		return EXIT_SETUP;
	if (watchdog_start(&wd, o->timeout_s, &progress)) {
		expect_close(&e);
		return EXIT_SETUP;
	}
	for (uint64_t p = 0; p < n; p++) {
		(void)*(volatile uint8_t *)(r->base + p * g->page_size);
		expect_verify(&e, p, r->base + p * g->page_size, "mapping");
		atomic_fetch_add(&progress, 1);
	}
	watchdog_stop(&wd);
	expect_close(&e);
	printf("touched %" PRIu64 " pages: ok\n", n);
	return EXIT_OK;
}

static int exchange(const struct hs_opts *o, const struct guest *g, const char *json, size_t len)
{
	int fds[HS_MAX_FDS], sock = hs_connect(o->socket), rc;
	unsigned nfds = pick_fds(o, g, fds);

	if (sock < 0 || hs_send(sock, json, len, fds, nfds, 1) ||
	    maybe_half_close(o, sock, json, len)) {
		rc = EXIT_SETUP;
	} else if (wait_for_close(sock, o->wait_s)) {
		puts("refused: connection closed by handler");
		rc = o->then_touch ? EXIT_WRONG : EXIT_OK;
	} else {
		puts("accepted: connection still open");
		fflush(stdout);
		rc = o->then_touch ? touch_pages(o, g) : EXIT_ACCEPTED;
	}
	for (unsigned i = 0; o->fds >= FDS_DEVNULL && i < nfds; i++)
		close(fds[i]);
	if (sock >= 0)
		close(sock);
	return rc;
}

int cmd_handshake(int argc, char **argv)
{
	struct hs_opts o;
	struct guest_config gc;
	struct guest g;
	struct stat st = { 0 };
	size_t raw_len, len;
	int rc = hs_parse(argc, argv, &o);

	if (rc)
		return rc < 0 ? EXIT_OK : rc;
	if (o.snapshot && stat(o.snapshot, &st)) {
		msg("--snapshot %s: %m", o.snapshot);
		return EXIT_SETUP;
	}
	if (!o.snapshot && !o.guest.mem_size)
		o.guest.mem_size = DEFAULT_MEM_SIZE;
	if (!guest_cli_resolve(&o.guest, (uint64_t)st.st_size, "--snapshot FILE", &gc))
		return EXIT_SETUP;
	gc.bitmap = o.fds == FDS_THREE;
	if (gc.bitmap && gc.memory != GUEST_MEMFD) {
		msg("--fds uffd,memfd,bitmap needs --memory memfd");
		return EXIT_SETUP;
	}
	char *raw = o.json_file ? read_file(o.json_file, &raw_len) : strdup(o.json);

	if (!raw)
		return EXIT_SETUP;
	raw_len = o.json_file ? raw_len : strlen(raw);
	if (!raw_len) {
		msg("handshake: the JSON is empty (a stream socket cannot carry fds without bytes)");
		free(raw);
		return EXIT_SETUP;
	}
	rc = guest_open(&g, &gc);
	if (rc) {
		free(raw);
		return rc;
	}
	char *json = substitute(raw, raw_len, &g, &len);

	rc = json ? exchange(&o, &g, json, len) : EXIT_SETUP;
	free(json);
	free(raw);
	guest_close(&g);
	return rc;
}
