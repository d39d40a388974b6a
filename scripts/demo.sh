#!/usr/bin/env bash
# scripts/demo.sh - a demo restore: generate a snapshot, serve it with
# pagein, restore it with vmmsim (playing Firecracker), print both reports.
# Run through `make demo`. Env: DEMO_SIZE (default 512M), DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${DEMO_SIZE:-512M}
dir=${DEMO_DIR:-${TMPDIR:-/tmp}/pagein-demo}
mkdir -p "$dir"
snap=$dir/snapshot.raw
sock=$dir/pagein.sock
log=$dir/pagein.log

echo "== generating a $size snapshot (30% zero pages, written sparse): $snap"
build/vmmsim gen -o "$snap" --size "$size" --seed 7 --zero-fraction 0.3

echo "== starting: pagein serve --snapshot $snap --socket $sock"
build/pagein serve --snapshot "$snap" --socket "$sock" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done

echo "== restoring with vmmsim (Firecracker mainline protocol, 2 regions, 2 vCPUs"
echo "   in random order, kernel-mode reads from a VMM thread, balloon discards)"
build/vmmsim run --socket "$sock" --snapshot "$snap" --regions 2 --vcpus 2 \
	--pattern random --vmm-thread --balloon 32 --verify-all
echo
echo "== the same snapshot, secret-hiding protocol (memfd standing in for"
echo "   guest_memfd; half the accesses are stage-2 fault requests)"
build/vmmsim run --socket "$sock" --snapshot "$snap" --protocol secret-hiding \
	--memory memfd --regions 2 --vcpus 2 --pattern random --stage2 0.5 --verify-all

kill -TERM $pid
wait $pid || true
trap - EXIT
echo
echo "== pagein's log ($log):"
cat "$log"
