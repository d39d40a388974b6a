/* unit_protocol.c - Firecracker handshake and fault-request stream parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "protocol.h"

/* Feeds s in one go; returns the result and fills hs/err. */
static enum decode_result feed(const char *s, struct handshake *hs,
			       struct pagein_error *err, size_t *used)
{
	struct json_decoder *d = json_decoder_new(PROTOCOL_MAX_HANDSHAKE);
	size_t u;
	enum decode_result r = protocol_feed_handshake(d, s, strlen(s), used ? used : &u, hs, err);
	json_decoder_free(d);
	return r;
}

static void fc_v1_1_defaults_to_4k(void **state)
{
	struct handshake hs;
	struct pagein_error err = {{0}};
	assert_int_equal(feed("[{\"base_host_virt_addr\":140187504033792,\"size\":134217728,\"offset\":0}]",
			      &hs, &err, NULL), DECODE_VALUE);
	assert_int_equal(hs.nregions, 1);
	assert_true(hs.regions[0].host_addr == 140187504033792ull);
	assert_int_equal(hs.regions[0].size, 134217728);
	assert_int_equal(hs.regions[0].page_size, 4096);
	handshake_fini(&hs);
}

static void fc_v1_7_page_size_kib_is_bytes(void **state)
{
	struct handshake hs;
	struct pagein_error err = {{0}};
	assert_int_equal(feed("[{\"base_host_virt_addr\":4096,\"size\":2097152,\"offset\":0,\"page_size_kib\":2097152}]",
			      &hs, &err, NULL), DECODE_VALUE);
	assert_int_equal(hs.regions[0].page_size, 2097152);
	handshake_fini(&hs);
}

static void fc_v1_12_two_regions_unknown_fields(void **state)
{
	struct handshake hs;
	struct pagein_error err = {{0}};
	const char *s = "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0,\"page_size\":4096,\"page_size_kib\":4096,\"gpa_start\":0,\"is_guest_memfd\":false,\"extra\":{\"a\":[1,2]}},"
			" {\"base_host_virt_addr\":1073741824,\"size\":4096,\"offset\":8192,\"page_size\":4096,\"page_size_kib\":4096}]";
	assert_int_equal(feed(s, &hs, &err, NULL), DECODE_VALUE);
	assert_int_equal(hs.nregions, 2);
	assert_int_equal(hs.regions[1].offset, 8192);
	handshake_fini(&hs);
}

static void split_anywhere(void **state)
{
	const char *s = "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0,\"page_size\":4096}]";
	size_t len = strlen(s);
	for (size_t cut = 1; cut < len; cut++) {
		struct json_decoder *d = json_decoder_new(PROTOCOL_MAX_HANDSHAKE);
		struct handshake hs;
		struct pagein_error err = {{0}};
		size_t used;
		assert_int_equal(protocol_feed_handshake(d, s, cut, &used, &hs, &err), DECODE_MORE);
		assert_int_equal(used, cut);
		assert_int_equal(protocol_feed_handshake(d, s + cut, len - cut, &used, &hs, &err), DECODE_VALUE);
		assert_int_equal(used, len - cut);
		assert_int_equal(hs.regions[0].size, 8192);
		handshake_fini(&hs);
		json_decoder_free(d);
	}
}

static void trailing_bytes_are_left_for_the_stream(void **state)
{
	struct handshake hs;
	struct pagein_error err = {{0}};
	size_t used;
	const char *s = "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0}]{\"vcpu\":0";
	assert_int_equal(feed(s, &hs, &err, &used), DECODE_VALUE);
	assert_int_equal(used, strlen(s) - strlen("{\"vcpu\":0"));
	handshake_fini(&hs);
}

/* Each bad handshake is refused with a message naming what is wrong. */
static void bad_handshakes_name_the_field(void **state)
{
	static const struct {
		const char *json, *needle;
	} cases[] = {
		{"{\"a\":1}", "not an array"},
		{"[]", "no regions"},
		{"[1]", "region 0 is not a JSON object"},
		{"[{\"size\":4096,\"offset\":0}]", "missing field base_host_virt_addr"},
		{"[{\"base_host_virt_addr\":0,\"offset\":0}]", "missing field size"},
		{"[{\"base_host_virt_addr\":0,\"size\":4096}]", "missing field offset"},
		{"[{\"base_host_virt_addr\":0,\"size\":\"4096\",\"offset\":0}]", "size is \"4096\", not an integer"},
		{"[{\"base_host_virt_addr\":0,\"size\":4096.5,\"offset\":0}]", "not an integer"},
		{"[{\"base_host_virt_addr\":0,\"size\":-4096,\"offset\":0}]", "size -4096 is negative"},
		{"[{\"base_host_virt_addr\":0,\"size\":4096,\"offset\":0,\"page_size\":4096,\"page_size_kib\":2097152}]", "disagree"},
		{"[{\"base_host_virt_addr\":0,\"size\":4096,\"offset\":0},", NULL}, /* truncated: more */
		{"[{\"base_host_virt_addr\":0 \"size\":4096}]", "malformed JSON"},
		{"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "malformed JSON"},
		{"\x01\x02garbage", "malformed JSON"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct handshake hs;
		struct pagein_error err = {{0}};
		enum decode_result r = feed(cases[i].json, &hs, &err, NULL);
		if (!cases[i].needle) {
			assert_int_equal(r, DECODE_MORE);
			continue;
		}
		if (r != DECODE_ERROR || !strstr(err.msg, cases[i].needle)) {
			fprintf(stderr, "case %zu (%s): got %d '%s', want '%s'\n", i,
				cases[i].json, r, err.msg, cases[i].needle);
			fail();
		}
	}
}

static void oversized_value_is_refused(void **state)
{
	struct json_decoder *d = json_decoder_new(64);
	char buf[200];
	memset(buf, ' ', sizeof(buf));
	buf[0] = '[';
	buf[1] = '"';
	struct handshake hs;
	struct pagein_error err = {{0}};
	size_t used;
	assert_int_equal(protocol_feed_handshake(d, buf, sizeof(buf), &used, &hs, &err), DECODE_ERROR);
	assert_non_null(strstr(err.msg, "longer than 64"));
	json_decoder_free(d);
}

static void request_stream_concatenated_and_split(void **state)
{
	const char *s = "{\"vcpu\":0,\"offset\":1052672,\"flags\":16,\"token\":null}"
			"{\"vcpu\":3,\"offset\":4096,\"flags\":16,\"token\":{\"id\":7}}";
	size_t len = strlen(s);
	for (size_t cut = 1; cut < len; cut += 7) {
		struct json_decoder *d = json_decoder_new(PROTOCOL_MAX_REQUEST);
		struct fault_request rq[2];
		int got = 0;
		const char *p = s;
		size_t left = cut;
		int round = 0;
		while (round < 2) {
			struct pagein_error err = {{0}};
			size_t used;
			enum decode_result r = protocol_feed_request(d, p, left, &used, &rq[got], &err);
			assert_int_not_equal(r, DECODE_ERROR);
			p += used;
			left -= used;
			if (r == DECODE_VALUE)
				got++;
			if (left == 0 || r == DECODE_MORE) {
				if (round == 0) {
					left = (size_t)(s + len - p);
					round = 1;
				} else if (left == 0) {
					break;
				}
			}
		}
		assert_int_equal(got, 2);
		assert_int_equal(rq[0].vcpu, 0);
		assert_int_equal(rq[0].offset, 1052672);
		assert_int_equal(rq[0].flags, 16);
		assert_string_equal(rq[0].token, "null");
		assert_int_equal(rq[1].vcpu, 3);
		assert_string_equal(rq[1].token, "{\"id\":7}");
		json_decoder_free(d);
	}
}

static void bad_requests(void **state)
{
	static const char *cases[] = {
		"{\"offset\":4096}", "{\"vcpu\":0}", "{\"vcpu\":0,\"offset\":-1}", "[1]",
		"{\"vcpu\":\"x\",\"offset\":0}",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_decoder *d = json_decoder_new(PROTOCOL_MAX_REQUEST);
		struct fault_request rq;
		struct pagein_error err = {{0}};
		size_t used;
		assert_int_equal(protocol_feed_request(d, cases[i], strlen(cases[i]), &used, &rq, &err),
				 DECODE_ERROR);
		assert_true(err.msg[0] != '\0');
		json_decoder_free(d);
	}
}

static void reply_echoes_request(void **state)
{
	struct fault_request rq = {.vcpu = 2, .offset = 1052672, .flags = 16};
	strcpy(rq.token, "null");
	char out[512];
	int n = protocol_format_reply(out, sizeof(out), &rq, 4096, false, NULL);
	assert_true(n > 0);
	assert_string_equal(out, "{\"vcpu\":2,\"offset\":1052672,\"len\":4096,\"flags\":16,\"token\":null,\"zero\":false}");
	n = protocol_format_reply(out, sizeof(out), &rq, 0, false, "bad \"offset\"");
	assert_true(n > 0);
	assert_non_null(strstr(out, "\"error\":\"bad \\\"offset\\\"\""));
	assert_int_equal(protocol_format_reply(out, 10, &rq, 4096, false, NULL), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fc_v1_1_defaults_to_4k),
		cmocka_unit_test(fc_v1_7_page_size_kib_is_bytes),
		cmocka_unit_test(fc_v1_12_two_regions_unknown_fields),
		cmocka_unit_test(split_anywhere),
		cmocka_unit_test(trailing_bytes_are_left_for_the_stream),
		cmocka_unit_test(bad_handshakes_name_the_field),
		cmocka_unit_test(oversized_value_is_refused),
		cmocka_unit_test(request_stream_concatenated_and_split),
		cmocka_unit_test(bad_requests),
		cmocka_unit_test(reply_echoes_request),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
