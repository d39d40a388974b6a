/* expect.h - what every guest page must contain, and the locks that keep
 * that knowledge exact while vCPUs, the VMM thread and the balloon run
 * concurrently.
 *
 * A page is in one of three states: SNAPSHOT (the bytes of the --expect
 * file), ZERO (discarded by the balloon) or WRITTEN (the pattern of a given
 * generation, written by a vCPU). Readers (vCPU reads, stage-2 reads, VMM
 * thread reads) hold the page's stripe lock shared while they access and
 * compare; writers (pattern writes, discards) hold it exclusive while they
 * change memory and state together, so a reader never sees a state that does
 * not match memory. */
#ifndef VMMSIM_EXPECT_H
#define VMMSIM_EXPECT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "guest_memory.h"

/* 1024 stripes: two to a few dozen threads rarely collide, and the locks
 * fit in 56 KiB. */
#define EXPECT_STRIPES 1024

enum page_kind { PAGE_SNAPSHOT = 0, PAGE_ZERO = 1, PAGE_WRITTEN = 2 };

/* Per-page flags, set without the lock (atomically). */
#define PAGEF_TOUCHED 1u /* accessed by the workload through any path */
#define PAGEF_MAPPED 2u  /* accessed through the mapping by a vCPU */

struct expect {
	const struct guest *guest;
	const uint8_t *file;  /* read-only mapping of --expect */
	size_t file_len;      /* the mapped length (guest size) */
	uint32_t *state;      /* kind | generation << 2; under the stripe lock */
	_Atomic uint8_t *flags;
	pthread_rwlock_t lock[EXPECT_STRIPES];
	uint8_t *zero;        /* page_size zero bytes to compare against */
};

/* Maps path (a raw snapshot at least as large as guest memory). Prints why
 * and returns -1 on failure. */
int expect_open(struct expect *e, const struct guest *g, const char *path);
/* The same, with the whole mapping faulted in first (benchmarks: verifying
 * then takes no page fault; give a copy that is not the snapshot served,
 * e.g. on tmpfs, or the snapshot stays cached while mapped). */
int expect_open_prefault(struct expect *e, const struct guest *g, const char *path);
void expect_close(struct expect *e);

static inline pthread_rwlock_t *expect_lock_of(struct expect *e, uint64_t page)
{
	return &e->lock[page % EXPECT_STRIPES];
}

void expect_rdlock(struct expect *e, uint64_t page);
void expect_wrlock(struct expect *e, uint64_t page);
void expect_unlock(struct expect *e, uint64_t page);
/* Exclusive locks for a run of pages, taken in stripe order (no deadlock
 * between two range lockers). */
void expect_range_wrlock(struct expect *e, uint64_t first, uint64_t n);
void expect_range_unlock(struct expect *e, uint64_t first, uint64_t n);

/* Compares a whole page as read through `path` ("mapping", "stage-2", ...)
 * with its expected content; on the first wrong byte reports it and exits 1.
 * Caller holds the page's lock. */
void expect_verify(const struct expect *e, uint64_t page, const uint8_t *data, const char *path);

/* Writes the next generation's pattern over the page through its guest
 * mapping and records it. Caller holds the page's lock exclusive. */
void expect_write_pattern(struct expect *e, uint64_t page);

/* Records the page as discarded (reads as zeros). Exclusive lock held.
 * The generation survives, so a later write never repeats an old pattern. */
static inline void expect_set_zero(struct expect *e, uint64_t page)
{
	e->state[page] = (e->state[page] & ~3u) | PAGE_ZERO;
}

#endif
