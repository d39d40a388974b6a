/* protocol.c - Firecracker handshake and fault-request stream, with json-c.
 *
 * json-c's tokener is incremental (a value split over reads resumes where
 * it stopped), reports where a value ended (the request stream has no
 * delimiters) and bounds nesting depth (a nesting bomb fails fast). */
#include "protocol.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

struct json_decoder {
	struct json_tokener *tok;
	size_t max_value;
	size_t pending; /* bytes fed into the value under way */
};

struct json_decoder *json_decoder_new(size_t max_value_bytes)
{
	struct json_decoder *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->tok = json_tokener_new_ex(PROTOCOL_MAX_DEPTH);
	if (!d->tok) {
		free(d);
		return NULL;
	}
	json_tokener_set_flags(d->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS);
	d->max_value = max_value_bytes;
	return d;
}

void json_decoder_free(struct json_decoder *d)
{
	if (!d)
		return;
	json_tokener_free(d->tok);
	free(d);
}

/* Skips whitespace between values so that it never counts as a value. */
static size_t skip_ws(const char *buf, size_t len)
{
	size_t i = 0;
	while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t'))
		i++;
	return i;
}

static enum decode_result decode(struct json_decoder *d, const char *buf,
				 size_t len, size_t *used, json_object **out,
				 struct pagein_error *err)
{
	*out = NULL;
	size_t ws = d->pending ? 0 : skip_ws(buf, len);
	*used = ws;
	if (ws == len)
		return DECODE_MORE;
	/* json-c takes an int length; feed at most what a value may hold. */
	size_t room = d->max_value - d->pending + 1;
	size_t n = len - ws < room ? len - ws : room;
	json_object *o = json_tokener_parse_ex(d->tok, buf + ws, (int)n);
	enum json_tokener_error e = json_tokener_get_error(d->tok);
	if (o) {
		*used = ws + json_tokener_get_parse_end(d->tok);
		d->pending = 0;
		json_tokener_reset(d->tok);
		*out = o;
		return DECODE_VALUE;
	}
	if (e == json_tokener_continue) {
		d->pending += n;
		*used = ws + n;
		if (d->pending > d->max_value) {
			pagein_fail(err, EMSGSIZE, "JSON value longer than %zu bytes", d->max_value);
			return DECODE_ERROR;
		}
		return DECODE_MORE;
	}
	pagein_fail(err, EPROTO, "malformed JSON near byte %zu: %s",
		    d->pending + json_tokener_get_parse_end(d->tok),
		    json_tokener_error_desc(e));
	return DECODE_ERROR;
}

/* Reads a non-negative integer field. Returns 1 if present, 0 if absent,
 * -1 (err filled) if of the wrong type or negative. */
static int get_u64(json_object *obj, const char *what, size_t idx,
		   const char *key, uint64_t *v, struct pagein_error *err)
{
	json_object *f;
	if (!json_object_object_get_ex(obj, key, &f) || json_object_is_type(f, json_type_null))
		return 0;
	if (!json_object_is_type(f, json_type_int)) {
		pagein_fail(err, EINVAL, "%s %zu: %s is %s, not an integer", what, idx, key,
			    json_object_to_json_string_ext(f, JSON_C_TO_STRING_PLAIN));
		return -1;
	}
	if (json_object_get_int64(f) < 0) {
		pagein_fail(err, EINVAL, "%s %zu: %s %" PRId64 " is negative", what, idx,
			    key, json_object_get_int64(f));
		return -1;
	}
	*v = json_object_get_uint64(f);
	return 1;
}

static int parse_region(json_object *o, size_t i, struct pagein_region *r,
			struct pagein_error *err)
{
	if (!json_object_is_type(o, json_type_object))
		return pagein_fail(err, EINVAL, "region %zu is not a JSON object", i);
	static const char *required[] = {"base_host_virt_addr", "size", "offset"};
	uint64_t *dst[] = {&r->host_addr, &r->size, &r->offset};
	for (size_t k = 0; k < 3; k++) {
		int g = get_u64(o, "region", i, required[k], dst[k], err);
		if (g < 0)
			return -EINVAL;
		if (g == 0)
			return pagein_fail(err, EINVAL, "region %zu: missing field %s", i, required[k]);
	}
	/* page_size (v1.12+) and page_size_kib (v1.7+; bytes despite the
	 * name); neither (v1.1-v1.6) means 4 KiB. */
	uint64_t ps = 0, kib = 0;
	int has_ps = get_u64(o, "region", i, "page_size", &ps, err);
	int has_kib = get_u64(o, "region", i, "page_size_kib", &kib, err);
	if (has_ps < 0 || has_kib < 0)
		return -EINVAL;
	if (has_ps && has_kib && ps != kib)
		return pagein_fail(err, EINVAL, "region %zu: page_size %" PRIu64 " and page_size_kib %" PRIu64 " disagree",
				   i, ps, kib);
	r->page_size = has_ps ? ps : has_kib ? kib : 4096;
	return 0;
}

static int parse_handshake(json_object *v, struct handshake *hs,
			   struct pagein_error *err)
{
	if (!json_object_is_type(v, json_type_array))
		return pagein_fail(err, EINVAL, "handshake is a JSON %s, not an array of regions",
				   json_type_to_name(json_object_get_type(v)));
	size_t n = json_object_array_length(v);
	if (n == 0)
		return pagein_fail(err, EINVAL, "handshake has no regions");
	hs->regions = calloc(n, sizeof(*hs->regions));
	if (!hs->regions)
		return -ENOMEM;
	hs->nregions = n;
	for (size_t i = 0; i < n; i++) {
		int r = parse_region(json_object_array_get_idx(v, i), i, &hs->regions[i], err);
		if (r < 0) {
			handshake_fini(hs);
			return r;
		}
	}
	return 0;
}

enum decode_result protocol_feed_handshake(struct json_decoder *d,
					   const char *buf, size_t len,
					   size_t *used, struct handshake *hs,
					   struct pagein_error *err)
{
	memset(hs, 0, sizeof(*hs));
	json_object *v;
	enum decode_result r = decode(d, buf, len, used, &v, err);
	if (r != DECODE_VALUE)
		return r;
	int e = parse_handshake(v, hs, err);
	json_object_put(v);
	return e < 0 ? DECODE_ERROR : DECODE_VALUE;
}

void handshake_fini(struct handshake *hs)
{
	free(hs->regions);
	hs->regions = NULL;
	hs->nregions = 0;
}

static int parse_request(json_object *o, struct fault_request *rq,
			 struct pagein_error *err)
{
	memset(rq, 0, sizeof(*rq));
	if (!json_object_is_type(o, json_type_object))
		return pagein_fail(err, EINVAL, "fault request is a JSON %s, not an object",
				   json_type_to_name(json_object_get_type(o)));
	json_object *f;
	if (!json_object_object_get_ex(o, "vcpu", &f) || !json_object_is_type(f, json_type_int))
		return pagein_fail(err, EINVAL, "fault request: vcpu missing or not an integer");
	rq->vcpu = json_object_get_int64(f);
	int g = get_u64(o, "fault request", 0, "offset", &rq->offset, err);
	if (g < 0)
		return -EINVAL;
	if (g == 0)
		return pagein_fail(err, EINVAL, "fault request: missing field offset");
	if (get_u64(o, "fault request", 0, "flags", &rq->flags, err) < 0)
		return -EINVAL;
	const char *tok = "null";
	if (json_object_object_get_ex(o, "token", &f))
		tok = json_object_to_json_string_ext(f, JSON_C_TO_STRING_PLAIN);
	if (strlen(tok) >= sizeof(rq->token))
		return pagein_fail(err, EINVAL, "fault request: token longer than %zu bytes",
				   sizeof(rq->token) - 1);
	strcpy(rq->token, tok);
	return 0;
}

enum decode_result protocol_feed_request(struct json_decoder *d,
					 const char *buf, size_t len,
					 size_t *used, struct fault_request *rq,
					 struct pagein_error *err)
{
	json_object *v;
	enum decode_result r = decode(d, buf, len, used, &v, err);
	if (r != DECODE_VALUE)
		return r;
	int e = parse_request(v, rq, err);
	json_object_put(v);
	return e < 0 ? DECODE_ERROR : DECODE_VALUE;
}

int protocol_format_reply(char *out, size_t cap, const struct fault_request *rq,
			  uint64_t len, bool zero, const char *error)
{
	int n = snprintf(out, cap,
			 "{\"vcpu\":%" PRId64 ",\"offset\":%" PRIu64 ",\"len\":%" PRIu64
			 ",\"flags\":%" PRIu64 ",\"token\":%s,\"zero\":%s",
			 rq->vcpu, rq->offset, len, rq->flags, rq->token,
			 zero ? "true" : "false");
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	if (error) {
		json_object *s = json_object_new_string(error);
		if (!s)
			return -ENOMEM;
		int m = snprintf(out + n, cap - (size_t)n, ",\"error\":%s",
				 json_object_to_json_string_ext(s, JSON_C_TO_STRING_PLAIN));
		json_object_put(s);
		if (m < 0 || (size_t)(n + m) >= cap)
			return -ENOSPC;
		n += m;
	}
	if ((size_t)n + 2 > cap)
		return -ENOSPC;
	out[n++] = '}';
	out[n] = '\0';
	return n;
}
