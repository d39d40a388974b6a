# log_format.sh - pagein serve --log-format json: every line is one JSON
# object with ts, level, event and msg; lines about a VM name it (vm, pid);
# session_ended carries the cause and the statistics as numbers, and a
# restore with --populate none whose every page was faulted says complete;
# poisoned and corrupt_chunk lines carry their offset and chunk.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || skip "python3 checks the JSON"
gen_snapshot "$WORK/raw" 4M 3
"$PAGEIN" snapshot convert "$WORK/raw" -o "$WORK/snap.pgn" >/dev/null 2>&1 || fail "convert"
size=$(stat -c %s "$WORK/snap.pgn")
printf '\xff' | dd of="$WORK/snap.pgn" bs=1 seek=$((size - 300)) conv=notrunc 2>/dev/null
bad=$("$PAGEIN" snapshot verify "$WORK/snap.pgn" 2>&1 | sed -n 's/.*first bad chunk \([0-9]*\).*/\1/p')
[ -n "$bad" ] || fail "no corrupt chunk"
seq $((bad * 64)) $((bad * 64 + 63)) >"$WORK/bad.trace"

# Text (the default): the same restore says complete, at what rate.
start_pagein "$WORK/raw" --populate none --fault-around 0
vm text --snapshot "$WORK/raw" --vcpus 2 --pattern seq --touch 1 --hold 0
expect_log "vm1 pid [0-9]+: session ended \(VMM exited\): .*read [0-9.]+ MiB from the snapshot over [0-9.]+ s; complete in [0-9.]+ s at [0-9.]+ MB/s"
stop_pagein
start_pagein "$WORK/raw" --log-format json --populate none --fault-around 0
vm all --snapshot "$WORK/raw" --vcpus 2 --pattern seq --touch 1 --hold 0
expect_log '"event":"session_ended"'
kill -USR1 "$PAGEIN_PID"
expect_log '"event":"report"'
stop_pagein
cp "$WORK/pagein.log" "$WORK/clean.log"
start_pagein "$WORK/snap.pgn" --log-format json --on-corrupt poison --populate none --fault-around 0
"$VMMSIM" run --socket "$SOCK" --snapshot "$WORK/raw" --vcpus 1 --pattern "trace:$WORK/bad.trace" \
	--timeout 10 >"$WORK/bad.out" 2>&1 && fail "a corrupt chunk read back as good"
expect_log '"event":"poisoned"'
expect_log '"event":"corrupt_chunk"'
stop_pagein
cat "$WORK/pagein.log" >>"$WORK/clean.log"
out=$(python3 - "$WORK/clean.log" "$bad" <<'PY'
import json, re, sys
bad = int(sys.argv[2])
seen = {}
for n, line in enumerate(open(sys.argv[1]), 1):
    try:
        o = json.loads(line)
    except ValueError:
        sys.exit("line %d is not JSON: %s" % (n, line))
    for k in ("ts", "level", "event", "msg"):
        if k not in o:
            sys.exit("line %d has no %s: %s" % (n, k, line))
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["ts"]):
        sys.exit("line %d: ts %s" % (n, o["ts"]))
    if not re.fullmatch(r"[a-z]+(_[a-z]+)*", o["event"]):
        sys.exit("line %d: event %s is not snake_case" % (n, o["event"]))
    seen.setdefault(o["event"], o)
for ev in ("serving", "connected", "session_started", "session_ended", "report",
           "stopping", "poisoned", "corrupt_chunk"):
    if ev not in seen:
        sys.exit("no %s line" % ev)
for ev in ("connected", "session_started", "session_ended", "poisoned", "corrupt_chunk"):
    o = seen[ev]
    if not re.fullmatch(r"vm\d+", o.get("vm", "")) or not isinstance(o.get("pid"), int):
        sys.exit("%s names no VM: %s" % (ev, o))
e = seen["session_ended"]
if e["cause"] != "vmm_exited" or e["pages_total"] != 1024 or e["faults_missing"] != 1024:
    sys.exit("session_ended fields: %s" % e)
if e["complete"] is not True or not 0 < e["complete_s"] <= e["elapsed_s"]:
    sys.exit("every page faulted but not complete: %s" % e)
want = e["bytes_read"] / 1e6 / e["complete_s"]
if abs(e["throughput_mb_s"] - want) > want * 1e-3:
    sys.exit("throughput %s, want %s" % (e["throughput_mb_s"], want))
if seen["corrupt_chunk"]["chunk"] != bad or seen["poisoned"]["pages"] < 1:
    sys.exit("corrupt_chunk/poisoned fields: %s %s" % (seen["corrupt_chunk"], seen["poisoned"]))
print("ok")
PY
) || fail "$out"
note "JSON log lines: $(wc -l <"$WORK/clean.log") lines, every one an object with its event"
