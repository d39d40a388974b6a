# install.sh - `make install PREFIX=/usr/local DESTDIR=...` puts every
# promised file in place, as a VMM build would find it: the binary (and
# it runs), libpagein.so.0 with its soname, libpagein.a exporting only
# pagein_*, pagein.h, libpagein.pc naming PREFIX, every man page in its
# section, the systemd units (ExecStart under PREFIX) and the docs; a
# program compiled and linked through that pkg-config file (with
# PKG_CONFIG_SYSROOT_DIR pointing into DESTDIR) runs against the installed
# library; `make uninstall` with the same variables removes every file.
# (tests/sh/debian_package.sh does the same for PREFIX=/usr, packaged.)
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v pkg-config >/dev/null || skip "no pkg-config (Debian package pkg-config; scripts/install-deps.sh installs it)"
command -v scdoc >/dev/null || skip "no scdoc (Debian package scdoc; scripts/install-deps.sh installs it)"
D=$WORK/root
P=/usr/local
make -s -C "$root" install PREFIX=$P DESTDIR="$D" >"$WORK/install.log" 2>&1 ||
	fail "make install: $(tail -5 "$WORK/install.log")"
for f in bin/pagein lib/libpagein.so.0 lib/libpagein.so lib/libpagein.a include/pagein.h \
	lib/pkgconfig/libpagein.pc share/man/man1/pagein.1 share/man/man1/pagein-serve.1 \
	share/man/man1/pagein-snapshot.1 share/man/man1/pagein-ctl.1 share/man/man3/libpagein.3 \
	share/man/man7/pagein-protocols.7 lib/systemd/system/pagein@.service \
	lib/systemd/system/pagein@.socket share/doc/pagein/README.md share/doc/pagein/operations.md; do
	[ -e "$D$P/$f" ] || fail "make install did not install $P/$f"
done
note "every file in place under DESTDIR$P"
readelf -d "$D$P/lib/libpagein.so.0" | grep -q 'SONAME.*\[libpagein.so.0\]' || fail "libpagein.so.0 has no soname libpagein.so.0"
leak=$(nm -g --defined-only "$D$P/lib/libpagein.a" | awk 'NF == 3 && $3 !~ /^pagein_/ { print $3 }' | head -5)
[ -z "$leak" ] || fail "the installed libpagein.a exports internal names: $leak"
grep -q "^prefix=$P$" "$D$P/lib/pkgconfig/libpagein.pc" || fail "libpagein.pc does not name prefix=$P"
grep -q "^ExecStart=$P/bin/pagein " "$D$P/lib/systemd/system/pagein@.service" || fail "pagein@.service does not run $P/bin/pagein"
v=$("$D$P/bin/pagein" --version) || fail "the installed pagein does not run"
note "installed: $v"

cat >"$WORK/embed.c" <<'C'
#include <pagein.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
	/* The header's version is the library's. */
	printf("%s\n", pagein_version());
	return strcmp(pagein_version(), PAGEIN_VERSION) != 0;
}
C
export PKG_CONFIG_PATH=$D$P/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$D
cc -o "$WORK/embed" "$WORK/embed.c" $(pkg-config --cflags --libs libpagein) ||
	fail "a program does not build through the installed libpagein.pc ($(pkg-config --cflags --libs libpagein))"
got=$(LD_LIBRARY_PATH=$D$P/lib "$WORK/embed") || fail "the embed program failed against the installed library"
[ "pagein $got" = "$v" ] || fail "the library says $got, the binary $v"
LD_LIBRARY_PATH=$D$P/lib ldd "$WORK/embed" | grep -q "libpagein.so.0 => $D$P/lib/libpagein.so.0" ||
	fail "the embed program did not load the installed libpagein.so.0: $(LD_LIBRARY_PATH=$D$P/lib ldd "$WORK/embed" | grep pagein)"
note "a program built through pkg-config runs against the installed library ($got)"

make -s -C "$root" uninstall PREFIX=$P DESTDIR="$D" >>"$WORK/install.log" 2>&1 || fail "make uninstall"
left=$(find "$D" -type f -o -type l | head -5)
[ -z "$left" ] || fail "make uninstall left: $left"
echo "ok"
