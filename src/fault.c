/* fault.c - the fault front-end: a MISSING or MINOR fault read by the pump
 * becomes a fill request (fill.c) of its page and its fault-around window.
 * What each page state gets is page_rules.def's, looked up here. */
#include "fault.h"

#include <errno.h>
#include <stdint.h>

#include "error.h"
#include "fault_window.h"
#include "fill.h"
#include "source.h"

/* Claims the still-absent neighbours of page idx (claimed already) within
 * the fault-around window that fault_window.c plans, keeping one
 * contiguous run [*lo, *hi) and leaving the window's probe absent. */
static void claim_window(struct pagein_session *s, struct region *rg,
			 size_t idx, size_t *lo, size_t *hi)
{
	*lo = idx;
	*hi = idx + 1;
	if (!fw_enabled(&s->fw) || rg->r.page_size != 4096)
		return;
	size_t clo = 0, chi = 0;
	uint64_t cs = s->source->chunk_size;
	if (cs > 4096) {
		uint64_t off = page_offset(rg, idx), cstart = off - off % cs;
		clo = cstart > rg->r.offset ? (size_t)((cstart - rg->r.offset) >> 12) : 0;
		chi = (size_t)((cstart + cs - rg->r.offset) >> 12);
	}
	struct fw_plan p;
	fw_plan(&s->fw, rg, rg->pages.npages, clo, chi, idx, &p);
	size_t wlo = p.lo, whi = p.hi, probe = p.probe;
	if (probe != SIZE_MAX &&
	    page_state_of(page_load(&rg->pages, probe)) != PAGE_ABSENT)
		probe = SIZE_MAX; /* filled already: it can tell nothing */
	/* Neighbours are ACT_AHEAD: only ABSENT pages are claimed. */
	while (*lo > wlo && *lo - 1 != probe && page_claim_absent(&rg->pages, *lo - 1))
		(*lo)--;
	while (*hi < whi && *hi != probe && page_claim_absent(&rg->pages, *hi))
		(*hi)++;
	fw_filled(&s->fw, rg, &p, *lo, *hi, probe);
}

/* One page without a claim, its fault woken. */
static int probe(struct pagein_session *s, struct region *rg, size_t idx,
		 enum fill_op op, struct pagein_error *err)
{
	struct fill_req rq = {
		.op = op, .rg = rg, .first = idx, .n = 1, .fault_idx = idx,
		.path = FILL_FAULT, .reader = true, .wake = true,
	};
	return fill(s, &rq, err);
}

int fault_serve(struct pagein_session *s, const struct uffd_msg *m,
		struct pagein_error *err)
{
	uint64_t addr = m->arg.pagefault.address;
	uint64_t flags = m->arg.pagefault.flags;
	struct region *rg = session_region_by_addr(s, addr);
	if (!rg)
		return pagein_fail(err, EFAULT,
				   "fault at 0x%llx is outside every region",
				   (unsigned long long)addr);
	if (flags & UFFD_PAGEFAULT_FLAG_WP)
		return pagein_fail(err, EPROTO,
				   "write-protect fault at 0x%llx: pagein does not register WP",
				   (unsigned long long)addr);
	size_t idx = (size_t)((addr - rg->r.host_addr) >> rg->page_shift);
	int actor = flags & UFFD_PAGEFAULT_FLAG_MINOR ? ACT_MINOR : ACT_MISSING;
	for (;;) {
		enum page_state st = page_state_of(page_load(&rg->pages, idx));
		switch (page_rule(actor, st)) {
		case DO_FILL:
		case DO_FILL_ZERO: {
			enum page_state prev;
			if (!page_claim(&rg->pages, idx, &prev))
				continue; /* changed under us: decide again */
			session_record_touch(s, rg, idx, prev);
			struct fill_req rq = {
				.op = actor == ACT_MINOR ? FILL_OP_MINOR : FILL_OP_MAP,
				.rg = rg, .first = idx, .n = 1, .fault_idx = idx,
				.path = FILL_FAULT, .reader = true, .wake = true,
			};
			if (prev == PAGE_ABSENT && actor == ACT_MISSING) {
				size_t lo, hi;
				claim_window(s, rg, idx, &lo, &hi);
				rq.first = lo;
				rq.n = hi - lo;
			}
			if (!s->park || (rq.op != FILL_OP_MAP && rq.op != FILL_OP_MINOR))
				return fill(s, &rq, err);
			/* A remote chunk not here yet parks this fault (MISSING
			 * or MINOR) instead of waiting: the page goes back to
			 * ABSENT unanswered, and the fetch wakes the vCPU, which
			 * faults again. */
			source_park_begin(s->park, page_offset(rg, idx), page_addr(rg, idx),
					  rg->r.page_size);
			int r = fill(s, &rq, err);
			source_park_end();
			return r;
		}
		case DO_NOTE_WAKE:
			if (page_want_wake(&rg->pages, idx)) {
				count(&s->n->faults_on_filling, 1);
				return 0; /* its filler wakes us */
			}
			continue;
		case DO_PROBE_ZERO:
			/* PRESENT, yet this thread faults: a fault raised before
			 * our fill landed (ZEROPAGE then finds the page: EEXIST),
			 * or a page lost without an event (then zeros are what the
			 * kernel would give). ZEROPAGE never overwrites. */
			return probe(s, rg, idx, FILL_OP_PROBE_ZERO, err);
		case DO_MAP:
			return probe(s, rg, idx, FILL_OP_PROBE_MAP, err);
		case DO_POISON:
			return probe(s, rg, idx, FILL_OP_PROBE_POISON, err);
		default:
			return pagein_fail(err, EPROTO, "no rule for a fault on a page in state %d", st);
		}
	}
}
