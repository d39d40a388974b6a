#!/bin/bash
# bench/format_warm.sh - warm-cache restore time from the pagein file vs the
# raw file (w1 with its working set, w3 sequential), on the files a bench.py
# run left in BENCH_DIR (default /var/tmp/pagein-bench): its raw snapshot
# synthetic-SIZE.raw, synthetic.pagein, the w1 trace and working set.
# Not part of make bench.
#
#   BENCH_DIR=DIR SIZE=2048M REPS=2 PAGEIN="old-pagein new-pagein" bench/format_warm.sh
#
# PAGEIN: one or more pagein binaries to compare (default build/pagein);
# each line says which one ran. Prints per run, then the ratio pagein file
# time / raw file time per binary and workload (median of the reps).
d=${BENCH_DIR:-/var/tmp/pagein-bench}; B=$(cd "$(dirname "$0")/.." && pwd)/build
size=${SIZE:-2048M}; reps=${REPS:-2}
raw=$d/synthetic-$size.raw; pgn=$d/synthetic.pagein
bins=${PAGEIN:-$B/pagein}
sock=/tmp/format-warm-$$.sock
out=$(mktemp)
trap 'rm -f "$out" "$sock"' EXIT
cat "$raw" > /dev/null; cat "$pgn" > /dev/null
for rep in $(seq "$reps"); do
for bin in $bins; do
for f in "$raw" "$pgn"; do
  for wl in w1 w3; do
    rm -f "$sock"
    if [ $wl = w1 ]; then extra=(--prefetch $d/synthetic-w1-1.ws); pat=(--vcpus 2 --pattern trace:$d/synthetic-w1-run.trace); else extra=(); pat=(--vcpus 1 --pattern seq); fi
    "$bin" serve --snapshot "$f" --socket "$sock" --populate none "${extra[@]}" 2>/dev/null & p=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.02; done
    t=$($B/vmmsim run --socket "$sock" --snapshot "$raw" "${pat[@]}" --timeout 120 | awk '/^wall_s/ {print $2}')
    kill $p; wait $p 2>/dev/null
    kind=raw; [ "$f" = "$pgn" ] && kind=pagein
    echo "rep $rep $bin $wl $kind warm wall_s $t" | tee -a "$out"
  done
done
done
done
python3 - "$out" <<'EOF'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    _, _, b, wl, kind, _, _, v = line.split()
    t.setdefault((b, wl, kind), []).append(float(v))
for (b, wl, kind) in sorted(t):
    if kind == "raw" and (b, wl, "pagein") in t:
        r, p = statistics.median(t[(b, wl, "raw")]), statistics.median(t[(b, wl, "pagein")])
        print("%s %s: raw %.3f s, pagein file %.3f s, pagein/raw %.2f" % (b, wl, r, p, p / r))
EOF
