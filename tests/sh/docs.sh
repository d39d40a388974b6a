#!/bin/bash
# docs.sh - the man pages keep up with the code (cheap: no build, no
# daemon; reads sources only):
#   - every function include/pagein.h declares is in man/libpagein.3.scd;
#   - every long option of `pagein serve` (src/cli/serve_opts.c) has an
#     entry of its own in man/pagein-serve.1.scd (a line that starts with
#     the option in bold, as scdoc option lists do);
#   - every long option of the `pagein snapshot` subcommands
#     (src/cli/snapshot_cmd.c) is in man/pagein-snapshot.1.scd, in bold;
#   - every long option `pagein ctl` parses itself (src/cli/ctl_cmd.c) is
#     in man/pagein-ctl.1.scd;
#   - README.md's numbers table comes from the run docs/benchmarks.md
#     shows: it names that run's commit, and every time in it is a cell of
#     docs/benchmarks.md's tables;
#   - the benchmark plots have a panel for every results table of
#     docs/benchmarks.json but the targets (bench.py plots(), data files
#     only: gnuplot is not needed).
# Exit 0 pass, 1 fail.
set -u
cd "$(dirname "$0")/../.." || exit 1
bad=0
miss() { echo "FAIL: $*"; bad=$((bad + 1)); }

# The long options of a getopt_long table: {"name", no_argument, ...}.
long_opts() {
	grep -oE '\{"[a-z0-9-]+", *(no|required|optional)_argument' "$1" |
		sed -E 's/^\{"([a-z0-9-]+)".*/\1/' | sort -u
}

# 1. Functions: declaration lines of the header (a type, then the name and
# its opening parenthesis; comments and macros start otherwise).
funcs=$(grep -E '^[a-z].*[ *]pagein_[a-z0-9_]+\(' include/pagein.h |
	sed -E 's/.*[ *](pagein_[a-z0-9_]+)\(.*/\1/' | sort -u)
n=$(echo "$funcs" | grep -c .)
[ "$n" -ge 30 ] || miss "found only $n function declarations in include/pagein.h: the parser is broken"
for f in $funcs; do
	grep -qE "(^|[^a-z0-9_])${f}\(" man/libpagein.3.scd ||
		miss "$f (include/pagein.h) is not in man/libpagein.3.scd"
done
echo "functions: $n checked"

# 2. pagein serve: an entry line per option, e.g. "*--socket* _PATH_",
# "*-h*, *--help*" or "*--keeper*, *--no-keeper*".
opts=$(long_opts src/cli/serve_opts.c)
n=$(echo "$opts" | grep -c .)
[ "$n" -ge 25 ] || miss "found only $n options in src/cli/serve_opts.c: the parser is broken"
for o in $opts; do
	grep -qE "^\*(-[a-z]\*, \*|--[a-z0-9-]+\*, \*)?--${o}\*" man/pagein-serve.1.scd ||
		miss "pagein serve --$o (src/cli/serve_opts.c) has no entry in man/pagein-serve.1.scd"
done
echo "pagein serve: $n options checked"

# 3. pagein snapshot: every subcommand's options.
opts=$(long_opts src/cli/snapshot_cmd.c)
n=$(echo "$opts" | grep -c .)
[ "$n" -ge 8 ] || miss "found only $n options in src/cli/snapshot_cmd.c: the parser is broken"
for o in $opts; do
	grep -qF -- "*--${o}*" man/pagein-snapshot.1.scd ||
		miss "pagein snapshot --$o (src/cli/snapshot_cmd.c) is not in man/pagein-snapshot.1.scd"
done
echo "pagein snapshot: $n options checked"

# 4. pagein ctl: the options it reads itself (the rest go to the daemon,
# as pagein serve options).
opts=$(grep -oE 'strcmp\(argv\[i\], "--[a-z0-9-]+"\)' src/cli/ctl_cmd.c |
	sed -E 's/.*"--([a-z0-9-]+)".*/\1/' | sort -u)
n=$(echo "$opts" | grep -c .)
[ "$n" -ge 2 ] || miss "found only $n options in src/cli/ctl_cmd.c: the parser is broken"
for o in $opts; do
	grep -qE -- "--${o}([^a-z0-9-]|\$)" man/pagein-ctl.1.scd ||
		miss "pagein ctl --$o (src/cli/ctl_cmd.c) is not in man/pagein-ctl.1.scd"
done
echo "pagein ctl: $n options checked"

# 5. The README's numbers: the table after "When to use it".
commit=$(sed -n 's/^Run: .*, commit \([0-9a-f]*\),.*/\1/p' docs/benchmarks.md)
[ -n "$commit" ] || miss "docs/benchmarks.md has no 'Run: ..., commit X,' line"
grep -q "commit $commit" README.md ||
	miss "README.md does not name commit $commit, the run docs/benchmarks.md shows: its numbers are stale?"
table=$(sed -n '/^## When to use it/,/^## /p' README.md | grep '^| w[0-9]')
n=0
for t in $(echo "$table" | grep -oE '\| [0-9]+(\.[0-9]+)? s' | sed 's/^| //; s/ s$//'); do
	n=$((n + 1))
	grep -qF "| $t |" docs/benchmarks.md ||
		miss "README.md's numbers table says $t s, a time docs/benchmarks.md does not have"
done
[ "$n" -ge 8 ] || miss "found only $n times in README.md's numbers table"
echo "README numbers: $n times checked against the run of commit $commit"

# 6. The plots: plots() writes plot-vars.gp (the panel counts and titles)
# before it runs gnuplot; a machine without gnuplot still gets the file.
pw=$(mktemp -d "${TMPDIR:-/tmp}/pagein-docs.XXXXXX")
python3 - "$pw" >"$pw/out.txt" 2>&1 <<'PY' || { cat "$pw/out.txt"; miss "the plot panels (above)"; }
import json, os, re, sys
sys.path.insert(0, "bench")
import bench
work = sys.argv[1]
res = json.load(open("docs/benchmarks.json"))
bench.plots(res, work, work, "check")
v = open(os.path.join(work, "plot-vars.gp")).read()
num = lambda k: int(re.search(r"^%s = (\d+)$" % k, v, re.M).group(1))
titles = re.findall(r'^[TE]\[\d+\] = "(.*)"$', v, re.M)
tables = sorted({k.rsplit("/", 1)[0] for k, m in res["median"].items() if m and m.get("wall_s")})
want = len(tables) + sum(1 for s in ("throttled", "hugetlb", "remote") if (res.get(s) or {}).get("median"))
got = num("npanels") + num("nextra")
print("tables %s + sections with data: %d; panels %d: %s" % (tables, want, got, titles))
assert got == want, "%d bar panels for %d results tables" % (got, want)
for s, word in (("throttled", "throttled"), ("hugetlb", "huge pages"), ("remote", "Remote")):
    if (res.get(s) or {}).get("median"):
        assert any(word in t for t in titles), "no panel for the %s table" % s
assert num("nsweep") > 0 and num("nformat") > 0, "no sweep or format panel"
assert any(t.startswith("w5") for t in titles), "no w5 panel"
cdf = re.findall(r'^C\[\d+\] = "(.*)"$', v, re.M)
assert any(t.startswith("w5") for t in cdf), "no w5 latency CDF: %s" % cdf
PY
tail -1 "$pw/out.txt"
rm -rf "$pw"

[ $bad = 0 ] || { echo "$bad problems"; exit 1; }
echo "ok: the man pages name every function and option; the README's numbers are docs/benchmarks.md's; every results table has a plot panel"
