# libFuzzer target for the JSON protocol parsers (tests/fuzz/fuzz_protocol.c).
#   make fuzz-protocol [FUZZ_PROTOCOL_SECONDS=30]; also run by `make fuzz`.
FUZZ_PROTOCOL_SECONDS ?= 30
FUZZ_DIR ?= build/fuzz
FUZZ_PROTOCOL_SRC := src/protocol.c src/error.c

.PHONY: fuzz-protocol
fuzz: fuzz-protocol

$(FUZZ_DIR)/fuzz_protocol: tests/fuzz/fuzz_protocol.c $(FUZZ_PROTOCOL_SRC) src/protocol.h
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz: $(FUZZ_CC) not found (Debian: apt-get install clang-14)"; exit 1; }
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(FUZZ_PROTOCOL_SRC) $$(pkg-config --libs json-c) -o $@

fuzz-protocol: $(FUZZ_DIR)/fuzz_protocol
	@mkdir -p $(FUZZ_DIR)/corpus_protocol
	cd $(FUZZ_DIR) && ./fuzz_protocol $(FUZZ_RUN_FLAGS) -max_total_time=$(FUZZ_PROTOCOL_SECONDS) \
		corpus_protocol $(CURDIR)/tests/fuzz/corpus_protocol
