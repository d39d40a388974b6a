# cli.sh - help texts, usage errors, clean stop on SIGTERM and SIGINT.
. "$(dirname "$0")/lib.sh"
"$PAGEIN" --help | grep -q "serve" || fail "pagein --help"
"$PAGEIN" serve --help | grep -q -- "--snapshot FILE" || fail "pagein serve --help"
"$PAGEIN" --version | grep -qE "^pagein [0-9]" || fail "--version"
check_usage() {
	local want=$1
	shift
	out=$("$PAGEIN" "$@" 2>&1)
	rc=$?
	[ $rc = 2 ] || fail "pagein $* exited $rc, want 2"
	echo "$out" | grep -q -- "$want" || fail "pagein $*: '$out' lacks '$want'"
}
check_usage "unknown command 'frobnicate'" frobnicate
check_usage "--snapshot is required" serve --socket "$WORK/s"
check_usage "--socket is required" serve --snapshot "$WORK/s"
check_usage "--threads 0: expected 1 to 256" serve --snapshot x --socket y --threads 0
check_usage "--log-level loud" serve --snapshot x --socket y --log-level loud
check_usage "--on-corrupt maybe" serve --snapshot x --socket y --on-corrupt maybe
check_usage "--on-failure sometimes: expected kill or keep" serve --snapshot x --socket y --on-failure sometimes
check_usage "--handshake-timeout 0: expected seconds" serve --snapshot x --socket y --handshake-timeout 0
check_usage "--max-connections 0: expected 1" serve --snapshot x --socket y --max-connections 0
: >"$WORK/notasocket"
gen_snapshot "$WORK/snap" 4M
out=$("$PAGEIN" serve --snapshot "$WORK/snap" --socket "$WORK/notasocket" 2>&1)
[ $? = 1 ] && echo "$out" | grep -q "exists and is not a socket" || fail "refuses to replace a regular file: $out"
# --record is checked at start, not when the first VM ends.
out=$("$PAGEIN" serve --snapshot "$WORK/snap" --socket "$WORK/r.sock" --record "$WORK/ws.pgws" 2>&1)
[ $? = 1 ] && echo "$out" | grep -q "must contain %n" || fail "--record without %n: $out"
out=$("$PAGEIN" serve --snapshot "$WORK/snap" --socket "$WORK/r.sock" --record "$WORK/no/such/dir/ws-%n" 2>&1)
[ $? = 1 ] && echo "$out" | grep -q "does not exist" || fail "--record into a missing directory: $out"
for sig in TERM INT; do
	start_pagein "$WORK/snap"
	vm one --snapshot "$WORK/snap" --pattern seq --touch 0.1 --hold 0
	kill -$sig "$PAGEIN_PID"
	rc=0
	wait "$PAGEIN_PID" || rc=$?
	PAGEIN_PID=""
	[ $rc = 0 ] || fail "exit $rc on SIG$sig"
	[ -e "$SOCK" ] && fail "socket left after SIG$sig"
	grep -q "stopping" "$WORK/pagein.log" || fail "no stopping line"
done
