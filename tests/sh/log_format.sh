# log_format.sh - pagein serve --log-format json: every line is one JSON
# object with ts, level, event and msg; lines about a VM name it (vm, pid);
# session_ended carries the cause and the statistics as numbers, and a
# restore with --populate none whose every page was faulted says complete;
# poisoned and corrupt_chunk lines carry their offset and chunk, and are
# rate limited: a VM that meets many poisoned pages within a second (vmmsim
# --on-sigbus skip goes on past each) gives one poisoned line, and the rest
# are counted in one held_back line at session end (src/conn.c,
# on_session_event).
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
	--on-sigbus skip --timeout 10 >"$WORK/bad.out" 2>&1 ||
	{ cat "$WORK/bad.out"; fail "the VM going on past poisoned pages failed"; }
grep -q "wrong byte" "$WORK/bad.out" && fail "wrong bytes were mapped: $(cat "$WORK/bad.out")"
skipped=$(sed -n 's/^sigbus_skipped: //p' "$WORK/bad.out")
[ -n "$skipped" ] && [ "$skipped" -ge 5 ] || fail "only ${skipped:-no} poisoned pages met (want several): $(cat "$WORK/bad.out")"
expect_log '"event":"poisoned"'
expect_log '"event":"corrupt_chunk"'
expect_log '"event":"held_back"' "(the session's end line for the poisoned lines held back)"
stop_pagein
cat "$WORK/pagein.log" >>"$WORK/clean.log"
out=$(python3 - "$WORK/clean.log" "$bad" "$skipped" <<'PY'
import datetime, json, re, sys
bad, skipped = int(sys.argv[2]), int(sys.argv[3])
seen = {}
poisoned, held = [], []
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
    if o["event"] == "poisoned":
        poisoned.append(o)
    if o["event"] == "held_back":
        held.append(o)
# The rate limit: one poisoned line per second of the session at most; the
# pages of every poisoned event are in a line or counted as held back.
ts = lambda o: datetime.datetime.strptime(o["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
if len(held) != 1 or held[0].get("vm") != poisoned[0].get("vm"):
    sys.exit("want one held_back line for the poisoned VM: %s" % held)
span = ts(held[0]) - ts(poisoned[0])
if len(poisoned) > 1 + int(span):
    sys.exit("%d poisoned lines over %.3f s: not rate limited (one a second)" % (len(poisoned), span))
if span < 1 and len(poisoned) != 1:
    sys.exit("%d poisoned lines within %.3f s, want 1" % (len(poisoned), span))
events = len(poisoned) + sum(o["held_back"] for o in poisoned[1:]) + held[0]["poisoned"]
if events != skipped:
    sys.exit("%d poisoned events logged or held back, the guest met %d poisoned pages: %s %s"
             % (events, skipped, poisoned, held))
if held[0]["poisoned"] < 1 or "held back" not in held[0]["msg"]:
    sys.exit("held_back line: %s" % held[0])
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
print("ok: %d poisoned pages, %d poisoned line(s) over %.3f s, %d held back"
      % (skipped, len(poisoned), span, held[0]["poisoned"]))
PY
) || fail "$out"
note "$out"
note "JSON log lines: $(wc -l <"$WORK/clean.log") lines, every one an object with its event"
