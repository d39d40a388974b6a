/* fuzz_snapshot_header.c - libFuzzer targets for the parsers of untrusted
 * files (run with `make fuzz`, mk/snapshot.mk).
 *
 * Default target: a whole pagein snapshot file image. Each input is parsed
 * twice: as it is (so the checksum checks are exercised), and with its
 * header/index/working-set checksums recomputed first, so that mutations
 * reach the field and index checks behind them instead of all dying at the
 * header checksum. When the fixed-up image parses, it is also served
 * through the real source from a memfd and every byte read back, which
 * drives the chunk read/checksum/decompress path with hostile chunks.
 *
 * Built with -DFUZZ_WORKINGSET: the working-set file parser alone. */
#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "snapshot_format.h"
#include "source.h"
#include "workingset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_WORKINGSET

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct workingset ws;
	struct pagein_error err;
	if (workingset_parse(data, size, &ws, &err) == 0)
		workingset_fini(&ws);
	return 0;
}

#else

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

static void wr64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

/* Recomputes whatever checksums the declared layout makes computable. */
static void reseal(uint8_t *f, size_t len)
{
	if (len < SNAPSHOT_HEADER_SIZE)
		return;
	uint64_t count = rd64(f + 40), ioff = rd64(f + 56);
	uint64_t esize = (uint64_t)f[48] | (uint64_t)f[49] << 8;
	uint64_t ilen;
	if (!__builtin_mul_overflow(count, esize, &ilen) && ioff <= len && ilen <= len - ioff)
		wr64(f + 64, XXH3_64bits(f + ioff, ilen));
	uint64_t woff = rd64(f + 72), wlen = rd64(f + 80);
	if (woff <= len && wlen <= len - woff)
		wr64(f + 88, XXH3_64bits(f + woff, wlen));
	wr64(f + 120, XXH3_64bits(f, 120));
}

/* Serves the image through the real source and reads every byte. */
static void serve_all(const uint8_t *f, size_t len, const struct snapshot_meta *m)
{
	if (m->h.image_size > (16u << 20))
		return; /* keep each input fast */
	int fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, f, len) != (ssize_t)len) {
		close(fd);
		return;
	}
	struct pagein_source *s;
	struct pagein_error err;
	if (source_pagein_open(fd, "fuzz", &s, &err) < 0) {
		close(fd);
		return;
	}
	source_pagein_set_cache_limit(s, 1u << 20);
	static unsigned char buf[64u << 10];
	for (uint64_t off = 0; off < s->size;) {
		uint64_t n = s->size - off < sizeof(buf) ? s->size - off : sizeof(buf);
		if (source_read(s, off, buf, n) < 0) {
			/* A bad chunk: skip to the next one. */
			off = (off / s->chunk_size + 1) * s->chunk_size;
			continue;
		}
		off += n;
	}
	pagein_source_unref(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct snapshot_meta m;
	struct pagein_error err;
	if (snapshot_meta_parse(data, size, &m, &err) == 0)
		snapshot_meta_free(&m);

	uint8_t *f = malloc(size ? size : 1);
	if (!f)
		return 0;
	memcpy(f, data, size);
	reseal(f, size);
	if (snapshot_meta_parse(f, size, &m, &err) == 0) {
		serve_all(f, size, &m);
		snapshot_meta_free(&m);
	}
	free(f);
	return 0;
}

#endif
