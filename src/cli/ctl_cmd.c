/* ctl_cmd.c - `pagein ctl`: add, remove, list and show the sockets a
 * running `pagein serve --control PATH` serves, and upgrade it, over its
 * control socket (JSON lines; docs/protocols.md). */
#include <errno.h>
#include <json-c/json.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_CONTROL "/run/pagein/control.sock"

int cmd_ctl(int argc, char **argv);

static void ctl_usage(FILE *f)
{
	fprintf(f,
		"usage: pagein ctl [--control PATH] [--json] COMMAND\n"
		"\n"
		"Drives a daemon started with `pagein serve --control PATH`.\n"
		"\n"
		"  add SNAPSHOT --socket SOCK [serve options]\n"
		"                 serve SNAPSHOT on a new socket SOCK, with any of\n"
		"                 pagein serve's per-socket options (--fault-around,\n"
		"                 --populate, --prefetch, --record, --on-corrupt,\n"
		"                 --on-failure, --socket-mode/-owner/-group,\n"
		"                 --allow-uid/-gid, --threads, ...)\n"
		"  remove SOCK    stop accepting on SOCK, let its sessions end (up to\n"
		"                 the daemon's --drain-timeout), then forget it\n"
		"  list           the sockets served, their snapshots, connections\n"
		"  stats [SOCK]   totals per socket: sessions, faults, pages, bytes\n"
		"  upgrade        run the pagein binary now installed at the path the\n"
		"                 daemon was started from: every socket and session\n"
		"                 is handed to it, none is lost (as SIGUSR2 to the\n"
		"                 keeper; not with --no-keeper)\n"
		"\n"
		"  --control PATH the daemon's control socket (default %s)\n"
		"  --json         print the daemon's JSON answer as it is\n"
		"\n"
		"Relative paths given to add are made absolute here (the daemon's\n"
		"working directory is not yours). Exit status: 0 done, 1 the daemon\n"
		"refused (its reason is printed), 2 usage or no daemon.\n",
		DEFAULT_CONTROL);
}

/* An absolute path for the daemon; a copy. */
static char *absolute(const char *p)
{
	if (p[0] == '/')
		return strdup(p);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return strdup(p);
	size_t n = strlen(cwd) + strlen(p) + 2;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s/%s", cwd, p);
	return s;
}

static bool takes_path(const char *opt)
{
	static const char *const paths[] = {"--socket", "--prefetch", "--record", "--snapshot"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (!strcmp(opt, paths[i]))
			return true;
	return false;
}

static int connect_control(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path)) {
		fprintf(stderr, "pagein ctl: --control %s: path too long\n", path);
		return -1;
	}
	memcpy(a.sun_path, path, strlen(path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		fprintf(stderr, "pagein ctl: cannot reach the daemon at %s: %s (is `pagein serve --control %s` running?)\n",
			path, strerror(e), path);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Sends one request, reads one answer line. */
static struct json_object *request(const char *path, struct json_object *req)
{
	int fd = connect_control(path);
	if (fd < 0)
		return NULL;
	const char *s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	bool sent = send(fd, s, len, MSG_NOSIGNAL) == (ssize_t)len &&
		    send(fd, "\n", 1, MSG_NOSIGNAL) == 1;
	char *buf = NULL;
	size_t have = 0, cap = 0;
	while (sent) {
		if (have + 4096 > cap) {
			char *b = realloc(buf, cap = cap ? cap * 2 : 8192);
			if (!b)
				break;
			buf = b;
		}
		ssize_t r = recv(fd, buf + have, cap - have - 1, 0);
		if (r <= 0)
			break;
		have += (size_t)r;
		if (memchr(buf, '\n', have))
			break;
	}
	close(fd);
	struct json_object *ans = NULL;
	if (buf && have) {
		buf[have] = 0;
		ans = json_tokener_parse(buf);
	}
	free(buf);
	if (!ans)
		fprintf(stderr, "pagein ctl: the daemon at %s gave no answer\n", path);
	return ans;
}

static uint64_t field(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) ? (uint64_t)json_object_get_int64(v) : 0;
}

static const char *sfield(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : "-";
}

static void print_answer(const char *op, struct json_object *ans)
{
	struct json_object *arr;
	if (!strcmp(op, "upgrade")) {
		printf("upgrading: engine pid %" PRIu64 " hands over to a new engine (keeper pid %" PRIu64 ")\n",
		       field(ans, "engine_pid"), field(ans, "keeper_pid"));
		return;
	}
	if (!json_object_object_get_ex(ans, "sockets", &arr)) {
		printf("ok\n");
		return;
	}
	size_t n = json_object_array_length(arr);
	if (n == 0)
		printf("no sockets served\n");
	if (!strcmp(op, "list")) {
		for (size_t i = 0; i < n; i++) {
			struct json_object *o = json_object_array_get_idx(arr, i);
			printf("%s\t%s\t%" PRIu64 " connection%s\n", sfield(o, "socket"), sfield(o, "snapshot"),
			       field(o, "connections_open"), field(o, "connections_open") == 1 ? "" : "s");
		}
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_array_get_idx(arr, i);
		printf("%s (%s): sessions %" PRIu64 " open, %" PRIu64 " started, %" PRIu64
		       " failed; faults %" PRIu64 ", requests %" PRIu64 "; pages %" PRIu64 "/%" PRIu64
		       " present; read %" PRIu64 " bytes; poisoned %" PRIu64 "; removes %" PRIu64 "\n",
		       sfield(o, "socket"), sfield(o, "snapshot"), field(o, "sessions_open"),
		       field(o, "sessions_started"), field(o, "sessions_failed"), field(o, "faults"),
		       field(o, "requests"), field(o, "pages_present"), field(o, "pages_total"),
		       field(o, "bytes_read"), field(o, "pages_poisoned"), field(o, "removes"));
	}
}

int cmd_ctl(int argc, char **argv)
{
	const char *control = DEFAULT_CONTROL;
	bool json = false;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			ctl_usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--control") && i + 1 < argc) {
			control = argv[++i];
		} else {
			fprintf(stderr, "pagein ctl: unknown option '%s' (see pagein ctl --help)\n", argv[i]);
			return 2;
		}
	}
	if (i >= argc) {
		ctl_usage(stderr);
		return 2;
	}
	const char *op = argv[i++];
	struct json_object *req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string(op));
	if (!strcmp(op, "add")) {
		if (i >= argc || argv[i][0] == '-') {
			fprintf(stderr, "pagein ctl add: name the snapshot first: pagein ctl add SNAPSHOT --socket SOCK [options]\n");
			json_object_put(req);
			return 2;
		}
		struct json_object *args = json_object_new_array();
		char *snap = absolute(argv[i++]);
		json_object_array_add(args, json_object_new_string("--snapshot"));
		json_object_array_add(args, json_object_new_string(snap ? snap : ""));
		free(snap);
		for (; i < argc; i++) {
			bool path = takes_path(argv[i]) && i + 1 < argc;
			json_object_array_add(args, json_object_new_string(argv[i]));
			if (path) {
				char *p = absolute(argv[++i]);
				json_object_array_add(args, json_object_new_string(p ? p : ""));
				free(p);
			}
		}
		json_object_object_add(req, "args", args);
	} else if (!strcmp(op, "remove") || !strcmp(op, "stats")) {
		if (i < argc) {
			char *p = absolute(argv[i++]);
			json_object_object_add(req, "socket", json_object_new_string(p ? p : ""));
			free(p);
		} else if (!strcmp(op, "remove")) {
			fprintf(stderr, "pagein ctl remove: name the socket: pagein ctl remove SOCK\n");
			json_object_put(req);
			return 2;
		}
	} else if (strcmp(op, "list") && strcmp(op, "upgrade")) {
		fprintf(stderr, "pagein ctl: unknown command '%s': use add, remove, list, stats or upgrade\n", op);
		json_object_put(req);
		return 2;
	}
	if (i < argc && strcmp(op, "add")) {
		fprintf(stderr, "pagein ctl %s: unexpected argument '%s'\n", op, argv[i]);
		json_object_put(req);
		return 2;
	}
	struct json_object *ans = request(control, req);
	json_object_put(req);
	if (!ans)
		return 2;
	struct json_object *ok;
	bool good = json_object_object_get_ex(ans, "ok", &ok) && json_object_get_boolean(ok);
	if (json)
		printf("%s\n", json_object_to_json_string_ext(ans, JSON_C_TO_STRING_PLAIN));
	else if (good)
		print_answer(op, ans);
	else
		fprintf(stderr, "pagein ctl %s: %s\n", op, sfield(ans, "error"));
	json_object_put(ans);
	return good ? 0 : 1;
}
