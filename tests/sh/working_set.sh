# working_set.sh - record a VM's first-touch order with --record, replay it
# with --prefetch (and from a pagein snapshot that carries it), and read
# statistics on demand with SIGUSR1; every byte verified.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 32M 9
# The guest's working set: 2000 pages in a fixed, scattered order.
python3 -c 'import random; r = random.Random(4); print("\n".join(map(str, r.sample(range(8192), 2000))))' >"$WORK/ws.trace"

note "record"
start_pagein "$WORK/snap" --record "$WORK/ws-%n.pgws" --populate none --fault-around 0
vm rec --snapshot "$WORK/snap" --vcpus 1 --pattern "trace:$WORK/ws.trace"
expect_log "recorded 2000 pages of working set in $WORK/ws-1.pgws"
stop_pagein
[ -s "$WORK/ws-1.pgws" ] || fail "no working-set file"
head -c 8 "$WORK/ws-1.pgws" | grep -q PAGEINWS || fail "working-set file has no magic"
# The file lists the pages in first-touch order: the trace's order.
python3 - "$WORK/ws-1.pgws" "$WORK/ws.trace" <<'PY' || fail "recorded order differs from the guest's"
import struct, sys
data = open(sys.argv[1], "rb").read()
count = struct.unpack_from("<Q", data, 16)[0]
offs = struct.unpack_from("<%dQ" % count, data, 32)
want = [int(x) * 4096 for x in open(sys.argv[2])]
sys.exit(0 if list(offs) == want else 1)
PY

note "record with the defaults: the same pages, in the same order (recording turns filling ahead off, and says so)"
start_pagein "$WORK/snap" --record "$WORK/wsdef-%n.pgws"
expect_log "recording first touches exactly: nothing is filled ahead"
vm recdef --snapshot "$WORK/snap" --vcpus 1 --pattern "trace:$WORK/ws.trace"
expect_log "session started: .*recording first touches: nothing filled ahead"
expect_log "recorded 2000 pages of working set in $WORK/wsdef-1.pgws"
expect_log "session ended .*fault-around 0, prefetch 0, background 0"
stop_pagein
cmp "$WORK/ws-1.pgws" "$WORK/wsdef-1.pgws" || fail "recording with the defaults differs from --populate none --fault-around 0"
# With --prefetch, population and a fixed window too, and 2 vCPUs: the
# same set of pages (the order of two vCPUs' touches may interleave).
start_pagein "$WORK/snap" --record "$WORK/wsall-%n.pgws" --prefetch "$WORK/ws-1.pgws" --populate eager --fault-around 64
vm recall --snapshot "$WORK/snap" --vcpus 2 --pattern "trace:$WORK/ws.trace"
expect_log "recorded 2000 pages of working set in $WORK/wsall-1.pgws"
stop_pagein
python3 - "$WORK/ws-1.pgws" "$WORK/wsall-1.pgws" <<'PY' || fail "recording with every option on holds other pages"
import struct, sys
def pages(path):
    data = open(path, "rb").read()
    count = struct.unpack_from("<Q", data, 16)[0]
    return struct.unpack_from("<%dQ" % count, data, 32)
a, b = pages(sys.argv[1]), pages(sys.argv[2])
sys.exit(0 if sorted(a) == sorted(b) and len(set(b)) == len(b) else 1)
PY

note "replay with --prefetch, report with SIGUSR1"
start_pagein "$WORK/snap" --prefetch "$WORK/ws-1.pgws" --populate none --fault-around 0
vm replay --snapshot "$WORK/snap" --vcpus 1 --pattern "trace:$WORK/ws.trace" --hold 1 &
sleep 0.5
kill -USR1 "$PAGEIN_PID"
wait $! || fail "replayed VM did not verify"
expect_log "vm1 pid [0-9]+: stats: .*prefetch [1-9]"
expect_log "session ended .*prefetch [1-9][0-9]*"
stop_pagein

note "a pagein snapshot carries its working set"
"$PAGEIN" snapshot convert "$WORK/snap" -o "$WORK/snap.pgn" --working-set "$WORK/ws-1.pgws" >/dev/null 2>&1 ||
	fail "convert --working-set"
start_pagein "$WORK/snap.pgn" --populate background
vm pgn --snapshot "$WORK/snap" --vcpus 2 --pattern "trace:$WORK/ws.trace" --verify-all
expect_log "session ended .*prefetch [1-9][0-9]*"
stop_pagein
