/* uffd.c - userfaultfd ioctls and the one classification of their errors. */
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
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

bool fd_link_name(int fd, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, buf, len - 1);
	if (n < 0)
		return false;
	buf[n] = '\0';
	return true;
}

bool uffd_fd_is_userfaultfd(int fd)
{
	char link[64];
	return fd_link_name(fd, link, sizeof(link)) &&
	       strcmp(link, "anon_inode:[userfaultfd]") == 0;
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

int uffd_fdinfo_api(int fd, uint64_t *api, uint64_t *features)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	int r = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, ft, io;
		if (sscanf(line, "API:\t%llx:%llx:%llx", &a, &ft, &io) == 3) {
			*api = a;
			*features = ft;
			r = 0;
			break;
		}
	}
	fclose(f);
	return r;
}

static bool shows_init;

static void probe_init(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return;
	struct uffdio_api a = {.api = UFFD_API};
	uint64_t api, ft;
	if (ioctl(fd, UFFDIO_API, &a) == 0 && uffd_fdinfo_api(fd, &api, &ft) == 0)
		shows_init = ft & UFFD_FDINFO_INITIALIZED;
	close(fd);
}

bool uffd_fdinfo_shows_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, probe_init);
	return shows_init;
}
