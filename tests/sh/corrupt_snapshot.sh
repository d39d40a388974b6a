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
	"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/raw" --vcpus 1 --pattern "trace:$WORK/bad.trace" \
		--timeout 10 >"$WORK/bad-$mode.out" 2>&1 && fail "$mode: a corrupt chunk read back as good"
	grep -q "wrong byte" "$WORK/bad-$mode.out" && fail "$mode: wrong bytes were mapped: $(cat "$WORK/bad-$mode.out")"
	expect_log "corrupt snapshot: chunk $bad "
	if [ "$mode" = fail ]; then
		expect_log "snapshot cannot give page at offset 0x[0-9a-f]+ \(chunk $bad\)"
		expect_log "session ended \(failed: snapshot cannot give page"
		expect_log "killed the VMM \(--on-failure kill\)"
	else
		grep -q SIGBUS "$WORK/bad-$mode.out" || fail "poison: the guest did not get a memory error: $(cat "$WORK/bad-$mode.out")"
		expect_log "poisoned [1-9][0-9]* pages? at offset 0x[0-9a-f]+: the snapshot could not give them"
	fi
	pagein_alive
	vm "good-$mode" --snapshot "$WORK/raw" --vcpus 2 --pattern "trace:$WORK/good.trace"
	stop_pagein
	note "$mode: refused the bad chunk, served the rest"
done
