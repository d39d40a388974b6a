/* snapshot_gen.c - see snapshot_gen.h. */
#include "snapshot_gen.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Stream numbers keep the layout and the page bytes independent. */
#define LAYOUT_STREAM 0x4c41594fULL /* "LAYO" */
#define MAX_DATA_RUN 64             /* non-zero run length: 1..64 pages */
/* Mean of a uniform 1..MAX_DATA_RUN run length. */
#define MEAN_DATA_RUN ((1.0 + MAX_DATA_RUN) / 2.0)
/* 16 MiB per pwrite: big enough that syscalls cost nothing, small enough
 * to stay in L3-ish territory between generation and write. */
#define WRITE_CHUNK_PAGES 4096u

static int push_run(struct snapgen *g, uint64_t *cap, uint64_t start, uint64_t len)
{
	if (g->nruns == *cap) {
		uint64_t ncap = *cap ? *cap * 2 : 1024;
		struct snapgen_zero_run *n = realloc(g->runs, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		g->runs = n;
		*cap = ncap;
	}
	g->runs[g->nruns++] = (struct snapgen_zero_run){ start, len };
	g->zero_pages += len;
	return 0;
}

/* Alternates a data run (uniform 1..64) and a zero run whose mean length
 * makes zero pages about zero_fraction of the total:
 * zmean / (zmean + MEAN_DATA_RUN) = f. */
static int build_layout(struct snapgen *g)
{
	struct rng r = rng_make(g->seed, LAYOUT_STREAM);
	double f = g->zero_fraction;
	uint64_t cap = 0, p = 0;

	if (f >= 1.0)
		return g->npages ? push_run(g, &cap, 0, g->npages) : 0;
	if (f <= 0.0)
		return 0;
	double zmean = MEAN_DATA_RUN * f / (1.0 - f);

	while (p < g->npages) {
		p += 1 + rng_below(&r, MAX_DATA_RUN);
		if (p >= g->npages)
			break;
		/* Uniform in [0, 2*zmean], rounded: mean zmean; 0 merges runs. */
		uint64_t z = (uint64_t)(rng_unit(&r) * 2.0 * zmean + 0.5);

		if (!z)
			continue;
		if (z > g->npages - p)
			z = g->npages - p;
		int rc = push_run(g, &cap, p, z);

		if (rc)
			return rc;
		p += z;
	}
	return 0;
}

int snapgen_init(struct snapgen *g, uint64_t seed, double zero_fraction, uint64_t size)
{
	memset(g, 0, sizeof(*g));
	if (size % SNAPGEN_PAGE_SIZE || !(zero_fraction >= 0.0 && zero_fraction <= 1.0))
		return -EINVAL;
	g->seed = seed;
	g->zero_fraction = zero_fraction;
	g->npages = size / SNAPGEN_PAGE_SIZE;
	int rc = build_layout(g);

	if (rc)
		snapgen_fini(g);
	return rc;
}

void snapgen_fini(struct snapgen *g)
{
	free(g->runs);
	memset(g, 0, sizeof(*g));
}

/* Index of the last run starting at or before page, or nruns if none. */
static uint64_t run_at_or_before(const struct snapgen *g, uint64_t page)
{
	uint64_t lo = 0, hi = g->nruns;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (g->runs[mid].start <= page)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? lo - 1 : g->nruns;
}

bool snapgen_page_is_zero(const struct snapgen *g, uint64_t page)
{
	uint64_t i = run_at_or_before(g, page);

	return i < g->nruns && page < g->runs[i].start + g->runs[i].len;
}

static void fill_random(uint64_t *w, unsigned nwords, struct rng *r)
{
	for (unsigned i = 0; i < nwords; i++)
		w[i] = rng_next(r);
}

/* The four kinds of non-zero page, chosen per page by its hash. Shares are
 * rough guesses at a booted Linux guest: mostly incompressible heap/page
 * cache, a good part half-filled or patterned, some pointer-sparse. */
static void fill_nonzero(uint64_t *w, uint64_t seed, uint64_t page)
{
	const unsigned nwords = SNAPGEN_PAGE_SIZE / 8;
	uint64_t h = mix64(seed ^ mix64(page ^ 0x5041474553ULL));
	struct rng r = { h };
	unsigned kind = (unsigned)(h % 100);

	if (kind < 45) {
		fill_random(w, nwords, &r);
	} else if (kind < 70) {
		/* Random prefix of 1..15 x 256 bytes, zeros after. */
		unsigned n = (unsigned)(1 + rng_below(&r, 15)) * 32;

		fill_random(w, n, &r);
		memset(w + n, 0, (nwords - n) * 8);
	} else if (kind < 85) {
		/* One random 64-byte line repeated: compresses ~64:1. */
		fill_random(w, 8, &r);
		for (unsigned i = 8; i < nwords; i++)
			w[i] = w[i - 8];
	} else {
		/* Sparse kernel-pointer-like words, one in eight. */
		for (unsigned i = 0; i < nwords; i++) {
			uint64_t v = rng_next(&r);

			w[i] = (v & 7) ? 0 : 0xffff888000000000ULL | (v >> 28);
		}
	}
	/* Never all zero, so the zero fraction is exactly the hole fraction. */
	((uint8_t *)w)[0] |= 1;
}

void snapgen_page(const struct snapgen *g, uint64_t page, void *buf)
{
	if (snapgen_page_is_zero(g, page))
		memset(buf, 0, SNAPGEN_PAGE_SIZE);
	else
		fill_nonzero(buf, g->seed, page);
}

/* Generates pages [first, first+n) into buf; writes their zero flags to
 * zero[] and advances *run (a cursor into g->runs) instead of searching. */
static void fill_chunk(const struct snapgen *g, uint64_t first, uint64_t n, uint8_t *buf,
		       bool *zero, uint64_t *run)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = first + i;

		while (*run < g->nruns && g->runs[*run].start + g->runs[*run].len <= p)
			(*run)++;
		zero[i] = *run < g->nruns && g->runs[*run].start <= p;
		if (zero[i])
			memset(buf + i * SNAPGEN_PAGE_SIZE, 0, SNAPGEN_PAGE_SIZE);
		else
			fill_nonzero((uint64_t *)(buf + i * SNAPGEN_PAGE_SIZE), g->seed, p);
	}
}

/* Writes each maximal span of non-zero pages of the chunk with one pwrite,
 * leaving zero pages as holes. */
static int write_sparse(int fd, const uint8_t *buf, const bool *zero, uint64_t first, uint64_t n)
{
	uint64_t i = 0;

	while (i < n) {
		if (zero[i]) {
			i++;
			continue;
		}
		uint64_t j = i;

		while (j < n && !zero[j])
			j++;
		int rc = pwrite_full(fd, buf + i * SNAPGEN_PAGE_SIZE, (j - i) * SNAPGEN_PAGE_SIZE,
				     (first + i) * SNAPGEN_PAGE_SIZE);
		if (rc)
			return rc;
		i = j;
	}
	return 0;
}

int snapgen_write_fd(const struct snapgen *g, int fd, const struct snapgen_write_opts *opts)
{
	uint64_t total = g->npages * SNAPGEN_PAGE_SIZE, run = 0;
	int rc = 0;

	if (ftruncate(fd, 0) || ftruncate(fd, (off_t)total))
		return -errno;
	uint8_t *buf = malloc((size_t)WRITE_CHUNK_PAGES * SNAPGEN_PAGE_SIZE);
	bool *zero = malloc(WRITE_CHUNK_PAGES * sizeof(bool));

	if (!buf || !zero) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint64_t first = 0; first < g->npages; first += WRITE_CHUNK_PAGES) {
		uint64_t n = g->npages - first;

		if (n > WRITE_CHUNK_PAGES)
			n = WRITE_CHUNK_PAGES;
		fill_chunk(g, first, n, buf, zero, &run);
		if (opts && opts->dense)
			rc = pwrite_full(fd, buf, n * SNAPGEN_PAGE_SIZE, first * SNAPGEN_PAGE_SIZE);
		else
			rc = write_sparse(fd, buf, zero, first, n);
		if (rc)
			goto out;
		if (opts && opts->progress)
			opts->progress((first + n) * SNAPGEN_PAGE_SIZE, total, opts->arg);
	}
out:
	free(buf);
	free(zero);
	return rc;
}
