/* test_prefetch.c - filling ahead of the guest: fault-around, working-set
 * replay, background and eager population, first-touch recording. Every
 * byte is checked; counters show that faults were avoided and no page was
 * filled twice or over the guest's own data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "pagein.h"
#include "session.h"

static int fault_around_fills_the_window(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0),
			     .fault_around = 16};
	int t = rig_start_opts(&r, mem, 256, &o);
	if (t != TC_PASS)
		return t;
	int bad = 0;
	for (uint64_t i = 32; i < 48; i++) /* one aligned window */
		bad += !rig_check_page(&r, i);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	TC_CHECK(st.faults_missing == 1);
	TC_CHECK(st.filled_fault == 1 && st.filled_fault_around == 15);
	return TC_PASS;
}

/* From a pagein snapshot, a fault fills the whole chunk it decompressed. */
static int fault_around_covers_the_chunk(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .fault_around = 16, .pagein_chunk = 256 << 10};
	int t = rig_start_opts(&r, mem, 256, &o);
	if (t != TC_PASS)
		return t;
	int bad = 0;
	for (uint64_t i = 70; i < 128; i++) /* chunk 1 is pages 64-127 */
		bad += !rig_check_page(&r, i);
	for (uint64_t i = 64; i < 70; i++)
		bad += !rig_check_page(&r, i);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	TC_CHECK(st.faults_missing == 1);
	TC_CHECK(st.filled_fault + st.filled_fault_around == 64);
	return TC_PASS;
}

static int fault_around_grows_on_sequential_scans(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .fault_around = 16};
	int t = rig_start_opts(&r, mem, 4096, &o);
	if (t != TC_PASS)
		return t;
	int bad = 0;
	for (uint64_t i = 0; i < r.npages; i++)
		bad += !rig_check_page(&r, i);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	/* 16, 32, ..., 512, then 512 at a time: 6 + 6 faults, not 256. */
	printf("  %llu faults for %llu pages\n", (unsigned long long)st.faults_missing,
	       (unsigned long long)r.npages);
	TC_CHECK(st.faults_missing <= 16);
	TC_CHECK(st.filled_fault + st.filled_fault_around == r.npages);
	return TC_PASS;
}

static bool fault_counted(const struct pagein_stats *st, void *arg)
{
	return st->filled_fault >= *(uint64_t *)arg;
}

/* A page filled by a stage-2 request and written by the guest sits inside
 * a later fault's window: fault-around must leave it alone. */
static int fault_around_never_overwrites(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | TC_REG_MINOR, .stage2 = true, .fault_around = 16};
	int t = rig_start_opts(&r, mem, 64, &o);
	if (t != TC_PASS)
		return t;
	uint64_t len;
	bool zero;
	struct pagein_error err = {{0}};
	TC_CHECK(pagein_session_populate_offset(r.s, 3 * PS, &len, &zero, &err) == 0);
	unsigned char mine[PS];
	memset(mine, 0xcd, PS);
	TC_CHECK(pwrite(r.g.memfd, mine, PS, 3 * PS) == (ssize_t)PS); /* the guest writes */
	int bad = !rig_check_page(&r, 0); /* window [0, 16) */
	/* The fill wakes us before it is counted: wait for the count. */
	uint64_t one = 1;
	rig_wait_stats(&r, fault_counted, &one);
	struct pagein_stats st;
	pagein_session_stats(r.s, &st);
	uint64_t around = st.filled_fault_around;
	bad += !tc_check_page(r.g.base + 3 * PS, mine, 3);
	for (uint64_t i = 4; i < 16; i++)
		bad += !rig_check_page(&r, i);
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	TC_CHECK(around == 2); /* pages 1-2: the run stops at 3 */
	return TC_PASS;
}

/* After the fault is read: page 5 enters the page cache behind our back,
 * so the window's multi-page UFFDIO_COPY stops there with EEXIST after a
 * partial copy. */
static void pwrite_page5(struct pagein_session *s, void *arg)
{
	struct rig *r = arg;
	unsigned char page[PS];
	memset(page, 0x77, PS);
	if (pwrite(r->g.memfd, page, PS, 5 * PS) != (ssize_t)PS)
		perror("pwrite");
	s->test_after_read = NULL;
}

static int partial_copy_resumes_after_eexist(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .fault_around = 16, .hook = pwrite_page5};
	int t = rig_start_opts(&r, mem, 64, &o);
	if (t != TC_PASS)
		return t;
	int bad = !rig_check_page(&r, 0);
	unsigned char foreign[PS];
	memset(foreign, 0x77, PS);
	bad += !tc_check_page(r.g.base + 5 * PS, foreign, 5); /* not overwritten */
	for (uint64_t i = 1; i < 16; i++)
		if (i != 5)
			bad += !rig_check_page(&r, i);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	TC_CHECK(st.eexist == 1);
	TC_CHECK(st.faults_missing == 1); /* the window, page 5 aside, came in one fault */
	TC_CHECK(st.pages_copied + st.pages_zeroed == 15);
	return TC_PASS;
}

static bool prefetched(const struct pagein_stats *st, void *arg)
{
	return st->filled_prefetch >= *(uint64_t *)arg;
}

static int working_set_is_filled_before_it_is_touched(enum tc_mem mem)
{
	uint64_t ws[100];
	for (uint64_t i = 0; i < 100; i++)
		ws[i] = (100 + (i * 37) % 100) * PS; /* pages 100-199, scrambled */
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0),
			     .ws = ws, .nws = 100};
	int t = rig_start_opts(&r, mem, 512, &o);
	if (t != TC_PASS)
		return t;
	uint64_t want = 100;
	bool done = rig_wait_stats(&r, prefetched, &want);
	int bad = 0;
	for (uint64_t i = 100; i < 200; i++)
		bad += !rig_check_page(&r, i);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(done && bad == 0);
	TC_CHECK(st.faults_missing == 0 && st.faults_minor == 0);
	TC_CHECK(st.filled_prefetch == 100);
	return TC_PASS;
}

struct toucher {
	struct rig *r;
	uint64_t from, step;
	int bad;
};

static void *touch_stride(void *arg)
{
	struct toucher *t = arg;
	for (uint64_t i = t->from; i < t->r->npages; i += t->step)
		t->bad += !rig_check_page(t->r, i);
	return NULL;
}

static int replay_races_the_guest(enum tc_mem mem)
{
	uint64_t n = 8192;
	uint64_t *ws = malloc(n * sizeof(*ws));
	for (uint64_t i = 0; i < n; i++)
		ws[i] = ((i * 4099) % n) * PS;
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0),
			     .ws = ws, .nws = n, .fault_around = 16};
	int t = rig_start_opts(&r, mem, n, &o);
	free(ws);
	if (t != TC_PASS)
		return t;
	struct toucher a = {&r, 0, 2, 0}, b = {&r, 1, 2, 0};
	pthread_t ta, tb;
	pthread_create(&ta, NULL, touch_stride, &a);
	pthread_create(&tb, NULL, touch_stride, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(a.bad == 0 && b.bad == 0);
	printf("  prefetch %llu, fault %llu, fault-around %llu\n",
	       (unsigned long long)st.filled_prefetch, (unsigned long long)st.filled_fault,
	       (unsigned long long)st.filled_fault_around);
	/* Every page once, by whichever path got there first. */
	TC_CHECK(st.filled_prefetch + st.filled_fault + st.filled_fault_around == n);
	TC_CHECK(st.pages_copied + st.pages_zeroed == n);
	return TC_PASS;
}

static bool complete(const struct pagein_stats *st, void *arg)
{
	return st->complete_ns != 0;
}

static int background_population_completes(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0),
			     .populate = PAGEIN_POPULATE_BACKGROUND};
	int t = rig_start_opts(&r, mem, 8192, &o);
	if (t != TC_PASS)
		return t;
	bool done = rig_wait_stats(&r, complete, NULL);
	int bad = 0;
	for (uint64_t i = 0; i < r.npages; i++)
		bad += !rig_check_page(&r, i);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(done && bad == 0);
	TC_CHECK(st.faults_missing == 0);
	TC_CHECK(st.filled_background == r.npages);
	return TC_PASS;
}

/* Pages discarded before the background fill reaches them read as zeros,
 * and a discard racing the fill never leaves snapshot bytes behind. */
static int background_respects_discards(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .populate = PAGEIN_POPULATE_BACKGROUND};
	int t = rig_start_opts(&r, mem, 16384, &o);
	if (t != TC_PASS)
		return t;
	int advice = mem == TC_MEMFD ? MADV_REMOVE : MADV_DONTNEED;
	for (uint64_t i = 0; i < r.npages; i += 97)
		madvise(r.g.base + i * PS, 4 * PS, advice);
	bool done = rig_wait_stats(&r, complete, NULL);
	if (!done)
		fprintf(stderr, "  not complete: %s\n", pagein_session_prefetch_error(r.s) ?: "no error");
	unsigned char zero[PS] = {0};
	int bad = 0;
	for (uint64_t i = 0; i < r.npages; i++) {
		bool discarded = i % 97 < 4;
		bad += discarded ? !tc_check_page(r.g.base + i * PS, zero, i) : !rig_check_page(&r, i);
	}
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(done && bad == 0);
	return TC_PASS;
}

static int eager_fills_everything_first(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0),
			     .populate = PAGEIN_POPULATE_EAGER};
	int t = rig_start_opts(&r, mem, 4096, &o);
	if (t != TC_PASS)
		return t;
	struct pagein_stats st;
	pagein_session_stats(r.s, &st);
	bool was_complete = st.complete_ns != 0;
	int bad = 0;
	for (uint64_t i = 0; i < r.npages; i++)
		bad += !rig_check_page(&r, i);
	rig_stop(&r, &st);
	TC_CHECK(was_complete && bad == 0);
	TC_CHECK(st.faults_missing == 0 && st.filled_background == r.npages);
	return TC_PASS;
}

/* With no filling ahead, the faults themselves complete the restore: the
 * page that fills the last hole stamps complete_ns, and the throughput is
 * over the time to complete, not diluted by the idle time after it. A
 * discarded page needs nothing more: it counts as done. */
static int faults_alone_complete(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .populate = PAGEIN_POPULATE_NONE,
			     .fault_around = 0};
	int t = rig_start_opts(&r, mem, 256, &o);
	if (t != TC_PASS)
		return t;
	int bad = 0;
	for (uint64_t i = 0; i < r.npages - 1; i++)
		bad += !rig_check_page(&r, i);
	struct pagein_stats before;
	pagein_session_stats(r.s, &before);
	/* The last page is discarded, not faulted. */
	madvise(r.g.base + (r.npages - 1) * PS, PS, mem == TC_MEMFD ? MADV_REMOVE : MADV_DONTNEED);
	bool done = rig_wait_stats(&r, complete, NULL);
	struct pagein_stats at;
	pagein_session_stats(r.s, &at);
	usleep(200 * 1000); /* idle: must change neither */
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0 && done);
	TC_CHECK(before.complete_ns == 0);
	TC_CHECK(st.faults_missing == r.npages - 1 && st.filled_fault == r.npages - 1);
	TC_CHECK(st.complete_ns == at.complete_ns && st.complete_ns <= at.elapsed_ns);
	TC_CHECK(st.elapsed_ns >= st.complete_ns + 200 * 1000 * 1000ull);
	/* MB/s = (bytes / 10^6) / (complete_ns / 10^9) */
	double want = ((double)st.bytes_read / 1e6) / ((double)st.complete_ns / 1e9);
	double got = pagein_stats_throughput(&st);
	TC_CHECK(st.bytes_read > 0 && got > want * 0.999999 && got < want * 1.000001);
	TC_CHECK(pagein_stats_throughput(&at) == pagein_stats_throughput(&st));
	char line[1024];
	pagein_stats_format(&st, line, sizeof(line));
	TC_CHECK(strstr(line, "; complete in ") && strstr(line, " s at ") && strstr(line, " MB/s"));
	pagein_stats_format(&before, line, sizeof(line));
	TC_CHECK(strstr(line, "; not complete, ") && strstr(line, " MB/s so far"));
	return TC_PASS;
}

static int recording_keeps_first_touch_order(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0),
			     .stage2 = mem == TC_MEMFD, .record = true};
	int t = rig_start_opts(&r, mem, 64, &o);
	if (t != TC_PASS)
		return t;
	int bad = !rig_check_page(&r, 7);
	bad += !rig_check_page(&r, 3);
	bad += !rig_check_page(&r, 9);
	bad += !rig_check_page(&r, 3);
	if (mem == TC_MEMFD) {
		uint64_t len;
		bool zero;
		struct pagein_error err = {{0}};
		pagein_session_populate_offset(r.s, 11 * PS, &len, &zero, &err);
	}
	uint64_t *off;
	size_t n;
	int rr = pagein_session_recorded(r.s, &off, &n);
	rig_stop(&r, NULL);
	TC_CHECK(rr == 0 && bad == 0);
	TC_CHECK(n == (mem == TC_MEMFD ? 4u : 3u));
	TC_CHECK(off[0] == 7 * PS && off[1] == 3 * PS && off[2] == 9 * PS);
	if (mem == TC_MEMFD)
		TC_CHECK(off[3] == 11 * PS);
	free(off);
	return TC_PASS;
}

int main(void)
{
	static const struct tc_case cases[] = {
		{"fault_around_fills_the_window", fault_around_fills_the_window, TC_ANON | TC_MEMFD},
		{"fault_around_covers_the_chunk", fault_around_covers_the_chunk, TC_ANON | TC_MEMFD},
		{"fault_around_grows_on_sequential_scans", fault_around_grows_on_sequential_scans, TC_ANON | TC_MEMFD},
		{"fault_around_never_overwrites", fault_around_never_overwrites, TC_MEMFD},
		{"partial_copy_resumes_after_eexist", partial_copy_resumes_after_eexist, TC_MEMFD},
		{"working_set_is_filled_before_it_is_touched", working_set_is_filled_before_it_is_touched, TC_ANON | TC_MEMFD},
		{"replay_races_the_guest", replay_races_the_guest, TC_ANON | TC_MEMFD},
		{"background_population_completes", background_population_completes, TC_ANON | TC_MEMFD},
		{"background_respects_discards", background_respects_discards, TC_ANON | TC_MEMFD},
		{"eager_fills_everything_first", eager_fills_everything_first, TC_ANON | TC_MEMFD},
		{"faults_alone_complete", faults_alone_complete, TC_ANON | TC_MEMFD},
		{"recording_keeps_first_touch_order", recording_keeps_first_touch_order, TC_ANON | TC_MEMFD},
	};
	return tc_run(cases, sizeof(cases) / sizeof(cases[0]));
}
