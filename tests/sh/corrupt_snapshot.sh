# corrupt_snapshot.sh - serving a pagein snapshot with a corrupt chunk:
# pagein never maps wrong bytes. --on-corrupt fail ends that session with a
# log line naming the chunk and kills its VMM (fail closed);
# --on-corrupt poison poisons the faulting page
# only (the guest sees a memory error there) and the session goes on.
# Pages outside the bad chunk restore correctly either way.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/raw" 16M 5
"$PAGEIN" snapshot convert "$WORK/raw" -o "$WORK/snap.pgn" >/dev/null 2>&1 || fail "convert"
size=$(stat -c %s "$WORK/snap.pgn")
# Flip one byte near the end of the stored data: some chunk goes bad.
printf '\xff' | dd of="$WORK/snap.pgn" bs=1 seek=$((size - 300)) conv=notrunc 2>/dev/null
out=$("$PAGEIN" snapshot verify "$WORK/snap.pgn" 2>&1) && fail "verify did not notice: $out"
bad=$(echo "$out" | sed -n 's/.*first bad chunk \([0-9]*\).*/\1/p')
[ -n "$bad" ] || fail "verify named no chunk: $out"
chunk_pages=64 # 256 KiB chunks (the default) of 4 KiB pages
first=$((bad * chunk_pages))
note "chunk $bad is corrupt: pages $first-$((first + chunk_pages - 1))"
seq "$first" $((first + chunk_pages - 1)) >"$WORK/bad.trace"
seq 0 $((first - 1)) >"$WORK/good.trace"

for mode in fail poison; do
	start_pagein "$WORK/snap.pgn" --on-corrupt "$mode" --populate none --fault-around 0
	rc=0
	"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/raw" --vcpus 1 --pattern "trace:$WORK/bad.trace" \
		--timeout 10 >"$WORK/bad-$mode.out" 2>&1 || rc=$?
	[ $rc = 0 ] && fail "$mode: a corrupt chunk read back as good"
	grep -q "wrong byte" "$WORK/bad-$mode.out" && fail "$mode: wrong bytes were mapped: $(cat "$WORK/bad-$mode.out")"
	expect_log "corrupt snapshot: chunk $bad "
	if [ "$mode" = fail ]; then
		expect_log "snapshot cannot give page at offset 0x[0-9a-f]+ \(chunk $bad\)"
		expect_log "session ended \(failed: snapshot cannot give page"
		expect_log "killed the VMM \(--on-failure kill\)"
		# --on-failure kill is the default: the VMM died of SIGKILL
		# (128 + 9), not of its own watchdog (exit 3) or a check.
		[ $rc = 137 ] || fail "fail: the VMM was not killed (exit $rc): $(tail -5 "$WORK/bad-$mode.out")"
	else
		grep -q SIGBUS "$WORK/bad-$mode.out" || fail "poison: the guest did not get a memory error: $(cat "$WORK/bad-$mode.out")"
		expect_log "poisoned [1-9][0-9]* pages? at offset 0x[0-9a-f]+: the snapshot could not give them"
	fi
	pagein_alive
	vm "good-$mode" --snapshot "$WORK/raw" --vcpus 2 --pattern "trace:$WORK/good.trace"
	stop_pagein
	note "$mode: refused the bad chunk, served the rest"
done

# --on-failure keep: the session fails as above, but the VMM is left
# running (its vCPU stays stuck on the fault nobody serves) and the log
# says so. The VMM closes its socket after the handshake, as Firecracker
# before v1.12 does (one that keeps it exits by itself when pagein closes
# it), and its watchdog is far off: only the test kills it.
start_pagein "$WORK/snap.pgn" --on-corrupt fail --on-failure keep --populate none --fault-around 0
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/raw" --vcpus 1 --pattern "trace:$WORK/bad.trace" \
	--close-after-handshake --timeout 60 >"$WORK/bad-keep.out" 2>&1 &
vmm=$!
expect_log "session ended \(failed: snapshot cannot give page"
expect_log "VMM left running \(--on-failure keep\): its guest memory is no longer served"
grep -q "killed the VMM" "$WORK/pagein.log" && fail "keep: the VMM was killed anyway"
sleep 0.5 # a kill, had one been sent, lands at once
kill -0 "$vmm" 2>/dev/null || { wait "$vmm"; fail "keep: the VMM died (exit $?): $(tail -5 "$WORK/bad-keep.out")"; }
kill -9 "$vmm"
wait "$vmm" 2>/dev/null
pagein_alive
stop_pagein
note "keep: the session failed, the VMM was left running"
