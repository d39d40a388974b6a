/* guard.c - SIGBUS contained to the access that caused it (see guard.h).
 *
 * Each guarded helper sets a thread-local recovery point around one leaf
 * access (a copy, a scan, one atomic op) that holds no lock and allocates
 * nothing, so jumping out of it leaves no state behind. */
#include "guard.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>

#include "source.h"

struct guard {
	sigjmp_buf jb;
	const char *lo, *hi; /* the range this access may fault in */
};

static __thread struct guard *volatile active;
static struct sigaction previous;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int init_error;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct guard *g = active;
	const char *a = si->si_addr;
	if (g && a >= g->lo && a < g->hi)
		siglongjmp(g->jb, 1);
	/* Not one of ours: what would have happened without us. */
	if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
		previous.sa_sigaction(sig, si, uc);
		return;
	}
	if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN &&
	    previous.sa_handler) {
		previous.sa_handler(sig);
		return;
	}
	/* Default action: returning re-executes the access, which faults
	 * again and now kills the process as it always would. */
	signal(SIGBUS, SIG_DFL);
}

static void install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &previous) < 0)
		init_error = -errno;
}

int guard_init(void)
{
	pthread_once(&once, install);
	return init_error;
}

/* Runs one access under a recovery point. The access is a function so
 * that nothing of the caller's frame is live across the jump. */
#define GUARDED(lo_, len_, access)                                            \
	do {                                                                  \
		struct guard g_;                                              \
		g_.lo = (const char *)(lo_);                                  \
		g_.hi = g_.lo + (len_);                                       \
		if (sigsetjmp(g_.jb, 1)) {                                    \
			active = NULL;                                        \
			return -EFAULT;                                       \
		}                                                             \
		active = &g_;                                                 \
		access;                                                       \
		active = NULL;                                                \
	} while (0)

int guarded_copy(void *dst, const void *src, size_t len)
{
	/* Either side may be the foreign mapping: guard the span of both
	 * (the jump only happens for addresses inside a guarded range). */
	const char *d = dst, *s = src;
	const char *lo = d < s ? d : s, *hi = d + len > s + len ? d + len : s + len;
	GUARDED(lo, (size_t)(hi - lo), memcpy(dst, src, len));
	return 0;
}

int guarded_zero(void *dst, size_t len)
{
	GUARDED(dst, len, memset(dst, 0, len));
	return 0;
}

int guarded_is_zero(const void *p, size_t len, bool *zero)
{
	bool z = false;
	GUARDED(p, len, z = page_is_zero(p, len));
	*zero = z;
	return 0;
}

int guarded_and64(_Atomic uint64_t *word, uint64_t mask)
{
	GUARDED(word, sizeof(*word),
		atomic_fetch_and_explicit(word, mask, memory_order_release));
	return 0;
}

int guarded_load64(_Atomic uint64_t *word, uint64_t *out)
{
	uint64_t v = 0;
	GUARDED(word, sizeof(*word), v = atomic_load_explicit(word, memory_order_acquire));
	*out = v;
	return 0;
}
