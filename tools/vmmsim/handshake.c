/* handshake.c - see handshake.h. */
#include "handshake.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Long enough for a handler started just before us, short enough that a
 * wrong path fails a test quickly. */
#define CONNECT_RETRY_NS (5ULL * 1000000000ULL)
#define CONNECT_RETRY_STEP_NS (10ULL * 1000000ULL)
/* The pause between pieces of a split handshake: long enough that the
 * handler's recv() really returns a partial array. */
#define SPLIT_PAUSE_NS (20ULL * 1000000ULL)

int hs_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t deadline = now_ns() + CONNECT_RETRY_NS;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		msg("--socket %s: path longer than %zu bytes", path, sizeof(sa.sun_path) - 1);
		return -1;
	}
	strcpy(sa.sun_path, path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			msg("socket(AF_UNIX): %m");
			return -1;
		}
		if (!connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
			return fd;
		int err = errno;

		close(fd);
		if ((err != ENOENT && err != ECONNREFUSED) || now_ns() > deadline) {
			msg("--socket %s: connect: %s", path, strerror(err));
			return -1;
		}
		sleep_ns(CONNECT_RETRY_STEP_NS);
	}
}

static int append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	for (;;) {
		va_list ap;

		va_start(ap, fmt);
		int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);

		va_end(ap);
		if (n < 0)
			return -1;
		if ((size_t)n < *cap - *len) {
			*len += (size_t)n;
			return 0;
		}
		char *nb = realloc(*buf, *cap * 2);

		if (!nb)
			return -1;
		*buf = nb;
		*cap *= 2;
	}
}

/* Field order as Firecracker serialises GuestRegionUffdMapping; the page
 * size fields hold BYTES despite "_kib" (a long-standing Firecracker quirk). */
static int append_region(char **buf, size_t *len, size_t *cap, const struct guest *g,
			 unsigned i, enum fc_version v, bool extra)
{
	const struct guest_region *r = &g->region[i];
	int rc = append(buf, len, cap,
			"%s{\"base_host_virt_addr\":%" PRIuPTR ",\"size\":%" PRIu64
			",\"offset\":%" PRIu64,
			i ? "," : "", (uintptr_t)r->base, r->size, r->offset);

	if (!rc && v == FC_1_12)
		rc = append(buf, len, cap, ",\"page_size\":%" PRIu64, g->page_size);
	if (!rc && v >= FC_1_7)
		rc = append(buf, len, cap, ",\"page_size_kib\":%" PRIu64, g->page_size);
	/* A plausible guest physical address: x86 puts memory above 4 GiB in
	 * region 1 after the PCI hole. */
	if (!rc && extra)
		rc = append(buf, len, cap, ",\"gpa_start\":%" PRIu64,
			    r->offset + (i ? (uint64_t)1 << 30 : 0));
	return rc ? rc : append(buf, len, cap, "}");
}

char *hs_build_json(const struct guest *g, enum fc_version v, bool extra)
{
	size_t len = 0, cap = 256;
	char *buf = malloc(cap);

	if (!buf || append(&buf, &len, &cap, "["))
		goto oom;
	for (unsigned i = 0; i < g->nregions; i++)
		if (append_region(&buf, &len, &cap, g, i, v, extra))
			goto oom;
	if (append(&buf, &len, &cap, "]"))
		goto oom;
	return buf;
oom:
	free(buf);
	fail_now(EXIT_SETUP, "out of memory building the handshake JSON");
}

static ssize_t send_piece(int sock, const char *data, size_t len, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * HS_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { (void *)data, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	ssize_t n;

	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n;
}

int hs_send(int sock, const char *data, size_t len, const int *fds, unsigned nfds,
	    unsigned pieces)
{
	size_t done = 0;

	if (pieces < 1)
		pieces = 1;
	for (unsigned i = 0; i < pieces && done < len; i++) {
		size_t end = i + 1 == pieces ? len : len * (i + 1) / pieces;

		if (end <= done)
			continue;
		if (done)
			sleep_ns(SPLIT_PAUSE_NS);
		/* A stream socket may take less than asked: send the rest without
		 * the fds, which went with the first byte. */
		while (done < end) {
			ssize_t n = send_piece(sock, data + done, end - done, fds, done ? 0 : nfds);

			if (n < 0) {
				msg("sending the handshake (%zu of %zu bytes sent): %m", done, len);
				return -1;
			}
			done += (size_t)n;
		}
	}
	return 0;
}
