/* protocol.h - Firecracker's wire formats; the only code that knows JSON.
 *
 * Handshake: a bare JSON array of regions (no length, no delimiter), which
 * may arrive split over several reads. Secret-hiding generation A then
 * carries a stream of concatenated JSON objects: FaultRequests in,
 * FaultReplies out. Both decoders are incremental: feed bytes as they
 * come. */
#ifndef PAGEIN_PROTOCOL_H
#define PAGEIN_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagein.h"

/* A JSON value this deep is an attack, not a handshake: the array, its
 * region objects, and room for a nested unknown field. */
#define PROTOCOL_MAX_DEPTH 8
/* No handshake or request is this large; stop buffering past it. */
#define PROTOCOL_MAX_HANDSHAKE (1u << 20)
#define PROTOCOL_MAX_REQUEST 4096u

struct json_decoder;

/* One incremental decoder of a stream of JSON values. */
struct json_decoder *json_decoder_new(size_t max_value_bytes);
void json_decoder_free(struct json_decoder *d);

enum decode_result {
	DECODE_MORE = 0, /* all input consumed, value incomplete */
	DECODE_VALUE,    /* one value complete; *used bytes consumed */
	DECODE_ERROR,    /* malformed; err says where */
};

/* Region list from a handshake payload. */
struct handshake {
	struct pagein_region *regions;
	size_t nregions;
};

/* Feeds handshake bytes. On DECODE_VALUE the regions are parsed and
 * checked for shape (types, required fields, page size fields agreeing);
 * *used says how many bytes of buf belonged to the handshake (the rest
 * start the request stream). Numeric sanity is pagein_session_new's. */
enum decode_result protocol_feed_handshake(struct json_decoder *d,
					   const char *buf, size_t len,
					   size_t *used, struct handshake *hs,
					   struct pagein_error *err);
void handshake_fini(struct handshake *hs);

/* A stage-2 fault request; token is kept verbatim (JSON text). */
struct fault_request {
	int64_t vcpu;
	uint64_t offset;
	uint64_t flags;
	char token[256];
};

/* Feeds request-stream bytes; returns DECODE_VALUE with one request. */
enum decode_result protocol_feed_request(struct json_decoder *d,
					 const char *buf, size_t len,
					 size_t *used, struct fault_request *rq,
					 struct pagein_error *err);

/* Formats a FaultReply; error != NULL adds an "error" field (a refused
 * request: len 0). Returns the length, or -ENOSPC. */
int protocol_format_reply(char *out, size_t cap, const struct fault_request *rq,
			  uint64_t len, bool zero, const char *error);

#endif
