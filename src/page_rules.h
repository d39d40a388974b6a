/* page_rules.h - the names of page_rules.def: page states, actors and
 * actions. Plain #defines and nothing else, so that both the C code and
 * the Promela model (tests/model/, run through cpp by spin) include it. */
#ifndef PAGEIN_PAGE_RULES_H
#define PAGEIN_PAGE_RULES_H

/* Page states (the low 3 bits of a page's byte, see page_table.h). */
#define PG_ABSENT   0 /* never filled: the snapshot's bytes are due */
#define PG_FILLING  1 /* claimed by one filler */
#define PG_PRESENT  2 /* filled (or found filled); the guest owns it now */
#define PG_REMOVED  3 /* discarded by the guest: it holds zeros (or what the
		       * shared page cache kept) */
#define PG_POISONED 4 /* the snapshot could not give it: UFFDIO_POISON'd */
#define PG_NSTATES  5

/* Actors: who meets the page. */
#define ACT_MISSING 0 /* user MISSING fault */
#define ACT_MINOR   1 /* user MINOR fault */
#define ACT_REQUEST 2 /* stage-2 fault request */
#define ACT_AHEAD   3 /* fault-around, prefetch, background, eager */
#define ACT_REMOVE  4 /* REMOVE/UNMAP event */
#define ACT_N       5

/* Actions (described in page_rules.def). */
#define DO_FILL       0
#define DO_FILL_ZERO  1
#define DO_NOTE_WAKE  2
#define DO_WAIT       3
#define DO_PROBE_ZERO 4
#define DO_MAP        5
#define DO_DONE       6
#define DO_SKIP       7
#define DO_REFUSE     8
#define DO_POISON     9
#define DO_DISCARD    10

#endif
