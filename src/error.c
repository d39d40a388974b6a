#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

int pagein_fail(struct pagein_error *err, int errnum, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return -errnum;
}

int reserved_check(const uint64_t *w, unsigned n, const char *what, struct pagein_error *err)
{
	for (unsigned i = 0; i < n; i++)
		if (w[i])
			return pagein_fail(err, EINVAL, "%s.reserved[%u] is not zero (zero the whole structure before filling it)",
					   what, i);
	return 0;
}

const char *pagein_version(void)
{
	return PAGEIN_VERSION;
}
