#!/usr/bin/env bash
# tests/run.sh - builds pagein three ways and runs every test.
#
#   release        build/        what integration tests drive vmmsim with
#   ASan + UBSan   build/asan/   every unit and C test; pagein in every
#                                integration script
#   TSan           build/tsan/   the threaded tests (resolver races, and
#                                integration scripts marked "# tsan")
#
# A test is a program or script that exits 0 (pass), 77 (skip, with its
# reason printed) or anything else (fail). Each runs with a timeout, its
# output kept in build/test-logs/; a failure prints the log's tail.
# The last line is the summary CI reads: "N passed, N failed, N skipped".
#
# Usage: tests/run.sh [NAME-FILTER]     (e.g. tests/run.sh resolver)
set -u
cd "$(dirname "$0")/.."
filter="${1:-}"
jobs=$(nproc 2>/dev/null || echo 2)
logs=build/test-logs
mkdir -p "$logs"
passed=0 failed=0 skipped=0
failures=()

build() {
	echo "== building ($*)"
	if ! make -s -j"$jobs" "$@" tests >"$logs/build-${1:-release}.log" 2>&1; then
		cat "$logs/build-${1:-release}.log" | tail -40
		echo "build failed: $*"
		echo "0 passed, 1 failed, 0 skipped"
		exit 1
	fi
}
build
build SAN=asan
build SAN=tsan

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
export TMPDIR="${TMPDIR:-/tmp}"

# run NAME TIMEOUT CMD...
run() {
	local name=$1 limit=$2
	shift 2
	if [ -n "$filter" ] && [[ "$name" != *"$filter"* ]]; then
		return
	fi
	local log="$logs/${name//\//_}.log" start=$SECONDS rc
	timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
	rc=$?
	local took=$((SECONDS - start))
	case $rc in
	0)
		passed=$((passed + 1))
		echo "PASS  $name (${took}s)"
		;;
	77)
		skipped=$((skipped + 1))
		echo "SKIP  $name: $(grep -i -m1 'skip' "$log" | cut -c1-150)"
		;;
	*)
		failed=$((failed + 1))
		failures+=("$name")
		[ $rc = 124 ] && echo "FAIL  $name: timed out after ${limit}s" || echo "FAIL  $name (exit $rc, ${took}s)"
		tail -25 "$log" | sed 's/^/      | /'
		;;
	esac
}

echo "== unit tests (cmocka, ASan+UBSan)"
for t in build/asan/tests/unit_*; do
	[ -x "$t" ] && run "asan/$(basename "$t")" 300 "$t"
done

echo "== C integration tests (ASan+UBSan, then TSan)"
for t in build/asan/tests/test_*; do
	[ -x "$t" ] && run "asan/$(basename "$t")" 600 "$t"
done
for t in build/tsan/tests/test_*; do
	[ -x "$t" ] && run "tsan/$(basename "$t")" 600 "$t"
done

echo "== integration scripts (pagein under ASan+UBSan; '# tsan' ones under TSan too)"
export VMMSIM=$PWD/build/vmmsim
for s in tests/sh/*.sh; do
	[ -f "$s" ] || continue
	name=$(basename "$s" .sh)
	[ "$name" = lib ] && continue # sourced by the others
	PAGEIN=$PWD/build/asan/pagein run "sh/$name" 900 bash "$s"
	if grep -q '^# tsan' "$s"; then
		PAGEIN=$PWD/build/tsan/pagein run "sh/$name[tsan]" 900 bash "$s"
	fi
done

echo
if [ ${#failures[@]} -gt 0 ]; then
	echo "failed: ${failures[*]} (logs in $logs/)"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
