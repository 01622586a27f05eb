/* lifecycle.c - the runtime's life: start-up, the background thread, the end
 * of the record, fork and exec. */
#include "runtime.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

_Atomic int sfp_state;
_Atomic int sfp_prefault_needed;
_Atomic int sfp_creating_threads;
sf_tracker *sfp_tracker;
uint64_t sfp_t0_ns;
int sfp_wake_fd[2] = {-1, -1};

/* The runtime lock orders every change to the tracked set: the background
 * thread's scans, collects and takes, and the interposers' mapping calls
 * (held across the real call, so that a scan never sees a half-done one). */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

int sfp_run_mode;
unsigned sfp_include;
sf_backend sfp_backend;
sf_fault_mode sfp_fault_mode;
long sfp_interval_ms;
static pthread_t g_bg;
static bool g_bg_running;
static _Atomic int g_bg_alive;        /* the background thread runs and serves requests */
static _Atomic int g_stop;
pid_t sfp_pid;
static bool g_child_pending;          /* forked child, not set up yet */
bool sfp_attr_on;
static bool g_finished;               /* the E record is written */

void sfp_lock(void) { pthread_mutex_lock(&g_lock); }
void sfp_unlock(void) { pthread_mutex_unlock(&g_lock); }

uint64_t sfp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------
 * The background thread.
 * ------------------------------------------------------------------------ */
static void drain_wake(void)
{
    char b[64];
    while (sfp_raw_syscall(SYS_read, sfp_wake_fd[0], (long)b, sizeof(b), 0, 0, 0) > 0)
        ;
}

static int setup_tracking(void);
static void forget_parent_tracker(void);

static void *bg_body(void *arg);

/* Also false in a vfork child (which shares the parent's memory and so its
 * flag): the parent's thread must not end the parent's chain. */
bool sfp_bg_alive(void)
{
    return atomic_load(&g_bg_alive) != 0 && sfp_pid == (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
}

static void *bg_main(void *arg)
{
    void *r = bg_body(arg);
    atomic_store(&g_bg_alive, 0);
    if (sfp_run_mode == SFP_MODE_SNAPSHOT)
        sfp_snap_bg_gone();
    return r;
}

static void *bg_body(void *arg)
{
    sfp_in_runtime = 1;
    if (g_child_pending) {
        /* A forked child sets itself up only if it lives past one interval
         * (the usual fork+exec costs nothing), or when it ends first and
         * asks for its final image. */
        struct pollfd pfd = {.fd = sfp_wake_fd[0], .events = POLLIN};
        sf__os_poll(&pfd, 1, (int)sfp_interval_ms);
        if (atomic_load(&g_stop))
            return NULL;
        pthread_mutex_lock(&g_lock);
        forget_parent_tracker();
        int err = setup_tracking();
        g_child_pending = false;
        pthread_mutex_unlock(&g_lock);
        if (err)
            return NULL;
    }
    long every = (long)sfp_opt_val(SFP_OPT_SNAPSHOT_EVERY);
    uint64_t next_snap = every ? sfp_now_ns() + (uint64_t)every * 1000000 : UINT64_MAX;
    uint64_t next_tick = sfp_now_ns() + (uint64_t)sfp_interval_ms * 1000000;
    while (!atomic_load(&g_stop)) {
        if (sfp_run_mode == SFP_MODE_SNAPSHOT)
            sfp_snap_serve_final();
        uint64_t now = sfp_now_ns();
        uint64_t due = next_tick < next_snap ? next_tick : next_snap;
        if (due > now) {
            struct pollfd pfd = {.fd = sfp_wake_fd[0], .events = POLLIN};
            uint64_t ms = (due - now + 999999) / 1000000;
            sf__os_poll(&pfd, 1, ms > 60000 ? 60000 : (int)ms);
            drain_wake();
            if (atomic_load(&g_stop))
                break;
            if (sfp_run_mode == SFP_MODE_SNAPSHOT)
                sfp_snap_serve_final();
        }
        now = sfp_now_ns();
        bool tick = now >= next_tick;
        if (tick) {
            next_tick += (uint64_t)sfp_interval_ms * 1000000;
            if (next_tick < now)
                next_tick = now + (uint64_t)sfp_interval_ms * 1000000; /* we fell behind */
            pthread_mutex_lock(&g_lock);
            sfp_reconcile();
            if (sfp_run_mode == SFP_MODE_TRACK)
                sfp_track_interval();
            pthread_mutex_unlock(&g_lock);
        }
        if (sfp_run_mode == SFP_MODE_SNAPSHOT) {
            bool periodic = now >= next_snap;
            if (periodic || atomic_load(&sfp_snap_requests))
                sfp_snap_take_and_write(periodic ? "period" : "signal");
            if (periodic) {
                every = sfp_snap_period_ms(); /* the disk budget may have backed off */
                next_snap = now + (uint64_t)every * 1000000;
            }
        }
    }
    return NULL;
}

static int start_bg(void)
{
    sigset_t all, old;
    sigfillset(&all);
    /* Signals belong to the program's threads; SIGSEGV and SIGBUS stay
     * open since this thread may write tracked memory while creating. */
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sf__os_sigmask(SIG_SETMASK, &all, &old);
    atomic_store(&g_bg_alive, 1);
    int rc = sf__embed_thread_create(&g_bg, bg_main, NULL); /* never stopped by a take */
    sf__os_sigmask(SIG_SETMASK, &old, NULL);
    g_bg_running = rc == 0;
    if (rc)
        atomic_store(&g_bg_alive, 0);
    return -rc;
}

/* ------------------------------------------------------------------------
 * Start-up.
 * ------------------------------------------------------------------------ */
static int create_tracker(void)
{
    sf_options o = {0};
    o.backend = (sf_backend)sfp_opt_val(SFP_OPT_BACKEND);
    if (sfp_run_mode == SFP_MODE_SNAPSHOT) {
        o.flags |= SF_OPT_SNAPSHOTS;
        o.store_limit = (size_t)sfp_opt_val(SFP_OPT_STORE_LIMIT);
        o.engine = (sf_engine)sfp_opt_val(SFP_OPT_ENGINE);
        /* auto: the backend's engine; with the backend auto too, COW: the
         * preload tracks every writable mapping, and a mirror's shadow
         * would double the process. */
        if (o.engine == SF_ENGINE_AUTO && o.backend == SF_BACKEND_AUTO)
            o.flags |= SF_OPT_LOW_MEMORY;
        if (sfp_opt_val(SFP_OPT_POINT_IN_TIME)) /* images one instant across threads */
            o.flags |= SF_OPT_STOP_THREADS;
    } else if (sfp_opt_val(SFP_OPT_ATTRIBUTE)) {
        /* Attribution samples the writer's stack from the fault's ucontext:
         * faults must arrive in the writing thread. */
        if (o.backend == SF_BACKEND_AUTO || o.backend == SF_BACKEND_UFFD_SYNC) {
            sf_options in = o;
            in.backend = SF_BACKEND_UFFD_SYNC;
            in.flags |= SF_OPT_INTHREAD_FAULTS;
            if (sf_tracker_create(&sfp_tracker, &in) == 0)
                return 0;
            if (o.backend == SF_BACKEND_AUTO)
                o.backend = SF_BACKEND_MPROTECT;
        }
    }
    return sf_tracker_create(&sfp_tracker, &o);
}

/* Everything from the tracker on; also what a forked child redoes. */
static int setup_tracking(void)
{
    int err = create_tracker();
    if (err) {
        sfp_warn("cannot create a %s tracker (%s): the program runs untracked",
                 sf_backend_name((sf_backend)sfp_opt_val(SFP_OPT_BACKEND)), sf_strerror(err));
        atomic_store(&sfp_state, SFP_DISABLED);
        return err;
    }
    atomic_store(&sfp_chain_active, 1); /* the library's handler is installed */
    sfp_front_install();
    sfp_backend = sf_tracker_backend(sfp_tracker);
    sfp_fault_mode = sf_tracker_fault_mode(sfp_tracker);
    atomic_store(&sfp_prefault_needed,
                 sfp_fault_mode == SF_FAULTS_SIGNAL || sfp_fault_mode == SF_FAULTS_INTHREAD);
    if ((sfp_include & SFP_INC_STACKS) && atomic_load(&sfp_prefault_needed)) {
        sfp_warn_once(SFP_ONCE_STACKS, "thread stacks cannot be tracked with faults delivered as "
                                       "signals (%s); stacks left out", sf_backend_name(sfp_backend));
        sfp_include &= ~SFP_INC_STACKS;
    }
    char exe[256];
    sfp_exe_name(exe, sizeof(exe));
    const char *slash = strrchr(exe, '/');
    sfp_fmt(sfp_exe_base, sizeof(sfp_exe_base), "%s", slash ? slash + 1 : exe);
    sfp_fmt(sfp_exe_path, sizeof(sfp_exe_path), "%s", exe);
    sfp_attr_on = false;
    if (sfp_run_mode == SFP_MODE_TRACK && sfp_opt_val(SFP_OPT_ATTRIBUTE)) {
        if (!atomic_load(&sfp_prefault_needed))
            sfp_warn_once(SFP_ONCE_ATTR, "write attribution needs a sync backend; %s is in use, "
                                         "attribution is off", sf_backend_name(sfp_backend));
        else if (sfp_attr_start((int)sfp_opt_val(SFP_OPT_ATTRIBUTE_DEPTH)) == 0)
            sfp_attr_on = true;
    }
    sfp_t0_ns = sfp_now_ns();
    if (sfp_run_mode == SFP_MODE_TRACK) {
        const char *tmpl = sfp_opt_explicit(SFP_OPT_OUTPUT) ? sfp_opt_str(SFP_OPT_OUTPUT)
                                                            : "snapfault.%p.sft";
        sfp_track_out = sfp_calloc(1, sizeof(*sfp_track_out));
        int fd = sfp_track_out ? sfp_create_output(tmpl, sfp_track_path, sizeof(sfp_track_path)) : -ENOMEM;
        if (fd < 0) {
            sfp_warn_once(SFP_ONCE_OUTPUT, "cannot create %s: %s; tracking without records",
                          sfp_track_path[0] ? sfp_track_path : tmpl,
                          fd == -EINVAL ? "not a regular file (records go to a file or a directory)"
                                        : sfp_errstr(fd));
            if (sfp_track_out)
                sfp_track_out->failed = true;
        } else {
            sfp_track_out->fd = fd;
            sfp_track_header();
        }
    } else {
        sfp_snap_open();
        sfp_snap_trigger_install();
        sfp_snap_fatal_install();
    }
    sfp_reconcile();
    sfp_info("%s mode, backend %s (%s), interval %ld ms%s%s", sfp_run_mode == SFP_MODE_TRACK ? "track" : "snapshot",
             sf_backend_name(sfp_backend), sf_fault_mode_name(sfp_fault_mode), sfp_interval_ms,
             sfp_run_mode == SFP_MODE_TRACK ? ", records in " : "", sfp_run_mode == SFP_MODE_TRACK ? sfp_track_path : "");
    atomic_store(&sfp_state, SFP_READY);
    return 0;
}

static void strip_preload_env(void);
static void save_env(void);

/* Settings that look wrong are said once per run: on the first process
 * (or by `snapfault run`), which then marks the environment so that the
 * programs it executes stay quiet (SNAPFAULT_NOTED is saved with the
 * other settings and so reaches them too). */
static void user_notes(void)
{
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "SNAPFAULT_NOTED=", 16) == 0)
            return;
    bool said = false;
    for (char **e = environ; e && *e; e++) {
        size_t n;
        const char *name = sfp_env_unknown(*e, &n);
        if (!name)
            continue;
        int near = sfp_option_closest(name, n);
        if (near >= 0)
            sfp_warn("unknown setting SNAPFAULT_%.*s ignored; did you mean SNAPFAULT_%s?", (int)n, name,
                     sfp_option_table[near].name);
        else
            sfp_warn("unknown setting SNAPFAULT_%.*s ignored (snapfault run --help lists them)", (int)n, name);
        said = true;
    }
    static const char *const modes[] = {"off", "track", "snapshot"};
    for (int o = 0; o < SFP_OPT_COUNT; o++)
        if (sfp_opt_explicit((sfp_opt)o) && sfp_run_mode != SFP_MODE_OFF && !sfp_option_applies((sfp_opt)o, sfp_run_mode)) {
            sfp_warn("SNAPFAULT_%s has no effect in %s mode", sfp_option_table[o].name, modes[sfp_run_mode]);
            said = true;
        }
    if (said)
        setenv("SNAPFAULT_NOTED", "1", 1);
}
static bool g_follow;
_Atomic int sfp_chain_active;
static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

__attribute__((constructor(101))) static void sfp_init(void)
{
    int expected = SFP_NOT_READY;
    if (!atomic_compare_exchange_strong(&sfp_state, &expected, SFP_INITIALIZING))
        return;
    sfp_in_runtime++;
    sfp_real_resolve();
    sf__embed_init();
    sfp_pid = (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    /* secure_getenv semantics: a setuid or setgid program ignores the
     * environment, and then has nowhere safe to write: the preload stays
     * off there. */
    bool secure = getauxval(AT_SECURE) != 0;
    sfp_options_load(environ, secure);
    sfp_run_mode = secure ? SFP_MODE_OFF : (int)sfp_opt_val(SFP_OPT_MODE);
    sfp_include = (unsigned)sfp_opt_val(SFP_OPT_INCLUDE);
    sfp_interval_ms = (long)sfp_opt_val(SFP_OPT_INTERVAL);
    sfp_thp_keep = sfp_opt_val(SFP_OPT_THP) == SFP_THP_KEEP;
    if (!secure)
        user_notes();
    if (!sfp_opt_val(SFP_OPT_FOLLOW_EXEC))
        strip_preload_env();
    else if (sfp_run_mode != SFP_MODE_OFF) {
        save_env();
        g_follow = true;
    }
    if (sfp_run_mode == SFP_MODE_OFF) {
        atomic_store(&sfp_state, SFP_DISABLED);
        sfp_in_runtime--;
        return;
    }
    if (sf__os_pipe2(sfp_wake_fd, O_CLOEXEC | O_NONBLOCK) < 0) {
        atomic_store(&sfp_state, SFP_DISABLED);
        sfp_in_runtime--;
        return;
    }
    sfp_stats_open();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    sfp_exclude_main_tls();
    pthread_mutex_lock(&g_lock);
    if (setup_tracking() == 0 && start_bg() != 0)
        sfp_warn("cannot start the background thread: no records are written");
    pthread_mutex_unlock(&g_lock);
    sfp_runtime_leave();
}

/* Ends the record: a last collect, the E record and the summary.  From
 * _exit and exec the runtime lock may be held by a thread that will never
 * release it (a signal handler calling _exit): only try it there. */
static void finish(const char *how, bool may_block)
{
    if (atomic_load(&sfp_state) != SFP_READY || g_child_pending || g_finished ||
        sfp_pid != (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0))
        return; /* not set up, done already, or a vfork child */
    if (!may_block && sfp_in_runtime)
        return; /* this thread was inside the runtime: it may hold the lock */
    sfp_in_runtime++;
    if (may_block) {
        pthread_mutex_lock(&g_lock);
    } else {
        /* the background thread may be in the middle of an interval */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 500000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        if (pthread_mutex_timedlock(&g_lock, &until) != 0) {
            sfp_in_runtime--;
            return;
        }
    }
    g_finished = true;
    if (sfp_run_mode == SFP_MODE_TRACK) {
        sfp_reconcile();
        sfp_track_interval();
        sfp_track_summary(true, how);
        sfp_track_summary(false, how);
    } else {
        sfp_snap_finish(how);
        sfp_snap_summary();
    }
    pthread_mutex_unlock(&g_lock);
    sfp_in_runtime--;
}

__attribute__((destructor(101))) static void sfp_fini(void)
{
    /* Snapshot mode: the final image, taken by the background thread while
     * the tracker still exists.  Not from a thread interrupted inside the
     * runtime (exit called by a signal handler): it may hold the lock the
     * background thread needs.  A forked child that follows and has not
     * set up yet does so now. */
    if (sfp_run_mode == SFP_MODE_SNAPSHOT && sfp_snap_exit_image() && !sfp_in_runtime && g_bg_running &&
        sfp_bg_alive() && sfp_pid == (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0) &&
        (atomic_load(&sfp_state) == SFP_READY || g_child_pending))
        sfp_snap_final_wait(0);
    sfp_in_runtime++;
    if (g_bg_running && sfp_pid == (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0)) {
        atomic_store(&g_stop, 1);
        char c = 1;
        sfp_raw_syscall(SYS_write, sfp_wake_fd[1], (long)&c, 1, 0, 0, 0);
        pthread_join(g_bg, NULL);
        g_bg_running = false;
    }
    sfp_in_runtime--;
    /* The tracker stays: other threads may still run and fault, and the
     * interposers keep the tracked set right until the process is gone. */
    finish("exit", true);
}

void sfp_before_exit(void) { finish("_exit", false); }

void sfp_before_exec(void)
{
    /* A successful exec ends this program: its record ends here.  (If the
     * exec fails, the record goes on after the E line.) */
    finish("exec", false);
    g_finished = false;
}

/* ------------------------------------------------------------------------
 * fork: locks are taken around it so the child inherits consistent state.
 * ------------------------------------------------------------------------ */
static void fork_prepare(void)
{
    sfp_in_runtime++;
    pthread_mutex_lock(&g_lock);
    sf__embed_atfork_prepare(sfp_tracker);
    sfp_heap_atfork_prepare();
}

static void fork_parent(void)
{
    sfp_heap_atfork_parent();
    sf__embed_atfork_parent(sfp_tracker);
    pthread_mutex_unlock(&g_lock);
    sfp_in_runtime--;
}

/* Makes the parent's tracked memory plain writable memory again in the
 * child and forgets the parent's tracker.  With the mprotect backend the
 * protections were inherited: only what is still mapped private and
 * readable is given write access back. */
static void forget_parent_tracker(void)
{
    if (!sfp_tracker)
        return;
    if (sfp_backend == SF_BACKEND_MPROTECT) {
        size_t len;
        char *buf = sfp_maps_read(&len);
        char *cur = buf, *end = buf ? buf + len : NULL;
        struct sfp_mapline ml;
        while (buf && sfp_maps_next(&cur, end, &ml)) {
            if (!sfp_keeps_tracked(&ml))
                continue;
            for (size_t i = sfp_seg_lower_bound(ml.start); i < sfp_nsegs && sfp_segs[i].start < ml.end; i++) {
                uintptr_t a = sfp_segs[i].start > ml.start ? sfp_segs[i].start : ml.start;
                uintptr_t e = sfp_segs[i].end < ml.end ? sfp_segs[i].end : ml.end;
                sfp_real_mprotect((void *)a, e - a, PROT_READ | PROT_WRITE);
            }
        }
        sfp_free(buf);
    }
    sf_tracker_destroy(sfp_tracker);
    sfp_tracker = NULL;
    /* Fresh model: the parent's labels and counts are the parent's. */
    sfp_model_forget();
    sfp_reconcile_forget();
    sfp_track_forget();
}

static void fork_child(void)
{
    sfp_heap_atfork_child();
    sf__embed_atfork_child(sfp_tracker);
    pthread_mutex_init(&g_lock, NULL);
    sfp_pid = (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    g_bg_running = false;
    atomic_store(&g_bg_alive, 0); /* the parent's thread is not ours */
    sfp_in_runtime--;
    if (atomic_load(&sfp_state) != SFP_READY)
        return;
    /* The parent's records are not ours to write. */
    if (sfp_track_out) {
        if (sfp_track_out->fd >= 0 && !sfp_track_out->failed)
            sfp_raw_syscall(SYS_close, sfp_track_out->fd, 0, 0, 0, 0, 0);
        sfp_track_out->fd = -1;
        sfp_track_out->failed = true;
        sfp_track_out->n = 0;
    }
    sfp_snap_child();
    if (sfp_wake_fd[0] >= 0) {
        sfp_raw_syscall(SYS_close, sfp_wake_fd[0], 0, 0, 0, 0, 0);
        sfp_raw_syscall(SYS_close, sfp_wake_fd[1], 0, 0, 0, 0, 0);
    }
    if (sf__os_pipe2(sfp_wake_fd, O_CLOEXEC | O_NONBLOCK) < 0)
        sfp_wake_fd[0] = sfp_wake_fd[1] = -1;
    /* Until the child has its own tracker the interposers pass through,
     * and the library resolves the child's faults on inherited protections
     * by opening the page.  A child that execs soon costs nothing more. */
    if (sfp_opt_val(SFP_OPT_FORK) == SFP_FORK_UNTRACK || sfp_wake_fd[0] < 0) {
        atomic_store(&sfp_state, SFP_DISABLED);
        return;
    }
    atomic_store(&sfp_state, SFP_INITIALIZING);
    g_child_pending = true;
    atomic_store(&g_stop, 0);
    sfp_in_runtime++;
    if (start_bg() != 0)
        atomic_store(&sfp_state, SFP_DISABLED);
    sfp_in_runtime--;
}

/* ------------------------------------------------------------------------
 * exec: the preload follows by default (LD_PRELOAD is inherited, and the
 * exec interposers put it back into environments that dropped it); with
 * SNAPFAULT_FOLLOW_EXEC=0 it removes itself from LD_PRELOAD in place.
 * ------------------------------------------------------------------------ */
static char g_self[512];
static const char **g_saved_env;
static size_t g_nsaved_env;

const char *const *sfp_saved_env(size_t *n)
{
    *n = g_nsaved_env;
    return g_saved_env;
}

/* The settings children must inherit even from a program that rebuilds
 * its environment: copied now, before the program can change it. */
static void save_env(void)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n += strncmp(*e, "SNAPFAULT_", 10) == 0;
    g_saved_env = sfp_calloc(n + 1, sizeof(*g_saved_env));
    if (!g_saved_env)
        return;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "SNAPFAULT_", 10) == 0) {
            const char *d = sfp_strdup(*e);
            if (d)
                g_saved_env[g_nsaved_env++] = d;
        }
}

const char *sfp_self_path(void)
{
    if (!g_self[0]) {
        Dl_info info;
        if (dladdr((void *)sfp_self_path, &info) && info.dli_fname)
            sfp_fmt(g_self, sizeof(g_self), "%s", info.dli_fname);
    }
    return g_self;
}

bool sfp_follow_exec(void)
{
    return g_follow;
}

static void strip_preload_env(void)
{
    const char *self = sfp_self_path();
    const char *base = strrchr(self, '/');
    base = base ? base + 1 : self;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "LD_PRELOAD=", 11) != 0)
            continue;
        /* Rewrite the list in place without any entry naming us. */
        char *w = *e + 11, *r = w;
        bool first = true;
        while (*r) {
            while (*r == ' ' || *r == ':')
                r++;
            char *s = r;
            while (*r && *r != ' ' && *r != ':')
                r++;
            size_t n = (size_t)(r - s);
            if (!n)
                break;
            const char *sb = memrchr(s, '/', n);
            sb = sb ? sb + 1 : s;
            if ((size_t)(r - sb) == strlen(base) && strncmp(sb, base, strlen(base)) == 0)
                continue;
            if (!first)
                *w++ = ':';
            memmove(w, s, n);
            w += n;
            first = false;
        }
        *w = 0;
    }
}
