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
	start_pagein "http://127.0.0.1:$PROXY_PORT/mem.pgn" --fetch-deadline 60 --fetch-parallel 4
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

note "a parked fault does not hold up the other vCPUs"
# 8 vCPUs, round-robin over the trace: vCPU 0's first page is in a chunk not
# fetched yet (the proxy delays every response 1.5 s from then on), every
# other page in chunks already here. Were the pump to wait for the fetch,
# the other vCPUs' faults meanwhile would wait too (about 7 touches over 1 s:
# p99 of 400 is the 4th slowest); parked, only vCPU 0's first touch is slow.
start_proxy
start_pagein "http://127.0.0.1:$PROXY_PORT/mem.pgn" --populate none --fault-around 0
seq 0 511 >"$WORK/warm.trace"
vm park-warm --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern "trace:$WORK/warm.trace"
stop_proxy
start_proxy --delay-ms 1500
# A page that is stored (a zero page needs no fetch), far from the others.
far=$(python3 -c '
import sys
f = open(sys.argv[1], "rb")
for p in range(5000, 8192):
    f.seek(p * 4096)
    if any(f.read(4096)):
        print(p)
        break' "$WORK/mem.raw")
{ echo "$far"; seq 1 399; } >"$WORK/mixed.trace"
vm park-mixed --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 8 --pattern "trace:$WORK/mixed.trace"
stop_pagein
stop_proxy
grep first_touch_us "$WORK/park-mixed.out"
python3 - "$WORK/park-mixed.out" <<'PY' || fail "other vCPUs waited for the parked fault's fetch"
import re, sys
m = re.search(r"first_touch_us: p50 ([0-9.]+) p99 ([0-9.]+) max ([0-9.]+)", open(sys.argv[1]).read())
p50, p99, mx = map(float, m.groups())
print("p50 %.0f us, p99 %.0f us, max %.0f us" % (p50, p99, mx))
sys.exit(0 if mx >= 1000000 and p99 < 500000 else 1)
PY

note "memfd guest memory (missing+minor): a parked fault does not hold up the other vCPUs"
# The same with the guest memory in a memfd registered missing+minor
# (shmem). Its first touches are MISSING faults: vmmsim has no way to put a
# page into the memfd's page cache that pagein did not fill, which is what
# a MINOR fault needing the network takes (fill_minor's write_page). Such a
# MINOR fault parks the same way (fault.c, fill.c); this run checks the
# shmem path and that nothing in it waits on the pump.
start_proxy
start_pagein "http://127.0.0.1:$PROXY_PORT/mem.pgn" --populate none --fault-around 0
vm park-warm-m --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --memory memfd --pattern "trace:$WORK/warm.trace"
stop_proxy
start_proxy --delay-ms 1500
vm park-mixed-m --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 8 --memory memfd --pattern "trace:$WORK/mixed.trace"
stop_pagein
stop_proxy
grep first_touch_us "$WORK/park-mixed-m.out"
python3 - "$WORK/park-mixed-m.out" <<'PY' || fail "other vCPUs waited for the parked fault's fetch (memfd)"
import re, sys
m = re.search(r"first_touch_us: p50 ([0-9.]+) p99 ([0-9.]+) max ([0-9.]+)", open(sys.argv[1]).read())
p50, p99, mx = map(float, m.groups())
print("p50 %.0f us, p99 %.0f us, max %.0f us" % (p50, p99, mx))
sys.exit(0 if mx >= 1000000 and p99 < 500000 else 1)
PY
grep -qE "remote \(daemon totals\).* [1-9][0-9]* faults parked" "$WORK/pagein.log" || fail "no fault was parked (memfd)"

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
