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
 *
 * ABI: the library is libpagein.so.0 (and libpagein.a) and exports only
 * pagein_* names. Every public structure passed by pointer, one at a time
 * (pagein_session_config, pagein_prefetch, pagein_server_config, and those
 * the library fills: pagein_stats, pagein_latency, pagein_event,
 * pagein_server_totals), ends with `uint64_t reserved[8]`: room for new
 * fields without an ABI break. Zero the whole structure before filling it
 * (`= {0}`, designated initializers or memset): a later version gives a
 * meaning to zero there that is the old behaviour, and this version
 * refuses a config whose reserved words are not zero (-EINVAL) so that
 * nothing depends on garbage. New fields take reserved words from the
 * front, so sizes never change within .so.0. Two have no room, and keep
 * their layout for all of .so.0: pagein_region, which the caller passes
 * as an array (its size is the array's stride: a new field would need a
 * new structure and a new config field), and pagein_error (a fixed
 * 256-byte message).
 */
#ifndef PAGEIN_H
#define PAGEIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version ---------------------------------------------------------- */

#define PAGEIN_VERSION_MAJOR 0
#define PAGEIN_VERSION_MINOR 1
#define PAGEIN_VERSION_PATCH 0
#define PAGEIN_VERSION "0.1.0"
/* MAJOR << 16 | MINOR << 8 | PATCH, for #if comparisons. */
#define PAGEIN_VERSION_NUMBER \
	((PAGEIN_VERSION_MAJOR << 16) | (PAGEIN_VERSION_MINOR << 8) | PAGEIN_VERSION_PATCH)

/* The version of the library actually loaded ("0.1.0"), which may be newer
 * than the header a program was compiled with. */
const char *pagein_version(void);

/* Reserved words at the end of every public structure (see above). */
#define PAGEIN_RESERVED_WORDS 8

struct pagein_error {
	char msg[256];
};

/* ---- sources: where page bytes come from ---------------------------- */

struct pagein_source;

/* Opens a snapshot: a raw memory file (dense or sparse) or a pagein
 * snapshot file (detected by its magic), or the http://, https:// or
 * s3:// URL of a pagein snapshot (defaults: no shared cache directory, 8
 * requests in flight, a 30 s fetch deadline; pagein_server_config has the
 * options). The source is shared, read-only and thread-safe; sessions hold
 * a reference. */
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

/* Events a session reports to its embedder as they happen (the library
 * never prints): the daemon logs them, rate-limited, and counts them. */
enum pagein_event_kind {
	PAGEIN_EVENT_POISONED,      /* pages poisoned (UFFDIO_POISON or refused) */
	PAGEIN_EVENT_CORRUPT_CHUNK, /* the snapshot could not give a chunk */
};

struct pagein_event {
	enum pagein_event_kind kind;
	uint64_t offset; /* snapshot offset of the first page concerned */
	uint64_t pages;  /* how many pages (POISONED) */
	uint64_t chunk;  /* the chunk (CORRUPT_CHUNK, pagein files) */
	int error;       /* -EIO, -EBADMSG, ... */
	uint64_t reserved[PAGEIN_RESERVED_WORDS]; /* zeroed by the library */
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
	/* Fault-around: on a MISSING fault also fill the still-absent pages of
	 * a window of this many 4 KiB pages around it (a power of two, at most
	 * PAGEIN_FAULT_AROUND_MAX); the window grows while faults run
	 * sequentially. 0 or 1 = off. PAGEIN_FAULT_AROUND_AUTO: a window
	 * learnt from the guest's faults (grows on sequential runs, shrinks
	 * while the pages it fills ahead go unused). */
	unsigned fault_around;
	/* Keep the first-touch order (pagein_session_recorded). Recording is
	 * exact: it turns fault-around off for this session. Pages the
	 * embedder fills ahead (pagein_session_prefetch) are not recorded:
	 * start none while recording. */
	bool record;
	/* Called from any thread working for the session, as events happen;
	 * must be quick and must not call back into the session. May be NULL. */
	void (*on_event)(void *opaque, const struct pagein_event *ev);
	void *event_opaque;
	uint64_t reserved[PAGEIN_RESERVED_WORDS]; /* zero it */
};

#define PAGEIN_FAULT_AROUND_MAX 512u
#define PAGEIN_FAULT_AROUND_AUTO 0xffffffffu

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
	/* Pages filled, by the path that filled them. */
	uint64_t filled_fault;        /* the faulting page itself */
	uint64_t filled_fault_around; /* its neighbours in the window */
	uint64_t filled_prefetch;     /* working-set replay */
	uint64_t filled_background;   /* background or eager population */
	uint64_t filled_request;      /* stage-2 fault requests */
	uint64_t pages_total;         /* guest pages described by the regions */
	uint64_t elapsed_ns;          /* since the session was created */
	/* Since the session was created, when no page was left that needs
	 * the snapshot (every page present, poisoned or discarded), whichever
	 * path filled the last one; 0 = not yet. */
	uint64_t complete_ns;
	/* Pages that are holes of the snapshot (a raw file's holes, a pagein
	 * file's zero pages): never filled ahead, zeros on a fault. Counted
	 * done from the start. */
	uint64_t pages_hole;
	/* Faults that found their page being filled (by fault-around, the
	 * working set or population): the guest caught up with a filler and
	 * waited for it. Fewer means the fillers stay ahead. */
	uint64_t faults_on_filling;
	uint64_t reserved[PAGEIN_RESERVED_WORDS - 2]; /* zeroed by the library */
};

/* Fault service latency, from the uffd read to the fault being served
 * (its page filled and the vCPU woken): counts per bucket, bucket i holding
 * latencies up to pagein_latency_bound_ns(i); the last bucket is +Inf. */
#define PAGEIN_LATENCY_BUCKETS 14
struct pagein_latency {
	uint64_t count[PAGEIN_LATENCY_BUCKETS + 1];
	uint64_t sum_ns;
	uint64_t reserved[PAGEIN_RESERVED_WORDS]; /* zeroed by the library */
};
/* Upper bound of bucket i (0 <= i < PAGEIN_LATENCY_BUCKETS), ns. */
uint64_t pagein_latency_bound_ns(unsigned i);

struct pagein_session;

/* Validates the regions against the source and the fds, then builds the
 * page-state table. The uffd must have had UFFDIO_API done (its
 * /proc/self/fdinfo shows it), and must not have UFFD_FEATURE_SIGBUS (faults
 * would never reach pagein); EVENT_REMOVE is optional (Firecracker before
 * v1.12 enables it only with a balloon); the error names what is missing. On success the session owns uffd, mem_fd and bitmap_fd
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
 * -EINVAL (offset outside guest memory), -EHWPOISON (the page is poisoned:
 * the snapshot could not give it; its bit stays set; answer with an
 * error), -EIO/-EBADMSG (fail mode: the snapshot cannot give it), ... */
int pagein_session_populate_offset(struct pagein_session *s, uint64_t offset,
				   uint64_t *len_out, bool *zero_out,
				   struct pagein_error *err);

/* A session fails once, from whichever thread meets the error first (a
 * fault, a stage-2 request, the prefetch thread serving faults as the
 * pump). Then every call returns that error. Returns 0 or the failure's
 * -errno, with its sentence in err. */
int pagein_session_error(const struct pagein_session *s,
			 struct pagein_error *err);
/* An eventfd that becomes readable when the session fails: watch it with
 * the uffd in your event loop. Owned by the session. */
int pagein_session_event_fd(const struct pagein_session *s);
/* Asks every thread working for the session (prefetch, waiters) to give
 * up; pagein_session_free() does it first itself. */
void pagein_session_stop(struct pagein_session *s);

/* Runs the session on the calling thread until stop_fd becomes readable
 * (returns 0), the VMM goes away (-ESRCH) or a fatal error (-errno). For
 * embedders with no request stream. A pidfd of the VMM makes a good
 * stop_fd: a uffd alone does not report that its VMM exited. */
int pagein_session_run(struct pagein_session *s, int stop_fd,
		       struct pagein_error *err);

/* ---- filling ahead of the guest ---- */

enum pagein_populate {
	PAGEIN_POPULATE_NONE = 0,   /* only what is faulted or prefetched */
	PAGEIN_POPULATE_BACKGROUND, /* then the rest, at idle priority */
	PAGEIN_POPULATE_EAGER,      /* everything before serving anything */
};

struct pagein_prefetch {
	const uint64_t *offsets; /* working set: snapshot offsets in the order
				  * to fill them (copied); may be NULL */
	size_t count;
	enum pagein_populate populate;
	uint64_t reserved[PAGEIN_RESERVED_WORDS]; /* zero it */
};

/* Starts filling ahead of the guest: the working set first, in order, in
 * large batches, then (background) the rest. Runs on a thread of the
 * session's own, except EAGER, which fills everything on the calling
 * thread before returning. Faults are served meanwhile by whoever calls
 * handle_uffd, and never wait behind a batch they are not in. */
int pagein_session_prefetch(struct pagein_session *s,
			    const struct pagein_prefetch *p,
			    struct pagein_error *err);

/* The first-touch order so far (config.record): snapshot offsets of the
 * pages faulted or requested, each once. The caller frees *offsets. */
int pagein_session_recorded(struct pagein_session *s, uint64_t **offsets,
			    size_t *count);

/* An error the session's prefetch thread stopped on, or NULL. */
const char *pagein_session_prefetch_error(const struct pagein_session *s);

void pagein_session_stats(const struct pagein_session *s,
			  struct pagein_stats *out);
void pagein_session_latency(const struct pagein_session *s,
			    struct pagein_latency *out);
/* "faults 10 missing/2 minor, ..." in one line, for logs. */
int pagein_stats_format(const struct pagein_stats *st, char *buf, size_t len);
/* Snapshot bytes read per second, in MB/s (10^6 bytes): over the time to
 * complete once complete_ns is set, over elapsed_ns until then (so idle
 * time after the restore does not dilute it). */
double pagein_stats_throughput(const struct pagein_stats *st);

/* ---- working sets: the pages a restore touched first ------------------ */

/* A recorded working set: snapshot offsets in first-touch order, each a
 * multiple of page_size and below snapshot_size. `pagein serve --record`
 * writes them, `--prefetch` replays them, pagein snapshots can carry one
 * (docs/format.md); pagein_session_recorded gives one to an embedder. */
struct pagein_workingset;

/* Loads a working-set file, or the working set stored in a pagein snapshot
 * file (told apart by their magic). A snapshot that carries none is
 * -ENODATA; anything malformed is -EINVAL with the reason in err. */
int pagein_workingset_load(const char *path, struct pagein_workingset **out,
			   struct pagein_error *err);
/* Builds one from offsets (copied; checked as a loaded file would be). */
int pagein_workingset_new(const uint64_t *offsets, size_t count,
			  uint32_t page_size, uint64_t snapshot_size,
			  struct pagein_workingset **out,
			  struct pagein_error *err);
/* Writes the working-set file format atomically (temporary file + rename). */
int pagein_workingset_save(const struct pagein_workingset *ws,
			   const char *path, struct pagein_error *err);
size_t pagein_workingset_count(const struct pagein_workingset *ws);
/* The offsets, valid until _free; ready for pagein_prefetch.offsets. */
const uint64_t *pagein_workingset_offsets(const struct pagein_workingset *ws);
uint32_t pagein_workingset_page_size(const struct pagein_workingset *ws);
uint64_t pagein_workingset_snapshot_size(const struct pagein_workingset *ws);
void pagein_workingset_free(struct pagein_workingset *ws);

/* ---- server: the daemon's engine -------------------------------------- */

enum pagein_log_level {
	PAGEIN_LOG_ERROR = 0,
	PAGEIN_LOG_WARN,
	PAGEIN_LOG_INFO,
	PAGEIN_LOG_DEBUG,
};

/* How the server writes its log lines. */
enum pagein_log_format {
	/* "vm3 pid 1234: session ended (VMM exited): faults ...": a sentence,
	 * prefixed with the VM it is about. */
	PAGEIN_LOG_TEXT = 0,
	/* One JSON object per line: {"ts":"2026-12-02T02:34:50.123Z",
	 * "level":"info","vm":"vm3","pid":1234,"event":"session_ended",
	 * "msg":"...", ...fields}. Every line has an event (snake_case); vm
	 * and pid when it is about a VM; statistics as numbers. */
	PAGEIN_LOG_JSON,
};

/* What the daemon does to a VMM whose VM it cannot serve (a session
 * error, a corrupt page in fail mode, a refused handshake after the VMM
 * handed over its uffd). */
enum pagein_on_failure {
	PAGEIN_FAILURE_KILL = 0, /* SIGKILL the VMM through the pidfd pinned at
				  * accept: its guest must not run on memory
				  * nobody serves (fail closed) */
	PAGEIN_FAILURE_KEEP,     /* leave it running (its faults then hang) */
};

struct pagein_server_config {
	const char *socket_path;   /* created; a stale socket file is replaced,
				    * one a server listens on is refused;
				    * removed at the end only if it is still
				    * the file created (same inode) */
	const char *snapshot_path; /* default snapshot for every VM */
	unsigned threads;          /* worker threads; 0 = one per CPU */
	enum pagein_log_level log_level;
	enum pagein_on_corrupt on_corrupt;
	unsigned fault_around;          /* pages; see pagein_session_config */
	enum pagein_populate populate;
	const char *prefetch_path; /* working-set file replayed for every VM */
	const char *record_path;   /* first-touch order written at session end;
				    * "%n" in it becomes the VM number */
	enum pagein_on_failure on_failure;
	unsigned handshake_timeout_ms; /* a connection without a complete
					* handshake by then is closed; 0 = 10 s */
	unsigned max_connections;      /* open at once; 0 = 1024 */
	/* Where log lines go; NULL = stderr. One call per complete line. */
	void (*log)(void *opaque, enum pagein_log_level lvl, const char *line);
	void *log_opaque;
	/* Prometheus metrics at GET /metrics on "HOST:PORT" or "unix:PATH",
	 * served on a thread of their own; NULL = none. */
	const char *metrics_addr;
	/* Text (default) or JSON lines, given to log() as they are: a JSON
	 * line is a complete object with its own timestamp. */
	enum pagein_log_format log_format;
	/* An inherited listening Unix stream socket to serve on instead of
	 * creating socket_path (systemd socket activation: LISTEN_FDS); 0 =
	 * none (fd 0 is stdin). socket_path may then be NULL, or must name
	 * the socket's own path. pagein_server_free() closes the fd (if
	 * pagein_server_new() fails, it is still the caller's); the server
	 * never unlinks a socket file it did not create. */
	int listen_fd;
	/* The socket's permissions, set right after bind and before listen,
	 * so no VMM ever connects while it has the umask's mode: socket_mode
	 * if not 0 (e.g. 0660), and the owner and group if their _set flag is
	 * true. Otherwise access control is whatever the umask gives. */
	unsigned socket_mode;
	bool socket_owner_set, socket_group_set;
	uint32_t socket_owner, socket_group; /* uid, gid */
	/* Peer policy, checked with SO_PEERCRED right after accept, before a
	 * byte or fd is read from the peer: it is served if its uid is in
	 * allow_uids or its gid (or one of its supplementary groups) is in
	 * allow_gids. Both empty: every process that can open the socket.
	 * A refused peer is closed and logged (rate-limited), never killed:
	 * it handed over nothing. Copied. */
	const uint32_t *allow_uids;
	size_t nallow_uids;
	const uint32_t *allow_gids;
	size_t nallow_gids;
	/* One Prometheus endpoint shared by several servers in one process
	 * (pagein_metrics_new()): the server registers with it and its
	 * series carry its socket as a label. Alternative to metrics_addr
	 * (which gives this server an endpoint of its own); not both. */
	struct pagein_metrics *metrics;
	/* Remote snapshots (snapshot_path an http://, https:// or s3:// URL):
	 * s3_endpoint: base URL of an S3-compatible service for s3:// (NULL:
	 * AWS); cache_dir: chunk cache shared by sessions, processes and
	 * restarts (NULL: none), bounded by cache_size bytes (0: 1 GiB);
	 * fetch_parallel: range requests in flight (0: 8); fetch_deadline_ms:
	 * a chunk not fetched by then fails the session needing it (0: 30 s);
	 * ca_file: PEM CA certificates trusted for https:// (NULL: the
	 * system's). */
	const char *s3_endpoint;
	const char *cache_dir;
	uint64_t cache_size;
	uint32_t fetch_parallel;
	uint32_t fetch_deadline_ms;
	const char *ca_file;
	/* Keep last: new fields go above, taking words from here. */
	uint64_t reserved[PAGEIN_RESERVED_WORDS - 6]; /* zero it */
};

struct pagein_server;

/* A Prometheus endpoint (GET /metrics on "HOST:PORT" or "unix:PATH", on
 * a thread of its own) for every server given it in their config. Free it
 * after every server that uses it. */
struct pagein_metrics;
int pagein_metrics_new(const char *addr, struct pagein_metrics **out,
		       struct pagein_error *err);
void pagein_metrics_free(struct pagein_metrics *m);

/* A server's totals: what its sessions did, ended and open. */
struct pagein_server_totals {
	uint64_t connections;      /* accepted */
	uint64_t sessions_started, sessions_failed, sessions_open;
	uint64_t pages_present, pages_total; /* of the open sessions */
	struct pagein_stats all;   /* ended + open sessions, summed */
	uint64_t reserved[PAGEIN_RESERVED_WORDS]; /* zeroed by the library */
};
void pagein_server_totals(struct pagein_server *srv, struct pagein_server_totals *out);
/* The socket path the server listens on (NULL for an inherited socket
 * given without a path) and the snapshot it serves. */
const char *pagein_server_socket(const struct pagein_server *srv);
const char *pagein_server_snapshot(const struct pagein_server *srv);

int pagein_server_new(const struct pagein_server_config *cfg,
		      struct pagein_server **out, struct pagein_error *err);
/* Serves until pagein_server_stop(); returns 0 then. */
int pagein_server_run(struct pagein_server *srv);
/* Async-signal-safe: asks run() to return at once; sessions still open
 * are ended by pagein_server_free() (cause server_stopping). */
void pagein_server_stop(struct pagein_server *srv);
/* Async-signal-safe: stops accepting (the listening socket is closed; its
 * file stays until pagein_server_free()), lets open sessions end (their
 * VMMs exit), and makes run() return once none is left, or after
 * timeout_ms (0: at once); sessions still open then are ended by
 * pagein_server_free() (cause server_stopping, no failure policy). Logs
 * draining, then drained or drain_timeout. A later call does nothing;
 * pagein_server_stop() still stops at once. */
void pagein_server_drain(struct pagein_server *srv, unsigned timeout_ms);
/* Connections open now (sessions, and handshakes in progress). */
unsigned pagein_server_connections(struct pagein_server *srv);
/* One line in the server's log, in its format (text, or JSON with this
 * event name), at level lvl: for the embedder's own events (signals, its
 * log file). */
void pagein_server_log(struct pagein_server *srv, enum pagein_log_level lvl,
		       const char *event, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Logs one statistics line per open session (the daemon's SIGUSR1). */
void pagein_server_report(struct pagein_server *srv);
void pagein_server_free(struct pagein_server *srv);

#ifdef __cplusplus
}
#endif
#endif
