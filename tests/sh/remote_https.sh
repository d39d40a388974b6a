# remote_https.sh - a pagein snapshot over https:// from a real nginx with
# TLS and HTTP/2 on loopback, its certificate signed by a private CA made
# here with openssl: with --ca-file the VM restores with every byte
# verified and the statistics line says HTTP/2 was used; without it the
# certificate is refused at start with a line naming the URL and the hint.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../tools/nginx_lib.sh"

command -v openssl >/dev/null 2>&1 || skip "openssl not installed (scripts/install-deps.sh installs it)"
nginx -V 2>&1 | grep -q -- --with-http_ssl_module || skip "this nginx has no TLS (http_ssl_module)"
H2=on
nginx -V 2>&1 | grep -q -- --with-http_v2_module || H2=""

mkdir -p "$WORK/www" "$WORK/tls" "$WORK/ng/tmp"
gen_snapshot "$WORK/mem.raw" 16M 7
"$PAGEIN" snapshot convert "$WORK/mem.raw" -o "$WORK/www/mem.pgn" -q >/dev/null 2>&1 || fail "convert"

note "a private CA and a server certificate for 127.0.0.1"
T=$WORK/tls
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/ca.key" -out "$T/ca.pem" -days 2 \
	-subj "/CN=pagein test CA" >/dev/null 2>&1 || fail "openssl: CA"
openssl req -newkey rsa:2048 -nodes -keyout "$T/srv.key" -out "$T/srv.csr" \
	-subj "/CN=127.0.0.1" >/dev/null 2>&1 || fail "openssl: CSR"
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$T/ext.cnf"
openssl x509 -req -in "$T/srv.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
	-out "$T/srv.pem" -days 2 -extfile "$T/ext.cnf" >/dev/null 2>&1 || fail "openssl: server certificate"

PORT=$(free_port)
cat >"$WORK/ng/nginx.conf" <<CONF
daemon off;
master_process off;
pid $WORK/ng/nginx.pid;
error_log $WORK/ng/error.log;
events { worker_connections 256; }
http {
	access_log $WORK/ng/access.log;
	client_body_temp_path $WORK/ng/tmp;
	proxy_temp_path $WORK/ng/tmp;
	fastcgi_temp_path $WORK/ng/tmp;
	uwsgi_temp_path $WORK/ng/tmp;
	scgi_temp_path $WORK/ng/tmp;
	server {
		listen 127.0.0.1:$PORT ssl${H2:+ http2};
		ssl_certificate $T/srv.pem;
		ssl_certificate_key $T/srv.key;
		root $WORK/www;
	}
}
CONF
nginx -c "$WORK/ng/nginx.conf" -p "$WORK/ng" &
NGINX_PID=$!
for _ in $(seq 1 100); do
	python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),0.2)" 2>/dev/null && break
	kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited at start: $(cat "$WORK/ng/error.log")"
	sleep 0.05
done
URL=https://127.0.0.1:$PORT/mem.pgn

note "without --ca-file: the certificate is refused, naming the URL"
"$PAGEIN" serve --snapshot "$URL" --socket "$WORK/x.sock" >"$WORK/noca.err" 2>&1 &&
	fail "an untrusted certificate was accepted"
cat "$WORK/noca.err"
grep -q "$URL: the server's TLS certificate was refused.*--ca-file" "$WORK/noca.err" ||
	fail "no clear refusal: $(cat "$WORK/noca.err")"

note "with --ca-file: every byte verified${H2:+, over HTTP/2}"
start_pagein "$URL" --ca-file "$T/ca.pem" --populate none
vm tls1 --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern random --touch 0.5 --verify-all
vm tls2 --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern seq --verify-all
stop_pagein
line=$(grep -oE "remote \(daemon totals\).*" "$WORK/pagein.log" | tail -1)
echo "$line"
echo "$line" | grep -qE " [1-9][0-9]* fetches" || fail "nothing fetched"
if [ -n "$H2" ]; then
	echo "$line" | grep -q "HTTP/2" || fail "HTTP/2 not negotiated: $line"
	grep -q '"GET /mem.pgn HTTP/2.0"' "$WORK/ng/access.log" || fail "nginx saw no HTTP/2 request"
else
	echo "nginx has no http_v2_module: HTTP/2 not tested"
fi
kill "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null
NGINX_PID=""
echo "ok"
