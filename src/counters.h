/* counters.h - a session's counters (they mirror struct pagein_stats) and
 * its fault-latency histogram. Plain relaxed atomics, any thread. With a
 * keeper they live in the session's state memfd (state.h), so that a new
 * engine goes on counting where the dead one stopped. */
#ifndef PAGEIN_COUNTERS_H
#define PAGEIN_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

#include "pagein.h"

struct session_counters {
	atomic_uint_fast64_t faults_missing, faults_minor, requests, faults_on_filling,
		pages_copied, pages_zeroed, pages_continued, pages_written,
		wakes, eexist, eagain, removes, pages_removed, bytes_read,
		pages_poisoned, filled_fault, filled_fault_around,
		filled_prefetch, filled_background, filled_request;
	/* Fault service latency, read to served (woken), in the buckets of
	 * pagein_latency_bound_ns(). */
	atomic_uint_fast64_t latency[PAGEIN_LATENCY_BUCKETS + 1];
	atomic_uint_fast64_t latency_sum_ns;
};

#endif
