/* error.h - filling struct pagein_error: the one sentence a refusal carries. */
#ifndef PAGEIN_ERROR_H
#define PAGEIN_ERROR_H

#include "pagein.h"

/* printf-style; err may be NULL. Returns -errnum (pass a positive errno) so
 * that callers can write `return pagein_fail(err, EINVAL, "...")`. */
int pagein_fail(struct pagein_error *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The n reserved words at w are zero, or -EINVAL naming the first that is not. */
int reserved_check(const uint64_t *w, unsigned n, const char *what, struct pagein_error *err);
#define RESERVED_WORDS_OF(cfg) ((unsigned)(sizeof((cfg)->reserved) / sizeof((cfg)->reserved[0])))

#endif
