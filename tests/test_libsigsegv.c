/* test_libsigsegv.c - a libsigsegv host linked with libsnapfault: guard
 * pages (sigsegv_install_handler) and stack overflow recovery
 * (stackoverflow_install_handler) keep working with tracking active, on
 * every signal-delivered backend, with the tracker created before
 * libsigsegv's install (its sigaction replaces snapfault's handler; the
 * next protecting call puts snapfault's back in front) and after it. */
#include "harness.h"
#include "sigsegv_work.h"

#include <sys/wait.h>

#define NP 64
static size_t PS;

static int work(sf_tracker *t, char *mem)
{
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < NP; i++)
            ((volatile char *)mem)[i * PS] = (char)(round + i);
        CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), NP);
        CHECK(sw_guards() == 0, "guard pages (round %d)", round);
        CHECK(sw_overflows() == 0, "stack overflow (round %d)", round);
        for (size_t i = 0; i < NP; i++)
            ((volatile char *)mem)[i * PS + 1] = (char)(round + i);
        CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), NP);
    }
    return 0;
}

static int c_case(const struct variant *v, int before)
{
    char *mem = map_region(NP * PS);
    CHECK(mem, "mmap");
    sf_tracker *t = NULL;
    int rc;
    if (before) {
        if ((rc = make_tracker(v, 0, &t)))
            return rc;
        CHECK_RC(sf_track(t, mem, NP * PS), 0);
    }
    CHECK(sw_install() == 0, "libsigsegv install");
    if (!before) {
        if ((rc = make_tracker(v, 0, &t)))
            return rc;
        CHECK_RC(sf_track(t, mem, NP * PS), 0);
    } else {
        /* the protecting call that puts snapfault's handler first again */
        CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 0);
    }
    return work(t, mem);
}

struct lcase {
    const struct variant *v;
    int before;
};

static int run_lcase(void *arg)
{
    const struct lcase *lc = arg;
    return c_case(lc->v, lc->before);
}

int main(void)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t vi = 0; vi < NVARIANTS; vi++) {
        const struct variant *v = &variants[vi];
        if (!h_signal_delivered(v))
            continue;
        if (!h_want(v->name))
            continue;
        for (int before = 1; before >= 0; before--) {
            /* a process per case: handlers are per process */
            struct lcase lc = {v, before};
            int r = h_forked(run_lcase, &lc, 0);
            h_report(before ? "libsigsegv installed after the tracker" : "libsigsegv installed before the tracker",
                     v->name, r);
        }
    }
    return h_finish();
}
