/* s3_get.c - the S3 signer against a real S3 server: signed range GETs
 * of an uploaded object (every byte compared with the local file), and the
 * requests a server that checks signatures must refuse (a wrong secret, a
 * Range changed after signing, a stale date, no signature at all).
 *
 *   s3_get --endpoint URL --object s3://BUCKET/KEY --file LOCAL
 *               [--missing s3://BUCKET/NOKEY] [--expect-anonymous-refused]
 *
 * Credentials come from the environment as pagein takes them (s3.c).
 * tests/sh/remote_s3.sh starts the server and runs this; with no arguments
 * (tests/run.sh runs every test_*) it skips. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "s3.h"

static int failures, checks, range_gets;

#define CHECK(cond, ...)                                                  \
	do {                                                              \
		checks++;                                                 \
		if (!(cond)) {                                            \
			failures++;                                       \
			printf("FAIL: ");                                 \
			printf(__VA_ARGS__);                              \
			printf("\n");                                     \
		}                                                         \
	} while (0)

struct body {
	unsigned char *p;
	size_t len, cap;
};

static size_t on_data(char *d, size_t sz, size_t n, void *arg)
{
	struct body *b = arg;
	size_t add = sz * n;
	if (b->len + add > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 65536;
		while (cap < b->len + add)
			cap *= 2;
		unsigned char *p = realloc(b->p, cap);
		if (!p)
			return 0;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, add);
	b->len += add;
	return add;
}

/* GET url with these headers ("Name: value", NULL-terminated; NULL for
 * none). Returns the HTTP status, the body in *b (caller frees b->p). */
static long http_get(const char *url, char **headers, struct body *b)
{
	memset(b, 0, sizeof(*b));
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	for (char **p = headers; p && *p; p++)
		h = curl_slist_append(h, *p);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	CURLcode rc = curl_easy_perform(c);
	long status = -1;
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	else
		printf("curl: %s: %s\n", url, curl_easy_strerror(rc));
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return status;
}

static struct s3_target *open_target(const char *obj, const char *endpoint)
{
	struct s3_target *t;
	struct pagein_error err = { { 0 } };
	if (s3_target_open(obj, endpoint, &t, &err) < 0) {
		printf("FAIL: s3_target_open %s: %s\n", obj, err.msg);
		exit(1);
	}
	return t;
}

/* Signed GET of [off, off+len) compared with the local bytes. */
static void range_ok(const struct s3_target *t, const unsigned char *file, uint64_t off, uint64_t len)
{
	char range[64], **h;
	snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	range_gets++;
	CHECK(s3_sign_get(t, range, time(NULL), &h) == 0, "sign %s", range);
	struct body b;
	long st = http_get(s3_target_url(t), h, &b);
	CHECK(st == 206, "GET %s: HTTP %ld, want 206: %.300s", range, st, b.p ? (char *)b.p : "");
	CHECK(b.len == len && memcmp(b.p, file + off, len) == 0, "GET %s: %zu bytes, want %llu, %s", range,
	      b.len, (unsigned long long)len, b.len == len ? "bytes differ" : "length differs");
	free(b.p);
	s3_headers_free(h);
}

/* A refused request: the status, and the S3 error code in the body. */
static void refused(const char *what, long st, struct body *b, long want_status, const char *want_code)
{
	b->p = realloc(b->p, b->len + 1);
	b->p[b->len] = '\0';
	CHECK(st == want_status && strstr((char *)b->p, want_code),
	      "%s: HTTP %ld, want %ld %s: %.300s", what, st, want_status, want_code, (char *)b->p);
	if (st == want_status && strstr((char *)b->p, want_code))
		printf("ok: %s refused: HTTP %ld %s\n", what, st, want_code);
	free(b->p);
}

int main(int argc, char **argv)
{
	const char *endpoint = NULL, *obj = NULL, *file = NULL, *missing = NULL;
	int anon_refused = 0;
	static const struct option opts[] = {
		{ "endpoint", required_argument, 0, 'e' }, { "object", required_argument, 0, 'o' },
		{ "file", required_argument, 0, 'f' }, { "missing", required_argument, 0, 'm' },
		{ "expect-anonymous-refused", no_argument, 0, 'a' }, { 0, 0, 0, 0 }
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'e': endpoint = optarg; break;
		case 'o': obj = optarg; break;
		case 'f': file = optarg; break;
		case 'm': missing = optarg; break;
		case 'a': anon_refused = 1; break;
		default: return 2;
		}
	}
	if (!endpoint || !obj || !file) {
		printf("skip: needs an S3 server (--endpoint, --object, --file); tests/sh/remote_s3.sh runs this test\n");
		return 77;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);

	int fd = open(file, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
		printf("FAIL: %s: %s\n", file, strerror(errno));
		return 1;
	}
	uint64_t size = (uint64_t)st.st_size;
	const unsigned char *bytes = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (bytes == MAP_FAILED) {
		printf("FAIL: mmap %s\n", file);
		return 1;
	}

	struct s3_target *t = open_target(obj, endpoint);
	printf("GET %s (%s, region %s, credentials from %s)\n", s3_target_url(t), s3_target_host(t),
	       s3_target_region(t), s3_target_credentials_source(t));

	/* a few ranges, then every byte in 4 MiB ranges */
	range_ok(t, bytes, 0, size < 10 ? size : 10);
	if (size > 8192)
		range_ok(t, bytes, 4095, 4097);
	range_ok(t, bytes, size - 1, 1);
	uint64_t whole = 0;
	for (uint64_t off = 0; off < size; off += 4 << 20) {
		uint64_t n = size - off < (4 << 20) ? size - off : 4 << 20;
		range_ok(t, bytes, off, n);
		whole += n;
	}
	if (!failures)
		printf("ok: %d signed range GETs, every one of %llu bytes equal to %s\n", range_gets,
		       (unsigned long long)whole, file);

	/* a Range changed after signing: the signature covers it */
	char **h;
	struct body b;
	s3_sign_get(t, "bytes=0-9", time(NULL), &h);
	for (char **p = h; *p; p++)
		if (strncmp(*p, "Range:", 6) == 0) {
			free(*p);
			*p = strdup("Range: bytes=10-19");
		}
	long s = http_get(s3_target_url(t), h, &b);
	s3_headers_free(h);
	refused("a Range changed after signing", s, &b, 403, "SignatureDoesNotMatch");

	/* signed 20 minutes ago: x-amz-date is UTC and checked against the clock */
	s3_sign_get(t, "bytes=0-9", time(NULL) - 20 * 60, &h);
	s = http_get(s3_target_url(t), h, &b);
	s3_headers_free(h);
	refused("a request signed 20 minutes ago", s, &b, 403, "RequestTimeTooSkewed");

	/* an object that is not there: a signed request gets to the store */
	if (missing) {
		struct s3_target *m = open_target(missing, endpoint);
		s3_sign_get(m, "bytes=0-9", time(NULL), &h);
		s = http_get(s3_target_url(m), h, &b);
		s3_headers_free(h);
		refused("a missing key", s, &b, 404, "NoSuchKey");
		s3_target_free(m);
	}

	/* no signature */
	if (anon_refused) {
		s = http_get(s3_target_url(t), NULL, &b);
		refused("an unsigned GET", s, &b, 403, "AccessDenied");
	}
	/* temporary credentials without their session token */
	char *akid = strdup(s3_target_access_key_id(t));
	const char *token = getenv("AWS_SESSION_TOKEN");
	if (token && *token && strcmp(s3_target_credentials_source(t), "environment") == 0) {
		char *saved = strdup(token);
		unsetenv("AWS_SESSION_TOKEN");
		struct s3_target *nt = open_target(obj, endpoint);
		s3_sign_get(nt, "bytes=0-9", time(NULL), &h);
		s = http_get(s3_target_url(nt), h, &b);
		s3_headers_free(h);
		refused("temporary keys without their session token", s, &b, 403, "InvalidToken");
		s3_target_free(nt);
		setenv("AWS_SESSION_TOKEN", saved, 1);
		free(saved);
	}
	s3_target_free(t);

	/* the right key id with a wrong secret */
	setenv("AWS_ACCESS_KEY_ID", akid, 1);
	setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret", 1);
	free(akid);
	t = open_target(obj, endpoint);
	s3_sign_get(t, "bytes=0-9", time(NULL), &h);
	s = http_get(s3_target_url(t), h, &b);
	s3_headers_free(h);
	refused("a wrong secret", s, &b, 403, "SignatureDoesNotMatch");
	s3_target_free(t);

	munmap((void *)bytes, size);
	close(fd);
	curl_global_cleanup();
	printf("%d passed, %d failed\n", checks - failures, failures);
	return failures ? 1 : 0;
}
