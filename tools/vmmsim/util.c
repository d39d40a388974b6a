/* util.c - see util.h. */
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void msg(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vmmsim: %s\n", line);
}

/* The one piece of process-wide state: a fatal error can be raised by any
 * thread at any time and must be reported exactly once. */
static atomic_int failing;

_Noreturn void fail_now(int code, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (atomic_exchange(&failing, 1)) {
		for (;;)
			pause();
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fflush(stdout);
	dprintf(STDERR_FILENO, "vmmsim: %s\n", line);
	dprintf(STDOUT_FILENO, "verify: FAILED %s\n", line);
	_exit(code);
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		fail_now(EXIT_SETUP, "out of memory allocating %zu x %zu bytes", n, size);
	return p;
}

bool parse_size(const char *opt, const char *s, uint64_t *out)
{
	char *end;
	uint64_t mult = 1, v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || errno || *s == '-')
		goto bad;
	switch (*end) {
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	case 't': case 'T': mult = 1ULL << 40; end++; break;
	}
	/* Accept the common spellings 64K, 64KB, 64KiB. */
	if (mult > 1 && (!strcmp(end, "B") || !strcmp(end, "iB")))
		end += strlen(end);
	if (*end || (v && mult > UINT64_MAX / v))
		goto bad;
	*out = v * mult;
	return true;
bad:
	msg("%s %s: not a size (use bytes or a K/M/G suffix, e.g. 4096, 64K, 256M, 2G)",
	    opt, s);
	return false;
}

bool parse_u64(const char *opt, const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	if (end == s || *end || errno || *s == '-') {
		msg("%s %s: not a non-negative integer", opt, s);
		return false;
	}
	return true;
}

bool parse_uint(const char *opt, const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	uint64_t v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || *end || errno || *s == '-' || v < lo || v > hi) {
		msg("%s %s: must be %u..%u", opt, s, lo, hi);
		return false;
	}
	*out = (unsigned)v;
	return true;
}

bool parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) {
		msg("%s %s: must be a number in %g..%g", opt, s, lo, hi);
		return false;
	}
	*out = v;
	return true;
}

void bad_option(const char *cmd, char **argv)
{
	msg("%s: unknown option or missing value: %s (try vmmsim %s --help)", cmd,
	    argv[optind - 1], cmd);
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL),
			       .tv_nsec = (long)(ns % 1000000000ULL) };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}
