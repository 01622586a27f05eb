/* reconcile.c - the model kept in step with /proc/self/maps: mappings made
 * or dropped where the interposers cannot see, huge pages left alone. */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>

static uint32_t g_heap_label = UINT32_MAX, g_data_label = UINT32_MAX;

/* ------------------------------------------------------------------------
 * Transparent huge pages.  Arming a page inside a huge page (write-protect
 * or mprotect of part of it) splits the huge page on the next write, with
 * every backend: tracking is 4 KiB-grained and the program loses its huge
 * pages.  With SNAPFAULT_THP=keep, ranges the program asked huge pages for
 * (MADV_HUGEPAGE) or already holds huge pages in are left untracked, and
 * the record says so (a W line per range).
 * ------------------------------------------------------------------------ */
#define SFP_HUGE (2u << 20)
bool sfp_thp_keep;
uint64_t sfp_thp_kept, sfp_thp_kept_bytes;
static struct sfp_thp_range *g_thp;
static size_t g_nthp;
static uintptr_t *g_thp_noted; /* starts of the ranges said already */
static size_t g_nthp_noted, g_thp_noted_cap;

bool sfp_thp_possible(uintptr_t start, uintptr_t end)
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
    sfp_thp_kept++;
    sfp_thp_kept_bytes += r->end - r->start;
    sfp_track_note("huge pages kept (THP=keep): %lx-%lx (%lu kB in huge pages%s) left untracked",
               (unsigned long)r->start, (unsigned long)r->end, r->huge_kb,
               r->marked ? ", MADV_HUGEPAGE" : "");
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

char sfp_exe_base[64] = "program";
char sfp_exe_path[160] = "program";

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
        return (sfp_include & SFP_INC_HEAP) ? SFP_K_HEAP : -1;
    }
    const struct sfp_object *obj = object_of(ml->start, ml->end);
    if (obj) {
        /* Writable segments of loaded objects: only the program's own.
         * Libraries' data (libc, the loader, ...) is written from signal
         * handlers and by snapfault itself. */
        if (!obj->main || !(sfp_include & SFP_INC_DATA))
            return -1;
        /* uffd write-protect works on anonymous memory only: the
         * file-backed .data needs the mprotect backend; .bss beyond the
         * file is anonymous and always works. */
        if (ml->inode && sfp_backend != SF_BACKEND_MPROTECT)
            return -1;
        sfp_fmt(name, cap, "%s", ml->inode ? path : prev && prev->inode && prev->end == ml->start ? prev->path
                                                                                                : sfp_exe_path);
        return SFP_K_DATA;
    }
    if (strncmp(path, "[anon:", 6) == 0 || (!*path && !ml->inode)) {
        if (!(sfp_include & SFP_INC_ANON))
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
bool sfp_keeps_tracked(const struct sfp_mapline *ml)
{
    if (ml->perms[3] != 'p' || ml->perms[2] == 'x' || ml->perms[0] != 'r')
        return false;
    return ml->perms[1] == 'w' || sfp_backend == SF_BACKEND_MPROTECT;
}

/* Whether the line keeps the tracked pages [pos, min(e, its end)) valid.
 * With the mprotect backend a writable line over a page the tracker holds
 * protected is a mapping libc replaced where no interposer sees it (the
 * heap trimmed and grown again by its internal brk, a block unmapped and
 * mapped again): its writes raise no fault, so it is dropped here and
 * adopted again afresh, whole in the next image. */
static bool line_keeps(const struct sfp_mapline *ml, uintptr_t pos, uintptr_t e)
{
    if (!sfp_keeps_tracked(ml))
        return false;
    if (sfp_backend != SF_BACKEND_MPROTECT || ml->perms[1] != 'w')
        return true;
    return !sf__embed_any_armed(pos, ml->end < e ? ml->end : e);
}

/* Detaching a range whose mapping was replaced behind our back must not
 * give the new mapping read-write protection (mprotect backend): see
 * sf__os_mprotect in os_preload.c. */
__thread uintptr_t sfp_stale_lo __attribute__((tls_model("initial-exec")));
__thread uintptr_t sfp_stale_hi __attribute__((tls_model("initial-exec")));

static void drop_stale(uintptr_t a, uintptr_t e)
{
    sfp_info("dropping %#lx-%#lx: no longer mapped as tracked memory", (unsigned long)a, (unsigned long)e);
    sfp_stale_lo = a;
    sfp_stale_hi = e;
    sfp_seg_untrack(a, e);
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
            sfp_seg_track(pos, hs < end ? hs : end, label);
        if (he > pos)
            pos = he;
    }
    if (pos < end)
        sfp_seg_track(pos, end, label);
}

/* With the uffd-sync backend a mapping replaced behind the runtime's
 * back (the heap trimmed and grown again by libc's internal brk) is not
 * registered: its writes raise no fault, and the tracker still holds its
 * pages protected and clean, so images would keep their old content.  The
 * kernel's page tables tell (no uffd-wp bit on a written page): such runs
 * are dropped, and adopted again afresh by pass 2 (whole in the next
 * image).  One page-table walk of the tracked memory per scan. */
static void drop_unseen_writes(void)
{
    if (!sfp_tracker || sfp_backend != SF_BACKEND_UFFD_SYNC)
        return;
    for (int round = 0; round < 16; round++) {
        struct sf_embed_span runs[64];
        long n = sf__embed_unseen_writes(sfp_tracker, runs, sizeof(runs) / sizeof(runs[0]));
        if (n <= 0)
            return;
        for (long i = 0; i < n; i++)
            drop_stale(runs[i].start, runs[i].end);
        if (n < (long)(sizeof(runs) / sizeof(runs[0])))
            return;
    }
}

uint64_t sfp_scans, sfp_scan_ns; /* reconciles with /proc/self/maps */

static void reconcile_body(void);

void sfp_reconcile(void)
{
    uint64_t t0 = sfp_now_ns();
    reconcile_body();
    sfp_scan_ns += sfp_now_ns() - t0;
    sfp_scans++;
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
    if (sfp_thp_keep) {
        sfp_free(g_thp);
        g_nthp = sfp_thp_ranges(&g_thp);
        /* what is tracked and now backed by huge pages (or marked for
         * them) is let go, before the next write splits them */
        for (size_t t = 0; t < g_nthp; t++) {
            size_t i = sfp_seg_lower_bound(g_thp[t].start);
            if (i < sfp_nsegs && sfp_segs[i].start < g_thp[t].end) {
                sfp_seg_untrack(g_thp[t].start, g_thp[t].end);
                thp_note(&g_thp[t]);
            }
        }
    }

    /* Pass 0 (uffd-sync): tracked pages written without a fault, in a
     * mapping libc replaced where no interposer sees it (see
     * drop_unseen_writes); pass 1 finds the mprotect backend's. */
    drop_unseen_writes();

    /* Pass 1: parts of segments that no line keeps valid any more (unmapped
     * or re-protected where the interposers could not see) are dropped. */
    struct drop *drops = NULL;
    size_t nd = 0, dcap = 0;
    size_t li = 0;
    for (size_t si = 0; si < sfp_nsegs; si++) {
        uintptr_t pos = sfp_segs[si].start, e = sfp_segs[si].end;
        while (li < nl && lines[li].end <= pos)
            li++;
        for (size_t k = li; pos < e; k++) {
            uintptr_t hole_end = e;
            if (k < nl && lines[k].start < e) {
                if (lines[k].start <= pos) {
                    if (line_keeps(&lines[k], pos, e)) {
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
        if (sfp_refused_overlaps(m->start, m->end))
            continue;
        const struct sfp_thp_range *huge = sfp_thp_keep ? thp_overlap(m->start, m->end) : NULL;
        if (huge) {
            thp_note(huge);
            continue;
        }
        size_t i = sfp_seg_lower_bound(m->start);
        if (i < sfp_nsegs && sfp_segs[i].start <= m->start && sfp_segs[i].end >= m->end)
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
                g_heap_label = sfp_label_new(SFP_K_HEAP, name, m->start, m->end);
            label = g_heap_label;
        } else if (kind == SFP_K_DATA) {
            if (g_data_label == UINT32_MAX)
                g_data_label = sfp_label_new(SFP_K_DATA, name, m->start, m->end);
            label = g_data_label;
        } else {
            /* an anonymous mapping that grew keeps its label */
            struct sfp_label *l = i < sfp_nsegs && sfp_segs[i].start < m->end ? &sfp_labels[sfp_segs[i].label]
                                                                        : NULL;
            label = l ? (uint32_t)(l - sfp_labels) : sfp_label_new((enum sfp_kind)kind, name, m->start, m->end);
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

/* A forked child: the parent's mappings, counts and notes are the parent's. */
void sfp_reconcile_forget(void)
{
    g_heap_label = g_data_label = UINT32_MAX;
    g_nprev = 0;
    g_first_scan = true;
    sfp_thp_kept = sfp_thp_kept_bytes = 0;
    g_nthp_noted = 0;
    sfp_scans = sfp_scan_ns = 0;
}

/* Tracked ranges unmapped since the last scan, or replaced behind the
 * runtime's back by an identical-looking mapping (libc's internal munmap
 * then mmap at the same address, its heap trimmed and grown again), make
 * collects and takes fail: the uffd backends cannot write-protect what is
 * no longer registered with the tracker's userfaultfd ("uw" in smaps'
 * VmFlags), mprotect cannot protect what is not mapped (libc trimmed the
 * heap between the scan and the take).  This runs only after such a
 * failure.  Returns the number of ranges dropped. */
size_t sfp_drop_unregistered(void)
{
    bool uffd = sfp_backend == SF_BACKEND_UFFD_ASYNC || sfp_backend == SF_BACKEND_UFFD_SYNC;
    size_t n;
    char *buf = sfp_proc_read("/proc/self/smaps", &n);
    if (!buf)
        return 0;
    /* The good VMAs (see below), in address order. */
    struct drop *good = NULL;
    size_t ng = 0, gcap = 0;
    uintptr_t vs = 0, ve = 0;
    for (char *line = buf; line && *line;) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = 0;
        bool vma = (line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f');
        if (vma) {
            char *p = line;
            struct sfp_mapline ml;
            char *end = line + strlen(line);
            vs = ve = 0;
            if (sfp_maps_next(&p, end, &ml)) {
                vs = ml.start;
                ve = ml.end;
            }
        }
        /* a VMA is good when it is registered (uffd) or mapped at all */
        if (uffd ? strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " uw") : vma) {
            if (ve > vs) {
                if (ng == gcap) {
                    gcap = gcap ? 2 * gcap : 64;
                    struct drop *g2 = sfp_realloc(good, gcap * sizeof(*g2));
                    if (!g2)
                        break;
                    good = g2;
                }
                good[ng++] = (struct drop){vs, ve};
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    /* Tracked pieces outside those (replaced, or unmapped since the last
     * scan) are dropped. */
    struct drop *drops = NULL;
    size_t nd = 0, dcap = 0, gi = 0;
    for (size_t si = 0; si < sfp_nsegs; si++) {
        uintptr_t pos = sfp_segs[si].start, e = sfp_segs[si].end;
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
        sfp_info("dropped %zu tracked ranges whose mappings were replaced or unmapped", nd);
    return nd;
}
