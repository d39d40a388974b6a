/* unit_state.c - a session's state memfd (src/state.c): what a new engine
 * finds in it after the old one died at any point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "pagein.h"
#include "protocol.h"
#include "state.h"

static const struct pagein_region regions[2] = {
	{.host_addr = 0x100000000, .size = 1 << 20, .offset = 0, .page_size = 4096},
	{.host_addr = 0x200000000, .size = 4 << 20, .offset = 1 << 20, .page_size = 2 << 20},
};

/* The "new engine": the same memfd mapped again. */
static struct kstate *reopen(struct kstate *k)
{
	struct kstate *n;
	struct pagein_error err = {{0}};
	assert_int_equal(kstate_open(&n, dup(k->fd), &err), 0);
	return n;
}

static void layout_survives(void **state)
{
	struct kstate *k;
	assert_int_equal(kstate_create(&k, "vm7 pid 42", 7, 42, 3, regions, 2), 0);
	atomic_store(&kstate_table(k, 0)[255], 2);
	atomic_store(&kstate_table(k, 1)[1], 3);
	struct kstate *n = reopen(k);
	assert_int_equal(n->hdr->id, 7);
	assert_int_equal(n->hdr->pid, 42);
	assert_int_equal(n->hdr->protocol, 3);
	assert_string_equal(n->hdr->name, "vm7 pid 42");
	assert_int_equal(n->hdr->nregions, 2);
	assert_int_equal(n->hdr->regions[1].page_size, 2 << 20);
	assert_int_equal(atomic_load(&kstate_table(n, 0)[255]), 2);
	assert_int_equal(atomic_load(&kstate_table(n, 1)[1]), 3);
	kstate_free(n);
	kstate_free(k);
}

static void garbage_refused(void **state)
{
	struct kstate *k;
	assert_int_equal(kstate_create(&k, "vm", 1, 1, 1, regions, 1), 0);
	k->hdr->regions[0].table_off = k->size; /* a table past the end */
	struct kstate *n;
	struct pagein_error err = {{0}};
	assert_int_equal(kstate_open(&n, dup(k->fd), &err), -EINVAL);
	assert_non_null(strstr(err.msg, "outside"));
	k->hdr->magic = 0;
	assert_int_equal(kstate_open(&n, dup(k->fd), &err), -EINVAL);
	kstate_free(k);
}

static void remove_pending_until_applied(void **state)
{
	struct kstate *k;
	assert_int_equal(kstate_create(&k, "vm", 1, 1, 1, regions, 1), 0);
	struct state_remove *a = kstate_remove_begin(k, 0x1000, 0x3000);
	kstate_remove_end(a);
	struct state_remove *b = kstate_remove_begin(k, 0x5000, 0x6000);
	(void)b; /* the engine dies here */
	struct kstate *n = reopen(k);
	int pending = 0;
	for (unsigned i = 0; i < STATE_REMOVE_SLOTS; i++)
		if (atomic_load(&n->rm[i].state) == STATE_PENDING) {
			pending++;
			assert_int_equal(n->rm[i].start, 0x5000);
			assert_int_equal(n->rm[i].end, 0x6000);
		}
	assert_int_equal(pending, 1);
	kstate_free(n);
	kstate_free(k);
}

static struct fault_request rq(uint64_t off)
{
	struct fault_request r = {.vcpu = 1, .offset = off, .flags = 16};
	strcpy(r.token, "null");
	return r;
}

static void requests_pending_until_sent(void **state)
{
	struct kstate *k;
	assert_int_equal(kstate_create(&k, "vm", 1, 1, 3, regions, 1), 0);
	struct fault_request a = rq(0x1000), b = rq(0x2000);
	struct state_request *ea = kstate_request_push(k, &a);
	kstate_request_queued(k, ea, 100);
	struct state_request *eb = kstate_request_push(k, &b);
	kstate_request_queued(k, eb, 50);
	kstate_sending(k, 150);
	kstate_sent(k, 120); /* a's reply went, b's did not completely */
	assert_int_equal(k->hdr->rq_tail - k->hdr->rq_head, 1);
	assert_int_equal(k->rq[k->hdr->rq_head % STATE_REQUEST_SLOTS].offset, 0x2000);
	/* A send() of the rest in flight at the crash counts as sent. */
	kstate_sending(k, 30);
	struct kstate *n = reopen(k);
	kstate_recover_sent(n);
	assert_int_equal(n->hdr->rq_tail - n->hdr->rq_head, 0);
	kstate_free(n);
	kstate_free(k);
}

static void raw_bytes_follow_parsing(void **state)
{
	struct kstate *k;
	assert_int_equal(kstate_create(&k, "vm", 1, 1, 3, regions, 1), 0);
	size_t len;
	kstate_raw_append(k, "{\"a\":1}{\"b\"", 11);
	kstate_raw_consume(k, 7); /* the first value was parsed */
	const char *p = kstate_raw(k, &len);
	assert_int_equal(len, 4);
	assert_memory_equal(p, "{\"b\"", 4);
	/* Fill past the end of the buffer: the live bytes move over. */
	char big[STATE_RAW_CAP - 8];
	memset(big, ' ', sizeof(big));
	kstate_raw_append(k, big, sizeof(big));
	kstate_raw_consume(k, 4 + sizeof(big) - 2);
	kstate_raw_append(k, ":2}", 3);
	p = kstate_raw(k, &len);
	assert_int_equal(len, 5);
	assert_memory_equal(p, "  :2}", 5);
	struct kstate *n = reopen(k);
	p = kstate_raw(n, &len);
	assert_int_equal(len, 5);
	assert_memory_equal(p, "  :2}", 5);
	kstate_raw_consume(n, 5);
	kstate_raw(n, &len);
	assert_int_equal(len, 0);
	kstate_free(n);
	kstate_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(layout_survives),
		cmocka_unit_test(garbage_refused),
		cmocka_unit_test(remove_pending_until_applied),
		cmocka_unit_test(requests_pending_until_sent),
		cmocka_unit_test(raw_bytes_follow_parsing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
