/* unit_page_table.c - the per-page state machine every fill path claims. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>

#include "page_table.h"

static void claim_once(void **state)
{
	struct page_table pt;
	assert_int_equal(page_table_init(&pt, 4), 0);
	enum page_state prev;
	assert_true(page_claim(&pt, 1, &prev));
	assert_int_equal(prev, PAGE_ABSENT);
	assert_false(page_claim(&pt, 1, &prev));
	assert_int_equal(prev, PAGE_FILLING);
	page_finish(&pt, 1);
	assert_false(page_claim(&pt, 1, &prev));
	assert_int_equal(prev, PAGE_PRESENT);
	page_table_fini(&pt);
}

static void removed_claims_as_zero_fill(void **state)
{
	struct page_table pt;
	assert_int_equal(page_table_init(&pt, 1), 0);
	assert_int_equal(page_remove(&pt, 0), PAGE_ABSENT);
	enum page_state prev;
	assert_true(page_claim(&pt, 0, &prev));
	assert_int_equal(prev, PAGE_REMOVED);
	assert_true(page_load(&pt, 0) & PAGE_ZERO_FILL);
	page_finish(&pt, 0);
	assert_int_equal(page_state_of(page_load(&pt, 0)), PAGE_PRESENT);
	page_table_fini(&pt);
}

static void remove_while_filling_ends_removed(void **state)
{
	struct page_table pt;
	assert_int_equal(page_table_init(&pt, 1), 0);
	enum page_state prev;
	assert_true(page_claim(&pt, 0, &prev));
	assert_int_equal(page_remove(&pt, 0), PAGE_FILLING);
	assert_true(page_load(&pt, 0) & PAGE_DISCARDED);
	uint8_t flags = page_finish(&pt, 0);
	assert_true(flags & PAGE_DISCARDED);
	assert_int_equal(page_state_of(page_load(&pt, 0)), PAGE_REMOVED);
	page_table_fini(&pt);
}

static void want_wake_only_while_filling(void **state)
{
	struct page_table pt;
	assert_int_equal(page_table_init(&pt, 1), 0);
	assert_false(page_want_wake(&pt, 0)); /* ABSENT: look again */
	enum page_state prev;
	assert_true(page_claim(&pt, 0, &prev));
	assert_true(page_want_wake(&pt, 0));
	assert_true(page_finish(&pt, 0) & PAGE_WAKE_WANTED);
	assert_false(page_want_wake(&pt, 0)); /* PRESENT */
	page_table_fini(&pt);
}

static void abandon_returns_to_previous(void **state)
{
	struct page_table pt;
	assert_int_equal(page_table_init(&pt, 2), 0);
	enum page_state prev;
	assert_true(page_claim(&pt, 0, &prev));
	page_abandon(&pt, 0);
	assert_int_equal(page_state_of(page_load(&pt, 0)), PAGE_ABSENT);
	page_remove(&pt, 1);
	assert_true(page_claim(&pt, 1, &prev));
	page_abandon(&pt, 1);
	assert_int_equal(page_state_of(page_load(&pt, 1)), PAGE_REMOVED);
	page_table_fini(&pt);
}

static void present_then_removed(void **state)
{
	struct page_table pt;
	assert_int_equal(page_table_init(&pt, 1), 0);
	enum page_state prev;
	page_claim(&pt, 0, &prev);
	page_finish(&pt, 0);
	assert_int_equal(page_remove(&pt, 0), PAGE_PRESENT);
	assert_int_equal(page_state_of(page_load(&pt, 0)), PAGE_REMOVED);
	size_t c[PG_NSTATES];
	page_table_count(&pt, c);
	assert_int_equal(c[PAGE_REMOVED], 1);
	page_table_fini(&pt);
}

static void claim_absent_leaves_removed_pages_out(void **state)
{
	struct page_table pt;
	assert_int_equal(page_table_init(&pt, 2), 0);
	page_remove(&pt, 1);
	assert_true(page_claim_absent(&pt, 0));
	assert_false(page_claim_absent(&pt, 0)); /* FILLING now */
	assert_false(page_claim_absent(&pt, 1)); /* REMOVED stays out */
	assert_int_equal(page_state_of(page_load(&pt, 1)), PAGE_REMOVED);
	page_table_fini(&pt);
}

/* page_rules.def is looked up for faults and requests; filling ahead
 * (page_claim_absent) and discards (page_remove) are coded by hand. Both
 * must do what the table's ACT_AHEAD and ACT_REMOVE rows say, for every
 * state and every flag a FILLING page can carry: the model checks the
 * table, so code that drifts from it is code the model does not cover. */
static const uint8_t filling_flags[] = {
	0,
	PAGE_WAKE_WANTED,
	PAGE_DISCARDED,
	PAGE_ZERO_FILL,
	PAGE_WAITER,
	PAGE_WAKE_WANTED | PAGE_DISCARDED | PAGE_ZERO_FILL | PAGE_WAITER,
};

/* Every byte a page can hold: each state, FILLING with each flag set. */
static size_t page_bytes(uint8_t out[16])
{
	size_t n = 0;
	for (int st = 0; st < PG_NSTATES; st++) {
		if (st != PG_FILLING) {
			out[n++] = (uint8_t)st;
			continue;
		}
		for (size_t f = 0; f < sizeof(filling_flags); f++)
			out[n++] = (uint8_t)(PG_FILLING | filling_flags[f]);
	}
	return n;
}

static void claim_absent_follows_ahead_row(void **state)
{
	uint8_t bytes[16];
	size_t n = page_bytes(bytes);
	for (size_t k = 0; k < n; k++) {
		struct page_table pt;
		assert_int_equal(page_table_init(&pt, 1), 0);
		atomic_store(&pt.state[0], bytes[k]);
		enum page_state st = page_state_of(bytes[k]);
		int rule = page_rule(ACT_AHEAD, st);
		bool claimed = page_claim_absent(&pt, 0);
		uint8_t after = page_load(&pt, 0);
		print_message("ACT_AHEAD on 0x%02x (state %d): rule %d, claimed %d, now 0x%02x\n",
			      bytes[k], st, rule, claimed, after);
		if (rule == DO_FILL) {
			/* Filling ahead claims for the snapshot's bytes. */
			assert_true(claimed);
			assert_int_equal(after, PAGE_FILLING);
		} else {
			/* The only other action the row may give. */
			assert_int_equal(rule, DO_SKIP);
			assert_false(claimed);
			assert_int_equal(after, bytes[k]);
		}
		page_table_fini(&pt);
	}
}

static void remove_follows_remove_row(void **state)
{
	uint8_t bytes[16];
	size_t n = page_bytes(bytes);
	for (size_t k = 0; k < n; k++) {
		struct page_table pt;
		assert_int_equal(page_table_init(&pt, 1), 0);
		atomic_store(&pt.state[0], bytes[k]);
		enum page_state st = page_state_of(bytes[k]);
		int rule = page_rule(ACT_REMOVE, st);
		enum page_state before = page_remove(&pt, 0);
		uint8_t after = page_load(&pt, 0);
		print_message("ACT_REMOVE on 0x%02x (state %d): rule %d, now 0x%02x\n",
			      bytes[k], st, rule, after);
		assert_int_equal(before, st);
		/* page_remove implements DO_DISCARD and nothing else. */
		assert_int_equal(rule, DO_DISCARD);
		if (st == PAGE_FILLING) /* its filler ends it REMOVED */
			assert_int_equal(after, bytes[k] | PAGE_DISCARDED);
		else
			assert_int_equal(after, PAGE_REMOVED);
		page_table_fini(&pt);
	}
}

/* Many threads race to claim every page: each page is won exactly once. */
#define RACE_PAGES 4096
#define RACE_THREADS 4
static struct page_table race_pt;
static _Atomic unsigned won[RACE_PAGES];

static void *racer(void *arg)
{
	for (size_t i = 0; i < RACE_PAGES; i++) {
		enum page_state prev;
		if (page_claim(&race_pt, i, &prev)) {
			atomic_fetch_add(&won[i], 1);
			page_finish(&race_pt, i);
		}
	}
	return NULL;
}

static void concurrent_claims_win_once(void **state)
{
	assert_int_equal(page_table_init(&race_pt, RACE_PAGES), 0);
	pthread_t t[RACE_THREADS];
	for (int i = 0; i < RACE_THREADS; i++)
		pthread_create(&t[i], NULL, racer, NULL);
	for (int i = 0; i < RACE_THREADS; i++)
		pthread_join(t[i], NULL);
	for (size_t i = 0; i < RACE_PAGES; i++)
		assert_int_equal(won[i], 1);
	page_table_fini(&race_pt);
}

/* A page is done once it needs nothing from the snapshot; each counts
 * once, whatever the path, and an abandoned fill does not count. */
static void progress_counts_each_page_once(void **state)
{
	struct page_table pt;
	struct page_progress pg = {.total = 4, .start_ns = 1};
	assert_int_equal(page_table_init(&pt, 4), 0);
	pt.progress = &pg;
	enum page_state prev;
	assert_true(page_claim(&pt, 0, &prev));
	page_abandon(&pt, 0);                   /* back to ABSENT: not done */
	assert_int_equal(atomic_load(&pg.done), 0);
	assert_true(page_claim(&pt, 0, &prev));
	page_finish(&pt, 0);                    /* PRESENT */
	page_remove(&pt, 0);                    /* PRESENT -> REMOVED: already done */
	assert_true(page_claim(&pt, 0, &prev)); /* refilled with zeros */
	page_finish(&pt, 0);
	assert_int_equal(atomic_load(&pg.done), 1);
	page_remove(&pt, 1);                    /* ABSENT -> REMOVED */
	assert_true(page_claim(&pt, 2, &prev));
	page_remove(&pt, 2);                    /* discarded while FILLING */
	page_abandon(&pt, 2);                   /* settles REMOVED */
	assert_int_equal(atomic_load(&pg.done), 3);
	assert_int_equal(atomic_load(&pg.complete_ns), 0);
	assert_true(page_claim(&pt, 3, &prev));
	page_poisoned(&pt, 3);
	assert_int_equal(atomic_load(&pg.done), 4);
	assert_true(atomic_load(&pg.complete_ns) != 0);
	page_table_fini(&pt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(claim_once),
		cmocka_unit_test(removed_claims_as_zero_fill),
		cmocka_unit_test(remove_while_filling_ends_removed),
		cmocka_unit_test(want_wake_only_while_filling),
		cmocka_unit_test(abandon_returns_to_previous),
		cmocka_unit_test(present_then_removed),
		cmocka_unit_test(claim_absent_leaves_removed_pages_out),
		cmocka_unit_test(claim_absent_follows_ahead_row),
		cmocka_unit_test(remove_follows_remove_row),
		cmocka_unit_test(concurrent_claims_win_once),
		cmocka_unit_test(progress_counts_each_page_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
