# Snapshot format: libFuzzer targets, their seed corpus, the real guest image.
#
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_WS_SECONDS=10]
#       builds build/fuzz/fuzz_snapshot_header (header + index + chunk
#       serving) and build/fuzz/fuzz_workingset with clang-14
#       -fsanitize=fuzzer,address,undefined and runs each for a bounded
#       time over the checked-in seeds; new inputs go to build/fuzz/, never
#       into the tree. A crash fails the target and leaves crash-* files in
#       build/fuzz/.
#   make fuzz-corpus   regenerates tests/fuzz/corpus_snapshot/ (needs build/pagein)
#   make guest-image   builds the real guest memory image (scripts/make-guest-image.sh)

FUZZ_CC          ?= clang-14
FUZZ_SECONDS     ?= 60
FUZZ_WS_SECONDS  ?= 10
FUZZ_DIR         := build/fuzz
FUZZ_CFLAGS      := -std=gnu11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc \
                    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
# Only the parsers' own sources: the rest of the library is not under test.
FUZZ_LIB_SRC     := src/snapshot_format.c src/source_pagein.c src/source.c \
                    src/source_raw.c src/error.c src/workingset.c
FUZZ_LIBS        := $(shell pkg-config --libs libzstd libxxhash 2>/dev/null || echo -lzstd -lxxhash) -lpthread
# 10 s per input is far beyond any sane one (a 16 MiB image at most).
FUZZ_RUN_FLAGS   := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

.PHONY: fuzz fuzz-corpus guest-image

$(FUZZ_DIR)/fuzz_snapshot_header: tests/fuzz/fuzz_snapshot_header.c $(FUZZ_LIB_SRC) $(wildcard src/*.h)
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz: $(FUZZ_CC) not found (Debian: apt-get install clang-14)"; exit 1; }
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(FUZZ_LIB_SRC) $(FUZZ_LIBS) -o $@

$(FUZZ_DIR)/fuzz_workingset: tests/fuzz/fuzz_snapshot_header.c $(FUZZ_LIB_SRC) $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_WORKINGSET $< $(FUZZ_LIB_SRC) $(FUZZ_LIBS) -o $@

fuzz: $(FUZZ_DIR)/fuzz_snapshot_header $(FUZZ_DIR)/fuzz_workingset
	@mkdir -p $(FUZZ_DIR)/corpus_snapshot $(FUZZ_DIR)/corpus_workingset
	@# Working-set seed: a valid two-entry file (format in src/workingset.h).
	@python3 -c 'import struct,sys; sys.stdout.buffer.write(b"PAGEINWS" + struct.pack("<IIQQQQ", 1, 4096, 2, 1 << 20, 4096, 8192))' \
		> $(FUZZ_DIR)/corpus_workingset/seed-valid
	cd $(FUZZ_DIR) && ./fuzz_snapshot_header $(FUZZ_RUN_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
		corpus_snapshot $(CURDIR)/tests/fuzz/corpus_snapshot
	cd $(FUZZ_DIR) && ./fuzz_workingset $(FUZZ_RUN_FLAGS) -max_total_time=$(FUZZ_WS_SECONDS) \
		corpus_workingset

# Seeds: valid files (dense with a partial last page, a working set, all
# zero, a raw-stored chunk) and invalid ones (short, bad chunk checksum,
# unknown version). A few KiB each.
fuzz-corpus: $(BUILD)/pagein
	@set -e; d=tests/fuzz/corpus_snapshot; t=$$(mktemp -d); mkdir -p $$d; \
	python3 -c 'import sys; p=b"".join(b"pagein %d " % i for i in range(600))[:4096]; sys.stdout.buffer.write(p + bytes(4096) + p[::-1] + b"tail" * 25)' > $$t/dense.raw; \
	python3 -c 'import sys; sys.stdout.buffer.write(bytes(65536 + 8192) + b"x" * 4096 + bytes(4096))' > $$t/ws.raw; \
	python3 -c 'import struct,sys; sys.stdout.buffer.write(b"PAGEINWS" + struct.pack("<IIQQQQ", 1, 4096, 2, 81920, 73728, 0))' > $$t/ws.ws; \
	truncate -s 64K $$t/zero.raw; \
	head -c 4096 /dev/urandom > $$t/random.raw; \
	$(BUILD)/pagein snapshot convert $$t/dense.raw -o $$d/valid-dense --chunk 64K; \
	$(BUILD)/pagein snapshot convert $$t/ws.raw -o $$d/valid-working-set --chunk 64K --working-set $$t/ws.ws; \
	$(BUILD)/pagein snapshot convert $$t/zero.raw -o $$d/valid-all-zero --chunk 64K; \
	$(BUILD)/pagein snapshot convert $$t/random.raw -o $$d/valid-raw-chunk --chunk 64K; \
	head -c 100 $$d/valid-dense > $$d/invalid-short; \
	cp $$d/valid-dense $$d/invalid-chunk-checksum; \
	printf '\377' | dd of=$$d/invalid-chunk-checksum bs=1 seek=4100 conv=notrunc status=none; \
	cp $$d/valid-dense $$d/invalid-version; \
	printf '\002' | dd of=$$d/invalid-version bs=1 seek=8 conv=notrunc status=none; \
	rm -rf $$t; ls -l $$d

guest-image:
	scripts/make-guest-image.sh
