#!/usr/bin/env bash
# scripts/soak.sh - the core acceptance run: a 1 GiB snapshot (30% zero
# pages) restored ROUNDS times (default 20) for each protocol x memory type,
# 2 regions, 2 vCPUs in random order, the VMM thread's kernel-mode reads,
# balloon discards, guest writes and (secret hiding) stage-2 requests on the
# same pages; every byte verified. Stops at the first failure.
# Usage: make soak [ROUNDS=20 SOAK_SIZE=1G]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-20}
size=${SOAK_SIZE:-1G}
dir=$(mktemp -d "${TMPDIR:-/tmp}/pagein-soak.XXXXXX")
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
build/vmmsim gen -o "$dir/snap" --size "$size" --seed 11 --zero-fraction 0.3
build/pagein serve --snapshot "$dir/snap" --socket "$dir/sock" >"$dir/pagein.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -S "$dir/sock" ] && break; sleep 0.05; done
start=$SECONDS
n=0
for round in $(seq 1 "$rounds"); do
	for combo in mainline:anon mainline:memfd secret-hiding:memfd; do
		proto=${combo%%:*} mem=${combo##*:}
		extra=()
		[ "$proto" = secret-hiding ] && extra=(--stage2 0.5)
		if ! build/vmmsim run --socket "$dir/sock" --snapshot "$dir/snap" --protocol "$proto" \
			--memory "$mem" --regions 2 --vcpus 2 --pattern random --vmm-thread \
			--balloon 64 --write-fraction 0.02 --seed "$round" --verify-all --timeout 120 \
			"${extra[@]}" >"$dir/run.out" 2>&1; then
			cat "$dir/run.out"
			tail -20 "$dir/pagein.log"
			echo "soak: FAILED in round $round ($proto, $mem) after $n good restores"
			exit 1
		fi
		n=$((n + 1))
		printf 'round %2d %-13s %-5s %s\n' "$round" "$proto" "$mem" \
			"$(grep -E '^wall' "$dir/run.out" | head -1)"
	done
done
kill -TERM $pid
wait $pid || true
echo "soak: $n restores of a $size snapshot verified in $((SECONDS - start)) s"
