#!/bin/bash
# tests/sh/debian_package.sh - the Debian packages build, install and work:
# copies the tree (tracked and new files, not build/) to a temporary
# directory, runs dpkg-buildpackage -b -us -uc there, installs pagein,
# libpagein0 and libpagein-dev with dpkg -i, runs `pagein --version`, then
# compiles a small program against the installed library, found through
# pkg-config, that restores memory with it (a raw snapshot and the same one
# converted by the installed pagein) and checks every byte, linked once
# against libpagein.so.0 and once statically against libpagein.a (pkg-config
# --static); the program defines now_ns and uffd_copy itself, names
# libpagein uses inside, which neither library may export. Also checks the
# SONAME, that both libraries export only pagein_* names, and that the
# units, docs and every man page are installed. Finally purges the three
# packages: the machine is left as found.
# Needs root (apt-get, dpkg -i). Installs the build dependencies when
# missing (they stay: they are build tools). Exit 0 pass, 1 fail, 77 skip.
set -u
PKGS="pagein libpagein-dev libpagein0"
HERE=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pagein-deb.XXXXXX")
INSTALLED=""
cleanup() {
	[ -n "$INSTALLED" ] && dpkg --purge $PKGS >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "skip: $*"; exit 77; }
note() { echo "-- $*"; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

for p in $PKGS; do
	installed "$p" && skip "package $p is already installed here; this test would replace and purge it"
done

# Build dependencies (every Build-Depends of debian/control, versions
# dropped; debhelper-compat is provided by debhelper) and the tools to build
# packages and to run this test.
bdeps=$(sed -n '/^Build-Depends:/,/^[A-Z]/p' "$HERE/debian/control" |
	sed '1s/^Build-Depends://; /^[A-Z]/d' | tr ',' '\n' |
	sed 's/([^)]*)//; s/[[:space:]]//g; s/^debhelper-compat$/debhelper/' | grep -v '^$')
need=""
for p in dpkg-dev debhelper pkg-config gcc make binutils python3 libjson-c-dev libzstd-dev \
	libxxhash-dev libmicrohttpd-dev libssl-dev libcurl4-openssl-dev scdoc $bdeps; do
	case " $need " in *" $p "*) continue ;; esac
	installed "$p" || need="$need $p"
done
if [ -n "$need" ]; then
	[ "$(id -u)" = 0 ] || skip "missing Debian packages:$need (run as root to have them installed)"
	note "installing$need"
	export DEBIAN_FRONTEND=noninteractive
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends $need; } >"$WORK/apt.log" 2>&1 ||
		skip "cannot install$need (apt-get failed: $(tail -1 "$WORK/apt.log"))"
fi
[ "$(id -u)" = 0 ] || skip "dpkg -i needs root"

note "copying the tree"
mkdir "$WORK/src"
(cd "$HERE" && git ls-files -co --exclude-standard | grep -v '^build/' |
	tar -cf - -T -) | tar -xf - -C "$WORK/src" || fail "copying the tree"

note "dpkg-buildpackage -b -us -uc"
(cd "$WORK/src" && DEB_BUILD_OPTIONS="parallel=2 nocheck" dpkg-buildpackage -b -us -uc) \
	>"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; fail "dpkg-buildpackage"; }
debs=""
for p in pagein libpagein0 libpagein-dev; do
	f=$(ls "$WORK"/${p}_*.deb 2>/dev/null | head -1)
	[ -n "$f" ] || fail "no ${p}_*.deb built"
	debs="$debs $f"
done

note "dpkg -i$(for d in $debs; do printf ' %s' "$(basename "$d")"; done)"
INSTALLED=1
dpkg -i $debs >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; fail "dpkg -i"; }

note "pagein --version; the library's exports"
want=$(sed -n 's/^#define PAGEIN_VERSION "\(.*\)"/\1/p' "$HERE/include/pagein.h")
got=$(/usr/bin/pagein --version) || fail "pagein --version"
[ "$got" = "pagein $want" ] || fail "pagein --version says '$got', want 'pagein $want'"
lib=$(pkg-config --variable=libdir libpagein)/libpagein.so.0
[ -e "$lib" ] || fail "$lib not installed"
leaks=$(nm -D --defined-only "$lib" | awk '$2 != "A" && $3 !~ /^pagein_/')
[ -z "$leaks" ] || fail "libpagein.so.0 exports non-pagein_ symbols: $leaks"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libpagein.so.0 ] || fail "$lib has SONAME '${soname:-none}', want libpagein.so.0"
# The static library: one object whose only global symbols are the API
# (internal ones such as now_ns or uffd_copy would clash with a VMM's own).
alib=$(pkg-config --variable=libdir libpagein)/libpagein.a
[ -f "$alib" ] || fail "$alib not installed"
nm -g --defined-only "$alib" >"$WORK/nm-a.txt" 2>&1 || { cat "$WORK/nm-a.txt"; fail "nm $alib"; }
leaks=$(awk 'NF == 3 && $3 !~ /^pagein_/ { print $3 }' "$WORK/nm-a.txt" | head -20 | tr '\n' ' ')
[ -z "$leaks" ] || fail "libpagein.a exports non-pagein_ symbols: $leaks"
grep -q ' T pagein_session_new$' "$WORK/nm-a.txt" || fail "libpagein.a does not define pagein_session_new"

note "units, docs and man pages installed"
for f in /lib/systemd/system/pagein@.service /lib/systemd/system/pagein@.socket \
	/usr/include/pagein.h "$(pkg-config --variable=libdir libpagein)/pkgconfig/libpagein.pc"; do
	[ -f "$f" ] || fail "$f not installed"
done
grep -q '^ExecStart=/usr/bin/pagein serve' /lib/systemd/system/pagein@.service ||
	fail "pagein@.service does not run /usr/bin/pagein serve: $(grep ExecStart /lib/systemd/system/pagein@.service)"
for d in README.md format.md operations.md; do
	[ -f /usr/share/doc/pagein/"$d" ] || [ -f /usr/share/doc/pagein/"$d".gz ] ||
		fail "/usr/share/doc/pagein/$d not installed: $(dpkg -L pagein | grep /doc/ | tr '\n' ' ')"
done
nman=0
for scd in "$HERE"/man/*.scd; do
	page=$(basename "$scd" .scd)  # e.g. libpagein.3
	sec=${page##*.}
	[ -f /usr/share/man/man"$sec"/"$page" ] || [ -f /usr/share/man/man"$sec"/"$page".gz ] ||
		fail "man page $page not installed in /usr/share/man/man$sec"
	nman=$((nman + 1))
done
for sec in 1 3 7; do
	ls /usr/share/man/man$sec/ | grep -q pagein || fail "no pagein man page in man$sec"
done

note "a program embedding libpagein restores memory"
cat >"$WORK/embed.c" <<'C'
/* Restores a snapshot into anonymous memory registered with a uffd, as a
 * VMM that embeds libpagein would, and checks every byte. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pagein.h>

/* Names libpagein uses inside: a VMM may well have its own. Neither the
 * shared nor the static library may export them (a static link would fail
 * with "multiple definition"). */
unsigned long long now_ns(void) { return 42; }
int uffd_copy(void) { return 7; }

static struct pagein_session *sess;
static int stop_fd;
static int run_rc;

static void *serve(void *arg)
{
	struct pagein_error err = {{0}};
	run_rc = pagein_session_run(sess, stop_fd, &err);
	if (run_rc < 0)
		fprintf(stderr, "run: %s\n", err.msg);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3 || now_ns() != 42 || uffd_copy() != 7) return 2;
	if (strcmp(pagein_version(), PAGEIN_VERSION)) {
		fprintf(stderr, "library %s, header %s\n", pagein_version(), PAGEIN_VERSION);
		return 1;
	}
	struct pagein_error err = {{0}};
	struct pagein_source *src;
	if (pagein_source_open(argv[1], &src, &err) < 0) {
		fprintf(stderr, "source: %s\n", err.msg);
		return 1;
	}
	uint64_t size = pagein_source_size(src);
	char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0) {
		perror("userfaultfd");
		return 77;
	}
	struct uffdio_api api = {.api = UFFD_API};
	struct uffdio_register reg = {.range = {(uintptr_t)mem, size},
				      .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (mem == MAP_FAILED || ioctl(uffd, UFFDIO_API, &api) ||
	    ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		perror("guest memory: mmap, UFFDIO_API or UFFDIO_REGISTER");
		return 1;
	}
	struct pagein_region rg = {(uintptr_t)mem, size, 0, 4096};
	struct pagein_session_config cfg = {.regions = &rg, .nregions = 1, .uffd = uffd,
		.mem_fd = -1, .bitmap_fd = -1, .source = src, .name = "embed"};
	if (pagein_session_new(&cfg, &sess, &err) < 0) {
		fprintf(stderr, "session: %s\n", err.msg);
		return 1;
	}
	pagein_source_unref(src);
	stop_fd = eventfd(0, EFD_CLOEXEC);
	pthread_t t;
	pthread_create(&t, NULL, serve, NULL);
	/* Compare with the raw image, page by page: every read faults. */
	int raw = open(argv[2], O_RDONLY);
	char want[4096];
	int bad = 0;
	for (uint64_t off = 0; off < size; off += 4096) {
		if (pread(raw, want, sizeof(want), (off_t)off) != (ssize_t)sizeof(want) ||
		    memcmp(mem + off, want, sizeof(want))) {
			if (bad++ < 5)
				fprintf(stderr, "page at 0x%llx differs\n", (unsigned long long)off);
		}
	}
	uint64_t one = 1;
	if (write(stop_fd, &one, sizeof(one)) != sizeof(one))
		return 1;
	pthread_join(t, NULL);
	struct pagein_stats st;
	pagein_session_stats(sess, &st);
	char line[512];
	pagein_stats_format(&st, line, sizeof(line));
	printf("%s: %llu pages checked, %d bad; %s\n", argv[1],
	       (unsigned long long)(size / 4096), bad, line);
	pagein_session_free(sess);
	return bad || run_rc < 0 ? 1 : 0;
}
C
cc -o "$WORK/embed" "$WORK/embed.c" $(pkg-config --cflags --libs libpagein) -lpthread \
	2>"$WORK/cc.log" || { cat "$WORK/cc.log"; fail "compiling against the installed libpagein"; }
used=$(ldd "$WORK/embed" | awk '$1 == "libpagein.so.0" { print $3 }')
[ -n "$used" ] && [ "$(readlink -f "$used")" = "$(readlink -f "$lib")" ] ||
	fail "embed does not use the installed $lib (ldd: ${used:-none})"
# The same program with libpagein.a (-l:libpagein.a for -lpagein, as the
# README says), its dependencies as pkg-config --static gives them.
slibs=$(pkg-config --static --libs libpagein) || fail "pkg-config --static --libs libpagein"
slibs=$(printf ' %s ' "$slibs" | sed 's/ -lpagein / -l:libpagein.a /')
case "$slibs" in *libpagein.a*) ;; *) fail "pkg-config --static --libs libpagein has no -lpagein: $slibs" ;; esac
cc -o "$WORK/embed-static" "$WORK/embed.c" $(pkg-config --cflags libpagein) $slibs -lpthread \
	2>"$WORK/cc-static.log" || { cat "$WORK/cc-static.log"; fail "linking statically against the installed libpagein.a"; }
ldd "$WORK/embed-static" | grep -q libpagein && fail "embed-static still needs libpagein.so: $(ldd "$WORK/embed-static" | grep libpagein)"

# 4 MiB: 1024 pages of 4096 bytes, a quarter zero, the rest distinct.
python3 - "$WORK/mem.raw" <<'PY' || fail "writing the snapshot"
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(1024):
        f.write(bytes(4096) if i % 4 == 3 else (b"page %6d " % i) * 341 + b"page")
PY
/usr/bin/pagein snapshot convert "$WORK/mem.raw" -o "$WORK/mem.pagein" --chunk 64K >/dev/null ||
	fail "pagein snapshot convert"
for prog in embed embed-static; do
	for snap in "$WORK/mem.raw" "$WORK/mem.pagein"; do
		"$WORK/$prog" "$snap" "$WORK/mem.raw"
		rc=$?
		[ $rc = 77 ] && skip "userfaultfd is not available here"
		[ $rc = 0 ] || fail "restore of $(basename "$snap") through the installed library ($prog)"
	done
done

note "dpkg --purge $PKGS"
dpkg --purge $PKGS >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; fail "dpkg --purge"; }
INSTALLED=""
for p in $PKGS; do
	installed "$p" && fail "$p still installed after purge"
done
[ -e /usr/bin/pagein ] && fail "/usr/bin/pagein left behind"
echo "ok: built, installed ($nman man pages), embedded (shared and static), purged"
exit 0
