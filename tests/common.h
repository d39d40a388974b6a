/* common.h - what the C integration tests share: snapshots with known
 * content, guest memory registered like a VMM does it, a case table. */
#ifndef PAGEIN_TESTS_COMMON_H
#define PAGEIN_TESTS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TC_PASS 0
#define TC_FAIL 1
#define TC_SKIP 77

#define PS 4096ull

/* Content of page i of the test snapshot with this seed: every 4th page
 * (i % 4 == 3) is all zeros, the others are pseudo-random. */
void tc_page(uint64_t seed, uint64_t i, void *buf);
bool tc_page_is_zero(uint64_t i);
/* Writes a sparse snapshot of npages pages (zero pages are holes). */
int tc_write_snapshot(const char *path, uint64_t npages, uint64_t seed);
/* The same, with pages [zero_first, zero_first + zero_count) all zeros too
 * (e.g. a whole 2 MiB page of zeros, which tc_page alone never gives). */
int tc_write_snapshot_zeros(const char *path, uint64_t npages, uint64_t seed,
			    uint64_t zero_first, uint64_t zero_count);
/* A fresh path under $TMPDIR (or /tmp) for this process. */
void tc_tmp_path(char *buf, size_t len, const char *name);

/* Guest memory types. TC_MEMFD is shared (MAP_SHARED), as Firecracker maps
 * a memfd; TC_MEMFD_PRIVATE maps one MAP_PRIVATE (its page cache plays a
 * memory file mapped privately); TC_HUGETLB is a 2 MiB hugetlbfs memfd,
 * MAP_SHARED (needs huge pages in the pool). */
enum tc_mem { TC_ANON = 1, TC_MEMFD = 2, TC_MEMFD_PRIVATE = 4, TC_HUGETLB = 8 };
const char *tc_mem_name(enum tc_mem mem);
/* Page size of guest memory of this type: 4096, or 2 MiB for TC_HUGETLB. */
uint64_t tc_mem_page_size(enum tc_mem mem);
#define TC_REG_MISSING 1u
#define TC_REG_MINOR 2u

struct tc_guest {
	enum tc_mem mem;
	uint8_t *base;
	uint64_t size;
	int uffd;
	int memfd; /* -1 for anon */
	int bitmap_fd; /* -1 unless asked */
	uint64_t *bitmap; /* bit i: guest page i of page_size */
	uint64_t page_size;
	char skip_reason[200]; /* why tc_guest_new returned TC_SKIP */
};

/* Maps guest memory, creates and registers a uffd as Firecracker does
 * (non-blocking, EVENT_REMOVE). Returns TC_SKIP if the kernel lacks a
 * feature (or, for TC_HUGETLB, the pool lacks huge pages), with the reason
 * printed and kept in g->skip_reason. On any failure nothing is left to
 * free (tc_guest_free is still safe). size: a multiple of the page size. */
int tc_guest_new(struct tc_guest *g, enum tc_mem mem, uint64_t size,
		 unsigned reg, bool bitmap);
void tc_guest_free(struct tc_guest *g);

/* Checks one page of guest memory against expected bytes; prints the
 * first difference. */
bool tc_check_page(const void *got, const void *want, uint64_t page);

#define TC_CHECK(cond)                                                         \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__,   \
				__LINE__, #cond);                              \
			return TC_FAIL;                                        \
		}                                                              \
	} while (0)

struct tc_case {
	const char *name;
	int (*fn)(enum tc_mem mem);
	unsigned mems; /* TC_ANON | TC_MEMFD | ... */
};

/* Runs every case for every memory type it names; prints one line each
 * ("ok", "FAIL", "skip: reason"); returns the process exit code. */
int tc_run(const struct tc_case *cases, size_t n);


/* ---- a session in this process (tests/common.c) ------------------------ */
#include <pthread.h>
#include "pagein.h"

/* How rig_start builds the session. */
struct rig_opts {
	unsigned reg;      /* TC_REG_* */
	bool stage2;       /* hand the session the memfd and a bitmap */
	unsigned fault_around;
	bool record;
	/* Staged race, installed before the session thread starts. */
	void (*hook)(struct pagein_session *s, void *arg);
	/* Filling ahead: started before the session thread (eager fills
	 * everything right there). */
	const uint64_t *ws;
	size_t nws;
	enum pagein_populate populate;
	/* Serve the snapshot converted to the pagein format (this chunk size). */
	uint64_t pagein_chunk;
	enum pagein_on_corrupt on_corrupt;
	/* No thread runs the session: nobody reads the uffd unless a thread
	 * that waits becomes the pump (the engine's own promise). */
	bool no_runner;
	/* Snapshot pages [zero_first, zero_first + zero_count) are zeros too. */
	uint64_t zero_first, zero_count;
};

struct rig {
	struct tc_guest g;
	struct pagein_source *src;
	struct pagein_session *s;
	pthread_t th;
	int stop;
	int run_result;
	char err[256];
	char snap[256];
	uint64_t npages, seed; /* npages: 4 KiB pages, whatever the page size */
	uint64_t zero_first, zero_count;
	pthread_t balloon;
	bool balloon_started;
	bool runner;
	int hook_calls;
};

/* Guest memory of npages 4 KiB pages, a snapshot of the same size, a
 * session over them (one region of the memory type's page size) served by
 * a thread running pagein_session_run. On failure or skip nothing is left
 * running or allocated. */
int rig_start_opts(struct rig *r, enum tc_mem mem, uint64_t npages,
		   const struct rig_opts *o);
int rig_start_hooked(struct rig *r, enum tc_mem mem, uint64_t npages,
		     unsigned reg, bool stage2,
		     void (*hook)(struct pagein_session *, void *));
int rig_start(struct rig *r, enum tc_mem mem, uint64_t npages, unsigned reg,
	      bool stage2);
void rig_stop(struct rig *r, struct pagein_stats *st);
void *rig_run_session(void *arg);
/* The snapshot's bytes of 4 KiB page i (what the guest must read). */
void rig_page(const struct rig *r, uint64_t i, void *buf);
bool rig_check_page(struct rig *r, uint64_t i);
/* Userfault bit i: guest page i of the region's page size. */
bool rig_bit_set(struct rig *r, uint64_t i);
/* Waits (up to 30 s) until cond(stats) holds; false on timeout. */
bool rig_wait_stats(struct rig *r, bool (*cond)(const struct pagein_stats *, void *),
		    void *arg);

#endif
