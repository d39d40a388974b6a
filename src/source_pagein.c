/* source_pagein.c - placeholder until the pagein snapshot format lands:
 * no file is recognised as one, so every snapshot is opened as raw. */
#include "source.h"

#include <errno.h>

#include "error.h"

bool source_pagein_probe(const void *head, size_t len)
{
	return false;
}

int source_pagein_open(int fd, const char *path, struct pagein_source **out,
		       struct pagein_error *err)
{
	return pagein_fail(err, ENOTSUP, "snapshot %s: pagein format not supported", path);
}
