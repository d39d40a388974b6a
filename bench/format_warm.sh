#!/bin/bash
# bench/format_warm.sh - warm-cache restore time from the pagein file vs the
# raw file (w1 with its working set, w3 sequential), on the files `make bench`
# left in BENCH_DIR (default /var/tmp/pagein-bench). Not part of make bench.
d=${BENCH_DIR:-/var/tmp/pagein-bench}; B=$(cd "$(dirname "$0")/.." && pwd)/build
cat $d/synthetic-2048M.raw > /dev/null; cat $d/synthetic.pagein > /dev/null
for rep in 1 2; do
for f in synthetic-2048M.raw synthetic.pagein; do
  for wl in w1 w3; do
    rm -f /tmp/wf.sock
    if [ $wl = w1 ]; then extra=(--prefetch $d/synthetic-w1.ws); pat=(--vcpus 2 --pattern trace:$d/synthetic-w1-run.trace); else extra=(); pat=(--vcpus 1 --pattern seq); fi
    $B/pagein serve --snapshot $d/$f --socket /tmp/wf.sock --populate none "${extra[@]}" 2>/dev/null & p=$!
    sleep 0.3
    t=$($B/vmmsim run --socket /tmp/wf.sock --snapshot $d/synthetic-2048M.raw "${pat[@]}" --timeout 120 | awk '/^wall_s/ {print $2} /^verify/ {v=$2} END {}')
    kill $p; wait $p 2>/dev/null
    echo "rep $rep $wl $f warm wall_s $t"
  done
done
done
