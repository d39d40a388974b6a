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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#include "error.h"
#include "session.h"
#include "source.h"
#include "uffd.h"

#define HUGE_2M (2ull << 20)
/* uffd_msg per read(): one read returns up to this many events, so a burst
 * of faults from several vCPUs costs one syscall. */
#define MSGS_PER_READ 64
/* Longest ioctl a non-reader issues while holding remove_lock: 128 KiB
 * copies in ~60 us, so a uffd read waits at most about one fault round
 * trip behind prefetch. */
#define NONREADER_MAX_PAGES 32

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
		/* Held until the REMOVEs read are applied: see fill_lock(). */
		pthread_rwlock_wrlock(&s->remove_lock);
		ssize_t n = read(s->uffd, buf, sizeof(buf));
		if (n < 0) {
			int e = errno;
			pthread_rwlock_unlock(&s->remove_lock);
			if (e == EAGAIN)
				return 0;
			if (e == EINTR)
				continue;
			return pagein_fail(err, e, "reading uffd events: %s", strerror(e));
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
				pthread_rwlock_unlock(&s->remove_lock);
				return pagein_fail(err, ENOTSUP,
						   "VMM moved guest memory (mremap 0x%llx -> 0x%llx): unsupported",
						   (unsigned long long)m->arg.remap.from,
						   (unsigned long long)m->arg.remap.to);
			default:
				pthread_rwlock_unlock(&s->remove_lock);
				return pagein_fail(err, EPROTO, "unknown uffd event %u",
						   m->event);
			}
		}
		pthread_rwlock_unlock(&s->remove_lock);
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

/* Zeros for [addr, addr+len): UFFDIO_ZEROPAGE, or on hugetlbfs (which has
 * none) a COPY from a zeroed huge page, one page at a time. */
static int zero_fill(struct pagein_session *s, const struct region *rg,
		     uint64_t addr, uint64_t len, bool wake, uint64_t *done)
{
	if (rg->r.page_size != HUGE_2M)
		return uffd_zeropage(s->uffd, addr, len, wake, done);
	return uffd_copy(s->uffd, addr, s->zero_huge, HUGE_2M, wake, done);
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

static void count_fill(struct pagein_session *s, enum fill_path path, uint64_t pages)
{
	static const size_t field[] = {
		[FILL_FAULT] = offsetof(struct session_counters, filled_fault),
		[FILL_FAULT_AROUND] = offsetof(struct session_counters, filled_fault_around),
		[FILL_PREFETCH] = offsetof(struct session_counters, filled_prefetch),
		[FILL_BACKGROUND] = offsetof(struct session_counters, filled_background),
		[FILL_REQUEST] = offsetof(struct session_counters, filled_request),
	};
	count((atomic_uint_fast64_t *)((char *)&s->n + field[path]), pages);
}

enum run_kind { RUN_DATA, RUN_ZERO, RUN_POISON };

/* Plans the longest subrun [i, *j) of one kind that one ioctl can fill,
 * holding the source view in *pb (released by the caller). */
static int plan_subrun(struct pagein_session *s, struct region *rg, size_t i,
		       size_t end, struct page_bytes *pb, enum run_kind *kind,
		       size_t *j)
{
	const uint8_t zero_flags = PAGE_ZERO_FILL | PAGE_DISCARDED;
	uint64_t ps = rg->r.page_size;
	memset(pb, 0, sizeof(*pb));
	*j = i + 1;
	if (page_load(&rg->pages, i) & zero_flags) {
		*kind = RUN_ZERO;
		while (ps != HUGE_2M && *j < end && (page_load(&rg->pages, *j) & zero_flags))
			(*j)++;
		return 0;
	}
	int r = s->source->ops->get(s->source, page_offset(rg, i), (end - i) * ps, &pb->ext);
	if (r < 0)
		return r; /* the caller decides: skip, poison or fail */
	if (pb->ext.len < ps) {
		/* A huge page across extents: assemble it. */
		s->source->ops->put(s->source, &pb->ext);
		r = page_bytes_get(s, page_offset(rg, i), ps, pb);
		if (r < 0)
			return r;
		*kind = pb->data ? RUN_DATA : RUN_ZERO;
		return 0;
	}
	pb->have_ext = true;
	size_t avail = (size_t)(pb->ext.len / ps);
	if (avail > end - i)
		avail = end - i;
	const unsigned char *base = pb->ext.data;
	if (!base) {
		*kind = RUN_ZERO;
		*j = ps == HUGE_2M ? i + 1 : i + avail;
		return 0;
	}
	bool zero = page_is_zero(base, ps);
	*kind = zero ? RUN_ZERO : RUN_DATA;
	pb->data = base;
	if (zero && ps == HUGE_2M)
		return 0;
	while (*j < i + avail && !(page_load(&rg->pages, *j) & zero_flags) &&
	       page_is_zero(base + (*j - i) * ps, ps) == zero)
		(*j)++;
	return 0;
}

/* A fill by a thread that does not read the uffd (prefetch, background,
 * stage-2) must not land after a discard it has not seen: madvise zaps (or
 * punches) only after its REMOVE event has been read, so a fill planned
 * before the event was applied and issued after the read could put
 * snapshot bytes into a page the guest just discarded. The reader holds
 * remove_lock exclusively from read() until the REMOVEs are applied; such
 * fillers hold it shared from their last look at the page flags until
 * their ioctl or pwrite returns. A fill under the lock either lands before
 * the event is read (the zap then clears it) or sees the flags. Returns
 * false, unlocked, if a data run was discarded meanwhile. */
static bool fill_lock(struct pagein_session *s, struct region *rg, size_t i,
		      size_t j, enum run_kind kind)
{
	pthread_rwlock_rdlock(&s->remove_lock);
	if (kind == RUN_ZERO)
		return true; /* zeros are right either way */
	for (size_t p = i; p < j; p++)
		if (page_load(&rg->pages, p) & (PAGE_ZERO_FILL | PAGE_DISCARDED)) {
			pthread_rwlock_unlock(&s->remove_lock);
			return false;
		}
	return true;
}

/* The pages [a, b) are in: finish them (PRESENT, or REMOVED if discarded
 * meanwhile) and clear their userfault bits. True if a fault asked to be
 * woken. */
static bool finish_pages(struct pagein_session *s, struct region *rg, size_t a,
			 size_t b)
{
	bool wake = false;
	for (size_t p = a; p < b; p++) {
		if (page_finish(&rg->pages, p) & PAGE_WAKE_WANTED)
			wake = true;
		session_clear_userfault_bit(s, page_offset(rg, p), rg->r.page_size);
	}
	return wake;
}

/* One claimed page is in (ok) or given back; either way a fault that found
 * it FILLING is woken, and a page that is in has its userfault bit cleared. */
static void settle_claimed(struct pagein_session *s, struct region *rg,
			   size_t idx, bool ok)
{
	uint8_t flags = ok ? page_finish(&rg->pages, idx) : page_abandon(&rg->pages, idx);
	if (flags & PAGE_WAKE_WANTED) {
		count(&s->n.wakes, 1);
		uffd_wake(s->uffd, page_addr(rg, idx), rg->r.page_size);
	}
	if (ok)
		session_clear_userfault_bit(s, page_offset(rg, idx), rg->r.page_size);
}

bool region_abandon(struct region *rg, size_t a, size_t b)
{
	bool wake = false;
	for (size_t p = a; p < b; p++)
		if (page_abandon(&rg->pages, p) & PAGE_WAKE_WANTED)
			wake = true;
	return wake;
}

static bool is_corruption(int r)
{
	return r == -EIO || r == -EBADMSG;
}

int fill_run_claimed(struct pagein_session *s, struct region *rg, size_t first,
		     size_t n, size_t fault_idx, bool reader, bool wake,
		     enum fill_path path, struct pagein_error *err)
{
	uint64_t ps = rg->r.page_size;
	size_t i = first, end = first + n, filled = 0;
	int r = 0;
	/* The faulting page is woken by its own fill when it is in the last
	 * ioctl of the run (one ioctl per fault instead of COPY + WAKE); any
	 * other reason to wake (a WAKE_WANTED note, EEXIST) wakes the range at
	 * the end. */
	bool fault_woken = false, must_wake = false;
	while (i < end) {
		struct page_bytes pb;
		enum run_kind kind;
		size_t j;
		r = plan_subrun(s, rg, i, end, &pb, &kind, &j);
		if (r < 0) {
			if (is_corruption(r) && i != fault_idx) {
				/* Only a real fault decides what a bad chunk costs:
				 * filling ahead leaves the page for its fault. */
				must_wake |= region_abandon(rg, i, i + 1);
				i++;
				r = 0;
				continue;
			}
			if (!is_corruption(r) || s->on_corrupt != PAGEIN_CORRUPT_POISON) {
				struct page_bytes none = {0};
				none.ext.bad_chunk = pb.ext.bad_chunk;
				r = fail_corrupt(rg, i, r, &none, err);
				break;
			}
			/* Poison the faulting page only: the guest gets a memory
			 * error there, never bytes we could not read. */
			kind = RUN_POISON;
			j = i + 1;
			memset(&pb, 0, sizeof(pb));
		}
		if (!reader && j - i > NONREADER_MAX_PAGES)
			j = i + NONREADER_MAX_PAGES;
		uint64_t addr = page_addr(rg, i), len = (j - i) * ps, done = 0;
		bool wake_now = wake && j == end && fault_idx >= i && fault_idx < j;
		if (!reader) {
			if (kind == RUN_DATA && s->source->ops->prepare)
				s->source->ops->prepare(s->source, page_offset(rg, i), len);
			if (!fill_lock(s, rg, i, j, kind)) {
				page_bytes_put(s, &pb);
				continue; /* discarded meanwhile: plan again */
			}
		}
		if (kind == RUN_DATA)
			r = uffd_copy(s->uffd, addr, pb.data, len, wake_now, &done);
		else if (kind == RUN_ZERO)
			r = zero_fill(s, rg, addr, len, wake_now, &done);
		else
			r = uffd_poison(s->uffd, addr, len, wake_now, &done);
		if (!reader)
			pthread_rwlock_unlock(&s->remove_lock);
		if (r == 0 && wake_now)
			fault_woken = true;
		page_bytes_put(s, &pb);
		if (r == 0)
			done = len;
		size_t pages = (size_t)(done / ps);
		count(kind == RUN_DATA ? &s->n.pages_copied
		      : kind == RUN_ZERO ? &s->n.pages_zeroed : &s->n.pages_poisoned, pages);
		if (kind == RUN_DATA)
			count(&s->n.bytes_read, pages * ps);
		must_wake |= finish_pages(s, rg, i, i + pages);
		filled += pages;
		i += pages;
		enum uffd_outcome o = uffd_classify(r);
		if (o == UFFD_DONE)
			continue;
		if (o == UFFD_RETRY) {
			/* Events pending: read them, then plan again (they may
			 * have discarded pages of this very run). */
			r = wait_for_events(s, reader, err);
			if (r < 0)
				break;
			continue;
		}
		if (o == UFFD_EXISTS) {
			/* Filled outside our table; EEXIST woke nobody. */
			count(&s->n.eexist, 1);
			finish_pages(s, rg, i, i + 1);
			must_wake = true;
			i++;
			r = 0;
			continue;
		}
		if (o == UFFD_GONE) {
			r = -ESRCH;
			break;
		}
		r = pagein_fail(err, -r, "filling 0x%llx (offset 0x%llx, %llu pages): %s",
				(unsigned long long)addr,
				(unsigned long long)page_offset(rg, i),
				(unsigned long long)(j - i), strerror(-r));
		break;
	}
	must_wake |= region_abandon(rg, i, end);
	if (path == FILL_FAULT) {
		bool got_it = fault_idx < i && page_state_of(page_load(&rg->pages, fault_idx)) != PAGE_ABSENT;
		count_fill(s, FILL_FAULT, got_it);
		if (filled > got_it)
			count_fill(s, FILL_FAULT_AROUND, filled - got_it);
	} else {
		count_fill(s, path, filled);
	}
	if ((must_wake || (wake && !fault_woken)) && r != -ESRCH) {
		count(&s->n.wakes, 1);
		uffd_wake(s->uffd, page_addr(rg, first), n * ps);
	}
	return r;
}

/* pwrite() all of buf at off into the guest memory fd. */
static int write_mem(struct pagein_session *s, uint64_t off, const void *buf,
		     uint64_t len)
{
	if (s->mem_map) {
		/* hugetlbfs has no write(): go through our own mapping, made
		 * resident first so that an empty huge page pool is an error
		 * here, not a SIGBUS in the memcpy. */
		char *dst = (char *)s->mem_map + off;
		if (madvise(dst, len, MADV_POPULATE_WRITE) < 0)
			return -errno;
		if (buf)
			memcpy(dst, buf, len);
		else
			memset(dst, 0, len);
		return 0;
	}
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
	if (s->mem_map)
		return write_mem(s, off, NULL, len);
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
			      size_t idx, bool reader, bool *zero,
			      struct pagein_error *err)
{
	uint64_t off = page_offset(rg, idx), ps = rg->r.page_size;
	int r;
	*zero = true;
	if (!reader)
		pthread_rwlock_rdlock(&s->remove_lock); /* see fill_lock() */
	if (page_load(&rg->pages, idx) & (PAGE_ZERO_FILL | PAGE_DISCARDED)) {
		/* Discarded: MADV_DONTNEED on shared memory keeps the page
		 * cache (the guest's data stays); MADV_REMOVE punched it. Only
		 * a hole needs zeros, and writing them overwrites no data. */
		if (lseek(s->mem_fd, (off_t)off, SEEK_DATA) == (off_t)off) {
			*zero = false;
			if (!reader)
				pthread_rwlock_unlock(&s->remove_lock);
			return 0;
		}
		r = write_zeros(s, off, ps);
		if (r == 0)
			count(&s->n.pages_zeroed, 1);
	} else {
		struct page_bytes pb;
		r = page_bytes_get(s, off, ps, &pb);
		if (r < 0) {
			if (!reader)
				pthread_rwlock_unlock(&s->remove_lock);
			return fail_corrupt(rg, idx, r, &pb, err);
		}
		*zero = !pb.data;
		r = pb.data ? write_mem(s, off, pb.data, ps) : write_zeros(s, off, ps);
		page_bytes_put(s, &pb);
		if (r == 0) {
			count(&s->n.pages_written, 1);
			count(&s->n.bytes_read, ps);
		}
	}
	if (!reader)
		pthread_rwlock_unlock(&s->remove_lock);
	if (r < 0)
		return pagein_fail(err, -r, "pwrite at offset 0x%llx: %s",
				   (unsigned long long)off, strerror(-r));
	return 0;
}

/* ---- faults ----------------------------------------------------------- */

static void record_touch(struct pagein_session *s, const struct region *rg,
			 size_t idx)
{
	if (!s->record)
		return;
	pthread_mutex_lock(&s->record_lock);
	if (s->nrecorded == s->record_cap) {
		size_t cap = s->record_cap ? s->record_cap * 2 : 4096;
		uint64_t *n = realloc(s->recorded, cap * sizeof(*n));
		if (!n) {
			pthread_mutex_unlock(&s->record_lock);
			return; /* a shorter working set, not a wrong one */
		}
		s->recorded = n;
		s->record_cap = cap;
	}
	s->recorded[s->nrecorded++] = page_offset(rg, idx);
	pthread_mutex_unlock(&s->record_lock);
}

/* Claims the still-absent neighbours of page idx (claimed already) within
 * the fault-around window, keeping one contiguous run [*lo, *hi). The
 * window is aligned around the fault (to the source's chunk when chunks
 * are larger), or ahead of it while faults come in sequence, doubling each
 * time up to PAGEIN_FAULT_AROUND_MAX. */
static void claim_window(struct pagein_session *s, struct region *rg,
			 size_t idx, size_t *lo, size_t *hi)
{
	*lo = idx;
	*hi = idx + 1;
	if (s->fa_base < 2 || rg->r.page_size != 4096)
		return;
	size_t npages = rg->pages.npages, w;
	bool sequential = atomic_load_explicit(&s->fa_region, memory_order_relaxed) == rg &&
			  atomic_load_explicit(&s->fa_next, memory_order_relaxed) == idx;
	size_t wlo, whi;
	if (sequential) {
		w = atomic_load_explicit(&s->fa_window, memory_order_relaxed) * 2;
		if (w > PAGEIN_FAULT_AROUND_MAX)
			w = PAGEIN_FAULT_AROUND_MAX;
		wlo = idx;
		whi = idx + w;
	} else {
		w = s->fa_base;
		wlo = idx & ~(size_t)(w - 1);
		whi = wlo + w;
		uint64_t cs = s->source->chunk_size;
		if (cs > (uint64_t)w * 4096) {
			/* A compressed chunk is decompressed whole on its first
			 * fault: fill all of it while it is at hand. */
			uint64_t off = page_offset(rg, idx), cstart = off - off % cs;
			wlo = cstart > rg->r.offset ? (size_t)((cstart - rg->r.offset) >> 12) : 0;
			whi = (size_t)((cstart + cs - rg->r.offset) >> 12);
			w = whi - wlo;
		}
	}
	if (whi > npages)
		whi = npages;
	while (*lo > wlo && page_claim_absent(&rg->pages, *lo - 1))
		(*lo)--;
	while (*hi < whi && page_claim_absent(&rg->pages, *hi))
		(*hi)++;
	atomic_store_explicit(&s->fa_window, (unsigned)w, memory_order_relaxed);
	atomic_store_explicit(&s->fa_region, rg, memory_order_relaxed);
	atomic_store_explicit(&s->fa_next, *hi, memory_order_relaxed);
}

static int fill_one_woken(struct pagein_session *s, struct region *rg, size_t idx,
			  bool map_cache, struct pagein_error *err);

static int serve_missing(struct pagein_session *s, struct region *rg,
			 size_t idx, struct pagein_error *err)
{
	for (;;) {
		enum page_state prev;
		if (page_claim(&rg->pages, idx, &prev)) {
			if (prev == PAGE_ABSENT)
				record_touch(s, rg, idx);
			size_t lo, hi;
			claim_window(s, rg, idx, &lo, &hi);
			return fill_run_claimed(s, rg, lo, hi - lo, idx, true, true, FILL_FAULT, err);
		}
		if (prev == PAGE_FILLING) {
			if (page_want_wake(&rg->pages, idx))
				return 0; /* its filler wakes us */
			continue;
		}
		/* PRESENT, yet this thread faults: a fault raised before our fill
		 * landed (then ZEROPAGE finds the page: EEXIST), or a page lost
		 * without an event (then zeros are what the kernel would give).
		 * ZEROPAGE never overwrites, so it is safe either way. */
		return fill_one_woken(s, rg, idx, false, err);
	}
}

/* One page with the waiter woken: UFFDIO_ZEROPAGE, or UFFDIO_CONTINUE to
 * map the page-cache page. EEXIST means already there (a stale fault);
 * the kernel then woke nobody, so wake the range ourselves. */
static int fill_one_woken(struct pagein_session *s, struct region *rg, size_t idx,
			  bool map_cache, struct pagein_error *err)
{
	uint64_t addr = page_addr(rg, idx), ps = rg->r.page_size, done;
	int r;
	for (;;) {
		r = map_cache ? uffd_continue(s->uffd, addr, ps, true, &done)
			      : zero_fill(s, rg, addr, ps, true, &done);
		if (r != -EAGAIN)
			break;
		r = wait_for_events(s, true, err);
		if (r < 0)
			return r;
	}
	switch (uffd_classify(r)) {
	case UFFD_DONE:
		count(map_cache ? &s->n.pages_continued : &s->n.pages_zeroed, 1);
		return 0;
	case UFFD_EXISTS:
		count(&s->n.eexist, 1);
		count(&s->n.wakes, 1);
		uffd_wake(s->uffd, addr, ps);
		return 0;
	case UFFD_GONE:
		return -ESRCH;
	default:
		return pagein_fail(err, -r, "%s at 0x%llx: %s",
				   map_cache ? "continue" : "zeropage",
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
				return fill_one_woken(s, rg, idx, true, err);
			if (page_want_wake(&rg->pages, idx))
				return 0;
			continue;
		}
		int r = 0;
		if (prev == PAGE_ABSENT)
			record_touch(s, rg, idx);
		if (prev == PAGE_ABSENT && s->mem_fd >= 0) {
			/* A cached page we never filled (someone read the memfd
			 * through an unregistered mapping): its content is not
			 * the snapshot's, so write the snapshot's first. */
			bool zero;
			r = write_page_claimed(s, rg, idx, true, &zero, err);
		}
		/* REMOVED + MINOR: MADV_DONTNEED on shared memory kept the
		 * page; the guest's data is still there: just map it. */
		if (r == 0)
			r = fill_one_woken(s, rg, idx, true, err);
		settle_claimed(s, rg, idx, r == 0);
		return r;
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
	pthread_mutex_lock(&s->reader_lock);
	int r = read_events(s, err);
	struct fault_queue *q = &s->queue;
	while (r == 0 && q->head < q->tail) {
		struct uffd_msg m = q->msg[q->head++];
		r = serve_fault(s, &m, err);
	}
	if (q->head == q->tail)
		q->head = q->tail = 0;
	pthread_mutex_unlock(&s->reader_lock);
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
			if (prev == PAGE_ABSENT)
				record_touch(s, rg, idx);
			bool zero;
			int r = write_page_claimed(s, rg, idx, false, &zero, err);
			/* pwrite() wakes no uffd waiter: settling wakes a fault
			 * that found the page FILLING. */
			settle_claimed(s, rg, idx, r == 0);
			if (r < 0)
				return r;
			count_fill(s, FILL_REQUEST, 1);
			*zero_out = zero;
			break;
		}
		if (prev == PAGE_PRESENT) {
			/* Filled by another path, which cleared the bit already;
			 * clear it again in case the VMM set it back. */
			session_clear_userfault_bit(s, page_offset(rg, idx), rg->r.page_size);
			break;
		}
		/* Another path is filling it; it is microseconds away. */
		struct timespec ts = {0, 10 * 1000};
		nanosleep(&ts, NULL);
	}
	*len_out = rg->r.page_size;
	return 0;
}
