/* fill.h - the one fill engine: plan runs, lock, ioctl or pwrite, classify
 * the kernel's answer, settle the pages, wake whoever waits.
 *
 * Faults (fault.c), stage-2 requests (request.c), fault-around, working-set
 * prefetch and background/eager population (prefetch.c) are front-ends:
 * they decide with page_rule() what to do, claim pages, and describe the
 * fill in a struct fill_req. */
#ifndef PAGEIN_FILL_H
#define PAGEIN_FILL_H

#include <stdbool.h>
#include <stddef.h>

#include "session.h"

/* Who a fill is for: counted per path in the statistics. */
enum fill_path {
	FILL_FAULT,        /* a fault's window (the page itself + fault-around) */
	FILL_PREFETCH,     /* working-set replay */
	FILL_BACKGROUND,   /* background or eager population */
	FILL_REQUEST,      /* a stage-2 request */
};

/* What to do with the pages. */
enum fill_op {
	FILL_OP_MAP,    /* claimed pages into the user mapping: UFFDIO_COPY of
			 * snapshot bytes in as few ioctls as the source's
			 * extents allow, ZEROPAGE for zero pages and for a
			 * discarded faulting page, POISON for a faulting page
			 * the snapshot cannot give in poison mode. Pages filled
			 * ahead that were discarded meanwhile settle REMOVED
			 * unfilled. */
	FILL_OP_CACHE,  /* one claimed page into the page cache through the
			 * guest memory fd (pwrite: maps nothing, raises no uffd
			 * event): a stage-2 request. In poison mode a page the
			 * snapshot cannot give becomes POISONED: -EHWPOISON. */
	FILL_OP_MINOR,  /* one claimed page a MINOR fault waits on: the
			 * snapshot's bytes first if the cache holds a page
			 * pagein never filled, then UFFDIO_CONTINUE (a discarded
			 * page: ZEROPAGE, CONTINUE on EEXIST). By the pump. */
	FILL_OP_PROBE_ZERO,   /* one page, no claim, by the pump, waking its */
	FILL_OP_PROBE_MAP,    /* fault: ZEROPAGE (never overwrites: EEXIST */
	FILL_OP_PROBE_POISON, /* means it is there), CONTINUE, or POISON */
};

/* One fill: every front-end describes what it wants here. */
struct fill_req {
	enum fill_op op;
	struct region *rg;
	size_t first, n;  /* pages [first, first+n); claimed by the caller
			   * except for the PROBE ops; n is 1 but for MAP */
	size_t fault_idx; /* the page a guest faulted on, SIZE_MAX if none: only
			   * it may get zeros after a discard, and only it decides
			   * what a page the snapshot cannot give costs */
	enum fill_path path;
	bool reader;      /* the caller is the pump (reads events itself) */
	bool wake;        /* a fault waits on fault_idx: wake it */
	bool *zero;       /* CACHE: set to whether the page holds zeros */
};

/* Does the fill, settles every page it was given (PRESENT, REMOVED,
 * POISONED, or back to what it was), wakes and signals whoever waits.
 * Returns 0, -ESRCH (VMM gone), -ECANCELED (stopping), -EHWPOISON (CACHE:
 * poisoned) or -errno (err says what). */
int fill(struct pagein_session *s, const struct fill_req *rq,
	 struct pagein_error *err);

/* Gives back claimed pages [a, b) unfilled, waking and signalling whoever
 * found one of them FILLING. */
void fill_abandon(struct pagein_session *s, struct region *rg, size_t a,
		  size_t b);

#endif
