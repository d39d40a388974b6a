/* session.c - building a session from regions + fds, and tearing it down.
 * The rules that serve its faults live in resolver.c. */
#include "session.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "guard.h"
#include "pump.h"
#include "source.h"
#include "state.h"
#include "uffd.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

#define HUGE_2M (2ull << 20)
/* Firecracker has at most a few regions (a gap below 4 GiB, hotplug
 * slots); anything past this is a malformed handshake, not a VM. */
#define MAX_REGIONS 1024
/* 64 TiB: larger than any VM we expect, small enough that page-table
 * arithmetic cannot overflow. */
#define MAX_REGION_SIZE (1ull << 46)
/* Highest user address on x86-64 with 5-level paging. */
#define MAX_USER_ADDR (1ull << 57)

static int validate_region(const struct pagein_region *r, size_t i,
			   uint64_t source_size, struct pagein_error *err)
{
	unsigned long long ps = r->page_size;
	if (ps != 4096 && ps != HUGE_2M)
		return pagein_fail(err, EINVAL, "region %zu: page_size %llu is not 4096 or 2097152", i, ps);
	if (r->size == 0 || r->size > MAX_REGION_SIZE)
		return pagein_fail(err, EINVAL, "region %zu: size %llu is %s", i,
				   (unsigned long long)r->size, r->size ? "absurd (over 64 TiB)" : "zero");
	if (r->size % ps)
		return pagein_fail(err, EINVAL, "region %zu: size %llu is not a multiple of page_size %llu",
				   i, (unsigned long long)r->size, ps);
	if (r->host_addr % ps)
		return pagein_fail(err, EINVAL, "region %zu: base_host_virt_addr 0x%llx is not aligned to page_size %llu",
				   i, (unsigned long long)r->host_addr, ps);
	if (r->offset % ps)
		return pagein_fail(err, EINVAL, "region %zu: offset 0x%llx is not aligned to page_size %llu",
				   i, (unsigned long long)r->offset, ps);
	if (r->host_addr >= MAX_USER_ADDR || r->size > MAX_USER_ADDR - r->host_addr)
		return pagein_fail(err, EINVAL, "region %zu: base_host_virt_addr 0x%llx + size %llu is not a user address range",
				   i, (unsigned long long)r->host_addr, (unsigned long long)r->size);
	if (r->offset > source_size || r->size > source_size - r->offset)
		return pagein_fail(err, EINVAL, "region %zu: offset %llu + size %llu reaches past the end of the snapshot (%llu bytes)",
				   i, (unsigned long long)r->offset, (unsigned long long)r->size,
				   (unsigned long long)source_size);
	return 0;
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static int validate_regions(const struct pagein_session_config *cfg,
			    struct pagein_error *err)
{
	if (cfg->nregions == 0 || cfg->nregions > MAX_REGIONS)
		return pagein_fail(err, EINVAL, "%zu regions: expected 1 to %d",
				   cfg->nregions, MAX_REGIONS);
	uint64_t size = pagein_source_size(cfg->source);
	for (size_t i = 0; i < cfg->nregions; i++) {
		int r = validate_region(&cfg->regions[i], i, size, err);
		if (r < 0)
			return r;
	}
	/* O(n^2), and n is a handful. */
	for (size_t i = 0; i < cfg->nregions; i++)
		for (size_t j = i + 1; j < cfg->nregions; j++) {
			const struct pagein_region *a = &cfg->regions[i], *b = &cfg->regions[j];
			if (overlap(a->host_addr, a->size, b->host_addr, b->size))
				return pagein_fail(err, EINVAL, "regions %zu and %zu overlap in the VMM's address space (0x%llx and 0x%llx)",
						   i, j, (unsigned long long)a->host_addr,
						   (unsigned long long)b->host_addr);
			if (overlap(a->offset, a->size, b->offset, b->size))
				return pagein_fail(err, EINVAL, "regions %zu and %zu overlap in the snapshot (offsets %llu and %llu)",
						   i, j, (unsigned long long)a->offset,
						   (unsigned long long)b->offset);
		}
	return 0;
}

static uint64_t memory_end(const struct pagein_session_config *cfg)
{
	uint64_t end = 0;
	for (size_t i = 0; i < cfg->nregions; i++) {
		uint64_t e = cfg->regions[i].offset + cfg->regions[i].size;
		if (e > end)
			end = e;
	}
	return end;
}

/* Memory the VMM hands over must be memory: a memfd (shmem), hugetlbfs,
 * or a guest_memfd. Anything else (a pipe, a file on a filesystem whose
 * writes can block for ever) could park the thread that writes into it. */
static bool is_memory_fd(int fd, bool allow_hugetlb)
{
	struct statfs fs;
	if (fstatfs(fd, &fs) < 0)
		return false;
	if (fs.f_type == TMPFS_MAGIC || (allow_hugetlb && fs.f_type == HUGETLBFS_MAGIC))
		return true;
	char link[64];
	return fd_link_name(fd, link, sizeof(link)) &&
	       strstr(link, "anon_inode:") == link && strstr(link, "gmem");
}

static int check_mem_fd(const struct pagein_session_config *cfg,
			struct pagein_error *err)
{
	struct stat st;
	if (fstat(cfg->mem_fd, &st) < 0)
		return pagein_fail(err, errno, "guest memory fd %d: %s", cfg->mem_fd, strerror(errno));
	if (uffd_fd_is_userfaultfd(cfg->mem_fd))
		return pagein_fail(err, EINVAL, "guest memory fd %d is a userfaultfd (fds out of order?)", cfg->mem_fd);
	if (!S_ISREG(st.st_mode) || !is_memory_fd(cfg->mem_fd, true))
		return pagein_fail(err, EINVAL, "guest memory fd %d is not a memfd, hugetlbfs file or guest_memfd", cfg->mem_fd);
	uint64_t need = memory_end(cfg);
	if ((uint64_t)st.st_size < need)
		return pagein_fail(err, EINVAL, "guest memory fd is %llu bytes, regions need %llu",
				   (unsigned long long)st.st_size, (unsigned long long)need);
	return 0;
}

static int map_bitmap(struct pagein_session *s, const struct pagein_session_config *cfg,
		      struct pagein_error *err)
{
	struct stat st;
	if (fstat(cfg->bitmap_fd, &st) < 0)
		return pagein_fail(err, errno, "userfault bitmap fd %d: %s", cfg->bitmap_fd, strerror(errno));
	if (!S_ISREG(st.st_mode) || !is_memory_fd(cfg->bitmap_fd, false))
		return pagein_fail(err, EINVAL, "userfault bitmap fd %d is not a memfd", cfg->bitmap_fd);
	uint64_t min_ps = UINT64_MAX;
	for (size_t i = 0; i < cfg->nregions; i++)
		if (cfg->regions[i].page_size < min_ps)
			min_ps = cfg->regions[i].page_size;
	uint64_t bits = memory_end(cfg) / min_ps;
	uint64_t need = (bits + 63) / 64 * 8;
	if ((uint64_t)st.st_size < need)
		return pagein_fail(err, EINVAL, "userfault bitmap is %llu bytes, %llu pages need %llu",
				   (unsigned long long)st.st_size, (unsigned long long)bits,
				   (unsigned long long)need);
	void *m = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_SHARED, cfg->bitmap_fd, 0);
	if (m == MAP_FAILED)
		return pagein_fail(err, errno, "userfault bitmap: mmap: %s", strerror(errno));
	s->bitmap = m;
	s->bitmap_bytes = need;
	return 0;
}

/* hugetlbfs files cannot be written with pwrite(): map guest memory here
 * so that the stage-2 path can copy into it (see write_mem()). */
static int map_hugetlb_mem(struct pagein_session *s,
			   const struct pagein_session_config *cfg,
			   struct pagein_error *err)
{
	struct statfs fs;
	if (fstatfs(cfg->mem_fd, &fs) < 0 || fs.f_type != HUGETLBFS_MAGIC)
		return 0;
	uint64_t len = memory_end(cfg);
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, cfg->mem_fd, 0);
	if (m == MAP_FAILED)
		return pagein_fail(err, errno, "guest memory fd on hugetlbfs: mmap: %s", strerror(errno));
	s->mem_map = m;
	s->mem_map_bytes = len;
	return 0;
}

static int cmp_host(const void *a, const void *b)
{
	const struct region *x = a, *y = b;
	return x->r.host_addr < y->r.host_addr ? -1 : x->r.host_addr > y->r.host_addr;
}

/* preadv2(RWF_NOWAIT) on a userfaultfd (6.8+): a zero-length read is
 * refused with EOPNOTSUPP before the fd is looked at when the file does
 * not support it, and consumes nothing either way. */
static bool probe_read_nowait(int uffd)
{
	char b;
	struct iovec iov = {.iov_base = &b, .iov_len = 0};
	return preadv2(uffd, &iov, 1, -1, RWF_NOWAIT) >= 0 || errno != EOPNOTSUPP;
}

/* The uffd as UFFDIO_API left it (its fdinfo): done, and with nothing that
 * keeps faults from reaching us. EVENT_REMOVE is not required (Firecracker
 * before v1.12 asks for it only with a balloon), nor the MISSING_/MINOR_
 * SHMEM/HUGETLBFS bits: the kernel registers shmem and hugetlbfs without
 * them being asked for (they only advertise support). */
static int check_uffd_api(int uffd, struct pagein_error *err)
{
	uint64_t api, features;
	if (uffd_fdinfo_api(uffd, &api, &features) < 0)
		return 0; /* no fdinfo API line: nothing to check against */
	if (api != UFFD_API)
		return pagein_fail(err, EINVAL, "uffd %d: API 0x%llx, pagein speaks UFFD_API 0x%llx",
				   uffd, (unsigned long long)api, (unsigned long long)UFFD_API);
	if (uffd_fdinfo_shows_init() && !(features & UFFD_FDINFO_INITIALIZED))
		return pagein_fail(err, EINVAL,
				   "uffd %d: UFFDIO_API was never done on it (the VMM must do UFFDIO_API, then UFFDIO_REGISTER, before handing it over)",
				   uffd);
	if (features & UFFD_FEATURE_SIGBUS)
		return pagein_fail(err, EINVAL,
				   "uffd %d: UFFD_FEATURE_SIGBUS is enabled: faults raise SIGBUS in the VMM and never reach pagein (do UFFDIO_API without it)",
				   uffd);
	return 0;
}

/* Holes shorter than this stay ABSENT and are filled with zero pages as
 * before: a lone zero page in a raw file written sparse would otherwise
 * split every fault-around window and background run around it. */
#define HOLE_MIN_BYTES (2ull << 20)

static void mark_hole_run(struct pagein_session *s, struct region *rg,
			  uint64_t from, uint64_t to)
{
	if (to - from < HOLE_MIN_BYTES)
		return;
	/* Whole pages only. */
	uint64_t ps = rg->r.page_size, start = rg->r.offset;
	size_t lo = (size_t)((from - start + ps - 1) >> rg->page_shift);
	size_t hi = (size_t)((to - start) >> rg->page_shift);
	if (hi > lo)
		s->pages_hole += page_mark_holes(&rg->pages, lo, hi);
}

/* Pages in holes of the snapshot of at least HOLE_MIN_BYTES need nothing
 * from it: they start REMOVED, so that no fill ahead of the guest ever
 * touches them (a sparse 32 GiB file with a few MiB of data costs a few
 * MiB; virtio-mem memory that is not plugged is a hole of the memory file
 * too) and a fault there gets a zero page. */
static void mark_holes(struct pagein_session *s)
{
	if (!s->source->ops->hole)
		return;
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *rg = &s->regions[i];
		uint64_t start = rg->r.offset, end = rg->r.offset + rg->r.size;
		if (end > s->source->size)
			end = s->source->size;
		uint64_t hole_from = UINT64_MAX; /* start of the hole being walked */
		for (uint64_t pos = start; pos < end;) {
			uint64_t run = 0;
			bool hole = s->source->ops->hole(s->source, pos, end - pos, &run);
			if (run == 0)
				break;
			if (hole && hole_from == UINT64_MAX)
				hole_from = pos;
			else if (!hole && hole_from != UINT64_MAX) {
				mark_hole_run(s, rg, hole_from, pos);
				hole_from = UINT64_MAX;
			}
			pos += run;
		}
		if (hole_from != UINT64_MAX)
			mark_hole_run(s, rg, hole_from, end);
	}
}

int pagein_session_new(const struct pagein_session_config *cfg,
		       struct pagein_session **out, struct pagein_error *err)
{
	return session_new_state(cfg, NULL, out, err);
}

int session_new_state(const struct pagein_session_config *cfg, struct kstate *kst,
		      struct pagein_session **out, struct pagein_error *err)
{
	int rr = reserved_check(cfg->reserved, RESERVED_WORDS_OF(cfg), "pagein_session_config", err);
	if (rr < 0)
		return rr;
	if (!cfg->source)
		return pagein_fail(err, EINVAL, "no snapshot source");
	int r = validate_regions(cfg, err);
	if (r < 0)
		return r;
	if (!uffd_fd_is_userfaultfd(cfg->uffd))
		return pagein_fail(err, EINVAL, "fd %d is not a userfaultfd", cfg->uffd);
	if ((r = check_uffd_api(cfg->uffd, err)) < 0)
		return r;
	if (cfg->bitmap_fd >= 0 && cfg->mem_fd < 0)
		return pagein_fail(err, EINVAL, "a userfault bitmap needs a guest memory fd");
	if (cfg->mem_fd >= 0 && (r = check_mem_fd(cfg, err)) < 0)
		return r;

	if ((r = guard_init()) < 0)
		return pagein_fail(err, -r, "installing the SIGBUS guard: %s", strerror(-r));

	struct pagein_session *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->n = kst ? &kst->hdr->counters : &s->own_counters;
	s->progress = kst ? &kst->hdr->progress : &s->own_progress;
	snprintf(s->name, sizeof(s->name), "%s", cfg->name ? cfg->name : "vm");
	pthread_mutex_init(&s->record_lock, NULL);
	{
		/* Error-checking: session_quiesce() may be called by a thread
		 * that holds the pump role itself (it then need not wait). */
		pthread_mutexattr_t ma;
		pthread_mutexattr_init(&ma);
		pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
		pthread_mutex_init(&s->reader_lock, &ma);
		pthread_mutexattr_destroy(&ma);
	}
	pthread_mutex_init(&s->wait_lock, NULL);
	pthread_mutex_init(&s->fail_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_cond_init(&s->wait_cond, &ca);
	pthread_condattr_destroy(&ca);
	s->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->remove_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	s->uffd = s->mem_fd = s->bitmap_fd = -1;
	if (s->event_fd < 0) {
		r = pagein_fail(err, errno, "eventfd: %s", strerror(errno));
		goto fail;
	}
	s->nregions = cfg->nregions;
	s->regions = calloc(cfg->nregions, sizeof(*s->regions));
	if (!s->regions) {
		r = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < cfg->nregions; i++) {
		struct region *rg = &s->regions[i];
		rg->r = cfg->regions[i];
		rg->page_shift = (uint64_t)__builtin_ctzll(rg->r.page_size);
		if (kst) /* keeper: the table lives in the state memfd */
			page_table_init_at(&rg->pages, (size_t)(rg->r.size >> rg->page_shift),
					   kstate_table(kst, i));
		else if (page_table_init(&rg->pages, (size_t)(rg->r.size >> rg->page_shift)) < 0) {
			r = -ENOMEM;
			goto fail;
		}
		if (rg->r.page_size == HUGE_2M && !s->zero_huge &&
		    !(s->zero_huge = calloc(1, HUGE_2M))) {
			r = -ENOMEM;
			goto fail;
		}
	}
	qsort(s->regions, s->nregions, sizeof(*s->regions), cmp_host);
	if (cfg->bitmap_fd >= 0 && (r = map_bitmap(s, cfg, err)) < 0)
		goto fail;
	if (cfg->mem_fd >= 0 && (r = map_hugetlb_mem(s, cfg, err)) < 0)
		goto fail;
	for (size_t i = 0; i < s->nregions; i++) {
		s->regions[i].first_global = (size_t)s->pages_total;
		s->pages_total += s->regions[i].pages.npages;
		s->regions[i].pages.progress = s->progress;
	}
	s->progress->total = s->pages_total;
	s->source = pagein_source_ref(cfg->source);
	s->on_corrupt = cfg->on_corrupt;
	unsigned fa = cfg->fault_around;
	bool fa_auto = fa == PAGEIN_FAULT_AROUND_AUTO;
	if (fa_auto || fa > PAGEIN_FAULT_AROUND_MAX)
		fa = fa_auto ? 0 : PAGEIN_FAULT_AROUND_MAX;
	while (fa & (fa - 1)) /* round down to a power of two */
		fa &= fa - 1;
	s->record = cfg->record;
	/* Recording is exact: a page filled around a fault never faults, so
	 * its first touch could not be recorded. */
	if (s->record)
		fa = 0, fa_auto = false;
	fw_init(&s->fw, fa, fa_auto, s->pages_total);
	s->on_event = cfg->on_event;
	s->event_opaque = cfg->event_opaque;
	if (!s->progress->start_ns) /* an adopted session keeps its start */
		s->progress->start_ns = now_ns();
	mark_holes(s);
	s->uffd = cfg->uffd;
	s->park = source_park_attach(s->source, s->uffd);
	s->read_nowait = probe_read_nowait(cfg->uffd);
	s->mem_fd = cfg->mem_fd;
	s->bitmap_fd = cfg->bitmap_fd;
	s->kst = kst;
	*out = s;
	return 0;
fail:
	pagein_session_free(s);
	return r;
}

void pagein_session_free(struct pagein_session *s)
{
	if (!s)
		return;
	pagein_session_stop(s);
	prefetch_stop(s);
	source_park_detach(s->park); /* its parked faults: session_drain wakes them */
	s->park = NULL;
	if (s->uffd >= 0)
		session_drain(s);
	for (size_t i = 0; s->regions && i < s->nregions; i++)
		page_table_fini(&s->regions[i].pages);
	free(s->regions);
	if (s->bitmap)
		munmap((void *)s->bitmap, s->bitmap_bytes);
	if (s->mem_map)
		munmap(s->mem_map, s->mem_map_bytes);
	if (s->uffd >= 0)
		close(s->uffd);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	if (s->bitmap_fd >= 0)
		close(s->bitmap_fd);
	if (s->source)
		pagein_source_unref(s->source);
	free(s->zero_huge);
	free(s->queue.msg);
	free(s->queue.read_ns);
	free(s->recorded);
	free(s->touched);
	if (s->event_fd >= 0)
		close(s->event_fd);
	pthread_mutex_destroy(&s->record_lock);
	pthread_mutex_destroy(&s->reader_lock);
	pthread_mutex_destroy(&s->wait_lock);
	pthread_mutex_destroy(&s->fail_lock);
	pthread_cond_destroy(&s->wait_cond);
	pthread_rwlock_destroy(&s->remove_lock);
	free(s);
}

const char *pagein_session_name(const struct pagein_session *s)
{
	return s->name;
}

int pagein_session_uffd(const struct pagein_session *s)
{
	return s->uffd;
}

struct region *session_region_by_addr(struct pagein_session *s, uint64_t addr)
{
	size_t lo = 0, hi = s->nregions;
	while (lo < hi) { /* regions are sorted by host address */
		size_t mid = lo + (hi - lo) / 2;
		struct region *rg = &s->regions[mid];
		if (addr < rg->r.host_addr)
			hi = mid;
		else if (addr - rg->r.host_addr >= rg->r.size)
			lo = mid + 1;
		else
			return rg;
	}
	return NULL;
}

struct region *session_region_by_offset(struct pagein_session *s, uint64_t off)
{
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *rg = &s->regions[i];
		if (off >= rg->r.offset && off - rg->r.offset < rg->r.size)
			return rg;
	}
	return NULL;
}

int session_clear_userfault_bit(struct pagein_session *s, uint64_t offset,
				uint64_t page_size)
{
	if (!s->bitmap)
		return 0;
	uint64_t bit = offset / page_size;
	/* Release: the page's content is visible before KVM sees the bit. The
	 * VMM owns the memfd and may truncate it: guarded, and its session
	 * alone ends. */
	if (guarded_and64(&s->bitmap[bit / 64], ~(1ull << (bit % 64))) < 0)
		return session_fail(s, -EFAULT,
				    "the userfault bitmap was truncated by the VMM (page at offset 0x%llx)",
				    (unsigned long long)offset);
	return 0;
}

int session_fail(struct pagein_session *s, int r, const char *fmt, ...)
{
	pthread_mutex_lock(&s->fail_lock);
	int prev = 0;
	if (atomic_compare_exchange_strong(&s->failed, &prev, r)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(s->fail_msg, sizeof(s->fail_msg), fmt, ap);
		va_end(ap);
		if (!s->fail_msg[0])
			snprintf(s->fail_msg, sizeof(s->fail_msg), "%s", strerror(-r));
		uint64_t one = 1;
		ssize_t n = write(s->event_fd, &one, sizeof(one));
		(void)n;
	}
	pthread_mutex_unlock(&s->fail_lock);
	session_signal(s);
	return r;
}

int pagein_session_error(const struct pagein_session *cs, struct pagein_error *err)
{
	struct pagein_session *s = (struct pagein_session *)cs;
	pthread_mutex_lock(&s->fail_lock);
	int r = atomic_load(&s->failed);
	if (r && err)
		snprintf(err->msg, sizeof(err->msg), "%s", s->fail_msg);
	pthread_mutex_unlock(&s->fail_lock);
	return r;
}

int pagein_session_event_fd(const struct pagein_session *s)
{
	return s->event_fd;
}

void pagein_session_stop(struct pagein_session *s)
{
	atomic_store(&s->stopping, true);
	session_signal(s);
}

void session_quiesce(struct pagein_session *s)
{
	if (pthread_mutex_lock(&s->reader_lock) == 0)
		pthread_mutex_unlock(&s->reader_lock);
}

void session_event(struct pagein_session *s, enum pagein_event_kind kind,
		   uint64_t offset, uint64_t pages, uint64_t chunk, int error)
{
	if (!s->on_event)
		return;
	struct pagein_event ev = {
		.kind = kind, .offset = offset, .pages = pages, .chunk = chunk, .error = error,
	};
	s->on_event(s->event_opaque, &ev);
}

void session_record_touch(struct pagein_session *s, const struct region *rg,
			  size_t idx, enum page_state prev)
{
	if (!s->record)
		return;
	if (prev != PAGE_ABSENT && prev != PAGE_REMOVED)
		return;
	if (prev == PAGE_REMOVED) {
		/* A hole of the snapshot starts REMOVED (mark_holes): its first
		 * touch is recorded; a page the guest discarded is not. */
		uint64_t run = 0, ps = rg->r.page_size, off = page_offset(rg, idx);
		if (!s->source->ops->hole || off >= s->source->size ||
		    !s->source->ops->hole(s->source, off, ps, &run) || run < ps)
			return;
	}
	pthread_mutex_lock(&s->record_lock);
	/* Each page once: a hole page touched, discarded and touched again
	 * comes back here from REMOVED. */
	size_t g = rg->first_global + idx;
	if (!s->touched && !(s->touched = calloc(s->pages_total / 8 + 1, 1))) {
		pthread_mutex_unlock(&s->record_lock);
		return;
	}
	if (s->touched[g / 8] & (1u << (g % 8))) {
		pthread_mutex_unlock(&s->record_lock);
		return;
	}
	s->touched[g / 8] |= (uint8_t)(1u << (g % 8));
	if (s->nrecorded == s->record_cap) {
		size_t cap = s->record_cap ? s->record_cap * 2 : 4096;
		uint64_t *n = realloc(s->recorded, cap * sizeof(*n));
		if (!n) {
			pthread_mutex_unlock(&s->record_lock);
			return; /* a shorter working set, not a wrong one */
		}
		s->recorded = n;
		s->record_cap = cap;
	}
	s->recorded[s->nrecorded++] = page_offset(rg, idx);
	pthread_mutex_unlock(&s->record_lock);
}

void pagein_session_stats(const struct pagein_session *s, struct pagein_stats *o)
{
	const struct session_counters *n = s->n;
	memset(o->reserved, 0, sizeof(o->reserved));
#define LOAD(f) o->f = atomic_load_explicit(&n->f, memory_order_relaxed)
	LOAD(faults_missing);
	LOAD(faults_minor);
	LOAD(requests);
	LOAD(pages_copied);
	LOAD(pages_zeroed);
	LOAD(pages_continued);
	LOAD(pages_written);
	LOAD(wakes);
	LOAD(eexist);
	LOAD(eagain);
	LOAD(removes);
	LOAD(pages_removed);
	LOAD(bytes_read);
	LOAD(pages_poisoned);
	LOAD(filled_fault);
	LOAD(filled_fault_around);
	LOAD(filled_prefetch);
	LOAD(filled_background);
	LOAD(filled_request);
	LOAD(faults_on_filling);
#undef LOAD
	o->pages_hole = s->pages_hole;
	o->pages_total = s->pages_total;
	o->elapsed_ns = now_ns() - s->progress->start_ns;
	o->complete_ns = atomic_load(&s->progress->complete_ns);
}

int pagein_stats_format(const struct pagein_stats *st, char *buf, size_t len)
{
	double secs = (double)st->elapsed_ns / 1e9;
	uint64_t filled = st->filled_fault + st->filled_fault_around +
			  st->filled_prefetch + st->filled_background + st->filled_request;
	/* The throughput says what it is over: the time to complete, or the
	 * time so far while not complete. */
	char complete[96];
	if (st->complete_ns)
		snprintf(complete, sizeof(complete), "complete in %.3f s at %.1f MB/s",
			 (double)st->complete_ns / 1e9, pagein_stats_throughput(st));
	else
		snprintf(complete, sizeof(complete), "not complete, %.1f MB/s so far",
			 pagein_stats_throughput(st));
	int n = snprintf(buf, len,
			 "faults %" PRIu64 " missing/%" PRIu64 " minor, requests %" PRIu64
			 "; %" PRIu64 " fills for %" PRIu64 " pages (fault %" PRIu64
			 ", fault-around %" PRIu64 ", prefetch %" PRIu64 ", background %" PRIu64
			 ", request %" PRIu64 "), faults avoided %" PRIu64
			 "; ops copied %" PRIu64 " zeroed %" PRIu64 " continued %" PRIu64
			 " written %" PRIu64 " poisoned %" PRIu64 "; removes %" PRIu64
			 " (%" PRIu64 " pages), wakes %" PRIu64 ", eexist %" PRIu64
			 ", eagain %" PRIu64 "; caught up with a filler %" PRIu64
			 "; holes %" PRIu64 " pages; read %.1f MiB from the snapshot over %.3f s; %s",
			 st->faults_missing, st->faults_minor, st->requests, filled,
			 st->pages_total, st->filled_fault, st->filled_fault_around,
			 st->filled_prefetch, st->filled_background, st->filled_request,
			 st->filled_fault_around + st->filled_prefetch + st->filled_background,
			 st->pages_copied, st->pages_zeroed, st->pages_continued,
			 st->pages_written, st->pages_poisoned, st->removes,
			 st->pages_removed, st->wakes, st->eexist, st->eagain,
			 st->faults_on_filling, st->pages_hole,
			 (double)st->bytes_read / (1 << 20), secs, complete);
	return n < 0 ? -EINVAL : 0;
}

double pagein_stats_throughput(const struct pagein_stats *st)
{
	uint64_t ns = st->complete_ns ? st->complete_ns : st->elapsed_ns;
	return ns ? (double)st->bytes_read * 1e3 / (double)ns : 0.0;
}

int pagein_session_recorded(struct pagein_session *s, uint64_t **offsets,
			    size_t *count_out)
{
	pthread_mutex_lock(&s->record_lock);
	size_t n = s->nrecorded;
	uint64_t *copy = malloc((n ? n : 1) * sizeof(*copy));
	if (copy && n)
		memcpy(copy, s->recorded, n * sizeof(*copy));
	pthread_mutex_unlock(&s->record_lock);
	if (!copy)
		return -ENOMEM;
	*offsets = copy;
	*count_out = n;
	return 0;
}

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int pagein_session_run(struct pagein_session *s, int stop_fd,
		       struct pagein_error *err)
{
	for (;;) {
		struct pollfd p[3] = {
			{.fd = s->uffd, .events = POLLIN},
			{.fd = s->event_fd, .events = POLLIN},
			{.fd = stop_fd, .events = POLLIN},
		};
		if (poll(p, stop_fd >= 0 ? 3 : 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return pagein_fail(err, errno, "poll: %s", strerror(errno));
		}
		if (p[0].revents & POLLIN) {
			int r = pagein_session_handle_uffd(s, err);
			if (r < 0)
				return r;
		}
		if (p[0].revents & (POLLERR | POLLNVAL))
			return pagein_fail(err, EBADF, "uffd reported an error");
		if (p[1].revents)
			return pagein_session_error(s, err);
		if (stop_fd >= 0 && p[2].revents)
			return 0;
	}
}
