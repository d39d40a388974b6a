/* uffd.c - userfaultfd ioctls and the one classification of their errors. */
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <string.h>
#include <time.h>
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

/* ---- a read() a VMM cannot park (kernels without RWF_NOWAIT on a uffd) --
 * The caller set O_NONBLOCK just before, after poll() said readable; but
 * the VMM shares the open file description and can clear the flag again,
 * or read the events itself, and then read() would wait for the next
 * event, maybe forever. A timer signal to this thread cuts it short: its
 * handler does nothing and has no SA_RESTART, so read() fails with EINTR.
 * The timer repeats, in case a tick lands just before the read(); it is
 * deleted right after, which discards a tick not yet delivered. The
 * signal is SIGRTMAX - 1, taken only if nobody handles it already. */
#define BOUND_NS 20000000L

static pthread_once_t bound_once = PTHREAD_ONCE_INIT;
static bool bound_ok;

static void bound_tick(int sig)
{
	(void)sig;
}

static void bound_install(void)
{
	struct sigaction old, sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = bound_tick; /* no SA_RESTART */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGRTMAX - 1, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
	    !(old.sa_flags & SA_SIGINFO))
		bound_ok = sigaction(SIGRTMAX - 1, &sa, NULL) == 0;
}

ssize_t uffd_read_bounded(int fd, void *buf, size_t len)
{
	pthread_once(&bound_once, bound_install);
	timer_t t;
	bool timed = false;
	if (bound_ok) {
		struct sigevent sev;
		memset(&sev, 0, sizeof(sev));
		sev.sigev_notify = SIGEV_THREAD_ID;
		sev.sigev_signo = SIGRTMAX - 1;
		sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
		struct itimerspec its = {.it_value = {0, BOUND_NS}, .it_interval = {0, BOUND_NS}};
		timed = timer_create(CLOCK_MONOTONIC, &sev, &t) == 0;
		if (timed && timer_settime(t, 0, &its, NULL) < 0) {
			timer_delete(t);
			timed = false;
		}
	}
	ssize_t n = read(fd, buf, len);
	int e = errno;
	if (timed)
		timer_delete(t);
	if (n < 0 && e == EINTR)
		e = EAGAIN;
	errno = e;
	return n;
}
