# The hostile-VMM test program (tests/hostile/hostile_vmm.c), driven by
# tests/sh/hostile_vmm.sh. Built with every `tests` target, into
# $(BUILD)/tests/ next to the other test programs, but without sanitizers
# whatever SAN says: it is the attacker, the daemon is what is under test.
HOSTILE_CFLAGS := -std=gnu11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wshadow -pthread -MMD -MP

tests: $(BUILD)/tests/hostile_vmm

$(BUILD)/tests/hostile_vmm: tests/hostile/hostile_vmm.c
	@mkdir -p $(dir $@)
	$(CC) $(HOSTILE_CFLAGS) $< $$(pkg-config --libs json-c 2>/dev/null || echo -ljson-c) -lpthread -o $@
