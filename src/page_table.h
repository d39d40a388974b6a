/* page_table.h - the per-page state every fill path claims through.
 *
 * One byte per guest page. A fault, a stage-2 request, prefetch and
 * background population all move a page ABSENT/REMOVED -> FILLING with one
 * compare-and-swap, so exactly one of them fills it; whoever loses the race
 * either leaves a note (WAKE_WANTED) or waits. PRESENT is never refilled
 * from the snapshot: from then on the guest may have written the page.
 *
 *   ABSENT  --claim-->  FILLING  --finish-->  PRESENT
 *   REMOVED --claim-->  FILLING  (a balloon discarded it: fills are zeros)
 *                       FILLING  --poison-->  POISONED (snapshot cannot give it)
 *   any other --remove--> REMOVED;  FILLING --remove--> FILLING|DISCARDED
 *
 * What each actor does in each state is data: page_rules.def, looked up
 * with page_rule(); the Promela model in tests/model/ includes the same
 * table.
 */
#ifndef PAGEIN_PAGE_TABLE_H
#define PAGEIN_PAGE_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "page_rules.h"

enum page_state {
	PAGE_ABSENT = PG_ABSENT,
	PAGE_FILLING = PG_FILLING,
	PAGE_PRESENT = PG_PRESENT,
	PAGE_REMOVED = PG_REMOVED,
	PAGE_POISONED = PG_POISONED,
};
#define PAGE_STATE_MASK 0x07u
/* While FILLING: a fault for this page was read and not answered; the
 * filler must wake the range when it finishes (its own fill may not have). */
#define PAGE_WAKE_WANTED 0x08u
/* While FILLING: the page was discarded meanwhile; only a faulting page
 * gets zeros, any other settles REMOVED unfilled. */
#define PAGE_DISCARDED 0x10u
/* While FILLING: claimed from REMOVED, so the right content is zeros. */
#define PAGE_ZERO_FILL 0x20u
/* While FILLING: a thread waits on the session's condition for this page
 * (a stage-2 request); settling it signals the condition. */
#define PAGE_WAITER 0x40u

/* The action page_rules.def gives actor (ACT_*) on a page in state. */
int page_rule(int actor, enum page_state state);

/* How far a session's restore is, shared by its page tables: a page is
 * done once it needs nothing more from the snapshot (PRESENT, POISONED or
 * REMOVED; a page claimed back from REMOVED stays done). A page becomes
 * done once and never undone, so one count, bumped by the transition that
 * makes it done (a settle from a claim of ABSENT, or a discard of an ABSENT
 * page), reaches total exactly when no ABSENT page is left. */
struct page_progress {
	atomic_uint_fast64_t done;
	uint64_t total;
	uint64_t start_ns;                /* CLOCK_MONOTONIC */
	atomic_uint_fast64_t complete_ns; /* since start_ns; 0 = not yet */
};

struct page_table {
	size_t npages;
	_Atomic uint8_t *state;
	struct page_progress *progress; /* may be NULL */
	bool external;                  /* state is not ours (page_table_init_at) */
};

int page_table_init(struct page_table *pt, size_t npages);
void page_table_fini(struct page_table *pt);
/* keeper: a table in memory someone else owns (a state memfd), as is. */
void page_table_init_at(struct page_table *pt, size_t npages, _Atomic uint8_t *mem);

static inline uint8_t page_load(const struct page_table *pt, size_t i)
{
	return atomic_load_explicit(&pt->state[i], memory_order_acquire);
}

static inline enum page_state page_state_of(uint8_t v)
{
	return (enum page_state)(v & PAGE_STATE_MASK);
}

/* ABSENT or REMOVED -> FILLING. Returns true if this caller now owns the
 * page; *prev gets the state seen (on failure: FILLING or PRESENT). */
bool page_claim(struct page_table *pt, size_t i, enum page_state *prev);

/* ABSENT -> FILLING only: for filling ahead of the guest, which must not
 * bring back pages the guest discarded (a balloon's pages stay out). */
bool page_claim_absent(struct page_table *pt, size_t i);

/* Asks the owner of a FILLING page to wake waiters when done (flag:
 * PAGE_WAKE_WANTED for a uffd fault, PAGE_WAITER for a thread on the
 * session's condition). Returns false if the page is no longer FILLING
 * (the caller must look again). */
bool page_want_wake(struct page_table *pt, size_t i);
bool page_want_signal(struct page_table *pt, size_t i);

/* FILLING -> PRESENT (or REMOVED if discarded meanwhile). Returns the
 * flags the page had while FILLING. */
uint8_t page_finish(struct page_table *pt, size_t i);

/* FILLING -> the state it was claimed from (or REMOVED if discarded
 * meanwhile), after a failed fill. Returns the flags it had while FILLING. */
uint8_t page_abandon(struct page_table *pt, size_t i);

/* FILLING -> POISONED (or REMOVED if discarded meanwhile: a discarded
 * page reads zeros, the poison marker is zapped with it). */
uint8_t page_poisoned(struct page_table *pt, size_t i);

/* Applies a discard to one page; returns the state before. */
enum page_state page_remove(struct page_table *pt, size_t i);
/* ABSENT pages of [lo, hi) -> REMOVED: holes of the snapshot (they read as
 * zeros: a fault gets a zero page, filling ahead skips them) marked when a
 * session starts. Counted done. Returns how many were marked. */
size_t page_mark_holes(struct page_table *pt, size_t lo, size_t hi);

/* Counts pages in each state, for reports and tests. */
void page_table_count(const struct page_table *pt, size_t counts[PG_NSTATES]);

#endif
