/* stage2.c - see stage2.h. */
#include "stage2.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* KVM_MEMORY_EXIT_FLAG_USERFAULT: the only flag Firecracker sends. */
#define S2_FLAGS 16
/* Plenty for dozens of replies per read; replies are ~90 bytes. */
#define READ_BUF 65536

struct slot {
	pthread_cond_t cv;
	bool pending;    /* a request is outstanding */
	bool done;       /* its reply arrived */
	uint64_t offset; /* of the outstanding request */
};

struct stage2 {
	struct stage2_config c;
	int stop_efd;        /* written to stop the reader */
	pthread_t reader;
	pthread_mutex_t mu;  /* slots and counters */
	pthread_mutex_t send_mu; /* one request on the wire at a time */
	struct slot *slot;
	atomic_bool closing;
	uint64_t ignored, zero_replies;
};

static bool get_u64(struct json_object *o, const char *key, uint64_t *out)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return false;
	if (json_object_get_int64(v) < 0)
		return false;
	*out = json_object_get_uint64(v);
	return true;
}

/* Checks the fields that must echo the request or describe one page. */
static void check_reply_fields(struct stage2 *s, struct json_object *o, const char *text)
{
	struct json_object *v;
	uint64_t n;

	if (!get_u64(o, "len", &n) || n != s->c.page_size)
		fail_now(EXIT_WRONG, "stage-2 reply: \"len\" must be %" PRIu64 " (the page size): %s",
			 s->c.page_size, text);
	if (!get_u64(o, "flags", &n) || n != S2_FLAGS)
		fail_now(EXIT_WRONG, "stage-2 reply: \"flags\" must echo %d: %s", S2_FLAGS, text);
	if (!json_object_object_get_ex(o, "token", &v) || v != NULL)
		fail_now(EXIT_WRONG, "stage-2 reply: \"token\" must echo null: %s", text);
	if (!json_object_object_get_ex(o, "zero", &v) || !json_object_is_type(v, json_type_boolean))
		fail_now(EXIT_WRONG, "stage-2 reply: \"zero\" must be true or false: %s", text);
	if (json_object_get_boolean(v))
		s->zero_replies++;
}

/* Hands a reply to the vCPU that waits for it. Caller holds s->mu. */
static void deliver(struct stage2 *s, uint64_t vcpu, uint64_t off, const char *text)
{
	struct slot *sl = &s->slot[vcpu];

	if (!sl->pending)
		fail_now(EXIT_WRONG, "stage-2 reply for vcpu %" PRIu64
			 ", which has no request outstanding: %s", vcpu, text);
	if (sl->offset != off)
		fail_now(EXIT_WRONG, "stage-2 reply for vcpu %" PRIu64 " offset 0x%" PRIx64
			 ", but it asked for offset 0x%" PRIx64 ": %s", vcpu, off, sl->offset, text);
	sl->pending = false;
	sl->done = true;
	pthread_cond_signal(&sl->cv);
}

/* A refusal of the --bad-request (or of nothing we know) is the handler's
 * business: note it and go on. A refusal of a request a vCPU waits for
 * would leave that vCPU stuck forever in a real VMM: fail now rather than
 * at the watchdog. Caller holds s->mu. */
static void handle_error_reply(struct stage2 *s, struct json_object *o, const char *text)
{
	uint64_t off, vcpu;
	bool has_off = get_u64(o, "offset", &off);

	if (has_off && !(s->c.has_bad && off == s->c.bad_offset) && get_u64(o, "vcpu", &vcpu) &&
	    vcpu < s->c.nvcpus && s->slot[vcpu].pending && s->slot[vcpu].offset == off)
		fail_now(EXIT_WRONG, "the handler refused vcpu %" PRIu64 "'s stage-2 request for "
			 "offset 0x%" PRIx64 ": %s", vcpu, off, text);
	msg("handler replied with an error (ignored): %s", text);
	s->ignored++;
}

static void handle_reply(struct stage2 *s, struct json_object *o)
{
	const char *text = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : "null";
	uint64_t off, vcpu;

	if (!json_object_is_type(o, json_type_object))
		fail_now(EXIT_WRONG, "handler sent a non-object on the socket: %s", text);
	pthread_mutex_lock(&s->mu);
	if (json_object_object_get_ex(o, "error", NULL)) {
		handle_error_reply(s, o, text);
		goto out;
	}
	if (!get_u64(o, "offset", &off))
		fail_now(EXIT_WRONG, "stage-2 reply without a valid \"offset\": %s", text);
	if (s->c.has_bad && off == s->c.bad_offset) {
		msg("reply to the --bad-request (ignored): %s", text);
		s->ignored++;
		goto out;
	}
	if (!get_u64(o, "vcpu", &vcpu) || vcpu >= s->c.nvcpus)
		fail_now(EXIT_WRONG, "stage-2 reply: \"vcpu\" must be one of ours (0..%u): %s",
			 s->c.nvcpus - 1, text);
	check_reply_fields(s, o, text);
	deliver(s, vcpu, off, text);
out:
	pthread_mutex_unlock(&s->mu);
}

/* Parses every complete object in buf; a partial one stays in tok. */
static void feed(struct stage2 *s, struct json_tokener *tok, const char *buf, size_t n)
{
	size_t pos = 0;

	while (pos < n) {
		struct json_object *o = json_tokener_parse_ex(tok, buf + pos, (int)(n - pos));
		enum json_tokener_error err = json_tokener_get_error(tok);

		if (err == json_tokener_continue)
			return; /* incomplete object (or trailing whitespace) */
		if (err != json_tokener_success)
			fail_now(EXIT_WRONG, "malformed JSON from the handler (%s) near: %.*s",
				 json_tokener_error_desc(err), (int)(n - pos < 80 ? n - pos : 80),
				 buf + pos);
		size_t used = json_tokener_get_parse_end(tok);

		pos += used ? used : n - pos;
		handle_reply(s, o);
		json_object_put(o);
		json_tokener_reset(tok);
	}
}

/* Returns false when the reader should stop. */
static bool read_once(struct stage2 *s, struct json_tokener *tok, char *buf, bool *warned)
{
	ssize_t n = recv(s->c.sock, buf, READ_BUF, 0);

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0) {
		if (atomic_load(&s->closing))
			return false;
		fail_now(EXIT_WRONG, "the handler closed the connection during the workload "
			 "(handshake refused, or session ended)%s%s",
			 n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
	}
	if (s->c.secret_hiding) {
		feed(s, tok, buf, (size_t)n);
	} else if (!*warned) {
		/* Firecracker never reads this socket in mainline: harmless. */
		msg("note: handler sent %zd unexpected bytes on a mainline connection: %.*s", n,
		    (int)(n < 80 ? n : 80), buf);
		*warned = true;
	}
	return true;
}

static void *reader_main(void *arg)
{
	struct stage2 *s = arg;
	struct json_tokener *tok = json_tokener_new();
	char *buf = malloc(READ_BUF);
	bool warned = false;

	if (!tok || !buf)
		fail_now(EXIT_SETUP, "out of memory starting the socket reader");
	for (;;) {
		struct pollfd p[2] = { { s->c.sock, POLLIN, 0 }, { s->stop_efd, POLLIN, 0 } };

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fail_now(EXIT_SETUP, "poll on the handler socket: %m");
		}
		if (p[1].revents)
			break;
		if (p[0].revents && !read_once(s, tok, buf, &warned))
			break;
	}
	json_tokener_free(tok);
	free(buf);
	return NULL;
}

struct stage2 *stage2_start(const struct stage2_config *c)
{
	struct stage2 *s = xcalloc(1, sizeof(*s));

	s->c = *c;
	s->slot = xcalloc(c->nvcpus, sizeof(*s->slot));
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->send_mu, NULL);
	for (unsigned i = 0; i < c->nvcpus; i++)
		pthread_cond_init(&s->slot[i].cv, NULL);
	s->stop_efd = eventfd(0, EFD_CLOEXEC);
	if (s->stop_efd < 0) {
		msg("eventfd: %m");
		goto fail;
	}
	int rc = pthread_create(&s->reader, NULL, reader_main, s);

	if (rc) {
		msg("starting the socket reader thread: %s", strerror(rc));
		close(s->stop_efd);
		goto fail;
	}
	return s;
fail:
	free(s->slot);
	free(s);
	return NULL;
}

static void send_all(struct stage2 *s, const char *buf, size_t len)
{
	pthread_mutex_lock(&s->send_mu);
	while (len) {
		ssize_t n = send(s->c.sock, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail_now(EXIT_WRONG, "sending a stage-2 fault request: %m (handler gone?)");
		buf += n;
		len -= (size_t)n;
	}
	pthread_mutex_unlock(&s->send_mu);
}

static size_t format_request(char *buf, size_t len, unsigned vcpu, uint64_t offset)
{
	return (size_t)snprintf(buf, len,
				"{\"vcpu\":%u,\"offset\":%" PRIu64 ",\"flags\":%d,\"token\":null}",
				vcpu, offset, S2_FLAGS);
}

void stage2_request(struct stage2 *s, unsigned vcpu, uint64_t offset)
{
	struct slot *sl = &s->slot[vcpu];
	char req[128];
	size_t len = format_request(req, sizeof(req), vcpu, offset);

	/* Pending before sending: the reply may beat us back to the lock. */
	pthread_mutex_lock(&s->mu);
	sl->pending = true;
	sl->done = false;
	sl->offset = offset;
	pthread_mutex_unlock(&s->mu);
	send_all(s, req, len);
	pthread_mutex_lock(&s->mu);
	while (!sl->done)
		pthread_cond_wait(&sl->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

void stage2_send_bad(struct stage2 *s, uint64_t offset)
{
	char req[128];

	send_all(s, req, format_request(req, sizeof(req), 0, offset));
}

void stage2_set_closing(struct stage2 *s)
{
	atomic_store(&s->closing, true);
}

uint64_t stage2_ignored_replies(struct stage2 *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t n = s->ignored;

	pthread_mutex_unlock(&s->mu);
	return n;
}

uint64_t stage2_zero_replies(struct stage2 *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t n = s->zero_replies;

	pthread_mutex_unlock(&s->mu);
	return n;
}

void stage2_stop(struct stage2 *s)
{
	uint64_t one = 1;

	if (write(s->stop_efd, &one, sizeof(one)) != sizeof(one))
		fail_now(EXIT_SETUP, "stopping the socket reader: %m");
	pthread_join(s->reader, NULL);
	close(s->stop_efd);
	for (unsigned i = 0; i < s->c.nvcpus; i++)
		pthread_cond_destroy(&s->slot[i].cv);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->send_mu);
	free(s->slot);
	free(s);
}

/* A Unix stream socket closed with data in its receive queue resets the
 * connection (the peer's next read gets ECONNRESET); SO_LINGER {1, 0},
 * which does that for TCP, changes nothing for AF_UNIX. So: ask for page
 * 0 once more, wait for the reply to arrive, and close without reading. */
void stage2_close_with_reset(int sock)
{
	char req[128];
	size_t len = format_request(req, sizeof(req), 0, 0);
	struct pollfd p = { .fd = sock, .events = POLLIN };

	if (send(sock, req, len, MSG_NOSIGNAL) != (ssize_t)len)
		msg("--reset-socket: sending the last request: %m");
	else if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLIN))
		msg("--reset-socket: no reply within 5 s: the close is no reset");
	close(sock);
}
