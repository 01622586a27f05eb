/* util.c - process-wide constants, small file readers, names and messages.
 * Nothing here allocates; sf_strerror and the name functions are
 * async-signal-safe. */
#include "internal.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

size_t sf_page_size = 4096;
unsigned sf_page_shift = 12;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int debug_fd = -1;

static void do_init(void)
{
    long ps = sf__os_page_size();
    if (ps > 0) {
        sf_page_size = (size_t)ps;
        sf_page_shift = (unsigned)__builtin_ctzl((unsigned long)ps);
    }
    /* The library prints nothing unless asked: SNAPFAULT_DEBUG=1 sends
     * diagnostics to stderr. */
    const char *d = sf__os_getenv("SNAPFAULT_DEBUG");
    if (d && *d && strcmp(d, "0") != 0)
        debug_fd = 2;
}

void sf__init(void)
{
    pthread_once(&init_once, do_init);
    sf__grace_init();
}

void sf__debug(const char *fmt, ...)
{
    if (debug_fd < 0)
        return;
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "snapfault: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + ((size_t)m < sizeof(buf) - (size_t)n - 1 ? (size_t)m : sizeof(buf) - (size_t)n - 2);
    buf[len++] = '\n';
    ssize_t w = sf__os_write(debug_fd, buf, len);
    (void)w;
}

long sf__read_long_file(const char *path, long dflt)
{
    int fd = sf__os_open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return dflt;
    char buf[64];
    ssize_t n = sf__os_read(fd, buf, sizeof(buf) - 1);
    sf__os_close(fd);
    if (n <= 0)
        return dflt;
    buf[n] = 0;
    char *end;
    long v = strtol(buf, &end, 10);
    return end == buf ? dflt : v;
}

/* VMAs of this process: lines of /proc/self/maps. */
long sf__count_maps(void)
{
    int fd = sf__os_open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[8192];
    long lines = 0;
    ssize_t n;
    while ((n = sf__os_read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
    sf__os_close(fd);
    return lines;
}

static const char *const backend_names[SF_BACKEND_COUNT] = {
    [SF_BACKEND_AUTO] = "auto",
    [SF_BACKEND_UFFD_ASYNC] = "uffd-async",
    [SF_BACKEND_UFFD_SYNC] = "uffd-sync",
    [SF_BACKEND_MPROTECT] = "mprotect",
    [SF_BACKEND_SOFTDIRTY] = "soft-dirty",
};

SF_API const char *sf_backend_name(sf_backend b)
{
    return (unsigned)b < SF_BACKEND_COUNT ? backend_names[b] : NULL;
}

SF_API int sf_backend_parse(const char *name)
{
    if (!name)
        return -EINVAL;
    for (int b = 0; b < SF_BACKEND_COUNT; b++) {
        const char *n = backend_names[b];
        size_t i = 0;
        while (n[i] && (name[i] == n[i] || (n[i] == '-' && name[i] == '_')))
            i++;
        if (!n[i] && !name[i])
            return b;
    }
    if (strcmp(name, "softdirty") == 0)
        return SF_BACKEND_SOFTDIRTY;
    return -EINVAL;
}

SF_API const char *sf_fault_mode_name(sf_fault_mode m)
{
    switch (m) {
    case SF_FAULTS_NONE: return "none (kernel-resolved)";
    case SF_FAULTS_SIGNAL: return "SIGSEGV in the faulting thread";
    case SF_FAULTS_INTHREAD: return "in-thread (SIGBUS)";
    case SF_FAULTS_HANDLER_THREAD: return "handler threads";
    }
    return "unknown";
}

SF_API const char *sf_strerror(int code)
{
    /* Negate in unsigned: -INT_MIN does not exist. */
    unsigned u = code < 0 ? 0u - (unsigned)code : (unsigned)code;
    int err = u > 4095 ? -1 : (int)u;
    switch (err) {
    case 0: return "success";
    case EINVAL: return "invalid argument (NULL, unaligned or zero-length range, bad flag)";
    case EEXIST: return "range overlaps one already tracked";
    case ENOENT: return "range not tracked (or not in this snapshot or image)";
    case ENOTSUP: return "not supported by this kernel or process (see sf_probe)";
    case ENOMEM: return "out of memory";
    case ENOSPC: return "snapshot failed: page store or VMA budget exhausted";
    case ESTALE: return "snapshot invalidated by restoring an older snapshot";
    case EAGAIN: return "too many live snapshots";
    case EBADMSG: return "image is truncated or corrupted";
    case EPROTO: return "image has an unknown format version";
    case EFBIG: return "image declares impossible sizes";
    case ENODATA: return "page not held by this incremental image (read its parent)";
    case ECHILD: return "tracker belongs to the parent process (after fork)";
    case EBUSY: return "busy: another soft-dirty tracker or uffd owns the range";
    case EFAULT: return "bad address";
    case EPERM: return "operation not permitted";
    case EIO: return "input/output error";
    case EBADF: return "bad file descriptor";
    default: {
        const char *d = err > 0 ? strerrordesc_np(err) : NULL;
        return d ? d : "unknown error";
    }
    }
}
