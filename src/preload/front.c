/* front.c - the runtime's SIGSEGV/SIGBUS entry, in front of the library's:
 * attribution samples, and a guard for the image writer, then the library. */
#include "runtime.h"
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>

static struct sigaction g_lib_segv, g_lib_bus;
static _Atomic int g_installed;
_Atomic int sfp_attr_active;

/* The image writer reads live memory of pages protected since the take.
 * libc can unmap such memory with its internal munmap (free of a large
 * block) or cover it with an inaccessible mapping (arena shrink), which the
 * interposers never see.  While this thread writes an image, such a fault
 * gets a temporary readable page (zeros: the memory was released) and the
 * write goes on; the pages are given back afterwards.  The runtime's own
 * threads never fault on unmapped memory otherwise, so nothing of the
 * program's is ever patched. */
#define PATCH_MAX 512
struct patch {
    uintptr_t page;
    size_t len;
    bool mapped; /* we mapped it (else: made it readable) */
};
static __thread struct patch *tls_patches __attribute__((tls_model("initial-exec")));
static __thread unsigned tls_npatches __attribute__((tls_model("initial-exec")));
static __thread bool tls_patch_overflow __attribute__((tls_model("initial-exec")));

static bool patch_fault(int sig, siginfo_t *si, const ucontext_t *uc)
{
    /* Only reads: a write by this thread to tracked memory (libraries it
     * calls allocate with libc's malloc) is an ordinary tracked write. */
    if (!tls_patches || sig != SIGSEGV || si->si_code <= 0 || (uc->uc_mcontext.gregs[REG_ERR] & 2) ||
        tls_npatches >= PATCH_MAX) {
        if (tls_patches && tls_npatches >= PATCH_MAX)
            tls_patch_overflow = true;
        return false;
    }
    uintptr_t page = (uintptr_t)si->si_addr & ~(uintptr_t)(sf_page_size - 1);
    /* only memory the tracker still believes in */
    unsigned g = sf__grace_enter();
    struct sf_region *r = sf__region_find(page);
    uintptr_t rend = r ? r->end : 0;
    sf__grace_exit(g);
    if (!r)
        return false;
    if (si->si_code == SEGV_MAPERR) {
        /* The whole hole at once if it can be had (libc trims megabytes),
         * halving until nothing else is in the way. */
        for (size_t len = rend - page; len >= sf_page_size; len = (len / 2) & ~(sf_page_size - 1)) {
            long m = sfp_raw_syscall(SYS_mmap, (long)page, (long)len, PROT_READ,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (m == (long)page) {
                tls_patches[tls_npatches++] = (struct patch){page, len, true};
                return true;
            }
            if (m >= 0) /* an old kernel placed it elsewhere: give it back */
                sfp_raw_syscall(SYS_munmap, m, (long)len, 0, 0, 0, 0);
            if (len == sf_page_size)
                break;
        }
        return false;
    }
    if (si->si_code == SEGV_ACCERR) {
        /* an inaccessible mapping libc put there; readable for the write */
        if (sfp_raw_syscall(SYS_mprotect, (long)page, (long)sf_page_size, PROT_READ, 0, 0, 0) != 0)
            return false;
        tls_patches[tls_npatches++] = (struct patch){page, sf_page_size, false};
        return true;
    }
    return false;
}

void sfp_patch_begin(void)
{
    if (!tls_patches)
        tls_patches = sfp_calloc(PATCH_MAX, sizeof(*tls_patches));
    tls_npatches = 0;
    tls_patch_overflow = false;
}

unsigned sfp_patch_end(void)
{
    unsigned n = tls_npatches;
    for (unsigned i = 0; i < n; i++) {
        if (tls_patches[i].mapped)
            sfp_raw_syscall(SYS_munmap, (long)tls_patches[i].page, (long)tls_patches[i].len, 0, 0, 0, 0);
        else
            sfp_raw_syscall(SYS_mprotect, (long)tls_patches[i].page, (long)tls_patches[i].len, PROT_NONE, 0, 0, 0);
    }
    tls_npatches = 0;
    if (tls_patches) {
        sfp_free(tls_patches);
        tls_patches = NULL;
    }
    return n;
}

static void front_entry(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    if (tls_patches && patch_fault(sig, si, uc)) {
        errno = saved;
        return; /* the read is retried on a readable page */
    }
    if (atomic_load_explicit(&sfp_attr_active, memory_order_relaxed))
        sfp_attr_sample(sig, si, uc);
    errno = saved;
    const struct sigaction *lib = sig == SIGSEGV ? &g_lib_segv : &g_lib_bus;
    lib->sa_sigaction(sig, si, uc);
}

/* Called once the library's handler is installed (tracker created). */
int sfp_front_install(void)
{
    if (atomic_load(&g_installed))
        return 0;
    struct sigaction mine, old;
    /* The library's handler first (again, if something replaced it), then
     * ours in front of it, registered as the one the library's re-install
     * checks keep (sf__signals_ensure). */
    int err = sf__signals_ensure();
    if (err)
        return err;
    if (sf__os_sigaction(SIGSEGV, NULL, &old) != 0 || !(old.sa_flags & SA_SIGINFO) || old.sa_sigaction == front_entry)
        return -ENOTSUP;
    g_lib_segv = old;
    if (sf__os_sigaction(SIGBUS, NULL, &old) != 0 || !(old.sa_flags & SA_SIGINFO))
        return -ENOTSUP;
    g_lib_bus = old;
    sf__signals_set_front(front_entry);
    mine = g_lib_segv; /* same mask (everything) and flags */
    mine.sa_sigaction = front_entry;
    if (sf__os_sigaction(SIGSEGV, &mine, NULL) != 0) {
        sf__signals_set_front(NULL);
        return -errno;
    }
    mine = g_lib_bus;
    mine.sa_sigaction = front_entry;
    if (sf__os_sigaction(SIGBUS, &mine, NULL) != 0) {
        sf__os_sigaction(SIGSEGV, &g_lib_segv, NULL);
        sf__signals_set_front(NULL);
        return -errno;
    }
    atomic_store(&g_installed, 1);
    return 0;
}
