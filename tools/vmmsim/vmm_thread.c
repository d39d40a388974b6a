/* vmm_thread.c - the VMM's own accesses to guest memory. Device emulation
 * (virtio) reads guest buffers inside syscalls, so the faults happen in
 * kernel mode (copy_from_user), not in the guest: we reproduce that with
 * write(2) of a guest page into a pipe, read back and verified. A uffd
 * created with UFFD_USER_MODE_ONLY, or a handler that ignores kernel faults,
 * fails here. */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#define STREAM_VMM 0x564d4dULL
/* The default pipe capacity: one write of this size into an empty pipe
 * never blocks, so no second thread is needed to drain it. */
#define PIPE_CHUNK 65536u
/* A fraction of the workload: enough kernel-mode faults to matter, few
 * enough not to dominate the run. */
#define VMM_SHARE_DIV 8

static void read_back(int fd, uint8_t *buf, size_t len, uint64_t page)
{
	while (len) {
		ssize_t n = read(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fail_now(EXIT_WRONG, "reading guest page %" PRIu64 " back from the pipe: %s",
				 page, n < 0 ? strerror(errno) : "end of file");
		buf += n;
		len -= (size_t)n;
	}
}

static void vmm_read_page(struct worker *w, const int pfd[2], uint64_t page)
{
	struct sim *s = w->sim;
	const uint8_t *addr = guest_page_addr(&s->guest, page);
	uint64_t ps = s->guest.page_size;

	atomic_fetch_or(&s->expect.flags[page], PAGEF_TOUCHED);
	for (uint64_t off = 0; off < ps; off += PIPE_CHUNK) {
		size_t len = ps - off < PIPE_CHUNK ? (size_t)(ps - off) : PIPE_CHUNK;
		ssize_t n = write(pfd[1], addr + off, len);

		if (n != (ssize_t)len)
			fail_now(EXIT_WRONG, "write(2) of guest page %" PRIu64 " (kernel-mode access) "
				 "into a pipe: %s", page,
				 n < 0 ? strerror(errno) : "short write");
		read_back(pfd[0], w->buf + off, len, page);
	}
	expect_verify(&s->expect, page, w->buf, "vmm-thread write(2)");
}

static void *vmm_main(void *arg)
{
	struct worker *w = arg;
	struct sim *s = w->sim;
	uint64_t n = s->planned / VMM_SHARE_DIV ? s->planned / VMM_SHARE_DIV : 1;
	int pfd[2];

	if (pipe2(pfd, O_CLOEXEC))
		fail_now(EXIT_SETUP, "pipe2 for the VMM thread: %m");
	for (uint64_t i = 0; i < n; i++) {
		/* Pages the guest uses: a random entry of a random vCPU's plan. */
		const struct plan *p = &s->plans[rng_below(&w->rng, s->nvcpus)];

		if (!p->n)
			continue;
		uint64_t page = p->page[rng_below(&w->rng, p->n)];

		expect_rdlock(&s->expect, page);
		vmm_read_page(w, pfd, page);
		expect_unlock(&s->expect, page);
		w->st.vmm_reads++;
		atomic_fetch_add_explicit(&s->progress, 1, memory_order_relaxed);
	}
	close(pfd[0]);
	close(pfd[1]);
	return NULL;
}

int vmm_thread_start(struct sim *s)
{
	struct worker *w = &s->vmm;

	*w = (struct worker){ .sim = s, .id = 0, .rng = rng_make(s->opt->seed, STREAM_VMM) };
	w->buf = xcalloc(1, s->guest.page_size);
	int rc = pthread_create(&w->th, NULL, vmm_main, w);

	if (rc)
		fail_now(EXIT_SETUP, "starting the VMM thread: %s", strerror(rc));
	w->started = true;
	return 0;
}

void vmm_thread_join(struct sim *s)
{
	if (s->vmm.started)
		pthread_join(s->vmm.th, NULL);
	s->vmm.started = false;
}
