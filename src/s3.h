/* s3.h - s3://BUCKET/KEY sources: where the object is and how a GET of it
 * is signed (AWS Signature Version 4). The remote source (source_http.c)
 * calls these; it knows nothing about AWS beyond them. */
#ifndef PAGEIN_S3_H
#define PAGEIN_S3_H

#include <stddef.h>
#include <time.h>

#include "pagein.h"

struct s3_target;

/* True when url starts with "s3://". */
int s3_is_url(const char *url);

/* Resolves s3://BUCKET/KEY into an https (or the endpoint's scheme) URL
 * and loads credentials from the standard places (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION,
 * AWS_PROFILE and the shared credentials file). endpoint: NULL for AWS
 * (virtual-hosted style), else a base URL such as http://127.0.0.1:4568
 * (path-style addressing). Fails with a message naming what is missing.
 * (With endpoint NULL, AWS_ENDPOINT_URL_S3 or else AWS_ENDPOINT_URL, the
 * AWS SDKs' variables, name the endpoint when set.) */
int s3_target_open(const char *s3url, const char *endpoint,
		   struct s3_target **out, struct pagein_error *err);
void s3_target_free(struct s3_target *t);

/* The plain URL to GET (no query string added). Owned by t. */
const char *s3_target_url(const struct s3_target *t);

/* Signed request headers for one GET of s3_target_url(t), with the given
 * Range header value (NULL for none), at time `now`. Returns a
 * NULL-terminated, malloc'ed array of malloc'ed "Name: value" strings
 * (Authorization, x-amz-date, x-amz-content-sha256, x-amz-security-token
 * when a session token is set, and Range) in *headers; free with
 * s3_headers_free(). Returns 0 or -errno. */
int s3_sign_get(const struct s3_target *t, const char *range, time_t now,
		char ***headers);
void s3_headers_free(char **headers);

/* --- Added for tests, logs and tools (no secrets in any of them) --- */

struct sigv4_result;

/* Parts of a target: the Host header value signed (host[:port], the port
 * only when it is not the scheme's default, as curl sends it), the region
 * and the access key id used, and where the credentials came from
 * ("environment", or the file and profile: "/root/.aws/credentials [default]"). */
const char *s3_target_host(const struct s3_target *t);
const char *s3_target_region(const struct s3_target *t);
const char *s3_target_access_key_id(const struct s3_target *t);
const char *s3_target_credentials_source(const struct s3_target *t);

/* s3_sign_get, also handing back the canonical request, string to sign and
 * signature (free with sigv4_result_free); sig may be NULL. */
int s3_sign_get_ex(const struct s3_target *t, const char *range, time_t now,
		   char ***headers, struct sigv4_result *sig);

/* One sentence for an error answer of S3: the status, the <Code> of its
 * XML body (body: len bytes, need not be NUL-terminated; may be NULL) and
 * what to check, e.g. "HTTP 403 SignatureDoesNotMatch: the secret access key
 * is not the key id's, or something between rewrote the path, Host or
 * Range". Nothing else of the body is copied (S3 echoes request details
 * there). Written into buf (size bytes); returns buf. */
const char *s3_describe_error(long status, const char *body, size_t len, char *buf, size_t size);

/* Reads key from [section] of an INI file such as ~/.aws/credentials
 * (section "default", "prod") or ~/.aws/config (section "default",
 * "profile prod"). Whitespace around names and values is ignored; lines
 * starting with '#' or ';' are comments. 1 and *value malloc'ed when found,
 * 0 when the file, section or key is missing, -errno on a read error. */
int s3_ini_get(const char *path, const char *section, const char *key, char **value);

#endif
