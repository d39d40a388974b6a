# tests/sh/lib.sh - shared by the integration scripts. Source it.
# Env: PAGEIN (pagein binary), VMMSIM (vmmsim binary), TMPDIR.
set -u
: "${PAGEIN:?set PAGEIN to the pagein binary}"
: "${VMMSIM:?set VMMSIM to the vmmsim binary}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pagein-sh.XXXXXX")
PAGEIN_PID=""
trap 'cleanup' EXIT

cleanup() {
	[ -n "$PAGEIN_PID" ] && kill -9 "$PAGEIN_PID" 2>/dev/null
	rm -rf "$WORK"
}

fail() { echo "FAIL: $*"; [ -f "$WORK/pagein.log" ] && tail -20 "$WORK/pagein.log"; exit 1; }
skip() { echo "skip: $*"; exit 77; }
note() { echo "-- $*"; }

# gen_snapshot FILE SIZE [SEED]
gen_snapshot() {
	"$VMMSIM" gen -o "$1" --size "$2" --seed "${3:-1}" --zero-fraction 0.3 >/dev/null ||
		fail "vmmsim gen $2"
}

# start_pagein SNAPSHOT [extra serve args...]: socket $SOCK, log $WORK/pagein.log
start_pagein() {
	local snap=$1
	shift
	SOCK=$WORK/pagein.sock
	"$PAGEIN" serve --snapshot "$snap" --socket "$SOCK" --log-level debug "$@" \
		>"$WORK/pagein.log" 2>&1 &
	PAGEIN_PID=$!
	for _ in $(seq 1 200); do
		[ -S "$SOCK" ] && return 0
		kill -0 "$PAGEIN_PID" 2>/dev/null || fail "pagein exited at start: $(cat "$WORK/pagein.log")"
		sleep 0.05
	done
	fail "pagein did not create $SOCK"
}

# stop_pagein: SIGTERM; it must exit 0 with no sanitizer report.
stop_pagein() {
	kill -TERM "$PAGEIN_PID" || fail "pagein already gone"
	local rc=0
	wait "$PAGEIN_PID" || rc=$?
	PAGEIN_PID=""
	grep -qE "Sanitizer|runtime error" "$WORK/pagein.log" && fail "sanitizer report in pagein log"
	[ "$rc" = 0 ] || fail "pagein exited $rc on SIGTERM"
	[ -e "$SOCK" ] && fail "socket $SOCK left behind"
	return 0
}

pagein_alive() { kill -0 "$PAGEIN_PID" 2>/dev/null || fail "pagein died"; }

# expect_log PATTERN [WHAT]: the daemon's log has a line matching PATTERN.
expect_log() {
	for _ in $(seq 1 100); do
		grep -qE -- "$1" "$WORK/pagein.log" && return 0
		sleep 0.05
	done
	fail "no log line matching '$1' ${2:-}"
}

# vm NAME ARGS...: runs vmmsim run against $SOCK; must end with verify: ok.
vm() {
	local name=$1
	shift
	"$VMMSIM" run --socket "$SOCK" --timeout 60 "$@" >"$WORK/$name.out" 2>&1
	local rc=$?
	if [ $rc = 77 ]; then
		return 77
	fi
	if [ $rc != 0 ] || ! grep -q '^verify: ok' "$WORK/$name.out"; then
		echo "vmmsim $name (exit $rc): $*"
		tail -15 "$WORK/$name.out"
		fail "VM $name did not restore correctly"
	fi
	return 0
}

open_fds() { ls "/proc/$PAGEIN_PID/fd" | wc -l; }

# wait_open_fds N: the daemon is back to N open fds within 5 s (sessions
# ended, nothing leaked).
wait_open_fds() {
	for _ in $(seq 1 50); do
		[ "$(open_fds)" = "$1" ] && return 0
		sleep 0.1
	done
	ls -l "/proc/$PAGEIN_PID/fd"
	fail "fds: $1 at start, $(open_fds) now"
}

# bg_vm NAME VMMSIM-RUN-ARGS...: vmmsim run in the background, its output
# in $WORK/NAME.out; wait_vms then waits for every one started and fails
# unless each ended "verify: ok".
BG_VMS=()
BG_NAMES=()
bg_vm() {
	local n=$1
	shift
	"$VMMSIM" run "$@" >"$WORK/$n.out" 2>&1 &
	BG_VMS+=($!)
	BG_NAMES+=("$n")
}
wait_vms() {
	local bad=0 i
	for i in "${!BG_VMS[@]}"; do
		wait "${BG_VMS[$i]}"
		grep -q '^verify: ok' "$WORK/${BG_NAMES[$i]}.out" ||
			{ echo "== ${BG_NAMES[$i]}"; tail -8 "$WORK/${BG_NAMES[$i]}.out"; bad=$((bad + 1)); }
	done
	[ $bad = 0 ] || fail "$bad of ${#BG_VMS[@]} VMs did not verify"
	BG_VMS=()
	BG_NAMES=()
}

# connect_refused PATH: a connect() to the Unix socket at PATH is refused.
connect_refused() {
	python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except (ConnectionRefusedError, FileNotFoundError):
    sys.exit(0)
sys.exit(1)
EOF
}
