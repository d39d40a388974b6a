/* vcpu.c - the guest: vCPU threads walking their access plan, each access
 * either a read through the guest mapping (a user-mode uffd fault when the
 * page is absent) or, under secret-hiding, a "stage-2" access (fault request
 * on the socket when the bitmap bit is set, then pread from the memfd);
 * optionally followed by a pattern write. Every read is verified in full. */
#include "sim.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_VCPU 0x56435055ULL /* "VCPU" + id */

bool access_mapping(struct worker *w, uint64_t page, const char *path, bool workload)
{
	struct sim *s = w->sim;
	struct expect *e = &s->expect;
	const uint8_t *addr = guest_page_addr(&s->guest, page);
	volatile bool first = false; /* read after a siglongjmp (--on-sigbus skip) */

	if (workload)
		first = !(atomic_fetch_or(&e->flags[page], PAGEF_TOUCHED | PAGEF_MAPPED) &
			  PAGEF_MAPPED);
	/* Touch a random byte, not the page start: real guests fault anywhere
	 * and the handler must round the address down (for hugetlb the kernel
	 * reports an address that is not 2 MiB aligned). */
	uint64_t at = rng_below(&w->rng, s->guest.page_size);
	uint64_t t0 = first ? now_ns() : 0;
	sigjmp_buf jb;

	if (workload && s->opt->sigbus_skip) {
		/* A poisoned page: counted, not verified; on to the next. */
		if (sigsetjmp(jb, 1)) {
			guest_sigbus_arm(NULL);
			w->st.sigbus_skipped++;
			return first;
		}
		guest_sigbus_arm(&jb);
	}
	(void)*(volatile const uint8_t *)(addr + at);
	if (workload && s->opt->sigbus_skip)
		guest_sigbus_arm(NULL);
	if (first) {
		lat_add(&w->first_touch, now_ns() - t0);
		w->st.map_first++;
	} else if (workload) {
		w->st.map_present++;
	}
	expect_verify(e, page, addr, path);
	return first;
}

/* The guest's stage-2 view of a guest_memfd page: KVM exits to the VMM
 * while the page's bitmap bit is set; the VMM asks the handler, which must
 * fill the memfd and clear the bit before replying. Reads go through the
 * memfd, never the mapping, so they raise no uffd fault. */
static void access_stage2(struct worker *w, uint64_t page)
{
	struct sim *s = w->sim;
	struct guest *g = &s->guest;
	uint64_t off = guest_page_offset(g, page);

	atomic_fetch_or(&s->expect.flags[page], PAGEF_TOUCHED);
	if (guest_bit_is_set(g, page)) {
		uint64_t t0 = now_ns();

		stage2_request(s->s2, w->id, off);
		lat_add(&w->s2_rtt, now_ns() - t0);
		w->st.s2_requests++;
		if (guest_bit_is_set(g, page))
			fail_now(EXIT_WRONG, "stage-2 reply for page %" PRIu64 " (offset 0x%" PRIx64
				 ") came but its userfault bitmap bit is still set", page, off);
	} else {
		w->st.s2_bit_clear++;
	}
	int rc = pread_full(g->memfd, w->buf, g->page_size, off);

	if (rc)
		fail_now(EXIT_WRONG, "pread of page %" PRIu64 " from the guest memfd: %s", page,
			 strerror(-rc));
	expect_verify(&s->expect, page, w->buf, "stage-2 (memfd pread)");
}

static void maybe_write(struct worker *w, uint64_t page)
{
	struct sim *s = w->sim;

	if (s->opt->write_frac <= 0 || rng_unit(&w->rng) >= s->opt->write_frac)
		return;
	expect_wrlock(&s->expect, page);
	/* A write maps the page too: later reads are not first touches. */
	atomic_fetch_or(&s->expect.flags[page], PAGEF_TOUCHED | PAGEF_MAPPED);
	expect_write_pattern(&s->expect, page);
	expect_unlock(&s->expect, page);
	w->st.writes++;
}

static void *vcpu_main(void *arg)
{
	struct worker *w = arg;
	struct sim *s = w->sim;
	bool s2 = s->opt->protocol == PROTO_SECRET_HIDING && s->opt->stage2_frac > 0;

	for (uint64_t i = 0; i < w->plan->n; i++) {
		uint64_t page = w->plan->page[i];
		/* Path chosen per access: vCPUs sharing a page list hit the same
		 * page through both paths at about the same time. */
		bool via_s2 = s2 && rng_unit(&w->rng) < s->opt->stage2_frac;

		expect_rdlock(&s->expect, page);
		if (via_s2)
			access_stage2(w, page);
		else
			access_mapping(w, page, "mapping", true);
		expect_unlock(&s->expect, page);
		maybe_write(w, page);
		atomic_fetch_add_explicit(&s->progress, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&s->workload_done, 1, memory_order_relaxed);
	}
	return NULL;
}

static void start_thread(struct worker *w, void *(*fn)(void *), const char *what)
{
	int rc = pthread_create(&w->th, NULL, fn, w);

	/* Other threads may already be inside faults: no clean unwinding. */
	if (rc)
		fail_now(EXIT_SETUP, "starting %s thread %u: %s", what, w->id, strerror(rc));
	w->started = true;
}

static void join_thread(struct worker *w)
{
	if (w->started)
		pthread_join(w->th, NULL);
	w->started = false;
}

int vcpus_start(struct sim *s)
{
	bool s2 = s->opt->protocol == PROTO_SECRET_HIDING && s->opt->stage2_frac > 0;

	s->vcpu = xcalloc(s->nvcpus, sizeof(*s->vcpu));
	for (unsigned v = 0; v < s->nvcpus; v++) {
		struct worker *w = &s->vcpu[v];

		*w = (struct worker){ .sim = s, .id = v, .plan = &s->plans[v],
				      .rng = rng_make(s->opt->seed, STREAM_VCPU + v) };
		w->buf = xcalloc(1, s->guest.page_size);
		lat_init(&w->first_touch, w->plan->n);
		lat_init(&w->s2_rtt, s2 ? w->plan->n : 0);
		/* Fault the sample arrays in now: the report counts the page
		 * faults taken during the workload, which should be the guest's. */
		if (w->first_touch.ns)
			memset(w->first_touch.ns, 0, w->first_touch.cap * sizeof(uint32_t));
		if (w->s2_rtt.ns)
			memset(w->s2_rtt.ns, 0, w->s2_rtt.cap * sizeof(uint32_t));
	}
	for (unsigned v = 0; v < s->nvcpus; v++)
		start_thread(&s->vcpu[v], vcpu_main, "vCPU");
	return 0;
}

void vcpus_join(struct sim *s)
{
	for (unsigned v = 0; v < s->nvcpus; v++)
		join_thread(&s->vcpu[v]);
}

void workers_free(struct sim *s)
{
	struct worker *all[2] = { &s->vmm, &s->balloon };

	for (unsigned v = 0; s->vcpu && v < s->nvcpus; v++) {
		free(s->vcpu[v].buf);
		lat_free(&s->vcpu[v].first_touch);
		lat_free(&s->vcpu[v].s2_rtt);
	}
	free(s->vcpu);
	s->vcpu = NULL;
	for (int i = 0; i < 2; i++) {
		free(all[i]->buf);
		all[i]->buf = NULL;
	}
}

static void *verify_main(void *arg)
{
	struct worker *w = arg;
	struct sim *s = w->sim;

	for (uint64_t p = w->first; p < w->first + w->count; p++) {
		expect_rdlock(&s->expect, p);
		access_mapping(w, p, "verify-all", false);
		expect_unlock(&s->expect, p);
		w->st.verify_all++;
		atomic_fetch_add_explicit(&s->progress, 1, memory_order_relaxed);
	}
	return NULL;
}

/* Reads every page of guest memory through the mapping, the vCPU workers
 * splitting it (their threads have finished; the structs are reused). */
int verify_all(struct sim *s)
{
	uint64_t n = s->guest.npages;

	for (unsigned v = 0; v < s->nvcpus; v++) {
		s->vcpu[v].first = n * v / s->nvcpus;
		s->vcpu[v].count = n * (v + 1) / s->nvcpus - s->vcpu[v].first;
		start_thread(&s->vcpu[v], verify_main, "verify-all");
	}
	vcpus_join(s);
	return 0;
}
