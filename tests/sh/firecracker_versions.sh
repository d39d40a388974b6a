# firecracker_versions.sh - every handshake field set from v1.1 to today,
# each version's socket lifetime (v1.1-v1.11 close the socket right after
# the handshake and run on, v1.12+ keep it until they exit), unknown fields,
# and a handshake split over several sendmsg() calls. Every run verifies
# every guest byte, and every session must end once its VMM has exited.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 16M
start_pagein "$WORK/snap"
fds_at_start=$(open_fds)

# version_vm NAME SOCKET ARGS...: vm, and the socket fate vmmsim played
# (kept|closed) is the one expected.
version_vm() {
	local name=$1 fate=$2
	shift 2
	vm "$name" --snapshot "$WORK/snap" --pattern seq --verify-all "$@"
	grep -q "^handshake_socket: $fate\$" "$WORK/$name.out" ||
		fail "VM $name: socket not $fate after the handshake: $(grep handshake_socket "$WORK/$name.out")"
}

note "fc-version 1.12 (socket kept)"
version_vm v1.12 kept --fc-version 1.12
note "unknown fields ignored"
vm extra --snapshot "$WORK/snap" --extra-field --regions 2 --verify-all
note "handshake split in 5 pieces"
vm split --snapshot "$WORK/snap" --split-handshake 5 --regions 3 --verify-all
note "secret hiding, split"
vm split2 --snapshot "$WORK/snap" --protocol secret-hiding --memory memfd --split-handshake 4 --verify-all

# The socket is gone once the handshake is in: EOF there only means "no more
# messages", the VMM still runs and faults on its own uffd copy.
for v in 1.1 1.7; do
	note "fc-version $v (socket closed after the handshake, as that version does)"
	version_vm "v$v" closed --fc-version "$v"
done
note "fc-version 1.12 with --close-after-handshake"
version_vm v1.12-closed closed --fc-version 1.12 --close-after-handshake
note "fc-version 1.7 balloon: a fresh mapping over discarded pages (no REMOVE; fills there get ENOENT: that range is gone, not the VMM)"
vm v1.7-balloon --snapshot "$WORK/snap" --fc-version 1.7 --balloon 8 --pattern random --verify-all

note "every session ended with its VMM"
wait_open_fds "$fds_at_start"
stop_pagein
