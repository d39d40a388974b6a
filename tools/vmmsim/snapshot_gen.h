/* snapshot_gen.h - deterministic synthetic VM memory snapshots.
 *
 * A snapshot is a raw image of guest memory in 4 KiB pages. Its shape is
 * meant to look like a real one to a compressor and to a lazy restorer:
 * runs of 1..64 non-zero pages alternate with runs of all-zero pages, so that
 * about `zero_fraction` of pages are zero; non-zero pages are a mix of
 * random bytes, half-random pages, repeated 64-byte patterns and sparse
 * pointer-like words.
 *
 * Everything is a pure function of (seed, zero_fraction, page index): the
 * content of a non-zero page depends only on (seed, page); the zero/non-zero
 * layout only on (seed, zero_fraction) and is prefix-stable (a larger size
 * extends the same layout). Tests can therefore regenerate any page.
 *
 * Functions return 0 or -errno and never print. */
#ifndef VMMSIM_SNAPSHOT_GEN_H
#define VMMSIM_SNAPSHOT_GEN_H

#include <stdbool.h>
#include <stdint.h>

#define SNAPGEN_PAGE_SIZE 4096u

struct snapgen_zero_run {
	uint64_t start; /* first page of the run */
	uint64_t len;   /* pages */
};

struct snapgen {
	uint64_t seed;
	double zero_fraction;
	uint64_t npages;               /* size / SNAPGEN_PAGE_SIZE */
	struct snapgen_zero_run *runs; /* sorted by start, non-overlapping */
	uint64_t nruns;
	uint64_t zero_pages;           /* sum of run lengths */
};

/* size must be a multiple of SNAPGEN_PAGE_SIZE; zero_fraction in [0, 1].
 * Builds the layout (a few MB of run table per 64 GiB). */
int snapgen_init(struct snapgen *g, uint64_t seed, double zero_fraction, uint64_t size);
void snapgen_fini(struct snapgen *g);

bool snapgen_page_is_zero(const struct snapgen *g, uint64_t page);

/* Writes the SNAPGEN_PAGE_SIZE bytes of `page` into buf. */
void snapgen_page(const struct snapgen *g, uint64_t page, void *buf);

struct snapgen_write_opts {
	bool dense; /* write zero pages explicitly instead of leaving holes */
	/* Called after each chunk, may be NULL. */
	void (*progress)(uint64_t bytes_done, uint64_t bytes_total, void *arg);
	void *arg;
};

/* Writes the whole snapshot to fd (truncated to the size first, so zero
 * pages stay holes unless opts->dense). */
int snapgen_write_fd(const struct snapgen *g, int fd, const struct snapgen_write_opts *opts);

#endif
