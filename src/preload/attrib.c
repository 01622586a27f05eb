/* attrib.c - write attribution: the call stack of the first write to a page
 * after a reset, sampled with libunwind from the fault's ucontext. */
#include "runtime.h"
#include "record.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#ifdef SFP_HAVE_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>

static int g_depth;

#define NSTACKS 4096 /* power of two */
#define MAXDEPTH 16
struct stack_rec {
    _Atomic uint64_t hash; /* 0 = free */
    _Atomic uint64_t pages;
    uint32_t depth;
    uintptr_t ip[MAXDEPTH];
    _Atomic int ready;
};
static struct stack_rec g_stacks[NSTACKS];
static _Atomic uint64_t g_dropped, g_sampled;

static uint64_t hash_ips(const uintptr_t *ip, unsigned n)
{
    uint64_t h = 1469598103934665603ull;
    for (unsigned i = 0; i < n; i++) {
        h ^= ip[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

/* Async-signal-safe: a lock-free open-addressing table. */
static void record(const uintptr_t *ip, unsigned n)
{
    uint64_t h = hash_ips(ip, n);
    for (unsigned probe = 0; probe < 64; probe++) {
        struct stack_rec *r = &g_stacks[(h + probe) & (NSTACKS - 1)];
        uint64_t cur = atomic_load(&r->hash);
        if (cur == 0) {
            if (atomic_compare_exchange_strong(&r->hash, &cur, h)) {
                r->depth = n;
                memcpy(r->ip, ip, n * sizeof(ip[0]));
                atomic_store(&r->ready, 1);
                atomic_fetch_add(&r->pages, 1);
                return;
            }
        }
        if (cur == h) {
            atomic_fetch_add(&r->pages, 1);
            return;
        }
    }
    atomic_fetch_add(&g_dropped, 1);
}

/* Is this fault the first write to a tracked page since its last reset? */
static bool first_write(uintptr_t addr)
{
    return sf__embed_page_state(addr, NULL) == SF_EMBED_ARMED_CLEAN;
}

/* Sampling in a signal handler, and why it takes no lock a fault could
 * hold:
 *  - libunwind's caches are per thread (UNW_CACHE_PER_THREAD) and its TLS
 *    is static (loaded at start-up with the preload), so no __tls_get_addr
 *    allocation and no global cache lock; it does not call malloc, so a
 *    fault inside malloc (arena lock held) is unwound safely;
 *  - unw_step finds unwind tables through dl_iterate_phdr, which takes the
 *    loader's recursive dl_load_write_lock: another thread holding it does
 *    so briefly and never waits for this one (the sample runs before the
 *    library resolves the fault, so this thread owns no page); this thread
 *    holding it means the fault hit the loader while it links a new object
 *    into the list the walk would read: such faults (an ip inside ld.so)
 *    are not sampled.
 * The loader's text, found once at start-up. */
static uintptr_t g_ldso_lo, g_ldso_hi;

static int find_ldso(struct dl_phdr_info *info, size_t size, void *arg)
{
    if (!info->dlpi_name || !strstr(info->dlpi_name, "/ld-linux"))
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (!g_ldso_lo || lo < g_ldso_lo)
            g_ldso_lo = lo;
        if (hi > g_ldso_hi)
            g_ldso_hi = hi;
    }
    return 1;
}

static _Atomic uint64_t g_in_loader;

/* Called by front.c's fault hook, before the library resolves the fault. */
void sfp_attr_sample(int sig, siginfo_t *si, void *uc)
{
    uintptr_t fip = (uintptr_t)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
    if (fip >= g_ldso_lo && fip < g_ldso_hi) {
        atomic_fetch_add(&g_in_loader, 1);
        return;
    }
    if (si->si_code > 0 && ((sig == SIGSEGV && si->si_code == SEGV_ACCERR) ||
                            (sig == SIGBUS && si->si_code == BUS_ADRERR)) &&
        first_write((uintptr_t)si->si_addr)) {
        sfp_in_runtime++; /* libunwind may map memory: straight to libc */
        unw_cursor_t cur;
        uintptr_t ip[MAXDEPTH];
        unsigned n = 0;
        if (unw_init_local2(&cur, (unw_context_t *)uc, UNW_INIT_SIGNAL_FRAME) == 0) {
            do {
                unw_word_t pc;
                if (unw_get_reg(&cur, UNW_REG_IP, &pc) < 0 || !pc)
                    break;
                ip[n++] = (uintptr_t)pc;
            } while (n < (unsigned)g_depth && unw_step(&cur) > 0);
        }
        if (n) {
            record(ip, n);
            atomic_fetch_add(&g_sampled, 1);
        }
        sfp_in_runtime--;
    }
}

int sfp_attr_start(int depth)
{
    g_depth = depth < 1 ? 1 : depth > MAXDEPTH ? MAXDEPTH : depth;
    /* Per-thread caches keep unw_step off locks in signal handlers; one
     * unwind now does libunwind's own lazy set-up outside of them. */
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    dl_iterate_phdr(find_ldso, NULL);
    void *warm[4];
    unw_backtrace(warm, 4);
    int err = sfp_front_install();
    if (err)
        return err;
    atomic_store(&sfp_attr_active, 1);
    return 0;
}

static int cmp_pages(const void *a, const void *b)
{
    uint64_t x = atomic_load(&(*(struct stack_rec *const *)a)->pages);
    uint64_t y = atomic_load(&(*(struct stack_rec *const *)b)->pages);
    return x < y ? 1 : x > y ? -1 : 0;
}

static size_t frame_name(uintptr_t ip, char *buf, size_t cap)
{
    Dl_info info;
    /* return addresses point after the call: look up ip-1 */
    if (dladdr((void *)(ip - 1), &info) && info.dli_fname) {
        const char *obj = strrchr(info.dli_fname, '/');
        obj = obj ? obj + 1 : info.dli_fname;
        if (info.dli_sname)
            return sfp_fmt(buf, cap, "%s+%#lx (%s)", info.dli_sname,
                           (unsigned long)(ip - (uintptr_t)info.dli_saddr), obj);
        return sfp_fmt(buf, cap, "%s+%#lx", obj, (unsigned long)(ip - (uintptr_t)info.dli_fbase));
    }
    return sfp_fmt(buf, cap, "%#lx", (unsigned long)ip);
}

void sfp_attr_report(int fd, int top, bool text)
{
    if (fd < 0)
        return;
    struct stack_rec **v = sfp_malloc(NSTACKS * sizeof(*v));
    if (!v)
        return;
    size_t k = 0;
    for (size_t i = 0; i < NSTACKS; i++)
        if (atomic_load(&g_stacks[i].ready))
            v[k++] = &g_stacks[i];
    qsort(v, k, sizeof(*v), cmp_pages);
    char line[2048];
    size_t n;
    if (text) {
        n = sfp_fmt(line, sizeof(line), "snapfault: top writers (first writes after a reset, %llu sampled):\n",
                    (unsigned long long)atomic_load(&g_sampled));
        sfp_write_all(fd, line, n);
    }
    for (size_t i = 0; i < k && (int)i < top; i++) {
        n = text ? sfp_fmt(line, sizeof(line), "snapfault: %10llu pages  ", (unsigned long long)v[i]->pages)
                 : sfp_fmt(line, sizeof(line), SFP_REC_ATTR "\t%llu\t", (unsigned long long)v[i]->pages);
        for (uint32_t d = 0; d < v[i]->depth && n < sizeof(line) - 200; d++) {
            if (d)
                n += sfp_fmt(line + n, sizeof(line) - n, "%s", text ? " <- " : ";");
            n += frame_name(v[i]->ip[d], line + n, sizeof(line) - n);
        }
        line[n++] = '\n';
        sfp_write_all(fd, line, n);
    }
    sfp_free(v);
}

#else /* !SFP_HAVE_LIBUNWIND */

void sfp_attr_sample(int sig, siginfo_t *si, void *uc) {}

int sfp_attr_start(int depth)
{
    sfp_warn_once(SFP_ONCE_ATTR, "write attribution was not built in (libunwind missing at build time)");
    return -ENOTSUP;
}

void sfp_attr_report(int fd, int top, bool text) {}

#endif
