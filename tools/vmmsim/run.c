/* run.c - `vmmsim run`: set up guest memory, hand it to the handler,
 * run the workload under the watchdog, report. */
#include "cmd.h"
#include "sim.h"
#include "watchdog.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int setup_memory(struct sim *s)
{
	const struct run_opts *o = s->opt;
	int rc = guest_open(&s->guest, &o->guest);

	if (rc)
		return rc;
	rc = o->expect_prefault ? expect_open_prefault(&s->expect, &s->guest, o->expect)
				: expect_open(&s->expect, &s->guest, o->expect);
	if (rc)
		return EXIT_SETUP;
	s->nvcpus = o->plan.nvcpus;
	s->plans = xcalloc(s->nvcpus, sizeof(*s->plans));
	if (plan_build(&o->plan, s->plans))
		return EXIT_SETUP;
	for (unsigned v = 0; v < s->nvcpus; v++)
		s->planned += s->plans[v].n;
	return 0;
}

/* --evict: a cold-cache benchmark drops the snapshot from the page cache
 * after setup (which may have read it) and before the handler can be asked
 * for anything. Pages still mapped somewhere stay cached; say so, since the
 * run would not be cold. */
static int evict(const struct run_opts *o)
{
	for (unsigned i = 0; i < o->nevict; i++) {
		int fd = open(o->evict[i], O_RDONLY | O_CLOEXEC);
		struct stat st;

		if (fd < 0 || fstat(fd, &st)) {
			msg("--evict %s: %m", o->evict[i]);
			return EXIT_SETUP;
		}
		int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		uint64_t cached = 0, n = ((uint64_t)st.st_size + 4095) / 4096;
		void *p = rc || !n ? MAP_FAILED : mmap(NULL, n * 4096, PROT_READ, MAP_SHARED, fd, 0);

		close(fd);
		if (rc) {
			msg("--evict %s: posix_fadvise: %s", o->evict[i], strerror(rc));
			return EXIT_SETUP;
		}
		if (p == MAP_FAILED)
			continue;
		unsigned char *vec = xcalloc(n, 1);

		if (!mincore(p, n * 4096, vec))
			for (uint64_t j = 0; j < n; j++)
				cached += vec[j] & 1;
		free(vec);
		munmap(p, n * 4096);
		if (cached)
			msg("--evict %s: %" PRIu64 " of %" PRIu64 " pages still cached "
			    "(mapped by another process?)", o->evict[i], cached, n);
	}
	return 0;
}

/* Mainline sends [uffd]; secret-hiding [uffd, guest memfd, bitmap memfd]
 * (three fds are how the handler tells the protocols apart). With
 * --close-after-handshake the socket goes right after the send, as
 * Firecracker before v1.12 drops it, keeping its own uffd and running on:
 * nothing is left to watch. */
static int handshake(struct sim *s)
{
	const struct run_opts *o = s->opt;
	int fds[HS_MAX_FDS] = { s->guest.uffd, s->guest.memfd, s->guest.bitmap_fd };
	unsigned nfds = o->protocol == PROTO_SECRET_HIDING ? 3 : 1;
	char *json = hs_build_json(&s->guest, o->fc, o->extra_field);

	s->sock = hs_connect(o->socket);
	int rc = s->sock < 0 ? -1 : hs_send(s->sock, json, strlen(json), fds, nfds, o->split);

	free(json);
	if (rc)
		return EXIT_SETUP;
	if (o->close_socket) {
		close(s->sock);
		s->sock = -1;
		return 0;
	}
	struct stage2_config sc = {
		.sock = s->sock,
		.secret_hiding = o->protocol == PROTO_SECRET_HIDING,
		.nvcpus = s->nvcpus,
		.page_size = s->guest.page_size,
		.has_bad = o->has_bad,
		.bad_offset = o->bad_offset,
	};

	s->s2 = stage2_start(&sc);
	return s->s2 ? 0 : EXIT_SETUP;
}

/* The watchdog covers everything that waits on the handler: the workload
 * and --verify-all. */
static int workload(struct sim *s, struct report_extra *x)
{
	const struct run_opts *o = s->opt;
	struct watchdog wd;
	struct rusage r0, r1;

	if (watchdog_start(&wd, o->timeout_s, &s->progress))
		return EXIT_SETUP;
	getrusage(RUSAGE_SELF, &r0);
	uint64_t t0 = now_ns();

	if (o->has_bad)
		stage2_send_bad(s->s2, o->bad_offset);
	vcpus_start(s);
	if (o->vmm_thread)
		vmm_thread_start(s);
	if (o->balloon)
		balloon_start(s);
	vcpus_join(s);
	vmm_thread_join(s);
	balloon_join(s);
	x->wall_s = (double)(now_ns() - t0) / 1e9;
	getrusage(RUSAGE_SELF, &r1);
	x->minflt = (uint64_t)(r1.ru_minflt - r0.ru_minflt);
	x->majflt = (uint64_t)(r1.ru_majflt - r0.ru_majflt);
	if (o->verify_all)
		verify_all(s);
	watchdog_stop(&wd);
	return 0;
}

static int finish(struct sim *s, struct report_extra *x)
{
	const struct run_opts *o = s->opt;

	if (s->s2) {
		x->ignored_replies = stage2_ignored_replies(s->s2);
		x->zero_replies = stage2_zero_replies(s->s2);
		stage2_set_closing(s->s2);
	}
	if (report_finish(s, x, o->report_json))
		return EXIT_SETUP;
	if (o->latency_out && report_latencies(s, o->latency_out))
		return EXIT_SETUP;
	/* --reset-socket: the reset comes before --hold, so that the handler
	 * reads it while this VMM still lives. */
	if (o->reset_socket && s->sock >= 0) {
		if (s->s2)
			stage2_stop(s->s2);
		s->s2 = NULL;
		stage2_close_with_reset(s->sock);
		s->sock = -1;
	}
	if (o->hold_s > 0)
		sleep_ns((uint64_t)(o->hold_s * 1e9));
	return 0;
}

static void teardown(struct sim *s)
{
	if (s->s2)
		stage2_stop(s->s2);
	if (s->sock >= 0)
		close(s->sock);
	workers_free(s);
	if (s->plans)
		plan_free(s->plans, s->nvcpus);
	free(s->plans);
	expect_close(&s->expect);
	guest_close(&s->guest);
	free(s);
}

int cmd_run(int argc, char **argv)
{
	struct run_opts o;
	int rc = run_parse(argc, argv, &o);
	struct report_extra x = { 0 };

	if (rc)
		return rc < 0 ? EXIT_OK : rc;
	/* On the heap: 1024 rwlocks do not belong on a stack. */
	struct sim *s = xcalloc(1, sizeof(*s));

	s->opt = &o;
	s->sock = -1;
	rc = setup_memory(s);
	if (!rc)
		rc = evict(&o);
	if (!rc && !o.backend_file)
		rc = handshake(s);
	if (!rc)
		rc = workload(s, &x);
	if (!rc)
		rc = finish(s, &x);
	teardown(s);
	return rc;
}
