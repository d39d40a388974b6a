/* s3.c - placeholder until the SigV4 signer lands: every call fails. */
#include "s3.h"

#include <errno.h>
#include <string.h>

#include "error.h"

int s3_is_url(const char *url)
{
	return url && strncmp(url, "s3://", 5) == 0;
}

int s3_target_open(const char *s3url, const char *endpoint,
		   struct s3_target **out, struct pagein_error *err)
{
	(void)endpoint;
	*out = NULL;
	return pagein_fail(err, ENOSYS, "%s: s3:// sources are not built yet", s3url);
}

void s3_target_free(struct s3_target *t) { (void)t; }
const char *s3_target_url(const struct s3_target *t) { (void)t; return NULL; }

int s3_sign_get(const struct s3_target *t, const char *range, time_t now,
		char ***headers)
{
	(void)t; (void)range; (void)now;
	*headers = NULL;
	return -ENOSYS;
}

void s3_headers_free(char **headers) { (void)headers; }
