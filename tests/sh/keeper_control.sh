# keeper_control.sh - many snapshots per daemon survive their engine:
# `pagein serve --control` runs under the keeper (the default), which
# keeps the control socket and every socket `pagein ctl add` made, with
# its options, so that a new engine serves them again before it adopts
# their sessions. Two sockets with different snapshots and options; VMs
# on both (mainline, memfd, secret hiding, one still in its handshake)
# when the engine is SIGKILLed: every VM verifies against its own
# snapshot, and `ctl list` shows both sockets from the new engine. A
# socket removed stays removed across the next kill; a socket removed
# while a VM holds it (its drain in progress) is drained and removed by
# the next engine; `ctl upgrade` runs a new engine with every socket;
# SIGTERM removes every socket file and the control socket.
# tsan
. "$(dirname "$0")/lib.sh"
CTL=$WORK/control.sock
ctl() { "$PAGEIN" ctl --control "$CTL" "$@"; }
gen_snapshot "$WORK/a" 64M 1
gen_snapshot "$WORK/b" 48M 2
gen_snapshot "$WORK/c" 8M 3

"$PAGEIN" serve --control "$CTL" --log-level info --drain-timeout 30 >"$WORK/pagein.log" 2>&1 &
PAGEIN_PID=$!
keeper=$PAGEIN_PID
engine_pid() { cat /proc/"$keeper"/task/*/children 2>/dev/null | awk '{print $1; exit}'; }
trap 'e=$(engine_pid); [ -n "$e" ] && kill -9 "$e" 2>/dev/null; cleanup' EXIT
for _ in $(seq 1 100); do [ -S "$CTL" ] && break; sleep 0.05; done
[ -S "$CTL" ] || fail "no control socket"
new_engine() { # waits for an engine other than $1 that answers on the control socket
	local e
	for _ in $(seq 1 100); do
		e=$(engine_pid)
		[ -n "$e" ] && [ "$e" != "$1" ] && ctl list >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	fail "no new engine after $1"
}
run_vm() { # name socket snapshot [vmmsim options]
	bg_vm "$1" --socket "$2" --snapshot "$3" --timeout 60 --seed 5 "${@:4}"
}

ctl add "$WORK/a" --socket "$WORK/a.sock" >/dev/null || fail "add a"
ctl add "$WORK/b" --socket "$WORK/b.sock" --fault-around 0 --populate none >/dev/null || fail "add b"
run_vm a-anon "$WORK/a.sock" "$WORK/a" --balloon 20
run_vm a-memfd "$WORK/a.sock" "$WORK/a" --memory memfd
run_vm b-stage2 "$WORK/b.sock" "$WORK/b" --memory memfd --protocol secret-hiding --stage2 0.5
run_vm b-slow "$WORK/b.sock" "$WORK/b" --split-handshake 40
sleep 0.4
e1=$(engine_pid)
kill -9 "$e1"
note "engine $e1 killed with 4 VMs on 2 sockets"
new_engine "$e1"
out=$(ctl list)
echo "$out" | grep -q "^$WORK/a.sock	$WORK/a	" || fail "the new engine does not serve a: $out"
echo "$out" | grep -q "^$WORK/b.sock	$WORK/b	" || fail "the new engine does not serve b: $out"
wait_vms
grep -q "session adopted" "$WORK/pagein.log" || fail "no session was adopted"
grep -q "connection adopted from the keeper in its handshake" "$WORK/pagein.log" ||
	fail "the connection in its handshake was not adopted"
note "4 VMs verified across the kill; both sockets served again"

ctl remove "$WORK/b.sock" >/dev/null || fail "remove b"
[ -e "$WORK/b.sock" ] && fail "b.sock left after remove"
e2=$(engine_pid)
kill -9 "$e2"
new_engine "$e2"
out=$(ctl list)
echo "$out" | grep -q "b.sock" && fail "a removed socket came back: $out"
echo "$out" | grep -q "^$WORK/a.sock" || fail "a is gone: $out"
[ -e "$WORK/b.sock" ] && fail "b.sock came back"

# A removal in progress (a VM holds a's drain) when the engine dies.
run_vm a-held "$WORK/a.sock" "$WORK/a" --hold 3
for _ in $(seq 1 100); do grep -q "^verify: ok" "$WORK/a-held.out" && break; sleep 0.05; done
ctl remove "$WORK/a.sock" >"$WORK/remove.out" 2>&1 &
rm_pid=$!
for _ in $(seq 1 100); do grep -q "removing $WORK/a.sock" "$WORK/pagein.log" && break; sleep 0.05; done
e3=$(engine_pid)
kill -9 "$e3"
wait "$rm_pid" 2>/dev/null
new_engine "$e3"
wait_vms
for _ in $(seq 1 100); do ctl list | grep -q "a.sock" || break; sleep 0.1; done
ctl list | grep -q "a.sock" && fail "the removal was not finished by the new engine: $(ctl list)"
[ -e "$WORK/a.sock" ] && fail "a.sock left after its drain"
note "a removal cut short by a kill was finished by the next engine"

ctl add "$WORK/c" --socket "$WORK/c.sock" --memory-check 2>/dev/null && fail "a bad option was taken"
ctl add "$WORK/c" --socket "$WORK/c.sock" >/dev/null || fail "add c"
e4=$(engine_pid)
out=$(ctl upgrade) || fail "ctl upgrade: $out"
echo "$out" | grep -q "upgrading: engine pid $e4" || fail "upgrade said: $out"
new_engine "$e4"
ctl list | grep -q "^$WORK/c.sock	$WORK/c	" || fail "c not served after the upgrade: $(ctl list)"
run_vm c "$WORK/c.sock" "$WORK/c" --memory memfd
wait_vms
grep -q "engine_upgraded\|hands over" "$WORK/pagein.log" || fail "no upgrade line"

kill -TERM "$keeper"
rc=0
wait "$keeper" || rc=$?
PAGEIN_PID=""
[ $rc = 0 ] || fail "the daemon exited $rc on SIGTERM"
for f in "$CTL" "$WORK/a.sock" "$WORK/b.sock" "$WORK/c.sock"; do
	[ -e "$f" ] && fail "$f left behind"
done
grep -qE "Sanitizer|runtime error" "$WORK/pagein.log" && fail "sanitizer report"

# The command line's own socket removed through the control socket: the
# keeper's copy of it refuses connections too.
"$PAGEIN" serve --snapshot "$WORK/c" --socket "$WORK/d.sock" --control "$CTL" >"$WORK/pagein2.log" 2>&1 &
PAGEIN_PID=$!
for _ in $(seq 1 100); do [ -S "$CTL" ] && [ -S "$WORK/d.sock" ] && break; sleep 0.05; done
ctl remove "$WORK/d.sock" >/dev/null || fail "remove the command line's socket"
connect_refused "$WORK/d.sock" || fail "the removed command-line socket still takes connections"
kill -TERM "$PAGEIN_PID"
wait "$PAGEIN_PID" || fail "the second daemon exited $? on SIGTERM"
PAGEIN_PID=""
echo "ok"
