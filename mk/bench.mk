# Benchmarks (bench/, docs/benchmarks.md). Not part of `make check`.
#
#   make bench         the full run: 2 GiB snapshot in $(BENCH_DIR) (a disk
#                      filesystem, not tmpfs), 3 runs of every configuration;
#                      writes docs/benchmarks.json, docs/bench-*.png and the
#                      results part of docs/benchmarks.md (about 10-15 min)
#   make bench-smoke   the same pipeline on 64 MiB, 1 run, into
#                      build/bench-smoke/ (well under a minute)
# Both install gnuplot-nox (the plots) from Debian when it is missing.

BENCH_DIR  ?= /var/tmp/pagein-bench
BENCH_SIZE ?= 2G
BENCH_REPS ?= 3
BENCH_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Wshadow

.PHONY: bench bench-smoke bench-deps bench-bins

$(BUILD)/bench/%: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) $< -o $@

bench-bins: all $(BUILD)/bench/ref_handler $(BUILD)/bench/bulk_ceiling

bench-deps: deps
	@command -v gnuplot >/dev/null || { \
		echo "bench: installing gnuplot-nox"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq gnuplot-nox >/dev/null; }

bench: bench-deps
	@$(MAKE) --no-print-directory bench-bins
	python3 bench/bench.py --size $(BENCH_SIZE) --reps $(BENCH_REPS) --dir $(BENCH_DIR) \
		--out docs --doc docs/benchmarks.md

bench-smoke: bench-deps
	@$(MAKE) --no-print-directory bench-bins
	python3 bench/bench.py --smoke
