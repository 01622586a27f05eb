/* grace.c - grace periods that fault handlers can take part in: a reader
 * count per epoch parity, no locks, no allocation (async-signal-safe). */
#include "internal.h"
#include "stop.h"

/* Readers: read the epoch, count themselves in its parity, re-check the
 * epoch (so a writer that flips from it will wait for them), then load what
 * they need.  Writers: publish the new pointer, flip the epoch, wait for the
 * old parity to drain; writers are serialized by grace_lock.  Nested readers
 * (a handler interrupting a reader or the writer itself) finish without
 * waiting for anything, so the writer's wait always ends. */
static _Atomic unsigned long g_epoch;
static _Atomic long g_readers[2];
static pthread_mutex_t grace_lock = PTHREAD_MUTEX_INITIALIZER;

/* In a fork child only the forking thread exists: readers counted at the
 * fork (handlers in other threads) will never leave, and the lock may be
 * held by a thread that is gone.  Start afresh. */
static void grace_atfork_child(void)
{
    atomic_store(&g_readers[0], 0);
    atomic_store(&g_readers[1], 0);
    pthread_mutex_init(&grace_lock, NULL);
    sf__regions_atfork_child();
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void grace_register_atfork(void)
{
    pthread_atfork(NULL, NULL, grace_atfork_child);
}

void sf__grace_init(void)
{
    pthread_once(&atfork_once, grace_register_atfork);
}

/* A reader, and the writer while it holds grace_lock, is in a no-stop
 * section: a world stop (stop.c) must not park a thread the take's own
 * grace period would wait for. */
unsigned sf__grace_enter(void)
{
    sf__nostop_enter();
    for (;;) {
        unsigned long e = atomic_load(&g_epoch);
        atomic_fetch_add(&g_readers[e & 1], 1);
        if (SF_LIKELY(atomic_load(&g_epoch) == e))
            return (unsigned)(e & 1);
        atomic_fetch_sub(&g_readers[e & 1], 1);
    }
}

void sf__grace_exit(unsigned token)
{
    atomic_fetch_sub(&g_readers[token], 1);
    sf__nostop_exit();
}

void sf__grace_wait(void)
{
    sf__nostop_enter();
    pthread_mutex_lock(&grace_lock);
    unsigned long e = atomic_fetch_add(&g_epoch, 1);
    unsigned spins = 0;
    while (atomic_load(&g_readers[e & 1]) != 0) {
        if (++spins < 1000)
            sf__cpu_relax();
        else
            sf__os_yield();
    }
    pthread_mutex_unlock(&grace_lock);
    sf__nostop_exit();
}
