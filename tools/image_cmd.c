/* image_cmd.c - `snapfault image info|verify|cat|diff`: inspects snapshot
 * images and the chains incremental images form, with the public sf_image_*
 * API only. */
#include "tools.h"

#include "snapfault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct img {
    char path[4096];
    int fd;
    sf_image *im;
    sf_image_info info;
    int open_err;
};

/* The images a command can see: those named, plus their directories'
 * *.sfimg siblings (so that a chain's parents are found). */
struct set {
    struct img *v;
    size_t n, cap;
};

static struct img *set_add(struct set *s, const char *path)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].path, path) == 0)
            return &s->v[i];
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v) {
            fprintf(stderr, "snapfault image: out of memory\n");
            exit(1);
        }
    }
    struct img *m = &s->v[s->n++];
    memset(m, 0, sizeof(*m));
    snprintf(m->path, sizeof(m->path), "%s", path);
    m->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (m->fd < 0) {
        m->open_err = -errno;
        return m;
    }
    m->open_err = sf_image_open(&m->im, m->fd);
    if (!m->open_err)
        sf_image_get_info(m->im, &m->info);
    return m;
}

static void set_free(struct set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i].im)
            sf_image_close(s->v[i].im);
        if (s->v[i].fd >= 0)
            close(s->v[i].fd);
    }
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static void add_dir(struct set *s, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 6 && strcmp(e->d_name + l - 6, ".sfimg") == 0) {
            names = realloc(names, (n + 1) * sizeof(*names));
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    /* names sort in sequence order (snap-PID-NNNNNN) */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        set_add(s, p);
        free(names[i]);
    }
    free(names);
}

static void dir_of(const char *path, char *out, size_t cap)
{
    snprintf(out, cap, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(out, cap, ".");
}

static struct img *find_id(struct set *s, uint64_t id)
{
    for (size_t i = 0; i < s->n; i++)
        if (!s->v[i].open_err && s->v[i].info.id == id)
            return &s->v[i];
    return NULL;
}

/* Reads len bytes at addr as of image m, following parents for pages an
 * incremental image does not hold. */
static int chain_read(struct set *s, struct img *m, uint64_t addr, void *buf, size_t len)
{
    for (int depth = 0; m && depth < 100000; depth++) {
        int rc = sf_image_read(m->im, addr, buf, len);
        if (rc != -ENODATA)
            return rc;
        if (!m->info.parent_id)
            return -ENODATA;
        m = find_id(s, m->info.parent_id);
    }
    return -ENODATA; /* parent missing */
}

static const char *errmsg(int err) { return sf_strerror(err); }

/* ------------------------------------------------------------------------
 * What a file is, when it is not an image: said instead of "damaged".
 * ------------------------------------------------------------------------ */
enum kind { K_OTHER, K_IMAGE, K_INDEX, K_TRACK, K_EMPTY, K_DIR, K_MISSING };

static enum kind file_kind(const char *path, const char **what)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return *what = strerror(errno), K_MISSING;
    if (S_ISDIR(st.st_mode))
        return *what = "a directory", K_DIR;
    if (!S_ISREG(st.st_mode))
        return *what = "not a regular file", K_OTHER;
    if (st.st_size == 0)
        return *what = "an empty file", K_EMPTY;
    char head[32] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, head, sizeof(head) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n >= 8 && memcmp(head, "SNAPFIMG", 8) == 0)
        return *what = "a snapfault image", K_IMAGE;
    if (n > 0 && strncmp(head, "#snapfault-snapshots", 20) == 0)
        return *what = "a snapshot index", K_INDEX;
    if (n > 0 && strncmp(head, "#snapfault-track", 16) == 0)
        return *what = "a track record", K_TRACK;
    return *what = "unknown content", K_OTHER;
}

/* ------------------------------------------------------------------------
 * Snapshot index files (doc/PRELOAD.md): the chain one process wrote.
 * ------------------------------------------------------------------------ */
struct ientry {
    unsigned long long seq;
    char file[256];
    uint64_t id, parent;
    char why[32];
};

struct index {
    char pid[32], backend[32];
    struct ientry *e;
    size_t n, nfailed;
    bool ended, clean, bad_line;
    char end_how[32], end_final[32], end_status[32];
    unsigned long long end_images;
};

static void field(const char *line, const char *key, char *out, size_t cap)
{
    out[0] = 0;
    size_t kl = strlen(key);
    for (const char *p = line; (p = strstr(p, key)); p++)
        if ((p == line || p[-1] == '\t' || p[-1] == ' ') && p[kl] == '=') {
            p += kl + 1;
            size_t i = 0;
            while (p[i] && p[i] != '\t' && p[i] != '\n' && p[i] != ' ' && i + 1 < cap) {
                out[i] = p[i];
                i++;
            }
            out[i] = 0;
            return;
        }
}

static int index_load(const char *path, struct index *ix)
{
    memset(ix, 0, sizeof(*ix));
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    char line[1024];
    bool first = true;
    while (fgets(line, sizeof(line), f)) {
        if (first) {
            first = false;
            if (strncmp(line, "#snapfault-snapshots", 20) != 0) {
                fclose(f);
                return -EBADMSG;
            }
            field(line, "pid", ix->pid, sizeof(ix->pid));
            field(line, "backend", ix->backend, sizeof(ix->backend));
            continue;
        }
        if (ix->ended) {
            ix->bad_line = true; /* nothing follows the end line */
            continue;
        }
        if (strncmp(line, "#end", 4) == 0) {
            ix->ended = true;
            sscanf(line, "#end %31s", ix->end_status);
            ix->clean = strcmp(ix->end_status, "clean") == 0;
            char v[32];
            field(line, "images", v, sizeof(v));
            ix->end_images = strtoull(v, NULL, 10);
            field(line, "how", ix->end_how, sizeof(ix->end_how));
            field(line, "final", ix->end_final, sizeof(ix->end_final));
            continue;
        }
        if (line[0] == 'F' && line[1] == '\t') {
            ix->nfailed++;
            continue;
        }
        if (line[0] != 'S' || line[1] != '\t') {
            ix->bad_line = ix->bad_line || line[0] != '#';
            continue;
        }
        struct ientry en;
        memset(&en, 0, sizeof(en));
        unsigned long long id, parent;
        if (sscanf(line, "S\t%llu\t%255s\t%llx\t%llx\t%*s\t%*s\t%*s\t%31s", &en.seq, en.file, &id, &parent,
                   en.why) < 4) {
            ix->bad_line = true;
            continue;
        }
        en.id = id;
        en.parent = parent;
        ix->e = realloc(ix->e, (ix->n + 1) * sizeof(*ix->e));
        if (!ix->e) {
            fclose(f);
            return -ENOMEM;
        }
        ix->e[ix->n++] = en;
    }
    fclose(f);
    return first ? -EBADMSG : 0;
}

/* One line saying how the chain ended. */
static void index_end_say(const char *path, const struct index *ix)
{
    if (!ix->ended)
        printf("%s: NO END MARK: %zu images listed; the process was killed (SIGKILL, a crash) or is still "
               "running\n", path, ix->n);
    else if (ix->clean)
        printf("%s: chain complete: %zu images, ended by %s, final image %s\n", path, ix->n, ix->end_how,
               strcmp(ix->end_final, "none") ? ix->end_final : "none (exit images off or the image limit reached)");
    else
        printf("%s: chain ended without a final image: %zu images, ended by %s%s\n", path, ix->n, ix->end_how,
               ix->nfailed ? " (an image failed)" : "");
}

/* ------------------------------------------------------------------------ */

static int print_range(void *addr, size_t len, void *arg)
{
    printf("  range %#014" PRIxPTR "-%#014" PRIxPTR "  %zu KiB\n", (uintptr_t)addr, (uintptr_t)addr + len,
           len >> 10);
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    bool ranges = false;
    int nfiles = 0, status = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ranges") == 0) {
            ranges = true;
            continue;
        }
        if (argv[i][0] == '-')
            usage_error("image info", "unknown option '%s'", argv[i]);
        nfiles++;
    }
    if (!nfiles)
        usage_error("image info", "missing IMAGE");
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            continue;
        const char *what;
        enum kind k = file_kind(argv[i], &what);
        if (k == K_INDEX) {
            struct index ix;
            int rc = index_load(argv[i], &ix);
            if (rc < 0) {
                printf("%s: cannot read the index: %s\n", argv[i], strerror(-rc));
                status = 1;
                continue;
            }
            printf("%s:\n  snapshot index of pid %s, backend %s\n", argv[i], ix.pid, ix.backend);
            for (size_t j = 0; j < ix.n; j++)
                printf("  image %llu  %s  %016" PRIx64 "  parent %016" PRIx64 "  %s\n", ix.e[j].seq, ix.e[j].file,
                       ix.e[j].id, ix.e[j].parent, ix.e[j].why);
            if (ix.nfailed)
                printf("  %zu images failed to write\n", ix.nfailed);
            if (!ix.ended)
                printf("  end     no end mark: killed, or still running\n");
            else
                printf("  end     %s, by %s, final image %s\n", ix.clean ? "complete" : "without a final image",
                       ix.end_how, ix.end_final);
            free(ix.e);
            continue;
        }
        if (k != K_IMAGE) {
            printf("%s: not a snapfault image (%s)\n", argv[i], what);
            status = 1;
            continue;
        }
        struct set s = {0};
        struct img *m = set_add(&s, argv[i]);
        if (m->open_err) {
            printf("%s: cannot open: %s\n", argv[i], m->fd < 0 ? strerror(-m->open_err) : errmsg(m->open_err));
            status = 1;
            set_free(&s);
            continue;
        }
        sf_image_info *f = &m->info;
        char when[64] = "?";
        time_t t = (time_t)(f->taken_ns / 1000000000);
        struct tm tm;
        if (localtime_r(&t, &tm))
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        printf("%s:\n", argv[i]);
        printf("  format version %u, page size %u\n", f->version, f->page_size);
        printf("  id      %016" PRIx64 "\n", f->id);
        if (f->parent_id)
            printf("  parent  %016" PRIx64 " (incremental)\n", f->parent_id);
        else
            printf("  parent  none (full image)\n");
        printf("  taken   %s.%03d\n", when, (int)((f->taken_ns / 1000000) % 1000));
        printf("  memory  %" PRIu64 " ranges, %.1f MiB\n", f->ranges, (double)f->bytes / 1048576.0);
        printf("  pages   %" PRIu64 " stored, %" PRIu64 " zero, %" PRIu64 " in the parent chain\n", f->pages_stored,
               f->pages_zero, f->pages_absent);
        if (ranges)
            sf_image_ranges(m->im, print_range, NULL);
        set_free(&s);
    }
    return status;
}

/* verify: every image's checksums, and for incremental ones a parent that is
 * present, verifies, and was taken earlier. */
static int cmd_verify(int argc, char **argv)
{
    struct set s = {0};
    size_t named = 0;
    int bad = 0, ok = 0;
    /* indexes named, or found in named directories: their ends are said */
    char **ixpaths = NULL;
    size_t nix = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            usage_error("image verify", "unknown option '%s'", argv[i]);
        named++;
    }
    if (!named)
        usage_error("image verify", "missing IMAGE, INDEX or DIR");
    for (int i = 1; i < argc; i++) {
        const char *what;
        enum kind k = file_kind(argv[i], &what);
        if (k == K_DIR) {
            size_t before = s.n;
            add_dir(&s, argv[i]);
            DIR *d = opendir(argv[i]);
            struct dirent *e;
            size_t nfound = 0;
            while (d && (e = readdir(d))) {
                size_t l = strlen(e->d_name);
                if (l > 6 && strcmp(e->d_name + l - 6, ".index") == 0) {
                    ixpaths = realloc(ixpaths, (nix + 1) * sizeof(*ixpaths));
                    if (asprintf(&ixpaths[nix], "%s/%s", argv[i], e->d_name) > 0)
                        nix++;
                    nfound++;
                }
            }
            if (d)
                closedir(d);
            if (s.n == before) {
                printf("%s: no snapfault images in this directory%s\n", argv[i],
                       nfound ? " (only index files: every process ended before its first image)" : "");
                bad++;
            }
        } else if (k == K_INDEX) {
            /* every image the index lists, found beside it */
            struct index ix;
            int rc = index_load(argv[i], &ix);
            if (rc < 0) {
                printf("%s: cannot read the index: %s\n", argv[i], strerror(-rc));
                bad++;
                continue;
            }
            char d[4096];
            dir_of(argv[i], d, sizeof(d));
            for (size_t j = 0; j < ix.n; j++) {
                char p[4096 + 256];
                snprintf(p, sizeof(p), "%s/%s", d, ix.e[j].file);
                struct img *m = set_add(&s, p);
                if (!m->open_err && (m->info.id != ix.e[j].id || m->info.parent_id != ix.e[j].parent)) {
                    printf("%s: DAMAGED: id or parent differ from the index %s\n", p, argv[i]);
                    bad++;
                }
            }
            if (ix.bad_line)
                printf("%s: warning: lines the index format does not have\n", argv[i]);
            if (ix.ended && ix.end_images != ix.n)
                printf("%s: warning: the end line counts %llu images, %zu are listed\n", argv[i], ix.end_images,
                       ix.n);
            free(ix.e);
            ixpaths = realloc(ixpaths, (nix + 1) * sizeof(*ixpaths));
            ixpaths[nix++] = strdup(argv[i]);
        } else if (k == K_IMAGE) {
            set_add(&s, argv[i]);
        } else {
            printf("%s: not a snapfault image (%s)\n", argv[i], what);
            bad++;
        }
    }
    size_t nnamed = s.n;
    /* parents may sit beside the named images */
    for (size_t i = 0; i < nnamed; i++) {
        char d[4096];
        dir_of(s.v[i].path, d, sizeof(d));
        add_dir(&s, d);
    }
    int *state = calloc(s.n ? s.n : 1, sizeof(int)); /* 0 unknown, 1 good, -1 bad */
    for (size_t i = 0; i < s.n; i++) {
        struct img *m = &s.v[i];
        if (m->open_err) {
            state[i] = -1;
            continue;
        }
        state[i] = sf_image_verify(m->im) == 0 ? 1 : -1;
    }
    for (size_t i = 0; i < nnamed; i++) {
        struct img *m = &s.v[i];
        if (m->open_err) {
            if (m->fd < 0)
                printf("%s: MISSING: %s\n", m->path, strerror(-m->open_err));
            else
                printf("%s: DAMAGED: %s\n", m->path, errmsg(m->open_err));
            bad++;
            continue;
        }
        if (state[i] < 0) {
            printf("%s: DAMAGED: checksum mismatch\n", m->path);
            bad++;
            continue;
        }
        /* walk the parent chain */
        struct img *c = m;
        int depth = 0;
        const char *problem = NULL;
        while (c->info.parent_id && depth++ < 100000) {
            struct img *p = find_id(&s, c->info.parent_id);
            if (!p) {
                problem = "parent image missing";
                break;
            }
            if (state[p - s.v] < 0) {
                problem = "parent image damaged";
                break;
            }
            if (p->info.taken_ns > c->info.taken_ns) {
                problem = "parent taken after its child";
                break;
            }
            c = p;
        }
        if (problem) {
            printf("%s: BROKEN CHAIN: %s (%016" PRIx64 ")\n", m->path, problem, c->info.parent_id);
            bad++;
        } else {
            printf("%s: ok (%s, chain of %d)\n", m->path, m->info.parent_id ? "incremental" : "full", depth + 1);
            ok++;
        }
    }
    free(state);
    for (size_t i = 0; i < nix; i++) {
        struct index ix;
        if (index_load(ixpaths[i], &ix) == 0)
            index_end_say(ixpaths[i], &ix);
        free(ix.e);
        free(ixpaths[i]);
    }
    free(ixpaths);
    set_free(&s);
    printf("%d ok, %d bad\n", ok, bad);
    return bad ? 1 : 0;
}

static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 0);
    if (errno || end == s || *end)
        return false;
    *v = x;
    return true;
}

static int cmd_cat(int argc, char **argv)
{
    bool raw = false;
    const char *args[3];
    int na = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--raw") == 0)
            raw = true;
        else if (argv[i][0] == '-' && argv[i][1] && !(argv[i][1] >= '0' && argv[i][1] <= '9'))
            usage_error("image cat", "unknown option '%s'", argv[i]);
        else if (na < 3)
            args[na++] = argv[i];
        else
            usage_error("image cat", "too many arguments");
    }
    uint64_t addr, len;
    if (na != 3)
        usage_error("image cat", "expected IMAGE ADDR LEN");
    if (!parse_u64(args[1], &addr) || !parse_u64(args[2], &len) || len == 0 || len > (1ull << 30))
        usage_error("image cat", "ADDR and LEN are numbers (0x... for hex), LEN up to 1 GiB");
    struct set s = {0};
    struct img *m = set_add(&s, args[0]);
    if (m->open_err) {
        fprintf(stderr, "snapfault image cat: %s: %s\n", args[0], m->fd < 0 ? strerror(-m->open_err) : errmsg(m->open_err));
        return 1;
    }
    char d[4096];
    dir_of(args[0], d, sizeof(d));
    add_dir(&s, d);
    m = set_add(&s, args[0]);
    unsigned char *buf = malloc(len);
    if (!buf)
        return 1;
    int rc = chain_read(&s, m, addr, buf, len);
    if (rc < 0) {
        fprintf(stderr, "snapfault image cat: %#" PRIx64 "+%" PRIu64 ": %s\n", addr, len, errmsg(rc));
        free(buf);
        return 1;
    }
    if (raw) {
        fwrite(buf, 1, len, stdout);
    } else {
        for (uint64_t o = 0; o < len; o += 16) {
            printf("%016" PRIx64 "  ", addr + o);
            for (uint64_t j = 0; j < 16; j++)
                o + j < len ? printf("%02x ", buf[o + j]) : printf("   ");
            printf(" |");
            for (uint64_t j = 0; j < 16 && o + j < len; j++)
                putchar(buf[o + j] >= 32 && buf[o + j] < 127 ? buf[o + j] : '.');
            printf("|\n");
        }
    }
    free(buf);
    return 0;
}

/* diff: which pages differ between two images (each read through its chain). */
struct rng {
    uint64_t a, e;
};
struct rngs {
    struct rng *v;
    size_t n;
};

static int collect_range(void *addr, size_t len, void *arg)
{
    struct rngs *r = arg;
    r->v = realloc(r->v, (r->n + 1) * sizeof(*r->v));
    if (!r->v)
        return 1;
    r->v[r->n++] = (struct rng){(uintptr_t)addr, (uintptr_t)addr + len};
    return 0;
}

static int cmd_diff(int argc, char **argv)
{
    const char *a = NULL, *b = NULL;
    int show = 20;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--max") == 0) {
            if (++i >= argc || (show = atoi(argv[i])) < 0)
                usage_error("image diff", "--max needs a number");
        } else if (argv[i][0] == '-') {
            usage_error("image diff", "unknown option '%s'", argv[i]);
        } else if (!a) {
            a = argv[i];
        } else if (!b) {
            b = argv[i];
        } else {
            usage_error("image diff", "expected two images");
        }
    }
    if (!a || !b)
        usage_error("image diff", "expected two images");
    struct set s = {0};
    struct img *ia = set_add(&s, a), *ib = set_add(&s, b);
    if (ia->open_err || ib->open_err) {
        struct img *m = ia->open_err ? ia : ib;
        fprintf(stderr, "snapfault image diff: %s: %s\n", m->path, m->fd < 0 ? strerror(-m->open_err) : errmsg(m->open_err));
        return 2;
    }
    char d[4096];
    dir_of(a, d, sizeof(d));
    add_dir(&s, d);
    dir_of(b, d, sizeof(d));
    add_dir(&s, d);
    ia = set_add(&s, a);
    ib = set_add(&s, b);
    struct rngs ra = {0}, rb = {0};
    sf_image_ranges(ia->im, collect_range, &ra);
    sf_image_ranges(ib->im, collect_range, &rb);
    size_t page = ia->info.page_size;
    unsigned char *pa = malloc(page), *pb = malloc(page);
    uint64_t same = 0, differ = 0, only_a = 0, only_b = 0, unreadable = 0;
    int shown = 0;
    /* pages of a: in b too? equal? */
    for (size_t i = 0; i < ra.n; i++)
        for (uint64_t p = ra.v[i].a; p < ra.v[i].e; p += page) {
            int x = chain_read(&s, ia, p, pa, page), y = chain_read(&s, ib, p, pb, page);
            if (x < 0 || y == -ENODATA || (y < 0 && y != -ENOENT)) {
                unreadable++;
            } else if (y == -ENOENT) {
                only_a++;
            } else if (memcmp(pa, pb, page) == 0) {
                same++;
            } else {
                differ++;
                if (shown++ < show)
                    printf("page %#014" PRIx64 " differs\n", p);
            }
        }
    for (size_t i = 0; i < rb.n; i++)
        for (uint64_t p = rb.v[i].a; p < rb.v[i].e; p += page)
            if (sf_image_read(ib->im, p, pb, 1) != -ENOENT && sf_image_read(ia->im, p, pa, 1) == -ENOENT)
                only_b++;
    if (shown > show)
        printf("... %d more\n", shown - show);
    printf("%" PRIu64 " pages same, %" PRIu64 " differ, %" PRIu64 " only in %s, %" PRIu64 " only in %s",
           same, differ, only_a, a, only_b, b);
    if (unreadable)
        printf(", %" PRIu64 " unreadable (damaged or parent missing)", unreadable);
    printf("\n");
    free(pa);
    free(pb);
    return unreadable ? 2 : (differ || only_a || only_b) ? 1 : 0;
}

int cmd_image(int argc, char **argv)
{
    static const char help[] =
        "usage: snapfault image info [--ranges] IMAGE...\n"
        "       snapfault image verify IMAGE...|DIR...\n"
        "       snapfault image cat [--raw] IMAGE ADDR LEN\n"
        "       snapfault image diff [--max N] IMAGE1 IMAGE2\n"
        "\n"
        "info    prints each image's id, parent, time and contents.\n"
        "verify  checks every block checksum and that each incremental image's parent\n"
        "        chain is complete (parents are looked up beside the image); exits 1 if\n"
        "        anything is damaged or missing.\n"
        "cat     dumps LEN bytes at address ADDR of the imaged process (hex, or --raw),\n"
        "        reading an incremental image's missing pages from its parents.\n"
        "diff    compares two images page by page; exits 0 if equal, 1 if they differ,\n"
        "        2 on trouble (like cmp).\n";
    if (argc < 2)
        usage_error("image", "missing subcommand (info, verify, cat, diff)");
    if (is_help(argv[1])) {
        fputs(help, stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++)
        if (is_help(argv[i])) {
            fputs(help, stdout);
            return 0;
        }
    if (strcmp(argv[1], "info") == 0)
        return cmd_info(argc - 1, argv + 1);
    if (strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    if (strcmp(argv[1], "cat") == 0)
        return cmd_cat(argc - 1, argv + 1);
    if (strcmp(argv[1], "diff") == 0)
        return cmd_diff(argc - 1, argv + 1);
    usage_error("image", "unknown subcommand '%s'", argv[1]);
}
