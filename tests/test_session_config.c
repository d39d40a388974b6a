/* test_session_config.c - pagein_session_new refuses every bad region set
 * and fd with a sentence naming the field and value, and takes nothing
 * (the caller still owns its fds) when it refuses. */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "pagein.h"

static int refuse(const char *name, struct pagein_session_config *cfg, const char *want)
{
	struct pagein_session *s = NULL;
	struct pagein_error err = {{0}};
	int r = pagein_session_new(cfg, &s, &err);
	if (r >= 0 || !strstr(err.msg, want)) {
		fprintf(stderr, "  %s: got %d '%s', want an error with '%s'\n", name, r, err.msg, want);
		if (r >= 0)
			pagein_session_free(s);
		return 1;
	}
	printf("  refused %s: %s\n", name, err.msg);
	return 0;
}

static int bad_regions_and_fds_are_refused(enum tc_mem mem)
{
	struct tc_guest g;
	int t = tc_guest_new(&g, mem, 64 * PS, TC_REG_MISSING, true);
	if (t != TC_PASS)
		return t;
	char snap[256];
	tc_tmp_path(snap, sizeof(snap), "cfg");
	TC_CHECK(tc_write_snapshot(snap, 64, 3) == 0);
	struct pagein_source *src;
	struct pagein_error err = {{0}};
	TC_CHECK(pagein_source_open(snap, &src, &err) == 0);
	uint64_t base = (uint64_t)(uintptr_t)g.base;
	struct pagein_region rg[2];
	struct pagein_session_config cfg;
	int bad = 0;
#define RESET(n)                                                                   \
	do {                                                                       \
		rg[0] = (struct pagein_region){base, 32 * PS, 0, PS};              \
		rg[1] = (struct pagein_region){base + 32 * PS, 32 * PS, 32 * PS, PS}; \
		cfg = (struct pagein_session_config){.regions = rg, .nregions = n,     \
			.uffd = g.uffd, .mem_fd = -1, .bitmap_fd = -1, .source = src}; \
	} while (0)
	RESET(0);
	bad += refuse("no regions", &cfg, "0 regions: expected 1 to 1024");
	RESET(1);
	rg[0].page_size = 8192;
	bad += refuse("page size", &cfg, "region 0: page_size 8192 is not 4096 or 2097152");
	RESET(1);
	rg[0].size = 0;
	bad += refuse("zero size", &cfg, "region 0: size 0 is zero");
	RESET(1);
	rg[0].size = 1ull << 50;
	bad += refuse("absurd size", &cfg, "is absurd");
	RESET(1);
	rg[0].size = 5000;
	bad += refuse("size not page multiple", &cfg, "size 5000 is not a multiple of page_size 4096");
	RESET(1);
	rg[0].host_addr += 100;
	bad += refuse("unaligned address", &cfg, "base_host_virt_addr");
	RESET(1);
	rg[0].offset = 100;
	bad += refuse("unaligned offset", &cfg, "region 0: offset 0x64 is not aligned");
	RESET(2);
	rg[1].offset = 48 * PS;
	bad += refuse("past the end", &cfg, "region 1: offset 196608 + size 131072 reaches past the end of the snapshot (262144 bytes)");
	RESET(2);
	rg[1].offset = 16 * PS;
	bad += refuse("snapshot overlap", &cfg, "regions 0 and 1 overlap in the snapshot");
	RESET(2);
	rg[1].host_addr = base + 16 * PS;
	bad += refuse("address overlap", &cfg, "regions 0 and 1 overlap in the VMM's address space");
	RESET(1);
	rg[0].host_addr = 1ull << 60;
	bad += refuse("not a user address", &cfg, "is not a user address range");
	RESET(1);
	int devnull = open("/dev/null", O_RDONLY);
	cfg.uffd = devnull;
	bad += refuse("not a uffd", &cfg, "is not a userfaultfd");
	RESET(1);
	cfg.bitmap_fd = g.bitmap_fd;
	bad += refuse("bitmap without memory fd", &cfg, "a userfault bitmap needs a guest memory fd");
	RESET(2);
	cfg.mem_fd = g.uffd;
	bad += refuse("memory fd is the uffd", &cfg, "is a userfaultfd (fds out of order?)");
	int small = memfd_create("small", 0);
	TC_CHECK(ftruncate(small, 16 * PS) == 0);
	RESET(2);
	cfg.mem_fd = small;
	bad += refuse("memory fd too small", &cfg, "guest memory fd is 65536 bytes, regions need 262144");
	int tiny = memfd_create("tinybitmap", 0);
	RESET(2);
	if (mem == TC_MEMFD) {
		cfg.mem_fd = g.memfd;
		cfg.bitmap_fd = tiny;
		bad += refuse("bitmap too small", &cfg, "userfault bitmap is 0 bytes, 64 pages need 8");
	}
	/* Refusals took nothing: our fds are still open and valid. */
	TC_CHECK(fcntl(g.uffd, F_GETFD) >= 0 && fcntl(small, F_GETFD) >= 0);
	close(devnull);
	close(small);
	close(tiny);
	pagein_source_unref(src);
	unlink(snap);
	tc_guest_free(&g);
	TC_CHECK(bad == 0);
	return TC_PASS;
}

/* A fresh uffd, UFFDIO_API done with these features (api = false: not done). */
static int fresh_uffd(bool api, uint64_t features)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	struct uffdio_api a = {.api = UFFD_API, .features = features};
	if (api && ioctl(fd, UFFDIO_API, &a) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Does /proc/self/fdinfo of fd carry the API line with UFFDIO_API's mark
 * (bit 31, kernels since 6.1)? */
static bool fdinfo_shows_init(int fd)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	bool yes = false;
	unsigned long long a, ft, io;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "API:\t%llx:%llx:%llx", &a, &ft, &io) == 3)
			yes = ft & (1ull << 31);
	if (f)
		fclose(f);
	return yes;
}

/* The uffd as UFFDIO_API left it: refused without UFFDIO_API or with
 * SIGBUS, accepted with no feature at all (Firecracker before v1.12 without
 * a balloon asks for none: EVENT_REMOVE is not required); a config with a
 * non-zero reserved word is refused. */
static int uffd_features_are_checked(enum tc_mem mem)
{
	char snap[256];
	tc_tmp_path(snap, sizeof(snap), "feat");
	TC_CHECK(tc_write_snapshot(snap, 16, 5) == 0);
	struct pagein_source *src;
	struct pagein_error err = {{0}};
	TC_CHECK(pagein_source_open(snap, &src, &err) == 0);
	void *m = mmap(NULL, 16 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TC_CHECK(m != MAP_FAILED);
	struct pagein_region rg = {(uint64_t)(uintptr_t)m, 16 * PS, 0, PS};
	struct pagein_session_config cfg = {.regions = &rg, .nregions = 1, .mem_fd = -1,
					    .bitmap_fd = -1, .source = src};
	int bad = 0;

	int probe = fresh_uffd(true, 0);
	bool shows = probe >= 0 && fdinfo_shows_init(probe);
	if (probe >= 0)
		close(probe);
	cfg.uffd = fresh_uffd(false, 0);
	TC_CHECK(cfg.uffd >= 0);
	if (shows)
		bad += refuse("no UFFDIO_API", &cfg, "UFFDIO_API was never done on it");
	else
		printf("  (this kernel's fdinfo does not show UFFDIO_API: case skipped)\n");
	close(cfg.uffd);

	cfg.uffd = fresh_uffd(true, UFFD_FEATURE_SIGBUS);
	TC_CHECK(cfg.uffd >= 0);
	bad += refuse("SIGBUS feature", &cfg, "UFFD_FEATURE_SIGBUS is enabled: faults raise SIGBUS in the VMM and never reach pagein");
	close(cfg.uffd);

	cfg.uffd = fresh_uffd(true, 0);
	TC_CHECK(cfg.uffd >= 0);
	cfg.reserved[2] = 1;
	bad += refuse("reserved word", &cfg, "pagein_session_config.reserved[2] is not zero");
	cfg.reserved[2] = 0;
	struct pagein_session *s = NULL;
	int r = pagein_session_new(&cfg, &s, &err);
	if (r < 0) {
		fprintf(stderr, "  features 0 (no EVENT_REMOVE) refused: %s\n", err.msg);
		bad++;
		close(cfg.uffd);
	} else {
		/* The library fills the whole of pagein_latency, its reserved
		 * words (room to grow, include/pagein.h) included. */
		struct pagein_latency lat;
		memset(&lat, 0xa5, sizeof(lat));
		pagein_session_latency(s, &lat);
		for (unsigned i = 0; i < PAGEIN_RESERVED_WORDS; i++)
			if (lat.reserved[i]) {
				fprintf(stderr, "  pagein_latency.reserved[%u] = %#llx, want 0\n", i,
					(unsigned long long)lat.reserved[i]);
				bad++;
			}
		pagein_session_free(s); /* closes the uffd */
	}
	munmap(m, 16 * PS);
	pagein_source_unref(src);
	unlink(snap);
	TC_CHECK(bad == 0);
	return TC_PASS;
}

/* Room to grow (include/pagein.h, "ABI"): the structures passed one at a
 * time end with reserved words (PAGEIN_RESERVED_WORDS of them, less those
 * later fields took), pagein_latency and pagein_event too; pagein_region
 * (an array's element) keeps its layout. */
#define ENDS_RESERVED(T)                                                                \
	_Static_assert(offsetof(struct T, reserved) + sizeof(((struct T *)0)->reserved) == \
			       sizeof(struct T),                                            \
		       #T " ends with its reserved words")
ENDS_RESERVED(pagein_session_config);
ENDS_RESERVED(pagein_prefetch);
ENDS_RESERVED(pagein_stats);
ENDS_RESERVED(pagein_latency);
ENDS_RESERVED(pagein_event);
ENDS_RESERVED(pagein_server_config);
ENDS_RESERVED(pagein_server_totals);
_Static_assert(sizeof(struct pagein_latency) ==
		       (PAGEIN_LATENCY_BUCKETS + 2 + PAGEIN_RESERVED_WORDS) * sizeof(uint64_t),
	       "pagein_latency: counts, sum, reserved words");
_Static_assert(sizeof(struct pagein_event) >= 40 + PAGEIN_RESERVED_WORDS * sizeof(uint64_t),
	       "pagein_event: reserved words after the fields");
_Static_assert(sizeof(struct pagein_region) == 4 * sizeof(uint64_t),
	       "pagein_region: an array element, no room to grow within .so.0");

static int missing_snapshot_is_named(enum tc_mem mem)
{
	struct pagein_source *src;
	struct pagein_error err = {{0}};
	TC_CHECK(pagein_source_open("/nonexistent/snap", &src, &err) == -ENOENT);
	TC_CHECK(strstr(err.msg, "snapshot /nonexistent/snap does not exist: check the path") != NULL);
	TC_CHECK(pagein_source_open("/tmp", &src, &err) == -EINVAL);
	TC_CHECK(strstr(err.msg, "not a regular file") != NULL);
	char empty[256];
	tc_tmp_path(empty, sizeof(empty), "empty");
	int fd = open(empty, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	close(fd);
	int r = pagein_source_open(empty, &src, &err);
	unlink(empty);
	TC_CHECK(r == -EINVAL && strstr(err.msg, "file is empty") != NULL);
	return TC_PASS;
}

int main(void)
{
	static const struct tc_case cases[] = {
		{"bad_regions_and_fds_are_refused", bad_regions_and_fds_are_refused, TC_ANON | TC_MEMFD},
		{"missing_snapshot_is_named", missing_snapshot_is_named, TC_ANON},
		{"uffd_features_are_checked", uffd_features_are_checked, TC_ANON},
	};
	return tc_run(cases, sizeof(cases) / sizeof(cases[0]));
}
