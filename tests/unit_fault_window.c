/* unit_fault_window.c - the adaptive fault-around window, driven by
 * simulated guests: a page table of present bits, faults on absent pages
 * claimed as fault.c claims them (a contiguous run around the fault,
 * skipping the probe). Deterministic (a fixed LCG). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fault_window.h"

struct sim {
	struct fault_window fw;
	uint8_t *present;
	size_t npages;
	uint64_t faults, filled, max_window;
};

static void sim_init(struct sim *m, size_t npages, unsigned size, bool adaptive)
{
	memset(m, 0, sizeof(*m));
	fw_init(&m->fw, size, adaptive, npages);
	m->npages = npages;
	m->present = calloc(npages, 1);
	assert_non_null(m->present);
}

static void sim_touch(struct sim *m, size_t idx)
{
	if (m->present[idx])
		return;
	m->faults++;
	struct fw_plan p;
	fw_plan(&m->fw, m, m->npages, 0, 0, idx, &p);
	assert_true(p.lo <= idx && idx < p.hi && p.hi <= m->npages);
	assert_true(p.probe == SIZE_MAX || p.probe != idx);
	if (p.hi - p.lo > m->max_window)
		m->max_window = p.hi - p.lo;
	size_t probe = p.probe != SIZE_MAX && !m->present[p.probe] ? p.probe : SIZE_MAX;
	size_t lo = idx, hi = idx + 1;
	m->present[idx] = 1;
	while (lo > p.lo && lo - 1 != probe && !m->present[lo - 1])
		m->present[--lo] = 1;
	while (hi < p.hi && hi != probe && !m->present[hi])
		m->present[hi++] = 1;
	m->filled += hi - lo;
	fw_filled(&m->fw, m, &p, lo, hi, probe);
}

static uint64_t lcg(uint64_t *x)
{
	*x = *x * 6364136223846793005ull + 1442695040888963407ull;
	return *x >> 33;
}

/* A sequential scan: the window doubles to the maximum within a few
 * faults, and the scan of 64 Ki pages takes few faults. */
static void sequential_stream_grows(void **state)
{
	struct sim m;
	sim_init(&m, 65536, 0, true);
	for (size_t i = 0; i < m.npages; i++)
		sim_touch(&m, i);
	assert_int_equal(m.max_window, FW_SEQ_MAX);
	assert_true(m.faults < 65536 / FW_SEQ_MAX + 16);
	assert_int_equal(m.filled, m.npages);
	free(m.present);
}

/* Short runs (1 to 16 pages, ascending) in random order, each alone in
 * its 256-page block of [0, npages) (the guest never touches a run's
 * neighbours). */
static void isolated_runs(struct sim *m, size_t npages, uint64_t seed)
{
	size_t blocks = npages / 256;
	uint64_t x = seed;
	size_t *order = malloc(blocks * sizeof(*order));
	assert_non_null(order);
	for (size_t i = 0; i < blocks; i++)
		order[i] = i;
	for (size_t i = blocks - 1; i > 0; i--) { /* shuffle */
		size_t j = lcg(&x) % (i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (size_t b = 0; b < blocks; b++) {
		size_t len = 1 + lcg(&x) % 16, start = order[b] * 256 + lcg(&x) % 64;
		for (size_t i = start; i < start + len; i++)
			sim_touch(m, i);
	}
	free(order);
}

/* Isolated short runs: the pages filled ahead go unused, the window
 * shrinks to a small one; a fixed window stays what it is. */
static void random_short_runs_shrink(void **state)
{
	size_t npages = 1u << 22;
	struct sim m, f;
	sim_init(&m, npages, 0, true);
	sim_init(&f, npages, 64, false);
	assert_int_equal(fw_size(&m.fw), FW_AUTO_START);
	isolated_runs(&m, npages, 42);
	isolated_runs(&f, npages, 42);
	print_message("isolated runs: auto size %u (shrinks %lu grows %lu, probes %lu hit %lu), "
		      "filled %lu in %lu faults; fixed 64 filled %lu in %lu faults\n",
		      fw_size(&m.fw), (unsigned long)m.fw.shrinks, (unsigned long)m.fw.grows,
		      (unsigned long)m.fw.probes, (unsigned long)m.fw.probe_hits,
		      (unsigned long)m.filled, (unsigned long)m.faults,
		      (unsigned long)f.filled, (unsigned long)f.faults);
	assert_true(fw_size(&m.fw) <= 16);
	assert_true(m.filled < f.filled);
	assert_int_equal(fw_size(&f.fw), 64);
	free(m.present);
	free(f.present);
}

/* Dense random first touches (half of memory): the pages filled ahead
 * are used, the window grows but never beyond FW_AUTO_MAX for a random
 * access nor FW_SEQ_MAX for a sequential step. */
static void dense_random_bounded(void **state)
{
	struct sim m;
	size_t npages = 1u << 20;
	sim_init(&m, npages, 0, true);
	uint64_t x = 7;
	for (size_t n = 0; n < npages / 2; n++)
		sim_touch(&m, lcg(&x) % npages);
	assert_true(fw_size(&m.fw) <= FW_AUTO_MAX);
	print_message("size %u grows %lu shrinks %lu probes %lu hits %lu\n", fw_size(&m.fw), (unsigned long)m.fw.grows, (unsigned long)m.fw.shrinks, (unsigned long)m.fw.probes, (unsigned long)m.fw.probe_hits);
	assert_true(fw_size(&m.fw) >= 32);
	assert_true(m.max_window <= FW_SEQ_MAX);
	free(m.present);
}

/* Uniform random first touches of 25% of memory (bench w2): the pages
 * filled ahead are used, late; the window must not shrink for good, and
 * the guest must take about as few faults as with a fixed window of 64. */
static void random_quarter_keeps_up_with_64(void **state)
{
	size_t npages = 1u << 19;
	struct sim a, f;
	sim_init(&a, npages, 0, true);
	sim_init(&f, npages, 64, false);
	uint64_t x = 11, y = 11;
	for (size_t n = 0; n < npages / 4; n++) {
		sim_touch(&a, lcg(&x) % npages);
		sim_touch(&f, lcg(&y) % npages);
	}
	print_message("w2-like: auto %lu faults (size %u, shrinks %lu grows %lu), fixed 64 %lu faults\n",
		      (unsigned long)a.faults, fw_size(&a.fw), (unsigned long)a.fw.shrinks,
		      (unsigned long)a.fw.grows, (unsigned long)f.faults);
	assert_true(a.faults * 100 <= f.faults * 115);
	free(a.present);
	free(f.present);
}

/* Short runs (1 to 16 pages, about 8) covering 15% of memory in random
 * order (bench w5): far fewer faults than with no window at all. */
static void clustered_runs_beat_no_window(void **state)
{
	size_t npages = 1u << 19;
	struct sim a, f;
	sim_init(&a, npages, 0, true);
	sim_init(&f, npages, 64, false);
	uint64_t x = 5, y = 5;
	uint64_t touched = 0, touched_f = 0;
	while (touched < npages * 15 / 100) {
		size_t len = 1 + lcg(&x) % 16, start = lcg(&x) % (npages - len);
		size_t len_f = 1 + lcg(&y) % 16, start_f = lcg(&y) % (npages - len_f);
		for (size_t i = start; i < start + len; i++, touched++)
			sim_touch(&a, i);
		for (size_t i = start_f; i < start_f + len_f; i++, touched_f++)
			sim_touch(&f, i);
	}
	print_message("w5-like: auto %lu faults %lu filled (size %u), fixed 64 %lu faults %lu filled, none %lu faults\n",
		      (unsigned long)a.faults, (unsigned long)a.filled, fw_size(&a.fw),
		      (unsigned long)f.faults, (unsigned long)f.filled, (unsigned long)touched);
	assert_true(a.faults * 4 < touched);
	free(a.present);
	free(f.present);
}

/* A window that has shrunk grows back when the guest turns sequential. */
static void shrunk_window_grows_back(void **state)
{
	struct sim m;
	size_t npages = (1u << 22) + 16384;
	sim_init(&m, npages, 0, true);
	isolated_runs(&m, 1u << 22, 3);
	assert_true(fw_size(&m.fw) <= 16);
	uint64_t before = m.faults;
	for (size_t i = 1u << 22; i < npages; i++)
		sim_touch(&m, i);
	assert_true(m.faults - before < 16384 / FW_SEQ_MAX + 16);
	free(m.present);
}

/* Off is off: no window, no probe. */
static void off_fills_one_page(void **state)
{
	struct sim m;
	sim_init(&m, 1024, 0, false);
	for (size_t i = 0; i < 1024; i++)
		sim_touch(&m, i);
	assert_int_equal(m.faults, 1024);
	assert_int_equal(m.max_window, 1);
	free(m.present);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sequential_stream_grows),
		cmocka_unit_test(random_short_runs_shrink),
		cmocka_unit_test(dense_random_bounded),
		cmocka_unit_test(random_quarter_keeps_up_with_64),
		cmocka_unit_test(clustered_runs_beat_no_window),
		cmocka_unit_test(shrunk_window_grows_back),
		cmocka_unit_test(off_fills_one_page),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
