# keeper_crash.sh - pagein serve --keeper: the engine (the keeper's child)
# is SIGKILLed 50 times at random moments while VMs restore through all
# three paths at once (mainline anonymous memory, memfd MINOR faults,
# secret-hiding stage-2 requests), each with balloon discards. Every VM
# must finish with "verify: ok" (vmmsim checks every byte it reads), the
# keeper must survive, and the longest guest stall is printed. Each VM
# sends its handshake in 5 pieces 20 ms apart, and a new wave starts just
# before a kill, so kills land in handshakes too (the keeper holds a
# connection from its accept on).
#
# Runs the RELEASE build (build/pagein), not $PAGEIN (ASan): 50 restarts of
# an ASan engine take several minutes. VMs: 1 GiB each by default
# (KEEPER_CRASH_SIZE overrides), started in waves of three so that VMs are
# restoring at every kill. The keeper gives up after 5 engines that die
# within 1 s of their start (a crash loop), so each kill waits 1.05-1.6 s
# after its engine started: the whole test takes about 90 s. It prints the
# longest first touch or stage-2 round trip of any VM (the longest guest
# stall), and from each kill to the new engine serving (the keeper's
# engine_ready lines against the kill times).
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$root/build/pagein" ] || skip "no release build at $root/build/pagein"
# A copy: the keeper runs the file at its path again at every restart, and
# a rebuild meanwhile must not be what it runs.
mkdir -p "$WORK/bin"
cp "$root/build/pagein" "$WORK/bin/pagein"
PAGEIN=$WORK/bin/pagein
SIZE=${KEEPER_CRASH_SIZE:-1G}
KILLS=${KEEPER_CRASH_KILLS:-50}
gen_snapshot "$WORK/snap" "$SIZE"
start_pagein "$WORK/snap" --keeper --log-level info
keeper=$PAGEIN_PID

engine_pid() { cat /proc/"$keeper"/task/*/children 2>/dev/null | awk '{print $1; exit}'; }
cleanup_engine() { local e; e=$(engine_pid); [ -n "$e" ] && kill -9 "$e" 2>/dev/null; }
trap 'cleanup_engine; cleanup' EXIT

vms=()
wave=0
start_wave() {
	wave=$((wave + 1))
	local w=$wave
	"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed "$w" \
		--split-handshake 5 --balloon 40 >"$WORK/w$w-anon.out" 2>&1 &
	vms+=($!)
	"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed "$w" \
		--split-handshake 5 --memory memfd --balloon 40 >"$WORK/w$w-memfd.out" 2>&1 &
	vms+=($!)
	"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --timeout 60 --seed "$w" \
		--split-handshake 5 --memory memfd --protocol secret-hiding --stage2 0.5 --balloon 40 \
		>"$WORK/w$w-stage2.out" 2>&1 &
	vms+=($!)
	note "wave $w started"
}
wave_running() {
	local n=0 p
	for p in "${vms[@]: -3}"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done
	[ $n -gt 0 ]
}

start_wave
kills=0
last=""
while [ $kills -lt "$KILLS" ]; do
	kill -0 "$keeper" 2>/dev/null || fail "the keeper died after $kills kills"
	e=$(engine_pid)
	if [ -z "$e" ] || [ "$e" = "$last" ]; then
		sleep 0.02
		continue
	fi
	# A new engine: kill it at a random moment 1.05-1.6 s after it started.
	sleep "1.$(printf '%02d' $((5 + RANDOM % 56)))"
	if ! wave_running; then
		start_wave
		# The kill lands 0-150 ms later: in the handshakes (100 ms
		# long), or as the sessions start.
		sleep "0.$(printf '%03d' $((RANDOM % 150)))"
	fi
	date -u +%H:%M:%S.%3N >>"$WORK/kill-times"
	kill -9 "$e" 2>/dev/null && kills=$((kills + 1))
	last=$e
done
note "$kills engines killed"
for p in "${vms[@]}"; do wait "$p"; done
kill -0 "$keeper" 2>/dev/null || fail "the keeper died"
bad=0
stall=0
for f in "$WORK"/w*.out; do
	if ! grep -q '^verify: ok' "$f"; then
		echo "== $f"; tail -15 "$f"; bad=$((bad + 1))
	fi
	for k in first_touch_us stage2_rtt_us; do
		m=$(awk -v k="$k:" '$1 == k { for (i = 1; i <= NF; i++) if ($i == "max") print int($(i + 1)) }' "$f")
		[ -n "$m" ] && [ "$m" -gt "$stall" ] && stall=$m
	done
done
if [ $bad != 0 ]; then
	# The daemon's side of it: every line that is not routine.
	grep -vE "engine killed by signal|session adopted|serves [0-9]+ sessions|serving |connected$|session started|region 0:|closed its socket|session ended \(VMM exited\)" \
		"$WORK/pagein.log" | tail -40
	cp "$WORK/pagein.log" "${TMPDIR:-/tmp}/keeper_crash-pagein.log" 2>/dev/null
	fail "$bad of ${#vms[@]} VMs did not verify"
fi
restarts=$(grep -c "engine_restarted\|engine killed by signal" "$WORK/pagein.log")
note "${#vms[@]} VMs of $SIZE in $wave waves verified; $restarts engine restarts"
echo "longest guest stall: $((stall / 1000)) ms (the longest first touch or stage-2 round trip of any VM)"
grep -o 'serves [0-9]* sessions\?, [0-9.]* ms after' "$WORK/pagein.log" |
	awk '{ n++; s += $4; if ($4 > m) m = $4 } END { if (n) printf "engine downtime per restart (link closed to READY): mean %.0f ms, max %.0f ms over %d restarts\n", s / n, m, n }'
# From each kill to the keeper noticing (the kernel tearing the engine
# down) and to the new engine's READY.
awk 'function ms(t) { split(t, a, ":"); return (a[1] * 3600 + a[2] * 60 + a[3]) * 1000 }
	FNR == NR { k[++nk] = ms($1); next }
	/engine_restarted|engine killed by signal/ { r[++nr] = ms(substr($1, 12, 12)) }
	/serves [0-9]+ session/ { y[++ny] = ms(substr($1, 12, 12)) }
	END { for (i = 1; i <= nk && i <= nr && i <= ny; i++) {
		d = r[i] - k[i]; e = y[i] - k[i]; if (d > md) md = d; if (e > me) me = e; sd += d; se += e }
	      if (i > 1) printf "kill to restart: mean %.0f ms, max %.0f ms; kill to new engine serving: mean %.0f ms, max %.0f ms\n", sd / (i - 1), md, se / (i - 1), me }' \
	"$WORK/kill-times" "$WORK/pagein.log"
grep -q "crash_loop\|giving up" "$WORK/pagein.log" && fail "the keeper gave up"
stop_pagein
