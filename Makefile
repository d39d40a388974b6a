# pagein build. `make` builds build/pagein, build/vmmsim, build/libpagein.a and
# build/libpagein.so.0 (mk/install.mk: also `make man`, `make install`).
# Variants: `make SAN=asan` (ASan+UBSan) -> build/asan/, `make SAN=tsan` -> build/tsan/.
# `make check` installs missing Debian packages and runs every test (see tests/run.sh).

CC      ?= cc
SAN     ?=
PKGS    := json-c libzstd libxxhash libmicrohttpd libcrypto libcurl
CFLAGS_BASE := -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
               -g -pthread -Iinclude -Isrc -MMD -MP
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -ljson-c -lzstd -lxxhash -lmicrohttpd -lcrypto -lcurl) -lpthread -lm

ifeq ($(SAN),asan)
  BUILD  := build/asan
  CFLAGS_OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDFLAGS_SAN := -fsanitize=address,undefined
else ifeq ($(SAN),tsan)
  BUILD  := build/tsan
  CFLAGS_OPT := -O1 -fno-omit-frame-pointer -fsanitize=thread
  LDFLAGS_SAN := -fsanitize=thread
else
  BUILD  := build
  CFLAGS_OPT := -O2
  LDFLAGS_SAN :=
endif
CFLAGS  ?= $(CFLAGS_BASE) $(CFLAGS_OPT) $(EXTRA_CFLAGS)
LDFLAGS ?= $(LDFLAGS_SAN)

LIB_SRC    := $(wildcard src/*.c)
CLI_SRC    := $(wildcard src/cli/*.c)
VMMSIM_SRC := $(wildcard tools/vmmsim/*.c)
UNIT_SRC   := $(wildcard tests/unit_*.c)
ITEST_SRC  := $(wildcard tests/test_*.c)
TCOMMON    := tests/common.c

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ    := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
VMMSIM_OBJ := $(VMMSIM_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/%.c=$(BUILD)/tests/%)
ITEST_BIN  := $(ITEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all tests clean deps check demo bench soak fuzz
all: $(BUILD)/pagein $(BUILD)/vmmsim $(BUILD)/libpagein.a
tests: all $(UNIT_BIN) $(ITEST_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libpagein.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/pagein: $(CLI_OBJ) $(BUILD)/libpagein.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/vmmsim: $(VMMSIM_OBJ)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/unit_%: tests/unit_%.c $(BUILD)/libpagein.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libpagein.a $(LDFLAGS) $(LDLIBS) -lcmocka -o $@

$(BUILD)/tests/test_%: tests/test_%.c $(TCOMMON) $(BUILD)/libpagein.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(TCOMMON) $(BUILD)/libpagein.a $(LDFLAGS) $(LDLIBS) -o $@

deps:
	@scripts/install-deps.sh

# The README's two commands.
demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

check: deps
	@tests/run.sh

# The core acceptance run: 1 GiB restores in a loop (minutes; not in check).
soak: deps
	@$(MAKE) --no-print-directory all
	@scripts/soak.sh

clean:
	rm -rf build

# Per-feature rules (fuzz targets, format tools) live in mk/*.mk.
-include $(wildcard mk/*.mk)

-include $(shell find build -name '*.d' 2>/dev/null)
