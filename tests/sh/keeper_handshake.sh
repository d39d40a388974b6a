# keeper_handshake.sh - pagein serve --keeper: an engine killed while VMs
# are in the middle of their handshake. Each VM sends its handshake in 40
# pieces 20 ms apart (vmmsim --split-handshake), and the engine is
# SIGKILLed about 0.3 s into them: the keeper holds every connection from
# its accept, the handshake is only peeked at until it is complete, and
# the new engine reads it again from its first byte. Every VM (mainline
# 1.12, mainline 1.7 which closes its socket right after the handshake,
# memfd MINOR, secret hiding) must restore verified. Then a second kill
# lands just after a burst of short handshakes, at whatever point they
# are: the same must hold. Last, a VM after a restart with no session
# left must get a number no earlier VM had.
# tsan
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 64M
start_pagein "$WORK/snap" --keeper --log-level info
keeper=$PAGEIN_PID
engine_pid() { cat /proc/"$keeper"/task/*/children 2>/dev/null | awk '{print $1; exit}'; }
trap 'e=$(engine_pid); [ -n "$e" ] && kill -9 "$e" 2>/dev/null; cleanup' EXIT
wait_engine() {
	for _ in $(seq 1 100); do
		e=$(engine_pid)
		[ -n "$e" ] && grep -q "keeper_started\|keeper pid\|engine pid $e serves" "$WORK/pagein.log" && return 0
		sleep 0.05
	done
	fail "no engine serving"
}
run_vm() { # name, vmmsim options...
	bg_vm "$1" --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed 7 "${@:2}"
}

wait_engine
run_vm mainline --split-handshake 40
run_vm fc17 --split-handshake 40 --fc-version 1.7
run_vm memfd --split-handshake 40 --memory memfd
run_vm stage2 --split-handshake 40 --memory memfd --protocol secret-hiding --stage2 0.5
sleep 0.3
grep -q "session started" "$WORK/pagein.log" && fail "a handshake was complete before the kill: the test proves nothing"
old=$(engine_pid)
kill -9 "$old"
note "engine $old killed with 4 handshakes in progress"
wait_vms
adopted=$(grep -c "connection adopted from the keeper in its handshake" "$WORK/pagein.log")
[ "$adopted" -ge 4 ] || fail "$adopted connections adopted in their handshake, expected 4"
note "4 VMs verified; $adopted connections adopted in their handshake"

# A burst of whole handshakes and a kill in the middle of them.
wait_engine
for i in $(seq 1 8); do
	case $((i % 3)) in
	0) run_vm b$i --seed $i ;;
	1) run_vm b$i --seed $i --memory memfd ;;
	2) run_vm b$i --seed $i --memory memfd --protocol secret-hiding --stage2 0.5 ;;
	esac
done
sleep 0.0$((RANDOM % 5))
kill -9 "$(engine_pid)"
wait_vms
note "8 VMs started around a kill verified"

# Every VM has ended: a new engine must still not give out a number an
# earlier one did (names, --record %n).
old=$(engine_pid)
kill -9 "$old"
for _ in $(seq 1 100); do e=$(engine_pid); [ -n "$e" ] && [ "$e" != "$old" ] && break; sleep 0.05; done
run_vm last
wait_vms
dups=$(grep -o 'vm[0-9]* pid [0-9]*: session started' "$WORK/pagein.log" | awk '{print $1}' | sort | uniq -d)
[ -z "$dups" ] || fail "connection numbers given out twice: $dups"
grep -qE "session ended \((failed|handshake refused)|refused handshake" "$WORK/pagein.log" && fail "a session failed"
stop_pagein
echo "ok"
