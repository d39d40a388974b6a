/* session.h - one VM: its regions, fds, page-state tables and counters.
 * Internal; the public face is struct pagein_session in pagein.h. */
#ifndef PAGEIN_SESSION_H
#define PAGEIN_SESSION_H

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
		pages_poisoned;
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
	_Atomic uint64_t *bitmap; /* mapped userfault bitmap, or NULL */
	size_t bitmap_bytes;
	struct pagein_source *source;
	enum pagein_on_corrupt on_corrupt;
	void *zero_huge;          /* a zeroed 2 MiB buffer for hugetlb COPY */
	struct fault_queue queue;
	struct session_counters n;
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

/* Marks a page populated in the userfault bitmap (clears its bit). */
void session_clear_userfault_bit(struct pagein_session *s, uint64_t offset,
				 uint64_t page_size);

#endif
