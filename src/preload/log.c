/* log.c - the preload's only way to speak: a fixed prefix, a stack buffer and
 * write(2) to stderr, so messages are safe early, late and after fork. */
#include "preload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static bool g_verbose, g_quiet;
static _Atomic int g_once[SFP_ONCE_COUNT];

void sfp_log_init(bool verbose, bool quiet)
{
    g_verbose = verbose;
    g_quiet = quiet && !verbose;
}

void sfp_write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = (ssize_t)sfp_raw_syscall(SYS_write, fd, (long)buf, (long)len, 0, 0, 0);
        if (n == -EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

size_t sfp_fmt(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0) {
        buf[0] = 0;
        return 0;
    }
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

static void vmsg(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static void vmsg(const char *fmt, va_list ap)
{
    int saved = errno;
    char buf[640];
    size_t n = sfp_fmt(buf, sizeof(buf), "snapfault[%ld]: ", sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0));
    int m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
    if (m > 0)
        n += (size_t)m < sizeof(buf) - n - 1 ? (size_t)m : sizeof(buf) - n - 2;
    buf[n++] = '\n';
    sfp_write_all(2, buf, n);
    errno = saved;
}

void sfp_info(const char *fmt, ...)
{
    if (!g_verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
}

void sfp_warn(const char *fmt, ...)
{
    if (g_quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
}

void sfp_warn_once(enum sfp_once key, const char *fmt, ...)
{
    if (g_quiet || atomic_exchange(&g_once[key], 1))
        return;
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
}

const char *sfp_errstr(int err)
{
    const char *d = strerrordesc_np(err < 0 ? -err : err);
    return d ? d : "unknown error";
}
