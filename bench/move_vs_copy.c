/* move_vs_copy.c - would UFFDIO_MOVE (Linux 6.8+) of pages decompressed
 * into pagein's own anonymous memory beat UFFDIO_COPY of them? (issue 11,
 * item 6). Fills SIZE bytes of registered anonymous memory, CHUNK bytes at
 * a time, the way a pagein-format fill would after decompressing a chunk:
 *
 *   copy: write the chunk's bytes into one reused buffer, UFFDIO_COPY it;
 *   move: write them into fresh anonymous memory (the pages moved away
 *         last time are gone, so the buffer is refaulted), UFFDIO_MOVE it;
 *   move-ioctl: the same with every source page faulted in beforehand,
 *         untimed: the ioctl's own cost, a bound no real fill reaches.
 *
 * The write stands for the decompressor's output. No guest faults: only
 * the fill's own cost. Anonymous memory only: MOVE cannot fill a memfd
 * (MINOR) or a guest_memfd (stage-2).
 *
 *   move_vs_copy [--size BYTES] [--chunk BYTES] [--repeat N]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../src/uffd_compat.h"

static void die(const char *what)
{
	fprintf(stderr, "move_vs_copy: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double run(int move, size_t size, size_t chunk)
{
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		die("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API, .features = move ? UFFD_FEATURE_MOVE : 0 };
	if (ioctl(uffd, UFFDIO_API, &api))
		die("UFFDIO_API (UFFD_FEATURE_MOVE needs Linux 6.8)");
	uint8_t *dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *src = mmap(NULL, move ? size : chunk, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED || src == MAP_FAILED)
		die("mmap");
	madvise(dst, size, MADV_NOHUGEPAGE);
	madvise(src, move ? size : chunk, MADV_NOHUGEPAGE);
	struct uffdio_register reg = { .range = { (uintptr_t)dst, size },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER");
	memset(src, 1, chunk); /* the copy buffer is warm, as pagein's pool is */
	if (move == 2) /* the ioctl alone: source pages faulted in, untimed */
		memset(src, 1, size);
	double t = now();
	for (size_t off = 0; off < size; off += chunk) {
		/* move: a fresh buffer each time (the last one's pages left);
		 * the same virtual range would do too, refaulted */
		uint8_t *b = move ? src + off : src;
		for (size_t i = 0; i < chunk; i += 64)
			b[i] = (uint8_t)(off >> 12);
		if (move) {
			struct uffdio_move mv = { .dst = (uintptr_t)dst + off, .src = (uintptr_t)b,
						  .len = chunk, .mode = UFFDIO_MOVE_MODE_DONTWAKE };
			if (ioctl(uffd, UFFDIO_MOVE, &mv))
				die("UFFDIO_MOVE");
		} else {
			struct uffdio_copy cp = { .dst = (uintptr_t)dst + off, .src = (uintptr_t)b,
						  .len = chunk, .mode = UFFDIO_COPY_MODE_DONTWAKE };
			if (ioctl(uffd, UFFDIO_COPY, &cp))
				die("UFFDIO_COPY");
		}
	}
	t = now() - t;
	for (size_t off = 0; off < size; off += chunk)
		if (dst[off] != (uint8_t)(off >> 12))
			die("wrong bytes");
	munmap(dst, size);
	munmap(src, move ? size : chunk);
	close(uffd);
	return t;
}

int main(int argc, char **argv)
{
	size_t size = 256u << 20, chunk = 256u << 10;
	int repeat = 3;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--size"))
			size = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--chunk"))
			chunk = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--repeat"))
			repeat = atoi(argv[i + 1]);
	}
	size -= size % chunk;
	for (int r = 1; r <= repeat; r++) {
		double c = run(0, size, chunk), m = run(1, size, chunk), i = run(2, size, chunk);
		printf("run %d: chunk %zu KiB: copy %.3f s (%.2f GB/s), move %.3f s (%.2f GB/s), "
		       "move-ioctl %.3f s; move/copy time %.2f, move-ioctl/copy %.2f\n", r,
		       chunk >> 10, c, size / 1e9 / c, m, size / 1e9 / m, i, m / c, i / c);
	}
	return 0;
}
