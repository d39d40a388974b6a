# hugetlb.sh - guest memory in 2 MiB huge pages (Firecracker's hugetlbfs
# backing): whole-huge-page UFFDIO_COPY for anonymous and memfd memory,
# and the stage-2 path into a hugetlbfs memfd. Reserves huge pages for
# the test and gives them back; skips if the kernel cannot reserve them.
. "$(dirname "$0")/lib.sh"
want=48
before=$(cat /proc/sys/vm/nr_hugepages)
restore_pages() { echo "$before" >/proc/sys/vm/nr_hugepages 2>/dev/null; cleanup; }
trap restore_pages EXIT
echo $((before + want)) >/proc/sys/vm/nr_hugepages 2>/dev/null ||
	skip "cannot write /proc/sys/vm/nr_hugepages (not root?)"
got=$(($(cat /proc/sys/vm/nr_hugepages) - before))
[ "$got" -ge "$want" ] || skip "reserved $got of $want 2 MiB huge pages"
gen_snapshot "$WORK/snap" 64M
start_pagein "$WORK/snap"
for combo in mainline:anon mainline:memfd secret-hiding:memfd; do
	proto=${combo%%:*} mem=${combo##*:}
	extra=()
	[ "$proto" = secret-hiding ] && extra=(--stage2 0.5)
	note "2 MiB pages: $proto $mem"
	vm "huge-$proto-$mem" --snapshot "$WORK/snap" --protocol "$proto" --memory "$mem" \
		--page-size 2m --regions 2 --vcpus 2 --pattern random --vmm-thread \
		--write-fraction 0.05 --verify-all "${extra[@]}" || skip "vmmsim could not get huge pages"
done
stop_pagein
