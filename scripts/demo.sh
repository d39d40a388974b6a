#!/usr/bin/env bash
# scripts/demo.sh - a demo restore: generate a snapshot, serve it with
# pagein, restore it with vmmsim (playing Firecracker) twice, and say what
# the two reports (vmmsim's and pagein's log line) mean. The snapshot is
# removed on the way out, Ctrl-C included; the reports and the log stay.
# Run through `make demo`. Env: DEMO_SIZE (default 512M), DEMO_DIR,
# DEMO_RAW=1 also prints the raw reports; DEMO_PAGEIN and DEMO_VMMSIM the
# binaries (default build/pagein, build/vmmsim; tests/sh/demo.sh passes the
# ones under test).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${DEMO_SIZE:-512M}
dir=${DEMO_DIR:-${TMPDIR:-/tmp}/pagein-demo}
mkdir -p "$dir"
snap=$dir/snapshot.raw
sock=$dir/pagein.sock
log=$dir/pagein.log
pid=""
pagein=${DEMO_PAGEIN:-build/pagein}
vmmsim=${DEMO_VMMSIM:-build/vmmsim}

cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	if [ -e "$snap" ]; then
		rm -f "$snap" "$sock"
		echo "== removed the demo snapshot $snap"
	fi
}
trap cleanup EXIT
trap 'echo; echo "== interrupted"; exit 130' INT TERM

# field FILE KEY: the value of "KEY: value" in a vmmsim report.
field() { sed -n "s/^$2: //p" "$1" | head -n1; }
# The first-touch latency percentile P (p50, p99) of a vmmsim report.
pct() { field "$1" first_touch_us | sed -n "s/.*$2 \([0-9.]*\).*/\1/p"; }

# explain REPORT VM TITLE: a few sentences from vmmsim's report and
# pagein's "session ended" line for that VM.
explain() {
	local rep=$1 vm=$2 line=""
	for _ in $(seq 1 100); do
		line=$(grep " $vm pid [0-9]*: session ended" "$log" || true)
		[ -n "$line" ] && break
		sleep 0.05
	done
	local pages touched wall mbs verified verdict
	pages=$(field "$rep" guest_pages)
	touched=$(field "$rep" pages_touched)
	wall=$(field "$rep" wall_s)
	mbs=$(field "$rep" throughput_mb_s)
	verified=$(field "$rep" verify_all_pages)
	verdict=$(field "$rep" verify)
	echo "   the VM touched $((touched * 4 / 1024)) MiB ($touched of $pages pages) in $wall s ($mbs MB/s);"
	echo "   first touch of a page took p50 $(pct "$rep" p50) us, p99 $(pct "$rep" p99) us, as the guest saw it"
	local req
	req=$(field "$rep" stage2_requests)
	if [ "${req:-0}" != 0 ]; then
		local rtt
		rtt=$(field "$rep" stage2_rtt_us | sed -n 's/.*p50 \([0-9.]*\).*/\1/p')
		echo "   ($req stage-2 fault requests from vCPUs, answered in p50 $rtt us);"
	fi
	if [ -z "$line" ]; then
		echo "   pagein's log has no end-of-session line for $vm (see $log)"
	else
		echo "$line" | awk -v vm="$vm" '{
			match($0, /faults [0-9]+ missing\/[0-9]+ minor/); split(substr($0, RSTART, RLENGTH), f, /[ \/]/)
			match($0, /[0-9]+ fills for [0-9]+ pages/); split(substr($0, RSTART, RLENGTH), n, " ")
			match($0, /\(fault [0-9]+, fault-around [0-9]+, prefetch [0-9]+, background [0-9]+, request [0-9]+\)/)
			split(substr($0, RSTART + 1, RLENGTH - 2), k, /[ ,]+/)
			ahead = k[4] + k[6] + k[8]
			match($0, /read [0-9.]+ [KMG]iB from the snapshot/); rd = substr($0, RSTART + 5, RLENGTH - 5 - 18)
			match($0, /complete in [0-9.]+ s/); done = substr($0, RSTART, RLENGTH)
			printf "   pagein served %d faults (%d missing, %d minor) for %d pages;\n", f[2] + f[4], f[2], f[4], n[4]
			printf "   %.1f%% of its %d fills were ahead of the guest (fault-around %d, background %d,\n",
				n[1] ? 100 * ahead / n[1] : 0, n[1], k[4], k[8]
			printf "   prefetch %d), %d on a fault, %d on a stage-2 request;\n", k[6], k[2], k[10]
			printf "   it read %s from the snapshot (zero pages need no read); restore %s%s\n",
				rd, done == "" ? "not complete" : done, done == "" ? "" : " after the handshake"
		}'
	fi
	if [ "$verdict" = ok ] && [ "$verified" = "$pages" ]; then
		echo "   every byte of all $pages pages was compared with the snapshot: identical"
	else
		echo "   VERIFICATION FAILED: vmmsim says '$verdict' ($verified pages checked); see $rep"
		return 1
	fi
}

echo "== generating a $size snapshot (30% zero pages, written sparse): $snap"
"$vmmsim" gen -o "$snap" --size "$size" --seed 7 --zero-fraction 0.3

echo "== starting: pagein serve --snapshot $snap --socket $sock"
"$pagein" serve --snapshot "$snap" --socket "$sock" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done

echo "== restoring with vmmsim (Firecracker mainline protocol, 2 regions, 2 vCPUs"
echo "   in random order, kernel-mode reads from a VMM thread, balloon discards)"
"$vmmsim" run --socket "$sock" --snapshot "$snap" --regions 2 --vcpus 2 \
	--pattern random --vmm-thread --balloon 32 --verify-all >"$dir/report-mainline.txt"
[ "${DEMO_RAW:-}" = 1 ] && cat "$dir/report-mainline.txt"
explain "$dir/report-mainline.txt" vm1
echo
echo "== the same snapshot, secret-hiding protocol (memfd standing in for"
echo "   guest_memfd; half the accesses are stage-2 fault requests)"
"$vmmsim" run --socket "$sock" --snapshot "$snap" --protocol secret-hiding \
	--memory memfd --regions 2 --vcpus 2 --pattern random --stage2 0.5 --verify-all \
	>"$dir/report-secret-hiding.txt"
[ "${DEMO_RAW:-}" = 1 ] && cat "$dir/report-secret-hiding.txt"
explain "$dir/report-secret-hiding.txt" vm2

kill -TERM "$pid" 2>/dev/null || true
wait "$pid" || true
pid=""
echo
echo "== raw reports: $dir/report-mainline.txt, $dir/report-secret-hiding.txt (DEMO_RAW=1 prints them)"
echo "== pagein's log ($log):"
cat "$log"
