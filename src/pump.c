/* pump.c - the uffd reader role, and waiting without sleeping on luck
 * (see pump.h). */
#include "pump.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/uio.h>

#include "error.h"
#include "fault.h"
#include "source.h"
#include "state.h"
#include "uffd.h"

/* uffd_msg per read(): one read returns up to this many events, so a burst
 * of faults from several vCPUs costs one syscall. It is also a round's
 * budget: a session serves at most this many faults (plus those a drain
 * adds) before its worker moves on to other VMs. */
#define MSGS_PER_READ 64
/* A sleeping waiter looks again after this long even without a signal. The
 * protocol does not rely on it (every state change it waits for signals);
 * it bounds the cost of a bug to a slow page instead of a frozen guest. */
#define WAIT_BACKSTOP_NS (200ull * 1000 * 1000)

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

/* ---- reading ---------------------------------------------------------- */

/* A discard (balloon inflation, free page reporting): from now on the
 * range reads as zeros on anonymous memory. Pages whose fill is in flight
 * are flagged so that the filler installs zeros or ends REMOVED. */
static void apply_remove(struct pagein_session *s, uint64_t start, uint64_t end)
{
	/* keeper: journalled before the table changes, so that a new engine
	 * applies it if this one dies in between (state.h). */
	struct state_remove *journal = s->kst ? kstate_remove_begin(s->kst, start, end) : NULL;
	count(&s->n->removes, 1);
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *rg = &s->regions[i];
		size_t first, last;
		region_pages_within(rg, start, end, &first, &last);
		for (size_t p = first; p < last; p++)
			page_remove(&rg->pages, p); /* DO_DISCARD in every state */
		if (last > first)
			count(&s->n->pages_removed, last - first);
	}
	kstate_remove_end(journal);
}

static int queue_push(struct fault_queue *q, const struct uffd_msg *m,
		      uint64_t read_ns)
{
	if (q->tail == q->cap) {
		if (q->head > 0) {
			memmove(q->msg, q->msg + q->head,
				(q->tail - q->head) * sizeof(*q->msg));
			memmove(q->read_ns, q->read_ns + q->head,
				(q->tail - q->head) * sizeof(*q->read_ns));
			q->tail -= q->head;
			q->head = 0;
		} else {
			size_t cap = q->cap ? q->cap * 2 : MSGS_PER_READ * 2;
			void *n = realloc(q->msg, cap * sizeof(*q->msg));
			if (!n)
				return -ENOMEM;
			q->msg = n;
			n = realloc(q->read_ns, cap * sizeof(*q->read_ns));
			if (!n)
				return -ENOMEM;
			q->read_ns = n;
			q->cap = cap;
		}
	}
	q->read_ns[q->tail] = read_ns;
	q->msg[q->tail++] = *m;
	return 0;
}

/* Bucket bounds of the fault latency histogram: a fault round trip here
 * costs 35-45 us, a fill from a cold disk milliseconds. */
static const uint64_t latency_bounds_ns[PAGEIN_LATENCY_BUCKETS] = {
	10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
	5000000, 10000000, 25000000, 100000000, 1000000000, 10000000000ull,
};

uint64_t pagein_latency_bound_ns(unsigned i)
{
	return i < PAGEIN_LATENCY_BUCKETS ? latency_bounds_ns[i] : UINT64_MAX;
}

static void count_latency(struct pagein_session *s, uint64_t ns)
{
	unsigned b = 0;
	while (b < PAGEIN_LATENCY_BUCKETS && ns > latency_bounds_ns[b])
		b++;
	count(&s->n->latency[b], 1);
	count(&s->n->latency_sum_ns, ns);
}

void pagein_session_latency(const struct pagein_session *s,
			    struct pagein_latency *out)
{
	for (unsigned b = 0; b <= PAGEIN_LATENCY_BUCKETS; b++)
		out->count[b] = atomic_load_explicit(&s->n->latency[b], memory_order_relaxed);
	out->sum_ns = atomic_load_explicit(&s->n->latency_sum_ns, memory_order_relaxed);
	memset(out->reserved, 0, sizeof(out->reserved));
}

/* read() that cannot block. O_NONBLOCK lives on the open file description
 * the VMM shares with us, so the VMM can clear it at any time; RWF_NOWAIT
 * is per call (userfaultfd supports it since 6.8). Older kernels: poll
 * first, put O_NONBLOCK back, and read with a timer that cuts the read
 * short if a racing VMM defeats both (uffd_read_bounded). */
static ssize_t read_nowait(struct pagein_session *s, void *buf, size_t len)
{
	if (s->read_nowait) {
		struct iovec iov = {.iov_base = buf, .iov_len = len};
		return preadv2(s->uffd, &iov, 1, -1, RWF_NOWAIT);
	}
	struct pollfd p = {.fd = s->uffd, .events = POLLIN};
	if (poll(&p, 1, 0) <= 0) {
		errno = EAGAIN;
		return -1;
	}
	int fl = fcntl(s->uffd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(s->uffd, F_SETFL, fl | O_NONBLOCK);
	if (s->test_after_poll)
		s->test_after_poll(s, s->test_arg);
	return uffd_read_bounded(s->uffd, buf, len);
}

int pump_read_events(struct pagein_session *s, bool drain,
		     struct pagein_error *err)
{
	struct uffd_msg buf[MSGS_PER_READ];
	int total = 0;
	for (;;) {
		/* Held until the REMOVEs read are applied: see fill_lock(). */
		pthread_rwlock_wrlock(&s->remove_lock);
		ssize_t n = read_nowait(s, buf, sizeof(buf));
		if (n < 0) {
			int e = errno;
			pthread_rwlock_unlock(&s->remove_lock);
			if (e == EAGAIN)
				return total;
			if (e == EINTR)
				continue;
			return pagein_fail(err, e, "reading uffd events: %s", strerror(e));
		}
		size_t k = (size_t)n / sizeof(buf[0]);
		for (size_t i = 0; i < k; i++) {
			struct uffd_msg *m = &buf[i];
			switch (m->event) {
			case UFFD_EVENT_PAGEFAULT:
				break;
			case UFFD_EVENT_REMOVE:
				apply_remove(s, m->arg.remove.start, m->arg.remove.end);
				break;
			case UFFD_EVENT_UNMAP:
				/* Gone from the VMM; if mapped again it starts empty. */
				apply_remove(s, m->arg.remove.start, m->arg.remove.end);
				break;
			case UFFD_EVENT_FORK:
				/* A child's uffd we have no use for. */
				close((int)m->arg.fork.ufd);
				break;
			case UFFD_EVENT_REMAP:
				pthread_rwlock_unlock(&s->remove_lock);
				return pagein_fail(err, ENOTSUP,
						   "VMM moved guest memory (mremap 0x%llx -> 0x%llx): unsupported",
						   (unsigned long long)m->arg.remap.from,
						   (unsigned long long)m->arg.remap.to);
			default:
				pthread_rwlock_unlock(&s->remove_lock);
				return pagein_fail(err, EPROTO, "unknown uffd event %u",
						   m->event);
			}
		}
		pthread_rwlock_unlock(&s->remove_lock);
		uint64_t read_ns = k ? now_ns() : 0;
		for (size_t i = 0; i < k; i++) {
			if (buf[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (buf[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)
				count(&s->n->faults_minor, 1);
			else
				count(&s->n->faults_missing, 1);
			if (queue_push(&s->queue, &buf[i], read_ns) < 0)
				return pagein_fail(err, ENOMEM, "out of memory queueing faults");
		}
		if (s->test_after_read && k)
			s->test_after_read(s, s->test_arg);
		total += (int)k;
		if (!drain || k < MSGS_PER_READ)
			return total;
	}
}

int pump_round(struct pagein_session *s, bool *worked, struct pagein_error *err)
{
	int r = pump_read_events(s, false, err);
	if (r < 0)
		return r;
	struct fault_queue *q = &s->queue;
	*worked = r > 0 || q->head < q->tail;
	r = 0;
	while (r == 0 && q->head < q->tail) {
		uint64_t read_ns = q->read_ns[q->head];
		struct uffd_msg m = q->msg[q->head++];
		r = fault_serve(s, &m, err);
		/* A parked fault is served later, by its second fault. */
		if (r == 0 && !(s->park && source_park_last()))
			count_latency(s, now_ns() - read_ns);
	}
	if (q->head == q->tail)
		q->head = q->tail = 0;
	return r;
}

void pump_release(struct pagein_session *s, bool worked)
{
	pthread_mutex_unlock(&s->reader_lock);
	/* Only a round that did something changes what page waiters look at
	 * (one that pumped an empty round may now sleep), but a thread that
	 * could not take the role sleeps until it is free. */
	if (worked || atomic_load(&s->role_waiters))
		session_signal(s);
}

int pagein_session_handle_uffd(struct pagein_session *s,
			       struct pagein_error *err)
{
	int f = atomic_load(&s->failed);
	if (f)
		return pagein_session_error(s, err);
	/* A blocking lock: whoever holds the role is serving a bounded round
	 * (it never waits on a page or on the kernel without pumping). */
	pthread_mutex_lock(&s->reader_lock);
	bool worked = false;
	int r = pump_round(s, &worked, err);
	pump_release(s, worked);
	if (r == -ESRCH)
		pagein_fail(err, ESRCH, "VMM gone (a fill answered ESRCH)");
	if (r < 0)
		session_fail(s, r, "%s", err->msg);
	return r;
}

/* ---- waiting ---------------------------------------------------------- */

uint64_t session_wait_gen(struct pagein_session *s)
{
	pthread_mutex_lock(&s->wait_lock);
	uint64_t g = s->wait_gen;
	pthread_mutex_unlock(&s->wait_lock);
	return g;
}

void session_signal(struct pagein_session *s)
{
	pthread_mutex_lock(&s->wait_lock);
	s->wait_gen++;
	pthread_cond_broadcast(&s->wait_cond);
	pthread_mutex_unlock(&s->wait_lock);
}

static int stopped(struct pagein_session *s)
{
	int f = atomic_load(&s->failed);
	if (f)
		return f;
	return atomic_load(&s->stopping) ? -ECANCELED : 0;
}

/* Sleeps until a signal after gen (or the backstop, or a stop). */
static void sleep_until_signal(struct pagein_session *s, uint64_t gen)
{
	pthread_mutex_lock(&s->wait_lock);
	while (s->wait_gen == gen && !stopped(s)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t ns = (uint64_t)ts.tv_nsec + WAIT_BACKSTOP_NS;
		ts.tv_sec += (time_t)(ns / 1000000000ull);
		ts.tv_nsec = (long)(ns % 1000000000ull);
		if (pthread_cond_timedwait(&s->wait_cond, &s->wait_lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&s->wait_lock);
}

/* Takes the pump's role, or registers as waiting for it: the holder then
 * signals when it lets go (pump_release), so the sleep that follows a
 * failed take cannot miss the release. */
static bool take_role_or_wait(struct pagein_session *s)
{
	if (pthread_mutex_trylock(&s->reader_lock) == 0)
		return true;
	atomic_fetch_add(&s->role_waiters, 1);
	if (pthread_mutex_trylock(&s->reader_lock) == 0) {
		atomic_fetch_sub(&s->role_waiters, 1);
		return true;
	}
	return false;
}

int session_wait(struct pagein_session *s, enum wait_for why, uint64_t gen,
		 bool reader, struct pagein_error *err)
{
	int r = stopped(s);
	if (r)
		return r;
	if (reader) {
		/* Already the pump: only reading can help (the pump never
		 * waits on a page). */
		r = pump_read_events(s, true, err);
		return r < 0 ? r : 0;
	}
	if (take_role_or_wait(s)) {
		/* Nobody was reading: read (and serve) ourselves. */
		bool worked = false;
		if (why == WAIT_EVENTS)
			r = pump_read_events(s, true, err);
		if (r >= 0)
			r = pump_round(s, &worked, err);
		pump_release(s, worked || why == WAIT_EVENTS);
		if (r < 0) {
			if (r == -ESRCH)
				pagein_fail(err, ESRCH, "VMM gone (a fill answered ESRCH)");
			return session_fail(s, r, "%s", err->msg);
		}
		if (why == WAIT_EVENTS)
			return 0;
		/* WAIT_PAGE after a round: if it changed nothing, the page's
		 * filler has not settled it: sleep until it signals (pumping
		 * again at once would only compete with it for remove_lock). */
		sleep_until_signal(s, gen);
		return stopped(s);
	}
	/* Someone else pumps: sleep until its round ends or (WAIT_PAGE) the
	 * page's filler signals. */
	sleep_until_signal(s, gen);
	atomic_fetch_sub(&s->role_waiters, 1);
	return stopped(s);
}

void session_drain(struct pagein_session *s)
{
	/* Teardown: nobody will serve this uffd again. Read what is pending so
	 * that a VMM blocked in madvise() on its REMOVE returns (the kernel
	 * waits until the event is read), and wake the faults read, so that
	 * they fault again for whoever serves the VM next. */
	struct pagein_error err = {{0}};
	pthread_mutex_lock(&s->reader_lock);
	void (*hook)(struct pagein_session *, void *) = s->test_after_read;
	s->test_after_read = NULL;
	pump_read_events(s, true, &err);
	s->test_after_read = hook;
	struct fault_queue *q = &s->queue;
	for (; q->head < q->tail; q->head++) {
		uint64_t addr = q->msg[q->head].arg.pagefault.address;
		struct region *rg = session_region_by_addr(s, addr);
		uint64_t ps = rg ? rg->r.page_size : 4096; /* a whole huge page */
		uffd_wake(s->uffd, addr & ~(ps - 1), ps);
	}
	q->head = q->tail = 0;
	pump_release(s, true);
}
