# cli.sh - help texts, usage errors, clean stop (an immediate drain: no
# session open) on SIGTERM and SIGINT.
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
check_usage "--snapshot FILE is required: name the memory snapshot" serve --socket "$WORK/s"
check_usage "--socket PATH is required: name the Unix socket" serve --snapshot "$WORK/s"
check_usage "unexpected argument 'extra': every option is --name VALUE" serve --snapshot x --socket y extra
check_usage "--log-format yaml: expected text or json" serve --snapshot x --socket y --log-format yaml
check_usage "--threads 0: expected 1 to 256" serve --snapshot x --socket y --threads 0
check_usage "--log-level loud" serve --snapshot x --socket y --log-level loud
check_usage "--on-corrupt maybe" serve --snapshot x --socket y --on-corrupt maybe
check_usage "--on-failure sometimes: expected kill or keep" serve --snapshot x --socket y --on-failure sometimes
check_usage "--handshake-timeout 0: expected seconds" serve --snapshot x --socket y --handshake-timeout 0
check_usage "--max-connections 0: expected 1" serve --snapshot x --socket y --max-connections 0
check_usage "--drain-timeout soon: expected seconds from 0" serve --snapshot x --socket y --drain-timeout soon
: >"$WORK/notasocket"
gen_snapshot "$WORK/snap" 4M
# refused_at_start WANT ARGS...: pagein serve ARGS exits 1 with one line
# that says what is wrong and what to do (WANT, a grep -E pattern).
refused_at_start() {
	local want=$1
	shift
	out=$(${RUN_AS:-} "$PAGEIN" serve "$@" 2>&1)
	rc=$?
	[ $rc = 1 ] || fail "pagein serve $* exited $rc, want 1: $out"
	[ "$(echo "$out" | wc -l)" = 1 ] || fail "pagein serve $*: more than one line: $out"
	echo "$out" | grep -qE -- "$want" || fail "pagein serve $*: '$out' lacks '$want'"
	note "refused: $out"
}
refused_at_start "--socket $WORK/notasocket exists and is not a socket: remove it .* or choose another path" \
	--snapshot "$WORK/snap" --socket "$WORK/notasocket"
refused_at_start "the directory of --socket $WORK/no/dir/s.sock does not exist: create it \(mkdir -p $WORK/no/dir\) or choose another path" \
	--snapshot "$WORK/snap" --socket "$WORK/no/dir/s.sock"
refused_at_start "--socket $WORK/x{120}.sock is longer than the 107 bytes a Unix socket path may have: choose a shorter path" \
	--snapshot "$WORK/snap" --socket "$WORK/$(printf 'x%.0s' $(seq 1 120)).sock"
refused_at_start "snapshot $WORK/nosnap does not exist: check the path" --snapshot "$WORK/nosnap" --socket "$WORK/r.sock"
refused_at_start "snapshot $WORK: not a regular file but a directory: name the memory file itself" \
	--snapshot "$WORK" --socket "$WORK/r.sock"
refused_at_start "working set $WORK/nows does not exist: check the path" \
	--snapshot "$WORK/snap" --socket "$WORK/r.sock" --prefetch "$WORK/nows"
refused_at_start "working set: bad magic \(not a pagein working-set file\): give one written by pagein serve --record" \
	--snapshot "$WORK/snap" --socket "$WORK/r.sock" --prefetch "$WORK/snap"
"$PAGEIN" snapshot convert "$WORK/snap" -o "$WORK/snap.pgn" >/dev/null 2>&1 || fail "convert"
truncate -s -100 "$WORK/snap.pgn"
refused_at_start "snapshot $WORK/snap.pgn: .*: the file is damaged; convert the raw memory file again \(pagein snapshot convert\)" \
	--snapshot "$WORK/snap.pgn" --socket "$WORK/r.sock"
# --record is checked at start, not when the first VM ends.
refused_at_start "--record $WORK/ws.pgws: the path must contain %n .*: add it" \
	--snapshot "$WORK/snap" --socket "$WORK/r.sock" --record "$WORK/ws.pgws"
refused_at_start "--record $WORK/no/such/dir/ws-%n: the directory $WORK/no/such/dir does not exist: create it or choose another path" \
	--snapshot "$WORK/snap" --socket "$WORK/r.sock" --record "$WORK/no/such/dir/ws-%n"
# Permission denied: as an unprivileged user (root may write anywhere).
RUN_AS=""
can_deny=yes
if [ "$(id -u)" = 0 ]; then
	RUN_AS="setpriv --reuid=65534 --regid=65534 --clear-groups"
	command -v setpriv >/dev/null && $RUN_AS test -x "$PAGEIN" || can_deny=no
fi
if [ $can_deny = yes ]; then
	PUB=$WORK/pub
	mkdir "$PUB" "$PUB/ro" && chmod 755 "$WORK" "$PUB" && chmod 555 "$PUB/ro"
	cp "$WORK/snap" "$PUB/snap" && chmod 644 "$PUB/snap"
	cp "$WORK/snap" "$PUB/secret" && chmod 000 "$PUB/secret"
	refused_at_start "cannot create --socket $PUB/ro/s.sock: permission denied: pagein needs write access to the directory $PUB/ro" \
		--snapshot "$PUB/snap" --socket "$PUB/ro/s.sock"
	refused_at_start "--record $PUB/ro/ws-%n: permission denied: pagein needs write access to the directory $PUB/ro" \
		--snapshot "$PUB/snap" --socket "$PUB/r.sock" --record "$PUB/ro/ws-%n"
	refused_at_start "snapshot $PUB/secret: permission denied: pagein needs read access to it" \
		--snapshot "$PUB/secret" --socket "$PUB/r.sock"
else
	note "permission-denied cases skipped: running as root without setpriv to drop privileges"
fi
RUN_AS=""
# A live socket is refused, not taken over; a stale one is replaced.
# --no-keeper: one process, so that kill -9 leaves the socket file behind
# (with the keeper, the engine drains and removes it when its keeper dies).
start_pagein "$WORK/snap" --no-keeper
refused_at_start "--socket $SOCK: a server is already listening there: stop it, or choose another path" \
	--snapshot "$WORK/snap" --socket "$SOCK"
[ -S "$SOCK" ] || fail "the refused second server removed the live socket"
vm live --snapshot "$WORK/snap" --pattern seq --touch 0.1 --hold 0
kill -9 "$PAGEIN_PID"
wait "$PAGEIN_PID" 2>/dev/null
PAGEIN_PID=""
[ -S "$SOCK" ] || fail "no stale socket left by kill -9"
start_pagein "$WORK/snap"
vm stale --snapshot "$WORK/snap" --pattern seq --touch 0.1 --hold 0
stop_pagein
note "a live socket is refused, a stale one replaced"
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
	# No session open: the drain ends at once.
	grep -q "draining: no longer accepting connections; 0 sessions open" "$WORK/pagein.log" ||
		fail "no draining line after SIG$sig"
	grep -q "drained: every session has ended" "$WORK/pagein.log" || fail "no drained line after SIG$sig"
done
