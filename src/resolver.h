/* resolver.h - helpers the resolver shares with prefetch and tests. */
#ifndef PAGEIN_RESOLVER_H
#define PAGEIN_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>

/* True when len bytes (a multiple of 8) at p are all zero. */
bool page_is_zero(const void *p, size_t len);

#endif
