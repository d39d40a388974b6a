/* prefetch.c - filling ahead of the guest: working-set replay, then
 * background population, on a thread of the session's own.
 *
 * Every page goes through the same claim as a fault, so a page the guest
 * faults first is served by the fault path at once and prefetch skips it;
 * a fault on a page inside a batch in flight leaves a WAKE_WANTED note and
 * the batch wakes it when done. Batches are sorted by offset and filled as
 * runs, one UFFDIO_COPY per run with DONTWAKE: few ioctls, sequential
 * reads of the snapshot. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fill.h"
#include "page_table.h"
#include "pump.h"
#include "session.h"
#include "snapshot_format.h"
#include "source.h"

/* Working-set pages claimed per batch: 1 MiB of 4 KiB pages, large enough
 * for big sequential copies, small enough that a fault landing in a batch
 * waits well under a millisecond. */
#define WS_BATCH 256
/* Background runs: 128 KiB, one locked ioctl (see fill_lock() in
 * fill.c): pages are claimed only as long as it takes to fill them. */
#define BG_RUN_BYTES (128u << 10)
/* Runs filled per stint at normal priority before going back to idle
 * priority: 2 MiB, so the two scheduler calls per stint cost little. */
#define BG_RUNS_PER_STINT 16

struct prefetcher {
	struct pagein_session *s;
	pthread_t th;
	bool started;
	atomic_bool stop;
	uint64_t *ws;
	size_t nws;
	enum pagein_populate populate;
	char err[256];
	atomic_bool failed; /* set (release) after err is written */
};

struct claimed {
	struct region *rg;
	size_t idx;
};

static int cmp_claimed(const void *a, const void *b)
{
	const struct claimed *x = a, *y = b;
	if (x->rg != y->rg)
		return x->rg < y->rg ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Fills the claimed pages as runs of consecutive pages. */
static int fill_claimed(struct pagein_session *s, struct claimed *c, size_t n,
			enum fill_path path, struct pagein_error *err)
{
	qsort(c, n, sizeof(*c), cmp_claimed);
	int r = 0;
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && c[j].rg == c[i].rg && c[j].idx == c[j - 1].idx + 1)
			j++;
		struct fill_req rq = {
			.op = FILL_OP_MAP, .rg = c[i].rg, .first = c[i].idx, .n = j - i,
			.fault_idx = SIZE_MAX, .path = path,
		};
		int e = fill(s, &rq, err);
		if (e < 0) {
			r = e;
			/* Give back the claims of the runs we will not fill,
			 * waking any fault that found one of them FILLING. */
			for (size_t k = j; k < n; k++)
				fill_abandon(s, c[k].rg, c[k].idx, c[k].idx + 1);
			break;
		}
		i = j;
	}
	return r;
}

/* Readahead hints for the coming offsets, one per run of consecutive pages
 * (a recorded working set is mostly runs: one call per page cost 15% of
 * the replay). */
static void advise(struct pagein_session *s, const uint64_t *off, size_t n)
{
	if (!s->source->ops->advise)
		return;
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && off[j] == off[j - 1] + 4096)
			j++;
		s->source->ops->advise(s->source, off[i], (uint64_t)(j - i) * 4096);
		i = j;
	}
}

static int replay_working_set(struct prefetcher *p, struct pagein_error *err)
{
	struct pagein_session *s = p->s;
	struct claimed batch[WS_BATCH];
	size_t next_advised = 0;
	for (size_t i = 0; i < p->nws && !atomic_load(&p->stop);) {
		/* Start the reads of the next batch while this one copies. */
		size_t ahead = i + 2 * WS_BATCH < p->nws ? i + 2 * WS_BATCH : p->nws;
		if (next_advised < ahead) {
			advise(s, p->ws + next_advised, ahead - next_advised);
			next_advised = ahead;
		}
		size_t n = 0;
		for (; i < p->nws && n < WS_BATCH; i++) {
			struct region *rg = session_region_by_offset(s, p->ws[i]);
			if (!rg)
				continue; /* recorded on another memory layout */
			size_t idx = (size_t)((p->ws[i] - rg->r.offset) >> rg->page_shift);
			if (page_claim_absent(&rg->pages, idx))
				batch[n++] = (struct claimed){rg, idx};
		}
		int r = fill_claimed(s, batch, n, FILL_PREFETCH, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Background population waits for idle CPU at SCHED_IDLE, but claims and
 * fills each run at normal priority: a fault or request that finds one of
 * its pages FILLING must never wait on a thread that may not run for
 * seconds (priority inversion). */
static void set_idle(bool idle)
{
	struct sched_param sp = {0};
	pthread_setschedparam(pthread_self(), idle ? SCHED_IDLE : SCHED_OTHER, &sp);
}

#define REMOTE_AHEAD (16u << 20)

/* Fills every page still absent, region by region in offset order, in
 * runs of up to BG_RUN_BYTES. Discarded pages stay out: they need nothing
 * from the snapshot, and filling them would undo the balloon. */
static int populate_rest(struct pagein_session *s, atomic_bool *stop,
			 bool reader, bool idle, struct pagein_error *err)
{
	for (size_t r = 0; r < s->nregions; r++) {
		struct region *rg = &s->regions[r];
		size_t max_run = BG_RUN_BYTES / rg->r.page_size;
		if (max_run == 0)
			max_run = 1;
		unsigned stint = 0; /* runs done since leaving idle priority */
		/* A remote source: queue the fetches of the next REMOTE_AHEAD
		 * bytes ahead of the fills, so that they go out in parallel and
		 * coalesced rather than one chunk at a time. */
		bool remote = s->source->ops->advise && source_pagein_remote(s->source);
		size_t advised = 0, ahead = REMOTE_AHEAD / rg->r.page_size;
		for (size_t i = 0; i < rg->pages.npages;) {
			if (stop && atomic_load(stop))
				break;
			if (remote && advised < i + ahead && advised < rg->pages.npages) {
				size_t to = i + 2 * ahead < rg->pages.npages ? i + 2 * ahead : rg->pages.npages;
				if (advised < i)
					advised = i;
				s->source->ops->advise(s->source, page_offset(rg, advised),
						       (uint64_t)(to - advised) * rg->r.page_size);
				advised = to;
			}
			if (page_state_of(page_load(&rg->pages, i)) != PAGE_ABSENT) {
				i++; /* present, removed, or someone else's */
				continue;
			}
			if (idle && stint == 0)
				set_idle(false);
			size_t j = i;
			while (j < rg->pages.npages && j - i < max_run &&
			       page_claim_absent(&rg->pages, j))
				j++;
			struct fill_req rq = {
				.op = FILL_OP_MAP, .rg = rg, .first = i, .n = j - i, .fault_idx = SIZE_MAX,
				.path = FILL_BACKGROUND, .reader = reader,
			};
			int e = j > i ? fill(s, &rq, err) : 0;
			if (idle && ++stint == BG_RUNS_PER_STINT) {
				set_idle(true);
				stint = 0;
			}
			if (e < 0) {
				if (idle && stint)
					set_idle(true);
				return e;
			}
			i = j > i ? j : i + 1;
		}
		if (idle && stint)
			set_idle(true);
		if (stop && atomic_load(stop))
			return 0;
	}
	return 0;
}

static void *prefetch_thread(void *arg)
{
	struct prefetcher *p = arg;
	struct pagein_error err = {{0}};
	/* Waits on remote fetches end when the session stops. */
	source_wait_cancel(&p->stop);
	if (source_pagein_remote(p->s->source))
		source_pagein_readahead_ws(p->s->source); /* the working set first, in few requests */
	int r = replay_working_set(p, &err);
	if (r == 0 && p->populate == PAGEIN_POPULATE_BACKGROUND && !atomic_load(&p->stop)) {
		/* Idle priority: the rest only uses CPU nobody else wants, so
		 * faults and the guest itself always go first. */
		set_idle(true);
		/* The page that completes the restore stamps complete_ns,
		 * whichever path filled it (page_table.h, page_progress). */
		r = populate_rest(p->s, &p->stop, false, true, &err);
	}
	if (r < 0 && r != -ECANCELED) {
		snprintf(p->err, sizeof(p->err), "%s", err.msg[0] ? err.msg : strerror(-r));
		atomic_store_explicit(&p->failed, true, memory_order_release);
		/* Fail closed: a session whose filling broke is not served
		 * right any more (the VMM gone, a fatal fill error). */
		session_fail(p->s, r, "%s", r == -ESRCH ? "VMM gone (a fill answered ESRCH)" : p->err);
	}
	return NULL;
}

int pagein_session_prefetch(struct pagein_session *s,
			    const struct pagein_prefetch *cfg,
			    struct pagein_error *err)
{
	int rr = reserved_check(cfg->reserved, RESERVED_WORDS_OF(cfg), "pagein_prefetch", err);
	if (rr < 0)
		return rr;
	if (s->prefetch)
		return pagein_fail(err, EBUSY, "prefetch already started");
	if (cfg->populate == PAGEIN_POPULATE_EAGER) {
		/* The caller is the uffd's only reader until this returns: it
		 * drains events itself, then serves the faults it queued. */
		pthread_mutex_lock(&s->reader_lock);
		int r = populate_rest(s, &s->stopping, true, false, err);
		pump_release(s, true);
		if (r == 0)
			r = pagein_session_handle_uffd(s, err);
		return r;
	}
	if (cfg->count == 0 && cfg->populate == PAGEIN_POPULATE_NONE)
		return 0;
	struct prefetcher *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->s = s;
	p->populate = cfg->populate;
	if (cfg->count) {
		p->ws = malloc(cfg->count * sizeof(*p->ws));
		if (!p->ws) {
			free(p);
			return -ENOMEM;
		}
		memcpy(p->ws, cfg->offsets, cfg->count * sizeof(*p->ws));
		p->nws = cfg->count;
	}
	int e = pthread_create(&p->th, NULL, prefetch_thread, p);
	if (e) {
		free(p->ws);
		free(p);
		return pagein_fail(err, e, "prefetch thread: %s", strerror(e));
	}
	p->started = true;
	s->prefetch = p;
	return 0;
}

void prefetch_stop(struct pagein_session *s)
{
	struct prefetcher *p = s->prefetch;
	if (!p)
		return;
	atomic_store(&p->stop, true);
	if (p->started)
		pthread_join(p->th, NULL);
	free(p->ws);
	free(p);
	s->prefetch = NULL;
}

const char *pagein_session_prefetch_error(const struct pagein_session *s)
{
	return s->prefetch && atomic_load_explicit(&s->prefetch->failed, memory_order_acquire)
		       ? s->prefetch->err : NULL;
}
