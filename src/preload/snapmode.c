/* snapmode.c - snapshot mode: on a signal or a period, take a COW snapshot
 * of everything tracked and stream an image of it while the program runs. */
#include "runtime.h"
#include "record.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

_Atomic int sfp_snap_requests;
int sfp_trigger_sig;

static int g_dir_fd = -1;
static char g_dir[512];
static sf_snapshot *g_parent;        /* last snapshot written whole: the next parent */
static uint64_t g_seq, g_takes, g_written, g_failed, g_bytes, g_pause_ns, g_pause_max_ns, g_write_ns;
static int g_index_fd = -1;          /* the chain's index, one line per image */
static pid_t g_pid_snap;
static char g_tag[32];              /* names this process's index and images */

/* What the program installed for the trigger signal, kept behind ours. */
static struct sigaction g_prog_act;
static _Atomic int g_prog_set;

/* The final image.  Whoever ends the program (exit's destructor, the
 * handler of a fatal signal) sets g_final_req and waits on g_final_done
 * (a futex word) for the background thread to take and write it. */
static _Atomic int g_final_req;      /* 0; -1: exit; else the fatal signal */
static _Atomic int g_final_done;     /* 1: served, or the background thread is gone */
static uint64_t g_final_seq;         /* the final image's sequence number, 0: none */
static bool g_end_written;           /* the index's #end line */
static bool g_final_take;            /* the background thread takes the final image */
__thread int sfp_fatal_pending __attribute__((tls_model("initial-exec")));

/* SIGHUP, SIGINT, SIGTERM: caught for the final image only where the
 * program left them SIG_DFL.  prog is what the program sees (and set). */
static const int g_fatal_sigs[3] = {SIGHUP, SIGINT, SIGTERM};
static struct {
    bool managed;                    /* ours at start-up: the program's calls come here */
    _Atomic int ours;                /* our handler is installed now */
    struct sigaction prog;
} g_fatal[3];

/* ------------------------------------------------------------------------
 * Disk budget and retention (MAX_BYTES, KEEP, FULL_EVERY, COMPRESS).
 * The images on disk form chains: a full image and the incrementals after
 * it.  Retention deletes whole chains, oldest first, and only chains older
 * than the newest full image, so no incremental ever loses its parent.
 * Every deletion is a D line of the index.  The next image's size is
 * estimated from the last ones of its kind, so that room is made before it
 * is written; an image that still does not fit is deleted at once and the
 * period backs off (doubles), said once on stderr and in the index.
 * ------------------------------------------------------------------------ */
struct kept {
    uint64_t seq, size;
    bool full;
    char name[64];
};
static struct kept *g_kept;          /* the images on disk, oldest first */
static size_t g_nkept, g_capkept;
static uint64_t g_disk;              /* their bytes */
static uint64_t g_deleted, g_skipped, g_backoffs;
static uint64_t g_est_full, g_est_incr[2]; /* sizes of the last full and incremental images */
static long g_period_ms;             /* SNAPSHOT_EVERY, doubled by back-off */
static bool g_budget_noted;

long sfp_snap_period_ms(void) { return g_period_ms; }

static void index_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static uint64_t opt_max_bytes(void) { return (uint64_t)sfp_opt_val(SFP_OPT_MAX_BYTES); }
static size_t opt_keep(void) { return (size_t)sfp_opt_val(SFP_OPT_KEEP); }

/* Images per chain: FULL_EVERY, or with KEEP N about half of N, so that
 * dropping the oldest chain leaves at least half of the images. */
static unsigned full_every(void)
{
    if (sfp_opt_explicit(SFP_OPT_FULL_EVERY) || !opt_keep())
        return (unsigned)sfp_opt_val(SFP_OPT_FULL_EVERY);
    return (unsigned)((opt_keep() + 1) / 2);
}

static void budget_open(void)
{
    g_period_ms = (long)sfp_opt_val(SFP_OPT_SNAPSHOT_EVERY);
    unsigned fe = full_every();
    index_line(SFP_IDX_BUDGET "\tmax_bytes=%llu\tkeep=%zu\tfull_every=%u\tcompress=%lld\n",
               (unsigned long long)opt_max_bytes(), opt_keep(), fe, sfp_opt_val(SFP_OPT_COMPRESS));
    if (!g_budget_noted && opt_keep() && fe > opt_keep()) {
        g_budget_noted = true;
        sfp_warn("KEEP=%zu with FULL_EVERY=%u: a chain cannot be dropped before it is complete, "
                 "up to %u images stay on disk", opt_keep(), fe, fe);
    }
}

/* Images in the chain the next incremental would extend. */
static size_t chain_start(void)
{
    size_t i = g_nkept;
    while (i > 0 && !g_kept[i - 1].full)
        i--;
    return i ? i - 1 : 0;
}

static uint64_t chain_bytes(void)
{
    uint64_t b = 0;
    for (size_t i = chain_start(); i < g_nkept; i++)
        b += g_kept[i].size;
    return b;
}

/* Deletes the oldest n images (whole chains: the caller checks). */
static void drop_first(size_t n, const char *why)
{
    for (size_t i = 0; i < n; i++) {
        sfp_raw_syscall(SYS_unlinkat, g_dir_fd, (long)g_kept[i].name, 0, 0, 0, 0);
        index_line(SFP_IDX_DELETED "\t%llu\t%s\t%s\n", (unsigned long long)g_kept[i].seq, g_kept[i].name, why);
        g_disk -= g_kept[i].size;
        g_deleted++;
    }
    memmove(g_kept, g_kept + n, (g_nkept - n) * sizeof(*g_kept));
    g_nkept -= n;
}

/* Drops the oldest chain if a newer full image exists; false if none. */
static bool drop_oldest_chain(const char *why)
{
    for (size_t j = 1; j < g_nkept; j++)
        if (g_kept[j].full) {
            drop_first(j, why);
            return true;
        }
    return false;
}

static void backoff(const char *why)
{
    g_backoffs++;
    long before = g_period_ms;
    if (g_period_ms) {
        g_period_ms = g_period_ms > 43200000 ? 86400000 : 2 * g_period_ms;
    }
    if (g_backoffs == 1) {
        char p[48] = "signal-driven: unchanged";
        if (before)
            sfp_fmt(p, sizeof(p), "%ld ms -> %ld ms (doubling)", before, g_period_ms);
        sfp_warn("snapshot images outgrow MAX_BYTES=%llu (%s); period %s",
                 (unsigned long long)opt_max_bytes(), why, p);
        index_line(SFP_IDX_BACKOFF "\t%s\tperiod_ms=%ld\tnew_period_ms=%ld\n", why, before, g_period_ms);
    }
}

/* Before an image: whether it is to be full, and room made for it.  false:
 * skip this (periodic) image, it would not fit the budget. */
static bool budget_before(bool *full, bool periodic)
{
    unsigned fe = full_every();
    *full = !g_parent || (fe && g_nkept - chain_start() >= fe) || !g_nkept;
    uint64_t maxb = opt_max_bytes();
    if (!maxb)
        return true;
    uint64_t incr = g_est_incr[0] > g_est_incr[1] ? g_est_incr[0] : g_est_incr[1];
    /* A new full image holds at most what the current chain holds (its
     * full image and every page written since), the last full at least
     * what it held then: the larger of the two is its estimate. */
    uint64_t est_full = g_est_full > chain_bytes() ? g_est_full : chain_bytes();
    /* An incremental must leave room for the full image that will follow
     * the chain, else the chain could never be dropped. */
    if (!*full && chain_bytes() + incr + est_full > maxb)
        *full = true;
    uint64_t need = *full ? est_full : incr;
    while (g_disk + need > maxb && drop_oldest_chain("budget"))
        ;
    if (g_disk + need > maxb && periodic) {
        g_skipped++;
        backoff("no room for the next image");
        return false;
    }
    return true;
}

/* After image seq (size bytes) was written: listed, then retention. */
static void budget_after(uint64_t seq, const char *name, uint64_t size, bool full)
{
    if (full)
        g_est_full = size;
    else {
        g_est_incr[1] = g_est_incr[0];
        g_est_incr[0] = size;
    }
    if (g_nkept == g_capkept) {
        size_t cap = g_capkept ? 2 * g_capkept : 64;
        struct kept *nv = sfp_realloc(g_kept, cap * sizeof(*nv));
        if (nv) {
            g_kept = nv;
            g_capkept = cap;
        }
    }
    if (g_nkept < g_capkept) {
        struct kept *k = &g_kept[g_nkept++];
        k->seq = seq;
        k->size = size;
        k->full = full;
        sfp_fmt(k->name, sizeof(k->name), "%s", name);
    }
    g_disk += size;
    uint64_t maxb = opt_max_bytes();
    size_t keep = opt_keep();
    while (keep && g_nkept > keep && drop_oldest_chain("keep"))
        ;
    while (maxb && g_disk > maxb && drop_oldest_chain("budget"))
        ;
}

/* The image just written does not fit: deleted, and the next one is
 * incremental to the one before it (or full if none is left). */
static bool budget_over(void)
{
    return opt_max_bytes() && g_disk > opt_max_bytes() && g_nkept;
}

int sfp_snap_open(void)
{
    const char *tmpl = sfp_opt_explicit(SFP_OPT_OUTPUT) ? sfp_opt_str(SFP_OPT_OUTPUT) : "snapfault.%p.d";
    g_pid_snap = (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    g_dir_fd = sfp_create_dir(tmpl, g_dir, sizeof(g_dir));
    if (g_dir_fd < 0) {
        sfp_warn_once(SFP_ONCE_OUTPUT, "cannot use %s as the image directory: %s; no images are written",
                      g_dir[0] ? g_dir : tmpl, sfp_errstr(g_dir_fd));
        return g_dir_fd;
    }
    /* The chain's tag: the pid, made unique among the programs one pid
     * runs in turn (exec). */
    char name[64];
    g_index_fd = -EEXIST;
    for (int i = 0; i < 1000 && g_index_fd == -EEXIST; i++) {
        if (i)
            sfp_fmt(g_tag, sizeof(g_tag), "%d.%d", (int)g_pid_snap, i);
        else
            sfp_fmt(g_tag, sizeof(g_tag), "%d", (int)g_pid_snap);
        sfp_fmt(name, sizeof(name), "snap-%s.index", g_tag);
        g_index_fd = (int)sfp_raw_syscall(SYS_openat, g_dir_fd, (long)name,
                                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_APPEND,
                                          0600, 0, 0);
    }
    if (g_index_fd < 0) {
        sfp_warn_once(SFP_ONCE_OUTPUT, "cannot create %s/%s: %s; no images are written", g_dir, name,
                      sfp_errstr(g_index_fd));
        sfp_raw_syscall(SYS_close, g_dir_fd, 0, 0, 0, 0, 0);
        g_dir_fd = -1;
        return -1;
    }
    char line[256];
    size_t n = sfp_fmt(line, sizeof(line), SFP_INDEX_HEAD "\tpid=%d\tbackend=%s\n",
                       (int)g_pid_snap, sf_backend_name(sf_tracker_backend(sfp_tracker)));
    sfp_write_all(g_index_fd, line, n);
    budget_open();
    sfp_info("snapshot mode: images in %s", g_dir);
    return 0;
}

/* The trigger: async-signal-safe, it only counts and wakes the thread,
 * then gives the program its own handler if it installed one. */
static void trigger_handler(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    atomic_fetch_add(&sfp_snap_requests, 1);
    char c = 1;
    sfp_raw_syscall(SYS_write, sfp_wake_fd[1], (long)&c, 1, 0, 0, 0);
    errno = saved;
    if (atomic_load(&g_prog_set)) {
        struct sigaction a = g_prog_act;
        if (a.sa_flags & SA_SIGINFO)
            a.sa_sigaction(sig, si, uc);
        else if (a.sa_handler != SIG_DFL && a.sa_handler != SIG_IGN)
            a.sa_handler(sig);
    }
}

void sfp_snap_trigger_install(void)
{
    int sig = (int)sfp_opt_val(SFP_OPT_SNAPSHOT_SIGNAL);
    if (sig <= 0)
        return;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = trigger_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sf__os_sigaction(sig, &sa, &old) != 0) {
        sfp_warn_once(SFP_ONCE_SIGNAL, "cannot install the snapshot signal %d", sig);
        return;
    }
    bool ours = (old.sa_flags & SA_SIGINFO) && old.sa_sigaction == trigger_handler; /* forked child */
    if (!ours && ((old.sa_flags & SA_SIGINFO) || (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN))) {
        g_prog_act = old;
        atomic_store(&g_prog_set, 1);
    }
    sfp_trigger_sig = sig;
}

/* sigaction on the trigger signal, as the program sees it: its handler is
 * recorded and run after the trigger; SIG_DFL/SIG_IGN stop forwarding (the
 * signal stays snapfault's trigger while snapshot mode runs). */
int sfp_trigger_sigaction(const struct sigaction *act, struct sigaction *old)
{
    if (old) {
        if (atomic_load(&g_prog_set)) {
            *old = g_prog_act;
        } else {
            memset(old, 0, sizeof(*old));
            old->sa_handler = SIG_DFL;
        }
    }
    if (act) {
        atomic_store(&g_prog_set, 0);
        g_prog_act = *act;
        if ((act->sa_flags & SA_SIGINFO) || (act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN))
            atomic_store(&g_prog_set, 1);
    }
    return 0;
}

static void index_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void index_line(const char *fmt, ...)
{
    if (g_index_fd < 0)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        sfp_write_all(g_index_fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* One take; a snapshot that could not hold some page (-ENOSPC on a read:
 * a range the take could not protect) is released.  The take's time is
 * added to *pause. */
static int take_checked(sf_snapshot **out, uint64_t *pause)
{
    sf_snapshot *s = NULL;
    uint64_t t0 = sfp_now_ns();
    int rc = sf_snapshot_take(sfp_tracker, &s);
    *pause += sfp_now_ns() - t0;
    /* A zero-length read only reports the snapshot's state. */
    if (rc == 0 && sf_snapshot_read(s, (const void *)sf_page_size, NULL, 0) == -ENOSPC) {
        sf_snapshot_release(s);
        s = NULL;
        rc = -ENOSPC;
    }
    *out = s;
    return rc;
}

/* Takes a snapshot and writes it as image number seq.  locked: hold the
 * runtime lock through the write too, so that no mapping the image holds
 * can be untracked (and dropped from the snapshot) while it is written. */
static int take_and_write_once(uint64_t seq, const char *name, bool locked, const char *why, bool full)
{
    /* The take runs under the runtime lock, right after a scan, so that the
     * tracked set matches the mappings. */
    sfp_lock();
    sfp_reconcile();
    /* The final image: in signal-delivered fault modes the scan adopts a
     * mapping only when the previous scan saw it too (see reconcile.c); a
     * second scan now adopts what the program mapped since the last one,
     * so that a short program's final image holds all its memory. */
    if (g_final_take)
        sfp_reconcile();
    sf_snapshot *s = NULL;
    sfp_kwrite_wait();
    /* The take reads live memory too (the mirror engine copies what was
     * written since the last one): libc may have unmapped some unseen. */
    sfp_patch_begin();
    uint64_t pause = 0;
    int rc = take_checked(&s, &pause);
    unsigned patched = sfp_patch_end();
    /* The take could not protect or scan some range: most likely one libc
     * unmapped or replaced unseen (its internal munmap, or brk trimming
     * the heap), between the scan above and the take.  Drop those, adopt
     * what replaced them (outside the patch window, whose stand-in pages
     * are not the program's), take again. */
    for (int retry = 0; rc < 0 && rc != -ENOMEM && retry < 3; retry++) {
        if (!sfp_drop_unregistered())
            break;
        sfp_reconcile();
        sfp_patch_begin();
        rc = take_checked(&s, &pause);
        patched += sfp_patch_end();
    }
    if (!locked)
        sfp_unlock();
    if (rc < 0) {
        if (locked)
            sfp_unlock();
        return rc;
    }
    g_pause_ns += pause;
    g_takes++;
    if (pause > g_pause_max_ns)
        g_pause_max_ns = pause;
    /* Written under a name no reader looks at (NAME.part) and renamed when
     * complete: a process killed in the middle of a write (a crash, a
     * signal, the OOM killer) leaves no damaged image under an image's
     * name, only a .part file. */
    char part[sizeof(((struct kept *)0)->name) + 8];
    sfp_fmt(part, sizeof(part), "%s.part", name);
    int fd = (int)sfp_raw_syscall(SYS_openat, g_dir_fd, (long)part,
                                  O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600, 0, 0);
    if (fd < 0) {
        if (locked)
            sfp_unlock();
        sf_snapshot_release(s);
        return fd;
    }
    uint64_t w0 = sfp_now_ns();
    sfp_patch_begin();
    long level = (long)sfp_opt_val(SFP_OPT_COMPRESS);
    unsigned wflags = level ? SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(level) : 0;
    const sf_snapshot *parent = full ? NULL : g_parent;
    rc = sf_snapshot_write_flags(s, parent, fd, wflags);
    patched += sfp_patch_end();
    uint64_t wns = sfp_now_ns() - w0;
    if (locked)
        sfp_unlock();
    off_t size = lseek(fd, 0, SEEK_END);
    if (sfp_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0) < 0 && rc == 0)
        rc = -EIO;
    if (rc == 0) {
        /* RENAME_NOREPLACE: an image of that name is never overwritten. */
        long r = sfp_raw_syscall(SYS_renameat2, g_dir_fd, (long)part, g_dir_fd, (long)name, RENAME_NOREPLACE, 0);
        if (r == -EINVAL || r == -ENOSYS) /* a file system without the flag */
            r = sfp_raw_syscall(SYS_renameat, g_dir_fd, (long)part, g_dir_fd, (long)name, 0, 0);
        if (r < 0)
            rc = (int)r;
    }
    if (rc < 0) {
        /* A partial image is ours to remove. */
        sfp_raw_syscall(SYS_unlinkat, g_dir_fd, (long)part, 0, 0, 0, 0);
        sf_snapshot_release(s);
        return rc;
    }
    /* Retention runs before the image is listed: whoever sees its S line
     * sees the disk within the budget (the deletions' D lines come first,
     * and an image over the budget is removed before its S and D lines). */
    budget_after(seq, name, size > 0 ? (uint64_t)size : 0, full);
    bool over = budget_over() && g_kept[g_nkept - 1].seq == seq;
    struct kept k = {0};
    if (over) {
        /* Alone it passes the budget (older chains are gone already). */
        k = g_kept[--g_nkept];
        sfp_raw_syscall(SYS_unlinkat, g_dir_fd, (long)k.name, 0, 0, 0, 0);
        g_disk -= k.size;
        g_deleted++;
    }
    /* Counted before it is listed: a program that sees the line and ends
     * at once (_exit) has its end line written by its own thread, which
     * must count this image. */
    __atomic_fetch_add(&g_written, 1, __ATOMIC_SEQ_CST);
    index_line(SFP_IDX_IMAGE "\t%llu\t%s\t%016llx\t%016llx\t%lld\t%llu\t%llu\t%s\t%u\n", (unsigned long long)seq, name,
               (unsigned long long)sf_snapshot_id(s),
               (unsigned long long)(parent ? sf_snapshot_id(parent) : 0), (long long)size,
               (unsigned long long)(pause / 1000), (unsigned long long)(wns / 1000), why, patched);
    g_bytes += size > 0 ? (uint64_t)size : 0;
    g_write_ns += wns;
    if (over) {
        index_line(SFP_IDX_DELETED "\t%llu\t%s\t%s\n", (unsigned long long)k.seq, k.name, "over budget");
        backoff(full ? "a full image alone passes it" : "an incremental image does not fit");
        sf_snapshot_release(s);
        if (!g_nkept && g_parent) {
            sf_snapshot_release(g_parent); /* nothing on disk to be incremental to */
            g_parent = NULL;
        }
        return 1; /* written and deleted */
    }
    if (g_parent)
        sf_snapshot_release(g_parent);
    g_parent = s;
    return 0;
}

/* 1: written, 0: nothing to do (no directory, limit, chain ended), <0: failed */
static int take_and_write(const char *why)
{
    atomic_store(&sfp_snap_requests, 0);
    if (g_dir_fd < 0 || !sfp_tracker || g_end_written)
        return 0;
    long max = (long)sfp_opt_val(SFP_OPT_MAX_IMAGES);
    if (max && (long)g_written >= max)
        return 0;
    bool full;
    if (!budget_before(&full, strcmp(why, "period") == 0))
        return 0;
    uint64_t seq = ++g_seq;
    char name[64];
    sfp_fmt(name, sizeof(name), "snap-%s-%06llu.sfimg", g_tag, (unsigned long long)seq);
    /* Usually the program keeps running while the image is written.  If it
     * unmapped part of the snapshot meanwhile (-ENOENT), the next try holds
     * off mapping changes for the length of the write. */
    int rc = take_and_write_once(seq, name, false, why, full);
    if (rc == -ENOENT)
        rc = take_and_write_once(seq, name, true, why, full);
    if (rc < 0) {
        g_failed++;
        sfp_warn_once(SFP_ONCE_IMAGE, "writing image %s/%s failed: %s", g_dir, name,
                      rc == -ENOSPC ? sf_strerror(rc) : sfp_errstr(rc));
        index_line(SFP_IDX_FAILED "\t%llu\t%s\t%s\n", (unsigned long long)seq, name, sf_strerror(rc));
        return rc;
    }
    return rc == 1 ? 2 : 1; /* 2: written, then deleted for the budget */
}

void sfp_snap_take_and_write(const char *why)
{
    take_and_write(why);
}

/* The index's last line: the chain ended here, every image it wrote is
 * listed.  clean: ended by exit or a fatal signal with its final image
 * written (or none wanted: EXIT_IMAGE=0, MAX_IMAGES reached); incomplete:
 * ended where no final image can be taken (_exit, exec) or it failed. */
static void end_line(const char *status, const char *how)
{
    if (g_end_written || g_index_fd < 0)
        return;
    g_end_written = true;
    char fin[24] = "none";
    if (g_final_seq)
        sfp_fmt(fin, sizeof(fin), "%llu", (unsigned long long)g_final_seq);
    index_line(SFP_IDX_END "\t%s\timages=%llu\tfailed=%llu\thow=%s\tfinal=%s\tdeleted=%llu\tskipped=%llu\t"
               "backoffs=%llu\tbytes=%llu\n",
               status, (unsigned long long)__atomic_load_n(&g_written, __ATOMIC_SEQ_CST),
               (unsigned long long)g_failed, how, fin, (unsigned long long)g_deleted,
               (unsigned long long)g_skipped, (unsigned long long)g_backoffs, (unsigned long long)g_disk);
}

static long futex(_Atomic int *w, int op, int val)
{
    return sfp_raw_syscall(SYS_futex, (long)w, op, val, 0, 0, 0);
}

/* Background thread: serves a pending final-image request. */
void sfp_snap_serve_final(void)
{
    int req = atomic_load(&g_final_req);
    if (!req || atomic_load(&g_final_done))
        return;
    char how[16];
    if (req < 0)
        sfp_fmt(how, sizeof(how), "exit");
    else
        sfp_signal_name(req, how);
    if (g_dir_fd >= 0 && sfp_tracker && !g_end_written) {
        g_final_take = true;
        int rc = take_and_write(how);
        g_final_take = false;
        if (rc == 1)
            g_final_seq = g_seq;
        end_line(rc < 0 ? "incomplete" : "clean", how);
    }
    sfp_snap_bg_gone();
}

/* Also when the background thread ends: nobody waits for it in vain. */
void sfp_snap_bg_gone(void)
{
    atomic_store(&g_final_done, 1);
    futex(&g_final_done, FUTEX_WAKE_PRIVATE, 1 << 30);
}

/* Any thread, async-signal-safe: asks for the final image and waits until
 * it is written.  The caller checked that the background thread runs and
 * that this thread holds none of the runtime's locks. */
void sfp_snap_final_wait(int sig)
{
    int expect = 0;
    if (atomic_compare_exchange_strong(&g_final_req, &expect, sig ? sig : -1)) {
        char c = 1;
        sfp_raw_syscall(SYS_write, sfp_wake_fd[1], (long)&c, 1, 0, 0, 0);
    }
    while (!atomic_load(&g_final_done))
        futex(&g_final_done, FUTEX_WAIT_PRIVATE, 0);
}

bool sfp_snap_exit_image(void)
{
    return sfp_opt_val(SFP_OPT_EXIT_IMAGE) != 0;
}

/* A fatal signal the program left at SIG_DFL: the final image, then the
 * default action (the process dies of the same signal). */
static void fatal_handler(int sig, siginfo_t *si, void *ucv)
{
    (void)si;
    int saved = errno;
    long pid = sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    long tid = sfp_raw_syscall(SYS_gettid, 0, 0, 0, 0, 0, 0);
    if (sfp_in_runtime) {
        /* This thread may hold a runtime lock the background thread needs:
         * keep the signal pending and blocked here until the thread leaves
         * the runtime (sfp_fatal_redeliver). */
        ucontext_t *uc = ucv;
        sigaddset(&uc->uc_sigmask, sig);
        sfp_fatal_pending |= 1 << sig;
        sfp_raw_syscall(SYS_tgkill, pid, tid, sig, 0, 0, 0);
        errno = saved;
        return;
    }
    if (sfp_bg_alive())
        sfp_snap_final_wait(sig);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sfp_real.sigaction(sig, &dfl, NULL);
    for (int i = 0; i < 3; i++)
        if (g_fatal_sigs[i] == sig)
            atomic_store(&g_fatal[i].ours, 0);
    sfp_raw_syscall(SYS_tgkill, pid, tid, sig, 0, 0, 0);
    uint64_t set = 1ull << (sig - 1);
    sfp_raw_syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&set, 0, sizeof(set), 0, 0);
    errno = saved; /* not reached: the default action ends the process */
}

void sfp_fatal_redeliver(void)
{
    int p = sfp_fatal_pending;
    sfp_fatal_pending = 0;
    uint64_t set = 0;
    for (int sig = 1; sig < 32; sig++)
        if (p & (1 << sig))
            set |= 1ull << (sig - 1);
    if (set)
        sfp_raw_syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&set, 0, sizeof(set), 0, 0);
}

static int fatal_slot(int sig)
{
    for (int i = 0; i < 3; i++)
        if (g_fatal_sigs[i] == sig)
            return i;
    return -1;
}

static void fatal_set_ours(int i)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = fatal_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sfp_real.sigaction(g_fatal_sigs[i], &sa, NULL) == 0)
        atomic_store(&g_fatal[i].ours, 1);
}

void sfp_snap_fatal_install(void)
{
    if (!sfp_snap_exit_image())
        return;
    for (int i = 0; i < 3; i++) {
        int sig = g_fatal_sigs[i];
        if (sig == sfp_trigger_sig || g_fatal[i].managed)
            continue; /* the trigger; or a forked child: inherited */
        struct sigaction old;
        if (sfp_real.sigaction(sig, NULL, &old) != 0)
            continue;
        if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL)
            continue; /* the program's (or ignored, as under nohup): left alone */
        g_fatal[i].prog = old;
        g_fatal[i].managed = true;
        fatal_set_ours(i);
    }
}

bool sfp_fatal_shared(int sig)
{
    int i = fatal_slot(sig);
    return i >= 0 && g_fatal[i].managed;
}

/* sigaction on SIGHUP/SIGINT/SIGTERM as the program sees it: its own
 * handler or SIG_IGN is installed for real (and takes precedence, as
 * without snapfault); SIG_DFL puts the final-image handler back.  old is
 * always what the program set last.  Returns 1 when handled here. */
int sfp_fatal_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    int i = fatal_slot(sig);
    if (i < 0 || !g_fatal[i].managed)
        return 0;
    /* While the program's own disposition is installed, the kernel's is
     * the truth (SA_RESETHAND may have reset it). */
    struct sigaction prev = g_fatal[i].prog;
    if (!atomic_load(&g_fatal[i].ours) && sfp_real.sigaction(sig, NULL, &prev) != 0)
        prev = g_fatal[i].prog;
    if (act) {
        bool dfl = !(act->sa_flags & SA_SIGINFO) && act->sa_handler == SIG_DFL;
        if (dfl) {
            if (!atomic_load(&g_fatal[i].ours))
                fatal_set_ours(i);
        } else {
            if (sfp_real.sigaction(sig, act, NULL) != 0)
                return -1;
            atomic_store(&g_fatal[i].ours, 0);
        }
        g_fatal[i].prog = *act;
    }
    if (old)
        *old = prev;
    return 1;
}

void sfp_snap_finish(const char *how)
{
    /* Unless the final image ended the chain already: _exit, exec (no
     * final image can be taken there), or exit images are off. */
    end_line(strcmp(how, "exit") == 0 && !sfp_snap_exit_image() ? "clean" : "incomplete", how);
    if (g_parent)
        sf_snapshot_release(g_parent);
    g_parent = NULL;
    if (g_index_fd >= 0)
        sfp_raw_syscall(SYS_close, g_index_fd, 0, 0, 0, 0, 0);
    g_index_fd = -1;
}

/* The world stops of point-in-time takes (SNAPFAULT_POINT_IN_TIME). */
static size_t stop_summary(const sf_stats *st, char *buf, size_t cap)
{
    if (!sfp_opt_val(SFP_OPT_POINT_IN_TIME))
        return sfp_fmt(buf, cap, "snapfault: point-in-time off: threads ran during takes\n");
    return sfp_fmt(buf, cap,
                   "snapfault: point-in-time: %llu stops, stop median %.0f us, p99 %.0f us, max %.0f us; "
                   "%.1f threads signalled and %.1f asleep per stop; %llu retakes, %llu fallbacks, "
                   "%llu inexact, %llu unacknowledged\n",
                   (unsigned long long)st->stops, (double)sf_stats_stop_quantile(st, 0.5) / 1000.0,
                   (double)sf_stats_stop_quantile(st, 0.99) / 1000.0, (double)st->stop_max_ns / 1000.0,
                   st->stops ? (double)st->stop_signalled / (double)st->stops : 0.0,
                   st->stops ? (double)st->stop_asleep / (double)st->stops : 0.0,
                   (unsigned long long)st->stop_retries, (unsigned long long)st->stop_fallbacks,
                   (unsigned long long)st->stop_inexact, (unsigned long long)st->stop_timeouts);
}

void sfp_snap_summary(void)
{
    /* SHOW_STATS or STATS_FILE: the descriptor taken at start-up, as track mode's summary: never
     * the program's own stderr, which it may have closed or redirected. */
    int sfd = sfp_stats_fd();
    if (sfd < 0)
        return;
    sf_stats st;
    memset(&st, 0, sizeof(st));
    if (sfp_tracker)
        sf_tracker_stats(sfp_tracker, &st);
    char buf[1536];
    size_t n = sfp_fmt(buf, sizeof(buf),
                       "snapfault: pid %d, snapshot mode, %s engine, backend %s (%s), images in %s\n"
                       "snapfault: %llu images (%.1f MiB), %llu failed; take pause mean %.0f us, max %.0f us; "
                       "write mean %.1f ms\n"
                       "snapfault: tracked %.1f MiB in %llu ranges; %llu faults, %llu page copies\n",
                       (int)g_pid_snap, sf_engine_name(st.engine), sf_backend_name(st.backend),
                       sf_fault_mode_name(st.fault_mode),
                       g_dir[0] ? g_dir : "(none)", (unsigned long long)g_written,
                       (double)g_bytes / 1048576.0, (unsigned long long)g_failed,
                       g_takes ? (double)g_pause_ns / (double)g_takes / 1000.0 : 0.0,
                       (double)g_pause_max_ns / 1000.0,
                       g_written ? (double)g_write_ns / (double)g_written / 1e6 : 0.0,
                       (double)st.tracked_bytes / 1048576.0, (unsigned long long)st.regions,
                       (unsigned long long)st.faults, (unsigned long long)st.copies);
    if (n < sizeof(buf))
        n += stop_summary(&st, buf + n, sizeof(buf) - n);
    sfp_write_all(sfd, buf, n);
}

void sfp_snap_child(void)
{
    /* The parent's snapshots belong to its tracker; its index is its own. */
    g_parent = NULL;
    if (g_index_fd >= 0)
        sfp_raw_syscall(SYS_close, g_index_fd, 0, 0, 0, 0, 0);
    if (g_dir_fd >= 0)
        sfp_raw_syscall(SYS_close, g_dir_fd, 0, 0, 0, 0, 0);
    g_index_fd = g_dir_fd = -1;
    g_seq = g_takes = g_written = g_failed = g_bytes = g_pause_ns = g_pause_max_ns = g_write_ns = 0;
    g_dir[0] = 0;
    g_final_seq = 0;
    g_end_written = false;
    g_nkept = 0; /* the parent's images */
    g_disk = g_deleted = g_skipped = g_backoffs = g_est_full = g_est_incr[0] = g_est_incr[1] = 0;
    atomic_store(&g_final_req, 0);
    atomic_store(&g_final_done, 0);
}
