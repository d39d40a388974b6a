/* snapshot_format.h - the pagein snapshot file: parsing, validation, writing.
 *
 * docs/format.md is the specification; this header is its C face. In short:
 *
 *   [header 128 B][chunk index][embedded working set][chunk data ...]
 *
 * Guest memory is cut into fixed-size chunks. Each index entry carries a
 * bitmap of the chunk's non-zero pages; only those pages are stored, packed
 * in page order and compressed as one zstd frame (or stored raw when zstd
 * does not shrink them), with an XXH3-64 checksum of the stored bytes. The
 * header has XXH3-64 checksums of itself, of the index and of the working
 * set. Chunks the working set touches are placed first in the data area, in
 * first-touch order, so that they can be read in one sequential sweep.
 *
 * Parsing never trusts the file: every offset and length is checked against
 * the file size before anything is read or allocated, and each refusal
 * fills a pagein_error naming the field and value. */
#ifndef PAGEIN_SNAPSHOT_FORMAT_H
#define PAGEIN_SNAPSHOT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagein.h"
#include "workingset.h"

#define SNAPSHOT_MAGIC "PAGEINSN"
#define SNAPSHOT_MAGIC_LEN 8u
#define SNAPSHOT_VERSION 1u
#define SNAPSHOT_HEADER_SIZE 128u
#define SNAPSHOT_PAGE_SIZE 4096u
/* Bounds on chunk_size: below 64 KiB the index outgrows the savings; above
 * 64 MiB one fault would decompress for tens of milliseconds. */
#define SNAPSHOT_CHUNK_MIN (64u << 10)
#define SNAPSHOT_CHUNK_MAX (64u << 20)
/* Default chunk: 256 KiB, measured in docs/format.md (rationale): within
 * 1% of the ratio of 1 MiB chunks at a quarter of the cold-fault cost. */
#define SNAPSHOT_CHUNK_DEFAULT (256u << 10)
#define SNAPSHOT_LEVEL_DEFAULT 3
/* Entry = 24 fixed bytes + the page bitmap rounded up to 8 bytes. */
#define SNAPSHOT_ENTRY_FIXED 24u

/* header.flags */
#define SNAPSHOT_F_WORKING_SET 0x1u
#define SNAPSHOT_F_KNOWN SNAPSHOT_F_WORKING_SET
/* entry.flags */
#define SNAPSHOT_CHUNK_RAW 0x1u /* stored bytes are the pages, not zstd */
#define SNAPSHOT_CHUNK_KNOWN SNAPSHOT_CHUNK_RAW

#define SNAPSHOT_COMPRESSOR_ZSTD 1u

/* The decoded header; field meanings in docs/format.md. */
struct snapshot_header {
	uint32_t version;
	uint32_t header_size;
	uint32_t flags;
	uint32_t page_size;
	uint64_t image_size;  /* guest memory bytes */
	uint64_t chunk_size;  /* guest bytes per chunk */
	uint64_t chunk_count;
	uint32_t entry_size;  /* bytes per index entry */
	uint16_t compressor;
	int16_t level;        /* informational: the zstd level used */
	uint64_t index_offset;
	uint64_t index_checksum;
	uint64_t ws_offset;
	uint64_t ws_size;
	uint64_t ws_checksum;
	uint64_t data_offset;
	uint64_t data_size;
	uint64_t ws_data_end; /* file offset where the working-set sweep ends */
	uint64_t header_checksum;
};

/* One decoded index entry. */
struct snapshot_chunk {
	uint64_t offset;   /* file offset of the stored bytes; 0 if none */
	uint32_t stored;   /* stored byte count; 0 for an all-zero chunk */
	uint32_t flags;    /* SNAPSHOT_CHUNK_* */
	uint64_t checksum; /* XXH3-64 of the stored bytes */
	uint32_t npages;   /* pages in this chunk (the last may be shorter) */
	uint32_t present;  /* stored (non-zero) pages: popcount of the bitmap */
};

/* Everything a reader needs, decoded and validated. Read-only once built. */
struct snapshot_meta {
	struct snapshot_header h;
	uint64_t file_size;
	uint32_t pages_per_chunk;
	uint32_t bitmap_words;     /* uint64_t words of bitmap per chunk */
	struct snapshot_chunk *chunks; /* [chunk_count], in guest order */
	uint64_t *bitmaps;         /* [chunk_count * bitmap_words], host order */
	bool has_ws;
	struct workingset ws;      /* valid when has_ws */
};

/* Page p of chunk c stored? (p < pages_per_chunk) */
static inline bool snapshot_page_present(const struct snapshot_meta *m,
					 uint64_t c, uint32_t p)
{
	return (m->bitmaps[c * m->bitmap_words + p / 64] >> (p % 64)) & 1;
}

/* Index entry size for a chunk size (0 if the chunk size is invalid). */
uint32_t snapshot_entry_size(uint64_t chunk_size);

/* Decodes and validates the 128-byte header against the file size (checks
 * the magic, version, checksum, every field, and that the regions fit and
 * do not overlap). */
int snapshot_header_parse(const void *buf, size_t len, uint64_t file_size,
			  struct snapshot_header *h, struct pagein_error *err);

/* Decodes and validates the index (h already parsed) and the embedded
 * working set into m. index/ws are the bytes at h->index_offset/ws_offset. */
int snapshot_meta_build(const struct snapshot_header *h, uint64_t file_size,
			const void *index, const void *ws,
			struct snapshot_meta *m, struct pagein_error *err);

/* Whole file image in memory -> meta (the fuzz entry point). */
int snapshot_meta_parse(const void *file, size_t len, struct snapshot_meta *m,
			struct pagein_error *err);

/* Reads header, index and working set from fd with pread. `name` names the
 * file in error messages. */
int snapshot_meta_read(int fd, const char *name, struct snapshot_meta *m,
		       struct pagein_error *err);

void snapshot_meta_free(struct snapshot_meta *m);

/* Reads chunk c's stored bytes into buf (>= stored bytes) with pread and
 * checks its checksum: 0, -EIO (read error or short file, after 3 tries),
 * -EBADMSG (checksum mismatch). */
int snapshot_chunk_read(int fd, const struct snapshot_meta *m, uint64_t c,
			void *buf, struct pagein_error *err);

/* Turns chunk c's stored bytes into its present pages, packed: out has
 * room for present * page_size bytes. dctx is a ZSTD_DCtx * (NULL: one is
 * made for the call). 0 or -EBADMSG (corrupt frame or wrong length). */
int snapshot_chunk_unpack(const struct snapshot_meta *m, uint64_t c,
			  const void *stored, void *out, void *dctx,
			  struct pagein_error *err);

/* ---- writing ---------------------------------------------------------- */

/* Guest bytes [off, off+len) into buf; called from several threads at once.
 * Returns 0 or -errno. */
typedef int (*snapshot_read_fn)(void *opaque, uint64_t off, void *buf,
				size_t len, struct pagein_error *err);

struct snapshot_write_opts {
	uint64_t image_size;
	uint64_t chunk_size;  /* 0: SNAPSHOT_CHUNK_DEFAULT */
	int level;            /* zstd level (ZSTD_minCLevel()..ZSTD_maxCLevel()) */
	unsigned threads;     /* compression threads; 0: one per CPU, max 8 */
	const struct workingset *ws; /* NULL: none */
	snapshot_read_fn read;
	void *read_opaque;
	/* Called on the calling thread after each batch of chunks. */
	void (*progress)(void *opaque, uint64_t done, uint64_t total);
	void *progress_opaque;
};

struct snapshot_write_stats {
	uint64_t chunks, zero_chunks, raw_chunks, ws_chunks;
	uint64_t pages, zero_pages;
	uint64_t stored_bytes; /* chunk data bytes */
	uint64_t file_size;
	/* Where the time went, in seconds. read and compress are summed over
	 * the compression threads (they run in parallel); compress includes
	 * finding zero pages and the checksum. write is the calling thread's
	 * pwrite time (chunk data, index, header). */
	double read_s, compress_s, write_s;
	unsigned threads;      /* compression threads used */
};

/* Writes a complete snapshot to fd (empty, opened for writing) with pwrite.
 * The header is written last, so a file cut short never parses. The
 * caller makes it durable and visible (fsync, rename). */
int snapshot_write(int fd, const struct snapshot_write_opts *o,
		   struct snapshot_write_stats *st, struct pagein_error *err);

/* ---- serving-side accessors (implemented in source_pagein.c) ---------- */

struct pagein_source;

struct source_pagein_stats {
	uint64_t hits;       /* get() found the chunk decompressed */
	uint64_t misses;     /* get() decompressed it (once per miss) */
	uint64_t waits;      /* get() waited for another thread's decompression */
	uint64_t ahead;      /* chunks decompressed ahead by the pool */
	uint64_t zero_gets;  /* get() answered from the bitmap, no read */
	uint64_t evictions;
	uint64_t cached_bytes; /* decompressed bytes held now */
	uint64_t cache_limit;
};

/* True if s is a pagein snapshot source. */
bool source_is_pagein(const struct pagein_source *s);
/* Bounds the decompressed-chunk cache (bytes; default 32 MiB). Chunks that
 * callers hold pinned can exceed it until put(). */
void source_pagein_set_cache_limit(struct pagein_source *s, uint64_t bytes);
void source_pagein_stats(struct pagein_source *s, struct source_pagein_stats *st);
/* The decoded header/index (read-only), e.g. for the embedded working set. */
const struct snapshot_meta *source_pagein_meta(const struct pagein_source *s);
/* Where a remote pagein snapshot's chunks come from (source_http.c). */
struct chunk_remote_ops {
	/* Chunk c's stored bytes are local (in memory or in the chunk cache)
	 * when this returns 0. Otherwise the fetch is queued and: a caller
	 * that may park (source_park_begin) gets -EINPROGRESS with its fault
	 * parked on the chunk; any other caller waits for it. -EIO: the
	 * chunk could not be fetched by the deadline; -EBADMSG: it was
	 * fetched with a wrong checksum. */
	int (*ensure)(void *arg, uint64_t c);
	/* Copies chunk c's stored bytes into buf, checksum verified: 0, or
	 * -EAGAIN when they are no longer local (or were bad: deleted). */
	int (*read_local)(void *arg, uint64_t c, void *buf);
	/* Queues a fetch of chunk c if it is not local (a hint). */
	void (*want)(void *arg, uint64_t c);
	void (*destroy)(void *arg);
};

/* A pagein source over meta m (taken over, also on failure); fd is the
 * file (-1 for a remote one, whose chunks come through remote). */
int source_pagein_new(int fd, const char *path, struct snapshot_meta *m,
		      const struct chunk_remote_ops *remote, void *remote_arg,
		      struct pagein_source **out);

/* Asks the kernel to read the working-set chunks ahead (one sequential
 * range, posix_fadvise WILLNEED). 0, or -errno. */
int source_pagein_readahead_ws(struct pagein_source *s);

#endif
