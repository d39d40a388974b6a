/* resolver.c - the rules that turn a fault or a request into a fill.
 *
 *   user MISSING fault  -> UFFDIO_COPY of snapshot bytes (UFFDIO_ZEROPAGE for
 *                          zero pages and for pages the guest discarded)
 *   user MINOR fault    -> UFFDIO_CONTINUE (the page is in the page cache)
 *   stage-2 request     -> pwrite() into the guest memory fd (cache only)
 *
 * Every path claims the page in the session's page table first (see
 * page_table.h), so no page is filled twice and a PRESENT page is never
 * written again. The kernel subtleties each branch answers are named where
 * they are handled. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "resolver.h"
#include "session.h"
#include "source.h"
#include "uffd.h"

#define HUGE_2M (2ull << 20)
/* uffd_msg per read(): one read returns up to this many events, so a burst
 * of faults from several vCPUs costs one syscall. */
#define MSGS_PER_READ 64

bool page_is_zero(const void *p, size_t len)
{
	const uint64_t *w = p;
	uint64_t acc = 0;
	for (size_t i = 0; i < len / 8; i++)
		acc |= w[i];
	return acc == 0;
}

static uint64_t page_addr(const struct region *rg, size_t idx)
{
	return rg->r.host_addr + ((uint64_t)idx << rg->page_shift);
}

static uint64_t page_offset(const struct region *rg, size_t idx)
{
	return rg->r.offset + ((uint64_t)idx << rg->page_shift);
}

/* ---- events ----------------------------------------------------------- */

/* A discard (balloon inflation, free page reporting): from now on the
 * range reads as zeros on anonymous memory. Pages whose fill is in flight
 * are flagged so that the filler installs zeros or ends REMOVED. */
static void apply_remove(struct pagein_session *s, uint64_t start, uint64_t end)
{
	count(&s->n.removes, 1);
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *rg = &s->regions[i];
		uint64_t rs = rg->r.host_addr, re = rs + rg->r.size;
		uint64_t a = start > rs ? start : rs, b = end < re ? end : re;
		if (a >= b)
			continue;
		uint64_t ps = rg->r.page_size;
		/* Only pages wholly inside the range were discarded. */
		size_t first = (size_t)((a - rs + ps - 1) >> rg->page_shift);
		size_t last = (size_t)((b - rs) >> rg->page_shift);
		for (size_t p = first; p < last; p++)
			page_remove(&rg->pages, p);
		if (last > first)
			count(&s->n.pages_removed, last - first);
	}
}

static int queue_push(struct fault_queue *q, const struct uffd_msg *m)
{
	if (q->tail == q->cap) {
		if (q->head > 0) {
			memmove(q->msg, q->msg + q->head,
				(q->tail - q->head) * sizeof(*q->msg));
			q->tail -= q->head;
			q->head = 0;
		} else {
			size_t cap = q->cap ? q->cap * 2 : MSGS_PER_READ * 2;
			void *n = realloc(q->msg, cap * sizeof(*q->msg));
			if (!n)
				return -ENOMEM;
			q->msg = n;
			q->cap = cap;
		}
	}
	q->msg[q->tail++] = *m;
	return 0;
}

/* Reads every pending event. Non-cooperative events are applied at once,
 * before any fault of the same read is served: a fault can be delivered
 * ahead of the REMOVE that zapped its page. Faults join the queue. */
static int read_events(struct pagein_session *s, struct pagein_error *err)
{
	struct uffd_msg buf[MSGS_PER_READ];
	for (;;) {
		ssize_t n = read(s->uffd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EAGAIN)
				return 0;
			if (errno == EINTR)
				continue;
			return pagein_fail(err, errno, "reading uffd events: %s",
					   strerror(errno));
		}
		size_t k = (size_t)n / sizeof(buf[0]);
		for (size_t i = 0; i < k; i++) {
			struct uffd_msg *m = &buf[i];
			switch (m->event) {
			case UFFD_EVENT_PAGEFAULT:
				break;
			case UFFD_EVENT_REMOVE:
				apply_remove(s, m->arg.remove.start, m->arg.remove.end);
				break;
			case UFFD_EVENT_UNMAP:
				/* Gone from the VMM; if mapped again it starts empty. */
				apply_remove(s, m->arg.remove.start, m->arg.remove.end);
				break;
			case UFFD_EVENT_FORK:
				/* A child's uffd we have no use for. */
				close((int)m->arg.fork.ufd);
				break;
			case UFFD_EVENT_REMAP:
				return pagein_fail(err, ENOTSUP,
						   "VMM moved guest memory (mremap 0x%llx -> 0x%llx): unsupported",
						   (unsigned long long)m->arg.remap.from,
						   (unsigned long long)m->arg.remap.to);
			default:
				return pagein_fail(err, EPROTO, "unknown uffd event %u",
						   m->event);
			}
		}
		for (size_t i = 0; i < k; i++) {
			if (buf[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (buf[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)
				count(&s->n.faults_minor, 1);
			else
				count(&s->n.faults_missing, 1);
			if (queue_push(&s->queue, &buf[i]) < 0)
				return -ENOMEM;
		}
		if (s->test_after_read && k)
			s->test_after_read(s, s->test_arg);
		if (k < MSGS_PER_READ)
			return 0;
	}
}

/* EAGAIN from a fill: the kernel refuses to fill while a REMOVE/UNMAP/REMAP
 * is queued. The uffd reader reads them itself (nobody else would); other
 * threads give the reader a moment. */
static int wait_for_events(struct pagein_session *s, bool reader,
			   struct pagein_error *err)
{
	count(&s->n.eagain, 1);
	if (reader)
		return read_events(s, err);
	struct timespec ts = {0, 20 * 1000};
	nanosleep(&ts, NULL);
	return 0;
}

/* ---- fills ------------------------------------------------------------ */

static int zero_fill(struct pagein_session *s, const struct region *rg,
		     uint64_t addr, bool wake, uint64_t *done)
{
	if (rg->r.page_size == HUGE_2M) /* hugetlbfs has no UFFDIO_ZEROPAGE */
		return uffd_copy(s->uffd, addr, s->zero_huge, HUGE_2M, wake, done);
	return uffd_zeropage(s->uffd, addr, rg->r.page_size, wake, done);
}

/* The bytes one page should hold, from the source: a zero-copy view when
 * one extent covers the page, else assembled in a bounce buffer (a 2 MiB
 * page across a hole boundary or a chunk boundary). */
struct page_bytes {
	const void *data; /* NULL when the page is all zeros */
	struct source_extent ext;
	bool have_ext;
	void *bounce;
};

static int page_bytes_get(struct pagein_session *s, uint64_t off, uint64_t ps,
			  struct page_bytes *pb)
{
	memset(pb, 0, sizeof(*pb));
	int r = s->source->ops->get(s->source, off, ps, &pb->ext);
	if (r < 0)
		return r;
	if (pb->ext.len >= ps) {
		pb->have_ext = true;
		pb->data = pb->ext.data && !page_is_zero(pb->ext.data, ps)
				   ? pb->ext.data : NULL;
		return 0;
	}
	s->source->ops->put(s->source, &pb->ext);
	pb->bounce = malloc(ps);
	if (!pb->bounce)
		return -ENOMEM;
	r = source_read(s->source, off, pb->bounce, ps);
	if (r < 0) {
		free(pb->bounce);
		pb->bounce = NULL;
		return r;
	}
	pb->data = page_is_zero(pb->bounce, ps) ? NULL : pb->bounce;
	return 0;
}

static void page_bytes_put(struct pagein_session *s, struct page_bytes *pb)
{
	if (pb->have_ext)
		s->source->ops->put(s->source, &pb->ext);
	free(pb->bounce);
	memset(pb, 0, sizeof(*pb));
}

static int fail_corrupt(const struct region *rg, size_t idx, int r,
			const struct page_bytes *pb, struct pagein_error *err)
{
	return pagein_fail(err, -r,
			   "snapshot cannot give page at offset 0x%llx (chunk %llu): %s",
			   (unsigned long long)page_offset(rg, idx),
			   (unsigned long long)pb->ext.bad_chunk, strerror(-r));
}

/* Fills a page this thread has claimed with UFFDIO_COPY/ZEROPAGE (the
 * MISSING path) and finishes it. */
static int fill_missing_claimed(struct pagein_session *s, struct region *rg,
				size_t idx, bool reader, struct pagein_error *err)
{
	uint64_t addr = page_addr(rg, idx), ps = rg->r.page_size;
	struct page_bytes pb = {0};
	bool poison = false, zero = page_load(&rg->pages, idx) &
				    (PAGE_ZERO_FILL | PAGE_DISCARDED);
	int r = 0;
	if (!zero) {
		r = page_bytes_get(s, page_offset(rg, idx), ps, &pb);
		if (r < 0 && s->on_corrupt != PAGEIN_CORRUPT_POISON) {
			page_abandon(&rg->pages, idx, PAGE_ABSENT);
			return fail_corrupt(rg, idx, r, &pb, err);
		}
		poison = r < 0; /* never map bytes we could not read */
		zero = !poison && !pb.data;
	}
	uint64_t done;
	for (;;) {
		if (poison)
			r = uffd_poison(s->uffd, addr, ps, true, &done);
		else if (zero)
			r = zero_fill(s, rg, addr, true, &done);
		else
			r = uffd_copy(s->uffd, addr, pb.data, ps, true, &done);
		if (uffd_classify(r) != UFFD_RETRY)
			break;
		r = wait_for_events(s, reader, err);
		if (r < 0)
			goto out_abandon;
		/* The events may have discarded this very page. */
		if (page_load(&rg->pages, idx) & PAGE_DISCARDED)
			zero = true;
	}
	switch (uffd_classify(r)) {
	case UFFD_DONE:
		if (poison) {
			count(&s->n.pages_poisoned, 1);
		} else if (zero) {
			count(&s->n.pages_zeroed, 1);
		} else {
			count(&s->n.pages_copied, 1);
			count(&s->n.bytes_read, ps);
		}
		break;
	case UFFD_EXISTS:
		/* Already mapped by someone outside our table; EEXIST wakes
		 * nobody, so wake the faulting thread ourselves. */
		count(&s->n.eexist, 1);
		count(&s->n.wakes, 1);
		uffd_wake(s->uffd, addr, ps);
		break;
	case UFFD_GONE:
		r = -ESRCH;
		goto out_abandon;
	default:
		r = pagein_fail(err, -r, "filling 0x%llx (offset 0x%llx): %s",
				(unsigned long long)addr,
				(unsigned long long)page_offset(rg, idx), strerror(-r));
		goto out_abandon;
	}
	page_bytes_put(s, &pb);
	if (page_finish(&rg->pages, idx) & PAGE_WAKE_WANTED) {
		count(&s->n.wakes, 1);
		uffd_wake(s->uffd, addr, ps);
	}
	session_clear_userfault_bit(s, page_offset(rg, idx), ps);
	return 0;
out_abandon:
	page_bytes_put(s, &pb);
	page_abandon(&rg->pages, idx, PAGE_ABSENT);
	return r;
}

/* pwrite() all of buf at off into the guest memory fd. */
static int write_mem(struct pagein_session *s, uint64_t off, const void *buf,
		     uint64_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = pwrite(s->mem_fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

static const unsigned char zero_page[4096];

static int write_zeros(struct pagein_session *s, uint64_t off, uint64_t len)
{
	for (uint64_t o = 0; o < len; o += sizeof(zero_page)) {
		int r = write_mem(s, off + o, zero_page, sizeof(zero_page));
		if (r < 0)
			return r;
	}
	return 0;
}

/* Puts the page's right content into the page cache through the memory fd
 * (the stage-2 path, and MINOR faults on pages we never filled). Maps
 * nothing and raises no uffd event. *zero says whether it was zeros. */
static int write_page_claimed(struct pagein_session *s, struct region *rg,
			      size_t idx, bool *zero, struct pagein_error *err)
{
	uint64_t off = page_offset(rg, idx), ps = rg->r.page_size;
	int r;
	*zero = true;
	if (page_load(&rg->pages, idx) & (PAGE_ZERO_FILL | PAGE_DISCARDED)) {
		/* Discarded: MADV_DONTNEED on shared memory keeps the page
		 * cache (the guest's data stays); MADV_REMOVE punched it. Only
		 * a hole needs zeros, and writing them overwrites no data. */
		if (lseek(s->mem_fd, (off_t)off, SEEK_DATA) == (off_t)off) {
			*zero = false;
			return 0;
		}
		r = write_zeros(s, off, ps);
		if (r == 0)
			count(&s->n.pages_zeroed, 1);
	} else {
		struct page_bytes pb;
		r = page_bytes_get(s, off, ps, &pb);
		if (r < 0)
			return fail_corrupt(rg, idx, r, &pb, err);
		*zero = !pb.data;
		r = pb.data ? write_mem(s, off, pb.data, ps) : write_zeros(s, off, ps);
		page_bytes_put(s, &pb);
		if (r == 0) {
			count(&s->n.pages_written, 1);
			count(&s->n.bytes_read, ps);
		}
	}
	if (r < 0)
		return pagein_fail(err, -r, "pwrite at offset 0x%llx: %s",
				   (unsigned long long)off, strerror(-r));
	return 0;
}

/* ---- faults ----------------------------------------------------------- */

static int serve_missing(struct pagein_session *s, struct region *rg,
			 size_t idx, struct pagein_error *err)
{
	for (;;) {
		enum page_state prev;
		if (page_claim(&rg->pages, idx, &prev))
			return fill_missing_claimed(s, rg, idx, true, err);
		if (prev == PAGE_FILLING) {
			if (page_want_wake(&rg->pages, idx))
				return 0; /* its filler wakes us */
			continue;
		}
		/* PRESENT, yet this thread faults: a fault raised before our fill
		 * landed (then ZEROPAGE finds the page: EEXIST), or a page lost
		 * without an event (then zeros are what the kernel would give).
		 * ZEROPAGE never overwrites, so it is safe either way. */
		uint64_t addr = page_addr(rg, idx), done;
		int r;
		while ((r = zero_fill(s, rg, addr, true, &done)) == -EAGAIN) {
			r = wait_for_events(s, true, err);
			if (r < 0)
				return r;
		}
		switch (uffd_classify(r)) {
		case UFFD_DONE:
			count(&s->n.pages_zeroed, 1);
			return 0;
		case UFFD_EXISTS:
			count(&s->n.eexist, 1);
			count(&s->n.wakes, 1);
			uffd_wake(s->uffd, addr, rg->r.page_size);
			return 0;
		case UFFD_GONE:
			return -ESRCH;
		default:
			return pagein_fail(err, -r, "zeropage at 0x%llx: %s",
					   (unsigned long long)addr, strerror(-r));
		}
	}
}

/* UFFDIO_CONTINUE: map the page-cache page. EEXIST = already mapped here
 * (a stale fault): wake, since EEXIST wakes nobody. */
static int map_cached(struct pagein_session *s, struct region *rg, size_t idx,
		      struct pagein_error *err)
{
	uint64_t addr = page_addr(rg, idx), done;
	int r;
	while ((r = uffd_continue(s->uffd, addr, rg->r.page_size, true, &done)) == -EAGAIN) {
		r = wait_for_events(s, true, err);
		if (r < 0)
			return r;
	}
	switch (uffd_classify(r)) {
	case UFFD_DONE:
		count(&s->n.pages_continued, 1);
		return 0;
	case UFFD_EXISTS:
		count(&s->n.eexist, 1);
		count(&s->n.wakes, 1);
		uffd_wake(s->uffd, addr, rg->r.page_size);
		return 0;
	case UFFD_GONE:
		return -ESRCH;
	default:
		return pagein_fail(err, -r, "continue at 0x%llx: %s",
				   (unsigned long long)addr, strerror(-r));
	}
}

static int serve_minor(struct pagein_session *s, struct region *rg, size_t idx,
		       struct pagein_error *err)
{
	for (;;) {
		enum page_state prev;
		if (!page_claim(&rg->pages, idx, &prev)) {
			if (prev == PAGE_PRESENT)
				return map_cached(s, rg, idx, err);
			if (page_want_wake(&rg->pages, idx))
				return 0;
			continue;
		}
		int r = 0;
		if (prev == PAGE_ABSENT && s->mem_fd >= 0) {
			/* A cached page we never filled (someone read the memfd
			 * through an unregistered mapping): its content is not
			 * the snapshot's, so write the snapshot's first. */
			bool zero;
			r = write_page_claimed(s, rg, idx, &zero, err);
		}
		/* REMOVED + MINOR: MADV_DONTNEED on shared memory kept the
		 * page; the guest's data is still there: just map it. */
		if (r == 0)
			r = map_cached(s, rg, idx, err);
		if (r < 0) {
			page_abandon(&rg->pages, idx, prev);
			return r;
		}
		if (page_finish(&rg->pages, idx) & PAGE_WAKE_WANTED) {
			count(&s->n.wakes, 1);
			uffd_wake(s->uffd, page_addr(rg, idx), rg->r.page_size);
		}
		session_clear_userfault_bit(s, page_offset(rg, idx), rg->r.page_size);
		return 0;
	}
}

static int serve_fault(struct pagein_session *s, const struct uffd_msg *m,
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
	if (flags & UFFD_PAGEFAULT_FLAG_MINOR)
		return serve_minor(s, rg, idx, err);
	return serve_missing(s, rg, idx, err);
}

int pagein_session_handle_uffd(struct pagein_session *s,
			       struct pagein_error *err)
{
	int r = read_events(s, err);
	struct fault_queue *q = &s->queue;
	while (r == 0 && q->head < q->tail) {
		struct uffd_msg m = q->msg[q->head++];
		r = serve_fault(s, &m, err);
	}
	if (q->head == q->tail)
		q->head = q->tail = 0;
	if (r == -ESRCH)
		pagein_fail(err, ESRCH, "VMM gone (uffd fill answered ESRCH/ENOENT)");
	return r;
}

/* ---- stage-2 requests ------------------------------------------------- */

int pagein_session_populate_offset(struct pagein_session *s, uint64_t offset,
				   uint64_t *len_out, bool *zero_out,
				   struct pagein_error *err)
{
	*len_out = 0;
	*zero_out = false;
	if (s->mem_fd < 0)
		return pagein_fail(err, ENOTSUP,
				   "stage-2 request but the session has no guest memory fd");
	struct region *rg = session_region_by_offset(s, offset);
	if (!rg)
		return pagein_fail(err, EINVAL,
				   "request offset 0x%llx is outside guest memory",
				   (unsigned long long)offset);
	size_t idx = (size_t)((offset - rg->r.offset) >> rg->page_shift);
	count(&s->n.requests, 1);
	for (;;) {
		enum page_state prev;
		if (page_claim(&rg->pages, idx, &prev)) {
			bool zero;
			int r = write_page_claimed(s, rg, idx, &zero, err);
			if (r < 0) {
				page_abandon(&rg->pages, idx, prev);
				return r;
			}
			/* pwrite() wakes no uffd waiter: a fault that saw FILLING
			 * asked us to. */
			if (page_finish(&rg->pages, idx) & PAGE_WAKE_WANTED) {
				count(&s->n.wakes, 1);
				uffd_wake(s->uffd, page_addr(rg, idx), rg->r.page_size);
			}
			*zero_out = zero;
			break;
		}
		if (prev == PAGE_PRESENT)
			break;
		/* Another path is filling it; it is microseconds away. */
		struct timespec ts = {0, 10 * 1000};
		nanosleep(&ts, NULL);
	}
	session_clear_userfault_bit(s, page_offset(rg, idx), rg->r.page_size);
	*len_out = rg->r.page_size;
	return 0;
}
