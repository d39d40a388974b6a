/* pattern.c - see pattern.h. */
#include "pattern.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stream numbers for rng_make, one per use of --seed. */
#define STREAM_SUBSET 0x5355ULL
#define STREAM_HOTSET 0x484fULL
#define STREAM_HOT_VCPU 0x48560000ULL /* + vCPU id */

/* "hot": 80% of accesses go to a hot 10% of pages. */
#define HOT_SHARE 0.8
#define HOT_PAGES_DIV 10

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* A uniformly random k-subset of [0, n) in random order (partial
 * Fisher-Yates over the identity). */
static uint32_t *random_subset(uint64_t n, uint64_t k, struct rng *r)
{
	uint32_t *a = xcalloc(n, sizeof(*a));

	for (uint64_t i = 0; i < n; i++)
		a[i] = (uint32_t)i;
	for (uint64_t i = 0; i < k && i + 1 < n; i++) {
		uint64_t j = i + rng_below(r, n - i);
		uint32_t t = a[i];

		a[i] = a[j];
		a[j] = t;
	}
	return a;
}

/* Gives vCPU v the slice [n*v/K, n*(v+1)/K) of list, or all of it. */
static void distribute(struct plan *plans, const struct plan_config *c, uint32_t *list, uint64_t n)
{
	for (unsigned v = 0; v < c->nvcpus; v++) {
		if (c->same) {
			plans[v] = (struct plan){ list, n, v == 0 };
			continue;
		}
		uint64_t lo = n * v / c->nvcpus, hi = n * (v + 1) / c->nvcpus;

		plans[v].n = hi - lo;
		plans[v].page = xcalloc(hi - lo, sizeof(uint32_t));
		plans[v].owned = true;
		memcpy(plans[v].page, list + lo, (hi - lo) * sizeof(uint32_t));
	}
	if (!c->same)
		free(list);
}

static void build_seq_random(const struct plan_config *c, struct plan *plans)
{
	struct rng r = rng_make(c->seed, STREAM_SUBSET);
	/* seq over all of memory needs no shuffle (and no O(n log n) sort). */
	bool all_seq = c->kind == PAT_SEQ && c->touch == c->npages;
	uint32_t *list = random_subset(c->npages, all_seq ? 0 : c->touch, &r);

	if (c->kind == PAT_SEQ && !all_seq)
		qsort(list, c->touch, sizeof(*list), cmp_u32);
	distribute(plans, c, list, c->touch);
}

/* Each vCPU draws its own accesses: HOT_SHARE of them from the hot set
 * (a random tenth of memory), the rest from the other pages. */
static void build_hot(const struct plan_config *c, struct plan *plans)
{
	struct rng r = rng_make(c->seed, STREAM_HOTSET);
	uint64_t nhot = c->npages / HOT_PAGES_DIV ? c->npages / HOT_PAGES_DIV : 1;
	uint32_t *perm = random_subset(c->npages, nhot, &r);
	uint64_t ncold = c->npages - nhot;

	for (unsigned v = 0; v < c->nvcpus; v++) {
		struct rng vr = rng_make(c->seed, STREAM_HOT_VCPU + v);
		uint64_t n = c->touch * (v + 1) / c->nvcpus - c->touch * v / c->nvcpus;

		plans[v] = (struct plan){ xcalloc(n, sizeof(uint32_t)), n, true };
		for (uint64_t i = 0; i < n; i++) {
			bool hot = !ncold || rng_unit(&vr) < HOT_SHARE;

			plans[v].page[i] = hot ? perm[rng_below(&vr, nhot)]
					       : perm[nhot + rng_below(&vr, ncold)];
		}
	}
	free(perm);
}

static bool push(struct plan *p, uint64_t *cap, uint32_t page)
{
	if (p->n == *cap) {
		uint64_t ncap = *cap ? *cap * 2 : 1024;
		uint32_t *np = realloc(p->page, ncap * sizeof(*np));

		if (!np)
			return false;
		p->page = np;
		*cap = ncap;
	}
	p->page[p->n++] = page;
	return true;
}

/* One decimal page index per line; blank lines and '#' comments allowed.
 * Entry i goes to vCPU i % K, each vCPU playing its entries in order. */
static int build_trace(const struct plan_config *c, struct plan *plans)
{
	FILE *f = fopen(c->trace, "re");
	uint64_t *cap = xcalloc(c->nvcpus, sizeof(*cap)), line = 0, entries = 0;
	char *buf = NULL;
	size_t bufsz = 0;
	int rc = -1;

	if (!f) {
		msg("--pattern trace:%s: %m", c->trace);
		goto out;
	}
	for (unsigned v = 0; v < c->nvcpus; v++)
		plans[v] = (struct plan){ NULL, 0, true };
	while (getline(&buf, &bufsz, f) > 0) {
		char *s = buf + strspn(buf, " \t"), *end;

		line++;
		if (*s == '#' || *s == '\n' || *s == '\r' || !*s)
			continue;
		errno = 0;
		uint64_t page = strtoull(s, &end, 10);

		end += strspn(end, " \t\r\n");
		if (end == s || *end || errno || *s == '-' || page >= c->npages) {
			msg("--pattern trace:%s line %" PRIu64 ": '%.*s' is not a page index below %" PRIu64,
			    c->trace, line, (int)strcspn(s, "\r\n"), s, c->npages);
			goto out;
		}
		unsigned v = (unsigned)(entries++ % c->nvcpus);

		if (!push(&plans[v], &cap[v], (uint32_t)page))
			fail_now(EXIT_SETUP, "out of memory reading the trace");
	}
	if (!entries) {
		msg("--pattern trace:%s: no page indices in the file", c->trace);
		goto out;
	}
	rc = 0;
out:
	if (rc)
		plan_free(plans, c->nvcpus);
	if (f)
		fclose(f);
	free(buf);
	free(cap);
	return rc;
}

int plan_build(const struct plan_config *c, struct plan *plans)
{
	memset(plans, 0, sizeof(*plans) * c->nvcpus);
	switch (c->kind) {
	case PAT_SEQ:
	case PAT_RANDOM: build_seq_random(c, plans); return 0;
	case PAT_HOT: build_hot(c, plans); return 0;
	case PAT_TRACE: return build_trace(c, plans);
	}
	return -1;
}

void plan_free(struct plan *plans, unsigned nvcpus)
{
	for (unsigned v = 0; v < nvcpus; v++)
		if (plans[v].owned)
			free(plans[v].page);
	memset(plans, 0, sizeof(*plans) * nvcpus);
}
