/* model.c - the model of tracked mappings: labels and segments, the cut of
 * requests along the library's regions, and the interposers' entry points. */
#include "runtime.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

const char *const sfp_kind_names[SFP_K_COUNT] = {"heap", "anon", "data", "stack"};

struct sfp_label *sfp_labels;
size_t sfp_nlabels;

/* ------------------------------------------------------------------------
 * Labels and segments.  segs is what the runtime asked the library to
 * track, sorted and disjoint; each segment names its label.
 * ------------------------------------------------------------------------ */
struct sfp_seg *sfp_segs;
size_t sfp_nsegs;
static size_t g_segs_cap;
static size_t g_labels_cap;

/* Ranges tracking failed on (file-backed under uffd, EBUSY, ...): not
 * tried again until they change. */
struct refused {
    uintptr_t start, end;
};
static struct refused *g_refused;
static size_t g_nrefused, g_refused_cap;

uint32_t sfp_label_new(enum sfp_kind kind, const char *name, uintptr_t lo, uintptr_t hi)
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

size_t sfp_seg_lower_bound(uintptr_t addr)
{
    /* first segment whose end is above addr */
    size_t lo = 0, hi = sfp_nsegs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sfp_segs[mid].end <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct sfp_label *sfp_label_at(uintptr_t addr)
{
    size_t i = sfp_seg_lower_bound(addr);
    if (i < sfp_nsegs && sfp_segs[i].start <= addr)
        return &sfp_labels[sfp_segs[i].label];
    return NULL;
}

static int segs_insert(uintptr_t start, uintptr_t end, uint32_t label)
{
    size_t i = sfp_seg_lower_bound(start);
    /* merge with the previous one when contiguous with the same label */
    if (i > 0 && sfp_segs[i - 1].end == start && sfp_segs[i - 1].label == label) {
        sfp_segs[i - 1].end = end;
        if (i < sfp_nsegs && sfp_segs[i].start == end && sfp_segs[i].label == label) {
            sfp_segs[i - 1].end = sfp_segs[i].end;
            memmove(&sfp_segs[i], &sfp_segs[i + 1], (sfp_nsegs - i - 1) * sizeof(*sfp_segs));
            sfp_nsegs--;
            sfp_labels[label].nsegs--;
        }
        return 0;
    }
    if (i < sfp_nsegs && sfp_segs[i].start == end && sfp_segs[i].label == label) {
        sfp_segs[i].start = start;
        return 0;
    }
    if (sfp_nsegs == g_segs_cap) {
        size_t cap = g_segs_cap ? 2 * g_segs_cap : 256;
        struct sfp_seg *ns = sfp_realloc(sfp_segs, cap * sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        sfp_segs = ns;
        g_segs_cap = cap;
    }
    memmove(&sfp_segs[i + 1], &sfp_segs[i], (sfp_nsegs - i) * sizeof(*sfp_segs));
    sfp_segs[i] = (struct sfp_seg){start, end, label};
    sfp_nsegs++;
    sfp_labels[label].nsegs++;
    return 0;
}

/* Removes [start, end) from the segments (splitting where needed). */
static void segs_remove(uintptr_t start, uintptr_t end)
{
    size_t i = sfp_seg_lower_bound(start);
    while (i < sfp_nsegs && sfp_segs[i].start < end) {
        struct sfp_seg *s = &sfp_segs[i];
        if (start <= s->start && s->end <= end) {
            sfp_labels[s->label].nsegs--;
            memmove(s, s + 1, (sfp_nsegs - i - 1) * sizeof(*s));
            sfp_nsegs--;
            continue;
        }
        if (s->start < start && end < s->end) {
            struct sfp_seg hi = {end, s->end, s->label};
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

bool sfp_refused_overlaps(uintptr_t start, uintptr_t end)
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

/* A forked child starts a fresh model: the parent's labels are the parent's. */
void sfp_model_forget(void)
{
    sfp_nsegs = 0;
    for (size_t i = 0; i < sfp_nlabels; i++)
        sfp_labels[i].nsegs = 0;
    sfp_nlabels = 0;
    g_nrefused = 0;
}

/* ------------------------------------------------------------------------
 * The library's view.  sf_track of a range overlapping a region gives
 * -EEXIST unless it revives GONE pages of exactly one region; sf_untrack
 * needs every page tracked.  These walk the library's runs (sf_embed.h),
 * which never cross a region's bound, to cut requests along regions.
 * ------------------------------------------------------------------------ */
struct runs_of {
    bool want_tracked;
    int (*fn)(uintptr_t, uintptr_t);
    int err;
};

static int run_cb(uintptr_t a, uintptr_t e, sf_embed_run kind, void *arg)
{
    struct runs_of *w = arg;
    if ((kind == SF_EMBED_RUN_TRACKED) == w->want_tracked) {
        int rc = w->fn(a, e);
        w->err = w->err ? w->err : rc;
    }
    return 0;
}

/* Calls fn on the runs of [start, end) whose pages are (want_tracked) or
 * are not (!want_tracked) tracked by the library. */
static int walk_runs(uintptr_t start, uintptr_t end, bool want_tracked,
                     int (*fn)(uintptr_t, uintptr_t))
{
    struct runs_of w = {want_tracked, fn, 0};
    sf__embed_runs(start, end, run_cb, &w);
    return w.err;
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
    if (rc < 0 && sfp_backend == SF_BACKEND_MPROTECT) {
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
void sfp_seg_track(uintptr_t start, uintptr_t end, uint32_t label)
{
    if (label == UINT32_MAX || start >= end)
        return;
    uintptr_t pos = start;
    size_t i = sfp_seg_lower_bound(start);
    while (pos < end) {
        uintptr_t gap_end = end;
        if (i < sfp_nsegs && sfp_segs[i].start <= pos) {
            pos = sfp_segs[i].end;
            i++;
            continue;
        }
        if (i < sfp_nsegs && sfp_segs[i].start < end)
            gap_end = sfp_segs[i].start;
        int rc = lib_track(pos, gap_end);
        if (rc == 0) {
            segs_insert(pos, gap_end, label);
            i = sfp_seg_lower_bound(gap_end);
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
            i = sfp_seg_lower_bound(gap_end);
        }
        pos = gap_end;
    }
}

/* Untracks what the runtime tracks in [start, end).  On return no snapshot
 * reader is still copying from the range, so the caller may unmap it. */
void sfp_seg_untrack(uintptr_t start, uintptr_t end)
{
    size_t i = sfp_seg_lower_bound(start);
    bool any = false;
    while (i < sfp_nsegs && sfp_segs[i].start < end) {
        uintptr_t a = sfp_segs[i].start > start ? sfp_segs[i].start : start;
        uintptr_t e = sfp_segs[i].end < end ? sfp_segs[i].end : end;
        lib_untrack(a, e);
        segs_remove(a, e);
        any = true;
        i = sfp_seg_lower_bound(e);
    }
    refused_forget(start, end);
    /* A partial sf_untrack marks pages GONE without waiting for readers
     * (an image writer may have checked a page just before and still be
     * copying it): wait them out here, or the unmap that follows would
     * fault the writer. */
    if (any)
        sf__embed_grace_wait();
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
    sfp_seg_untrack(page_down(start), page_up(end));
}

void sfp_track_new(uintptr_t start, uintptr_t end, int prot, int flags)
{
    if (!(sfp_include & SFP_INC_ANON) || !prot_trackable(prot) || !(flags & MAP_PRIVATE) ||
        !(flags & MAP_ANONYMOUS))
        return;
    if ((flags & (MAP_STACK | MAP_GROWSDOWN)) && !(sfp_include & SFP_INC_STACKS))
        return;
    start = page_down(start);
    end = page_up(end);
    if (sfp_own_overlaps(start, end))
        return;
    /* THP=keep: a mapping that can hold a huge page is left to the
     * scanner, which sees whether the program asked for huge pages
     * (MADV_HUGEPAGE) or got them; armed, its huge pages would split. */
    if (sfp_thp_keep && sfp_thp_possible(start, end))
        return;
    char name[40];
    sfp_fmt(name, sizeof(name), "anon@%lx", (unsigned long)start);
    sfp_seg_track(start, end, sfp_label_new(SFP_K_ANON, name, start, end));
}

void sfp_untrack_save(uintptr_t start, uintptr_t end, struct sfp_saved *sv)
{
    start = page_down(start);
    end = page_up(end);
    sv->n = 0;
    sv->overflow = false;
    size_t i = sfp_seg_lower_bound(start);
    for (; i < sfp_nsegs && sfp_segs[i].start < end; i++) {
        if (sv->n == sizeof(sv->start) / sizeof(sv->start[0])) {
            sv->overflow = true;
            break;
        }
        sv->start[sv->n] = sfp_segs[i].start > start ? sfp_segs[i].start : start;
        sv->end[sv->n] = sfp_segs[i].end < end ? sfp_segs[i].end : end;
        sv->label[sv->n] = sfp_segs[i].label;
        sv->n++;
    }
    sfp_seg_untrack(start, end);
}

void sfp_retrack(const struct sfp_saved *sv, int prot)
{
    if (!prot_trackable(prot))
        return;
    for (size_t i = 0; i < sv->n; i++)
        sfp_seg_track(sv->start[i], sv->end[i], sv->label[i]);
    /* Beyond the saved pieces (more than fit): the scanner adopts them. */
}

void sfp_thread_created(uintptr_t lo, uintptr_t hi)
{
    sfp_in_runtime++; /* the registries' locks: see fatal_handler */
    if (!(sfp_include & SFP_INC_STACKS) || atomic_load(&sfp_prefault_needed) ||
        atomic_load(&sfp_state) != SFP_READY) {
        sfp_excl_add(lo, hi);
        sfp_runtime_leave();
        return;
    }
    sfp_lock();
    char name[48];
    sfp_fmt(name, sizeof(name), "stack@%lx", (unsigned long)lo);
    /* the guard page below the stack is not writable: skip it */
    sfp_seg_track(lo + sf_page_size, hi, sfp_label_new(SFP_K_STACK, name, lo, hi));
    sfp_unlock();
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
    sfp_lock();
    sfp_seg_untrack(lo, hi);
    sfp_unlock();
    sfp_runtime_leave();
}

/* The main thread's TCB and static TLS (errno, the library's TLS) were
 * allocated by the loader in some anonymous mapping: snapfault's own fault
 * handler writes there. */
void sfp_exclude_main_tls(void)
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
