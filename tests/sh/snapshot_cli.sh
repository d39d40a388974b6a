#!/usr/bin/env bash
# snapshot_cli.sh - `pagein snapshot` end to end through the built binary:
# convert/inspect/verify/extract round trips (bytes compared), usage errors,
# corruption named by chunk, merge of a base and two diffs, an
# interrupted convert that leaves nothing behind and says so, progress
# lines and the summary when stderr is not a terminal, and the cleanup of a
# .tmp.PID left by a killed convert.
# Env: PAGEIN (the pagein binary), TMPDIR. Exit 0 pass, 1 fail, 77 skip.
set -u
: "${PAGEIN:?set PAGEIN to the pagein binary}"
command -v python3 >/dev/null || { echo "skip: python3 is needed to make test files"; exit 77; }
W=$(mktemp -d "${TMPDIR:-/tmp}/snapshot-cli.XXXXXX")
BG=""
trap '[ -n "$BG" ] && kill -9 $BG 2>/dev/null; rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
note() { echo "-- $*"; }

# run WANT_RC CMD...: runs, keeps stdout+stderr in $OUT, checks the exit code.
run() {
	local want=$1
	shift
	OUT=$("$@" 2>&1)
	local rc=$?
	[ "$rc" = "$want" ] || fail "'$*' exited $rc, want $want: $OUT"
}
expect() { echo "$OUT" | grep -q -- "$1" || fail "${2:-output} lacks '$1': $OUT"; }
no_leftovers() { ! ls "$W" | grep -q '\.tmp\.' || fail "temporary file left: $(ls "$W")"; }

# Guest-memory-like test data: zero runs, random pages, text pages, a
# partial last page. mkimage FILE PAGES SEED [TAIL_BYTES]
mkimage() {
	python3 - "$@" <<'EOF'
import random, sys
path, pages, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tail = int(sys.argv[4]) if len(sys.argv) > 4 else 0
rnd = random.Random(seed)
with open(path, "wb") as f:
    for i in range(pages):
        k = rnd.random()
        if k < 0.35 or (i // 16) % 5 == 0:
            f.write(bytes(4096))
        elif k < 0.65:
            f.write(rnd.randbytes(4096))
        else:
            f.write((b"page %d of guest text " % i * 300)[:4096])
    f.write(rnd.randbytes(tail))
EOF
}

# chunk_field FILE CHUNK: "offset stored" of a chunk, read from the index.
chunk_field() {
	python3 - "$1" "$2" <<'EOF'
import struct, sys
f = open(sys.argv[1], "rb").read()
esize, ioff = struct.unpack_from("<I", f, 48)[0], struct.unpack_from("<Q", f, 56)[0]
off, stored = struct.unpack_from("<QI", f, ioff + int(sys.argv[2]) * esize)
print(off, stored)
EOF
}

note "help and usage errors"
run 0 "$PAGEIN" snapshot --help
expect "convert RAW -o OUT"
for sub in convert merge inspect verify extract bench; do
	run 0 "$PAGEIN" snapshot $sub --help
	expect "usage: pagein snapshot $sub"
done
run 2 "$PAGEIN" snapshot
run 2 "$PAGEIN" snapshot frobnicate
expect "unknown subcommand 'frobnicate'"
: >"$W/empty"
run 2 "$PAGEIN" snapshot convert "$W/empty"
expect "-o OUT is required"
run 2 "$PAGEIN" snapshot convert "$W/empty" -o "$W/x" --chunk 3K
expect "--chunk 3K"
run 2 "$PAGEIN" snapshot convert "$W/empty" -o "$W/x" --chunk 1Q
run 2 "$PAGEIN" snapshot convert "$W/empty" -o "$W/x" --level 99
expect "--level 99"
run 2 "$PAGEIN" snapshot merge "$W/empty" -o "$W/x"
expect "at least one DIFF"
run 2 "$PAGEIN" snapshot verify
run 1 "$PAGEIN" snapshot convert "$W/nonexistent" -o "$W/x"
expect "$W/nonexistent: No such file"
run 1 "$PAGEIN" snapshot convert "$W/empty" -o "$W/x"
expect "$W/empty: file is empty"
[ -e "$W/x" ] && fail "a failed convert left its output"
no_leftovers

note "convert / inspect / verify / extract round trips"
mkimage "$W/a.raw" 777 1 100 # 3 MiB + 100 bytes: neither chunk nor page multiple
python3 -c 'import struct,sys; n=[700,3,350,3,0]; sys.stdout.buffer.write(b"PAGEINWS"+struct.pack("<IIQQ",1,4096,len(n),777*4096+100)+b"".join(struct.pack("<Q",p*4096) for p in n))' >"$W/a.ws"
for chunk in 64K 256K 1M; do
	for ws in "" "--working-set $W/a.ws"; do
		run 0 "$PAGEIN" snapshot convert "$W/a.raw" -o "$W/a.pgn" --chunk $chunk $ws
		expect "convert: wrote $W/a.pgn: 3.04 MiB -> " "convert summary"
		expect "zero pages, [0-9]* chunks" "convert summary"
		echo "$OUT" | grep -Eq '^convert: [0-9.]+ s, [0-9]+ MB/s; read [0-9.]+ s, compress [0-9.]+ s \(summed over [0-9]+ threads?\), write [0-9.]+ s \+ fsync [0-9.]+ s$' ||
			fail "convert summary lacks throughput and read/compress/write times: $OUT"
		run 0 "$PAGEIN" snapshot inspect "$W/a.pgn"
		expect "pagein snapshot, version 1"
		expect "image size:    3182692 "
		case $chunk in 64K) bytes=65536 ;; 256K) bytes=262144 ;; 1M) bytes=1048576 ;; esac
		expect "chunk size:    $bytes "
		expect "zero pages:"
		expect "ratio:"
		[ -n "$ws" ] && expect "working set:   5 pages"
		[ -z "$ws" ] && expect "working set:   none"
		run 0 "$PAGEIN" snapshot verify "$W/a.pgn"
		expect "ok"
		run 0 "$PAGEIN" snapshot extract "$W/a.pgn" -o "$W/a.back"
		cmp "$W/a.raw" "$W/a.back" || fail "extract of convert --chunk $chunk $ws differs from the input"
	done
done
# The working set's chunks come first in the file, in first-touch order
# (64K chunks: 43, 0, 21; chunk 0 is all zero, so nothing is stored for it).
run 0 "$PAGEIN" snapshot convert "$W/a.raw" -o "$W/ws.pgn" --chunk 64K --working-set "$W/a.ws"
first=$(python3 - "$W/ws.pgn" <<'EOF'
import struct, sys
f = open(sys.argv[1], "rb").read()
esize, ioff = struct.unpack_from("<I", f, 48)[0], struct.unpack_from("<Q", f, 56)[0]
count = struct.unpack_from("<Q", f, 40)[0]
entry = lambda c: struct.unpack_from("<QI", f, ioff + c * esize)
stored = [c for c in range(count) if entry(c)[1]]
print(" ".join(str(c) for c in sorted(stored, key=lambda c: entry(c)[0])[:2]))
EOF
)
[ "$first" = "43 21" ] || fail "working-set chunks not first in first-touch order: $first"
# A pagein file converts again (different chunk size), same bytes.
run 0 "$PAGEIN" snapshot convert "$W/ws.pgn" -o "$W/again.pgn" --chunk 4M --level 1
run 0 "$PAGEIN" snapshot extract "$W/again.pgn" -o "$W/again.raw"
cmp "$W/a.raw" "$W/again.raw" || fail "pagein -> pagein convert changed bytes"
no_leftovers

note "all-zero and tiny images"
truncate -s 5M "$W/zero.raw"
run 0 "$PAGEIN" snapshot convert "$W/zero.raw" -o "$W/zero.pgn"
run 0 "$PAGEIN" snapshot inspect "$W/zero.pgn"
expect "(100.0%)"
[ "$(stat -c %s "$W/zero.pgn")" -le 8192 ] || fail "all-zero 5 MiB took $(stat -c %s "$W/zero.pgn") bytes"
run 0 "$PAGEIN" snapshot extract "$W/zero.pgn" -o "$W/zero.back"
cmp "$W/zero.raw" "$W/zero.back" || fail "all-zero round trip"
printf 'x' >"$W/one.raw"
run 0 "$PAGEIN" snapshot convert "$W/one.raw" -o "$W/one.pgn"
run 0 "$PAGEIN" snapshot extract "$W/one.pgn" -o "$W/one.back"
cmp "$W/one.raw" "$W/one.back" || fail "one-byte round trip"

note "corruption: verify names the chunk"
run 0 "$PAGEIN" snapshot convert "$W/a.raw" -o "$W/c.pgn" --chunk 64K
read -r off stored < <(chunk_field "$W/c.pgn" 7)
[ "$stored" -gt 0 ] || fail "chunk 7 unexpectedly empty"
cp "$W/c.pgn" "$W/bad.pgn"
printf '\x5a' | dd of="$W/bad.pgn" bs=1 seek=$((off + stored / 2)) conv=notrunc status=none
cmp -s "$W/c.pgn" "$W/bad.pgn" && fail "the byte flip did not change the file"
run 1 "$PAGEIN" snapshot verify "$W/bad.pgn"
expect "chunk 7: checksum mismatch"
expect "first bad chunk 7"
run 1 "$PAGEIN" snapshot extract "$W/bad.pgn" -o "$W/bad.raw"
expect "chunk 7"
[ -e "$W/bad.raw" ] && fail "extract of a corrupt file left output"
run 1 "$PAGEIN" snapshot convert "$W/bad.pgn" -o "$W/bad2.pgn"
expect "chunk 7"
[ -e "$W/bad2.pgn" ] && fail "convert of a corrupt file left output"
# inspect reads only header and index: fine; verify is what catches it.
run 0 "$PAGEIN" snapshot inspect "$W/bad.pgn"
# Header byte flipped.
cp "$W/c.pgn" "$W/badh.pgn"
printf '\x01' | dd of="$W/badh.pgn" bs=1 seek=26 conv=notrunc status=none
run 1 "$PAGEIN" snapshot verify "$W/badh.pgn"
expect "header_checksum"
expect "$W/badh.pgn"
# Truncated.
cp "$W/c.pgn" "$W/short.pgn"
truncate -s -1 "$W/short.pgn"
run 1 "$PAGEIN" snapshot verify "$W/short.pgn"
expect "truncated"
run 1 "$PAGEIN" snapshot verify "$W/a.raw"
expect "bad magic"
no_leftovers

note "merge: base + 2 diffs (holes keep the base, data replaces it, zeros too)"
mkimage "$W/base.raw" 512 2
python3 - "$W" <<'EOF'
import os, random, sys
w = sys.argv[1]
size = 512 * 4096
base = bytearray(open(f"{w}/base.raw", "rb").read())
rnd = random.Random(3)
def diff(name, pages):
    with open(f"{w}/{name}", "wb") as f:
        f.truncate(size)               # sparse: holes everywhere
        for p, data in pages:
            f.seek(p * 4096)
            f.write(data)
            base[p * 4096:(p + 1) * 4096] = data
d1 = [(p, rnd.randbytes(4096)) for p in (1, 2, 3, 100, 101, 300, 511)]
d1 += [(50, bytes(4096)), (51, bytes(4096))]         # dirtied to zero: data, not holes
d2 = [(p, rnd.randbytes(4096)) for p in (2, 101, 200, 0)]
d2 += [(300, bytes(4096))]                             # overwrites d1's page
diff("d1.raw", d1)
diff("d2.raw", d2)
open(f"{w}/expect.raw", "wb").write(base)
EOF
[ "$(du -k "$W/d1.raw" | cut -f1)" -lt 1000 ] || note "diff files are not sparse on this filesystem"
run 0 "$PAGEIN" snapshot merge "$W/base.raw" "$W/d1.raw" "$W/d2.raw" -o "$W/m.pgn" --chunk 64K
run 0 "$PAGEIN" snapshot verify "$W/m.pgn"
run 0 "$PAGEIN" snapshot extract "$W/m.pgn" -o "$W/m.raw"
cmp "$W/expect.raw" "$W/m.raw" || fail "merge result differs from the expected memory"
# The base may itself be a pagein file.
run 0 "$PAGEIN" snapshot convert "$W/base.raw" -o "$W/base.pgn"
run 0 "$PAGEIN" snapshot merge "$W/base.pgn" "$W/d1.raw" "$W/d2.raw" -o "$W/m2.pgn"
run 0 "$PAGEIN" snapshot extract "$W/m2.pgn" -o "$W/m2.raw"
cmp "$W/expect.raw" "$W/m2.raw" || fail "merge onto a pagein base differs"
# Order matters: d2 then d1 is a different memory.
run 0 "$PAGEIN" snapshot merge "$W/base.raw" "$W/d2.raw" "$W/d1.raw" -o "$W/m3.pgn"
run 0 "$PAGEIN" snapshot extract "$W/m3.pgn" -o "$W/m3.raw"
cmp -s "$W/expect.raw" "$W/m3.raw" && fail "merge ignored the order of the diffs"
truncate -s 1M "$W/short.raw"
run 1 "$PAGEIN" snapshot merge "$W/base.raw" "$W/short.raw" -o "$W/m4.pgn"
expect "$W/short.raw: 1048576 bytes, but base"
run 1 "$PAGEIN" snapshot merge "$W/base.raw" "$W/base.pgn" -o "$W/m4.pgn"
expect "not a pagein snapshot"
[ -e "$W/m4.pgn" ] && fail "failed merge left output"
no_leftovers

note "interrupted convert leaves no output and no temporary file"
# Slow on purpose: zstd level 19 on text, one thread.
python3 -c '
import random, sys
r = random.Random(5); words = [b"%x" % r.getrandbits(20) for _ in range(4096)]
out = sys.stdout.buffer
for _ in range(48 * 1024 * 1024 // 65536):
    out.write(b" ".join(r.choice(words) for _ in range(12000))[:65536].ljust(65536, b"."))
' >"$W/slow.raw"
note "progress lines (stderr not a terminal), summary on stdout, -q"
"$PAGEIN" snapshot convert "$W/slow.raw" -o "$W/fast.pgn" --level 9 --threads 1 \
	>"$W/conv.out" 2>"$W/conv.err" || fail "convert of slow.raw: $(cat "$W/conv.err")"
lines=$(grep -Ec '^convert: +[0-9]+% [0-9]+/50 MB, [0-9]+ MB/s, ETA [0-9.]+ (s|min)' "$W/conv.err")
[ "$lines" -ge 2 ] || fail "expected progress lines every 5% or 2 s on stderr, got: $(cat "$W/conv.err")"
grep -v '^convert: ' "$W/conv.err" && fail "stderr has more than progress lines"
grep -q 'ETA' "$W/conv.out" && fail "progress went to stdout: $(cat "$W/conv.out")"
grep -q "^convert: wrote $W/fast.pgn: 48.00 MiB -> " "$W/conv.out" || fail "no summary on stdout: $(cat "$W/conv.out")"
grep -q "compress .* (summed over 1 thread), write " "$W/conv.out" || fail "summary lacks the time split: $(cat "$W/conv.out")"
run 0 "$PAGEIN" snapshot convert "$W/slow.raw" -o "$W/fast.pgn" --level 1 -q
[ -z "$OUT" ] || fail "convert -q printed: $OUT"

note "interrupted convert: says what it removed"
for sig in INT TERM; do
	"$PAGEIN" snapshot convert "$W/slow.raw" -o "$W/slow.pgn" --level 19 --threads 1 2>"$W/sig.err" &
	BG=$!
	pid=$BG
	for _ in $(seq 1 200); do
		ls "$W" | grep -q 'slow.pgn.tmp.' && break
		sleep 0.05
	done
	ls "$W" | grep -q 'slow.pgn.tmp.' || fail "convert never created its temporary file"
	sleep 0.3
	kill -$sig $BG
	rc=0
	wait $BG || rc=$?
	BG=""
	[ $rc != 0 ] || fail "convert finished before SIG$sig arrived (test input too small?)"
	[ -e "$W/slow.pgn" ] && fail "SIG$sig left $W/slow.pgn"
	grep -q "interrupted; removed the partial output $W/slow.pgn.tmp.$pid ($W/slow.pgn was not written)" "$W/sig.err" ||
		fail "SIG$sig: no word of what was removed: $(cat "$W/sig.err")"
	no_leftovers
done

note "a .tmp left by a killed convert: removed by the next one, or reported while its process lives"
"$PAGEIN" snapshot convert "$W/slow.raw" -o "$W/slow.pgn" --level 19 --threads 1 2>/dev/null &
BG=$!
pid=$BG
for _ in $(seq 1 200); do
	[ -e "$W/slow.pgn.tmp.$pid" ] && break
	sleep 0.05
done
kill -KILL $BG
wait $BG 2>/dev/null
BG=""
[ -e "$W/slow.pgn.tmp.$pid" ] || fail "SIGKILL left no temporary file to clean up"
run 0 "$PAGEIN" snapshot convert "$W/a.raw" -o "$W/slow.pgn"
expect "removed $W/slow.pgn.tmp.$pid, the partial output of an earlier run (process $pid) that did not finish"
no_leftovers
# A live process's file is not touched (it may be another convert at work).
sleep 30 &
BG=$!
: >"$W/slow.pgn.tmp.$BG"
: >"$W/slow.pgnx.tmp.1" # another output's file: not ours
run 0 "$PAGEIN" snapshot convert "$W/a.raw" -o "$W/slow.pgn"
expect "$W/slow.pgn.tmp.$BG: left alone: process $BG, which is writing it, is still running"
[ -e "$W/slow.pgn.tmp.$BG" ] || fail "removed the temporary file of a live process"
[ -e "$W/slow.pgnx.tmp.1" ] || fail "removed another output's temporary file"
kill $BG
wait $BG 2>/dev/null
BG=""
rm -f "$W/slow.pgn.tmp."* "$W/slow.pgnx.tmp.1"
echo "snapshot_cli: all passed"
exit 0
