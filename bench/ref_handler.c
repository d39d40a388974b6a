/* ref_handler.c - the reference on-demand handler of the benchmark: what
 * Firecracker's examples/uffd/on_demand_handler does, in C. One thread; the
 * snapshot mmap'd MAP_PRIVATE; for every page fault one 4 KiB UFFDIO_COPY
 * of the page from that mapping (one 2 MiB UFFDIO_COPY when the handshake
 * says the guest's pages are 2 MiB: hugetlbfs). No fault-around, no zero-page detection,
 * no prefetch: the baseline pagein's engine is measured against.
 *
 *   ref_handler --snapshot FILE --socket PATH
 *
 * Serves one VMM connection after another (Firecracker mainline protocol:
 * a JSON array of regions + one uffd by SCM_RIGHTS). When a VMM hangs up it
 * prints "ref_handler: session ended: faults N" on stderr. SIGTERM ends it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PAGE 4096ULL
#define MAX_REGIONS 64

struct region {
	uint64_t base, size, offset, page;
};

static void die(const char *what)
{
	fprintf(stderr, "ref_handler: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The integer after "key": inside one region object [p, end). */
static int field(const char *p, const char *end, const char *key, uint64_t *out)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *k = memmem(p, (size_t)(end - p), pat, strlen(pat));
	if (!k)
		return -1;
	*out = strtoull(k + strlen(pat), NULL, 10);
	return 0;
}

/* Reads the handshake: JSON (possibly over several reads) + the uffd. */
static int handshake(int conn, struct region *r, int *nr)
{
	static char buf[1 << 16];
	size_t len = 0;
	int uffd = -1, depth = 0, started = 0;
	for (;;) {
		char cbuf[CMSG_SPACE(sizeof(int) * 4)];
		struct iovec iov = { buf + len, sizeof(buf) - 1 - len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		ssize_t n = recvmsg(conn, &mh, 0);
		if (n <= 0)
			return -1;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_type == SCM_RIGHTS && uffd < 0)
				memcpy(&uffd, CMSG_DATA(c), sizeof(int));
		for (ssize_t i = 0; i < n; i++) {
			char ch = buf[len + (size_t)i];
			depth += ch == '[' || ch == '{';
			depth -= ch == ']' || ch == '}';
			started |= ch == '[';
		}
		len += (size_t)n;
		if (started && depth == 0)
			break;
	}
	buf[len] = 0;
	*nr = 0;
	for (char *p = strchr(buf, '{'); p && *nr < MAX_REGIONS; p = strchr(p + 1, '{')) {
		char *end = strchr(p, '}');
		struct region *g = &r[*nr];
		if (!end || field(p, end, "base_host_virt_addr", &g->base) ||
		    field(p, end, "size", &g->size) || field(p, end, "offset", &g->offset))
			return -1;
		/* "page_size" (bytes) from v1.12, "page_size_kib" before (whose
		 * value vmmsim and Firecracker also give in bytes). */
		if (field(p, end, "page_size", &g->page) && field(p, end, "page_size_kib", &g->page))
			g->page = PAGE;
		if (g->page != PAGE && g->page != (2ULL << 20))
			g->page = PAGE;
		(*nr)++;
	}
	return uffd;
}

static unsigned long serve(int conn, const uint8_t *snap, uint64_t snap_size)
{
	struct region r[MAX_REGIONS];
	int nr, uffd = handshake(conn, r, &nr);
	unsigned long faults = 0;
	if (uffd < 0)
		return 0;
	struct pollfd pf[2] = { { uffd, POLLIN, 0 }, { conn, POLLIN, 0 } };
	for (;;) {
		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			die("poll");
		if (pf[1].revents)	/* the VMM hung up (it sends nothing else) */
			break;
		struct uffd_msg m;
		if (!(pf[0].revents & POLLIN) || read(uffd, &m, sizeof(m)) != sizeof(m))
			continue;	/* EAGAIN: another read took it */
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;	/* the benchmark makes no discards */
		uint64_t fault = m.arg.pagefault.address;
		for (int i = 0; i < nr; i++) {
			if (fault < r[i].base || fault >= r[i].base + r[i].size)
				continue;
			uint64_t ps = r[i].page, addr = fault & ~(ps - 1);
			uint64_t off = r[i].offset + (addr - r[i].base);
			struct uffdio_copy cp = { .dst = addr, .src = (uintptr_t)(snap + off),
						  .len = ps };
			if (off + ps > snap_size)
				break;
			int rc;
			faults++;
			while ((rc = ioctl(uffd, UFFDIO_COPY, &cp)) && errno == EAGAIN)
				cp.copy = 0;
			/* EEXIST: another fault filled it; COPY then woke nobody. */
			if (rc && errno == EEXIST) {
				struct uffdio_range w = { addr, ps };
				ioctl(uffd, UFFDIO_WAKE, &w);
			}
			break;
		}
	}
	close(uffd);
	return faults;
}

int main(int argc, char **argv)
{
	const char *snap_path = NULL, *sock_path = NULL;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--snapshot"))
			snap_path = argv[i + 1];
		else if (!strcmp(argv[i], "--socket"))
			sock_path = argv[i + 1];
	}
	if (!snap_path || !sock_path) {
		fprintf(stderr, "usage: ref_handler --snapshot FILE --socket PATH\n");
		return 2;
	}
	int fd = open(snap_path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die(snap_path);
	const uint8_t *snap = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (snap == MAP_FAILED)
		die("mmap");
	int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	unlink(sock_path);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 4))
		die(sock_path);
	for (;;) {
		int conn = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			die("accept");
		unsigned long faults = serve(conn, snap, (uint64_t)st.st_size);
		close(conn);
		fprintf(stderr, "ref_handler: session ended: faults %lu\n", faults);
	}
}
