/* util.c - sfbench helpers shared by every scenario: statistics, RESULT
 * output, option parsing, resident test regions and /proc readers. */
#include "sfbench.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

double stat_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double stat_min(const double *v, size_t n)
{
    double m = n ? v[0] : 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] < m)
            m = v[i];
    return m;
}

double stat_max(const double *v, size_t n)
{
    double m = n ? v[0] : 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

uint64_t stat_pct_u64(uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    /* nearest rank: the smallest value with at least p% of samples <= it */
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

/* ---- output ---- */

void result(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("RESULT ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
}

const char *quote_safe(const char *s, char *buf, size_t n)
{
    size_t i = 0;
    for (; s && s[i] && i + 1 < n; i++)
        buf[i] = (s[i] == '"' || s[i] == '\n' || s[i] == '\\') ? '\'' : s[i];
    buf[i] = 0;
    return buf;
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sfbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

void die_async(const char *msg)
{
    ssize_t r = write(2, msg, strlen(msg));
    (void)r;
    _exit(3);
}

void result_failed(const char *key_vals, const struct mech *m, int rc, const char *stage)
{
    char why[300], msg[400];
    const char *status = (m->flags & MECH_ABSENT)                     ? "not-built"
                         : rc == -ENOTSUP && (m->flags & MECH_ENGINE) ? "skip"
                         : rc == -ENOTSUP                             ? "unsupported"
                                                                      : "error";
    snprintf(msg, sizeof msg, "%s: %s", stage, m->why[0] ? m->why : strerror(-rc));
    result("%s status=%s err=%d reason=\"%s\"", key_vals, status, rc,
           quote_safe(msg, why, sizeof why));
}

/* ---- options ---- */

#define MAX_OPTS 32
static struct {
    const char *key, *val;
    int used;
} opts[MAX_OPTS];
static int n_opts;

void opt_init(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0 || i + 1 >= argc)
            die("expected --key value, got '%s'", argv[i]);
        if (n_opts == MAX_OPTS)
            die("too many options");
        opts[n_opts].key = argv[i] + 2;
        opts[n_opts].val = argv[++i];
        n_opts++;
    }
}

const char *opt_str(const char *key, const char *def)
{
    for (int i = 0; i < n_opts; i++)
        if (strcmp(opts[i].key, key) == 0) {
            opts[i].used = 1;
            return opts[i].val;
        }
    return def;
}

long opt_long(const char *key, long def)
{
    const char *v = opt_str(key, NULL);
    if (!v)
        return def;
    char *end;
    long x = strtol(v, &end, 0);
    if (*end)
        die("--%s: not an integer: %s", key, v);
    return x;
}

double opt_double(const char *key, double def)
{
    const char *v = opt_str(key, NULL);
    if (!v)
        return def;
    char *end;
    double x = strtod(v, &end);
    if (*end)
        die("--%s: not a number: %s", key, v);
    return x;
}

void opt_check_all_used(void)
{
    for (int i = 0; i < n_opts; i++)
        if (!opts[i].used)
            die("unknown option --%s for this subcommand", opts[i].key);
}

/* ---- memory ---- */

char *region_alloc(size_t len, int fill)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap %zu MiB: %s", len / MIB, strerror(errno));
    /* THP would make a whole 2 MiB look written and change every fault cost */
    if (madvise(p, len, MADV_NOHUGEPAGE) != 0)
        die("madvise(NOHUGEPAGE): %s", strerror(errno));
    /* one batched populate is much faster than 262144 first-touch faults */
    if (madvise(p, len, MADV_POPULATE_WRITE) != 0 && errno != EINVAL)
        die("madvise(POPULATE_WRITE): %s", strerror(errno));
    /* non-zero content, so that no zero-page elision flatters an image writer */
    for (size_t off = 0; fill && off < len; off += PAGE_4K)
        *(uint64_t *)(p + off) = 0x5346424e43480000ULL | (off >> PAGE_SHIFT_4K);
    return p;
}

void region_free(char *p, size_t len)
{
    if (p)
        munmap(p, len);
}

uint32_t *page_order(size_t total, size_t n, int random_order, uint64_t seed)
{
    if (n > total)
        n = total;
    uint32_t *v = malloc((random_order ? total : n) * sizeof *v + 1);
    if (!v)
        die("out of memory");
    if (!random_order) {
        for (size_t i = 0; i < n; i++)
            v[i] = (uint32_t)i;
        return v;
    }
    for (size_t i = 0; i < total; i++)
        v[i] = (uint32_t)i;
    uint64_t s = seed ? seed : 0x9e3779b97f4a7c15ULL;
    /* partial Fisher-Yates: the first n entries are a uniform random subset */
    for (size_t i = 0; i < n; i++) {
        size_t j = i + (size_t)(rng_next(&s) % (total - i));
        uint32_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    return v;
}

long proc_kb(pid_t pid, const char *file, const char *field)
{
    char path[64], line[256];
    if (pid)
        snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    else
        snprintf(path, sizeof path, "/proc/self/%s", file);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t fl = strlen(field);
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}
