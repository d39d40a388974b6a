/* sigv4.h - AWS Signature Version 4 for one HTTP request, header-signed.
 *
 * Pure: no clock, no environment, no I/O. The caller gives every input
 * (tests/unit_sigv4.c runs AWS's published vectors through it); s3.c
 * builds the request for a GET of an object. HMAC-SHA256 and SHA-256 come
 * from OpenSSL's libcrypto. */
#ifndef PAGEIN_SIGV4_H
#define PAGEIN_SIGV4_H

#include <stddef.h>

/* SHA-256 of an empty payload (a GET has none), in hex. */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

struct sigv4_header {
	const char *name;  /* any case; lowercased when signed */
	const char *value; /* trimmed, inner runs of spaces collapsed when signed */
};

struct sigv4_request {
	const char *method;  /* "GET" */
	const char *path;    /* the path as sent, already URI-encoded (see
	                      * sigv4_uri_encode); "" means "/" */
	const char *query;   /* "a=1&b=2", names and values not encoded yet;
	                      * NULL or "" for none */
	const struct sigv4_header *headers; /* every header to sign: host and
	                      * x-amz-date at least; repeated names are joined */
	size_t n_headers;
	const char *payload_hash; /* hex SHA-256 of the body, or UNSIGNED-PAYLOAD */
	const char *amz_date; /* "20150830T123600Z" (its first 8 characters
	                       * are the scope's date) */
	const char *region;   /* "us-east-1" */
	const char *service;  /* "s3" */
	const char *access_key_id;
	const char *secret_access_key;
};

struct sigv4_result {
	char *canonical_request;
	char *string_to_sign;
	char *signed_headers;   /* "host;range;x-amz-date" */
	char *authorization;    /* the Authorization header's value */
	char signature[65];     /* hex */
};

/* Fills *out (free with sigv4_result_free). 0, -EINVAL for a malformed
 * request (missing field, amz_date not YYYYMMDDTHHMMSSZ, a header name with
 * characters a header name cannot have), -ENOMEM, or -EIO if libcrypto
 * fails. */
int sigv4_sign(const struct sigv4_request *req, struct sigv4_result *out);
void sigv4_result_free(struct sigv4_result *r);

/* URI-encodes s per SigV4: every byte but A-Z a-z 0-9 - . _ ~ becomes %XX
 * (uppercase hex), and '/' too unless keep_slash. malloc'ed, NULL on ENOMEM.
 * An S3 object key is encoded once with keep_slash (never twice). */
char *sigv4_uri_encode(const char *s, int keep_slash);

/* Hex SHA-256 of len bytes into hex[65]. 0 or -EIO. */
int sigv4_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
