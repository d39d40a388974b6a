#!/usr/bin/env bash
# make-guest-image.sh - a real guest memory image, built on demand and cached.
#
# Boots a Linux kernel under qemu-system-x86_64 (TCG: no KVM needed) with
# its RAM in a file (memory-backend-file, share=on, so every guest write
# lands in the file), lets a small busybox workload run (files in tmpfs,
# random and compressed data, copies of binaries, a busy process), pauses
# the VM and quits. The RAM file is then exactly the memory the guest had:
# what Firecracker's snapshot memory file holds.
#
# Nothing binary lives in the repository: the initramfs is made here from
# the host's busybox, the kernel is the host's (Debian's linux-image-*).
#
# usage: scripts/make-guest-image.sh [-o FILE] [--mem MIB] [--timeout SECS] [--force]
#   -o FILE        image path (default $PAGEIN_IMAGE_CACHE/guest-<MIB>M.raw,
#                  cache dir /var/cache/pagein, or ~/.cache/pagein if that is
#                  not writable)
#   --mem MIB      guest RAM (default 256)
#   --timeout S    give up after S seconds (default 300)
#   --force        rebuild even if the cached image exists
# Env: PAGEIN_KERNEL (default: newest /boot/vmlinuz-*), PAGEIN_BUSYBOX
#      (default: busybox on PATH), QEMU (default qemu-system-x86_64).
# Prints the image path on stdout. Exit: 0 built or cached; 77 something
# needed is missing or the boot did not finish in time (reason on stderr);
# 1 any other failure.
set -u
mem=256 timeout=300 out="" force=0
while [ $# -gt 0 ]; do
	case $1 in
	-o) out=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--force) force=1; shift ;;
	-h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//;/^set -u/d'; exit 0 ;;
	*) echo "make-guest-image: unknown argument '$1' (see --help)" >&2; exit 1 ;;
	esac
done
case $mem in ''|*[!0-9]*) echo "make-guest-image: --mem $mem: expected MiB" >&2; exit 1 ;; esac
skip() { echo "make-guest-image: skip: $*" >&2; exit 77; }
die() { echo "make-guest-image: $*" >&2; exit 1; }

if [ -z "$out" ]; then
	cache=${PAGEIN_IMAGE_CACHE:-/var/cache/pagein}
	mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ] || cache=${XDG_CACHE_HOME:-$HOME/.cache}/pagein
	mkdir -p "$cache" || die "cannot create $cache"
	out=$cache/guest-${mem}M.raw
fi
if [ $force = 0 ] && [ -f "$out" ] && [ "$(stat -c %s "$out")" = $((mem << 20)) ] && [ -f "$out.info" ]; then
	echo "$out"
	exit 0
fi

qemu=${QEMU:-qemu-system-x86_64}
command -v "$qemu" >/dev/null || skip "$qemu not installed (Debian: apt-get install qemu-system-x86)"
kernel=${PAGEIN_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)}
[ -n "$kernel" ] || skip "no kernel in /boot (Debian: apt-get install linux-image-cloud-amd64) and PAGEIN_KERNEL unset"
[ -r "$kernel" ] || skip "kernel $kernel not readable (run as root, or set PAGEIN_KERNEL)"
busybox=${PAGEIN_BUSYBOX:-$(command -v busybox || true)}
[ -n "$busybox" ] && [ -x "$busybox" ] || skip "busybox not installed (Debian: apt-get install busybox-static)"
command -v python3 >/dev/null || skip "python3 not installed (it writes the initramfs and talks QMP)"

work=$(mktemp -d "${TMPDIR:-/tmp}/guest-image.XXXXXX")
qpid=""
trap '[ -n "$qpid" ] && { kill -9 $qpid; wait $qpid; } 2>/dev/null; rm -rf "$work"; rm -f "$out.tmp.$$"' EXIT

# --- initramfs: busybox (and its libraries, if it is not static) + /init
root=$work/root
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/etc"
cp "$busybox" "$root/bin/busybox"
if ldd "$busybox" >/dev/null 2>&1; then
	for lib in $(ldd "$busybox" | grep -o '/[^ ]*'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
fi
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
echo PAGEIN-GUEST-BOOTED
# A small workload whose memory looks like a server's: page cache of files
# (text, random, compressed, binaries), a process's heap, kernel slabs.
dd if=/dev/urandom of=/tmp/random bs=1M count=8 2>/dev/null
i=0
while [ $i -lt 3000 ]; do
	echo "$i: GET /api/v1/items/$((i * 7919 % 10007)) 200 $((i % 97))ms user=$((i % 13))"
	i=$((i + 1))
done >/tmp/access.log
cat /tmp/access.log /tmp/access.log /tmp/access.log /tmp/access.log >/tmp/access4.log
gzip -c /tmp/access4.log >/tmp/access4.log.gz
cp /bin/busybox /tmp/busybox.copy
find / -xdev >/tmp/files 2>/dev/null
sha256sum /tmp/random /tmp/access4.log /tmp/busybox.copy >/tmp/sums
dd if=/dev/zero bs=1M count=24 2>/dev/null | tr '\000' 'p' >/tmp/pattern
(while :; do md5sum /tmp/access.log >/dev/null; done) &
sleep 1
echo PAGEIN-WORKLOAD-DONE
while :; do sleep 10; done
EOF
chmod +x "$root/init"
python3 - "$root" "$work/initrd" <<'EOF' || die "cannot write the initramfs"
# newc cpio, written here so that the cpio tool is not a requirement.
import os, stat, sys
root, out = sys.argv[1], sys.argv[2]
ino = 1
def entry(f, name, st, data):
    global ino
    hdr = "070701" + "".join("%08x" % v for v in (
        ino, st.st_mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
    ino += 1
    f.write(hdr.encode() + name.encode() + b"\0")
    f.write(b"\0" * ((4 - (110 + len(name) + 1) % 4) % 4))
    f.write(data)
    f.write(b"\0" * ((4 - len(data) % 4) % 4))
with open(out, "wb") as f:
    for d, dirs, files in os.walk(root):
        for n in sorted(dirs) + sorted(files):
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                data = os.readlink(p).encode()
            elif stat.S_ISREG(st.st_mode):
                data = open(p, "rb").read()
            else:
                data = b""
            entry(f, rel, st, data)
    entry(f, "TRAILER!!!", os.lstat(root), b"")
EOF

# --- boot, wait for the workload, pause, quit
img=$out.tmp.$$
rm -f "$img"
log=$work/serial.log
qmp=$work/qmp.sock
"$qemu" -machine pc,accel=tcg,memory-backend=ram -smp 1 -m "${mem}M" \
	-object memory-backend-file,id=ram,size="${mem}M",mem-path="$img",share=on \
	-kernel "$kernel" -initrd "$work/initrd" \
	-append "console=ttyS0 panic=-1 quiet rdinit=/init" \
	-display none -serial "file:$log" -monitor none -qmp "unix:$qmp,server=on,wait=off" \
	-no-reboot -nodefaults >"$work/qemu.log" 2>&1 &
qpid=$!
start=$SECONDS
echo "make-guest-image: booting $kernel under TCG with ${mem} MiB (up to ${timeout}s)" >&2
until grep -q PAGEIN-WORKLOAD-DONE "$log" 2>/dev/null; do
	if ! kill -0 $qpid 2>/dev/null; then
		qpid=""
		die "qemu exited early: $(tail -5 "$work/qemu.log" "$log" 2>/dev/null)"
	fi
	[ $((SECONDS - start)) -lt "$timeout" ] ||
		skip "the guest did not finish its workload within ${timeout}s (TCG too slow here?); serial: $(tail -3 "$log" 2>/dev/null | tr '\n' ' ')"
	sleep 1
done
python3 - "$qmp" <<'EOF' || die "QMP stop/quit failed"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def cmd(c):
    f.write(json.dumps({"execute": c}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r
json.loads(f.readline())                # greeting
cmd("qmp_capabilities")
cmd("stop")                             # the guest is paused: memory is final
try:
    cmd("quit")
except (ValueError, OSError):
    pass                                # qemu may close before answering
EOF
wait $qpid
qpid=""
[ "$(stat -c %s "$img" 2>/dev/null)" = $((mem << 20)) ] || die "$img is not ${mem} MiB"
mv "$img" "$out" || die "cannot move the image to $out"
{
	echo "kernel: $kernel"
	echo "qemu: $("$qemu" --version | head -1)"
	echo "busybox: $busybox"
	echo "mem: ${mem} MiB"
	echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start))s"
} >"$out.info"
echo "make-guest-image: $out built in $((SECONDS - start))s" >&2
echo "$out"
