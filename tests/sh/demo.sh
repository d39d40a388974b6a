# demo.sh - the README's `make demo` (scripts/demo.sh) at 16 MiB: both
# restores (mainline and secret hiding) end with its interpretation saying
# every byte was compared with the snapshot and is identical, nothing says
# the verification failed, and the snapshot file is removed afterwards
# (the reports and the log stay). Then a demo stopped by SIGTERM while it
# runs removes its snapshot too.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")/../.." && pwd)
dir=$WORK/demo
DEMO_SIZE=16M DEMO_DIR=$dir DEMO_PAGEIN=$PAGEIN DEMO_VMMSIM=$VMMSIM \
	timeout 300 bash "$HERE/scripts/demo.sh" >"$WORK/demo.out" 2>&1
rc=$?
cat "$WORK/demo.out"
[ $rc = 0 ] || fail "scripts/demo.sh exited $rc"
grep -q "== generating a 16M snapshot" "$WORK/demo.out" || fail "DEMO_SIZE=16M not used"
n=$(grep -c "every byte of all 4096 pages was compared with the snapshot: identical" "$WORK/demo.out")
[ "$n" = 2 ] || fail "$n of the 2 restores say their bytes are identical (want both)"
grep -q "VERIFICATION FAILED" "$WORK/demo.out" && fail "the demo says the verification failed"
grep -q "pagein's log has no end-of-session line" "$WORK/demo.out" && fail "no session end line explained"
grep -qE "pagein served [0-9]+ faults" "$WORK/demo.out" || fail "no interpretation of pagein's log line"
grep -q "== removed the demo snapshot $dir/snapshot.raw" "$WORK/demo.out" || fail "the demo did not say it removed its snapshot"
[ -e "$dir/snapshot.raw" ] && fail "the demo snapshot $dir/snapshot.raw is still there"
[ -e "$dir/pagein.sock" ] && fail "the demo's socket is still there"
for f in report-mainline.txt report-secret-hiding.txt pagein.log; do
	[ -s "$dir/$f" ] || fail "the demo's $f is missing"
done
note "demo: both restores identical, snapshot removed"

# Stopped while it restores: the snapshot goes all the same.
dir2=$WORK/demo2
DEMO_SIZE=64M DEMO_DIR=$dir2 DEMO_PAGEIN=$PAGEIN DEMO_VMMSIM=$VMMSIM \
	bash "$HERE/scripts/demo.sh" >"$WORK/demo2.out" 2>&1 &
demo=$!
for _ in $(seq 1 300); do
	grep -q "== restoring with vmmsim" "$WORK/demo2.out" && break
	kill -0 $demo 2>/dev/null || break
	sleep 0.05
done
kill -TERM $demo 2>/dev/null
wait $demo
rc=$?
cat "$WORK/demo2.out"
if grep -q "== interrupted" "$WORK/demo2.out"; then
	[ $rc != 0 ] || fail "an interrupted demo exited 0"
fi
[ -e "$dir2/snapshot.raw" ] && fail "a demo stopped by SIGTERM left $dir2/snapshot.raw behind"
grep -q "== removed the demo snapshot" "$WORK/demo2.out" || fail "the stopped demo did not say it removed its snapshot"
echo "demo: ok"
exit 0
