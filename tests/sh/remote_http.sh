# remote_http.sh - a pagein snapshot served by a real nginx over HTTP:
# cold then warm chunk cache (warm: nginx stopped, the restore runs from the
# cache alone), two daemons sharing one cache directory, a replaced object
# never mixed with the old one's cached chunks, a raw file and a 404
# refused with a clear line. Every byte of every VM verified.
# tsan
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../tools/nginx_lib.sh"

mkdir -p "$WORK/www" "$WORK/cache"
gen_snapshot "$WORK/mem.raw" 48M 5
# A working set to store first: 3000 scattered pages.
python3 -c 'import random; r = random.Random(2); print("\n".join(map(str, r.sample(range(12288), 3000))))' >"$WORK/ws.trace"
start_pagein "$WORK/mem.raw" --record "$WORK/ws-%n.pgws" --populate none --fault-around 0
vm rec --snapshot "$WORK/mem.raw" --vcpus 1 --pattern "trace:$WORK/ws.trace"
stop_pagein
"$PAGEIN" snapshot convert "$WORK/mem.raw" -o "$WORK/www/mem.pgn" --working-set "$WORK/ws-1.pgws" -q \
	>/dev/null 2>&1 || fail "convert"
cp "$WORK/mem.raw" "$WORK/www/mem.raw"
start_nginx "$WORK/www"
URL=http://127.0.0.1:$NGINX_PORT/mem.pgn

note "refusals: a raw file, a missing object"
"$PAGEIN" serve --snapshot "http://127.0.0.1:$NGINX_PORT/mem.raw" --socket "$WORK/x.sock" >"$WORK/raw.err" 2>&1 &&
	fail "a raw file at a URL was served"
grep -q "not a pagein snapshot.*pagein snapshot convert" "$WORK/raw.err" || fail "raw refusal: $(cat "$WORK/raw.err")"
"$PAGEIN" serve --snapshot "http://127.0.0.1:$NGINX_PORT/nope.pgn" --socket "$WORK/x.sock" >"$WORK/404.err" 2>&1 &&
	fail "a missing object was served"
grep -q "http://127.0.0.1:$NGINX_PORT/nope.pgn: HTTP 404" "$WORK/404.err" || fail "404 refusal: $(cat "$WORK/404.err")"

note "cold cache: two VMs, the working set fetched first"
start_pagein "$URL" --cache-dir "$WORK/cache" --cache-size 256M
vm cold1 --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern "trace:$WORK/ws.trace" --verify-all
vm cold2 --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern random --touch 0.5 --verify-all
stop_pagein
grep -E "remote \(daemon totals\)" "$WORK/pagein.log" | tail -1
fetches=$(grep -oE "remote \(daemon totals\): [0-9]+ fetches" "$WORK/pagein.log" | tail -1 | grep -oE '[0-9]+ fetches' | grep -oE '[0-9]+')
[ -n "$fetches" ] && [ "$fetches" -gt 0 ] || fail "no fetches counted"
files=$(ls "$WORK/cache" | grep -c '\.pgc$')
note "cold: $fetches range requests for $files cached chunks"
[ "$files" -gt 0 ] || fail "nothing cached"
[ "$fetches" -lt "$files" ] || fail "$fetches requests for $files chunks: adjacent chunks were not coalesced"

note "warm cache: nginx stopped after open, the restore runs from the cache"
start_pagein "$URL" --cache-dir "$WORK/cache" --cache-size 256M
stop_nginx
vm warm --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern random --touch 1 --verify-all
stop_pagein
grep -qE "remote \(daemon totals\): 0 fetches, 0.0 MiB fetched, 0 retries, cache [1-9][0-9]* hits/0 misses" "$WORK/pagein.log" ||
	fail "warm restore fetched: $(grep -oE 'remote \(daemon totals\).*' "$WORK/pagein.log" | tail -1)"

note "a corrupted cache file is deleted and fetched again, never served"
start_nginx "$WORK/www"
URL=http://127.0.0.1:$NGINX_PORT/mem.pgn
victim=$(ls "$WORK/cache" | grep '\.pgc$' | head -1)
printf 'XXXXXXXX' | dd of="$WORK/cache/$victim" bs=1 seek=10 conv=notrunc 2>/dev/null
start_pagein "$URL" --cache-dir "$WORK/cache" --cache-size 256M
vm badcache --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern random --touch 1 --verify-all
stop_pagein

note "two daemons share one cache directory"
rm -rf "$WORK/cache2"
start_pagein "$URL" --cache-dir "$WORK/cache2"
SOCK1=$SOCK PID1=$PAGEIN_PID
"$PAGEIN" serve --snapshot "$URL" --socket "$WORK/b.sock" --cache-dir "$WORK/cache2" >"$WORK/pagein-b.log" 2>&1 &
PID2=$!
for _ in $(seq 1 200); do [ -S "$WORK/b.sock" ] && break; sleep 0.05; done
vm share1 --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern random --touch 0.7 --verify-all &
v1=$!
SOCK=$WORK/b.sock vm share2 --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem.raw" --vcpus 2 --pattern random --touch 0.7 --verify-all &
v2=$!
wait $v1 || fail "VM of daemon 1"
wait $v2 || fail "VM of daemon 2"
kill -TERM "$PID2"
wait "$PID2" || fail "second daemon exited $?"
grep -qE "Sanitizer|runtime error" "$WORK/pagein-b.log" && fail "sanitizer report in the second daemon's log"
SOCK=$SOCK1
stop_pagein
ls "$WORK/cache2" | grep -q '^\.tmp-' && fail "temporary files left in the cache"

note "a replaced object is another object: its chunks are never mixed"
gen_snapshot "$WORK/mem2.raw" 48M 77
"$PAGEIN" snapshot convert "$WORK/mem2.raw" -o "$WORK/www/mem.pgn.new" -q >/dev/null 2>&1 || fail "convert 2"
mv "$WORK/www/mem.pgn.new" "$WORK/www/mem.pgn"
before=$(ls "$WORK/cache" | grep -c '\.pgc$')
start_pagein "$URL" --cache-dir "$WORK/cache" --cache-size 256M
vm changed --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem2.raw" --vcpus 2 --pattern random --touch 1 --verify-all
stop_pagein
grep -qE "remote \(daemon totals\): [1-9][0-9]* fetches.* 0 misses" "$WORK/pagein.log" && fail "the new object was served from the old one's cache"
keys=$(ls "$WORK/cache" | grep '\.pgc$' | cut -d. -f1 | sort -u | wc -l)
[ "$keys" -ge 2 ] || fail "one cache identity for two objects"
note "an object replaced while served: If-Match refuses it (412), the session fails, no byte mixed"
rm -rf "$WORK/cache3"
start_pagein "$URL" --cache-dir "$WORK/cache3" --populate none --fetch-deadline 5
"$PAGEIN" snapshot convert "$WORK/mem.raw" -o "$WORK/www/mem.pgn.new" --level 1 -q >/dev/null 2>&1 || fail "convert 3"
mv "$WORK/www/mem.pgn.new" "$WORK/www/mem.pgn"
"$VMMSIM" run --socket "$SOCK" --timeout 60 --snapshot "$WORK/www/mem.pgn" --expect "$WORK/mem2.raw" \
	--vcpus 2 --pattern random --touch 0.2 --verify-all >"$WORK/replaced.out" 2>&1 && fail "a VM restored from a replaced object"
expect_log "session ended \(failed: snapshot cannot give page .*not fetched from $URL"
expect_log "last fetch error: .*HTTP 412"
grep -q "verify: FAIL\|mismatch" "$WORK/replaced.out" && fail "wrong bytes reached the guest"
stop_pagein

echo "ok: cold $fetches requests ($files chunks), warm 0, two daemons, replaced object kept apart"
