/* fault_window.c - see fault_window.h.
 *
 * Fixed mode (--fault-around N): a fault fills the aligned window of N
 * pages around it; a fault on the page right after the last window is a
 * sequential step, whose window starts at the fault and doubles each step
 * up to FW_SEQ_MAX.
 *
 * Adaptive mode (--fault-around auto): the same, but the size of a random
 * access's window is learnt. Filling a page ahead pays off when the guest
 * uses it (it saves a fault, ~20x a page copy) and is wasted otherwise,
 * and the only way to see whether an anonymous page filled ahead gets used
 * is to not fill it: one window in FW_PROBE_EVERY leaves one page absent
 * (a probe: its first page, or its last when the fault is the first; the
 * page after the window when the window is smaller than 4). A
 * probe that faults, however late, says the guest used that part of the
 * window. How many probe faults to expect is measured against a guest
 * touching pages at random (each fault then hits an outstanding probe with
 * probability outstanding / total pages), which cancels out how late
 * probes of a slow random scan fault: after every FW_EPOCH probes (once at
 * least FW_MIN_EXPECTED probe faults were expected), the window halves if
 * the probes faulted less than a quarter as often as at random (the
 * neighbours of a fault are avoided: strided or isolated accesses), and
 * doubles (up to FW_AUTO_MAX) if at least half as often. Filling a page
 * ahead costs about a twentieth of a fault on the machine measured, so a
 * guest that touches its neighbours as often as any page keeps its
 * window: probes cannot tell how much of its memory a random guest will
 * touch in the end. */
#include "fault_window.h"

#include <string.h>

void fw_init(struct fault_window *fw, unsigned size, bool adaptive,
	     uint64_t total_pages)
{
	memset(fw, 0, sizeof(*fw));
	fw->total_pages = total_pages ? total_pages : 1;
	fw->adaptive = adaptive;
	fw->size = adaptive ? FW_AUTO_START : size;
}

static unsigned slot_of(const void *rg, size_t idx)
{
	uint64_t h = ((uint64_t)idx ^ (uint64_t)(uintptr_t)rg) * 0x9e3779b97f4a7c15ull;
	return (unsigned)(h >> 40) % FW_PROBE_SLOTS;
}

static bool take_probe(struct fault_window *fw, const void *rg, size_t idx)
{
	unsigned i = slot_of(rg, idx);
	if (fw->probe_set[i].rg == rg && fw->probe_set[i].idx == idx) {
		fw->probe_set[i].rg = NULL;
		return true;
	}
	return false;
}

void fw_plan(struct fault_window *fw, const void *rg, size_t npages,
	     size_t chunk_lo, size_t chunk_hi, size_t idx, struct fw_plan *p)
{
	p->lo = idx;
	p->hi = idx + 1;
	p->probe = SIZE_MAX;
	p->sequential = false;
	if (!fw_enabled(fw))
		return;
	if (fw->adaptive) {
		/* A fault on a page drawn at random from memory would hit one
		 * of the outstanding probes with this probability. */
		fw->expected += (double)fw->outstanding / (double)fw->total_pages;
		if (take_probe(fw, rg, idx)) {
			fw->hits++;
			fw->probe_hits++;
			if (fw->outstanding)
				fw->outstanding--;
		}
	}
	if (fw->stream == rg && idx == fw->next) {
		size_t w = (size_t)(fw->seq ? fw->seq : 1) * 2;
		if (w > FW_SEQ_MAX)
			w = FW_SEQ_MAX;
		p->hi = idx + w;
		p->sequential = true;
	} else {
		size_t w = fw->size;
		if (w >= 2) {
			p->lo = idx & ~(w - 1);
			p->hi = p->lo + w;
		}
		if (chunk_hi - chunk_lo > w) {
			/* A compressed chunk is decompressed whole on its first
			 * fault: fill all of it while it is at hand. */
			p->lo = chunk_lo;
			p->hi = chunk_hi;
		}
		if (fw->adaptive && ++fw->windows >= FW_PROBE_EVERY) {
			fw->windows = 0;
			/* Below the fault if it can: a run the guest starts at
			 * idx would reach a probe above it and say nothing
			 * about the rest of the window. */
			if (p->hi - p->lo >= 4)
				p->probe = idx > p->lo ? p->lo : p->hi - 1;
			else if (p->hi < npages)
				p->probe = p->hi;
		}
	}
	if (p->hi > npages)
		p->hi = npages;
	if (p->probe != SIZE_MAX && p->probe >= npages)
		p->probe = SIZE_MAX;
}

static void adapt(struct fault_window *fw)
{
	if (fw->expected < FW_MIN_EXPECTED)
		return; /* too early to tell: keep counting */
	if (fw->hits * 4 < fw->expected) {
		if (fw->size > FW_AUTO_MIN) {
			fw->size /= 2;
			fw->shrinks++;
		}
	} else if (fw->hits * 2 >= fw->expected && fw->size < FW_AUTO_MAX) {
		fw->size *= 2;
		fw->grows++;
	}
	fw->epoch = 0;
	fw->hits = 0;
	fw->expected = 0;
}

void fw_filled(struct fault_window *fw, const void *rg, const struct fw_plan *p,
	       size_t lo, size_t hi, size_t probe)
{
	if (!fw_enabled(fw))
		return;
	(void)lo;
	fw->stream = rg;
	fw->next = hi;
	fw->seq = (unsigned)(p->hi - p->lo);
	if (probe == SIZE_MAX || !fw->adaptive)
		return;
	unsigned i = slot_of(rg, probe);
	fw->probe_set[i].rg = rg;
	fw->probe_set[i].idx = probe;
	fw->probes++;
	if (fw->outstanding < FW_PROBE_SLOTS)
		fw->outstanding++;
	if (++fw->epoch >= FW_EPOCH)
		adapt(fw);
}
