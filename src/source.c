/* source.c - opening a snapshot by its kind, and what all kinds share. */
#include "source.h"
#include "guard.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

int source_init(struct pagein_source *s, const struct source_ops *ops,
		const char *path, uint64_t size)
{
	s->ops = ops;
	atomic_init(&s->refs, 1);
	s->size = size;
	s->chunk_size = 0;
	s->path = strdup(path);
	return s->path ? 0 : -ENOMEM;
}

int pagein_source_open(const char *path, struct pagein_source **out,
		       struct pagein_error *err)
{
	return source_open_opts(path, NULL, out, err);
}

int source_open_opts(const char *path, const struct source_remote_opts *o,
		     struct pagein_source **out, struct pagein_error *err)
{
	if (source_is_remote_url(path))
		return source_http_open(path, o, out, err);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return pagein_fail(err, e, "snapshot %s does not exist: check the path", path);
		if (e == EACCES || e == EPERM)
			return pagein_fail(err, e,
					   "snapshot %s: permission denied: pagein needs read access to it "
					   "(and search access to its directories)", path);
		return pagein_fail(err, e, "snapshot %s: cannot open: %s", path, strerror(e));
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		bool dir = S_ISDIR(st.st_mode);
		close(fd);
		return pagein_fail(err, EINVAL,
				   "snapshot %s: not a regular file%s: name the memory file itself",
				   path, dir ? " but a directory" : "");
	}
	unsigned char head[64] = {0};
	ssize_t n = pread(fd, head, sizeof(head), 0);
	if (n < 0) {
		int e = errno;
		close(fd);
		return pagein_fail(err, e, "snapshot %s: cannot read: %s",
				   path, strerror(e));
	}
	int r = source_pagein_probe(head, (size_t)n)
			? source_pagein_open(fd, path, out, err)
			: source_raw_open(fd, path, out, err);
	if (r < 0)
		close(fd);
	return r;
}

struct pagein_source *pagein_source_ref(struct pagein_source *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

void pagein_source_unref(struct pagein_source *s)
{
	if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	char *path = s->path;
	s->ops->destroy(s);
	free(path);
}

uint64_t pagein_source_size(const struct pagein_source *s)
{
	return s->size;
}

int source_read(struct pagein_source *s, uint64_t off, void *buf, uint64_t len)
{
	if (off > s->size || len > s->size - off)
		return -EINVAL;
	char *p = buf;
	while (len) {
		struct source_extent ext;
		int r = s->ops->get(s, off, len, &ext);
		if (r < 0)
			return r;
		uint64_t n = ext.len < len ? ext.len : len;
		int g = 0;
		if (ext.data)
			g = guarded_copy(p, ext.data, n); /* a raw file can shrink */
		else
			memset(p, 0, n);
		s->ops->put(s, &ext);
		if (g < 0)
			return -EIO;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

bool page_is_zero(const void *p, size_t len)
{
	/* 64 bytes at a time, stopping at the first non-zero line: data pages
	 * cost a few loads, only zero pages are read whole. */
	const uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i += 8) {
		uint64_t acc = w[i] | w[i + 1] | w[i + 2] | w[i + 3] |
			       w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
		if (acc)
			return false;
	}
	return true;
}
