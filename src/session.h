/* session.h - one VM: its regions, fds, page-state tables and counters.
 * Internal; the public face is struct pagein_session in pagein.h. */
#ifndef PAGEIN_SESSION_H
#define PAGEIN_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "page_table.h"
#include "pagein.h"
#include "uffd_compat.h"

struct region {
	struct pagein_region r;
	uint64_t page_shift;   /* log2(page_size) */
	struct page_table pages;
};

/* Counters mirror struct pagein_stats; relaxed atomics, any thread. */
struct session_counters {
	atomic_uint_fast64_t faults_missing, faults_minor, requests,
		pages_copied, pages_zeroed, pages_continued, pages_written,
		wakes, eexist, eagain, removes, pages_removed, bytes_read,
		pages_poisoned, filled_fault, filled_fault_around,
		filled_prefetch, filled_background, filled_request;
};

/* Faults read but not yet served, owned by the one thread reading the
 * uffd. Grows when a fill must drain events (EAGAIN) mid-batch. */
struct fault_queue {
	struct uffd_msg *msg;
	size_t head, tail, cap;
};

struct pagein_session {
	char name[64];
	struct region *regions;
	size_t nregions;
	int uffd, mem_fd, bitmap_fd;
	void *mem_map;            /* mem_fd mapped here when it is on hugetlbfs */
	size_t mem_map_bytes;
	_Atomic uint64_t *bitmap; /* mapped userfault bitmap, or NULL */
	size_t bitmap_bytes;
	struct pagein_source *source;
	enum pagein_on_corrupt on_corrupt;
	void *zero_huge;          /* a zeroed 2 MiB buffer for hugetlb COPY */
	/* Serialises uffd readers (handle_uffd, eager population): the
	 * queue and the read side are one thread's at a time. Uncontended in
	 * the daemon, where EPOLLONESHOT already hands the uffd to one worker;
	 * it makes that hand-off explicit, and embedders safe. */
	pthread_mutex_t reader_lock;
	struct fault_queue queue;
	struct session_counters n;
	uint64_t pages_total;
	uint64_t start_ns;
	atomic_uint_fast64_t complete_ns;

	/* Fault-around: base window (pages) and the adaptive state, touched
	 * only by the thread reading the uffd (one at a time). */
	unsigned fa_base;
	atomic_uint fa_window;
	_Atomic(struct region *) fa_region;
	atomic_size_t fa_next; /* page a sequential scan would fault next */

	/* First-touch recording (config.record). */
	bool record;
	pthread_mutex_t record_lock;
	uint64_t *recorded;
	size_t nrecorded, record_cap;

	/* Orders discards against fills by other threads: see fill_lock()
	 * in resolver.c. Writer-preferring, so prefetch cannot starve the
	 * uffd reader. */
	pthread_rwlock_t remove_lock;

	/* The prefetch thread (prefetch.c). */
	struct prefetcher *prefetch;
	/* Tests only: called after a read() that returned faults, before they
	 * are served, to stage races (a REMOVE or a pwrite in between). */
	void (*test_after_read)(struct pagein_session *s, void *arg);
	void *test_arg;
};

static inline void count(atomic_uint_fast64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* Region holding host address addr, or NULL. */
struct region *session_region_by_addr(struct pagein_session *s, uint64_t addr);
/* Region holding snapshot / mem_fd offset off, or NULL. */
struct region *session_region_by_offset(struct pagein_session *s, uint64_t off);

enum fill_path {
	FILL_FAULT,
	FILL_FAULT_AROUND,
	FILL_PREFETCH,
	FILL_BACKGROUND,
	FILL_REQUEST,
};

/* Fills pages [first, first+n) of rg, every one claimed by this thread,
 * in as few ioctls as the source's extents allow (DONTWAKE), finishes
 * them, then wakes the range once if `wake` or if a fault asked to be.
 * fault_idx: the page a guest faulted on (SIZE_MAX: none); a page the
 * snapshot cannot give is poisoned or fails the session only if it is that
 * page; others are left absent for their own fault.
 * reader: this thread reads the uffd (it drains events on EAGAIN itself).
 * Returns 0 or -errno (-ESRCH: VMM gone); on error the unfilled pages go
 * back to their previous state. */
int fill_run_claimed(struct pagein_session *s, struct region *rg, size_t first,
		     size_t n, size_t fault_idx, bool reader, bool wake,
		     enum fill_path path, struct pagein_error *err);

/* Gives back claimed pages [a, b) after a failed or skipped fill. True if
 * a fault found one of them FILLING and must be woken. */
bool region_abandon(struct region *rg, size_t a, size_t b);

uint64_t now_ns(void);

/* prefetch.c: stops and joins the prefetch thread, if any. */
void prefetch_stop(struct pagein_session *s);

/* Marks a page populated in the userfault bitmap (clears its bit). */
void session_clear_userfault_bit(struct pagein_session *s, uint64_t offset,
				 uint64_t page_size);

#endif
