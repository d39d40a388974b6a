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
 * that nothing of the caller's frame is live across the jump. The signal
 * mask is not saved (sigsetjmp(.., 0)): saving it costs a sigprocmask
 * system call per access, on the fault path once per page, and there is
 * nothing to restore, since the handler runs with SA_NODEFER (SIGBUS is
 * never blocked by entering it). Under ThreadSanitizer the mask is saved:
 * its runtime delivers signals with others blocked and restores the mask
 * only when the handler returns. */
#if defined(__SANITIZE_THREAD__)
#define GUARD_SAVE_MASK 1
#else
#define GUARD_SAVE_MASK 0
#endif
#define GUARDED(lo_, len_, access)                                            \
	do {                                                                  \
		struct guard g_;                                              \
		g_.lo = (const char *)(lo_);                                  \
		g_.hi = g_.lo + (len_);                                       \
		if (sigsetjmp(g_.jb, GUARD_SAVE_MASK)) {                      \
			active = NULL;                                        \
			return -EFAULT;                                       \
		}                                                             \
		active = &g_;                                                 \
		access;                                                       \
		active = NULL;                                                \
	} while (0)

/* The accesses themselves are written so that no sanitizer runtime is
 * inside them when a SIGBUS jumps out: TSan's atomics take internal locks
 * and its memcpy interceptor updates shadow state, and a jump out of those
 * would leave them held or half-done. Plain string instructions and a
 * locked AND are opaque to every runtime. */
#define NO_SANITIZE __attribute__((no_sanitize("address", "thread", "undefined"), noinline))

static NO_SANITIZE void raw_copy(void *dst, const void *src, size_t len)
{
#if defined(__x86_64__)
	__asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(len) : : "memory");
#else
	volatile unsigned char *d = dst;
	const volatile unsigned char *s = src;
	for (size_t i = 0; i < len; i++)
		d[i] = s[i];
#endif
}

static NO_SANITIZE void raw_zero(void *dst, size_t len)
{
#if defined(__x86_64__)
	__asm__ volatile("rep stosb" : "+D"(dst), "+c"(len) : "a"(0) : "memory");
#else
	volatile unsigned char *d = dst;
	for (size_t i = 0; i < len; i++)
		d[i] = 0;
#endif
}

static NO_SANITIZE bool raw_is_zero(const void *p, size_t len)
{
	const volatile uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i += 8) {
		uint64_t acc = w[i] | w[i + 1] | w[i + 2] | w[i + 3] |
			       w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
		if (acc)
			return false;
	}
	return true;
}

static NO_SANITIZE void raw_and64(_Atomic uint64_t *word, uint64_t mask)
{
#if defined(__x86_64__)
	/* A locked AND is a release (and more) on x86. */
	__asm__ volatile("lock andq %1, %0" : "+m"(*(uint64_t *)word) : "r"(mask) : "memory");
#else
	atomic_fetch_and_explicit(word, mask, memory_order_release);
#endif
}

int guarded_copy(void *dst, const void *src, size_t len)
{
	/* Either side may be the foreign mapping: guard the span of both
	 * (the jump only happens for addresses inside a guarded range). */
	const char *d = dst, *s = src;
	const char *lo = d < s ? d : s, *hi = d + len > s + len ? d + len : s + len;
	GUARDED(lo, (size_t)(hi - lo), raw_copy(dst, src, len));
	return 0;
}

int guarded_zero(void *dst, size_t len)
{
	GUARDED(dst, len, raw_zero(dst, len));
	return 0;
}

int guarded_is_zero(const void *p, size_t len, bool *zero)
{
	volatile bool z = false;
	GUARDED(p, len, z = raw_is_zero(p, len));
	*zero = z;
	return 0;
}

int guarded_and64(_Atomic uint64_t *word, uint64_t mask)
{
	GUARDED(word, sizeof(*word), raw_and64(word, mask));
	return 0;
}

