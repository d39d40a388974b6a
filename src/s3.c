/* s3.c - s3://BUCKET/KEY: the object's URL, the credentials and region from
 * the standard places, and SigV4-signed GET headers (sigv4.c).
 *
 * Nothing here logs. Secrets live only in struct s3_target (wiped when it
 * is freed) and in the key chain of one signature; errors name the places
 * looked at, never a value read there. */
#include "s3.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "error.h"
#include "sigv4.h"

struct s3_target {
	char *url;         /* what to GET */
	char *host;        /* the Host header curl sends for url */
	char *path;        /* url's path, encoded: the canonical URI */
	char *region;
	char *access_key_id;
	char *secret_access_key;
	char *session_token; /* NULL when none */
	char *cred_source;
};

int s3_is_url(const char *url)
{
	return url && strncmp(url, "s3://", 5) == 0;
}

/* ---- INI files (~/.aws/credentials, ~/.aws/config) ------------------ */

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

int s3_ini_get(const char *path, const char *section, const char *key, char **value)
{
	*value = NULL;
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	char *line = NULL;
	size_t cap = 0;
	int in = 0, rc = 0;
	while (getline(&line, &cap, f) >= 0) {
		char *s = trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strrchr(s, ']');
			if (!end) {
				in = 0;
				continue;
			}
			*end = '\0';
			in = strcmp(trim(s + 1), section) == 0;
			continue;
		}
		if (!in)
			continue;
		char *eq = strchr(s, '=');
		if (!eq)
			continue;
		*eq = '\0';
		if (strcmp(trim(s), key) != 0)
			continue;
		free(*value); /* the last one wins */
		*value = strdup(trim(eq + 1));
		if (!*value) {
			rc = -ENOMEM;
			break;
		}
		rc = 1;
	}
	if (ferror(f) && rc >= 0)
		rc = -EIO;
	if (line) {
		OPENSSL_cleanse(line, cap);
		free(line);
	}
	fclose(f);
	if (rc <= 0) {
		free(*value);
		*value = NULL;
	}
	return rc;
}

/* ---- the target ------------------------------------------------------ */

static void free_secret(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

void s3_target_free(struct s3_target *t)
{
	if (!t)
		return;
	free(t->url);
	free(t->host);
	free(t->path);
	free(t->region);
	free(t->access_key_id);
	free_secret(t->secret_access_key);
	free_secret(t->session_token);
	free(t->cred_source);
	free(t);
}

const char *s3_target_url(const struct s3_target *t) { return t ? t->url : NULL; }
const char *s3_target_host(const struct s3_target *t) { return t ? t->host : NULL; }
const char *s3_target_region(const struct s3_target *t) { return t ? t->region : NULL; }
const char *s3_target_access_key_id(const struct s3_target *t) { return t ? t->access_key_id : NULL; }
const char *s3_target_credentials_source(const struct s3_target *t) { return t ? t->cred_source : NULL; }

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* ~/.aws/NAME, or NULL when there is no home directory. */
static char *home_file(const char *name)
{
	const char *home = env("HOME");
	if (!home) {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : NULL;
	}
	char *p = NULL;
	if (home && asprintf(&p, "%s/.aws/%s", home, name) < 0)
		p = NULL;
	return p;
}

/* Bucket names as S3 takes them (3-63 characters; letters, digits, '.', '-'
 * and, for old us-east-1 buckets, '_'). *dns_ok: usable as a host label
 * under TLS (lowercase, no '.' or '_'). */
static int bucket_ok(const char *b, size_t n, int *dns_ok)
{
	if (n < 3 || n > 63)
		return 0;
	*dns_ok = 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)b[i];
		if (isalnum(c) || c == '-')
			*dns_ok &= !isupper(c);
		else if (c == '.' || c == '_')
			*dns_ok = 0;
		else
			return 0;
	}
	return 1;
}

static int region_ok(const char *r)
{
	if (!*r || strlen(r) > 64)
		return 0;
	for (; *r; r++)
		if (!(islower((unsigned char)*r) || isdigit((unsigned char)*r) || *r == '-'))
			return 0;
	return 1;
}

/* The region: AWS_REGION, AWS_DEFAULT_REGION, region in the config file's
 * profile, else us-east-1. */
static int load_region(struct s3_target *t, const char *profile, struct pagein_error *err)
{
	const char *r = env("AWS_REGION");
	if (!r)
		r = env("AWS_DEFAULT_REGION");
	if (r) {
		t->region = strdup(r);
	} else {
		char *cfg = env("AWS_CONFIG_FILE") ? strdup(env("AWS_CONFIG_FILE")) : home_file("config");
		char section[128];
		snprintf(section, sizeof(section), strcmp(profile, "default") ? "profile %s" : "%s", profile);
		int rc = cfg ? s3_ini_get(cfg, section, "region", &t->region) : 0;
		if (rc < 0) {
			pagein_fail(err, -rc, "cannot read %s: %s", cfg, strerror(-rc));
			free(cfg);
			return rc;
		}
		free(cfg);
		if (rc == 0)
			t->region = strdup("us-east-1");
	}
	if (!t->region)
		return pagein_fail(err, ENOMEM, "out of memory");
	if (!region_ok(t->region))
		return pagein_fail(err, EINVAL, "AWS region \"%.64s\" is not a region name (lowercase letters, digits and '-')",
				   t->region);
	return 0;
}

/* Credentials from one INI file's section. 1 found, 0 not there, <0 error. */
static int creds_from_file(struct s3_target *t, const char *path, const char *section,
			   const char *profile, struct pagein_error *err)
{
	char *id = NULL, *secret = NULL, *token = NULL;
	int rc = s3_ini_get(path, section, "aws_access_key_id", &id);
	if (rc >= 0) {
		int r2 = s3_ini_get(path, section, "aws_secret_access_key", &secret);
		if (r2 < 0)
			rc = r2;
	}
	if (rc < 0) {
		free(id);
		free_secret(secret);
		return pagein_fail(err, -rc, "cannot read %s: %s", path, strerror(-rc));
	}
	if (!id && !secret)
		return 0;
	if (!id || !secret || !*id || !*secret) {
		free(id);
		free_secret(secret);
		return pagein_fail(err, EINVAL, "%s, profile %s: aws_access_key_id and aws_secret_access_key must both be set",
				   path, profile);
	}
	rc = s3_ini_get(path, section, "aws_session_token", &token);
	if (rc < 0) {
		free(id);
		free_secret(secret);
		return pagein_fail(err, -rc, "cannot read %s: %s", path, strerror(-rc));
	}
	if (token && !*token) {
		free(token);
		token = NULL;
	}
	t->access_key_id = id;
	t->secret_access_key = secret;
	t->session_token = token;
	if (asprintf(&t->cred_source, "%s [%s]", path, section) < 0) {
		t->cred_source = NULL;
		return pagein_fail(err, ENOMEM, "out of memory");
	}
	return 1;
}

/* Credentials, in the AWS CLI's order: the environment, the shared
 * credentials file, the config file. */
static int load_credentials(struct s3_target *t, const char *profile, struct pagein_error *err)
{
	const char *id = env("AWS_ACCESS_KEY_ID"), *secret = env("AWS_SECRET_ACCESS_KEY");
	if (id || secret) {
		if (!id || !secret)
			return pagein_fail(err, EINVAL, "%s is set but %s is not: set both, or neither to use the credentials file",
					   id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
					   id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		t->access_key_id = strdup(id);
		t->secret_access_key = strdup(secret);
		t->session_token = env("AWS_SESSION_TOKEN") ? strdup(env("AWS_SESSION_TOKEN")) : NULL;
		t->cred_source = strdup("environment");
		if (!t->access_key_id || !t->secret_access_key || !t->cred_source ||
		    (env("AWS_SESSION_TOKEN") && !t->session_token))
			return pagein_fail(err, ENOMEM, "out of memory");
		return 0;
	}

	char *cred = env("AWS_SHARED_CREDENTIALS_FILE") ? strdup(env("AWS_SHARED_CREDENTIALS_FILE"))
							: home_file("credentials");
	char *cfg = env("AWS_CONFIG_FILE") ? strdup(env("AWS_CONFIG_FILE")) : home_file("config");
	int rc = 0;
	if (cred)
		rc = creds_from_file(t, cred, profile, profile, err);
	if (rc == 0 && cfg) {
		char section[128];
		snprintf(section, sizeof(section), strcmp(profile, "default") ? "profile %s" : "%s", profile);
		rc = creds_from_file(t, cfg, section, profile, err);
	}
	if (rc == 0)
		rc = pagein_fail(err, ENOKEY,
				 "no AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set, and "
				 "neither %s nor %s has them for profile %s (AWS_PROFILE)",
				 cred ? cred : "~/.aws/credentials", cfg ? cfg : "~/.aws/config", profile);
	free(cred);
	free(cfg);
	return rc < 0 ? rc : 0;
}

/* Splits an endpoint base URL into scheme ("http"/"https"), the Host header
 * value and a base path without a trailing '/'. */
static int parse_endpoint(const char *what, const char *ep, char **scheme, char **authority,
			  char **host, char **base, struct pagein_error *err)
{
	size_t sl;
	if (strncmp(ep, "http://", 7) == 0)
		sl = 4;
	else if (strncmp(ep, "https://", 8) == 0)
		sl = 5;
	else
		return pagein_fail(err, EINVAL, "%s %s: give a base URL starting with http:// or https://", what, ep);
	const char *a = ep + sl + 3;
	size_t alen = strcspn(a, "/?#");
	if (alen == 0)
		return pagein_fail(err, EINVAL, "%s %s: no host", what, ep);
	if (memchr(a, '@', alen))
		return pagein_fail(err, EINVAL, "%s %s: credentials do not go in the URL", what, ep);
	if (strpbrk(ep, "?# \t\r\n"))
		return pagein_fail(err, EINVAL, "%s %s: a base URL has no query, fragment or spaces", what, ep);
	const char *p = a + alen;
	size_t plen = strlen(p);
	while (plen && p[plen - 1] == '/')
		plen--;
	/* curl leaves the scheme's default port out of Host; so does the signer */
	size_t hlen = alen;
	const char *dflt = sl == 4 ? ":80" : ":443";
	size_t dl = strlen(dflt);
	if (hlen > dl && strncmp(a + hlen - dl, dflt, dl) == 0 && a[hlen - dl - 1] != ':')
		hlen -= dl;
	*scheme = strndup(ep, sl);
	*authority = strndup(a, alen); /* the URL keeps the port as given */
	*host = strndup(a, hlen);
	*base = strndup(p, plen);
	if (!*scheme || !*authority || !*host || !*base)
		return pagein_fail(err, ENOMEM, "out of memory");
	return 0;
}

int s3_target_open(const char *s3url, const char *endpoint,
		   struct s3_target **out, struct pagein_error *err)
{
	*out = NULL;
	if (!s3_is_url(s3url))
		return pagein_fail(err, EINVAL, "%s is not an s3://BUCKET/KEY URL", s3url ? s3url : "(null)");
	const char *b = s3url + 5;
	const char *slash = strchr(b, '/');
	if (!slash || slash == b || !slash[1])
		return pagein_fail(err, EINVAL, "%.200s: give s3://BUCKET/KEY (the bucket and the object's key)", s3url);
	size_t blen = (size_t)(slash - b);
	int dns_ok;
	if (!bucket_ok(b, blen, &dns_ok))
		return pagein_fail(err, EINVAL, "%.200s: \"%.*s\" is not a bucket name (3-63 letters, digits, '.', '-')",
				   s3url, (int)(blen > 63 ? 63 : blen), b);
	const char *key = slash + 1;

	struct s3_target *t = calloc(1, sizeof(*t));
	if (!t)
		return pagein_fail(err, ENOMEM, "out of memory");
	const char *profile = env("AWS_PROFILE") ? env("AWS_PROFILE") : "default";
	char *bucket = strndup(b, blen), *ekey = sigv4_uri_encode(key, 1);
	char *scheme = NULL, *authority = NULL, *host = NULL, *base = NULL;
	int rc;
	if (!bucket || !ekey) {
		rc = pagein_fail(err, ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = load_region(t, profile, err)) < 0 || (rc = load_credentials(t, profile, err)) < 0)
		goto fail;

	/* no --s3-endpoint: the AWS SDKs' variables for one */
	const char *ep_what = "--s3-endpoint";
	if (!endpoint && (endpoint = env("AWS_ENDPOINT_URL_S3")))
		ep_what = "AWS_ENDPOINT_URL_S3";
	else if (!endpoint && (endpoint = env("AWS_ENDPOINT_URL")))
		ep_what = "AWS_ENDPOINT_URL";
	if (endpoint) {
		/* path-style: ENDPOINT/BUCKET/KEY */
		if ((rc = parse_endpoint(ep_what, endpoint, &scheme, &authority, &host, &base, err)) < 0)
			goto fail;
		if (asprintf(&t->path, "%s/%s/%s", base, bucket, ekey) < 0)
			t->path = NULL;
		t->host = host;
		host = NULL;
	} else {
		/* AWS: virtual-hosted style, unless the bucket cannot be a host
		 * label under TLS (dots, '_', uppercase): then path-style on the
		 * regional endpoint. */
		const char *dom = strncmp(t->region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com";
		scheme = strdup("https");
		if (dns_ok) {
			if (asprintf(&t->host, "%s.s3.%s.%s", bucket, t->region, dom) < 0)
				t->host = NULL;
			if (asprintf(&t->path, "/%s", ekey) < 0)
				t->path = NULL;
		} else {
			if (asprintf(&t->host, "s3.%s.%s", t->region, dom) < 0)
				t->host = NULL;
			if (asprintf(&t->path, "/%s/%s", bucket, ekey) < 0)
				t->path = NULL;
		}
	}
	if (!scheme || !t->host || !t->path ||
	    asprintf(&t->url, "%s://%s%s", scheme, authority ? authority : t->host, t->path) < 0) {
		t->url = NULL;
		rc = pagein_fail(err, ENOMEM, "out of memory");
		goto fail;
	}
	free(bucket);
	free(ekey);
	free(scheme);
	free(authority);
	free(base);
	*out = t;
	return 0;
fail:
	free(bucket);
	free(ekey);
	free(scheme);
	free(authority);
	free(host);
	free(base);
	s3_target_free(t);
	return rc;
}

static const struct {
	const char *code, *hint;
} s3_hints[] = {
	{ "SignatureDoesNotMatch", "the secret access key is not the key id's, or something between rewrote the path, Host or Range" },
	{ "InvalidAccessKeyId", "the access key id is unknown to this service (AWS keys on another endpoint, or the reverse?)" },
	{ "ExpiredToken", "the session token expired: restart pagein with fresh credentials" },
	{ "TokenRefreshRequired", "the session token expired: restart pagein with fresh credentials" },
	{ "InvalidToken", "AWS_SESSION_TOKEN (aws_session_token) is malformed or not for these keys" },
	{ "AccessDenied", "the policy does not allow s3:GetObject (and kms:Decrypt for SSE-KMS) here, or the key does not exist and s3:ListBucket is not allowed" },
	{ "RequestTimeTooSkewed", "this host's clock is more than 15 minutes off: run NTP" },
	{ "AuthorizationHeaderMalformed", "the region is not the bucket's: set AWS_REGION" },
	{ "PermanentRedirect", "the region is not the bucket's: set AWS_REGION" },
	{ "NoSuchKey", "no object with this key (the key is taken literally, not URL-decoded)" },
	{ "NoSuchBucket", "no such bucket" },
	{ "InvalidRange", "the object is shorter than the snapshot's index says: was it replaced?" },
	{ "SlowDown", "the service asks for fewer requests (--fetch-parallel)" },
};

const char *s3_describe_error(long status, const char *body, size_t len, char *buf, size_t size)
{
	char code[65] = "";
	if (body) {
		const char *end = body + len, *p = memmem(body, len, "<Code>", 6);
		if (p) {
			p += 6;
			size_t n = 0;
			while (p + n < end && n < sizeof(code) - 1 && isalnum((unsigned char)p[n]))
				n++;
			if (p + n + 7 <= end && memcmp(p + n, "</Code>", 7) == 0) {
				memcpy(code, p, n);
				code[n] = '\0';
			}
		}
	}
	const char *hint = NULL;
	for (size_t i = 0; code[0] && i < sizeof(s3_hints) / sizeof(s3_hints[0]); i++)
		if (strcmp(code, s3_hints[i].code) == 0)
			hint = s3_hints[i].hint;
	if (!hint && !code[0])
		hint = status == 403 ? "check the credentials, the policy and the clock"
		       : status == 404 ? "check the bucket and key"
		       : status == 301 || status == 400 ? "check the region (AWS_REGION)"
		       : NULL;
	snprintf(buf, size, "HTTP %ld%s%s%s%s", status, code[0] ? " " : "", code, hint ? ": " : "",
		 hint ? hint : "");
	return buf;
}

void s3_headers_free(char **headers)
{
	if (!headers)
		return;
	for (char **h = headers; *h; h++) {
		if (strncmp(*h, "x-amz-security-token:", 21) == 0)
			OPENSSL_cleanse(*h, strlen(*h));
		free(*h);
	}
	free(headers);
}

int s3_sign_get_ex(const struct s3_target *t, const char *range, time_t now,
		   char ***headers, struct sigv4_result *sig)
{
	*headers = NULL;
	if (!t)
		return -EINVAL;
	struct tm tm;
	char date[20];
	if (!gmtime_r(&now, &tm) || strftime(date, sizeof(date), "%Y%m%dT%H%M%SZ", &tm) != 16)
		return -EINVAL;
	if (range && (!*range || strpbrk(range, "\r\n")))
		return -EINVAL;

	struct sigv4_header h[5];
	size_t n = 0;
	h[n++] = (struct sigv4_header){ "host", t->host };
	if (range)
		h[n++] = (struct sigv4_header){ "range", range };
	h[n++] = (struct sigv4_header){ "x-amz-content-sha256", SIGV4_EMPTY_SHA256 };
	h[n++] = (struct sigv4_header){ "x-amz-date", date };
	if (t->session_token)
		h[n++] = (struct sigv4_header){ "x-amz-security-token", t->session_token };
	struct sigv4_request req = {
		.method = "GET",
		.path = t->path,
		.query = NULL,
		.headers = h,
		.n_headers = n,
		.payload_hash = SIGV4_EMPTY_SHA256,
		.amz_date = date,
		.region = t->region,
		.service = "s3",
		.access_key_id = t->access_key_id,
		.secret_access_key = t->secret_access_key,
	};
	struct sigv4_result r;
	int rc = sigv4_sign(&req, &r);
	if (rc < 0)
		return rc;

	char **v = calloc(6, sizeof(*v));
	int k = 0;
	if (!v)
		goto nomem;
	if (asprintf(&v[k++], "Authorization: %s", r.authorization) < 0 ||
	    asprintf(&v[k++], "x-amz-date: %s", date) < 0 ||
	    asprintf(&v[k++], "x-amz-content-sha256: %s", SIGV4_EMPTY_SHA256) < 0 ||
	    (t->session_token && asprintf(&v[k++], "x-amz-security-token: %s", t->session_token) < 0) ||
	    (range && asprintf(&v[k++], "Range: %s", range) < 0)) {
		v[k - 1] = NULL;
		goto nomem;
	}
	*headers = v;
	if (sig)
		*sig = r;
	else
		sigv4_result_free(&r);
	return 0;
nomem:
	s3_headers_free(v);
	sigv4_result_free(&r);
	return -ENOMEM;
}

int s3_sign_get(const struct s3_target *t, const char *range, time_t now,
		char ***headers)
{
	return s3_sign_get_ex(t, range, now, headers, NULL);
}
