/* pagein.pml - a Promela model of pagein's engine, checked by spin.
 *
 * One or two guest pages under every actor that touches them: a vCPU
 * faulting through the uffd-registered mapping, a stage-2 vCPU asking over
 * the socket, a balloon discarding (madvise: REMOVE event, zap after the
 * read), the kernel's uffd queue with its EAGAIN rule, a prefetcher
 * (fill-ahead / background population), and the daemon's worker pool (1 or
 * 2 workers) taking "uffd readable" and "request arrived" work items.
 *
 * Two designs, chosen when the verifier is generated:
 *   (default)      the NEW engine of issue 7: a pump role (a trylock) that
 *                  any thread waiting on the kernel may take, and wait(),
 *                  which pumps or sleeps on the session condition variable;
 *   -DOLD_DESIGN   the engine before issue 7: only a worker that took
 *                  "uffd readable" reads the uffd; every other thread that
 *                  must wait sleeps and retries.
 *
 * THE decision table is src/page_rules.def: it is #included below through
 * a RULE macro that turns each row into one guard of decide(), and the C
 * code indexes the very same file. docs/model.md says what is modelled and
 * what is abstracted away, the properties, and the results.
 *
 * How to run (tests/sh/model.sh does all of it; spin is Debian's `spin`):
 *   spin -a [OPTIONS] tests/model/pagein.pml      writes pan.c here
 *   cc -O2 -DNOCLAIM -DSAFETY -o pan pan.c && ./pan -m200000
 *                                     safety: assertions, invalid end states
 *   cc -O2 -o pan pan.c && ./pan -a -f -m200000 -N woken
 *                                     liveness under weak fairness: woken,
 *                                     answered, returns, torn (ltl below)
 *   spin -t -k pagein.pml.trail -p -g [OPTIONS] tests/model/pagein.pml
 *                                     replay a counterexample
 * OPTIONS:
 *   -DOLD_DESIGN      the engine before issue 7
 *   -DWORKERS=N       worker pool size (default 1)
 *   -DVCPU_PAGES=N    the vCPU accesses pages 0 .. N-1 (default 2)
 *   -DS2_PAGE=P       the page the stage-2 vCPU asks for (default 0)
 *   -DANON            anonymous memory, mainline protocol (default: memfd,
 *                     secret hiding: uffd registered MISSING|MINOR plus a
 *                     guest memory fd and stage-2 requests)
 *   -DTEARDOWN        the session ends while a discard may be pending
 *   -DNO_REMOVE_LOCK  mutant: non-reader fillers skip remove_lock (shows
 *                     that the discard property can fail)
 *   -DEFAULT_FATAL    mutant: UFFDIO_CONTINUE's EFAULT ends the session in
 *                     the NEW design too, as in the OLD code (shows that the
 *                     ZEROPAGE fallback is needed)
 *
 * The scenario (bounded, so that a run takes seconds): a vCPU accesses
 * page 0 then page 1 (each access is read and checked, and maybe written);
 * a stage-2 vCPU requests page S2_PAGE (memfd only); the balloon discards
 * one page (either); the prefetcher fills ahead pages 0 and 1. Under
 * -DTEARDOWN a stopper replaces both vCPUs.
 *
 * Atomicity: every kernel call, every compare-and-swap of the page table
 * and every lock operation is one step; so is a whole read() of the uffd.
 * Where two steps are merged into one atomic block, no other actor could
 * tell the difference (the comment at the block says why); the windows
 * that matter (claim -> look at the flags -> fill -> settle -> wake; read
 * -> apply -> zap) are all kept open.
 */

#include "../../src/page_rules.h"

/* ---- configuration -------------------------------------------------- */

#ifndef WORKERS
#define WORKERS 1	/* the daemon's worker pool (`--threads`) */
#endif
#define NPAGES 2
#ifndef S2_PAGE
#define S2_PAGE 0	/* the page the stage-2 vCPU asks for */
#endif
#ifndef VCPU_PAGES
#define VCPU_PAGES NPAGES	/* the vCPU accesses pages 0 .. VCPU_PAGES-1 */
#endif
#define QCAP 4		/* uffd queue capacity; asserted never reached */

#ifdef ANON
#define SHMEM 0
#else
#define SHMEM 1
#endif

/* ---- the decision table: src/page_rules.def, row by row -------------- */

/* decide(actor, st, act): act = what `actor` does with a page in state
 * `st`. Each RULE(actor, state, action) row of page_rules.def becomes one
 * guard of this if; a combination the table lacks asserts. */
#define RULE(a, s, d) :: (actor == a && st == s) -> act = d;
inline decide(actor, st, act)
{
	if
#include "../../src/page_rules.def"
	:: else -> assert(false)	/* a hole in the table */
	fi
}
#undef RULE

/* ---- state ------------------------------------------------------------ */

/* pagein's page table (page_table.c): a PG_* state per page, and the flags
 * a FILLING page carries. */
byte pg[NPAGES];	/* PG_ABSENT .. PG_POISONED */
bit wakew[NPAGES];	/* WAKE_WANTED: a fault found it FILLING */
bit disc[NPAGES];	/* DISCARDED: a REMOVE arrived while FILLING */
bit waiter[NPAGES];	/* WAITER: a stage-2 request waits on it */

/* The kernel's view of a page. content: what a read of the page gives.
 * Anonymous memory: the page mapped at the registered address (content is
 * C_NONE exactly when nothing is mapped). memfd: the page in the memfd's
 * page cache, which the registered mapping shows once mapped. */
#define C_NONE  0	/* no page: pte none / hole in the memfd */
#define C_SNAP  1	/* the snapshot's bytes (never all zero in the model) */
#define C_ZERO  2	/* zeros */
#define C_GUEST 3	/* written by the guest: its bytes, nobody else's */
byte content[NPAGES];
bit mapped[NPAGES];	/* the registered (user) mapping has a pte */

/* Ghosts, for the properties only. */
bit dbegun[NPAGES];	/* the balloon called madvise() on it */
bit zapped[NPAGES];	/* ... and the kernel zapped it */
byte snapfills[NPAGES];	/* times pagein put the snapshot's bytes in */

/* The uffd: a FIFO of messages (kind, page). */
#define M_MISSING 0
#define M_MINOR   1
#define M_REMOVE  2
#define M_NONE    3	/* the pump serves no fault */
chan uq = [QCAP] of { byte, byte };
byte rm_unread;		/* REMOVEs queued and not read yet: fills EAGAIN */
bit uffd_closed;	/* the session closed the uffd (teardown) */

/* Results of a fill ioctl. */
#define R_OK     0
#define R_EAGAIN 1
#define R_EEXIST 2
#define R_EFAULT 3
#define R_NOTISSUED 4	/* the model's: a fill not issued (discarded) */

/* The vCPU: 0 running, else page+1 it sleeps on (its fault is queued). */
byte vsleep;

/* The stage-2 request. */
#define RQ_NONE     0
#define RQ_SENT     1	/* on the socket: the "request arrived" work item */
#define RQ_SERVING  2	/* a worker has it */
#define RQ_ANSWERED 3
byte req;

bit bal_blocked;	/* the balloon is inside madvise(), its REMOVE unread */

/* The pump role (NEW) / reader_lock (OLD): 0 free, else the holder's _pid.
 * Only its holder reads the uffd, so the two buffers below are the role's. */
byte pump;
chan dq = [QCAP] of { byte, byte };	/* faults the pump drained */
chan rmq = [QCAP] of { byte };		/* REMOVEs drained, to apply */

/* The session condition variable: bit _pid set = that thread sleeps on it.
 * Whether to sleep is decided under the session mutex, atomically with the
 * check of its reason (the pump role is taken; the page is FILLING); a
 * broadcast clears every bit. */
short cvmask;
#define BROADCAST cvmask = 0
#define MYBIT (1 << _pid)
#define W_PUMP  0
#define W_SLEEP 1
#define W_BACK  2	/* look again at once (page left FILLING; stop) */
/* pthread_cond_wait(): until a broadcast, or stop */
#define CV_WAIT atomic { (cvmask & MYBIT) == 0 || stop -> cvmask = cvmask & ~MYBIT }

/* remove_lock: a writer-preferring rwlock (a waiting writer blocks new
 * readers: PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP). */
byte rl_readers;
bit rl_writer, rl_wwait;

/* The daemon and the session. */
bit epoll_on = 1;	/* the uffd is in the epoll set */
bit stop;		/* the session's stop flag */
bit pf_done;		/* the prefetch thread has returned */
bit torn_down;		/* teardown done: prefetcher joined, uffd closed */

/* ---- the kernel -------------------------------------------------------- */

/* Wakes the vCPU if it sleeps on page p (a fill's wake, UFFDIO_WAKE). */
inline k_wake(p)
{
	if
	:: vsleep == p + 1 -> vsleep = 0
	:: else -> skip
	fi
}

/* Every write of pagein into guest memory goes through here. */
inline put(p, val)
{
	/* SAFETY 1: a page the guest wrote is never written by pagein. */
	assert(content[p] != C_GUEST);
	/* SAFETY 2 (in part): a zapped page never gets the snapshot back. */
	assert(val != C_SNAP || !zapped[p]);
	content[p] = val;
	if
	:: val == C_SNAP ->
		snapfills[p]++;
		/* SAFETY 3: no page is filled twice from the snapshot. */
		assert(snapfills[p] <= 1)
	:: else -> skip
	fi
}

/* UFFDIO_COPY (val C_SNAP) or UFFDIO_ZEROPAGE (val C_ZERO) of one page,
 * waking the page's waiters or not (DONTWAKE). ahead: a fill-ahead's.
 * EAGAIN while a REMOVE is unread; EEXIST, waking nobody, if the page is
 * there (anonymous: mapped; memfd: in the page cache, e.g. after a
 * pwrite()). One step: the caller puts it in a d_step. */
inline k_fill(p, val, wake, ahead, res)
{
	if
	:: rm_unread > 0 -> res = R_EAGAIN
	:: rm_unread == 0 && content[p] != C_NONE -> res = R_EEXIST
	:: rm_unread == 0 && content[p] == C_NONE ->
		put(p, val);
		/* SAFETY 4 (issue 7 item 9): fill-ahead never fills a
		 * page the guest discarded. */
		assert(!ahead || !dbegun[p]);
		mapped[p] = 1;
		res = R_OK;
		if
		:: wake -> k_wake(p)
		:: else -> skip
		fi
	fi
}

/* UFFDIO_CONTINUE with wake: maps the page-cache page. EFAULT if the
 * cache has none, EEXIST if it is mapped already. (In a d_step.) */
inline k_continue(p, res)
{
	if
	:: rm_unread > 0 -> res = R_EAGAIN
	:: rm_unread == 0 && content[p] == C_NONE -> res = R_EFAULT
	:: rm_unread == 0 && content[p] != C_NONE && mapped[p] -> res = R_EEXIST
	:: rm_unread == 0 && content[p] != C_NONE && !mapped[p] ->
		mapped[p] = 1;
		res = R_OK;
		k_wake(p)
	fi
}

/* pwrite() into the guest memory fd: the page cache only. It raises no
 * event, wakes nobody, maps nothing, and never answers EAGAIN. */
inline k_pwrite(p, val)
{
	assert(SHMEM);
	put(p, val)
}

/* ---- the page table ---------------------------------------------------- */

/* ABSENT/REMOVED -> FILLING (page_claim, a compare-and-swap: it is one
 * step with the decide() on the state it read). */
inline claim(p)
{
	pg[p] = PG_FILLING;
	wakew[p] = 0;
	disc[p] = 0;
	waiter[p] = 0
}

/* The claimed page p leaves FILLING: PRESENT (ok) or ABSENT (given back),
 * REMOVED if it was discarded meanwhile. That is one compare-and-swap;
 * then, a second step, the filler wakes the fault that asked (WAKE_WANTED,
 * or xwake: EEXIST woke nobody) with UFFDIO_WAKE, broadcasts the session
 * condition if a request waits (WAITER), and, if reply, answers the
 * stage-2 request. sw, sW: the caller's temporaries. */
inline settle(p, ok, xwake, reply)
{
	d_step {
		sw = wakew[p];
		sW = waiter[p];
		pg[p] = (disc[p] -> PG_REMOVED : (ok -> PG_PRESENT : PG_ABSENT));
		wakew[p] = 0;
		disc[p] = 0;
		waiter[p] = 0
	}
	d_step {
		if
		:: sw || xwake -> k_wake(p)
		:: else -> skip
		fi;
#ifndef OLD_DESIGN
		if
		:: sW -> BROADCAST
		:: else -> skip
		fi;
#endif
		if
		:: reply -> req = RQ_ANSWERED
		:: else -> skip
		fi;
		sw = 0;
		sW = 0
	}
}

/* ---- remove_lock, as a non-reader filler takes it ----------------------- */

/* rdlock_look(p, d): take remove_lock shared, then look at the flags (d:
 * discarded). One step: while we hold it shared nobody applies a REMOVE,
 * so the flags cannot change between the two. */
inline rdlock_look(p, d)
{
#ifdef NO_REMOVE_LOCK
	d = disc[p]
#else
	d_step { !rl_writer && !rl_wwait -> rl_readers++; d = disc[p] }
#endif
}
#ifdef NO_REMOVE_LOCK
#define RDUNLOCK skip
#else
#define RDUNLOCK rl_readers--
#endif

/* ---- the pump ------------------------------------------------------------ */

/* Locals of any thread that may pump (a worker, the prefetcher). */
#define PUMP_LOCALS \
	byte pk, pp, pa;	/* a message being read; a REMOVE's action */ \
	byte fk, fp, fa, fr;	/* the fault served: kind, page, action, result */ \
	bit fc;			/* the pump holds the claim on fp */ \
	bit sw, sW;		/* settle's temporaries */ \
	byte wr;		/* how a wait ended */ \
	byte pn			/* messages the last pump read */

/* read_events(): remove_lock exclusive from the read until the REMOVEs it
 * read are applied. The read takes every pending message (the model's
 * queue is shorter than one read()'s 64); reading a REMOVE completes the
 * event, so the balloon's madvise() goes on to the zap. The lock is
 * announced (new readers wait), then taken when the readers are gone, and
 * the read is done in the same step: no other actor could tell. */
inline pump_read()
{
	atomic {
		rl_wwait = 1;
		rl_readers == 0;	/* if not yet: blocks here, atomicity lost */
		rl_writer = 1;
		rl_wwait = 0;
		do
		:: uq?pk, pp ->
			pn++;
			assert(nfull(rmq) && nfull(dq));
			if
			:: pk == M_REMOVE -> rmq!pp; rm_unread--
			:: else -> dq!pk, pp
			fi
		:: empty(uq) -> break
		od
	}
	/* The REMOVEs first (a fault read with them may be for a page being
	 * zapped), by the table; then the lock is released and, NEW, the
	 * session condition broadcast: waiters look again. */
	d_step {
		do
		:: rmq?pp ->
			decide(ACT_REMOVE, pg[pp], pa);
			assert(pa == DO_DISCARD);
			if
			:: pg[pp] == PG_FILLING -> disc[pp] = 1
			:: else -> pg[pp] = PG_REMOVED
			fi
		:: empty(rmq) -> break
		od;
		rl_writer = 0;
#ifndef OLD_DESIGN
		BROADCAST
#endif
	}
}

/* One step of the pump's service of the fault (fk, fp), by the table.
 * fc: the pump holds the claim on fp. Decide (and claim, or note the wake:
 * one step with the decide, as page_claim/page_want_wake are one
 * compare-and-swap), then, in a later step, the ioctl. Sets fr to R_EAGAIN
 * when the ioctl met an unread REMOVE: pump_run() then reads, and the
 * fault is served on (a claim is kept; otherwise decided again); fk goes
 * to M_NONE when the fault is done. */
inline pump_step()
{
	if
	:: !fc ->
		d_step {
			if
			:: fk == M_MISSING -> decide(ACT_MISSING, pg[fp], fa)
			:: else -> decide(ACT_MINOR, pg[fp], fa)
			fi;
			if
			:: fa == DO_FILL || fa == DO_FILL_ZERO -> claim(fp); fc = 1
			:: fa == DO_NOTE_WAKE ->
				wakew[fp] = 1;	/* its filler wakes it: never wait */
				fk = M_NONE
			:: fa == DO_PROBE_ZERO || fa == DO_MAP -> skip
			:: fa == DO_POISON -> assert(false)	/* no corrupt chunk here */
			fi
		}
		if
		:: fa == DO_PROBE_ZERO || fa == DO_MAP ->
			/* No claim: UFFDIO_ZEROPAGE on a PRESENT page (a stale
			 * fault, or a page zapped after its discard was applied:
			 * ZEROPAGE never overwrites) or UFFDIO_CONTINUE. EEXIST
			 * woke nobody: UFFDIO_WAKE (merged with the ioctl: a wake
			 * a moment early is the same wake). */
			d_step {
				if
				:: fa == DO_PROBE_ZERO -> k_fill(fp, C_ZERO, 1, 0, fr)
				:: else ->
					k_continue(fp, fr);
					if
					:: fr == R_EFAULT ->
#if defined(OLD_DESIGN) || defined(EFAULT_FATAL)
						/* OLD: "continue: Bad address"
						 * ends the session */
						assert(false)
#else
						/* raised before the zap punched the
						 * page: the cache has none; zeros
						 * are its content */
						k_fill(fp, C_ZERO, 1, 0, fr)
#endif
					:: else -> skip
					fi
				fi;
				if
				:: fr == R_EEXIST -> k_wake(fp)
				:: else -> skip
				fi;
				if
				:: fr != R_EAGAIN -> fk = M_NONE
				:: else -> skip
				fi
			}
		:: else -> skip
		fi
	:: fc ->
		/* The pump's own fill of the page it claimed. It needs no
		 * remove_lock: it is the one that applies REMOVEs, so the
		 * flags cannot change between its look and its ioctl. */
		d_step {
			if
			:: disc[fp] ->
				/* discarded by the pump's own read (on EAGAIN):
				 * the data fill is not issued */
				fr = R_NOTISSUED
			:: !disc[fp] && fk == M_MISSING && fa == DO_FILL ->
				k_fill(fp, C_SNAP, 1, 0, fr)
			:: !disc[fp] && fk == M_MISSING && fa == DO_FILL_ZERO ->
				k_fill(fp, C_ZERO, 1, 0, fr)
			:: !disc[fp] && fk == M_MINOR && fa == DO_FILL ->
				/* MINOR on ABSENT: the cache has a page pagein
				 * never filled; only an unregistered mapping of
				 * the memfd makes one, and the model has none */
				assert(false)
			:: !disc[fp] && fk == M_MINOR && fa == DO_FILL_ZERO ->
				/* REMOVED + MINOR: map the page the cache kept */
				k_continue(fp, fr);
				if
				:: fr == R_EFAULT ->
#if defined(OLD_DESIGN) || defined(EFAULT_FATAL)
					assert(false)	/* ends the session */
#else
					k_fill(fp, C_ZERO, 1, 0, fr)	/* as above */
#endif
				:: else -> skip
				fi
			fi
		}
		if
		:: fr == R_NOTISSUED ->
			/* it ends REMOVED; the fault is decided again (only
			 * the faulting page ever gets zeros) */
			settle(fp, 0, 0, 0);
			fc = 0
		:: fr == R_EAGAIN -> skip	/* pump_run() reads; the claim stays */
		:: fr == R_OK || fr == R_EEXIST ->
			settle(fp, 1, fr == R_EEXIST, 0);
			fc = 0;
			fk = M_NONE
		fi
	fi
}

/* The pump, run by the role's holder (pump == _pid): read and apply, serve
 * the faults drained, reading again whenever a fill answers EAGAIN (the
 * pump is the reader), then release the role and (NEW) broadcast. pn: how
 * many messages it read. p: NEW, the page its holder waits on (NPAGES:
 * none): if the pump read nothing and that page is still FILLING, the
 * holder sleeps on the condition, deciding so under the mutex that
 * releases the role (pumping again would read nothing again: see wait()). */
inline pump_run(p)
{
	pn = 0;
	fk = M_NONE;
	fr = R_EAGAIN;	/* first: read */
	do
	:: fr == R_EAGAIN ->
		pump_read();
		fr = R_OK
	:: fr != R_EAGAIN && fk != M_NONE -> pump_step()
	:: fr != R_EAGAIN && fk == M_NONE ->
		if
		:: dq?fk, fp
		:: empty(dq) -> break
		fi
	od;
	atomic {	/* not a d_step: the break above jumps here */
		pump = 0;
#ifndef OLD_DESIGN
		BROADCAST;
		if
		:: pn == 0 && p < NPAGES && pg[p] == PG_FILLING && !stop ->
			cvmask = cvmask | MYBIT;
			wr = W_SLEEP
		:: else -> wr = W_BACK
		fi;
#endif
		/* dead temporaries back to 0: fewer distinct states */
		pk = 0; pp = 0; pa = 0; fk = 0; fp = 0; fa = 0; fr = 0; fc = 0; pn = 0
	}
#ifndef OLD_DESIGN
	if
	:: wr == W_SLEEP -> CV_WAIT
	:: else -> skip
	fi;
	wr = 0
#endif
}

/* ---- wait (NEW design) ------------------------------------------------- */

/* wait(p): the caller waits on the kernel (p == NPAGES: it got EAGAIN) or
 * on the FILLING page p (its WAITER flag set). It becomes the pump if the
 * role is free; else it sleeps on the session condition until a
 * broadcast, unless the page already left FILLING. The stop flag ends it.
 * The decision is one step under the session mutex: the role is a flag
 * under that mutex, and the filler broadcasts under it after its settle,
 * so no wakeup falls between the look and the sleep. */
inline wait_decide(p)
{
	atomic {
		if
		:: stop -> wr = W_BACK
		:: !stop && p < NPAGES && pg[p] != PG_FILLING -> wr = W_BACK
		:: !stop && (p == NPAGES || pg[p] == PG_FILLING) && pump == 0 ->
			pump = _pid;
			wr = W_PUMP
		:: !stop && (p == NPAGES || pg[p] == PG_FILLING) && pump != 0 ->
			cvmask = cvmask | MYBIT;
			wr = W_SLEEP
		fi
	}
}
inline wait_act(p)
{
	if
	:: wr == W_PUMP -> pump_run(p)
	:: wr == W_SLEEP -> CV_WAIT
	:: wr == W_BACK -> skip
	fi;
	wr = 0
}
inline wait(p)
{
	wait_decide(p);
	wait_act(p)
}

/* ---- the actors --------------------------------------------------------- */

/* The guest's vCPU: accesses page 0, then page 1, through the registered
 * mapping. A page not mapped: the kernel queues a fault (MINOR if the
 * memfd's cache has the page, else MISSING) and the vCPU sleeps until a
 * wake on that page; then it retries the access (faulting again if the
 * page is still not mapped). Each access reads the page (checked), and
 * maybe writes it. Waking and retrying are one step: only the vCPU itself
 * sets vsleep again. */
proctype vcpu()
{
	byte p = 0;
	do
	:: atomic {
		vsleep == 0 && p < VCPU_PAGES ->
		if
		:: mapped[p] ->
			assert(content[p] != C_NONE);
			/* SAFETY 2: a discarded page never reads the snapshot */
			assert(!zapped[p] || content[p] != C_SNAP);
			/* no silent zeros: a page the guest never discarded
			 * reads its snapshot bytes or its own */
			assert(dbegun[p] || content[p] != C_ZERO);
			if
			:: content[p] = C_GUEST	/* a write */
			:: skip
			fi;
			p++
		:: !mapped[p] ->
			assert(!uffd_closed && nfull(uq));
			uq!((SHMEM && content[p] != C_NONE) -> M_MINOR : M_MISSING), p;
			vsleep = p + 1
		fi
	   }
	:: atomic { vsleep == 0 && p == VCPU_PAGES -> break }
	od
}

/* The stage-2 vCPU (secret hiding): KVM exited on its page's userfault
 * bit and the VMM sent a FaultRequest (req = RQ_SENT at the start); it
 * blocks until the reply, then reads (checked) and maybe writes the page
 * through the guest memory fd (a hole reads zeros: KVM maps a new page). */
proctype s2vcpu()
{
	atomic {
		req == RQ_ANSWERED ->
		assert(!zapped[S2_PAGE] || content[S2_PAGE] != C_SNAP);
		assert(dbegun[S2_PAGE] || (content[S2_PAGE] != C_ZERO &&
					   content[S2_PAGE] != C_NONE));
		if
		:: content[S2_PAGE] = C_GUEST
		:: skip
		fi
	}
}

/* The balloon: madvise(MADV_DONTNEED) of an anonymous page, or
 * madvise(MADV_REMOVE) of a memfd page, either page. The kernel queues a
 * REMOVE, blocks until pagein has read it, then zaps: unmapped, and its
 * content gone (it reads zeros until it is filled again). */
proctype balloon()
{
	byte b;
	atomic {
		if
		:: b = 0
		:: b = 1
		fi;
		dbegun[b] = 1;
		if
		:: !uffd_closed ->
			assert(nfull(uq));
			uq!M_REMOVE, b;
			rm_unread++;
			bal_blocked = 1
		:: else -> skip	/* no uffd any more: no event */
		fi
	}
	atomic {
		rm_unread == 0 ->	/* read (or the uffd closed) */
		mapped[b] = 0;
		content[b] = C_NONE;
		zapped[b] = 1;
		bal_blocked = 0
	}
}

/* The prefetcher: fill-ahead (working-set replay, background population;
 * fault-around is the same actor) of pages 0 and 1. It claims ABSENT pages
 * only (the table, ACT_AHEAD) and fills with UFFDIO_COPY DONTWAKE,
 * holding remove_lock shared from its last look at the flags until the
 * ioctl returns; then it wakes a fault that asked. */
proctype prefetcher()
{
	PUMP_LOCALS;
	byte pf = 0, hact, hres;
	bit hdisc;
	do
	:: d_step {
		pf < NPAGES && !stop ->
		decide(ACT_AHEAD, pg[pf], hact);
		if
		:: hact == DO_FILL -> claim(pf)
		:: else -> skip
		fi
	   }
		if
		:: hact == DO_FILL ->
			do
			:: rdlock_look(pf, hdisc);
				if
				:: hdisc ->
					atomic { RDUNLOCK };
#ifdef OLD_DESIGN
					/* OLD: the run is planned again, as zeros:
					 * issue 7 item 9 (violates SAFETY 4) */
					d_step { k_fill(pf, C_ZERO, 0, 1, hres) };
					if
					:: hres == R_EAGAIN -> skip
					:: else -> settle(pf, 1, hres == R_EEXIST, 0); break
					fi
#else
					/* not issued: the page ends REMOVED */
					settle(pf, 1, 0, 0);
					break
#endif
				:: else ->
					/* the ioctl, and the unlock when it returns */
					d_step { k_fill(pf, C_SNAP, 0, 1, hres); RDUNLOCK };
					if
					:: hres == R_EAGAIN ->
#ifdef OLD_DESIGN
						skip	/* nanosleep(20 us), retry; stop unseen */
#else
						wait(NPAGES);
						if
						:: stop -> settle(pf, 0, 0, 0); break	/* give it back */
						:: else -> skip
						fi
#endif
					:: else ->
						settle(pf, 1, hres == R_EEXIST, 0);
						break
					fi
				fi
			od
		:: else -> skip
		fi;
		atomic { pf++; hact = 0; hres = 0; hdisc = 0 }
	:: atomic { pf == NPAGES || stop -> pf_done = 1; break }
	od
}

/* A worker of the daemon's pool takes work items from the epoll set
 * (EPOLLONESHOT: one fd's item goes to one worker at a time).
 *
 * "uffd readable" (messages are queued): OLD: lock reader_lock and read
 * (handle_uffd: only a worker ever does); NEW: trylock the pump role (a
 * worker that finds it taken skips and re-arms: a step that changes
 * nothing, left out). In both the item and the role are taken in one
 * step, and released together when the pump is done.
 *
 * "request arrived": serve the stage-2 request for page S2_PAGE by the
 * table. NEW: DO_WAIT sets WAITER and calls wait(), which may make this
 * worker the pump. (One copy of the pump code per process, reached by
 * goto, keeps the verifier small.) */
proctype worker()
{
	PUMP_LOCALS;
	byte ra;	/* the request's action */
	byte wp;	/* the page the pump's holder waits on (NPAGES: none) */
	bit rdisc;
end:
	do
	:: atomic { nempty(uq) && epoll_on && pump == 0 -> pump = _pid; wp = NPAGES }
		goto pumping
	:: atomic { req == RQ_SENT -> req = RQ_SERVING }
		goto serving
	od;

serving:
	atomic {	/* not a d_step: gotos jump here */
		decide(ACT_REQUEST, pg[S2_PAGE], ra);
		if
		:: ra == DO_FILL || ra == DO_FILL_ZERO -> claim(S2_PAGE)
		:: else -> skip
		fi
	}
	if
	:: ra == DO_FILL || ra == DO_FILL_ZERO ->
		rdlock_look(S2_PAGE, rdisc);
		if
		:: ra == DO_FILL && rdisc ->
			/* discarded since the claim: no snapshot bytes; the
			 * page ends REMOVED; decide again */
			atomic { RDUNLOCK };
			settle(S2_PAGE, 1, 0, 0);
			goto serving
		:: else ->
			/* the pwrite() and the unlock when it returns */
			d_step {
				if
				:: ra == DO_FILL -> k_pwrite(S2_PAGE, C_SNAP)
				:: ra == DO_FILL_ZERO && content[S2_PAGE] == C_NONE ->
					k_pwrite(S2_PAGE, C_ZERO)	/* zeros into a hole only */
				:: ra == DO_FILL_ZERO && content[S2_PAGE] != C_NONE ->
					skip	/* the cache kept the page */
				fi;
				RDUNLOCK
			}
			/* PRESENT (bit cleared), wake, reply */
			settle(S2_PAGE, 1, 0, 1)
		fi
	:: ra == DO_WAIT ->
#ifdef OLD_DESIGN
		/* nanosleep(10 us), look again */
		goto serving
#else
		/* WAITER, then wait: one step (see wait_decide()) */
		d_step {
			if
			:: pg[S2_PAGE] == PG_FILLING -> waiter[S2_PAGE] = 1
			:: else -> skip
			fi;
			wait_decide(S2_PAGE)
		}
		if
		:: wr == W_PUMP -> wp = S2_PAGE; goto pumping
		:: wr == W_SLEEP -> CV_WAIT
		:: wr == W_BACK -> skip
		fi;
		wr = 0;
		goto serving
#endif
	:: ra == DO_DONE -> req = RQ_ANSWERED	/* ok */
	:: ra == DO_REFUSE -> req = RQ_ANSWERED	/* error reply */
	fi;
	d_step { ra = 0; rdisc = 0 };
	goto end;

pumping:
	pump_run(wp);
	if
	:: wp == NPAGES -> goto end
	:: else -> wp = NPAGES; goto serving	/* decide again */
	fi
}

/* Teardown (the server stops, or the VMM is gone): the stop flag, the
 * uffd out of epoll, waiters woken; the prefetcher joined; then the uffd
 * closed, which drops its messages and lets a blocked madvise() go on. */
proctype stopper()
{
	atomic {
		stop = 1;
		epoll_on = 0;
		BROADCAST
	}
	atomic {
		pf_done ->	/* pthread_join() */
		do
		:: uq?_, _
		:: empty(uq) -> break
		od;
		rm_unread = 0;
		uffd_closed = 1;
		torn_down = 1
	}
}

init
{
	byte i;
	atomic {
		for (i : 1 .. WORKERS) {
			run worker()
		}
		run balloon();
		run prefetcher();
#ifdef TEARDOWN
		run stopper()
#else
		run vcpu();
#if SHMEM
		req = RQ_SENT;
		run s2vcpu()
#endif
#endif
	}
}

/* ---- liveness (pan -a -f -N NAME: acceptance cycles, weak fairness) ---- */

/* Every fault is eventually woken. */
ltl woken { [] ((vsleep != 0) -> <> (vsleep == 0)) }
/* Every stage-2 request is eventually answered. */
ltl answered { [] ((req == RQ_SENT || req == RQ_SERVING) -> <> (req == RQ_ANSWERED)) }
/* The balloon's madvise() eventually returns. */
ltl returns { [] (bal_blocked -> <> !bal_blocked) }
/* Teardown finishes (-DTEARDOWN). */
ltl torn { <> torn_down }
