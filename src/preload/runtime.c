/* runtime.c - the preload's runtime: start-up, the tracker, the model of
 * tracked mappings kept in step with the program, and track mode's records. */
#include "runtime.h"
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

const char *const sfp_kind_names[SFP_K_COUNT] = {"heap", "anon", "data", "stack"};

_Atomic int sfp_state;
_Atomic int sfp_prefault_needed;
_Atomic int sfp_creating_threads;
sf_tracker *sfp_tracker;
struct sfp_label *sfp_labels;
size_t sfp_nlabels;
uint64_t sfp_t0_ns;
int sfp_wake_fd[2] = {-1, -1};

/* The runtime lock orders every change to the tracked set: the background
 * thread's scans, collects and takes, and the interposers' mapping calls
 * (held across the real call, so that a scan never sees a half-done one). */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static int g_mode;
static unsigned g_include;
static sf_backend g_backend;
static sf_fault_mode g_fault_mode;
static long g_interval_ms;
static pthread_t g_bg;
static bool g_bg_running;
static _Atomic int g_bg_alive;        /* the background thread runs and serves requests */
static _Atomic int g_stop;
static pid_t g_pid;
static bool g_child_pending;          /* forked child, not set up yet */
static bool g_attr;
static bool g_finished;               /* the E record is written */

/* Track mode output */
static struct sfp_out *g_out;
static char g_out_path[512];
static uint64_t g_seq, g_total_pages, g_peak_pages, g_peak_seq, g_collect_ns, g_collect_max_ns;
/* Rates use each interval's real length: from the previous collect (or the
 * start of tracking) to this one.  g_span_ns sums them, so that the mean
 * (total over the duration) can never exceed the peak. */
static uint64_t g_last_collect_ns, g_span_ns;
static double g_peak_rate; /* pages per second */
static uint64_t g_scans, g_scan_ns; /* reconciles with /proc/self/maps */

void sfp_lock(void) { pthread_mutex_lock(&g_lock); }
void sfp_unlock(void) { pthread_mutex_unlock(&g_lock); }

uint64_t sfp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uintptr_t page_down(uintptr_t a) { return a & ~(uintptr_t)(sf_page_size - 1); }
static uintptr_t page_up(uintptr_t a) { return (a + sf_page_size - 1) & ~(uintptr_t)(sf_page_size - 1); }

/* ------------------------------------------------------------------------
 * Labels and segments.  segs is what the runtime asked the library to
 * track, sorted and disjoint; each segment names its label.
 * ------------------------------------------------------------------------ */
struct seg {
    uintptr_t start, end;
    uint32_t label; /* index into sfp_labels */
};
static struct seg *g_segs;
static size_t g_nsegs, g_segs_cap;
static size_t g_labels_cap;
static uint32_t g_heap_label = UINT32_MAX, g_data_label = UINT32_MAX;

/* Ranges tracking failed on (file-backed under uffd, EBUSY, ...): not
 * tried again until they change. */
struct refused {
    uintptr_t start, end;
};
static struct refused *g_refused;
static size_t g_nrefused, g_refused_cap;

static uint32_t label_new(enum sfp_kind kind, const char *name, uintptr_t lo, uintptr_t hi)
{
    if (sfp_nlabels == g_labels_cap) {
        size_t cap = g_labels_cap ? 2 * g_labels_cap : 64;
        struct sfp_label *nl = sfp_realloc(sfp_labels, cap * sizeof(*nl));
        if (!nl)
            return UINT32_MAX;
        sfp_labels = nl;
        g_labels_cap = cap;
    }
    struct sfp_label *l = &sfp_labels[sfp_nlabels];
    memset(l, 0, sizeof(*l));
    l->id = (uint32_t)sfp_nlabels + 1;
    l->kind = (uint8_t)kind;
    l->lo = lo;
    l->hi = hi;
    l->announce = true;
    sfp_fmt(l->prot, sizeof(l->prot), "rw-p");
    sfp_fmt(l->name, sizeof(l->name), "%s", name);
    return (uint32_t)sfp_nlabels++;
}

static size_t seg_lower_bound(uintptr_t addr)
{
    /* first segment whose end is above addr */
    size_t lo = 0, hi = g_nsegs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g_segs[mid].end <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct sfp_label *sfp_label_at(uintptr_t addr)
{
    size_t i = seg_lower_bound(addr);
    if (i < g_nsegs && g_segs[i].start <= addr)
        return &sfp_labels[g_segs[i].label];
    return NULL;
}

static int segs_insert(uintptr_t start, uintptr_t end, uint32_t label)
{
    size_t i = seg_lower_bound(start);
    /* merge with the previous one when contiguous with the same label */
    if (i > 0 && g_segs[i - 1].end == start && g_segs[i - 1].label == label) {
        g_segs[i - 1].end = end;
        if (i < g_nsegs && g_segs[i].start == end && g_segs[i].label == label) {
            g_segs[i - 1].end = g_segs[i].end;
            memmove(&g_segs[i], &g_segs[i + 1], (g_nsegs - i - 1) * sizeof(*g_segs));
            g_nsegs--;
            sfp_labels[label].nsegs--;
        }
        return 0;
    }
    if (i < g_nsegs && g_segs[i].start == end && g_segs[i].label == label) {
        g_segs[i].start = start;
        return 0;
    }
    if (g_nsegs == g_segs_cap) {
        size_t cap = g_segs_cap ? 2 * g_segs_cap : 256;
        struct seg *ns = sfp_realloc(g_segs, cap * sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        g_segs = ns;
        g_segs_cap = cap;
    }
    memmove(&g_segs[i + 1], &g_segs[i], (g_nsegs - i) * sizeof(*g_segs));
    g_segs[i] = (struct seg){start, end, label};
    g_nsegs++;
    sfp_labels[label].nsegs++;
    return 0;
}

/* Removes [start, end) from the segments (splitting where needed). */
static void segs_remove(uintptr_t start, uintptr_t end)
{
    size_t i = seg_lower_bound(start);
    while (i < g_nsegs && g_segs[i].start < end) {
        struct seg *s = &g_segs[i];
        if (start <= s->start && s->end <= end) {
            sfp_labels[s->label].nsegs--;
            memmove(s, s + 1, (g_nsegs - i - 1) * sizeof(*s));
            g_nsegs--;
            continue;
        }
        if (s->start < start && end < s->end) {
            struct seg hi = {end, s->end, s->label};
            s->end = start;
            segs_insert(hi.start, hi.end, hi.label);
            return;
        }
        if (s->start < start)
            s->end = start;
        else
            s->start = end;
        i++;
    }
}

static bool refused_overlaps(uintptr_t start, uintptr_t end)
{
    for (size_t i = 0; i < g_nrefused; i++)
        if (g_refused[i].start < end && start < g_refused[i].end)
            return true;
    return false;
}

static void refused_add(uintptr_t start, uintptr_t end)
{
    if (g_nrefused == g_refused_cap) {
        size_t cap = g_refused_cap ? 2 * g_refused_cap : 32;
        struct refused *nr = sfp_realloc(g_refused, cap * sizeof(*nr));
        if (!nr)
            return;
        g_refused = nr;
        g_refused_cap = cap;
    }
    g_refused[g_nrefused++] = (struct refused){start, end};
}

static void refused_forget(uintptr_t start, uintptr_t end)
{
    for (size_t i = 0; i < g_nrefused;)
        if (g_refused[i].start < end && start < g_refused[i].end)
            g_refused[i] = g_refused[--g_nrefused];
        else
            i++;
}

/* ------------------------------------------------------------------------
 * Transparent huge pages.  Arming a page inside a huge page (write-protect
 * or mprotect of part of it) splits the huge page on the next write, with
 * every backend: tracking is 4 KiB-grained and the program loses its huge
 * pages.  With SNAPFAULT_THP=keep, ranges the program asked huge pages for
 * (MADV_HUGEPAGE) or already holds huge pages in are left untracked, and
 * the record says so (a W line per range).
 * ------------------------------------------------------------------------ */
#define SFP_HUGE (2u << 20)
static bool g_thp_keep;
static uint64_t g_thp_kept, g_thp_kept_bytes;
static struct sfp_thp_range *g_thp;
static size_t g_nthp;
static uintptr_t *g_thp_noted; /* starts of the ranges said already */
static size_t g_nthp_noted, g_thp_noted_cap;

static bool thp_possible(uintptr_t start, uintptr_t end)
{
    uintptr_t a = (start + SFP_HUGE - 1) & ~(uintptr_t)(SFP_HUGE - 1);
    return a + SFP_HUGE <= end && a >= start;
}

static const struct sfp_thp_range *thp_overlap(uintptr_t start, uintptr_t end)
{
    for (size_t i = 0; i < g_nthp; i++) {
        if (g_thp[i].start >= end)
            break;
        if (start < g_thp[i].end)
            return &g_thp[i];
    }
    return NULL;
}

static void track_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void thp_note(const struct sfp_thp_range *r)
{
    for (size_t i = 0; i < g_nthp_noted; i++)
        if (g_thp_noted[i] == r->start)
            return;
    if (g_nthp_noted == g_thp_noted_cap) {
        size_t cap = g_thp_noted_cap ? 2 * g_thp_noted_cap : 16;
        uintptr_t *n2 = sfp_realloc(g_thp_noted, cap * sizeof(*n2));
        if (!n2)
            return;
        g_thp_noted = n2;
        g_thp_noted_cap = cap;
    }
    g_thp_noted[g_nthp_noted++] = r->start;
    g_thp_kept++;
    g_thp_kept_bytes += r->end - r->start;
    track_note("huge pages kept (THP=keep): %lx-%lx (%lu kB in huge pages%s) left untracked",
               (unsigned long)r->start, (unsigned long)r->end, r->huge_kb,
               r->marked ? ", MADV_HUGEPAGE" : "");
}

/* ------------------------------------------------------------------------
 * The library's view.  sf_track of a range overlapping a region gives
 * -EEXIST unless it revives GONE pages of exactly one region; sf_untrack
 * needs every page tracked.  These walk the region table (stable: only the
 * runtime, under its lock, changes it) to cut requests along regions.
 * ------------------------------------------------------------------------ */
static struct sf_region *region_from(uintptr_t addr, uintptr_t *next_start)
{
    unsigned g = sf__grace_enter();
    struct sf_rtable *tb = sf__regions_table();
    struct sf_region *found = NULL;
    *next_start = UINTPTR_MAX;
    for (size_t i = 0; tb && i < tb->n; i++) {
        struct sf_region *r = tb->r[i];
        if (r->start <= addr && addr < r->end) {
            found = r;
            break;
        }
        if (r->start > addr) {
            *next_start = r->start;
            break;
        }
    }
    sf__grace_exit(g);
    return found;
}

static bool page_gone(struct sf_region *r, uintptr_t a)
{
    return atomic_load(&r->ps[(a - r->start) >> sf_page_shift]) & PS_GONE;
}

/* Calls fn on the runs of [start, end) whose pages are (want_tracked) or
 * are not (!want_tracked) tracked by the library. */
static int walk_runs(uintptr_t start, uintptr_t end, bool want_tracked,
                     int (*fn)(uintptr_t, uintptr_t))
{
    int err = 0;
    uintptr_t pos = start;
    while (pos < end) {
        uintptr_t next;
        struct sf_region *r = region_from(pos, &next);
        if (!r) {
            uintptr_t e = next < end ? next : end;
            if (!want_tracked) {
                int rc = fn(pos, e);
                err = err ? err : rc;
            }
            pos = e;
            continue;
        }
        uintptr_t e = r->end < end ? r->end : end;
        while (pos < e) {
            bool gone = page_gone(r, pos);
            uintptr_t q = pos + sf_page_size;
            while (q < e && page_gone(r, q) == gone)
                q += sf_page_size;
            if (gone != want_tracked) {
                int rc = fn(pos, q);
                err = err ? err : rc;
            }
            pos = q;
        }
    }
    return err;
}

static int lib_track_piece(uintptr_t a, uintptr_t e)
{
    return sf_track(sfp_tracker, (void *)a, e - a);
}

static int lib_untrack_piece(uintptr_t a, uintptr_t e)
{
    return sf_untrack(sfp_tracker, (void *)a, e - a);
}

static int lib_track(uintptr_t a, uintptr_t e)
{
    int rc = sf_track(sfp_tracker, (void *)a, e - a);
    if (rc == -EEXIST)
        rc = walk_runs(a, e, false, lib_track_piece);
    if (rc < 0 && g_backend == SF_BACKEND_MPROTECT) {
        /* The mapping changed under the scan (libc unmapped part of it):
         * mprotect applies up to the hole before failing, and the library
         * does not undo that.  Pages left read-only without a region would
         * fault for ever: give them back their protection. */
        sfp_real_mprotect((void *)a, e - a, PROT_READ | PROT_WRITE);
    }
    return rc;
}

static void lib_untrack(uintptr_t a, uintptr_t e)
{
    if (sf_untrack(sfp_tracker, (void *)a, e - a) == -ENOENT)
        walk_runs(a, e, true, lib_untrack_piece);
}

/* Tracks what of [start, end) is not tracked yet, under label. */
static void track_range(uintptr_t start, uintptr_t end, uint32_t label)
{
    if (label == UINT32_MAX || start >= end)
        return;
    uintptr_t pos = start;
    size_t i = seg_lower_bound(start);
    while (pos < end) {
        uintptr_t gap_end = end;
        if (i < g_nsegs && g_segs[i].start <= pos) {
            pos = g_segs[i].end;
            i++;
            continue;
        }
        if (i < g_nsegs && g_segs[i].start < end)
            gap_end = g_segs[i].start;
        int rc = lib_track(pos, gap_end);
        if (rc == 0) {
            segs_insert(pos, gap_end, label);
            i = seg_lower_bound(gap_end);
            struct sfp_label *l = &sfp_labels[label];
            if (pos < l->lo || gap_end > l->hi) {
                l->lo = pos < l->lo ? pos : l->lo;
                l->hi = gap_end > l->hi ? gap_end : l->hi;
                l->announce = true;
            }
            l->gone_written = false;
        } else {
            sfp_info("not tracking %#lx-%#lx (%s): %s", (unsigned long)pos, (unsigned long)gap_end,
                     sfp_labels[label].name, sf_strerror(rc));
            refused_add(pos, gap_end);
            i = seg_lower_bound(gap_end);
        }
        pos = gap_end;
    }
}

/* Untracks what the runtime tracks in [start, end).  On return no snapshot
 * reader is still copying from the range, so the caller may unmap it. */
static void untrack_range(uintptr_t start, uintptr_t end)
{
    size_t i = seg_lower_bound(start);
    bool any = false;
    while (i < g_nsegs && g_segs[i].start < end) {
        uintptr_t a = g_segs[i].start > start ? g_segs[i].start : start;
        uintptr_t e = g_segs[i].end < end ? g_segs[i].end : end;
        lib_untrack(a, e);
        segs_remove(a, e);
        any = true;
        i = seg_lower_bound(e);
    }
    refused_forget(start, end);
    /* A partial sf_untrack marks pages GONE without waiting for readers
     * (an image writer may have checked a page just before and still be
     * copying it): wait them out here, or the unmap that follows would
     * fault the writer. */
    if (any)
        sf__grace_wait();
}

/* ------------------------------------------------------------------------
 * The interposers' entry points (called with the runtime lock held).
 * ------------------------------------------------------------------------ */
static bool prot_trackable(int prot)
{
    return (prot & PROT_WRITE) && (prot & PROT_READ) && !(prot & PROT_EXEC);
}

void sfp_untrack_range(uintptr_t start, uintptr_t end)
{
    untrack_range(page_down(start), page_up(end));
}

void sfp_track_new(uintptr_t start, uintptr_t end, int prot, int flags)
{
    if (!(g_include & SFP_INC_ANON) || !prot_trackable(prot) || !(flags & MAP_PRIVATE) ||
        !(flags & MAP_ANONYMOUS))
        return;
    if ((flags & (MAP_STACK | MAP_GROWSDOWN)) && !(g_include & SFP_INC_STACKS))
        return;
    start = page_down(start);
    end = page_up(end);
    if (sfp_own_overlaps(start, end))
        return;
    /* THP=keep: a mapping that can hold a huge page is left to the
     * scanner, which sees whether the program asked for huge pages
     * (MADV_HUGEPAGE) or got them; armed, its huge pages would split. */
    if (g_thp_keep && thp_possible(start, end))
        return;
    char name[40];
    sfp_fmt(name, sizeof(name), "anon@%lx", (unsigned long)start);
    track_range(start, end, label_new(SFP_K_ANON, name, start, end));
}

void sfp_untrack_save(uintptr_t start, uintptr_t end, struct sfp_saved *sv)
{
    start = page_down(start);
    end = page_up(end);
    sv->n = 0;
    sv->overflow = false;
    size_t i = seg_lower_bound(start);
    for (; i < g_nsegs && g_segs[i].start < end; i++) {
        if (sv->n == sizeof(sv->start) / sizeof(sv->start[0])) {
            sv->overflow = true;
            break;
        }
        sv->start[sv->n] = g_segs[i].start > start ? g_segs[i].start : start;
        sv->end[sv->n] = g_segs[i].end < end ? g_segs[i].end : end;
        sv->label[sv->n] = g_segs[i].label;
        sv->n++;
    }
    untrack_range(start, end);
}

void sfp_retrack(const struct sfp_saved *sv, int prot)
{
    if (!prot_trackable(prot))
        return;
    for (size_t i = 0; i < sv->n; i++)
        track_range(sv->start[i], sv->end[i], sv->label[i]);
    /* Beyond the saved pieces (more than fit): the scanner adopts them. */
}

void sfp_thread_created(uintptr_t lo, uintptr_t hi)
{
    sfp_in_runtime++; /* the registries' locks: see fatal_handler */
    if (!(g_include & SFP_INC_STACKS) || atomic_load(&sfp_prefault_needed) ||
        atomic_load(&sfp_state) != SFP_READY) {
        sfp_excl_add(lo, hi);
        sfp_runtime_leave();
        return;
    }
    pthread_mutex_lock(&g_lock);
    char name[48];
    sfp_fmt(name, sizeof(name), "stack@%lx", (unsigned long)lo);
    /* the guard page below the stack is not writable: skip it */
    track_range(lo + sf_page_size, hi, label_new(SFP_K_STACK, name, lo, hi));
    pthread_mutex_unlock(&g_lock);
    sfp_runtime_leave();
}

void sfp_altstack(uintptr_t lo, uintptr_t hi)
{
    /* The kernel writes signal frames there: with faults delivered as
     * signals, a protected alternate stack kills the thread. */
    if (!atomic_load(&sfp_prefault_needed))
        return;
    lo = page_down(lo);
    hi = page_up(hi);
    bool inside = sfp_in_runtime;
    sfp_in_runtime++;
    sfp_excl_add(lo, hi);
    if (atomic_load(&sfp_state) != SFP_READY || inside) {
        sfp_runtime_leave();
        return;
    }
    pthread_mutex_lock(&g_lock);
    untrack_range(lo, hi);
    pthread_mutex_unlock(&g_lock);
    sfp_runtime_leave();
}

/* The main thread's TCB and static TLS (errno, the library's TLS) were
 * allocated by the loader in some anonymous mapping: snapfault's own fault
 * handler writes there. */
static void exclude_main_tls(void)
{
    uintptr_t tcb = (uintptr_t)pthread_self();
    uintptr_t lo = tcb > (64u << 10) ? tcb - (64u << 10) : 0;
    uintptr_t a = (uintptr_t)&sfp_in_runtime, b = (uintptr_t)__errno_location();
    if (a < lo)
        lo = a;
    if (b < lo)
        lo = b;
    sfp_excl_add(page_down(lo), page_up(tcb + 4096));
}

/* ------------------------------------------------------------------------
 * Reconciling with /proc/self/maps: adopts mappings made where the
 * interposers cannot see (libc's internal mmap and brk, mappings made
 * before start-up) and drops what disappeared the same way.
 * ------------------------------------------------------------------------ */
struct cand {
    uintptr_t start, end;
};
static struct cand *g_prev, *g_cur;
static size_t g_nprev, g_ncur, g_prev_cap, g_cur_cap;
static bool g_first_scan = true;
static struct sfp_object g_objs[256];
static size_t g_nobjs;

static bool was_seen(uintptr_t start, uintptr_t end)
{
    size_t lo = 0, hi = g_nprev;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g_prev[mid].start < start)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < g_nprev && g_prev[lo].start == start && g_prev[lo].end == end;
}

static void cand_add(uintptr_t start, uintptr_t end)
{
    if (g_ncur == g_cur_cap) {
        size_t cap = g_cur_cap ? 2 * g_cur_cap : 256;
        struct cand *nc = sfp_realloc(g_cur, cap * sizeof(*nc));
        if (!nc)
            return;
        g_cur = nc;
        g_cur_cap = cap;
    }
    g_cur[g_ncur++] = (struct cand){start, end};
}

static char g_exe_base[64] = "program";
static char g_exe_path[160] = "program";

static const struct sfp_object *object_of(uintptr_t start, uintptr_t end)
{
    for (size_t i = 0; i < g_nobjs; i++)
        if (g_objs[i].lo < end && start < g_objs[i].hi)
            return &g_objs[i];
    return NULL;
}

/* What a maps line is to the runtime: a kind to track, or -1. */
static int classify(const struct sfp_mapline *ml, const struct sfp_mapline *prev, char *name,
                    size_t cap)
{
    if (ml->perms[0] != 'r' || ml->perms[1] != 'w' || ml->perms[2] == 'x' || ml->perms[3] != 'p')
        return -1;
    const char *path = ml->path;
    if (strcmp(path, "[heap]") == 0) {
        sfp_fmt(name, cap, "[heap]");
        return (g_include & SFP_INC_HEAP) ? SFP_K_HEAP : -1;
    }
    const struct sfp_object *obj = object_of(ml->start, ml->end);
    if (obj) {
        /* Writable segments of loaded objects: only the program's own.
         * Libraries' data (libc, the loader, ...) is written from signal
         * handlers and by snapfault itself. */
        if (!obj->main || !(g_include & SFP_INC_DATA))
            return -1;
        /* uffd write-protect works on anonymous memory only: the
         * file-backed .data needs the mprotect backend; .bss beyond the
         * file is anonymous and always works. */
        if (ml->inode && g_backend != SF_BACKEND_MPROTECT)
            return -1;
        sfp_fmt(name, cap, "%s", ml->inode ? path : prev && prev->inode && prev->end == ml->start ? prev->path
                                                                                                : g_exe_path);
        return SFP_K_DATA;
    }
    if (strncmp(path, "[anon:", 6) == 0 || (!*path && !ml->inode)) {
        if (!(g_include & SFP_INC_ANON))
            return -1;
        /* A writable mapping right above an inaccessible anonymous one is
         * how thread stacks look (guard page below).  In signal-delivered
         * fault modes a tracked stack kills its thread at the next signal,
         * so unknown ones are left alone there. */
        bool stacklike = prev && prev->end == ml->start && strcmp(prev->perms, "---p") == 0 &&
                         !prev->inode && !*prev->path;
        if (stacklike && atomic_load(&sfp_prefault_needed))
            return -1;
        if (*path)
            sfp_fmt(name, cap, "%s", path); /* [anon:NAME] (prctl PR_SET_VMA_ANON_NAME) */
        else
            sfp_fmt(name, cap, "anon@%lx", (unsigned long)ml->start);
        return SFP_K_ANON;
    }
    return -1; /* [stack], [vvar], files, devices, shared memory */
}

/* Lines that keep tracked pages valid: private, not executable; read-only
 * too with the mprotect backend, whose armed pages look like that. */
static bool keeps_tracked(const struct sfp_mapline *ml)
{
    if (ml->perms[3] != 'p' || ml->perms[2] == 'x' || ml->perms[0] != 'r')
        return false;
    return ml->perms[1] == 'w' || g_backend == SF_BACKEND_MPROTECT;
}

/* Detaching a range whose mapping was replaced behind our back must not
 * give the new mapping read-write protection (mprotect backend): see
 * __wrap_mprotect in interpose.c. */
__thread uintptr_t sfp_stale_lo __attribute__((tls_model("initial-exec")));
__thread uintptr_t sfp_stale_hi __attribute__((tls_model("initial-exec")));

static void drop_stale(uintptr_t a, uintptr_t e)
{
    sfp_info("dropping %#lx-%#lx: no longer mapped as tracked memory", (unsigned long)a, (unsigned long)e);
    sfp_stale_lo = a;
    sfp_stale_hi = e;
    untrack_range(a, e);
    sfp_stale_lo = sfp_stale_hi = 0;
}

struct drop {
    uintptr_t start, end;
};

/* Tracks the parts of [start, end) outside the runtime's own memory and
 * the excluded ranges: the kernel merges adjacent anonymous mappings, so
 * one maps line can hold both the program's memory and the runtime's. */
static void track_outside_registries(uintptr_t start, uintptr_t end, uint32_t label)
{
    struct sfp_range holes[64];
    size_t n = sfp_registry_overlaps(start, end, holes, sizeof(holes) / sizeof(holes[0]));
    if (n == SIZE_MAX)
        return; /* too fragmented to tell: leave it alone */
    uintptr_t pos = start;
    for (size_t i = 0; i < n && pos < end; i++) {
        uintptr_t hs = page_down(holes[i].start), he = page_up(holes[i].end);
        if (hs > pos)
            track_range(pos, hs < end ? hs : end, label);
        if (he > pos)
            pos = he;
    }
    if (pos < end)
        track_range(pos, end, label);
}

static void reconcile_body(void);

void sfp_reconcile(void)
{
    uint64_t t0 = sfp_now_ns();
    reconcile_body();
    g_scan_ns += sfp_now_ns() - t0;
    g_scans++;
}

static void reconcile_body(void)
{
    size_t len;
    char *buf = sfp_maps_read(&len);
    if (!buf)
        return;
    g_nobjs = sfp_objects(g_objs, sizeof(g_objs) / sizeof(g_objs[0]));
    bool adopt_new = !atomic_load(&sfp_creating_threads) && !atomic_load(&sfp_own_overflow);
    size_t nl = 0, lcap = 256;
    struct sfp_mapline *lines = sfp_malloc(lcap * sizeof(*lines));
    char *cur = buf, *end = buf + len;
    struct sfp_mapline ml;
    while (lines && sfp_maps_next(&cur, end, &ml)) {
        if (nl == lcap) {
            struct sfp_mapline *n2 = sfp_realloc(lines, 2 * lcap * sizeof(*lines));
            if (!n2)
                break;
            lines = n2;
            lcap *= 2;
        }
        lines[nl++] = ml;
    }
    if (!lines) {
        sfp_free(buf);
        return;
    }
    if (g_thp_keep) {
        sfp_free(g_thp);
        g_nthp = sfp_thp_ranges(&g_thp);
        /* what is tracked and now backed by huge pages (or marked for
         * them) is let go, before the next write splits them */
        for (size_t t = 0; t < g_nthp; t++) {
            size_t i = seg_lower_bound(g_thp[t].start);
            if (i < g_nsegs && g_segs[i].start < g_thp[t].end) {
                untrack_range(g_thp[t].start, g_thp[t].end);
                thp_note(&g_thp[t]);
            }
        }
    }

    /* Pass 1: parts of segments that no line keeps valid any more (unmapped
     * or re-protected where the interposers could not see) are dropped. */
    struct drop *drops = NULL;
    size_t nd = 0, dcap = 0;
    size_t li = 0;
    for (size_t si = 0; si < g_nsegs; si++) {
        uintptr_t pos = g_segs[si].start, e = g_segs[si].end;
        while (li < nl && lines[li].end <= pos)
            li++;
        for (size_t k = li; pos < e; k++) {
            uintptr_t hole_end = e;
            if (k < nl && lines[k].start < e) {
                if (lines[k].start <= pos) {
                    if (keeps_tracked(&lines[k])) {
                        pos = lines[k].end < e ? lines[k].end : e;
                        continue;
                    }
                    hole_end = lines[k].end < e ? lines[k].end : e;
                } else {
                    hole_end = lines[k].start;
                    k--; /* look at this line again from its start */
                }
            }
            if (nd == dcap) {
                dcap = dcap ? 2 * dcap : 16;
                struct drop *d2 = sfp_realloc(drops, dcap * sizeof(*d2));
                if (!d2)
                    break;
                drops = d2;
            }
            drops[nd++] = (struct drop){pos, hole_end};
            pos = hole_end;
        }
    }
    for (size_t d = 0; d < nd; d++)
        drop_stale(drops[d].start, drops[d].end);
    sfp_free(drops);

    /* Pass 2: adopt eligible lines (seen twice, unless known-safe). */
    g_ncur = 0;
    for (size_t k = 0; k < nl; k++) {
        const struct sfp_mapline *m = &lines[k];
        char name[96];
        int kind = classify(m, k ? &lines[k - 1] : NULL, name, sizeof(name));
        if (kind < 0)
            continue;
        cand_add(m->start, m->end);
        if (refused_overlaps(m->start, m->end))
            continue;
        const struct sfp_thp_range *huge = g_thp_keep ? thp_overlap(m->start, m->end) : NULL;
        if (huge) {
            thp_note(huge);
            continue;
        }
        size_t i = seg_lower_bound(m->start);
        if (i < g_nsegs && g_segs[i].start <= m->start && g_segs[i].end >= m->end)
            continue; /* fully tracked already */
        /* In signal-delivered modes a mapping must have been there at the
         * previous scan too: a transient one may be a stack libc made for
         * a child or thread being created, which a protection would kill.
         * Elsewhere adopting early only loses nothing. */
        bool stable = g_first_scan || kind == SFP_K_HEAP || kind == SFP_K_DATA ||
                      !atomic_load(&sfp_prefault_needed) || was_seen(m->start, m->end);
        if (!stable || (!adopt_new && !g_first_scan && kind == SFP_K_ANON))
            continue;
        uint32_t label;
        if (kind == SFP_K_HEAP) {
            if (g_heap_label == UINT32_MAX)
                g_heap_label = label_new(SFP_K_HEAP, name, m->start, m->end);
            label = g_heap_label;
        } else if (kind == SFP_K_DATA) {
            if (g_data_label == UINT32_MAX)
                g_data_label = label_new(SFP_K_DATA, name, m->start, m->end);
            label = g_data_label;
        } else {
            /* an anonymous mapping that grew keeps its label */
            struct sfp_label *l = i < g_nsegs && g_segs[i].start < m->end ? &sfp_labels[g_segs[i].label]
                                                                        : NULL;
            label = l ? (uint32_t)(l - sfp_labels) : label_new((enum sfp_kind)kind, name, m->start, m->end);
            /* named after it was mapped (prctl PR_SET_VMA_ANON_NAME) */
            if (l && strncmp(l->name, "anon@", 5) == 0 && name[0] == '[') {
                sfp_fmt(l->name, sizeof(l->name), "%s", name);
                l->announce = true;
            }
        }
        if (label != UINT32_MAX && sfp_labels[label].nsegs == 0)
            sfp_fmt(sfp_labels[label].prot, sizeof(sfp_labels[label].prot), "%s", m->perms);
        track_outside_registries(m->start, m->end, label);
    }
    sfp_free(lines);
    sfp_free(buf);
    struct cand *t = g_prev;
    g_prev = g_cur;
    g_nprev = g_ncur;
    g_cur = t;
    size_t tc = g_prev_cap;
    g_prev_cap = g_cur_cap;
    g_cur_cap = tc;
    g_ncur = 0;
    g_first_scan = false;
}

/* Tracked ranges unmapped since the last scan, or replaced behind the
 * runtime's back by an identical-looking mapping (libc's internal munmap
 * then mmap at the same address), are no longer registered with the
 * tracker's userfaultfd and make collects and takes fail.  /proc/self/smaps
 * shows the registration ("uw" in VmFlags); this runs only after such a
 * failure.  Returns the number of ranges dropped. */
size_t sfp_drop_unregistered(void)
{
    if (g_backend != SF_BACKEND_UFFD_ASYNC && g_backend != SF_BACKEND_UFFD_SYNC)
        return 0;
    int fd = (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)"/proc/self/smaps", O_RDONLY | O_CLOEXEC, 0, 0, 0);
    if (fd < 0)
        return 0;
    size_t cap = 1 << 20, n = 0;
    char *buf = sfp_malloc(cap);
    while (buf) {
        if (cap - n < 65536) {
            char *nb = sfp_realloc(buf, cap * 2);
            if (!nb) {
                sfp_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        long r = sfp_raw_syscall(SYS_read, fd, (long)(buf + n), (long)(cap - n - 1), 0, 0, 0);
        if (r == -EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    sfp_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
    if (!buf)
        return 0;
    buf[n] = 0;
    /* The VMAs registered with a userfaultfd, in address order. */
    struct drop *good = NULL;
    size_t ng = 0, gcap = 0;
    uintptr_t vs = 0, ve = 0;
    for (char *line = buf; line && *line;) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = 0;
        if (strncmp(line, "VmFlags:", 8) == 0) {
            if (strstr(line, " uw") && ve > vs) {
                if (ng == gcap) {
                    gcap = gcap ? 2 * gcap : 64;
                    struct drop *g2 = sfp_realloc(good, gcap * sizeof(*g2));
                    if (!g2)
                        break;
                    good = g2;
                }
                good[ng++] = (struct drop){vs, ve};
            }
        } else if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
            char *p = line;
            struct sfp_mapline ml;
            char *end = line + strlen(line);
            if (sfp_maps_next(&p, end, &ml)) {
                vs = ml.start;
                ve = ml.end;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    /* Tracked pieces outside those (replaced, or unmapped since the last
     * scan) are dropped. */
    struct drop *drops = NULL;
    size_t nd = 0, dcap = 0, gi = 0;
    for (size_t si = 0; si < g_nsegs; si++) {
        uintptr_t pos = g_segs[si].start, e = g_segs[si].end;
        while (gi < ng && good[gi].end <= pos)
            gi++;
        for (size_t k = gi; pos < e;) {
            uintptr_t hole_end = e;
            if (k < ng && good[k].start < e) {
                if (good[k].start <= pos) {
                    pos = good[k].end < e ? good[k].end : e;
                    k++;
                    continue;
                }
                hole_end = good[k].start;
            }
            if (nd == dcap) {
                dcap = dcap ? 2 * dcap : 16;
                struct drop *d2 = sfp_realloc(drops, dcap * sizeof(*d2));
                if (!d2)
                    break;
                drops = d2;
            }
            drops[nd++] = (struct drop){pos, hole_end};
            pos = hole_end;
        }
    }
    sfp_free(good);
    for (size_t d = 0; d < nd; d++)
        drop_stale(drops[d].start, drops[d].end);
    sfp_free(drops);
    sfp_free(buf);
    if (nd)
        sfp_info("dropped %zu tracked ranges whose mappings were replaced", nd);
    return nd;
}

/* ------------------------------------------------------------------------
 * Output files.
 * ------------------------------------------------------------------------ */
static size_t expand(const char *tmpl, char *path, size_t cap, bool *had_pid)
{
    size_t n = 0;
    *had_pid = false;
    for (const char *p = tmpl; *p && n + 1 < cap; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            n += sfp_fmt(path + n, cap - n, "%d", (int)g_pid);
            *had_pid = true;
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            path[n++] = '%';
            p++;
        } else {
            path[n++] = *p;
        }
    }
    path[n] = 0;
    return n;
}

int sfp_create_output(const char *tmpl, char *path, size_t cap)
{
    bool had_pid;
    size_t n = expand(tmpl, path, cap, &had_pid);
    /* "-" is not stdout here: records are per process, and the program's
     * stdout is its own.  Refused, as `snapfault run` refuses it, and so are
     * devices (/dev/stdout, /dev/null; /dev/shm is a file system). */
    if (strcmp(path, "-") == 0 || (strncmp(path, "/dev/", 5) == 0 && strncmp(path, "/dev/shm/", 9) != 0) ||
        strncmp(path, "/proc/", 6) == 0)
        return -EINVAL;
    /* A directory (existing, or named with a trailing slash) holds one
     * record per process: DIR/snapfault.PID.sft. */
    struct stat st;
    bool slash = n && path[n - 1] == '/';
    if (slash || (sfp_raw_syscall(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, 0, 0, 0) == 0 &&
                  S_ISDIR(st.st_mode))) {
        if (slash)
            sfp_raw_syscall(SYS_mkdirat, AT_FDCWD, (long)path, 0700, 0, 0, 0);
        n += sfp_fmt(path + n, cap - n, "%ssnapfault.%d.sft", slash ? "" : "/", (int)g_pid);
        had_pid = true;
    }
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_APPEND;
    int fd = (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)path, flags, 0600, 0, 0);
    if (fd != -EEXIST)
        return fd;
    /* Something that is not a regular file (/dev/stdout, a fifo, a
     * device) is not a record: never create a file beside it (in /dev). */
    if (sfp_raw_syscall(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, AT_SYMLINK_NOFOLLOW, 0, 0) == 0 &&
        !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
        return -EINVAL;
    if (sfp_raw_syscall(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, 0, 0, 0) == 0 && !S_ISREG(st.st_mode))
        return -EINVAL;
    /* Taken already: by a parent or sibling of the same run (a fixed
     * name), or by the program this process was before an exec (same
     * pid).  This process writes beside it, never over it. */
    if (!had_pid)
        n += sfp_fmt(path + n, cap - n, ".%d", (int)g_pid);
    for (int i = 0; i < 1000 && (fd == -EEXIST); i++) {
        if (i)
            sfp_fmt(path + n, cap - n, ".%d", i);
        else
            path[n] = 0;
        fd = (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)path, flags, 0600, 0, 0);
    }
    return fd;
}

int sfp_create_dir(const char *tmpl, char *path, size_t cap)
{
    bool had_pid;
    expand(tmpl, path, cap, &had_pid);
    long rc = sfp_raw_syscall(SYS_mkdirat, AT_FDCWD, (long)path, 0700, 0, 0, 0);
    if (rc < 0 && rc != -EEXIST)
        return (int)rc;
    /* An existing directory is fine (images have unique names and are
     * created exclusively); a symlink is not followed. */
    return (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)path,
                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0, 0, 0);
}

void sfp_out_flush(struct sfp_out *o)
{
    if (!o || o->failed || !o->n)
        return;
    size_t off = 0;
    while (off < o->n) {
        long w = sfp_raw_syscall(SYS_write, o->fd, (long)(o->buf + off), (long)(o->n - off), 0, 0, 0);
        if (w == -EINTR)
            continue;
        if (w <= 0) {
            sfp_warn_once(SFP_ONCE_OUTPUT, "cannot write %s: %s; no more records are written",
                          g_out_path, w < 0 ? sfp_errstr((int)w) : "short write");
            o->failed = true;
            sfp_raw_syscall(SYS_close, o->fd, 0, 0, 0, 0, 0);
            o->fd = -1;
            break;
        }
        off += (size_t)w;
    }
    o->n = 0;
}

void sfp_out_printf(struct sfp_out *o, const char *fmt, ...)
{
    if (!o || o->failed)
        return;
    if (sizeof(o->buf) - o->n < 1024)
        sfp_out_flush(o);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->n, sizeof(o->buf) - o->n, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->n += (size_t)n < sizeof(o->buf) - o->n ? (size_t)n : sizeof(o->buf) - o->n - 1;
}

/* ------------------------------------------------------------------------
 * Track mode: one collect+reset per interval.
 * ------------------------------------------------------------------------ */
static size_t g_other_label = SIZE_MAX;

static int collect_cb(void *addr, size_t len, void *arg)
{
    uintptr_t a = (uintptr_t)addr, e = a + len;
    while (a < e) {
        size_t i = seg_lower_bound(a);
        uint32_t label;
        uintptr_t stop;
        if (i < g_nsegs && g_segs[i].start <= a) {
            label = g_segs[i].label;
            stop = g_segs[i].end < e ? g_segs[i].end : e;
        } else {
            /* tracked by the library but not in the model (a race with a
             * mapping change): count it, under "other" */
            if (g_other_label == SIZE_MAX)
                g_other_label = label_new(SFP_K_ANON, "other", 0, 0);
            if (g_other_label == UINT32_MAX)
                return 0;
            label = (uint32_t)g_other_label;
            stop = (i < g_nsegs && g_segs[i].start < e) ? g_segs[i].start : e;
        }
        sfp_labels[label].ival += (stop - a) >> sf_page_shift;
        a = stop;
    }
    return 0;
}

static void write_labels(void)
{
    for (size_t i = 0; i < sfp_nlabels; i++) {
        struct sfp_label *l = &sfp_labels[i];
        if (l->announce && l->nsegs) {
            sfp_out_printf(g_out, "L\t%u\t%s\t%lx\t%lx\t%s\t%s\n", l->id, sfp_kind_names[l->kind],
                           (unsigned long)l->lo, (unsigned long)l->hi, l->prot, l->name);
            l->announce = false;
        }
    }
}

/* A note for the reader of the record (W), or for -v in snapshot mode. */
static void track_note(const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sfp_info("%s", msg);
    /* In snapshot mode the images lack what is left untracked: said once
     * without -v too. */
    static bool said;
    if (g_mode == SFP_MODE_SNAPSHOT && !said) {
        said = true;
        sfp_warn("%s: the images do not hold it", msg);
    }
    if (g_mode == SFP_MODE_TRACK && g_out)
        sfp_out_printf(g_out, "W\t%llu\t%s\n", (unsigned long long)((sfp_now_ns() - sfp_t0_ns) / 1000000), msg);
}

/* Re-arming (collect, take) waits up to 100 ms for calls that retry a
 * kernel write after EFAULT, so that their retry can succeed. */
void sfp_kwrite_wait(void)
{
    for (int i = 0; i < 100 && atomic_load(&sfp_kwrite_hold); i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void track_interval(void)
{
    sfp_kwrite_wait();
    uint64_t t0 = sfp_now_ns();
    int rc = sf_collect(sfp_tracker, SF_COLLECT_RESET, collect_cb, NULL);
    if (rc < 0 && sfp_drop_unregistered())
        rc = sf_collect(sfp_tracker, SF_COLLECT_RESET, collect_cb, NULL);
    uint64_t t1 = sfp_now_ns();
    if (rc < 0) {
        sfp_warn_once(SFP_ONCE_TRACK, "collect failed: %s", sf_strerror(rc));
        return;
    }
    uint64_t from = g_last_collect_ns ? g_last_collect_ns : sfp_t0_ns;
    uint64_t span = t1 > from ? t1 - from : 1;
    g_last_collect_ns = t1;
    g_span_ns += span;
    double per_s = 1e9 / (double)span;
    g_collect_ns += t1 - t0;
    if (t1 - t0 > g_collect_max_ns)
        g_collect_max_ns = t1 - t0;
    g_seq++;
    sf_stats st;
    sf_tracker_stats(sfp_tracker, &st);
    uint64_t pages = 0;
    write_labels();
    uint64_t t_ms = (t1 - sfp_t0_ns) / 1000000;
    for (size_t i = 0; i < sfp_nlabels; i++)
        pages += sfp_labels[i].ival;
    sfp_out_printf(g_out, "I\t%llu\t%llu\t%llu\t%llu\t%llu\n", (unsigned long long)g_seq,
                   (unsigned long long)t_ms, (unsigned long long)pages,
                   (unsigned long long)st.tracked_bytes, (unsigned long long)((t1 - t0) / 1000));
    for (size_t i = 0; i < sfp_nlabels; i++) {
        struct sfp_label *l = &sfp_labels[i];
        if (l->ival) {
            l->cum += l->ival;
            if (l->ival > l->peak)
                l->peak = l->ival;
            if ((double)l->ival * per_s > l->peak_rate)
                l->peak_rate = (double)l->ival * per_s;
            sfp_out_printf(g_out, "D\t%llu\t%u\t%llu\t%llu\t%llu\n", (unsigned long long)g_seq, l->id,
                           (unsigned long long)l->ival,
                           (unsigned long long)(l->ival << sf_page_shift), (unsigned long long)l->cum);
            l->ival = 0;
        }
        if (!l->nsegs && !l->gone_written && l->id && l->cum + l->peak > 0) {
            sfp_out_printf(g_out, "X\t%llu\t%u\n", (unsigned long long)t_ms, l->id);
            l->gone_written = true;
        }
    }
    g_total_pages += pages;
    if (pages > g_peak_pages)
        g_peak_pages = pages;
    if ((double)pages * per_s > g_peak_rate) {
        g_peak_rate = (double)pages * per_s;
        g_peak_seq = g_seq;
    }
    sfp_out_flush(g_out);
}

static const char *exe_name(char *buf, size_t cap)
{
    long n = sfp_raw_syscall(SYS_readlinkat, AT_FDCWD, (long)"/proc/self/exe", (long)buf,
                             (long)cap - 1, 0, 0);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

static void track_header(void)
{
    char exe[256];
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    sfp_out_printf(g_out, "#snapfault-track 1\n");
    sfp_out_printf(g_out, "P\tpid=%d\tppid=%ld\tpage=%zu\tinterval_ms=%ld\tbackend=%s\tfaults=%s\t"
                          "start_ns=%lld\texe=%s\n",
                   (int)g_pid, sfp_raw_syscall(SYS_getppid, 0, 0, 0, 0, 0, 0), sf_page_size,
                   g_interval_ms, sf_backend_name(g_backend), sf_fault_mode_name(g_fault_mode),
                   (long long)rt.tv_sec * 1000000000LL + rt.tv_nsec, exe_name(exe, sizeof(exe)));
    if (sfp_opt_val(SFP_OPT_ATTRIBUTE) && !g_attr)
        sfp_out_printf(g_out, "W\t0\twrite attribution needs a sync backend (mprotect or "
                              "uffd-sync in-thread); %s is in use, attribution is off\n",
                       sf_backend_name(g_backend));
    sfp_out_flush(g_out);
}

static int cmp_label_cum(const void *a, const void *b)
{
    const struct sfp_label *x = *(struct sfp_label *const *)a, *y = *(struct sfp_label *const *)b;
    return x->cum < y->cum ? 1 : x->cum > y->cum ? -1 : 0;
}

/* The summary (SHOW_STATS, STATS_FILE) goes to a descriptor taken at
 * start-up: a dup of stderr as it was then (the program may close or
 * redirect its own later), or the stats file opened for appending.  Both
 * are close-on-exec: a program this one executes opens its own.  -1: none. */
static int g_stats_fd = -1;
static dev_t g_stats_dev;
static ino_t g_stats_ino;

/* The descriptor, if it is still the file it was: a program that closed
 * it and opened something else at the same number gets stderr instead. */
int sfp_stats_fd(void)
{
    struct stat st;
    if (g_stats_fd < 0)
        return -1;
    if (sfp_raw_syscall(SYS_fstat, g_stats_fd, (long)&st, 0, 0, 0, 0) != 0 || st.st_dev != g_stats_dev ||
        st.st_ino != g_stats_ino)
        return 2;
    return g_stats_fd;
}

static void stats_remember(int fd)
{
    struct stat st;
    g_stats_fd = fd;
    if (fd >= 0 && sfp_raw_syscall(SYS_fstat, fd, (long)&st, 0, 0, 0, 0) == 0) {
        g_stats_dev = st.st_dev;
        g_stats_ino = st.st_ino;
    }
}

/* A descriptor far above the program's usual ones, close-on-exec. */
static int dup_high(int fd)
{
    static const int floors[] = {1000, 100, 10};
    for (size_t i = 0; i < sizeof(floors) / sizeof(floors[0]); i++) {
        long r = sfp_raw_syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floors[i], 0, 0, 0);
        if (r >= 0)
            return (int)r;
    }
    return -1;
}

static void stats_open(void)
{
    const char *file = sfp_opt_str(SFP_OPT_STATS_FILE);
    if (sfp_opt_explicit(SFP_OPT_STATS_FILE) && *file) {
        int fd = (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)file,
                                      O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600, 0, 0);
        if (fd < 0) {
            sfp_warn("cannot open the stats file %s: %s; the summary goes to stderr", file, sfp_errstr(fd));
        } else {
            int hi = dup_high(fd);
            if (hi >= 0) {
                sfp_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
                fd = hi;
            }
            stats_remember(fd);
            return;
        }
    } else if (!sfp_opt_val(SFP_OPT_SHOW_STATS)) {
        return;
    }
    stats_remember(dup_high(2));
}

/* The summary is built whole and written with one write(2), so that the
 * processes of a tree appending to one stats file never interleave. */
struct sumbuf {
    char *p;
    size_t n, cap;
};

static void sum_add(struct sumbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sum_add(struct sumbuf *b, const char *fmt, ...)
{
    if (!b->p)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->n += (size_t)n < b->cap - b->n ? (size_t)n : b->cap - b->n - 1;
}

static void track_summary(bool to_file, const char *how)
{
    uint64_t dur_ns = sfp_now_ns() - sfp_t0_ns;
    /* The mean is over the whole run and at least over the intervals
     * collected: so mean <= peak, the peak being the highest of the
     * intervals' rates over their real lengths. */
    uint64_t over_ns = dur_ns > g_span_ns ? dur_ns : g_span_ns;
    double secs = (double)dur_ns / 1e9, mib = (double)(g_total_pages << sf_page_shift) / 1048576.0;
    double page_mib = (double)sf_page_size / 1048576.0;
    double mean_mibs = over_ns ? mib / ((double)over_ns / 1e9) : 0.0;
    double peak_mibs = g_peak_rate * page_mib;
    if (to_file) {
        sfp_out_printf(g_out, "E\t%llu\t%llu\t%llu\t%llu\t%s\n", (unsigned long long)(dur_ns / 1000000),
                       (unsigned long long)g_seq, (unsigned long long)g_total_pages,
                       (unsigned long long)g_peak_pages, how);
        if (g_attr)
            sfp_attr_report(g_out->fd >= 0 && !g_out->failed ? g_out->fd : -1,
                            (int)sfp_opt_val(SFP_OPT_TOP), false);
        sfp_out_flush(g_out);
        return;
    }
    int sfd = sfp_stats_fd();
    if (sfd < 0)
        return;
    long top = (long)sfp_opt_val(SFP_OPT_TOP);
    struct sumbuf b = {NULL, 0, 4096 + (size_t)top * 256};
    b.p = sfp_malloc(b.cap);
    sf_stats st;
    sf_tracker_stats(sfp_tracker, &st);
    sum_add(&b,
            "snapfault: pid %d (%s), track mode, backend %s (%s), %.2f s, %llu intervals of %ld ms\n"
            "snapfault: dirtied %llu pages (%.1f MiB): mean %.1f MiB/s, peak %.1f MiB/s (interval %llu)\n"
            "snapfault: tracked now %.1f MiB in %llu ranges; %llu faults; collect mean %.0f us, "
            "max %.0f us; maps scan mean %.0f us\n",
            (int)g_pid, how, sf_backend_name(g_backend), sf_fault_mode_name(g_fault_mode), secs,
            (unsigned long long)g_seq, g_interval_ms, (unsigned long long)g_total_pages, mib, mean_mibs,
            peak_mibs, (unsigned long long)g_peak_seq, (double)st.tracked_bytes / 1048576.0,
            (unsigned long long)st.regions, (unsigned long long)st.faults,
            g_seq ? (double)g_collect_ns / (double)g_seq / 1000.0 : 0.0, (double)g_collect_max_ns / 1000.0,
            g_scans ? (double)g_scan_ns / (double)g_scans / 1000.0 : 0.0);
    if (g_thp_kept)
        sum_add(&b, "snapfault: %llu ranges with transparent huge pages left untracked (THP=keep), "
                    "%.1f MiB\n",
                (unsigned long long)g_thp_kept, (double)g_thp_kept_bytes / 1048576.0);
    struct sfp_label **v = sfp_malloc((sfp_nlabels ? sfp_nlabels : 1) * sizeof(*v));
    if (v) {
        size_t k = 0;
        for (size_t i = 0; i < sfp_nlabels; i++)
            if (sfp_labels[i].cum)
                v[k++] = &sfp_labels[i];
        qsort(v, k, sizeof(*v), cmp_label_cum);
        sum_add(&b, "snapfault: top mappings by pages dirtied:\n"
                    "snapfault: %12s %10s %11s %11s  %-5s %s\n",
                "pages", "MiB", "mean MiB/s", "peak MiB/s", "kind", "mapping");
        for (size_t i = 0; i < k && (long)i < top; i++)
            sum_add(&b, "snapfault: %12llu %10.1f %11.2f %11.1f  %-5s %s\n", (unsigned long long)v[i]->cum,
                    (double)v[i]->cum * page_mib,
                    over_ns ? (double)v[i]->cum * page_mib / ((double)over_ns / 1e9) : 0.0,
                    v[i]->peak_rate * page_mib, sfp_kind_names[v[i]->kind], v[i]->name);
        sfp_free(v);
    }
    if (b.p) {
        sfp_write_all(sfd, b.p, b.n);
        sfp_free(b.p);
    }
    if (g_attr)
        sfp_attr_report(sfd, (int)top, true);
    else if (sfp_opt_val(SFP_OPT_ATTRIBUTE))
        sfp_warn("write attribution needs a sync backend; %s is in use, no call stacks were sampled",
                 sf_backend_name(g_backend));
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
    return atomic_load(&g_bg_alive) != 0 && g_pid == (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
}

static void *bg_main(void *arg)
{
    void *r = bg_body(arg);
    atomic_store(&g_bg_alive, 0);
    if (g_mode == SFP_MODE_SNAPSHOT)
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
        poll(&pfd, 1, (int)g_interval_ms);
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
    uint64_t next_tick = sfp_now_ns() + (uint64_t)g_interval_ms * 1000000;
    while (!atomic_load(&g_stop)) {
        if (g_mode == SFP_MODE_SNAPSHOT)
            sfp_snap_serve_final();
        uint64_t now = sfp_now_ns();
        uint64_t due = next_tick < next_snap ? next_tick : next_snap;
        if (due > now) {
            struct pollfd pfd = {.fd = sfp_wake_fd[0], .events = POLLIN};
            uint64_t ms = (due - now + 999999) / 1000000;
            poll(&pfd, 1, ms > 60000 ? 60000 : (int)ms);
            drain_wake();
            if (atomic_load(&g_stop))
                break;
            if (g_mode == SFP_MODE_SNAPSHOT)
                sfp_snap_serve_final();
        }
        now = sfp_now_ns();
        bool tick = now >= next_tick;
        if (tick) {
            next_tick += (uint64_t)g_interval_ms * 1000000;
            if (next_tick < now)
                next_tick = now + (uint64_t)g_interval_ms * 1000000; /* we fell behind */
            pthread_mutex_lock(&g_lock);
            sfp_reconcile();
            if (g_mode == SFP_MODE_TRACK)
                track_interval();
            pthread_mutex_unlock(&g_lock);
        }
        if (g_mode == SFP_MODE_SNAPSHOT) {
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
    pthread_sigmask(SIG_SETMASK, &all, &old);
    atomic_store(&g_bg_alive, 1);
    int rc = sf__exempt_thread_create(&g_bg, NULL, bg_main, NULL); /* never stopped by a take */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
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
    if (g_mode == SFP_MODE_SNAPSHOT) {
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
    g_backend = sf_tracker_backend(sfp_tracker);
    g_fault_mode = sf_tracker_fault_mode(sfp_tracker);
    atomic_store(&sfp_prefault_needed,
                 g_fault_mode == SF_FAULTS_SIGNAL || g_fault_mode == SF_FAULTS_INTHREAD);
    if ((g_include & SFP_INC_STACKS) && atomic_load(&sfp_prefault_needed)) {
        sfp_warn_once(SFP_ONCE_STACKS, "thread stacks cannot be tracked with faults delivered as "
                                       "signals (%s); stacks left out", sf_backend_name(g_backend));
        g_include &= ~SFP_INC_STACKS;
    }
    char exe[256];
    exe_name(exe, sizeof(exe));
    const char *slash = strrchr(exe, '/');
    sfp_fmt(g_exe_base, sizeof(g_exe_base), "%s", slash ? slash + 1 : exe);
    sfp_fmt(g_exe_path, sizeof(g_exe_path), "%s", exe);
    g_attr = false;
    if (g_mode == SFP_MODE_TRACK && sfp_opt_val(SFP_OPT_ATTRIBUTE)) {
        if (!atomic_load(&sfp_prefault_needed))
            sfp_warn_once(SFP_ONCE_ATTR, "write attribution needs a sync backend; %s is in use, "
                                         "attribution is off", sf_backend_name(g_backend));
        else if (sfp_attr_start((int)sfp_opt_val(SFP_OPT_ATTRIBUTE_DEPTH)) == 0)
            g_attr = true;
    }
    sfp_t0_ns = sfp_now_ns();
    if (g_mode == SFP_MODE_TRACK) {
        const char *tmpl = sfp_opt_explicit(SFP_OPT_OUTPUT) ? sfp_opt_str(SFP_OPT_OUTPUT)
                                                            : "snapfault.%p.sft";
        g_out = sfp_calloc(1, sizeof(*g_out));
        int fd = g_out ? sfp_create_output(tmpl, g_out_path, sizeof(g_out_path)) : -ENOMEM;
        if (fd < 0) {
            sfp_warn_once(SFP_ONCE_OUTPUT, "cannot create %s: %s; tracking without records",
                          g_out_path[0] ? g_out_path : tmpl,
                          fd == -EINVAL ? "not a regular file (records go to a file or a directory)"
                                        : sfp_errstr(fd));
            if (g_out)
                g_out->failed = true;
        } else {
            g_out->fd = fd;
            track_header();
        }
    } else {
        sfp_snap_open();
        sfp_snap_trigger_install();
        sfp_snap_fatal_install();
    }
    sfp_reconcile();
    sfp_info("%s mode, backend %s (%s), interval %ld ms%s%s", g_mode == SFP_MODE_TRACK ? "track" : "snapshot",
             sf_backend_name(g_backend), sf_fault_mode_name(g_fault_mode), g_interval_ms,
             g_mode == SFP_MODE_TRACK ? ", records in " : "", g_mode == SFP_MODE_TRACK ? g_out_path : "");
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
        if (strncasecmp(*e, "SNAPFAULT_", 10) != 0)
            continue;
        const char *name = *e + 10, *eq = strchr(name, '=');
        if (!eq)
            continue;
        size_t n = (size_t)(eq - name);
        bool known = sfp_known_other_name(name, n) || (n == 5 && strncasecmp(name, "NOTED", 5) == 0);
        for (int o = 0; o < SFP_OPT_COUNT && !known; o++)
            known = strlen(sfp_option_table[o].name) == n && strncasecmp(name, sfp_option_table[o].name, n) == 0;
        if (known)
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
        if (sfp_opt_explicit((sfp_opt)o) && g_mode != SFP_MODE_OFF && !sfp_option_applies((sfp_opt)o, g_mode)) {
            sfp_warn("SNAPFAULT_%s has no effect in %s mode", sfp_option_table[o].name, modes[g_mode]);
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
    sf__init();
    g_pid = (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    /* secure_getenv semantics: a setuid or setgid program ignores the
     * environment, and then has nowhere safe to write: the preload stays
     * off there. */
    bool secure = getauxval(AT_SECURE) != 0;
    sfp_options_load(environ, secure);
    g_mode = secure ? SFP_MODE_OFF : (int)sfp_opt_val(SFP_OPT_MODE);
    g_include = (unsigned)sfp_opt_val(SFP_OPT_INCLUDE);
    g_interval_ms = (long)sfp_opt_val(SFP_OPT_INTERVAL);
    g_thp_keep = sfp_opt_val(SFP_OPT_THP) == SFP_THP_KEEP;
    if (!secure)
        user_notes();
    if (!sfp_opt_val(SFP_OPT_FOLLOW_EXEC))
        strip_preload_env();
    else if (g_mode != SFP_MODE_OFF) {
        save_env();
        g_follow = true;
    }
    if (g_mode == SFP_MODE_OFF) {
        atomic_store(&sfp_state, SFP_DISABLED);
        sfp_in_runtime--;
        return;
    }
    if (pipe2(sfp_wake_fd, O_CLOEXEC | O_NONBLOCK) < 0) {
        atomic_store(&sfp_state, SFP_DISABLED);
        sfp_in_runtime--;
        return;
    }
    stats_open();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    exclude_main_tls();
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
        g_pid != (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0))
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
    if (g_mode == SFP_MODE_TRACK) {
        sfp_reconcile();
        track_interval();
        track_summary(true, how);
        track_summary(false, how);
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
    if (g_mode == SFP_MODE_SNAPSHOT && sfp_snap_exit_image() && !sfp_in_runtime && g_bg_running &&
        sfp_bg_alive() && g_pid == (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0) &&
        (atomic_load(&sfp_state) == SFP_READY || g_child_pending))
        sfp_snap_final_wait(0);
    sfp_in_runtime++;
    if (g_bg_running && g_pid == (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0)) {
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
    if (sfp_tracker)
        pthread_mutex_lock(&sfp_tracker->lock);
    pthread_mutex_lock(&sf__regions_lock);
    sfp_heap_atfork_prepare();
}

static void fork_parent(void)
{
    sfp_heap_atfork_parent();
    pthread_mutex_unlock(&sf__regions_lock);
    if (sfp_tracker)
        pthread_mutex_unlock(&sfp_tracker->lock);
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
    if (g_backend == SF_BACKEND_MPROTECT) {
        size_t len;
        char *buf = sfp_maps_read(&len);
        char *cur = buf, *end = buf ? buf + len : NULL;
        struct sfp_mapline ml;
        while (buf && sfp_maps_next(&cur, end, &ml)) {
            if (!keeps_tracked(&ml))
                continue;
            for (size_t i = seg_lower_bound(ml.start); i < g_nsegs && g_segs[i].start < ml.end; i++) {
                uintptr_t a = g_segs[i].start > ml.start ? g_segs[i].start : ml.start;
                uintptr_t e = g_segs[i].end < ml.end ? g_segs[i].end : ml.end;
                sfp_real_mprotect((void *)a, e - a, PROT_READ | PROT_WRITE);
            }
        }
        sfp_free(buf);
    }
    sf_tracker_destroy(sfp_tracker);
    sfp_tracker = NULL;
    /* Fresh model: the parent's labels and counts are the parent's. */
    g_nsegs = 0;
    for (size_t i = 0; i < sfp_nlabels; i++)
        sfp_labels[i].nsegs = 0;
    sfp_nlabels = 0;
    g_heap_label = g_data_label = UINT32_MAX;
    g_other_label = SIZE_MAX;
    g_nrefused = 0;
    g_nprev = 0;
    g_first_scan = true;
    g_seq = g_total_pages = g_peak_pages = g_peak_seq = g_collect_ns = g_collect_max_ns = 0;
    g_last_collect_ns = g_span_ns = 0;
    g_peak_rate = 0;
    g_thp_kept = g_thp_kept_bytes = 0;
    g_nthp_noted = 0;
    g_scans = g_scan_ns = 0;
    g_out_path[0] = 0;
}

static void fork_child(void)
{
    sfp_heap_atfork_child();
    pthread_mutex_init(&sf__regions_lock, NULL);
    if (sfp_tracker)
        pthread_mutex_init(&sfp_tracker->lock, NULL);
    pthread_mutex_init(&g_lock, NULL);
    g_pid = (pid_t)sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    g_bg_running = false;
    atomic_store(&g_bg_alive, 0); /* the parent's thread is not ours */
    sfp_in_runtime--;
    if (atomic_load(&sfp_state) != SFP_READY)
        return;
    /* The parent's records are not ours to write. */
    if (g_out) {
        if (g_out->fd >= 0 && !g_out->failed)
            sfp_raw_syscall(SYS_close, g_out->fd, 0, 0, 0, 0, 0);
        g_out->fd = -1;
        g_out->failed = true;
        g_out->n = 0;
    }
    sfp_snap_child();
    if (sfp_wake_fd[0] >= 0) {
        sfp_raw_syscall(SYS_close, sfp_wake_fd[0], 0, 0, 0, 0, 0);
        sfp_raw_syscall(SYS_close, sfp_wake_fd[1], 0, 0, 0, 0, 0);
    }
    if (pipe2(sfp_wake_fd, O_CLOEXEC | O_NONBLOCK) < 0)
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
