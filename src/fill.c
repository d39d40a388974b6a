/* fill.c - the fill engine (see fill.h).
 *
 *   user MISSING fault  -> UFFDIO_COPY of snapshot bytes (UFFDIO_ZEROPAGE for
 *                          zero pages and for a discarded faulting page)
 *   user MINOR fault    -> UFFDIO_CONTINUE (the page is in the page cache)
 *   stage-2 request     -> pwrite() into the guest memory fd (cache only)
 *
 * The kernel subtleties each branch answers are named where they are
 * handled; what an errno means is decided in uffd_classify() alone. */
#include "fill.h"

#include <pthread.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#include "error.h"
#include "guard.h"
#include "source.h"
#include "uffd.h"

#define HUGE_2M (2ull << 20)
/* Longest ioctl a non-reader issues while holding remove_lock: 128 KiB
 * copies in ~60 us, so a uffd read waits at most about one fault round
 * trip behind prefetch. */
#define NONREADER_MAX_PAGES 32

/* ---- settling --------------------------------------------------------- */

/* After a page left FILLING with these flags: a stage-2 waiter sleeps on
 * the session's condition; a fault noted WAKE_WANTED (returned). */
static bool after_settle(struct pagein_session *s, uint8_t flags)
{
	if (flags & PAGE_WAITER)
		session_signal(s);
	return flags & PAGE_WAKE_WANTED;
}

/* Pages [a, b) are in: PRESENT (REMOVED if discarded meanwhile), userfault
 * bits cleared. True if a fault asked to be woken. */
static bool finish_pages(struct pagein_session *s, struct region *rg, size_t a,
			 size_t b)
{
	bool wake = false;
	for (size_t p = a; p < b; p++) {
		wake |= after_settle(s, page_finish(&rg->pages, p));
		session_clear_userfault_bit(s, page_offset(rg, p), rg->r.page_size);
	}
	return wake;
}

static bool abandon_pages(struct pagein_session *s, struct region *rg,
			  size_t a, size_t b)
{
	bool wake = false;
	for (size_t p = a; p < b; p++)
		wake |= after_settle(s, page_abandon(&rg->pages, p));
	return wake;
}

static void wake_range(struct pagein_session *s, struct region *rg, size_t a,
		       size_t b)
{
	count(&s->n->wakes, 1);
	uffd_wake(s->uffd, page_addr(rg, a), (uint64_t)(b - a) * rg->r.page_size);
}

void fill_abandon(struct pagein_session *s, struct region *rg, size_t a,
		  size_t b)
{
	if (abandon_pages(s, rg, a, b))
		wake_range(s, rg, a, b);
}

/* ---- the source's bytes ----------------------------------------------- */

static bool is_corruption(int r)
{
	return r == -EIO || r == -EBADMSG;
}

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
 * page across a hole boundary or a chunk boundary). A raw snapshot that
 * shrank under us reads as -EIO, never as a SIGBUS. */
struct page_bytes {
	const void *data; /* NULL when the page is all zeros */
	struct source_extent ext;
	bool have_ext;
	void *bounce;
	uint64_t bounce_len;
};

/* Bounce buffers for 2 MiB pages, one kept per thread: a fresh 2 MiB
 * buffer per huge page cost 512 page faults (~5 ms here) per fill. */
static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;

static void bounce_unmap(void *p)
{
	munmap(p, HUGE_2M);
}

static void bounce_key_init(void)
{
	if (pthread_key_create(&bounce_key, bounce_unmap))
		bounce_key = (pthread_key_t)-1;
}

static void *bounce_get(uint64_t ps)
{
	if (ps != HUGE_2M)
		return malloc(ps);
	pthread_once(&bounce_once, bounce_key_init);
	void *p = bounce_key == (pthread_key_t)-1 ? NULL : pthread_getspecific(bounce_key);
	if (p) {
		pthread_setspecific(bounce_key, NULL);
		return p;
	}
	p = mmap(NULL, HUGE_2M, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void bounce_put(void *p, uint64_t ps)
{
	if (!p)
		return;
	if (ps != HUGE_2M) {
		free(p);
		return;
	}
	if (bounce_key != (pthread_key_t)-1 && !pthread_getspecific(bounce_key) &&
	    pthread_setspecific(bounce_key, p) == 0)
		return;
	munmap(p, HUGE_2M);
}

static void page_bytes_put(struct pagein_session *s, struct page_bytes *pb)
{
	if (pb->have_ext)
		s->source->ops->put(s->source, &pb->ext);
	bounce_put(pb->bounce, pb->bounce_len);
	memset(pb, 0, sizeof(*pb));
}

static int page_bytes_get(struct pagein_session *s, uint64_t off, uint64_t ps,
			  struct page_bytes *pb)
{
	memset(pb, 0, sizeof(*pb));
	int r = s->source->ops->get(s->source, off, ps, &pb->ext);
	if (r < 0)
		return r;
	if (pb->ext.len >= ps) {
		pb->have_ext = true;
		bool zero = true;
		if (pb->ext.data && guarded_is_zero(pb->ext.data, ps, &zero) < 0) {
			page_bytes_put(s, pb);
			return -EIO; /* the file shrank under its mapping */
		}
		pb->data = zero ? NULL : pb->ext.data;
		return 0;
	}
	s->source->ops->put(s->source, &pb->ext);
	pb->bounce = bounce_get(ps);
	if (!pb->bounce)
		return -ENOMEM;
	pb->bounce_len = ps;
	r = source_read(s->source, off, pb->bounce, ps);
	if (r < 0) {
		bounce_put(pb->bounce, ps);
		pb->bounce = NULL;
		return r;
	}
	pb->data = page_is_zero(pb->bounce, ps) ? NULL : pb->bounce;
	return 0;
}

static int fail_corrupt(struct pagein_session *s, const struct region *rg,
			size_t idx, int r, uint64_t chunk, struct pagein_error *err)
{
	if (s->source->ops->shrunk && s->source->ops->shrunk(s->source, page_offset(rg, idx)))
		return pagein_fail(err, -r,
				   "snapshot cannot give page at offset 0x%llx: the snapshot file %s shrank while served",
				   (unsigned long long)page_offset(rg, idx), s->source->path);
	if (r == -EIO && source_pagein_remote(s->source))
		return pagein_fail(err, -r,
				   "snapshot cannot give page at offset 0x%llx (chunk %llu): not fetched from %s within --fetch-deadline (or refused by the server)",
				   (unsigned long long)page_offset(rg, idx),
				   (unsigned long long)chunk, s->source->path);
	if (s->source->chunk_size)
		return pagein_fail(err, -r,
				   "snapshot cannot give page at offset 0x%llx (chunk %llu): %s",
				   (unsigned long long)page_offset(rg, idx),
				   (unsigned long long)chunk, strerror(-r));
	return pagein_fail(err, -r, "snapshot cannot give page at offset 0x%llx: %s",
			   (unsigned long long)page_offset(rg, idx), strerror(-r));
}

/* The embedder hears of every bad chunk met and every page poisoned (the
 * daemon logs them, rate-limited). */
static void note_corrupt(struct pagein_session *s, const struct region *rg,
			 size_t idx, int r, uint64_t chunk)
{
	session_event(s, PAGEIN_EVENT_CORRUPT_CHUNK, page_offset(rg, idx), 0, chunk, r);
}

static void note_poisoned(struct pagein_session *s, const struct region *rg,
			  size_t idx, uint64_t pages)
{
	count(&s->n->pages_poisoned, pages);
	session_event(s, PAGEIN_EVENT_POISONED, page_offset(rg, idx), pages, 0, -EHWPOISON);
}

static void count_fill(struct pagein_session *s, enum fill_path path, uint64_t pages)
{
	static const size_t field[] = {
		[FILL_FAULT] = offsetof(struct session_counters, filled_fault),
		[FILL_PREFETCH] = offsetof(struct session_counters, filled_prefetch),
		[FILL_BACKGROUND] = offsetof(struct session_counters, filled_background),
		[FILL_REQUEST] = offsetof(struct session_counters, filled_request),
	};
	count((atomic_uint_fast64_t *)((char *)s->n + field[path]), pages);
}

/* ---- runs into the user mapping ---------------------------------------- */

enum run_kind {
	RUN_DATA,   /* UFFDIO_COPY of snapshot bytes */
	RUN_ZERO,   /* zeros */
	RUN_POISON, /* UFFDIO_POISON: the snapshot cannot give these */
	RUN_SKIP,   /* give back unfilled (discarded, or bad and not faulted) */
};

/* Plans the longest subrun [i, *j) of one kind that one ioctl can fill,
 * holding the source view in *pb (released by the caller). Returns 0 or a
 * fatal -errno (a bad chunk is planned, not returned: *bad set). */
static int plan_subrun(struct pagein_session *s, const struct fill_req *rq,
		       size_t i, size_t end, struct page_bytes *pb,
		       enum run_kind *kind, size_t *j, int *bad)
{
	struct region *rg = rq->rg;
	const uint8_t zero_flags = PAGE_ZERO_FILL | PAGE_DISCARDED;
	uint64_t ps = rg->r.page_size;
	memset(pb, 0, sizeof(*pb));
	*bad = 0;
	*j = i + 1;
	uint8_t v = page_load(&rg->pages, i);
	if ((v & PAGE_DISCARDED) && i != rq->fault_idx) {
		/* Discarded while we held it: filling it, even with zeros,
		 * would undo the balloon. Only a faulting page needs zeros. */
		*kind = RUN_SKIP;
		return 0;
	}
	if (v & zero_flags) {
		*kind = RUN_ZERO;
		return 0;
	}
	int r = s->source->ops->get(s->source, page_offset(rg, i), (end - i) * ps, &pb->ext);
	if (r == 0 && pb->ext.len < ps) {
		/* A huge page across extents: assemble it. */
		s->source->ops->put(s->source, &pb->ext);
		r = page_bytes_get(s, page_offset(rg, i), ps, pb);
		if (r == 0) {
			*kind = pb->data ? RUN_DATA : RUN_ZERO;
			return 0;
		}
	}
	if (r == -EINPROGRESS) {
		/* A remote chunk in flight (only for a parking fault): give
		 * back its pages unfilled; the fault, if it is among them, was
		 * parked and is woken when the chunk lands. */
		uint64_t n = pb->ext.len / ps;
		*j = i + (n ? n : 1);
		if (*j > end)
			*j = end;
		*kind = RUN_SKIP;
		memset(pb, 0, sizeof(*pb));
		return 0;
	}
	if (r < 0 && !is_corruption(r))
		return r;
	if (r < 0) {
		/* The snapshot cannot give these pages (the failure is
		 * remembered per chunk: the whole bad extent is one run). Only
		 * a real fault decides what that costs. */
		*bad = r;
		uint64_t bad_chunk = pb->ext.bad_chunk;
		uint64_t n = pb->ext.len / ps;
		*j = i + (n ? n : 1);
		if (*j > end)
			*j = end;
		*kind = RUN_SKIP;
		if (rq->fault_idx >= i && rq->fault_idx < *j &&
		    s->on_corrupt == PAGEIN_CORRUPT_POISON)
			*kind = RUN_POISON;
		memset(pb, 0, sizeof(*pb));
		pb->ext.bad_chunk = bad_chunk;
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
		/* Stop before a page discarded meanwhile (skipped on its own). */
		for (size_t p = i + 1; p < *j; p++)
			if (page_load(&rg->pages, p) & zero_flags) {
				*j = p;
				break;
			}
		return 0;
	}
	bool zero;
	if (guarded_is_zero(base, ps, &zero) < 0) {
		page_bytes_put(s, pb);
		*bad = -EIO; /* a raw file shrank under its mapping */
		*kind = rq->fault_idx == i && s->on_corrupt == PAGEIN_CORRUPT_POISON
				? RUN_POISON : RUN_SKIP;
		return 0;
	}
	*kind = zero ? RUN_ZERO : RUN_DATA;
	pb->data = base;
	if (zero && ps == HUGE_2M)
		return 0;
	bool z2 = zero;
	while (*j < i + avail && !(page_load(&rg->pages, *j) & zero_flags) &&
	       guarded_is_zero(base + (*j - i) * ps, ps, &z2) == 0 && z2 == zero)
		(*j)++;
	return 0;
}

/* A fill by a thread that is not the pump (prefetch, background, stage-2)
 * must not land after a discard it has not seen: madvise zaps (or punches)
 * only after its REMOVE event has been read, so a fill planned before the
 * event was applied and issued after the read could put snapshot bytes
 * (or a freshly allocated zero page) into a page the guest just discarded.
 * The pump holds remove_lock exclusively from read() until the REMOVEs are
 * applied; such fillers hold it shared from their last look at the page
 * flags until their ioctl or pwrite returns. A fill under the lock either
 * lands before the event is read (the zap then clears it) or sees the
 * flags. Returns false, unlocked, if a page was discarded meanwhile. */
static bool fill_lock(struct pagein_session *s, struct region *rg, size_t i,
		      size_t j, size_t fault_idx)
{
	pthread_rwlock_rdlock(&s->remove_lock);
	for (size_t p = i; p < j; p++)
		if (p != fault_idx && (page_load(&rg->pages, p) & PAGE_DISCARDED)) {
			pthread_rwlock_unlock(&s->remove_lock);
			return false;
		}
	return true;
}

static int stop_code(struct pagein_session *s)
{
	int f = atomic_load(&s->failed);
	if (f)
		return f;
	return atomic_load(&s->stopping) ? -ECANCELED : 0;
}

static int fill_map(struct pagein_session *s, const struct fill_req *rq,
		    struct pagein_error *err)
{
	struct region *rg = rq->rg;
	uint64_t ps = rg->r.page_size;
	size_t i = rq->first, end = rq->first + rq->n, filled = 0;
	int r = 0;
	/* The faulting page is woken by its own fill when it is in the last
	 * ioctl of the run (one ioctl per fault instead of COPY + WAKE); any
	 * other reason to wake (a WAKE_WANTED note, EEXIST) wakes the range at
	 * the end. */
	bool fault_woken = false, must_wake = false;
	while (i < end) {
		if ((r = stop_code(s)) < 0)
			break;
		struct page_bytes pb;
		enum run_kind kind;
		size_t j;
		int bad;
		r = plan_subrun(s, rq, i, end, &pb, &kind, &j, &bad);
		if (r == 0 && bad)
			note_corrupt(s, rg, i, bad, pb.ext.bad_chunk);
		if (r < 0) {
			r = pagein_fail(err, -r, "snapshot read at offset 0x%llx: %s",
					(unsigned long long)page_offset(rg, i), strerror(-r));
			break;
		}
		if (bad && kind == RUN_SKIP && rq->fault_idx >= i && rq->fault_idx < j) {
			/* fail mode: this session ends, naming the chunk. */
			r = fail_corrupt(s, rg, rq->fault_idx, bad, pb.ext.bad_chunk, err);
			break;
		}
		if (kind == RUN_SKIP) {
			must_wake |= abandon_pages(s, rg, i, j);
			i = j;
			continue;
		}
		if (!rq->reader && j - i > NONREADER_MAX_PAGES)
			j = i + NONREADER_MAX_PAGES;
		uint64_t addr = page_addr(rg, i), len = (j - i) * ps, done = 0;
		bool wake_now = rq->wake && j == end && rq->fault_idx >= i && rq->fault_idx < j;
		if (!rq->reader) {
			if (kind == RUN_DATA && s->source->ops->prepare)
				s->source->ops->prepare(s->source, page_offset(rg, i), len);
			if (!fill_lock(s, rg, i, j, rq->fault_idx)) {
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
		uint64_t gen = r == -EAGAIN ? session_wait_gen(s) : 0;
		if (!rq->reader)
			pthread_rwlock_unlock(&s->remove_lock);
		page_bytes_put(s, &pb);
		if (r == 0) {
			done = len;
			fault_woken |= wake_now;
		}
		size_t pages = (size_t)(done / ps);
		if (kind == RUN_POISON) {
			if (pages)
				note_poisoned(s, rg, i, pages);
			for (size_t p = i; p < i + pages; p++)
				must_wake |= after_settle(s, page_poisoned(&rg->pages, p));
		} else {
			count(kind == RUN_DATA ? &s->n->pages_copied : &s->n->pages_zeroed, pages);
			if (kind == RUN_DATA)
				count(&s->n->bytes_read, pages * ps);
			must_wake |= finish_pages(s, rg, i, i + pages);
			filled += pages;
		}
		i += pages;
		switch (uffd_classify(r)) {
		case UFFD_DONE:
			continue;
		case UFFD_RETRY:
			/* Events pending: read them (or have the pump read them),
			 * then plan again: they may have discarded pages of this
			 * very run. */
			count(&s->n->eagain, 1);
			r = session_wait(s, WAIT_EVENTS, gen, rq->reader, err);
			if (r < 0)
				goto out;
			continue;
		case UFFD_EXISTS:
			/* Filled outside our table; EEXIST woke nobody. */
			count(&s->n->eexist, 1);
			must_wake |= finish_pages(s, rg, i, i + 1);
			must_wake = true;
			i++;
			r = 0;
			continue;
		case UFFD_RANGE_GONE:
			/* ENOENT: the VMM unmapped or unregistered this range (its
			 * UNMAP event follows). That range is gone, not the VMM. */
			must_wake |= abandon_pages(s, rg, i, end);
			i = end;
			r = 0;
			goto out;
		case UFFD_GONE:
			r = -ESRCH;
			goto out;
		case UFFD_FATAL:
			if (r == -EFAULT && kind == RUN_DATA && s->source->ops->shrunk &&
			    s->source->ops->shrunk(s->source, page_offset(rg, i) + len - 1)) {
				/* The raw file shrank under the copy: those pages
				 * are "cannot give", like a bad chunk. */
				note_corrupt(s, rg, i, -EIO, 0);
				if (rq->fault_idx >= i && rq->fault_idx < j) {
					r = fail_corrupt(s, rg, rq->fault_idx, -EIO, 0, err);
					goto out;
				}
				must_wake |= abandon_pages(s, rg, i, j);
				i = j;
				r = 0;
				continue;
			}
			r = pagein_fail(err, -r, "filling 0x%llx (offset 0x%llx, %llu pages): %s",
					(unsigned long long)addr,
					(unsigned long long)page_offset(rg, i),
					(unsigned long long)(j - i), strerror(-r));
			goto out;
		}
	}
out:
	if (r == 0 && atomic_load(&s->failed))
		r = pagein_session_error(s, err); /* e.g. a bitmap bit we could not clear */
	must_wake |= abandon_pages(s, rg, i, end);
	if (rq->path == FILL_FAULT) {
		size_t fi = rq->fault_idx;
		bool got_it = fi < i && page_state_of(page_load(&rg->pages, fi)) == PAGE_PRESENT;
		count(&s->n->filled_fault, got_it);
		if (filled > got_it)
			count(&s->n->filled_fault_around, filled - got_it);
	} else {
		count_fill(s, rq->path, filled);
	}
	/* A parked fault is not woken: it sleeps until its chunk lands. */
	bool parked = rq->path == FILL_FAULT && s->park && source_park_parked();
	if ((must_wake || (rq->wake && !fault_woken && !parked)) && r != -ESRCH)
		wake_range(s, rg, rq->first, end);
	return r;
}

/* ---- the page cache, through the memory fd ----------------------------- */

enum probe_op { PROBE_ZERO, PROBE_MAP, PROBE_POISON };
static int fill_probe(struct pagein_session *s, struct region *rg, size_t idx,
		      enum probe_op op, struct pagein_error *err);

/* pwrite() all of buf at off into the guest memory fd. */
static int write_mem(struct pagein_session *s, uint64_t off, const void *buf,
		     uint64_t len)
{
	if (s->mem_map) {
		/* hugetlbfs has no write(): go through our own mapping, made
		 * resident first so that an empty huge page pool is an error
		 * here. The VMM can truncate the file meanwhile: guarded. */
		char *dst = (char *)s->mem_map + off;
		if (madvise(dst, len, MADV_POPULATE_WRITE) < 0)
			return -errno;
		int r = buf ? guarded_copy(dst, buf, len) : guarded_zero(dst, len);
		return r == -EFAULT ? -ENXIO : r;
	}
	const char *p = buf;
	while (len) {
		ssize_t n = pwrite(s->mem_fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENXIO;
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

/* Puts a claimed page's right content into the page cache through the
 * memory fd. Maps nothing and raises no uffd event. *zero says whether it
 * was zeros. -EIO/-EBADMSG: the snapshot cannot give it. */
static int write_page(struct pagein_session *s, struct region *rg, size_t idx,
		      bool reader, bool *zero, uint64_t *bad_chunk,
		      struct pagein_error *err)
{
	uint64_t off = page_offset(rg, idx), ps = rg->r.page_size;
	int r;
	*zero = true;
	struct page_bytes pb;
	bool have = false;
	if (!reader && source_pagein_remote(s->source) &&
	    !(page_load(&rg->pages, idx) & (PAGE_ZERO_FILL | PAGE_DISCARDED))) {
		/* A remote chunk may wait for the network (a stage-2 request
		 * or population on this thread, up to --fetch-deadline): get
		 * the bytes before taking remove_lock, which the pump takes
		 * exclusively for every read of the uffd. Held shared across
		 * the wait, it would make the pump wait for the network. */
		r = page_bytes_get(s, off, ps, &pb);
		if (r < 0) {
			*bad_chunk = pb.ext.bad_chunk;
			return r;
		}
		have = true;
	}
	if (!reader)
		pthread_rwlock_rdlock(&s->remove_lock); /* see fill_lock() */
	if (page_load(&rg->pages, idx) & (PAGE_ZERO_FILL | PAGE_DISCARDED)) {
		if (have) /* discarded meanwhile */
			page_bytes_put(s, &pb);
		/* Discarded: MADV_DONTNEED on shared memory keeps the page
		 * cache (the guest's data stays); MADV_REMOVE punched it. Only
		 * a hole needs zeros, and writing them overwrites no data. On
		 * hugetlbfs SEEK_DATA reports data everywhere: a read fault
		 * through our own mapping keeps a cached page and turns a hole
		 * into a zeroed one. */
		if (s->mem_map) {
			char *p = (char *)s->mem_map + off;
			bool z = true;
			r = madvise(p, ps, MADV_POPULATE_READ) < 0 ? -errno
			    : guarded_is_zero(p, ps, &z) < 0 ? -ENXIO : 0;
			*zero = z;
		} else if (lseek(s->mem_fd, (off_t)off, SEEK_DATA) == (off_t)off) {
			*zero = false;
			r = 0;
		} else {
			r = write_zeros(s, off, ps);
			if (r == 0)
				count(&s->n->pages_zeroed, 1);
		}
	} else {
		r = have ? 0 : page_bytes_get(s, off, ps, &pb);
		if (r < 0) {
			if (!reader)
				pthread_rwlock_unlock(&s->remove_lock);
			*bad_chunk = pb.ext.bad_chunk;
			return r;
		}
		*zero = !pb.data;
		r = pb.data ? write_mem(s, off, pb.data, ps) : write_zeros(s, off, ps);
		page_bytes_put(s, &pb);
		if (r == 0) {
			count(&s->n->pages_written, 1);
			count(&s->n->bytes_read, ps);
		}
	}
	if (!reader)
		pthread_rwlock_unlock(&s->remove_lock);
	if (r == -EFAULT && s->source->ops->shrunk && s->source->ops->shrunk(s->source, off))
		return -EIO; /* pwrite from a raw file that shrank */
	if (r < 0)
		return pagein_fail(err, -r, "writing guest memory at offset 0x%llx: %s%s",
				   (unsigned long long)off, strerror(-r),
				   r == -ENXIO ? " (the VMM truncated its guest memory fd)" : "");
	return 0;
}

static int fill_request(struct pagein_session *s, struct region *rg, size_t idx,
			bool *zero, struct pagein_error *err)
{
	uint64_t bad_chunk = 0;
	int r = write_page(s, rg, idx, false, zero, &bad_chunk, err);
	if (is_corruption(r)) {
		note_corrupt(s, rg, idx, r, bad_chunk);
		fail_corrupt(s, rg, idx, r, bad_chunk, err);
		if (s->on_corrupt == PAGEIN_CORRUPT_POISON) {
			/* Its own state: the userfault bit is never cleared, a
			 * request for it gets an error reply, a fault on it is
			 * poisoned. Never zeros. */
			note_poisoned(s, rg, idx, 1);
			if (after_settle(s, page_poisoned(&rg->pages, idx)))
				wake_range(s, rg, idx, idx + 1);
			return -EHWPOISON;
		}
	}
	/* pwrite() wakes no uffd waiter: settling wakes a fault that found
	 * the page FILLING. */
	bool wake;
	if (r == 0) {
		wake = after_settle(s, page_finish(&rg->pages, idx));
		count_fill(s, FILL_REQUEST, 1);
		if (session_clear_userfault_bit(s, page_offset(rg, idx), rg->r.page_size) < 0)
			r = pagein_session_error(s, err); /* the bit cannot say it */
	} else {
		wake = abandon_pages(s, rg, idx, idx + 1);
	}
	if (wake)
		wake_range(s, rg, idx, idx + 1);
	return r;
}

/* One unclaimed-page ioctl with its waiter woken, EAGAIN handled (the
 * caller is the pump): the kernel's answer, unclassified. */
static int probe_once(struct pagein_session *s, struct region *rg, size_t idx,
		      enum probe_op op, struct pagein_error *err)
{
	uint64_t addr = page_addr(rg, idx), ps = rg->r.page_size, done;
	for (;;) {
		int r = op == PROBE_MAP ? uffd_continue(s->uffd, addr, ps, true, &done)
			: op == PROBE_ZERO ? zero_fill(s, rg, addr, ps, true, &done)
					   : uffd_poison(s->uffd, addr, ps, true, &done);
		if (r != -EAGAIN)
			return r;
		count(&s->n->eagain, 1);
		r = session_wait(s, WAIT_EVENTS, 0, true, err);
		if (r < 0)
			return r;
	}
}

static int probe_result(struct pagein_session *s, struct region *rg, size_t idx,
			enum probe_op op, int r, struct pagein_error *err)
{
	static const char *names[] = {"zeropage", "continue", "poison"};
	switch (uffd_classify(r)) {
	case UFFD_DONE:
		/* A poison probe re-poisons a page counted when it was poisoned. */
		if (op != PROBE_POISON)
			count(op == PROBE_MAP ? &s->n->pages_continued : &s->n->pages_zeroed, 1);
		return 0;
	case UFFD_EXISTS:
		/* Already there (a stale fault); the kernel woke nobody. */
		count(&s->n->eexist, 1);
		wake_range(s, rg, idx, idx + 1);
		return 0;
	case UFFD_RANGE_GONE:
		wake_range(s, rg, idx, idx + 1);
		return 0;
	case UFFD_GONE:
		return -ESRCH;
	default:
		if (r == -ECANCELED || atomic_load(&s->failed))
			return r;
		return pagein_fail(err, -r, "%s at 0x%llx: %s", names[op],
				   (unsigned long long)page_addr(rg, idx), strerror(-r));
	}
}

static int fill_probe(struct pagein_session *s, struct region *rg, size_t idx,
		      enum probe_op op, struct pagein_error *err)
{
	int r = probe_once(s, rg, idx, op, err);
	if (op == PROBE_MAP && r == -EFAULT) {
		/* CONTINUE found no page in the cache: it was punched after the
		 * MINOR fault was raised (MADV_REMOVE, or fallocate, which
		 * raises no event). A hole reads as zeros: ZEROPAGE fills it
		 * (EEXIST: a page arrived meanwhile; it is woken). */
		op = PROBE_ZERO;
		r = probe_once(s, rg, idx, op, err);
	}
	return probe_result(s, rg, idx, op, r, err);
}

static int fill_minor(struct pagein_session *s, struct region *rg, size_t idx,
		      struct pagein_error *err)
{
	int r = 0;
	bool ok = true;
	if (!(page_load(&rg->pages, idx) & (PAGE_ZERO_FILL | PAGE_DISCARDED)) &&
	    s->mem_fd >= 0) {
		/* A cached page we never filled (someone read the memfd
		 * through an unregistered mapping): its content is not the
		 * snapshot's, so write the snapshot's first. */
		bool zero;
		uint64_t bad_chunk = 0;
		r = write_page(s, rg, idx, true, &zero, &bad_chunk, err);
		if (r == -EINPROGRESS) {
			/* A remote chunk in flight: the fault was parked (only
			 * a parking fault gets -EINPROGRESS). The page goes back
			 * unanswered; the chunk's landing wakes the vCPU, whose
			 * retry raises a new MINOR fault. */
			if (abandon_pages(s, rg, idx, idx + 1) || !source_park_parked())
				wake_range(s, rg, idx, idx + 1); /* not parked: it retries */
			return 0;
		}
		if (is_corruption(r)) {
			note_corrupt(s, rg, idx, r, bad_chunk);
			fail_corrupt(s, rg, idx, r, bad_chunk, err);
			if (s->on_corrupt == PAGEIN_CORRUPT_POISON) {
				note_poisoned(s, rg, idx, 1);
				after_settle(s, page_poisoned(&rg->pages, idx));
				return fill_probe(s, rg, idx, PROBE_POISON, err);
			}
		}
		ok = r == 0;
	}
	if (ok && (page_load(&rg->pages, idx) & (PAGE_ZERO_FILL | PAGE_DISCARDED))) {
		/* REMOVED + MINOR. MADV_DONTNEED on a shared mapping kept the
		 * page cache: the guest's data is still there, map it. On a
		 * private mapping of the file it dropped the guest's copy and
		 * the cache shows through, so the right content is zeros. The
		 * fault does not say which: ZEROPAGE fills a private mapping
		 * and answers EEXIST on a shared one, where CONTINUE follows. */
		r = probe_once(s, rg, idx, PROBE_ZERO, err);
		if (r == -EEXIST)
			r = fill_probe(s, rg, idx, PROBE_MAP, err);
		else
			r = probe_result(s, rg, idx, PROBE_ZERO, r, err);
	} else if (ok) {
		r = fill_probe(s, rg, idx, PROBE_MAP, err);
	}
	bool wake;
	if (r == 0) {
		wake = after_settle(s, page_finish(&rg->pages, idx));
		count(&s->n->filled_fault, 1);
		if (session_clear_userfault_bit(s, page_offset(rg, idx), rg->r.page_size) < 0)
			r = pagein_session_error(s, err);
	} else {
		wake = abandon_pages(s, rg, idx, idx + 1);
	}
	if (wake)
		wake_range(s, rg, idx, idx + 1);
	return r;
}

int fill(struct pagein_session *s, const struct fill_req *rq,
	 struct pagein_error *err)
{
	switch (rq->op) {
	case FILL_OP_MAP:
		return fill_map(s, rq, err);
	case FILL_OP_CACHE: {
		bool zero = false;
		int r = fill_request(s, rq->rg, rq->first, &zero, err);
		if (rq->zero)
			*rq->zero = zero;
		return r;
	}
	case FILL_OP_MINOR:
		return fill_minor(s, rq->rg, rq->first, err);
	case FILL_OP_PROBE_ZERO:
		return fill_probe(s, rq->rg, rq->first, PROBE_ZERO, err);
	case FILL_OP_PROBE_MAP:
		return fill_probe(s, rq->rg, rq->first, PROBE_MAP, err);
	case FILL_OP_PROBE_POISON:
		return fill_probe(s, rq->rg, rq->first, PROBE_POISON, err);
	}
	return pagein_fail(err, EINVAL, "unknown fill op %d", rq->op);
}
