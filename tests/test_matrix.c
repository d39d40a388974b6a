/* test_matrix.c - every memory type x registration mode x protocol, in the
 * style of the kernel's selftests mm/uffd-unit-tests.c: one scenario run
 * against each combination that makes sense, each gated on the features
 * UFFDIO_API reports and on what this kernel and machine allow, and skipped
 * with its reason printed otherwise. One line per combination:
 *
 *   anon/missing/mainline: ok
 *   hugetlb/minor/secret-hiding: skip: reserved 0 of 8 2 MiB huge pages
 *
 * Exit 1 if any combination failed, 77 if every one was skipped, else 0.
 * `test_matrix FILTER` runs only the combinations whose name contains it.
 *
 * The axes:
 *   memory        anon (MAP_PRIVATE|MAP_ANONYMOUS), memfd-shared (MAP_SHARED),
 *                 memfd-private (a memfd mapped MAP_PRIVATE: its page cache
 *                 plays a memory file mapped privately), hugetlb (a 2 MiB
 *                 hugetlbfs memfd, MAP_SHARED; huge pages reserved here)
 *   registration  MISSING, MINOR, MISSING|MINOR; MINOR only where the kernel
 *                 has minor faults (shmem, hugetlbfs), so anon is MISSING only
 *   protocol      mainline (the session gets the uffd) and secret-hiding (it
 *                 also gets the memory fd and a userfault bitmap with every
 *                 bit set); secret hiding stands in for guest_memfd, which is
 *                 always shared: only memfd and hugetlb
 *
 * The scenario (run_combo), for every combination:
 *  1. the page cache is prepared as the VMM would have it (page plans below);
 *  2. secret hiding: stage-2 requests for chosen pages before any touch,
 *     with the error paths (offset outside guest memory: -EINVAL; mainline:
 *     -ENOTSUP) and a request for a page already in (writes nothing);
 *  3. two threads touch every 4 KiB page through the registered mapping, in
 *     opposite directions, and compare every byte with the snapshot (zero
 *     pages and a whole zero 2 MiB range included); with secret hiding they
 *     send a stage-2 request first for the pages planned so, as a vCPU whose
 *     userfault bit is set would, and check that its bit is then clear;
 *  4. counters: every page was filled by exactly the path its plan says,
 *     exactly once; the recorded first-touch order names every page once;
 *     every userfault bit is clear;
 *  5. a range is discarded (MADV_DONTNEED on private memory, MADV_REMOVE on
 *     shared memory, as a balloon does) and must read zeros, never snapshot
 *     data; with secret hiding a stage-2 request for a punched page first
 *     must put zeros in the page cache and say "zero" in its reply;
 *  6. the guest writes a few pages (one in the discarded range): stage-2
 *     requests for them, and on shared memory MADV_DONTNEED (which keeps the
 *     page cache) and a touch again (a MINOR fault where registered), must
 *     leave the guest's bytes,
 *     and pagein must not have copied or written a single snapshot byte
 *     after step 3;
 *  7. every byte of guest memory is checked once more.
 *
 * Page plans: what a registration mode means decides what is real to test.
 * A MISSING fault happens only for a page the page cache does not hold, a
 * MINOR fault only for one it holds (and that this mapping does not map).
 *  - PLAN_FAULT: nothing in the cache; the first touch is a MISSING fault,
 *    served by UFFDIO_COPY / UFFDIO_ZEROPAGE.
 *  - PLAN_PREFILL (mainline with MINOR registered): without a memory fd
 *    pagein can put nothing into the page cache, so a MINOR fault can only
 *    be answered by UFFDIO_CONTINUE of whatever is there: the VMM has put
 *    the snapshot there (say, a memory file it kept), and pagein's part is
 *    to map it, to record the first-touch order, and to copy nothing. The
 *    test writes the snapshot through an unregistered mapping, as that VMM.
 *    MINOR only: every page; MISSING|MINOR: every other page, the rest
 *    MISSING-faulted.
 *  - PLAN_STAGE2 (secret hiding): a stage-2 request pwrite()s the snapshot
 *    bytes into the memfd and clears the bit; the later touch is a MINOR
 *    fault served by UFFDIO_CONTINUE (MINOR registered) or no fault at all
 *    (MISSING only: the cache already holds the page). With MINOR only
 *    registration this is how most pages arrive. With secret hiding the
 *    test writes nothing into the page cache itself: pagein does.
 *  - PLAN_BEHIND (secret hiding, MINOR registered): the page is in the
 *    cache, zero-filled, before pagein filled it, as guest_memfd allocates
 *    a page on first access (here: a read through an unregistered mapping,
 *    the case docs/architecture.md names). The touch is a MINOR fault on a
 *    page pagein never filled: it must write the snapshot's bytes before
 *    UFFDIO_CONTINUE, or the guest would read zeros.
 * With MINOR only, a page neither requested nor in the cache would read
 * shmem's zeros without any fault: pagein cannot see it, so no plan has it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "pagein.h"
#include "uffd_compat.h"

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26)
#endif

#define HUGE_2M (2ull << 20)
/* Guest sizes: 4 MiB of 4 KiB pages, 16 MiB (8 pages) on hugetlbfs; each
 * combination takes well under a second, even under TSan. */
#define SMALL_TPAGES 1024u
#define HUGE_TPAGES 4096u
/* A combination that takes this long has a fault nobody answered. */
#define WATCHDOG_SECONDS 120

/* ---- the axes ----------------------------------------------------------- */

struct combo {
	enum tc_mem mem;
	unsigned reg; /* TC_REG_* */
	bool secret;  /* secret-hiding protocol: memory fd + bitmap */
};

static const char *mem_name(enum tc_mem mem)
{
	return mem == TC_MEMFD ? "memfd-shared" : tc_mem_name(mem);
}

static const char *reg_name(unsigned reg)
{
	return reg == TC_REG_MISSING ? "missing" : reg == TC_REG_MINOR ? "minor" : "missing+minor";
}

static bool is_shared(enum tc_mem mem)
{
	return mem == TC_MEMFD || mem == TC_HUGETLB;
}

/* ---- what the kernel and the machine allow ------------------------------ */

static uint64_t api_features;  /* what UFFDIO_API reports */
static char api_skip[160];     /* set if userfaultfd itself is unavailable */

static void probe_api(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		snprintf(api_skip, sizeof(api_skip), "userfaultfd: %s", strerror(errno));
		return;
	}
	/* features = 0: the kernel answers with every feature it has. */
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		snprintf(api_skip, sizeof(api_skip), "UFFDIO_API: %s", strerror(errno));
	else
		api_features = api.features;
	close(fd);
}

static uint64_t features_needed(const struct combo *c, const char **name)
{
	static const struct {
		enum tc_mem mem;
		unsigned reg;
		uint64_t bit;
		const char *name;
	} need[] = {
		{TC_MEMFD, TC_REG_MISSING, UFFD_FEATURE_MISSING_SHMEM, "UFFD_FEATURE_MISSING_SHMEM"},
		{TC_MEMFD_PRIVATE, TC_REG_MISSING, UFFD_FEATURE_MISSING_SHMEM, "UFFD_FEATURE_MISSING_SHMEM"},
		{TC_HUGETLB, TC_REG_MISSING, UFFD_FEATURE_MISSING_HUGETLBFS, "UFFD_FEATURE_MISSING_HUGETLBFS"},
		{TC_MEMFD, TC_REG_MINOR, UFFD_FEATURE_MINOR_SHMEM, "UFFD_FEATURE_MINOR_SHMEM"},
		{TC_MEMFD_PRIVATE, TC_REG_MINOR, UFFD_FEATURE_MINOR_SHMEM, "UFFD_FEATURE_MINOR_SHMEM"},
		{TC_HUGETLB, TC_REG_MINOR, UFFD_FEATURE_MINOR_HUGETLBFS, "UFFD_FEATURE_MINOR_HUGETLBFS"},
	};
	uint64_t all = UFFD_FEATURE_EVENT_REMOVE;
	*name = NULL;
	if (!(api_features & UFFD_FEATURE_EVENT_REMOVE))
		*name = "UFFD_FEATURE_EVENT_REMOVE";
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		if (need[i].mem != c->mem || !(need[i].reg & c->reg))
			continue;
		all |= need[i].bit;
		if (!(api_features & need[i].bit) && !*name)
			*name = need[i].name;
	}
	return all;
}

/* Registers one page of this memory type in this mode on a uffd of its
 * own: what UFFDIO_REGISTER refuses, or the ioctls it does not offer for the
 * range, cannot be tested here. Needs no huge page (MAP_NORESERVE). */
static bool probe_register(const struct combo *c, uint64_t features, char *why,
			   size_t len)
{
	uint64_t ps = tc_mem_page_size(c->mem);
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), memfd = -1;
	void *m = MAP_FAILED;
	bool ok = false;
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0) {
		snprintf(why, len, "UFFDIO_API features 0x%llx: %s",
			 (unsigned long long)features, strerror(errno));
		goto out;
	}
	if (c->mem == TC_ANON) {
		m = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	} else {
		unsigned flags = MFD_CLOEXEC | (c->mem == TC_HUGETLB ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
		memfd = memfd_create("probe", flags);
		if (memfd < 0) {
			snprintf(why, len, "memfd_create(%s): %s",
				 c->mem == TC_HUGETLB ? "MFD_HUGETLB | MFD_HUGE_2MB" : "0", strerror(errno));
			goto out;
		}
		if (ftruncate(memfd, (off_t)ps) == 0)
			m = mmap(NULL, ps, PROT_READ | PROT_WRITE,
				 (c->mem == TC_MEMFD_PRIVATE ? MAP_PRIVATE : MAP_SHARED) | MAP_NORESERVE,
				 memfd, 0);
	}
	if (m == MAP_FAILED) {
		snprintf(why, len, "mmap of %s memory: %s", mem_name(c->mem), strerror(errno));
		goto out;
	}
	struct uffdio_register rg = {
		.range = {.start = (uint64_t)(uintptr_t)m, .len = ps},
		.mode = ((c->reg & TC_REG_MISSING) ? UFFDIO_REGISTER_MODE_MISSING : 0) |
			((c->reg & TC_REG_MINOR) ? UFFDIO_REGISTER_MODE_MINOR : 0),
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &rg) < 0) {
		snprintf(why, len, "UFFDIO_REGISTER %s on %s memory: %s", reg_name(c->reg),
			 mem_name(c->mem), strerror(errno));
		goto out;
	}
	uint64_t need = 0;
	if (c->reg & TC_REG_MISSING) /* pagein zero-fills by COPY on hugetlbfs */
		need |= (1ull << _UFFDIO_COPY) | (c->mem == TC_HUGETLB ? 0 : 1ull << _UFFDIO_ZEROPAGE);
	if (c->reg & TC_REG_MINOR)
		need |= 1ull << _UFFDIO_CONTINUE;
	if ((rg.ioctls & need) != need) {
		snprintf(why, len, "UFFDIO_REGISTER offers ioctls 0x%llx, pagein needs 0x%llx",
			 (unsigned long long)rg.ioctls, (unsigned long long)need);
		goto out;
	}
	ok = true;
out:
	if (m != MAP_FAILED)
		munmap(m, ps);
	if (memfd >= 0)
		close(memfd);
	if (uffd >= 0)
		close(uffd);
	return ok;
}

/* ---- the 2 MiB huge page pool ------------------------------------------- */

/* The 2 MiB pool: /proc/sys/vm/nr_hugepages when 2 MiB is the default huge
 * page size, the right pool when it is not. Its nr_hugepages reads as the
 * persistent pages plus the surplus ones, and sets the persistent ones. */
#define POOL_DIR "/sys/kernel/mm/hugepages/hugepages-2048kB/"
/* One guest needs 8 (16 MiB), with room to spare. Always pages of our own:
 * free pages already in the pool may be surplus ones, which the kernel
 * dissolves as soon as they are freed, i.e. after the first combination. */
#define POOL_EXTRA 16

static long pool_before = -1; /* the value to give back; -1: untouched */
static bool pool_tried;
static char pool_skip[160];

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* Async-signal-safe: used from the watchdog and the guardian process. */
static int write_long(const char *path, long v)
{
	char buf[24];
	int n = (int)sizeof(buf);
	buf[--n] = '\n';
	do {
		buf[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0 && n > 0);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, buf + n, sizeof(buf) - (size_t)n);
	close(fd);
	return w == (ssize_t)(sizeof(buf) - (size_t)n) ? 0 : -1;
}

static int pool_guard_fd = -1; /* write end of the guardian's pipe */

/* Gives the pool back, and tells the guardian it need not. Async-signal-
 * safe (the watchdog calls it). */
static void pool_restore(void)
{
	if (pool_before >= 0 && write_long(POOL_DIR "nr_hugepages", pool_before) == 0) {
		pool_before = -1;
		/* Left to the guardian, a late write could land in the next
		 * test's reservation. */
		if (pool_guard_fd >= 0 && write(pool_guard_fd, "x", 1) == 1)
			pool_guard_fd = -1;
	}
}

/* A process of its own gives the pool back if this one ends without doing
 * so (a sanitizer's exit skips atexit, a SIGKILL skips everything): it
 * waits on a pipe only this process holds the write end of, and restores
 * on EOF; a byte means this process restored it already. */
static void pool_guard(long before)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return; /* atexit still gives it back on a normal exit */
	pid_t pid = fork();
	if (pid == 0) {
		close(p[1]);
		signal(SIGTERM, SIG_IGN); /* timeout(1) signals the whole group */
		signal(SIGINT, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		char c;
		ssize_t n;
		while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR)
			;
		if (n == 0)
			write_long(POOL_DIR "nr_hugepages", before);
		_exit(0);
	}
	close(p[0]);
	if (pid < 0)
		close(p[1]);
	else
		pool_guard_fd = p[1];
}

/* Reserves the huge pages the hugetlb combinations need, once. */
static bool pool_reserve(char *why, size_t len)
{
	if (!pool_tried) {
		pool_tried = true;
		long total = read_long(POOL_DIR "nr_hugepages");
		long surplus = read_long(POOL_DIR "surplus_hugepages");
		long need = (long)(HUGE_TPAGES * PS / HUGE_2M);
		if (total < 0 || surplus < 0) {
			snprintf(pool_skip, sizeof(pool_skip), "no 2 MiB huge page pool (%s)", POOL_DIR);
		} else {
			long before = total - surplus; /* persistent pages */
			pool_guard(before);
			pool_before = before;
			atexit(pool_restore);
			if (write_long(POOL_DIR "nr_hugepages", before + POOL_EXTRA) < 0)
				snprintf(pool_skip, sizeof(pool_skip),
					 "cannot write %snr_hugepages: %s", POOL_DIR, strerror(errno));
			long got = read_long(POOL_DIR "free_hugepages");
			if (!pool_skip[0] && got < need)
				snprintf(pool_skip, sizeof(pool_skip),
					 "reserved %ld of %ld 2 MiB huge pages", got < 0 ? 0 : got, need);
		}
	}
	if (pool_skip[0])
		snprintf(why, len, "%s", pool_skip);
	return !pool_skip[0];
}

/* ---- one combination ---------------------------------------------------- */

enum plan {
	PLAN_FAULT,   /* the first touch is a MISSING fault */
	PLAN_PREFILL, /* the VMM put the snapshot in the page cache (mainline) */
	PLAN_STAGE2,  /* a stage-2 request before any touch (secret hiding) */
	PLAN_BEHIND,  /* zero-filled in the cache behind pagein's back */
	NPLANS
};

static const char *const plan_name[NPLANS] = {"fault", "prefill", "stage-2", "behind"};

enum want { WANT_SNAPSHOT, WANT_ZERO, WANT_WRITTEN };

struct mx {
	const struct combo *c;
	char name[64];
	struct rig r;
	uint64_t gps;      /* guest page size: 4 KiB or 2 MiB */
	uint64_t ng;       /* guest pages */
	uint64_t tpg;      /* 4 KiB pages per guest page */
	uint64_t ntp;      /* 4 KiB pages */
	uint8_t *alias;    /* the memfd mapped again, unregistered: the VMM's view */
	enum plan *plan;   /* per guest page */
	enum want *want;   /* per 4 KiB page */
	uint64_t nplan[NPLANS];
	uint64_t d0, d1;   /* discarded guest pages [d0, d1) */
	int failed;
	int reported;      /* mismatches printed so far (a few are enough) */
	struct pagein_stats after_touch;
};

static void expect_failed(struct mx *m, int line, const char *what)
{
	fprintf(stderr, "  %s: line %d: check failed: %s\n", m->name, line, what);
	m->failed++;
}

#define EXPECT(m, cond) ((cond) ? true : (expect_failed((m), __LINE__, #cond), false))
#define REQUIRE(m, cond)                                                       \
	do {                                                                   \
		if (!EXPECT(m, cond))                                          \
			return;                                                \
	} while (0)

static uint8_t pattern(uint64_t tp)
{
	return (uint8_t)(0x80 | (tp & 0x7f)); /* never zero, never snapshot-like */
}

static void want_bytes(const struct mx *m, uint64_t tp, unsigned char *buf)
{
	if (m->want[tp] == WANT_SNAPSHOT)
		rig_page(&m->r, tp, buf);
	else
		memset(buf, m->want[tp] == WANT_ZERO ? 0 : pattern(tp), PS);
}

static const char *want_name(enum want w)
{
	return w == WANT_SNAPSHOT ? "snapshot" : w == WANT_ZERO ? "zeros" : "the guest's write";
}

/* Compares 4 KiB page tp as the guest sees it (through the registered
 * mapping: this read is the touch) or at p. Any thread. */
static bool check_tp_at(struct mx *m, const uint8_t *p, uint64_t tp, const char *where)
{
	unsigned char want[PS];
	want_bytes(m, tp, want);
	if (memcmp(p, want, PS) == 0)
		return true;
	if (__atomic_fetch_add(&m->reported, 1, __ATOMIC_RELAXED) < 6) {
		fprintf(stderr, "  %s: %s: 4 KiB page %llu (guest page %llu, plan %s) is not %s:\n",
			m->name, where, (unsigned long long)tp, (unsigned long long)(tp / m->tpg),
			plan_name[m->plan[tp / m->tpg]], want_name(m->want[tp]));
		tc_check_page(p, want, tp);
	}
	return false;
}

static bool check_tp(struct mx *m, uint64_t tp, const char *where)
{
	return check_tp_at(m, m->r.g.base + tp * PS, tp, where);
}

static int check_range(struct mx *m, uint64_t g0, uint64_t g1, const char *where)
{
	int bad = 0;
	for (uint64_t tp = g0 * m->tpg; tp < g1 * m->tpg; tp++)
		bad += !check_tp(m, tp, where);
	return bad;
}

static int populate(struct mx *m, uint64_t off, uint64_t *len, bool *zero,
		    struct pagein_error *err)
{
	*len = 12345;
	*zero = false;
	memset(err, 0, sizeof(*err));
	return pagein_session_populate_offset(m->r.s, off, len, zero, err);
}

static void plan_pages(struct mx *m)
{
	unsigned reg = m->c->reg;
	for (uint64_t g = 0; g < m->ng; g++) {
		enum plan p;
		if (!m->c->secret)
			p = !(reg & TC_REG_MINOR) ? PLAN_FAULT
			    : !(reg & TC_REG_MISSING) ? PLAN_PREFILL
			    : g % 2 ? PLAN_PREFILL : PLAN_FAULT;
		else if (g % 3 == 0)
			p = PLAN_STAGE2;
		else if (g % 3 == 1)
			p = (reg & TC_REG_MINOR) ? PLAN_BEHIND : PLAN_FAULT;
		else
			p = (reg & TC_REG_MISSING) ? PLAN_FAULT : PLAN_STAGE2;
		m->plan[g] = p;
		m->nplan[p]++;
	}
	for (uint64_t tp = 0; tp < m->ntp; tp++)
		m->want[tp] = WANT_SNAPSHOT;
}

/* Step 1: the page cache as the VMM has it before the guest runs. */
static void prepare_cache(struct mx *m)
{
	for (uint64_t g = 0; g < m->ng; g++) {
		if (m->plan[g] == PLAN_PREFILL) {
			/* Every page, zeros included: all of them in the cache. */
			for (uint64_t tp = g * m->tpg; tp < (g + 1) * m->tpg; tp++)
				rig_page(&m->r, tp, m->alias + tp * PS);
		} else if (m->plan[g] == PLAN_BEHIND) {
			(void)*(volatile uint8_t *)(m->alias + g * m->gps);
			if (m->c->mem == TC_MEMFD) /* hugetlbfs calls every offset data */
				REQUIRE(m, lseek(m->r.g.memfd, (off_t)(g * m->gps), SEEK_DATA) ==
						   (off_t)(g * m->gps));
		}
	}
}

/* Step 2: stage-2 requests before any touch, and the error paths. */
static void stage2_first(struct mx *m)
{
	uint64_t len, size = m->ng * m->gps;
	bool zero;
	struct pagein_error err;
	if (!m->c->secret) {
		EXPECT(m, populate(m, 0, &len, &zero, &err) == -ENOTSUP && len == 0);
		return;
	}
	EXPECT(m, populate(m, size, &len, &zero, &err) == -EINVAL && len == 0);
	EXPECT(m, strstr(err.msg, "outside guest memory") != NULL);
	EXPECT(m, populate(m, UINT64_MAX - 4095, &len, &zero, &err) == -EINVAL && len == 0);
	/* Guest page 3 is all zeros: a zero 4 KiB page (i % 4 == 3), or on
	 * hugetlbfs the zero 2 MiB range. */
	uint64_t gz = 3;
	REQUIRE(m, m->plan[gz] == PLAN_STAGE2 && rig_bit_set(&m->r, gz));
	EXPECT(m, populate(m, gz * m->gps + m->gps - 1, &len, &zero, &err) == 0);
	EXPECT(m, len == m->gps && zero && !rig_bit_set(&m->r, gz));
	/* Guest page 0 holds data: asked for by an offset inside it. */
	REQUIRE(m, m->plan[0] == PLAN_STAGE2 && rig_bit_set(&m->r, 0));
	EXPECT(m, populate(m, m->gps / 2 + 100, &len, &zero, &err) == 0);
	EXPECT(m, len == m->gps && !zero && !rig_bit_set(&m->r, 0));
	/* What the guest's stage-2 view (the fd) now holds: */
	unsigned char got[PS];
	uint64_t last = m->tpg - 1;
	EXPECT(m, pread(m->r.g.memfd, got, PS, 0) == (ssize_t)PS && check_tp_at(m, got, 0, "pread"));
	EXPECT(m, pread(m->r.g.memfd, got, PS, (off_t)(last * PS)) == (ssize_t)PS &&
			  check_tp_at(m, got, last, "pread"));
	/* Asked again: already in, nothing written. */
	struct pagein_stats a, b;
	pagein_session_stats(m->r.s, &a);
	EXPECT(m, populate(m, 0, &len, &zero, &err) == 0 && len == m->gps);
	pagein_session_stats(m->r.s, &b);
	EXPECT(m, b.pages_written == a.pages_written && b.filled_request == a.filled_request);
}

/* Step 3: two vCPUs touch every page, in opposite directions. */
struct toucher {
	struct mx *m;
	bool backward;
	int bad;
};

static void *touch_all(void *arg)
{
	struct toucher *t = arg;
	struct mx *m = t->m;
	for (uint64_t k = 0; k < m->ng; k++) {
		uint64_t g = t->backward ? m->ng - 1 - k : k;
		if (m->c->secret && m->plan[g] == PLAN_STAGE2 && rig_bit_set(&m->r, g)) {
			/* A userfault exit: ask pagein, as the VMM does. */
			uint64_t len;
			bool zero;
			struct pagein_error err;
			int rc = populate(m, g * m->gps, &len, &zero, &err);
			if (rc != 0 || len != m->gps || rig_bit_set(&m->r, g)) {
				fprintf(stderr, "  %s: stage-2 request for guest page %llu: %d (%s), len %llu, bit %d\n",
					m->name, (unsigned long long)g, rc, err.msg,
					(unsigned long long)len, rig_bit_set(&m->r, g));
				t->bad++;
			}
		}
		for (uint64_t tp = g * m->tpg; tp < (g + 1) * m->tpg; tp++)
			t->bad += !check_tp(m, tp, "touch");
	}
	return NULL;
}

static void touch(struct mx *m)
{
	struct toucher t[2] = {{m, false, 0}, {m, true, 0}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, touch_all, &t[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	EXPECT(m, t[0].bad == 0 && t[1].bad == 0);
}

static void print_stats(struct mx *m, const struct pagein_stats *st)
{
	char line[1024];
	pagein_stats_format(st, line, sizeof(line));
	fprintf(stderr, "  %s: %s\n", m->name, line);
}

struct fill_goal {
	uint64_t fills, written, continued;
};

static bool fills_reached(const struct pagein_stats *st, void *arg)
{
	const struct fill_goal *g = arg;
	return st->pages_copied + st->pages_zeroed >= g->fills &&
	       st->pages_written >= g->written && st->pages_continued >= g->continued;
}

/* Step 4: each page filled once, by the path its plan says. */
static void check_fills(struct mx *m)
{
	const uint64_t *n = m->nplan;
	bool minor = m->c->reg & TC_REG_MINOR, missing = m->c->reg & TC_REG_MISSING;
	struct fill_goal goal = {
		.fills = n[PLAN_FAULT],
		.written = n[PLAN_STAGE2] + n[PLAN_BEHIND],
		/* A MINOR fault maps each cached page once; a page in the cache
		 * with MISSING only registered takes no fault at all. */
		.continued = n[PLAN_PREFILL] + (minor ? n[PLAN_STAGE2] + n[PLAN_BEHIND] : 0),
	};
	/* The fill that woke a vCPU is counted just after: wait for it. */
	rig_wait_stats(&m->r, fills_reached, &goal);
	struct pagein_stats *st = &m->after_touch;
	pagein_session_stats(m->r.s, st);
	int before = m->failed;
	EXPECT(m, st->pages_copied + st->pages_zeroed == goal.fills);
	EXPECT(m, st->pages_written == goal.written);
	EXPECT(m, st->pages_continued == goal.continued);
	EXPECT(m, st->filled_request == n[PLAN_STAGE2]);
	EXPECT(m, missing ? st->faults_missing >= n[PLAN_FAULT] : st->faults_missing == 0);
	EXPECT(m, minor ? st->faults_minor >= goal.continued : st->faults_minor == 0);
	EXPECT(m, st->pages_poisoned == 0 && st->removes == 0);
	if (!m->c->secret && !missing) /* it only maps what the VMM put there */
		EXPECT(m, st->bytes_read == 0);
	if (m->failed != before)
		print_stats(m, st);

	/* The first-touch order names every page once. */
	uint64_t *off = NULL;
	size_t cnt = 0;
	REQUIRE(m, pagein_session_recorded(m->r.s, &off, &cnt) == 0);
	uint8_t *seen = calloc(m->ng, 1);
	size_t bad = 0;
	for (size_t i = 0; i < cnt; i++) {
		uint64_t g = off[i] / m->gps;
		if (off[i] % m->gps || g >= m->ng || seen[g]++)
			bad++;
	}
	free(seen);
	free(off);
	EXPECT(m, cnt == m->ng && bad == 0);

	if (!m->c->secret)
		return;
	/* Every page is in: every userfault bit clear (the COPY path clears
	 * its bits just after its COPY woke the vCPU). */
	uint64_t set = 0;
	for (int tries = 0; tries < 5000; tries++) {
		set = 0;
		for (uint64_t g = 0; g < m->ng; g++)
			set += rig_bit_set(&m->r, g);
		if (!set)
			break;
		usleep(1000);
	}
	EXPECT(m, set == 0);
}

struct remove_goal {
	uint64_t removes, pages;
};

static bool removes_reached(const struct pagein_stats *st, void *arg)
{
	const struct remove_goal *g = arg;
	return st->removes >= g->removes && st->pages_removed >= g->pages;
}

/* madvise() returns once pagein has read the REMOVE; wait until it has
 * applied it too (a MINOR-only touch of a punched page raises no fault
 * that would order the two). */
static bool wait_removes(struct mx *m, uint64_t removes, uint64_t pages)
{
	struct remove_goal goal = {removes, pages};
	return rig_wait_stats(&m->r, removes_reached, &goal);
}

/* Step 5: a balloon discards a range; it must read zeros from then on,
 * never snapshot data (docs/protocols.md). On a private mapping whose
 * page cache holds the snapshot (PLAN_PREFILL) the kernel shows the cached
 * page again after MADV_DONTNEED and raises a MINOR fault for it: the
 * handler decides what the guest reads, and it must be zeros. */
static void discard(struct mx *m)
{
	int advice = is_shared(m->c->mem) ? MADV_REMOVE : MADV_DONTNEED;
	uint64_t npg = m->d1 - m->d0;
	REQUIRE(m, madvise(m->r.g.base + m->d0 * m->gps, npg * m->gps, advice) == 0);
	EXPECT(m, wait_removes(m, 1, npg));
	struct pagein_stats st;
	pagein_session_stats(m->r.s, &st);
	EXPECT(m, st.removes == 1 && st.pages_removed == npg);
	for (uint64_t tp = m->d0 * m->tpg; tp < m->d1 * m->tpg; tp++)
		m->want[tp] = WANT_ZERO;
	if (m->c->secret) {
		/* A stage-2 request for a punched page: zeros into the hole (the
		 * page is in the cache when pagein answers), and the reply says
		 * the page is zeros. */
		uint64_t g = m->d1 - 1, len;
		bool zero;
		struct pagein_error err;
		EXPECT(m, populate(m, g * m->gps, &len, &zero, &err) == 0 && len == m->gps);
		EXPECT(m, !rig_bit_set(&m->r, g));
		if (m->c->mem == TC_MEMFD) /* hugetlbfs calls every offset data */
			EXPECT(m, lseek(m->r.g.memfd, (off_t)(g * m->gps), SEEK_DATA) ==
					  (off_t)(g * m->gps));
		if (!EXPECT(m, zero))
			fprintf(stderr, "  %s: the stage-2 reply for punched guest page %llu says "
				"\"zero\": false\n", m->name, (unsigned long long)g);
		/* In the cache, not mapped here: touching it is a MINOR fault
		 * (MINOR registered), never a MISSING one. Faults are counted
		 * when read, before they are served, so the counters are
		 * exact once the touch returns. */
		struct pagein_stats a, b;
		pagein_session_stats(m->r.s, &a);
		EXPECT(m, check_range(m, g, g + 1, "after a stage-2 request for it") == 0);
		pagein_session_stats(m->r.s, &b);
		bool in_cache = b.faults_missing == a.faults_missing &&
				(!(m->c->reg & TC_REG_MINOR) || b.faults_minor > a.faults_minor);
		if (!EXPECT(m, in_cache))
			fprintf(stderr, "  %s: punched guest page %llu was not in the page cache after "
				"its stage-2 request: touching it raised %llu MISSING and %llu MINOR faults\n",
				m->name, (unsigned long long)g,
				(unsigned long long)(b.faults_missing - a.faults_missing),
				(unsigned long long)(b.faults_minor - a.faults_minor));
	}
	EXPECT(m, check_range(m, m->d0, m->d1, "after discard") == 0);
}

/* Step 6: the guest's own writes; nothing of pagein's may land on them. */
static void guest_writes(struct mx *m)
{
	uint64_t w[] = {0, 1, 2, 3, m->ng - 1, m->d0};
	size_t nw = sizeof(w) / sizeof(w[0]);
	for (size_t i = 0; i < nw; i++) {
		uint64_t tp = w[i] * m->tpg; /* the guest page's first 4 KiB */
		memset(m->r.g.base + tp * PS, pattern(tp), PS);
		m->want[tp] = WANT_WRITTEN;
	}
	uint64_t len;
	bool zero;
	struct pagein_error err;
	if (m->c->secret)
		for (size_t i = 0; i < nw; i++)
			EXPECT(m, populate(m, w[i] * m->gps, &len, &zero, &err) == 0 && len == m->gps);
	if (is_shared(m->c->mem)) {
		/* DONTNEED on shared memory drops the mapping, keeps the page
		 * cache: the guest's data. pagein sees a REMOVE; the next touch
		 * is a MINOR fault (or none, MISSING only) and must map that
		 * data, and a stage-2 request must keep it. */
		struct pagein_stats st;
		pagein_session_stats(m->r.s, &st);
		for (size_t i = 0; i < nw; i++)
			EXPECT(m, madvise(m->r.g.base + w[i] * m->gps, m->gps, MADV_DONTNEED) == 0);
		EXPECT(m, wait_removes(m, st.removes + nw, st.pages_removed + nw));
		if (m->c->secret)
			for (size_t i = 0; i < nw; i++)
				EXPECT(m, populate(m, w[i] * m->gps, &len, &zero, &err) == 0);
	}
	int bad = 0;
	for (size_t i = 0; i < nw; i++)
		bad += check_range(m, w[i], w[i] + 1, "after the guest's write");
	EXPECT(m, bad == 0);
	if (m->c->secret) { /* the stage-2 view agrees */
		unsigned char got[PS];
		for (size_t i = 0; i < nw; i++) {
			uint64_t tp = w[i] * m->tpg;
			EXPECT(m, pread(m->r.g.memfd, got, PS, (off_t)(tp * PS)) == (ssize_t)PS &&
					  check_tp_at(m, got, tp, "pread after the guest's write"));
		}
	}
	/* No snapshot byte went anywhere after the first fills: whatever
	 * pagein did since, it wrote zeros or mapped what was there. */
	struct pagein_stats st;
	pagein_session_stats(m->r.s, &st);
	EXPECT(m, st.pages_copied == m->after_touch.pages_copied &&
			  st.pages_written == m->after_touch.pages_written &&
			  st.bytes_read == m->after_touch.bytes_read);
}

/* ---- running the matrix ------------------------------------------------- */

static char current[64]; /* for the watchdog */

static void watchdog(int sig)
{
	static const char msg[] = ": FAIL: timed out (a fault nobody answered?)\n";
	if (write(STDOUT_FILENO, current, strlen(current)) < 0 ||
	    write(STDOUT_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	pool_restore();
	_exit(1);
}

static int run_combo(const struct combo *c, char *why, size_t whylen)
{
	struct mx mx = {.c = c}, *m = &mx;
	snprintf(m->name, sizeof(m->name), "%s/%s/%s", mem_name(c->mem), reg_name(c->reg),
		 c->secret ? "secret-hiding" : "mainline");
	bool huge = c->mem == TC_HUGETLB;
	m->gps = tc_mem_page_size(c->mem);
	m->ntp = huge ? HUGE_TPAGES : SMALL_TPAGES;
	m->tpg = m->gps / PS;
	m->ng = m->ntp / m->tpg;
	/* Discarded: 16 small pages, or 2 huge ones; away from pages 0-3 and
	 * the last one, which the guest writes. */
	m->d0 = huge ? 4 : 64;
	m->d1 = huge ? 6 : 80;
	struct rig_opts o = {
		.reg = c->reg,
		.stage2 = c->secret,
		.record = true,
		/* A whole zero 2 MiB page on hugetlbfs (guest page 3), a zero
		 * range elsewhere (every 4th 4 KiB page is zero anyway). */
		.zero_first = huge ? 3 * 512 : 128,
		.zero_count = huge ? 512 : 64,
	};
	int t = rig_start_opts(&m->r, c->mem, m->ntp, &o);
	if (t == TC_SKIP)
		snprintf(why, whylen, "%.*s", (int)sizeof(m->r.g.skip_reason), m->r.g.skip_reason);
	if (t != TC_PASS)
		return t;
	m->plan = calloc(m->ng, sizeof(*m->plan));
	m->want = calloc(m->ntp, sizeof(*m->want));
	if (c->mem != TC_ANON) {
		void *a = mmap(NULL, m->ntp * PS, PROT_READ | PROT_WRITE, MAP_SHARED, m->r.g.memfd, 0);
		m->alias = a == MAP_FAILED ? NULL : a;
	}
	if (EXPECT(m, m->plan && m->want && (c->mem == TC_ANON || m->alias))) {
		plan_pages(m);
		prepare_cache(m);
		if (!m->failed)
			stage2_first(m);
		if (!m->failed)
			touch(m);
		check_fills(m);
		discard(m);
		guest_writes(m);
		EXPECT(m, check_range(m, 0, m->ng, "at the end") == 0);
	}
	struct pagein_stats st;
	rig_stop(&m->r, &st);
	if (!EXPECT(m, m->r.run_result == 0))
		fprintf(stderr, "  %s: session ended with %d: %s\n", m->name, m->r.run_result, m->r.err);
	if (m->alias)
		munmap(m->alias, m->ntp * PS);
	free(m->plan);
	free(m->want);
	return m->failed ? TC_FAIL : TC_PASS;
}

/* Whether this combination can run here; if not, why. */
static bool runnable(const struct combo *c, char *why, size_t len)
{
	if (api_skip[0]) {
		snprintf(why, len, "%s", api_skip);
		return false;
	}
	const char *missing;
	uint64_t features = features_needed(c, &missing);
	if (missing) {
		snprintf(why, len, "UFFDIO_API does not report %s", missing);
		return false;
	}
	if (!probe_register(c, features, why, len))
		return false;
	return c->mem != TC_HUGETLB || pool_reserve(why, len);
}

int main(int argc, char **argv)
{
	const char *filter = argc > 1 ? argv[1] : NULL; /* e.g. "hugetlb/minor" */
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, watchdog);
	probe_api();
	static const enum tc_mem mems[] = {TC_ANON, TC_MEMFD, TC_MEMFD_PRIVATE, TC_HUGETLB};
	static const unsigned regs[] = {TC_REG_MISSING, TC_REG_MINOR, TC_REG_MISSING | TC_REG_MINOR};
	int passed = 0, failed = 0, skipped = 0;
	for (size_t i = 0; i < sizeof(mems) / sizeof(mems[0]); i++) {
		for (size_t j = 0; j < sizeof(regs) / sizeof(regs[0]); j++) {
			for (int secret = 0; secret <= 1; secret++) {
				struct combo c = {mems[i], regs[j], secret};
				/* Combinations that do not exist: no minor faults on
				 * anonymous memory, no secret hiding over memory
				 * guest_memfd cannot be (private mappings). */
				if ((c.mem == TC_ANON && c.reg != TC_REG_MISSING) ||
				    (c.secret && !is_shared(c.mem)))
					continue;
				snprintf(current, sizeof(current), "%s/%s/%s", mem_name(c.mem),
					 reg_name(c.reg), secret ? "secret-hiding" : "mainline");
				if (filter && !strstr(current, filter))
					continue;
				char why[256] = "";
				int r = TC_SKIP;
				if (runnable(&c, why, sizeof(why))) {
					alarm(WATCHDOG_SECONDS);
					r = run_combo(&c, why, sizeof(why));
					alarm(0);
				}
				if (r == TC_PASS)
					printf("%s: ok\n", current);
				else if (r == TC_SKIP)
					printf("%s: skip: %s\n", current, why[0] ? why : "(no reason given)");
				else
					printf("%s: FAIL\n", current);
				passed += r == TC_PASS;
				failed += r != TC_PASS && r != TC_SKIP;
				skipped += r == TC_SKIP;
			}
		}
	}
	pool_restore();
	printf("combinations: %d ok, %d failed, %d skipped\n", passed, failed, skipped);
	if (failed)
		return TC_FAIL;
	return passed ? TC_PASS : TC_SKIP;
}
