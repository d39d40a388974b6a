/* snapshot_cmd.c - `pagein snapshot convert|merge|inspect|verify|extract|bench`.
 *
 * Writers (convert, merge, extract) write OUT.tmp.PID and rename it over OUT
 * only once it is complete and fsync'ed; SIGINT/SIGTERM/SIGHUP remove the
 * temporary file before the process dies, so OUT is either the old file or
 * the whole new one. A progress bar is drawn only when stderr is a terminal. */
#include "snapshot_cmd.h"
#include "serve_opts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "pagein.h"
#include "snapshot_format.h"
#include "source.h"
#include "workingset.h"

#define EXIT_BAD 1   /* verification failure, corrupt input, I/O error */
#define EXIT_USAGE 2

/* ---- small helpers ------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}


static int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* "1.00 GiB" */
static const char *human(uint64_t v, char *buf, size_t len)
{
	static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double d = (double)v;
	int i = 0;
	while (d >= 1024 && i < 4) {
		d /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%" PRIu64 " B", v);
	else
		snprintf(buf, len, "%.2f %s", d, u[i]);
	return buf;
}

/* ---- progress ------------------------------------------------------------- */

/* On a terminal (stderr): one line redrawn in place. Otherwise, for the
 * writers that ask for it (convert, merge): a plain line every 2 s or every
 * 5% of the image, whichever comes first (at most 4 a second), so that a
 * log shows it moving. */
struct progress {
	bool on;           /* stdout and stderr are terminals: draw the bar */
	bool lines;        /* otherwise: print periodic lines (to stderr) */
	const char *what;
	double start, last;
	uint64_t last_done;
	bool drawn;
};

static void progress_init(struct progress *p, const char *what, bool lines)
{
	/* Interactive only when both are terminals: with stdout going to a
	 * file or a pipe (a script, CI) the run leaves periodic lines. */
	p->on = isatty(STDOUT_FILENO) && isatty(STDERR_FILENO);
	p->lines = lines && !p->on;
	p->what = what;
	p->start = now_s();
	p->last = p->start;
	p->last_done = 0;
	p->drawn = false;
}

/* "ETA 12 s" / "ETA 3 min 05 s" into buf, from the rate so far. */
static const char *eta(double el, uint64_t done, uint64_t total, char *buf, size_t len)
{
	if (done == 0 || el <= 0) {
		snprintf(buf, len, "ETA ?");
		return buf;
	}
	double left = el * (double)(total - done) / (double)done;
	if (left < 10)
		snprintf(buf, len, "ETA %.1f s", left);
	else if (left < 60)
		snprintf(buf, len, "ETA %.0f s", left);
	else
		snprintf(buf, len, "ETA %ld min %02ld s", (long)left / 60, (long)left % 60);
	return buf;
}

static void progress_cb(void *opaque, uint64_t done, uint64_t total)
{
	struct progress *p = opaque;
	double t = now_s(), el = t - p->start;
	double mb = (double)done / 1e6, rate = el > 0 ? mb / el : 0.0;
	int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
	char e[64];
	if (p->lines) {
		/* The summary says 100%; a run shorter than a second prints none. */
		if (done >= total || t - p->last < 0.25 ||
		    (t - p->last < 2.0 && (done - p->last_done) * 20 < total))
			return;
		p->last = t;
		p->last_done = done;
		fprintf(stderr, "%s: %3d%% %.0f/%.0f MB, %.0f MB/s, %s\n", p->what, pct, mb,
			(double)total / 1e6, rate, eta(el, done, total, e, sizeof(e)));
		return;
	}
	if (!p->on || (done < total && t - p->last < 0.1))
		return;
	p->last = t;
	int width = 30, fill = total ? (int)(width * (double)done / (double)total) : width;
	char bar[64];
	for (int i = 0; i < width; i++)
		bar[i] = i < fill ? '#' : ' ';
	bar[width] = 0;
	fprintf(stderr, "\r%s [%s] %3d%% %8.0f/%.0f MB %6.0f MB/s %-16s", p->what, bar, pct, mb,
		(double)total / 1e6, rate, done < total ? eta(el, done, total, e, sizeof(e)) : "");
	p->drawn = true;
}

static void progress_end(struct progress *p)
{
	if (p->on && p->drawn)
		fputc('\n', stderr);
}

/* ---- the temporary output file -------------------------------------------- */

/* The signal handler needs the path and its messages, made in advance (it
 * may only call async-signal-safe functions): the one piece of
 * process-wide state, as a signal handler cannot be given a context. */
static char tmp_path[PATH_MAX];
static char sig_removed[PATH_MAX + 128], sig_kept[PATH_MAX + 128];
static size_t sig_removed_len, sig_kept_len;
static volatile sig_atomic_t tmp_live;

static void on_fatal_signal(int sig)
{
	if (tmp_live) {
		int e = errno;
		bool gone = unlink(tmp_path) == 0 || errno == ENOENT;
		ssize_t n = gone ? write(STDERR_FILENO, sig_removed, sig_removed_len)
				 : write(STDERR_FILENO, sig_kept, sig_kept_len);
		(void)n;
		errno = e;
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP};

struct outfile {
	const char *path;
	int fd;
	double sync_s; /* fsync of the file and of its directory */
	struct sigaction old[3];
};

/* A convert killed without a chance to clean up (SIGKILL, a crash, a power
 * cut) leaves PATH.tmp.PID behind. Removes those whose process is gone and
 * reports those whose process still runs (another writer of PATH?). */
static void outfile_clean_leftovers(const char *cmd, const char *path)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	const char *base = slash ? slash + 1 : path;
	if (slash)
		*(slash == dir ? slash + 1 : slash) = 0;
	DIR *d = opendir(slash ? dir : ".");
	if (!d)
		return;
	size_t blen = strlen(base);
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		if (strncmp(n, base, blen) || strncmp(n + blen, ".tmp.", 5))
			continue;
		char *end;
		errno = 0;
		long pid = strtol(n + blen + 5, &end, 10);
		if (errno || *end || end == n + blen + 5 || pid <= 0 || pid == (long)getpid())
			continue;
		char full[PATH_MAX];
		int len = snprintf(full, sizeof(full), "%s%s%s", slash ? dir : "",
				   slash && slash != dir ? "/" : "", n);
		if (len < 0 || (size_t)len >= sizeof(full))
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno == EPERM) {
			fprintf(stderr, "pagein snapshot %s: %s: left alone: process %ld, which is writing it, is still running (another %s of the same output?)\n",
				cmd, full, pid, cmd);
			continue;
		}
		if (unlink(full) == 0)
			fprintf(stderr, "pagein snapshot %s: removed %s, the partial output of an earlier run (process %ld) that did not finish\n",
				cmd, full, pid);
		else
			fprintf(stderr, "pagein snapshot %s: %s: partial output of an earlier run that did not finish; could not remove it: %s\n",
				cmd, full, strerror(errno));
	}
	closedir(d);
}

static int outfile_open(struct outfile *of, const char *cmd, const char *path)
{
	of->path = path;
	int n = snprintf(tmp_path, sizeof(tmp_path), "%s.tmp.%d", path, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp_path)) {
		fprintf(stderr, "pagein snapshot %s: %s: path too long\n", cmd, path);
		return -1;
	}
	outfile_clean_leftovers(cmd, path);
	const char *nl = isatty(STDERR_FILENO) ? "\n" : "";
	n = snprintf(sig_removed, sizeof(sig_removed),
		     "%spagein snapshot %s: interrupted; removed the partial output %s (%s was not written)\n",
		     nl, cmd, tmp_path, path);
	sig_removed_len = n < 0 ? 0 : (size_t)n < sizeof(sig_removed) ? (size_t)n : sizeof(sig_removed) - 1;
	n = snprintf(sig_kept, sizeof(sig_kept),
		     "%spagein snapshot %s: interrupted; could not remove the partial output %s: remove it by hand\n",
		     nl, cmd, tmp_path);
	sig_kept_len = n < 0 ? 0 : (size_t)n < sizeof(sig_kept) ? (size_t)n : sizeof(sig_kept) - 1;
	struct sigaction sa = {.sa_handler = on_fatal_signal};
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sigaction(fatal_signals[i], &sa, &of->old[i]);
	of->fd = open(tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (of->fd < 0) {
		fprintf(stderr, "pagein snapshot %s: %s: %s\n", cmd, tmp_path, strerror(errno));
		for (int i = 0; i < 3; i++)
			sigaction(fatal_signals[i], &of->old[i], NULL);
		return -1;
	}
	tmp_live = 1;
	return 0;
}

/* ok: make it durable and rename over path; !ok: remove it. 0 or -1. */
static int outfile_close(struct outfile *of, const char *cmd, bool ok)
{
	int r = 0;
	double t0 = now_s();
	if (ok && fsync(of->fd) < 0) {
		fprintf(stderr, "pagein snapshot %s: %s: fsync: %s\n", cmd, tmp_path, strerror(errno));
		ok = false;
	}
	if (close(of->fd) < 0 && ok) {
		fprintf(stderr, "pagein snapshot %s: %s: close: %s\n", cmd, tmp_path, strerror(errno));
		ok = false;
	}
	if (ok && rename(tmp_path, of->path) < 0) {
		fprintf(stderr, "pagein snapshot %s: %s: rename: %s\n", cmd, of->path, strerror(errno));
		ok = false;
	}
	if (!ok) {
		unlink(tmp_path);
		r = -1;
	} else {
		/* The rename itself is durable once the directory is synced. */
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", of->path);
		char *slash = strrchr(dir, '/');
		if (slash)
			*(slash == dir ? slash + 1 : slash) = 0;
		int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	of->sync_s = now_s() - t0;
	tmp_live = 0;
	for (int i = 0; i < 3; i++)
		sigaction(fatal_signals[i], &of->old[i], NULL);
	return r;
}

/* ---- inputs: raw files (pread) or pagein files (the source) ---------------- */

struct input {
	const char *path;
	int fd;                    /* raw: the file */
	uint64_t size;
	struct pagein_source *src; /* pagein: the decoded file */
};

static int input_open(struct input *in, const char *cmd, const char *path)
{
	memset(in, 0, sizeof(*in));
	in->path = path;
	in->fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (in->fd < 0 || fstat(in->fd, &st) < 0) {
		fprintf(stderr, "pagein snapshot %s: %s: %s\n", cmd, path, strerror(errno));
		if (in->fd >= 0)
			close(in->fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "pagein snapshot %s: %s: not a regular file\n", cmd, path);
		close(in->fd);
		return -1;
	}
	unsigned char head[SNAPSHOT_MAGIC_LEN];
	ssize_t n = pread(in->fd, head, sizeof(head), 0);
	if (n > 0 && source_pagein_probe(head, (size_t)n)) {
		struct pagein_error err = {{0}};
		int r = source_pagein_open(in->fd, path, &in->src, &err);
		if (r < 0) {
			fprintf(stderr, "pagein snapshot %s: %s\n", cmd,
				err.msg[0] ? err.msg : strerror(-r));
			close(in->fd);
			return -1;
		}
		in->fd = -1; /* the source owns it */
		in->size = in->src->size;
		return 0;
	}
	in->size = (uint64_t)st.st_size;
	if (in->size == 0) {
		fprintf(stderr, "pagein snapshot %s: %s: file is empty\n", cmd, path);
		close(in->fd);
		return -1;
	}
	return 0;
}

static void input_close(struct input *in)
{
	if (in->src)
		pagein_source_unref(in->src);
	if (in->fd >= 0)
		close(in->fd);
}

static int input_read(void *opaque, uint64_t off, void *buf, size_t len,
		      struct pagein_error *err)
{
	struct input *in = opaque;
	char *p = buf;
	while (in->src && len) {
		struct source_extent ext;
		int r = in->src->ops->get(in->src, off, len, &ext);
		if (r < 0) {
			snprintf(err->msg, sizeof(err->msg), "%s: chunk %" PRIu64 " (guest offset 0x%" PRIx64 "): %s",
				 in->path, ext.bad_chunk, off, strerror(-r));
			return r;
		}
		size_t n = ext.len < len ? (size_t)ext.len : len;
		if (ext.data)
			memcpy(p, ext.data, n);
		else
			memset(p, 0, n);
		in->src->ops->put(in->src, &ext);
		p += n;
		off += n;
		len -= n;
	}
	while (len) {
		ssize_t n = pread(in->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			snprintf(err->msg, sizeof(err->msg), "%s: reading at offset %" PRIu64 ": %s",
				 in->path, off, n < 0 ? strerror(e) : "file shrank while being read");
			return -e;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- merge: a base with diff snapshots laid over it ----------------------- */

struct diff {
	const char *path;
	int fd;
	uint64_t (*ext)[2]; /* [start, end) byte ranges holding data */
	size_t next;
};

struct merged {
	struct input base;
	struct diff *diffs;
	int ndiffs;
};

/* The data ranges of a sparse file (SEEK_DATA/SEEK_HOLE); a filesystem
 * without them reports the whole file as data. */
static int diff_scan(struct diff *d, uint64_t size)
{
	size_t cap = 16;
	d->ext = malloc(cap * sizeof(*d->ext));
	if (!d->ext)
		return -ENOMEM;
	off_t pos = 0;
	while ((uint64_t)pos < size) {
		off_t a = lseek(d->fd, pos, SEEK_DATA);
		if (a < 0) {
			if (errno == ENXIO)
				break;
			return -errno;
		}
		off_t b = lseek(d->fd, a, SEEK_HOLE);
		if (b < 0)
			return -errno;
		if (d->next == cap) {
			cap *= 2;
			void *n = realloc(d->ext, cap * sizeof(*d->ext));
			if (!n)
				return -ENOMEM;
			d->ext = n;
		}
		d->ext[d->next][0] = (uint64_t)a;
		d->ext[d->next][1] = (uint64_t)b < size ? (uint64_t)b : size;
		d->next++;
		pos = b;
	}
	return 0;
}

static int merged_read(void *opaque, uint64_t off, void *buf, size_t len,
		       struct pagein_error *err)
{
	struct merged *mg = opaque;
	int r = input_read(&mg->base, off, buf, len, err);
	if (r < 0)
		return r;
	uint64_t end = off + len;
	for (int i = 0; i < mg->ndiffs; i++) {
		struct diff *d = &mg->diffs[i];
		/* First range ending after off (binary search), then walk. */
		size_t lo = 0, hi = d->next;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (d->ext[mid][1] <= off)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (size_t k = lo; k < d->next && d->ext[k][0] < end; k++) {
			uint64_t a = d->ext[k][0] > off ? d->ext[k][0] : off;
			uint64_t b = d->ext[k][1] < end ? d->ext[k][1] : end;
			struct input raw = {.path = d->path, .fd = d->fd};
			r = input_read(&raw, a, (char *)buf + (a - off), (size_t)(b - a), err);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* ---- convert and merge ----------------------------------------------------- */

#define HUGE_PAGE_2M (2ull << 20)

struct write_args {
	const char *out;
	uint64_t chunk;
	long level;
	long threads;
	const char *ws_path;
	bool quiet;
	bool huge; /* --huge: guest memory in 2 MiB pages */
};

static const struct option write_opts[] = {
	{"output", required_argument, NULL, 'o'},
	{"chunk", required_argument, NULL, 'c'},
	{"level", required_argument, NULL, 'l'},
	{"working-set", required_argument, NULL, 'w'},
	{"threads", required_argument, NULL, 't'},
	{"quiet", no_argument, NULL, 'q'},
	{"huge", no_argument, NULL, 'H'},
	{"help", no_argument, NULL, 'h'},
	{0},
};

static void write_usage(FILE *f, const char *cmd)
{
	if (!strcmp(cmd, "convert"))
		fprintf(f,
			"usage: pagein snapshot convert RAW -o OUT [options]\n"
			"\n"
			"Writes the raw memory file RAW (or another pagein snapshot) as a pagein\n"
			"snapshot: zero pages dropped, chunks compressed with zstd and checksummed.\n");
	else
		fprintf(f,
			"usage: pagein snapshot merge BASE DIFF... -o OUT [options]\n"
			"\n"
			"Lays Firecracker diff snapshots (sparse files holding only the pages\n"
			"dirtied since the previous snapshot) over BASE, in the order given, and\n"
			"writes the result as a pagein snapshot. BASE is a raw file or a pagein\n"
			"snapshot; every DIFF is a raw sparse file the size of BASE. A hole in a\n"
			"DIFF keeps the page below it; data (even zeros) replaces it.\n");
	fprintf(f,
		"\n"
		"  -o, --output OUT        file to write (via OUT.tmp.PID and rename)\n"
		"  --chunk SIZE            guest bytes per chunk: a power of two, 64K..64M\n"
		"                          (default %uK; K/M/G suffixes)\n"
		"  --huge                  the guest's memory is in 2 MiB pages (hugetlbfs,\n"
		"                          Firecracker huge_pages \"2M\"): chunks of at least\n"
		"                          2 MiB, so that every huge page is one chunk; implied\n"
		"                          by a working set recorded with 2 MiB pages\n"
		"  --level N               zstd level %d..%d (default %d)\n"
		"  --working-set FILE      store this recorded working set and place the\n"
		"                          chunks it touches first, in first-touch order\n"
		"  --threads N             compression threads (default: one per CPU, max 8)\n"
		"  -q, --quiet             no progress, no summary (errors only)\n"
		"  -h, --help              this text\n"
		"\n"
		"Progress goes to stderr: a bar redrawn in place when stderr is a terminal,\n"
		"otherwise a line every 2 s or every 5%% (done/total MB, MB/s, ETA; at most\n"
		"4 a second). When done, a summary goes to stdout: sizes, ratio, zero\n"
		"pages, throughput, and the time spent reading, compressing (summed over\n"
		"the threads) and writing.\n"
		"SIGINT/SIGTERM/SIGHUP remove OUT.tmp.PID, say so, and exit non-zero; a\n"
		"OUT.tmp.PID left by a killed run is removed by the next run writing OUT\n"
		"(reported on stderr), or reported if its process still runs.\n"
		"Exit: 0 written, 1 bad input or I/O error, 2 usage error.\n",
		SNAPSHOT_CHUNK_DEFAULT >> 10, ZSTD_minCLevel(), ZSTD_maxCLevel(),
		SNAPSHOT_LEVEL_DEFAULT);
}

/* Parses convert/merge options; positional arguments land at argv[optind..]. */
static int parse_write_args(int argc, char **argv, const char *cmd, struct write_args *a)
{
	*a = (struct write_args){.level = SNAPSHOT_LEVEL_DEFAULT};
	optind = 0;
	int o;
	while ((o = getopt_long(argc, argv, "o:qh", write_opts, NULL)) != -1) {
		switch (o) {
		case 'q':
			a->quiet = true;
			break;
		case 'H':
			a->huge = true;
			break;
		case 'o':
			a->out = optarg;
			break;
		case 'c':
			if (parse_size(optarg, &a->chunk) < 0 || !snapshot_entry_size(a->chunk)) {
				fprintf(stderr, "pagein snapshot %s: --chunk %s: expected a power of two from 64K to 64M\n",
					cmd, optarg);
				return EXIT_USAGE;
			}
			break;
		case 'l':
			if (parse_int(optarg, ZSTD_minCLevel(), ZSTD_maxCLevel(), &a->level) < 0) {
				fprintf(stderr, "pagein snapshot %s: --level %s: expected %d to %d\n",
					cmd, optarg, ZSTD_minCLevel(), ZSTD_maxCLevel());
				return EXIT_USAGE;
			}
			break;
		case 'w':
			a->ws_path = optarg;
			break;
		case 't':
			if (parse_int(optarg, 1, 64, &a->threads) < 0) {
				fprintf(stderr, "pagein snapshot %s: --threads %s: expected 1 to 64\n", cmd, optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			write_usage(stdout, cmd);
			return -1;
		default:
			write_usage(stderr, cmd);
			return EXIT_USAGE;
		}
	}
	if (!a->out) {
		fprintf(stderr, "pagein snapshot %s: -o OUT is required (see --help)\n", cmd);
		return EXIT_USAGE;
	}
	return 0;
}

/* Writes the snapshot of `read` to a->out. Returns the exit code. */
static int write_out(const char *cmd, const struct write_args *a, uint64_t size,
		     snapshot_read_fn read, void *opaque)
{
	struct workingset ws = {0};
	struct pagein_error err = {{0}};
	if (a->ws_path) {
		int r = workingset_load(a->ws_path, &ws, &err);
		if (r < 0) {
			fprintf(stderr, "pagein snapshot %s: %s\n", cmd, err.msg);
			return EXIT_BAD;
		}
	}
	struct outfile of;
	if (outfile_open(&of, cmd, a->out) < 0) {
		workingset_fini(&ws);
		return EXIT_BAD;
	}
	struct progress pg;
	progress_init(&pg, cmd, !a->quiet);
	/* A 2 MiB page is filled whole with one UFFDIO_COPY: from one chunk
	 * it needs one decompression and no assembly across chunks. */
	uint64_t chunk = a->chunk;
	if (a->huge || (a->ws_path && ws.page_size == HUGE_PAGE_2M)) {
		if (!chunk)
			chunk = SNAPSHOT_CHUNK_DEFAULT;
		if (chunk < HUGE_PAGE_2M)
			chunk = HUGE_PAGE_2M;
	}
	struct snapshot_write_opts o = {
		.image_size = size,
		.chunk_size = chunk,
		.level = (int)a->level,
		.threads = (unsigned)a->threads,
		.ws = a->ws_path ? &ws : NULL,
		.read = read,
		.read_opaque = opaque,
		.progress = progress_cb,
		.progress_opaque = &pg,
	};
	struct snapshot_write_stats st;
	int r = snapshot_write(of.fd, &o, &st, &err);
	progress_end(&pg);
	workingset_fini(&ws);
	if (r < 0)
		fprintf(stderr, "pagein snapshot %s: %s: %s\n", cmd, a->out,
			err.msg[0] ? err.msg : strerror(-r));
	if (outfile_close(&of, cmd, r == 0) < 0 || r < 0)
		return EXIT_BAD;
	if (!a->quiet) {
		char b1[32], b2[32];
		double el = now_s() - pg.start;
		printf("%s: wrote %s: %s -> %s (ratio %.2f), %.1f%% zero pages, %" PRIu64 " chunks\n"
		       "%s: %.2f s, %.0f MB/s; read %.2f s, compress %.2f s (summed over %u thread%s), write %.2f s + fsync %.2f s\n",
		       cmd, a->out, human(size, b1, sizeof(b1)), human(st.file_size, b2, sizeof(b2)),
		       (double)size / (double)st.file_size,
		       st.pages ? 100.0 * (double)st.zero_pages / (double)st.pages : 0.0, st.chunks,
		       cmd, el, el > 0 ? (double)size / 1e6 / el : 0.0, st.read_s, st.compress_s,
		       st.threads, st.threads == 1 ? "" : "s", st.write_s, of.sync_s);
	}
	return 0;
}

static int cmd_convert(int argc, char **argv)
{
	struct write_args a;
	int r = parse_write_args(argc, argv, "convert", &a);
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind != 1) {
		fprintf(stderr, "pagein snapshot convert: expected one input file, got %d (see --help)\n",
			argc - optind);
		return EXIT_USAGE;
	}
	struct input in;
	if (input_open(&in, "convert", argv[optind]) < 0)
		return EXIT_BAD;
	r = write_out("convert", &a, in.size, input_read, &in);
	input_close(&in);
	return r;
}

static int cmd_merge(int argc, char **argv)
{
	struct write_args a;
	int r = parse_write_args(argc, argv, "merge", &a);
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind < 2) {
		fprintf(stderr, "pagein snapshot merge: expected BASE and at least one DIFF (see --help)\n");
		return EXIT_USAGE;
	}
	struct merged mg = {0};
	mg.ndiffs = argc - optind - 1;
	mg.diffs = calloc((size_t)mg.ndiffs, sizeof(*mg.diffs));
	if (!mg.diffs)
		return EXIT_BAD;
	for (int i = 0; i < mg.ndiffs; i++)
		mg.diffs[i].fd = -1;
	r = EXIT_BAD;
	if (input_open(&mg.base, "merge", argv[optind]) < 0) {
		free(mg.diffs);
		return EXIT_BAD;
	}
	for (int i = 0; i < mg.ndiffs; i++) {
		struct diff *d = &mg.diffs[i];
		struct input probe;
		d->path = argv[optind + 1 + i];
		if (input_open(&probe, "merge", d->path) < 0)
			goto out;
		bool pagein = probe.src != NULL;
		uint64_t size = probe.size;
		input_close(&probe);
		if (pagein) {
			fprintf(stderr, "pagein snapshot merge: %s: a diff must be a raw sparse file (its holes are the pages it does not change), not a pagein snapshot\n",
				d->path);
			goto out;
		}
		if (size != mg.base.size) {
			fprintf(stderr, "pagein snapshot merge: %s: %" PRIu64 " bytes, but base %s is %" PRIu64 " bytes\n",
				d->path, size, mg.base.path, mg.base.size);
			goto out;
		}
		d->fd = open(d->path, O_RDONLY | O_CLOEXEC);
		int e = d->fd < 0 ? -errno : diff_scan(d, size);
		if (e < 0) {
			fprintf(stderr, "pagein snapshot merge: %s: %s\n", d->path, strerror(-e));
			goto out;
		}
	}
	r = write_out("merge", &a, mg.base.size, merged_read, &mg);
out:
	for (int i = 0; i < mg.ndiffs; i++) {
		if (mg.diffs[i].fd >= 0)
			close(mg.diffs[i].fd);
		free(mg.diffs[i].ext);
	}
	free(mg.diffs);
	input_close(&mg.base);
	return r;
}

/* ---- inspect ---------------------------------------------------------------- */

static int simple_args(int argc, char **argv, const char *cmd, void (*usage)(FILE *))
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
	optind = 0;
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 'h') {
			usage(stdout);
			return -1;
		}
		usage(stderr);
		return EXIT_USAGE;
	}
	if (argc - optind != 1) {
		fprintf(stderr, "pagein snapshot %s: expected one FILE (see --help)\n", cmd);
		return EXIT_USAGE;
	}
	return 0;
}

static void inspect_usage(FILE *f)
{
	fprintf(f,
		"usage: pagein snapshot inspect FILE\n"
		"\n"
		"Prints what FILE holds: format version, image and file sizes, compression\n"
		"ratio, fraction of zero pages, chunk size, and the stored working set.\n"
		"Checks the header and index checksums (not the chunks: see verify).\n"
		"Exit: 0, 1 if FILE cannot be read or its header/index is corrupt.\n");
}

static int open_meta(const char *cmd, const char *path, int *fd, struct snapshot_meta *m)
{
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0) {
		fprintf(stderr, "pagein snapshot %s: %s: %s\n", cmd, path, strerror(errno));
		return -1;
	}
	struct pagein_error err = {{0}};
	int r = snapshot_meta_read(*fd, path, m, &err);
	if (r < 0) {
		fprintf(stderr, "pagein snapshot %s: %s\n", cmd, err.msg[0] ? err.msg : strerror(-r));
		close(*fd);
		return -1;
	}
	return 0;
}

static int cmd_inspect(int argc, char **argv)
{
	int r = simple_args(argc, argv, "inspect", inspect_usage);
	if (r)
		return r < 0 ? 0 : r;
	const char *path = argv[optind];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "pagein snapshot inspect: %s: %s\n", path, strerror(errno));
		return EXIT_BAD;
	}
	unsigned char head[SNAPSHOT_MAGIC_LEN] = {0};
	ssize_t n = pread(fd, head, sizeof(head), 0);
	char b1[32], b2[32];
	if (n < 0 || !source_pagein_probe(head, (size_t)n)) {
		close(fd);
		printf("file:          %s\n"
		       "format:        raw memory file (not a pagein snapshot)\n"
		       "image size:    %" PRIu64 " (%s)\n"
		       "allocated:     %s\n",
		       path, (uint64_t)st.st_size, human((uint64_t)st.st_size, b1, sizeof(b1)),
		       human((uint64_t)st.st_blocks * 512, b2, sizeof(b2)));
		return 0;
	}
	close(fd);
	struct snapshot_meta m;
	if (open_meta("inspect", path, &fd, &m) < 0)
		return EXIT_BAD;
	close(fd);
	const struct snapshot_header *h = &m.h;
	uint64_t pages = 0, zero = 0, zero_chunks = 0, raw_chunks = 0, ws_chunks = 0;
	for (uint64_t c = 0; c < h->chunk_count; c++) {
		const struct snapshot_chunk *ch = &m.chunks[c];
		pages += ch->npages;
		zero += ch->npages - ch->present;
		zero_chunks += ch->present == 0;
		raw_chunks += (ch->flags & SNAPSHOT_CHUNK_RAW) != 0;
		ws_chunks += ch->present && ch->offset < h->ws_data_end;
	}
	uint64_t nonzero = (pages - zero) * h->page_size;
	printf("file:          %s\n", path);
	printf("format:        pagein snapshot, version %u\n", h->version);
	printf("image size:    %" PRIu64 " (%s)\n", h->image_size, human(h->image_size, b1, sizeof(b1)));
	printf("file size:     %" PRIu64 " (%s)\n", m.file_size, human(m.file_size, b1, sizeof(b1)));
	printf("ratio:         %.2f (image / file); non-zero pages compress %.2f:1\n",
	       (double)h->image_size / (double)m.file_size,
	       h->data_size ? (double)nonzero / (double)h->data_size : 0.0);
	printf("zero pages:    %" PRIu64 " of %" PRIu64 " (%.1f%%), not stored\n", zero, pages,
	       pages ? 100.0 * (double)zero / (double)pages : 0.0);
	printf("chunk size:    %" PRIu64 " (%s), %" PRIu64 " chunks: %" PRIu64 " all-zero, %" PRIu64 " stored raw\n",
	       h->chunk_size, human(h->chunk_size, b1, sizeof(b1)), h->chunk_count, zero_chunks,
	       raw_chunks);
	printf("compression:   zstd level %d, %s of chunk data\n", h->level,
	       human(h->data_size, b1, sizeof(b1)));
	if (m.has_ws)
		printf("working set:   %" PRIu64 " pages of %u bytes (%s), %" PRIu64 " chunks first in the file (%s sweep)\n",
		       m.ws.count, m.ws.page_size, human(m.ws.count * m.ws.page_size, b1, sizeof(b1)),
		       ws_chunks, human(h->ws_data_end - h->data_offset, b2, sizeof(b2)));
	else
		printf("working set:   none\n");
	snapshot_meta_free(&m);
	return 0;
}

/* ---- verify ----------------------------------------------------------------- */

static void verify_usage(FILE *f)
{
	fprintf(f,
		"usage: pagein snapshot verify FILE\n"
		"\n"
		"Checks every checksum in FILE (header, index, working set, every chunk)\n"
		"and decompresses every chunk. Prints the bad chunks, if any.\n"
		"Exit: 0 all good, 1 a checksum or chunk is bad (the first bad chunk is\n"
		"named) or FILE cannot be read, 2 usage error.\n");
}

static int by_offset(const void *a, const void *b, void *meta)
{
	const struct snapshot_meta *m = meta;
	uint64_t x = m->chunks[*(const uint64_t *)a].offset;
	uint64_t y = m->chunks[*(const uint64_t *)b].offset;
	return x < y ? -1 : x > y;
}

static int cmd_verify(int argc, char **argv)
{
	int r = simple_args(argc, argv, "verify", verify_usage);
	if (r)
		return r < 0 ? 0 : r;
	const char *path = argv[optind];
	int fd;
	struct snapshot_meta m;
	if (open_meta("verify", path, &fd, &m) < 0)
		return EXIT_BAD;
	const struct snapshot_header *h = &m.h;
	/* Read in file order: one sequential pass over the data area. */
	uint64_t *order = malloc(h->chunk_count * sizeof(*order));
	unsigned char *buf = malloc(h->chunk_size);
	unsigned char *out = malloc(h->chunk_size);
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	if (!order || !buf || !out || !dctx) {
		fprintf(stderr, "pagein snapshot verify: out of memory\n");
		r = EXIT_BAD;
		goto done;
	}
	for (uint64_t c = 0; c < h->chunk_count; c++)
		order[c] = c;
	qsort_r(order, h->chunk_count, sizeof(*order), by_offset, &m);
	struct progress pg;
	progress_init(&pg, "verify", false);
	uint64_t nbad = 0, first = UINT64_MAX, checked = 0, done_bytes = 0;
	for (uint64_t i = 0; i < h->chunk_count; i++) {
		uint64_t c = order[i];
		if (m.chunks[c].present == 0)
			continue;
		struct pagein_error err = {{0}};
		int e = snapshot_chunk_read(fd, &m, c, buf, &err);
		if (e == 0)
			e = snapshot_chunk_unpack(&m, c, buf, out, dctx, &err);
		checked++;
		done_bytes += m.chunks[c].stored;
		progress_cb(&pg, done_bytes, h->data_size);
		if (e < 0) {
			nbad++;
			if (c < first)
				first = c;
			if (nbad <= 20) {
				progress_end(&pg);
				pg.drawn = false;
				fprintf(stderr, "pagein snapshot verify: %s: %s (guest offset 0x%" PRIx64 ")\n",
					path, err.msg[0] ? err.msg : strerror(-e), c * h->chunk_size);
			}
		}
	}
	progress_end(&pg);
	if (nbad) {
		fprintf(stderr, "pagein snapshot verify: %s: %" PRIu64 " of %" PRIu64 " stored chunks bad; first bad chunk %" PRIu64 "\n",
			path, nbad, checked, first);
		r = EXIT_BAD;
	} else {
		printf("%s: ok: header, index%s and %" PRIu64 " stored chunks verified\n", path,
		       m.has_ws ? ", working set" : "", checked);
		r = 0;
	}
done:
	ZSTD_freeDCtx(dctx);
	free(order);
	free(buf);
	free(out);
	snapshot_meta_free(&m);
	close(fd);
	return r;
}

/* ---- extract ---------------------------------------------------------------- */

static void extract_usage(FILE *f)
{
	fprintf(f,
		"usage: pagein snapshot extract FILE -o RAW\n"
		"\n"
		"Writes the guest memory that FILE (a pagein snapshot, or a raw file)\n"
		"describes as a raw memory file, sparse where the memory is zero.\n"
		"Every chunk's checksum is checked on the way.\n"
		"Exit: 0, 1 corrupt input or I/O error, 2 usage error.\n");
}

static int cmd_extract(int argc, char **argv)
{
	static const struct option opts[] = {
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *outp = NULL;
	optind = 0;
	int o;
	while ((o = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		if (o == 'o') {
			outp = optarg;
		} else if (o == 'h') {
			extract_usage(stdout);
			return 0;
		} else {
			extract_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1 || !outp) {
		fprintf(stderr, "pagein snapshot extract: expected FILE and -o RAW (see --help)\n");
		return EXIT_USAGE;
	}
	const char *path = argv[optind];
	struct pagein_source *src;
	struct pagein_error err = {{0}};
	int r = pagein_source_open(path, &src, &err);
	if (r < 0) {
		fprintf(stderr, "pagein snapshot extract: %s\n", err.msg[0] ? err.msg : strerror(-r));
		return EXIT_BAD;
	}
	struct outfile of;
	if (outfile_open(&of, "extract", outp) < 0) {
		pagein_source_unref(src);
		return EXIT_BAD;
	}
	struct progress pg;
	progress_init(&pg, "extract", false);
	uint64_t off = 0;
	r = 0;
	while (off < src->size && r == 0) {
		struct source_extent ext;
		r = src->ops->get(src, off, src->size - off, &ext);
		if (r < 0) {
			fprintf(stderr, "pagein snapshot extract: %s: chunk %" PRIu64 " (guest offset 0x%" PRIx64 "): %s\n",
				path, ext.bad_chunk, off, strerror(-r));
			break;
		}
		const char *p = ext.data;
		for (uint64_t k = 0; p && k < ext.len && r == 0;) {
			ssize_t n = pwrite(of.fd, p + k, ext.len - k, (off_t)(off + k));
			if (n < 0 && errno != EINTR) {
				r = -errno;
				fprintf(stderr, "pagein snapshot extract: %s: %s\n", outp, strerror(errno));
			}
			k += n > 0 ? (uint64_t)n : 0;
		}
		src->ops->put(src, &ext);
		off += ext.len;
		progress_cb(&pg, off, src->size);
	}
	progress_end(&pg);
	if (r == 0 && ftruncate(of.fd, (off_t)src->size) < 0) {
		r = -errno;
		fprintf(stderr, "pagein snapshot extract: %s: %s\n", outp, strerror(errno));
	}
	pagein_source_unref(src);
	return outfile_close(&of, "extract", r == 0) < 0 || r < 0 ? EXIT_BAD : 0;
}

/* ---- bench: what one cold fault costs ------------------------------------ */

static void bench_usage(FILE *f)
{
	fprintf(f,
		"usage: pagein snapshot bench FILE [--samples N] [--drop-cache]\n"
		"\n"
		"Measures get() of one 4 KiB page with the chunk cache empty (each sample\n"
		"a different stored page, so its chunk is read, checked and decompressed),\n"
		"and a sequential read of the whole image. --drop-cache also drops FILE\n"
		"from the page cache before each sample (cold from disk).\n"
		"Prints a table; exit 0, 1 on a read error, 2 usage error.\n");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int cmd_bench(int argc, char **argv)
{
	static const struct option opts[] = {
		{"samples", required_argument, NULL, 's'},
		{"drop-cache", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	long samples = 200;
	bool drop = false;
	optind = 0;
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 's' && parse_int(optarg, 1, 1000000, &samples) == 0)
			continue;
		if (o == 'd') {
			drop = true;
			continue;
		}
		if (o == 'h') {
			bench_usage(stdout);
			return 0;
		}
		bench_usage(stderr);
		return EXIT_USAGE;
	}
	if (argc - optind != 1) {
		bench_usage(stderr);
		return EXIT_USAGE;
	}
	const char *path = argv[optind];
	struct pagein_source *src;
	struct pagein_error err = {{0}};
	int r = pagein_source_open(path, &src, &err);
	if (r < 0) {
		fprintf(stderr, "pagein snapshot bench: %s\n", err.msg[0] ? err.msg : strerror(-r));
		return EXIT_BAD;
	}
	if (!source_is_pagein(src)) {
		fprintf(stderr, "pagein snapshot bench: %s: not a pagein snapshot\n", path);
		pagein_source_unref(src);
		return EXIT_BAD;
	}
	const struct snapshot_meta *m = source_pagein_meta(src);
	int dfd = drop ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	source_pagein_set_cache_limit(src, 0); /* every chunk leaves at put() */
	double *lat = malloc((size_t)samples * sizeof(*lat));
	uint64_t *stored = malloc(m->h.chunk_count * sizeof(*stored));
	uint64_t nstored = 0;
	for (uint64_t c = 0; stored && c < m->h.chunk_count; c++)
		if (m->chunks[c].present)
			stored[nstored++] = c;
	if (!lat || !stored || !nstored) {
		fprintf(stderr, "pagein snapshot bench: %s: %s\n", path,
			nstored ? "out of memory" : "no stored pages to read");
		r = -1;
		goto out;
	}
	unsigned seed = 12345;
	for (long i = 0; i < samples; i++) {
		uint64_t c = stored[rand_r(&seed) % nstored];
		const struct snapshot_chunk *ch = &m->chunks[c];
		uint32_t k = (uint32_t)rand_r(&seed) % ch->present, p = 0;
		for (;; p++)  /* the k-th present page of c */
			if (snapshot_page_present(m, c, p) && k-- == 0)
				break;
		if (dfd >= 0)
			posix_fadvise(dfd, 0, 0, POSIX_FADV_DONTNEED);
		struct source_extent ext;
		double t0 = now_s();
		r = src->ops->get(src, c * m->h.chunk_size + (uint64_t)p * m->h.page_size,
				  m->h.page_size, &ext);
		lat[i] = (now_s() - t0) * 1e6;
		if (r < 0) {
			fprintf(stderr, "pagein snapshot bench: %s: chunk %" PRIu64 ": %s\n", path,
				ext.bad_chunk, strerror(-r));
			goto out;
		}
		src->ops->put(src, &ext);
	}
	qsort(lat, (size_t)samples, sizeof(*lat), cmp_double);
	double sum = 0;
	for (long i = 0; i < samples; i++)
		sum += lat[i];
	/* Sequential: every byte through get(), the cache at its default. */
	source_pagein_set_cache_limit(src, 64ull << 20);
	double t0 = now_s();
	uint64_t bytes = 0;
	for (uint64_t off = 0; off < src->size;) {
		struct source_extent ext;
		r = src->ops->get(src, off, src->size - off, &ext);
		if (r < 0) {
			fprintf(stderr, "pagein snapshot bench: %s: chunk %" PRIu64 ": %s\n", path,
				ext.bad_chunk, strerror(-r));
			goto out;
		}
		if (ext.data)
			bytes += ext.len;
		off += ext.len;
		src->ops->put(src, &ext);
	}
	double el = now_s() - t0;
	char b1[32];
	printf("%-10s %8s %8s %8s %8s %8s %12s\n", "chunk", "samples", "p50_us", "p90_us",
	       "p99_us", "mean_us", "seq_MB/s");
	printf("%-10s %8ld %8.1f %8.1f %8.1f %8.1f %12.0f\n",
	       human(m->h.chunk_size, b1, sizeof(b1)), samples, lat[samples / 2],
	       lat[samples * 9 / 10], lat[samples * 99 / 100], sum / (double)samples,
	       (double)src->size / 1e6 / el);
	(void)bytes;
	r = 0;
out:
	if (dfd >= 0)
		close(dfd);
	free(lat);
	free(stored);
	pagein_source_unref(src);
	return r < 0 ? EXIT_BAD : 0;
}

/* ---- dispatch ---------------------------------------------------------------- */

static void snapshot_usage(FILE *f)
{
	fprintf(f,
		"usage: pagein snapshot <subcommand> [options]\n"
		"\n"
		"  convert RAW -o OUT      raw memory file -> pagein snapshot\n"
		"  merge BASE DIFF... -o OUT\n"
		"                          apply Firecracker diff snapshots onto BASE\n"
		"  inspect FILE            version, sizes, ratio, zero pages, working set\n"
		"  verify FILE             check every checksum; name the first bad chunk\n"
		"  extract FILE -o RAW     pagein snapshot -> raw memory file\n"
		"  bench FILE              cold single-page read latency\n"
		"\n"
		"`pagein snapshot <subcommand> --help` describes each. Sizes take K/M/G.\n"
		"The file format is specified in docs/format.md.\n");
}

int cmd_snapshot(int argc, char **argv)
{
	if (argc < 2) {
		snapshot_usage(stderr);
		return EXIT_USAGE;
	}
	const char *sub = argv[1];
	argc--;
	argv++;
	if (!strcmp(sub, "convert"))
		return cmd_convert(argc, argv);
	if (!strcmp(sub, "merge"))
		return cmd_merge(argc, argv);
	if (!strcmp(sub, "inspect"))
		return cmd_inspect(argc, argv);
	if (!strcmp(sub, "verify"))
		return cmd_verify(argc, argv);
	if (!strcmp(sub, "extract"))
		return cmd_extract(argc, argv);
	if (!strcmp(sub, "bench"))
		return cmd_bench(argc, argv);
	if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
		snapshot_usage(stdout);
		return 0;
	}
	fprintf(stderr, "pagein snapshot: unknown subcommand '%s'\n", sub);
	snapshot_usage(stderr);
	return EXIT_USAGE;
}
