# tests/tools/nginx_lib.sh - a private nginx on loopback serving a directory,
# for the remote-snapshot tests (tests/sh/remote_*.sh). Source it after
# tests/sh/lib.sh (uses $WORK, fail, skip).

command -v nginx >/dev/null 2>&1 || skip "nginx not installed (apt-get install nginx-light; scripts/install-deps.sh does)"
command -v python3 >/dev/null 2>&1 || skip "python3 not installed"
NGINX_PID=""
PROXY_PID=""

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_nginx ROOT: serves ROOT on 127.0.0.1:$NGINX_PORT, its own config,
# pid and logs in $WORK/nginx.
start_nginx() {
	local root=$1 d=$WORK/nginx
	mkdir -p "$d/tmp"
	NGINX_PORT=$(free_port)
	cat >"$d/nginx.conf" <<CONF
daemon off;
master_process off;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 256; }
http {
	access_log $d/access.log;
	client_body_temp_path $d/tmp;
	proxy_temp_path $d/tmp;
	fastcgi_temp_path $d/tmp;
	uwsgi_temp_path $d/tmp;
	scgi_temp_path $d/tmp;
	server {
		listen 127.0.0.1:$NGINX_PORT;
		root $root;
	}
}
CONF
	nginx -c "$d/nginx.conf" -p "$d" &
	NGINX_PID=$!
	for _ in $(seq 1 100); do
		curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null && return 0
		python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$NGINX_PORT),0.2)" 2>/dev/null && return 0
		kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited at start: $(cat "$d/error.log")"
		sleep 0.05
	done
	fail "nginx did not listen on $NGINX_PORT"
}

stop_nginx() {
	[ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
	NGINX_PID=""
	return 0
}

# start_proxy [faultproxy args...]: listens on $PROXY_PORT (kept if set),
# forwarding to nginx.
start_proxy() {
	rm -f "$WORK/proxy.port"
	python3 "$(dirname "${BASH_SOURCE[0]}")/faultproxy.py" --listen "${PROXY_PORT:-0}" \
		--upstream "127.0.0.1:$NGINX_PORT" --port-file "$WORK/proxy.port" "$@" \
		>>"$WORK/proxy.log" 2>&1 &
	PROXY_PID=$!
	for _ in $(seq 1 100); do
		[ -s "$WORK/proxy.port" ] && { PROXY_PORT=$(cat "$WORK/proxy.port"); return 0; }
		kill -0 "$PROXY_PID" 2>/dev/null || fail "faultproxy exited: $(cat "$WORK/proxy.log")"
		sleep 0.05
	done
	fail "faultproxy did not start"
}

stop_proxy() {
	[ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null
	PROXY_PID=""
	return 0
}

remote_cleanup() {
	stop_proxy
	stop_nginx
	cleanup
}
trap 'remote_cleanup' EXIT
