/* pump.h - reading the uffd as a service of the session.
 *
 * "Someone reads the uffd" is not an assumption here but a role: the pump.
 * Any thread that needs events read (a fill got EAGAIN: a REMOVE is queued)
 * or waits for a page another thread is filling calls session_wait(). It
 * either becomes the pump (trylock of reader_lock) and does the reading
 * itself, or sleeps on the session's condition, which the pump signals
 * after every round and a filler signals when a page someone waits for
 * leaves FILLING. Waits honour the stop flag. Nothing else waits.
 * session_wait() and session_signal(), the session's service that every
 * filler uses, are declared in session.h; this header is the pump's own
 * side (reading, rounds, the drain at teardown). */
#ifndef PAGEIN_PUMP_H
#define PAGEIN_PUMP_H

#include <stdbool.h>
#include <stdint.h>

#include "session.h"

/* Reads pending uffd messages without ever blocking (whatever the VMM did
 * to the fd's flags), applies REMOVE/UNMAP to the page table at once and
 * queues the faults. drain: read until nothing is pending (needed after
 * EAGAIN); else one read of up to a round's budget. The caller is the
 * pump. Returns the number of messages read, or -errno. */
int pump_read_events(struct pagein_session *s, bool drain,
		     struct pagein_error *err);

/* One round of the pump by a thread that holds reader_lock: read once,
 * serve every fault queued. *worked: it read or served something. */
int pump_round(struct pagein_session *s, bool *worked, struct pagein_error *err);

/* Gives the role back, then signals the waiters if the round changed
 * anything or a thread sleeps until the role is free. */
void pump_release(struct pagein_session *s, bool worked);

/* At teardown: reads what is pending (a VMM's madvise() waits until its
 * REMOVE is read) and wakes the faults read. */
void session_drain(struct pagein_session *s);


#endif
