# bench/keeper_handshake_cost.sh - what the keeper adds to a session's start
# (the socket handed over at accept, the handshake peeked at and taken
# off the socket by the keeper): time from accept ("connected") to
# "session started" in the log, keeper vs --no-keeper, 40 small VMs each.
# The log has 1 ms resolution; the mean is what to compare.
# Usage: bash bench/keeper_handshake_cost.sh (after make)
set -u
d=$(mktemp -d); root=$(cd "$(dirname "$0")/.." && pwd); P=$root/build/pagein; V=$root/build/vmmsim
$V gen -o $d/snap --size 4M >/dev/null
for mode in keeper no-keeper; do
  extra=(); [ $mode = no-keeper ] && extra=(--no-keeper)
  rm -f $d/s.sock
  $P serve --snapshot $d/snap --socket $d/s.sock --log-level info "${extra[@]}" > $d/$mode.log 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S $d/s.sock ] && break; sleep 0.05; done
  for i in $(seq 40); do $V run --socket $d/s.sock --snapshot $d/snap >/dev/null 2>&1; done
  kill -TERM $pid; wait $pid
  python3 - $d/$mode.log $mode <<'PY'
import re, sys, datetime
t = {}
ds = []
for l in open(sys.argv[1]):
    m = re.match(r'(\S+)Z pagein info: (vm\d+) pid \d+: (connected|session started)', l)
    if not m: continue
    ts = datetime.datetime.fromisoformat(m.group(1)).timestamp()
    if m.group(3) == 'connected': t[m.group(2)] = ts
    elif m.group(2) in t: ds.append((ts - t[m.group(2)]) * 1000)
ds.sort()
print("%-9s accept to session started: n=%d median %.1f ms, p90 %.1f ms, mean %.2f ms" % (sys.argv[2], len(ds), ds[len(ds)//2], ds[int(len(ds)*0.9)], sum(ds)/len(ds)))
PY
done
rm -rf $d
