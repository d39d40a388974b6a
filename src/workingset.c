/* workingset.c - load and save recorded working sets (format in the header). */
#include "workingset.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "le.h"

int workingset_parse(const void *buf, size_t len, struct workingset *ws,
		     struct pagein_error *err)
{
	const unsigned char *p = buf;
	memset(ws, 0, sizeof(*ws));
	if (len < WORKINGSET_HEADER_SIZE || memcmp(p, WORKINGSET_MAGIC, 8))
		return pagein_fail(err, EINVAL, "working set: bad magic (not a pagein working-set file): give one written by pagein serve --record");
	uint32_t version = get32(p + 8);
	if (version != WORKINGSET_VERSION)
		return pagein_fail(err, EINVAL, "working set: version %u, this pagein reads %u",
				   version, WORKINGSET_VERSION);
	uint32_t ps = get32(p + 12);
	if (ps != 4096 && ps != 2u << 20)
		return pagein_fail(err, EINVAL, "working set: page_size %u is not 4096 or 2097152", ps);
	uint64_t count = get64(p + 16);
	if (count != (len - WORKINGSET_HEADER_SIZE) / 8 ||
	    (len - WORKINGSET_HEADER_SIZE) % 8)
		return pagein_fail(err, EINVAL, "working set: count %llu does not match file length %zu",
				   (unsigned long long)count, len);
	uint64_t size = get64(p + 24);
	uint64_t *off = malloc((count ? count : 1) * sizeof(*off));
	if (!off)
		return -ENOMEM;
	for (uint64_t i = 0; i < count; i++) {
		off[i] = get64(p + WORKINGSET_HEADER_SIZE + 8 * i);
		if (off[i] % ps || off[i] >= size) {
			unsigned long long bad = off[i];
			free(off);
			return pagein_fail(err, EINVAL, "working set: entry %llu offset 0x%llx is unaligned or past snapshot_size",
					   (unsigned long long)i, bad);
		}
	}
	ws->page_size = ps;
	ws->snapshot_size = size;
	ws->count = count;
	ws->offsets = off;
	return 0;
}

int workingset_load(const char *path, struct workingset *ws,
		    struct pagein_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return pagein_fail(err, e, "working set %s does not exist: check the path", path);
		if (e == EACCES || e == EPERM)
			return pagein_fail(err, e, "working set %s: permission denied: pagein needs read access to it",
					   path);
		return pagein_fail(err, e, "working set %s: %s", path, strerror(e));
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < 0 || st.st_size > (1ll << 34)) {
		close(fd);
		return pagein_fail(err, EINVAL, "working set %s: cannot size file", path);
	}
	size_t len = (size_t)st.st_size;
	unsigned char *buf = malloc(len ? len : 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			free(buf);
			close(fd);
			return pagein_fail(err, e, "working set %s: read failed", path);
		}
		got += (size_t)n;
	}
	close(fd);
	int r = workingset_parse(buf, len, ws, err);
	free(buf);
	return r;
}

int workingset_save(const char *path, const struct workingset *ws,
		    struct pagein_error *err)
{
	size_t len = WORKINGSET_HEADER_SIZE + 8 * ws->count;
	unsigned char *buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, WORKINGSET_MAGIC, 8);
	put32(buf + 8, WORKINGSET_VERSION);
	put32(buf + 12, ws->page_size);
	put64(buf + 16, ws->count);
	put64(buf + 24, ws->snapshot_size);
	for (uint64_t i = 0; i < ws->count; i++)
		put64(buf + WORKINGSET_HEADER_SIZE + 8 * i, ws->offsets[i]);
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int r = 0;
	if (fd < 0) {
		r = pagein_fail(err, errno, "working set %s: %s", tmp, strerror(errno));
		goto out;
	}
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);
		if (n < 0) {
			r = pagein_fail(err, errno, "working set %s: write: %s", tmp, strerror(errno));
			break;
		}
		done += (size_t)n;
	}
	if (!r && fsync(fd) < 0)
		r = pagein_fail(err, errno, "working set %s: fsync: %s", tmp, strerror(errno));
	close(fd);
	if (!r && rename(tmp, path) < 0)
		r = pagein_fail(err, errno, "working set %s: rename: %s", path, strerror(errno));
	if (r)
		unlink(tmp);
out:
	free(buf);
	return r;
}

void workingset_fini(struct workingset *ws)
{
	free(ws->offsets);
	ws->offsets = NULL;
	ws->count = 0;
}

/* ---- public API (pagein.h) ----------------------------------------------- */

#include "snapshot_format.h"

struct pagein_workingset {
	struct workingset ws;
};

static int ws_wrap(struct workingset *ws, struct pagein_workingset **out)
{
	struct pagein_workingset *w = malloc(sizeof(*w));
	if (!w) {
		workingset_fini(ws);
		return -ENOMEM;
	}
	w->ws = *ws;
	*out = w;
	return 0;
}

int pagein_workingset_load(const char *path, struct pagein_workingset **out,
			   struct pagein_error *err)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return pagein_fail(err, errno, "working set %s: %s", path, strerror(errno));
	char magic[SNAPSHOT_MAGIC_LEN] = {0};
	ssize_t n = pread(fd, magic, sizeof(magic), 0);
	struct workingset ws;
	int r;
	if (n == (ssize_t)sizeof(magic) && !memcmp(magic, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_LEN)) {
		struct snapshot_meta m;
		memset(&m, 0, sizeof(m));
		r = snapshot_meta_read(fd, path, &m, err);
		close(fd);
		if (r < 0)
			return r;
		if (!m.has_ws) {
			snapshot_meta_free(&m);
			return pagein_fail(err, ENODATA, "snapshot %s carries no working set (pagein snapshot convert --working-set adds one)", path);
		}
		ws = m.ws;
		/* Take the working set out of the meta before freeing it. */
		m.ws.offsets = NULL;
		m.ws.count = 0;
		m.has_ws = false;
		snapshot_meta_free(&m);
	} else {
		close(fd);
		r = workingset_load(path, &ws, err);
		if (r < 0)
			return r;
	}
	return ws_wrap(&ws, out);
}

int pagein_workingset_new(const uint64_t *offsets, size_t count,
			  uint32_t page_size, uint64_t snapshot_size,
			  struct pagein_workingset **out,
			  struct pagein_error *err)
{
	*out = NULL;
	if (count && !offsets)
		return pagein_fail(err, EINVAL, "working set: %zu offsets but offsets is NULL", count);
	if (page_size != 4096 && page_size != 2u << 20)
		return pagein_fail(err, EINVAL, "working set: page_size %u is not 4096 or 2097152", page_size);
	struct workingset ws = {.page_size = page_size, .snapshot_size = snapshot_size, .count = count};
	ws.offsets = malloc((count ? count : 1) * sizeof(*ws.offsets));
	if (!ws.offsets)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		if (offsets[i] % page_size || offsets[i] >= snapshot_size) {
			free(ws.offsets);
			return pagein_fail(err, EINVAL, "working set: entry %zu offset 0x%llx is unaligned or past snapshot_size",
					   i, (unsigned long long)offsets[i]);
		}
		ws.offsets[i] = offsets[i];
	}
	return ws_wrap(&ws, out);
}

int pagein_workingset_save(const struct pagein_workingset *ws,
			   const char *path, struct pagein_error *err)
{
	return workingset_save(path, &ws->ws, err);
}

size_t pagein_workingset_count(const struct pagein_workingset *ws)
{
	return (size_t)ws->ws.count;
}

const uint64_t *pagein_workingset_offsets(const struct pagein_workingset *ws)
{
	return ws->ws.offsets;
}

uint32_t pagein_workingset_page_size(const struct pagein_workingset *ws)
{
	return ws->ws.page_size;
}

uint64_t pagein_workingset_snapshot_size(const struct pagein_workingset *ws)
{
	return ws->ws.snapshot_size;
}

void pagein_workingset_free(struct pagein_workingset *ws)
{
	if (!ws)
		return;
	workingset_fini(&ws->ws);
	free(ws);
}
