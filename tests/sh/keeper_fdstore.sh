# keeper_fdstore.sh - systemd's fd store: with NOTIFY_SOCKET set, the
# keeper sends every session's fds there (FDSTORE=1, FDNAME=s<id>-<role>)
# and removes them when the session ends. No systemd runs as PID 1 here,
# and systemd-socket-activate (lifecycle.sh uses it for socket activation
# and readiness) cannot bring the sessions back: it epoll-waits on every fd
# it passes on, and a session's state and memory memfds cannot be polled
# ("Failed to add event on epoll fd ...: Operation not permitted"). So a
# python3 listener plays systemd: it keeps every fd stored by name, drops
# the removed ones, and later starts a new daemon with them as
# LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID, as systemd does after a restart.
# Three VMs restore (mainline anonymous memory, memfd MINOR faults,
# secret-hiding stage-2 requests, each with balloon discards); the whole
# daemon (keeper and engine) is SIGKILLed while they restore and is down
# 1 s (the VMs stall on their faults); the new daemon must adopt all three
# and every VM must end with "verify: ok". Run twice: the daemon creating
# its socket (stored as "listen"), then (FDSTORE_UNIT=1) the listener
# holding the socket as a .socket unit would and passing it to both
# daemons, named "pagein.socket". A third run (FDSTORE_DRAIN=1) stops the
# daemon with SIGTERM and --drain-timeout 1 instead, as `systemctl
# restart` does: the restores still open at the deadline must be left in
# the store (not ended), the daemon must exit 0 leaving its socket file,
# and the next start must finish them.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || skip "no python3"
SIZE=${KEEPER_FDSTORE_SIZE:-256M}
gen_snapshot "$WORK/snap" "$SIZE"
SOCK=$WORK/pagein.sock

cat >"$WORK/fakesd.py" <<'PY'
# Plays systemd's notify socket and fd store. argv: notify-socket dir
# then the new daemon's argv (started on SIGUSR1).
import array, os, signal, socket, sys, fcntl
path, d, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
log = open(os.path.join(d, "fakesd.log"), "a", buffering=1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
store = {}  # name -> fd, in the order stored
units = []  # (name, fd): a .socket unit's sockets, passed first
if os.environ.get("FAKESD_SOCKET"):
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(os.environ["FAKESD_SOCKET"])
    ls.listen(128)
    units.append(("pagein.socket", ls.fileno()))
spawned = 0
restart = False
def on_usr1(*_):
    global restart
    restart = True
signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
def spawn():
    global spawned
    names = [n for n, _ in units] + list(store)
    fds = [f for _, f in units] + [store[n] for n in list(store)]
    spawned += 1
    pid = os.fork()
    if pid == 0:
        high = [fcntl.fcntl(f, fcntl.F_DUPFD, 1000) for f in fds]
        for i, f in enumerate(high):
            os.dup2(f, 3 + i)  # inheritable
        out = os.open(os.path.join(d, "pagein%d.log" % spawned), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(out, 1)
        os.dup2(out, 2)
        env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)),
                   LISTEN_FDNAMES=":".join(names), NOTIFY_SOCKET=path)
        os.execve(argv[0], argv, env)
    with open(os.path.join(d, "pid.tmp"), "w") as f:
        f.write(str(pid))
    os.rename(os.path.join(d, "pid.tmp"), os.path.join(d, "pid%d" % spawned))
    log.write("spawned %d with %d fds: %s\n" % (pid, len(fds), ":".join(names)))
s.settimeout(0.1)
while True:
    try:
        pid, st = os.waitpid(-1, os.WNOHANG)
        if pid:
            log.write("exited %d %d\n" % (pid, os.waitstatus_to_exitcode(st)))
    except ChildProcessError:
        pass
    if restart:
        restart = False
        spawn()
    try:
        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(253 * 4))
    except (socket.timeout, InterruptedError):
        continue
    fds = array.array("i")
    for lvl, typ, data in anc:
        if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    for f in fds:
        os.set_inheritable(f, False)
    kv = dict(l.split("=", 1) for l in msg.decode().split("\n") if "=" in l)
    name = kv.get("FDNAME", "stored")
    if kv.get("FDSTORE") == "1":
        for f in fds:
            if name in store:
                os.close(store[name])
                log.write("dup %s\n" % name)
            store[name] = f
            log.write("store %s\n" % name)
    elif kv.get("FDSTOREREMOVE") == "1":
        if name in store:
            os.close(store.pop(name))
        log.write("remove %s\n" % name)
    else:
        for f in fds:
            os.close(f)
    if kv.get("READY") == "1":
        log.write("ready MAINPID=%s\n" % kv.get("MAINPID", "?"))
PY

drain=${FDSTORE_DRAIN:-}
extra=()
[ -n "$drain" ] && extra=(--drain-timeout 1)
serve_args=(serve --snapshot "$WORK/snap" --socket "$SOCK" --populate none --log-level info "${extra[@]}")
FAKESD_SOCKET=${FDSTORE_UNIT:+$SOCK} python3 "$WORK/fakesd.py" "$WORK/notify" "$WORK" "$PAGEIN" "${serve_args[@]}" &
SD=$!
pid2=""
keeper=""
trap '[ -n "$pid2" ] && kill -9 "$pid2" 2>/dev/null; [ -n "$keeper" ] && kill -9 "$keeper" 2>/dev/null; kill "$SD" 2>/dev/null; cleanup' EXIT
for _ in $(seq 1 100); do [ -S "$WORK/notify" ] && break; sleep 0.05; done
[ -S "$WORK/notify" ] || fail "the fake systemd did not start"

unit=${FDSTORE_UNIT:-}
if [ -z "$unit" ]; then
	NOTIFY_SOCKET=$WORK/notify start_pagein "$WORK/snap" --populate none --log-level info "${extra[@]}"
	keeper=$PAGEIN_PID
	first=$WORK/pagein.log
else
	kill -USR1 "$SD"
	for _ in $(seq 1 100); do [ -f "$WORK/pid1" ] && break; sleep 0.05; done
	keeper=$(cat "$WORK/pid1")
	first=$WORK/pagein1.log
fi
for _ in $(seq 1 100); do grep -q '^ready' "$WORK/fakesd.log" 2>/dev/null && break; sleep 0.05; done
grep -q "^ready MAINPID=$keeper" "$WORK/fakesd.log" || fail "no READY=1 naming the keeper"
if [ -z "$unit" ]; then
	grep -q '^store listen$' "$WORK/fakesd.log" || fail "the listening socket was not stored"
else
	grep -q '^store listen$' "$WORK/fakesd.log" && fail "the .socket unit's socket was stored again"
fi

vms=()
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed 1 \
	--balloon 40 --verify-all >"$WORK/anon.out" 2>&1 &
vms+=($!)
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed 2 \
	--memory memfd --balloon 40 --verify-all >"$WORK/memfd.out" 2>&1 &
vms+=($!)
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed 3 \
	--memory memfd --protocol secret-hiding --stage2 0.5 --balloon 40 --verify-all \
	>"$WORK/stage2.out" 2>&1 &
vms+=($!)
for _ in $(seq 1 200); do
	[ "$(grep -c '^store s[0-9]*-uffd$' "$WORK/fakesd.log")" -ge 3 ] && break
	sleep 0.05
done
[ "$(grep -c '^store s[0-9]*-uffd$' "$WORK/fakesd.log")" -ge 3 ] || fail "three sessions were not stored"
grep -q '^store s[0-9]*-mem$' "$WORK/fakesd.log" || fail "the secret-hiding session's memory fd was not stored"
sleep 0.3
engine=$(cat /proc/"$keeper"/task/*/children 2>/dev/null | awk '{print $1; exit}')
[ -n "$engine" ] || fail "no engine"
if [ -n "$drain" ]; then
	kill -TERM "$keeper"
	rc=0
	wait "$keeper" || rc=$?
	[ $rc = 0 ] || fail "the daemon exited $rc at the end of its drain"
	grep -q "fd store for the next start" "$first" || fail "no line for the sessions left in the fd store"
	grep -q "session ended (server stopping)" "$first" &&
		fail "a session was ended at the drain deadline instead of left in the store"
	[ -S "$SOCK" ] || fail "the socket file was removed though the next start is to serve it"
	stored_left=$(grep -c '^store s[0-9]*-uffd$' "$WORK/fakesd.log")
	removed=$(grep -c '^remove s[0-9]*-uffd$' "$WORK/fakesd.log")
	note "SIGTERM with --drain-timeout 1: $((stored_left - removed)) sessions left in the store"
	[ $((stored_left - removed)) -ge 1 ] || fail "no session was left in the store"
else
	kill -9 "$keeper" "$engine"
	[ -z "$unit" ] && wait "$keeper" 2>/dev/null
fi
PAGEIN_PID=""
alive=0
for p in "${vms[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
note "daemon (keeper $keeper, engine $engine) ${drain:+drained and }stopped with $alive of 3 VMs restoring; $(grep -c '^store' "$WORK/fakesd.log") fds stored"
[ $alive -ge 1 ] || fail "every VM had finished before the kill: make KEEPER_FDSTORE_SIZE larger"
sleep 1
kill -USR1 "$SD"
n2=2
[ -z "$unit" ] && n2=1
for _ in $(seq 1 100); do [ -f "$WORK/pid$n2" ] && break; sleep 0.05; done
[ -f "$WORK/pid$n2" ] || fail "the fake systemd did not start the new daemon"
pid2=$(cat "$WORK/pid$n2")
log2=$WORK/pagein$n2.log
note "$(grep '^spawned' "$WORK/fakesd.log")"
bad=0
for p in "${vms[@]}"; do wait "$p" || bad=$((bad + 1)); done
for f in anon memfd stage2; do
	if ! grep -q '^verify: ok' "$WORK/$f.out"; then
		echo "== $f"; tail -15 "$WORK/$f.out"; bad=$((bad + 1))
	fi
done
cat "$log2" | tail -30
[ $bad = 0 ] || fail "$bad VMs did not verify"
adopted=$(grep -c 'session_adopted\|adopted' "$log2")
note "new daemon: $adopted adoption lines"
grep -q 'fdstore_restored\|passed back' "$log2" || fail "the new keeper took no session from LISTEN_FDS"
# The socket came back from the store too, and takes new VMs (the drain
# must not have shut it down for good).
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed 4 --touch 0.05 \
	>"$WORK/after.out" 2>&1 || true
grep -q '^verify: ok' "$WORK/after.out" || fail "a VM after the restart did not restore: $(tail -3 "$WORK/after.out")"
# Every session ended: its fds left the store; the socket stays stored.
for _ in $(seq 1 100); do
	left=$(python3 - "$WORK/fakesd.log" <<'PY'
import sys
s = set()
for l in open(sys.argv[1]):
    w = l.split()
    if w[0] == "store": s.add(w[1])
    if w[0] == "remove": s.discard(w[1])
print(" ".join(sorted(s)))
PY
)
	want=listen
	[ -n "$unit" ] && want=""
	[ "$left" = "$want" ] && break
	sleep 0.05
done
[ "$left" = "$want" ] || fail "fds still stored after every session ended: $left"
grep -q '^dup' "$WORK/fakesd.log" && fail "an fd was stored twice under one name: $(grep '^dup' "$WORK/fakesd.log")"
kill -TERM "$pid2"
# pid2 is the fake systemd's child, not ours: it logs its exit.
for _ in $(seq 1 200); do grep -q "^exited $pid2 " "$WORK/fakesd.log" && break; sleep 0.05; done
grep -q "^exited $pid2 0$" "$WORK/fakesd.log" ||
	fail "the new daemon did not exit 0 on SIGTERM: $(grep "^exited" "$WORK/fakesd.log")"
grep -qE "Sanitizer|runtime error" "$log2" "$first" && fail "sanitizer report"
if [ -z "$unit" ]; then
	[ -e "$SOCK" ] && fail "socket $SOCK left behind"
	grep -q '^remove listen$' "$WORK/fakesd.log" || fail "the listening socket was not removed from the store at a clean exit"
fi
pid2=""
note "3 VMs verified across a ${drain:+drain that gave up and a }stop of the whole daemon${unit:+ (socket from a .socket unit)}"
if [ -z "$unit" ] && [ -z "$drain" ]; then
	FDSTORE_UNIT=1 bash "$0" || fail "with a .socket unit's socket"
	FDSTORE_DRAIN=1 bash "$0" || fail "with a drain that gives up"
fi
