# firecracker_versions.sh - every handshake field set from v1.1 to today,
# unknown fields, and a handshake split over several sendmsg() calls.
. "$(dirname "$0")/lib.sh"
gen_snapshot "$WORK/snap" 16M
start_pagein "$WORK/snap"
for v in 1.1 1.7 1.12; do
	note "fc-version $v"
	vm "v$v" --snapshot "$WORK/snap" --fc-version "$v" --pattern seq --verify-all
done
note "unknown fields ignored"
vm extra --snapshot "$WORK/snap" --extra-field --regions 2 --verify-all
note "handshake split in 5 pieces"
vm split --snapshot "$WORK/snap" --split-handshake 5 --regions 3 --verify-all
note "secret hiding, split"
vm split2 --snapshot "$WORK/snap" --protocol secret-hiding --memory memfd --split-handshake 4 --verify-all
stop_pagein
