/* guard.h - touching memory a VMM (or a file's owner) can pull away.
 *
 * pagein maps a few things it does not own: the userfault bitmap memfd and
 * hugetlbfs guest memory (the VMM's fds), and a raw snapshot file. Their
 * owners can truncate them at any time, and a load or store past the new
 * end raises SIGBUS. A SIGBUS must cost only the session whose fd caused
 * it, never the daemon: these helpers touch such memory with a per-thread
 * recovery point, and a fault inside one of them returns -EFAULT instead
 * of killing the process. A SIGBUS anywhere else keeps its usual meaning
 * (the previous handler, or the default action). */
#ifndef PAGEIN_GUARD_H
#define PAGEIN_GUARD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Installs the process-wide SIGBUS handler once (idempotent, thread-safe).
 * Returns 0 or -errno. */
int guard_init(void);

/* Each returns 0, or -EFAULT if the memory went away under it. */
int guarded_copy(void *dst, const void *src, size_t len);
int guarded_zero(void *dst, size_t len);
int guarded_is_zero(const void *p, size_t len, bool *zero);
/* Atomic AND (release), for a bit in a shared bitmap. */
int guarded_and64(_Atomic uint64_t *word, uint64_t mask);

#endif
