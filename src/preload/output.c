/* output.c - output files: %p names created exclusively, a buffered writer
 * that fails once and quietly, and the descriptor the summary goes to. */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>

/* ------------------------------------------------------------------------
 * Output files.
 * ------------------------------------------------------------------------ */
static size_t expand(const char *tmpl, char *path, size_t cap, bool *had_pid)
{
    size_t n = 0;
    *had_pid = false;
    for (const char *p = tmpl; *p && n + 1 < cap; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            n += sfp_fmt(path + n, cap - n, "%d", (int)sfp_pid);
            *had_pid = true;
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            path[n++] = '%';
            p++;
        } else {
            path[n++] = *p;
        }
    }
    path[n] = 0;
    return n;
}

int sfp_create_output(const char *tmpl, char *path, size_t cap)
{
    bool had_pid;
    size_t n = expand(tmpl, path, cap, &had_pid);
    /* "-" is not stdout here: records are per process, and the program's
     * stdout is its own.  Refused, as `snapfault run` refuses it, and so are
     * devices (/dev/stdout, /dev/null; /dev/shm is a file system). */
    if (strcmp(path, "-") == 0 || (strncmp(path, "/dev/", 5) == 0 && strncmp(path, "/dev/shm/", 9) != 0) ||
        strncmp(path, "/proc/", 6) == 0)
        return -EINVAL;
    /* A directory (existing, or named with a trailing slash) holds one
     * record per process: DIR/snapfault.PID.sft. */
    struct stat st;
    bool slash = n && path[n - 1] == '/';
    if (slash || (sfp_raw_syscall(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, 0, 0, 0) == 0 &&
                  S_ISDIR(st.st_mode))) {
        if (slash)
            sfp_raw_syscall(SYS_mkdirat, AT_FDCWD, (long)path, 0700, 0, 0, 0);
        n += sfp_fmt(path + n, cap - n, "%ssnapfault.%d.sft", slash ? "" : "/", (int)sfp_pid);
        had_pid = true;
    }
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_APPEND;
    int fd = (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)path, flags, 0600, 0, 0);
    if (fd != -EEXIST)
        return fd;
    /* Something that is not a regular file (/dev/stdout, a fifo, a
     * device) is not a record: never create a file beside it (in /dev). */
    if (sfp_raw_syscall(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, AT_SYMLINK_NOFOLLOW, 0, 0) == 0 &&
        !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
        return -EINVAL;
    if (sfp_raw_syscall(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, 0, 0, 0) == 0 && !S_ISREG(st.st_mode))
        return -EINVAL;
    /* Taken already: by a parent or sibling of the same run (a fixed
     * name), or by the program this process was before an exec (same
     * pid).  This process writes beside it, never over it. */
    if (!had_pid)
        n += sfp_fmt(path + n, cap - n, ".%d", (int)sfp_pid);
    for (int i = 0; i < 1000 && (fd == -EEXIST); i++) {
        if (i)
            sfp_fmt(path + n, cap - n, ".%d", i);
        else
            path[n] = 0;
        fd = (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)path, flags, 0600, 0, 0);
    }
    return fd;
}

int sfp_create_dir(const char *tmpl, char *path, size_t cap)
{
    bool had_pid;
    expand(tmpl, path, cap, &had_pid);
    long rc = sfp_raw_syscall(SYS_mkdirat, AT_FDCWD, (long)path, 0700, 0, 0, 0);
    if (rc < 0 && rc != -EEXIST)
        return (int)rc;
    /* An existing directory is fine (images have unique names and are
     * created exclusively); a symlink is not followed. */
    return (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)path,
                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0, 0, 0);
}

void sfp_out_flush(struct sfp_out *o)
{
    if (!o || o->failed || !o->n)
        return;
    size_t off = 0;
    while (off < o->n) {
        long w = sfp_raw_syscall(SYS_write, o->fd, (long)(o->buf + off), (long)(o->n - off), 0, 0, 0);
        if (w == -EINTR)
            continue;
        if (w <= 0) {
            sfp_warn_once(SFP_ONCE_OUTPUT, "cannot write %s: %s; no more records are written",
                          sfp_track_path, w < 0 ? sfp_errstr((int)w) : "short write");
            o->failed = true;
            sfp_raw_syscall(SYS_close, o->fd, 0, 0, 0, 0, 0);
            o->fd = -1;
            break;
        }
        off += (size_t)w;
    }
    o->n = 0;
}

void sfp_out_printf(struct sfp_out *o, const char *fmt, ...)
{
    if (!o || o->failed)
        return;
    if (sizeof(o->buf) - o->n < 1024)
        sfp_out_flush(o);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->n, sizeof(o->buf) - o->n, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->n += (size_t)n < sizeof(o->buf) - o->n ? (size_t)n : sizeof(o->buf) - o->n - 1;
}

/* The summary (SHOW_STATS, STATS_FILE) goes to a descriptor taken at
 * start-up: a dup of stderr as it was then (the program may close or
 * redirect its own later), or the stats file opened for appending.  Both
 * are close-on-exec: a program this one executes opens its own.  -1: none. */
static int g_stats_fd = -1;
static dev_t g_stats_dev;
static ino_t g_stats_ino;

/* The descriptor, if it is still the file it was: a program that closed
 * it and opened something else at the same number gets stderr instead. */
int sfp_stats_fd(void)
{
    struct stat st;
    if (g_stats_fd < 0)
        return -1;
    if (sfp_raw_syscall(SYS_fstat, g_stats_fd, (long)&st, 0, 0, 0, 0) != 0 || st.st_dev != g_stats_dev ||
        st.st_ino != g_stats_ino)
        return 2;
    return g_stats_fd;
}

static void stats_remember(int fd)
{
    struct stat st;
    g_stats_fd = fd;
    if (fd >= 0 && sfp_raw_syscall(SYS_fstat, fd, (long)&st, 0, 0, 0, 0) == 0) {
        g_stats_dev = st.st_dev;
        g_stats_ino = st.st_ino;
    }
}

/* A descriptor far above the program's usual ones, close-on-exec. */
static int dup_high(int fd)
{
    static const int floors[] = {1000, 100, 10};
    for (size_t i = 0; i < sizeof(floors) / sizeof(floors[0]); i++) {
        long r = sfp_raw_syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floors[i], 0, 0, 0);
        if (r >= 0)
            return (int)r;
    }
    return -1;
}

void sfp_stats_open(void)
{
    const char *file = sfp_opt_str(SFP_OPT_STATS_FILE);
    if (sfp_opt_explicit(SFP_OPT_STATS_FILE) && *file) {
        int fd = (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)file,
                                      O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600, 0, 0);
        if (fd < 0) {
            sfp_warn("cannot open the stats file %s: %s; the summary goes to stderr", file, sfp_errstr(fd));
        } else {
            int hi = dup_high(fd);
            if (hi >= 0) {
                sfp_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
                fd = hi;
            }
            stats_remember(fd);
            return;
        }
    } else if (!sfp_opt_val(SFP_OPT_SHOW_STATS)) {
        return;
    }
    stats_remember(dup_high(2));
}
