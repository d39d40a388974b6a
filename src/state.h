/* state.h - a session's state in a memfd, so that it outlives the engine
 * process (the keeper holds the fd; see docs/architecture.md, "The
 * keeper").
 *
 * Layout (one memfd per session, mapped MAP_SHARED):
 *
 *   struct state_hdr      magic/version, the VM's name/id/pid, protocol,
 *                         the session's counters and progress, regions
 *                         (handshake order) and where each region's page
 *                         table lives
 *   remove journal        ring of uffd REMOVE/UNMAP ranges: PENDING before
 *                         the page table is touched, APPLIED after
 *   request journal       FIFO of parsed stage-2 requests whose reply was
 *                         not completely written to the socket yet
 *   raw request bytes     bytes read from the socket and not yet parsed
 *                         into a request (two buffers, switched atomically)
 *   page tables           one byte per page (page_table.h), per region
 *
 * Writers: the remove journal only by the pump (reader_lock held); the
 * request journal and raw bytes only by the connection's socket holder
 * (sock_lock). A new engine reads them after the old one died, so every
 * entry is written before the state it describes changes. */
#ifndef PAGEIN_STATE_H
#define PAGEIN_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "counters.h"
#include "page_table.h"
#include "pagein.h"

#define STATE_MAGIC 0x31545350494e4750ull /* "PGNIPST1" little-endian */
#define STATE_VERSION 2u
#define STATE_MAX_REGIONS 64u
#define STATE_REMOVE_SLOTS 256u
#define STATE_REQUEST_SLOTS 512u
#define STATE_RAW_CAP 16384u

enum { STATE_FREE = 0, STATE_PENDING = 1, STATE_APPLIED = 2 };

struct state_region {
	uint64_t host_addr, size, offset, page_size;
	uint64_t table_off; /* its page table, from the start of the memfd */
};

struct state_remove {
	_Atomic uint64_t state; /* STATE_FREE/PENDING/APPLIED */
	uint64_t start, end;
};

struct state_request {
	_Atomic uint32_t state;  /* STATE_FREE or STATE_PENDING */
	uint32_t pad;
	uint64_t reply_end;      /* out_queued after its reply; 0 = not queued */
	int64_t vcpu;
	uint64_t offset, flags;
	char token[256];         /* JSON text, as parsed */
};

struct state_hdr {
	uint64_t magic;
	uint32_t version, hdr_size;
	uint64_t total_size;
	char name[48];
	uint32_t id;
	int32_t pid;
	uint32_t protocol;       /* number of fds: 1 mainline, 3 secret hiding */
	uint32_t nregions;
	uint64_t remove_off, request_off, raw_off;
	_Atomic uint64_t remove_next;   /* next slot sequence (pump only) */
	_Atomic uint64_t rq_head, rq_tail; /* request FIFO, sequence numbers */
	_Atomic uint64_t out_queued, out_sent; /* reply bytes, cumulative */
	_Atomic uint64_t out_sending; /* out_sent + bytes a send() in flight carries */
	/* raw bytes: buffer index (bit 40), start (bits 20..39), end (0..19) */
	_Atomic uint64_t raw_word;
	_Atomic uint32_t sock_eof;
	/* bytes at the end of the raw buffer that were peeked (MSG_PEEK) and
	 * maybe not yet consumed from the socket: a recvmsg() the SIGKILL
	 * interrupts completes in the kernel and its bytes are lost to user
	 * space, so they are journalled before they are consumed */
	_Atomic uint32_t peeked;
	/* The session's counters and progress (session.h points at them):
	 * a new engine goes on counting, and "complete" keeps its time. */
	struct session_counters counters;
	struct page_progress progress;
	uint64_t reserved[8];    /* zero: room for new fields (a new version
				  * may use them without moving the rest) */
	struct state_region regions[STATE_MAX_REGIONS];
};

struct kstate {
	int fd;                 /* the memfd (-1 once handed to the keeper) */
	struct state_hdr *hdr;
	size_t size;
	struct state_remove *rm;
	struct state_request *rq;
	char *raw[2];
};

/* A new state for a session about to start: regions in handshake order. */
int kstate_create(struct kstate **out, const char *name, unsigned id, int pid,
		  unsigned protocol, const struct pagein_region *regions,
		  size_t nregions);
/* Maps an existing state memfd (the keeper's); takes fd. Checks the header
 * against the memfd's size. */
int kstate_open(struct kstate **out, int fd, struct pagein_error *err);
void kstate_free(struct kstate *k);
/* Page table of region i (handshake order). */
static inline _Atomic uint8_t *kstate_table(struct kstate *k, size_t i)
{
	return (_Atomic uint8_t *)((char *)k->hdr + k->hdr->regions[i].table_off);
}

/* Remove journal (the pump): begin returns the slot to pass to end. */
struct state_remove *kstate_remove_begin(struct kstate *k, uint64_t start, uint64_t end);
void kstate_remove_end(struct state_remove *e);

/* Request journal (the socket holder). */
struct fault_request;
struct state_request *kstate_request_push(struct kstate *k, const struct fault_request *rq);
void kstate_request_queued(struct kstate *k, struct state_request *e, size_t reply_len);
void kstate_sent(struct kstate *k, size_t n);
/* Before send(): n bytes go out now. A SIGKILL lets a send() already in
 * the kernel complete, so after a crash they count as sent. */
void kstate_sending(struct kstate *k, size_t n);
/* Adoption: the bytes of a send() in flight at the crash count as sent;
 * requests whose replies went are forgotten. */
void kstate_recover_sent(struct kstate *k);
void kstate_raw_append(struct kstate *k, const char *buf, size_t n);
void kstate_raw_consume(struct kstate *k, size_t n);
/* The last n raw bytes were peeked, not consumed yet (0: consumed). */
void kstate_peeked(struct kstate *k, size_t n);
/* Adoption: the peeked bytes are still in the socket if it starts with
 * them (sock: peeked again now): then they are dropped from raw. */
void kstate_recover_peeked(struct kstate *k, const char *sock_head, size_t len);
/* The raw bytes not yet parsed (points into the map; *len may be 0). */
const char *kstate_raw(struct kstate *k, size_t *len);

#endif
