/* test_engine.c - the fail-safe engine: regression tests for what once
 * froze a guest, killed the daemon or handed a guest zeros (issue 7's
 * items 2 to 6, 9 and 10), in process, each staged so that the old engine
 * fails it (it hangs: the runner's timeout and the watchdog below catch
 * that) and the new one passes.
 *
 *   - nobody reads the uffd, a REMOVE is queued: the filler that meets
 *     EAGAIN becomes the pump (it used to sleep-and-retry for ever);
 *   - teardown with a discard pending returns, and so does the madvise;
 *   - a poisoned page answers stage-2 requests with an error, its
 *     userfault bit stays set;
 *   - filling ahead never zero-fills a page discarded while it held it;
 *   - ENOENT gives up that range, not the session;
 *   - a bad chunk is remembered: one load, one error for all its pages;
 *     in poison mode a fault poisons its fault-around window at once;
 *   - a VMM's truncated bitmap or a shrunk raw snapshot fails that session
 *     only, with a sentence that says so, and no SIGBUS;
 *   - a uffd whose O_NONBLOCK the VMM cleared never blocks a reader. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common.h"
#include "fill.h"
#include "pagein.h"
#include "session.h"
#include "snapshot_format.h"
#include "source.h"
#include "uffd.h"

/* A hang is this test's failure mode: a watchdog turns it into one. */
static void on_alarm(int sig)
{
	static const char msg[] = "  watchdog: the engine is stuck (a frozen guest)\n";
	ssize_t n = write(2, msg, sizeof(msg) - 1);
	(void)n;
	_exit(TC_FAIL);
}

static void watchdog(unsigned seconds)
{
	signal(SIGALRM, on_alarm);
	alarm(seconds);
}

/* Checks page i without faulting: through the memfd when there is one (a
 * page filled by pwrite is in the cache but not mapped), else the mapping
 * of a page known PRESENT. */
static bool page_ok(struct rig *r, uint64_t i)
{
	if (r->g.memfd < 0)
		return rig_check_page(r, i);
	unsigned char got[PS], want[PS];
	if (pread(r->g.memfd, got, PS, (off_t)(i * PS)) != (ssize_t)PS)
		return false;
	tc_page(r->seed, i, want);
	return tc_check_page(got, want, i);
}

struct discard {
	void *addr;
	size_t len;
	int advice;
	int rc;
	pthread_t th;
};

static void *discard_thread(void *arg)
{
	struct discard *d = arg;
	d->rc = madvise(d->addr, d->len, d->advice);
	return NULL;
}

/* Starts a madvise() that queues a REMOVE and blocks until it is read. */
static void discard_start(struct discard *d, struct rig *r, uint64_t first,
			  uint64_t n)
{
	d->addr = r->g.base + first * PS;
	d->len = n * PS;
	d->advice = r->g.mem == TC_MEMFD ? MADV_REMOVE : MADV_DONTNEED;
	d->rc = -2;
	pthread_create(&d->th, NULL, discard_thread, d);
	usleep(50 * 1000); /* queued: every fill now gets EAGAIN */
}

static bool complete(const struct pagein_stats *st, void *arg)
{
	return st->complete_ns != 0;
}

/* Item 2: a REMOVE is queued and no thread runs the session. Background
 * population meets EAGAIN on its first fill; it must read the events
 * itself (become the pump), or it spins for ever and the VMM's madvise
 * never returns. A stage-2 request meanwhile is answered too. */
static int filler_becomes_the_pump(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0),
			     .stage2 = mem == TC_MEMFD, .no_runner = true};
	int t = rig_start_opts(&r, mem, 2048, &o);
	if (t != TC_PASS)
		return t;
	watchdog(60);
	struct discard d;
	discard_start(&d, &r, 100, 16);
	struct pagein_error err = {{0}};
	struct pagein_prefetch pf = {.populate = PAGEIN_POPULATE_BACKGROUND};
	TC_CHECK(pagein_session_prefetch(r.s, &pf, &err) == 0);
	if (mem == TC_MEMFD) {
		uint64_t len;
		bool zero;
		TC_CHECK(pagein_session_populate_offset(r.s, 1500 * PS, &len, &zero, &err) == 0);
		TC_CHECK(len == PS && !rig_bit_set(&r, 1500));
	}
	pthread_join(d.th, NULL);
	TC_CHECK(d.rc == 0);
	TC_CHECK(rig_wait_stats(&r, complete, NULL));
	/* Every page but the discarded ones is in (reading them faults for
	 * nobody); the discarded ones stay out. */
	int bad = 0;
	struct region *rg = &r.s->regions[0];
	for (uint64_t i = 0; i < 2048; i++) {
		enum page_state st = page_state_of(page_load(&rg->pages, i));
		if (i >= 100 && i < 116)
			bad += st != PAGE_REMOVED;
		else
			bad += st != PAGE_PRESENT || !page_ok(&r, i);
	}
	struct pagein_stats st;
	rig_stop(&r, &st);
	alarm(0);
	TC_CHECK(bad == 0);
	TC_CHECK(st.eagain >= 1);
	TC_CHECK(st.removes == 1);
	return TC_PASS;
}

/* Item 3: the session ends while a discard is pending and its prefetch
 * thread meets EAGAIN. Freeing it must return, and so must the madvise. */
static int teardown_with_a_pending_discard(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .no_runner = true};
	int t = rig_start_opts(&r, mem, 4096, &o);
	if (t != TC_PASS)
		return t;
	watchdog(60);
	struct discard d;
	discard_start(&d, &r, 3000, 8);
	struct pagein_error err = {{0}};
	struct pagein_prefetch pf = {.populate = PAGEIN_POPULATE_BACKGROUND};
	TC_CHECK(pagein_session_prefetch(r.s, &pf, &err) == 0);
	pagein_session_free(r.s); /* must return, and release the madvise */
	r.s = NULL;
	pthread_join(d.th, NULL);
	alarm(0);
	rig_stop(&r, NULL);
	TC_CHECK(d.rc == 0);
	return TC_PASS;
}

/* Truncates the served pagein file to its first chunks: later chunks
 * cannot be read any more (a bad chunk). */
static void cut_snapshot(struct rig *r, uint64_t keep_chunks, uint64_t chunk)
{
	const struct snapshot_meta *m = source_pagein_meta(r->src);
	uint64_t end = m->chunks[keep_chunks].offset;
	(void)chunk;
	if (truncate(r->snap, (off_t)end) < 0)
		perror("truncate");
}

/* Item 4: with --on-corrupt poison a page the snapshot cannot give gets
 * its own state: a stage-2 request for it is refused (-EHWPOISON), again
 * and again, and its userfault bit is never cleared (KVM would otherwise
 * map a zero page). Pages elsewhere are served. */
static int poisoned_page_refuses_requests(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | TC_REG_MINOR, .stage2 = true,
			     .pagein_chunk = 64 << 10, .on_corrupt = PAGEIN_CORRUPT_POISON};
	int t = rig_start_opts(&r, mem, 256, &o);
	if (t != TC_PASS)
		return t;
	cut_snapshot(&r, 2, 64 << 10); /* chunks 2 and 3 (pages 32-63) are gone */
	struct pagein_error err = {{0}};
	uint64_t len;
	bool zero;
	int r1 = pagein_session_populate_offset(r.s, 40 * PS, &len, &zero, &err);
	int r2 = pagein_session_populate_offset(r.s, 40 * PS, &len, &zero, &err);
	bool bit = rig_bit_set(&r, 40);
	int r3 = pagein_session_populate_offset(r.s, 5 * PS, &len, &zero, &err);
	bool good = page_ok(&r, 5);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(r1 == -EHWPOISON);
	TC_CHECK(r2 == -EHWPOISON);
	TC_CHECK(bit);
	TC_CHECK(r3 == 0 && good);
	TC_CHECK(st.pages_poisoned == 1);
	return TC_PASS;
}

/* Item 10: a chunk that failed is remembered: one load, then every page
 * of it fails at once, and the error covers the rest of the chunk. */
static int bad_chunk_is_remembered(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .pagein_chunk = 64 << 10};
	int t = rig_start_opts(&r, mem, 256, &o);
	if (t != TC_PASS)
		return t;
	cut_snapshot(&r, 2, 64 << 10);
	struct source_extent ext;
	struct pagein_source *src = r.src;
	int e1 = src->ops->get(src, 33 * PS, PS, &ext);
	uint64_t len1 = ext.len, chunk1 = ext.bad_chunk;
	struct source_pagein_stats a, b;
	source_pagein_stats(src, &a);
	int e2 = src->ops->get(src, 34 * PS, PS, &ext);
	source_pagein_stats(src, &b);
	rig_stop(&r, NULL);
	TC_CHECK(e1 == -EIO || e1 == -EBADMSG);
	TC_CHECK(e2 == e1);
	TC_CHECK(chunk1 == 2 && ext.bad_chunk == 2);
	TC_CHECK(len1 == (48 - 33) * PS); /* to the end of chunk 2 */
	TC_CHECK(b.misses == a.misses);   /* not loaded again */
	return TC_PASS;
}

/* A guest read that may meet a poisoned page: true if it got SIGBUS. */
static sigjmp_buf bus_jmp;
static void on_bus(int sig)
{
	siglongjmp(bus_jmp, 1);
}

static bool touch_gets_sigbus(struct rig *r, uint64_t i)
{
	struct sigaction sa = {.sa_handler = on_bus}, old;
	sigaction(SIGBUS, &sa, &old);
	volatile bool bus = false;
	if (sigsetjmp(bus_jmp, 1) == 0)
		(void)*(volatile unsigned char *)(r->g.base + i * PS);
	else
		bus = true;
	sigaction(SIGBUS, &old, NULL);
	return bus;
}

/* Item 10, poison mode with fault-around: the first fault in a bad chunk
 * poisons its whole window at once (one ioctl, not a page per fault), the
 * chunk is read once, and the window's other pages then fault straight
 * into their poison, never into the snapshot again. */
static int bad_chunk_poisons_the_window_once(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .fault_around = 16,
			     .pagein_chunk = 64 << 10, .on_corrupt = PAGEIN_CORRUPT_POISON};
	int t = rig_start_opts(&r, mem, 256, &o);
	if (t != TC_PASS)
		return t;
	watchdog(60);
	cut_snapshot(&r, 2, 64 << 10); /* chunk 2 (pages 32-47) is gone */
	struct source_pagein_stats a, b, c;
	source_pagein_stats(r.src, &a);
	bool bus1 = touch_gets_sigbus(&r, 36);
	/* The SIGBUS comes from the POISON ioctl, inside the pump's round;
	 * the window's states settle after it, before the round ends. */
	session_quiesce(r.s);
	source_pagein_stats(r.src, &b);
	struct region *rg = &r.s->regions[0];
	int poisoned = 0;
	for (size_t i = 32; i < 48; i++)
		poisoned += page_state_of(page_load(&rg->pages, i)) == PAGE_POISONED;
	int later_bus = 0;
	for (uint64_t i = 32; i < 48; i++)
		later_bus += i != 36 && touch_gets_sigbus(&r, i);
	source_pagein_stats(r.src, &c);
	bool good = rig_check_page(&r, 5);
	struct pagein_stats st;
	rig_stop(&r, &st);
	alarm(0);
	fprintf(stderr, "  %llu faults; poisoned %d of the window, %llu counted; misses %llu -> %llu -> %llu\n",
		(unsigned long long)st.faults_missing,
		poisoned, (unsigned long long)st.pages_poisoned, (unsigned long long)a.misses,
		(unsigned long long)b.misses, (unsigned long long)c.misses);
	TC_CHECK(bus1);
	TC_CHECK(poisoned == 16);             /* the whole window at once */
	TC_CHECK(later_bus == 15);            /* each in its poison */
	TC_CHECK(st.faults_missing == 2);     /* 36 and 5: poisoned ones never reach pagein */
	TC_CHECK(st.pages_poisoned == 16);    /* counted once each */
	TC_CHECK(b.misses == a.misses + 1);   /* the chunk read once */
	TC_CHECK(c.misses == b.misses);       /* and never again */
	TC_CHECK(good);
	return TC_PASS;
}

/* Item 9: pages claimed ahead of the guest and discarded before their
 * fill settle REMOVED unfilled: no zero page brought back into memory the
 * balloon just freed. */
static int ahead_skips_discarded_pages(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .no_runner = true};
	int t = rig_start_opts(&r, mem, 64, &o);
	if (t != TC_PASS)
		return t;
	struct region *rg = &r.s->regions[0];
	for (size_t i = 8; i < 24; i++)
		TC_CHECK(page_claim_absent(&rg->pages, i));
	page_remove(&rg->pages, 15); /* the REMOVE arrives while we hold it */
	page_remove(&rg->pages, 19); /* a snapshot zero page (19 % 4 == 3) */
	struct fill_req rq = {.op = FILL_OP_MAP, .rg = rg, .first = 8, .n = 16, .fault_idx = SIZE_MAX,
			      .path = FILL_BACKGROUND};
	struct pagein_error err = {{0}};
	int rc = fill(r.s, &rq, &err);
	unsigned char vec[64];
	mincore(r.g.base, 64 * PS, vec);
	enum page_state s15 = page_state_of(page_load(&rg->pages, 15));
	enum page_state s19 = page_state_of(page_load(&rg->pages, 19));
	enum page_state s14 = page_state_of(page_load(&rg->pages, 14));
	rig_stop(&r, NULL);
	TC_CHECK(rc == 0);
	TC_CHECK(s15 == PAGE_REMOVED && s19 == PAGE_REMOVED && s14 == PAGE_PRESENT);
	TC_CHECK(!(vec[15] & 1) && !(vec[19] & 1)); /* not brought back */
	TC_CHECK(vec[14] & 1);
	return TC_PASS;
}

/* Item 9: ENOENT (the range is no longer registered: the VMM mapped fresh
 * memory over it) gives up that range; the session goes on. */
static int enoent_gives_up_the_range(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .no_runner = true};
	int t = rig_start_opts(&r, mem, 64, &o);
	if (t != TC_PASS)
		return t;
	/* What an old Firecracker's balloon did: a fresh anonymous mapping
	 * over discarded pages, which leaves the uffd. */
	void *m = mmap(r.g.base, 16 * PS, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	TC_CHECK(m == r.g.base);
	struct region *rg = &r.s->regions[0];
	for (size_t i = 0; i < 16; i++)
		TC_CHECK(page_claim_absent(&rg->pages, i));
	struct fill_req rq = {.op = FILL_OP_MAP, .rg = rg, .first = 0, .n = 16, .fault_idx = SIZE_MAX,
			      .path = FILL_BACKGROUND};
	struct pagein_error err = {{0}};
	int rc = fill(r.s, &rq, &err);
	int failed = pagein_session_error(r.s, &err);
	enum page_state s0 = page_state_of(page_load(&rg->pages, 0));
	/* The rest of guest memory is still served. */
	for (size_t i = 32; i < 40; i++)
		TC_CHECK(page_claim_absent(&rg->pages, i));
	rq.first = 32;
	rq.n = 8;
	int rc2 = fill(r.s, &rq, &err);
	bool good = rig_check_page(&r, 33);
	rig_stop(&r, NULL);
	TC_CHECK(rc == 0 && failed == 0);
	TC_CHECK(s0 == PAGE_ABSENT);
	TC_CHECK(rc2 == 0 && good);
	return TC_PASS;
}

/* Item 5: the VMM truncates its userfault bitmap memfd: the next bit
 * cleared would be a SIGBUS in the daemon. It fails this session only. */
static int truncated_bitmap_fails_the_session(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | TC_REG_MINOR, .stage2 = true};
	int t = rig_start_opts(&r, mem, 256, &o);
	if (t != TC_PASS)
		return t;
	TC_CHECK(ftruncate(r.g.bitmap_fd, 0) == 0);
	struct pagein_error err = {{0}};
	uint64_t len;
	bool zero;
	int rc = pagein_session_populate_offset(r.s, 7 * PS, &len, &zero, &err);
	int failed = pagein_session_error(r.s, &err);
	munmap(r.g.bitmap, 8); /* the test's own view is gone too */
	r.g.bitmap = NULL;
	rig_stop(&r, NULL);
	TC_CHECK(rc < 0);
	TC_CHECK(failed == -EFAULT);
	TC_CHECK(strstr(err.msg, "bitmap was truncated") != NULL);
	return TC_PASS;
}

/* Item 5: a raw snapshot shrinks while served: pages past the new end
 * fail the session that needs them, naming the file; pages before it are
 * still served; no SIGBUS. */
static int shrunk_snapshot_fails_what_needs_it(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING | TC_REG_MINOR, .stage2 = true};
	int t = rig_start_opts(&r, mem, 256, &o);
	if (t != TC_PASS)
		return t;
	TC_CHECK(truncate(r.snap, 128 * PS) == 0);
	struct pagein_error err = {{0}};
	uint64_t len;
	bool zero;
	int ok = pagein_session_populate_offset(r.s, 9 * PS, &len, &zero, &err);
	bool good = page_ok(&r, 9);
	int rc = pagein_session_populate_offset(r.s, 200 * PS, &len, &zero, &err);
	bool bit = rig_bit_set(&r, 200);
	rig_stop(&r, NULL);
	TC_CHECK(ok == 0 && good);
	TC_CHECK(rc == -EIO);
	TC_CHECK(strstr(err.msg, "shrank") != NULL);
	TC_CHECK(bit);
	return TC_PASS;
}

/* Item 6: the VMM clears O_NONBLOCK on the uffd it shares with us. A read
 * with nothing pending must still return at once. */
static int cleared_nonblock_never_blocks(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .no_runner = true};
	int t = rig_start_opts(&r, mem, 64, &o);
	if (t != TC_PASS)
		return t;
	int fl = fcntl(r.g.uffd, F_GETFL);
	TC_CHECK(fcntl(r.g.uffd, F_SETFL, fl & ~O_NONBLOCK) == 0);
	watchdog(20);
	struct pagein_error err = {{0}};
	int rc = pagein_session_handle_uffd(r.s, &err);
	alarm(0);
	rig_stop(&r, NULL);
	TC_CHECK(rc == 0);
	return TC_PASS;
}

/* Item 6 on a kernel without RWF_NOWAIT on a uffd (before 6.8): poll says
 * a fault is pending, then the VMM races the read: it takes the event
 * itself and clears O_NONBLOCK again. The read must still come back
 * (uffd_read_bounded); the session goes on. */
struct toucher {
	struct rig *r;
	uint64_t page;
};

static void *touch_page(void *arg)
{
	struct toucher *t = arg;
	volatile uint8_t v = t->r->g.base[t->page * PS];
	(void)v;
	return NULL;
}

static int stolen;

static void steal_events(struct pagein_session *s, void *arg)
{
	(void)arg;
	struct uffd_msg m[8];
	struct iovec iov = {.iov_base = m, .iov_len = sizeof(m)};
	ssize_t n = preadv2(s->uffd, &iov, 1, -1, RWF_NOWAIT);
	if (n > 0)
		stolen += (int)(n / (ssize_t)sizeof(m[0]));
	int fl = fcntl(s->uffd, F_GETFL);
	fcntl(s->uffd, F_SETFL, fl & ~O_NONBLOCK);
}

static int stolen_event_never_blocks(enum tc_mem mem)
{
	struct rig r;
	struct rig_opts o = {.reg = TC_REG_MISSING, .no_runner = true};
	int t = rig_start_opts(&r, mem, 64, &o);
	if (t != TC_PASS)
		return t;
	r.s->read_nowait = false; /* as before 6.8: poll, then read */
	r.s->test_after_poll = steal_events;
	stolen = 0;
	struct toucher tt = {.r = &r, .page = 5};
	pthread_t th;
	TC_CHECK(pthread_create(&th, NULL, touch_page, &tt) == 0);
	struct pollfd p = {.fd = r.g.uffd, .events = POLLIN};
	TC_CHECK(poll(&p, 1, 5000) == 1); /* the fault is pending */
	watchdog(20);
	struct pagein_error err = {{0}};
	int rc = pagein_session_handle_uffd(r.s, &err);
	alarm(0);
	/* The fault the "VMM" took is nobody's now: release its thread. */
	uint64_t done;
	uffd_zeropage(r.g.uffd, (uint64_t)(uintptr_t)(r.g.base + 5 * PS), PS, true, &done);
	pthread_join(th, NULL);
	r.s->test_after_poll = NULL;
	rig_stop(&r, NULL);
	fprintf(stderr, "  %d event(s) taken between the poll and the read; handle_uffd returned %d\n", stolen, rc);
	TC_CHECK(stolen >= 1);
	TC_CHECK(rc == 0);
	return TC_PASS;
}

int main(void)
{
	static const struct tc_case cases[] = {
		{"filler_becomes_the_pump", filler_becomes_the_pump, TC_ANON | TC_MEMFD},
		{"teardown_with_a_pending_discard", teardown_with_a_pending_discard, TC_ANON | TC_MEMFD},
		{"poisoned_page_refuses_requests", poisoned_page_refuses_requests, TC_MEMFD},
		{"bad_chunk_is_remembered", bad_chunk_is_remembered, TC_ANON},
		{"bad_chunk_poisons_the_window_once", bad_chunk_poisons_the_window_once, TC_ANON},
		{"ahead_skips_discarded_pages", ahead_skips_discarded_pages, TC_ANON},
		{"enoent_gives_up_the_range", enoent_gives_up_the_range, TC_ANON},
		{"truncated_bitmap_fails_the_session", truncated_bitmap_fails_the_session, TC_MEMFD},
		{"shrunk_snapshot_fails_what_needs_it", shrunk_snapshot_fails_what_needs_it, TC_MEMFD},
		{"cleared_nonblock_never_blocks", cleared_nonblock_never_blocks, TC_ANON},
		{"stolen_event_never_blocks", stolen_event_never_blocks, TC_ANON},
	};
	return tc_run(cases, sizeof(cases) / sizeof(cases[0]));
}
