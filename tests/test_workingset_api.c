/* test_workingset_api.c - working sets through the public API: built,
 * saved, loaded back; loaded from a pagein snapshot that carries one;
 * refused with a reason when malformed or absent. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "pagein.h"
#include "snapshot_format.h"

static int read_raw(void *opaque, uint64_t off, void *buf, size_t len,
		    struct pagein_error *err)
{
	ssize_t n = pread(*(int *)opaque, buf, len, (off_t)off);
	return n == (ssize_t)len ? 0 : -EIO;
}

static int roundtrip_and_snapshot(enum tc_mem mem)
{
	struct pagein_error err = {{0}};
	struct pagein_workingset *ws, *back;
	const uint64_t off[] = {5 * PS, 0, 12 * PS, 3 * PS};
	char path[256], raw[256], snap[256], bare[256];
	tc_tmp_path(path, sizeof(path), "ws");
	tc_tmp_path(raw, sizeof(raw), "wsraw");
	tc_tmp_path(snap, sizeof(snap), "wssnap");
	tc_tmp_path(bare, sizeof(bare), "wsbare");

	/* Refusals name the fault. */
	TC_CHECK(pagein_workingset_new(off, 4, 8192, 16 * PS, &ws, &err) == -EINVAL);
	TC_CHECK(strstr(err.msg, "page_size 8192 is not 4096 or 2097152"));
	TC_CHECK(pagein_workingset_new(off, 4, 4096, 12 * PS, &ws, &err) == -EINVAL);
	TC_CHECK(strstr(err.msg, "entry 2 offset 0xc000 is unaligned or past snapshot_size"));
	TC_CHECK(pagein_workingset_load("/nonexistent/ws", &ws, &err) == -ENOENT);

	/* Built, saved, loaded back: same order, same fields. */
	TC_CHECK(pagein_workingset_new(off, 4, 4096, 16 * PS, &ws, &err) == 0);
	TC_CHECK(pagein_workingset_save(ws, path, &err) == 0);
	TC_CHECK(pagein_workingset_load(path, &back, &err) == 0);
	TC_CHECK(pagein_workingset_count(back) == 4);
	TC_CHECK(pagein_workingset_page_size(back) == 4096);
	TC_CHECK(pagein_workingset_snapshot_size(back) == 16 * PS);
	TC_CHECK(!memcmp(pagein_workingset_offsets(back), off, sizeof(off)));
	pagein_workingset_free(back);

	/* A pagein snapshot carrying it, and one carrying none. */
	TC_CHECK(tc_write_snapshot(raw, 16, 9) == 0);
	int rfd = open(raw, O_RDONLY);
	TC_CHECK(rfd >= 0);
	struct workingset iws = {.page_size = 4096, .snapshot_size = 16 * PS, .count = 4,
				 .offsets = (uint64_t *)off};
	for (int with = 1; with >= 0; with--) {
		struct snapshot_write_opts o = {.image_size = 16 * PS, .chunk_size = 64 * 1024,
						.level = 1, .threads = 1, .ws = with ? &iws : NULL,
						.read = read_raw, .read_opaque = &rfd};
		struct snapshot_write_stats st;
		const char *out = with ? snap : bare;
		int fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0644);
		TC_CHECK(fd >= 0);
		TC_CHECK(snapshot_write(fd, &o, &st, &err) == 0);
		close(fd);
	}
	close(rfd);
	TC_CHECK(pagein_workingset_load(snap, &back, &err) == 0);
	TC_CHECK(pagein_workingset_count(back) == 4);
	TC_CHECK(!memcmp(pagein_workingset_offsets(back), off, sizeof(off)));
	pagein_workingset_free(back);
	TC_CHECK(pagein_workingset_load(bare, &back, &err) == -ENODATA);
	TC_CHECK(strstr(err.msg, "carries no working set"));
	/* Not a working set at all: the raw image. */
	TC_CHECK(pagein_workingset_load(raw, &back, &err) == -EINVAL);
	TC_CHECK(strstr(err.msg, "bad magic"));

	pagein_workingset_free(ws);
	pagein_workingset_free(NULL);
	unlink(path);
	unlink(raw);
	unlink(snap);
	unlink(bare);
	return TC_PASS;
}

int main(void)
{
	static const struct tc_case cases[] = {
		{"roundtrip_and_snapshot", roundtrip_and_snapshot, TC_ANON},
	};
	return tc_run(cases, sizeof(cases) / sizeof(cases[0]));
}
