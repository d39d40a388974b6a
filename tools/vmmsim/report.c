/* report.c - latency samples and the end-of-run report, as text on stdout
 * and optionally the same numbers as JSON. Text lines are "key: value" with
 * the JSON key names, so scripts can parse either. */
#include "sim.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lat_init(struct lat *l, uint64_t cap)
{
	memset(l, 0, sizeof(*l));
	l->cap = cap;
	l->ns = cap ? xcalloc(cap, sizeof(*l->ns)) : NULL;
}

void lat_add(struct lat *l, uint64_t ns)
{
	if (l->n == l->cap) {
		uint64_t ncap = l->cap ? l->cap * 2 : 1024;
		uint32_t *n = realloc(l->ns, ncap * sizeof(*n));

		if (!n)
			fail_now(EXIT_SETUP, "out of memory recording latencies");
		l->ns = n;
		l->cap = ncap;
	}
	l->ns[l->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
	if (ns > l->max_ns)
		l->max_ns = ns;
}

void lat_free(struct lat *l)
{
	free(l->ns);
	memset(l, 0, sizeof(*l));
}

struct pct {
	uint64_t n;
	double p50, p99, max; /* microseconds */
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples. */
static double rank_us(const uint32_t *v, uint64_t n, double p)
{
	uint64_t k = (uint64_t)(p * (double)n + 0.999999);

	return (double)v[k ? k - 1 : 0] / 1e3;
}

static const struct lat *series(const struct worker *w, bool s2)
{
	return s2 ? &w->s2_rtt : &w->first_touch;
}

/* Merges one latency series of every vCPU and summarises it. */
static struct pct summarise(struct sim *s, bool s2)
{
	struct pct r = { 0 };
	uint64_t n = 0, max = 0;

	for (unsigned v = 0; v < s->nvcpus; v++)
		n += series(&s->vcpu[v], s2)->n;
	if (!n)
		return r;
	uint32_t *all = xcalloc(n, sizeof(*all));

	n = 0;
	for (unsigned v = 0; v < s->nvcpus; v++) {
		const struct lat *l = series(&s->vcpu[v], s2);

		memcpy(all + n, l->ns, l->n * sizeof(*all));
		n += l->n;
		if (l->max_ns > max)
			max = l->max_ns;
	}
	qsort(all, n, sizeof(*all), cmp_u32);
	r = (struct pct){ n, rank_us(all, n, 0.50), rank_us(all, n, 0.99), (double)max / 1e3 };
	free(all);
	return r;
}

static void add_stats(struct sim_stats *t, const struct sim_stats *a)
{
	t->map_first += a->map_first;
	t->map_present += a->map_present;
	t->sigbus_skipped += a->sigbus_skipped;
	t->s2_requests += a->s2_requests;
	t->s2_bit_clear += a->s2_bit_clear;
	t->vmm_reads += a->vmm_reads;
	t->writes += a->writes;
	t->discards += a->discards;
	t->discarded_pages += a->discarded_pages;
	t->balloon_reads += a->balloon_reads;
	t->verify_all += a->verify_all;
}

struct summary {
	struct sim_stats st;
	uint64_t touched;
	struct pct ft, s2;
	double mb_s;
};

static void summarise_all(struct sim *s, const struct report_extra *x, struct summary *m)
{
	memset(m, 0, sizeof(*m));
	for (unsigned v = 0; v < s->nvcpus; v++)
		add_stats(&m->st, &s->vcpu[v].st);
	add_stats(&m->st, &s->vmm.st);
	add_stats(&m->st, &s->balloon.st);
	for (uint64_t p = 0; p < s->guest.npages; p++)
		m->touched += (atomic_load(&s->expect.flags[p]) & PAGEF_TOUCHED) != 0;
	m->ft = summarise(s, false);
	m->s2 = summarise(s, true);
	m->mb_s = x->wall_s > 0 ? (double)(m->touched * s->guest.page_size) / 1e6 / x->wall_s : 0;
}

/* What the Firecracker version played (or the options) chose. */
static const char *fc_name(const struct run_opts *o)
{
	return o->fc == FC_1_1 ? "1.1" : o->fc == FC_1_7 ? "1.7" : "1.12";
}

static const char *socket_fate(const struct run_opts *o)
{
	return o->backend_file ? "none" : o->close_socket ? "closed" : "kept";
}

static void print_pct(const char *key, const struct pct *p)
{
	if (p->n)
		printf("%s: p50 %.1f p99 %.1f max %.1f (n %" PRIu64 ")\n", key, p->p50, p->p99,
		       p->max, p->n);
	else
		printf("%s: - (n 0)\n", key);
}

static void print_text(struct sim *s, const struct report_extra *x, const struct summary *m)
{
	const struct run_opts *o = s->opt;

	printf("guest_pages: %" PRIu64 "\n", s->guest.npages);
	printf("page_size: %" PRIu64 "\n", s->guest.page_size);
	printf("regions: %u\n", s->guest.nregions);
	printf("memory: %s\n", s->guest.memory == GUEST_MEMFD ? "memfd" : "anon");
	printf("protocol: %s\n", o->protocol == PROTO_SECRET_HIDING ? "secret-hiding" : "mainline");
	printf("fc_version: %s\n", fc_name(o));
	printf("handshake_socket: %s\n", socket_fate(o));
	printf("uffd_event_remove: %s\n", o->guest.event_remove ? "yes" : "no");
	printf("pages_touched: %" PRIu64 "\n", m->touched);
	printf("mapping_first_touch: %" PRIu64 "\n", m->st.map_first);
	printf("mapping_present: %" PRIu64 "\n", m->st.map_present);
	if (s->opt->sigbus_skip)
		printf("sigbus_skipped: %" PRIu64 "\n", m->st.sigbus_skipped);
	printf("stage2_requests: %" PRIu64 "\n", m->st.s2_requests);
	printf("stage2_bit_clear: %" PRIu64 "\n", m->st.s2_bit_clear);
	printf("stage2_zero_replies: %" PRIu64 "\n", x->zero_replies);
	printf("stage2_ignored_replies: %" PRIu64 "\n", x->ignored_replies);
	printf("vmm_thread_reads: %" PRIu64 "\n", m->st.vmm_reads);
	printf("writes: %" PRIu64 "\n", m->st.writes);
	printf("discards: %" PRIu64 "\n", m->st.discards);
	printf("discarded_pages: %" PRIu64 "\n", m->st.discarded_pages);
	printf("balloon_reads: %" PRIu64 "\n", m->st.balloon_reads);
	printf("verify_all_pages: %" PRIu64 "\n", m->st.verify_all);
	print_pct("first_touch_us", &m->ft);
	print_pct("stage2_rtt_us", &m->s2);
	printf("workload_minflt: %" PRIu64 "\n", x->minflt);
	printf("workload_majflt: %" PRIu64 "\n", x->majflt);
	printf("wall_s: %.3f\n", x->wall_s);
	printf("throughput_mb_s: %.1f\n", m->mb_s);
	printf("verify: ok\n");
	fflush(stdout);
}

static void put_u64(struct json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_uint64(v));
}

/* Doubles serialised with the text report's precision, not 17 digits. */
static void put_double(struct json_object *o, const char *k, double v, int decimals)
{
	char s[64];

	snprintf(s, sizeof(s), "%.*f", decimals, v);
	json_object_object_add(o, k, json_object_new_double_s(v, s));
}

static struct json_object *pct_json(const struct pct *p)
{
	struct json_object *o = json_object_new_object();

	put_u64(o, "n", p->n);
	put_double(o, "p50", p->p50, 1);
	put_double(o, "p99", p->p99, 1);
	put_double(o, "max", p->max, 1);
	return o;
}

static int write_json(struct sim *s, const struct report_extra *x, const struct summary *m,
		      const char *path)
{
	struct json_object *o = json_object_new_object();

	put_u64(o, "guest_pages", s->guest.npages);
	put_u64(o, "page_size", s->guest.page_size);
	put_u64(o, "regions", s->guest.nregions);
	json_object_object_add(o, "memory", json_object_new_string(
		s->guest.memory == GUEST_MEMFD ? "memfd" : "anon"));
	json_object_object_add(o, "protocol", json_object_new_string(
		s->opt->protocol == PROTO_SECRET_HIDING ? "secret-hiding" : "mainline"));
	json_object_object_add(o, "fc_version", json_object_new_string(fc_name(s->opt)));
	json_object_object_add(o, "handshake_socket", json_object_new_string(socket_fate(s->opt)));
	json_object_object_add(o, "uffd_event_remove",
			       json_object_new_boolean(s->opt->guest.event_remove));
	put_u64(o, "pages_touched", m->touched);
	put_u64(o, "mapping_first_touch", m->st.map_first);
	put_u64(o, "mapping_present", m->st.map_present);
	put_u64(o, "sigbus_skipped", m->st.sigbus_skipped);
	put_u64(o, "stage2_requests", m->st.s2_requests);
	put_u64(o, "stage2_bit_clear", m->st.s2_bit_clear);
	put_u64(o, "stage2_zero_replies", x->zero_replies);
	put_u64(o, "stage2_ignored_replies", x->ignored_replies);
	put_u64(o, "vmm_thread_reads", m->st.vmm_reads);
	put_u64(o, "writes", m->st.writes);
	put_u64(o, "discards", m->st.discards);
	put_u64(o, "discarded_pages", m->st.discarded_pages);
	put_u64(o, "balloon_reads", m->st.balloon_reads);
	put_u64(o, "verify_all_pages", m->st.verify_all);
	json_object_object_add(o, "first_touch_us", pct_json(&m->ft));
	json_object_object_add(o, "stage2_rtt_us", pct_json(&m->s2));
	put_u64(o, "workload_minflt", x->minflt);
	put_u64(o, "workload_majflt", x->majflt);
	put_double(o, "wall_s", x->wall_s, 3);
	put_double(o, "throughput_mb_s", m->mb_s, 1);
	json_object_object_add(o, "verify", json_object_new_string("ok"));
	int rc = json_object_to_file_ext(path, o, JSON_C_TO_STRING_PRETTY);

	json_object_put(o);
	if (rc) {
		msg("--report-json %s: cannot write: %s", path, json_util_get_last_err());
		return -1;
	}
	return 0;
}

int report_finish(struct sim *s, const struct report_extra *x, const char *json_path)
{
	struct summary m;

	summarise_all(s, x, &m);
	print_text(s, x, &m);
	return json_path ? write_json(s, x, &m, json_path) : 0;
}

int report_latencies(struct sim *s, const char *path)
{
	FILE *f = fopen(path, "we");

	if (!f) {
		msg("--latency-out %s: %m", path);
		return -1;
	}
	for (unsigned v = 0; v < s->nvcpus; v++) {
		const struct lat *l = &s->vcpu[v].first_touch;

		for (uint64_t i = 0; i < l->n; i++)
			fprintf(f, "%" PRIu32 "\n", l->ns[i]);
	}
	int bad = ferror(f);

	if (fclose(f) || bad) {
		msg("--latency-out %s: cannot write", path);
		return -1;
	}
	return 0;
}
