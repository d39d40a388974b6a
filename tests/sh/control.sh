# control.sh - many snapshots per daemon: `pagein serve --control PATH`
# starts with no socket; `pagein ctl add` serves two different snapshots
# on two sockets with different options, VMs restore from each and
# verify every byte against their own snapshot; `list` and `stats` show
# both with their counts; bad requests (daemon-wide options, a socket
# served twice, a missing snapshot, unknown commands, raw garbage on the
# control socket) get their documented errors and the daemon serves on;
# `remove` drains one socket (its file goes) while the other serves on;
# another uid is refused; SIGTERM ends the daemon and removes the control
# socket. The Prometheus endpoint shows both sockets' series.
# tsan
. "$(dirname "$0")/lib.sh"

CTL=$WORK/control.sock
ctl() { "$PAGEIN" ctl --control "$CTL" "$@"; }

gen_snapshot "$WORK/a" 8M 1
gen_snapshot "$WORK/b" 12M 2

note "a daemon with only a control socket"
"$PAGEIN" serve --control "$CTL" --log-level debug --metrics "unix:$WORK/metrics.sock" \
	>"$WORK/pagein.log" 2>&1 &
PAGEIN_PID=$!
for _ in $(seq 1 100); do [ -S "$CTL" ] && break; sleep 0.05; done
[ -S "$CTL" ] || fail "no control socket: $(cat "$WORK/pagein.log")"
[ "$(stat -c %a "$CTL")" = 600 ] || fail "control socket mode $(stat -c %a "$CTL"), want 600"
out=$(ctl list) || fail "list on an empty daemon failed"
[ "$out" = "no sockets served" ] || fail "empty list: '$out'"

note "add two snapshots on two sockets, with their own options"
ctl add "$WORK/a" --socket "$WORK/a.sock" --fault-around 0 --populate none >/dev/null || fail "add a"
(cd "$WORK" && "$PAGEIN" ctl --control "$CTL" add b --socket b.sock) >/dev/null || fail "add b (relative paths)"
[ -S "$WORK/a.sock" ] && [ -S "$WORK/b.sock" ] || fail "the sockets were not created"
SOCK=$WORK/a.sock vm va --snapshot "$WORK/a"
SOCK=$WORK/b.sock vm vb --snapshot "$WORK/b" --memory memfd --protocol secret-hiding --stage2 0.5

note "list and stats"
out=$(ctl list)
echo "$out" | grep -q "^$WORK/a.sock	$WORK/a	" || fail "list lacks a: $out"
echo "$out" | grep -q "^$WORK/b.sock	$WORK/b	" || fail "list lacks b: $out"
js=$(ctl --json stats "$WORK/a.sock")
echo "$js" | python3 -c '
import json, sys
a = json.load(sys.stdin)
assert a["ok"], a
s = a["sockets"]
assert len(s) == 1 and s[0]["socket"].endswith("/a.sock"), s
assert s[0]["sessions_started"] == 1, s
assert s[0]["pages_total"] == 0 or s[0]["sessions_open"] <= 1, s
assert s[0]["faults"] > 0, s
' || fail "stats a: $js"
js=$(ctl --json stats)
echo "$js" | python3 -c '
import json, sys
a = json.load(sys.stdin)
assert a["ok"] and len(a["sockets"]) == 2, a
assert all(s["sessions_started"] == 1 for s in a["sockets"]), a
assert any(s["requests"] > 0 for s in a["sockets"]), a
' || fail "stats: $js"

note "the metrics endpoint covers both sockets"
if command -v curl >/dev/null; then
	m=$(curl -s --unix-socket "$WORK/metrics.sock" http://x/metrics)
	echo "$m" | grep -q '^pagein_sessions_started_total 2$' || fail "metrics: sessions_started_total is not 2: $(echo "$m" | grep started)"
fi

note "refusals: each says what is wrong; the daemon serves on"
expect_refusal() {
	local want=$1
	shift
	local rc=0
	ctl "$@" >"$WORK/ctl.out" 2>&1 || rc=$?
	[ "$rc" = 1 ] || fail "ctl $*: exit $rc, want 1: $(cat "$WORK/ctl.out")"
	grep -q -- "$want" "$WORK/ctl.out" || fail "ctl $*: no '$want' in: $(cat "$WORK/ctl.out")"
}
expect_refusal "daemon-wide" add "$WORK/a" --socket "$WORK/c.sock" --metrics 127.0.0.1:1
expect_refusal "served already" add "$WORK/a" --socket "$WORK/a.sock"
expect_refusal "does not exist" add "$WORK/nope" --socket "$WORK/c.sock"
expect_refusal "fault-around" add "$WORK/a" --socket "$WORK/c.sock" --fault-around 3
expect_refusal "not served" remove "$WORK/c.sock"
[ -e "$WORK/c.sock" ] && fail "a refused add left its socket behind"
rc=0
ctl frobnicate >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "unknown command: exit $rc, want 2"
if command -v python3 >/dev/null; then
	ans=$(python3 - "$CTL" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'this is not json\n{"op": 7}\n{"op":"list"}\n')
f = s.makefile()
print(f.readline().strip()); print(f.readline().strip()); print(f.readline().strip())
PY
)
	echo "$ans" | sed -n 1p | grep -q '"ok":false' || fail "garbage line: $ans"
	echo "$ans" | sed -n 2p | grep -q '"op\\" string' || fail "op not a string: $ans"
	echo "$ans" | sed -n 3p | grep -q '"ok":true' || fail "a good line after bad ones: $ans"
fi
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	rc=0
	setpriv --reuid=65534 --regid=65534 --clear-groups "$PAGEIN" ctl --control "$CTL" list \
		>"$WORK/nobody.out" 2>&1 || rc=$?
	[ "$rc" != 0 ] || fail "another uid drove the control socket: $(cat "$WORK/nobody.out")"
fi
pagein_alive

note "remove drains one socket; the other serves on"
ctl remove "$WORK/a.sock" >/dev/null || fail "remove a"
[ -e "$WORK/a.sock" ] && fail "a.sock is still there after remove"
out=$(ctl list)
echo "$out" | grep -q "a.sock" && fail "a is still listed: $out"
SOCK=$WORK/b.sock vm vb2 --snapshot "$WORK/b"
ctl add "$WORK/a" --socket "$WORK/a.sock" >/dev/null || fail "add a again after remove"
SOCK=$WORK/a.sock vm va2 --snapshot "$WORK/a"

note "SIGTERM: every socket drains, the control socket goes"
kill -TERM "$PAGEIN_PID"
rc=0
wait "$PAGEIN_PID" || rc=$?
PAGEIN_PID=""
[ "$rc" = 0 ] || fail "pagein exited $rc on SIGTERM"
grep -qE "Sanitizer|runtime error" "$WORK/pagein.log" && fail "sanitizer report"
for f in "$CTL" "$WORK/a.sock" "$WORK/b.sock" "$WORK/metrics.sock"; do
	[ -e "$f" ] && fail "$f left behind"
done

note "--control with a live daemon on it is refused"
"$PAGEIN" serve --control "$CTL" >"$WORK/first.log" 2>&1 &
PAGEIN_PID=$!
for _ in $(seq 1 100); do [ -S "$CTL" ] && break; sleep 0.05; done
rc=0
"$PAGEIN" serve --control "$CTL" >"$WORK/second.log" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "another daemon is listening" "$WORK/second.log" ||
	fail "second daemon on a live control socket: exit $rc: $(cat "$WORK/second.log")"
kill -TERM "$PAGEIN_PID"
wait "$PAGEIN_PID"
PAGEIN_PID=""
echo "control: ok"
