/* sf_mech.c - snapfault's side of every scenario: struct mech implemented
 * with only the public API of include/snapfault.h (no internals). */
#include "sfbench.h"

#include <stdlib.h>
#include <string.h>

#include <snapfault.h>

/* "sf-[snap-]<backend>": snap- adds SF_OPT_SNAPSHOTS and makes arm/disarm a
 * take/release; the uffd-sync suffixes pin the fault delivery mode. */
static const struct {
    const char *name;
    sf_backend backend;
    unsigned flags;
} sf_table[] = {
    {"auto", SF_BACKEND_AUTO, 0},
    {"uffd-async", SF_BACKEND_UFFD_ASYNC, 0},
    {"uffd-sync", SF_BACKEND_UFFD_SYNC, 0},
    {"uffd-sync-inthread", SF_BACKEND_UFFD_SYNC, SF_OPT_INTHREAD_FAULTS},
    {"uffd-sync-handler", SF_BACKEND_UFFD_SYNC, SF_OPT_HANDLER_THREADS},
    {"mprotect", SF_BACKEND_MPROTECT, 0},
    {"soft-dirty", SF_BACKEND_SOFTDIRTY, 0},
};

struct sf_priv {
    sf_options opt;
    int snap;
    sf_tracker *t;
    sf_snapshot *s;                      /* the newest snapshot (ring[n - 1]) */
    sf_snapshot *ring[SF_MAX_SNAPSHOTS]; /* live snapshots, oldest first */
    int n;
};

const char *sf_side_status(void)
{
    return "linked";
}

void sf_side_probe(void)
{
    sf_caps c;
    int rc = sf_probe(&c);
    if (rc) {
        result("scenario=sfprobe status=error err=%d", rc);
        return;
    }
    char line[1024], mode[96];
    int l = snprintf(line, sizeof line,
                     "scenario=sfprobe status=ok auto_tracking=%s auto_snapshots=%s sync_mode=\"%s\"",
                     sf_backend_name(c.auto_tracking), sf_backend_name(c.auto_snapshots),
                     quote_safe(sf_fault_mode_name(c.sync_mode), mode, sizeof mode));
    for (int b = 1; b < SF_BACKEND_COUNT && l > 0 && (size_t)l < sizeof line; b++)
        l += snprintf(line + l, sizeof line - (size_t)l, " ok_%s=%d", sf_backend_name((sf_backend)b),
                      c.backend_ok[b] == 0);
    result("%s", line);
}

static void set_why(struct mech *m, const char *what, int rc)
{
    snprintf(m->why, sizeof m->why, "%s: %s", what, sf_strerror(rc));
}

static int sf_setup(struct mech *m)
{
    struct sf_priv *p = m->priv;
    p->opt.store_limit = m->store_limit;
    /* an engine may hold the tracked size once (a mirror's shadow) plus the
     * versions of the live snapshots; a full-copy engine one copy per live
     * snapshot: the limit must not be what a scenario measures */
    if ((m->flags & MECH_ENGINE) && !m->store_limit) {
        double k = 2.5 > m->live + 1.5 ? 2.5 : m->live + 1.5;
        p->opt.store_limit = (size_t)((double)m->len * k);
    }
    int rc = sf_tracker_create(&p->t, &p->opt);
    if (rc) {
        set_why(m, "sf_tracker_create", rc);
        /* sf_probe says why a backend is unusable; append that to the row */
        sf_caps caps;
        if (rc == -ENOTSUP && sf_probe(&caps) == 0) {
            size_t l = strlen(m->why);
            if (p->opt.backend != SF_BACKEND_AUTO && caps.why[p->opt.backend][0])
                snprintf(m->why + l, sizeof m->why - l, " (%s)", caps.why[p->opt.backend]);
            else if (p->opt.backend == SF_BACKEND_UFFD_SYNC && caps.sync_mode_why[0])
                snprintf(m->why + l, sizeof m->why - l, " (%s)", caps.sync_mode_why);
        }
        p->t = NULL;
        return rc;
    }
    rc = sf_track(p->t, m->base, m->len);
    if (rc)
        set_why(m, "sf_track", rc);
    return rc;
}

/* Keeps the m->live newest earlier snapshots, releases older ones. */
static void sf_release_old(struct mech *m)
{
    struct sf_priv *p = m->priv;
    int keep = m->live < SF_MAX_SNAPSHOTS - 1 ? m->live : SF_MAX_SNAPSHOTS - 1;
    while (p->snap && p->n > keep) {
        sf_snapshot_release(p->ring[0]);
        memmove(p->ring, p->ring + 1, (size_t)(p->n - 1) * sizeof p->ring[0]);
        p->n--;
    }
    p->s = p->n ? p->ring[p->n - 1] : NULL;
}

static int sf_arm(struct mech *m)
{
    struct sf_priv *p = m->priv;
    int rc;
    if (p->snap) {
        sf_release_old(m);
        sf_snapshot *s;
        rc = sf_snapshot_take(p->t, &s);
        if (rc) {
            set_why(m, "sf_snapshot_take", rc);
            return rc;
        }
        p->ring[p->n++] = p->s = s;
        return 0;
    }
    rc = sf_collect(p->t, SF_COLLECT_RESET, NULL, NULL);
    if (rc < 0)
        set_why(m, "sf_collect", rc);
    return rc < 0 ? rc : 0;
}

static int sf_disarm(struct mech *m)
{
    struct sf_priv *p = m->priv;
    while (p->snap && p->n > 0)
        sf_snapshot_release(p->ring[--p->n]);
    p->s = NULL;
    return 0;
}

/* A consumer that receives every run, as a real one would (the raw
 * PAGEMAP_SCAN baseline also hands back its vector). */
static int count_run(void *addr, size_t len, void *arg)
{
    (void)addr;
    *(long *)arg += (long)(len >> PAGE_SHIFT_4K);
    return 0;
}

static long sf_collect_reset(struct mech *m)
{
    struct sf_priv *p = m->priv;
    long pages = 0;
    int rc = sf_collect(p->t, SF_COLLECT_RESET, count_run, &pages);
    if (rc < 0) {
        set_why(m, "sf_collect", rc);
        return rc;
    }
    return pages;
}

static int sf_restore(struct mech *m)
{
    struct sf_priv *p = m->priv;
    int rc = sf_snapshot_restore(p->s);
    if (rc < 0)
        set_why(m, "sf_snapshot_restore", rc);
    return rc;
}

static int sf_write_image(struct mech *m, int fd)
{
    struct sf_priv *p = m->priv;
    int rc = sf_snapshot_write(p->s, fd);
    if (rc < 0)
        set_why(m, "sf_snapshot_write", rc);
    return rc;
}

/* sf_stats members newer than this bench, found by bench/meson.build
 * (cc.has_member) and printed when the library has them. */
static void stats_more(const sf_stats *st, char *buf, size_t n)
{
    size_t l = 0;
    buf[0] = 0;
#define MORE(f)                                                                   \
    if (l < n)                                                                    \
        l += (size_t)snprintf(buf + l, n - l, " sf_" #f "=%llu", (unsigned long long)st->f);
#ifdef SFB_STATS_MORE
    SFB_STATS_MORE
#endif
#undef MORE
    (void)st;
    (void)l;
}

static void sf_extra(struct mech *m, char *buf, size_t n)
{
    struct sf_priv *p = m->priv;
    sf_stats st;
    if (!p->t || sf_tracker_stats(p->t, &st) != 0) {
        if (n)
            buf[0] = 0;
        return;
    }
    char mode[96], more[256];
    stats_more(&st, more, sizeof more);
#ifdef SFB_HAVE_STAT_ENGINE
    size_t ml = strlen(more);
    const char *en = sf_engine_name(st.engine);
    snprintf(more + ml, sizeof more - ml, " engine=%s", en ? en : "?");
#endif
    /* names may contain spaces ("handler threads"): quoted for the driver */
    snprintf(buf, n,
             " backend=%s fault_mode=\"%s\" sf_faults=%llu sf_spurious=%llu sf_unprotected=%llu"
             " sf_copies=%llu sf_degraded=%llu sf_vma_estimate=%llu sf_store_bytes=%llu"
             " sf_metadata_bytes=%llu%s",
             sf_backend_name(st.backend),
             quote_safe(sf_fault_mode_name(st.fault_mode), mode, sizeof mode),
             (unsigned long long)st.faults, (unsigned long long)st.spurious,
             (unsigned long long)st.pages_unprotected, (unsigned long long)st.copies,
             (unsigned long long)st.degraded, (unsigned long long)st.vma_estimate,
             (unsigned long long)st.store_bytes, (unsigned long long)st.metadata_bytes, more);
}

static int sf_memory(struct mech *m, uint64_t *metadata, uint64_t *store, uint64_t *copies)
{
    struct sf_priv *p = m->priv;
    sf_stats st;
    int rc = sf_tracker_stats(p->t, &st);
    if (rc)
        return rc;
    *metadata = st.metadata_bytes;
    *store = st.store_bytes;
    *copies = st.copies;
    return 0;
}

static int sf_stats_op(struct mech *m, struct mech_stats *out)
{
    struct sf_priv *p = m->priv;
    sf_stats st;
    int rc = p->t ? sf_tracker_stats(p->t, &st) : -EINVAL;
    if (rc)
        return rc;
    out->tracked_bytes = st.tracked_bytes;
    out->store_bytes = st.store_bytes;
    out->store_limit = st.store_limit;
    out->metadata_bytes = st.metadata_bytes;
    out->copies = st.copies;
    out->snapshots_live = st.snapshots_live;
#ifdef SFB_HAVE_STAT_PRECOPIED
    out->has_precopy = 1;
    out->precopied_pages = st.precopied;
#else
    out->has_precopy = 0;
    out->precopied_pages = 0;
#endif
    stats_more(&st, out->more, sizeof out->more);
    return 0;
}

static void sf_teardown(struct mech *m)
{
    struct sf_priv *p = m->priv;
    if (!p)
        return;
    sf_disarm(m);
    sf_tracker_destroy(p->t);
    free(p);
    m->priv = NULL;
}

static const struct mech_ops sf_tracking_ops = {
    .setup = sf_setup,
    .arm = sf_arm,
    .disarm = sf_disarm,
    .collect = sf_collect_reset,
    .extra = sf_extra,
    .memory = sf_memory,
    .stats = sf_stats_op,
    .teardown = sf_teardown,
};

static const struct mech_ops sf_snapshot_ops = {
    .setup = sf_setup,
    .arm = sf_arm,
    .disarm = sf_disarm,
    .release_old = sf_release_old,
    .collect = sf_collect_reset,
    .restore = sf_restore,
    .write_image = sf_write_image,
    .extra = sf_extra,
    .memory = sf_memory,
    .stats = sf_stats_op,
    .teardown = sf_teardown,
};

/* The one place that says how each snapshot engine is asked for, through
 * the public options only: mirror = explicit uffd-async with snapshots
 * (kernel-resolved writes, a shadow updated at each take); COW = the sync
 * backends; auto = what SF_BACKEND_AUTO picks for snapshots.  0, or -ENOENT
 * for a name that is not an engine. */
static int engine_options(const char *engine, sf_options *o)
{
    enum { E_AUTO, E_COW, E_MIRROR };
    static const struct {
        const char *name;
        sf_backend backend;
        unsigned flags;
        int engine;
    } eng[] = {
        {"mirror", SF_BACKEND_UFFD_ASYNC, 0, E_MIRROR},
        {"cow-uffd", SF_BACKEND_UFFD_SYNC, 0, E_COW},
        {"cow-uffd-handler", SF_BACKEND_UFFD_SYNC, SF_OPT_HANDLER_THREADS, E_COW},
        {"cow-uffd-inthread", SF_BACKEND_UFFD_SYNC, SF_OPT_INTHREAD_FAULTS, E_COW},
        {"cow-mprotect", SF_BACKEND_MPROTECT, 0, E_COW},
        {"auto", SF_BACKEND_AUTO, 0, E_AUTO},
    };
    for (size_t i = 0; i < sizeof eng / sizeof eng[0]; i++)
        if (strcmp(eng[i].name, engine) == 0) {
            memset(o, 0, sizeof *o);
            o->backend = eng[i].backend;
            o->flags = SF_OPT_SNAPSHOTS | eng[i].flags;
#ifdef SFB_HAVE_OPT_ENGINE
            /* a library with sf_options.engine is asked for the engine by
             * name too: one that cannot give it says -ENOTSUP (a skip row) */
            o->engine = eng[i].engine == E_MIRROR ? SF_ENGINE_MIRROR
                        : eng[i].engine == E_COW  ? SF_ENGINE_COW
                                                  : SF_ENGINE_AUTO;
#endif
            return 0;
        }
    return -ENOENT;
}

const char *const sf_engine_names[] = {
    "mirror", "cow-uffd", "cow-uffd-handler", "cow-uffd-inthread", "cow-mprotect", "auto", NULL,
};

int sf_engine_lookup(const char *name, struct mech *m)
{
    sf_options o;
    if (engine_options(name, &o) != 0)
        return -ENOENT;
    struct sf_priv *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->opt = o;
    p->snap = 1;
    memset(m, 0, sizeof *m);
    m->name = name;
    m->ops = &sf_snapshot_ops;
    m->flags = MECH_SNAPFAULT | MECH_SNAPSHOT | MECH_ENGINE;
    m->priv = p;
    return 0;
}

int sf_mech_lookup(const char *name, struct mech *m)
{
    const char *spec = name + 3; /* after "sf-" */
    int snap = 0;
    if (strncmp(spec, "snap-", 5) == 0) {
        snap = 1;
        spec += 5;
    }
    for (size_t i = 0; i < sizeof sf_table / sizeof sf_table[0]; i++) {
        if (strcmp(sf_table[i].name, spec) != 0)
            continue;
        struct sf_priv *p = calloc(1, sizeof *p);
        if (!p)
            return -ENOMEM;
        p->opt.backend = sf_table[i].backend;
        p->opt.flags = sf_table[i].flags | (snap ? SF_OPT_SNAPSHOTS : 0);
        p->snap = snap;
        memset(m, 0, sizeof *m);
        m->name = name;
        m->ops = snap ? &sf_snapshot_ops : &sf_tracking_ops;
        m->flags = MECH_SNAPFAULT | (snap ? MECH_SNAPSHOT : 0);
        m->priv = p;
        return 0;
    }
    return -ENOENT;
}
