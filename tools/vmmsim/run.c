/* run.c - `vmmsim run`: set up guest memory, hand it to the handler,
 * run the workload under the watchdog, report. */
#include "cmd.h"
#include "sim.h"
#include "watchdog.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int setup_memory(struct sim *s)
{
	const struct run_opts *o = s->opt;
	int rc = guest_open(&s->guest, &o->guest);

	if (rc)
		return rc;
	if (expect_open(&s->expect, &s->guest, o->expect))
		return EXIT_SETUP;
	s->nvcpus = o->plan.nvcpus;
	s->plans = xcalloc(s->nvcpus, sizeof(*s->plans));
	if (plan_build(&o->plan, s->plans))
		return EXIT_SETUP;
	for (unsigned v = 0; v < s->nvcpus; v++)
		s->planned += s->plans[v].n;
	return 0;
}

/* Mainline sends [uffd]; secret-hiding [uffd, guest memfd, bitmap memfd]
 * (three fds are how the handler tells the protocols apart). */
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
static int workload(struct sim *s, double *wall_s)
{
	const struct run_opts *o = s->opt;
	struct watchdog wd;

	if (watchdog_start(&wd, o->timeout_s, &s->progress))
		return EXIT_SETUP;
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
	*wall_s = (double)(now_ns() - t0) / 1e9;
	if (o->verify_all)
		verify_all(s);
	watchdog_stop(&wd);
	return 0;
}

static int finish(struct sim *s, double wall_s)
{
	const struct run_opts *o = s->opt;
	struct report_extra x = {
		.wall_s = wall_s,
		.ignored_replies = stage2_ignored_replies(s->s2),
		.zero_replies = stage2_zero_replies(s->s2),
	};

	stage2_set_closing(s->s2);
	if (report_finish(s, &x, o->report_json))
		return EXIT_SETUP;
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
	double wall_s = 0;

	if (rc)
		return rc < 0 ? EXIT_OK : rc;
	/* On the heap: 1024 rwlocks do not belong on a stack. */
	struct sim *s = xcalloc(1, sizeof(*s));

	s->opt = &o;
	s->sock = -1;
	rc = setup_memory(s);
	if (!rc)
		rc = handshake(s);
	if (!rc)
		rc = workload(s, &wall_s);
	if (!rc)
		rc = finish(s, wall_s);
	teardown(s);
	return rc;
}
