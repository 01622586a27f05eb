/* test_harness.c - the fixture of harness.h: set-up before and teardown
 * after every case, also a failing or skipped one; tallies and exit code. */
#include "harness.h"

struct counts {
    int setups, teardowns, open; /* open: set up and not yet torn down */
    int fail_setup_of;           /* set-up of this case (1-based) fails */
    int skip_setup_of;           /* ... or skips */
    int ran;
};

static int fx_setup(void *ctx)
{
    struct counts *c = ctx;
    c->setups++;
    if (c->setups == c->fail_setup_of) {
        snprintf(h_msg, sizeof h_msg, "set-up refused");
        return 1;
    }
    if (c->setups == c->skip_setup_of)
        SKIP("feature missing");
    c->open++;
    return 0;
}

static int fx_teardown(void *ctx)
{
    struct counts *c = ctx;
    c->teardowns++;
    c->open--;
    return 0;
}

static int case_pass(void *ctx) { ((struct counts *)ctx)->ran++; return 0; }
static int case_check_fails(void *ctx)
{
    ((struct counts *)ctx)->ran++;
    CHECK(1 == 2, "intended");
    return 0;
}
static int case_expect_fails(void *ctx)
{
    ((struct counts *)ctx)->ran++;
    EXPECT_EQ(1, 2);
    EXPECT(0, "intended");
    return 0;
}
static int case_skips(void *ctx) { ((struct counts *)ctx)->ran++; SKIP("no such feature"); }

static int teardown_finds(void *ctx)
{
    fx_teardown(ctx);
    snprintf(h_msg, sizeof h_msg, "left a mess");
    return 1;
}

/* Runs cases under fx with fresh tallies; returns what h_finish says. */
static int run(const struct h_fixture *fx, const struct h_case *cases, size_t n, int *pass, int *fail,
               int *skip)
{
    h_pass = h_fail = h_skip = 0;
    h_run_cases(fx, cases, n);
    *pass = h_pass, *fail = h_fail, *skip = h_skip;
    int rc = h_finish();
    h_pass = h_fail = h_skip = 0;
    return rc;
}

int main(void)
{
    int bad = 0, p, f, s, rc;
#define EXPECT_MAIN(cond)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            printf("FAIL: line %d: %s\n", __LINE__, #cond);                 \
            bad++;                                                          \
        }                                                                   \
    } while (0)

    printf("-- a table of pass, CHECK failure, EXPECT failures, skip (the FAILs below are meant) --\n");
    static const struct h_case mixed[] = {
        {"passes", case_pass},
        {"fails a CHECK", case_check_fails},
        {"fails two EXPECTs", case_expect_fails},
        {"skips", case_skips},
    };
    struct counts c = {0};
    struct h_fixture fx = {"counting fixture", fx_setup, fx_teardown, &c};
    rc = run(&fx, mixed, H_NCASES(mixed), &p, &f, &s);
    EXPECT_MAIN(rc == 1);
    EXPECT_MAIN(p == 1 && f == 2 && s == 1);
    EXPECT_MAIN(c.setups == 4 && c.teardowns == 4 && c.open == 0 && c.ran == 4);

    printf("-- set-up fails for case 2, skips for case 3: those cases do not run --\n");
    static const struct h_case passing[] = {
        {"one", case_pass}, {"two", case_pass}, {"three", case_pass}, {"four", case_pass},
    };
    c = (struct counts){.fail_setup_of = 2, .skip_setup_of = 3};
    rc = run(&fx, passing, H_NCASES(passing), &p, &f, &s);
    EXPECT_MAIN(rc == 1 && p == 2 && f == 1 && s == 1);
    EXPECT_MAIN(c.ran == 2 && c.teardowns == 2 && c.open == 0);

    printf("-- every case skipped: exit 77 --\n");
    static const struct h_case skipping[] = {{"skips", case_skips}, {"skips too", case_skips}};
    c = (struct counts){0};
    rc = run(&fx, skipping, H_NCASES(skipping), &p, &f, &s);
    EXPECT_MAIN(rc == 77 && s == 2 && c.teardowns == 2);

    printf("-- a teardown that finds a mess fails a passing case --\n");
    c = (struct counts){0};
    struct h_fixture messy = {"messy teardown", fx_setup, teardown_finds, &c};
    rc = run(&messy, passing, 1, &p, &f, &s);
    EXPECT_MAIN(rc == 1 && f == 1 && p == 0 && c.teardowns == 1);

    printf("-- no set-up, no teardown --\n");
    struct h_fixture bare = {"no fixture", NULL, NULL, &c};
    c = (struct counts){0};
    rc = run(&bare, passing, H_NCASES(passing), &p, &f, &s);
    EXPECT_MAIN(rc == 0 && p == 4 && c.ran == 4);

    printf("%s\n", bad ? "harness self-test FAILED" : "harness self-test ok");
    return bad ? 1 : 0;
}
