/* guest_memory.h - guest memory laid out the way Firecracker does it:
 * N regions inside one reserved address range with PROT_NONE gaps between,
 * backed by private anonymous memory or by one memfd (standing in for a
 * guest_memfd), plus the userfaultfd that covers them and, for the
 * secret-hiding protocol, the userfault bitmap memfd. */
#ifndef VMMSIM_GUEST_MEMORY_H
#define VMMSIM_GUEST_MEMORY_H

#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_MAX_REGIONS 64

enum guest_mem { GUEST_ANON, GUEST_MEMFD };

struct guest_config {
	enum guest_mem memory;
	uint64_t mem_size;  /* bytes, a multiple of page_size */
	unsigned nregions;  /* 1..GUEST_MAX_REGIONS */
	uint64_t gap;       /* bytes of PROT_NONE between regions */
	uint64_t page_size; /* 4096 or 2 MiB (hugetlb) */
	uint64_t reg_mode;  /* UFFDIO_REGISTER_MODE_MISSING and/or _MINOR */
	bool bitmap;        /* create the userfault bitmap memfd */
	bool event_remove;  /* ask UFFDIO_API for UFFD_FEATURE_EVENT_REMOVE
			     * (Firecracker v1.12+ always, older only with a
			     * balloon) */
	const char *file;   /* benchmarks: map this file MAP_PRIVATE instead of
			     * anonymous memory, with no uffd (what Firecracker
			     * does without a UFFD backend) */
	bool populate;      /* benchmarks, with file: anonymous memory holding
			     * the file's bytes, every page present before the
			     * workload (the touch floor: no faults at all) */
};

struct guest_region {
	uint8_t *base;       /* host address */
	uint64_t size;       /* bytes */
	uint64_t offset;     /* in the snapshot and in the memfd (cumulative) */
	uint64_t first_page; /* guest page index of base */
	uint64_t npages;
};

struct guest {
	enum guest_mem memory;
	uint64_t page_size, npages, size;
	unsigned nregions;
	struct guest_region region[GUEST_MAX_REGIONS];
	void *span;              /* the reserved range holding every region */
	size_t span_len;
	int uffd, memfd, bitmap_fd; /* -1 when absent */
	_Atomic uint64_t *bitmap;   /* bit i = page i still needs userspace */
	size_t bitmap_len;
	uint64_t uffd_features;     /* what UFFDIO_API granted */
};

/* Maps memory, creates and registers the uffd (and the bitmap if asked;
 * with cfg->file: maps the file's regions MAP_PRIVATE, no uffd at all),
 * and reports a SIGBUS/SIGSEGV on guest memory as a failure (exit 1).
 * Prints the reason and returns EXIT_SETUP or EXIT_SKIP on failure (with
 * everything undone), 0 on success. */
int guest_open(struct guest *g, const struct guest_config *cfg);
/* run --on-sigbus skip: while jb is armed (per thread; NULL disarms), a
 * SIGBUS in guest memory (a poisoned page) jumps back to it instead of
 * ending the process. */
void guest_sigbus_arm(sigjmp_buf *jb);
void guest_close(struct guest *g);

/* Region index holding guest page `page` (page < g->npages). */
static inline unsigned guest_region_of(const struct guest *g, uint64_t page)
{
	unsigned lo = 0, hi = g->nregions - 1;

	while (lo < hi) {
		unsigned mid = (lo + hi + 1) / 2;

		if (g->region[mid].first_page <= page)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

static inline uint8_t *guest_page_addr(const struct guest *g, uint64_t page)
{
	const struct guest_region *r = &g->region[guest_region_of(g, page)];

	return r->base + (page - r->first_page) * g->page_size;
}

/* Regions are cumulative in the snapshot, so a page's snapshot offset (and
 * memfd offset, and bitmap bit index) is simply page * page_size. */
static inline uint64_t guest_page_offset(const struct guest *g, uint64_t page)
{
	return page * g->page_size;
}

/* Acquire: a clear bit published by the handler (release) guarantees the
 * page content it wrote before is visible to our pread. */
static inline bool guest_bit_is_set(const struct guest *g, uint64_t page)
{
	return atomic_load_explicit(&g->bitmap[page / 64], memory_order_acquire) &
	       (1ULL << (page % 64));
}

#endif
