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
 *   PRESENT/ABSENT --remove--> REMOVED;  FILLING --remove--> FILLING|DISCARDED
 */
#ifndef PAGEIN_PAGE_TABLE_H
#define PAGEIN_PAGE_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum page_state {
	PAGE_ABSENT = 0,  /* never filled: the snapshot's bytes are due */
	PAGE_FILLING = 1, /* claimed by one filler */
	PAGE_PRESENT = 2, /* filled (or found filled); the guest owns it now */
	PAGE_REMOVED = 3, /* discarded by the guest (UFFD_EVENT_REMOVE) */
};
#define PAGE_STATE_MASK 0x03u
/* While FILLING: a fault for this page was read and not answered; the
 * filler must wake the range when it finishes (its own fill may not have). */
#define PAGE_WAKE_WANTED 0x04u
/* While FILLING: the page was discarded meanwhile; fill zeros, end REMOVED. */
#define PAGE_DISCARDED 0x08u
/* While FILLING: claimed from REMOVED, so the right content is zeros. */
#define PAGE_ZERO_FILL 0x10u

struct page_table {
	size_t npages;
	_Atomic uint8_t *state;
};

int page_table_init(struct page_table *pt, size_t npages);
void page_table_fini(struct page_table *pt);

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

/* Asks the owner of a FILLING page to wake waiters when done. Returns false
 * if the page is no longer FILLING (the caller must look again). */
bool page_want_wake(struct page_table *pt, size_t i);

/* FILLING -> PRESENT (or REMOVED if discarded meanwhile). Returns the
 * flags the page had while FILLING. */
uint8_t page_finish(struct page_table *pt, size_t i);

/* FILLING -> the state it was claimed from (or REMOVED if discarded
 * meanwhile), after a failed fill. Returns the flags it had while FILLING. */
uint8_t page_abandon(struct page_table *pt, size_t i);

/* Applies a discard to one page; returns the state before. */
enum page_state page_remove(struct page_table *pt, size_t i);

/* Counts pages in each state, for reports and tests. */
void page_table_count(const struct page_table *pt, size_t counts[4]);

#endif
