/* fault.h - serving one user fault read from the uffd (by the pump). */
#ifndef PAGEIN_FAULT_H
#define PAGEIN_FAULT_H

#include "session.h"

/* Decides with page_rule() what a MISSING or MINOR fault gets, claims and
 * fills (with its fault-around window), or notes a wake on a page another
 * thread is filling. Never waits on a page. Returns 0, -ESRCH or -errno. */
int fault_serve(struct pagein_session *s, const struct uffd_msg *m,
		struct pagein_error *err);

#endif
