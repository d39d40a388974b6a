/* balloon.c - a virtio-balloon stand-in: discards random page ranges with
 * madvise while the vCPUs run, which sends UFFD_EVENT_REMOVE to the handler.
 * Playing Firecracker before v1.12 on anonymous memory it first maps a fresh
 * anonymous range over the discarded one (remap), as those versions did for
 * every restored VM: the range leaves the uffd, the handler gets no event,
 * and its fills there fail with ENOENT (range no longer registered).
 *
 * Afterwards the pages must read as zeros (the handler must never bring the
 * snapshot bytes back), except for memfd + MADV_DONTNEED: that only drops
 * our page table entries and the memfd keeps the data, so there the pages
 * must read unchanged. To make "unchanged" well defined we read (and so
 * populate) each page first in that mode. */
#include "sim.h"

#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>

#define STREAM_BALLOON 0x42414c4cULL
#define MAX_RANGE_PAGES 16 /* balloon ranges: 1..16 pages */
/* How often to look at vCPU progress: fine enough to spread discards over
 * short runs, coarse enough to cost nothing. */
#define PACE_NS 1000000ULL

/* Discard i of N happens once (i+1)/(N+1) of the vCPU accesses are done,
 * spreading discards over the run whatever its length. */
static void wait_for_turn(struct sim *s, unsigned i)
{
	uint64_t target = s->planned * (i + 1) / (s->opt->balloon + 1ULL);

	while (atomic_load_explicit(&s->workload_done, memory_order_relaxed) < target)
		sleep_ns(PACE_NS);
}

/* A range inside one region (regions are not adjacent in the address
 * space). */
static void pick_range(struct worker *w, uint64_t *first, uint64_t *n)
{
	const struct guest *g = &w->sim->guest;
	uint64_t p = rng_below(&w->rng, g->npages), len = 1 + rng_below(&w->rng, MAX_RANGE_PAGES);
	const struct guest_region *r = &g->region[guest_region_of(g, p)];
	uint64_t end = r->first_page + r->npages;

	*first = p;
	*n = p + len > end ? end - p : len;
}

static void discard(struct worker *w, uint64_t first, uint64_t n)
{
	struct sim *s = w->sim;
	struct guest *g = &s->guest;
	bool remove = s->opt->advice == ADVICE_REMOVE;
	bool keeps_data = g->memory == GUEST_MEMFD && !remove;
	uint8_t *addr = guest_page_addr(g, first);

	expect_range_wrlock(&s->expect, first, n);
	for (uint64_t p = first; keeps_data && p < first + n; p++) {
		access_mapping(w, p, "balloon read before MADV_DONTNEED", false);
		w->st.balloon_reads++;
	}
	if (s->opt->advice == ADVICE_REMAP &&
	    mmap(addr, n * g->page_size, PROT_READ | PROT_WRITE,
		 MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE, -1, 0) == MAP_FAILED)
		fail_now(EXIT_SETUP, "balloon: mmap(MAP_FIXED) over pages %" PRIu64 "..%" PRIu64
			 ": %m", first, first + n - 1);
	if (madvise(addr, n * g->page_size, remove ? MADV_REMOVE : MADV_DONTNEED))
		fail_now(EXIT_SETUP, "balloon: madvise(%s) of pages %" PRIu64 "..%" PRIu64 ": %m",
			 remove ? "MADV_REMOVE" : "MADV_DONTNEED", first, first + n - 1);
	for (uint64_t p = first; !keeps_data && p < first + n; p++)
		expect_set_zero(&s->expect, p);
	expect_range_unlock(&s->expect, first, n);
	w->st.discards++;
	w->st.discarded_pages += n;
	atomic_fetch_add_explicit(&s->progress, 1, memory_order_relaxed);
}

static void *balloon_main(void *arg)
{
	struct worker *w = arg;

	for (unsigned i = 0; i < w->sim->opt->balloon; i++) {
		uint64_t first, n;

		wait_for_turn(w->sim, i);
		pick_range(w, &first, &n);
		discard(w, first, n);
	}
	return NULL;
}

int balloon_start(struct sim *s)
{
	struct worker *w = &s->balloon;

	*w = (struct worker){ .sim = s, .rng = rng_make(s->opt->seed, STREAM_BALLOON) };
	int rc = pthread_create(&w->th, NULL, balloon_main, w);

	if (rc)
		fail_now(EXIT_SETUP, "starting the balloon thread: %s", strerror(rc));
	w->started = true;
	return 0;
}

void balloon_join(struct sim *s)
{
	if (s->balloon.started)
		pthread_join(s->balloon.th, NULL);
	s->balloon.started = false;
}
