/* sigv4.c - AWS Signature Version 4 (header signing), see sigv4.h.
 *
 *   canonical request = METHOD \n PATH \n QUERY \n HEADERS \n SIGNED \n PAYLOAD
 *   string to sign    = AWS4-HMAC-SHA256 \n DATE \n SCOPE \n hex(sha256(creq))
 *   signing key       = HMAC(HMAC(HMAC(HMAC("AWS4" secret, yyyymmdd),
 *                                     region), service), "aws4_request")
 *   signature         = hex(HMAC(signing key, string to sign))
 */
#include "sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* A growable string; on ENOMEM it remembers the failure and stays usable. */
struct buf {
	char *p;
	size_t len, cap;
	int failed;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_chr(struct buf *b, char c) { buf_add(b, &c, 1); }

/* Returns the string (caller frees) or NULL if any append failed. */
static char *buf_take(struct buf *b)
{
	if (b->failed || !b->p) {
		free(b->p);
		b->p = NULL;
		return b->failed ? NULL : strdup("");
	}
	char *p = b->p;
	b->p = NULL;
	return p;
}

static int unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static void encode_into(struct buf *b, const char *s, size_t n, int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (unreserved(c) || (keep_slash && c == '/')) {
			buf_chr(b, (char)c);
		} else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };
			buf_add(b, e, 3);
		}
	}
}

char *sigv4_uri_encode(const char *s, int keep_slash)
{
	struct buf b = { 0 };
	encode_into(&b, s, strlen(s), keep_slash);
	return buf_take(&b);
}

static void to_hex(const unsigned char *d, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[2 * n] = '\0';
}

int sigv4_sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return -EIO;
	to_hex(md, 32, hex);
	return 0;
}

static int hmac(const void *key, size_t keylen, const char *msg, unsigned char out[32])
{
	unsigned int len = 0;
	if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &len) ||
	    len != 32)
		return -EIO;
	return 0;
}

/* One canonical header: the lowercased name and its values (joined). */
struct chdr {
	char *name;
	struct buf value;
	size_t first; /* index of its first occurrence, for a stable sort */
};

static int chdr_cmp(const void *a, const void *b)
{
	const struct chdr *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (x->first > y->first) - (x->first < y->first);
}

/* Appends value trimmed, with every run of spaces or tabs inside it made one
 * space. */
static void add_trimmed(struct buf *b, const char *v)
{
	while (*v == ' ' || *v == '\t')
		v++;
	size_t n = strlen(v);
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
		n--;
	int space = 0;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (c == ' ' || c == '\t') {
			space = 1;
			continue;
		}
		if (space)
			buf_chr(b, ' ');
		space = 0;
		buf_chr(b, c);
	}
}

static int header_name_ok(const char *n)
{
	if (!*n)
		return 0;
	for (; *n; n++) {
		unsigned char c = (unsigned char)*n;
		if (c <= ' ' || c >= 127 || c == ':')
			return 0;
	}
	return 1;
}

/* name=value pairs of the query, each encoded, sorted by name then value. */
struct qparam {
	char *enc; /* "name=value", encoded */
	size_t name_len;
};

static int qparam_cmp(const void *a, const void *b)
{
	const struct qparam *x = a, *y = b;
	size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
	int c = memcmp(x->enc, y->enc, n);
	if (c)
		return c;
	if (x->name_len != y->name_len)
		return x->name_len < y->name_len ? -1 : 1;
	return strcmp(x->enc + x->name_len, y->enc + y->name_len);
}

static int canonical_query(const char *q, struct buf *out)
{
	if (!q || !*q)
		return 0;
	size_t n = 1;
	for (const char *p = q; *p; p++)
		n += *p == '&';
	struct qparam *v = calloc(n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	size_t k = 0;
	int rc = 0;
	const char *p = q;
	for (;;) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len) {
			const char *eq = memchr(p, '=', len);
			size_t nlen = eq ? (size_t)(eq - p) : len;
			struct buf b = { 0 };
			encode_into(&b, p, nlen, 0);
			size_t enc_name = b.len;
			buf_chr(&b, '=');
			if (eq)
				encode_into(&b, eq + 1, len - nlen - 1, 0);
			v[k].name_len = enc_name;
			v[k].enc = buf_take(&b);
			if (!v[k].enc) {
				rc = -ENOMEM;
				break;
			}
			k++;
		}
		if (!end)
			break;
		p = end + 1;
	}
	if (!rc) {
		qsort(v, k, sizeof(*v), qparam_cmp);
		for (size_t i = 0; i < k; i++) {
			if (i)
				buf_chr(out, '&');
			buf_str(out, v[i].enc);
		}
	}
	for (size_t i = 0; i < k; i++)
		free(v[i].enc);
	free(v);
	return rc;
}

static int date_ok(const char *d)
{
	if (strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
		return 0;
	for (int i = 0; i < 15; i++)
		if (i != 8 && !isdigit((unsigned char)d[i]))
			return 0;
	return 1;
}

void sigv4_result_free(struct sigv4_result *r)
{
	if (!r)
		return;
	free(r->canonical_request);
	free(r->string_to_sign);
	free(r->signed_headers);
	if (r->authorization)
		OPENSSL_cleanse(r->authorization, strlen(r->authorization));
	free(r->authorization);
	memset(r, 0, sizeof(*r));
}

int sigv4_sign(const struct sigv4_request *req, struct sigv4_result *out)
{
	memset(out, 0, sizeof(*out));
	if (!req->method || !req->path || !req->amz_date || !req->region || !req->service ||
	    !req->access_key_id || !req->secret_access_key || !req->payload_hash ||
	    (req->n_headers && !req->headers) || !date_ok(req->amz_date))
		return -EINVAL;

	int rc = -ENOMEM;
	struct chdr *h = calloc(req->n_headers ? req->n_headers : 1, sizeof(*h));
	size_t nh = 0;
	struct buf creq = { 0 }, signed_h = { 0 }, sts = { 0 }, auth = { 0 }, key = { 0 };
	if (!h)
		goto out;

	/* Lowercase names; repeated names joined with ',' in the order given. */
	for (size_t i = 0; i < req->n_headers; i++) {
		const struct sigv4_header *in = &req->headers[i];
		if (!in->name || !in->value || !header_name_ok(in->name)) {
			rc = -EINVAL;
			goto out;
		}
		size_t j;
		for (j = 0; j < nh; j++)
			if (strcasecmp(h[j].name, in->name) == 0)
				break;
		if (j == nh) {
			h[nh].name = strdup(in->name);
			if (!h[nh].name)
				goto out;
			for (char *c = h[nh].name; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			h[nh].first = i;
			nh++;
		} else {
			buf_chr(&h[j].value, ',');
		}
		add_trimmed(&h[j].value, in->value);
		if (h[j].value.failed)
			goto out;
	}
	qsort(h, nh, sizeof(*h), chdr_cmp);

	buf_str(&creq, req->method);
	buf_chr(&creq, '\n');
	buf_str(&creq, *req->path ? req->path : "/");
	buf_chr(&creq, '\n');
	if ((rc = canonical_query(req->query, &creq)) < 0)
		goto out;
	rc = -ENOMEM;
	buf_chr(&creq, '\n');
	for (size_t i = 0; i < nh; i++) {
		buf_str(&creq, h[i].name);
		buf_chr(&creq, ':');
		if (h[i].value.p)
			buf_str(&creq, h[i].value.p);
		buf_chr(&creq, '\n');
		if (i)
			buf_chr(&signed_h, ';');
		buf_str(&signed_h, h[i].name);
	}
	buf_chr(&creq, '\n');
	if (signed_h.p)
		buf_str(&creq, signed_h.p);
	buf_chr(&creq, '\n');
	buf_str(&creq, req->payload_hash);
	if (creq.failed || signed_h.failed)
		goto out;

	char creq_hash[65], date[9];
	if (sigv4_sha256_hex(creq.p, creq.len, creq_hash) < 0) {
		rc = -EIO;
		goto out;
	}
	memcpy(date, req->amz_date, 8);
	date[8] = '\0';
	buf_str(&sts, "AWS4-HMAC-SHA256\n");
	buf_str(&sts, req->amz_date);
	buf_chr(&sts, '\n');
	size_t scope_at = sts.len;
	buf_str(&sts, date);
	buf_chr(&sts, '/');
	buf_str(&sts, req->region);
	buf_chr(&sts, '/');
	buf_str(&sts, req->service);
	buf_str(&sts, "/aws4_request");
	size_t scope_end = sts.len;
	buf_chr(&sts, '\n');
	buf_str(&sts, creq_hash);
	if (sts.failed)
		goto out;

	/* The signing key chain. The secret is copied once, into key, which is
	 * wiped before it is freed. */
	unsigned char k[32];
	buf_str(&key, "AWS4");
	buf_str(&key, req->secret_access_key);
	if (key.failed)
		goto out;
	rc = -EIO;
	if (hmac(key.p, key.len, date, k) < 0 || hmac(k, 32, req->region, k) < 0 ||
	    hmac(k, 32, req->service, k) < 0 || hmac(k, 32, "aws4_request", k) < 0)
		goto wipe;
	unsigned char sig[32];
	if (hmac(k, 32, sts.p, sig) < 0)
		goto wipe;
	to_hex(sig, 32, out->signature);

	rc = -ENOMEM;
	buf_str(&auth, "AWS4-HMAC-SHA256 Credential=");
	buf_str(&auth, req->access_key_id);
	buf_chr(&auth, '/');
	buf_add(&auth, sts.p + scope_at, scope_end - scope_at);
	buf_str(&auth, ", SignedHeaders=");
	buf_str(&auth, signed_h.p ? signed_h.p : "");
	buf_str(&auth, ", Signature=");
	buf_str(&auth, out->signature);
	if (auth.failed)
		goto wipe;
	out->canonical_request = buf_take(&creq);
	out->string_to_sign = buf_take(&sts);
	out->signed_headers = buf_take(&signed_h);
	out->authorization = buf_take(&auth);
	rc = 0;
wipe:
	OPENSSL_cleanse(k, sizeof(k));
out:
	if (key.p)
		OPENSSL_cleanse(key.p, key.cap);
	free(key.p);
	free(creq.p);
	free(signed_h.p);
	free(sts.p);
	free(auth.p);
	for (size_t i = 0; i < nh; i++) {
		free(h[i].name);
		free(h[i].value.p);
	}
	free(h);
	if (rc < 0)
		sigv4_result_free(out);
	else if (!out->canonical_request || !out->string_to_sign || !out->signed_headers ||
		 !out->authorization) {
		sigv4_result_free(out);
		rc = -ENOMEM;
	}
	return rc;
}
