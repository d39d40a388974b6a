/* uffd.h - a thin, honest wrapper of the userfaultfd ioctls.
 *
 * Each fill returns 0 or -errno exactly as the kernel answered, with the
 * bytes done before a failure in *done (only that prefix was woken). What
 * an answer means for the caller is decided in one place: uffd_classify(). */
#ifndef PAGEIN_UFFD_H
#define PAGEIN_UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "uffd_compat.h"

/* read() of uffd events that returns within about 20 ms even if a VMM
 * makes it block (clears O_NONBLOCK, or reads the events itself): -1 with
 * EAGAIN then. For kernels without RWF_NOWAIT on a uffd (before 6.8). */
ssize_t uffd_read_bounded(int fd, void *buf, size_t len);

int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len,
	      bool wake, uint64_t *done);
int uffd_zeropage(int uffd, uint64_t dst, uint64_t len, bool wake,
		  uint64_t *done);
int uffd_continue(int uffd, uint64_t dst, uint64_t len, bool wake,
		  uint64_t *done);
int uffd_poison(int uffd, uint64_t dst, uint64_t len, bool wake,
		uint64_t *done);
int uffd_wake(int uffd, uint64_t start, uint64_t len);

/* What /proc/self/fd/N says fd is ("anon_inode:[userfaultfd]", a path...);
 * false if it cannot be read. */
bool fd_link_name(int fd, char *buf, size_t len);

/* True if fd is a userfaultfd (its /proc/self/fd link says so). */
bool uffd_fd_is_userfaultfd(int fd);

/* What /proc/self/fdinfo says of a uffd: "API:\t<api>:<features>:<ioctls>",
 * where features are those the VMM asked UFFDIO_API for, plus (kernels
 * since 6.1) bit 31, UFFD_FEATURE_INITIALIZED, once UFFDIO_API is done.
 * 0, or -errno when the line cannot be read (kernel too old: unknown). */
#define UFFD_FDINFO_INITIALIZED (1ull << 31)
int uffd_fdinfo_api(int fd, uint64_t *api, uint64_t *features);
/* Does this kernel show UFFD_FDINFO_INITIALIZED? (probed once) */
bool uffd_fdinfo_shows_init(void);

enum uffd_outcome {
	UFFD_DONE,   /* filled */
	UFFD_EXISTS, /* EEXIST: already there; the kernel woke NOBODY */
	UFFD_RETRY,  /* EAGAIN: events (REMOVE, UNMAP, ...) pending: read, retry */
	UFFD_GONE,   /* ESRCH: the VMM's mm is gone: end the session quietly */
	UFFD_RANGE_GONE, /* ENOENT: that range is no longer registered (the VMM
			  * unmapped or unregistered it): give up on the range,
			  * not on the session */
	UFFD_FATAL,  /* anything else: the session cannot go on */
};
enum uffd_outcome uffd_classify(int ret);

#endif
