/* session.h - one VM: its regions, fds, page-state tables and counters.
 * Internal; the public face is struct pagein_session in pagein.h. */
#ifndef PAGEIN_SESSION_H
#define PAGEIN_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "fault_window.h"
#include "counters.h"
#include "page_table.h"
#include "pagein.h"
#include "uffd_compat.h"

struct region {
	struct pagein_region r;
	uint64_t page_shift;   /* log2(page_size) */
	size_t first_global;   /* pages of the regions before it (sorted) */
	struct page_table pages;
};


/* Faults read but not yet served, owned by the pump (one thread at a
 * time). Grows when a fill must drain events (EAGAIN) mid-round. */
struct fault_queue {
	struct uffd_msg *msg;
	uint64_t *read_ns;        /* when each was read: fault latency */
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

	/* The pump (pump.c). Reading the uffd is a role, not a thread: whoever
	 * holds reader_lock reads and applies every pending event and serves
	 * the faults it drained. A thread that must wait on the kernel (EAGAIN)
	 * or on a FILLING page tries to take the role (session_wait); if
	 * someone else has it, it sleeps on wait_cond, which the pump signals
	 * after each round and a filler signals when a PAGE_WAITER page
	 * settles. Nobody sleeps on something nobody is obliged to do. */
	pthread_mutex_t reader_lock;
	struct fault_queue queue;
	bool read_nowait;         /* preadv2(RWF_NOWAIT) works on this uffd */
	pthread_mutex_t wait_lock;
	pthread_cond_t wait_cond;
	uint64_t wait_gen;        /* under wait_lock: bumped by every signal */
	atomic_int role_waiters;  /* threads sleeping until the pump's role is
				   * released: the releaser then signals */
	atomic_bool stopping;     /* waiters and fillers give up (teardown) */

	/* The first fatal error, from any thread; then the session is over. */
	atomic_int failed;        /* 0 or -errno */
	pthread_mutex_t fail_lock;
	char fail_msg[256];
	int event_fd;             /* eventfd, readable once failed */

	/* Counters and progress: the session's own, or with a keeper the
	 * ones in its state memfd (they outlive this process). */
	struct session_counters *n, own_counters;
	/* The embedder's event sink (config.on_event), or NULL. */
	void (*on_event)(void *opaque, const struct pagein_event *ev);
	void *event_opaque;
	uint64_t pages_total;
	uint64_t pages_hole;      /* marked REMOVED at start (mark_holes) */
	/* Pages done, when the session started, and when the last page was
	 * done: "complete" (page_table.h). */
	struct page_progress *progress, own_progress;

	/* Fault-around window (fault_window.c), touched only by the pump. */
	struct fault_window fw;

	/* First-touch recording (config.record). */
	bool record;
	pthread_mutex_t record_lock;
	uint64_t *recorded;
	size_t nrecorded, record_cap;
	uint8_t *touched;         /* bit per page: its first touch recorded */

	/* Orders discards against fills by threads that are not the pump: see
	 * fill_lock() in fill.c. Writer-preferring, so prefetch cannot starve
	 * the pump. */
	pthread_rwlock_t remove_lock;

	/* Faults parked on remote fetches (source_http.c); NULL when the
	 * source is local. */
	struct park_handle *park;
	/* keeper: the state memfd holding the page tables and the remove
	 * journal (state.h), or NULL. */
	struct kstate *kst;

	/* The prefetch thread (prefetch.c). */
	struct prefetcher *prefetch;
	/* Tests only: called after a read() that returned faults, before they
	 * are served, to stage races (a REMOVE or a pwrite in between). */
	void (*test_after_read)(struct pagein_session *s, void *arg);
	/* Tests only: between the poll and the read of a kernel without
	 * RWF_NOWAIT (read_nowait false), to stage a VMM racing it. */
	void (*test_after_poll)(struct pagein_session *s, void *arg);
	void *test_arg;
};

static inline void count(atomic_uint_fast64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* The pages of rg wholly inside host addresses [start, end): [*first,
 * *last), empty if none (a discard covers only whole pages). */
static inline void region_pages_within(const struct region *rg, uint64_t start,
				       uint64_t end, size_t *first, size_t *last)
{
	uint64_t rs = rg->r.host_addr, re = rs + rg->r.size;
	uint64_t a = start > rs ? start : rs, b = end < re ? end : re;
	*first = *last = 0;
	if (a >= b)
		return;
	uint64_t ps = rg->r.page_size;
	*first = (size_t)((a - rs + ps - 1) >> rg->page_shift);
	*last = (size_t)((b - rs) >> rg->page_shift);
	if (*last < *first)
		*last = *first;
}

/* Region holding host address addr, or NULL. */
struct region *session_region_by_addr(struct pagein_session *s, uint64_t addr);
/* Region holding snapshot / mem_fd offset off, or NULL. */
struct region *session_region_by_offset(struct pagein_session *s, uint64_t off);

uint64_t now_ns(void);

static inline uint64_t page_addr(const struct region *rg, size_t idx)
{
	return rg->r.host_addr + ((uint64_t)idx << rg->page_shift);
}

static inline uint64_t page_offset(const struct region *rg, size_t idx)
{
	return rg->r.offset + ((uint64_t)idx << rg->page_shift);
}

/* Records the first fatal error of the session (later ones are dropped),
 * stops its waiters and makes event_fd readable. Returns r. */
int session_fail(struct pagein_session *s, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Marks a page populated in the userfault bitmap (clears its bit). A
 * bitmap the VMM truncated fails the session: returns -EFAULT. */
int session_clear_userfault_bit(struct pagein_session *s, uint64_t offset,
				uint64_t page_size);

/* The generation to pass to session_wait(): read it BEFORE looking at
 * the state you are about to wait on, so that a signal in between is not
 * lost. */
uint64_t session_wait_gen(struct pagein_session *s);

enum wait_for {
	WAIT_EVENTS, /* a fill got EAGAIN: events must be read */
	WAIT_PAGE,   /* a page (flagged PAGE_WAITER) must leave FILLING */
};

/* Becomes the pump for one round, or sleeps until the pump or a filler
 * signals after gen. Returns 0 (look again), -ECANCELED (the session is
 * stopping), or the session's failure. `reader`: the caller already is
 * the pump (it then just drains events). */
int session_wait(struct pagein_session *s, enum wait_for why, uint64_t gen,
		 bool reader, struct pagein_error *err);

/* Waits until a pump round in progress on another thread has ended (its
 * fills done and counted): before a session's final statistics are read.
 * Call after pagein_session_stop(); returns at once on the pump itself. */
void session_quiesce(struct pagein_session *s);

/* Wakes every waiter (a round ended, a page settled, the session stops). */
void session_signal(struct pagein_session *s);

/* Tells the embedder (config.on_event) about a poisoned run or a corrupt
 * chunk. */
void session_event(struct pagein_session *s, enum pagein_event_kind kind,
		   uint64_t offset, uint64_t pages, uint64_t chunk, int error);

/* First-touch order (config.record). */
void session_record_touch(struct pagein_session *s, const struct region *rg,
			  size_t idx, enum page_state prev);

/* keeper: pagein_session_new with the page tables in k's memfd (kept as
 * they are when adopt, else zeroed: ABSENT). The session does not own k. */
struct kstate;
int session_new_state(const struct pagein_session_config *cfg, struct kstate *k,
		      struct pagein_session **out, struct pagein_error *err);

/* prefetch.c: stops and joins the prefetch thread, if any. */
void prefetch_stop(struct pagein_session *s);

#endif
