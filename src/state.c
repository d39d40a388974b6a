/* state.c - a session's state memfd (see state.h). */
#include "state.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "protocol.h"

#define ALIGN64(x) (((x) + 63) & ~(uint64_t)63)

static void layout(struct kstate *k)
{
	char *b = (char *)k->hdr;
	k->rm = (struct state_remove *)(b + k->hdr->remove_off);
	k->rq = (struct state_request *)(b + k->hdr->request_off);
	k->raw[0] = b + k->hdr->raw_off;
	k->raw[1] = k->raw[0] + STATE_RAW_CAP;
}

int kstate_create(struct kstate **out, const char *name, unsigned id, int pid,
		  unsigned protocol, const struct pagein_region *regions,
		  size_t nregions)
{
	if (nregions == 0 || nregions > STATE_MAX_REGIONS)
		return -EINVAL;
	uint64_t off = ALIGN64(sizeof(struct state_hdr));
	uint64_t remove_off = off;
	off = ALIGN64(off + STATE_REMOVE_SLOTS * sizeof(struct state_remove));
	uint64_t request_off = off;
	off = ALIGN64(off + STATE_REQUEST_SLOTS * sizeof(struct state_request));
	uint64_t raw_off = off;
	off = ALIGN64(off + 2 * STATE_RAW_CAP);
	uint64_t table_off[STATE_MAX_REGIONS];
	for (size_t i = 0; i < nregions; i++) {
		if (!regions[i].page_size || regions[i].size / regions[i].page_size > (1ull << 36))
			return -EINVAL;
		table_off[i] = off;
		off = ALIGN64(off + regions[i].size / regions[i].page_size);
	}
	int fd = memfd_create("pagein-state", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)off) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	void *m = mmap(NULL, off, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct kstate *k = calloc(1, sizeof(*k));
	if (!k) {
		munmap(m, off);
		close(fd);
		return -ENOMEM;
	}
	k->fd = fd;
	k->hdr = m;
	k->size = off;
	struct state_hdr *h = k->hdr;
	h->version = STATE_VERSION;
	h->hdr_size = sizeof(*h);
	h->total_size = off;
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->id = id;
	h->pid = pid;
	h->protocol = protocol;
	h->nregions = (uint32_t)nregions;
	h->remove_off = remove_off;
	h->request_off = request_off;
	h->raw_off = raw_off;
	for (size_t i = 0; i < nregions; i++) {
		h->regions[i].host_addr = regions[i].host_addr;
		h->regions[i].size = regions[i].size;
		h->regions[i].offset = regions[i].offset;
		h->regions[i].page_size = regions[i].page_size;
		h->regions[i].table_off = table_off[i];
	}
	atomic_thread_fence(memory_order_release);
	h->magic = STATE_MAGIC; /* last: a state is valid once it has its magic */
	layout(k);
	*out = k;
	return 0;
}

int kstate_open(struct kstate **out, int fd, struct pagein_error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct state_hdr)) {
		close(fd);
		return pagein_fail(err, EINVAL, "state memfd: too small");
	}
	size_t size = (size_t)st.st_size;
	void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		int e = errno;
		close(fd);
		return pagein_fail(err, e, "state memfd: mmap: %s", strerror(e));
	}
	struct state_hdr *h = m;
	const char *bad = NULL;
	if (h->magic != STATE_MAGIC || h->version != STATE_VERSION || h->hdr_size != sizeof(*h))
		bad = "not a pagein state of this version";
	else if (h->total_size != size || h->nregions == 0 || h->nregions > STATE_MAX_REGIONS)
		bad = "inconsistent header";
	for (uint32_t i = 0; !bad && i < h->nregions; i++) {
		const struct state_region *r = &h->regions[i];
		if (!r->page_size || r->table_off > size || r->size / r->page_size > size - r->table_off)
			bad = "a page table lies outside the memfd";
	}
	if (!bad && (h->raw_off + 2 * STATE_RAW_CAP > size ||
		     h->request_off + STATE_REQUEST_SLOTS * sizeof(struct state_request) > size ||
		     h->remove_off + STATE_REMOVE_SLOTS * sizeof(struct state_remove) > size))
		bad = "a journal lies outside the memfd";
	if (bad) {
		munmap(m, size);
		close(fd);
		return pagein_fail(err, EINVAL, "state memfd: %s", bad);
	}
	struct kstate *k = calloc(1, sizeof(*k));
	if (!k) {
		munmap(m, size);
		close(fd);
		return -ENOMEM;
	}
	k->fd = fd;
	k->hdr = h;
	k->size = size;
	layout(k);
	*out = k;
	return 0;
}

void kstate_free(struct kstate *k)
{
	if (!k)
		return;
	munmap(k->hdr, k->size);
	if (k->fd >= 0)
		close(k->fd);
	free(k);
}

/* ---- remove journal ---- */

struct state_remove *kstate_remove_begin(struct kstate *k, uint64_t start, uint64_t end)
{
	uint64_t seq = atomic_load_explicit(&k->hdr->remove_next, memory_order_relaxed);
	struct state_remove *e = &k->rm[seq % STATE_REMOVE_SLOTS];
	atomic_store_explicit(&e->state, STATE_FREE, memory_order_relaxed);
	e->start = start;
	e->end = end;
	atomic_store_explicit(&e->state, STATE_PENDING, memory_order_release);
	atomic_store_explicit(&k->hdr->remove_next, seq + 1, memory_order_release);
	return e;
}

void kstate_remove_end(struct state_remove *e)
{
	if (e)
		atomic_store_explicit(&e->state, STATE_APPLIED, memory_order_release);
}

/* ---- request journal ---- */

struct state_request *kstate_request_push(struct kstate *k, const struct fault_request *rq)
{
	struct state_hdr *h = k->hdr;
	uint64_t tail = atomic_load(&h->rq_tail), head = atomic_load(&h->rq_head);
	if (tail - head >= STATE_REQUEST_SLOTS)
		return NULL; /* a VMM that queues hundreds of replies: not journalled */
	struct state_request *e = &k->rq[tail % STATE_REQUEST_SLOTS];
	e->reply_end = 0;
	e->vcpu = rq->vcpu;
	e->offset = rq->offset;
	e->flags = rq->flags;
	memcpy(e->token, rq->token, sizeof(e->token));
	e->token[sizeof(e->token) - 1] = 0;
	atomic_store_explicit(&e->state, STATE_PENDING, memory_order_release);
	atomic_store_explicit(&h->rq_tail, tail + 1, memory_order_release);
	return e;
}

static void pop_sent(struct kstate *k)
{
	struct state_hdr *h = k->hdr;
	uint64_t sent = atomic_load(&h->out_sent);
	uint64_t head = atomic_load(&h->rq_head), tail = atomic_load(&h->rq_tail);
	while (head < tail) {
		struct state_request *e = &k->rq[head % STATE_REQUEST_SLOTS];
		if (!e->reply_end || e->reply_end > sent)
			break;
		atomic_store_explicit(&e->state, STATE_FREE, memory_order_release);
		atomic_store_explicit(&h->rq_head, ++head, memory_order_release);
	}
}

void kstate_request_queued(struct kstate *k, struct state_request *e, size_t reply_len)
{
	struct state_hdr *h = k->hdr;
	uint64_t end = atomic_load(&h->out_queued) + reply_len;
	atomic_store(&h->out_queued, end);
	if (e)
		e->reply_end = end;
}

void kstate_sent(struct kstate *k, size_t n)
{
	uint64_t sent = atomic_fetch_add(&k->hdr->out_sent, n) + n;
	atomic_store(&k->hdr->out_sending, sent); /* nothing in flight */
	if (n)
		pop_sent(k);
}

void kstate_sending(struct kstate *k, size_t n)
{
	atomic_store(&k->hdr->out_sending, atomic_load(&k->hdr->out_sent) + n);
}

void kstate_recover_sent(struct kstate *k)
{
	uint64_t sending = atomic_load(&k->hdr->out_sending);
	if (sending > atomic_load(&k->hdr->out_sent) && sending <= atomic_load(&k->hdr->out_queued))
		atomic_store(&k->hdr->out_sent, sending);
	pop_sent(k);
}

#define RAW_IDX(w) ((unsigned)((w) >> 40) & 1u)
#define RAW_START(w) ((size_t)((w) >> 20) & 0xfffffu)
#define RAW_END(w) ((size_t)(w) & 0xfffffu)
#define RAW_WORD(i, s, e) (((uint64_t)(i) << 40) | ((uint64_t)(s) << 20) | (uint64_t)(e))

void kstate_raw_append(struct kstate *k, const char *buf, size_t n)
{
	uint64_t w = atomic_load(&k->hdr->raw_word);
	unsigned i = RAW_IDX(w);
	size_t s = RAW_START(w), e = RAW_END(w);
	if (e + n <= STATE_RAW_CAP) { /* past the live bytes: nobody reads there */
		memcpy(k->raw[i] + e, buf, n);
		atomic_store_explicit(&k->hdr->raw_word, RAW_WORD(i, s, e + n), memory_order_release);
		return;
	}
	size_t live = e - s;
	if (live + n > STATE_RAW_CAP) { /* cannot happen: a request is at most 4 KiB */
		atomic_store(&k->hdr->raw_word, RAW_WORD(i, 0, 0));
		return;
	}
	memcpy(k->raw[!i], k->raw[i] + s, live);
	memcpy(k->raw[!i] + live, buf, n);
	atomic_store_explicit(&k->hdr->raw_word, RAW_WORD(!i, 0, live + n), memory_order_release);
}

void kstate_raw_consume(struct kstate *k, size_t n)
{
	uint64_t w = atomic_load(&k->hdr->raw_word);
	size_t s = RAW_START(w) + n, e = RAW_END(w);
	if (s >= e)
		s = e = 0;
	atomic_store_explicit(&k->hdr->raw_word, RAW_WORD(RAW_IDX(w), s, e), memory_order_release);
}

const char *kstate_raw(struct kstate *k, size_t *len)
{
	uint64_t w = atomic_load(&k->hdr->raw_word);
	size_t s = RAW_START(w), e = RAW_END(w);
	if (e > STATE_RAW_CAP || s > e)
		s = e = 0;
	*len = e - s;
	return k->raw[RAW_IDX(w)] + s;
}

void kstate_peeked(struct kstate *k, size_t n)
{
	atomic_store_explicit(&k->hdr->peeked, (uint32_t)n, memory_order_release);
}

void kstate_recover_peeked(struct kstate *k, const char *sock_head, size_t len)
{
	size_t n = atomic_load(&k->hdr->peeked);
	atomic_store(&k->hdr->peeked, 0);
	uint64_t w = atomic_load(&k->hdr->raw_word);
	size_t s = RAW_START(w), e = RAW_END(w);
	if (!n || n > e - s || len < n || memcmp(k->raw[RAW_IDX(w)] + e - n, sock_head, n))
		return; /* consumed: the raw bytes are all there is */
	e -= n;
	if (s >= e)
		s = e = 0;
	atomic_store(&k->hdr->raw_word, RAW_WORD(RAW_IDX(w), s, e));
}
