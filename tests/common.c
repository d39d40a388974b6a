/* common.c - helpers for the C integration tests (see common.h). */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uffd_compat.h"
#include "session.h"
#include "snapshot_format.h"
#include <sys/eventfd.h>

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

bool tc_page_is_zero(uint64_t i)
{
	return i % 4 == 3;
}

void tc_page(uint64_t seed, uint64_t i, void *buf)
{
	uint64_t *w = buf;
	if (tc_page_is_zero(i)) {
		memset(buf, 0, PS);
		return;
	}
	uint64_t x = seed * 0x100000001b3ull ^ i;
	for (size_t k = 0; k < PS / 8; k++)
		w[k] = splitmix(&x);
}

int tc_write_snapshot_zeros(const char *path, uint64_t npages, uint64_t seed,
			    uint64_t zero_first, uint64_t zero_count)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	int r = 0;
	if (ftruncate(fd, (off_t)(npages * PS)) < 0)
		r = -errno;
	unsigned char page[PS];
	for (uint64_t i = 0; i < npages && r == 0; i++) {
		if (tc_page_is_zero(i))
			continue; /* a 4 KiB hole: under 2 MiB, served as a zero page */
		if (i >= zero_first && i - zero_first < zero_count)
			/* Zeros written out, not a hole: a hole of 2 MiB or more
			 * starts REMOVED (tests/sh/holes.sh tests those). */
			memset(page, 0, PS);
		else
			tc_page(seed, i, page);
		if (pwrite(fd, page, PS, (off_t)(i * PS)) != (ssize_t)PS)
			r = -EIO;
	}
	close(fd);
	return r;
}

int tc_write_snapshot(const char *path, uint64_t npages, uint64_t seed)
{
	return tc_write_snapshot_zeros(path, npages, seed, 0, 0);
}

void tc_tmp_path(char *buf, size_t len, const char *name)
{
	const char *dir = getenv("TMPDIR");
	snprintf(buf, len, "%s/pagein-test-%d-%s", dir && *dir ? dir : "/tmp",
		 (int)getpid(), name);
}

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26) /* log2(2 MiB) << MFD_HUGE_SHIFT */
#endif
#define HUGE_2M (2ull << 20)

const char *tc_mem_name(enum tc_mem mem)
{
	switch (mem) {
	case TC_ANON:
		return "anon";
	case TC_MEMFD:
		return "memfd";
	case TC_MEMFD_PRIVATE:
		return "memfd-private";
	case TC_HUGETLB:
		return "hugetlb";
	}
	return "?";
}

uint64_t tc_mem_page_size(enum tc_mem mem)
{
	return mem == TC_HUGETLB ? HUGE_2M : PS;
}

static uint64_t bitmap_bytes(const struct tc_guest *g)
{
	return (g->size / g->page_size + 63) / 64 * 8;
}

/* Records why the guest cannot be built here, prints it, frees the rest. */
static int guest_skip(struct tc_guest *g, const char *what, int e)
{
	snprintf(g->skip_reason, sizeof(g->skip_reason), "%s: %s", what, strerror(e));
	printf("  skip reason: %s\n", g->skip_reason);
	tc_guest_free(g);
	return TC_SKIP;
}

static int guest_fail(struct tc_guest *g, const char *what)
{
	printf("  %s: %s\n", what, strerror(errno));
	tc_guest_free(g);
	return TC_FAIL;
}

int tc_guest_new(struct tc_guest *g, enum tc_mem mem, uint64_t size,
		 unsigned reg, bool bitmap)
{
	memset(g, 0, sizeof(*g));
	g->mem = mem;
	g->size = size;
	g->page_size = tc_mem_page_size(mem);
	g->uffd = g->memfd = g->bitmap_fd = -1;
	if (size == 0 || size % g->page_size) {
		printf("  guest size %llu is not a multiple of %llu\n",
		       (unsigned long long)size, (unsigned long long)g->page_size);
		return TC_FAIL;
	}
	g->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (g->uffd < 0)
		return guest_skip(g, "userfaultfd", errno);
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
	if (mem == TC_MEMFD || mem == TC_MEMFD_PRIVATE)
		api.features |= UFFD_FEATURE_MISSING_SHMEM |
				((reg & TC_REG_MINOR) ? UFFD_FEATURE_MINOR_SHMEM : 0);
	if (mem == TC_HUGETLB)
		api.features |= UFFD_FEATURE_MISSING_HUGETLBFS |
				((reg & TC_REG_MINOR) ? UFFD_FEATURE_MINOR_HUGETLBFS : 0);
	if (ioctl(g->uffd, UFFDIO_API, &api) < 0) {
		char what[64];
		snprintf(what, sizeof(what), "UFFDIO_API features 0x%llx",
			 (unsigned long long)api.features);
		return guest_skip(g, what, errno);
	}
	void *m;
	if (mem == TC_ANON) {
		m = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	} else {
		unsigned flags = MFD_CLOEXEC | (mem == TC_HUGETLB ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
		g->memfd = memfd_create("guest", flags);
		if (g->memfd < 0 && mem == TC_HUGETLB)
			return guest_skip(g, "memfd_create(MFD_HUGETLB | MFD_HUGE_2MB)", errno);
		if (g->memfd < 0 || ftruncate(g->memfd, (off_t)size) < 0)
			return guest_fail(g, "memfd");
		/* hugetlbfs reserves the huge pages here: an empty pool fails
		 * the mmap (ENOMEM) instead of a fault later (SIGBUS). */
		m = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 mem == TC_MEMFD_PRIVATE ? MAP_PRIVATE : MAP_SHARED, g->memfd, 0);
		if (m == MAP_FAILED && mem == TC_HUGETLB && errno == ENOMEM) {
			char what[80];
			snprintf(what, sizeof(what), "no %llu free 2 MiB huge pages (mmap)",
				 (unsigned long long)(size / HUGE_2M));
			return guest_skip(g, what, errno);
		}
	}
	if (m == MAP_FAILED)
		return guest_fail(g, "mmap guest memory");
	g->base = m;
	struct uffdio_register rg = {
		.range = {.start = (uint64_t)(uintptr_t)m, .len = size},
		.mode = ((reg & TC_REG_MISSING) ? UFFDIO_REGISTER_MODE_MISSING : 0) |
			((reg & TC_REG_MINOR) ? UFFDIO_REGISTER_MODE_MINOR : 0),
	};
	if (ioctl(g->uffd, UFFDIO_REGISTER, &rg) < 0)
		return guest_fail(g, "register");
	if (bitmap) {
		g->bitmap_fd = memfd_create("bitmap", MFD_CLOEXEC);
		if (g->bitmap_fd < 0 || ftruncate(g->bitmap_fd, (off_t)bitmap_bytes(g)) < 0)
			return guest_fail(g, "bitmap memfd");
		void *b = mmap(NULL, bitmap_bytes(g), PROT_READ | PROT_WRITE, MAP_SHARED,
			       g->bitmap_fd, 0);
		if (b == MAP_FAILED)
			return guest_fail(g, "mmap bitmap");
		g->bitmap = b;
		memset(g->bitmap, 0xff, bitmap_bytes(g));
	}
	return TC_PASS;
}

void tc_guest_free(struct tc_guest *g)
{
	if (g->base)
		munmap(g->base, g->size);
	if (g->bitmap)
		munmap(g->bitmap, bitmap_bytes(g));
	/* Sessions get dup()s, so these are still ours. */
	if (g->uffd >= 0)
		close(g->uffd);
	if (g->memfd >= 0)
		close(g->memfd);
	if (g->bitmap_fd >= 0)
		close(g->bitmap_fd);
	g->base = NULL;
	g->bitmap = NULL;
	g->uffd = g->memfd = g->bitmap_fd = -1;
}

bool tc_check_page(const void *got, const void *want, uint64_t page)
{
	const unsigned char *a = got, *b = want;
	for (size_t i = 0; i < PS; i++)
		if (a[i] != b[i]) {
			fprintf(stderr, "  page %llu byte %zu: got 0x%02x want 0x%02x\n",
				(unsigned long long)page, i, a[i], b[i]);
			return false;
		}
	return true;
}

int tc_run(const struct tc_case *cases, size_t n)
{
	int failed = 0, passed = 0, skipped = 0;
	for (size_t i = 0; i < n; i++) {
		for (int mem = TC_ANON; mem <= TC_HUGETLB; mem <<= 1) {
			if (!(cases[i].mems & (unsigned)mem))
				continue;
			const char *mname = tc_mem_name((enum tc_mem)mem);
			printf("case %s [%s]\n", cases[i].name, mname);
			fflush(stdout);
			int r = cases[i].fn((enum tc_mem)mem);
			printf("%s %s [%s]\n", r == TC_PASS ? "ok" : r == TC_SKIP ? "skip" : "FAIL",
			       cases[i].name, mname);
			fflush(stdout);
			if (r == TC_PASS)
				passed++;
			else if (r == TC_SKIP)
				skipped++;
			else
				failed++;
		}
	}
	printf("cases: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
	if (failed)
		return TC_FAIL;
	return passed ? TC_PASS : TC_SKIP;
}

/* ---- rig ---------------------------------------------------------------- */


void *rig_run_session(void *arg)
{
	struct rig *r = arg;
	struct pagein_error err = {{0}};
	r->run_result = pagein_session_run(r->s, r->stop, &err);
	memcpy(r->err, err.msg, sizeof(r->err));
	return NULL;
}

static int read_raw(void *opaque, uint64_t off, void *buf, size_t len,
		    struct pagein_error *err)
{
	return pread(*(int *)opaque, buf, len, (off_t)off) == (ssize_t)len ? 0 : -EIO;
}

/* Rewrites the raw snapshot at path in the pagein format, in place. */
static int rig_convert(const char *path, uint64_t npages, uint64_t chunk)
{
	char tmp[300];
	snprintf(tmp, sizeof(tmp), "%s.pgn", path);
	int in = open(path, O_RDONLY), out = open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
	struct snapshot_write_opts o = {
		.image_size = npages * PS, .chunk_size = chunk, .level = 1, .threads = 1,
		.read = read_raw, .read_opaque = &in,
	};
	struct snapshot_write_stats st;
	struct pagein_error err = {{0}};
	int r = in >= 0 && out >= 0 ? snapshot_write(out, &o, &st, &err) : -EIO;
	if (r < 0)
		fprintf(stderr, "  convert: %s\n", err.msg);
	close(in);
	close(out);
	return r < 0 ? r : rename(tmp, path);
}

/* Undoes a partial rig_start_opts (no session thread yet). */
static int rig_abort(struct rig *r, int result)
{
	if (r->s)
		pagein_session_free(r->s);
	if (r->src)
		pagein_source_unref(r->src);
	if (r->snap[0])
		unlink(r->snap);
	tc_guest_free(&r->g);
	r->s = NULL;
	r->src = NULL;
	return result;
}

int rig_start_opts(struct rig *r, enum tc_mem mem, uint64_t npages,
		   const struct rig_opts *o)
{
	unsigned reg = o->reg;
	bool stage2 = o->stage2;
	memset(r, 0, sizeof(*r));
	r->npages = npages;
	r->seed = 42;
	r->zero_first = o->zero_first;
	r->zero_count = o->zero_count;
	int t = tc_guest_new(&r->g, mem, npages * PS, reg, stage2);
	if (t != TC_PASS)
		return t;
	tc_tmp_path(r->snap, sizeof(r->snap), "snap");
	if (tc_write_snapshot_zeros(r->snap, npages, r->seed, o->zero_first, o->zero_count) < 0)
		return rig_abort(r, TC_FAIL);
	struct pagein_error err = {{0}};
	if (o->pagein_chunk && rig_convert(r->snap, npages, o->pagein_chunk) < 0)
		return rig_abort(r, TC_FAIL);
	if (pagein_source_open(r->snap, &r->src, &err) < 0) {
		fprintf(stderr, "  source: %s\n", err.msg);
		return rig_abort(r, TC_FAIL);
	}
	struct pagein_region region = {
		.host_addr = (uint64_t)(uintptr_t)r->g.base,
		.size = npages * PS,
		.offset = 0,
		.page_size = r->g.page_size,
	};
	struct pagein_session_config cfg = {
		.regions = &region,
		.nregions = 1,
		.uffd = dup(r->g.uffd),
		.mem_fd = stage2 ? dup(r->g.memfd) : -1,
		.bitmap_fd = stage2 ? dup(r->g.bitmap_fd) : -1,
		.source = r->src,
		.name = "test",
		.fault_around = o->fault_around,
		.record = o->record,
		.on_corrupt = o->on_corrupt,
	};
	if (pagein_session_new(&cfg, &r->s, &err) < 0) {
		fprintf(stderr, "  session: %s\n", err.msg);
		close(cfg.uffd); /* on failure they are still ours */
		if (cfg.mem_fd >= 0)
			close(cfg.mem_fd);
		if (cfg.bitmap_fd >= 0)
			close(cfg.bitmap_fd);
		return rig_abort(r, TC_FAIL);
	}
	r->s->test_after_read = o->hook;
	if (o->nws || o->populate != PAGEIN_POPULATE_NONE) {
		struct pagein_prefetch pf = {.offsets = o->ws, .count = o->nws, .populate = o->populate};
		if (pagein_session_prefetch(r->s, &pf, &err) < 0) {
			fprintf(stderr, "  prefetch: %s\n", err.msg);
			return rig_abort(r, TC_FAIL);
		}
	}
	r->s->test_arg = r;
	r->stop = eventfd(0, EFD_CLOEXEC);
	r->runner = !o->no_runner;
	if (r->runner)
		pthread_create(&r->th, NULL, rig_run_session, r);
	return TC_PASS;
}

int rig_start_hooked(struct rig *r, enum tc_mem mem, uint64_t npages,
		     unsigned reg, bool stage2,
		     void (*hook)(struct pagein_session *, void *))
{
	struct rig_opts o = {.reg = reg, .stage2 = stage2, .hook = hook};
	return rig_start_opts(r, mem, npages, &o);
}

int rig_start(struct rig *r, enum tc_mem mem, uint64_t npages, unsigned reg,
	      bool stage2)
{
	return rig_start_hooked(r, mem, npages, reg, stage2, NULL);
}

void rig_stop(struct rig *r, struct pagein_stats *st)
{
	uint64_t one = 1;
	if (write(r->stop, &one, sizeof(one)) < 0)
		perror("eventfd");
	if (r->runner)
		pthread_join(r->th, NULL);
	if (r->balloon_started)
		pthread_join(r->balloon, NULL);
	if (st)
		pagein_session_stats(r->s, st);
	pagein_session_free(r->s);
	pagein_source_unref(r->src);
	close(r->stop);
	unlink(r->snap);
	tc_guest_free(&r->g);
}

void rig_page(const struct rig *r, uint64_t i, void *buf)
{
	if (i >= r->zero_first && i - r->zero_first < r->zero_count)
		memset(buf, 0, PS);
	else
		tc_page(r->seed, i, buf);
}

bool rig_check_page(struct rig *r, uint64_t i)
{
	unsigned char want[PS];
	rig_page(r, i, want);
	return tc_check_page(r->g.base + i * PS, want, i);
}

bool rig_bit_set(struct rig *r, uint64_t i)
{
	return __atomic_load_n(&r->g.bitmap[i / 64], __ATOMIC_ACQUIRE) & (1ull << (i % 64));
}


bool rig_wait_stats(struct rig *r, bool (*cond)(const struct pagein_stats *, void *),
		    void *arg)
{
	for (int i = 0; i < 30000; i++) {
		struct pagein_stats st;
		pagein_session_stats(r->s, &st);
		if (cond(&st, arg))
			return true;
		usleep(1000);
	}
	return false;
}
