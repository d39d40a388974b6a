# keeper_upgrade.sh - pagein serve --keeper: SIGUSR2 in the middle of 16
# concurrent restores hands every session to the binary now at the path
# pagein was started from. pagein is copied to a temporary path and started
# from there; the file is then replaced by another build (a copy with a
# byte appended: another inode), and the new engine must be that file
# (/proc/<engine>/exe). Every VM completes verified; no session is lost.
. "$(dirname "$0")/lib.sh"
mkdir -p "$WORK/bin"
cp "$PAGEIN" "$WORK/bin/pagein"
orig=$PAGEIN
PAGEIN=$WORK/bin/pagein
gen_snapshot "$WORK/snap" 64M
start_pagein "$WORK/snap" --keeper --log-level info
keeper=$PAGEIN_PID
engine_pid() { cat /proc/"$keeper"/task/*/children 2>/dev/null | awk '{print $1; exit}'; }
trap 'e=$(engine_pid); [ -n "$e" ] && kill -9 "$e" 2>/dev/null; cleanup' EXIT
old=$(engine_pid)
[ -n "$old" ] || fail "no engine under the keeper"

vms=()
for i in $(seq 1 16); do
	case $((i % 3)) in
	0) extra=() ;;
	1) extra=(--memory memfd) ;;
	2) extra=(--memory memfd --protocol secret-hiding --stage2 0.5) ;;
	esac
	"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed "$i" \
		--balloon 10 "${extra[@]}" >"$WORK/vm$i.out" 2>&1 &
	vms+=($!)
done
for _ in $(seq 1 200); do
	[ "$(grep -c 'session started' "$WORK/pagein.log")" -ge 16 ] && break
	sleep 0.05
done
[ "$(grep -c 'session started' "$WORK/pagein.log")" -ge 16 ] || fail "16 sessions did not start"
# Each session's counters before the upgrade (SIGUSR1: a stats line per
# session), to compare with its last line after it: they live in the
# session's state memfd, so the new engine goes on counting.
kill -USR1 "$old"
for _ in $(seq 1 100); do [ "$(grep -c ': stats: ' "$WORK/pagein.log")" -ge 1 ] && break; sleep 0.05; done
# The upgrade: another build at the same path (a new inode), then SIGUSR2.
cp "$orig" "$WORK/bin/pagein.new"
printf 'x' >>"$WORK/bin/pagein.new"
mv "$WORK/bin/pagein.new" "$WORK/bin/pagein"
kill -USR2 "$keeper"
expect_log "engine_upgraded|hands over" "(the keeper's upgrade line)"
for _ in $(seq 1 100); do
	new=$(engine_pid)
	[ -n "$new" ] && [ "$new" != "$old" ] && break
	sleep 0.05
done
[ -n "$new" ] && [ "$new" != "$old" ] || fail "no new engine after SIGUSR2"
[ "$(stat -L -c %i "/proc/$new/exe")" = "$(stat -c %i "$WORK/bin/pagein")" ] ||
	fail "the new engine does not run the replaced file: $(readlink "/proc/$new/exe")"
note "engine $old -> $new ($(readlink "/proc/$new/exe"))"
bad=0
for i in $(seq 1 16); do
	wait "${vms[$((i - 1))]}"
	grep -q '^verify: ok' "$WORK/vm$i.out" || { echo "== vm$i"; tail -10 "$WORK/vm$i.out"; bad=$((bad + 1)); }
done
[ $bad = 0 ] || fail "$bad of 16 VMs did not verify"
adopted=$(grep -c "session adopted" "$WORK/pagein.log")
note "$adopted sessions adopted by the new engine"
[ "$adopted" -ge 1 ] || fail "no session was handed over (did they all end before SIGUSR2?)"
grep -qE "session ended \((failed|handshake refused)" "$WORK/pagein.log" && fail "a session failed"
# vmN's missing faults: counted before the upgrade (stats) and at the end.
faults() { grep -E "^[^ ]+ pagein info: $1 pid [0-9]+: $2" "$WORK/pagein.log" | sed -n 's/.*faults \([0-9]*\) missing.*/\1/p' | tail -1; }
pairs=0
for vm in $(grep -o 'vm[0-9]* pid [0-9]*: stats: ' "$WORK/pagein.log" | awk '{print $1}' | sort -u); do
	before=$(faults "$vm" "stats: ")
	after=$(faults "$vm" "session ended")
	[ -n "$before" ] && [ -n "$after" ] || continue
	grep -q "$vm pid [0-9]*: session adopted" "$WORK/pagein.log" || continue
	[ "$after" -ge "$before" ] || fail "$vm: $before missing faults counted before the upgrade, $after at its end: the counters restarted"
	pairs=$((pairs + 1))
done
[ $pairs -ge 1 ] || fail "no adopted session had a stats line before the upgrade"
note "$pairs adopted sessions went on counting across the upgrade"
stop_pagein
