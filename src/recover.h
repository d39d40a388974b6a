/* recover.h - what a new engine re-derives when it adopts a session whose
 * engine died (docs/architecture.md, "Recovery"). */
#ifndef PAGEIN_RECOVER_H
#define PAGEIN_RECOVER_H

#include <stdint.h>

struct pagein_session;
struct recover_stats {
	uint64_t filling_present, filling_absent, filling_removed;
	uint64_t removes_replayed, pages_present;
};
/* FILLING pages settled by probing, unapplied REMOVEs applied, userfault
 * bits of PRESENT pages cleared, every region woken. Before any thread
 * serves the session. */
int session_recover(struct pagein_session *s, struct recover_stats *st);

#endif
