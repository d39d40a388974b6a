/* watchdog.h - turns a hang into a failure. vmmsim must never hang: a
 * handler that stops serving faults leaves our threads blocked in page
 * faults forever, so a separate thread watches a progress counter and exits
 * the process (code 3) when it stalls for the timeout. */
#ifndef VMMSIM_WATCHDOG_H
#define VMMSIM_WATCHDOG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct watchdog {
	double timeout_s;
	_Atomic uint64_t *progress; /* bumped on every completed page access */
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
};

/* Prints why and returns -1 on failure. */
int watchdog_start(struct watchdog *w, double timeout_s, _Atomic uint64_t *progress);
void watchdog_stop(struct watchdog *w);

#endif
