/* workingset.h - a recorded working set: the pages a restore touched first,
 * in first-touch order. Written by `pagein serve --record`, replayed by
 * `--prefetch`, and stored inside pagein snapshot files.
 *
 * File format (all little-endian), version 1:
 *   0  char[8] magic "PAGEINWS"
 *   8  u32     version (1)
 *  12  u32     page_size (bytes; offsets below are multiples of it)
 *  16  u64     count
 *  24  u64     snapshot_size (bytes of guest memory it was recorded on)
 *  32  u64[count] snapshot offsets, first-touch order, no duplicates
 * Readers refuse other magics and versions; a count that does not match
 * the file length is an error. */
#ifndef PAGEIN_WORKINGSET_H
#define PAGEIN_WORKINGSET_H

#include <stddef.h>
#include <stdint.h>

#include "pagein.h"

#define WORKINGSET_MAGIC "PAGEINWS"
#define WORKINGSET_VERSION 1u
#define WORKINGSET_HEADER_SIZE 32u

struct workingset {
	uint32_t page_size;
	uint64_t snapshot_size;
	uint64_t count;
	uint64_t *offsets;
};

int workingset_load(const char *path, struct workingset *ws,
		    struct pagein_error *err);
/* Parses a whole file image already in memory (also the fuzz entry). */
int workingset_parse(const void *buf, size_t len, struct workingset *ws,
		     struct pagein_error *err);
/* Writes atomically (temporary file + rename). */
int workingset_save(const char *path, const struct workingset *ws,
		    struct pagein_error *err);
void workingset_fini(struct workingset *ws);

#endif
