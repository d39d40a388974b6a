# remote_faults.sh - a remote snapshot through tests/tools/faultproxy.py:
# connection resets, 503s, truncated bodies and stalls on every 3rd request
# are retried and every VM verifies every byte; a permanent fault past
# --fetch-deadline fails the session that needs the chunk (its VMM killed,
# --on-failure kill) with a line naming the chunk and the URL, and the
# daemon serves on.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../tools/nginx_lib.sh"

mkdir -p "$WORK/www"
gen_snapshot "$WORK/mem.raw" 32M 6
"$PAGEIN" snapshot convert "$WORK/mem.raw" -o "$WORK/www/mem.pgn" -q >/dev/null 2>&1 || fail "convert"
start_nginx "$WORK/www"

for fault in reset 503 truncate stall; do
	note "fault $fault on every 3rd request"
	start_proxy --fault "$fault" --fault-every 3 --delay-ms 2
	start_pagein "http://127.0.0.1:$PROXY_PORT/mem.pgn" --fetch-deadline 20 --fetch-parallel 4
	vm "f-$fault" --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern random --touch 1 --verify-all
	stop_pagein
	line=$(grep -oE "remote \(daemon totals\).*" "$WORK/pagein.log" | tail -1)
	echo "$line"
	echo "$line" | grep -qE " [1-9][0-9]* retries" || fail "no retries counted under $fault"
	stop_proxy
done

note "bandwidth cap and delay: parked faults, other vCPUs served meanwhile"
start_proxy --rate-mbit 80 --delay-ms 20
start_pagein "http://127.0.0.1:$PROXY_PORT/mem.pgn" --populate none
vm slow --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 4 --pattern random --touch 0.3 --verify-all
stop_pagein
grep -qE "remote \(daemon totals\).* [1-9][0-9]* faults parked" "$WORK/pagein.log" || fail "no fault was parked"
stop_proxy

note "permanent 503 past --fetch-deadline: that session fails, the daemon serves on"
start_proxy
start_pagein "http://127.0.0.1:$PROXY_PORT/mem.pgn" --fetch-deadline 2 --populate none
stop_proxy
start_proxy --fault 503 --fault-every 1
"$VMMSIM" run --socket "$SOCK" --timeout 60 --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" \
	--vcpus 2 --pattern random --touch 0.2 --verify-all >"$WORK/dead.out" 2>&1 && fail "a VM restored with no snapshot bytes reachable"
expect_log "session ended \(failed: snapshot cannot give page at offset 0x[0-9a-f]+ \(chunk [0-9]+\): not fetched from http://127.0.0.1:$PROXY_PORT/mem.pgn within --fetch-deadline"
expect_log "killed the VMM \(--on-failure kill\)"
expect_log "last fetch error: .*HTTP 503"
pagein_alive
note "the server is back: the next VM restores (after the failure's 1 s hold)"
stop_proxy
start_proxy
sleep 1.2
vm after --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern random --touch 0.3 --verify-all
stop_pagein
echo "ok"
