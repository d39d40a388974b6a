/* source.h - where page bytes come from, behind one small interface.
 *
 * A source describes a guest memory image of `size` bytes. get() hands out
 * a read-only view of a range; put() gives it back. Kinds: raw memory files
 * (source_raw.c: dense or sparse, holes read as zeros) and pagein snapshot
 * files (source_pagein.c: chunked, compressed, checksummed). All kinds are
 * thread-safe: fault handlers, request handlers and prefetch call get()
 * concurrently. */
#ifndef PAGEIN_SOURCE_H
#define PAGEIN_SOURCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "pagein.h"

struct source_extent {
	const void *data; /* NULL: the whole extent reads as zeros */
	uint64_t len;     /* bytes available from the requested offset, > 0 */
	void *pin;        /* the kind's handle, released by put() */
	uint64_t bad_chunk; /* on -EIO/-EBADMSG: which chunk failed (pagein files);
			     * len is then the bytes the failure covers */
};

struct source_ops {
	const char *kind;
	/* View of [off, off+len). off is page aligned and < size. The extent may
	 * be shorter than len (never zero): at a hole/data boundary or at the
	 * end of a chunk. Returns 0, -EIO (read error), -EBADMSG (checksum
	 * mismatch or corrupt chunk). */
	int (*get)(struct pagein_source *s, uint64_t off, uint64_t len,
		   struct source_extent *ext);
	void (*put)(struct pagein_source *s, struct source_extent *ext);
	/* Optional: make [off, off+len) resident now, so that a fill issued
	 * under a lock does no I/O inside its ioctl. */
	void (*prepare)(struct pagein_source *s, uint64_t off, uint64_t len);
	/* Optional: true if the byte at off is no longer in the file (a raw
	 * snapshot truncated while served): explains an -EFAULT or a guarded
	 * read that failed. */
	bool (*shrunk)(struct pagein_source *s, uint64_t off);
	/* Optional: whether the range at off starts with a run the file does
	 * not store, that reads as zeros (a hole of a raw file, zero pages of
	 * a pagein file: true), or with stored bytes (false); *run: the length
	 * of that run (0 < *run <= len). Reads no data. */
	bool (*hole)(struct pagein_source *s, uint64_t off, uint64_t len, uint64_t *run);
	/* Optional hint: [off, off+len) will be read soon (start the I/O). */
	void (*advise)(struct pagein_source *s, uint64_t off, uint64_t len);
	void (*destroy)(struct pagein_source *s);
};

struct pagein_source {
	const struct source_ops *ops;
	atomic_uint refs;
	uint64_t size;        /* guest memory bytes described */
	uint64_t chunk_size;  /* natural read unit (pagein: chunk; raw: 0 = any) */
	char *path;
};

/* Initialises the common part; `path` is copied. */
int source_init(struct pagein_source *s, const struct source_ops *ops,
		const char *path, uint64_t size);

/* Kind constructors, tried by pagein_source_open(). fd is read-only; on
 * success the source owns it. */
int source_raw_open(int fd, const char *path, struct pagein_source **out,
		    struct pagein_error *err);
/* True when the first bytes of a file are the pagein snapshot magic. */
bool source_pagein_probe(const void *head, size_t len);
int source_pagein_open(int fd, const char *path, struct pagein_source **out,
		       struct pagein_error *err);

/* ---- remote snapshots (source_http.c) ---- */

struct source_remote_opts {
	const char *s3_endpoint;  /* s3://: NULL for AWS, else a base URL */
	const char *cache_dir;    /* NULL: no chunk cache on disk */
	uint64_t cache_size;      /* bytes; 0: 1 GiB */
	unsigned parallel;        /* range requests in flight; 0: 8 */
	unsigned deadline_ms;     /* a chunk not fetched by then fails; 0: 30 s */
	const char *ca_file;      /* https: PEM CAs to trust; NULL: the system's */
};

/* http://, https:// or s3:// */
bool source_is_remote_url(const char *path);
int source_http_open(const char *url, const struct source_remote_opts *o,
		     struct pagein_source **out, struct pagein_error *err);
/* Opens a file or a URL. */
int source_open_opts(const char *path, const struct source_remote_opts *o,
		     struct pagein_source **out, struct pagein_error *err);

struct source_remote_stats {
	uint64_t fetches;      /* range requests made */
	uint64_t bytes;        /* bytes received */
	uint64_t retries;      /* chunks requeued after a transient failure */
	uint64_t cache_hits;   /* chunks read from the cache directory */
	uint64_t cache_misses; /* chunks fetched from the server */
	uint64_t cache_bad;    /* cache files that failed their checksum */
	uint64_t cache_evictions;
	uint64_t failed_chunks; /* past the deadline, or refused */
	uint64_t parked;       /* faults parked on a fetch */
	char http_version[12]; /* negotiated by the last response: "HTTP/2", ... */
	char last_error[192];
};
/* false if s is not remote. */
bool source_remote_stats(struct pagein_source *s, struct source_remote_stats *st);

/* Parking a fault on a chunk in flight: the pump calls begin before a
 * fault's fill, end after; a get() meanwhile that would need the network
 * returns -EINPROGRESS instead, and if the chunk is the faulting page's,
 * records (session, addr, len) to be woken with UFFDIO_WAKE when it lands.
 * end() says whether it parked. */
struct park_handle;
struct park_handle *source_park_attach(struct pagein_source *s, int uffd);
void source_park_detach(struct park_handle *h);
void source_park_begin(struct park_handle *h, uint64_t off, uint64_t addr, uint64_t len);
bool source_park_end(void);
/* Whether the last source_park_end() of this thread said parked (and
 * forgets it): a parked fault is not counted as served. */
bool source_park_last(void);
/* Whether this thread's fault has parked since source_park_begin. */
bool source_park_parked(void);
/* A thread that waits on fetches gives up (-ECANCELED) once *flag is set. */
void source_wait_cancel(const atomic_bool *flag);
/* The remote state behind a pagein source, or NULL (source_pagein.c). */
struct remote *source_pagein_remote(struct pagein_source *s);

/* True when len bytes (a multiple of 64) at p are all zero. */
bool page_is_zero(const void *p, size_t len);

/* Copies [off, off+len) into buf (zeros for holes). For tools and tests. */
int source_read(struct pagein_source *s, uint64_t off, void *buf, uint64_t len);

#endif
