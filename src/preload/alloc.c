/* alloc.c - the preload's private heap and the registry of its own memory:
 * snapfault's state must never sit in pages it tracks (see preload.h). */
#include "preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

void *sfp_real_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off);
int sfp_real_munmap(void *a, size_t len);

/* ------------------------------------------------------------------------
 * Range registries: fixed tables of ranges, written under a spin lock
 * (writers are never signal handlers), read without it.  A slot is valid
 * while its start is non-zero; end is written before start.  Two of them:
 * the runtime's own memory, and ranges the program uses in ways that must
 * not be tracked (thread stacks, alternate signal stacks).
 * ------------------------------------------------------------------------ */
#define REG_SLOTS 16384
struct registry {
    struct {
        _Atomic uintptr_t start, end;
    } slot[REG_SLOTS];
    _Atomic size_t hi; /* slots in use are below this */
    atomic_flag lock;
};
static struct registry g_own = {.lock = ATOMIC_FLAG_INIT}, g_excl = {.lock = ATOMIC_FLAG_INIT};
_Atomic int sfp_own_overflow;

static void reg_lock(struct registry *g)
{
    while (atomic_flag_test_and_set_explicit(&g->lock, memory_order_acquire))
        __builtin_ia32_pause();
}

static void reg_unlock(struct registry *g) { atomic_flag_clear_explicit(&g->lock, memory_order_release); }

static void reg_add(struct registry *g, uintptr_t start, uintptr_t end)
{
    reg_lock(g);
    size_t hi = atomic_load(&g->hi), i;
    for (i = 0; i < hi; i++)
        if (!atomic_load(&g->slot[i].start))
            break;
    if (i == REG_SLOTS) {
        /* Full: the scanner stops adopting unknown mappings (see
         * reconcile.c), the only way such memory could end up tracked. */
        atomic_store(&sfp_own_overflow, 1);
    } else {
        atomic_store(&g->slot[i].end, end);
        atomic_store(&g->slot[i].start, start);
        if (i == hi)
            atomic_store(&g->hi, hi + 1);
    }
    reg_unlock(g);
}

/* Removes [start, end) from the registered ranges; a partial unmap of a
 * registered range keeps the rest registered. */
static void reg_remove(struct registry *g, uintptr_t start, uintptr_t end)
{
    reg_lock(g);
    size_t hi = atomic_load(&g->hi);
    for (size_t i = 0; i < hi; i++) {
        uintptr_t s = atomic_load(&g->slot[i].start), e = atomic_load(&g->slot[i].end);
        if (!s || e <= start || s >= end)
            continue;
        if (start <= s && e <= end) {
            atomic_store(&g->slot[i].start, 0);
        } else if (s < start && end < e) {
            atomic_store(&g->slot[i].end, start); /* keep the low part here */
            reg_unlock(g);
            reg_add(g, end, e);                   /* and the high part anew */
            reg_lock(g);
        } else if (s < start) {
            atomic_store(&g->slot[i].end, start);
        } else {
            atomic_store(&g->slot[i].start, end);
        }
    }
    reg_unlock(g);
}

static bool reg_overlaps(struct registry *g, uintptr_t start, uintptr_t end)
{
    size_t hi = atomic_load(&g->hi);
    for (size_t i = 0; i < hi; i++) {
        uintptr_t s = atomic_load(&g->slot[i].start), e = atomic_load(&g->slot[i].end);
        if (s && s < end && start < e)
            return true;
    }
    return false;
}

/* Both registries' ranges overlapping [start, end), sorted by start, into
 * out (cap entries); SIZE_MAX if they do not fit. */
size_t sfp_registry_overlaps(uintptr_t start, uintptr_t end, struct sfp_range *out, size_t cap)
{
    size_t n = 0;
    struct registry *regs[2] = {&g_own, &g_excl};
    for (int r = 0; r < 2; r++) {
        size_t hi = atomic_load(&regs[r]->hi);
        for (size_t i = 0; i < hi; i++) {
            uintptr_t s = atomic_load(&regs[r]->slot[i].start), e = atomic_load(&regs[r]->slot[i].end);
            if (!s || e <= start || s >= end)
                continue;
            if (n == cap)
                return SIZE_MAX;
            size_t j = n++;
            while (j > 0 && out[j - 1].start > s) { /* insertion sort: few entries */
                out[j] = out[j - 1];
                j--;
            }
            out[j] = (struct sfp_range){s, e};
        }
    }
    return n;
}

void sfp_own_add(uintptr_t start, uintptr_t end) { reg_add(&g_own, start, end); }
void sfp_own_remove(uintptr_t start, uintptr_t end) { reg_remove(&g_own, start, end); }
bool sfp_own_overlaps(uintptr_t start, uintptr_t end) { return reg_overlaps(&g_own, start, end); }
void sfp_excl_add(uintptr_t start, uintptr_t end) { reg_add(&g_excl, start, end); }
void sfp_excl_remove(uintptr_t start, uintptr_t end) { reg_remove(&g_excl, start, end); }
bool sfp_excl_overlaps(uintptr_t start, uintptr_t end) { return reg_overlaps(&g_excl, start, end); }

/* ------------------------------------------------------------------------
 * Private heap: power-of-two classes from 16 bytes to 64 KiB carved from
 * 1 MiB slabs, larger blocks mapped one by one.  A 16-byte header holds a
 * magic and the class, so free() can tell our blocks from libc's.
 * ------------------------------------------------------------------------ */
#define HDR 16u
#define MIN_SHIFT 4
#define MAX_SHIFT 16
#define NCLASS (MAX_SHIFT - MIN_SHIFT + 1)
#define SLAB (1u << 20)
#define MAGIC 0x5346504845415021ull /* "SFPHEAP!" */
#define BIG_CLASS 0xff

struct hdr {
    uint64_t magic;
    uint32_t cls;
    uint32_t big_pages; /* big blocks: mapping length in pages */
};
struct free_blk {
    struct free_blk *next;
};

static pthread_mutex_t g_heap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct free_blk *g_free[NCLASS];
static char *g_bump, *g_bump_end;

static void *map_own(size_t len)
{
    void *p = sfp_real_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    sfp_own_add((uintptr_t)p, (uintptr_t)p + len);
    return p;
}

static unsigned class_of(size_t n)
{
    size_t need = n + HDR;
    unsigned c = MIN_SHIFT;
    while (((size_t)1 << c) < need)
        c++;
    return c - MIN_SHIFT;
}

void *sfp_malloc(size_t n)
{
    if (n > ((size_t)1 << MAX_SHIFT) - HDR) {
        if (n > SIZE_MAX / 2) {
            errno = ENOMEM;
            return NULL;
        }
        size_t len = (n + HDR + 4095) & ~(size_t)4095;
        struct hdr *h = map_own(len);
        if (!h) {
            errno = ENOMEM;
            return NULL;
        }
        h->magic = MAGIC;
        h->cls = BIG_CLASS;
        h->big_pages = (uint32_t)(len >> 12);
        return (char *)h + HDR;
    }
    unsigned c = class_of(n);
    size_t sz = (size_t)1 << (c + MIN_SHIFT);
    pthread_mutex_lock(&g_heap_lock);
    struct hdr *h;
    if (g_free[c]) {
        h = (struct hdr *)g_free[c];
        g_free[c] = g_free[c]->next;
    } else {
        if ((size_t)(g_bump_end - g_bump) < sz) {
            char *s = map_own(SLAB);
            if (!s) {
                pthread_mutex_unlock(&g_heap_lock);
                errno = ENOMEM;
                return NULL;
            }
            g_bump = s;
            g_bump_end = s + SLAB;
        }
        h = (struct hdr *)g_bump;
        g_bump += sz;
    }
    pthread_mutex_unlock(&g_heap_lock);
    h->magic = MAGIC;
    h->cls = c;
    h->big_pages = 0;
    return (char *)h + HDR;
}

void *sfp_calloc(size_t n, size_t m)
{
    if (m && n > SIZE_MAX / m) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = sfp_malloc(n * m);
    if (p)
        memset(p, 0, n * m);
    return p;
}

static size_t usable(const struct hdr *h)
{
    if (h->cls == BIG_CLASS)
        return ((size_t)h->big_pages << 12) - HDR;
    return ((size_t)1 << (h->cls + MIN_SHIFT)) - HDR;
}

static bool ours(const void *p)
{
    const struct hdr *h = (const struct hdr *)((const char *)p - HDR);
    return h->magic == MAGIC && (h->cls < NCLASS || h->cls == BIG_CLASS);
}

static void foreign_free(void *p)
{
    /* A block from libc (never expected: the preload frees only what it
     * allocated); hand it back to libc rather than corrupt our lists. */
    static void (*libc_free)(void *);
    if (!libc_free)
        libc_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    if (libc_free)
        libc_free(p);
}

void sfp_free(void *p)
{
    if (!p)
        return;
    if (!ours(p)) {
        foreign_free(p);
        return;
    }
    struct hdr *h = (struct hdr *)((char *)p - HDR);
    h->magic = 0;
    if (h->cls == BIG_CLASS) {
        size_t len = (size_t)h->big_pages << 12;
        sfp_own_remove((uintptr_t)h, (uintptr_t)h + len);
        sfp_real_munmap(h, len);
        return;
    }
    unsigned c = h->cls;
    pthread_mutex_lock(&g_heap_lock);
    ((struct free_blk *)h)->next = g_free[c];
    g_free[c] = (struct free_blk *)h;
    pthread_mutex_unlock(&g_heap_lock);
}

void *sfp_realloc(void *p, size_t n)
{
    if (!p)
        return sfp_malloc(n);
    if (!n) {
        sfp_free(p);
        return NULL;
    }
    if (!ours(p)) {
        errno = ENOMEM; /* never expected, see foreign_free */
        return NULL;
    }
    size_t have = usable((struct hdr *)((char *)p - HDR));
    if (n <= have)
        return p;
    void *q = sfp_malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, have);
    sfp_free(p);
    return q;
}

char *sfp_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = sfp_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* fork: the child inherits the heap as it was; the lock may have been held
 * by a thread that does not exist there. */
void sfp_heap_atfork_prepare(void) { pthread_mutex_lock(&g_heap_lock); }
void sfp_heap_atfork_parent(void) { pthread_mutex_unlock(&g_heap_lock); }
void sfp_heap_atfork_child(void)
{
    pthread_mutex_init(&g_heap_lock, NULL);
    atomic_flag_clear(&g_own.lock);
    atomic_flag_clear(&g_excl.lock);
}
