/* uffd.c - userfaultfd ioctls and the one classification of their errors. */
#include "uffd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The ioctls report progress in a signed field: bytes done, or -errno when
 * nothing was done. Normalise both into (return value, *done). */
static int fill_result(int r, int64_t progress, uint64_t *done)
{
	*done = progress > 0 ? (uint64_t)progress : 0;
	return r < 0 ? -errno : 0;
}

int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len,
	      bool wake, uint64_t *done)
{
	struct uffdio_copy c = {
		.dst = dst,
		.src = (uint64_t)(uintptr_t)src,
		.len = len,
		.mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE,
	};
	int r = ioctl(uffd, UFFDIO_COPY, &c);
	return fill_result(r, c.copy, done);
}

int uffd_zeropage(int uffd, uint64_t dst, uint64_t len, bool wake,
		  uint64_t *done)
{
	struct uffdio_zeropage z = {
		.range = {.start = dst, .len = len},
		.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE,
	};
	int r = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
	return fill_result(r, z.zeropage, done);
}

int uffd_continue(int uffd, uint64_t dst, uint64_t len, bool wake,
		  uint64_t *done)
{
	struct uffdio_continue c = {
		.range = {.start = dst, .len = len},
		.mode = wake ? 0 : UFFDIO_CONTINUE_MODE_DONTWAKE,
	};
	int r = ioctl(uffd, UFFDIO_CONTINUE, &c);
	return fill_result(r, c.mapped, done);
}

int uffd_poison(int uffd, uint64_t dst, uint64_t len, bool wake,
		uint64_t *done)
{
	struct uffdio_poison p = {
		.range = {.start = dst, .len = len},
		.mode = wake ? 0 : UFFDIO_POISON_MODE_DONTWAKE,
	};
	int r = ioctl(uffd, UFFDIO_POISON, &p);
	return fill_result(r, p.updated, done);
}

int uffd_wake(int uffd, uint64_t start, uint64_t len)
{
	struct uffdio_range rg = {.start = start, .len = len};
	return ioctl(uffd, UFFDIO_WAKE, &rg) < 0 ? -errno : 0;
}

bool uffd_fd_is_userfaultfd(int fd)
{
	char path[64], link[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return false;
	link[n] = '\0';
	return strcmp(link, "anon_inode:[userfaultfd]") == 0;
}

enum uffd_outcome uffd_classify(int ret)
{
	switch (ret) {
	case 0:
		return UFFD_DONE;
	case -EEXIST:
		return UFFD_EXISTS;
	case -EAGAIN:
		return UFFD_RETRY;
	case -ESRCH:
		return UFFD_GONE;
	case -ENOENT:
		return UFFD_RANGE_GONE;
	default:
		return UFFD_FATAL;
	}
}
