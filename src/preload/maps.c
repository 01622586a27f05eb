/* maps.c - reading /proc/self/maps and the writable segments of loaded
 * objects, without stdio or libc's allocator (both could be tracked). */
#include "runtime.h"

#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

char *sfp_maps_read(size_t *len)
{
    return sfp_proc_read("/proc/self/maps", len);
}

char *sfp_proc_read(const char *path, size_t *len)
{
    int fd = (int)sfp_raw_syscall(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_CLOEXEC, 0, 0, 0);
    if (fd < 0)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = sfp_malloc(cap);
    while (buf) {
        if (cap - n < 4096) {
            char *nb = sfp_realloc(buf, cap * 2);
            if (!nb) {
                sfp_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        long r = sfp_raw_syscall(SYS_read, fd, (long)(buf + n), (long)(cap - n - 1), 0, 0, 0);
        if (r == -4 /* EINTR */)
            continue;
        if (r < 0) {
            sfp_free(buf);
            buf = NULL;
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    sfp_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

static uintptr_t hex(char **p, char *end)
{
    uintptr_t v = 0;
    while (*p < end) {
        char c = **p;
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            break;
        v = v * 16 + d;
        (*p)++;
    }
    return v;
}

static void skip_spaces(char **p, char *end)
{
    while (*p < end && **p == ' ')
        (*p)++;
}

/* "start-end perms offset dev inode   path" */
bool sfp_maps_next(char **cursor, char *end, struct sfp_mapline *ml)
{
    char *p = *cursor;
    if (p >= end)
        return false;
    char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
        eol = end;
    ml->start = hex(&p, eol);
    if (p < eol && *p == '-')
        p++;
    ml->end = hex(&p, eol);
    skip_spaces(&p, eol);
    for (int i = 0; i < 4; i++)
        ml->perms[i] = p < eol ? *p++ : '-';
    ml->perms[4] = 0;
    skip_spaces(&p, eol);
    ml->off = hex(&p, eol);
    skip_spaces(&p, eol);
    while (p < eol && *p != ' ')
        p++; /* dev */
    skip_spaces(&p, eol);
    ml->inode = 0;
    while (p < eol && *p >= '0' && *p <= '9')
        ml->inode = ml->inode * 10 + (unsigned long)(*p++ - '0');
    skip_spaces(&p, eol);
    ml->path = p;
    ml->pathlen = (size_t)(eol - p);
    *eol = 0;
    *cursor = eol + 1;
    return true;
}

struct objs_ctx {
    struct sfp_object *out;
    size_t max, n;
    bool first;
};

static int obj_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct objs_ctx *c = arg;
    bool main = c->first;
    c->first = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W) || c->n == c->max)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        struct sfp_object *o = &c->out[c->n++];
        o->lo = lo & ~(uintptr_t)4095;
        o->hi = (hi + 4095) & ~(uintptr_t)4095;
        o->main = main;
        const char *name = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "(main)";
        const char *slash = strrchr(name, '/');
        sfp_fmt(o->name, sizeof(o->name), "%s", slash ? slash + 1 : name);
    }
    return 0;
}

size_t sfp_objects(struct sfp_object *out, size_t max)
{
    /* The first object dl_iterate_phdr reports is the main program. */
    struct objs_ctx c = {out, max, 0, true};
    dl_iterate_phdr(obj_cb, &c);
    return c.n;
}

/* /proc/self/smaps: the VMAs that hold transparent huge pages now
 * (AnonHugePages) or are marked for them (MADV_HUGEPAGE: "hg" in VmFlags,
 * unless "nh" too), in address order. */
size_t sfp_thp_ranges(struct sfp_thp_range **out)
{
    size_t len, n = 0, cap = 0;
    *out = NULL;
    char *buf = sfp_proc_read("/proc/self/smaps", &len);
    if (!buf)
        return 0;
    struct sfp_thp_range cur = {0, 0, 0, false};
    bool have = false;
    char *p = buf, *end = buf + len;
    while (p < end) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        char c = *p;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
            struct sfp_mapline ml;
            char *q = p;
            if (sfp_maps_next(&q, eol, &ml)) {
                cur = (struct sfp_thp_range){ml.start, ml.end, 0, false};
                have = true;
            }
        } else if (have && eol - p > 14 && strncmp(p, "AnonHugePages:", 14) == 0) {
            char *q = p + 14;
            while (q < eol && *q == ' ')
                q++;
            while (q < eol && *q >= '0' && *q <= '9')
                cur.huge_kb = cur.huge_kb * 10 + (unsigned long)(*q++ - '0');
        } else if (have && eol - p > 8 && strncmp(p, "VmFlags:", 8) == 0) {
            *eol = 0;
            cur.marked = strstr(p, " hg") && !strstr(p, " nh");
            if (cur.huge_kb || cur.marked) {
                if (n == cap) {
                    size_t nc = cap ? 2 * cap : 16;
                    struct sfp_thp_range *o2 = sfp_realloc(*out, nc * sizeof(**out));
                    if (!o2)
                        break;
                    *out = o2;
                    cap = nc;
                }
                (*out)[n++] = cur;
            }
            have = false;
        }
        p = eol + 1;
    }
    sfp_free(buf);
    return n;
}
