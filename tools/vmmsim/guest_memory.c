/* guest_memory.c - see guest_memory.h. */
#include "guest_memory.h"
#include "util.h"
#include "uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* glibc's headers do not all spell the size-encoded huge page flags. */
#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif

#define HUGE_2M (2ULL << 20)

static const struct {
	uint64_t bit;
	const char *name;
} feature_names[] = {
	{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE" },
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS" },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS" },
};

static void print_skip_no_huge(void)
{
	fprintf(stderr, "vmmsim: skip: no 2 MiB huge pages\n");
}

/* What the VMM asks UFFDIO_API for: REMOVE events when the version it
 * plays would (c->event_remove), plus the per-backend bits that let
 * MISSING/MINOR registration work on shmem and hugetlbfs. */
static uint64_t needed_features(const struct guest_config *c)
{
	bool huge = c->page_size == HUGE_2M;
	uint64_t f = c->event_remove ? UFFD_FEATURE_EVENT_REMOVE : 0;

	if (c->reg_mode & UFFDIO_REGISTER_MODE_MISSING) {
		if (huge)
			f |= UFFD_FEATURE_MISSING_HUGETLBFS;
		else if (c->memory == GUEST_MEMFD)
			f |= UFFD_FEATURE_MISSING_SHMEM;
	}
	if (c->reg_mode & UFFDIO_REGISTER_MODE_MINOR)
		f |= huge ? UFFD_FEATURE_MINOR_HUGETLBFS : UFFD_FEATURE_MINOR_SHMEM;
	return f;
}

/* Like Firecracker: O_CLOEXEC|O_NONBLOCK and no UFFD_USER_MODE_ONLY, so
 * kernel-mode accesses (the --vmm-thread write(2)s) fault to the handler. */
static int uffd_new(void)
{
	return (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
}

/* UFFDIO_API can be done once per fd, so ask a throwaway fd what the kernel
 * supports first, to name any missing feature instead of a bare EINVAL. */
static int uffd_probe(uint64_t *supported)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = uffd_new();

	if (fd < 0) {
		msg("userfaultfd(O_CLOEXEC|O_NONBLOCK): %m");
		return -1;
	}
	if (ioctl(fd, UFFDIO_API, &api)) {
		msg("UFFDIO_API (probing features): %m");
		close(fd);
		return -1;
	}
	close(fd);
	*supported = api.features;
	return 0;
}

static int uffd_open(struct guest *g, const struct guest_config *c)
{
	uint64_t need = needed_features(c), have;

	if (uffd_probe(&have))
		return -1;
	if (need & ~have) {
		char names[256] = "";

		for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
			if (need & ~have & feature_names[i].bit) {
				strncat(names, " UFFD_FEATURE_", sizeof(names) - strlen(names) - 1);
				strncat(names, feature_names[i].name, sizeof(names) - strlen(names) - 1);
			}
		}
		msg("the kernel's userfaultfd lacks%s (needed for this --memory/--page-size/--register)",
		    names);
		return -1;
	}
	g->uffd = uffd_new();
	if (g->uffd < 0) {
		msg("userfaultfd(O_CLOEXEC|O_NONBLOCK): %m");
		return -1;
	}
	struct uffdio_api api = { .api = UFFD_API, .features = need };

	if (ioctl(g->uffd, UFFDIO_API, &api)) {
		msg("UFFDIO_API(features 0x%" PRIx64 "): %m", need);
		return -1;
	}
	g->uffd_features = api.features;
	return 0;
}

/* Nearly equal page-aligned sizes; offsets cumulative as in Firecracker. */
static void layout_regions(struct guest *g, const struct guest_config *c)
{
	uint64_t each = g->npages / c->nregions, rem = g->npages % c->nregions, first = 0;

	g->nregions = c->nregions;
	for (unsigned i = 0; i < c->nregions; i++) {
		struct guest_region *r = &g->region[i];

		r->first_page = first;
		r->npages = each + (i < rem);
		r->size = r->npages * g->page_size;
		r->offset = first * g->page_size;
		first += r->npages;
	}
}

/* MAP_NORESERVE hugetlb mappings succeed even with an empty pool and SIGBUS
 * later, so check the pool can really hold the memory: a reserving mmap
 * fails with ENOMEM when it cannot. */
static bool anon_huge_available(uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);

	if (p == MAP_FAILED)
		return false;
	munmap(p, size);
	return true;
}

static int memfd_open(struct guest *g, bool huge)
{
	unsigned flags = MFD_CLOEXEC | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0);

	g->memfd = memfd_create("guest_mem", flags);
	if (g->memfd < 0) {
		if (huge) {
			print_skip_no_huge();
			return EXIT_SKIP;
		}
		msg("memfd_create(guest_mem): %m");
		return EXIT_SETUP;
	}
	if (ftruncate(g->memfd, (off_t)g->size)) {
		msg("ftruncate(guest_mem memfd, %" PRIu64 "): %m", g->size);
		return EXIT_SETUP;
	}
	return 0;
}

static int map_one(struct guest *g, struct guest_region *r, uint8_t *at, bool huge, int file_fd)
{
	void *p;

	if (file_fd >= 0)
		p = mmap(at, r->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, file_fd,
			 (off_t)r->offset);
	else if (g->memory == GUEST_ANON)
		p = mmap(at, r->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED |
				 (huge ? MAP_HUGETLB | MAP_HUGE_2MB : 0),
			 -1, 0);
	else
		p = mmap(at, r->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, g->memfd,
			 (off_t)r->offset);
	if (p == MAP_FAILED) {
		if (huge && errno == ENOMEM) {
			print_skip_no_huge();
			return EXIT_SKIP;
		}
		msg("mmap of region %u (%" PRIu64 " bytes at %p): %m", (unsigned)(r - g->region),
		    r->size, (void *)at);
		return EXIT_SETUP;
	}
	r->base = p;
	return 0;
}

/* One PROT_NONE reservation holds all regions and the gaps between them, so
 * the gaps stay unmapped guard areas and nothing else lands there. */
static int map_regions(struct guest *g, const struct guest_config *c, int file_fd)
{
	bool huge = c->page_size == HUGE_2M;
	uint64_t span = g->size + (uint64_t)(c->nregions - 1) * c->gap + c->page_size;

	g->span = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (g->span == MAP_FAILED) {
		g->span = NULL;
		msg("reserving %" PRIu64 " bytes of address space for %u regions with --gap %" PRIu64
		    ": %m", span, c->nregions, c->gap);
		return EXIT_SETUP;
	}
	g->span_len = span;
	uintptr_t at = ((uintptr_t)g->span + c->page_size - 1) & ~(uintptr_t)(c->page_size - 1);

	for (unsigned i = 0; i < g->nregions; i++) {
		int rc = map_one(g, &g->region[i], (uint8_t *)at, huge, file_fd);

		if (rc)
			return rc;
		at += g->region[i].size + c->gap;
	}
	return 0;
}

static int register_regions(struct guest *g, uint64_t mode)
{
	for (unsigned i = 0; i < g->nregions; i++) {
		struct uffdio_register reg = {
			.range = { (uintptr_t)g->region[i].base, g->region[i].size },
			.mode = mode,
		};

		if (ioctl(g->uffd, UFFDIO_REGISTER, &reg)) {
			msg("UFFDIO_REGISTER of region %u (mode %s%s): %m", i,
			    mode & UFFDIO_REGISTER_MODE_MISSING ? "missing" : "",
			    mode & UFFDIO_REGISTER_MODE_MINOR ? "+minor" : "");
			return EXIT_SETUP;
		}
		if ((mode & UFFDIO_REGISTER_MODE_MISSING) && !(reg.ioctls & (1ULL << _UFFDIO_COPY))) {
			msg("region %u: the kernel offers no UFFDIO_COPY for it", i);
			return EXIT_SETUP;
		}
		if ((mode & UFFDIO_REGISTER_MODE_MINOR) &&
		    !(reg.ioctls & (1ULL << _UFFDIO_CONTINUE))) {
			msg("region %u: the kernel offers no UFFDIO_CONTINUE for it", i);
			return EXIT_SETUP;
		}
	}
	return 0;
}

/* One bit per guest page, u64 words, all ones: every page starts "needs
 * userspace" for stage-2 accesses. */
static int bitmap_open(struct guest *g)
{
	uint64_t words = (g->npages + 63) / 64;
	long sys_page = sysconf(_SC_PAGESIZE);

	g->bitmap_len = (size_t)((words * 8 + (uint64_t)sys_page - 1) & ~((uint64_t)sys_page - 1));
	g->bitmap_fd = memfd_create("userfault_bitmap", MFD_CLOEXEC);
	if (g->bitmap_fd < 0) {
		msg("memfd_create(userfault_bitmap): %m");
		return EXIT_SETUP;
	}
	if (ftruncate(g->bitmap_fd, (off_t)g->bitmap_len)) {
		msg("ftruncate(userfault_bitmap, %zu): %m", g->bitmap_len);
		return EXIT_SETUP;
	}
	void *p = mmap(NULL, g->bitmap_len, PROT_READ | PROT_WRITE, MAP_SHARED, g->bitmap_fd, 0);

	if (p == MAP_FAILED) {
		msg("mmap(userfault_bitmap): %m");
		return EXIT_SETUP;
	}
	g->bitmap = p;
	memset(p, 0xff, g->bitmap_len);
	return 0;
}

/* Signal handlers get no context pointer: the guest being watched. */
static const struct guest *signal_guest;
/* The calling vCPU's way back from a SIGBUS (run --on-sigbus skip). */
static __thread sigjmp_buf *sigbus_jmp;

void guest_sigbus_arm(sigjmp_buf *jb)
{
	sigbus_jmp = jb;
}

/* A guest access that the handler cannot satisfy ends in SIGBUS (a page
 * poisoned with UFFDIO_POISON, a hugetlb pool exhausted): report which page
 * instead of dying silently. fail_now is not async-signal-safe, but the
 * faulting thread holds no stdio lock and the process exits right away. */
static void on_fault_signal(int sig, siginfo_t *si, void *uctx)
{
	const struct guest *g = signal_guest;
	uintptr_t a = (uintptr_t)si->si_addr;

	(void)uctx;
	for (unsigned i = 0; g && i < g->nregions; i++) {
		const struct guest_region *r = &g->region[i];

		if (a >= (uintptr_t)r->base && a < (uintptr_t)r->base + r->size) {
			uint64_t page = r->first_page + (a - (uintptr_t)r->base) / g->page_size;

			if (sig == SIGBUS && sigbus_jmp)
				siglongjmp(*sigbus_jmp, 1);
			fail_now(EXIT_WRONG, "%s on guest page %" PRIu64 " (region %u, snapshot offset 0x%"
				 PRIx64 "): the handler poisoned it or could not fill it",
				 sig == SIGBUS ? "SIGBUS" : "SIGSEGV", page, i, page * g->page_size);
		}
	}
	fail_now(EXIT_WRONG, "%s at %p, outside guest memory", sig == SIGBUS ? "SIGBUS" : "SIGSEGV",
		 si->si_addr);
}

static void catch_fault_signals(const struct guest *g)
{
	struct sigaction sa = { .sa_sigaction = on_fault_signal, .sa_flags = SA_SIGINFO };

	signal_guest = g;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
}

static void restore_fault_signals(void)
{
	signal(SIGBUS, SIG_DFL);
	signal(SIGSEGV, SIG_DFL);
	signal_guest = NULL;
}

int guest_open(struct guest *g, const struct guest_config *c)
{
	bool huge = c->page_size == HUGE_2M;
	int rc;

	memset(g, 0, sizeof(*g));
	g->uffd = g->memfd = g->bitmap_fd = -1;
	g->memory = c->memory;
	g->page_size = c->page_size;
	g->size = c->mem_size;
	g->npages = c->mem_size / c->page_size;
	layout_regions(g, c);
	if (huge && c->memory == GUEST_ANON && !anon_huge_available(g->size)) {
		print_skip_no_huge();
		return EXIT_SKIP;
	}
	if (c->memory == GUEST_MEMFD && (rc = memfd_open(g, huge)))
		goto fail;
	if (c->file && c->populate) {
		/* The touch floor: private anonymous memory written with the
		 * file's bytes before the workload; no uffd, no fault left. */
		int fd = open(c->file, O_RDONLY | O_CLOEXEC);

		if (fd < 0) {
			msg("--backend populated: %s: %m", c->file);
			return EXIT_SETUP;
		}
		rc = map_regions(g, c, -1);
		for (unsigned i = 0; !rc && i < g->nregions; i++) {
			struct guest_region *r = &g->region[i];

			for (uint64_t done = 0; done < r->size;) {
				ssize_t n = pread(fd, r->base + done, r->size - done,
						  (off_t)(r->offset + done));
				if (n <= 0) {
					msg("--backend populated: reading %s: %s", c->file,
					    n ? strerror(errno) : "short file");
					rc = EXIT_SETUP;
					break;
				}
				done += (uint64_t)n;
			}
			/* One load per page too: the kernel's writes above do not
			 * map the pages for user access everywhere (a shadow-paging
			 * hypervisor builds that on the first user access). */
			for (uint64_t o = 0; !rc && o < r->size; o += 4096)
				(void)*(volatile uint8_t *)(r->base + o);
		}
		close(fd);
		if (rc)
			goto fail;
		catch_fault_signals(g);
		return 0;
	}
	if (c->file) {
		/* The File backend: the kernel serves every fault from the page
		 * cache; the mapping holds its own reference, so the fd can go. */
		int fd = open(c->file, O_RDONLY | O_CLOEXEC);

		if (fd < 0) {
			msg("--backend file: %s: %m", c->file);
			return EXIT_SETUP;
		}
		rc = map_regions(g, c, fd);
		close(fd);
		if (rc)
			goto fail;
		catch_fault_signals(g);
		return 0;
	}
	if ((rc = map_regions(g, c, -1)))
		goto fail;
	rc = EXIT_SETUP;
	if (uffd_open(g, c))
		goto fail;
	if ((rc = register_regions(g, c->reg_mode)))
		goto fail;
	if (c->bitmap && (rc = bitmap_open(g)))
		goto fail;
	catch_fault_signals(g);
	return 0;
fail:
	guest_close(g);
	return rc;
}

void guest_close(struct guest *g)
{
	if (signal_guest == g)
		restore_fault_signals();
	if (g->span)
		munmap(g->span, g->span_len);
	if (g->bitmap)
		munmap((void *)g->bitmap, g->bitmap_len);
	if (g->uffd >= 0)
		close(g->uffd);
	if (g->memfd >= 0)
		close(g->memfd);
	if (g->bitmap_fd >= 0)
		close(g->bitmap_fd);
	memset(g, 0, sizeof(*g));
	g->uffd = g->memfd = g->bitmap_fd = -1;
}
