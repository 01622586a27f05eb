/* stop.h - world stop (stop.c): every other thread of the process waits in
 * a signal handler while a take fixes a snapshot's content, so that an
 * image is one instant across threads.  See doc/DESIGN.md, "World stop". */
#ifndef SF_STOP_H
#define SF_STOP_H
#include "internal.h"

/* Sections a thread must not be stopped in (grace sections, the grace
 * writer's lock): a stop signal that arrives inside one is deferred to the
 * section's end.  Async-signal-safe, thread-local. */
void sf__nostop_enter(void);
void sf__nostop_exit(void);
/* Whether the calling thread has the world stopped: it then already holds
 * the locks a stopped thread could hold (sf__regions_lock). */
bool sf__stop_is_stopper(void);

/* How a stop treats threads asleep in the kernel. */
enum sf_stop_mode {
    SF_STOP_PROVE,    /* an asleep thread counts as stopped if it provably did not run */
    SF_STOP_FORCED,   /* as PROVE, but threads that ran last time are signalled
                         (unless asleep in a call SA_RESTART does not restart) */
    SF_STOP_SIGNAL_ALL, /* every thread is signalled but those asleep in a call
                           SA_RESTART does not restart (they would see EINTR) */
};

struct sf_stop_result {
    uint64_t ns;          /* from the first signal to the resume */
    unsigned signalled;   /* threads stopped by the signal */
    unsigned blocked;     /* threads counted stopped because asleep */
    unsigned timeouts;    /* threads that never acknowledged (counted blocked) */
    unsigned ran;         /* asleep threads that ran meanwhile: not one instant */
};

/* Stops every other thread (t->lock held by the caller).  Until
 * sf__world_resume the caller must not malloc (sf__tmp_alloc serves it),
 * use stdio or take a lock a stopped thread could hold.  Returns 0, or
 * -errno when nothing was stopped (then no resume). */
int sf__world_stop(enum sf_stop_mode mode);
/* Checks the asleep threads and resumes everyone; fills *res. */
void sf__world_resume(struct sf_stop_result *res);

/* Memory for the take path: from a scratch arena while the calling thread
 * has the world stopped (freed as a whole at resume), else calloc/free. */
void *sf__tmp_calloc(size_t n, size_t size);
void sf__tmp_free(void *p);

/* The stop signal (SIGRTMIN + SF_STOP_SIGNAL_OFFSET unless
 * SNAPFAULT_STOP_SIGNAL=N asks for SIGRTMIN + N).  Installs the handler
 * (idempotent, re-installs it if replaced); 0 or -errno. */
#define SF_STOP_SIGNAL_OFFSET 6
int sf__stop_init(void);

/* Statistics kept per tracker (tracker.c reports them). */
void sf__stop_record(sf_tracker *t, const struct sf_stop_result *res, unsigned retries,
                     bool fallback);
#endif
