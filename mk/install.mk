# The shared library, man pages, install and uninstall.
#
#   make               also builds $(BUILD)/libpagein.so.0 (-fPIC objects in
#                      $(BUILD)/pic/, soname libpagein.so.0, exports only
#                      the pagein_* API: src/libpagein.map)
#                      and $(BUILD)/pub/libpagein.a, the static library that
#                      is installed: the library objects linked into one
#                      (ld -r) whose only global symbols are the ones
#                      libpagein.so.0 exports, so that internal names such
#                      as now_ns or uffd_copy cannot clash with an embedding
#                      VMM's own. ($(BUILD)/libpagein.a keeps every symbol:
#                      pagein itself and the tests link the internals.)
#   make man           renders man/*.scd with scdoc into build/man/
#   make install   [PREFIX=/usr/local] [DESTDIR=] [SYSTEMDUNITDIR=...]
#   make uninstall [same variables]
# Installed: bin/pagein (vmmsim is a test tool, not installed), the library
# (.so, .a), pagein.h, libpagein.pc, the man pages, pagein@.service, pagein@.socket and
# the docs.

PAGEIN_VERSION := $(shell sed -n 's/^\#define PAGEIN_VERSION "\(.*\)"/\1/p' include/pagein.h)
SONAME     := libpagein.so.0
SHLIB      := libpagein.so.$(PAGEIN_VERSION)
PIC_OBJ    := $(LIB_SRC:%.c=$(BUILD)/pic/%.o)

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/pagein
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL    ?= install

MAN_SRC    := $(wildcard man/*.scd)
MAN_OUT    := $(MAN_SRC:man/%.scd=build/man/%)

.PHONY: man install uninstall shlib
all: $(BUILD)/$(SONAME) $(BUILD)/libpagein.so $(BUILD)/pub/libpagein.a
shlib: $(BUILD)/$(SONAME)

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=default -c $< -o $@

$(BUILD)/$(SHLIB): $(PIC_OBJ) src/libpagein.map
	$(CC) $(LDFLAGS) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=src/libpagein.map \
		-Wl,--no-undefined $(PIC_OBJ) $(LDLIBS) -o $@

$(BUILD)/$(SONAME): $(BUILD)/$(SHLIB)
	ln -sf $(SHLIB) $@

$(BUILD)/libpagein.so: $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

# The exported names: those of the shared library (its version script
# decides), without the version suffix.
LD      ?= ld
OBJCOPY ?= objcopy
$(BUILD)/pub/libpagein.a: $(LIB_OBJ) $(BUILD)/$(SHLIB)
	@mkdir -p $(dir $@)
	nm -D --defined-only $(BUILD)/$(SHLIB) | awk '$$2 != "A" { sub(/@.*/, "", $$3); print $$3 }' \
		> $(BUILD)/pub/exports.txt
	$(LD) -r -o $(BUILD)/pub/libpagein.o $(LIB_OBJ)
	$(OBJCOPY) --keep-global-symbols=$(BUILD)/pub/exports.txt $(BUILD)/pub/libpagein.o
	rm -f $@ && $(AR) rcs $@ $(BUILD)/pub/libpagein.o

build/man/%: man/%.scd
	@mkdir -p $(dir $@)
	@command -v scdoc >/dev/null || { echo "make man: scdoc not found (Debian: apt-get install scdoc)"; exit 1; }
	scdoc < $< > $@.tmp && mv $@.tmp $@

man: $(MAN_OUT)

# Regenerated every time: they hold PREFIX, which can change between runs.
# libpagein.pc: Libs.private names the libraries libpagein itself calls
# (json-c, libzstd, libxxhash, libmicrohttpd, libcrypto, libcurl), not a
# Requires.private on them, so that `pkg-config --static --libs libpagein`
# links libpagein.a against their shared libraries without asking for
# every library libcurl could link (-lnghttp2, -lssh2, -lldap, ...), whose
# -dev packages a VMM need not have. pagein.h includes none of their
# headers, so no Cflags of theirs are needed.
.PHONY: build/libpagein.pc build/pagein@.service
build/pagein@.service: systemd/pagein@.service.in
	@mkdir -p $(dir $@)
	sed 's|@BINDIR@|$(BINDIR)|g' $< > $@

build/libpagein.pc: mk/install.mk include/pagein.h
	@mkdir -p $(dir $@)
	printf '%s\n' 'prefix=$(PREFIX)' 'exec_prefix=$${prefix}' 'libdir=$(LIBDIR)' \
		'includedir=$(INCLUDEDIR)' '' 'Name: libpagein' \
		'Description: lazy restore of VM memory snapshots over userfaultfd' \
		'Version: $(PAGEIN_VERSION)' \
		'Cflags: -I$${includedir}' \
		'Libs: -L$${libdir} -lpagein' 'Libs.private: $(strip $(LDLIBS))' > $@

install: all man build/libpagein.pc build/pagein@.service
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 \
		$(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSTEMDUNITDIR)
	$(INSTALL) -m 755 $(BUILD)/pagein $(DESTDIR)$(BINDIR)/pagein
	$(INSTALL) -m 644 $(BUILD)/$(SHLIB) $(DESTDIR)$(LIBDIR)/$(SHLIB)
	ln -sf $(SHLIB) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libpagein.so
	$(INSTALL) -m 644 $(BUILD)/pub/libpagein.a $(DESTDIR)$(LIBDIR)/libpagein.a
	$(INSTALL) -m 644 include/pagein.h $(DESTDIR)$(INCLUDEDIR)/pagein.h
	$(INSTALL) -m 644 build/libpagein.pc $(DESTDIR)$(PKGCONFIGDIR)/libpagein.pc
	for m in $(MAN_OUT); do s=$${m##*.}; $(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	$(INSTALL) -m 644 build/pagein@.service $(DESTDIR)$(SYSTEMDUNITDIR)/pagein@.service
	$(INSTALL) -m 644 systemd/pagein@.socket $(DESTDIR)$(SYSTEMDUNITDIR)/pagein@.socket
	$(INSTALL) -m 644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/pagein $(DESTDIR)$(LIBDIR)/$(SHLIB) $(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/libpagein.so $(DESTDIR)$(LIBDIR)/libpagein.a \
		$(DESTDIR)$(INCLUDEDIR)/pagein.h $(DESTDIR)$(PKGCONFIGDIR)/libpagein.pc \
		$(DESTDIR)$(SYSTEMDUNITDIR)/pagein@.service $(DESTDIR)$(SYSTEMDUNITDIR)/pagein@.socket
	for m in $(MAN_SRC:man/%.scd=%); do s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$$m; done
	rm -rf $(DESTDIR)$(DOCDIR)
