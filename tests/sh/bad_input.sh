# bad_input.sh - every malformed handshake, fd set, region and request is
# refused with a log line naming the field and value; the daemon keeps
# serving, and no fd is left behind.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 16M
start_pagein "$WORK/snap" --on-failure keep
fds_at_start=$(open_fds)

M=16777216
ok_region='{"base_host_virt_addr":@BASE@,"size":'$M',"offset":0,"page_size":4096}'
# refused JSON FDS LOG-REGEX [extra vmmsim args]
refused() {
	local json=$1 fds=$2 want=$3
	shift 3
	"$VMMSIM" handshake --socket "$SOCK" --json "$json" --fds "$fds" --mem-size 16M \
		--wait 5 "$@" >"$WORK/hs.out" 2>&1
	local rc=$?
	[ $rc = 0 ] || { cat "$WORK/hs.out"; fail "not refused ($rc): $json / $fds"; }
	expect_log "refused handshake: .*$want" "for $json / $fds"
	pagein_alive
	note "refused: $want"
}

refused '[{"base_host_virt_addr":@BASE@,"size":'$M',"offset":0' uffd \
	"connection closed before the handshake was complete"
refused "$(printf '[%.0s' $(seq 1 40))1$(printf ']%.0s' $(seq 1 40))" uffd "malformed JSON.*(depth|deep|nest)"
refused '}{ garbage' uffd "malformed JSON"
refused '{"regions":[]}' uffd "handshake is a JSON object, not an array"
refused '[]' uffd "handshake has no regions"
refused "[$ok_region]" none "expected 1 fd .* got 0"
refused "[$ok_region]" devnull "fd [0-9]+ is not a userfaultfd"
refused "[$ok_region]" devnull3 "fd [0-9]+ is not a userfaultfd"
refused '[{"size":'$M',"offset":0}]' uffd "region 0: missing field base_host_virt_addr"
refused '[{"base_host_virt_addr":@BASE@,"size":"16M","offset":0}]' uffd 'region 0: size is "16M", not an integer'
refused '[{"base_host_virt_addr":@BASE@,"size":-4096,"offset":0}]' uffd "region 0: size -4096 is negative"
refused '[{"base_host_virt_addr":@BASE@,"size":0,"offset":0}]' uffd "region 0: size 0 is zero"
refused '[{"base_host_virt_addr":@BASE@,"size":1125899906842624,"offset":0}]' uffd "region 0: size 1125899906842624 is absurd"
refused '[{"base_host_virt_addr":@BASE@,"size":'$M',"offset":100}]' uffd "region 0: offset 0x64 is not aligned"
refused '[{"base_host_virt_addr":@BASE@,"size":12345,"offset":0}]' uffd "region 0: size 12345 is not a multiple of page_size"
refused '[{"base_host_virt_addr":@BASE@,"size":'$M',"offset":0,"page_size":8192}]' uffd "region 0: page_size 8192 is not 4096 or 2097152"
refused '[{"base_host_virt_addr":@BASE@,"size":'$M',"offset":0,"page_size":4096,"page_size_kib":2097152}]' uffd "page_size 4096 and page_size_kib 2097152 disagree"
refused '[{"base_host_virt_addr":@BASE@,"size":8192,"offset":16773120}]' uffd \
	"region 0: offset 16773120 \+ size 8192 reaches past the end of the snapshot \(16777216 bytes\)"
refused '[{"base_host_virt_addr":@BASE@,"size":8388608,"offset":0},{"base_host_virt_addr":@BASE1@,"size":8388608,"offset":4194304}]' uffd \
	"regions 0 and 1 overlap in the snapshot" --regions 2
refused '[{"base_host_virt_addr":@BASE@,"size":8388608,"offset":0},{"base_host_virt_addr":@BASE@,"size":8388608,"offset":8388608}]' uffd \
	"regions 0 and 1 overlap in the VMM's address space" --regions 2
refused "[$ok_region]" uffd,memfd,bitmap "guest memory fd is 8388608 bytes, regions need 16777216" \
	--memory memfd --mem-size 8M

note "a bad fault request is refused alone; its VM restores"
vm badreq --snapshot "$WORK/snap" --protocol secret-hiding --memory memfd --bad-request 0x40000000 --verify-all
expect_log "refused fault request \(vcpu [0-9]+\): request offset 0x40000000 is outside guest memory"

note "the daemon still serves a good handshake"
"$VMMSIM" handshake --socket "$SOCK" --json "[$ok_region]" --fds uffd --mem-size 16M \
	--snapshot "$WORK/snap" --then-touch 64 --wait 2 >"$WORK/good.out" 2>&1 ||
	{ cat "$WORK/good.out"; fail "good handshake after bad ones"; }

note "no fd left behind"
wait_open_fds "$fds_at_start"
stop_pagein

note "bad snapshots are refused at start"
for bad in /nonexistent/snap "$WORK" "$WORK/empty"; do
	: >"$WORK/empty"
	out=$("$PAGEIN" serve --snapshot "$bad" --socket "$WORK/x.sock" 2>&1)
	rc=$?
	[ $rc = 1 ] || fail "pagein serve --snapshot $bad exited $rc"
	echo "$out" | grep -qE "snapshot $bad( does not exist: check the path|: not a regular file but a directory: name the memory file itself|: file is empty: name the memory file)" ||
		fail "no clear error for $bad: $out"
	note "refused snapshot: $out"
done

note "--max-connections: connections past the cap are closed at accept, with one log line"
start_pagein "$WORK/snap" --max-connections 2
python3 - "$SOCK" <<'PY' || fail "connection cap not enforced"
import socket, sys, time
path = sys.argv[1]
held = []
for _ in range(2):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    held.append(s)
time.sleep(0.3)  # both accepted and counted
extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
extra.connect(path)  # queued by the kernel, closed by pagein at accept
extra.settimeout(5)
try:
    data = extra.recv(1)
except socket.timeout:
    sys.exit("the third connection was not closed")
sys.exit(0 if data == b"" else "unexpected bytes")
PY
expect_log "refused a connection: 2 connections open \(--max-connections"
pagein_alive
stop_pagein
