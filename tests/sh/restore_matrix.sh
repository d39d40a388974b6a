# restore_matrix.sh - pagein serve + vmmsim for each protocol x memory type
# x access pattern: 2 regions with a gap, 2 vCPUs, the VMM thread's
# kernel-mode reads, balloon discards, guest writes, (secret hiding)
# stage-2 requests on the same pages; every byte verified.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 64M
start_pagein "$WORK/snap"
n=0
for combo in mainline:anon mainline:memfd secret-hiding:memfd; do
	proto=${combo%%:*} mem=${combo##*:}
	for pattern in seq random hot; do
		extra=()
		[ "$proto" = secret-hiding ] && extra=(--stage2 0.5)
		note "$proto $mem $pattern"
		vm "$proto-$mem-$pattern" --snapshot "$WORK/snap" --protocol "$proto" \
			--memory "$mem" --regions 2 --vcpus 2 --pattern "$pattern" --touch 0.5 \
			--vmm-thread --balloon 20 --write-fraction 0.05 --seed $((n += 1)) \
			--verify-all "${extra[@]}"
		pagein_alive
	done
done
expect_log "session ended \(VMM exited\)"
# Each session ends exactly once (one stats line each).
[ "$(grep -c 'session ended' "$WORK/pagein.log")" = 9 ] ||
	fail "expected 9 'session ended' lines: $(grep -c 'session ended' "$WORK/pagein.log")"
stop_pagein
echo "9 restores verified"
