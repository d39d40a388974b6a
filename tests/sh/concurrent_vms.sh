# tsan
# concurrent_vms.sh - two VMs restore at once (one per protocol) while a
# third connection sends garbage with a uffd; both complete and verify, the
# garbage is refused with a log line, its sender killed (--on-failure kill:
# it handed over guest memory nobody will serve), and the daemon goes on.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 32M
start_pagein "$WORK/snap" --threads 3
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 120 --vcpus 2 --regions 2 \
	--vmm-thread --balloon 10 --verify-all >"$WORK/a.out" 2>&1 &
a=$!
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 120 --protocol secret-hiding \
	--memory memfd --vcpus 2 --stage2 0.5 --balloon 10 --verify-all >"$WORK/b.out" 2>&1 &
b=$!
"$VMMSIM" handshake --socket "$SOCK" --json '}{ not json at all' --wait 5 >"$WORK/c.out" 2>&1
rc_c=$?
wait $a; rc_a=$?
wait $b; rc_b=$?
[ $rc_a = 0 ] && grep -q '^verify: ok' "$WORK/a.out" || { tail "$WORK/a.out"; fail "VM a"; }
[ $rc_b = 0 ] && grep -q '^verify: ok' "$WORK/b.out" || { tail "$WORK/b.out"; fail "VM b"; }
[ $rc_c = 137 ] || { cat "$WORK/c.out"; fail "the garbage sender was not killed (exit $rc_c)"; }
expect_log "refused handshake: malformed JSON"
expect_log "killed the VMM \(--on-failure kill\)"
pagein_alive
stop_pagein
