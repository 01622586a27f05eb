/* harness.h - a small test harness in the style of the kernel mm selftests:
 * one line per case ("Testing X on Y ... ok"), skips with a reason, and a
 * closing "N passed, N failed, N skipped" line; exit 77 when all skipped.
 * Case tables run under a fixture (h_run_cases): its set-up before every
 * case and its teardown after every case, whether the case passed, failed
 * or skipped. */
#ifndef SF_HARNESS_H
#define SF_HARNESS_H
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "snapfault.h"

static int h_pass, h_fail, h_skip;
static char h_msg[512];

#define SKIP(...) do { snprintf(h_msg, sizeof h_msg, __VA_ARGS__); return 77; } while (0)
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            int _n = snprintf(h_msg, sizeof h_msg, "%s:%d: %s: ", __FILE__,     \
                              __LINE__, #cond);                                 \
            snprintf(h_msg + _n, sizeof h_msg - (size_t)_n, __VA_ARGS__);       \
            return 1;                                                           \
        }                                                                       \
    } while (0)
#define CHECK_RC(expr, want)                                                    \
    do {                                                                        \
        long _r = (long)(expr);                                                 \
        CHECK(_r == (long)(want), "got %ld (%s), want %ld", _r,                 \
              _r < 0 ? sf_strerror((int)_r) : "", (long)(want));                \
    } while (0)

static void h_report(const char *name, const char *variant, int rc)
{
    printf("Testing %s on %s ... ", name, variant);
    if (rc == 0) {
        h_pass++;
        printf("ok\n");
    } else if (rc == 77) {
        h_skip++;
        printf("skip (%s)\n", h_msg);
    } else {
        h_fail++;
        printf("FAIL\n    %s\n", h_msg);
    }
    fflush(stdout);
    h_msg[0] = 0;
}

/* Makes the mprotect VMA budget about `left`, as for a program with many
 * mappings of its own: the first mprotect tracker of a process sizes the
 * budget as max_map_count - the VMAs the process has - max(max/4, 4096),
 * so this maps enough extra VMAs (alternating protections, one VMA each).
 * They stay mapped: past the budget the library checks its estimate
 * against the real count, so the budget is only small while they exist.
 * Call before the process's first mprotect tracker.  0 or -errno. */
__attribute__((unused)) static int h_hold_vmas(long left)
{
    long max = 65530, maps = 0;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%ld", &max) != 1)
            max = 65530;
        fclose(f);
    }
    if ((f = fopen("/proc/self/maps", "r"))) {
        int c;
        while ((c = fgetc(f)) != EOF)
            maps += c == '\n';
        fclose(f);
    }
    long reserve = max / 4 > 4096 ? max / 4 : 4096;
    long want = max - reserve - left - maps;
    if (want <= 0)
        return 0;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE), n = 2 * (size_t)want + 2;
    char *m = mmap(NULL, n * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    for (long k = 0; k < want / 2 + 1; k++)
        mprotect(m + (2 * (size_t)k + 1) * ps, ps, PROT_READ);
    return 0;
}

/* Runs fn(arg) in a child process of its own (a fresh address space and
 * signal state: set-up and teardown around one case) and returns its
 * result, with h_msg as the child left it.  alarm_s > 0 arms an alarm in
 * the child: a safety net that fails a hung case loudly, never a verdict.
 * A child killed by a signal is a failure that says which. */
__attribute__((unused)) static int h_forked(int (*fn)(void *), void *arg, unsigned alarm_s)
{
    int pfd[2];
    fflush(stdout);
    if (pipe(pfd) < 0) {
        snprintf(h_msg, sizeof h_msg, "pipe: %s", strerror(errno));
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        if (alarm_s)
            alarm(alarm_s);
        h_msg[0] = 0;
        int rc = fn(arg);
        if (write(pfd[1], h_msg, strlen(h_msg)) < 0)
            rc = 1;
        _exit(rc);
    }
    close(pfd[1]);
    char buf[sizeof h_msg];
    ssize_t n = pid > 0 ? read(pfd[0], buf, sizeof buf - 1) : -1;
    close(pfd[0]);
    buf[n > 0 ? n : 0] = 0;
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) {
        snprintf(h_msg, sizeof h_msg, "fork/waitpid: %s", strerror(errno));
        return 1;
    }
    if (WIFEXITED(st)) {
        snprintf(h_msg, sizeof h_msg, "%s", buf);
        return WEXITSTATUS(st);
    }
    snprintf(h_msg, sizeof h_msg, "killed by signal %d (%s)%s%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
             buf[0] ? ": " : "", buf);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Fixtures: set-up and teardown around every case of a table               */
/* ------------------------------------------------------------------------ */

/* Checks that do not end the case (kselftest's EXPECT_* beside CHECK's
 * ASSERT_*): a failed one is reported on stderr, counted, and the case
 * goes on; a case with any failed EXPECT fails.  Only the first
 * H_EXPECT_REPORTS of a case are printed, so that a check in a loop over
 * thousands of offsets does not flood the log. */
#define H_EXPECT_REPORTS 10
static int h_expect_failures;

__attribute__((unused, format(printf, 2, 3))) static void h_failf(int line, const char *fmt, ...)
{
    if (h_expect_failures++ < H_EXPECT_REPORTS) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "    line %d: ", line);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

#define EXPECT(cond, ...)                                                                 \
    do {                                                                                  \
        if (!(cond))                                                                      \
            h_failf(__LINE__, "EXPECT(" #cond ") " __VA_ARGS__);                          \
    } while (0)
#define EXPECT_EQ(got, want)                                                              \
    do {                                                                                  \
        long long g_ = (long long)(got), w_ = (long long)(want);                          \
        if (g_ != w_)                                                                     \
            h_failf(__LINE__, "%s = %lld, expected %lld", #got, g_, w_);                 \
    } while (0)

/* What every case of a table runs in.  setup returns 0, 77 to skip the
 * case (h_msg says why: a kernel feature the machine lacks) or anything
 * else for a failure; the case is not run unless it returned 0.  teardown
 * runs after every case whose set-up returned 0, pass, fail or skip; it
 * undoes what the case may have left (a failing case returns early) and
 * returns non-zero, with h_msg saying why, if what it found fails the
 * case.  Either may be NULL. */
struct h_fixture {
    const char *name;               /* the "on X" of every case's line */
    int (*setup)(void *ctx);
    int (*teardown)(void *ctx);
    void *ctx;                      /* handed to setup, the case and teardown */
};

/* A case: 0 passes, 77 skips (SKIP), anything else fails (CHECK); a
 * failed EXPECT fails it whatever it returns. */
struct h_case {
    const char *name;
    int (*fn)(void *ctx);
};

/* Set-up, the case, teardown; one line of output. */
__attribute__((unused)) static void h_run_case(const struct h_fixture *fx, const struct h_case *c)
{
    h_msg[0] = 0;
    h_expect_failures = 0;
    fflush(stdout);
    int rc = fx->setup ? fx->setup(fx->ctx) : 0;
    if (rc == 0) {
        rc = c->fn(fx->ctx);
        if (h_expect_failures && (rc == 0 || rc == 77)) {
            snprintf(h_msg, sizeof h_msg, "%d check%s failed", h_expect_failures,
                     h_expect_failures == 1 ? "" : "s");
            rc = 1;
        }
        char msg[sizeof h_msg];
        memcpy(msg, h_msg, sizeof msg);
        h_msg[0] = 0;
        int td = fx->teardown ? fx->teardown(fx->ctx) : 0;
        if (td && (rc == 0 || rc == 77))
            rc = 1; /* teardown's h_msg */
        else
            memcpy(h_msg, msg, sizeof msg);
    } else if (rc != 77) {
        int n = (int)strlen(h_msg);
        snprintf(h_msg + n, sizeof h_msg - (size_t)n, " (set-up failed)");
    }
    h_report(c->name, fx->name, rc);
}

/* Every case of the table under fx, in order.  Tallies go to h_finish. */
__attribute__((unused)) static void h_run_cases(const struct h_fixture *fx, const struct h_case *cases,
                                                size_t n)
{
    for (size_t i = 0; i < n; i++)
        h_run_case(fx, &cases[i]);
}
#define H_NCASES(table) (sizeof(table) / sizeof((table)[0]))

static int h_finish(void)
{
    printf("%d passed, %d failed, %d skipped\n", h_pass, h_fail, h_skip);
    if (h_fail)
        return 1;
    return h_pass == 0 && h_skip > 0 ? 77 : 0;
}

/* Backend variants: a backend plus the flags that select a delivery mode. */
struct variant {
    const char *name;
    sf_backend backend;
    unsigned flags;
    int exact;          /* reports exactly the written pages */
    int kernel_writes;  /* read(2) into tracked memory works */
    sf_engine engine;   /* snapshot engine (SF_ENGINE_AUTO: tracking only) */
};

static const struct variant variants[] = {
    {"uffd-async", SF_BACKEND_UFFD_ASYNC, 0, 1, 1, SF_ENGINE_AUTO},
    {"uffd-sync/in-thread", SF_BACKEND_UFFD_SYNC, SF_OPT_INTHREAD_FAULTS, 1, 0, SF_ENGINE_AUTO},
    {"uffd-sync/handler-threads", SF_BACKEND_UFFD_SYNC, SF_OPT_HANDLER_THREADS, 1, 1, SF_ENGINE_AUTO},
    {"mprotect", SF_BACKEND_MPROTECT, 0, 1, 0, SF_ENGINE_AUTO},
    {"soft-dirty", SF_BACKEND_SOFTDIRTY, 0, 1, 1, SF_ENGINE_AUTO},
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

/* The backends whose faults are delivered as signals (mprotect: SIGSEGV;
 * uffd-sync in-thread: SIGBUS). */
__attribute__((unused)) static int h_signal_delivered(const struct variant *v)
{
    return v->backend == SF_BACKEND_MPROTECT || (v->flags & SF_OPT_INTHREAD_FAULTS);
}

/* Creates a tracker for v, or says why the machine cannot (skip). */
__attribute__((unused)) static int make_tracker(const struct variant *v, unsigned extra, sf_tracker **t)
{
    sf_options o = {.backend = v->backend, .flags = v->flags | extra};
    int rc = sf_tracker_create(t, &o);
    if (rc == -ENOTSUP) {
        sf_caps c;
        sf_probe(&c);
        snprintf(h_msg, sizeof h_msg, "%s", c.why[v->backend][0] ? c.why[v->backend] : "not supported here");
        return 77;
    }
    if (rc) {
        snprintf(h_msg, sizeof h_msg, "sf_tracker_create: %s", sf_strerror(rc));
        return 1;
    }
    return 0;
}

__attribute__((unused)) /* SF_TEST_VARIANT selects variants: "NAME" runs only that one, "!NAME"
 * all but it.  meson registers kernel-feature variants (soft-dirty) as
 * tests of their own, which exit 77 where the kernel lacks the feature. */
__attribute__((unused)) static int h_want(const char *variant)
{
    const char *f = getenv("SF_TEST_VARIANT");
    if (!f || !*f)
        return 1;
    if (f[0] == '!')
        return strcmp(f + 1, variant) != 0;
    return strcmp(f, variant) == 0;
}

/* SF_TEST_ENGINE selects snapshot engines the same way: "cow" or
 * "mirror" runs only that engine's variants, "!NAME" all but it. */
__attribute__((unused)) static int h_want_engine(sf_engine e)
{
    const char *f = getenv("SF_TEST_ENGINE");
    if (!f || !*f)
        return 1;
    if (f[0] == '!')
        return strcmp(f + 1, sf_engine_name(e)) != 0;
    return strcmp(f, sf_engine_name(e)) == 0;
}

/* SF_TEST_CASE runs only the cases whose name contains it (scripts/tsan
 * runs one case of a test whose other cases race on purpose). */
__attribute__((unused)) static int h_want_case(const char *name)
{
    const char *f = getenv("SF_TEST_CASE");
    return !f || !*f || strstr(name, f) != NULL;
}

__attribute__((unused)) static void *map_region(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, len, MADV_NOHUGEPAGE); /* 4 KiB granularity of dirtiness */
    return p;
}

/* xorshift: reproducible random pages */
static unsigned long long h_rng = 88172645463325252ull;
__attribute__((unused)) static unsigned long long rnd(void)
{
    h_rng ^= h_rng << 13;
    h_rng ^= h_rng >> 7;
    h_rng ^= h_rng << 17;
    return h_rng;
}

/* Collect into a bitmap of pages relative to base. */
struct pageset {
    char *base;
    size_t npages;
    unsigned char *bits;
    long runs, pages, outside, dup;
    long stop_after;  /* stop after this many runs (-1: never) */
};

__attribute__((unused)) static int collect_into(void *addr, size_t len, void *arg)
{
    struct pageset *s = arg;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    for (char *p = addr; p < (char *)addr + len; p += ps) {
        if (p < s->base || p >= s->base + s->npages * ps) {
            s->outside++;
            continue;
        }
        size_t i = (size_t)(p - s->base) / ps;
        if (s->bits[i])
            s->dup++;
        s->bits[i] = 1;
        s->pages++;
    }
    s->runs++;
    return s->stop_after >= 0 && s->runs >= s->stop_after;
}
#endif
