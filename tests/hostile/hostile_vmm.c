/* hostile_vmm.c - a compromised VMM against `pagein serve`.
 *
 * Each subcommand does one thing a VMM under an attacker's control could do
 * to the daemon over Firecracker's own protocols (issue 7, items 1-8): it
 * creates its own guest memory, a userfaultfd registered as Firecracker
 * registers it, sends the handshake (mainline: [uffd]; secret hiding:
 * [uffd, guest memory memfd, bitmap memfd with every bit set], then fault
 * requests on the socket), and then misbehaves. tests/sh/hostile_vmm.sh
 * runs every attack with an honest VM (vmmsim) restoring beside it.
 *
 * Standalone on purpose: it shares no code with pagein or vmmsim, so that
 * it speaks the protocol as written, not as either side implements it.
 *
 * Exit: 0 the daemon behaved as it must toward this VMM, 1 it did not
 * ("hostile: FAIL: why" on stdout), 2 usage or setup error, 3 watchdog
 * (no progress: the guest or the attack is frozen), 77 skip (reason
 * printed). An attack whose only victim may be itself (items 5-7) exits 0
 * whatever the daemon does to its session; the driver script judges the
 * daemon and the honest VM. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <json-c/json.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif

#define PAGE ((uint64_t)4096)
#define HUGE_PAGE ((uint64_t)2 << 20)
#define EXIT_BAD 1
#define EXIT_SETUP 2
#define EXIT_STALL 3
#define EXIT_SKIP 77
#define REQ_FLAGS 16 /* KVM_MEMORY_EXIT_FLAG_USERFAULT */

/* ---- options and messages ---------------------------------------------- */

static struct {
	const char *socket, *snapshot;
	uint64_t mem_size;
	double timeout, seconds, hold, expect_closed;
	unsigned count, rounds;
	uint64_t bad_first, bad_pages;
	bool keep_socket, keep_uffd, untouched, no_read;
} opt = {
	.timeout = 20, .seconds = -1, .hold = -1, .expect_closed = -1, .rounds = 30,
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	flockfile(stdout);
	fputs("hostile: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	funlockfile(stdout);
	fflush(stdout);
	va_end(ap);
}

static void quit(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void quit(int code, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	static const char *tag[] = {[EXIT_BAD] = "FAIL: ", [EXIT_SETUP] = "setup: ",
				    [EXIT_STALL] = "watchdog: "};
	printf("hostile: %s%s\n", code == EXIT_SKIP ? "skip: " : code <= EXIT_STALL ? tag[code] : "",
	       line);
	fflush(stdout);
	_exit(code);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ---- watchdog: exit 3 when what we wait for makes no progress ---------- */

static atomic_ulong progress;
static const char *volatile doing = "starting";

static void *watchdog(void *arg)
{
	(void)arg;
	unsigned long last = atomic_load(&progress);
	double since = now_s();
	for (;;) {
		sleep_s(0.05);
		unsigned long p = atomic_load(&progress);
		if (p != last) {
			last = p;
			since = now_s();
		} else if (now_s() - since > opt.timeout) {
			quit(EXIT_STALL, "no progress for %.0f s while %s", opt.timeout, doing);
		}
	}
	return NULL;
}

static void tick(void)
{
	atomic_fetch_add(&progress, 1);
}

static void start_watchdog(void)
{
	pthread_t th;
	if (pthread_create(&th, NULL, watchdog, NULL))
		quit(EXIT_SETUP, "pthread_create: %s", strerror(errno));
	pthread_detach(th);
}

static void spawn(void *(*fn)(void *), void *arg)
{
	pthread_t th;
	int e = pthread_create(&th, NULL, fn, arg);
	if (e)
		quit(EXIT_SETUP, "pthread_create: %s", strerror(e));
	pthread_detach(th);
}

/* ---- guest memory, as Firecracker sets it up ---------------------------- */

enum mem_kind { MEM_ANON, MEM_MEMFD, MEM_HUGETLB };

struct guest {
	enum mem_kind kind;
	uint8_t *base;
	uint64_t size, page_size;
	int uffd, memfd, bitmap_fd;
	_Atomic uint64_t *bitmap; /* our own view of the userfault bitmap */
	size_t bitmap_len;
};

static uint64_t guest_size(void)
{
	if (opt.mem_size)
		return opt.mem_size;
	struct stat st;
	if (opt.snapshot && stat(opt.snapshot, &st) == 0 && st.st_size >= (off_t)PAGE)
		return (uint64_t)st.st_size & ~(PAGE - 1);
	return 16ULL << 20;
}

static int open_uffd(enum mem_kind kind)
{
	uint64_t features = UFFD_FEATURE_EVENT_REMOVE;
	if (kind == MEM_MEMFD)
		features |= UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM;
	else if (kind == MEM_HUGETLB)
		features |= UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MINOR_HUGETLBFS;
	/* O_NONBLOCK and kernel-mode faults allowed: Firecracker's flags. */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		quit(EXIT_SETUP, "userfaultfd: %s", strerror(errno));
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	if (ioctl(fd, UFFDIO_API, &api))
		quit(EXIT_SETUP, "UFFDIO_API(0x%" PRIx64 "): %s", features, strerror(errno));
	return fd;
}

/* Returns 0, or EXIT_SKIP when there are no huge pages to be had. */
static int guest_open(struct guest *g, enum mem_kind kind, bool secret)
{
	memset(g, 0, sizeof(*g));
	g->kind = kind;
	g->page_size = kind == MEM_HUGETLB ? HUGE_PAGE : PAGE;
	g->size = guest_size() & ~(g->page_size - 1);
	g->memfd = g->bitmap_fd = -1;
	if (g->size == 0)
		quit(EXIT_SETUP, "guest memory smaller than one page");
	void *p;
	if (kind == MEM_ANON) {
		p = mmap(NULL, g->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	} else {
		unsigned flags = MFD_CLOEXEC | (kind == MEM_HUGETLB ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
		g->memfd = memfd_create("guest_mem", flags);
		if (g->memfd < 0 && kind == MEM_HUGETLB)
			return EXIT_SKIP;
		if (g->memfd < 0 || ftruncate(g->memfd, (off_t)g->size))
			quit(EXIT_SETUP, "guest memfd of %" PRIu64 " bytes: %s", g->size, strerror(errno));
		/* A shared hugetlbfs mapping reserves its pages: ENOMEM = none. */
		p = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_SHARED, g->memfd, 0);
		if (p == MAP_FAILED && kind == MEM_HUGETLB)
			return EXIT_SKIP;
	}
	if (p == MAP_FAILED)
		quit(EXIT_SETUP, "mmap of %" PRIu64 " bytes of guest memory: %s", g->size, strerror(errno));
	g->base = p;
	g->uffd = open_uffd(kind);
	struct uffdio_register reg = {
		.range = {(uintptr_t)g->base, g->size},
		.mode = UFFDIO_REGISTER_MODE_MISSING |
			(kind == MEM_ANON ? 0 : UFFDIO_REGISTER_MODE_MINOR),
	};
	if (ioctl(g->uffd, UFFDIO_REGISTER, &reg))
		quit(EXIT_SETUP, "UFFDIO_REGISTER: %s", strerror(errno));
	if (secret) {
		uint64_t words = (g->size / g->page_size + 63) / 64;
		g->bitmap_len = (size_t)((words * 8 + PAGE - 1) & ~(PAGE - 1));
		g->bitmap_fd = memfd_create("userfault_bitmap", MFD_CLOEXEC);
		if (g->bitmap_fd < 0 || ftruncate(g->bitmap_fd, (off_t)g->bitmap_len))
			quit(EXIT_SETUP, "bitmap memfd: %s", strerror(errno));
		p = mmap(NULL, g->bitmap_len, PROT_READ | PROT_WRITE, MAP_SHARED, g->bitmap_fd, 0);
		if (p == MAP_FAILED)
			quit(EXIT_SETUP, "mmap of the bitmap: %s", strerror(errno));
		g->bitmap = p;
		memset(p, 0xff, g->bitmap_len);
	}
	return 0;
}

static bool bit_set(const struct guest *g, uint64_t offset)
{
	uint64_t bit = offset / g->page_size;
	return atomic_load(&g->bitmap[bit / 64]) >> (bit % 64) & 1;
}

/* ---- the snapshot, for checking what the guest reads -------------------- */

static int snap_fd = -1;

static void snap_open(void)
{
	if (!opt.snapshot)
		quit(EXIT_SETUP, "--snapshot is required for this attack");
	snap_fd = open(opt.snapshot, O_RDONLY | O_CLOEXEC);
	if (snap_fd < 0)
		quit(EXIT_SETUP, "%s: %s", opt.snapshot, strerror(errno));
}

/* The snapshot's bytes at off (zeros past its end). */
static void snap_read(uint64_t off, void *buf, size_t len)
{
	memset(buf, 0, len);
	for (size_t done = 0; done < len;) {
		ssize_t n = pread(snap_fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			quit(EXIT_SETUP, "reading %s: %s", opt.snapshot, strerror(errno));
		if (n == 0)
			break;
		done += (size_t)n;
	}
}

static bool snap_page_is_zero(uint64_t off)
{
	static const uint8_t zero[PAGE];
	uint8_t buf[PAGE];
	snap_read(off, buf, PAGE);
	return memcmp(buf, zero, PAGE) == 0;
}

/* ---- the socket ---------------------------------------------------------- */

static int connect_daemon(bool nonblock, bool retry)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!opt.socket || strlen(opt.socket) >= sizeof(sa.sun_path))
		quit(EXIT_SETUP, "--socket missing or too long");
	strcpy(sa.sun_path, opt.socket);
	double deadline = now_s() + (retry ? 5 : 0);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		int e = errno;
		close(fd);
		/* EAGAIN: the listen backlog is full for now. */
		if (!retry || (e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || now_s() > deadline) {
			errno = e;
			return -e;
		}
		sleep_s(0.01);
	}
}

static ssize_t send_fds(int sock, const void *data, size_t len, const int *fds, int nfds)
{
	union {
		char b[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {(void *)data, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Writes all of buf; false if the daemon closed the connection. */
static bool send_all(int sock, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = send(sock, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pf = {.fd = sock, .events = POLLOUT};
			poll(&pf, 1, 100);
			continue;
		}
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* The handshake in one sendmsg(), as Firecracker sends it: one region at
 * snapshot offset 0, with every field Firecracker v1.12+ sets. Returns the
 * socket, or -1 if the daemon is not there (any other failure exits). */
static int try_handshake(const struct guest *g, bool secret, bool retry)
{
	char json[512];
	int n = snprintf(json, sizeof(json),
			 "[{\"base_host_virt_addr\":%" PRIuPTR ",\"size\":%" PRIu64
			 ",\"offset\":0,\"page_size\":%" PRIu64 ",\"page_size_kib\":%" PRIu64 "}]",
			 (uintptr_t)g->base, g->size, g->page_size, g->page_size);
	int fds[3] = {g->uffd, g->memfd, g->bitmap_fd};
	int sock = connect_daemon(false, retry);
	if (sock < 0)
		return -1;
	if (send_fds(sock, json, (size_t)n, fds, secret ? 3 : 1) != n)
		quit(EXIT_SETUP, "sending the handshake: %s", strerror(errno));
	return sock;
}

static int handshake(const struct guest *g, bool secret)
{
	int sock = try_handshake(g, secret, true);
	if (sock < 0)
		quit(EXIT_SETUP, "connect %s: %s", opt.socket, strerror(errno));
	return sock;
}

/* Appends one fault request, as a vCPU's stage-2 exit produces it. */
static void request(uint64_t offset, char *buf, size_t *len)
{
	*len += (size_t)sprintf(buf + *len, "{\"vcpu\":0,\"offset\":%" PRIu64 ",\"flags\":%d,\"token\":null}",
				offset, REQ_FLAGS);
}

/* Concatenated JSON replies, read one object at a time. */
struct replies {
	int sock;
	char buf[1 << 16];
	size_t len;
};

enum { R_OBJECT, R_CLOSED, R_TIMEOUT };

static int next_reply(struct replies *r, double timeout, json_object **out)
{
	double deadline = now_s() + timeout;
	for (;;) {
		size_t ws = 0;
		while (ws < r->len && strchr(" \t\r\n", r->buf[ws]))
			ws++;
		if (ws < r->len) {
			json_tokener *tok = json_tokener_new();
			json_object *o = json_tokener_parse_ex(tok, r->buf + ws, (int)(r->len - ws));
			enum json_tokener_error e = json_tokener_get_error(tok);
			size_t end = ws + json_tokener_get_parse_end(tok);
			json_tokener_free(tok);
			if (o) {
				memmove(r->buf, r->buf + end, r->len - end);
				r->len -= end;
				*out = o;
				return R_OBJECT;
			}
			if (e != json_tokener_continue)
				quit(EXIT_BAD, "the daemon sent malformed JSON: %.*s", (int)(r->len - ws),
				     r->buf + ws);
		}
		if (r->len == sizeof(r->buf))
			quit(EXIT_BAD, "a reply longer than %zu bytes", sizeof(r->buf));
		double left = deadline - now_s();
		if (left <= 0)
			return R_TIMEOUT;
		struct pollfd pf = {.fd = r->sock, .events = POLLIN};
		if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		ssize_t n = recv(r->sock, r->buf + r->len, sizeof(r->buf) - r->len, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return R_CLOSED;
		if (n > 0)
			r->len += (size_t)n;
	}
}

static bool json_u64(json_object *o, const char *key, uint64_t *v)
{
	json_object *f;
	if (!json_object_object_get_ex(o, key, &f) || !json_object_is_type(f, json_type_int))
		return false;
	*v = (uint64_t)json_object_get_int64(f);
	return true;
}

static const char *json_text(json_object *o)
{
	return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
}

static bool sock_closed(int sock)
{
	struct pollfd pf = {.fd = sock, .events = POLLIN | POLLRDHUP};
	if (poll(&pf, 1, 0) <= 0)
		return false;
	if (pf.revents & (POLLHUP | POLLRDHUP | POLLERR))
		return true;
	char c;
	return recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* ---- SIGBUS on guest memory (a poisoned page) ---------------------------- */

static __thread sigjmp_buf *volatile bus_jmp; /* volatile: set around the access */

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (bus_jmp)
		siglongjmp(*bus_jmp, 1);
	char line[128];
	int n = snprintf(line, sizeof(line), "hostile: %s at %p outside a guarded access\n",
			 sig == SIGBUS ? "SIGBUS" : "SIGSEGV", si->si_addr);
	if (write(1, line, (size_t)n) < 0)
		_exit(EXIT_SETUP);
	_exit(EXIT_SETUP);
}

/* Reads one byte of guest memory; false if the access raised SIGBUS. */
static bool guarded_read(const volatile uint8_t *p, uint8_t *out)
{
	sigjmp_buf jb;
	if (sigsetjmp(jb, 1)) {
		bus_jmp = NULL;
		return false;
	}
	bus_jmp = &jb;
	*out = *p;
	bus_jmp = NULL;
	return true;
}

static void catch_sigbus(void)
{
	struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
}

/* ==== item 1: a Firecracker older than v1.12 =============================== */

/* Mainline handshake, then close the socket at once (Firecracker up to v1.11
 * drops the stream when its sendmsg() returns) while keeping the uffd; the
 * guest then runs and must read every byte of the snapshot. */
static int attack_close_after_handshake(void)
{
	struct guest g;
	snap_open();
	guest_open(&g, MEM_ANON, false);
	int sock = handshake(&g, false);
	if (!opt.keep_socket)
		close(sock);
	say("handshake sent, socket %s; reading %" PRIu64 " pages", opt.keep_socket ? "kept" : "closed",
	    g.size / PAGE);
	doing = "reading guest memory (a fault nobody serves?)";
	start_watchdog();
	uint8_t want[PAGE];
	for (uint64_t off = 0; off < g.size; off += PAGE) {
		snap_read(off, want, PAGE);
		if (memcmp(g.base + off, want, PAGE) != 0)
			quit(EXIT_BAD, "guest page at offset 0x%" PRIx64 " differs from the snapshot", off);
		tick();
	}
	say("ok: %" PRIu64 " pages read and verified", g.size / PAGE);
	return 0;
}

/* ==== item 3: a discard pending while the daemon stops ===================== */

struct discarder {
	struct guest *g;
	int sock;
	atomic_bool in_call;
	atomic_ulong calls;
	double call_start;
	bool daemon_gone;
};

static void *discard_loop(void *arg)
{
	struct discarder *d = arg;
	uint64_t pages = d->g->size / PAGE, x = 88172645463325252ULL;
	double end = opt.seconds > 0 ? now_s() + opt.seconds : 1e300;
	while (now_s() < end) {
		bool gone = sock_closed(d->sock);
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t first = x % pages, n = 1 + (x >> 32) % 16;
		if (first + n > pages)
			n = pages - first;
		d->call_start = now_s();
		atomic_store(&d->in_call, true);
		/* Each call queues a REMOVE and waits until the daemon reads it. */
		if (madvise(d->g->base + first * PAGE, n * PAGE, MADV_DONTNEED))
			quit(EXIT_SETUP, "madvise: %s", strerror(errno));
		atomic_store(&d->in_call, false);
		atomic_fetch_add(&d->calls, 1);
		if (gone) {
			/* One more discard after the daemon went away returned. */
			d->daemon_gone = true;
			break;
		}
	}
	return NULL;
}

static int attack_pending_discard(void)
{
	struct guest g;
	guest_open(&g, MEM_ANON, false);
	int sock = handshake(&g, false);
	if (!opt.keep_uffd) {
		/* A VMM that keeps no copy of its uffd: once the daemon closes its
		 * copy the registration goes, and a pending madvise() returns. */
		close(g.uffd);
	}
	doing = "touching the first page";
	start_watchdog();
	volatile uint8_t c = g.base[0];
	(void)c;
	tick();
	struct discarder d = {.g = &g, .sock = sock};
	pthread_t th;
	if (pthread_create(&th, NULL, discard_loop, &d))
		quit(EXIT_SETUP, "pthread_create: %s", strerror(errno));
	say("ready: session serves, discarding from another thread");
	double stuck = opt.hold > 0 ? opt.hold : 5;
	for (;;) {
		sleep_s(0.05);
		tick(); /* the check below is this attack's own watchdog */
		if (atomic_load(&d.in_call) && now_s() - d.call_start > stuck)
			quit(EXIT_BAD, "madvise(MADV_DONTNEED) has not returned for %.0f s (%lu returned before)",
			     stuck, atomic_load(&d.calls));
		if (pthread_tryjoin_np(th, NULL) == 0)
			break;
	}
	say("ok: %lu discards returned%s", atomic_load(&d.calls),
	    d.daemon_gone ? ", the last one after the daemon closed the connection" : "");
	return 0;
}

/* ==== item 4: a poisoned page asked for on the stage-2 path ================= */

/* Sends one request and waits for its reply: 1 = a reply (in *out),
 * 0 = the daemon closed the connection, -1 = no reply in 5 s. */
static int ask(struct replies *r, uint64_t offset, json_object **out)
{
	char buf[128];
	size_t len = 0;
	request(offset, buf, &len);
	if (!send_all(r->sock, buf, len))
		return 0;
	int k = next_reply(r, 5, out);
	return k == R_OBJECT ? 1 : k == R_CLOSED ? 0 : -1;
}

/* Waits for the daemon to answer a request for page 0: the session is up
 * (the handshake gets no reply of its own). False if it never answers. */
static bool session_started(int sock)
{
	struct replies *r = calloc(1, sizeof(*r));
	json_object *o = NULL;
	r->sock = sock;
	int k = ask(r, 0, &o);
	if (k == 1 && r->len)
		quit(EXIT_BAD, "unasked-for bytes after a reply: %.*s", (int)r->len, r->buf);
	if (k == 1)
		json_object_put(o);
	free(r);
	tick();
	return k == 1;
}

/* Judges the reply to a request for a page the snapshot cannot give: it
 * must be an error reply, and the page's bit must still be set. */
static void judge_bad_page_reply(const struct guest *g, json_object *o, uint64_t off)
{
	uint64_t len = 0;
	bool has_len = json_u64(o, "len", &len);
	bool error = json_object_object_get_ex(o, "error", NULL);
	bool bit = bit_set(g, off);
	say("reply for offset 0x%" PRIx64 ": %s; userfault bit %s", off, json_text(o),
	    bit ? "still set" : "cleared");
	if (!error || (has_len && len != 0))
		quit(EXIT_BAD, "a request for page 0x%" PRIx64 ", which the snapshot cannot give, was "
		     "answered as a success (len %" PRIu64 "): KVM would map a zero page", off, len);
	if (!bit)
		quit(EXIT_BAD, "the userfault bit of page 0x%" PRIx64 " (not filled) was cleared", off);
}

static int attack_poison_request(void)
{
	struct guest g;
	snap_open();
	catch_sigbus();
	guest_open(&g, MEM_MEMFD, true);
	if (!opt.bad_pages)
		quit(EXIT_SETUP, "--bad-first PAGE --bad-pages N (the corrupt chunk) are required");
	/* A stored (non-zero) page of the corrupt chunk: zero pages come from
	 * the index, not from the chunk's bytes. */
	uint64_t off = UINT64_MAX;
	for (uint64_t p = opt.bad_first; p < opt.bad_first + opt.bad_pages; p++) {
		if (p * PAGE < g.size && !snap_page_is_zero(p * PAGE)) {
			off = p * PAGE;
			if (!opt.untouched)
				break; /* the first one; --untouched takes the last */
		}
	}
	if (off == UINT64_MAX)
		quit(EXIT_SETUP, "no stored page in pages %" PRIu64 "+%" PRIu64, opt.bad_first, opt.bad_pages);
	int sock = handshake(&g, true);
	struct replies *r = calloc(1, sizeof(*r));
	r->sock = sock;
	json_object *o = NULL;
	doing = "waiting for the daemon";
	start_watchdog();
	tick();
	if (!opt.untouched) {
		/* The guest touches it first: --on-corrupt poison poisons it. */
		uint8_t b;
		bool ok = guarded_read(g.base + off, &b);
		tick();
		if (ok) {
			uint8_t want[PAGE];
			snap_read(off, want, PAGE);
			if (memcmp(g.base + off, want, PAGE))
				quit(EXIT_BAD, "page 0x%" PRIx64 " of the corrupt chunk was mapped with wrong bytes", off);
			quit(EXIT_SETUP, "page 0x%" PRIx64 " read back as good: is its chunk corrupt?", off);
		}
		say("page 0x%" PRIx64 " is poisoned (SIGBUS on access), as it must be", off);
		int k = ask(r, off, &o);
		tick();
		if (k == 0)
			quit(EXIT_BAD, "the daemon ended the session on a request for a poisoned page "
			     "instead of an error reply");
		if (k < 0)
			quit(EXIT_BAD, "no reply in 5 s to a request for a poisoned page");
		judge_bad_page_reply(&g, o, off);
		json_object_put(o);
	} else {
		/* Never touched: the stage-2 path meets the bad chunk itself. An
		 * error reply or the end of the session are both honest. */
		int k = ask(r, off, &o);
		tick();
		if (k <= 0) {
			say("ok: the daemon ended the session (%s) on a request in the corrupt chunk",
			    k ? "no reply" : "closed");
			return 0;
		}
		judge_bad_page_reply(&g, o, off);
		json_object_put(o);
	}
	/* The session goes on: a good page is still served. */
	int k = ask(r, 0, &o);
	uint64_t len = 0;
	if (k != 1 || !json_u64(o, "len", &len) || len != PAGE)
		quit(EXIT_BAD, "after the error reply, a request for page 0 got %s",
		     k == 1 ? json_text(o) : k == 0 ? "the connection closed" : "no reply");
	say("ok: error reply, bit kept, and the session goes on");
	return 0;
}

/* ==== item 5: truncating memory the daemon maps ============================= */

struct truncator {
	int fd;
	uint64_t size;
	atomic_bool stop;
	unsigned long cycles;
	int err; /* errno of a failed ftruncate, which ends the loop */
};

/* Shrinks the file to nothing and grows it back, over and over, keeping it
 * whole for a random 0-100 us in between: long enough, now and then, for
 * the daemon to make its mapping of a page resident, short enough to take
 * the page away again while it copies into it. */
static void *truncate_loop(void *arg)
{
	struct truncator *t = arg;
	uint64_t x = (uint64_t)now_s() * 1000003 | 1;
	while (!atomic_load(&t->stop)) {
		if (ftruncate(t->fd, 0) || ftruncate(t->fd, (off_t)t->size)) {
			t->err = errno;
			break;
		}
		t->cycles++;
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double until = now_s() + (double)(x % 100) / 1e6;
		while (now_s() < until)
			;
	}
	return NULL;
}

/* Streams requests for every page in turn (a window of 16 in flight) until
 * the daemon closes the connection, `max` requests are answered, or
 * `seconds` pass; returns the replies seen. */
static unsigned long stream_requests(const struct guest *g, int sock, unsigned long max,
				     double seconds, bool *closed)
{
	struct replies *r = calloc(1, sizeof(*r));
	r->sock = sock;
	unsigned long sent = 0, got = 0;
	uint64_t pages = g->size / g->page_size;
	double end = now_s() + seconds;
	*closed = false;
	while (now_s() < end && got < max) {
		char buf[128];
		size_t len = 0;
		while (sent - got < 16 && sent < max) {
			len = 0;
			request((sent % pages) * g->page_size, buf, &len);
			if (!send_all(sock, buf, len)) {
				*closed = true;
				goto out;
			}
			sent++;
		}
		json_object *o;
		int k = next_reply(r, 0.2, &o);
		if (k == R_CLOSED) {
			*closed = true;
			break;
		}
		if (k == R_OBJECT) {
			got++;
			tick();
			json_object_put(o);
		}
	}
out:
	free(r);
	return got;
}

static int attack_truncate_bitmap(void)
{
	struct guest g;
	guest_open(&g, MEM_MEMFD, true);
	int sock = handshake(&g, true);
	doing = "waiting for the first reply";
	start_watchdog();
	if (!session_started(sock))
		quit(EXIT_SETUP, "no reply to a first request: session not started");
	munmap((void *)g.bitmap, g.bitmap_len);
	if (ftruncate(g.bitmap_fd, 0))
		quit(EXIT_SETUP, "ftruncate(bitmap, 0): %s", strerror(errno));
	say("bitmap memfd truncated to 0 bytes; sending requests");
	doing = "sending requests";
	bool closed;
	unsigned long got = stream_requests(&g, sock, ULONG_MAX, opt.seconds > 0 ? opt.seconds : 2, &closed);
	say("done: %lu replies, connection %s", got, closed ? "closed by the daemon" : "still open");
	return 0;
}

static int attack_truncate_hugetlb_mem(void)
{
	unsigned rounds = 0, closed_rounds = 0;
	unsigned long cycles = 0;
	doing = "truncating guest memory";
	start_watchdog();
	for (; rounds < opt.rounds; rounds++) {
		struct guest g;
		if (guest_open(&g, MEM_HUGETLB, true))
			quit(EXIT_SKIP, "no 2 MiB huge pages for a hugetlbfs memfd");
		int sock = try_handshake(&g, true, rounds == 0);
		if (sock < 0) {
			say("done: after %u rounds the daemon no longer accepts connections", rounds);
			return 0;
		}
		if (!session_started(sock)) {
			if (!rounds)
				quit(EXIT_SETUP, "no reply to a first request: session not started");
			say("done: after %u rounds the daemon no longer answers", rounds);
			return 0;
		}
		/* The daemon's mapping of this memfd loses its pages under it,
		 * between its own populate and its copy if we are quick. */
		struct truncator t = {.fd = g.memfd, .size = g.size};
		pthread_t th;
		if (pthread_create(&th, NULL, truncate_loop, &t))
			quit(EXIT_SETUP, "pthread_create: %s", strerror(errno));
		bool closed;
		/* One pass: a page once in costs the daemon no copy again. */
		stream_requests(&g, sock, g.size / g.page_size, 5, &closed);
		atomic_store(&t.stop, true);
		pthread_join(th, NULL);
		if (t.err)
			quit(EXIT_SETUP, "ftruncate of the hugetlbfs memfd: %s", strerror(t.err));
		cycles += t.cycles;
		closed_rounds += closed;
		close(sock);
		close(g.uffd);
		close(g.memfd);
		close(g.bitmap_fd);
		munmap(g.base, g.size);
		munmap((void *)g.bitmap, g.bitmap_len);
	}
	say("done: %u rounds (%lu truncations), %u ended by the daemon", rounds, cycles, closed_rounds);
	return 0;
}

/* ==== item 6: clearing O_NONBLOCK on the shared uffd ======================== */

struct toucher {
	struct guest *g;
	atomic_ulong done;
	atomic_bool stop;
	unsigned id;
};

static void *touch_loop(void *arg)
{
	struct toucher *t = arg;
	uint64_t pages = t->g->size / PAGE, x = 0x9e3779b97f4a7c15ULL * (t->id + 1);
	while (!atomic_load(&t->stop)) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		volatile uint8_t c = t->g->base[(x % pages) * PAGE];
		(void)c;
		atomic_fetch_add(&t->done, 1);
	}
	return NULL;
}

static void *discard_burst(void *arg)
{
	struct toucher *t = arg;
	uint64_t pages = t->g->size / PAGE, x = 0x2545f4914f6cdd1dULL;
	while (!atomic_load(&t->stop)) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t first = x % pages, n = 1 + (x >> 40) % 8;
		if (first + n > pages)
			n = pages - first;
		madvise(t->g->base + first * PAGE, n * PAGE, MADV_DONTNEED);
	}
	return NULL;
}

/* Mainline handshake; then clear O_NONBLOCK on our copy of the uffd: it is
 * the open file description the daemon reads, so its reads now block when
 * nothing is pending. Balloon discards and faults for a moment make the
 * daemon read when nothing may be left (a fill answered EAGAIN while the
 * madvise() that caused it has not finished), then we sit idle. */
static int attack_clear_nonblock(void)
{
	struct guest g;
	guest_open(&g, MEM_ANON, false);
	int sock = handshake(&g, false);
	int fl = fcntl(g.uffd, F_GETFL);
	if (fl < 0 || fcntl(g.uffd, F_SETFL, fl & ~O_NONBLOCK))
		quit(EXIT_SETUP, "fcntl(uffd, F_SETFL, ~O_NONBLOCK): %s", strerror(errno));
	say("O_NONBLOCK cleared on the shared uffd");
	struct toucher t[4];
	for (unsigned i = 0; i < 4; i++) {
		t[i] = (struct toucher){.g = &g, .id = i};
		spawn(i ? touch_loop : discard_burst, &t[i]);
	}
	sleep_s(opt.seconds > 0 ? opt.seconds : 1);
	for (unsigned i = 0; i < 4; i++)
		atomic_store(&t[i].stop, true);
	say("sitting idle%s", opt.hold > 0 ? "" : " until the daemon closes the connection");
	double end = opt.hold > 0 ? now_s() + opt.hold : 1e300;
	while (now_s() < end && !sock_closed(sock))
		sleep_s(0.1);
	say("done");
	return 0;
}

/* ==== item 7: a flood of valid fault requests ============================== */

static void *drain_replies(void *arg)
{
	int sock = *(int *)arg;
	char buf[1 << 16];
	while (recv(sock, buf, sizeof(buf), 0) > 0)
		;
	return NULL;
}

static int attack_flood_requests(void)
{
	struct guest g;
	guest_open(&g, MEM_MEMFD, true);
	int sock = handshake(&g, true);
	/* As deep a queue as an unprivileged process may have: the daemon has
	 * requests to read even when we are not scheduled for a while. */
	int sndbuf = 1 << 30;
	setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (!opt.no_read)
		spawn(drain_replies, &sock);
	/* Valid requests for every page in turn, written once and sent over
	 * and over as fast as the socket takes them; once a page is in, each
	 * costs the daemon almost nothing but its reply. */
	uint64_t pages = g.size / PAGE;
	char *buf = malloc(pages * 64);
	size_t len = 0;
	if (!buf)
		quit(EXIT_SETUP, "out of memory");
	for (uint64_t p = 0; p < pages; p++)
		request(p * PAGE, buf, &len);
	unsigned long sent = 0;
	double seconds = opt.seconds > 0 ? opt.seconds : 30, end = now_s() + seconds;
	say("flooding for %.0f s%s", seconds, opt.no_read ? ", never reading a reply" : "");
	while (now_s() < end) {
		if (!send_all(sock, buf, len)) {
			say("done: the daemon closed the connection after %lu requests", sent);
			return 0;
		}
		sent += pages;
	}
	say("done: %lu requests sent", sent);
	return 0;
}

/* ==== item 8: half handshakes and fd exhaustion ============================ */

struct half {
	int fd;
	const char *data; /* what this connection sends, never a whole handshake */
	size_t len, sent;
	double done_at;   /* when it stopped sending (all sent, or cut off) */
	double closed_at; /* when the daemon closed it; 0 = still open */
	bool refused;     /* the daemon closed it while we were still sending */
};

static char *repeat(const char *head, char fill, size_t n)
{
	size_t h = strlen(head);
	char *p = malloc(h + n + 1);
	if (!p)
		quit(EXIT_SETUP, "out of memory");
	memcpy(p, head, h);
	memset(p + h, fill, n);
	p[h + n] = 0;
	return p;
}

static void half_poll(struct half *h, unsigned n, int ms)
{
	struct pollfd *pf = calloc(n, sizeof(*pf));
	for (unsigned i = 0; i < n; i++) {
		pf[i].fd = h[i].closed_at ? -1 : h[i].fd;
		pf[i].events = POLLRDHUP | (h[i].sent < h[i].len ? POLLOUT : 0);
	}
	poll(pf, n, ms);
	double t = now_s();
	for (unsigned i = 0; i < n; i++) {
		struct half *c = &h[i];
		if (c->closed_at)
			continue;
		if (pf[i].revents & (POLLHUP | POLLRDHUP | POLLERR)) {
			c->closed_at = t;
			c->refused = c->sent < c->len;
			if (!c->done_at)
				c->done_at = t;
			continue;
		}
		while (c->sent < c->len) {
			ssize_t k = send(c->fd, c->data + c->sent, c->len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (k > 0) {
				c->sent += (size_t)k;
				tick();
				continue;
			}
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			c->closed_at = c->done_at = t;
			c->refused = true;
			break;
		}
		if (c->sent == c->len && !c->done_at)
			c->done_at = t;
	}
	free(pf);
}

/* N connections, each sending part of a handshake and then nothing: a
 * cut-off region list, a long unterminated string (up to 1 MB buffered by
 * a naive JSON parser), 900 KB of leading whitespace; plus one sending
 * 1.5 MiB of whitespace, more than any handshake may be. They are held
 * for --hold seconds; --expect-closed S: each must have been closed by the
 * daemon within S seconds of its last byte. */
static int attack_half_handshakes(void)
{
	unsigned n = opt.count ? opt.count : 200;
	const char *big = repeat("[{\"base_host_virt_addr\":1,\"x\":\"", 'a', 1000000);
	const char *kinds[4] = {
		"[{\"base_host_virt_addr\":140187504033792,\"size\":134217728,\"offs",
		big,
		repeat("", ' ', 900000),
		big,
	};
	const char *ws_over = repeat("", ' ', 3u << 19);
	struct half *h = calloc(n + 1, sizeof(*h)), *over = NULL;
	double t0 = now_s();
	unsigned opened = 0;
	for (unsigned i = 0; i <= n; i++) {
		int fd = connect_daemon(true, true);
		if (fd < 0) {
			say("connection %u: connect: %s", i, strerror(-fd));
			continue;
		}
		if (i == n)
			over = &h[opened];
		h[opened].fd = fd;
		h[opened].data = i == n ? ws_over : kinds[i % 4];
		h[opened].len = strlen(h[opened].data);
		opened++;
	}
	if (!over)
		quit(EXIT_SETUP, "could not open the whitespace connection");
	say("%u connections open", opened);
	doing = "sending half handshakes";
	start_watchdog();
	/* Send until everything is sent or refused, or the daemon stops
	 * reading (a buffer budget): 3 s without progress. */
	for (;;) {
		unsigned long before = atomic_load(&progress);
		double t = now_s();
		bool pending = false;
		while (now_s() - t < 3) {
			half_poll(h, opened, 100);
			pending = false;
			for (unsigned i = 0; i < opened; i++)
				pending |= !h[i].closed_at && h[i].sent < h[i].len;
			if (!pending || atomic_load(&progress) != before)
				break;
		}
		tick();
		if (!pending || atomic_load(&progress) == before)
			break;
	}
	double t = now_s();
	size_t total = 0;
	for (unsigned i = 0; i < opened; i++) {
		total += h[i].sent;
		if (!h[i].done_at)
			h[i].done_at = t;
	}
	say("holding: %zu bytes sent over %u connections in %.1f s", total, opened, t - t0);
	double hold = opt.hold >= 0 ? opt.hold : 5;
	while (now_s() - t < hold) {
		half_poll(h, opened, 100);
		tick();
		unsigned open = 0;
		for (unsigned i = 0; i < opened; i++)
			open += !h[i].closed_at;
		if (!open)
			break;
	}
	unsigned closed = 0, late = 0, refused = 0;
	double worst = 0;
	for (unsigned i = 0; i < opened; i++) {
		struct half *c = &h[i];
		double after = (c->closed_at ? c->closed_at : now_s()) - c->done_at;
		closed += c->closed_at != 0;
		refused += c->refused;
		if (after > worst)
			worst = after;
		if (opt.expect_closed >= 0 && (!c->closed_at || after > opt.expect_closed))
			late++;
	}
	say("closed by the daemon: %u of %u (%u while still sending), the last %.1f s after its last byte",
	    closed, opened, refused, worst);
	say("1.5 MiB of whitespace: %zu bytes taken, %s", over->sent,
	    over->closed_at ? "then closed" : "connection still open");
	int rc = 0;
	/* Past the 1 MiB limit the daemon must refuse it: closed while we still
	 * send, or at once after, not when an idle timeout would close it. */
	if (!over->refused && !(over->closed_at && over->closed_at - over->done_at < 1)) {
		say("FAIL: 1.5 MiB of leading whitespace taken whole and the connection kept%s: "
		    "whitespace escapes the handshake size limit", over->closed_at ? " for a while" : "");
		rc = EXIT_BAD;
	}
	if (late) {
		say("FAIL: %u of %u half-sent handshakes not closed within %.0f s of their last byte",
		    late, opened, opt.expect_closed);
		rc = EXIT_BAD;
	}
	return rc;
}

/* Opens connections (sending nothing) until --count are open or connect
 * fails, and holds them --hold seconds: the daemon runs out of fds. */
static int attack_fd_flood(void)
{
	unsigned n = opt.count ? opt.count : 200, opened = 0;
	int *fd = calloc(n, sizeof(int));
	const char *why = "";
	for (unsigned i = 0; i < n; i++) {
		int k = connect_daemon(true, i == 0);
		if (k < 0) {
			why = strerror(-k);
			break;
		}
		fd[opened++] = k;
	}
	say("holding %u connections%s%s", opened, *why ? "; then connect: " : "", why);
	double end = now_s() + (opt.hold >= 0 ? opt.hold : 5);
	unsigned closed = 0;
	while (now_s() < end) {
		sleep_s(0.1);
		closed = 0;
		for (unsigned i = 0; i < opened; i++)
			closed += sock_closed(fd[i]);
	}
	say("done: %u of %u closed by the daemon", closed, opened);
	return 0;
}

/* ---- main ---------------------------------------------------------------- */

static const struct {
	const char *name;
	int (*fn)(void);
	const char *help;
} attacks[] = {
	{"close-after-handshake", attack_close_after_handshake,
	 "item 1: mainline, close the socket after sendmsg (Firecracker < 1.12),\n"
	 "    keep the uffd, read every page; --snapshot RAW, [--keep-socket]"},
	{"pending-discard", attack_pending_discard,
	 "item 3: discard in a loop while the script stops the daemon; a madvise\n"
	 "    stuck --hold S (5) fails; ends after the daemon closes the connection\n"
	 "    or --seconds S; closes its uffd copy unless --keep-uffd"},
	{"poison-request", attack_poison_request,
	 "item 4: secret hiding; touch a stored page of the corrupt chunk (poisoned),\n"
	 "    then request it: error reply, bit kept; --snapshot RAW --bad-first PAGE\n"
	 "    --bad-pages N; --untouched: request an untouched page instead"},
	{"truncate-bitmap", attack_truncate_bitmap,
	 "item 5: secret hiding, ftruncate the bitmap memfd to 0, send requests"},
	{"truncate-hugetlb-mem", attack_truncate_hugetlb_mem,
	 "item 5: secret hiding on a hugetlbfs memfd, truncated and regrown in a\n"
	 "    loop while requests stream; --rounds N sessions (30); 77 without huge pages"},
	{"clear-nonblock", attack_clear_nonblock,
	 "item 6: mainline, clear O_NONBLOCK on the uffd, discard and fault for\n"
	 "    --seconds S (1), then sit idle --hold S (until the daemon hangs up)"},
	{"flood-requests", attack_flood_requests,
	 "item 7: secret hiding, valid requests as fast as possible for --seconds S\n"
	 "    (30); --no-read: never read a reply"},
	{"half-handshakes", attack_half_handshakes,
	 "item 8: N (200) connections each sending part of a handshake, held\n"
	 "    --hold S (5); --expect-closed S: each closed by the daemon within S"},
	{"fd-flood", attack_fd_flood,
	 "item 8: open up to N (200) idle connections, hold them --hold S (5)"},
};

static void usage(int code)
{
	FILE *f = code ? stderr : stdout;
	fprintf(f, "usage: hostile_vmm ATTACK [N] --socket PATH [options]\n"
		   "A compromised VMM against `pagein serve`. Attacks:\n");
	for (size_t i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++)
		fprintf(f, "  %s\n    %s\n", attacks[i].name, attacks[i].help);
	fprintf(f, "Common: --snapshot RAW (guest size, expected bytes), --mem-size BYTES,\n"
		   "  --timeout S (watchdog, 20).\n"
		   "Exit: 0 the daemon behaved, 1 it did not, 2 setup, 3 watchdog, 77 skip.\n");
	exit(code);
}

static double num(const char *s, const char *name)
{
	char *end;
	double v = strtod(s ? s : "", &end);
	uint64_t mul = 1;
	if (*end == 'K' || *end == 'k')
		mul = 1ULL << 10, end++;
	else if (*end == 'M' || *end == 'm')
		mul = 1ULL << 20, end++;
	else if (*end == 'G' || *end == 'g')
		mul = 1ULL << 30, end++;
	if (!s || end == s || *end || v < 0) {
		fprintf(stderr, "hostile_vmm: %s needs a number, got %s\n", name, s ? s : "nothing");
		usage(EXIT_SETUP);
	}
	return v * (double)mul;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage(EXIT_SETUP);
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		usage(0);
	int (*fn)(void) = NULL;
	for (size_t i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++)
		if (!strcmp(argv[1], attacks[i].name))
			fn = attacks[i].fn;
	if (!fn) {
		fprintf(stderr, "hostile_vmm: unknown attack %s\n", argv[1]);
		usage(EXIT_SETUP);
	}
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL(field, conv) (opt.field = conv, i++)
		if (!strcmp(a, "--socket"))
			VAL(socket, v);
		else if (!strcmp(a, "--snapshot"))
			VAL(snapshot, v);
		else if (!strcmp(a, "--mem-size"))
			VAL(mem_size, (uint64_t)num(v, a));
		else if (!strcmp(a, "--timeout"))
			VAL(timeout, num(v, a));
		else if (!strcmp(a, "--seconds"))
			VAL(seconds, num(v, a));
		else if (!strcmp(a, "--hold"))
			VAL(hold, num(v, a));
		else if (!strcmp(a, "--expect-closed"))
			VAL(expect_closed, num(v, a));
		else if (!strcmp(a, "--rounds"))
			VAL(rounds, (unsigned)num(v, a));
		else if (!strcmp(a, "--bad-first"))
			VAL(bad_first, (uint64_t)num(v, a));
		else if (!strcmp(a, "--bad-pages"))
			VAL(bad_pages, (uint64_t)num(v, a));
		else if (!strcmp(a, "--keep-socket"))
			opt.keep_socket = true;
		else if (!strcmp(a, "--keep-uffd"))
			opt.keep_uffd = true;
		else if (!strcmp(a, "--untouched"))
			opt.untouched = true;
		else if (!strcmp(a, "--no-read"))
			opt.no_read = true;
		else if (a[0] != '-' && !opt.count)
			opt.count = (unsigned)num(a, "N");
		else {
			fprintf(stderr, "hostile_vmm: unknown option %s\n", a);
			usage(EXIT_SETUP);
		}
#undef VAL
	}
	if (!opt.socket)
		usage(EXIT_SETUP);
	setvbuf(stdout, NULL, _IOLBF, 0);
	return fn();
}
