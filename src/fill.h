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

struct fill_req {
	struct region *rg;
	size_t first, n;  /* pages [first, first+n), all claimed by the caller */
	size_t fault_idx; /* the page a guest faulted on, SIZE_MAX if none: only
			   * it may get zeros after a discard, and only it decides
			   * what a page the snapshot cannot give costs */
	enum fill_path path;
	bool reader;      /* the caller is the pump (reads events itself) */
	bool wake;        /* a fault waits on fault_idx: wake it */
};

/* Fills the claimed pages into the user mapping in as few ioctls as the
 * source's extents allow (UFFDIO_COPY of snapshot bytes, ZEROPAGE for zero
 * pages and for a discarded faulting page, POISON for a faulting page the
 * snapshot cannot give in poison mode), settles every page, wakes. Pages
 * filled ahead that were discarded meanwhile settle REMOVED unfilled.
 * Returns 0, -ESRCH (VMM gone), -ECANCELED (stopping) or -errno (err says
 * what); on error the unfilled pages are given back. */
int fill_map(struct pagein_session *s, const struct fill_req *rq,
	     struct pagein_error *err);

/* A claimed page into the page cache through the guest memory fd
 * (pwrite: maps nothing, raises no uffd event): a stage-2 request. Settles
 * the page (PRESENT, or POISONED in poison mode when the snapshot cannot
 * give it: then -EHWPOISON). *zero: the page holds zeros. */
int fill_request(struct pagein_session *s, struct region *rg, size_t idx,
		 bool *zero, struct pagein_error *err);

/* A claimed page a MINOR fault waits on: write the snapshot's bytes first
 * if the cache holds a page pagein never filled (and there is a memory fd),
 * then UFFDIO_CONTINUE. By the pump only. */
int fill_minor(struct pagein_session *s, struct region *rg, size_t idx,
	       struct pagein_error *err);

/* One page without a claim, by the pump, waking its fault: ZEROPAGE
 * (never overwrites: EEXIST means it is there), CONTINUE, or POISON. */
enum probe_op { PROBE_ZERO, PROBE_MAP, PROBE_POISON };
int fill_probe(struct pagein_session *s, struct region *rg, size_t idx,
	       enum probe_op op, struct pagein_error *err);

/* Gives back claimed pages [a, b) unfilled, waking and signalling whoever
 * found one of them FILLING. */
void fill_abandon(struct pagein_session *s, struct region *rg, size_t a,
		  size_t b);

#endif
