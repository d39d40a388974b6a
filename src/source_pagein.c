/* source_pagein.c - serving a pagein snapshot file (docs/format.md).
 *
 * The index is read and checked once at open and held in memory. A fault
 * on a page that the bitmap says is zero is answered from the bitmap alone
 * (a NULL extent), with no I/O. A fault on a stored page needs its chunk
 * decompressed: chunks live in a cache bounded by bytes, each entry pinned
 * while a caller holds an extent of it, unpinned entries evicted least
 * recently used first. One thread decompresses a given chunk; others that
 * want it meanwhile wait for that one result rather than repeat the work.
 *
 * Reads use pread, never mmap: a file truncated or failing under us gives
 * an error return (-EIO after READ_TRIES tries, -EBADMSG for a checksum or
 * zstd failure, the chunk named in ext->bad_chunk), never SIGBUS and never
 * bytes that did not pass their checksum. A chunk that failed stays failed
 * (remembered per chunk): a second fault on it costs nothing, and the
 * whole chunk is reported bad at once (ext->len covers it).
 *
 * Decompress-ahead: a small pool of threads per source (AHEAD_THREADS)
 * decompresses the chunks that will be wanted next into the same cache,
 * so that fills find them ready instead of decompressing on the fault
 * path, one chunk at a time. What comes next is known two ways: advise()
 * (the working-set replay names its next batches) and a run of misses on
 * consecutive chunks (a sequential scan, background population), which
 * queues the following chunks. A chunk being decompressed ahead is a slot
 * in LOADING like any other: a get() that wants it waits for it
 * (single-flight), and a failure is remembered per chunk exactly as when
 * a get() decompressed it, so only a real fault on it decides what it
 * costs. The queue is bounded (a quarter of the cache at most), and there
 * is no decompress-ahead when the cache holds fewer than AHEAD_MIN_CHUNKS
 * chunks: what is decompressed ahead must still be cached when used. */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <zstd.h>

#include "error.h"
#include "snapshot_format.h"

/* 32 MiB: 128 chunks of the default 256 KiB. A chunk is mostly used once
 * (a fault fills the whole chunk it decompressed), so a small cache loses
 * little, and it keeps the daemon within its memory budget of 64 MiB plus
 * 0.5% of guest memory with room for everything else. */
#define CACHE_LIMIT_DEFAULT (32ull << 20)

enum slot_state { SLOT_LOADING, SLOT_READY, SLOT_FAILED };

/* A decompressed chunk: its present pages, packed in page order. */
struct slot {
	uint64_t chunk;
	enum slot_state state;
	int err;                  /* SLOT_FAILED: -EIO or -EBADMSG */
	unsigned pins;            /* extents handed out and not yet put() */
	unsigned char *data;      /* present * page_size bytes */
	size_t len;
	struct slot *prev, *next; /* LRU list, only while READY and unpinned */
};

/* Spare chunk buffers kept for reuse (see buf_alloc). */
#define POOL_MAX 16
#define POOL_BYTES (8u << 20)

/* Decompress-ahead (see the top of this file). */
#define AHEAD_THREADS 2
#define AHEAD_MAX 8        /* chunks queued ahead at most */
#define AHEAD_MIN_CHUNKS 8 /* cache size, in chunks, below which none */

struct pagein_file {
	struct pagein_source base;
	int fd;
	struct snapshot_meta m;

	pthread_mutex_t lock;     /* guards everything below */
	pthread_cond_t done;      /* a load finished (broadcast) */
	struct slot **slots;      /* [chunk_count]: cached or loading, or NULL */
	int *failed;              /* [chunk_count]: 0, or the -errno it failed with */
	struct slot lru;          /* sentinel: lru.next is most recently used */
	uint64_t cached, limit;   /* bytes in READY slots; the bound */
	ZSTD_DCtx **dctx;         /* idle decompression contexts */
	size_t ndctx, dctx_cap;
	struct source_pagein_stats st;
	atomic_uint_fast64_t zero_gets; /* counted without the lock */
	pthread_mutex_t pool_lock; /* guards the buffer pool */
	void *pool[POOL_MAX];
	size_t npool;

	/* Decompress-ahead, under lock: a ring of chunk numbers. */
	pthread_cond_t ahead_cond;     /* work queued, or stopping */
	pthread_t ahead_th[AHEAD_THREADS];
	unsigned nahead_th;            /* threads started */
	bool ahead_stop;
	uint64_t ahead_q[AHEAD_MAX];
	unsigned ahead_head, ahead_len;
	uint64_t last_miss;            /* chunk of the last miss + 1 (0: none) */
	/* A remote snapshot (source_http.c): chunks come from there, fd is -1. */
	const struct chunk_remote_ops *remote;
	void *remote_arg;
};

static const struct source_ops pagein_ops;

static struct pagein_file *to_file(struct pagein_source *s)
{
	return (struct pagein_file *)s;
}

bool source_pagein_probe(const void *head, size_t len)
{
	return len >= SNAPSHOT_MAGIC_LEN && !memcmp(head, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_LEN);
}

bool source_is_pagein(const struct pagein_source *s)
{
	return s->ops == &pagein_ops;
}

/* ---- cache bookkeeping (lock held) -------------------------------------- */

static void lru_unlink(struct slot *sl)
{
	sl->prev->next = sl->next;
	sl->next->prev = sl->prev;
	sl->prev = sl->next = NULL;
}

static void lru_push(struct pagein_file *f, struct slot *sl)
{
	sl->next = f->lru.next;
	sl->prev = &f->lru;
	f->lru.next->prev = sl;
	f->lru.next = sl;
}

/* Chunk buffers (decompressed data, stored bytes) are all chunk_size
 * bytes, taken from mmap and kept in a small pool for reuse. Not malloc:
 * glibc raises its mmap threshold after the first free and keeps freed
 * chunks in per-thread arenas, so the daemon held several times the cache
 * bound (169 MiB measured). Not mmap per chunk either: fresh anonymous
 * pages cost a fault each, which made serving 3-7x slower. */
static void *buf_alloc(struct pagein_file *f)
{
	pthread_mutex_lock(&f->pool_lock);
	void *p = f->npool ? f->pool[--f->npool] : NULL;
	pthread_mutex_unlock(&f->pool_lock);
	if (p)
		return p;
	/* MAP_POPULATE: one call instead of a page fault per page. */
	p = mmap(NULL, f->m.h.chunk_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void buf_free(struct pagein_file *f, void *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&f->pool_lock);
	/* At most POOL_BYTES of spares (2 MiB chunks: 4, not 16). */
	size_t max = POOL_BYTES / f->m.h.chunk_size;
	bool kept = f->npool < (max < 2 ? 2 : max > POOL_MAX ? POOL_MAX : max);
	if (kept)
		f->pool[f->npool++] = p;
	pthread_mutex_unlock(&f->pool_lock);
	if (!kept)
		munmap(p, f->m.h.chunk_size);
}

static void slot_free(struct pagein_file *f, struct slot *sl)
{
	buf_free(f, (void *)sl->data);
	free(sl);
}

static void evict_over_limit(struct pagein_file *f)
{
	while (f->cached > f->limit && f->lru.prev != &f->lru) {
		struct slot *old = f->lru.prev;
		lru_unlink(old);
		f->slots[old->chunk] = NULL;
		f->cached -= old->len;
		f->st.evictions++;
		slot_free(f, old);
	}
}

static ZSTD_DCtx *dctx_get(struct pagein_file *f)
{
	pthread_mutex_lock(&f->lock);
	ZSTD_DCtx *d = f->ndctx ? f->dctx[--f->ndctx] : NULL;
	pthread_mutex_unlock(&f->lock);
	return d ? d : ZSTD_createDCtx();
}

static void dctx_put(struct pagein_file *f, ZSTD_DCtx *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&f->lock);
	if (f->ndctx == f->dctx_cap) {
		size_t cap = f->dctx_cap ? 2 * f->dctx_cap : 4;
		ZSTD_DCtx **n = realloc(f->dctx, cap * sizeof(*n));
		if (!n) {
			pthread_mutex_unlock(&f->lock);
			ZSTD_freeDCtx(d);
			return;
		}
		f->dctx = n;
		f->dctx_cap = cap;
	}
	f->dctx[f->ndctx++] = d;
	pthread_mutex_unlock(&f->lock);
}

/* Reads, checks and decompresses chunk c into sl (no lock held). */
static int slot_load(struct pagein_file *f, struct slot *sl)
{
	const struct snapshot_meta *m = &f->m;
	const struct snapshot_chunk *ch = &m->chunks[sl->chunk];
	sl->len = (size_t)ch->present * m->h.page_size;
	sl->data = buf_alloc(f);
	if (!sl->data)
		return -ENOMEM;
	bool raw = ch->flags & SNAPSHOT_CHUNK_RAW;
	unsigned char *stored = raw ? sl->data : buf_alloc(f);
	if (!stored)
		return -ENOMEM;
	int r = f->remote ? f->remote->read_local(f->remote_arg, sl->chunk, stored)
			  : snapshot_chunk_read(f->fd, m, sl->chunk, stored, NULL);
	if (r == 0) {
		ZSTD_DCtx *d = raw ? NULL : dctx_get(f);
		if (!raw && !d)
			r = -ENOMEM;
		else
			r = snapshot_chunk_unpack(m, sl->chunk, stored, sl->data, d, NULL);
		dctx_put(f, d);
	}
	if (!raw)
		buf_free(f, stored);
	return r;
}

/* A load finished (lock held): the slot becomes READY, or FAILED and the
 * failure is remembered for the chunk. Drops the loader's pin. Returns
 * true if the caller must free the slot (failed, and nobody holds it). */
static bool slot_finish(struct pagein_file *f, struct slot *sl, int r, bool keep_pin)
{
	bool gone = false;
	if (r == 0) {
		sl->state = SLOT_READY;
		f->cached += sl->len;
		if (!keep_pin && --sl->pins == 0)
			lru_push(f, sl);
		evict_over_limit(f);
	} else {
		/* Remembered: later gets fail at once. Out of memory is not
		 * the chunk's fault and is not remembered. */
		sl->state = SLOT_FAILED;
		sl->err = r;
		f->slots[sl->chunk] = NULL;
		/* A remote chunk that failed its fetch may come back on a
		 * later fetch: source_http.c remembers it. */
		if ((r == -EIO || r == -EBADMSG) && !f->remote)
			f->failed[sl->chunk] = r;
		if (!keep_pin && --sl->pins == 0)
			gone = true;
	}
	pthread_cond_broadcast(&f->done);
	return gone;
}

/* ---- decompress-ahead --------------------------------------------------- */

static unsigned ahead_window(const struct pagein_file *f)
{
	/* A remote snapshot's fetcher queues ahead on its own; a pool
	 * thread would only wait on the network here. */
	if (f->remote)
		return 0;
	uint64_t chunks = f->limit / f->m.h.chunk_size;
	if (chunks < AHEAD_MIN_CHUNKS)
		return 0;
	return chunks / 4 < AHEAD_MAX ? (unsigned)(chunks / 4) : AHEAD_MAX;
}

static void *ahead_main(void *arg)
{
	struct pagein_file *f = arg;
	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (!f->ahead_stop && f->ahead_len == 0)
			pthread_cond_wait(&f->ahead_cond, &f->lock);
		if (f->ahead_stop)
			break;
		uint64_t c = f->ahead_q[f->ahead_head];
		f->ahead_head = (f->ahead_head + 1) % AHEAD_MAX;
		f->ahead_len--;
		if (f->slots[c] || f->failed[c] || !f->m.chunks[c].present)
			continue; /* cached, loading, bad, or nothing stored */
		struct slot *sl = calloc(1, sizeof(*sl));
		if (!sl)
			continue;
		sl->chunk = c;
		sl->state = SLOT_LOADING;
		sl->pins = 1; /* the loader's own, dropped by slot_finish */
		f->slots[c] = sl;
		f->st.ahead++;
		pthread_mutex_unlock(&f->lock);
		int r = slot_load(f, sl);
		pthread_mutex_lock(&f->lock);
		if (slot_finish(f, sl, r, false))
			slot_free(f, sl);
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

/* Queues chunk c to be decompressed ahead (lock held). Starts the pool
 * on first use. */
static void ahead_queue(struct pagein_file *f, uint64_t c)
{
	unsigned w = ahead_window(f);
	if (!w || c >= f->m.h.chunk_count || f->slots[c] || f->failed[c] ||
	    !f->m.chunks[c].present || f->ahead_stop)
		return;
	for (unsigned i = 0; i < f->ahead_len; i++)
		if (f->ahead_q[(f->ahead_head + i) % AHEAD_MAX] == c)
			return;
	if (f->ahead_len >= w)
		return; /* full: later hints come again */
	if (f->nahead_th == 0) {
		for (unsigned i = 0; i < AHEAD_THREADS; i++) {
			if (pthread_create(&f->ahead_th[i], NULL, ahead_main, f))
				break;
			f->nahead_th++;
		}
		if (f->nahead_th == 0) {
			f->ahead_stop = true; /* no threads: serve without */
			return;
		}
	}
	f->ahead_q[(f->ahead_head + f->ahead_len) % AHEAD_MAX] = c;
	f->ahead_len++;
	pthread_cond_signal(&f->ahead_cond);
}

/* Where page p of chunk c sits among the chunk's packed present pages. */
static size_t page_rank(const struct snapshot_meta *m, uint64_t c, uint32_t p)
{
	const uint64_t *bm = &m->bitmaps[c * m->bitmap_words];
	size_t k = 0;
	for (uint32_t w = 0; w < p / 64; w++)
		k += (size_t)__builtin_popcountll(bm[w]);
	return k + (size_t)__builtin_popcountll(bm[p / 64] & ((1ull << (p % 64)) - 1));
}

/* ---- the source interface ----------------------------------------------- */

/* From page-aligned off (< size), the run of pages up to len bytes and
 * within one chunk that are all stored (*present) or all zero: its length. */
static uint64_t page_run(struct pagein_source *s, uint64_t off, uint64_t len, bool *present)
{
	const struct snapshot_meta *m = &to_file(s)->m;
	uint64_t c = off / m->h.chunk_size;
	uint64_t chunk_end = (c + 1) * m->h.chunk_size;
	uint64_t end = off + (len < s->size - off ? len : s->size - off);
	if (end > chunk_end)
		end = chunk_end;
	uint32_t p = (uint32_t)((off - c * m->h.chunk_size) / m->h.page_size);
	*present = snapshot_page_present(m, c, p);
	uint64_t run_end = off + m->h.page_size;
	for (uint32_t q = p + 1; run_end < end && snapshot_page_present(m, c, q) == *present; q++)
		run_end += m->h.page_size;
	return (run_end < end ? run_end : end) - off;
}

static int pagein_get(struct pagein_source *s, uint64_t off, uint64_t len,
		      struct source_extent *ext)
{
	struct pagein_file *f = to_file(s);
	const struct snapshot_meta *m = &f->m;
	memset(ext, 0, sizeof(*ext));
	if (off >= s->size || len == 0 || off % m->h.page_size)
		return -EINVAL;
	uint64_t c = off / m->h.chunk_size;
	uint64_t chunk_end = (c + 1) * m->h.chunk_size;
	uint32_t p = (uint32_t)((off - c * m->h.chunk_size) / m->h.page_size);
	/* The extent is the run of pages that are all stored or all zero. */
	bool present;
	ext->len = page_run(s, off, len, &present);

	if (!present) {
		atomic_fetch_add_explicit(&f->zero_gets, 1, memory_order_relaxed);
		return 0;
	}
again:
	if (f->remote) {
		/* Not in memory: have the stored bytes here first (fetched, or
		 * from the local cache), outside the lock. A fault parks on the
		 * fetch (-EINPROGRESS) instead of waiting for it. */
		pthread_mutex_lock(&f->lock);
		bool have = f->slots[c] != NULL || f->failed[c];
		pthread_mutex_unlock(&f->lock);
		if (!have) {
			int e = f->remote->ensure(f->remote_arg, c);
			if (e < 0) {
				ext->len = chunk_end - off;
				ext->bad_chunk = c;
				return e;
			}
		}
	}
	pthread_mutex_lock(&f->lock);
	if (f->failed[c]) {
		int r = f->failed[c];
		pthread_mutex_unlock(&f->lock);
		ext->len = chunk_end - off;
		ext->bad_chunk = c;
		return r;
	}
	struct slot *sl = f->slots[c];
	if (sl) {
		if (sl->pins++ == 0 && sl->state == SLOT_READY)
			lru_unlink(sl);
		if (sl->state == SLOT_LOADING) {
			f->st.waits++;
			while (sl->state == SLOT_LOADING)
				pthread_cond_wait(&f->done, &f->lock);
		} else {
			f->st.hits++;
		}
	} else {
		sl = calloc(1, sizeof(*sl));
		if (!sl) {
			pthread_mutex_unlock(&f->lock);
			return -ENOMEM;
		}
		sl->chunk = c;
		sl->state = SLOT_LOADING;
		sl->pins = 1;
		f->slots[c] = sl;
		f->st.misses++;
		/* Misses on consecutive chunks: a scan. Decompress the next
		 * ones on the pool while this thread does its own. */
		if (f->last_miss == c && c > 0)
			for (uint64_t n = 1; n <= AHEAD_MAX; n++)
				ahead_queue(f, c + n);
		f->last_miss = c + 1;
		pthread_mutex_unlock(&f->lock);

		int r = slot_load(f, sl);

		pthread_mutex_lock(&f->lock);
		slot_finish(f, sl, r, true);
	}
	if (sl->state == SLOT_FAILED) {
		int r = sl->err;
		if (--sl->pins == 0)
			slot_free(f, sl);
		pthread_mutex_unlock(&f->lock);
		if (r == -EAGAIN && f->remote)
			goto again; /* the local copy went away (or was bad): fetch it */
		ext->len = chunk_end - off;
		ext->bad_chunk = c;
		return r;
	}
	pthread_mutex_unlock(&f->lock);
	ext->data = sl->data + page_rank(m, c, p) * m->h.page_size;
	ext->pin = sl;
	return 0;
}

static bool pagein_hole(struct pagein_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
	struct pagein_file *f = to_file(s);
	const struct snapshot_meta *m = &f->m;
	if (off >= s->size || len == 0 || off % m->h.page_size) {
		*run = len ? len : 1;
		return false;
	}
	bool present;
	*run = page_run(s, off, len, &present);
	return !present;
}

static void pagein_put(struct pagein_source *s, struct source_extent *ext)
{
	struct pagein_file *f = to_file(s);
	struct slot *sl = ext->pin;
	if (!sl)
		return; /* a zero extent pins nothing */
	ext->pin = NULL;
	pthread_mutex_lock(&f->lock);
	if (--sl->pins == 0) {
		lru_push(f, sl);
		evict_over_limit(f);
	}
	pthread_mutex_unlock(&f->lock);
}

/* Starts reading the stored bytes of the chunks under [off, off+len) into
 * the page cache, so that the get() that follows does not wait on the disk.
 * (No prepare(): get() already hands out bytes in memory, so a fill never
 * does I/O inside its ioctl.) */
static void pagein_advise(struct pagein_source *s, uint64_t off, uint64_t len)
{
	struct pagein_file *f = to_file(s);
	const struct snapshot_meta *m = &f->m;
	if (off >= s->size || len == 0)
		return;
	if (f->remote) {
		uint64_t last = (off + (len < s->size - off ? len : s->size - off) - 1) / m->h.chunk_size;
		for (uint64_t c = off / m->h.chunk_size; c <= last; c++)
			if (m->chunks[c].stored)
				f->remote->want(f->remote_arg, c);
		return;
	}
	uint64_t last = (off + (len < s->size - off ? len : s->size - off) - 1) / m->h.chunk_size;
	pthread_mutex_lock(&f->lock);
	for (uint64_t c = off / m->h.chunk_size; c <= last; c++)
		ahead_queue(f, c);
	pthread_mutex_unlock(&f->lock);
	uint64_t a = 0, b = 0; /* pending file range, merged while contiguous */
	for (uint64_t c = off / m->h.chunk_size; c <= last; c++) {
		const struct snapshot_chunk *ch = &m->chunks[c];
		if (!ch->stored)
			continue;
		if (b && ch->offset == b) {
			b += ch->stored;
			continue;
		}
		if (b)
			posix_fadvise(f->fd, (off_t)a, (off_t)(b - a), POSIX_FADV_WILLNEED);
		a = ch->offset;
		b = a + ch->stored;
	}
	if (b)
		posix_fadvise(f->fd, (off_t)a, (off_t)(b - a), POSIX_FADV_WILLNEED);
}

static void pagein_destroy(struct pagein_source *s)
{
	struct pagein_file *f = to_file(s);
	if (f->remote) /* first: stops the fetcher, which reads the meta */
		f->remote->destroy(f->remote_arg);
	pthread_mutex_lock(&f->lock);
	f->ahead_stop = true;
	pthread_cond_broadcast(&f->ahead_cond);
	pthread_mutex_unlock(&f->lock);
	for (unsigned i = 0; i < f->nahead_th; i++)
		pthread_join(f->ahead_th[i], NULL);
	for (uint64_t c = 0; c < f->m.h.chunk_count; c++)
		if (f->slots[c])
			slot_free(f, f->slots[c]);
	for (size_t i = 0; i < f->ndctx; i++)
		ZSTD_freeDCtx(f->dctx[i]);
	free(f->dctx);
	free(f->slots);
	free(f->failed);
	for (size_t i = 0; i < f->npool; i++)
		munmap(f->pool[i], f->m.h.chunk_size);
	snapshot_meta_free(&f->m);
	pthread_cond_destroy(&f->done);
	pthread_cond_destroy(&f->ahead_cond);
	pthread_mutex_destroy(&f->lock);
	pthread_mutex_destroy(&f->pool_lock);
	if (f->fd >= 0)
		close(f->fd);
	free(f);
}

static const struct source_ops pagein_ops = {
	.kind = "pagein",
	.get = pagein_get,
	.put = pagein_put,
	.advise = pagein_advise,
	.hole = pagein_hole,
	.destroy = pagein_destroy,
};

int source_pagein_open(int fd, const char *path, struct pagein_source **out,
		       struct pagein_error *err)
{
	struct snapshot_meta m;
	int r = snapshot_meta_read(fd, path, &m, err);
	if (r < 0) {
		/* The header or index is wrong: say what to do about it. */
		if (err && (r == -EINVAL || r == -EBADMSG)) {
			size_t n = strnlen(err->msg, sizeof(err->msg));
			snprintf(err->msg + n, sizeof(err->msg) - n,
				 ": the file is damaged; convert the raw memory file again (pagein snapshot convert)");
		}
		return r;
	}
	return source_pagein_new(fd, path, &m, NULL, NULL, out);
}

int source_pagein_new(int fd, const char *path, struct snapshot_meta *m,
		      const struct chunk_remote_ops *remote, void *remote_arg,
		      struct pagein_source **out)
{
	struct pagein_file *f = calloc(1, sizeof(*f));
	if (!f) {
		snapshot_meta_free(m);
		return -ENOMEM;
	}
	f->m = *m;
	f->slots = calloc(f->m.h.chunk_count, sizeof(*f->slots));
	f->failed = calloc(f->m.h.chunk_count, sizeof(*f->failed));
	if (!f->slots || !f->failed ||
	    source_init(&f->base, &pagein_ops, path, f->m.h.image_size) < 0) {
		free(f->slots);
		free(f->failed);
		snapshot_meta_free(&f->m);
		free(f);
		return -ENOMEM;
	}
	f->base.chunk_size = f->m.h.chunk_size;
	f->fd = fd;
	f->remote = remote;
	f->remote_arg = remote_arg;
	pthread_mutex_init(&f->lock, NULL);
	pthread_mutex_init(&f->pool_lock, NULL);
	pthread_cond_init(&f->done, NULL);
	pthread_cond_init(&f->ahead_cond, NULL);
	f->lru.next = f->lru.prev = &f->lru;
	f->limit = CACHE_LIMIT_DEFAULT;
	*out = &f->base;
	return 0;
}

/* ---- serving-side accessors (snapshot_format.h) ------------------------- */

void source_pagein_set_cache_limit(struct pagein_source *s, uint64_t bytes)
{
	struct pagein_file *f = to_file(s);
	pthread_mutex_lock(&f->lock);
	f->limit = bytes;
	evict_over_limit(f);
	pthread_mutex_unlock(&f->lock);
}

void source_pagein_stats(struct pagein_source *s, struct source_pagein_stats *st)
{
	struct pagein_file *f = to_file(s);
	pthread_mutex_lock(&f->lock);
	*st = f->st;
	st->cached_bytes = f->cached;
	st->cache_limit = f->limit;
	st->zero_gets = atomic_load_explicit(&f->zero_gets, memory_order_relaxed);
	pthread_mutex_unlock(&f->lock);
}

const struct snapshot_meta *source_pagein_meta(const struct pagein_source *s)
{
	return &((const struct pagein_file *)s)->m;
}

int source_pagein_readahead_ws(struct pagein_source *s)
{
	struct pagein_file *f = to_file(s);
	uint64_t a = f->m.h.data_offset, b = f->m.h.ws_data_end;
	if (b <= a)
		return 0;
	if (f->remote) {
		/* The working-set chunks are stored first, one after the
		 * other: queued together they go out as few large ranges. */
		for (uint64_t c = 0; c < f->m.h.chunk_count; c++) {
			const struct snapshot_chunk *ch = &f->m.chunks[c];
			if (ch->stored && ch->offset >= a && ch->offset < b)
				f->remote->want(f->remote_arg, c);
		}
		return 0;
	}
	int r = posix_fadvise(f->fd, (off_t)a, (off_t)(b - a), POSIX_FADV_WILLNEED);
	return -r;
}

struct remote *source_pagein_remote(struct pagein_source *s)
{
	if (!source_is_pagein(s))
		return NULL;
	struct pagein_file *f = to_file(s);
	return f->remote ? f->remote_arg : NULL;
}
