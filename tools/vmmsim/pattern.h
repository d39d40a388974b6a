/* pattern.h - which guest pages each vCPU accesses, in which order. */
#ifndef VMMSIM_PATTERN_H
#define VMMSIM_PATTERN_H

#include <stdbool.h>
#include <stdint.h>

enum pattern_kind { PAT_SEQ, PAT_RANDOM, PAT_HOT, PAT_TRACE };

struct plan_config {
	enum pattern_kind kind;
	const char *trace;   /* PAT_TRACE: file of page indices, one per line */
	uint64_t npages;     /* guest pages */
	uint64_t touch;      /* pages to touch (seq/random) or accesses (hot) */
	unsigned nvcpus;
	bool same;           /* seq/random: every vCPU walks the whole list */
	uint64_t seed;
};

struct plan {
	uint32_t *page; /* page indices in access order */
	uint64_t n;
	bool owned;     /* false when page[] is shared with vCPU 0's plan */
};

/* Fills plans[0..nvcpus). Prints why and returns -1 on failure. */
int plan_build(const struct plan_config *c, struct plan *plans);
void plan_free(struct plan *plans, unsigned nvcpus);

#endif
