/* pagein.h - lazy restore of VM memory snapshots over userfaultfd.
 *
 * The only public header of libpagein. Every function returns 0 or a negative
 * errno; none prints or exits. Where a call refuses input it fills a
 * struct pagein_error with a sentence naming the field and value at fault.
 *
 * Two ways in:
 *  - embed: open a source, build a session from regions + fds you already
 *    have, and drive it (pagein_session_run, or the _handle_ calls from your
 *    own event loop);
 *  - serve: pagein_server listens on a Unix socket for Firecracker-style
 *    handshakes and runs one session per connection on a worker pool.
 */
#ifndef PAGEIN_H
#define PAGEIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pagein_error {
	char msg[256];
};

/* ---- sources: where page bytes come from ---------------------------- */

struct pagein_source;

/* Opens a snapshot: a raw memory file (dense or sparse) or a pagein
 * snapshot file (detected by its magic). The source is shared, read-only and
 * thread-safe; sessions hold a reference. */
int pagein_source_open(const char *path, struct pagein_source **out,
		       struct pagein_error *err);
struct pagein_source *pagein_source_ref(struct pagein_source *src);
void pagein_source_unref(struct pagein_source *src);
/* Size in bytes of the guest memory image the source describes. */
uint64_t pagein_source_size(const struct pagein_source *src);

/* ---- sessions: one VM ------------------------------------------------- */

/* One guest memory region, as Firecracker describes it. */
struct pagein_region {
	uint64_t host_addr; /* start in the VMM's address space */
	uint64_t size;      /* bytes, a multiple of page_size */
	uint64_t offset;    /* offset in the snapshot and in mem_fd */
	uint64_t page_size; /* 4096 or 2097152 */
};

/* What to do when the snapshot cannot give a page's bytes (checksum
 * mismatch, truncated file, read error that persists). Wrong bytes are
 * never mapped either way. */
enum pagein_on_corrupt {
	PAGEIN_CORRUPT_FAIL = 0, /* end the session, naming the chunk */
	PAGEIN_CORRUPT_POISON,   /* UFFDIO_POISON that page: the guest gets a
				  * memory error there, the rest runs on */
};

struct pagein_session_config {
	const struct pagein_region *regions;
	size_t nregions;
	int uffd;      /* registered by the VMM; UFFDIO_API already done */
	int mem_fd;    /* guest memory fd (memfd/guest_memfd) or -1 */
	int bitmap_fd; /* userfault bitmap memfd or -1 */
	struct pagein_source *source; /* the session takes its own reference */
	const char *name;             /* for the caller's log lines; copied */
	enum pagein_on_corrupt on_corrupt;
};

/* What a session has done, for reports. Counters only ever grow. */
struct pagein_stats {
	uint64_t faults_missing;  /* MISSING fault messages read */
	uint64_t faults_minor;    /* MINOR fault messages read */
	uint64_t requests;        /* stage-2 fault requests answered */
	uint64_t pages_copied;    /* UFFDIO_COPY of snapshot bytes */
	uint64_t pages_zeroed;    /* zero pages installed (snapshot zero or removed) */
	uint64_t pages_continued; /* UFFDIO_CONTINUE */
	uint64_t pages_written;   /* pwrite() into mem_fd (stage-2 path) */
	uint64_t wakes;           /* UFFDIO_WAKE issued (races, already present) */
	uint64_t eexist;          /* fills the kernel said were already there */
	uint64_t eagain;          /* fills retried after pending events */
	uint64_t removes;         /* UFFD_EVENT_REMOVE messages */
	uint64_t pages_removed;   /* pages those events discarded */
	uint64_t bytes_read;      /* snapshot bytes copied or written */
	uint64_t pages_poisoned;  /* pages the snapshot could not give */
};

/* Why a session ended (pagein_session_handle_* returning < 0). */
enum pagein_end {
	PAGEIN_RUNNING = 0,
	PAGEIN_END_VMM_GONE,  /* ESRCH/ENOENT/POLLHUP: the VMM exited */
	PAGEIN_END_FATAL,     /* an error the session cannot serve past */
	PAGEIN_END_STOPPED,   /* asked to stop */
};

struct pagein_session;

/* Validates the regions against the source and the fds, then builds the
 * page-state table. On success the session owns uffd, mem_fd and bitmap_fd
 * (it closes them when freed); on failure the caller still owns them. */
int pagein_session_new(const struct pagein_session_config *cfg,
		       struct pagein_session **out, struct pagein_error *err);
void pagein_session_free(struct pagein_session *s);
const char *pagein_session_name(const struct pagein_session *s);
int pagein_session_uffd(const struct pagein_session *s);

/* Reads every pending uffd event (the fd is non-blocking), applies REMOVEs
 * first, then serves the faults. Returns 0 when the queue is drained,
 * -ESRCH when the VMM is gone, another -errno on a fatal error (err says
 * what). Safe to call from one thread at a time per session. */
int pagein_session_handle_uffd(struct pagein_session *s,
			       struct pagein_error *err);

/* A stage-2 fault request (secret-hiding protocol): make the page at
 * guest memory fd offset `offset` present in the page cache, clear its
 * userfault bit. Safe to call concurrently with handle_uffd. Returns 0 or
 * -EINVAL (offset outside guest memory), -EIO, ... */
int pagein_session_populate_offset(struct pagein_session *s, uint64_t offset,
				   uint64_t *len_out, bool *zero_out,
				   struct pagein_error *err);

/* Runs the session on the calling thread until stop_fd becomes readable
 * (returns 0), the VMM goes away (-ESRCH) or a fatal error (-errno). For
 * embedders with no request stream. A pidfd of the VMM makes a good
 * stop_fd: a uffd alone does not report that its VMM exited. */
int pagein_session_run(struct pagein_session *s, int stop_fd,
		       struct pagein_error *err);

void pagein_session_stats(const struct pagein_session *s,
			  struct pagein_stats *out);
/* "faults 10 missing/2 minor, ..." in one line, for logs. */
int pagein_stats_format(const struct pagein_stats *st, char *buf, size_t len);

/* ---- server: the daemon's engine -------------------------------------- */

enum pagein_log_level {
	PAGEIN_LOG_ERROR = 0,
	PAGEIN_LOG_WARN,
	PAGEIN_LOG_INFO,
	PAGEIN_LOG_DEBUG,
};

struct pagein_server_config {
	const char *socket_path;   /* created; an existing socket file is replaced */
	const char *snapshot_path; /* default snapshot for every VM */
	unsigned threads;          /* worker threads; 0 = one per CPU */
	enum pagein_log_level log_level;
	enum pagein_on_corrupt on_corrupt;
	/* Where log lines go; NULL = stderr. One call per complete line. */
	void (*log)(void *opaque, enum pagein_log_level lvl, const char *line);
	void *log_opaque;
};

struct pagein_server;

int pagein_server_new(const struct pagein_server_config *cfg,
		      struct pagein_server **out, struct pagein_error *err);
/* Serves until pagein_server_stop(); returns 0 then. */
int pagein_server_run(struct pagein_server *srv);
/* Async-signal-safe: asks run() to return. */
void pagein_server_stop(struct pagein_server *srv);
void pagein_server_free(struct pagein_server *srv);

#ifdef __cplusplus
}
#endif
#endif
