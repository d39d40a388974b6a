/* request.c - the stage-2 front-end: a vCPU's fault request (secret-hiding
 * protocol) puts the page into the guest memory fd's page cache, clears
 * its userfault bit, and is answered. What each page state gets is
 * page_rules.def's, looked up here. */
#include <errno.h>
#include <stdint.h>

#include "error.h"
#include "fill.h"
#include "session.h"

int pagein_session_populate_offset(struct pagein_session *s, uint64_t offset,
				   uint64_t *len_out, bool *zero_out,
				   struct pagein_error *err)
{
	*len_out = 0;
	*zero_out = false;
	if (atomic_load(&s->failed))
		return pagein_session_error(s, err);
	if (s->mem_fd < 0)
		return pagein_fail(err, ENOTSUP,
				   "stage-2 request but the session has no guest memory fd");
	struct region *rg = session_region_by_offset(s, offset);
	if (!rg)
		return pagein_fail(err, EINVAL,
				   "request offset 0x%llx is outside guest memory",
				   (unsigned long long)offset);
	size_t idx = (size_t)((offset - rg->r.offset) >> rg->page_shift);
	count(&s->n->requests, 1);
	bool waited = false;
	for (;;) {
		/* Before looking at the page: a signal after this is not lost. */
		uint64_t gen = session_wait_gen(s);
		enum page_state st = page_state_of(page_load(&rg->pages, idx));
		int r;
		switch (page_rule(ACT_REQUEST, st)) {
		case DO_FILL:
		case DO_FILL_ZERO: {
			enum page_state prev;
			if (!page_claim(&rg->pages, idx, &prev))
				continue;
			session_record_touch(s, rg, idx, prev);
			struct fill_req rq = {
				.op = FILL_OP_CACHE, .rg = rg, .first = idx, .n = 1,
				.fault_idx = idx, .path = FILL_REQUEST, .zero = zero_out,
			};
			r = fill(s, &rq, err);
			if (r < 0)
				return r;
			*len_out = rg->r.page_size;
			return 0;
		}
		case DO_WAIT:
			/* Another path fills it. Ask to be signalled, then pump or
			 * sleep: never spin on a page whose filler may itself be
			 * waiting for the uffd to be read. */
			if (!page_want_signal(&rg->pages, idx))
				continue;
			if (!waited)
				count(&s->n->faults_on_filling, 1);
			waited = true;
			r = session_wait(s, WAIT_PAGE, gen, false, err);
			if (r < 0)
				return r == -ECANCELED
					       ? pagein_fail(err, ECANCELED, "session stopping")
					       : r;
			continue;
		case DO_DONE:
			/* Filled by another path, which cleared the bit already;
			 * clear it again in case the VMM set it back. */
			if (session_clear_userfault_bit(s, offset - offset % rg->r.page_size,
							rg->r.page_size) < 0)
				return pagein_session_error(s, err);
			*len_out = rg->r.page_size;
			return 0;
		case DO_REFUSE:
			return pagein_fail(err, EHWPOISON,
					   "page at offset 0x%llx is poisoned: the snapshot could not give it",
					   (unsigned long long)offset);
		default:
			return pagein_fail(err, EPROTO, "no rule for a request on a page in state %d", st);
		}
	}
}
