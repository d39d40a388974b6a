# holes.sh - holes stay holes: a sparse 32 GiB raw snapshot with a few MiB
# of data restores with the defaults (background population, fault-around
# auto) without filling its holes, every byte read through guest memory
# right (data and zeros), the restore completes; the same from a pagein
# file, whose zero pages are its holes.
. "$(dirname "$0")/lib.sh"
snap=$WORK/sparse.raw
truncate -s 32G "$snap" || fail "truncate"
# 4 MiB at 0, 2 MiB at 5 GiB, 1 MiB at the last MiB: 7 MiB of data.
dd if=/dev/urandom of="$snap" bs=1M count=4 conv=notrunc status=none
dd if=/dev/urandom of="$snap" bs=1M count=2 seek=5120 conv=notrunc status=none
dd if=/dev/urandom of="$snap" bs=1M count=1 seek=32767 conv=notrunc status=none
used=$(du -k "$snap" | cut -f1)
[ "$used" -lt 65536 ] || skip "the filesystem of $WORK keeps no holes ($used KiB used)"
# The guest reads pages of each data range and of the holes around them.
python3 - "$WORK/touch.trace" <<'PY'
import random, sys
r = random.Random(5)
mib = 256  # pages
pages = set()
for start, n in ((0, 4 * mib), (5120 * mib, 2 * mib), (32767 * mib, mib)):
    pages.update(r.sample(range(start, start + n), 200))
for lo, hi in ((4 * mib, 5120 * mib), (5122 * mib, 32767 * mib)):
    pages.update(r.sample(range(lo, hi), 300))
pages = sorted(pages)
r.shuffle(pages)
open(sys.argv[1], "w").write("\n".join(map(str, pages)) + "\n")
PY
data_pages=$((7 * 256))
total=$((32 * 262144))

note "raw sparse file, defaults"
start_pagein "$snap"
vm raw --snapshot "$snap" --vcpus 2 --pattern "trace:$WORK/touch.trace" --hold 1
expect_log "session ended"
line=$(grep -m1 "session ended" "$WORK/pagein.log")
echo "$line"
holes=$(sed -nE 's/.*holes ([0-9]+) pages.*/\1/p' <<<"$line")
bg=$(sed -nE 's/.*background ([0-9]+).*/\1/p' <<<"$line")
fills=$(sed -nE 's/.*; ([0-9]+) fills for.*/\1/p' <<<"$line")
[ "$holes" = $((total - data_pages)) ] || fail "holes $holes, want $((total - data_pages))"
[ "$bg" -le "$data_pages" ] || fail "background filled $bg pages, more than the $data_pages of data"
# Pages filled by any path: the data, and zero pages for the hole pages the
# guest read (600 at most).
[ "$fills" -le $((data_pages + 600)) ] || fail "$fills pages filled"
grep -q "complete in" <<<"$line" || fail "restore not complete"
stop_pagein

note "pagein file: its zero pages are holes (2 GiB, 3 MiB of data)"
small=$WORK/small.raw
truncate -s 2G "$small"
dd if=/dev/urandom of="$small" bs=1M count=2 conv=notrunc status=none
dd if=/dev/urandom of="$small" bs=1M count=1 seek=1500 conv=notrunc status=none
python3 -c 'import random; r = random.Random(6); print("\n".join(map(str, r.sample(range(512), 100) + r.sample(range(384000, 384256), 50) + r.sample(range(1000, 380000), 200))))' >"$WORK/small.trace"
"$PAGEIN" snapshot convert "$small" -o "$WORK/small.pgn" >/dev/null 2>&1 || fail "convert"
start_pagein "$WORK/small.pgn"
vm pgn --snapshot "$WORK/small.pgn" --expect "$small" --vcpus 2 --pattern "trace:$WORK/small.trace" --hold 1
expect_log "session ended"
line=$(grep -m1 "session ended" "$WORK/pagein.log")
echo "$line"
holes=$(sed -nE 's/.*holes ([0-9]+) pages.*/\1/p' <<<"$line")
bg=$(sed -nE 's/.*background ([0-9]+).*/\1/p' <<<"$line")
[ "$holes" = $((524288 - 768)) ] || fail "holes $holes, want $((524288 - 768))"
[ "$bg" -le 768 ] || fail "background filled $bg pages, more than the 768 of data"
grep -q "complete in" <<<"$line" || fail "restore not complete"
stop_pagein
echo ok
