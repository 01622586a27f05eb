/* test_snapshot.c - snapshot semantics on both engines (COW on uffd-sync
 * and mprotect, mirror on uffd-async): point-in-time reads, shared copies,
 * restore, images, exhaustion, kernel writes, fork and untrack; then the
 * mirror's own cases (dirty tracking across takes with writers running,
 * restore after a partial untrack, pre-copy).  SF_TEST_ENGINE=cow|mirror
 * runs one engine's variants. */
#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>

static size_t PS;

static const struct variant snap_variants[] = {
    /* uffd-async: the mirror engine (a shadow, versions of its old content) */
    {"mirror/uffd-async", SF_BACKEND_UFFD_ASYNC, 0, 1, 1, SF_ENGINE_MIRROR},
    /* the copy-on-write engine on the backends with a fault path */
    {"cow/uffd-sync/in-thread", SF_BACKEND_UFFD_SYNC, SF_OPT_INTHREAD_FAULTS, 1, 0, SF_ENGINE_COW},
    {"cow/uffd-sync/handler-threads", SF_BACKEND_UFFD_SYNC, SF_OPT_HANDLER_THREADS, 1, 1, SF_ENGINE_COW},
    {"cow/mprotect", SF_BACKEND_MPROTECT, 0, 1, 0, SF_ENGINE_COW},
};
#define NSNAP (sizeof(snap_variants) / sizeof(snap_variants[0]))

static int make_snap_tracker(const struct variant *v, size_t store, sf_tracker **t)
{
    sf_options o = {.backend = v->backend, .flags = v->flags | SF_OPT_SNAPSHOTS, .store_limit = store,
                    .engine = v->engine};
    int rc = sf_tracker_create(t, &o);
    if (rc == -ENOTSUP) {
        sf_caps c;
        sf_probe(&c);
        snprintf(h_msg, sizeof h_msg, "%s", c.why[v->backend]);
        return 77;
    }
    if (rc) {
        snprintf(h_msg, sizeof h_msg, "create: %s", sf_strerror(rc));
        return 1;
    }
    return 0;
}

static void fill(char *mem, size_t npages, unsigned seed)
{
    for (size_t p = 0; p < npages; p++)
        for (size_t i = 0; i < PS; i += 512)
            mem[p * PS + i] = (char)(seed * 31 + p * 7 + i / 512);
}

/* Read-back of a whole region through sf_snapshot_read equals shadow. */
static int same_as(const sf_snapshot *s, const char *mem, const char *shadow, size_t len)
{
    char *buf = malloc(len);
    int rc = sf_snapshot_read(s, mem, buf, len);
    int ok = rc == 0 && memcmp(buf, shadow, len) == 0;
    free(buf);
    return ok ? 0 : rc ? rc : -EILSEQ;
}

static int t_point_in_time(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 1024, len = n * PS;
    char *mem = map_region(len), *shadow = malloc(len);
    fill(mem, n / 2, 1); /* half never touched before tracking */
    CHECK_RC(sf_track(t, mem, len), 0);
    memcpy(shadow, mem, len);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    fill(mem, n, 2);
    CHECK_RC(same_as(s, mem, shadow, len), 0);
    /* Unaligned reads across page boundaries. */
    char small[100];
    CHECK_RC(sf_snapshot_read(s, mem + PS - 50, small, 100), 0);
    CHECK(memcmp(small, shadow + PS - 50, 100) == 0, "unaligned read");
    CHECK_RC(sf_snapshot_read(s, mem + len, small, 1), -ENOENT);
    CHECK_RC(sf_snapshot_read(s, mem + len - 1, small, 2), -ENOENT);
    /* The tracker still tracks dirt. */
    CHECK(sf_collect(t, SF_COLLECT_RESET, NULL, NULL) >= (int)n, "collect after writes");
    sf_snapshot_release(s);
    sf_stats st;
    sf_tracker_stats(t, &st);
    CHECK(st.store_bytes == 0, "store holds %llu bytes after release", (unsigned long long)st.store_bytes);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free(shadow);
    return 0;
}

/* 20 snapshots with writes between; a page written once after several
 * takes is copied once; release in a shuffled order. */
static int t_many(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    enum { K = 20 };
    size_t n = 256, len = n * PS;
    char *mem = map_region(len);
    CHECK_RC(sf_track(t, mem, len), 0);
    sf_snapshot *s[K];
    char *shadow[K];
    for (int k = 0; k < K; k++) {
        for (int w = 0; w < 30; w++)
            mem[(rnd() % n) * PS + rnd() % PS] = (char)rnd();
        shadow[k] = malloc(len);
        memcpy(shadow[k], mem, len);
        CHECK_RC(sf_snapshot_take(t, &s[k]), 0);
    }
    sf_stats before;
    sf_tracker_stats(t, &before);
    mem[17 * PS] ^= 1; /* one write after many takes: one copy */
    sf_stats after;
    sf_tracker_stats(t, &after);
    if (v->engine == SF_ENGINE_COW) /* the mirror copies at take */
        CHECK(after.copies - before.copies + after.copies_shared - before.copies_shared == 1,
              "copies %llu", (unsigned long long)(after.copies - before.copies));
    for (int k = 0; k < K; k++)
        CHECK_RC(same_as(s[k], mem, shadow[k], len), 0);
    int order[K];
    for (int k = 0; k < K; k++)
        order[k] = k;
    for (int k = K - 1; k > 0; k--) {
        int j = (int)(rnd() % (unsigned)(k + 1)), x = order[k];
        order[k] = order[j];
        order[j] = x;
    }
    for (int i = 0; i < K; i++) {
        sf_snapshot_release(s[order[i]]);
        free(shadow[order[i]]);
        shadow[order[i]] = NULL;
        for (int k = 0; k < K; k++)
            if (shadow[k])
                CHECK_RC(same_as(s[k], mem, shadow[k], len), 0);
    }
    sf_tracker_stats(t, &after);
    CHECK(after.store_bytes == 0 && after.snapshots_live == 0, "store %llu live %llu",
          (unsigned long long)after.store_bytes, (unsigned long long)after.snapshots_live);
    sf_tracker_destroy(t);
    munmap(mem, len);
    return 0;
}

static int t_restore(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 512, len = n * PS;
    char *mem = map_region(len), *shadow = malloc(len);
    fill(mem, n, 3);
    CHECK_RC(sf_track(t, mem, len), 0);
    memcpy(shadow, mem, len);
    sf_snapshot *s, *later;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    for (int it = 0; it < 50; it++) {
        for (int w = 0; w < 64; w++)
            mem[(rnd() % n) * PS + rnd() % PS] = (char)rnd();
        if (it == 10)
            CHECK_RC(sf_snapshot_take(t, &later), 0);
        rc = sf_snapshot_restore(s);
        CHECK(rc > 0 && rc <= 64 + 64, "restore returned %d", rc);
        CHECK(memcmp(mem, shadow, len) == 0, "memory differs after restore %d", it);
        CHECK_RC(same_as(s, mem, shadow, len), 0);
        if (it >= 10)
            CHECK_RC(sf_snapshot_read(later, mem, shadow, 1), -ESTALE);
    }
    /* Nothing written: restoring is free. */
    CHECK_RC(sf_snapshot_restore(s), 0);
    sf_snapshot_release(later);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free(shadow);
    return 0;
}

/* Mirror: store_limit holds the shadow (64 pages) and 16 pages of
 * versions.  A track whose shadow does not fit and a take whose versions do
 * not fit fail with -ENOSPC; the program, its memory, the dirty tracking
 * and the older snapshot are unharmed. */
static int mirror_exhaustion(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, (64 + 16) * PS, &t);
    if (rc)
        return rc;
    size_t n = 64, len = n * PS;
    char *mem = map_region(len), *other = map_region(len), *shadow = malloc(len);
    fill(mem, n, 8);
    CHECK_RC(sf_track(t, mem, len), 0);
    CHECK_RC(sf_track(t, other, len), -ENOSPC); /* its shadow would not fit */
    memcpy(shadow, mem, len);
    sf_snapshot *s, *s2;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    for (size_t p = 0; p < n; p++)
        mem[p * PS] = (char)(p + 1);
    /* 64 pages of s's content would have to become versions: 16 fit. */
    CHECK_RC(sf_snapshot_take(t, &s2), -ENOSPC);
    for (size_t p = 0; p < n; p++)
        CHECK(mem[p * PS] == (char)(p + 1), "memory corrupted at page %zu", p);
    CHECK_RC(same_as(s, mem, shadow, len), 0);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), (int)n);
    CHECK_RC(sf_snapshot_restore(s), (int)n);
    CHECK(memcmp(mem, shadow, len) == 0, "restore after a failed take");
    sf_snapshot_release(s);
    /* Without a snapshot to keep, the versions are free again. */
    for (size_t p = 0; p < n; p++)
        mem[p * PS] = (char)(p + 2);
    CHECK_RC(sf_snapshot_take(t, &s2), 0);
    char c;
    mem[0] = 42;
    CHECK_RC(sf_snapshot_read(s2, mem, &c, 1), 0);
    CHECK(c == 2, "read %d", c);
    sf_snapshot_release(s2);
    sf_tracker_destroy(t);
    munmap(mem, len);
    munmap(other, len);
    free(shadow);
    return 0;
}

/* A store of 16 pages: writes go on, the snapshot fails cleanly. */
static int t_exhaustion(const struct variant *v)
{
    if (v->engine == SF_ENGINE_MIRROR)
        return mirror_exhaustion(v);
    sf_tracker *t;
    int rc = make_snap_tracker(v, 16 * PS, &t);
    if (rc)
        return rc;
    size_t n = 64, len = n * PS;
    char *mem = map_region(len);
    CHECK_RC(sf_track(t, mem, len), 0);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    for (size_t p = 0; p < n; p++)
        mem[p * PS] = (char)(p + 1);
    for (size_t p = 0; p < n; p++)
        CHECK(mem[p * PS] == (char)(p + 1), "memory corrupted at page %zu", p);
    char c;
    CHECK_RC(sf_snapshot_read(s, mem, &c, 1), -ENOSPC);
    CHECK_RC(sf_snapshot_restore(s), -ENOSPC);
    CHECK_RC(sf_snapshot_write(s, 1), -ENOSPC);
    sf_snapshot_release(s);
    /* The tracker recovers: a new snapshot works. */
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    mem[0] = 42;
    CHECK_RC(sf_snapshot_read(s, mem, &c, 1), 0);
    CHECK(c == 1, "read %d", c);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    return 0;
}

static int image_equals(int fd, const char *mem, const char *shadow, size_t len)
{
    sf_image *img;
    int rc = sf_image_open(&img, fd);
    if (rc)
        return rc;
    char *buf = malloc(len);
    rc = sf_image_read(img, (uint64_t)(uintptr_t)mem, buf, len);
    if (!rc && memcmp(buf, shadow, len))
        rc = -EILSEQ;
    if (!rc)
        rc = sf_image_verify(img);
    free(buf);
    sf_image_close(img);
    return rc;
}

static int t_image(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 300, len = n * PS;
    char *mem = map_region(len), *shadow = malloc(len), *shadow2 = malloc(len);
    fill(mem, n / 3, 4); /* a third data, the rest zero pages */
    CHECK_RC(sf_track(t, mem, len), 0);
    memcpy(shadow, mem, len);
    sf_snapshot *s, *s2;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    mem[5 * PS] = 1;
    mem[200 * PS] = 2;
    memcpy(shadow2, mem, len);
    CHECK_RC(sf_snapshot_take(t, &s2), 0);
    fill(mem, n, 5); /* everything changes after both takes */
    int fd = memfd_create("img", 0), fd2 = memfd_create("img2", 0);
    CHECK_RC(sf_snapshot_write(s, fd), 0);
    CHECK_RC(image_equals(fd, mem, shadow, len), 0);
    CHECK_RC(sf_snapshot_write_incremental(s2, s, fd2), 0);
    sf_image *img;
    CHECK_RC(sf_image_open(&img, fd2), 0);
    sf_image_info info;
    CHECK_RC(sf_image_get_info(img, &info), 0);
    CHECK(info.parent_id == sf_snapshot_id(s) && info.id == sf_snapshot_id(s2), "ids");
    CHECK(info.pages_stored + info.pages_zero == 2, "incremental holds %llu+%llu pages",
          (unsigned long long)info.pages_stored, (unsigned long long)info.pages_zero);
    char c;
    CHECK_RC(sf_image_read(img, (uint64_t)(uintptr_t)(mem + 5 * PS), &c, 1), 0);
    CHECK(c == 1, "incremental data");
    CHECK_RC(sf_image_read(img, (uint64_t)(uintptr_t)(mem + 6 * PS), &c, 1), -ENODATA);
    sf_image_close(img);
    CHECK_RC(sf_snapshot_write_incremental(s, s2, fd2), -EINVAL);
    /* A pipe whose reader is gone: -EPIPE, and no SIGPIPE kills us. */
    int pfd[2];
    CHECK(pipe(pfd) == 0, "pipe");
    close(pfd[0]);
    CHECK_RC(sf_snapshot_write(s, pfd[1]), -EPIPE);
    close(pfd[1]);
    close(fd);
    close(fd2);
    sf_snapshot_release(s);
    sf_snapshot_release(s2);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free(shadow);
    free(shadow2);
    return 0;
}

/* Release while another thread writes the image: the write completes. */
struct wr {
    sf_snapshot *s;
    int fd, rc;
};
static void *writer_thread(void *arg)
{
    struct wr *w = arg;
    w->rc = sf_snapshot_write(w->s, w->fd);
    return NULL;
}

static int t_release_during_write(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 8192, len = n * PS;
    char *mem = map_region(len), *shadow = malloc(len);
    fill(mem, n, 6);
    CHECK_RC(sf_track(t, mem, len), 0);
    memcpy(shadow, mem, len);
    struct wr w = {.fd = memfd_create("img", 0)};
    CHECK_RC(sf_snapshot_take(t, &w.s), 0);
    pthread_t th;
    pthread_create(&th, NULL, writer_thread, &w);
    fill(mem, n, 7); /* races the writer */
    sf_snapshot_release(w.s);
    pthread_join(th, NULL);
    CHECK_RC(w.rc, 0);
    CHECK_RC(image_equals(w.fd, mem, shadow, len), 0);
    close(w.fd);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free(shadow);
    return 0;
}

/* read(2) into tracked memory while a snapshot is live. */
static int t_kernel_write(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    if (!v->kernel_writes) {
        sf_tracker_destroy(t);
        /* A caller that needs kernel writes is told at create time. */
        sf_options o = {.backend = v->backend, .flags = v->flags | SF_OPT_SNAPSHOTS | SF_OPT_KERNEL_WRITES};
        CHECK_RC(sf_tracker_create(&t, &o), -ENOTSUP);
        return 0;
    }
    size_t n = 16, len = n * PS;
    char *mem = map_region(len);
    memset(mem, 'o', len);
    CHECK_RC(sf_track(t, mem, len), 0);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    char msg[2 * 4096];
    memset(msg, 'n', sizeof msg);
    CHECK(write(fds[1], msg, sizeof msg) == (ssize_t)sizeof msg, "write");
    CHECK(read(fds[0], mem + 3 * PS, sizeof msg) == (ssize_t)sizeof msg, "read: %s", strerror(errno));
    CHECK(memcmp(mem + 3 * PS, msg, sizeof msg) == 0, "live memory has the data");
    char buf[2 * 4096];
    CHECK_RC(sf_snapshot_read(s, mem + 3 * PS, buf, sizeof buf), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        CHECK(buf[i] == 'o', "snapshot changed at %zu", i);
    close(fds[0]);
    close(fds[1]);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    return 0;
}

/* fork() while a snapshot is live: the parent is unaffected; the child's
 * memory is writable and its snapshot calls answer -ECHILD. */
static int t_fork(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 32, len = n * PS;
    char *mem = map_region(len);
    memset(mem, 'a', len);
    CHECK_RC(sf_track(t, mem, len), 0);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    mem[0] = 'b';
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        memset(mem, 'c', len);
        char c;
        sf_snapshot *s2;
        int ok = sf_snapshot_read(s, mem, &c, 1) == -ECHILD && sf_snapshot_take(t, &s2) == -ECHILD &&
                 sf_snapshot_restore(s) == -ECHILD;
        _exit(ok ? 0 : 3);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    mem[PS] = 'd';
    char c[2];
    CHECK_RC(sf_snapshot_read(s, mem, c, 1), 0);
    CHECK_RC(sf_snapshot_read(s, mem + PS, c + 1, 1), 0);
    CHECK(c[0] == 'a' && c[1] == 'a' && mem[0] == 'b' && mem[PS] == 'd', "parent view");
    CHECK_RC(sf_snapshot_restore(s), 2);
    CHECK(mem[0] == 'a' && mem[PS] == 'a', "restore in parent");
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    return 0;
}

/* Untracked ranges leave the snapshot; restore skips them; ranges tracked
 * after the take are not part of it and restore leaves them alone. */
static int t_untrack(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 64, len = n * PS;
    char *a = map_region(len), *b = map_region(len), *c = map_region(len);
    memset(a, 1, len);
    memset(b, 2, len);
    CHECK_RC(sf_track(t, a, len), 0);
    CHECK_RC(sf_track(t, b, len), 0);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    CHECK_RC(sf_track(t, c, len), 0);
    memset(a, 3, len);
    memset(b, 4, len);
    memset(c, 5, len);
    CHECK_RC(sf_untrack(t, b, len), 0);
    CHECK_RC(sf_untrack(t, a + 32 * PS, 8 * PS), 0);
    char x;
    CHECK_RC(sf_snapshot_read(s, b, &x, 1), -ENOENT);
    CHECK_RC(sf_snapshot_read(s, c, &x, 1), -ENOENT);
    CHECK_RC(sf_snapshot_read(s, a + 32 * PS, &x, 1), -ENOENT);
    CHECK_RC(sf_snapshot_read(s, a, &x, 1), 0);
    CHECK(x == 1, "a");
    rc = sf_snapshot_restore(s);
    CHECK(rc == (int)n - 8, "restored %d", rc);
    CHECK(a[0] == 1 && a[32 * PS] == 3 && b[0] == 4 && c[0] == 5, "after restore");
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(a, len);
    munmap(b, len);
    munmap(c, len);
    return 0;
}


/* ------------------------------------------------------------------------
 * Mirror engine only.
 * ------------------------------------------------------------------------ */

/* Waits until the background pre-copy has copied `pages` pages (an event
 * counter; the alarm of the caller's process is the safety net). */
static int wait_precopied(sf_tracker *t, uint64_t pages)
{
    sf_stats st;
    for (;;) {
        sf_tracker_stats(t, &st);
        if (st.precopied >= pages)
            return 0;
        sched_yield();
    }
}

/* Writers run across takes and collects.  Each write is stamped with the
 * round in force before it (set after the previous collect returned), and
 * the stamp is published once the write is done: a write published before
 * round r's collect began must be reported by a collect of a round in
 * [stamp, r + 1] (this collect or the next), never lost. */
static _Atomic unsigned g_round;

struct wt_arg {
    char *mem;
    size_t n;
    unsigned id;
    _Atomic unsigned *done; /* per page: stamp of a finished write, 0: none */
    _Atomic int *stop;
};

static void *dirty_writer(void *arg)
{
    struct wt_arg *a = arg;
    unsigned long long x = 0x9e3779b97f4a7c15ull * (a->id + 1);
    while (!atomic_load(a->stop)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t p = (size_t)(x % a->n);
        unsigned r0 = atomic_load(&g_round);
        ((volatile char *)a->mem)[p * PS + a->id] = (char)x;
        atomic_store(&a->done[p], r0);
    }
    return NULL;
}

static int t_mirror_dirty_across_takes(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    enum { W = 2, ROUNDS = 300 };
    size_t n = 2048, len = n * PS;
    char *mem = map_region(len);
    _Atomic unsigned *done = calloc(n, sizeof(*done));
    unsigned *owed = calloc(n, sizeof(unsigned)), *last = calloc(n, sizeof(unsigned));
    unsigned char *got = calloc(n, 1);
    CHECK_RC(sf_track(t, mem, len), 0);
    atomic_store(&g_round, 1);
    _Atomic int stop = 0;
    struct wt_arg args[W];
    pthread_t th[W];
    for (unsigned i = 0; i < W; i++) {
        args[i] = (struct wt_arg){mem, n, i, done, &stop};
        pthread_create(&th[i], NULL, dirty_writer, &args[i]);
    }
    sf_snapshot *s = NULL;
    struct pageset ps = {.base = mem, .npages = n, .bits = got, .stop_after = -1};
    long lost = 0, reported = 0, checked = 0;
    for (unsigned r = 1; r <= ROUNDS + 1; r++) {
        if (r == ROUNDS + 1) { /* the last collect sees every write */
            atomic_store(&stop, 1);
            for (unsigned i = 0; i < W; i++)
                pthread_join(th[i], NULL);
        }
        unsigned *now = calloc(n, sizeof(unsigned));
        for (size_t p = 0; p < n; p++)
            now[p] = atomic_exchange(&done[p], 0);
        if (r % 3 == 0) { /* a take (and its scan) between collects */
            if (s)
                sf_snapshot_release(s);
            CHECK_RC(sf_snapshot_take(t, &s), 0);
        }
        memset(got, 0, n);
        rc = sf_collect(t, SF_COLLECT_RESET, collect_into, &ps);
        CHECK(rc >= 0, "collect: %s", sf_strerror(rc));
        reported += rc;
        for (size_t p = 0; p < n; p++) {
            if (got[p])
                last[p] = r;
            /* owed from round r - 1: a report in [stamp, r] */
            if (owed[p] && last[p] < owed[p])
                lost++;
            checked += owed[p] != 0;
            owed[p] = now[p];
            if (r == ROUNDS + 1 && now[p] && last[p] < now[p]) /* writers are stopped */
                lost++;
        }
        free(now);
        atomic_store(&g_round, r + 1);
    }
    CHECK(lost == 0, "%ld written pages never reported (%ld reported, %ld checked)", lost, reported, checked);
    CHECK(reported > 0 && checked > 0, "nothing reported");
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free((void *)done);
    free(owed);
    free(last);
    free(got);
    return 0;
}

/* Restore after part of the range was untracked, then tracked again: the
 * untracked pages keep what the program wrote, the rest comes back, and
 * dirty tracking and a second restore still work. */
static int t_mirror_partial_untrack_restore(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 256, len = n * PS;
    char *mem = map_region(len), *shadow = malloc(len);
    fill(mem, n, 9);
    CHECK_RC(sf_track(t, mem, len), 0);
    memcpy(shadow, mem, len);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    fill(mem, n, 10);
    CHECK_RC(sf_untrack(t, mem + 64 * PS, 32 * PS), 0);
    CHECK_RC(sf_snapshot_restore(s), (int)n - 32);
    for (size_t p = 0; p < n; p++) {
        int gone = p >= 64 && p < 96;
        char want = gone ? (char)(10 * 31 + p * 7) : shadow[p * PS];
        CHECK(mem[p * PS] == want, "page %zu (%s) after restore", p, gone ? "untracked" : "tracked");
    }
    /* The given-back pages are plain memory now; writes there are ours. */
    memset(mem + 64 * PS, 'u', 32 * PS);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), (int)n - 32); /* the restored pages */
    mem[0] ^= 1;
    mem[200 * PS] ^= 1;
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 2);
    /* Tracked again: not part of s, left alone by its restore. */
    CHECK_RC(sf_track(t, mem + 64 * PS, 32 * PS), 0);
    mem[70 * PS] = 'x';
    mem[1 * PS] ^= 1;
    CHECK_RC(sf_snapshot_restore(s), 3);
    CHECK(mem[70 * PS] == 'x' && memcmp(mem, shadow, 64 * PS) == 0 &&
              memcmp(mem + 96 * PS, shadow + 96 * PS, (n - 96) * PS) == 0,
          "second restore");
    char c;
    CHECK_RC(sf_snapshot_read(s, mem + 70 * PS, &c, 1), -ENOENT);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free(shadow);
    return 0;
}

/* Takes that copy thousands of pages share the copying with the engine's
 * helper thread (its first such take always does; later ones when this
 * machine's measured costs say it pays): live snapshots' versions are then
 * pushed by two threads.  Every snapshot must read byte-exact; a take
 * whose versions do not fit fails with -ENOSPC wherever the two threads
 * were, and leaves every live snapshot exact. */
static void stamp_pages(char *mem, size_t n, size_t count, unsigned k)
{
    for (size_t i = 0; i < count; i++) {
        size_t p = rnd() % n;
        for (size_t o = 0; o < PS; o += 1024)
            mem[p * PS + o] = (char)(k * 13 + p * 3 + o / 1024);
    }
}

static int t_mirror_shared_copy(const struct variant *v)
{
    enum { K = 10 };
    size_t n = 4096, len = n * PS;
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    char *mem = map_region(len);
    fill(mem, n, 5);
    CHECK_RC(sf_track(t, mem, len), 0);
    sf_snapshot *s[K];
    char *model[K];
    for (unsigned k = 0; k < K; k++) {
        stamp_pages(mem, n, 1500, k);
        model[k] = malloc(len);
        memcpy(model[k], mem, len);
        CHECK_RC(sf_snapshot_take(t, &s[k]), 0);
    }
    stamp_pages(mem, n, 1500, K);
    for (int k = 0; k < K; k++)
        CHECK(same_as(s[k], mem, model[k], len) == 0, "snapshot %d of %d differs", k, K);
    for (int k = 0; k < K; k++) {
        sf_snapshot_release(s[k]);
        free(model[k]);
    }
    sf_stats st;
    sf_tracker_stats(t, &st);
    CHECK(st.store_bytes == 0, "%llu bytes of versions left", (unsigned long long)st.store_bytes);
    sf_tracker_destroy(t);

    /* Room for the shadow and 600 versions: the second take needs ~1300. */
    CHECK_RC(make_snap_tracker(v, (n + 600) * PS, &t), 0);
    CHECK_RC(sf_track(t, mem, len), 0);
    char *m0 = malloc(len);
    memcpy(m0, mem, len);
    sf_snapshot *s0, *s1, *s2;
    CHECK_RC(sf_snapshot_take(t, &s0), 0);
    stamp_pages(mem, n, 1500, 40);
    CHECK_RC(sf_snapshot_take(t, &s1), -ENOSPC);
    CHECK(same_as(s0, mem, m0, len) == 0, "the live snapshot differs after a failed take");
    sf_snapshot_release(s0);
    memcpy(m0, mem, len);
    CHECK_RC(sf_snapshot_take(t, &s2), 0);
    stamp_pages(mem, n, 100, 41);
    CHECK(same_as(s2, mem, m0, len) == 0, "the take after the failed one differs");
    sf_snapshot_release(s2);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free(m0);
    return 0;
}

/* After the background pre-copy, the first take copies exactly the pages
 * written since (counted by sf_stats.take_copied, not timed). */
static int t_mirror_first_take(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 4096, len = n * PS;
    char *mem = map_region(len), *shadow = malloc(len);
    fill(mem, n, 11);
    CHECK_RC(sf_track(t, mem, len), 0);
    CHECK_RC(wait_precopied(t, n), 0);
    unsigned char *w = calloc(n, 1);
    size_t distinct = 0;
    for (int k = 0; k < 50; k++) {
        size_t p = rnd() % n;
        mem[p * PS + 9] = (char)rnd();
        distinct += !w[p];
        w[p] = 1;
    }
    memcpy(shadow, mem, len);
    sf_stats a, b;
    sf_tracker_stats(t, &a);
    CHECK(a.shadow_bytes == len && a.engine == SF_ENGINE_MIRROR, "shadow %llu engine %d",
          (unsigned long long)a.shadow_bytes, a.engine);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    sf_tracker_stats(t, &b);
    CHECK(b.take_copied - a.take_copied == distinct, "first take copied %llu pages, %zu were written",
          (unsigned long long)(b.take_copied - a.take_copied), distinct);
    fill(mem, n, 12);
    CHECK_RC(same_as(s, mem, shadow, len), 0);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free(shadow);
    free(w);
    return 0;
}


static long rss_pages(void)
{
    long size = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res;
}

/* Never-written pages stay out of the shadow: pre-copying 64 MiB of which
 * 4 MiB were written grows the process by about the 4 MiB, not 64. */
static int t_mirror_sparse_shadow(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 16384, len = n * PS, written = 1024;
    char *mem = map_region(len);
    for (size_t p = 0; p < written; p++)
        mem[p * 16 * PS] = 1;
    long before = rss_pages();
    CHECK_RC(sf_track(t, mem, len), 0);
    CHECK_RC(wait_precopied(t, n), 0);
    long grew = rss_pages() - before;
    CHECK(grew < (long)(written + written / 2 + 1024), "the shadow took %ld pages for %zu written", grew, written);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    char buf[2];
    CHECK_RC(sf_snapshot_read(s, mem + 16 * PS, buf, 1), 0);
    CHECK_RC(sf_snapshot_read(s, mem + 17 * PS, buf + 1, 1), 0);
    CHECK(buf[0] == 1 && buf[1] == 0, "content %d %d", buf[0], buf[1]);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    return 0;
}

/* Populated pages that still read as zeros (MAP_POPULATE, a buffer
 * faulted in ahead) get their shadow page from the first take or the
 * pre-copy, not from the take after they are written: a take that first
 * touches shadow pages pays a page allocation each (on a VM, several
 * times the copy).  Counted in minor faults, not timed. */
static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static int t_mirror_populated_zero(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 4096, len = n * PS;
    char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    CHECK(mem != MAP_FAILED, "mmap");
    madvise(mem, len, MADV_NOHUGEPAGE);
    CHECK_RC(sf_track(t, mem, len), 0);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0); /* at once: the pre-copy may not have run */
    sf_snapshot_release(s);
    for (size_t p = 0; p < n; p++)
        mem[p * PS + 8] = (char)(p | 1);
    long f0 = minor_faults();
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    long faults = minor_faults() - f0;
    CHECK(faults < (long)n / 8, "the take after the writes faulted %ld times for %zu pages", faults, n);
    char b;
    CHECK_RC(sf_snapshot_read(s, mem + 77 * PS + 8, &b, 1), 0);
    CHECK(b == (char)(77 | 1), "content %d", b);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    return 0;
}

/* Writers run while the pre-copy fills the shadow; once it is done they
 * stop, and the take must hold exactly what memory holds (byte-exact),
 * then restore it exactly after everything changed. */
struct pc_arg {
    char *mem;
    size_t n;
    unsigned id;
    sf_tracker *t;
};

static void *pc_writer(void *arg)
{
    struct pc_arg *a = arg;
    unsigned long long x = 0x2545f4914f6cdd1dull * (a->id + 3);
    sf_stats st;
    for (unsigned long k = 0;; k++) {
        if (k % 256 == 0) {
            sf_tracker_stats(a->t, &st);
            if (st.precopied >= a->n && k > 4096)
                break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t off = (size_t)(x % (a->n * PS)) & ~(size_t)7;
        *(volatile unsigned long long *)(a->mem + off) = x;
    }
    return NULL;
}

static int t_mirror_precopy_race(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_snap_tracker(v, 0, &t);
    if (rc)
        return rc;
    enum { W = 2 };
    size_t n = 16384, len = n * PS;
    char *mem = map_region(len), *shadow = malloc(len);
    fill(mem, n, 13);
    CHECK_RC(sf_track(t, mem, len), 0);
    struct pc_arg args[W];
    pthread_t th[W];
    for (unsigned i = 0; i < W; i++) {
        args[i] = (struct pc_arg){mem, n, i, t};
        pthread_create(&th[i], NULL, pc_writer, &args[i]);
    }
    for (unsigned i = 0; i < W; i++)
        pthread_join(th[i], NULL);
    memcpy(shadow, mem, len);
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    CHECK_RC(same_as(s, mem, shadow, len), 0);
    fill(mem, n, 14);
    CHECK_RC(same_as(s, mem, shadow, len), 0);
    CHECK(sf_snapshot_restore(s) == (int)n, "restore");
    CHECK(memcmp(mem, shadow, len) == 0, "memory after restore");
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(mem, len);
    free(shadow);
    return 0;
}

int main(void)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    static const struct {
        const char *name;
        int (*fn)(const struct variant *);
    } cases[] = {
        {"point-in-time reads", t_point_in_time},
        {"20 live snapshots, shared copies, release in any order", t_many},
        {"restore loop, later snapshots invalidated", t_restore},
        {"page store exhaustion", t_exhaustion},
        {"full and incremental images", t_image},
        {"release during image write", t_release_during_write},
        {"read(2) into memory of a live snapshot", t_kernel_write},
        {"fork with a live snapshot", t_fork},
        {"untrack and track after take", t_untrack},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        for (size_t v = 0; v < NSNAP; v++)
            if (h_want_engine(snap_variants[v].engine) && h_want_case(cases[c].name))
                h_report(cases[c].name, snap_variants[v].name, cases[c].fn(&snap_variants[v]));
    static const struct {
        const char *name;
        int (*fn)(const struct variant *);
    } mirror_cases[] = {
        {"dirty tracking across takes with writers running", t_mirror_dirty_across_takes},
        {"restore after partial untrack", t_mirror_partial_untrack_restore},
        {"first take after pre-copy copies the write set", t_mirror_first_take},
        {"pre-copy racing writers, byte-exact", t_mirror_precopy_race},
        {"never-written pages stay out of the shadow", t_mirror_sparse_shadow},
        {"takes shared with the copy helper, byte-exact; -ENOSPC midway", t_mirror_shared_copy},
        {"populated zero pages get their shadow before they are written", t_mirror_populated_zero},
    };
    for (size_t c = 0; c < sizeof(mirror_cases) / sizeof(mirror_cases[0]); c++)
        for (size_t v = 0; v < NSNAP; v++)
            if (snap_variants[v].engine == SF_ENGINE_MIRROR && h_want_engine(SF_ENGINE_MIRROR) &&
                h_want_case(mirror_cases[c].name))
                h_report(mirror_cases[c].name, snap_variants[v].name, mirror_cases[c].fn(&snap_variants[v]));
    return h_finish();
}
