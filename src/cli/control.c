/* control.c - the sockets one daemon serves, and its control socket.
 *
 * Each served socket is a pagein_server on a thread of its own; this file
 * keeps the list, adds and removes them (at start, and for `pagein ctl`),
 * and drains or stops them all on SIGTERM. The control socket is served
 * by one thread, one client at a time: requests are short, and a client
 * that stalls is cut off after CONTROL_TIMEOUT_S. */
#include "control.h"
#include "keeper_link.h"
#include "log_time.h"

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A request line longer than this is refused (and the client dropped). */
#define CONTROL_LINE_MAX (64 * 1024)
/* A client must send a whole request within this long. */
#define CONTROL_TIMEOUT_S 5

struct served {
	struct pagein_server *srv;
	pthread_t thread;
	bool running;          /* its thread was started */
	bool done;             /* run() returned (under D.lock) */
	int argc;
	char **argv;           /* the options, copied: cfg strings point here */
	struct serve_opts opts;
	/* keeper: the socket's number (0: the command line's), and for one
	 * a dead engine added, the socket file it had created (claimed). */
	uint32_t sid;
	uint64_t dev, ino;
	bool remove_at_launch; /* its removal was cut short: finish it */
};

static struct {
	struct daemon_cfg cfg;
	pthread_mutex_t lock;  /* the list and the flags */
	pthread_cond_t cond;   /* a run() returned, or a drain/stop began */
	struct served **s;
	size_t n;
	bool draining, stopping;
	bool launched;         /* daemon_launch() ran: new servers run at once */
	uint32_t next_sid;     /* keeper: the last socket number given out */
	pthread_mutex_t parse_lock; /* getopt is not reentrant */
} D = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.parse_lock = PTHREAD_MUTEX_INITIALIZER,
};

void daemon_init(const struct daemon_cfg *cfg)
{
	D.cfg = *cfg;
}

/* ---- the daemon's own log lines ----------------------------------------- */

void daemon_log(enum pagein_log_level lvl, const char *event, const char *fmt, ...)
{
	if (lvl > D.cfg.log_level || !D.cfg.log)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (*D.cfg.log_format != PAGEIN_LOG_JSON) {
		D.cfg.log(D.cfg.log_format, lvl, msg);
		return;
	}
	char when[64];
	log_utc_now(when, sizeof(when));
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "ts", json_object_new_string(when));
	json_object_object_add(o, "level", json_object_new_string(log_level_names[lvl]));
	json_object_object_add(o, "event", json_object_new_string(event));
	json_object_object_add(o, "msg", json_object_new_string(msg));
	D.cfg.log(D.cfg.log_format, lvl, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

/* ---- served sockets ------------------------------------------------------ */

static void *serve_thread(void *arg)
{
	struct served *sv = arg;
	pagein_server_run(sv->srv);
	pthread_mutex_lock(&D.lock);
	sv->done = true;
	pthread_cond_broadcast(&D.cond);
	pthread_mutex_unlock(&D.lock);
	return NULL;
}

static void served_free(struct served *sv)
{
	if (!sv)
		return;
	if (sv->srv)
		pagein_server_free(sv->srv);
	serve_opts_free(&sv->opts);
	for (int i = 0; i < sv->argc; i++)
		free(sv->argv[i]);
	free(sv->argv);
	free(sv);
}

/* Starts serving sv (its options parsed): the server, then its thread. */
static int start_served(struct served *sv, struct opt_err *e)
{
	struct serve_opts *o = &sv->opts;
	if (!o->cfg.snapshot_path || (!o->cfg.socket_path && !o->cfg.listen_fd)) {
		snprintf(e->msg, sizeof(e->msg), "%s",
			 o->cfg.snapshot_path ? "--socket PATH is required: name the Unix socket its VMMs connect to"
					      : "a snapshot is required: name the memory snapshot to serve");
		served_free(sv);
		return -1;
	}
	o->cfg.log_level = D.cfg.log_level;
	o->cfg.log = D.cfg.log;
	o->cfg.log_opaque = D.cfg.log_format;
	o->cfg.log_format = *D.cfg.log_format;
	o->cfg.metrics_addr = NULL;
	o->cfg.metrics = D.cfg.metrics;
	pthread_mutex_lock(&D.lock);
	bool stopping = D.draining || D.stopping, dup = false;
	for (size_t i = 0; i < D.n && !stopping && !dup && o->cfg.socket_path; i++) {
		const char *p = pagein_server_socket(D.s[i]->srv);
		dup = p && !strcmp(p, o->cfg.socket_path);
	}
	pthread_mutex_unlock(&D.lock);
	if (stopping || dup) {
		snprintf(e->msg, sizeof(e->msg), "%s",
			 stopping ? "the daemon is stopping: it takes no new socket"
				  : "that socket is served already: remove it first");
		served_free(sv);
		return -1;
	}
	struct pagein_error err = {{0}};
	int r = pagein_server_new(&o->cfg, &sv->srv, &err);
	if (r < 0) {
		snprintf(e->msg, sizeof(e->msg), "%s", err.msg[0] ? err.msg : strerror(-r));
		served_free(sv);
		return -1;
	}
	/* keeper: the socket and its options go to the keeper before any
	 * connection can (a new engine re-adds it, then adopts its
	 * sessions); one it gave back is claimed instead. */
	keeper_set_sid(sv->srv, sv->sid);
	keeper_claim_socket(sv->srv, sv->dev, sv->ino);
	if (sv->sid && !o->cfg.listen_fd)
		keeper_send_socket(sv->srv, sv->argc, sv->argv);
	pthread_mutex_lock(&D.lock);
	struct served **v = realloc(D.s, (D.n + 1) * sizeof(*v));
	if (v)
		D.s = v;
	if (!v || (D.launched && pthread_create(&sv->thread, NULL, serve_thread, sv) != 0)) {
		pthread_mutex_unlock(&D.lock);
		snprintf(e->msg, sizeof(e->msg), "cannot start serving: out of memory or threads");
		served_free(sv);
		return -1;
	}
	sv->running = D.launched;
	D.s[D.n++] = sv;
	pthread_mutex_unlock(&D.lock);
	return 0;
}

static void *remove_thread(void *arg);

void daemon_launch(void)
{
	pthread_mutex_lock(&D.lock);
	D.launched = true;
	char *removing[64];
	size_t nr = 0;
	for (size_t i = 0; i < D.n; i++) {
		if (!D.s[i]->running && pthread_create(&D.s[i]->thread, NULL, serve_thread, D.s[i]) == 0)
			D.s[i]->running = true;
		else if (!D.s[i]->running)
			D.s[i]->done = true;
		if (D.s[i]->remove_at_launch && nr < sizeof(removing) / sizeof(removing[0])) {
			const char *p = pagein_server_socket(D.s[i]->srv);
			if (p && (removing[nr] = strdup(p)))
				nr++;
		}
	}
	pthread_mutex_unlock(&D.lock);
	for (size_t i = 0; i < nr; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, remove_thread, removing[i]) == 0)
			pthread_detach(t);
		else
			free(removing[i]);
	}
}

int daemon_add_parsed(struct serve_opts *o, struct opt_err *e)
{
	struct served *sv = calloc(1, sizeof(*sv));
	if (!sv) {
		snprintf(e->msg, sizeof(e->msg), "out of memory");
		return -1;
	}
	sv->opts = *o; /* takes the allow lists */
	o->allow_uids = o->allow_gids = NULL;
	return start_served(sv, e);
}

/* A socket by its options (argv[0] ignored): new (listen_fd -1), or one
 * the keeper gave back (its fd, number, and file if an engine made it). */
static int add_socket(int argc, char **argv, int listen_fd, uint32_t sid, uint64_t dev,
		      uint64_t ino, struct opt_err *e)
{
	struct served *sv = calloc(1, sizeof(*sv));
	bool oom = !sv || !(sv->argv = calloc((size_t)argc + 1, sizeof(char *)));
	for (; !oom && sv->argc < argc; sv->argc++)
		oom = !(sv->argv[sv->argc] = strdup(argv[sv->argc]));
	if (oom) {
		snprintf(e->msg, sizeof(e->msg), "out of memory");
		if (sv && !sv->argv)
			free(sv);
		else
			served_free(sv);
		if (listen_fd >= 0)
			close(listen_fd);
		return -1;
	}
	struct serve_opts *o = &sv->opts;
	o->cfg.fault_around = DEFAULT_FAULT_AROUND;
	o->cfg.populate = PAGEIN_POPULATE_BACKGROUND;
	pthread_mutex_lock(&D.parse_lock);
	int r = serve_opts_parse(sv->argc, sv->argv, false, o, e);
	pthread_mutex_unlock(&D.parse_lock);
	if (r == 0 && o->help) {
		snprintf(e->msg, sizeof(e->msg), "--help is not a socket option");
		r = -1;
	}
	if (r < 0) {
		served_free(sv);
		if (listen_fd >= 0)
			close(listen_fd);
		return -1;
	}
	pthread_mutex_lock(&D.lock);
	if (listen_fd < 0 && keeper_link_active())
		sid = ++D.next_sid;
	else if (sid > D.next_sid)
		D.next_sid = sid;
	pthread_mutex_unlock(&D.lock);
	sv->sid = sid;
	sv->dev = dev;
	sv->ino = ino;
	if (listen_fd >= 0)
		o->cfg.listen_fd = listen_fd;
	r = start_served(sv, e);
	if (r < 0 && listen_fd >= 0)
		close(listen_fd); /* not taken (the keeper keeps its copy) */
	return r;
}

int daemon_add(int argc, char **argv, struct opt_err *e)
{
	return add_socket(argc, argv, -1, 0, 0, 0, e);
}

/* A socket that `ctl remove` was draining when its engine died: drained
 * and removed again, once its sessions are adopted (daemon_launch). */
static int daemon_remove(const char *path, struct opt_err *e);
static void *remove_thread(void *arg)
{
	char *path = arg;
	struct opt_err e = {{0}};
	daemon_remove(path, &e);
	free(path);
	return NULL;
}

int daemon_add_kept(uint32_t sid, const char *payload, size_t plen, int listen_fd, uint64_t dev,
		    uint64_t ino, bool draining, struct opt_err *e)
{
	int argc = 1;
	for (size_t i = 0; i < plen; i++)
		argc += payload[i] == 0;
	char **argv = calloc((size_t)argc + 1, sizeof(char *));
	if (!argv || (plen && payload[plen - 1])) {
		free(argv);
		close(listen_fd);
		snprintf(e->msg, sizeof(e->msg), "socket %u: its options came back %s", sid,
			 argv ? "cut short" : "and memory ran out");
		return -1;
	}
	argv[0] = (char *)"add";
	for (size_t i = 0, k = 1; i < plen; k++) {
		argv[k] = (char *)payload + i;
		i += strlen(payload + i) + 1;
	}
	int r = add_socket(argc, argv, listen_fd, sid, dev, ino, e);
	free(argv);
	if (r == 0 && draining) { /* once its sessions are adopted: at launch */
		pthread_mutex_lock(&D.lock);
		for (size_t i = 0; i < D.n; i++)
			if (D.s[i]->sid == sid)
				D.s[i]->remove_at_launch = true;
		pthread_mutex_unlock(&D.lock);
	}
	return r;
}

void daemon_sids_from(uint32_t sid)
{
	pthread_mutex_lock(&D.lock);
	if (sid > D.next_sid)
		D.next_sid = sid;
	pthread_mutex_unlock(&D.lock);
}

struct pagein_server *daemon_server_by_sid(uint32_t sid)
{
	struct pagein_server *srv = NULL;
	pthread_mutex_lock(&D.lock);
	for (size_t i = 0; i < D.n && !srv; i++)
		if (D.s[i]->sid == sid)
			srv = D.s[i]->srv;
	pthread_mutex_unlock(&D.lock);
	return srv;
}

void daemon_report_all(void)
{
	pthread_mutex_lock(&D.lock);
	for (size_t i = 0; i < D.n; i++)
		pagein_server_report(D.s[i]->srv);
	pthread_mutex_unlock(&D.lock);
}

/* Drains the socket at path (up to the drain timeout), then frees it. */
static int daemon_remove(const char *path, struct opt_err *e)
{
	struct served *sv = NULL;
	pthread_mutex_lock(&D.lock);
	for (size_t i = 0; i < D.n; i++) {
		const char *p = pagein_server_socket(D.s[i]->srv);
		if (p && !strcmp(p, path)) {
			sv = D.s[i];
			D.s[i] = D.s[--D.n];
			break;
		}
	}
	pthread_mutex_unlock(&D.lock);
	if (!sv) {
		snprintf(e->msg, sizeof(e->msg), "%s is not served by this daemon (see pagein ctl list)", path);
		return -1;
	}
	daemon_log(PAGEIN_LOG_INFO, "socket_removing", "control: removing %s (draining up to %.1f s)",
		   path, D.cfg.drain_ms / 1000.0);
	/* keeper: its copy of the socket refuses connections too; one `ctl
	 * add` made is drained by a new engine too, then forgotten (the
	 * command line's, number 0, a new engine serves again). */
	uint32_t sid = sv->sid;
	keeper_send_socket_msg(KMSG_SOCKET_DRAIN, sid);
	pagein_server_drain(sv->srv, D.cfg.drain_ms);
	if (sv->running)
		pthread_join(sv->thread, NULL);
	served_free(sv);
	keeper_send_socket_msg(KMSG_SOCKET_GONE, sid);
	daemon_log(PAGEIN_LOG_INFO, "socket_removed", "control: removed %s", path);
	pthread_mutex_lock(&D.lock);
	pthread_cond_broadcast(&D.cond);
	pthread_mutex_unlock(&D.lock);
	return 0;
}

unsigned daemon_sockets(void)
{
	pthread_mutex_lock(&D.lock);
	unsigned n = (unsigned)D.n;
	pthread_mutex_unlock(&D.lock);
	return n;
}

unsigned daemon_sessions(void)
{
	unsigned n = 0;
	pthread_mutex_lock(&D.lock);
	for (size_t i = 0; i < D.n; i++)
		n += pagein_server_connections(D.s[i]->srv);
	pthread_mutex_unlock(&D.lock);
	return n;
}

void daemon_drain_all(unsigned drain_ms)
{
	pthread_mutex_lock(&D.lock);
	D.draining = true;
	for (size_t i = 0; i < D.n; i++)
		pagein_server_drain(D.s[i]->srv, drain_ms);
	pthread_cond_broadcast(&D.cond);
	pthread_mutex_unlock(&D.lock);
}

static atomic_bool handing_over; /* keeper: SIGUSR2 */

void daemon_stop_all(void)
{
	pthread_mutex_lock(&D.lock);
	D.stopping = true;
	for (size_t i = 0; i < D.n; i++)
		pagein_server_stop(D.s[i]->srv);
	pthread_cond_broadcast(&D.cond);
	pthread_mutex_unlock(&D.lock);
}

void daemon_wait(bool control)
{
	pthread_mutex_lock(&D.lock);
	for (;;) {
		bool all_done = true;
		for (size_t i = 0; i < D.n; i++)
			all_done &= D.s[i]->done || !D.s[i]->running;
		/* Without a control socket the daemon is its sockets: it ends
		 * when they have. With one, it waits for SIGTERM. */
		if (all_done && (!control || D.draining || D.stopping))
			break;
		pthread_cond_wait(&D.cond, &D.lock);
	}
	struct served **s = D.s;
	size_t n = D.n;
	D.s = NULL;
	D.n = 0;
	D.stopping = true; /* no add from here on */
	pthread_mutex_unlock(&D.lock);
	for (size_t i = 0; i < n; i++)
		if (s[i]->running)
			pthread_join(s[i]->thread, NULL);
	if (atomic_load(&handing_over)) {
		for (size_t i = 0; i < n; i++)
			if (s[i]->srv)
				keeper_quiesce(s[i]->srv);
		/* keeper: the workers are done, every session stays as it is
		 * (its state memfd complete): the next engine takes them. */
		daemon_log(PAGEIN_LOG_INFO, "handed_over", "workers stopped; exiting for the new engine");
		_exit(DAEMON_EXIT_HANDOVER);
	}
	for (size_t i = 0; i < n; i++)
		served_free(s[i]);
	free(s);
}

void daemon_hand_over(void)
{
	atomic_store(&handing_over, true);
	daemon_stop_all();
}

/* ---- the control socket -------------------------------------------------- */

static int control_fd = -1, control_stop_fd = -1;
static pthread_t control_thread;
static char *control_path;
static dev_t control_dev;
static ino_t control_ino;

static struct json_object *ok_reply(void)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

static struct json_object *error_reply(const char *msg)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return o;
}

static void add_u64(struct json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_int64((int64_t)v));
}

/* list and stats: one object per served socket (only `only`, if set). */
static struct json_object *describe(const char *only, bool stats, bool *found)
{
	struct json_object *arr = json_object_new_array();
	*found = !only;
	pthread_mutex_lock(&D.lock);
	for (size_t i = 0; i < D.n; i++) {
		struct pagein_server *srv = D.s[i]->srv;
		const char *sock = pagein_server_socket(srv);
		if (only && (!sock || strcmp(sock, only)))
			continue;
		*found = true;
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "socket", sock ? json_object_new_string(sock) : NULL);
		json_object_object_add(o, "snapshot", json_object_new_string(pagein_server_snapshot(srv)));
		json_object_object_add(o, "connections_open", json_object_new_int64(pagein_server_connections(srv)));
		if (stats) {
			struct pagein_server_totals t;
			pagein_server_totals(srv, &t);
			add_u64(o, "connections", t.connections);
			add_u64(o, "sessions_started", t.sessions_started);
			add_u64(o, "sessions_failed", t.sessions_failed);
			add_u64(o, "sessions_open", t.sessions_open);
			add_u64(o, "pages_present", t.pages_present);
			add_u64(o, "pages_total", t.pages_total);
			add_u64(o, "faults", t.all.faults_missing + t.all.faults_minor);
			add_u64(o, "requests", t.all.requests);
			add_u64(o, "bytes_read", t.all.bytes_read);
			add_u64(o, "pages_poisoned", t.all.pages_poisoned);
			add_u64(o, "removes", t.all.removes);
		}
		json_object_array_add(arr, o);
	}
	pthread_mutex_unlock(&D.lock);
	return arr;
}

static struct json_object *handle(struct json_object *req)
{
	struct json_object *opv, *v;
	if (!json_object_is_type(req, json_type_object) ||
	    !json_object_object_get_ex(req, "op", &opv) || !json_object_is_type(opv, json_type_string))
		return error_reply("a request is a JSON object with an \"op\" string: add, remove, list, stats or upgrade");
	const char *op = json_object_get_string(opv);
	struct opt_err e = {{0}};
	if (!strcmp(op, "add")) {
		if (!json_object_object_get_ex(req, "args", &v) || !json_object_is_type(v, json_type_array))
			return error_reply("add needs \"args\": the serve options as an array of strings");
		size_t n = json_object_array_length(v);
		if (n > 256)
			return error_reply("add: too many arguments");
		char **argv = calloc(n + 2, sizeof(char *));
		if (!argv)
			return error_reply("out of memory");
		argv[0] = (char *)"add";
		for (size_t i = 0; i < n; i++) {
			struct json_object *a = json_object_array_get_idx(v, i);
			if (!json_object_is_type(a, json_type_string)) {
				free(argv);
				return error_reply("add: every argument must be a string");
			}
			argv[i + 1] = (char *)json_object_get_string(a);
		}
		int r = daemon_add((int)n + 1, argv, &e);
		free(argv);
		if (r < 0)
			return error_reply(e.msg);
		daemon_log(PAGEIN_LOG_INFO, "socket_added", "control: added a socket (%zu options)", n);
		return ok_reply();
	}
	const char *sock = NULL;
	if (json_object_object_get_ex(req, "socket", &v)) {
		if (!json_object_is_type(v, json_type_string))
			return error_reply("\"socket\" must be a string: the socket's path");
		sock = json_object_get_string(v);
	}
	if (!strcmp(op, "remove")) {
		if (!sock)
			return error_reply("remove needs \"socket\": the path of the socket to stop serving");
		if (daemon_remove(sock, &e) < 0)
			return error_reply(e.msg);
		return ok_reply();
	}
	if (!strcmp(op, "upgrade")) {
		/* The keeper starts the binary now at its path and this engine
		 * hands every socket and session over (SIGUSR2 to the keeper). */
		if (!keeper_link_active())
			return error_reply("this daemon runs without a keeper (--no-keeper): it cannot hand over; restart it to run another binary");
		pid_t keeper = getppid();
		if (kill(keeper, SIGUSR2) < 0) {
			snprintf(e.msg, sizeof(e.msg), "cannot signal the keeper (pid %ld): %s", (long)keeper, strerror(errno));
			return error_reply(e.msg);
		}
		daemon_log(PAGEIN_LOG_INFO, "upgrade_asked", "control: upgrade asked: the keeper (pid %ld) starts a new engine", (long)keeper);
		struct json_object *o = ok_reply();
		add_u64(o, "engine_pid", (uint64_t)getpid());
		add_u64(o, "keeper_pid", (uint64_t)keeper);
		return o;
	}
	if (!strcmp(op, "list") || !strcmp(op, "stats")) {
		bool found;
		struct json_object *arr = describe(sock, !strcmp(op, "stats"), &found);
		if (!found) {
			json_object_put(arr);
			snprintf(e.msg, sizeof(e.msg), "%s is not served by this daemon (see pagein ctl list)", sock);
			return error_reply(e.msg);
		}
		struct json_object *o = ok_reply();
		json_object_object_add(o, "sockets", arr);
		return o;
	}
	snprintf(e.msg, sizeof(e.msg), "unknown op \"%.64s\": use add, remove, list, stats or upgrade", op);
	return error_reply(e.msg);
}

static void send_line(int fd, struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	char *line = malloc(len + 1);
	if (line) {
		memcpy(line, s, len);
		line[len] = '\n';
		const char *p = line;
		size_t left = len + 1;
		while (left) {
			ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
			if (w <= 0)
				break;
			p += w;
			left -= (size_t)w;
		}
		free(line);
	}
	json_object_put(o);
}

/* Only root and the daemon's own user may drive it. */
static bool client_allowed(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return false;
	return cr.uid == 0 || cr.uid == geteuid();
}

static void serve_client(int fd)
{
	if (!client_allowed(fd)) {
		send_line(fd, error_reply("permission denied: only root and the daemon's user may use the control socket"));
		daemon_log(PAGEIN_LOG_WARN, "control_refused", "control: refused a client of another user");
		return;
	}
	struct timeval tv = {CONTROL_TIMEOUT_S, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char *buf = malloc(CONTROL_LINE_MAX);
	size_t have = 0;
	if (!buf)
		return;
	for (;;) {
		char *nl = memchr(buf, '\n', have);
		if (!nl) {
			if (have == CONTROL_LINE_MAX) {
				send_line(fd, error_reply("request line too long (64 KiB at most)"));
				break;
			}
			ssize_t r = recv(fd, buf + have, CONTROL_LINE_MAX - have, 0);
			if (r <= 0)
				break; /* EOF, error or the timeout */
			have += (size_t)r;
			continue;
		}
		*nl = 0;
		struct json_tokener *tok = json_tokener_new();
		struct json_object *req = tok ? json_tokener_parse_ex(tok, buf, (int)(nl - buf)) : NULL;
		bool complete = tok && json_tokener_get_error(tok) == json_tokener_success;
		if (tok)
			json_tokener_free(tok);
		send_line(fd, req && complete ? handle(req) : error_reply("not a JSON object: one request per line"));
		json_object_put(req);
		size_t used = (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, have - used);
		have -= used;
	}
	free(buf);
}

static void *control_main(void *arg)
{
	(void)arg;
	struct pollfd p[2] = {{.fd = control_fd, .events = POLLIN}, {.fd = control_stop_fd, .events = POLLIN}};
	for (;;) {
		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents)
			return NULL;
		int fd = accept4(control_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve_client(fd);
		close(fd);
	}
}

int control_start(const char *path, struct opt_err *e)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path)) {
		snprintf(e->msg, sizeof(e->msg), "--control %s: the path is too long for a Unix socket (107 bytes at most)", path);
		return -1;
	}
	memcpy(a.sun_path, path, strlen(path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(e->msg, sizeof(e->msg), "--control %s: socket: %s", path, strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
		close(fd);
		snprintf(e->msg, sizeof(e->msg), "--control %s: another daemon is listening there: stop it, or choose another path", path);
		return -1;
	}
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			close(fd);
			snprintf(e->msg, sizeof(e->msg), "--control %s: that file exists and is not a socket: remove it or choose another path", path);
			return -1;
		}
		unlink(path); /* stale: nobody listens */
	}
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(path, 0600) < 0 || listen(fd, 16) < 0 ||
	    stat(path, &st) < 0) {
		int err = errno;
		close(fd);
		snprintf(e->msg, sizeof(e->msg), "--control %s: cannot listen: %s", path, strerror(err));
		return -1;
	}
	if (control_serve(path, fd, (uint64_t)st.st_dev, (uint64_t)st.st_ino, e) < 0)
		return -1;
	keeper_send_control(fd, (uint64_t)st.st_dev, (uint64_t)st.st_ino); /* keeper: keep it */
	return 0;
}

int control_serve(const char *path, int fd, uint64_t dev, uint64_t ino, struct opt_err *e)
{
	control_dev = (dev_t)dev;
	control_ino = (ino_t)ino;
	control_fd = fd;
	control_stop_fd = eventfd(0, EFD_CLOEXEC);
	control_path = strdup(path);
	if (control_stop_fd < 0 || !control_path || pthread_create(&control_thread, NULL, control_main, NULL) != 0) {
		snprintf(e->msg, sizeof(e->msg), "--control %s: cannot start its thread", path);
		close(fd);
		control_fd = -1;
		return -1;
	}
	daemon_log(PAGEIN_LOG_INFO, "control_listening", "control socket on %s", path);
	return 0;
}

void control_stop(void)
{
	if (control_fd < 0)
		return;
	uint64_t one = 1;
	ssize_t w = write(control_stop_fd, &one, sizeof(one));
	(void)w;
	pthread_join(control_thread, NULL);
	close(control_fd);
	close(control_stop_fd);
	control_fd = control_stop_fd = -1;
	/* Only if it is still the socket created. */
	struct stat st;
	if (lstat(control_path, &st) == 0 && st.st_dev == control_dev && st.st_ino == control_ino)
		unlink(control_path);
	free(control_path);
	control_path = NULL;
}
