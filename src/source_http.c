/* source_http.c - a pagein snapshot served from an http(s):// URL or an
 * s3://BUCKET/KEY object (signed through s3.h), with a local chunk cache.
 *
 * At open the header, index and working set (everything before the chunk
 * data) are read with one range request and validated like a file's. The
 * chunks are then fetched on demand by one fetcher thread per source,
 * driving libcurl's multi interface: connections are reused, HTTP/2 is
 * used where the server offers it, at most `parallel` range requests are
 * in flight, and chunks wanted together that sit next to each other in
 * the object go out as one range (up to COALESCE_MAX bytes), by priority
 * (faults first, then the working set, then population: PRI_*). A fetched
 * chunk's stored bytes are checked against its XXH3 checksum, kept in
 * memory (bounded) and written to the cache directory.
 *
 * Nobody waits for the network on the uffd pump: a fault on a chunk not
 * here yet is parked (source_park_begin/end around its fill): its fetch is
 * queued, the fault left unanswered (the vCPU sleeps in the kernel) and
 * recorded; when the chunk lands, the fetcher wakes the parked address
 * (UFFDIO_WAKE, no lock held, through the session's own dup of the uffd)
 * and the vCPU faults again, now on a chunk that is here. Other callers
 * (prefetch, population, stage-2 requests) wait on a condition variable.
 *
 * Transient failures (curl errors: reset, timeout, stall; 5xx, 408, 429;
 * short bodies) are retried with capped exponential backoff and jitter,
 * scheduled by the fetcher. A chunk not fetched within the deadline fails
 * with -EIO (held FAIL_HOLD_NS, so its waiters see it, then fetched anew);
 * other 4xx (412: the object changed) fail it at once.
 *
 * The cache directory holds one file per chunk, named by the object's
 * identity (XXH3 of the header, the object size and its ETag), so chunks
 * of a changed object are never mixed with an old one's. Files are written
 * to a temporary name and renamed; every read is checksum-verified (a bad
 * file is deleted and the chunk fetched again); mtime is touched on use and
 * the oldest files are evicted over the size bound, under flock(2) of
 * DIR/.lock. Several processes may share the directory; single-flight is
 * per process (two processes may fetch the same chunk once each). */
#include "source.h"

#include <curl/curl.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "error.h"
#include "s3.h"
#include "snapshot_format.h"
#include "uffd.h"

#define COALESCE_MAX (4ull << 20)
#define MEM_LIMIT (64ull << 20)   /* fetched stored bytes kept in memory */
/* A chunk that failed fails every get() for this long (the faults parked
 * on it fault again within microseconds of their wake and must see the
 * failure), then is fetched anew by the next one. */
#define FAIL_HOLD_NS (1000ull * 1000000)
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define OPEN_TRIES 4

enum cstate { C_NONE, C_QUEUED, C_INFLIGHT };

/* Fetch priorities. A chunk a fault or a stage-2 request waits on goes out
 * first, even past `parallel` (RESERVE more requests), and only with
 * neighbours that are as urgent (a small range lands soonest); then the
 * one chunk the prefetch thread waits on (it holds claimed pages a vCPU
 * may fault on meanwhile: that fault waits for its fill, not for a fetch of
 * its own); then working-set chunks fetched ahead; background ones last,
 * in at most half the slots, so that they never fill the link while a
 * fault waits. */
enum { PRI_BG, PRI_WS, PRI_WAIT, PRI_FAULT, NPRI };
#define RESERVE 2

struct chunkst {
	uint8_t state;
	uint8_t pri;        /* PRI_*: the highest anyone asked for */
	uint32_t tries;
	uint64_t want_ns;   /* first wanted (the deadline runs from here) */
	uint64_t next_ns;   /* queued: not before */
	uint64_t fail_until;
	int fail_err;
	unsigned char *mem; /* stored bytes, or NULL */
	bool used;          /* mem has been read since it landed */
	uint64_t mem_seq;   /* for eviction: order of landing */
};

struct park_handle {
	struct remote *rm;
	int uffd;           /* our own dup */
	unsigned refs;      /* under rm->lock */
	bool detached;
};

struct parked {
	struct park_handle *h;
	uint64_t chunk, addr, len;
};

struct xfer {
	CURL *e;
	struct curl_slist *hdrs;
	uint64_t first, n;  /* ranks in file order */
	uint64_t start, len, got;
	unsigned pri;
	unsigned char *buf;
	bool overflow;
	char ebody[1024];   /* the start of an error answer (S3's <Code>) */
	size_t elen;
	struct xfer *next;  /* in flight */
};

struct remote {
	char *url;          /* what is fetched */
	char *shown;        /* what logs name (the given URL) */
	struct s3_target *s3;
	char etag[128];
	uint64_t size;
	struct snapshot_meta *m; /* owned by the pagein source */
	uint64_t *by_off, *rank; /* chunks in file order; rank of each chunk */
	unsigned parallel;
	uint64_t deadline_ns;
	char *cache_dir;
	char *ca_file;           /* NULL: the system's CAs */
	bool private_cache;      /* made by us (no --cache-dir): removed at the end */
	uint64_t cache_size, cache_used;
	char key[17];

	pthread_mutex_t lock;
	pthread_cond_t landed;   /* a chunk landed or failed */
	struct chunkst *c;
	uint64_t mem_bytes, mem_seq;
	uint64_t unused_bytes;   /* landed and not read yet */
	uint64_t inflight_bytes; /* requested, not landed */
	uint64_t *queue;         /* wanted chunks, by priority when picked */
	size_t nqueue, capqueue;
	struct parked *park;
	size_t npark, cappark;
	bool stop;
	struct source_remote_stats st;

	CURLM *multi;
	struct xfer *inflight;   /* fetcher thread only */
	int running[NPRI];       /* requests in flight per priority (fetcher thread) */
	pthread_t thread;
	bool started;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_ALL); }

static __thread struct {
	struct park_handle *h;
	uint64_t off, addr, len;
	bool parked, last_parked;
	const atomic_bool *cancel;
} tls;

bool source_is_remote_url(const char *p)
{
	return !strncmp(p, "http://", 7) || !strncmp(p, "https://", 8) || s3_is_url(p);
}

/* ---- parking (called by the engine) ------------------------------------ */

void source_park_begin(struct park_handle *h, uint64_t off, uint64_t addr, uint64_t len)
{
	tls.h = h;
	tls.off = off;
	tls.addr = addr;
	tls.len = len;
	tls.parked = false;
}

bool source_park_end(void)
{
	bool p = tls.parked;
	tls.h = NULL;
	tls.parked = false;
	tls.last_parked = p;
	return p;
}

bool source_park_last(void)
{
	bool p = tls.last_parked;
	tls.last_parked = false;
	return p;
}

bool source_park_parked(void)
{
	return tls.parked;
}

void source_wait_cancel(const atomic_bool *flag)
{
	tls.cancel = flag;
}

static void handle_unref_locked(struct park_handle *h)
{
	if (--h->refs == 0) {
		close(h->uffd);
		free(h);
	}
}

/* ---- cache directory ---------------------------------------------------- */

static void cache_path(struct remote *rm, uint64_t c, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s.%" PRIu64 ".pgc", rm->cache_dir, rm->key, c);
}

static bool cache_present(struct remote *rm, uint64_t c)
{
	if (!rm->cache_dir)
		return false;
	char p[4096];
	struct stat st;
	cache_path(rm, c, p, sizeof(p));
	return stat(p, &st) == 0 && (uint64_t)st.st_size == rm->m->chunks[c].stored;
}

/* Reads and verifies a cached chunk: 0, or -EAGAIN (absent or bad: deleted). */
static int cache_read(struct remote *rm, uint64_t c, void *buf)
{
	if (!rm->cache_dir)
		return -EAGAIN;
	const struct snapshot_chunk *ch = &rm->m->chunks[c];
	char p[4096];
	cache_path(rm, c, p, sizeof(p));
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -EAGAIN;
	ssize_t n = pread(fd, buf, ch->stored, 0);
	struct stat st;
	bool ok = n == (ssize_t)ch->stored && fstat(fd, &st) == 0 &&
		  (uint64_t)st.st_size == ch->stored && XXH3_64bits(buf, ch->stored) == ch->checksum;
	if (ok) {
		struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
		futimens(fd, ts); /* LRU: the mtime is the last use */
	}
	close(fd);
	pthread_mutex_lock(&rm->lock);
	if (ok)
		rm->st.cache_hits++;
	else
		rm->st.cache_bad++;
	pthread_mutex_unlock(&rm->lock);
	if (!ok) {
		unlink(p);
		return -EAGAIN;
	}
	return 0;
}

struct cfile { char name[256]; uint64_t size; struct timespec mtime; };

static int cmp_cfile(const void *a, const void *b)
{
	const struct cfile *x = a, *y = b;
	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : x->mtime.tv_nsec > y->mtime.tv_nsec;
}

/* Sums the directory's chunk files; with evict, deletes the least recently
 * used until 90% of the bound. Under flock of DIR/.lock. Fetcher only. */
static uint64_t cache_scan(struct remote *rm, bool evict)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/.lock", rm->cache_dir);
	int lfd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lfd >= 0)
		flock(lfd, LOCK_EX);
	DIR *d = opendir(rm->cache_dir);
	struct cfile *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l < 5 || l >= sizeof(v->name) || strcmp(de->d_name + l - 4, ".pgc"))
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, 0) < 0)
			continue;
		total += (uint64_t)st.st_size;
		if (!evict)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			struct cfile *nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		strcpy(v[n].name, de->d_name);
		v[n].size = (uint64_t)st.st_size;
		v[n].mtime = st.st_mtim;
		n++;
	}
	if (evict && total > rm->cache_size) {
		qsort(v, n, sizeof(*v), cmp_cfile);
		uint64_t target = rm->cache_size / 10 * 9;
		for (size_t i = 0; i < n && total > target; i++)
			if (unlinkat(dirfd(d), v[i].name, 0) == 0) {
				total -= v[i].size;
				pthread_mutex_lock(&rm->lock);
				rm->st.cache_evictions++;
				pthread_mutex_unlock(&rm->lock);
			}
	}
	free(v);
	if (d)
		closedir(d);
	if (lfd >= 0)
		close(lfd); /* releases the flock */
	return total;
}

static void cache_write(struct remote *rm, uint64_t c, const void *buf, uint64_t len)
{
	if (!rm->cache_dir)
		return;
	char tmp[4096], dst[4096];
	static atomic_uint seq;
	snprintf(tmp, sizeof(tmp), "%s/.tmp-%d-%u", rm->cache_dir, (int)getpid(),
		 atomic_fetch_add(&seq, 1));
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	bool ok = write(fd, buf, len) == (ssize_t)len;
	close(fd);
	cache_path(rm, c, dst, sizeof(dst));
	if (!ok || rename(tmp, dst) < 0) {
		unlink(tmp);
		return;
	}
	rm->cache_used += len;
	if (rm->cache_used > rm->cache_size)
		rm->cache_used = cache_scan(rm, true);
}

/* ---- the queue (lock held) ---------------------------------------------- */

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool queue_push_locked(struct remote *rm, uint64_t c)
{
	if (rm->nqueue == rm->capqueue) {
		size_t cap = rm->capqueue ? 2 * rm->capqueue : 256;
		uint64_t *q = realloc(rm->queue, cap * sizeof(*q));
		if (!q)
			return false;
		rm->queue = q;
		rm->capqueue = cap;
	}
	rm->queue[rm->nqueue++] = c;
	return true;
}

static void want_locked(struct remote *rm, uint64_t c, unsigned pri)
{
	struct chunkst *cs = &rm->c[c];
	if (cs->mem || !rm->m->chunks[c].stored)
		return;
	if (cs->state != C_NONE) {
		if (pri > cs->pri) {
			cs->pri = pri;
			if (cs->state == C_QUEUED && rm->multi)
				curl_multi_wakeup(rm->multi); /* it may go out now */
		}
		return;
	}
	if (!queue_push_locked(rm, c))
		return;
	uint64_t now = mono_ns();
	cs->state = C_QUEUED;
	cs->pri = pri;
	cs->tries = 0;
	cs->want_ns = now;
	cs->next_ns = now;
	if (rm->multi)
		curl_multi_wakeup(rm->multi);
}

/* Over MEM_LIMIT: frees the oldest chunks already read (decompressed
 * since), then, if still over (fetches do not wait for room), the
 * oldest not read yet (in the cache directory if there is one). */
static void mem_evict_locked(struct remote *rm)
{
	for (int pass = 0; pass < 2 && rm->mem_bytes > MEM_LIMIT; pass++) {
		while (rm->mem_bytes > MEM_LIMIT) {
			uint64_t best = UINT64_MAX, bc = 0;
			for (uint64_t c = 0; c < rm->m->h.chunk_count; c++)
				if (rm->c[c].mem && (pass || rm->c[c].used) && rm->c[c].mem_seq < best) {
					best = rm->c[c].mem_seq;
					bc = c;
				}
			if (best == UINT64_MAX)
				break;
			struct chunkst *cs = &rm->c[bc];
			if (!cs->used)
				rm->unused_bytes -= rm->m->chunks[bc].stored;
			free(cs->mem);
			cs->mem = NULL;
			rm->mem_bytes -= rm->m->chunks[bc].stored;
		}
	}
}

/* Wakes the faults parked on chunk c (lock held on entry, released and
 * retaken around the ioctls). */
static void wake_parked_locked(struct remote *rm, uint64_t c)
{
	struct parked *w = NULL;
	size_t nw = 0;
	for (size_t i = 0; i < rm->npark;) {
		if (rm->park[i].chunk != c) {
			i++;
			continue;
		}
		struct parked *nwp = realloc(w, (nw + 1) * sizeof(*w));
		if (!nwp)
			break;
		w = nwp;
		w[nw++] = rm->park[i]; /* with the entry's reference */
		rm->park[i] = rm->park[--rm->npark];
	}
	pthread_cond_broadcast(&rm->landed);
	if (!nw)
		return;
	pthread_mutex_unlock(&rm->lock);
	for (size_t i = 0; i < nw; i++)
		if (!__atomic_load_n(&w[i].h->detached, __ATOMIC_ACQUIRE))
			uffd_wake(w[i].h->uffd, w[i].addr, w[i].len);
	pthread_mutex_lock(&rm->lock);
	for (size_t i = 0; i < nw; i++)
		handle_unref_locked(w[i].h);
	free(w);
}

static void fail_locked(struct remote *rm, uint64_t c, int e)
{
	struct chunkst *cs = &rm->c[c];
	cs->state = C_NONE;
	cs->fail_err = e;
	cs->fail_until = mono_ns() + FAIL_HOLD_NS;
	rm->st.failed_chunks++;
	wake_parked_locked(rm, c);
}

/* ---- requests ----------------------------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
	struct xfer *x = arg;
	size_t n = sz * nm;
	long code = 0;
	curl_easy_getinfo(x->e, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200 && code != 206) {
		/* An error page: keep its start, for S3's <Code>. */
		size_t k = n < sizeof(x->ebody) - x->elen ? n : sizeof(x->ebody) - x->elen;
		memcpy(x->ebody + x->elen, p, k);
		x->elen += k;
		return n;
	}
	if (x->got + n > x->len) {
		x->overflow = true; /* not our range (a 200 with the whole object) */
		return 0;
	}
	memcpy(x->buf + x->got, p, n);
	x->got += n;
	return n;
}

static CURL *easy_new(struct remote *rm, const char *range, struct curl_slist **hdrs)
{
	CURL *e = curl_easy_init();
	if (!e)
		return NULL;
	curl_easy_setopt(e, CURLOPT_URL, rm->url);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	/* A stalled transfer: under 1 KiB/s for 3 s is given up and retried. */
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 3L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "pagein");
	if (rm->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, rm->ca_file);
	*hdrs = NULL;
	if (rm->s3) {
		char **h = NULL;
		if (s3_sign_get(rm->s3, range, time(NULL), &h) == 0 && h) {
			for (size_t i = 0; h[i]; i++)
				*hdrs = curl_slist_append(*hdrs, h[i]);
			s3_headers_free(h);
		}
	} else if (range) {
		curl_easy_setopt(e, CURLOPT_RANGE, range);
	}
	if (rm->etag[0]) {
		char b[160];
		snprintf(b, sizeof(b), "If-Match: %s", rm->etag);
		*hdrs = curl_slist_append(*hdrs, b);
	}
	if (*hdrs)
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
	return e;
}

/* The HTTP version the response on e was received in (lock held). */
static void note_version(struct remote *rm, CURL *e)
{
	long v = 0;
	if (curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &v) != CURLE_OK)
		return;
	const char *s = v == CURL_HTTP_VERSION_1_0 ? "HTTP/1.0" :
			v == CURL_HTTP_VERSION_1_1 ? "HTTP/1.1" :
			v == CURL_HTTP_VERSION_2_0 ? "HTTP/2" :
#ifdef CURL_HTTP_VERSION_3
			v == CURL_HTTP_VERSION_3 ? "HTTP/3" :
#endif
			NULL;
	if (s)
		snprintf(rm->st.http_version, sizeof(rm->st.http_version), "%s", s);
}

static bool transient(CURLcode cc, long code)
{
	if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE)
		return false; /* no retry makes a certificate trusted */
	if (cc != CURLE_OK)
		return true;
	return code >= 500 || code == 408 || code == 429;
}

static bool queue_push_locked(struct remote *rm, uint64_t c);

/* Starts one range request for the chunks of ranks [r0, r0+n), in flight
 * already (lock held). False if it could not: they are queued again. */
static bool start_xfer(struct remote *rm, uint64_t r0, uint64_t n, unsigned pri)
{
	const struct snapshot_meta *m = rm->m;
	uint64_t c0 = rm->by_off[r0], cl = rm->by_off[r0 + n - 1];
	struct xfer *x = calloc(1, sizeof(*x));
	uint64_t start = m->chunks[c0].offset;
	uint64_t len = m->chunks[cl].offset + m->chunks[cl].stored - start;
	if (x)
		x->buf = malloc(len);
	char range[64];
	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, start, start + len - 1);
	if (x && x->buf)
		x->e = easy_new(rm, rm->s3 ? range : range + 6, &x->hdrs);
	if (!x || !x->buf || !x->e) {
		if (x)
			free(x->buf);
		free(x);
		for (uint64_t i = 0; i < n; i++) { /* try again a little later */
			uint64_t c = rm->by_off[r0 + i];
			rm->inflight_bytes -= m->chunks[c].stored;
			rm->c[c].state = C_QUEUED;
			rm->c[c].next_ns = mono_ns() + 100 * 1000000ull;
			if (!queue_push_locked(rm, c))
				rm->c[c].state = C_NONE;
		}
		return false;
	}
	x->first = r0;
	x->n = n;
	x->pri = pri;
	x->start = start;
	x->len = len;
	curl_easy_setopt(x->e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(x->e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->e, CURLOPT_PRIVATE, x);
	curl_multi_add_handle(rm->multi, x->e);
	x->next = rm->inflight;
	rm->inflight = x;
	rm->st.fetches++;
	return true;
}

static bool due(struct remote *rm, uint64_t c, uint64_t now)
{
	return rm->c[c].state == C_QUEUED && rm->c[c].next_ns <= now;
}

/* Starts requests for due queued chunks, by priority: fault chunks while
 * fewer than parallel + RESERVE requests are in flight, working-set chunks
 * while fewer than `parallel`, background ones while fewer than `parallel`
 * in all and at most half of them background. Each is extended over its
 * due queued neighbours in the object of at least its priority. Returns
 * how long to sleep at most (ms). */
static long dispatch(struct remote *rm, int *running)
{
	uint64_t now = mono_ns();
	long sleep_ms = 1000;
	int bg_max = rm->parallel > 1 ? (int)rm->parallel / 2 : 1;
	for (int pri = PRI_FAULT; pri >= PRI_BG; pri--) {
		int cap = pri == PRI_FAULT ? (int)rm->parallel + RESERVE : (int)rm->parallel;
		for (size_t i = 0; i < rm->nqueue && *running < cap;) {
			uint64_t c = rm->queue[i];
			struct chunkst *cs = &rm->c[c];
			if (cs->state != C_QUEUED) {
				rm->queue[i] = rm->queue[--rm->nqueue];
				continue;
			}
			if (cs->pri != pri) {
				i++;
				continue;
			}
			if (pri == PRI_BG && rm->running[PRI_BG] >= bg_max)
				break;
			/* Fetching ahead (not for a fault) stops while what
			 * landed unread plus what is in flight fills the memory
			 * bound: it would only evict chunks before they are used. */
			if (pri != PRI_FAULT && rm->unused_bytes + rm->inflight_bytes >= MEM_LIMIT) {
				if (sleep_ms > 50)
					sleep_ms = 50;
				i++;
				continue;
			}
			if (cs->next_ns > now) {
				long ms = (long)((cs->next_ns - now) / 1000000) + 1;
				if (ms < sleep_ms)
					sleep_ms = ms;
				i++;
				continue;
			}
			uint64_t lo = rm->rank[c], hi = lo + 1;
			uint64_t bytes = rm->m->chunks[c].stored;
			/* A chunk retried goes out in smaller ranges each time, so
			 * that one bad request does not fail many chunks again. */
			uint64_t cmax = COALESCE_MAX >> (cs->tries < 4 ? cs->tries : 4);
			const struct snapshot_chunk *ch = rm->m->chunks;
#define NEXT_OK(r) (due(rm, rm->by_off[r], now) && rm->c[rm->by_off[r]].pri >= pri)
			while (lo > 0 && NEXT_OK(lo - 1) &&
			       ch[rm->by_off[lo - 1]].offset + ch[rm->by_off[lo - 1]].stored == ch[rm->by_off[lo]].offset &&
			       bytes + ch[rm->by_off[lo - 1]].stored <= cmax) {
				lo--;
				bytes += ch[rm->by_off[lo]].stored;
			}
			while (hi < rm->m->h.chunk_count && NEXT_OK(hi) &&
			       ch[rm->by_off[hi - 1]].offset + ch[rm->by_off[hi - 1]].stored == ch[rm->by_off[hi]].offset &&
			       bytes + ch[rm->by_off[hi]].stored <= cmax) {
				bytes += ch[rm->by_off[hi]].stored;
				hi++;
			}
#undef NEXT_OK
			for (uint64_t r = lo; r < hi; r++) {
				struct chunkst *q = &rm->c[rm->by_off[r]];
				rm->inflight_bytes += rm->m->chunks[rm->by_off[r]].stored;
				q->state = C_INFLIGHT;
				if (!q->tries)
					q->want_ns = now; /* the deadline runs from the first request */
			}
			if (start_xfer(rm, lo, hi - lo, (unsigned)pri)) {
				(*running)++;
				rm->running[pri]++;
			}
		}
	}
	if (rm->nqueue == 0)
		sleep_ms = 1000;
	return sleep_ms;
}

static void xfer_free(struct remote *rm, struct xfer *x)
{
	for (struct xfer **pp = &rm->inflight; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	curl_multi_remove_handle(rm->multi, x->e);
	curl_easy_cleanup(x->e);
	curl_slist_free_all(x->hdrs);
	free(x->buf);
	free(x);
}

static void finish_xfer(struct remote *rm, struct xfer *x, CURLcode cc)
{
	long code = 0;
	curl_easy_getinfo(x->e, CURLINFO_RESPONSE_CODE, &code);
	bool ok = cc == CURLE_OK && code == 206 && x->got == x->len && !x->overflow;
	bool retry = !ok && (transient(cc, code) || (cc == CURLE_OK && code == 206));
	uint64_t now = mono_ns();
	pthread_mutex_lock(&rm->lock);
	rm->st.bytes += x->got;
	rm->inflight_bytes -= x->len;
	/* Before the chunks fail: the faults woken by that may end their
	 * session, whose line shows this. */
	if (!ok && rm->s3 && cc == CURLE_OK && code >= 300) {
		/* e.g. credentials rotated or expired since the start: S3's
		 * own sentence, not a transfer error. */
		char d[160];
		s3_describe_error(code, x->ebody, x->elen, d, sizeof(d));
		snprintf(rm->st.last_error, sizeof(rm->st.last_error), "%s: %s", rm->shown, d);
	} else if (!ok) {
		snprintf(rm->st.last_error, sizeof(rm->st.last_error), "%s: HTTP %ld, %s",
			 rm->shown, code, curl_easy_strerror(cc));
	}
	if (ok)
		note_version(rm, x->e);
	for (uint64_t i = 0; i < x->n; i++) {
		uint64_t c = rm->by_off[x->first + i];
		const struct snapshot_chunk *ch = &rm->m->chunks[c];
		struct chunkst *cs = &rm->c[c];
		if (ok) {
			const unsigned char *p = x->buf + (ch->offset - x->start);
			if (XXH3_64bits(p, ch->stored) != ch->checksum) {
				fail_locked(rm, c, -EBADMSG);
				continue;
			}
			unsigned char *mem = malloc(ch->stored);
			if (!mem) {
				cs->state = C_NONE;
				wake_parked_locked(rm, c);
				continue;
			}
			memcpy(mem, p, ch->stored);
			pthread_mutex_unlock(&rm->lock);
			cache_write(rm, c, mem, ch->stored);
			pthread_mutex_lock(&rm->lock);
			cs->mem = mem;
			cs->used = false;
			rm->unused_bytes += ch->stored;
			rm->st.cache_misses++;
			cs->mem_seq = ++rm->mem_seq;
			cs->state = C_NONE;
			cs->fail_until = 0;
			rm->mem_bytes += ch->stored;
			wake_parked_locked(rm, c);
			continue;
		}
		if (retry && now < cs->want_ns + rm->deadline_ns) {
			unsigned t = cs->tries < 10 ? cs->tries : 10;
			uint64_t ms = (uint64_t)BACKOFF_MIN_MS << t;
			if (ms > BACKOFF_MAX_MS)
				ms = BACKOFF_MAX_MS;
			ms = ms / 2 + (uint64_t)rand() % (ms / 2 + 1); /* jitter */
			cs->tries++;
			cs->state = C_QUEUED;
			cs->next_ns = now + ms * 1000000;
			rm->st.retries++;
			if (!queue_push_locked(rm, c)) {
				cs->state = C_NONE;
				wake_parked_locked(rm, c);
			}
			continue;
		}
		fail_locked(rm, c, -EIO);
	}
	mem_evict_locked(rm);
	pthread_mutex_unlock(&rm->lock);
	xfer_free(rm, x);
}

static void *fetcher(void *arg)
{
	struct remote *rm = arg;
	int running = 0;
	if (rm->cache_dir)
		rm->cache_used = cache_scan(rm, true);
	pthread_mutex_lock(&rm->lock);
	while (!rm->stop) {
		long sleep_ms = dispatch(rm, &running);
		pthread_mutex_unlock(&rm->lock);
		int still = 0;
		curl_multi_perform(rm->multi, &still);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(rm->multi, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			struct xfer *x = NULL;
			CURLcode cc = msg->data.result;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			rm->running[x->pri]--;
			finish_xfer(rm, x, cc);
			running--;
		}
		pthread_mutex_lock(&rm->lock);
		bool more = rm->nqueue && running < (int)rm->parallel + RESERVE;
		pthread_mutex_unlock(&rm->lock);
		long t = sleep_ms < 1000 ? sleep_ms : 1000;
		if (running || more)
			t = t < 100 ? t : 100;
		curl_multi_poll(rm->multi, NULL, 0, (int)t, NULL);
		pthread_mutex_lock(&rm->lock);
	}
	pthread_mutex_unlock(&rm->lock);
	return NULL;
}

/* Removes a private cache directory and its files. */
static void remove_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(d), de->d_name, 0);
	if (d)
		closedir(d);
	rmdir(path);
}

/* Private cache directories of daemons that died without removing theirs
 * (SIGKILL): pagein-cache-PID-XXXXXX whose PID no longer runs. */
static void sweep_private(const char *parent)
{
	DIR *d = opendir(parent);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		int pid;
		char rest[16];
		if (sscanf(de->d_name, "pagein-cache-%d-%15s", &pid, rest) != 2 || pid <= 0 ||
		    pid == (int)getpid() || strlen(rest) != 6)
			continue;
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", parent, de->d_name);
		remove_dir(p);
	}
	if (d)
		closedir(d);
}

/* ---- chunk_remote_ops --------------------------------------------------- */

/* What a fetch ahead of chunk c is worth: the working-set chunks are
 * stored first, before ws_data_end. */
static unsigned chunk_pri(const struct remote *rm, uint64_t c)
{
	return rm->m->chunks[c].offset < rm->m->h.ws_data_end ? PRI_WS : PRI_BG;
}

/* Its last fetch failed and it is not to be tried again yet. Caller
 * holds rm->lock. */
static bool failed_recently(const struct chunkst *cs)
{
	return cs->fail_until && mono_ns() < cs->fail_until;
}

/* 0: the chunk is in memory; its error if it failed recently; 1 if
 * neither (it must be fetched or waited for). Caller holds rm->lock. */
static int chunk_outcome(const struct chunkst *cs)
{
	if (cs->mem)
		return 0;
	return failed_recently(cs) ? cs->fail_err : 1;
}

static int r_ensure(void *arg, uint64_t c)
{
	struct remote *rm = arg;
	pthread_mutex_lock(&rm->lock);
	struct chunkst *cs = &rm->c[c];
	int rc = chunk_outcome(cs);
	bool idle = cs->state == C_NONE;
	pthread_mutex_unlock(&rm->lock);
	if (rc <= 0)
		return rc;
	if (idle && cache_present(rm, c))
		return 0;
	pthread_mutex_lock(&rm->lock);
	bool park = tls.h && tls.h->rm == rm;
	uint64_t cs_size = rm->m->h.chunk_size;
	for (;;) {
		if ((rc = chunk_outcome(cs)) <= 0) {
			pthread_mutex_unlock(&rm->lock);
			return rc;
		}
		/* A fault (parked or MINOR) or a stage-2 request jumps the
		 * queue; the prefetch thread (working set, then population)
		 * comes next: it waits for this one chunk, holding pages. */
		want_locked(rm, c, !tls.cancel ? PRI_FAULT : PRI_WAIT);
		if (park) {
			if (tls.off / cs_size == c && !tls.parked) {
				if (rm->npark == rm->cappark) {
					size_t cap = rm->cappark ? 2 * rm->cappark : 64;
					struct parked *np = realloc(rm->park, cap * sizeof(*np));
					if (!np) {
						pthread_mutex_unlock(&rm->lock);
						return -ENOMEM;
					}
					rm->park = np;
					rm->cappark = cap;
				}
				rm->park[rm->npark++] = (struct parked){tls.h, c, tls.addr, tls.len};
				tls.h->refs++;
				tls.parked = true;
				rm->st.parked++;
			}
			pthread_mutex_unlock(&rm->lock);
			return -EINPROGRESS;
		}
		if (tls.cancel && atomic_load(tls.cancel)) {
			pthread_mutex_unlock(&rm->lock);
			return -ECANCELED;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&rm->landed, &rm->lock, &ts);
	}
}

static int r_read_local(void *arg, uint64_t c, void *buf)
{
	struct remote *rm = arg;
	pthread_mutex_lock(&rm->lock);
	if (rm->c[c].mem) {
		memcpy(buf, rm->c[c].mem, rm->m->chunks[c].stored);
		if (!rm->c[c].used) {
			rm->c[c].used = true;
			rm->unused_bytes -= rm->m->chunks[c].stored;
		}
		pthread_mutex_unlock(&rm->lock);
		return 0;
	}
	pthread_mutex_unlock(&rm->lock);
	return cache_read(rm, c, buf);
}

static void r_want(void *arg, uint64_t c)
{
	struct remote *rm = arg;
	if (cache_present(rm, c))
		return;
	pthread_mutex_lock(&rm->lock);
	if (!failed_recently(&rm->c[c]))
		want_locked(rm, c, chunk_pri(rm, c));
	pthread_mutex_unlock(&rm->lock);
}

static void r_destroy(void *arg)
{
	struct remote *rm = arg;
	if (rm->started) {
		pthread_mutex_lock(&rm->lock);
		rm->stop = true;
		pthread_mutex_unlock(&rm->lock);
		curl_multi_wakeup(rm->multi);
		pthread_join(rm->thread, NULL);
	}
	if (rm->multi) {
		while (rm->inflight) /* transfers still in flight at the end */
			xfer_free(rm, rm->inflight);
		curl_multi_cleanup(rm->multi);
	}
	for (size_t i = 0; i < rm->npark; i++)
		handle_unref_locked(rm->park[i].h);
	if (rm->c)
		for (uint64_t c = 0; rm->m && c < rm->m->h.chunk_count; c++)
			free(rm->c[c].mem);
	free(rm->c);
	free(rm->park);
	free(rm->queue);
	free(rm->by_off);
	free(rm->rank);
	if (rm->private_cache)
		remove_dir(rm->cache_dir);
	free(rm->cache_dir);
	if (rm->s3)
		s3_target_free(rm->s3);
	free(rm->url);
	free(rm->shown);
	free(rm->ca_file);
	pthread_cond_destroy(&rm->landed);
	pthread_mutex_destroy(&rm->lock);
	free(rm);
}

static const struct chunk_remote_ops remote_ops = {
	.ensure = r_ensure,
	.read_local = r_read_local,
	.want = r_want,
	.destroy = r_destroy,
};

/* ---- sessions ----------------------------------------------------------- */

struct park_handle *source_park_attach(struct pagein_source *s, int uffd)
{
	struct remote *rm = source_pagein_remote(s);
	if (!rm)
		return NULL;
	struct park_handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->uffd = fcntl(uffd, F_DUPFD_CLOEXEC, 3);
	if (h->uffd < 0) {
		free(h);
		return NULL;
	}
	h->rm = rm;
	h->refs = 1;
	return h;
}

void source_park_detach(struct park_handle *h)
{
	if (!h)
		return;
	struct remote *rm = h->rm;
	pthread_mutex_lock(&rm->lock);
	__atomic_store_n(&h->detached, true, __ATOMIC_RELEASE);
	unsigned dropped = 0;
	for (size_t i = 0; i < rm->npark;) {
		if (rm->park[i].h == h) {
			rm->park[i] = rm->park[--rm->npark];
			dropped++;
		} else {
			i++;
		}
	}
	h->refs -= dropped; /* the entries' references; ours is the last */
	handle_unref_locked(h);
	pthread_mutex_unlock(&rm->lock);
}

bool source_remote_stats(struct pagein_source *s, struct source_remote_stats *st)
{
	struct remote *rm = source_pagein_remote(s);
	if (!rm)
		return false;
	pthread_mutex_lock(&rm->lock);
	*st = rm->st;
	pthread_mutex_unlock(&rm->lock);
	return true;
}

/* ---- open --------------------------------------------------------------- */

struct hdrcap { char etag[128]; uint64_t total; };

static size_t on_header(char *p, size_t sz, size_t nm, void *arg)
{
	struct hdrcap *h = arg;
	size_t n = sz * nm;
	char line[512];
	size_t l = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
	memcpy(line, p, l);
	line[l] = 0;
	while (l && (line[l - 1] == '\r' || line[l - 1] == '\n'))
		line[--l] = 0;
	if (!strncasecmp(line, "HTTP/", 5)) {
		h->etag[0] = 0; /* a new response (after a redirect) */
		h->total = 0;
	} else if (!strncasecmp(line, "etag:", 5)) {
		const char *v = line + 5;
		while (*v == ' ')
			v++;
		snprintf(h->etag, sizeof(h->etag), "%.127s", v);
	} else if (!strncasecmp(line, "content-range:", 14)) {
		const char *sl = strchr(line, '/');
		if (sl && sl[1] != '*')
			h->total = strtoull(sl + 1, NULL, 10);
	}
	return n;
}

/* One synchronous range GET (at open): bytes [a, b] into buf. */
static int get_range(struct remote *rm, uint64_t a, uint64_t b, void *buf,
		     struct hdrcap *hc, struct pagein_error *err)
{
	char range[64];
	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, a, b);
	long code = 0;
	CURLcode cc = CURLE_OK;
	struct xfer x = {.buf = buf, .len = b - a + 1};
	for (int t = 0; t < OPEN_TRIES; t++) {
		if (t)
			usleep((useconds_t)(100000u << t));
		struct curl_slist *hdrs;
		CURL *e = easy_new(rm, rm->s3 ? range : range + 6, &hdrs);
		if (!e)
			return pagein_fail(err, ENOMEM, "%s: cannot make a request", rm->shown);
		x.got = 0;
		x.elen = 0;
		x.overflow = false;
		x.e = e;
		memset(hc, 0, sizeof(*hc));
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(e, CURLOPT_WRITEDATA, &x);
		curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(e, CURLOPT_HEADERDATA, hc);
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
		cc = curl_easy_perform(e);
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
		if (cc == CURLE_OK)
			note_version(rm, e); /* before the fetcher runs: no lock needed */
		curl_easy_cleanup(e);
		curl_slist_free_all(hdrs);
		if (cc == CURLE_WRITE_ERROR && x.overflow && code == 200)
			return pagein_fail(err, EPROTO,
					   "%s: the server ignored the Range header (HTTP 200 with the whole object): pagein needs a server that answers range requests (206)",
					   rm->shown);
		if (cc == CURLE_OK && code == 206 && x.got == x.len)
			return 0;
		if (cc == CURLE_OK && code == 200 && x.got == x.len && a == 0) {
			hc->total = x.len; /* the whole object was this range */
			return 0;
		}
		if (cc == CURLE_OK && code == 416)
			break;
		if (!transient(cc, code) && !(cc == CURLE_OK && code == 206))
			break;
	}
	if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE)
		return pagein_fail(err, EACCES,
				   "%s: the server's TLS certificate was refused (%s): if it is signed by a private CA, give that CA with --ca-file FILE",
				   rm->shown, curl_easy_strerror(cc));
	if (cc != CURLE_OK)
		return pagein_fail(err, EIO, "%s: %s", rm->shown, curl_easy_strerror(cc));
	if (code == 206 || code == 200)
		return pagein_fail(err, EIO, "%s: short response (%" PRIu64 " of %" PRIu64 " bytes)",
				   rm->shown, x.got, x.len);
	if (code == 416)
		return pagein_fail(err, EINVAL, "%s: HTTP 416: the object is shorter than a pagein snapshot header", rm->shown);
	if (rm->s3) {
		char d[160];
		s3_describe_error(code, x.ebody, x.elen, d, sizeof(d));
		return pagein_fail(err, code == 404 ? ENOENT : code == 403 || code == 401 ? EACCES : EIO,
				   "%s: %s", rm->shown, d);
	}
	return pagein_fail(err, code == 404 ? ENOENT : code == 403 || code == 401 ? EACCES : EIO,
			   "%s: HTTP %ld%s", rm->shown, code,
			   code == 404 ? " (not found): check the URL" :
			   code == 403 ? " (forbidden): check the credentials or the presigned URL's expiry" : "");
}

static int cmp_by_off(const void *a, const void *b, void *arg)
{
	const struct snapshot_meta *m = arg;
	uint64_t x = m->chunks[*(const uint64_t *)a].offset;
	uint64_t y = m->chunks[*(const uint64_t *)b].offset;
	return x < y ? -1 : x > y;
}

int source_http_open(const char *url, const struct source_remote_opts *o,
		     struct pagein_source **out, struct pagein_error *err)
{
	pthread_once(&curl_once, curl_init);
	struct remote *rm = calloc(1, sizeof(*rm));
	if (!rm)
		return -ENOMEM;
	pthread_mutex_init(&rm->lock, NULL);
	pthread_cond_init(&rm->landed, NULL);
	rm->shown = strdup(url);
	if (o && o->ca_file && !(rm->ca_file = strdup(o->ca_file))) {
		r_destroy(rm);
		return -ENOMEM;
	}
	rm->parallel = o && o->parallel ? o->parallel : 8;
	rm->deadline_ns = (o && o->deadline_ms ? o->deadline_ms : 30000) * 1000000ull;
	int r;
	if (s3_is_url(url)) {
		r = s3_target_open(url, o ? o->s3_endpoint : NULL, &rm->s3, err);
		if (r < 0) {
			r_destroy(rm);
			return r;
		}
		rm->url = strdup(s3_target_url(rm->s3));
	} else {
		rm->url = strdup(url);
	}
	if (!rm->url || !rm->shown) {
		r_destroy(rm);
		return -ENOMEM;
	}
	unsigned char head[SNAPSHOT_HEADER_SIZE];
	struct hdrcap hc;
	r = get_range(rm, 0, sizeof(head) - 1, head, &hc, err);
	if (r < 0) {
		r_destroy(rm);
		return r;
	}
	if (!source_pagein_probe(head, sizeof(head))) {
		r_destroy(rm);
		return pagein_fail(err, EINVAL,
				   "%s is not a pagein snapshot (a raw memory file?): remote snapshots must be in the pagein format: convert it with `pagein snapshot convert RAW -o OUT.pgn` and upload that",
				   url);
	}
	if (!hc.total) {
		r_destroy(rm);
		return pagein_fail(err, EPROTO, "%s: the server gave no object size (Content-Range)", url);
	}
	rm->size = hc.total;
	snprintf(rm->etag, sizeof(rm->etag), "%s", hc.etag);
	struct snapshot_header h;
	r = snapshot_header_parse(head, sizeof(head), rm->size, &h, err);
	if (r < 0) {
		r_destroy(rm);
		return r;
	}
	/* Header, index and working set lie before the chunk data. */
	unsigned char *meta = malloc(h.data_offset);
	if (!meta) {
		r_destroy(rm);
		return -ENOMEM;
	}
	struct hdrcap hc2;
	r = get_range(rm, 0, h.data_offset - 1, meta, &hc2, err);
	if (r == 0 && (hc2.total != rm->size || strcmp(hc2.etag, rm->etag) || memcmp(meta, head, sizeof(head))))
		r = pagein_fail(err, EAGAIN, "%s changed while it was being opened: try again", url);
	struct snapshot_meta m;
	if (r == 0)
		r = snapshot_meta_build(&h, rm->size, meta + h.index_offset,
					h.ws_size ? meta + h.ws_offset : NULL, &m, err);
	free(meta);
	if (r < 0) {
		r_destroy(rm);
		return r;
	}
	/* Identity: the header (it checksums the index and working set),
	 * the size and the ETag: a replaced object is another one. */
	XXH3_state_t *xs = XXH3_createState();
	XXH3_64bits_reset(xs);
	XXH3_64bits_update(xs, head, sizeof(head));
	XXH3_64bits_update(xs, &rm->size, sizeof(rm->size));
	XXH3_64bits_update(xs, rm->etag, strlen(rm->etag));
	snprintf(rm->key, sizeof(rm->key), "%016llx", (unsigned long long)XXH3_64bits_digest(xs));
	XXH3_freeState(xs);

	uint64_t n = h.chunk_count;
	rm->c = calloc(n, sizeof(*rm->c));
	rm->by_off = malloc(n * sizeof(*rm->by_off));
	rm->rank = malloc(n * sizeof(*rm->rank));
	rm->cache_size = o && o->cache_size ? o->cache_size : (1ull << 30);
	if (o && o->cache_dir) {
		rm->cache_dir = strdup(o->cache_dir);
		if (mkdir(o->cache_dir, 0755) < 0 && errno != EEXIST) {
			int e = errno;
			snapshot_meta_free(&m);
			r_destroy(rm);
			return pagein_fail(err, e, "--cache-dir %s: cannot create it: %s", o->cache_dir, strerror(e));
		}
	} else {
		/* No cache directory: a private one, removed at the end, so
		 * that a chunk evicted from memory and needed again (a working
		 * set in random order, a second VM) is not fetched again. */
		const char *t = getenv("TMPDIR");
		const char *parent = t && *t ? t : "/var/tmp";
		char tmpl[4096];
		sweep_private(parent);
		snprintf(tmpl, sizeof(tmpl), "%s/pagein-cache-%d-XXXXXX", parent, (int)getpid());
		if (mkdtemp(tmpl)) {
			rm->cache_dir = strdup(tmpl);
			rm->private_cache = true;
		}
	}
	rm->multi = curl_multi_init();
	if (!rm->c || !rm->by_off || !rm->rank || !rm->multi) {
		snapshot_meta_free(&m);
		r_destroy(rm);
		return -ENOMEM;
	}
	curl_multi_setopt(rm->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	curl_multi_setopt(rm->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)rm->parallel + RESERVE);
	struct pagein_source *src;
	r = source_pagein_new(-1, url, &m, &remote_ops, rm, &src);
	if (r < 0) {
		r_destroy(rm);
		return r;
	}
	rm->m = (struct snapshot_meta *)source_pagein_meta(src);
	for (uint64_t c = 0; c < n; c++)
		rm->by_off[c] = c;
	qsort_r(rm->by_off, n, sizeof(*rm->by_off), cmp_by_off, rm->m);
	for (uint64_t i = 0; i < n; i++)
		rm->rank[rm->by_off[i]] = i;
	if (pthread_create(&rm->thread, NULL, fetcher, rm) != 0) {
		pagein_source_unref(src);
		return pagein_fail(err, EAGAIN, "cannot start the fetcher thread");
	}
	rm->started = true;
	*out = src;
	return 0;
}
