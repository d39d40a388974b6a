/* error.h - filling struct pagein_error: the one sentence a refusal carries. */
#ifndef PAGEIN_ERROR_H
#define PAGEIN_ERROR_H

#include "pagein.h"

/* printf-style; err may be NULL. Returns -errnum (pass a positive errno) so
 * that callers can write `return pagein_fail(err, EINVAL, "...")`. */
int pagein_fail(struct pagein_error *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* 0, or -EINVAL naming the first non-zero reserved word of `what`. */
int reserved_check(const uint64_t *w, const char *what, struct pagein_error *err);

#endif
