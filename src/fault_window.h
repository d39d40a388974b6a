/* fault_window.h - the fault-around window of a session: how many pages
 * around (or ahead of) a MISSING fault are filled with it, learnt from the
 * guest's own faults. Pure logic: no locks, no I/O; the pump (one thread at
 * a time) owns it. fault.c asks for a window, claims what is absent in it
 * and leaves the probe page alone. tests/unit_fault_window.c drives it
 * deterministically. */
#ifndef PAGEIN_FAULT_WINDOW_H
#define PAGEIN_FAULT_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Adaptive mode: bounds of the window of a random access, in pages. A
 * sequential stream may grow up to FW_SEQ_MAX (PAGEIN_FAULT_AROUND_MAX). */
#define FW_AUTO_START 64u
#define FW_AUTO_MIN 1u
#define FW_AUTO_MAX 64u
#define FW_SEQ_MAX 512u
/* One random-access window in FW_PROBE_EVERY carries a probe; the window
 * is re-sized after every FW_EPOCH probes. */
#define FW_PROBE_EVERY 4u
#define FW_EPOCH 64u
/* No re-sizing on fewer expected probe faults than this. */
#define FW_MIN_EXPECTED 4.0
/* Probes remembered (a hash set: a probe may fault long after its window,
 * as in a random scan that comes back; a newer probe may take its slot). */
#define FW_PROBE_SLOTS 4096u

struct fault_window {
	bool adaptive;     /* auto: sized by probes; else fixed at base */
	unsigned size;     /* window of a random access (power of two) */
	unsigned seq;      /* window of the last sequential step, 0 = none */
	const void *stream; /* region of the last window */
	size_t next;       /* page right after the last window */
	unsigned windows;  /* random windows since the last probe */
	uint64_t total_pages;  /* of every region: the guest's memory */
	uint64_t outstanding;  /* probes that have not faulted (yet) */
	unsigned epoch;        /* probes since the last re-sizing */
	unsigned hits;         /* probe faults since the last re-sizing */
	double expected;       /* ... and how many a guest touching pages at
				* random would have made */
	struct {
		const void *rg;
		size_t idx;
	} probe_set[FW_PROBE_SLOTS]; /* probes not yet hit */
	/* For reports and tests. */
	uint64_t grows, shrinks, probe_hits, probes;
};

/* size: a fixed window (power of two; 0 or 1 = none), or adaptive;
 * total_pages: the guest's memory in pages. */
void fw_init(struct fault_window *fw, unsigned size, bool adaptive,
	     uint64_t total_pages);

/* True when this session fills anything around a fault. */
static inline bool fw_enabled(const struct fault_window *fw)
{
	return fw->adaptive || fw->size >= 2;
}

struct fw_plan {
	size_t lo, hi;   /* pages to fill with the fault: [lo, hi), holding idx */
	size_t probe;    /* a page of [lo, hi) to leave absent, or SIZE_MAX */
	bool sequential; /* the fault continued the last window */
};

/* The window for a MISSING fault on absent page idx of region rg (npages
 * pages; [chunk_lo, chunk_hi): the pages of the source's chunk holding
 * idx, filled whole when larger than the window; 0, 0 if none). The
 * caller claims what is absent in [lo, hi) except probe, then reports the
 * run it got with fw_filled(). */
void fw_plan(struct fault_window *fw, const void *rg, size_t npages,
	     size_t chunk_lo, size_t chunk_hi, size_t idx, struct fw_plan *p);

/* The run [lo, hi) actually claimed for plan p (probe: still absent when
 * claimed around, else SIZE_MAX). */
void fw_filled(struct fault_window *fw, const void *rg, const struct fw_plan *p,
	       size_t lo, size_t hi, size_t probe);

/* The current random-access window (pages), for logs and tests. */
static inline unsigned fw_size(const struct fault_window *fw)
{
	return fw->size;
}

#endif
