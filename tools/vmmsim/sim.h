/* sim.h - the `run` subcommand's context: options, guest memory, expected
 * content, and the threads that play the guest (vCPUs), the VMM (kernel-mode
 * reads) and the balloon. Passed explicitly to every thread. */
#ifndef VMMSIM_SIM_H
#define VMMSIM_SIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "expect.h"
#include "guest_memory.h"
#include "handshake.h"
#include "pattern.h"
#include "stage2.h"
#include "util.h"

enum protocol { PROTO_MAINLINE, PROTO_SECRET_HIDING };

#define VMMSIM_MAX_EVICT 4
/* How the balloon discards a range: madvise(MADV_DONTNEED or MADV_REMOVE),
 * or (remap) a fresh private anonymous mapping over it then
 * MADV_DONTNEED, as Firecracker did for restored VMs up to at least
 * v1.10: the range leaves the uffd and the handler hears nothing. */
enum advice { ADVICE_DONTNEED, ADVICE_REMOVE, ADVICE_REMAP };

struct run_opts {
	const char *socket, *snapshot, *expect, *report_json;
	struct guest_config guest;   /* mem_size 0 = the --expect file's size */
	enum protocol protocol;
	enum fc_version fc;
	bool close_socket;           /* close it right after the handshake */
	bool reset_socket;           /* close it at exit with a reply unread */
	bool extra_field;
	unsigned split;              /* handshake pieces */
	struct plan_config plan;     /* npages/touch resolved after mapping */
	double touch_frac;           /* --touch as a fraction, or */
	uint64_t touch_bytes;        /* as a size (0 = use the fraction) */
	bool touch_given;
	uint64_t seed;
	double write_frac, stage2_frac;
	bool vmm_thread, verify_all;
	bool sigbus_skip;            /* --on-sigbus skip */
	unsigned balloon;            /* discards to make */
	enum advice advice;
	double timeout_s, hold_s;
	bool has_bad;
	uint64_t bad_offset;
	/* Benchmark options (bench/): */
	bool backend_file;           /* --backend file: no handler, no uffd */
	bool backend_populated;      /* --backend populated: anonymous memory
				      * holding the snapshot, filled before the
				      * workload (the touch floor) */
	bool expect_prefault;        /* --expect-prefault */
	const char *latency_out;     /* --latency-out FILE */
	const char *evict[VMMSIM_MAX_EVICT]; /* --evict FILE, before the handshake */
	unsigned nevict;
};

/* Counters, one set per thread (no shared cache lines), summed at the end. */
struct sim_stats {
	uint64_t map_first;       /* first access of a page through the mapping */
	uint64_t map_present;     /* later mapping accesses */
	uint64_t s2_requests;     /* stage-2 requests sent (bit was set) */
	uint64_t s2_bit_clear;    /* stage-2 accesses that found the bit clear */
	uint64_t vmm_reads;       /* kernel-mode reads by the VMM thread */
	uint64_t writes;          /* pattern writes */
	uint64_t discards;        /* balloon madvise calls */
	uint64_t discarded_pages;
	uint64_t balloon_reads;   /* memfd+dontneed: pages read before discard */
	uint64_t verify_all;      /* pages checked by --verify-all */
	uint64_t sigbus_skipped;  /* --on-sigbus skip: accesses that raised SIGBUS */
};

/* Latency samples in ns, saturated at 2^32-1 (4.3 s) to halve the memory;
 * the true maximum is kept apart. */
struct lat {
	uint32_t *ns;
	uint64_t n, cap, max_ns;
};

struct sim;

struct worker {
	struct sim *sim;
	unsigned id;
	pthread_t th;
	bool started;
	struct rng rng;
	struct sim_stats st;
	struct lat first_touch, s2_rtt;
	uint8_t *buf;              /* page_size bytes for pread/pipe reads */
	const struct plan *plan;   /* vCPUs only */
	uint64_t first, count;     /* verify-all slice */
};

struct sim {
	const struct run_opts *opt;
	struct guest guest;
	struct expect expect;
	struct stage2 *s2;
	int sock;
	struct plan *plans;        /* one per vCPU */
	unsigned nvcpus;
	struct worker *vcpu, vmm, balloon;
	uint64_t planned;          /* accesses the vCPUs will make in total */
	_Atomic uint64_t progress; /* page accesses and discards completed */
	_Atomic uint64_t workload_done; /* vCPU accesses completed */
};

/* run_opts.c: fills o; returns 0, -1 after --help, or an exit code. */
int run_parse(int argc, char **argv, struct run_opts *o);

/* report.c: latency samples */
void lat_init(struct lat *l, uint64_t cap);
void lat_add(struct lat *l, uint64_t ns);
void lat_free(struct lat *l);

/* vcpu.c: the vCPU threads, and the page accesses other threads reuse. */
int vcpus_start(struct sim *s);
void vcpus_join(struct sim *s);
void workers_free(struct sim *s);
/* Reads a page through the guest mapping (faulting if absent) and verifies
 * it. Caller holds the page lock. Returns true if this was the first
 * mapping access of the page. */
bool access_mapping(struct worker *w, uint64_t page, const char *path, bool workload);
int verify_all(struct sim *s);

/* vmm_thread.c */
int vmm_thread_start(struct sim *s);
void vmm_thread_join(struct sim *s);

/* balloon.c */
int balloon_start(struct sim *s);
void balloon_join(struct sim *s);

/* report.c */
struct report_extra {
	double wall_s;
	uint64_t ignored_replies, zero_replies;
	uint64_t minflt, majflt; /* page faults of the process during the workload */
};
/* Prints the text report on stdout and, if json_path, writes it as JSON
 * too. Returns -1 (message printed) if the JSON cannot be written. */
int report_finish(struct sim *s, const struct report_extra *x, const char *json_path);
/* --latency-out: every first-touch latency of the workload, in ns, one per
 * line (vCPU 0's first). Returns -1 (message printed) on a write error. */
int report_latencies(struct sim *s, const char *path);

#endif
