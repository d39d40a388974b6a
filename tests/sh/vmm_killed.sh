# tsan
# vmm_killed.sh - a VMM killed mid-restore ends its session quietly; the
# daemon serves the next VM.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 64M
start_pagein "$WORK/snap"
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/snap" --vcpus 2 --pattern random \
	--timeout 60 >"$WORK/victim.out" 2>&1 &
victim=$!
expect_log "session started"
sleep 0.2
kill -9 $victim
wait $victim 2>/dev/null
expect_log "session ended \(VMM exited\)"
vm next --snapshot "$WORK/snap" --pattern random --touch 0.2 --verify-all
stop_pagein
