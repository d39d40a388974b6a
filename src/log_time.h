/* log_time.h - the time stamp of every log line (the servers', the
 * daemon's own, the keeper's): UTC with milliseconds,
 * "2026-12-02T02:34:50.123Z", and the level names. */
#ifndef PAGEIN_LOG_TIME_H
#define PAGEIN_LOG_TIME_H

#include <stdio.h>
#include <time.h>

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

static inline void log_utc_now(char *buf, size_t len)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
}

#endif
