/* expect.c - see expect.h. */
#include "expect.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; newer than some libc headers */
#endif

/* Written pages hold this value xor (page << 20) xor generation in every
 * u64: easy to recognise in a hex dump, distinct per page and generation. */
#define PATTERN_MAGIC 0x5757000000000000ULL

static uint64_t pattern_word(uint64_t page, uint32_t gen)
{
	return PATTERN_MAGIC ^ (page << 20) ^ gen;
}

static int open_expect(struct expect *e, const struct guest *g, const char *path,
		       bool prefault)
{
	struct stat st;

	memset(e, 0, sizeof(*e));
	e->guest = g;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		msg("--expect %s: %m", path);
		return -1;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < g->size) {
		msg("--expect %s: must be a raw snapshot file of at least %" PRIu64
		    " bytes (guest memory size), it has %lld", path, g->size, (long long)st.st_size);
		close(fd);
		return -1;
	}
	e->file_len = g->size;
	void *p = mmap(NULL, e->file_len, PROT_READ, MAP_SHARED, fd, 0);

	close(fd);
	if (p == MAP_FAILED) {
		msg("--expect %s: mmap: %m", path);
		return -1;
	}
	/* --expect-prefault: every page mapped now, so that verifying takes
	 * no page fault during the workload (a benchmark counts the guest's
	 * faults only). Cheap for a file already cached (e.g. on tmpfs). */
	if (prefault && madvise(p, e->file_len, MADV_POPULATE_READ)) {
		msg("--expect %s: MADV_POPULATE_READ: %m", path);
		munmap(p, e->file_len);
		return -1;
	}
	e->file = p;
	/* Default advice on purpose: MADV_RANDOM would stop fault-around too and
	 * double the cost of each compare (measured 6 vs 3 us/page on the
	 * project machines). We read a page only after the handler has served
	 * it, so its cache is normally warm already; no MADV_WILLNEED, which
	 * would warm the snapshot ahead of the handler and flatter a cold run. */
	e->state = xcalloc(g->npages, sizeof(*e->state));
	e->flags = xcalloc(g->npages, sizeof(*e->flags));
	e->zero = xcalloc(1, g->page_size);
	if (prefault) {
		/* The bookkeeping too. */
		memset(e->state, 0, g->npages * sizeof(*e->state));
		memset((void *)e->flags, 0, g->npages * sizeof(*e->flags));
	}

	pthread_rwlockattr_t at;

	/* Writer preference: a balloon discard must not starve behind a stream
	 * of vCPU reads on the same stripe. */
	pthread_rwlockattr_init(&at);
	pthread_rwlockattr_setkind_np(&at, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (int i = 0; i < EXPECT_STRIPES; i++)
		pthread_rwlock_init(&e->lock[i], &at);
	pthread_rwlockattr_destroy(&at);
	return 0;
}

int expect_open(struct expect *e, const struct guest *g, const char *path)
{
	return open_expect(e, g, path, false);
}

int expect_open_prefault(struct expect *e, const struct guest *g, const char *path)
{
	return open_expect(e, g, path, true);
}

void expect_close(struct expect *e)
{
	if (!e->state)
		return;
	for (int i = 0; i < EXPECT_STRIPES; i++)
		pthread_rwlock_destroy(&e->lock[i]);
	munmap((void *)e->file, e->file_len);
	free(e->state);
	free((void *)e->flags);
	free(e->zero);
	memset(e, 0, sizeof(*e));
}

void expect_rdlock(struct expect *e, uint64_t page)
{
	pthread_rwlock_rdlock(expect_lock_of(e, page));
}

void expect_wrlock(struct expect *e, uint64_t page)
{
	pthread_rwlock_wrlock(expect_lock_of(e, page));
}

void expect_unlock(struct expect *e, uint64_t page)
{
	pthread_rwlock_unlock(expect_lock_of(e, page));
}

/* A run of n <= EXPECT_STRIPES consecutive pages covers stripes
 * first%S .. (first+n-1)%S, possibly wrapping: lock from stripe 0 upwards. */
static void range_stripes(uint64_t first, uint64_t n, unsigned *lo, unsigned *hi, bool *wraps)
{
	*lo = (unsigned)(first % EXPECT_STRIPES);
	*hi = (unsigned)((first + n - 1) % EXPECT_STRIPES);
	*wraps = *hi < *lo;
}

void expect_range_wrlock(struct expect *e, uint64_t first, uint64_t n)
{
	unsigned lo, hi;
	bool wraps;

	range_stripes(first, n, &lo, &hi, &wraps);
	if (wraps) {
		for (unsigned s = 0; s <= hi; s++)
			pthread_rwlock_wrlock(&e->lock[s]);
		for (unsigned s = lo; s < EXPECT_STRIPES; s++)
			pthread_rwlock_wrlock(&e->lock[s]);
	} else {
		for (unsigned s = lo; s <= hi; s++)
			pthread_rwlock_wrlock(&e->lock[s]);
	}
}

void expect_range_unlock(struct expect *e, uint64_t first, uint64_t n)
{
	unsigned lo, hi;
	bool wraps;

	range_stripes(first, n, &lo, &hi, &wraps);
	for (unsigned s = 0; s < EXPECT_STRIPES; s++)
		if (wraps ? (s <= hi || s >= lo) : (s >= lo && s <= hi))
			pthread_rwlock_unlock(&e->lock[s]);
}

static void describe_state(uint32_t st, char *buf, size_t len)
{
	switch (st & 3) {
	case PAGE_SNAPSHOT: snprintf(buf, len, "snapshot"); break;
	case PAGE_ZERO: snprintf(buf, len, "zero after discard"); break;
	default: snprintf(buf, len, "written by the guest, generation %u", st >> 2); break;
	}
}

/* Cold path: name the first wrong byte and how much of the page differs. */
static _Noreturn void report_mismatch(const struct expect *e, uint64_t page, const uint8_t *data,
				      const uint8_t *want, uint64_t pattern, const char *path)
{
	uint64_t ps = e->guest->page_size, first = ps, ndiff = 0;
	uint8_t exp_b = 0, got_b = 0;
	char st[64];

	for (uint64_t b = 0; b < ps; b++) {
		uint8_t w = want ? want[b] : (uint8_t)(pattern >> (8 * (b % 8)));

		if (data[b] != w) {
			if (first == ps) {
				first = b;
				exp_b = w;
				got_b = data[b];
			}
			ndiff++;
		}
	}
	describe_state(e->state[page], st, sizeof(st));
	fail_now(EXIT_WRONG,
		 "wrong byte at page %" PRIu64 " (region %u, snapshot offset 0x%" PRIx64
		 ", byte %" PRIu64 "): expected 0x%02x got 0x%02x (state: %s; read via %s; %" PRIu64
		 " of %" PRIu64 " bytes differ)",
		 page, guest_region_of(e->guest, page), guest_page_offset(e->guest, page), first,
		 exp_b, got_b, st, path, ndiff, ps);
}

/* Little-endian u64 compare without a scratch buffer; pages are 8-byte
 * aligned both in the mapping and in our pread buffers. */
static bool matches_pattern(const uint8_t *data, uint64_t len, uint64_t v)
{
	const uint64_t *w = (const uint64_t *)(const void *)data;

	for (uint64_t i = 0; i < len / 8; i++)
		if (w[i] != v)
			return false;
	return true;
}

void expect_verify(const struct expect *e, uint64_t page, const uint8_t *data, const char *path)
{
	uint64_t ps = e->guest->page_size;
	uint32_t st = e->state[page];
	const uint8_t *want;

	switch (st & 3) {
	case PAGE_SNAPSHOT: want = e->file + guest_page_offset(e->guest, page); break;
	case PAGE_ZERO: want = e->zero; break;
	default: {
		uint64_t v = pattern_word(page, st >> 2);

		if (!matches_pattern(data, ps, v))
			report_mismatch(e, page, data, NULL, v, path);
		return;
	}
	}
	if (memcmp(data, want, ps))
		report_mismatch(e, page, data, want, 0, path);
}

void expect_write_pattern(struct expect *e, uint64_t page)
{
	uint32_t gen = (e->state[page] >> 2) + 1;
	uint64_t *w = (uint64_t *)(void *)guest_page_addr(e->guest, page);
	uint64_t v = pattern_word(page, gen);

	for (uint64_t i = 0; i < e->guest->page_size / 8; i++)
		w[i] = v;
	e->state[page] = PAGE_WRITTEN | gen << 2;
}
