# socket_safety.sh - the daemon's socket: --socket-mode/--socket-owner/
# --socket-group applied (stat); a second daemon on a live socket is
# refused and the first keeps serving; a socket file replaced under a
# running daemon is not removed at its exit; --allow-uid/--allow-gid: root
# is served when allowed, a peer of another uid (setpriv) is closed with a
# refused_peer line and the daemon serves on; the early errors at start (a
# snapshot too small to be guest memory, an unknown user or group).
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root: chown of the socket and setpriv to another uid"
command -v setpriv >/dev/null || skip "setpriv (util-linux) is not installed"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || skip "python3 is not installed"

gen_snapshot "$WORK/snap" 4M

note "--socket-mode/--socket-owner/--socket-group are set before the daemon listens"
start_pagein "$WORK/snap" --threads 1 --socket-mode 0640 --socket-owner nobody --socket-group 65534
got=$(stat -c '%a %u %g' "$SOCK")
[ "$got" = "640 65534 65534" ] || fail "socket mode/owner/group: got '$got', want '640 65534 65534'"
vm v1 --snapshot "$WORK/snap"
stop_pagein # also checks that the daemon removed its own socket

note "a second daemon on a live socket is refused; the first serves on"
start_pagein "$WORK/snap" --threads 1
ino=$(stat -c %i "$SOCK")
rc=0
"$PAGEIN" serve --snapshot "$WORK/snap" --socket "$SOCK" >"$WORK/second.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "second daemon on a live socket exited $rc, want 1: $(cat "$WORK/second.log")"
grep -q "already listening there" "$WORK/second.log" || fail "second daemon: no clear error: $(cat "$WORK/second.log")"
[ "$(stat -c %i "$SOCK")" = "$ino" ] || fail "the second daemon replaced the live socket file"
pagein_alive
vm v2 --snapshot "$WORK/snap"
stop_pagein

note "a socket file replaced while the daemon runs is not removed at its exit"
start_pagein "$WORK/snap" --threads 1
rm -f "$SOCK"
"$PY" -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$SOCK" ||
	fail "could not bind a socket of our own at $SOCK"
theirs=$(stat -c %i "$SOCK")
kill -TERM "$PAGEIN_PID"
rc=0
wait "$PAGEIN_PID" || rc=$?
PAGEIN_PID=""
[ "$rc" = 0 ] || fail "pagein exited $rc on SIGTERM"
[ -S "$SOCK" ] || fail "the daemon removed a socket file it did not create"
[ "$(stat -c %i "$SOCK")" = "$theirs" ] || fail "the socket file at $SOCK changed"
rm -f "$SOCK"

note "--allow-uid: root is served, uid 65534 is refused and logged, never killed"
# The other uid must reach the socket: through $WORK and with mode 0666.
chmod 0711 "$WORK"
start_pagein "$WORK/snap" --threads 2 --socket-mode 0666 --allow-uid 0
[ "$(stat -c %a "$SOCK")" = 666 ] || fail "socket mode is not 0666"
vm v3 --snapshot "$WORK/snap"
# The refused peer sends a handshake-looking byte and waits for the daemon
# to close the connection: EOF (or a reset) and no reply at all.
peer='
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
try:
    s.sendall(b"[")
    data = s.recv(100)
except (ConnectionResetError, BrokenPipeError):
    data = b""
except socket.timeout:
    data = None
print("open" if data is None else "closed" if data == b"" else "reply: %r" % data)
'
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" -c "$peer" "$SOCK" 2>&1) ||
	fail "the uid 65534 client failed: $out"
[ "$out" = closed ] || fail "uid 65534 was not closed at once: $out"
expect_log "refused a connection from pid [0-9]+ uid 65534 gid 65534" "(refused_peer)"
pagein_alive
grep -q "vm[0-9]* pid .*connected" "$WORK/pagein.log" || fail "no connected line for root"
# The refused peer never became a connection (no vmN for it).
[ "$(grep -c ': connected' "$WORK/pagein.log")" = 1 ] || fail "the refused peer was accepted as a VM"
vm v4 --snapshot "$WORK/snap"
stop_pagein

note "--allow-uid with --allow-gid: either matching allows; neither refuses"
start_pagein "$WORK/snap" --threads 1 --socket-mode 0666 --allow-uid 4321 --allow-gid root --log-format json
vm v5 --snapshot "$WORK/snap"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" -c "$peer" "$SOCK" 2>&1)
[ "$out" = closed ] || fail "uid 65534 gid 65534 was not refused with --allow-uid 4321 --allow-gid root: $out"
expect_log '"event":"refused_peer".*"peer_uid":65534' "(JSON refused_peer with peer_uid)"
stop_pagein

note "--allow-gid by a supplementary group"
start_pagein "$WORK/snap" --threads 1 --socket-mode 0666 --allow-gid nogroup
out=$(setpriv --reuid=65534 --regid=100 --groups=65534 "$PY" -c "$peer" "$SOCK" 2>&1)
# Allowed: the daemon waits for the rest of the handshake, keeping the
# connection open; it must not be refused.
[ "$out" = open ] || fail "a peer in the supplementary group nogroup: $out"
grep -q "uid 65534 gid 100" "$WORK/pagein.log" && fail "a peer in the supplementary group nogroup was refused"
expect_log "pid [0-9]+: connected" "(peer in a supplementary group)"
stop_pagein
chmod 0700 "$WORK"

note "early errors at start"
head -c 8192 "$WORK/snap" >"$WORK/tiny"
rc=0
"$PAGEIN" serve --snapshot "$WORK/tiny" --socket "$WORK/t.sock" >"$WORK/tiny.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "an 8 KiB snapshot: exit $rc, want 1"
grep -q "too small to be a VM's guest memory" "$WORK/tiny.log" || fail "an 8 KiB snapshot: $(cat "$WORK/tiny.log")"
[ -e "$WORK/t.sock" ] && fail "the refused daemon left a socket"
for opt in --socket-owner --socket-group --allow-uid --allow-gid; do
	rc=0
	"$PAGEIN" serve --snapshot "$WORK/snap" --socket "$WORK/t.sock" $opt no-such-name-xyz >"$WORK/opt.log" 2>&1 || rc=$?
	[ "$rc" = 2 ] || fail "$opt no-such-name-xyz: exit $rc, want 2"
	grep -q -- "$opt no-such-name-xyz: no such" "$WORK/opt.log" || fail "$opt: $(cat "$WORK/opt.log")"
done
rc=0
"$PAGEIN" serve --snapshot "$WORK/snap" --socket "$WORK/t.sock" --socket-mode 0999 >"$WORK/opt.log" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q -- "--socket-mode 0999" "$WORK/opt.log" || fail "--socket-mode 0999: $(cat "$WORK/opt.log")"

echo "ok: socket safety"
