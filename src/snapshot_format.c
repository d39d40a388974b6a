/* snapshot_format.c - pagein snapshot files: parse, validate, write.
 * The layout is specified in docs/format.md; snapshot_format.h summarises. */
#include "snapshot_format.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "le.h"
#include "source.h"
#include "error.h"

/* Reads are tried this many times before -EIO: enough to ride out a
 * transient error (a network filesystem hiccup), few enough that a dead
 * disk fails a fault in milliseconds rather than hanging the guest. */
#define READ_TRIES 3

/* Header field offsets (docs/format.md, "Header"). */
enum {
	H_MAGIC = 0,
	H_VERSION = 8,
	H_HEADER_SIZE = 12,
	H_FLAGS = 16,
	H_PAGE_SIZE = 20,
	H_IMAGE_SIZE = 24,
	H_CHUNK_SIZE = 32,
	H_CHUNK_COUNT = 40,
	H_ENTRY_SIZE = 48,
	H_COMPRESSOR = 52,
	H_LEVEL = 54,
	H_INDEX_OFFSET = 56,
	H_INDEX_CHECKSUM = 64,
	H_WS_OFFSET = 72,
	H_WS_SIZE = 80,
	H_WS_CHECKSUM = 88,
	H_DATA_OFFSET = 96,
	H_DATA_SIZE = 104,
	H_WS_DATA_END = 112,
	H_HEADER_CHECKSUM = 120,
};

/* Index entry field offsets. */
enum {
	E_OFFSET = 0,
	E_STORED = 8,
	E_FLAGS = 12,
	E_CHECKSUM = 16,
	E_BITMAP = 24,
};

static unsigned long long ull(uint64_t v)
{
	return (unsigned long long)v;
}

uint32_t snapshot_entry_size(uint64_t chunk_size)
{
	if (chunk_size < SNAPSHOT_CHUNK_MIN || chunk_size > SNAPSHOT_CHUNK_MAX ||
	    (chunk_size & (chunk_size - 1)))
		return 0;
	uint64_t pages = chunk_size / SNAPSHOT_PAGE_SIZE;
	return SNAPSHOT_ENTRY_FIXED + (uint32_t)((pages + 63) / 64) * 8;
}

/* [off, off+len) inside [lo, hi)? Without overflow. */
static bool range_within(uint64_t off, uint64_t len, uint64_t lo, uint64_t hi)
{
	return off >= lo && off <= hi && len <= hi - off;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

/* ---- header ------------------------------------------------------------ */

static void header_encode(const struct snapshot_header *h, unsigned char *p)
{
	memset(p, 0, SNAPSHOT_HEADER_SIZE);
	memcpy(p + H_MAGIC, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_LEN);
	put32(p + H_VERSION, h->version);
	put32(p + H_HEADER_SIZE, h->header_size);
	put32(p + H_FLAGS, h->flags);
	put32(p + H_PAGE_SIZE, h->page_size);
	put64(p + H_IMAGE_SIZE, h->image_size);
	put64(p + H_CHUNK_SIZE, h->chunk_size);
	put64(p + H_CHUNK_COUNT, h->chunk_count);
	put32(p + H_ENTRY_SIZE, h->entry_size);
	put16(p + H_COMPRESSOR, h->compressor);
	put16(p + H_LEVEL, (uint16_t)h->level);
	put64(p + H_INDEX_OFFSET, h->index_offset);
	put64(p + H_INDEX_CHECKSUM, h->index_checksum);
	put64(p + H_WS_OFFSET, h->ws_offset);
	put64(p + H_WS_SIZE, h->ws_size);
	put64(p + H_WS_CHECKSUM, h->ws_checksum);
	put64(p + H_DATA_OFFSET, h->data_offset);
	put64(p + H_DATA_SIZE, h->data_size);
	put64(p + H_WS_DATA_END, h->ws_data_end);
	put64(p + H_HEADER_CHECKSUM, XXH3_64bits(p, H_HEADER_CHECKSUM));
}

int snapshot_header_parse(const void *buf, size_t len, uint64_t file_size,
			  struct snapshot_header *h, struct pagein_error *err)
{
	const unsigned char *p = buf;
	memset(h, 0, sizeof(*h));
	if (len < SNAPSHOT_HEADER_SIZE || file_size < SNAPSHOT_HEADER_SIZE)
		return pagein_fail(err, EINVAL, "file is %llu bytes, shorter than the %u-byte header",
				   ull(file_size < len ? file_size : len), SNAPSHOT_HEADER_SIZE);
	if (memcmp(p, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_LEN))
		return pagein_fail(err, EINVAL, "bad magic (not a pagein snapshot)");
	h->version = get32(p + H_VERSION);
	if (h->version != SNAPSHOT_VERSION)
		return pagein_fail(err, EINVAL, "header field version = %u; this pagein reads version %u",
				   h->version, SNAPSHOT_VERSION);
	h->header_size = get32(p + H_HEADER_SIZE);
	if (h->header_size != SNAPSHOT_HEADER_SIZE)
		return pagein_fail(err, EINVAL, "header field header_size = %u; version 1 requires %u",
				   h->header_size, SNAPSHOT_HEADER_SIZE);
	h->header_checksum = get64(p + H_HEADER_CHECKSUM);
	uint64_t sum = XXH3_64bits(p, H_HEADER_CHECKSUM);
	if (sum != h->header_checksum)
		return pagein_fail(err, EBADMSG, "header field header_checksum = 0x%016llx, header bytes hash to 0x%016llx",
				   ull(h->header_checksum), ull(sum));

	h->flags = get32(p + H_FLAGS);
	h->page_size = get32(p + H_PAGE_SIZE);
	h->image_size = get64(p + H_IMAGE_SIZE);
	h->chunk_size = get64(p + H_CHUNK_SIZE);
	h->chunk_count = get64(p + H_CHUNK_COUNT);
	h->entry_size = get32(p + H_ENTRY_SIZE);
	h->compressor = get16(p + H_COMPRESSOR);
	h->level = (int16_t)get16(p + H_LEVEL);
	h->index_offset = get64(p + H_INDEX_OFFSET);
	h->index_checksum = get64(p + H_INDEX_CHECKSUM);
	h->ws_offset = get64(p + H_WS_OFFSET);
	h->ws_size = get64(p + H_WS_SIZE);
	h->ws_checksum = get64(p + H_WS_CHECKSUM);
	h->data_offset = get64(p + H_DATA_OFFSET);
	h->data_size = get64(p + H_DATA_SIZE);
	h->ws_data_end = get64(p + H_WS_DATA_END);

	if (h->flags & ~SNAPSHOT_F_KNOWN)
		return pagein_fail(err, EINVAL, "header field flags = 0x%x has unknown bits 0x%x",
				   h->flags, h->flags & ~SNAPSHOT_F_KNOWN);
	if (h->page_size != SNAPSHOT_PAGE_SIZE)
		return pagein_fail(err, EINVAL, "header field page_size = %u; version 1 requires %u",
				   h->page_size, SNAPSHOT_PAGE_SIZE);
	if (h->image_size == 0)
		return pagein_fail(err, EINVAL, "header field image_size = 0");
	if (!snapshot_entry_size(h->chunk_size))
		return pagein_fail(err, EINVAL, "header field chunk_size = %llu is not a power of two in [%u, %u]",
				   ull(h->chunk_size), SNAPSHOT_CHUNK_MIN, SNAPSHOT_CHUNK_MAX);
	uint64_t count = h->image_size / h->chunk_size + (h->image_size % h->chunk_size != 0);
	if (h->chunk_count != count)
		return pagein_fail(err, EINVAL, "header field chunk_count = %llu; image_size %llu / chunk_size %llu needs %llu",
				   ull(h->chunk_count), ull(h->image_size), ull(h->chunk_size), ull(count));
	if (h->entry_size != snapshot_entry_size(h->chunk_size))
		return pagein_fail(err, EINVAL, "header field entry_size = %u; chunk_size %llu needs %u",
				   h->entry_size, ull(h->chunk_size), snapshot_entry_size(h->chunk_size));
	if (h->compressor != SNAPSHOT_COMPRESSOR_ZSTD)
		return pagein_fail(err, EINVAL, "header field compressor = %u; this pagein knows only 1 (zstd)",
				   h->compressor);

	uint64_t data_end;
	if (h->data_offset < SNAPSHOT_HEADER_SIZE ||
	    __builtin_add_overflow(h->data_offset, h->data_size, &data_end) ||
	    data_end != file_size)
		return pagein_fail(err, EINVAL, "header fields data_offset = %llu, data_size = %llu do not end at the file size %llu (truncated or extended file?)",
				   ull(h->data_offset), ull(h->data_size), ull(file_size));
	uint64_t index_len;
	if (__builtin_mul_overflow(h->chunk_count, (uint64_t)h->entry_size, &index_len) ||
	    !range_within(h->index_offset, index_len, SNAPSHOT_HEADER_SIZE, h->data_offset))
		return pagein_fail(err, EINVAL, "header field index_offset = %llu: a %llu-byte index does not fit between the header and data_offset %llu",
				   ull(h->index_offset), ull(index_len), ull(h->data_offset));
	if (h->flags & SNAPSHOT_F_WORKING_SET) {
		if (h->ws_size < WORKINGSET_HEADER_SIZE ||
		    !range_within(h->ws_offset, h->ws_size, SNAPSHOT_HEADER_SIZE, h->data_offset) ||
		    ranges_overlap(h->ws_offset, h->ws_size, h->index_offset, index_len))
			return pagein_fail(err, EINVAL, "header fields ws_offset = %llu, ws_size = %llu: not a region between the header and data_offset %llu clear of the index",
					   ull(h->ws_offset), ull(h->ws_size), ull(h->data_offset));
		if (!range_within(h->ws_data_end, 0, h->data_offset, data_end))
			return pagein_fail(err, EINVAL, "header field ws_data_end = %llu is outside the data area [%llu, %llu]",
					   ull(h->ws_data_end), ull(h->data_offset), ull(data_end));
	} else {
		if (h->ws_offset || h->ws_size || h->ws_checksum)
			return pagein_fail(err, EINVAL, "header fields ws_offset/ws_size/ws_checksum = %llu/%llu/0x%llx without the working-set flag",
					   ull(h->ws_offset), ull(h->ws_size), ull(h->ws_checksum));
		if (h->ws_data_end != h->data_offset)
			return pagein_fail(err, EINVAL, "header field ws_data_end = %llu; without a working set it must equal data_offset %llu",
					   ull(h->ws_data_end), ull(h->data_offset));
	}
	return 0;
}

/* ---- index ------------------------------------------------------------- */

void snapshot_meta_free(struct snapshot_meta *m)
{
	free(m->chunks);
	free(m->bitmaps);
	if (m->has_ws)
		workingset_fini(&m->ws);
	memset(m, 0, sizeof(*m));
}

static int entry_decode(struct snapshot_meta *m, uint64_t c, const unsigned char *e,
			struct pagein_error *err)
{
	const struct snapshot_header *h = &m->h;
	struct snapshot_chunk *ch = &m->chunks[c];
	uint64_t *bm = &m->bitmaps[c * m->bitmap_words];
	uint64_t guest = c * h->chunk_size;
	uint64_t glen = h->image_size - guest < h->chunk_size ? h->image_size - guest : h->chunk_size;

	ch->offset = get64(e + E_OFFSET);
	ch->stored = get32(e + E_STORED);
	ch->flags = get32(e + E_FLAGS);
	ch->checksum = get64(e + E_CHECKSUM);
	ch->npages = (uint32_t)((glen + h->page_size - 1) / h->page_size);
	uint32_t present = 0;
	for (uint32_t w = 0; w < m->bitmap_words; w++) {
		bm[w] = get64(e + E_BITMAP + 8 * w);
		present += (uint32_t)__builtin_popcountll(bm[w]);
	}
	/* No bit may be set past the chunk's last page. */
	uint32_t full = ch->npages / 64, rem = ch->npages % 64;
	for (uint32_t w = full; w < m->bitmap_words; w++) {
		uint64_t allowed = (w == full && rem) ? (1ull << rem) - 1 : 0;
		if (bm[w] & ~allowed)
			return pagein_fail(err, EINVAL, "chunk %llu: page bitmap marks pages past the chunk's %u pages",
					   ull(c), ch->npages);
	}
	ch->present = present;
	if (ch->flags & ~SNAPSHOT_CHUNK_KNOWN)
		return pagein_fail(err, EINVAL, "chunk %llu: field flags = 0x%x has unknown bits",
				   ull(c), ch->flags);
	if (present == 0) {
		if (ch->offset || ch->stored || ch->checksum || ch->flags)
			return pagein_fail(err, EINVAL, "chunk %llu: all-zero chunk with offset/stored_size/checksum/flags = %llu/%u/0x%llx/0x%x (must be 0)",
					   ull(c), ull(ch->offset), ch->stored, ull(ch->checksum), ch->flags);
		return 0;
	}
	uint64_t raw = (uint64_t)present * h->page_size;
	if (ch->stored == 0 || ch->stored > raw)
		return pagein_fail(err, EINVAL, "chunk %llu: field stored_size = %u; %u present pages allow 1..%llu",
				   ull(c), ch->stored, present, ull(raw));
	if ((ch->flags & SNAPSHOT_CHUNK_RAW) && ch->stored != raw)
		return pagein_fail(err, EINVAL, "chunk %llu: raw chunk with stored_size = %u, %u present pages are %llu bytes",
				   ull(c), ch->stored, present, ull(raw));
	if (!range_within(ch->offset, ch->stored, h->data_offset, h->data_offset + h->data_size))
		return pagein_fail(err, EINVAL, "chunk %llu: field offset = %llu (+%u bytes) is outside the data area [%llu, %llu)",
				   ull(c), ull(ch->offset), ch->stored, ull(h->data_offset),
				   ull(h->data_offset + h->data_size));
	return 0;
}

int snapshot_meta_build(const struct snapshot_header *h, uint64_t file_size,
			const void *index, const void *ws,
			struct snapshot_meta *m, struct pagein_error *err)
{
	memset(m, 0, sizeof(*m));
	m->h = *h;
	m->file_size = file_size;
	m->pages_per_chunk = (uint32_t)(h->chunk_size / h->page_size);
	m->bitmap_words = (m->pages_per_chunk + 63) / 64;
	uint64_t index_len = h->chunk_count * h->entry_size; /* checked by header_parse */

	uint64_t sum = XXH3_64bits(index, index_len);
	if (sum != h->index_checksum)
		return pagein_fail(err, EBADMSG, "header field index_checksum = 0x%016llx, index bytes hash to 0x%016llx",
				   ull(h->index_checksum), ull(sum));
	m->chunks = calloc(h->chunk_count, sizeof(*m->chunks));
	m->bitmaps = calloc(h->chunk_count * m->bitmap_words, sizeof(*m->bitmaps));
	if (!m->chunks || !m->bitmaps) {
		snapshot_meta_free(m);
		return -ENOMEM;
	}
	const unsigned char *e = index;
	for (uint64_t c = 0; c < h->chunk_count; c++, e += h->entry_size) {
		int r = entry_decode(m, c, e, err);
		if (r < 0) {
			snapshot_meta_free(m);
			return r;
		}
	}
	if (h->flags & SNAPSHOT_F_WORKING_SET) {
		sum = XXH3_64bits(ws, h->ws_size);
		if (sum != h->ws_checksum) {
			snapshot_meta_free(m);
			return pagein_fail(err, EBADMSG, "header field ws_checksum = 0x%016llx, working-set bytes hash to 0x%016llx",
					   ull(h->ws_checksum), ull(sum));
		}
		int r = workingset_parse(ws, h->ws_size, &m->ws, err);
		if (r < 0) {
			snapshot_meta_free(m);
			return r;
		}
		m->has_ws = true;
		if (m->ws.snapshot_size != h->image_size) {
			uint64_t got = m->ws.snapshot_size;
			snapshot_meta_free(m);
			return pagein_fail(err, EINVAL, "embedded working set: snapshot_size = %llu, image_size is %llu",
					   ull(got), ull(h->image_size));
		}
	}
	return 0;
}

int snapshot_meta_parse(const void *file, size_t len, struct snapshot_meta *m,
			struct pagein_error *err)
{
	struct snapshot_header h;
	memset(m, 0, sizeof(*m));
	int r = snapshot_header_parse(file, len, len, &h, err);
	if (r < 0)
		return r;
	const unsigned char *p = file;
	return snapshot_meta_build(&h, len, p + h.index_offset,
				   (h.flags & SNAPSHOT_F_WORKING_SET) ? p + h.ws_offset : NULL,
				   m, err);
}

/* pread until len bytes or an error; end of file is -EIO (file truncated). */
static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* pread_full, tried READ_TRIES times with a short pause between tries. */
static int pread_retry(int fd, void *buf, size_t len, uint64_t off)
{
	int r = 0;
	for (int i = 0; i < READ_TRIES; i++) {
		if (i) {
			struct timespec ts = {0, 1000000L << i}; /* 2, 4 ms */
			nanosleep(&ts, NULL);
		}
		r = pread_full(fd, buf, len, off);
		if (r == 0)
			return 0;
	}
	return r;
}

/* Prefixes err->msg with "snapshot NAME: ". */
static int name_error(struct pagein_error *err, const char *name, int r)
{
	if (err) {
		char prefix[sizeof(err->msg)];
		int n = snprintf(prefix, sizeof(prefix), "snapshot %s: ", name);
		size_t plen = n < 0 ? 0 : (size_t)n >= sizeof(prefix) ? sizeof(prefix) - 1 : (size_t)n;
		size_t mlen = strnlen(err->msg, sizeof(err->msg) - 1);
		if (plen + mlen > sizeof(err->msg) - 1)
			mlen = sizeof(err->msg) - 1 - plen;
		memmove(err->msg + plen, err->msg, mlen);
		memcpy(err->msg, prefix, plen);
		err->msg[plen + mlen] = 0;
	}
	return r;
}

int snapshot_meta_read(int fd, const char *name, struct snapshot_meta *m,
		       struct pagein_error *err)
{
	memset(m, 0, sizeof(*m));
	off_t end = lseek(fd, 0, SEEK_END);
	if (end < 0)
		return pagein_fail(err, errno, "snapshot %s: cannot size file: %s", name, strerror(errno));
	uint64_t file_size = (uint64_t)end;
	unsigned char hb[SNAPSHOT_HEADER_SIZE];
	size_t hlen = file_size < sizeof(hb) ? (size_t)file_size : sizeof(hb);
	int r = pread_retry(fd, hb, hlen, 0);
	if (r < 0)
		return pagein_fail(err, -r, "snapshot %s: reading the header: %s", name, strerror(-r));
	struct snapshot_header h;
	r = snapshot_header_parse(hb, hlen, file_size, &h, err);
	if (r < 0)
		return name_error(err, name, r);
	/* Index and working set were bounded by the file size above. */
	size_t ilen = (size_t)(h.chunk_count * h.entry_size);
	unsigned char *index = malloc(ilen ? ilen : 1);
	unsigned char *ws = (h.flags & SNAPSHOT_F_WORKING_SET) ? malloc(h.ws_size) : NULL;
	if (!index || ((h.flags & SNAPSHOT_F_WORKING_SET) && !ws)) {
		free(index);
		free(ws);
		return -ENOMEM;
	}
	r = pread_retry(fd, index, ilen, h.index_offset);
	if (r == 0 && ws)
		r = pread_retry(fd, ws, h.ws_size, h.ws_offset);
	if (r < 0)
		r = pagein_fail(err, -r, "snapshot %s: reading the index: %s", name, strerror(-r));
	else if ((r = snapshot_meta_build(&h, file_size, index, ws, m, err)) < 0)
		name_error(err, name, r);
	free(index);
	free(ws);
	return r;
}

int snapshot_chunk_read(int fd, const struct snapshot_meta *m, uint64_t c,
			void *buf, struct pagein_error *err)
{
	const struct snapshot_chunk *ch = &m->chunks[c];
	if (!ch->stored)
		return 0;
	int r = pread_retry(fd, buf, ch->stored, ch->offset);
	if (r < 0)
		return pagein_fail(err, EIO, "chunk %llu: reading %u bytes at offset %llu: %s",
				   ull(c), ch->stored, ull(ch->offset), strerror(-r));
	uint64_t sum = XXH3_64bits(buf, ch->stored);
	if (sum != ch->checksum)
		return pagein_fail(err, EBADMSG, "chunk %llu: checksum mismatch (index 0x%016llx, data 0x%016llx)",
				   ull(c), ull(ch->checksum), ull(sum));
	return 0;
}

int snapshot_chunk_unpack(const struct snapshot_meta *m, uint64_t c,
			  const void *stored, void *out, void *dctx,
			  struct pagein_error *err)
{
	const struct snapshot_chunk *ch = &m->chunks[c];
	size_t raw = (size_t)ch->present * m->h.page_size;
	if (ch->flags & SNAPSHOT_CHUNK_RAW) {
		if (out != stored)
			memcpy(out, stored, raw);
		return 0;
	}
	ZSTD_DCtx *own = NULL;
	if (!dctx)
		dctx = own = ZSTD_createDCtx();
	if (!dctx)
		return -ENOMEM;
	size_t n = ZSTD_decompressDCtx(dctx, out, raw, stored, ch->stored);
	ZSTD_freeDCtx(own);
	if (ZSTD_isError(n))
		return pagein_fail(err, EBADMSG, "chunk %llu: zstd: %s", ull(c), ZSTD_getErrorName(n));
	if (n != raw)
		return pagein_fail(err, EBADMSG, "chunk %llu: decompressed to %zu bytes, expected %zu",
				   ull(c), n, raw);
	return 0;
}

/* ---- writing ----------------------------------------------------------- */

/* One chunk in flight: read, zero pages dropped, compressed, checksummed. */
struct wjob {
	uint64_t chunk;
	unsigned char *buf;  /* chunk_size: the pages, then packed present pages */
	unsigned char *cbuf; /* ZSTD_compressBound(chunk_size) */
	const unsigned char *out;
	size_t out_len;
	uint32_t flags;
	uint32_t present, npages;
	uint64_t checksum;
	uint64_t *bitmap;    /* bitmap_words */
	int r;
	struct pagein_error err;
	double read_s, compress_s; /* this job's time reading, compressing */
};

struct wctx {
	const struct snapshot_write_opts *o;
	uint64_t chunk_size;
	uint32_t bitmap_words;
	struct wjob *jobs;
	size_t njobs;        /* jobs in the current batch */
	atomic_size_t next;  /* next job to take */
	ZSTD_CCtx **cctx;    /* one per thread */
};

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void job_pack(struct wctx *w, struct wjob *j, ZSTD_CCtx *cctx, size_t glen);

static void job_run(struct wctx *w, struct wjob *j, ZSTD_CCtx *cctx)
{
	const struct snapshot_write_opts *o = w->o;
	uint64_t guest = j->chunk * w->chunk_size;
	size_t glen = (size_t)(o->image_size - guest < w->chunk_size ? o->image_size - guest
								      : w->chunk_size);
	j->npages = (uint32_t)((glen + SNAPSHOT_PAGE_SIZE - 1) / SNAPSHOT_PAGE_SIZE);
	double t0 = mono_s();
	j->r = o->read(o->read_opaque, guest, j->buf, glen, &j->err);
	double t1 = mono_s();
	j->read_s = t1 - t0;
	j->compress_s = 0;
	if (j->r < 0)
		return;
	job_pack(w, j, cctx, glen);
	j->compress_s = mono_s() - t1;
}

/* Drops the zero pages of a chunk just read, compresses and checksums it. */
static void job_pack(struct wctx *w, struct wjob *j, ZSTD_CCtx *cctx, size_t glen)
{
	const struct snapshot_write_opts *o = w->o;
	memset(j->buf + glen, 0, (size_t)j->npages * SNAPSHOT_PAGE_SIZE - glen);
	memset(j->bitmap, 0, w->bitmap_words * 8);
	uint32_t present = 0;
	for (uint32_t p = 0; p < j->npages; p++) {
		unsigned char *pg = j->buf + (size_t)p * SNAPSHOT_PAGE_SIZE;
		if (page_is_zero(pg, SNAPSHOT_PAGE_SIZE))
			continue;
		j->bitmap[p / 64] |= 1ull << (p % 64);
		if (p != present)
			memcpy(j->buf + (size_t)present * SNAPSHOT_PAGE_SIZE, pg, SNAPSHOT_PAGE_SIZE);
		present++;
	}
	j->present = present;
	j->flags = 0;
	j->out_len = 0;
	j->checksum = 0;
	if (!present)
		return;
	size_t raw = (size_t)present * SNAPSHOT_PAGE_SIZE;
	size_t n = ZSTD_compressCCtx(cctx, j->cbuf, ZSTD_compressBound(w->chunk_size),
				     j->buf, raw, o->level);
	if (ZSTD_isError(n)) {
		j->r = pagein_fail(&j->err, EIO, "chunk %llu: zstd: %s", ull(j->chunk),
				   ZSTD_getErrorName(n));
		return;
	}
	if (n < raw) {
		j->out = j->cbuf;
		j->out_len = n;
	} else { /* incompressible: store the pages as they are */
		j->out = j->buf;
		j->out_len = raw;
		j->flags = SNAPSHOT_CHUNK_RAW;
	}
	j->checksum = XXH3_64bits(j->out, j->out_len);
}

struct wthread {
	struct wctx *w;
	ZSTD_CCtx *cctx;
};

static void *worker(void *arg)
{
	struct wthread *t = arg;
	size_t i;
	while ((i = atomic_fetch_add(&t->w->next, 1)) < t->w->njobs)
		job_run(t->w, &t->w->jobs[i], t->cctx);
	return NULL;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* Placement order: chunks the working set touches, in first-touch order,
 * then every other chunk in guest order. Returns how many are ws chunks. */
static uint64_t placement_order(const struct snapshot_write_opts *o, uint64_t chunk_size,
				uint64_t count, uint64_t *order, unsigned char *seen)
{
	uint64_t n = 0;
	if (o->ws) {
		for (uint64_t i = 0; i < o->ws->count; i++) {
			uint64_t a = o->ws->offsets[i];
			uint64_t b = a + o->ws->page_size; /* a < image_size: checked */
			for (uint64_t c = a / chunk_size; c * chunk_size < b && c < count; c++) {
				if (!seen[c]) {
					seen[c] = 1;
					order[n++] = c;
				}
			}
		}
	}
	uint64_t ws_chunks = n;
	for (uint64_t c = 0; c < count; c++)
		if (!seen[c])
			order[n++] = c;
	return ws_chunks;
}

static unsigned default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 8 ? 8 : (unsigned)n;
}

int snapshot_write(int fd, const struct snapshot_write_opts *o,
		   struct snapshot_write_stats *st, struct pagein_error *err)
{
	struct snapshot_write_stats dummy;
	if (!st)
		st = &dummy;
	memset(st, 0, sizeof(*st));
	uint64_t chunk_size = o->chunk_size ? o->chunk_size : SNAPSHOT_CHUNK_DEFAULT;
	uint32_t entry_size = snapshot_entry_size(chunk_size);
	if (!entry_size)
		return pagein_fail(err, EINVAL, "chunk size %llu is not a power of two in [%u, %u]",
				   ull(chunk_size), SNAPSHOT_CHUNK_MIN, SNAPSHOT_CHUNK_MAX);
	if (o->image_size == 0)
		return pagein_fail(err, EINVAL, "image is empty");
	if (o->level < ZSTD_minCLevel() || o->level > ZSTD_maxCLevel())
		return pagein_fail(err, EINVAL, "zstd level %d is outside [%d, %d]", o->level,
				   ZSTD_minCLevel(), ZSTD_maxCLevel());
	if (o->ws && o->ws->snapshot_size != o->image_size)
		return pagein_fail(err, EINVAL, "working set was recorded on a %llu-byte snapshot, the image is %llu bytes",
				   ull(o->ws->snapshot_size), ull(o->image_size));

	struct snapshot_header h = {
		.version = SNAPSHOT_VERSION,
		.header_size = SNAPSHOT_HEADER_SIZE,
		.flags = o->ws ? SNAPSHOT_F_WORKING_SET : 0,
		.page_size = SNAPSHOT_PAGE_SIZE,
		.image_size = o->image_size,
		.chunk_size = chunk_size,
		.chunk_count = (o->image_size + chunk_size - 1) / chunk_size,
		.entry_size = entry_size,
		.compressor = SNAPSHOT_COMPRESSOR_ZSTD,
		.level = (int16_t)o->level,
		.index_offset = SNAPSHOT_HEADER_SIZE,
	};
	uint64_t count = h.chunk_count;
	uint64_t index_len = count * entry_size;
	h.ws_offset = o->ws ? h.index_offset + index_len : 0;
	h.ws_size = o->ws ? WORKINGSET_HEADER_SIZE + 8 * o->ws->count : 0;
	/* Data starts page aligned so that a sweep of it is aligned I/O. */
	h.data_offset = (h.index_offset + index_len + h.ws_size + 4095) & ~4095ull;

	uint32_t bitmap_words = (uint32_t)((chunk_size / SNAPSHOT_PAGE_SIZE + 63) / 64);
	unsigned nthreads = o->threads ? o->threads : default_threads();
	/* Two jobs per thread, and at most ~512 MiB of buffers in flight. */
	size_t per_job = chunk_size + ZSTD_compressBound(chunk_size);
	size_t batch = 2 * (size_t)nthreads;
	while (batch > 1 && batch * per_job > (512u << 20))
		batch--;
	if (nthreads > batch)
		nthreads = (unsigned)batch;

	int r = 0;
	unsigned char *index = calloc(1, index_len);
	uint64_t *order = malloc(count * sizeof(*order));
	unsigned char *seen = calloc(count, 1);
	unsigned char *wsbuf = o->ws ? malloc(h.ws_size) : NULL;
	struct wjob *jobs = calloc(batch, sizeof(*jobs));
	uint64_t *bitmaps = calloc(batch * bitmap_words, 8);
	ZSTD_CCtx **cctx = calloc(nthreads, sizeof(*cctx));
	pthread_t *tids = calloc(nthreads, sizeof(*tids));
	struct wthread *wt = calloc(nthreads, sizeof(*wt));
	if (!index || !order || !seen || (o->ws && !wsbuf) || !jobs || !bitmaps || !cctx ||
	    !tids || !wt) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < batch; i++) {
		jobs[i].buf = malloc(chunk_size);
		jobs[i].cbuf = malloc(ZSTD_compressBound(chunk_size));
		jobs[i].bitmap = bitmaps + i * bitmap_words;
		if (!jobs[i].buf || !jobs[i].cbuf) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (unsigned t = 0; t < nthreads; t++)
		if (!(cctx[t] = ZSTD_createCCtx())) {
			r = -ENOMEM;
			goto out;
		}

	uint64_t ws_chunks = placement_order(o, chunk_size, count, order, seen);
	struct wctx w = {
		.o = o, .chunk_size = chunk_size, .bitmap_words = bitmap_words,
		.jobs = jobs, .cctx = cctx,
	};
	uint64_t pos = h.data_offset;
	h.ws_data_end = h.data_offset;
	for (uint64_t done = 0; done < count;) {
		w.njobs = count - done < batch ? (size_t)(count - done) : batch;
		atomic_store(&w.next, 0);
		for (size_t i = 0; i < w.njobs; i++) {
			jobs[i].chunk = order[done + i];
			jobs[i].r = 0;
		}
		/* The calling thread is worker 0. */
		unsigned started = 1;
		for (unsigned t = 0; t < nthreads; t++)
			wt[t] = (struct wthread){&w, cctx[t]};
		for (unsigned t = 1; t < nthreads && t < w.njobs; t++, started++)
			if (pthread_create(&tids[t], NULL, worker, &wt[t]) != 0)
				break;
		worker(&wt[0]);
		for (unsigned t = 1; t < started; t++)
			pthread_join(tids[t], NULL);

		for (size_t i = 0; i < w.njobs; i++) {
			struct wjob *j = &jobs[i];
			if (j->r < 0) {
				if (err)
					*err = j->err;
				r = j->r;
				goto out;
			}
			unsigned char *e = index + j->chunk * entry_size;
			st->read_s += j->read_s;
			st->compress_s += j->compress_s;
			if (j->present) {
				double tw = mono_s();
				r = pwrite_full(fd, j->out, j->out_len, pos);
				st->write_s += mono_s() - tw;
				if (r < 0) {
					pagein_fail(err, -r, "writing chunk data at offset %llu: %s",
						    ull(pos), strerror(-r));
					goto out;
				}
				put64(e + E_OFFSET, pos);
				put32(e + E_STORED, (uint32_t)j->out_len);
				put32(e + E_FLAGS, j->flags);
				put64(e + E_CHECKSUM, j->checksum);
				pos += j->out_len;
				st->stored_bytes += j->out_len;
				st->raw_chunks += j->flags & SNAPSHOT_CHUNK_RAW ? 1 : 0;
			} else {
				st->zero_chunks++;
			}
			for (uint32_t b = 0; b < bitmap_words; b++)
				put64(e + E_BITMAP + 8 * b, j->bitmap[b]);
			st->pages += j->npages;
			st->zero_pages += j->npages - j->present;
			if (done + i + 1 == ws_chunks)
				h.ws_data_end = pos;
		}
		done += w.njobs;
		if (o->progress) {
			uint64_t bytes = done * chunk_size;
			o->progress(o->progress_opaque, bytes > o->image_size ? o->image_size : bytes,
				    o->image_size);
		}
	}
	st->chunks = count;
	st->threads = nthreads;
	st->ws_chunks = ws_chunks;
	h.data_size = pos - h.data_offset;
	h.index_checksum = XXH3_64bits(index, index_len);
	if (o->ws) {
		memcpy(wsbuf, WORKINGSET_MAGIC, 8);
		put32(wsbuf + 8, WORKINGSET_VERSION);
		put32(wsbuf + 12, o->ws->page_size);
		put64(wsbuf + 16, o->ws->count);
		put64(wsbuf + 24, o->ws->snapshot_size);
		for (uint64_t i = 0; i < o->ws->count; i++)
			put64(wsbuf + WORKINGSET_HEADER_SIZE + 8 * i, o->ws->offsets[i]);
		h.ws_checksum = XXH3_64bits(wsbuf, h.ws_size);
	}
	unsigned char hb[SNAPSHOT_HEADER_SIZE];
	header_encode(&h, hb);
	/* An all-zero image has no data: the file still ends at data_offset. */
	double tw = mono_s();
	if (pos == h.data_offset && ftruncate(fd, (off_t)pos) < 0)
		r = -errno;
	if (!r)
		r = pwrite_full(fd, index, index_len, h.index_offset);
	if (!r && o->ws)
		r = pwrite_full(fd, wsbuf, h.ws_size, h.ws_offset);
	if (!r)
		r = pwrite_full(fd, hb, sizeof(hb), 0);
	st->write_s += mono_s() - tw;
	if (r < 0)
		pagein_fail(err, -r, "writing the index and header: %s", strerror(-r));
	st->file_size = pos;
out:
	if (jobs)
		for (size_t i = 0; i < batch; i++) {
			free(jobs[i].buf);
			free(jobs[i].cbuf);
		}
	if (cctx)
		for (unsigned t = 0; t < nthreads; t++)
			ZSTD_freeCCtx(cctx[t]);
	free(jobs);
	free(bitmaps);
	free(cctx);
	free(tids);
	free(wt);
	free(index);
	free(order);
	free(seen);
	free(wsbuf);
	return r;
}
