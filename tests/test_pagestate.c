/* test_pagestate.c - the page-state machine's transitions (src/pagestate.h)
 * one at a time, from a table of cases in the style of the kernel's
 * selftests: a word before, a transition, the word (and hints) after.  No
 * kernel feature, no memory protection: the words of a region in memory.
 * Last, the embedding's page query on a real mprotect tracker (any kernel). */
#include "harness.h"
#include "internal.h"

#define A PS_ARMED
#define W PS_WRITABLE
#define B PS_BUSY
#define K PS_COLLECTING
#define D PS_DIRTY
#define G PS_GONE
#define CG(g) ((uint64_t)(g) << PS_CGEN_SHIFT)
#define RS(n) ((uint64_t)(n) << PS_RSEQ_SHIFT)

enum op {
    FAULT_CLAIM, CLUSTER_CLAIM, FAULT_PUBLISH, FAULT_OPEN, FAULT_ABORT,
    HEAL_CLAIM, HEAL_YIELD, HEAL_OPEN,
    PICK_GET, PICK_RESET, PICK_TAKE, UNPICK,
    REARM_RESET, REARM_TAKE, REARM_FAILED_RESET, REARM_FAILED_TAKE, KEEP_DIRTY,
    DEGRADED_CLAIM, DEGRADED_REARM_RESET, DEGRADED_REARM_GET,
    RESTORE_CLAIM, RESTORE_UNDO, RESTORE_UNDO_OPEN, RESTORE_RELEASE, RESTORE_RELEASE_OPEN,
    SHADOW_LOCK, SHADOW_UNLOCK, UNTRACK, REVIVE, BURY,
};

struct ps_case {
    const char *name;
    enum op op;
    uint64_t from;  /* the page's word before */
    uint64_t arg;   /* the word a transition is given (orig, w), or C/cgen */
    uint64_t to;    /* the page's word after */
    long ret;       /* what the transition returns (bool or word); -1: nothing */
    uint32_t hint;  /* chunk hint bits expected set after (from 0) */
};

static const struct ps_case cases[] = {
    /* handler */
    {"fault claims an armed page", FAULT_CLAIM, A | CG(3), 0, B | CG(3), 1, 0},
    {"fault takes a collecting page over", FAULT_CLAIM, K | D | CG(3), 0, B | D | CG(3), 1, 0},
    {"cluster joins an armed page", CLUSTER_CLAIM, A | CG(2), 0, B | CG(2), 1, 0},
    {"cluster stops at a collecting page", CLUSTER_CLAIM, K | D, 0, K | D, 0, 0},
    {"cluster stops at a writable page", CLUSTER_CLAIM, W | D, 0, W | D, 0, 0},
    {"cluster stops at a GONE page", CLUSTER_CLAIM, A | G, 0, A | G, 0, 0},
    {"publish marks the write before the open", FAULT_PUBLISH, B | CG(2), 5, B | D | CG(5) | RS(9), B | CG(2), 0},
    {"open leaves the page writable and dirty", FAULT_OPEN, B | D | CG(5), 5, W | D | CG(5) | RS(9), -1, 0},
    {"abort gives the page back armed as it was", FAULT_ABORT, B | D | CG(5), K | D | CG(2), A | D | CG(2), -1, 0},
    {"heal owns a writable page", HEAL_CLAIM, W | D | CG(4) | RS(1), 0, B | D | CG(4) | RS(1), 1, 0},
    {"heal yields to a take arming the chunk", HEAL_YIELD, B | D | CG(4), W | D | CG(4), W | D | CG(4), -1, 0},
    {"heal yield fails once the take stored ARMED", HEAL_YIELD, A | D | CG(4), W | D | CG(4), A | D | CG(4), -1, 0},
    {"heal re-opens with a new RSEQ", HEAL_OPEN, B | D | CG(4) | RS(1), W | D | CG(4) | RS(1), W | D | CG(4) | RS(9), -1, 0},
    /* collector */
    {"get reports a dirty armed page", PICK_GET, A | D, 0, A | D, 1, 0},
    {"get reports a dirty writable page, untouched", PICK_GET, W | D, 0, W | D, 1, 0},
    {"get skips a clean page", PICK_GET, W, 0, W, 0, 0},
    {"reset picks a dirty writable page", PICK_RESET, W | D | CG(3), 0, K | D | CG(3), 1, 0},
    {"reset reports a dirty armed page as it is", PICK_RESET, A | D, 0, A | D, 1, 0},
    {"reset skips a clean armed page", PICK_RESET, A, 0, A, 0, 0},
    {"reset skips a GONE page", PICK_RESET, A | D | G, 0, A | D | G, 0, 0},
    {"take picks a writable page", PICK_TAKE, W | D, 0, K | D, 1, 0},
    {"take skips an armed dirty page", PICK_TAKE, A | D, 0, A | D, 0, 0},
    {"unpick gives a picked page back", UNPICK, K | D | CG(2), 0, W | D | CG(2), -1, 0},
    {"unpick leaves a taken-over page", UNPICK, B | D, 0, B | D, -1, 0},
    {"reset re-arms a picked page clean", REARM_RESET, K | D | CG(3), 0, A | CG(3), -1, 0},
    {"reset cleans an armed dirty page", REARM_RESET, A | D | CG(3), 0, A | CG(3), -1, 0},
    {"reset leaves a taken-over page dirty", REARM_RESET, W | D | CG(4), 0, W | D | CG(4), -1, 0},
    {"reset leaves a GONE page", REARM_RESET, A | D | G, 0, A | D | G, -1, 0},
    {"take re-arms a picked page, still dirty", REARM_TAKE, K | D, 0, A | D, -1, 0},
    {"take leaves an armed dirty page", REARM_TAKE, A | D, 0, A | D, -1, 0},
    {"failed protect: a picked page stays open", REARM_FAILED_RESET, K | D, 0, W | D, -1, 0},
    {"failed protect: reset leaves an armed page", REARM_FAILED_RESET, A | D, 0, A | D, -1, 0},
    {"failed protect: take opens a chunk-armed page", REARM_FAILED_TAKE, A, 0, W | D, -1, 0},
    {"failed protect: take leaves a GONE page", REARM_FAILED_TAKE, A | G, 0, A | G, -1, 0},
    {"an unreported run stays dirty", KEEP_DIRTY, A | CG(2), 0, A | D | CG(2), -1, 0},
    {"an unreported GONE page stays clean", KEEP_DIRTY, A | G, 0, A | G, -1, 0},
    {"degraded: an old page gets the generation", DEGRADED_CLAIM, W | CG(3), 5, K | D | CG(5), -1, 0},
    {"degraded: a later generation stays", DEGRADED_CLAIM, A | CG(7), 5, K | D | CG(7), -1, 0},
    {"degraded: a GONE page stays", DEGRADED_CLAIM, A | G | CG(1), 5, A | G | CG(1), -1, 0},
    {"degraded reset re-arms clean", DEGRADED_REARM_RESET, K | D | CG(5), 0, A | CG(5), -1, 0},
    {"degraded take re-arms dirty", DEGRADED_REARM_GET, K | D | CG(5), 0, A | D | CG(5), -1, 0},
    {"degraded re-arm leaves a taken-over page", DEGRADED_REARM_RESET, W | D, 0, W | D, -1, 0},
    /* restore */
    {"restore owns a writable page", RESTORE_CLAIM, W | D | CG(6), 0, K | D | CG(6), W | D | CG(6), 0},
    {"restore owns an armed page", RESTORE_CLAIM, A | CG(2), 0, K | CG(2), A | CG(2), 0},
    {"undo gives the word back", RESTORE_UNDO, K | CG(2), A | CG(2), A | CG(2), -1, 0},
    {"undo left open: writable and dirty", RESTORE_UNDO_OPEN, K | CG(2), A | CG(2), W | D | CG(2), -1,
     CH_DIRTY | CH_WRITABLE},
    {"undo leaves a taken-over page", RESTORE_UNDO, B | D, A, B | D, -1, 0},
    {"release arms with the version's generation", RESTORE_RELEASE, K | D | CG(6), 2, A | D | CG(2) | RS(9), -1,
     CH_DIRTY},
    {"release after a failed protect: open", RESTORE_RELEASE_OPEN, K | CG(6), 7, W | D | CG(7) | RS(9), -1,
     CH_DIRTY | CH_WRITABLE},
    {"release leaves a taken-over page", RESTORE_RELEASE, W | D | CG(7), 2, W | D | CG(7), -1, 0},
    /* mirror shadow seqlock */
    {"shadow rewrite holds the page BUSY", SHADOW_LOCK, A | CG(2), 0, B | CG(2), A | CG(2), 0},
    {"shadow rewrite ends with the new sgen", SHADOW_UNLOCK, B | CG(2), A | CG(2) | RS(1), A | CG(6) | RS(1), -1, 0},
    /* track / untrack */
    {"untrack marks a writable page GONE", UNTRACK, W | D | CG(3), 0, A | G | CG(3), -1, 0},
    {"untrack marks a picked page GONE", UNTRACK, K | D | CG(3), 0, A | G | CG(3), -1, 0},
    {"revive arms a GONE page clean", REVIVE, A | G | CG(3), 8, A | CG(8), -1, 0},
    {"a failed revive buries it again", BURY, A | CG(8), 8, A | G | CG(8), -1, 0},
};

/* One region of two chunks, its words in ordinary memory. */
static struct sf_region g_r;
static sf_tracker g_t;
static _Atomic uint64_t g_ps[2 * SF_CHUNK_PAGES];
static _Atomic uint32_t g_chunk[2], g_maxgen[2];

static void region_reset(void)
{
    memset(&g_r, 0, sizeof(g_r));
    g_r.npages = 2 * SF_CHUNK_PAGES;
    g_r.nchunks = 2;
    g_r.ps = g_ps;
    g_r.chunk = g_chunk;
    g_r.chunk_maxgen = g_maxgen;
    g_r.t = &g_t;
    g_r.track_gen = 1;
    for (size_t p = 0; p < g_r.npages; p++)
        atomic_store(&g_ps[p], 0);
    atomic_store(&g_chunk[0], 0);
    atomic_store(&g_chunk[1], 0);
    atomic_store(&g_maxgen[0], 0);
    atomic_store(&g_maxgen[1], 0);
}

/* A weak CAS may fail spuriously: a claim is retried while the word stays. */
#define CLAIM(fn, ps)                                                   \
    ({                                                                  \
        bool _ok = false;                                               \
        for (int _i = 0; _i < 100 && !_ok; _i++) {                      \
            uint64_t _w = atomic_load(ps);                              \
            _ok = fn((ps), &_w);                                        \
        }                                                               \
        (long)_ok;                                                      \
    })

static long apply(const struct ps_case *c, _Atomic uint64_t *ps)
{
    size_t p = (size_t)(ps - g_ps);
    uint64_t rs = RS(9);
    switch (c->op) {
    case FAULT_CLAIM: return CLAIM(sf__ps_fault_claim, ps);
    case CLUSTER_CLAIM: return sf__ps_cluster_claim(ps);
    case FAULT_PUBLISH: return (long)sf__ps_fault_publish(ps, (uint32_t)c->arg, rs);
    case FAULT_OPEN: sf__ps_fault_open(ps, (uint32_t)c->arg, rs); return -1;
    case FAULT_ABORT: sf__ps_fault_abort(ps, c->arg); return -1;
    case HEAL_CLAIM: return CLAIM(sf__ps_heal_claim, ps);
    case HEAL_YIELD: sf__ps_heal_yield(ps, c->arg); return -1;
    case HEAL_OPEN: sf__ps_heal_open(ps, c->arg, rs); return -1;
    case PICK_GET: return sf__ps_collect_pick(ps, SF_WALK_GET);
    case PICK_RESET: return sf__ps_collect_pick(ps, SF_WALK_RESET);
    case PICK_TAKE: return sf__ps_collect_pick(ps, SF_WALK_TAKE);
    case UNPICK: sf__ps_unpick(ps); return -1;
    case REARM_RESET: sf__ps_collect_rearm(ps, SF_WALK_RESET); return -1;
    case REARM_TAKE: sf__ps_collect_rearm(ps, SF_WALK_TAKE); return -1;
    case REARM_FAILED_RESET: sf__ps_rearm_failed(ps, SF_WALK_RESET); return -1;
    case REARM_FAILED_TAKE: sf__ps_rearm_failed(ps, SF_WALK_TAKE); return -1;
    case KEEP_DIRTY: sf__ps_keep_dirty(ps); return -1;
    case DEGRADED_CLAIM: sf__ps_degraded_claim(ps, (uint32_t)c->arg); return -1;
    case DEGRADED_REARM_RESET: sf__ps_degraded_rearm(ps, true); return -1;
    case DEGRADED_REARM_GET: sf__ps_degraded_rearm(ps, false); return -1;
    case RESTORE_CLAIM: return (long)sf__ps_restore_claim(ps);
    case RESTORE_UNDO: sf__ps_restore_undo(&g_r, p, c->arg, false); return -1;
    case RESTORE_UNDO_OPEN: sf__ps_restore_undo(&g_r, p, c->arg, true); return -1;
    case RESTORE_RELEASE: sf__ps_restore_release(&g_r, p, true, (uint32_t)c->arg, rs); return -1;
    case RESTORE_RELEASE_OPEN: sf__ps_restore_release(&g_r, p, false, (uint32_t)c->arg, rs); return -1;
    case SHADOW_LOCK: return (long)sf__ps_shadow_lock(ps);
    case SHADOW_UNLOCK: sf__ps_shadow_unlock(ps, c->arg, 6); return -1;
    case UNTRACK: sf__ps_untrack_range(&g_r, p, p + 1); return -1;
    case REVIVE: sf__ps_revive_range(&g_r, p, p + 1, (uint32_t)c->arg); return -1;
    case BURY: sf__ps_bury_range(&g_r, p, p + 1, (uint32_t)c->arg); return -1;
    }
    return -2;
}

static int run_case(const struct ps_case *c)
{
    region_reset();
    /* Page 70: chunk 1, so that a hint on the wrong chunk shows. */
    _Atomic uint64_t *ps = &g_ps[70];
    atomic_store(ps, c->from);
    long ret = apply(c, ps);
    uint64_t w = atomic_load(ps);
    CHECK(w == c->to, "word %#llx, want %#llx", (unsigned long long)w, (unsigned long long)c->to);
    CHECK(ret == c->ret, "returned %#lx, want %#lx", ret, c->ret);
    CHECK(atomic_load(&g_chunk[1]) == c->hint && atomic_load(&g_chunk[0]) == 0,
          "hints %#x/%#x, want 0/%#x", atomic_load(&g_chunk[0]), atomic_load(&g_chunk[1]), c->hint);
    for (size_t p = 0; p < g_r.npages; p++)
        CHECK(p == 70 || atomic_load(&g_ps[p]) == 0, "page %zu changed", p);
    return 0;
}

/* The take's whole-chunk arming: all 64 WRITABLE -> ARMED (DIRTY and CGEN
 * kept), CH_TAKING clear again; any other page keeps the chunk as it is. */
static int t_take_chunk(uint64_t odd, int want)
{
    region_reset();
    for (size_t i = 0; i < SF_CHUNK_PAGES; i++)
        atomic_store(&g_ps[SF_CHUNK_PAGES + i], W | D | CG(i + 1));
    if (odd)
        atomic_store(&g_ps[SF_CHUNK_PAGES + 33], odd);
    CHECK_RC(sf__ps_take_chunk(&g_r, 1, SF_CHUNK_PAGES), want);
    for (size_t i = 0; i < SF_CHUNK_PAGES; i++) {
        uint64_t before = odd && i == 33 ? odd : W | D | CG(i + 1);
        uint64_t after = want ? PS_WITH_ST(before, PS_ARMED) : before;
        CHECK(atomic_load(&g_ps[SF_CHUNK_PAGES + i]) == after, "page %zu", i);
    }
    CHECK_RC(atomic_load(&g_chunk[1]) & CH_TAKING, 0);
    return 0;
}

/* The live-runs iterator over a GONE pattern ('g' GONE, '.' live). */
struct runs_case {
    const char *pattern;
    size_t p0, p1;
    const char *want; /* "s-e s-e ..." */
};

static const struct runs_case runs_cases[] = {
    {"........", 0, 8, "0-8"},
    {"........", 2, 5, "2-5"},
    {"........", 4, 4, ""},
    {"..gg..g.", 0, 8, "0-2 4-6 7-8"},
    {"gg....gg", 0, 8, "2-6"},
    {"gggggggg", 0, 8, ""},
    {"..gg..g.", 3, 7, "4-6"},
    {"g.g.g.g.", 1, 8, "1-2 3-4 5-6 7-8"},
};

static int t_runs(const struct runs_case *c)
{
    region_reset();
    size_t n = strlen(c->pattern), gone = 0;
    for (size_t p = 0; p < n; p++)
        if (c->pattern[p] == 'g') {
            atomic_store(&g_ps[p], A | G);
            gone++;
        }
    atomic_store(&g_r.gone, gone);
    char got[128] = "";
    size_t len = 0;
    SF_FOR_LIVE_RUNS(&g_r, c->p0, c->p1, s, e)
        len += (size_t)snprintf(got + len, sizeof got - len, "%s%zu-%zu", len ? " " : "", s, e);
    CHECK(strcmp(got, c->want) == 0, "runs \"%s\", want \"%s\"", got, c->want);
    /* The same stretch asked as a span's question: does it hold a GONE page? */
    bool between = false;
    for (size_t p = c->p0; p < c->p1; p++)
        between |= c->pattern[p] == 'g';
    CHECK_RC(sf__gone_between(&g_r, c->p0, c->p1), between);
    return 0;
}

/* The embedding's page classes. */
static int t_classes(void)
{
    CHECK_RC(sf__ps_class(A), SF_PAGE_ARMED_CLEAN);
    CHECK_RC(sf__ps_class(A | CG(4)), SF_PAGE_ARMED_CLEAN);
    CHECK_RC(sf__ps_class(A | D), SF_PAGE_ARMED_DIRTY);
    CHECK_RC(sf__ps_class(W | D), SF_PAGE_OPEN);
    CHECK_RC(sf__ps_class(B), SF_PAGE_OPEN);
    CHECK_RC(sf__ps_class(K | D), SF_PAGE_OPEN);
    CHECK_RC(sf__ps_class(A | G), SF_PAGE_UNTRACKED);
    CHECK_RC(sf__ps_class(W | D | G), SF_PAGE_UNTRACKED);
    /* mprotect's estimate: open = not write-protected by its state */
    CHECK_RC(sf__ps_open(W), 1);
    CHECK_RC(sf__ps_open(K), 1);
    CHECK_RC(sf__ps_open(A | G), 1);
    CHECK_RC(sf__ps_open(A | D), 0);
    CHECK_RC(sf__ps_open(B), 0);
    /* stale messages: opened after the mark and by now, modulo 2^28 */
    const uint32_t M = (1u << PS_RSEQ_BITS) - 1;
    CHECK_RC(sf__ps_opened_since(W | RS(5), 4, 5), 1);
    CHECK_RC(sf__ps_opened_since(W | RS(5), 4, 9), 1);
    CHECK_RC(sf__ps_opened_since(W | RS(4), 4, 9), 0);
    CHECK_RC(sf__ps_opened_since(W | RS(3), 4, 9), 0);
    CHECK_RC(sf__ps_opened_since(W | RS(1), M, 1), 1);
    CHECK_RC(sf__ps_opened_since(W | RS(1), M, 3), 1);
    /* past 2^27 openings: a page never opened (RSEQ 0), or opened long
     * ago, is not recent; with nothing in flight no page is */
    CHECK_RC(sf__ps_opened_since(A, (1u << 27) + 5, (1u << 27) + 5), 0);
    CHECK_RC(sf__ps_opened_since(A, (1u << 27) + 5, (1u << 27) + 9), 0);
    CHECK_RC(sf__ps_opened_since(A | RS(7), M - 3, M - 3), 0);
    CHECK_RC(sf__ps_opened_since(W | RS((1u << 27) + 7), (1u << 27) + 5, (1u << 27) + 9), 1);
    CHECK_RC(sf__ps_opened_since(W | RS((1u << 27) + 7), (1u << 27) + 5, (1u << 27) + 6), 0);
    return 0;
}

/* sf__page_class through a tracker's life: armed-clean after track, open
 * once written, armed-clean after a collect with reset, armed-dirty after a
 * take protected a written page, untracked after a partial untrack and
 * outside any region.  In a child: the tracker installs signal handlers. */
static int t_page_class(void *arg)
{
    (void)arg;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 4 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED, "mmap");
    sf_tracker *t;
    sf_options o = {.backend = SF_BACKEND_MPROTECT, .flags = SF_OPT_SNAPSHOTS | SF_OPT_EXACT};
    CHECK_RC(sf_tracker_create(&t, &o), 0);
    CHECK_RC(sf_track(t, m, 4 * ps), 0);
    uintptr_t a = (uintptr_t)m;
    CHECK_RC(sf__page_class(a), SF_PAGE_ARMED_CLEAN);
    CHECK_RC(sf__page_class(a + ps), SF_PAGE_ARMED_CLEAN);
    m[ps] = 1;
    CHECK_RC(sf__page_class(a + ps), SF_PAGE_OPEN);
    CHECK_RC(sf__page_class(a), SF_PAGE_ARMED_CLEAN);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 1);
    CHECK_RC(sf__page_class(a + ps), SF_PAGE_ARMED_CLEAN);
    m[2 * ps] = 1;
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    CHECK_RC(sf__page_class(a + 2 * ps), SF_PAGE_ARMED_DIRTY);
    CHECK_RC(sf_untrack(t, m + 3 * ps, ps), 0);
    CHECK_RC(sf__page_class(a + 3 * ps), SF_PAGE_UNTRACKED);
    CHECK_RC(sf__page_class(a + 4 * ps), SF_PAGE_UNTRACKED);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    CHECK_RC(sf__page_class(a), SF_PAGE_UNTRACKED);
    munmap(m, 4 * ps);
    return 0;
}

/* The word-wise page bitmaps (sf__bits_set, _clear, _next) against a
 * bit-by-bit model: random ranges over 5 words plus a ragged end, and the
 * run walk sf_collect makes with them. */
static int t_bits(void)
{
    enum { N = 5 * 64 + 17, NW = (N + 63) / 64 };
    uint64_t b[NW];
    unsigned char m[N];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    memset(b, 0, sizeof b);
    memset(m, 0, sizeof m);
    for (int round = 0; round < 20000; round++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t p0 = (size_t)(x % N), p1 = p0 + (size_t)((x >> 20) % (N - p0 + 1));
        bool set = (x >> 40) & 1;
        if (set)
            sf__bits_set(b, p0, p1);
        else
            sf__bits_clear(b, p0, p1);
        for (size_t p = p0; p < p1; p++)
            m[p] = set;
        for (size_t p = 0; p < N; p++)
            CHECK(!!(b[p >> 6] & (1ull << (p & 63))) == m[p], "round %d: bit %zu after %s [%zu, %zu)", round, p,
                  set ? "set" : "clear", p0, p1);
        size_t from = (size_t)((x >> 32) % (N + 1));
        for (int want = 0; want < 2; want++) {
            size_t q = from;
            while (q < N && m[q] != want)
                q++;
            CHECK(sf__bits_next(b, from, N, want) == q, "round %d: next %s from %zu: %zu, want %zu", round,
                  want ? "set" : "clear", from, sf__bits_next(b, from, N, want), q);
        }
        /* the runs a collect reports cover the set bits exactly */
        size_t covered = 0, ones = 0;
        for (size_t p = sf__bits_next(b, 0, N, true); p < N; p = sf__bits_next(b, p, N, true)) {
            size_t q = sf__bits_next(b, p, N, false);
            CHECK(q > p && (q == N || !m[q]) && (p == 0 || !m[p - 1]), "round %d: run [%zu, %zu) not maximal", round,
                  p, q);
            covered += q - p;
            p = q;
        }
        for (size_t p = 0; p < N; p++)
            ones += m[p];
        CHECK(covered == ones, "round %d: runs cover %zu pages of %zu set", round, covered, ones);
    }
    return 0;
}

int main(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        h_report(cases[i].name, "one page", run_case(&cases[i]));
    h_report("take arms a writable chunk whole", "64 pages", t_take_chunk(0, 1));
    h_report("take leaves a chunk with a BUSY page", "64 pages", t_take_chunk(B | D, 0));
    h_report("take leaves a chunk with an armed page", "64 pages", t_take_chunk(A | D, 0));
    h_report("take leaves a chunk with a GONE page", "64 pages", t_take_chunk(W | G, 0));
    for (size_t i = 0; i < sizeof(runs_cases) / sizeof(runs_cases[0]); i++) {
        char name[64];
        snprintf(name, sizeof name, "live runs of %s [%zu, %zu)", runs_cases[i].pattern, runs_cases[i].p0,
                 runs_cases[i].p1);
        h_report(name, "iterator", t_runs(&runs_cases[i]));
    }
    h_report("page classes and queries", "words", t_classes());
    h_report("word-wise bitmaps against a bit model", "bits", t_bits());
    h_report("page classes through a tracker's life", "mprotect", h_forked(t_page_class, NULL, 60));
    return h_finish();
}
