/* watchdog.c - see watchdog.h. */
#include "watchdog.h"
#include "util.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* Checking 10 times a second bounds the overshoot past --timeout. */
#define TICK_NS 100000000ULL

static void *watchdog_main(void *arg)
{
	struct watchdog *w = arg;
	uint64_t seen = atomic_load(w->progress), since = now_ns();
	uint64_t limit = (uint64_t)(w->timeout_s * 1e9);

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += (long)TICK_NS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&w->cv, &w->mu, &ts);
		if (w->stop)
			break;
		uint64_t p = atomic_load(w->progress), now = now_ns();

		if (p != seen) {
			seen = p;
			since = now;
		} else if (now - since >= limit) {
			fail_now(EXIT_HANG, "handler made no progress for %g s", w->timeout_s);
		}
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int watchdog_start(struct watchdog *w, double timeout_s, _Atomic uint64_t *progress)
{
	pthread_condattr_t ca;
	int rc;

	memset(w, 0, sizeof(*w));
	w->timeout_s = timeout_s;
	w->progress = progress;
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&w->th, NULL, watchdog_main, w);
	if (rc) {
		msg("starting the watchdog thread: %s", strerror(rc));
		pthread_cond_destroy(&w->cv);
		pthread_mutex_destroy(&w->mu);
		return -1;
	}
	return 0;
}

void watchdog_stop(struct watchdog *w)
{
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->th, NULL);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
}
