/* recover.c - re-deriving what an engine crash loses (see recover.h and
 * docs/architecture.md, "Recovery after a crash"). */
#include "recover.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "session.h"
#include "state.h"
#include "uffd.h"

/* Is the page at offset in the guest memory file's page cache? */
static bool cached(struct pagein_session *s, uint64_t off, uint64_t ps)
{
	if (s->mem_map) { /* hugetlbfs: SEEK_DATA knows no holes there */
		unsigned char v = 0;
		return mincore((char *)s->mem_map + off, ps, &v) == 0 && (v & 1);
	}
	off_t r = lseek(s->mem_fd, (off_t)off, SEEK_DATA);
	return r == (off_t)off;
}

static void replay_remove(struct pagein_session *s, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *rg = &s->regions[i];
		size_t first, last;
		region_pages_within(rg, start, end, &first, &last);
		for (size_t p = first; p < last; p++)
			atomic_store(&rg->pages.state[p], PAGE_REMOVED);
	}
}

int session_recover(struct pagein_session *s, struct recover_stats *st)
{
	*st = (struct recover_stats){0};
	/* 1. Fills in flight when the engine died. */
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *rg = &s->regions[i];
		for (size_t p = 0; p < rg->pages.npages; p++) {
			uint8_t v = page_load(&rg->pages, p);
			if (page_state_of(v) != PAGE_FILLING)
				continue;
			uint8_t next;
			if (v & (PAGE_ZERO_FILL | PAGE_DISCARDED)) {
				next = PAGE_REMOVED;
				st->filling_removed++;
			} else if (s->mem_fd >= 0 && cached(s, page_offset(rg, p), rg->r.page_size)) {
				next = PAGE_PRESENT;
				st->filling_present++;
			} else {
				/* Anonymous memory: a COPY that landed answers
				 * EEXIST next time, which counts as present. */
				next = PAGE_ABSENT;
				st->filling_absent++;
			}
			atomic_store(&rg->pages.state[p], next);
		}
	}
	/* 2. Discards read but maybe not applied. */
	if (s->kst) {
		for (unsigned j = 0; j < STATE_REMOVE_SLOTS; j++) {
			struct state_remove *e = &s->kst->rm[j];
			if (atomic_load(&e->state) != STATE_PENDING)
				continue;
			replay_remove(s, e->start, e->end);
			atomic_store(&e->state, STATE_APPLIED);
			st->removes_replayed++;
		}
	}
	/* 3. Bits of present pages (idempotent), and progress. */
	uint64_t done = 0;
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *rg = &s->regions[i];
		for (size_t p = 0; p < rg->pages.npages; p++) {
			enum page_state ps = page_state_of(page_load(&rg->pages, p));
			if (ps == PAGE_ABSENT)
				continue;
			done++;
			if (ps == PAGE_PRESENT) {
				st->pages_present++;
				int r = session_clear_userfault_bit(s, page_offset(rg, p), rg->r.page_size);
				if (r < 0)
					return r;
			}
		}
	}
	atomic_store(&s->progress->done, done);
	uint64_t now = now_ns(), none = 0;
	if (done == s->progress->total) /* complete when the old engine died */
		atomic_compare_exchange_strong(&s->progress->complete_ns, &none,
					       now > s->progress->start_ns ? now - s->progress->start_ns : 1);
	/* 4. Faults the dead engine read and never answered: wake them all;
	 * they fault again if their page is still missing. */
	for (size_t i = 0; i < s->nregions; i++) {
		int r = uffd_wake(s->uffd, s->regions[i].r.host_addr, s->regions[i].r.size);
		if (r == -ESRCH)
			return r;
	}
	return 0;
}
