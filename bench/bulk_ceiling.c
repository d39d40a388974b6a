/* bulk_ceiling.c - the fastest a restore through userfaultfd can go on this
 * machine: anonymous memory the size of the snapshot, registered MISSING,
 * filled by a loop of 2 MiB UFFDIO_COPYs from the snapshot mmap'd and
 * populated beforehand, with no fault at all. Nothing else in the loop, so
 * no handler that copies every byte can beat it (one that installs zero
 * pages with UFFDIO_ZEROPAGE instead of copying them can).
 *
 *   bulk_ceiling --snapshot FILE [--chunk BYTES] [--repeat N]
 *
 * Prints one line per repetition and a last line of key=value pairs:
 *   bulk_ceiling: bytes=B seconds=S gb_s=G (median of N)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

static void die(const char *what)
{
	fprintf(stderr, "bulk_ceiling: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* One restore: fresh registered memory, COPY every chunk, seconds taken. */
static double one_run(const uint8_t *src, size_t size, size_t chunk)
{
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API };
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api))
		die("userfaultfd");
	uint8_t *dst = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (dst == MAP_FAILED)
		die("mmap guest memory");
	struct uffdio_register reg = { .range = { (uintptr_t)dst, size },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER");
	double t0 = now();
	for (size_t off = 0; off < size; off += chunk) {
		size_t len = size - off < chunk ? size - off : chunk;
		struct uffdio_copy cp = { .dst = (uintptr_t)dst + off,
					  .src = (uintptr_t)src + off, .len = len };
		if (ioctl(uffd, UFFDIO_COPY, &cp))
			die("UFFDIO_COPY");
	}
	double t = now() - t0;
	munmap(dst, size);
	close(uffd);
	return t;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	size_t chunk = 2u << 20;
	int repeat = 3;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--snapshot"))
			path = argv[i + 1];
		else if (!strcmp(argv[i], "--chunk"))
			chunk = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--repeat"))
			repeat = atoi(argv[i + 1]);
	}
	if (!path || !chunk || chunk % 4096 || repeat < 1 || repeat > 100) {
		fprintf(stderr, "usage: bulk_ceiling --snapshot FILE [--chunk BYTES] [--repeat N]\n");
		return 2;
	}
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die(path);
	size_t size = (size_t)st.st_size & ~(size_t)4095;
	const uint8_t *src = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (src == MAP_FAILED)
		die("mmap snapshot");
	/* Source pages in the page cache and in our page table: the loop
	 * measures COPY alone, not reads or faults on the source. */
	if (madvise((void *)src, size, MADV_POPULATE_READ))
		die("MADV_POPULATE_READ");
	double t[100];
	for (int i = 0; i < repeat; i++) {
		t[i] = one_run(src, size, chunk);
		printf("bulk_ceiling: run %d: %.3f s, %.2f GB/s\n", i + 1, t[i], (double)size / 1e9 / t[i]);
	}
	qsort(t, (size_t)repeat, sizeof(double), cmp_double);
	double med = t[repeat / 2];
	printf("bulk_ceiling: bytes=%zu seconds=%.4f gb_s=%.3f (median of %d)\n", size, med,
	       (double)size / 1e9 / med, repeat);
	return 0;
}
