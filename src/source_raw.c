/* source_raw.c - a raw guest memory file, as Firecracker writes it.
 *
 * The file is mapped read-only and shared, so UFFDIO_COPY reads straight
 * from the page cache with no copy in between. Holes of a sparse file (diff
 * snapshots, or files written sparse) are found once at open with
 * SEEK_DATA/SEEK_HOLE and read as zeros without touching the disk.
 * The file may shrink while it is served (its owner truncates it): bytes
 * past the new end cannot be read. UFFDIO_COPY then fails with EFAULT, and
 * pagein's own reads of the mapping are guarded (guard.h), so the sessions
 * that need those bytes end with an error naming the file (or poison the
 * page) and no SIGBUS reaches the daemon. shrunk() tells which. */
#include "source.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#include "error.h"
#include "guard.h"

struct data_extent {
	uint64_t start, end; /* [start, end): bytes with data */
};

struct raw_source {
	struct pagein_source base;
	int fd;
	const unsigned char *map;
	struct data_extent *ext; /* sorted, disjoint */
	size_t next;
	/* The last window advise() asked the kernel for, [start, end):
	 * consecutive runs of a working set mostly fall in one window. */
	_Atomic uint64_t advised_start, advised_end;
};

static int find_data_extents(struct raw_source *r, uint64_t size)
{
	size_t cap = 16;
	r->ext = malloc(cap * sizeof(*r->ext));
	if (!r->ext)
		return -ENOMEM;
	off_t pos = 0;
	while ((uint64_t)pos < size) {
		off_t d = lseek(r->fd, pos, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				break; /* only a hole remains */
			/* A filesystem without SEEK_DATA: the whole file is data. */
			r->next = 0;
			d = 0;
		}
		off_t h = lseek(r->fd, d, SEEK_HOLE);
		if (h < 0 || (uint64_t)h > size)
			h = (off_t)size;
		if (r->next == cap) {
			cap *= 2;
			void *n = realloc(r->ext, cap * sizeof(*r->ext));
			if (!n)
				return -ENOMEM;
			r->ext = n;
		}
		r->ext[r->next++] = (struct data_extent){(uint64_t)d, (uint64_t)h};
		pos = h;
	}
	return 0;
}

/* Index of the first extent ending after off (binary search). */
static size_t extent_after(const struct raw_source *r, uint64_t off)
{
	size_t lo = 0, hi = r->next;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (r->ext[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int raw_get(struct pagein_source *s, uint64_t off, uint64_t len,
		   struct source_extent *out)
{
	struct raw_source *r = (struct raw_source *)s;
	if (off >= s->size || len == 0)
		return -EINVAL;
	if (len > s->size - off)
		len = s->size - off;
	size_t i = extent_after(r, off);
	memset(out, 0, sizeof(*out));
	if (i < r->next && r->ext[i].start <= off) {
		uint64_t avail = r->ext[i].end - off;
		out->data = r->map + off;
		out->len = avail < len ? avail : len;
	} else {
		uint64_t hole_end = i < r->next ? r->ext[i].start : s->size;
		uint64_t avail = hole_end - off;
		out->len = avail < len ? avail : len;
	}
	return 0;
}

static bool raw_hole(struct pagein_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
	struct source_extent e;
	if (raw_get(s, off, len, &e) < 0) {
		*run = len;
		return false;
	}
	*run = e.len;
	return e.data == NULL;
}

static void raw_put(struct pagein_source *s, struct source_extent *ext)
{
}

#define ADVISE_ALIGN (128u << 10)

static void raw_advise(struct pagein_source *s, uint64_t off, uint64_t len)
{
	struct raw_source *r = (struct raw_source *)s;
	/* Asynchronous readahead into the page cache; COPY then finds it.
	 * Rounded out to ADVISE_ALIGN, as the kernel's own read-around is:
	 * a working set is mostly short runs, and on a volume that limits
	 * I/O operations (a cloud disk's IOPS) a read per short run cost
	 * more than the bytes read around it (issue 11: 10.7 KiB per read,
	 * 6.4 s against the File backend's 2.2 s on a throttled w1). */
	uint64_t a = off & ~(uint64_t)(ADVISE_ALIGN - 1);
	uint64_t b = (off + len + ADVISE_ALIGN - 1) & ~(uint64_t)(ADVISE_ALIGN - 1);
	if (b > s->size)
		b = s->size;
	/* Asked already (best effort: racing callers may both ask). */
	if (a >= atomic_load_explicit(&r->advised_start, memory_order_relaxed) &&
	    b <= atomic_load_explicit(&r->advised_end, memory_order_relaxed))
		return;
	atomic_store_explicit(&r->advised_start, a, memory_order_relaxed);
	atomic_store_explicit(&r->advised_end, b, memory_order_relaxed);
	/* In the page cache already (a warm restore): a WILLNEED walk of
	 * cached pages costs ~25 us per call for nothing (16k calls, 0.43 s
	 * of a 512 MiB w1 replay by strace -c); mincore of the window costs
	 * far less. */
	unsigned char vec[ADVISE_ALIGN / 4096];
	size_t n = (size_t)((b - a + 4095) / 4096);
	if (r->map && n <= sizeof(vec) && mincore((void *)(r->map + a), b - a, vec) == 0) {
		size_t i = 0;
		while (i < n && (vec[i] & 1))
			i++;
		if (i == n)
			return;
	}
	posix_fadvise(r->fd, (off_t)a, (off_t)(b - a), POSIX_FADV_WILLNEED);
}

static void raw_prepare(struct pagein_source *s, uint64_t off, uint64_t len)
{
	struct raw_source *r = (struct raw_source *)s;
	/* Reads the range into the page cache and maps it here (5.14+);
	 * harmless if it fails: the COPY then faults the pages itself. */
	uint64_t a = off & ~4095ull;
	madvise((void *)(r->map + a), len + (off - a), MADV_POPULATE_READ);
}

static bool raw_shrunk(struct pagein_source *s, uint64_t off)
{
	struct raw_source *r = (struct raw_source *)s;
	struct stat st;
	return fstat(r->fd, &st) == 0 && (uint64_t)st.st_size <= off;
}

static void raw_destroy(struct pagein_source *s)
{
	struct raw_source *r = (struct raw_source *)s;
	if (r->map)
		munmap((void *)r->map, s->size);
	close(r->fd);
	free(r->ext);
	free(r);
}

static const struct source_ops raw_ops = {
	.kind = "raw",
	.get = raw_get,
	.put = raw_put,
	.advise = raw_advise,
	.hole = raw_hole,
	.prepare = raw_prepare,
	.shrunk = raw_shrunk,
	.destroy = raw_destroy,
};

int source_raw_open(int fd, const char *path, struct pagein_source **out,
		    struct pagein_error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return pagein_fail(err, errno, "snapshot %s: stat: %s", path,
				   strerror(errno));
	if (st.st_size == 0)
		return pagein_fail(err, EINVAL,
				   "snapshot %s: file is empty: name the memory file the VMM wrote", path);
	struct raw_source *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	uint64_t size = (uint64_t)st.st_size;
	if (source_init(&r->base, &raw_ops, path, size) < 0) {
		free(r);
		return -ENOMEM;
	}
	r->fd = fd;
	int e = guard_init();
	if (e < 0)
		goto fail;
	e = find_data_extents(r, size);
	if (e < 0)
		goto fail;
	void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		e = pagein_fail(err, errno, "snapshot %s: mmap: %s", path,
				strerror(errno));
		goto fail;
	}
	r->map = map;
	*out = &r->base;
	return 0;
fail:
	free(r->ext);
	free(r->base.path);
	free(r);
	return e;
}
