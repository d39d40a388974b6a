/* test_resolver.c - every page population path and race, in one process:
 * guest memory and its uffd live here, a thread runs the session, the test
 * thread plays vCPUs, balloon and stage-2 requests. Bytes are checked
 * against the snapshot; counters show which path filled each page. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "pagein.h"
#include "session.h"
#include "uffd.h"

/* ---- cases ------------------------------------------------------------ */

static int fault_every_page_matches_snapshot(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 256, TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0), false);
	if (t != TC_PASS)
		return t;
	int bad = 0;
	for (uint64_t k = 0; k < r.npages; k++) {
		uint64_t i = (k * 97) % r.npages; /* a scattered order */
		bad += !rig_check_page(&r, i);
	}
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	TC_CHECK(st.pages_copied == 192); /* 3 of 4 pages hold data */
	TC_CHECK(st.pages_zeroed == 64);  /* zero pages: UFFDIO_ZEROPAGE */
	TC_CHECK(st.faults_missing == 256);
	return TC_PASS;
}

static int kernel_mode_faults_are_served(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 64, TC_REG_MISSING, false);
	if (t != TC_PASS)
		return t;
	int p[2];
	TC_CHECK(pipe(p) == 0);
	int bad = 0;
	for (uint64_t i = 0; i < r.npages; i++) {
		/* write(2) reads guest memory in kernel mode: the fault is
		 * raised by copy_from_user, not by this thread's own load. */
		unsigned char got[PS], want[PS];
		if (write(p[1], r.g.base + i * PS, PS) != (ssize_t)PS ||
		    read(p[0], got, PS) != (ssize_t)PS) {
			bad++;
			continue;
		}
		tc_page(r.seed, i, want);
		bad += !tc_check_page(got, want, i);
	}
	close(p[0]);
	close(p[1]);
	rig_stop(&r, NULL);
	TC_CHECK(bad == 0);
	return TC_PASS;
}

static int stage2_request_then_minor_fault(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 64, TC_REG_MISSING | TC_REG_MINOR, true);
	if (t != TC_PASS)
		return t;
	uint64_t len;
	bool zero;
	struct pagein_error err = {{0}};
	TC_CHECK(rig_bit_set(&r, 5));
	TC_CHECK(pagein_session_populate_offset(r.s, 5 * PS + 100, &len, &zero, &err) == 0);
	TC_CHECK(len == PS && !zero);
	TC_CHECK(!rig_bit_set(&r, 5));
	unsigned char got[PS], want[PS];
	tc_page(r.seed, 5, want);
	TC_CHECK(pread(r.g.memfd, got, PS, 5 * PS) == (ssize_t)PS); /* the guest's stage-2 view */
	TC_CHECK(tc_check_page(got, want, 5));
	TC_CHECK(pagein_session_populate_offset(r.s, 7 * PS, &len, &zero, &err) == 0);
	TC_CHECK(zero); /* page 7 is a zero page */
	bool ok = rig_check_page(&r, 5); /* MINOR fault -> CONTINUE */
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(ok);
	TC_CHECK(st.pages_written == 2 && st.pages_copied == 0);
	TC_CHECK(st.faults_minor == 1 && st.pages_continued == 1);
	return TC_PASS;
}

static int fault_then_stage2_writes_nothing(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 64, TC_REG_MISSING | TC_REG_MINOR, true);
	if (t != TC_PASS)
		return t;
	bool ok = rig_check_page(&r, 2);
	/* The COPY path clears the bit too, just after its COPY woke us. */
	bool cleared = false;
	for (int i = 0; i < 2000 && !cleared; i++) {
		cleared = !rig_bit_set(&r, 2);
		if (!cleared)
			usleep(1000);
	}
	uint64_t len;
	bool zero;
	struct pagein_error err = {{0}};
	int pr = pagein_session_populate_offset(r.s, 2 * PS, &len, &zero, &err);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(ok && cleared && pr == 0 && len == PS);
	TC_CHECK(st.pages_copied == 1 && st.pages_written == 0);
	return TC_PASS;
}

static int guest_write_survives_stage2_request(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 64, TC_REG_MISSING | TC_REG_MINOR, true);
	if (t != TC_PASS)
		return t;
	bool ok = rig_check_page(&r, 9);
	memset(r.g.base + 9 * PS, 0xab, PS); /* the guest writes */
	uint64_t len;
	bool zero;
	struct pagein_error err = {{0}};
	pagein_session_populate_offset(r.s, 9 * PS, &len, &zero, &err);
	unsigned char got[PS], want[PS];
	memset(want, 0xab, PS);
	ssize_t n = pread(r.g.memfd, got, PS, 9 * PS);
	rig_stop(&r, NULL);
	TC_CHECK(ok && n == (ssize_t)PS);
	TC_CHECK(tc_check_page(got, want, 9));
	return TC_PASS;
}

struct race_arg {
	struct rig *r;
	int bad;
};

static void *populate_forward(void *arg)
{
	struct race_arg *a = arg;
	for (uint64_t i = 0; i < a->r->npages; i++) {
		uint64_t len;
		bool zero;
		struct pagein_error err = {{0}};
		if (pagein_session_populate_offset(a->r->s, i * PS, &len, &zero, &err) < 0 || len != PS)
			a->bad++;
	}
	return NULL;
}

static void *touch_backward(void *arg)
{
	struct race_arg *a = arg;
	for (uint64_t i = a->r->npages; i-- > 0;)
		a->bad += !rig_check_page(a->r, i);
	return NULL;
}

static int stage2_and_faults_race_on_same_pages(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 2048, TC_REG_MISSING | TC_REG_MINOR, true);
	if (t != TC_PASS)
		return t;
	struct race_arg a = {&r, 0}, b = {&r, 0}, c = {&r, 0};
	pthread_t t1, t2, t3;
	pthread_create(&t1, NULL, populate_forward, &a);
	pthread_create(&t2, NULL, touch_backward, &b);
	pthread_create(&t3, NULL, touch_backward, &c);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	pthread_join(t3, NULL);
	int bits = 0;
	for (uint64_t i = 0; i < r.npages; i++)
		bits += rig_bit_set(&r, i);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(a.bad == 0 && b.bad == 0 && c.bad == 0);
	TC_CHECK(bits == 0);
	/* Each page filled exactly once, by one path or the other. */
	TC_CHECK(st.pages_copied + st.pages_zeroed + st.pages_written == r.npages);
	return TC_PASS;
}

static int removed_pages_read_zero(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 64, TC_REG_MISSING, false);
	if (t != TC_PASS)
		return t;
	int bad = 0;
	for (uint64_t i = 0; i < 16; i++)
		bad += !rig_check_page(&r, i);
	/* Balloon: pages 4-7 were filled, 20-23 never were. */
	TC_CHECK(madvise(r.g.base + 4 * PS, 4 * PS, MADV_DONTNEED) == 0);
	TC_CHECK(madvise(r.g.base + 20 * PS, 4 * PS, MADV_DONTNEED) == 0);
	unsigned char zero[PS] = {0};
	for (uint64_t i = 0; i < 24; i++) {
		if ((i >= 4 && i < 8) || i >= 20)
			bad += !tc_check_page(r.g.base + i * PS, zero, i);
		else
			bad += !rig_check_page(&r, i);
	}
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	TC_CHECK(st.removes == 2 && st.pages_removed == 8);
	return TC_PASS;
}

static int shared_dontneed_keeps_data_remove_punches(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 64, TC_REG_MISSING | TC_REG_MINOR, false);
	if (t != TC_PASS)
		return t;
	int bad = !rig_check_page(&r, 1);
	bad += !rig_check_page(&r, 3 * 4 + 1);
	memset(r.g.base + PS, 0x5a, PS); /* the guest's own data */
	/* DONTNEED on shared memory zaps the mapping, keeps the page cache:
	 * the next access is a MINOR fault and must see the guest's data. */
	TC_CHECK(madvise(r.g.base + PS, PS, MADV_DONTNEED) == 0);
	unsigned char want[PS];
	memset(want, 0x5a, PS);
	bad += !tc_check_page(r.g.base + PS, want, 1);
	/* Never filled, then discarded: a MISSING fault, zeros. */
	TC_CHECK(madvise(r.g.base + 2 * PS, PS, MADV_DONTNEED) == 0);
	unsigned char zero[PS] = {0};
	bad += !tc_check_page(r.g.base + 2 * PS, zero, 2);
	/* MADV_REMOVE punches the page out of the cache: zeros. */
	TC_CHECK(madvise(r.g.base + 13 * PS, PS, MADV_REMOVE) == 0);
	bad += !tc_check_page(r.g.base + 13 * PS, zero, 13);
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	TC_CHECK(st.faults_minor >= 1 && st.pages_continued >= 1);
	return TC_PASS;
}

static void *touch_one(void *arg)
{
	struct race_arg *a = arg;
	a->bad += !rig_check_page(a->r, 0);
	return NULL;
}

/* After the fault for page 0 is read: put a page into the cache behind
 * the resolver's back, so its UFFDIO_COPY meets EEXIST. */
static void pwrite_behind_back(struct pagein_session *s, void *arg)
{
	struct rig *r = arg;
	unsigned char page[PS];
	tc_page(r->seed, 0, page);
	if (pwrite(r->g.memfd, page, PS, 0) != (ssize_t)PS)
		perror("pwrite");
	s->test_after_read = NULL;
}

static int copy_eexist_still_wakes(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start_hooked(&r, mem, 16, TC_REG_MISSING, false, pwrite_behind_back);
	if (t != TC_PASS)
		return t;
	struct race_arg a = {&r, 0};
	pthread_t th;
	pthread_create(&th, NULL, touch_one, &a);
	pthread_join(th, NULL); /* hangs here if EEXIST woke nobody */
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(a.bad == 0);
	TC_CHECK(st.eexist == 1 && st.wakes >= 1);
	return TC_PASS;
}

static void *discard_page_1(void *arg)
{
	struct rig *r = arg;
	/* Shared memory keeps its cache on DONTNEED; REMOVE drops it. */
	madvise(r->g.base + PS, PS, r->g.mem == TC_MEMFD ? MADV_REMOVE : MADV_DONTNEED);
	return NULL;
}

/* After the fault for page 0 is read, a balloon discards page 1 and
 * blocks until its REMOVE is read: the fill of page 0 meets EAGAIN. */
static void remove_behind_back(struct pagein_session *s, void *arg)
{
	struct rig *r = arg;
	if (++r->hook_calls < 2)
		return; /* the first read is page 1's own fault */
	s->test_after_read = NULL;
	pthread_create(&r->balloon, NULL, discard_page_1, r);
	r->balloon_started = true;
	struct pollfd p = {.fd = r->g.uffd, .events = POLLIN};
	poll(&p, 1, 5000); /* the REMOVE is queued */
}

static int copy_eagain_reads_events_and_retries(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start_hooked(&r, mem, 16, TC_REG_MISSING, false, remove_behind_back);
	if (t != TC_PASS)
		return t;
	int bad = !rig_check_page(&r, 1);
	struct race_arg a = {&r, 0};
	pthread_t th;
	pthread_create(&th, NULL, touch_one, &a);
	pthread_join(th, NULL);
	unsigned char zero[PS] = {0};
	bad += !tc_check_page(r.g.base + PS, zero, 1); /* page 1 was discarded */
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(a.bad == 0 && bad == 0);
	TC_CHECK(st.eagain >= 1 && st.removes == 1);
	return TC_PASS;
}

static void *touch_all(void *arg)
{
	struct race_arg *a = arg;
	for (uint64_t i = 0; i < a->r->npages; i++)
		a->bad += !rig_check_page(a->r, i);
	return NULL;
}

static int many_threads_fault_the_same_pages(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 512, TC_REG_MISSING | (mem == TC_MEMFD ? TC_REG_MINOR : 0), false);
	if (t != TC_PASS)
		return t;
	struct race_arg a[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		a[i] = (struct race_arg){&r, 0};
		pthread_create(&th[i], NULL, touch_all, &a[i]);
	}
	int bad = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		bad += a[i].bad;
	}
	struct pagein_stats st;
	rig_stop(&r, &st);
	TC_CHECK(bad == 0);
	TC_CHECK(st.pages_copied + st.pages_zeroed >= r.npages);
	TC_CHECK(st.pages_copied <= 384); /* never a data page twice */
	return TC_PASS;
}

static pid_t doomed_vmm;

/* After the child's fault is read: it dies before the fill. */
static void kill_vmm(struct pagein_session *s, void *arg)
{
	kill(doomed_vmm, SIGKILL);
	waitpid(doomed_vmm, NULL, 0);
}

/* The VMM dies while its fault is being served: the fill answers ESRCH
 * and the session ends quietly. */
static int vmm_exit_ends_session_with_esrch(enum tc_mem mem)
{
	int sv[2];
	TC_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct tc_guest g;
		if (tc_guest_new(&g, TC_ANON, 16 * PS, TC_REG_MISSING, false) != TC_PASS)
			_exit(1);
		uint64_t addr = (uint64_t)(uintptr_t)g.base;
		char c = 0;
		struct iovec iov = {.iov_base = &addr, .iov_len = sizeof(addr)};
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int))];
		} ctl;
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
				    .msg_controllen = sizeof(ctl.b)};
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &g.uffd, sizeof(int));
		if (sendmsg(sv[1], &mh, 0) < 0)
			_exit(1);
		c = *(volatile char *)g.base; /* faults; never answered */
		_exit(c);
	}
	close(sv[1]);
	uint64_t addr = 0;
	int uffd = -1;
	struct iovec iov = {.iov_base = &addr, .iov_len = sizeof(addr)};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b)};
	TC_CHECK(recvmsg(sv[0], &mh, 0) == sizeof(addr));
	memcpy(&uffd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
	close(sv[0]);
	char snap[256];
	tc_tmp_path(snap, sizeof(snap), "esrch");
	TC_CHECK(tc_write_snapshot(snap, 16, 1) == 0);
	struct pagein_source *src;
	struct pagein_error err = {{0}};
	TC_CHECK(pagein_source_open(snap, &src, &err) == 0);
	struct pagein_region rg = {.host_addr = addr, .size = 16 * PS, .offset = 0, .page_size = PS};
	struct pagein_session_config cfg = {.regions = &rg, .nregions = 1, .uffd = uffd,
					    .mem_fd = -1, .bitmap_fd = -1, .source = src};
	struct pagein_session *s;
	TC_CHECK(pagein_session_new(&cfg, &s, &err) == 0);
	struct pollfd p = {.fd = uffd, .events = POLLIN};
	TC_CHECK(poll(&p, 1, 5000) == 1); /* the child's fault is queued */
	doomed_vmm = pid;
	s->test_after_read = kill_vmm;
	int r = pagein_session_handle_uffd(s, &err);
	pagein_session_free(s);
	pagein_source_unref(src);
	unlink(snap);
	if (r != -ESRCH)
		fprintf(stderr, "  handle_uffd: %d %s\n", r, err.msg);
	TC_CHECK(r == -ESRCH);
	return TC_PASS;
}

static int fault_outside_regions_is_an_error(enum tc_mem mem)
{
	struct rig r;
	int t = rig_start(&r, mem, 16, TC_REG_MISSING, false);
	if (t != TC_PASS)
		return t;
	/* Describe only the first half: the second half is registered but
	 * unknown to the session. Stop the running session, build a new one. */
	uint64_t one = 1;
	TC_CHECK(write(r.stop, &one, sizeof(one)) == sizeof(one));
	pthread_join(r.th, NULL);
	pagein_session_free(r.s);
	struct pagein_region rg = {.host_addr = (uint64_t)(uintptr_t)r.g.base,
				   .size = 8 * PS, .offset = 0, .page_size = PS};
	struct pagein_session_config cfg = {.regions = &rg, .nregions = 1, .uffd = dup(r.g.uffd),
					    .mem_fd = -1, .bitmap_fd = -1, .source = r.src};
	struct pagein_error err = {{0}};
	TC_CHECK(pagein_session_new(&cfg, &r.s, &err) == 0);
	struct race_arg a = {&r, 0};
	pthread_t th;
	pthread_create(&th, NULL, touch_all, &a); /* reaches page 8 */
	int res;
	do {
		struct pollfd p = {.fd = r.g.uffd, .events = POLLIN};
		poll(&p, 1, 5000);
		res = pagein_session_handle_uffd(r.s, &err);
	} while (res == 0);
	bool named = strstr(err.msg, "outside every region") != NULL;
	/* Release the stuck thread ourselves, then finish. */
	for (uint64_t i = 8; i < 16; i++) {
		unsigned char page[PS];
		uint64_t done;
		tc_page(r.seed, i, page);
		uffd_copy(r.g.uffd, (uint64_t)(uintptr_t)(r.g.base + i * PS), page, PS, true, &done);
	}
	pthread_join(th, NULL);
	r.stop = eventfd(0, 0);
	pthread_create(&r.th, NULL, rig_run_session, &r);
	rig_stop(&r, NULL);
	TC_CHECK(res == -EFAULT && named);
	TC_CHECK(a.bad == 0);
	return TC_PASS;
}

int main(void)
{
	static const struct tc_case cases[] = {
		{"fault_every_page_matches_snapshot", fault_every_page_matches_snapshot, TC_ANON | TC_MEMFD},
		{"kernel_mode_faults_are_served", kernel_mode_faults_are_served, TC_ANON | TC_MEMFD},
		{"stage2_request_then_minor_fault", stage2_request_then_minor_fault, TC_MEMFD},
		{"fault_then_stage2_writes_nothing", fault_then_stage2_writes_nothing, TC_MEMFD},
		{"guest_write_survives_stage2_request", guest_write_survives_stage2_request, TC_MEMFD},
		{"stage2_and_faults_race_on_same_pages", stage2_and_faults_race_on_same_pages, TC_MEMFD},
		{"removed_pages_read_zero", removed_pages_read_zero, TC_ANON},
		{"shared_dontneed_keeps_data_remove_punches", shared_dontneed_keeps_data_remove_punches, TC_MEMFD},
		{"copy_eexist_still_wakes", copy_eexist_still_wakes, TC_MEMFD},
		{"copy_eagain_reads_events_and_retries", copy_eagain_reads_events_and_retries, TC_ANON | TC_MEMFD},
		{"many_threads_fault_the_same_pages", many_threads_fault_the_same_pages, TC_ANON | TC_MEMFD},
		{"vmm_exit_ends_session_with_esrch", vmm_exit_ends_session_with_esrch, TC_ANON},
		{"fault_outside_regions_is_an_error", fault_outside_regions_is_an_error, TC_ANON},
	};
	return tc_run(cases, sizeof(cases) / sizeof(cases[0]));
}
