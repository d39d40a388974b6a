/* stage2.h - the VMM's side of the socket after the handshake.
 *
 * Secret-hiding: vCPUs send stage-2 fault requests
 * {"vcpu":ID,"offset":OFF,"flags":16,"token":null} and wait for the
 * handler's reply; one reader thread parses the concatenated JSON replies
 * (an object may span reads, several may come in one read) and wakes the
 * vCPU they name. Mainline: nothing is expected from the handler; the reader
 * only notices the handler closing the connection.
 *
 * Either way the handler closing the connection while the workload runs is
 * fatal (exit 1): the VMM keeps its socket open, so a close means the handler
 * gave up, and the faults it left unserved would never complete. (A run
 * that closes its socket after the handshake has no reader at all.) */
#ifndef VMMSIM_STAGE2_H
#define VMMSIM_STAGE2_H

#include <stdbool.h>
#include <stdint.h>

struct stage2;

struct stage2_config {
	int sock;
	bool secret_hiding;  /* parse replies; false = mainline */
	unsigned nvcpus;     /* valid vcpu ids are 0..nvcpus-1 */
	uint64_t page_size;  /* every reply's len must equal it */
	bool has_bad;        /* a --bad-request was sent at bad_offset: */
	uint64_t bad_offset; /* replies for that offset are ignored */
};

/* Starts the reader thread. Prints why and returns NULL on failure. */
struct stage2 *stage2_start(const struct stage2_config *c);

/* Sends vCPU `vcpu`'s request for the page at memfd offset `offset` and
 * blocks until the matching reply (exits 1 on a wrong reply). */
void stage2_request(struct stage2 *s, unsigned vcpu, uint64_t offset);

/* Sends a request nobody waits for (--bad-request). */
void stage2_send_bad(struct stage2 *s, uint64_t offset);

/* From now on the handler closing the connection is not an error. */
void stage2_set_closing(struct stage2 *s);

/* Counters for the report. */
uint64_t stage2_ignored_replies(struct stage2 *s);
uint64_t stage2_zero_replies(struct stage2 *s);

/* Stops and joins the reader and frees s (the socket stays open). */
void stage2_stop(struct stage2 *s);

/* --reset-socket, once the reader is stopped: closes sock with a reply
 * left unread, which the handler sees as ECONNRESET. */
void stage2_close_with_reset(int sock);

#endif
