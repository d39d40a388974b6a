# lifecycle.sh - the daemon's signals and systemd integration:
#  - SIGHUP reopens --log-file (logrotate) and the daemon goes on serving;
#  - SIGTERM drains: new connections refused, an open session completes,
#    exit 0 after it; --drain-timeout ends sessions still open at the
#    deadline (cause server_stopping, VMM not killed); a second SIGTERM
#    stops at once;
#  - under systemd-socket-activate with a NOTIFY_SOCKET listener: READY=1,
#    STATUS=, STOPPING=1, a VM restored through the inherited socket, and
#    the socket file (not the daemon's) left in place.
. "$(dirname "$0")/lib.sh"

gen_snapshot "$WORK/snap" 16M
SNAP=$WORK/snap

# vm_bg NAME ARGS...: vmmsim run in the background; its pid in VM_PID.
vm_bg() {
	local name=$1
	shift
	"$VMMSIM" run --socket "$SOCK" --timeout 60 --snapshot "$SNAP" "$@" >"$WORK/$name.out" 2>&1 &
	VM_PID=$!
}

# vm_wait NAME: the background VM exits 0 with verify: ok.
vm_wait() {
	local rc=0
	wait "$VM_PID" || rc=$?
	[ $rc = 0 ] && grep -q '^verify: ok' "$WORK/$1.out" || {
		tail -15 "$WORK/$1.out"
		fail "VM $1 exited $rc"
	}
}

# wait_exit TIMEOUT: pagein exits within TIMEOUT seconds; its code in RC,
# the seconds it took in TOOK.
wait_exit() {
	local t0 i
	t0=$(date +%s.%N)
	for i in $(seq 1 $(($1 * 20))); do
		kill -0 "$PAGEIN_PID" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$PAGEIN_PID" 2>/dev/null && fail "pagein still running $1 s after the signal"
	RC=0
	wait "$PAGEIN_PID" || RC=$?
	PAGEIN_PID=""
	TOOK=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
	grep -qE "Sanitizer|runtime error" "$WORK/pagein.log" && fail "sanitizer report in pagein log"
	return 0
}

note "--drain-timeout and --log-file at start"
out=$("$PAGEIN" serve --snapshot "$SNAP" --socket "$WORK/x.sock" --drain-timeout -1 2>&1)
[ $? = 2 ] && echo "$out" | grep -q -- "--drain-timeout -1: expected seconds" || fail "--drain-timeout -1: $out"
out=$("$PAGEIN" serve --snapshot "$SNAP" --socket "$WORK/x.sock" --log-file "$WORK/no/such/dir/log" 2>&1)
[ $? = 2 ] && echo "$out" | grep -q -- "--log-file $WORK/no/such/dir/log: No such file" || fail "--log-file in a missing directory: $out"
"$PAGEIN" serve --help | grep -q -- "--drain-timeout S" || fail "serve --help lacks --drain-timeout"
"$PAGEIN" serve --help | grep -q "no configuration file" || fail "serve --help does not say SIGHUP has no configuration to re-read"

note "SIGHUP reopens --log-file; the daemon goes on serving"
LOG=$WORK/serve.log
start_pagein "$SNAP" --log-file "$LOG"
expect_log_in() { # FILE PATTERN WHAT
	for _ in $(seq 1 100); do
		grep -qE -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "no line matching '$2' in $1 ($3)"
}
expect_log_in "$LOG" "serving $SNAP" "the log file gets the daemon's lines"
[ -s "$WORK/pagein.log" ] && fail "lines went to stderr despite --log-file: $(cat "$WORK/pagein.log")"
vm before --snapshot "$SNAP" --pattern random --touch 0.2 --hold 0
expect_log_in "$LOG" "vm1 pid [0-9]+: session ended" "the first VM"
mv "$LOG" "$LOG.1"
kill -HUP "$PAGEIN_PID"
expect_log_in "$LOG" "reopened --log-file $LOG" "after SIGHUP"
pagein_alive
vm after --snapshot "$SNAP" --pattern random --touch 0.2 --verify-all --hold 0
expect_log_in "$LOG" "vm2 pid [0-9]+: session ended" "the VM after SIGHUP"
grep -q "vm2" "$LOG.1" && fail "the renamed file still gets lines after SIGHUP"
grep -q "vm1 pid" "$LOG" && fail "the new file has lines from before SIGHUP"
cp "$LOG" "$WORK/pagein.log" # for stop_pagein's sanitizer check
stop_pagein
cat "$LOG" >>"$WORK/pagein.log"
grep -qE "Sanitizer|runtime error" "$LOG" "$LOG.1" && fail "sanitizer report in the log file"
grep -q "drained" "$LOG" || fail "no drained line in the log file"

note "SIGTERM drains: a VM holding its session completes; new connections are refused"
start_pagein "$SNAP"
vm_bg held --pattern random --touch 0.3 --verify-all --hold 3
expect_log "vm1 pid [0-9]+: session started" "(the held VM)"
sleep 0.3
kill -TERM "$PAGEIN_PID"
expect_log "draining: no longer accepting connections; 1 session open" "after SIGTERM"
[ -S "$SOCK" ] || fail "the socket file went away during the drain (it stays until exit)"
connect_refused "$SOCK" || fail "a connection was accepted during the drain"
pagein_alive
vm_wait held
wait_exit 10
[ "$RC" = 0 ] || fail "pagein exited $RC after the drain"
note "stopped ${TOOK}s after the VM exited"
grep -q "drained: every session has ended" "$WORK/pagein.log" || fail "no drained line"
grep -q "drain_timeout\|drain timeout" "$WORK/pagein.log" && fail "the drain timed out"
grep -qE "vm1 pid [0-9]+: session ended \(VMM exited\)" "$WORK/pagein.log" || fail "the held VM's session did not end with its VMM"
[ -e "$SOCK" ] && fail "socket left after the drain"

note "--drain-timeout 1: a session still open at the deadline is ended, its VMM not killed"
start_pagein "$SNAP" --drain-timeout 1
vm_bg long --pattern seq --touch 0.1 --hold 4
expect_log "vm1 pid [0-9]+: session started" "(the long VM)"
kill -TERM "$PAGEIN_PID"
wait_exit 5
[ "$RC" = 0 ] || fail "pagein exited $RC at the drain deadline"
awk -v t="$TOOK" 'BEGIN { exit !(t >= 0.9 && t < 3) }' || fail "stopped after ${TOOK}s, want about 1 s"
grep -q "drain timeout (1.0 s): ending the 1 session still open" "$WORK/pagein.log" || fail "no drain_timeout line"
grep -qE "vm1 pid [0-9]+: session ended \(server stopping\)" "$WORK/pagein.log" || fail "the session was not ended as server stopping"
grep -q "killed_vmm\|killed the VMM" "$WORK/pagein.log" && fail "the VMM was killed at the deadline"
kill -0 "$VM_PID" 2>/dev/null || fail "the VMM died with the drain"
vm_wait long

for second in TERM INT; do
	note "SIG$second during a drain stops at once"
	start_pagein "$SNAP"
	vm_bg second --pattern seq --touch 0.1 --hold 20
	expect_log "vm1 pid [0-9]+: session started" "(the VM)"
	kill -TERM "$PAGEIN_PID"
	expect_log "draining" "after the first SIGTERM"
	kill -$second "$PAGEIN_PID"
	wait_exit 3
	[ "$RC" = 0 ] || fail "pagein exited $RC on SIG$second during the drain"
	grep -q "SIG$second during the drain: stopping at once" "$WORK/pagein.log" || fail "no line for SIG$second during the drain"
	grep -qE "vm1 pid [0-9]+: session ended \(server stopping\)" "$WORK/pagein.log" ||
		fail "the session was not ended as server stopping"
	kill "$VM_PID" 2>/dev/null
	wait "$VM_PID" 2>/dev/null
done

note "an inherited socket is not shut down by a drain: connections queue for the next start"
# A python3 parent plays the service manager: it holds the listening
# socket, passes it (LISTEN_FDS) and keeps it after the daemon exits.
HELD=$WORK/held.sock
python3 - "$HELD" "$PAGEIN" "$SNAP" "$WORK/held.log" "$WORK/held.result" <<'EOF' &
import os, socket, sys, time
path, pagein, snap, log, result = sys.argv[1:]
ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ls.bind(path)
ls.listen(16)
pid = os.fork()
if pid == 0:
    if ls.fileno() != 3:
        os.dup2(ls.fileno(), 3)
    os.set_inheritable(3, True)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.execv(pagein, [pagein, "serve", "--snapshot", snap, "--log-level", "info"])
for _ in range(100):
    if os.path.exists(log) and "keeper pid" in open(log).read():
        break
    time.sleep(0.05)
os.kill(pid, 15)
os.waitpid(pid, 0)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    c.connect(path)
    out = "queued"
except ConnectionRefusedError:
    out = "refused"
open(result, "w").write(out + "\n")
EOF
HOLDER=$!
wait "$HOLDER" || fail "the socket holder failed: $(cat "$WORK/held.log")"
[ "$(cat "$WORK/held.result")" = queued ] ||
	fail "after the drain, a connection to the inherited socket was $(cat "$WORK/held.result") (it must queue for the next start)"
grep -q "drained" "$WORK/held.log" || fail "the daemon with the held socket did not drain: $(cat "$WORK/held.log")"

note "socket activation and readiness under systemd-socket-activate"
command -v systemd-socket-activate >/dev/null ||
	skip "systemd-socket-activate not found (Debian package systemd; scripts/install-deps.sh installs it)"
NOTIFY=$WORK/notify.sock
python3 - "$NOTIFY" "$WORK/notify.txt" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
with open(sys.argv[2], "a") as out:
    while True:
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        for line in msg.split("\n"):
            out.write(line + "\n")
            out.flush()
        if "STOPPING=1" in msg.split("\n"):
            break
EOF
LISTENER=$!
for _ in $(seq 1 100); do [ -S "$NOTIFY" ] && break; sleep 0.05; done
[ -S "$NOTIFY" ] || fail "the notify listener did not start"
SOCK=$WORK/act.sock
systemd-socket-activate -l "$SOCK" --setenv=NOTIFY_SOCKET="$NOTIFY" \
	"$PAGEIN" serve --snapshot "$SNAP" --log-level debug >"$WORK/pagein.log" 2>&1 &
PAGEIN_PID=$!
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || fail "systemd-socket-activate did not create $SOCK: $(cat "$WORK/pagein.log")"
# systemd-socket-activate starts the daemon at the first connection (as
# systemd does): the VM's connection waits in the backlog until it serves.
vm activated --snapshot "$SNAP" --pattern random --touch 0.5 --verify-all --hold 2 &
AVM=$!
for _ in $(seq 1 100); do grep -q "^READY=1" "$WORK/notify.txt" 2>/dev/null && break; sleep 0.05; done
grep -q "^READY=1" "$WORK/notify.txt" 2>/dev/null || fail "no READY=1 on NOTIFY_SOCKET: $(cat "$WORK/notify.txt" 2>/dev/null)"
grep -q "^STATUS=serving 0 sessions" "$WORK/notify.txt" || fail "no STATUS= line with READY=1"
grep -q "^MAINPID=$PAGEIN_PID" "$WORK/notify.txt" || fail "MAINPID is not the daemon's pid ($PAGEIN_PID)"
expect_log "serving $SNAP .* on $SOCK" "(the inherited socket's path)"
for _ in $(seq 1 60); do grep -q "^STATUS=serving 1 session$" "$WORK/notify.txt" && break; sleep 0.1; done
grep -q "^STATUS=serving 1 session$" "$WORK/notify.txt" || fail "no STATUS=serving 1 session while the VM runs"
wait "$AVM" || fail "the VM through the activated socket failed"
kill -TERM "$PAGEIN_PID"
wait_exit 10
[ "$RC" = 0 ] || fail "pagein under socket activation exited $RC"
wait "$LISTENER"
grep -q "^STOPPING=1" "$WORK/notify.txt" || fail "no STOPPING=1"
[ -S "$SOCK" ] || fail "the daemon unlinked the inherited socket file (it did not create it)"
grep -q "drained" "$WORK/pagein.log" || fail "no drained line under socket activation"

note "socket activation: a --socket that does not match the inherited one is refused"
rm -f "$SOCK"
systemd-socket-activate -l "$SOCK" "$PAGEIN" serve --snapshot "$SNAP" --socket "$WORK/other.sock" >"$WORK/mismatch.out" 2>&1 &
SSA=$!
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
connect_refused "$SOCK" # starts the daemon; its answer does not matter
rc=0
wait "$SSA" || rc=$?
grep -q -- "--socket $WORK/other.sock does not match the inherited socket $SOCK" "$WORK/mismatch.out" && [ $rc = 1 ] ||
	fail "a mismatched --socket: exit $rc: $(cat "$WORK/mismatch.out")"
[ -e "$WORK/other.sock" ] && fail "the mismatched --socket was created"
note "the shipped units pass systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
	U=$WORK/units
	mkdir -p "$U"
	sed "s|@BINDIR@|$(dirname "$PAGEIN")|" systemd/pagein@.service.in >"$U/pagein@vm1.service"
	cp systemd/pagein@.socket "$U/pagein@vm1.socket"
	(cd "$U" && timeout 30 systemd-analyze verify --man=no ./pagein@vm1.socket ./pagein@vm1.service) \
		>"$WORK/verify.out" 2>&1 || fail "systemd-analyze verify: $(cat "$WORK/verify.out")"
	grep -q "ListenStream=/run/pagein/%i.sock" systemd/pagein@.socket &&
		grep -q -- "--socket /run/pagein/%i.sock" systemd/pagein@.service.in ||
		fail "pagein@.socket and pagein@.service name different sockets"
fi
echo "lifecycle: ok"
