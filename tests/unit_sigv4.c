/* unit_sigv4.c - the SigV4 signer against AWS's published vectors, and the
 * s3:// side: URL mapping, key encoding, credentials and region lookup.
 *
 * Expected values are data from AWS: the Signature Version 4 test suite
 * (aws-sig-v4-test-suite: credentials AKIDEXAMPLE /
 * wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, service "service",
 * 20150830T123600Z, host example.amazonaws.com), and the S3 API reference's
 * "Signature Calculations for the Authorization Header: Transferring Payload
 * in a Single Chunk" examples (AKIAIOSFODNN7EXAMPLE /
 * wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, examplebucket, 20130524T000000Z). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3.h"
#include "sigv4.h"

#define TS_AKID "AKIDEXAMPLE"
#define TS_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define TS_DATE "20150830T123600Z"
#define TS_HOST "example.amazonaws.com"
#define TS_SCOPE "20150830/us-east-1/service/aws4_request"
#define EMPTY SIGV4_EMPTY_SHA256

struct vector {
	const char *name;
	const char *method, *raw_path, *query;
	struct sigv4_header headers[6];
	size_t n;
	const char *payload_hash;
	const char *creq;     /* NULL: not checked (the signature covers it) */
	const char *sts_hash; /* last line of the string to sign */
	const char *signed_headers;
	const char *signature;
};

#define HD { "Host", TS_HOST }, { "X-Amz-Date", TS_DATE }

static const struct vector suite[] = {
	{ "get-vanilla", "GET", "/", NULL, { HD }, 2, EMPTY,
	  "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY,
	  "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63", "host;x-amz-date",
	  "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31" },
	{ "get-vanilla-query-order-key-case", "GET", "/", "Param2=value2&Param1=value1", { HD }, 2, EMPTY,
	  "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
	  "host;x-amz-date\n" EMPTY,
	  "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0", "host;x-amz-date",
	  "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500" },
	{ "get-vanilla-utf8-query", "GET", "/", "\xe1\x88\xb4=bar", { HD }, 2, EMPTY,
	  "GET\n/\n%E1%88%B4=bar\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY,
	  "eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073", "host;x-amz-date",
	  "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04" },
	{ "get-header-value-trim", "GET", "/", NULL,
	  { { "Host", TS_HOST }, { "My-Header1", " value1" }, { "My-Header2", " \"a   b   c\"" },
	    { "X-Amz-Date", TS_DATE } }, 4, EMPTY,
	  "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\n"
	  "x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n" EMPTY,
	  "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
	  "host;my-header1;my-header2;x-amz-date",
	  "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736" },
	{ "get-header-key-duplicate", "GET", "/", NULL,
	  { { "Host", TS_HOST }, { "My-Header1", "value2" }, { "My-Header1", "value2" },
	    { "My-Header1", "value1" }, { "X-Amz-Date", TS_DATE } }, 5, EMPTY,
	  "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\nx-amz-date:20150830T123600Z\n\n"
	  "host;my-header1;x-amz-date\n" EMPTY,
	  "dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c", "host;my-header1;x-amz-date",
	  "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea" },
	{ "get-unreserved", "GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", NULL,
	  { HD }, 2, EMPTY,
	  "GET\n/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\nhost:example.amazonaws.com\n"
	  "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY,
	  "6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9", "host;x-amz-date",
	  "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f" },
	{ "get-utf8", "GET", "/\xe1\x88\xb4", NULL, { HD }, 2, EMPTY,
	  "GET\n/%E1%88%B4\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY,
	  "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102", "host;x-amz-date",
	  "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85" },
	{ "get-space (normalize-path)", "GET", "/example space/", NULL, { HD }, 2, EMPTY,
	  "GET\n/example%20space/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY,
	  "63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86", "host;x-amz-date",
	  "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741" },
	{ "post-vanilla", "POST", "/", NULL, { HD }, 2, EMPTY,
	  "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY,
	  "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87", "host;x-amz-date",
	  "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b" },
	{ "post-x-www-form-urlencoded", "POST", "/", NULL,
	  { { "Content-Type", "application/x-www-form-urlencoded" }, HD }, 3,
	  "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
	  "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n"
	  "x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n"
	  "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
	  "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281", "content-type;host;x-amz-date",
	  "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a" },
};

static void check_vector(const struct vector *v, const char *akid, const char *secret, const char *date,
			 const char *region, const char *service, const char *scope)
{
	char *path = sigv4_uri_encode(v->raw_path, 1);
	assert_non_null(path);
	struct sigv4_request req = {
		.method = v->method, .path = path, .query = v->query, .headers = v->headers,
		.n_headers = v->n, .payload_hash = v->payload_hash, .amz_date = date,
		.region = region, .service = service, .access_key_id = akid, .secret_access_key = secret,
	};
	struct sigv4_result r;
	print_message("  %s\n", v->name);
	assert_int_equal(sigv4_sign(&req, &r), 0);
	if (v->creq)
		assert_string_equal(r.canonical_request, v->creq);
	char sts[512];
	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", date, scope, v->sts_hash);
	assert_string_equal(r.string_to_sign, sts);
	assert_string_equal(r.signed_headers, v->signed_headers);
	assert_string_equal(r.signature, v->signature);
	char authz[512];
	snprintf(authz, sizeof(authz), "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s", akid,
		 scope, v->signed_headers, v->signature);
	assert_string_equal(r.authorization, authz);
	sigv4_result_free(&r);
	free(path);
}

static void aws_test_suite(void **state)
{
	for (size_t i = 0; i < sizeof(suite) / sizeof(suite[0]); i++)
		check_vector(&suite[i], TS_AKID, TS_SECRET, TS_DATE, "us-east-1", "service", TS_SCOPE);
}

/* The S3 reference's examples: GET Object with a Range (canonical request
 * and signature printed there), GET Bucket lifecycle (a query parameter with
 * no value) and GET Bucket with two parameters out of order. */
#define S3_HOST "examplebucket.s3.amazonaws.com"
#define S3_HD { "Host", S3_HOST }, { "x-amz-content-sha256", EMPTY }, { "x-amz-date", "20130524T000000Z" }
static const struct vector s3_doc[] = {
	{ "S3 GET Object, Range: bytes=0-9", "GET", "/test.txt", NULL,
	  { { "Host", S3_HOST }, { "Range", "bytes=0-9" }, { "x-amz-content-sha256", EMPTY },
	    { "x-amz-date", "20130524T000000Z" } }, 4, EMPTY,
	  "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:" EMPTY
	  "\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n" EMPTY,
	  "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
	  "host;range;x-amz-content-sha256;x-amz-date",
	  "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41" },
	{ "S3 GET Bucket lifecycle", "GET", "/", "lifecycle", { S3_HD }, 3, EMPTY,
	  "GET\n/\nlifecycle=\nhost:examplebucket.s3.amazonaws.com\nx-amz-content-sha256:" EMPTY
	  "\nx-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n" EMPTY,
	  "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
	  "host;x-amz-content-sha256;x-amz-date",
	  "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543" },
	{ "S3 GET Bucket (list objects)", "GET", "/", "prefix=J&max-keys=2", { S3_HD }, 3, EMPTY,
	  "GET\n/\nmax-keys=2&prefix=J\nhost:examplebucket.s3.amazonaws.com\nx-amz-content-sha256:" EMPTY
	  "\nx-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n" EMPTY,
	  "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
	  "host;x-amz-content-sha256;x-amz-date",
	  "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7" },
};

static void s3_doc_examples(void **state)
{
	for (size_t i = 0; i < sizeof(s3_doc) / sizeof(s3_doc[0]); i++)
		check_vector(&s3_doc[i], "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
			     "20130524T000000Z", "us-east-1", "s3", "20130524/us-east-1/s3/aws4_request");
}

static void sha256_and_encoding(void **state)
{
	char hex[65];
	assert_int_equal(sigv4_sha256_hex("", 0, hex), 0);
	assert_string_equal(hex, EMPTY);
	assert_int_equal(sigv4_sha256_hex("Param1=value1", 13, hex), 0);
	assert_string_equal(hex, "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");

	char *e = sigv4_uri_encode("a/b c+d=e%20~x", 1);
	assert_string_equal(e, "a/b%20c%2Bd%3De%2520~x"); /* '%' is a character of the key: encoded, not kept */
	free(e);
	e = sigv4_uri_encode("a/b", 0);
	assert_string_equal(e, "a%2Fb");
	free(e);
}

static void malformed_requests(void **state)
{
	struct sigv4_header h[] = { { "Host", TS_HOST }, { "X-Amz-Date", TS_DATE } };
	struct sigv4_request req = {
		.method = "GET", .path = "/", .headers = h, .n_headers = 2, .payload_hash = EMPTY,
		.amz_date = "2015-08-30", .region = "us-east-1", .service = "s3",
		.access_key_id = "a", .secret_access_key = "b",
	};
	struct sigv4_result r;
	assert_int_equal(sigv4_sign(&req, &r), -EINVAL);
	req.amz_date = TS_DATE;
	struct sigv4_header bad[] = { { "Bad Name", "x" } };
	req.headers = bad;
	req.n_headers = 1;
	assert_int_equal(sigv4_sign(&req, &r), -EINVAL);
	req.headers = h;
	req.n_headers = 2;
	req.secret_access_key = NULL;
	assert_int_equal(sigv4_sign(&req, &r), -EINVAL);
}

/* ---- s3:// ------------------------------------------------------------ */

static char tmpdir[] = "/tmp/unit_sigv4.XXXXXX";

static void clean_env(void)
{
	static const char *vars[] = { "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
				      "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
				      "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_ENDPOINT_URL",
				      "AWS_ENDPOINT_URL_S3" };
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	setenv("HOME", tmpdir, 1);
}

static void env_keys(void)
{
	clean_env();
	setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", 1);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static struct s3_target *open_ok(const char *url, const char *endpoint)
{
	struct s3_target *t = NULL;
	struct pagein_error err = { { 0 } };
	int rc = s3_target_open(url, endpoint, &t, &err);
	if (rc)
		print_error("s3_target_open(%s): %s\n", url, err.msg);
	assert_int_equal(rc, 0);
	return t;
}

static void url_mapping(void **state)
{
	env_keys();
	assert_true(s3_is_url("s3://b/k"));
	assert_false(s3_is_url("https://b/k"));
	assert_false(s3_is_url(NULL));

	struct s3_target *t = open_ok("s3://examplebucket/test.txt", NULL);
	assert_string_equal(s3_target_url(t), "https://examplebucket.s3.us-east-1.amazonaws.com/test.txt");
	assert_string_equal(s3_target_host(t), "examplebucket.s3.us-east-1.amazonaws.com");
	assert_string_equal(s3_target_region(t), "us-east-1");
	s3_target_free(t);

	/* the key is encoded once, '/' kept; AWS_REGION picks the host */
	setenv("AWS_REGION", "eu-west-1", 1);
	t = open_ok("s3://my-bucket/vms/a b+c/\xc3\xa9t\xc3\xa9%41.pgn", NULL);
	assert_string_equal(s3_target_url(t),
			    "https://my-bucket.s3.eu-west-1.amazonaws.com/vms/a%20b%2Bc/%C3%A9t%C3%A9%2541.pgn");
	s3_target_free(t);

	/* a bucket with dots cannot be a TLS host label: path-style */
	t = open_ok("s3://my.dotted.bucket/k", NULL);
	assert_string_equal(s3_target_url(t), "https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/k");
	assert_string_equal(s3_target_host(t), "s3.eu-west-1.amazonaws.com");
	s3_target_free(t);

	/* AWS_REGION wins over AWS_DEFAULT_REGION; China has its own domain */
	setenv("AWS_DEFAULT_REGION", "us-west-2", 1);
	unsetenv("AWS_REGION");
	t = open_ok("s3://bucket/k", NULL);
	assert_string_equal(s3_target_region(t), "us-west-2");
	s3_target_free(t);
	setenv("AWS_REGION", "cn-north-1", 1);
	t = open_ok("s3://bucket/k", NULL);
	assert_string_equal(s3_target_url(t), "https://bucket.s3.cn-north-1.amazonaws.com.cn/k");
	s3_target_free(t);

	/* an endpoint: path-style under it */
	t = open_ok("s3://snaps/vm1/mem.pgn", "http://127.0.0.1:4568");
	assert_string_equal(s3_target_url(t), "http://127.0.0.1:4568/snaps/vm1/mem.pgn");
	assert_string_equal(s3_target_host(t), "127.0.0.1:4568");
	s3_target_free(t);
	t = open_ok("s3://snaps/mem", "https://storage.googleapis.com/");
	assert_string_equal(s3_target_url(t), "https://storage.googleapis.com/snaps/mem");
	assert_string_equal(s3_target_host(t), "storage.googleapis.com");
	s3_target_free(t);
	/* a base path is kept; the scheme's default port leaves Host, not the URL */
	t = open_ok("s3://snaps/mem", "http://minio:80/s3/");
	assert_string_equal(s3_target_url(t), "http://minio:80/s3/snaps/mem");
	assert_string_equal(s3_target_host(t), "minio");
	s3_target_free(t);
	/* the AWS SDKs' endpoint variables, when no endpoint is given */
	setenv("AWS_ENDPOINT_URL", "http://generic:1", 1);
	t = open_ok("s3://snaps/mem", NULL);
	assert_string_equal(s3_target_url(t), "http://generic:1/snaps/mem");
	s3_target_free(t);
	setenv("AWS_ENDPOINT_URL_S3", "http://s3only:2", 1);
	t = open_ok("s3://snaps/mem", NULL);
	assert_string_equal(s3_target_url(t), "http://s3only:2/snaps/mem");
	s3_target_free(t);
	t = open_ok("s3://snaps/mem", "http://given:3");
	assert_string_equal(s3_target_url(t), "http://given:3/snaps/mem");
	s3_target_free(t);
	unsetenv("AWS_ENDPOINT_URL_S3");
	unsetenv("AWS_ENDPOINT_URL");
	t = open_ok("s3://snaps/mem", "https://[::1]:9000");
	assert_string_equal(s3_target_url(t), "https://[::1]:9000/snaps/mem");
	assert_string_equal(s3_target_host(t), "[::1]:9000");
	s3_target_free(t);
}

static void bad_urls(void **state)
{
	env_keys();
	static const char *bad[] = { "s3://bucket", "s3://bucket/", "s3:///key", "s3://ab/key",
				     "s3://bad?bucket/k", "https://bucket/key", "s3://Bucket name/k" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct s3_target *t = (void *)1;
		struct pagein_error err = { { 0 } };
		assert_int_equal(s3_target_open(bad[i], NULL, &t, &err), -EINVAL);
		assert_null(t);
		assert_true(strlen(err.msg) > 0);
	}
	static const char *bad_ep[] = { "ftp://host", "http://", "http://user:pw@host", "host:9000",
					"http://host/?x=1" };
	for (size_t i = 0; i < sizeof(bad_ep) / sizeof(bad_ep[0]); i++) {
		struct s3_target *t = NULL;
		struct pagein_error err = { { 0 } };
		assert_int_equal(s3_target_open("s3://bucket/key", bad_ep[i], &t, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "--s3-endpoint"));
	}
	setenv("AWS_REGION", "us-east-1.evil.com/", 1);
	struct s3_target *t = NULL;
	struct pagein_error err = { { 0 } };
	assert_int_equal(s3_target_open("s3://bucket/key", NULL, &t, &err), -EINVAL);
}

/* s3_sign_get signs exactly the headers it returns, for the target's host and
 * path, at the given time; the S3 example's request, on the regional host. */
static void sign_get(void **state)
{
	env_keys();
	struct s3_target *t = open_ok("s3://examplebucket/test.txt", NULL);
	char **h = NULL;
	struct sigv4_result r;
	assert_int_equal(s3_sign_get_ex(t, "bytes=0-9", 1369353600 /* 2013-05-24T00:00:00Z */, &h, &r), 0);
	assert_string_equal(r.canonical_request,
			    "GET\n/test.txt\n\nhost:examplebucket.s3.us-east-1.amazonaws.com\nrange:bytes=0-9\n"
			    "x-amz-content-sha256:" EMPTY "\nx-amz-date:20130524T000000Z\n\n"
			    "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY);
	char authz[300];
	snprintf(authz, sizeof(authz), "Authorization: %s", r.authorization);
	assert_non_null(strstr(authz, "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "));
	assert_string_equal(h[0], authz);
	assert_string_equal(h[1], "x-amz-date: 20130524T000000Z");
	assert_string_equal(h[2], "x-amz-content-sha256: " EMPTY);
	assert_string_equal(h[3], "Range: bytes=0-9");
	assert_null(h[4]);
	s3_headers_free(h);
	sigv4_result_free(&r);

	/* the same through sigv4_sign directly: one signer */
	struct sigv4_header hd[] = { { "Host", "examplebucket.s3.us-east-1.amazonaws.com" },
				     { "Range", "bytes=0-9" }, { "x-amz-content-sha256", EMPTY },
				     { "x-amz-date", "20130524T000000Z" } };
	struct sigv4_request req = {
		.method = "GET", .path = "/test.txt", .headers = hd, .n_headers = 4, .payload_hash = EMPTY,
		.amz_date = "20130524T000000Z", .region = "us-east-1", .service = "s3",
		.access_key_id = "AKIAIOSFODNN7EXAMPLE",
		.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	};
	struct sigv4_result direct;
	assert_int_equal(sigv4_sign(&req, &direct), 0);
	assert_int_equal(s3_sign_get_ex(t, "bytes=0-9", 1369353600, &h, &r), 0);
	assert_string_equal(r.signature, direct.signature);
	s3_headers_free(h);
	sigv4_result_free(&r);
	sigv4_result_free(&direct);

	/* no Range: no range header, not signed either */
	assert_int_equal(s3_sign_get_ex(t, NULL, 1369353600, &h, &r), 0);
	assert_string_equal(r.signed_headers, "host;x-amz-content-sha256;x-amz-date");
	assert_null(h[3]);
	s3_headers_free(h);
	sigv4_result_free(&r);
	assert_int_equal(s3_sign_get(t, "bytes=0-9\r\nX-Evil: 1", 1369353600, &h), -EINVAL);
	s3_target_free(t);

	/* a session token is sent and signed */
	setenv("AWS_SESSION_TOKEN", "FQoGZXIvYXdzEXAMPLETOKEN", 1);
	t = open_ok("s3://examplebucket/test.txt", NULL);
	assert_int_equal(s3_sign_get_ex(t, "bytes=0-9", 1369353600, &h, &r), 0);
	assert_string_equal(r.signed_headers, "host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token");
	assert_string_equal(h[3], "x-amz-security-token: FQoGZXIvYXdzEXAMPLETOKEN");
	assert_string_equal(h[4], "Range: bytes=0-9");
	s3_headers_free(h);
	sigv4_result_free(&r);
	s3_target_free(t);
}

/* The signature for GET s3://bucket/k at a fixed time with these keys: how
 * a test sees which secret was loaded without any API handing it out. */
static void expect_keys(struct s3_target *t, const char *akid, const char *secret, const char *region,
			const char *token)
{
	assert_string_equal(s3_target_access_key_id(t), akid);
	assert_string_equal(s3_target_region(t), region);
	char **h;
	struct sigv4_result r;
	assert_int_equal(s3_sign_get_ex(t, NULL, 1369353600, &h, &r), 0);
	struct sigv4_header hd[] = { { "host", s3_target_host(t) }, { "x-amz-content-sha256", EMPTY },
				     { "x-amz-date", "20130524T000000Z" }, { "x-amz-security-token", token } };
	struct sigv4_request req = {
		.method = "GET", .path = "/k", .headers = hd, .n_headers = token ? 4 : 3, .payload_hash = EMPTY,
		.amz_date = "20130524T000000Z", .region = region, .service = "s3",
		.access_key_id = akid, .secret_access_key = secret,
	};
	struct sigv4_result want;
	assert_int_equal(sigv4_sign(&req, &want), 0);
	if (strcmp(r.canonical_request, want.canonical_request))
		print_error("got:\n%s\nwant:\n%s\n", r.canonical_request, want.canonical_request);
	assert_string_equal(r.signature, want.signature);
	sigv4_result_free(&want);
	sigv4_result_free(&r);
	s3_headers_free(h);
}

static void credentials_lookup(void **state)
{
	char cred[256], cfg[256], other[256];
	snprintf(cred, sizeof(cred), "%s/.aws/credentials", tmpdir);
	snprintf(cfg, sizeof(cfg), "%s/.aws/config", tmpdir);
	snprintf(other, sizeof(other), "%s/other-credentials", tmpdir);
	char dir[256];
	snprintf(dir, sizeof(dir), "%s/.aws", tmpdir);
	mkdir(dir, 0700);

	/* nothing anywhere: the error names every place looked */
	clean_env();
	struct s3_target *t = NULL;
	struct pagein_error err = { { 0 } };
	assert_int_equal(s3_target_open("s3://bucket/k", NULL, &t, &err), -ENOKEY);
	print_message("  error: %s\n", err.msg);
	assert_non_null(strstr(err.msg, "AWS_ACCESS_KEY_ID"));
	assert_non_null(strstr(err.msg, cred));
	assert_non_null(strstr(err.msg, cfg));
	assert_non_null(strstr(err.msg, "profile default"));

	/* half of the environment pair is an error, not a fallback */
	setenv("AWS_ACCESS_KEY_ID", "AKIDONLY", 1);
	assert_int_equal(s3_target_open("s3://bucket/k", NULL, &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "AWS_SECRET_ACCESS_KEY is not"));

	/* the shared credentials file: comments, spaces, several profiles */
	write_file(cred, "# keys\n[default]\naws_access_key_id = AKIDDEFAULT\n"
			 "aws_secret_access_key=secret/default+key \n\n"
			 "[prod]\n  aws_access_key_id=AKIDPROD\n; comment\naws_secret_access_key = prodsecret\n"
			 "aws_session_token = prodtoken\n[half]\naws_access_key_id=AKIDHALF\n");
	write_file(cfg, "[default]\nregion = ap-southeast-2\n[profile prod]\nregion=eu-central-1\n"
			"[profile cfgonly]\naws_access_key_id=AKIDCFG\naws_secret_access_key=cfgsecret\n");
	clean_env();
	t = open_ok("s3://bucket/k", NULL);
	expect_keys(t, "AKIDDEFAULT", "secret/default+key", "ap-southeast-2", NULL);
	assert_non_null(strstr(s3_target_credentials_source(t), "[default]"));
	s3_target_free(t);

	setenv("AWS_PROFILE", "prod", 1);
	t = open_ok("s3://bucket/k", NULL);
	expect_keys(t, "AKIDPROD", "prodsecret", "eu-central-1", "prodtoken");
	char **h;
	assert_int_equal(s3_sign_get(t, NULL, 1369353600, &h), 0);
	assert_string_equal(h[3], "x-amz-security-token: prodtoken");
	s3_headers_free(h);
	s3_target_free(t);

	/* credentials in the config file, when the credentials file has none */
	setenv("AWS_PROFILE", "cfgonly", 1);
	t = open_ok("s3://bucket/k", NULL);
	expect_keys(t, "AKIDCFG", "cfgsecret", "us-east-1", NULL);
	s3_target_free(t);

	/* a profile with an id and no secret is an error naming the file */
	setenv("AWS_PROFILE", "half", 1);
	assert_int_equal(s3_target_open("s3://bucket/k", NULL, &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, cred));
	assert_null(strstr(err.msg, "AKIDHALF"));

	/* an unknown profile: not found, the message names it */
	setenv("AWS_PROFILE", "nosuch", 1);
	assert_int_equal(s3_target_open("s3://bucket/k", NULL, &t, &err), -ENOKEY);
	assert_non_null(strstr(err.msg, "profile nosuch"));

	/* AWS_SHARED_CREDENTIALS_FILE moves the file; the environment wins over it */
	clean_env();
	write_file(other, "[default]\naws_access_key_id=AKIDOTHER\naws_secret_access_key=othersecret\n");
	setenv("AWS_SHARED_CREDENTIALS_FILE", other, 1);
	setenv("AWS_REGION", "us-east-2", 1);
	t = open_ok("s3://bucket/k", NULL);
	expect_keys(t, "AKIDOTHER", "othersecret", "us-east-2", NULL);
	s3_target_free(t);
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
	t = open_ok("s3://bucket/k", NULL);
	expect_keys(t, "AKIDENV", "envsecret", "us-east-2", NULL);
	assert_string_equal(s3_target_credentials_source(t), "environment");
	s3_target_free(t);

	/* ini lookups directly */
	char *v;
	assert_int_equal(s3_ini_get(cfg, "profile prod", "region", &v), 1);
	assert_string_equal(v, "eu-central-1");
	free(v);
	assert_int_equal(s3_ini_get(cfg, "prod", "region", &v), 0);
	assert_null(v);
	assert_int_equal(s3_ini_get("/nonexistent/x", "default", "region", &v), 0);

	unlink(cred);
	unlink(cfg);
	unlink(other);
	rmdir(dir);
}

static void describe_errors(void **state)
{
	char buf[256];
	static const char sig[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code>"
				  "<Message>The request signature we calculated does not match</Message>"
				  "<StringToSign>AWS4-HMAC-SHA256 secret-ish</StringToSign></Error>";
	s3_describe_error(403, sig, sizeof(sig) - 1, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP 403 SignatureDoesNotMatch: the secret access key"));
	assert_null(strstr(buf, "secret-ish"));
	static const char skew[] = "<Error><Code>RequestTimeTooSkewed</Code></Error>";
	s3_describe_error(403, skew, sizeof(skew) - 1, buf, sizeof(buf));
	assert_non_null(strstr(buf, "clock"));
	static const char odd[] = "<Error><Code>SomethingNew</Code></Error>";
	assert_string_equal(s3_describe_error(409, odd, sizeof(odd) - 1, buf, sizeof(buf)), "HTTP 409 SomethingNew");
	assert_string_equal(s3_describe_error(404, NULL, 0, buf, sizeof(buf)), "HTTP 404: check the bucket and key");
	/* a body cut inside the code, or not XML: no code read past its end */
	static const char cut[] = "<Error><Code>NoSuchK";
	assert_string_equal(s3_describe_error(500, cut, sizeof(cut) - 1, buf, sizeof(buf)), "HTTP 500");
	assert_string_equal(s3_describe_error(403, "<Code>Access Denied</Code>", 26, buf, sizeof(buf)),
			    "HTTP 403: check the credentials, the policy and the clock");
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	return rmdir(tmpdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(aws_test_suite),
		cmocka_unit_test(s3_doc_examples),
		cmocka_unit_test(sha256_and_encoding),
		cmocka_unit_test(malformed_requests),
		cmocka_unit_test(url_mapping),
		cmocka_unit_test(bad_urls),
		cmocka_unit_test(sign_get),
		cmocka_unit_test(credentials_lookup),
		cmocka_unit_test(describe_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
