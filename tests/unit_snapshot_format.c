/* unit_snapshot_format.c - the pagein snapshot format: write, read back every
 * byte, refuse every bad field, never hand out bytes that failed a check,
 * and the decompressed-chunk cache (bounds, pins, one decompression per
 * chunk under concurrent get()). */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>

#include "snapshot_format.h"
#include "source.h"
#include "workingset.h"

#define PS 4096u

/* ---- fixtures ------------------------------------------------------------ */

/* Deterministic guest memory with the kinds of pages real memory has. */
enum fill { FILL_DENSE, FILL_SPARSE, FILL_ZERO };

static unsigned char *make_image(size_t size, enum fill kind, unsigned seed)
{
	unsigned char *b = calloc(1, size ? size : 1);
	assert_non_null(b);
	if (kind == FILL_ZERO)
		return b;
	for (size_t off = 0; off < size; off += PS) {
		size_t n = size - off < PS ? size - off : PS;
		unsigned r = (unsigned)rand_r(&seed);
		unsigned what = kind == FILL_DENSE ? 1 + r % 2 : r % 4;
		if (what == 0 || (kind == FILL_SPARSE && (off / PS / 7) % 3 == 0))
			continue; /* zero page, and zero runs */
		if (kind == FILL_SPARSE && off >= size / 4 && off < size / 4 + (256u << 10))
			continue; /* a zero region: whole zero chunks */
		for (size_t i = 0; i < n; i++)
			b[off + i] = what == 1 ? (unsigned char)rand_r(&seed)  /* random */
					       : (unsigned char)("pagein text "[i % 12] + off / PS);
		if (what == 3)
			b[off] = 1; /* mostly zero page with one byte set */
		if (what == 3)
			memset(b + off + 1, 0, n - 1);
	}
	return b;
}

struct membuf {
	const unsigned char *p;
	size_t size;
};

static int mem_read(void *opaque, uint64_t off, void *buf, size_t len,
		    struct pagein_error *err)
{
	struct membuf *m = opaque;
	assert_true(off + len <= m->size);
	memcpy(buf, m->p + off, len);
	return 0;
}

static char *tmp_file(void)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char *path;
	assert_true(asprintf(&path, "%s/unit_snapshot.XXXXXX", dir) > 0);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	return path;
}

/* Writes img as a snapshot file; returns its path (caller unlinks, frees). */
static char *write_snapshot(const unsigned char *img, size_t size, uint64_t chunk,
			    const struct workingset *ws, struct snapshot_write_stats *st)
{
	char *path = tmp_file();
	int fd = open(path, O_RDWR | O_TRUNC);
	assert_true(fd >= 0);
	struct membuf mb = {img, size};
	struct snapshot_write_opts o = {
		.image_size = size, .chunk_size = chunk, .level = 3, .threads = 2,
		.ws = ws, .read = mem_read, .read_opaque = &mb,
	};
	struct pagein_error err = {{0}};
	struct snapshot_write_stats dummy;
	int r = snapshot_write(fd, &o, st ? st : &dummy, &err);
	if (r)
		fail_msg("snapshot_write: %s", err.msg);
	close(fd);
	return path;
}

static struct pagein_source *open_source(const char *path)
{
	struct pagein_source *s;
	struct pagein_error err = {{0}};
	int r = pagein_source_open(path, &s, &err);
	if (r)
		fail_msg("open %s: %s", path, err.msg);
	assert_true(source_is_pagein(s));
	return s;
}

/* Every byte equal through source_read, and every extent well formed:
 * inside one chunk, NULL only over bytes that are zero. */
static void check_all_bytes(struct pagein_source *s, const unsigned char *img, size_t size)
{
	assert_int_equal(s->size, size);
	unsigned char *back = malloc(size);
	assert_non_null(back);
	assert_int_equal(source_read(s, 0, back, size), 0);
	assert_memory_equal(back, img, size);
	free(back);
	static const unsigned char zero[PS];
	for (uint64_t off = 0; off < size;) {
		struct source_extent ext;
		assert_int_equal(s->ops->get(s, off, size - off, &ext), 0);
		assert_true(ext.len > 0 && off + ext.len <= size);
		assert_true(off / s->chunk_size == (off + ext.len - 1) / s->chunk_size);
		if (ext.data)
			assert_memory_equal(ext.data, img + off, ext.len);
		else
			for (uint64_t k = 0; k < ext.len; k += PS)
				assert_memory_equal(img + off + k, zero,
						    ext.len - k < PS ? ext.len - k : PS);
		s->ops->put(s, &ext);
		off += ext.len;
	}
}

static void round_trip(size_t size, enum fill kind, uint64_t chunk)
{
	unsigned char *img = make_image(size, kind, 7);
	struct snapshot_write_stats st;
	char *path = write_snapshot(img, size, chunk, NULL, &st);
	struct pagein_source *s = open_source(path);
	assert_int_equal(s->chunk_size, chunk);
	check_all_bytes(s, img, size);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal((uint64_t)sb.st_size, st.file_size);
	if (kind == FILL_ZERO) {
		assert_int_equal(st.zero_pages, st.pages);
		assert_int_equal(st.stored_bytes, 0);
	}
	pagein_source_unref(s);
	unlink(path);
	free(path);
	free(img);
}

/* ---- round trips ---------------------------------------------------------- */

static void test_round_trip_dense(void **state)
{
	round_trip(4u << 20, FILL_DENSE, 256u << 10);
}

static void test_round_trip_sparse(void **state)
{
	round_trip(4u << 20, FILL_SPARSE, 64u << 10);
	round_trip(4u << 20, FILL_SPARSE, 1u << 20);
}

static void test_round_trip_all_zero(void **state)
{
	round_trip(3u << 20, FILL_ZERO, 256u << 10);
}

static void test_round_trip_odd_sizes(void **state)
{
	/* Not a chunk multiple; not even a page multiple; one page; one byte. */
	round_trip((3u << 16) + 5 * PS, FILL_SPARSE, 64u << 10);
	round_trip((3u << 16) + 5 * PS + 100, FILL_DENSE, 64u << 10);
	round_trip(PS, FILL_DENSE, 64u << 10);
	round_trip(1, FILL_DENSE, 64u << 10);
	round_trip(12345, FILL_ZERO, 64u << 10);
}

static void test_round_trip_working_set(void **state)
{
	size_t size = 2u << 20;
	uint64_t chunk = 64u << 10;
	unsigned char *img = make_image(size, FILL_DENSE, 3);
	/* First touches: chunk 20, 3, 20 again, 31 (last), 0. */
	uint64_t offs[] = {20 * chunk + PS, 3 * chunk, 20 * chunk, 31 * chunk + 15 * PS, 0};
	struct workingset ws = {.page_size = PS, .snapshot_size = size, .count = 5, .offsets = offs};
	struct snapshot_write_stats st;
	char *path = write_snapshot(img, size, chunk, &ws, &st);
	assert_int_equal(st.ws_chunks, 4);
	struct pagein_source *s = open_source(path);
	check_all_bytes(s, img, size);
	const struct snapshot_meta *m = source_pagein_meta(s);
	assert_true(m->has_ws);
	assert_int_equal(m->ws.count, 5);
	assert_memory_equal(m->ws.offsets, offs, sizeof(offs));
	/* The ws chunks come first, contiguous, in first-touch order. */
	uint64_t want[] = {20, 3, 31, 0};
	uint64_t pos = m->h.data_offset;
	for (int i = 0; i < 4; i++) {
		assert_int_equal(m->chunks[want[i]].offset, pos);
		pos += m->chunks[want[i]].stored;
	}
	assert_int_equal(m->h.ws_data_end, pos);
	for (uint64_t c = 0; c < m->h.chunk_count; c++)
		if (c != 20 && c != 3 && c != 31 && c != 0)
			assert_true(m->chunks[c].offset >= pos);
	assert_int_equal(source_pagein_readahead_ws(s), 0);
	pagein_source_unref(s);
	unlink(path);
	free(path);

	/* A working set of 2 MiB pages (hugetlbfs guests): every chunk under
	 * the huge page is a working-set chunk, placed in guest order. */
	uint64_t huge[] = {0};
	struct workingset hws = {.page_size = 2u << 20, .snapshot_size = size, .count = 1,
				 .offsets = huge};
	path = write_snapshot(img, size, chunk, &hws, &st);
	assert_int_equal(st.ws_chunks, (2u << 20) / chunk);
	s = open_source(path);
	check_all_bytes(s, img, size);
	m = source_pagein_meta(s);
	for (uint64_t c = 1; c < m->h.chunk_count; c++)
		assert_int_equal(m->chunks[c].offset, m->chunks[c - 1].offset + m->chunks[c - 1].stored);
	assert_int_equal(m->h.ws_data_end, m->h.data_offset + m->h.data_size);
	pagein_source_unref(s);
	unlink(path);
	free(path);

	/* A working set from another image size is refused. */
	ws.snapshot_size = size * 2;
	char *p2 = tmp_file();
	int fd = open(p2, O_RDWR);
	struct membuf mb = {img, size};
	struct snapshot_write_opts o = {.image_size = size, .chunk_size = chunk, .level = 1,
					.ws = &ws, .read = mem_read, .read_opaque = &mb};
	struct pagein_error err = {{0}};
	assert_int_equal(snapshot_write(fd, &o, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "working set"));
	close(fd);
	unlink(p2);
	free(p2);
	free(img);
}

/* ---- file surgery ---------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat sb;
	assert_true(fd >= 0 && fstat(fd, &sb) == 0);
	*len = (size_t)sb.st_size;
	unsigned char *b = malloc(*len);
	assert_int_equal(pread(fd, b, *len, 0), (ssize_t)*len);
	close(fd);
	return b;
}

static void spill(const char *path, const unsigned char *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, b, len, 0), (ssize_t)len);
	close(fd);
}

static uint64_t rd64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

static void wr(unsigned char *p, unsigned width, uint64_t v)
{
	for (unsigned i = 0; i < width; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* Recomputes the index checksum and then the header checksum. */
static void reseal(unsigned char *f)
{
	uint64_t count = rd64(f + 40), esize = f[48] | (uint64_t)f[49] << 8;
	uint64_t ioff = rd64(f + 56);
	wr(f + 64, 8, XXH3_64bits(f + ioff, count * esize));
	wr(f + 120, 8, XXH3_64bits(f, 120));
}

struct fixture {
	unsigned char *img;
	size_t size;
	char *path;
	unsigned char *file; /* the pristine snapshot */
	size_t flen;
};

static int fixture_setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	fx->size = (1u << 20) + 3 * PS; /* 17 chunks of 64 KiB, the last partial */
	fx->img = make_image(fx->size, FILL_SPARSE, 11);
	uint64_t offs[] = {5 * PS, 40 * PS};
	struct workingset ws = {.page_size = PS, .snapshot_size = fx->size, .count = 2, .offsets = offs};
	fx->path = write_snapshot(fx->img, fx->size, 64u << 10, &ws, NULL);
	fx->file = slurp(fx->path, &fx->flen);
	*state = fx;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *fx = *state;
	unlink(fx->path);
	free(fx->path);
	free(fx->img);
	free(fx->file);
	free(fx);
	return 0;
}

/* A chunk with stored bytes other than the first (ws) ones. */
static uint64_t some_stored_chunk(const struct snapshot_meta *m)
{
	for (uint64_t c = m->h.chunk_count / 2; c < m->h.chunk_count; c++)
		if (m->chunks[c].stored > 16 && !(m->chunks[c].flags & SNAPSHOT_CHUNK_RAW))
			return c;
	fail_msg("no compressed chunk");
	return 0;
}

/* Any page of chunk c that is stored. */
static uint64_t stored_page(const struct snapshot_meta *m, uint64_t c)
{
	for (uint32_t p = 0;; p++)
		if (snapshot_page_present(m, c, p))
			return c * m->h.chunk_size + (uint64_t)p * PS;
}

static void test_bad_chunk_checksum(void **state)
{
	struct fixture *fx = *state;
	struct snapshot_meta m;
	struct pagein_error err = {{0}};
	assert_int_equal(snapshot_meta_parse(fx->file, fx->flen, &m, &err), 0);
	uint64_t c = some_stored_chunk(&m);
	uint64_t page = stored_page(&m, c);
	unsigned char *f = malloc(fx->flen);
	memcpy(f, fx->file, fx->flen);
	f[m.chunks[c].offset + m.chunks[c].stored / 2] ^= 0x40;
	spill(fx->path, f, fx->flen);

	struct pagein_source *s = open_source(fx->path);
	struct source_extent ext;
	/* Twice: a failure is not cached, and each time no bytes come out. */
	for (int i = 0; i < 2; i++) {
		memset(&ext, 0xa5, sizeof(ext));
		assert_int_equal(s->ops->get(s, page, PS, &ext), -EBADMSG);
		assert_int_equal(ext.bad_chunk, c);
		assert_null(ext.data);
	}
	/* Other chunks are still served, correctly. */
	uint64_t other = stored_page(&m, 0);
	assert_int_equal(s->ops->get(s, other, PS, &ext), 0);
	assert_memory_equal(ext.data, fx->img + other, PS);
	s->ops->put(s, &ext);
	unsigned char buf[PS];
	assert_int_equal(source_read(s, page, buf, PS), -EBADMSG);
	pagein_source_unref(s);

	/* The same chunk with its zstd frame magic broken and its checksum
	 * fixed up: zstd itself refuses it, still -EBADMSG, never bytes. */
	memcpy(f, fx->file, fx->flen);
	uint64_t eoff = m.h.index_offset + c * m.h.entry_size;
	f[m.chunks[c].offset] ^= 0x01;
	wr(f + eoff + 16, 8, XXH3_64bits(f + m.chunks[c].offset, m.chunks[c].stored));
	reseal(f);
	spill(fx->path, f, fx->flen);
	s = open_source(fx->path);
	assert_int_equal(s->ops->get(s, page, PS, &ext), -EBADMSG);
	assert_int_equal(ext.bad_chunk, c);
	pagein_source_unref(s);
	/* A frame truncated inside (stored_size shortened) cannot decode. */
	memcpy(f, fx->file, fx->flen);
	wr(f + eoff + 8, 4, m.chunks[c].stored - 8);
	wr(f + eoff + 16, 8, XXH3_64bits(f + m.chunks[c].offset, m.chunks[c].stored - 8));
	reseal(f);
	spill(fx->path, f, fx->flen);
	s = open_source(fx->path);
	assert_int_equal(s->ops->get(s, page, PS, &ext), -EBADMSG);
	assert_int_equal(ext.bad_chunk, c);
	pagein_source_unref(s);

	spill(fx->path, fx->file, fx->flen);
	snapshot_meta_free(&m);
	free(f);
}

/* Decompress-ahead: a sweep over consecutive chunks has the pool
 * decompress the next ones; a bad chunk in the way still fails only
 * itself (-EBADMSG, named, no bytes), whoever met it first, and the
 * chunks around it are served right. */
static void test_decompress_ahead(void **state)
{
	struct fixture *fx = *state;
	struct snapshot_meta m;
	struct pagein_error err = {{0}};
	assert_int_equal(snapshot_meta_parse(fx->file, fx->flen, &m, &err), 0);
	uint64_t bad = some_stored_chunk(&m);
	unsigned char *f = malloc(fx->flen);
	memcpy(f, fx->file, fx->flen);
	f[m.chunks[bad].offset + m.chunks[bad].stored / 2] ^= 0x40;
	spill(fx->path, f, fx->flen);
	struct pagein_source *s = open_source(fx->path);
	uint64_t cs = m.h.chunk_size;
	source_pagein_set_cache_limit(s, 64 * cs);
	int fails = 0;
	uint64_t ahead = 0;
	for (int round = 0; round < 2; round++) {
		for (uint64_t c = 0; c < m.h.chunk_count; c++) {
			if (!m.chunks[c].present)
				continue;
			uint64_t page = stored_page(&m, c);
			struct source_extent ext;
			int r = s->ops->get(s, page, PS, &ext);
			if (c == bad) {
				assert_int_equal(r, -EBADMSG);
				assert_int_equal(ext.bad_chunk, bad);
				assert_null(ext.data);
				fails++;
				continue;
			}
			assert_int_equal(r, 0);
			assert_memory_equal(ext.data, fx->img + page, PS);
			s->ops->put(s, &ext);
			if (round == 0 && !ahead && c >= 2) {
				/* Consecutive misses have named the next chunks:
				 * wait (not a fixed time: the machine may be busy)
				 * until the pool has decompressed one of them. */
				struct source_pagein_stats st;
				for (int t = 0; t < 5000; t++) {
					source_pagein_stats(s, &st);
					if (st.ahead > 0)
						break;
					usleep(1000);
				}
				ahead = st.ahead;
			}
		}
	}
	assert_int_equal(fails, 2);
	assert_true(ahead > 0);
	pagein_source_unref(s);
	spill(fx->path, fx->file, fx->flen);
	snapshot_meta_free(&m);
	free(f);
}

static void test_truncated(void **state)
{
	struct fixture *fx = *state;
	struct pagein_source *s;
	struct pagein_error err = {{0}};
	/* Cut short before open: refused at open, naming the fields. */
	assert_int_equal(truncate(fx->path, (off_t)fx->flen - 1), 0);
	assert_true(pagein_source_open(fx->path, &s, &err) < 0);
	assert_non_null(strstr(err.msg, "data_size"));
	assert_non_null(strstr(err.msg, fx->path));
	/* Cut short after open: the chunk past the new end is -EIO. */
	spill(fx->path, fx->file, fx->flen);
	s = open_source(fx->path);
	const struct snapshot_meta *m = source_pagein_meta(s);
	uint64_t last = 0;
	for (uint64_t c = 0; c < m->h.chunk_count; c++)
		if (m->chunks[c].stored && m->chunks[c].offset > m->chunks[last].offset)
			last = c;
	assert_int_equal(truncate(fx->path, (off_t)m->chunks[last].offset + 1), 0);
	struct source_extent ext;
	assert_int_equal(s->ops->get(s, stored_page(m, last), PS, &ext), -EIO);
	assert_int_equal(ext.bad_chunk, last);
	pagein_source_unref(s);
	spill(fx->path, fx->file, fx->flen);
}

/* One header field set to a bad value (checksums resealed, so the field
 * check itself is what refuses), and the word the error must contain. */
struct bad_field {
	unsigned off, width;
	uint64_t value;
	const char *msg;
};

static void test_bad_header_fields(void **state)
{
	struct fixture *fx = *state;
	uint64_t data_off = rd64(fx->file + 96);
	const struct bad_field cases[] = {
		{0, 1, 'X', "magic"},
		{8, 4, 2, "version"},
		{12, 4, 256, "header_size"},
		{16, 4, 0x10, "flags"},
		{20, 4, 8192, "page_size"},
		{24, 8, 0, "image_size"},
		{24, 8, UINT64_MAX, "chunk_count"},
		{32, 8, 100000, "chunk_size"},
		{32, 8, 128u << 20, "chunk_size"},
		{40, 8, 16, "chunk_count"},
		{48, 4, 40, "entry_size"},
		{52, 2, 2, "compressor"},
		{56, 8, 64, "index_offset"},
		{56, 8, UINT64_MAX - 8, "index_offset"},
		{80, 8, 1u << 30, "ws_offset"},
		{96, 8, data_off + 1, "data_offset"},
		{104, 8, 1, "data_size"},
		{112, 8, 1, "ws_data_end"},
	};
	unsigned char *f = malloc(fx->flen);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(f, fx->file, fx->flen);
		wr(f + cases[i].off, cases[i].width, cases[i].value);
		reseal(f);
		struct snapshot_meta m;
		struct pagein_error err = {{0}};
		int r = snapshot_meta_parse(f, fx->flen, &m, &err);
		if (r == 0 || !strstr(err.msg, cases[i].msg))
			fail_msg("case %zu (%s): r=%d msg '%s'", i, cases[i].msg, r, err.msg);
	}
	/* A flag cleared with ws fields left: refused. */
	memcpy(f, fx->file, fx->flen);
	wr(f + 16, 4, 0);
	reseal(f);
	struct snapshot_meta m;
	struct pagein_error err = {{0}};
	assert_true(snapshot_meta_parse(f, fx->flen, &m, &err) < 0);
	assert_non_null(strstr(err.msg, "working-set flag"));
	/* Checksums without resealing. */
	memcpy(f, fx->file, fx->flen);
	f[30] ^= 1;
	assert_int_equal(snapshot_meta_parse(f, fx->flen, &m, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "header_checksum"));
	memcpy(f, fx->file, fx->flen);
	f[rd64(f + 56) + 3] ^= 1;
	assert_int_equal(snapshot_meta_parse(f, fx->flen, &m, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "index_checksum"));
	memcpy(f, fx->file, fx->flen);
	f[rd64(f + 72) + 40] ^= 1;
	assert_int_equal(snapshot_meta_parse(f, fx->flen, &m, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "ws_checksum"));
	/* Short files. */
	assert_true(snapshot_meta_parse(f, 100, &m, &err) < 0);
	assert_non_null(strstr(err.msg, "header"));
	free(f);
}

static void test_bad_index_entries(void **state)
{
	struct fixture *fx = *state;
	struct snapshot_meta good;
	struct pagein_error err = {{0}};
	assert_int_equal(snapshot_meta_parse(fx->file, fx->flen, &good, &err), 0);
	uint64_t c = some_stored_chunk(&good);
	uint64_t zc = UINT64_MAX, last = good.h.chunk_count - 1;
	for (uint64_t k = 0; k < good.h.chunk_count; k++)
		if (!good.chunks[k].present)
			zc = k;
	assert_true(zc != UINT64_MAX);
	uint64_t e = good.h.index_offset + c * good.h.entry_size;
	uint64_t ze = good.h.index_offset + zc * good.h.entry_size;
	uint64_t le = good.h.index_offset + last * good.h.entry_size;
	const struct bad_field cases[] = {
		{(unsigned)e + 8, 4, 0, "stored_size"},
		{(unsigned)e + 8, 4, 1u << 30, "stored_size"},
		{(unsigned)e + 0, 8, 5, "offset"},
		{(unsigned)e + 0, 8, fx->flen - 2, "offset"},
		{(unsigned)e + 12, 4, 4, "flags"},
		{(unsigned)e + 12, 4, SNAPSHOT_CHUNK_RAW, "raw chunk"},
		{(unsigned)ze + 8, 4, 100, "all-zero chunk"},
		/* the last chunk has 3 pages: bit 5 is past its end */
		{(unsigned)le + 24, 8, 0x20, "past the chunk"},
	};
	unsigned char *f = malloc(fx->flen);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(f, fx->file, fx->flen);
		wr(f + cases[i].off, cases[i].width, cases[i].value);
		reseal(f);
		struct snapshot_meta m;
		int r = snapshot_meta_parse(f, fx->flen, &m, &err);
		if (r == 0 || !strstr(err.msg, cases[i].msg) || !strstr(err.msg, "chunk"))
			fail_msg("case %zu (%s): r=%d msg '%s'", i, cases[i].msg, r, err.msg);
	}
	snapshot_meta_free(&good);
	free(f);
}

/* ---- the cache -------------------------------------------------------------- */

static void test_cache_eviction(void **state)
{
	size_t size = 4u << 20;
	uint64_t chunk = 64u << 10;
	unsigned char *img = make_image(size, FILL_DENSE, 5);
	char *path = write_snapshot(img, size, chunk, NULL, NULL);
	struct pagein_source *s = open_source(path);
	uint64_t limit = 3 * chunk;
	source_pagein_set_cache_limit(s, limit);
	struct source_pagein_stats st;
	/* A sweep: never more than the bound once each extent is put. */
	for (uint64_t off = 0; off < size; off += PS) {
		struct source_extent ext;
		assert_int_equal(s->ops->get(s, off, PS, &ext), 0);
		assert_memory_equal(ext.data, img + off, PS);
		s->ops->put(s, &ext);
		source_pagein_stats(s, &st);
		assert_true(st.cached_bytes <= limit);
	}
	assert_int_equal(st.misses, size / chunk);
	assert_true(st.evictions >= size / chunk - 3);
	/* Recently used chunks stay: the last one is a hit. */
	struct source_extent ext, held[6];
	assert_int_equal(s->ops->get(s, size - PS, PS, &ext), 0);
	s->ops->put(s, &ext);
	source_pagein_stats(s, &st);
	assert_int_equal(st.hits, size / PS - size / chunk + 1);
	/* Pinned chunks are never evicted: 6 held (over the bound of 3)
	 * stay valid; after put() the cache shrinks back under the bound. */
	for (int i = 0; i < 6; i++) {
		assert_int_equal(s->ops->get(s, (uint64_t)i * chunk, PS, &held[i]), 0);
		source_pagein_stats(s, &st);
	}
	assert_true(st.cached_bytes >= 6 * chunk);
	for (int i = 0; i < 6; i++)
		assert_memory_equal(held[i].data, img + (uint64_t)i * chunk, PS);
	for (int i = 0; i < 6; i++)
		s->ops->put(s, &held[i]);
	source_pagein_stats(s, &st);
	assert_true(st.cached_bytes <= limit);
	/* Bound 0: every chunk leaves at put(). */
	source_pagein_set_cache_limit(s, 0);
	source_pagein_stats(s, &st);
	assert_int_equal(st.cached_bytes, 0);
	pagein_source_unref(s);
	unlink(path);
	free(path);
	free(img);
}

struct reader {
	struct pagein_source *s;
	const unsigned char *img;
	size_t size;
	unsigned seed;
	int bad;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	static const unsigned char zero[PS];
	for (int i = 0; i < 3000; i++) {
		uint64_t off = (uint64_t)(rand_r(&rd->seed) % (rd->size / PS)) * PS;
		struct source_extent ext;
		if (rd->s->ops->get(rd->s, off, PS, &ext) != 0) {
			rd->bad++;
			continue;
		}
		if (memcmp(ext.data ? ext.data : zero, rd->img + off, PS))
			rd->bad++;
		rd->s->ops->put(rd->s, &ext);
	}
	return NULL;
}

struct herd {
	struct pagein_source *s;
	const unsigned char *img;
	uint64_t off;
	pthread_barrier_t go;
	atomic_int bad;
};

static void *herd_main(void *arg)
{
	struct herd *h = arg;
	struct source_extent ext;
	pthread_barrier_wait(&h->go);
	if (h->s->ops->get(h->s, h->off, PS, &ext) != 0 ||
	    memcmp(ext.data, h->img + h->off, PS)) {
		atomic_fetch_add(&h->bad, 1);
		pthread_barrier_wait(&h->go);
		return NULL;
	}
	pthread_barrier_wait(&h->go); /* all four pinned at once */
	h->s->ops->put(h->s, &ext);
	return NULL;
}

static void test_concurrent_get(void **state)
{
	size_t size = 8u << 20;
	unsigned char *img = make_image(size, FILL_SPARSE, 9);
	char *path = write_snapshot(img, size, 256u << 10, NULL, NULL);
	struct pagein_source *s = open_source(path);
	const struct snapshot_meta *m = source_pagein_meta(s);
	uint64_t stored = 0;
	for (uint64_t c = 0; c < m->h.chunk_count; c++)
		stored += m->chunks[c].present != 0;

	/* A cache that holds everything: each chunk decompressed once,
	 * however many threads want it at the same moment. */
	struct reader rd[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		rd[i] = (struct reader){s, img, size, 100u + (unsigned)i, 0};
		assert_int_equal(pthread_create(&t[i], NULL, reader_main, &rd[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(rd[i].bad, 0);
	}
	struct source_pagein_stats st;
	source_pagein_stats(s, &st);
	assert_true(st.misses <= stored);
	assert_int_equal(st.evictions, 0);

	/* Four threads want the same cold chunk at the same moment: one
	 * decompresses it, the others wait for it or find it done. */
	source_pagein_set_cache_limit(s, 0);
	struct herd h = {.s = s, .img = img};
	pthread_barrier_init(&h.go, NULL, 4);
	uint64_t chunks = 0;
	for (uint64_t c = 0; c < m->h.chunk_count; c++) {
		if (!m->chunks[c].present)
			continue;
		h.off = stored_page(m, c);
		struct source_pagein_stats before, after;
		source_pagein_stats(s, &before);
		for (int i = 0; i < 4; i++)
			assert_int_equal(pthread_create(&t[i], NULL, herd_main, &h), 0);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		source_pagein_stats(s, &after);
		/* Each thread held its extent until all four had one. */
		assert_int_equal(after.misses - before.misses, 1);
		assert_int_equal((after.hits - before.hits) + (after.waits - before.waits), 3);
		chunks++;
	}
	assert_int_equal(h.bad, 0);
	assert_true(chunks > 4);
	pthread_barrier_destroy(&h.go);
	source_pagein_set_cache_limit(s, 64u << 20);

	/* A cache of two chunks under four threads: eviction races. */
	source_pagein_set_cache_limit(s, 2 * m->h.chunk_size);
	for (int i = 0; i < 4; i++) {
		rd[i] = (struct reader){s, img, size, 200u + (unsigned)i, 0};
		assert_int_equal(pthread_create(&t[i], NULL, reader_main, &rd[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(rd[i].bad, 0);
	}
	source_pagein_stats(s, &st);
	assert_true(st.cached_bytes <= 2 * m->h.chunk_size);
	assert_true(st.evictions > 0);
	pagein_source_unref(s);
	unlink(path);
	free(path);
	free(img);
}

static void test_probe_and_raw_fallback(void **state)
{
	assert_true(source_pagein_probe("PAGEINSNxxxx", 12));
	assert_false(source_pagein_probe("PAGEINS", 7));
	assert_false(source_pagein_probe("PAGEINWS....", 12));
	/* Bad arguments to get(). */
	unsigned char *img = make_image(1u << 20, FILL_DENSE, 1);
	char *path = write_snapshot(img, 1u << 20, 0, NULL, NULL);
	struct pagein_source *s = open_source(path);
	assert_int_equal(s->chunk_size, SNAPSHOT_CHUNK_DEFAULT);
	struct source_extent ext;
	assert_int_equal(s->ops->get(s, 1u << 20, PS, &ext), -EINVAL);
	assert_int_equal(s->ops->get(s, 100, PS, &ext), -EINVAL);
	assert_int_equal(s->ops->get(s, 0, 0, &ext), -EINVAL);
	/* advise() is a hint: any range, including past the end, is harmless. */
	assert_non_null(s->ops->advise);
	s->ops->advise(s, 0, 1u << 20);
	s->ops->advise(s, (1u << 20) - PS, 1u << 30);
	s->ops->advise(s, 1u << 20, PS);
	pagein_source_unref(s);
	unlink(path);
	free(path);
	free(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_dense),
		cmocka_unit_test(test_round_trip_sparse),
		cmocka_unit_test(test_round_trip_all_zero),
		cmocka_unit_test(test_round_trip_odd_sizes),
		cmocka_unit_test(test_round_trip_working_set),
		cmocka_unit_test_setup_teardown(test_bad_chunk_checksum, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_truncated, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_decompress_ahead, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_bad_header_fields, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_bad_index_entries, fixture_setup, fixture_teardown),
		cmocka_unit_test(test_cache_eviction),
		cmocka_unit_test(test_concurrent_get),
		cmocka_unit_test(test_probe_and_raw_fallback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
