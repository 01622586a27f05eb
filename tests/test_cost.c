/* test_cost.c - the batching cost model (src/cost.c): its decision from
 * given costs, that the re-arming walks (collect, take) follow it, the
 * SNAPFAULT_SPAN_GAP override, and what sf_probe / sf_tracker_stats show.
 * Every case runs in a child process of its own: the costs are probed once
 * per process. */
#include "harness.h"
#include "internal.h"

/* The decision alone: join iff gap * pte < call. */
static int t_decision(void *arg)
{
    (void)arg;
    CHECK_RC(sf__cost_gap(1000, 40), 24);      /* 24*40 = 960 < 1000, 25*40 = 1000 is not */
    CHECK_RC(sf__cost_gap(1000, 50), 19);      /* 20*50 = 1000: equal costs split */
    CHECK_RC(sf__cost_gap(40000, 170), 235);   /* a shadow-paged VM */
    CHECK_RC(sf__cost_gap(1500, 60), 24);
    CHECK_RC(sf__cost_gap(100, 1000), 0);      /* a page costs more than a call */
    CHECK_RC(sf__cost_gap(0, 10), 0);          /* not measured: a call per run */
    CHECK_RC(sf__cost_gap(1000, 0), SF_SPAN_GAP_MAX); /* gap pages cost nothing */
    CHECK_RC(sf__cost_gap(1e9, 1), SF_SPAN_GAP_MAX);
    return 0;
}

static const struct variant *g_v;

/* Protect calls one collect (or take) makes after writing two pages with
 * `gap` unwritten pages between them; the pages reported in *pages. */
static int two_runs(sf_tracker *t, char *m, size_t gap, int take, long *calls, long *pages)
{
    size_t ps = sf_page_size;
    sf_stats st;
    CHECK_RC(sf_tracker_stats(t, &st), 0);
    uint64_t c0 = st.protect_calls;
    m[100 * ps] = 1;
    m[(101 + gap) * ps] = 2;
    if (take) {
        sf_snapshot *s;
        CHECK_RC(sf_snapshot_take(t, &s), 0);
        sf_snapshot_release(s);
        *pages = -1;
    } else {
        int n = sf_collect(t, SF_COLLECT_RESET, NULL, NULL);
        CHECK(n >= 0, "sf_collect: %s", sf_strerror(n));
        *pages = n;
    }
    CHECK_RC(sf_tracker_stats(t, &st), 0);
    *calls = (long)(st.protect_calls - c0);
    return 0;
}

/* With injected costs whose break-even gap is G, a gap of G joins (one
 * protect call) and a gap of G + 1 splits (two), in collect and take. */
static int t_walks_follow(void *arg)
{
    int take = arg != NULL;
    sf_tracker *t;
    int rc = make_tracker(g_v, SF_OPT_EXACT | (take ? SF_OPT_SNAPSHOTS : 0), &t);
    if (rc)
        return rc;
    size_t len = 512 * sf_page_size;
    char *m = map_region(len);
    CHECK_RC(sf_track(t, m, len), 0);
    const size_t G = 20;
    enum sf_cost_mech mech = g_v->backend == SF_BACKEND_MPROTECT ? SF_COST_MPROTECT : SF_COST_UFFD;
    sf__cost_set(mech, (double)G * 10 + 5, 10); /* 20*10 < 205, 21*10 is not */
    sf_stats st;
    CHECK_RC(sf_tracker_stats(t, &st), 0);
    CHECK_RC(st.span_gap, G);
    long calls, pages;
    if ((rc = two_runs(t, m, G, take, &calls, &pages)))
        return rc;
    CHECK(calls == 1, "gap %zu (joins): %ld protect calls", G, calls);
    CHECK(take || pages == 2, "reported %ld pages", pages);
    if ((rc = two_runs(t, m, G + 1, take, &calls, &pages)))
        return rc;
    CHECK(calls == 2, "gap %zu (splits): %ld protect calls", G + 1, calls);
    CHECK(take || pages == 2, "reported %ld pages", pages);
    /* costs that make every gap dearer than a call: each run alone */
    sf__cost_set(mech, 100, 1000);
    if ((rc = two_runs(t, m, 0 + 1, take, &calls, &pages)))
        return rc;
    CHECK(calls == 2, "gap 1 with pte > call: %ld protect calls", calls);
    sf_tracker_destroy(t);
    munmap(m, len);
    return 0;
}

/* SNAPFAULT_SPAN_GAP=N forces gap N, shown by sf_probe and the stats. */
static int t_env_override(void *arg)
{
    (void)arg;
    setenv("SNAPFAULT_SPAN_GAP", "3", 1); /* before this process's first probe */
    sf_caps c;
    CHECK_RC(sf_probe(&c), 0);
    CHECK(c.span_gap_forced == 1, "span_gap_forced %d", c.span_gap_forced);
    CHECK(c.mprotect_span_gap == 3 && c.uffd_span_gap == 3, "gaps %ld %ld", c.mprotect_span_gap,
          c.uffd_span_gap);
    sf_tracker *t;
    int rc = make_tracker(g_v, SF_OPT_EXACT, &t);
    if (rc)
        return rc;
    size_t len = 512 * sf_page_size;
    char *m = map_region(len);
    CHECK_RC(sf_track(t, m, len), 0);
    sf_stats st;
    CHECK_RC(sf_tracker_stats(t, &st), 0);
    CHECK_RC(st.span_gap, 3);
    long calls, pages;
    if ((rc = two_runs(t, m, 3, 0, &calls, &pages)))
        return rc;
    CHECK(calls == 1 && pages == 2, "gap 3: %ld calls, %ld pages", calls, pages);
    if ((rc = two_runs(t, m, 4, 0, &calls, &pages)))
        return rc;
    CHECK(calls == 2 && pages == 2, "gap 4: %ld calls, %ld pages", calls, pages);
    sf_tracker_destroy(t);
    munmap(m, len);
    return 0;
}

/* Without the override the gaps are the decision applied to the costs the
 * probe measured, and mprotect (which works everywhere) was measured. */
static int t_probe_consistent(void *arg)
{
    (void)arg;
    unsetenv("SNAPFAULT_SPAN_GAP");
    sf_caps c;
    CHECK_RC(sf_probe(&c), 0);
    CHECK(!c.span_gap_forced, "forced without SNAPFAULT_SPAN_GAP");
    CHECK(c.mprotect_call_ns > 0 && c.mprotect_pte_ns >= 0, "mprotect costs %g %g", c.mprotect_call_ns,
          c.mprotect_pte_ns);
    CHECK_RC(c.mprotect_span_gap, (long)sf__cost_gap(c.mprotect_call_ns, c.mprotect_pte_ns));
    if (c.uffd_wp) {
        CHECK(c.uffd_wp_call_ns > 0 && c.uffd_wp_pte_ns >= 0, "uffd costs %g %g", c.uffd_wp_call_ns,
              c.uffd_wp_pte_ns);
        CHECK_RC(c.uffd_span_gap, (long)sf__cost_gap(c.uffd_wp_call_ns, c.uffd_wp_pte_ns));
    } else {
        CHECK_RC(c.uffd_span_gap, 0);
    }
    /* a tracker uses its mechanism's gap */
    sf_tracker *t;
    sf_options o = {.backend = SF_BACKEND_MPROTECT};
    CHECK_RC(sf_tracker_create(&t, &o), 0);
    sf_stats st;
    CHECK_RC(sf_tracker_stats(t, &st), 0);
    CHECK_RC(st.span_gap, c.mprotect_span_gap);
    sf_tracker_destroy(t);
    return 0;
}

int main(void)
{
    sf__init();
    h_report("the join decision from given costs", "cost model", h_forked(t_decision, NULL, 60));
    h_report("probed costs and the gaps they give", "this machine", h_forked(t_probe_consistent, NULL, 60));
    for (size_t i = 0; i < NVARIANTS; i++) {
        g_v = &variants[i];
        /* only the sync backends re-arm through the walks */
        if (g_v->backend != SF_BACKEND_MPROTECT && g_v->backend != SF_BACKEND_UFFD_SYNC)
            continue;
        h_report("collect joins a cheaper gap, splits a dearer one", g_v->name,
                 h_forked(t_walks_follow, NULL, 60));
        h_report("take joins a cheaper gap, splits a dearer one", g_v->name,
                 h_forked(t_walks_follow, (void *)1, 60));
        h_report("SNAPFAULT_SPAN_GAP forces the gap", g_v->name, h_forked(t_env_override, NULL, 60));
    }
    return h_finish();
}
