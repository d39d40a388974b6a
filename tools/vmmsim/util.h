/* util.h - small helpers shared by every vmmsim file: exit codes, fatal
 * errors, option-value parsing, time, and a fast seeded PRNG. */
#ifndef VMMSIM_UTIL_H
#define VMMSIM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes, the same for every subcommand (tests match on them). */
enum {
	EXIT_OK = 0,
	EXIT_WRONG = 1,    /* wrong byte, protocol violation, handler went away */
	EXIT_SETUP = 2,    /* bad option, or a syscall failed while setting up */
	EXIT_HANG = 3,     /* watchdog: the handler made no progress */
	EXIT_ACCEPTED = 4, /* handshake: the handler kept a bad handshake open */
	EXIT_SKIP = 77,    /* the kernel cannot run this case (no huge pages) */
};

/* Prints "vmmsim: <message>" on stderr. */
void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fatal error from any thread: prints "vmmsim: <message>" on stderr and
 * "verify: FAILED <message>" on stdout, then _exit(code) at once (no
 * cleanup: other threads may be blocked in faults that never complete).
 * Only the first caller prints; later callers block until the exit. */
_Noreturn void fail_now(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* calloc that treats exhaustion as a setup error (exit 2). */
void *xcalloc(size_t n, size_t size);

/* Option values. Each prints "vmmsim: OPT VALUE: <why>" and returns false
 * when the value is not acceptable. */
bool parse_size(const char *opt, const char *s, uint64_t *out);   /* 64K, 2M, 1G */
bool parse_u64(const char *opt, const char *s, uint64_t *out);
bool parse_uint(const char *opt, const char *s, unsigned lo, unsigned hi, unsigned *out);
bool parse_double(const char *opt, const char *s, double lo, double hi, double *out);

/* For getopt's '?' (opterr = 0): names the offending argument. */
void bad_option(const char *cmd, char **argv);

uint64_t now_ns(void);
void sleep_ns(uint64_t ns);

/* Fills/reads exactly len bytes (retrying short transfers and EINTR).
 * Return 0 or -errno; a read hitting end of file returns -EIO. */
int pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
int pread_full(int fd, void *buf, size_t len, uint64_t off);

/* splitmix64: one multiply-xorshift round per output, ~1 ns, good enough
 * statistics for choosing pages and filling snapshot bytes. */
static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

struct rng {
	uint64_t s;
};

/* Independent streams from one --seed: stream numbers name the consumer
 * (vCPU id, balloon, ...), so adding a consumer does not shift the others. */
static inline struct rng rng_make(uint64_t seed, uint64_t stream)
{
	return (struct rng){ mix64(seed ^ mix64(stream + 0x6a09e667f3bcc909ULL)) };
}

static inline uint64_t rng_next(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ULL;
	return mix64(r->s);
}

/* Uniform in [0, n) without division (Lemire's multiply-shift). */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* Uniform in [0, 1). */
static inline double rng_unit(struct rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

#endif
