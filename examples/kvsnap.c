/* kvsnap.c - an in-memory key-value store that keeps serving writes from
 * several threads while it saves consistent snapshots to disk: BGSAVE
 * without fork().  `kvsnap verify FILE` reloads an image and checks it.
 *
 *   kvsnap [--mb N] [--threads N] [--seconds S | --puts N] [--saves N] [--out DIR]
 *          [--engine auto|cow|mirror]
 *
 * --engine: cow (writers pay a fault and a page copy per first write after
 * a save) or mirror (writers pay nothing but the kernel's first-write
 * fault; the take copies what was written since the previous save into a
 * shadow, and the image streams from the shadow, never live memory).
 *
 * The writers warm up and the rate without a save is measured for
 * --seconds/4 each, or (--puts N, the test suite) until N puts each were
 * served: then the saves do not depend on how fast the machine is.
 *   kvsnap verify FILE
 *
 * Consistency: writers hold a read lock around each put; the saver holds
 * the write lock only for sf_snapshot_take (the pause), then streams the
 * image while the writers go on. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "snapfault.h"

/* The store lives in one tracked arena: a header and open-addressing
 * slots.  Each slot carries a checksum of its key and value, so a torn put
 * in a saved image would be detected on reload. */
#define MAGIC 0x4b56534e41505631ull /* "KVSNAPV1" */
struct slot {
    uint64_t key;   /* 0 = empty */
    uint64_t value;
    uint64_t seq;   /* put number that wrote it */
    uint64_t check;
};
struct header {
    uint64_t magic, nslots;
    _Atomic uint64_t puts, live;
};

static struct header *hdr;
static struct slot *slots;
static size_t arena_len;
static pthread_rwlock_t save_lock;
static _Atomic int running = 1;
static _Atomic uint64_t served;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t slot_check(const struct slot *s)
{
    return mix(s->key ^ mix(s->value ^ mix(s->seq)));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Puts take the read lock: any number run at once; a snapshot take (write
 * lock) sees no half-done put.  Slots are striped by key so writers never
 * share a slot. */
static void put(uint64_t key, uint64_t value)
{
    pthread_rwlock_rdlock(&save_lock);
    uint64_t seq = atomic_fetch_add(&hdr->puts, 1) + 1;
    size_t i = mix(key) % hdr->nslots;
    for (;;) {
        struct slot *s = &slots[i];
        uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (k == key || (k == 0 && __atomic_compare_exchange_n(&s->key, &k, key, 0, __ATOMIC_ACQ_REL,
                                                               __ATOMIC_ACQUIRE))) {
            if (k == 0)
                atomic_fetch_add(&hdr->live, 1);
            s->value = value;
            s->seq = seq;
            s->check = slot_check(s);
            break;
        }
        if (k == key)
            break;
        i = (i + 1) % hdr->nslots;
    }
    pthread_rwlock_unlock(&save_lock);
}

struct writer_arg {
    unsigned id, nthreads;
    uint64_t keys;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    uint64_t x = a->id + 1;
    while (atomic_load(&running)) {
        x = mix(x + 1);
        /* Each thread owns the keys congruent to its id: no two threads
         * write one slot's value at once. */
        uint64_t key = (x % (a->keys / a->nthreads)) * a->nthreads + a->id + 1;
        put(key, x);
        atomic_fetch_add_explicit(&served, 1, memory_order_relaxed);
    }
    return NULL;
}

/* Checks an arena image: magic, every slot's checksum, and that the number
 * of occupied slots equals the live count recorded in the same instant. */
static int verify_arena(const void *base, size_t len, uint64_t *puts, uint64_t *live)
{
    const struct header *h = base;
    if (len < sizeof(*h) || h->magic != MAGIC)
        return -1;
    const struct slot *s = (const void *)((const char *)base + 4096);
    if (h->nslots > (len - 4096) / sizeof(*s))
        return -1;
    uint64_t occupied = 0;
    for (uint64_t i = 0; i < h->nslots; i++) {
        if (!s[i].key)
            continue;
        occupied++;
        if (s[i].check != slot_check(&s[i]) || s[i].seq > h->puts)
            return -2;
    }
    *puts = h->puts;
    *live = h->live;
    return occupied == h->live ? 0 : -3;
}

struct range_ctx {
    uint64_t addr, len;
};
static int first_range(void *addr, size_t len, void *arg)
{
    struct range_ctx *c = arg;
    c->addr = (uint64_t)(uintptr_t)addr;
    c->len = len;
    return 1;
}

static int verify_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "kvsnap: %s: %s\n", path, strerror(errno));
        return 1;
    }
    sf_image *img;
    int rc = sf_image_open(&img, fd);
    if (rc) {
        fprintf(stderr, "kvsnap: %s: %s\n", path, sf_strerror(rc));
        return 1;
    }
    struct range_ctx rg = {0};
    sf_image_ranges(img, first_range, &rg);
    void *buf = malloc(rg.len ? rg.len : 1);
    rc = rg.len ? sf_image_read(img, rg.addr, buf, rg.len) : -ENOENT;
    uint64_t puts = 0, live = 0;
    int v = rc ? -4 : verify_arena(buf, rg.len, &puts, &live);
    sf_image_close(img);
    close(fd);
    free(buf);
    if (v) {
        fprintf(stderr, "kvsnap: %s: inconsistent image (%s)\n", path,
                v == -4 ? sf_strerror(rc) : v == -1 ? "bad header" : v == -2 ? "torn slot" : "count mismatch");
        return 1;
    }
    printf("kvsnap: %s: consistent, %" PRIu64 " keys after %" PRIu64 " puts\n", path, live, puts);
    return 0;
}

/* Waits until `target` puts were served (target 0: for seconds/4). */
static void wait_puts(uint64_t target, double seconds)
{
    if (!target) {
        usleep((useconds_t)(seconds * 250000));
        return;
    }
    while (atomic_load(&served) < target)
        usleep(1000);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "verify") == 0)
        return verify_file(argv[2]);
    size_t mb = 64;
    unsigned nthreads = 2, saves = 3;
    double seconds = 3;
    uint64_t puts = 0; /* 0: warm up and measure for seconds/4 each */
    const char *out = "/tmp";
    sf_engine engine = SF_ENGINE_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            nthreads = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--puts") && i + 1 < argc)
            puts = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--saves") && i + 1 < argc)
            saves = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--engine") && i + 1 < argc && (!strcmp(argv[i + 1], "auto") ||
                 !strcmp(argv[i + 1], "cow") || !strcmp(argv[i + 1], "mirror"))) {
            i++;
            engine = !strcmp(argv[i], "cow") ? SF_ENGINE_COW : !strcmp(argv[i], "mirror") ? SF_ENGINE_MIRROR
                                                                                       : SF_ENGINE_AUTO;
        } else {
            fprintf(stderr, "usage: kvsnap [--mb N] [--threads N] [--seconds S | --puts N] [--saves N] "
                            "[--out DIR] [--engine auto|cow|mirror]\n"
                            "       kvsnap verify FILE\n");
            return 2;
        }
    }
    if (!mb || !nthreads || nthreads > 64 || !saves) {
        fprintf(stderr, "kvsnap: --mb, --threads (1-64) and --saves must be positive\n");
        return 2;
    }
    arena_len = mb << 20;
    char *arena = mmap(NULL, arena_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED) {
        perror("kvsnap: mmap");
        return 1;
    }
    madvise(arena, arena_len, MADV_NOHUGEPAGE);
    hdr = (struct header *)arena;
    slots = (struct slot *)(arena + 4096);
    hdr->magic = MAGIC;
    hdr->nslots = (arena_len - 4096) / sizeof(struct slot);
    pthread_rwlock_init(&save_lock, NULL);

    sf_tracker *t;
    sf_options opt = {.flags = SF_OPT_SNAPSHOTS, .engine = engine};
    int rc = sf_tracker_create(&t, &opt);
    if (!rc)
        rc = sf_track(t, arena, arena_len);
    if (rc) {
        fprintf(stderr, "kvsnap: snapfault: %s\n", sf_strerror(rc));
        return 1;
    }
    sf_stats est;
    sf_tracker_stats(t, &est);
    printf("kvsnap: %zu MiB store, %u writer threads, %s engine, backend %s (%s)\n", mb, nthreads,
           sf_engine_name(est.engine), sf_backend_name(sf_tracker_backend(t)),
           sf_fault_mode_name(sf_tracker_fault_mode(t)));

    pthread_t th[64];
    struct writer_arg wa[64];
    uint64_t keys = hdr->nslots / 2; /* half full at most */
    for (unsigned i = 0; i < nthreads; i++) {
        wa[i] = (struct writer_arg){i, nthreads, keys};
        pthread_create(&th[i], NULL, writer, &wa[i]);
    }
    /* Warm up, then measure writes with no save running. */
    wait_puts(puts, seconds);
    uint64_t s0 = atomic_load(&served);
    double t0 = now_s();
    wait_puts(puts ? s0 + puts : 0, seconds);
    double base_rate = (double)(atomic_load(&served) - s0) / (now_s() - t0);

    int failures = 0;
    sf_snapshot *prev = NULL;
    for (unsigned k = 0; k < saves; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/kvsnap-%d-%u.img", out, (int)getpid(), k);
        double a = now_s();
        pthread_rwlock_wrlock(&save_lock); /* the pause */
        sf_snapshot *s;
        rc = sf_snapshot_take(t, &s);
        pthread_rwlock_unlock(&save_lock);
        double pause = now_s() - a;
        if (rc) {
            fprintf(stderr, "kvsnap: take: %s\n", sf_strerror(rc));
            failures++;
            break;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            fprintf(stderr, "kvsnap: %s: %s\n", path, strerror(errno));
            sf_snapshot_release(s);
            failures++;
            break;
        }
        uint64_t w0 = atomic_load(&served);
        double b = now_s();
        rc = sf_snapshot_write(s, fd); /* writers keep going meanwhile */
        double save = now_s() - b;
        double rate = (double)(atomic_load(&served) - w0) / save;
        close(fd);
        struct stat st;
        stat(path, &st);
        if (rc) {
            fprintf(stderr, "kvsnap: write: %s\n", sf_strerror(rc));
            failures++;
        }
        printf("kvsnap: save %u: pause %.3f ms, image %.1f MiB in %.0f ms, puts/s during save %.0f "
               "(%.0f%% of %.0f without)\n",
               k, pause * 1e3, (double)st.st_size / (1 << 20), save * 1e3, rate,
               100.0 * rate / base_rate, base_rate);
        if (!rc)
            failures += verify_file(path);
        unlink(path);
        sf_snapshot_release(prev);
        prev = s;
    }
    atomic_store(&running, 0);
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    sf_snapshot_release(prev);
    sf_stats st;
    sf_tracker_stats(t, &st);
    printf("kvsnap: %" PRIu64 " faults, %" PRIu64 " page copies (%" PRIu64 " shared), %" PRIu64
           " snapshots failed\n",
           st.faults, st.copies, st.copies_shared, st.snapshots_failed);
    sf_tracker_destroy(t);
    munmap(arena, arena_len);
    return failures ? 1 : 0;
}
