# conn_reset.sh - issue 7 item 11: a VMM whose socket closes with a reset
# (the handler's read gets ECONNRESET, not EOF) must not cost its session
# the statistics line or the --record file. vmmsim --reset-socket closes
# with a stage-2 reply left unread, which is what makes a Unix stream
# socket's close a reset, and --hold keeps the VMM alive for a second after
# it. The session then ends once, when the VMM exits.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 8M 3
start_pagein "$WORK/snap" --record "$WORK/ws-%n.pgws" --populate none --fault-around 0
vm reset --snapshot "$WORK/snap" --protocol secret-hiding --memory memfd --stage2 0.5 \
	--touch 0.5 --reset-socket --hold 1
# The reset reached pagein as a reset: the socket's end, not an error.
expect_log "VMM closed its socket; serving on until it exits"
expect_log "session ended \(VMM exited\): faults [0-9]+ missing"
expect_log "recorded [1-9][0-9]* pages of working set in $WORK/ws-1.pgws"
n=$(grep -c "session ended" "$WORK/pagein.log")
[ "$n" = 1 ] || fail "$n 'session ended' lines, not 1"
grep -E "session ended.*failed|cannot send|recvmsg|killed the VMM" "$WORK/pagein.log" &&
	fail "the reset was taken as a failure"
[ -s "$WORK/ws-1.pgws" ] || fail "no recording in $WORK/ws-1.pgws"
pagein_alive
stop_pagein
note "a reset ended the session once, with its statistics and its recording"
