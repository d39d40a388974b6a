/* fuzz_protocol.c - libFuzzer target for Firecracker's JSON as pagein reads
 * it: the input is fed as a handshake in two pieces (split where its first
 * byte says), and whatever follows the handshake as a fault-request
 * stream, each request answered with a formatted reply. Nothing may crash,
 * leak or read out of bounds, whatever the bytes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "protocol.h"

static void feed_requests(const char *p, size_t len)
{
	struct json_decoder *d = json_decoder_new(PROTOCOL_MAX_REQUEST);
	while (len) {
		size_t used;
		struct fault_request rq;
		struct pagein_error err;
		enum decode_result r = protocol_feed_request(d, p, len, &used, &rq, &err);
		if (r == DECODE_ERROR)
			break;
		if (r == DECODE_VALUE) {
			char reply[768];
			protocol_format_reply(reply, sizeof(reply), &rq, 4096, false, NULL);
			protocol_format_reply(reply, sizeof(reply), &rq, 0, false, err.msg);
		}
		if (used == 0)
			break;
		p += used;
		len -= used;
	}
	json_decoder_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t cut = data[0] % (size);
	const char *p = (const char *)data + 1;
	size_t len = size - 1;
	if (cut > len)
		cut = len;
	struct json_decoder *d = json_decoder_new(PROTOCOL_MAX_HANDSHAKE);
	struct handshake hs;
	struct pagein_error err;
	size_t used = 0;
	enum decode_result r = protocol_feed_handshake(d, p, cut, &used, &hs, &err);
	size_t off = used;
	if (r == DECODE_MORE) {
		r = protocol_feed_handshake(d, p + cut, len - cut, &used, &hs, &err);
		off = cut + used;
	}
	if (r == DECODE_VALUE) {
		handshake_fini(&hs);
		feed_requests(p + off, len - off);
	}
	json_decoder_free(d);
	return 0;
}
