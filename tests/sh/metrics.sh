# tsan
# metrics.sh - `pagein serve --metrics`: a real Prometheus server (Debian's
# prometheus) scrapes the daemon every second while it restores VMs; the
# series are then checked through Prometheus's HTTP query API: one session
# started and ended (VMM exited), faults and latency counted, every page
# filled by some path, per-VM series while a VM is open, no session open at
# the end; the chunk cache (a 48 MiB snapshot, more than its 32 MiB) hits
# and evicts; the ioctl results series exist; the daemon-wide pages-present
# gauge counts an open VM's pages; with 66 VMs open at once, per-VM series
# for 64 of them (the bound, docs/operations.md) and
# pagein_sessions_unlabelled == 2. Then a unix:PATH scrape with curl after a
# good VM, a corrupt chunk that fails a session and a refused handshake; a
# corrupt chunk poisoned (--on-corrupt poison) counts in
# pagein_pages_poisoned_total; and the refusals of a bad ADDR and of a busy
# port.
. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || skip "curl is not installed"
PROM=/usr/bin/prometheus
if [ ! -x "$PROM" ]; then
	if [ "$(id -u)" = 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus >/dev/null 2>&1 || true
	fi
	[ -x "$PROM" ] || skip "prometheus (Debian package) is not installed and could not be installed"
fi

PROM_PID=""
trap '[ -n "$PROM_PID" ] && kill -9 "$PROM_PID" 2>/dev/null; cleanup' EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
MPORT=$(free_port)
PPORT=$(free_port)
[ "$MPORT" != "$PPORT" ] || PPORT=$(free_port)

# The daemon serves a pagein-format snapshot, so the chunk cache counts too;
# 48 MiB, more than the cache's 32 MiB, so that it evicts.
gen_snapshot "$WORK/raw" 48M
"$PAGEIN" snapshot convert "$WORK/raw" -o "$WORK/snap.pgn" >/dev/null 2>&1 || fail "convert"
start_pagein "$WORK/snap.pgn" --threads 2 --metrics "127.0.0.1:$MPORT"

# A scrape answers at once (before Prometheus), in the text format.
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$WORK/first.txt" || fail "GET /metrics on 127.0.0.1:$MPORT"
grep -q '^# TYPE pagein_sessions_started_total counter$' "$WORK/first.txt" || fail "no TYPE line"
grep -q '^pagein_sessions_started_total 0$' "$WORK/first.txt" || fail "started != 0 at start"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/other")
[ "$code" = 404 ] || fail "GET /other answered $code, expected 404"

# A busy port and a bad ADDR are refused, naming what is wrong.
out=$("$PAGEIN" serve --snapshot "$WORK/raw" --socket "$WORK/other.sock" \
	--metrics "127.0.0.1:$MPORT" 2>&1) && fail "a second daemon on a busy metrics port started"
echo "$out" | grep -q -- "--metrics 127.0.0.1:$MPORT: cannot listen: Address already in use" ||
	fail "busy port refusal: $out"
for bad in "127.0.0.1:" "nocolon" "unix:" "127.0.0.1:99999"; do
	out=$("$PAGEIN" serve --snapshot "$WORK/raw" --socket "$WORK/other.sock" --metrics "$bad" 2>&1) &&
		fail "--metrics $bad accepted"
	echo "$out" | grep -q -- "--metrics $bad: " || fail "--metrics $bad: refusal does not name it: $out"
done
note "refusals: ok"

mkdir -p "$WORK/prom"
cat >"$WORK/prom/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pagein
    static_configs:
      - targets: ['127.0.0.1:$MPORT']
EOF
"$PROM" --config.file "$WORK/prom/prometheus.yml" --storage.tsdb.path "$WORK/prom/data" \
	--web.listen-address "127.0.0.1:$PPORT" >"$WORK/prom/log" 2>&1 &
PROM_PID=$!
API="http://127.0.0.1:$PPORT"
for i in $(seq 1 300); do
	curl -sf "$API/-/ready" >/dev/null 2>&1 && break
	kill -0 "$PROM_PID" 2>/dev/null || { tail "$WORK/prom/log"; fail "prometheus exited at start"; }
	[ "$i" = 300 ] && { tail "$WORK/prom/log"; fail "prometheus not ready in 30 s"; }
	sleep 0.1
done

# q EXPR: the value of an instant query (first series), or "none".
q() {
	curl -s --get --data-urlencode "query=$1" "$API/api/v1/query" | python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["data"]["result"]
    print(r[0]["value"][1] if r else "none")
except Exception as e:
    print("error:", e)'
}
# expect_q EXPR: EXPR (a PromQL comparison) holds within 30 s.
expect_q() {
	local v
	for _ in $(seq 1 60); do
		v=$(q "$1")
		if [ "$v" != none ] && [ "${v#error}" = "$v" ]; then
			echo "ok: $1 (value $v)"
			return 0
		fi
		sleep 0.5
	done
	tail -5 "$WORK/prom/log"
	fail "Prometheus: '$1' did not hold within 30 s (${2:-})"
}

expect_q 'up{job="pagein"} == 1' "the daemon is scraped"

# One VM restores, verifies every page and exits: its session ends.
vm one --snapshot "$WORK/raw" --vcpus 2 --verify-all
expect_log "vm1 pid [0-9]+: session ended \(VMM exited\)"
line=$(grep "vm1 pid .*session ended" "$WORK/pagein.log")
pages=$(echo "$line" | sed -nE 's/.* fills for ([0-9]+) pages.*/\1/p')
fills=$(echo "$line" | sed -nE 's/.*; ([0-9]+) fills for .*/\1/p')
[ -n "$pages" ] && [ "$pages" -gt 0 ] || fail "no page count in: $line"

expect_q 'pagein_sessions_started_total == 1'
expect_q 'pagein_sessions_ended_total{cause="vmm_exited"} == 1'
expect_q 'sum(pagein_sessions_ended_total) == 1'
expect_q 'pagein_sessions_failed_total == 0'
expect_q 'pagein_faults_total{kind="missing"} > 0'
expect_q "sum(pagein_pages_filled_total) == $fills" "fills in the session's end line"
expect_q "sum(pagein_pages_filled_total) == $pages" "pages_total of the session"
expect_q 'pagein_fault_latency_seconds_count > 0'
expect_q 'pagein_fault_latency_seconds_count == pagein_faults_total{kind="missing"} + ignoring(kind) pagein_faults_total{kind="minor"}'
expect_q 'pagein_fault_latency_seconds_bucket{le="+Inf"} == ignoring(le) pagein_fault_latency_seconds_count'
expect_q 'pagein_source_read_bytes_total > 0'
expect_q 'pagein_ioctl_ops_total{op="copied"} > 0'
expect_q 'pagein_chunk_cache_misses_total > 0'
expect_q 'pagein_chunk_cache_hits_total > 0' "chunks read more than once while cached"
expect_q 'pagein_chunk_cache_evictions_total > 0' "48 MiB through a 32 MiB cache"
expect_q 'pagein_chunk_cache_bytes <= pagein_chunk_cache_limit_bytes'
expect_q 'count(pagein_ioctl_results_total) == 3' "eexist, eagain and wake series"
expect_q 'pagein_ioctl_results_total{result="eexist"} >= 0'
expect_q 'pagein_ioctl_results_total{result="eagain"} >= 0'
expect_q 'pagein_ioctl_results_total{result="wake"} >= 0'
expect_q 'pagein_pages_poisoned_total == 0'
expect_q 'pagein_corrupt_chunks_total == 0'
expect_q 'pagein_sessions_open == 0'
expect_q 'pagein_pages == 0'

# A second VM stays open a while: it has its own series, and the gauges
# count it; when it exits, the totals keep both sessions.
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/raw" --timeout 60 --vcpus 2 \
	--verify-all --hold 120 >"$WORK/two.out" 2>&1 &
two=$!
expect_q 'pagein_sessions_open == 1'
expect_q "pagein_vm_pages{vm=\"vm2\"} == $pages"
expect_q "pagein_pages == $pages"
expect_q "pagein_vm_pages_present{vm=\"vm2\"} == $pages"
expect_q "pagein_pages_present == $pages" "the daemon-wide gauge: the pages vm2 restored"
# Held as long as the checks take (a busy machine scrapes late), then
# ended: its report is out before the hold.
for _ in $(seq 1 600); do grep -q '^verify: ' "$WORK/two.out" && break; sleep 0.1; done
kill -TERM $two 2>/dev/null
wait $two 2>/dev/null
grep -q '^verify: ok' "$WORK/two.out" || { tail "$WORK/two.out"; fail "VM two did not verify"; }
expect_q 'pagein_sessions_ended_total{cause="vmm_exited"} == 2'
expect_q "sum(pagein_pages_filled_total) == 2 * $pages"
expect_q 'pagein_sessions_open == 0'
expect_q 'absent(pagein_vm_pages{vm="vm2"})' "an ended VM's series go"
expect_q 'pagein_sessions_unlabelled == 0'

# The bound of the per-VM series: 66 tiny VMs (1 MiB of the snapshot each)
# held open at once; 64 of them have series, the other 2 are counted.
nvm=66
held=()
for i in $(seq 1 $nvm); do
	"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/raw" --mem-size 1M --timeout 60 --vcpus 1 \
		--verify-all --hold 120 >"$WORK/held-$i.out" 2>&1 &
	held+=($!)
done
expect_q "pagein_sessions_open == $nvm" "$nvm VMs held open"
expect_q "count(pagein_vm_pages) == 64" "per-VM series for the first 64 sessions only"
expect_q "count(pagein_vm_pages_present) == 64"
expect_q "pagein_sessions_unlabelled == $((nvm - 64))" "the sessions past the bound"
expect_q "pagein_pages == $nvm * 256" "every open VM's pages in the daemon-wide gauge"
kill -TERM "${held[@]}" 2>/dev/null
for p in "${held[@]}"; do wait "$p" 2>/dev/null; done
nok=$(grep -l '^verify: ok' "$WORK"/held-*.out | wc -l)
[ "$nok" = $nvm ] || fail "only $nok of the $nvm held VMs verified"
expect_q 'pagein_sessions_open == 0'
expect_q 'pagein_sessions_unlabelled == 0'
expect_q 'absent(pagein_vm_pages)'
note "per-VM series bound: ok"
pagein_alive
stop_pagein
kill "$PROM_PID" 2>/dev/null
wait "$PROM_PID" 2>/dev/null
PROM_PID=""

# unix:PATH, scraped with curl, on a snapshot with a corrupt chunk: a good
# VM, one that faults on the bad chunk (its session fails, its VMM is
# killed), and a garbage handshake that hands over a uffd (refused, killed).
cp "$WORK/snap.pgn" "$WORK/bad.pgn"
size=$(stat -c %s "$WORK/bad.pgn")
printf '\xff' | dd of="$WORK/bad.pgn" bs=1 seek=$((size - 300)) conv=notrunc 2>/dev/null
bad=$("$PAGEIN" snapshot verify "$WORK/bad.pgn" 2>&1 | sed -n 's/.*first bad chunk \([0-9]*\).*/\1/p')
[ -n "$bad" ] || fail "no corrupt chunk made"
seq $((bad * 64)) $((bad * 64 + 63)) >"$WORK/bad.trace" # 256 KiB chunks of 4 KiB pages
seq 0 $((bad * 64 - 1)) >"$WORK/good.trace"
start_pagein "$WORK/bad.pgn" --threads 2 --on-corrupt fail --populate none --fault-around 0 \
	--metrics "unix:$WORK/metrics.sock"
[ -S "$WORK/metrics.sock" ] || fail "no metrics socket $WORK/metrics.sock"
vm three --snapshot "$WORK/raw" --vcpus 1 --pattern "trace:$WORK/good.trace"
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/raw" --vcpus 1 --pattern "trace:$WORK/bad.trace" \
	--timeout 10 >"$WORK/four.out" 2>&1 && fail "a corrupt chunk read back as good"
expect_log "session ended \(failed: snapshot cannot give page"
"$VMMSIM" handshake --socket "$SOCK" --json '}{ not json' --wait 5 >"$WORK/five.out" 2>&1
[ $? = 137 ] || fail "the garbage sender was not killed: $(cat "$WORK/five.out")"
expect_log "refused handshake"
# scrape_has LINE...: every LINE is in a scrape within 30 s.
scrape_has() {
	for _ in $(seq 1 60); do
		curl -sf --unix-socket "$WORK/metrics.sock" http://localhost/metrics >"$WORK/unix.txt" ||
			fail "GET /metrics over unix:$WORK/metrics.sock"
		local l missing=""
		for l in "$@"; do
			grep -qxF -- "$l" "$WORK/unix.txt" || missing="$l"
		done
		[ -z "$missing" ] && { printf 'ok: unix scrape has %s\n' "$@"; return 0; }
		sleep 0.5
	done
	grep '^pagein_' "$WORK/unix.txt" | head -40
	fail "unix scrape: no line '$missing'"
}
scrape_has 'pagein_sessions_started_total 2' 'pagein_sessions_ended_total{cause="vmm_exited"} 1' \
	'pagein_sessions_ended_total{cause="failed"} 1' 'pagein_sessions_ended_total{cause="refused"} 1' \
	'pagein_sessions_failed_total 2' 'pagein_sessions_open 0' 'pagein_connections_open 0'
grep -qE '^pagein_corrupt_chunks_total [1-9][0-9]*$' "$WORK/unix.txt" || fail "no corrupt chunk counted"
grep -qE '^pagein_chunk_cache_misses_total [1-9][0-9]*$' "$WORK/unix.txt" || fail "no chunk cache misses"
echo "ok: unix scrape: $(grep '^pagein_corrupt_chunks_total' "$WORK/unix.txt")"
stop_pagein

# --on-corrupt poison: the page the snapshot cannot give is poisoned, the
# guest gets a memory error there, and the counters say so.
start_pagein "$WORK/bad.pgn" --threads 2 --on-corrupt poison --populate none --fault-around 0 \
	--metrics "unix:$WORK/metrics.sock"
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/raw" --vcpus 1 --pattern "trace:$WORK/bad.trace" \
	--timeout 10 >"$WORK/six.out" 2>&1 && fail "a poisoned page read back as good"
grep -q SIGBUS "$WORK/six.out" || fail "poison: the guest did not get a memory error: $(cat "$WORK/six.out")"
expect_log "poisoned [1-9][0-9]* pages? at offset"
scrape_has 'pagein_sessions_started_total 1' 'pagein_sessions_open 0'
grep -qE '^pagein_pages_poisoned_total [1-9][0-9]*$' "$WORK/unix.txt" ||
	fail "no poisoned page counted: $(grep poison "$WORK/unix.txt")"
grep -qE '^pagein_ioctl_ops_total\{op="poisoned"\} [1-9][0-9]*$' "$WORK/unix.txt" ||
	fail "no UFFDIO_POISON counted: $(grep poison "$WORK/unix.txt")"
grep -qE '^pagein_corrupt_chunks_total [1-9][0-9]*$' "$WORK/unix.txt" || fail "no corrupt chunk counted (poison)"
echo "ok: $(grep '^pagein_pages_poisoned_total' "$WORK/unix.txt")"
stop_pagein
[ -e "$WORK/metrics.sock" ] && fail "metrics socket left behind"
echo "metrics: ok"
exit 0
