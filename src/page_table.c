/* page_table.c - atomic per-page state transitions (see page_table.h). */
#include "page_table.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

int page_table_init(struct page_table *pt, size_t npages)
{
	pt->npages = npages;
	pt->progress = NULL;
	pt->external = false;
	pt->state = calloc(npages ? npages : 1, sizeof(*pt->state));
	return pt->state ? 0 : -ENOMEM;
}

/* keeper: the table lives in a session's state memfd (state.h). */
void page_table_init_at(struct page_table *pt, size_t npages, _Atomic uint8_t *mem)
{
	pt->npages = npages;
	pt->progress = NULL;
	pt->external = true;
	pt->state = mem;
}

void page_table_fini(struct page_table *pt)
{
	if (!pt->external)
		free((void *)pt->state);
	pt->state = NULL;
	pt->npages = 0;
}

bool page_claim(struct page_table *pt, size_t i, enum page_state *prev)
{
	uint8_t v = page_load(pt, i);
	for (;;) {
		enum page_state st = page_state_of(v);
		*prev = st;
		if (st != PAGE_ABSENT && st != PAGE_REMOVED)
			return false;
		uint8_t want = PAGE_FILLING | (st == PAGE_REMOVED ? PAGE_ZERO_FILL : 0);
		if (atomic_compare_exchange_weak_explicit(&pt->state[i], &v, want,
							  memory_order_acq_rel,
							  memory_order_acquire))
			return true;
	}
}

bool page_claim_absent(struct page_table *pt, size_t i)
{
	uint8_t v = PAGE_ABSENT;
	return atomic_compare_exchange_strong_explicit(&pt->state[i], &v, PAGE_FILLING,
						       memory_order_acq_rel,
						       memory_order_acquire);
}

static const uint8_t rules[ACT_N][PG_NSTATES] = {
#define RULE(actor, state, action) [actor][state] = action,
#include "page_rules.def"
#undef RULE
};

int page_rule(int actor, enum page_state state)
{
	return rules[actor][state];
}

static bool set_flag_while_filling(struct page_table *pt, size_t i, uint8_t flag)
{
	uint8_t v = page_load(pt, i);
	while (page_state_of(v) == PAGE_FILLING) {
		if (v & flag)
			return true;
		if (atomic_compare_exchange_weak_explicit(&pt->state[i], &v,
							  v | flag,
							  memory_order_acq_rel,
							  memory_order_acquire))
			return true;
	}
	return false;
}

bool page_want_wake(struct page_table *pt, size_t i)
{
	return set_flag_while_filling(pt, i, PAGE_WAKE_WANTED);
}

bool page_want_signal(struct page_table *pt, size_t i)
{
	return set_flag_while_filling(pt, i, PAGE_WAITER);
}

/* n more pages done; the call that makes them all done stamps the time. */
static void pages_done(struct page_table *pt, uint64_t n)
{
	struct page_progress *p = pt->progress;
	if (!p || !n || atomic_fetch_add(&p->done, n) + n != p->total)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	uint64_t zero = 0, t = now > p->start_ns ? now - p->start_ns : 1;
	atomic_compare_exchange_strong(&p->complete_ns, &zero, t);
}

static void page_done(struct page_table *pt)
{
	pages_done(pt, 1);
}

/* FILLING -> want, or REMOVED if the page was discarded meanwhile.
 * Returns the flags the page had while FILLING. */
static uint8_t settle(struct page_table *pt, size_t i, uint8_t want)
{
	uint8_t v = page_load(pt, i);
	for (;;) {
		uint8_t next = (v & PAGE_DISCARDED) ? PAGE_REMOVED : want;
		if (atomic_compare_exchange_weak_explicit(&pt->state[i], &v, next,
							  memory_order_acq_rel,
							  memory_order_acquire)) {
			/* Claimed from ABSENT and not going back there: done
			 * now (a claim from REMOVED was done already). */
			if (!(v & PAGE_ZERO_FILL) && next != PAGE_ABSENT)
				page_done(pt);
			return v;
		}
	}
}

uint8_t page_finish(struct page_table *pt, size_t i)
{
	return settle(pt, i, PAGE_PRESENT);
}

uint8_t page_poisoned(struct page_table *pt, size_t i)
{
	return settle(pt, i, PAGE_POISONED);
}

uint8_t page_abandon(struct page_table *pt, size_t i)
{
	/* ZERO_FILL says the claim came from REMOVED; it never changes while
	 * the page is FILLING. */
	bool removed = page_load(pt, i) & PAGE_ZERO_FILL;
	return settle(pt, i, removed ? PAGE_REMOVED : PAGE_ABSENT);
}

enum page_state page_remove(struct page_table *pt, size_t i)
{
	uint8_t v = page_load(pt, i);
	for (;;) {
		enum page_state st = page_state_of(v);
		uint8_t next = st == PAGE_FILLING ? (uint8_t)(v | PAGE_DISCARDED)
						  : PAGE_REMOVED;
		if (atomic_compare_exchange_weak_explicit(&pt->state[i], &v, next,
							  memory_order_acq_rel,
							  memory_order_acquire)) {
			if (st == PAGE_ABSENT) /* a FILLING one is done when it settles */
				page_done(pt);
			return st;
		}
	}
}

size_t page_mark_holes(struct page_table *pt, size_t lo, size_t hi)
{
	size_t n = 0;
	for (size_t i = lo; i < hi && i < pt->npages; i++) {
		uint8_t v = PAGE_ABSENT;
		if (atomic_compare_exchange_strong_explicit(&pt->state[i], &v, PAGE_REMOVED,
							    memory_order_acq_rel,
							    memory_order_relaxed))
			n++;
	}
	pages_done(pt, n);
	return n;
}

void page_table_count(const struct page_table *pt, size_t counts[PG_NSTATES])
{
	for (int k = 0; k < PG_NSTATES; k++)
		counts[k] = 0;
	for (size_t i = 0; i < pt->npages; i++)
		counts[page_state_of(page_load(pt, i))]++;
}
