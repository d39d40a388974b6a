#!/usr/bin/env bash
# real_guest_image.sh - the snapshot format on the memory of a real Linux
# guest (scripts/make-guest-image.sh: qemu TCG, a Debian kernel, busybox):
# convert with a working set, verify, read every byte back through the
# pagein source (extract) and compare; merge a diff onto it and compare.
# Skips (77) when qemu, a kernel or busybox is missing or the guest cannot
# boot in time; it never installs anything.
# Env: PAGEIN, TMPDIR; PAGEIN_GUEST_TIMEOUT (seconds for the boot, default 300).
set -u
: "${PAGEIN:?set PAGEIN to the pagein binary}"
here=$(cd "$(dirname "$0")" && pwd)
command -v python3 >/dev/null || { echo "skip: python3 not installed"; exit 77; }
W=$(mktemp -d "${TMPDIR:-/tmp}/real-guest.XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

img=$("$here/../../scripts/make-guest-image.sh" --timeout "${PAGEIN_GUEST_TIMEOUT:-300}" 2>"$W/make.log")
rc=$?
cat "$W/make.log"
case $rc in
0) ;;
77) echo "skip: no guest image: $(sed -n 's/.*skip: //p' "$W/make.log" | head -1)"; exit 77 ;;
*) fail "make-guest-image.sh exited $rc" ;;
esac
[ -f "$img" ] || fail "make-guest-image.sh printed '$img', not a file"
size=$(stat -c %s "$img")
echo "-- image $img ($size bytes)"

# A working set: the first 2000 non-zero pages of the top 64 MiB, shuffled
# (stands in for a recording: real pages, no order of their own).
python3 - "$img" "$W/ws" <<'EOF' || fail "cannot make a working set"
import random, struct, sys
img, out = sys.argv[1], sys.argv[2]
f = open(img, "rb")
f.seek(0, 2); size = f.tell()
pages, p = [], 0
f.seek(size - (64 << 20))
base = size - (64 << 20)
while len(pages) < 2000:
    b = f.read(4096)
    if not b:
        break
    if b.count(0) != 4096:
        pages.append(base + p * 4096)
    p += 1
random.Random(1).shuffle(pages)
open(out, "wb").write(b"PAGEINWS" + struct.pack("<IIQQ", 1, 4096, len(pages), size) +
                      b"".join(struct.pack("<Q", x) for x in pages))
EOF

"$PAGEIN" snapshot convert "$img" -o "$W/g.pgn" --working-set "$W/ws" || fail "convert"
"$PAGEIN" snapshot inspect "$W/g.pgn" | tee "$W/inspect" || fail "inspect"
grep -q "working set:   2000 pages" "$W/inspect" || fail "inspect: no working set"
# Real memory: some zero pages, and compressible.
python3 - "$W/inspect" <<'EOF' || fail "implausible numbers for a real guest"
import re, sys
t = open(sys.argv[1]).read()
ratio = float(re.search(r"ratio: +([0-9.]+)", t).group(1))
zero = float(re.search(r"zero pages: .*\(([0-9.]+)%\)", t).group(1))
print(f"ratio {ratio}, zero pages {zero}%")
sys.exit(0 if ratio > 1.5 and 1 < zero < 99.9 else 1)
EOF
"$PAGEIN" snapshot verify "$W/g.pgn" || fail "verify"
"$PAGEIN" snapshot extract "$W/g.pgn" -o "$W/g.raw" || fail "extract"
cmp "$img" "$W/g.raw" || fail "extracted memory differs from the guest's"
rm -f "$W/g.raw"

# A diff snapshot on top: a few hundred pages rewritten, sparse elsewhere.
python3 - "$img" "$W/diff" "$W/expect" <<'EOF' || fail "cannot make a diff"
import random, sys
img, diff, expect = sys.argv[1:]
mem = bytearray(open(img, "rb").read())
rnd = random.Random(2)
with open(diff, "wb") as d:
    d.truncate(len(mem))
    for _ in range(300):
        p = rnd.randrange(len(mem) // 4096) * 4096
        page = rnd.randbytes(4096) if rnd.random() < 0.8 else bytes(4096)
        d.seek(p); d.write(page)
        mem[p:p + 4096] = page
open(expect, "wb").write(mem)
EOF
"$PAGEIN" snapshot merge "$W/g.pgn" "$W/diff" -o "$W/m.pgn" || fail "merge"
"$PAGEIN" snapshot extract "$W/m.pgn" -o "$W/m.raw" || fail "extract merged"
cmp "$W/expect" "$W/m.raw" || fail "merged memory differs from the expected"
echo "real_guest_image: all passed"
