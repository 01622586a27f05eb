/* image_cmd.c - `snapfault image info|verify|cat|diff|ls|merge|export`: inspects snapshot
 * images and the chains incremental images form, with the public sf_image_*
 * API only. */
#include "tools.h"
#include "record.h"

#include "snapfault.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/procfs.h>
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

/* Reads len bytes at addr as of image m: each page from the nearest image
 * of m's chain that holds it (an incremental image holds the pages changed
 * since its parent; the others are read from the parent, and so on).  The
 * span must lie in m's ranges (-ENOENT); -ENODATA if some page is held by
 * no image of the chain found (a parent missing). */
static int chain_read(struct set *s, struct img *m, uint64_t addr, void *buf, size_t len)
{
    if (!len)
        return 0;
    if (len - 1 > UINT64_MAX - addr)
        return -EINVAL;
    const uint64_t ps = m->info.page_size;
    const size_t npg = (size_t)((addr + len - 1) / ps - addr / ps + 1);
    uint8_t *need = malloc(npg), *map = malloc(npg);
    if (!need || !map) {
        free(need);
        free(map);
        return -ENOMEM;
    }
    memset(need, 1, npg);
    size_t left = npg;
    int rc = 0;
    const uint64_t base = addr & ~(ps - 1);
    for (int depth = 0; left && depth < 100000; depth++) {
        for (size_t i = 0; i < npg && !rc;) {
            if (!need[i]) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < npg && need[j])
                j++;
            /* the wanted bytes of pages i..j-1 */
            uint64_t from = base + i * ps, to = base + j * ps; /* [from, to) */
            if (from < addr)
                from = addr;
            if (to > addr + len || to < from)
                to = addr + len;
            rc = sf_image_read_map(m->im, from, (uint8_t *)buf + (from - addr), (size_t)(to - from), map);
            for (size_t q = i; !rc && q < j; q++)
                if (map[q - i] != SF_IMAGE_PAGE_ABSENT) {
                    need[q] = 0;
                    left--;
                }
            i = j;
        }
        if (rc || !left)
            break;
        struct img *p = m->info.parent_id ? find_id(s, m->info.parent_id) : NULL;
        if (!p || p->info.page_size != ps) {
            rc = -ENODATA; /* parent missing */
            break;
        }
        m = p;
    }
    if (!rc && left)
        rc = -ENODATA;
    free(need);
    free(map);
    return rc;
}

/* "rw-p", "r-xs", or "?" when the image does not record it (version 1). */
static const char *prot_str(uint32_t prot, char out[5])
{
    if (!(prot & SF_IMAGE_PROT_KNOWN))
        return "?";
    out[0] = prot & SF_IMAGE_PROT_READ ? 'r' : '-';
    out[1] = prot & SF_IMAGE_PROT_WRITE ? 'w' : '-';
    out[2] = prot & SF_IMAGE_PROT_EXEC ? 'x' : '-';
    out[3] = prot & SF_IMAGE_PROT_SHARED ? 's' : 'p';
    out[4] = 0;
    return out;
}

static void print_mappings(const sf_image *im)
{
    sf_image_mapping mp;
    for (size_t i = 0; sf_image_mapping_get(im, i, &mp) == 0; i++) {
        char ps[5];
        printf("  range %#014" PRIx64 "-%#014" PRIx64 " %-4s %8" PRIu64 " KiB  %s\n", mp.addr, mp.addr + mp.len,
               prot_str(mp.prot, ps), mp.len >> 10, mp.name);
    }
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
    if (n > 0 && strncmp(head, SFP_INDEX_MAGIC, sizeof(SFP_INDEX_MAGIC) - 1) == 0)
        return *what = "a snapshot index", K_INDEX;
    if (n > 0 && strncmp(head, SFP_TRACK_MAGIC, sizeof(SFP_TRACK_MAGIC) - 1) == 0)
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
    size_t n, nfailed, ndeleted; /* ndeleted: D lines (retention of the disk budget) */
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
            if (strncmp(line, SFP_INDEX_MAGIC, sizeof(SFP_INDEX_MAGIC) - 1) != 0) {
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
        if (strncmp(line, SFP_IDX_END, sizeof(SFP_IDX_END) - 1) == 0) {
            ix->ended = true;
            sscanf(line, SFP_IDX_END " %31s", ix->end_status);
            ix->clean = strcmp(ix->end_status, "clean") == 0;
            char v[32];
            field(line, "images", v, sizeof(v));
            ix->end_images = strtoull(v, NULL, 10);
            field(line, "how", ix->end_how, sizeof(ix->end_how));
            field(line, "final", ix->end_final, sizeof(ix->end_final));
            continue;
        }
        if (line[0] == SFP_IDX_FAILED[0] && line[1] == '\t') {
            ix->nfailed++;
            continue;
        }
        if (line[0] == SFP_IDX_DELETED[0] && line[1] == '\t') {
            /* deleted by retention: no longer part of what remains */
            unsigned long long seq = strtoull(line + 2, NULL, 10);
            for (size_t j = 0; j < ix->n; j++)
                if (ix->e[j].seq == seq) {
                    memmove(&ix->e[j], &ix->e[j + 1], (ix->n - j - 1) * sizeof(*ix->e));
                    ix->n--;
                    break;
                }
            ix->ndeleted++;
            continue;
        }
        if (line[0] != SFP_IDX_IMAGE[0] || line[1] != '\t') {
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
    else if (ix->clean && ix->ndeleted)
        printf("%s: chain complete: %zu images (%zu deleted by retention), ended by %s, final image %s\n", path,
               ix->n, ix->ndeleted, ix->end_how, strcmp(ix->end_final, "none") ? ix->end_final : "none");
    else if (ix->clean)
        printf("%s: chain complete: %zu images, ended by %s, final image %s\n", path, ix->n, ix->end_how,
               strcmp(ix->end_final, "none") ? ix->end_final : "none (exit images off or the image limit reached)");
    else
        printf("%s: chain ended without a final image: %zu images, ended by %s%s\n", path, ix->n, ix->end_how,
               ix->nfailed ? " (an image failed)" : "");
}

/* ------------------------------------------------------------------------ */

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
        struct stat fst;
        if (fstat(m->fd, &fst) == 0 && f->pages_stored)
            printf("  file    %.1f MiB, %.2f of the stored pages' size\n", (double)fst.st_size / 1048576.0,
                   (double)fst.st_size / ((double)f->pages_stored * f->page_size));
        if (ranges)
            print_mappings(m->im);
        set_free(&s);
    }
    return status;
}

/* Chains judged once per image: a directory of thousands of incremental
 * images is verified in time proportional to their number (each link is
 * looked up by id in a sorted table, and a walk ends at the first image
 * already judged), not to its cube. */
struct chain_id {
    uint64_t id;
    size_t i;
};
struct chains {
    struct chain_id *ids; /* images that opened, by id */
    size_t nids;
    int *depth;           /* 0: not judged; else the chain's length */
    const char **problem; /* judged broken: why, and the id it stopped at */
    uint64_t *at;
    size_t *stack;
    bool *walking;
};

static int chain_id_cmp(const void *a, const void *b)
{
    const struct chain_id *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id ? 1 : x->i < y->i ? -1 : x->i > y->i;
}

static void chains_init(struct chains *c, const struct set *s)
{
    size_t n = s->n ? s->n : 1;
    c->ids = calloc(n, sizeof(*c->ids));
    c->depth = calloc(n, sizeof(*c->depth));
    c->problem = calloc(n, sizeof(*c->problem));
    c->at = calloc(n, sizeof(*c->at));
    c->stack = calloc(n, sizeof(*c->stack));
    c->walking = calloc(n, sizeof(*c->walking));
    if (!c->ids || !c->depth || !c->problem || !c->at || !c->stack || !c->walking) {
        fprintf(stderr, "snapfault image: out of memory\n");
        exit(2);
    }
    c->nids = 0;
    for (size_t i = 0; i < s->n; i++)
        if (!s->v[i].open_err)
            c->ids[c->nids++] = (struct chain_id){s->v[i].info.id, i};
    qsort(c->ids, c->nids, sizeof(*c->ids), chain_id_cmp);
}

static void chains_free(struct chains *c)
{
    free(c->ids);
    free(c->depth);
    free(c->problem);
    free(c->at);
    free(c->stack);
    free(c->walking);
}

/* The first image that opened with this id (as find_id), or -1. */
static long chain_find(const struct chains *c, uint64_t id)
{
    size_t lo = 0, hi = c->nids;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->ids[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nids && c->ids[lo].id == id ? (long)c->ids[lo].i : -1;
}

/* Judges image i's chain (state: 1 verified, -1 damaged): returns its
 * length, or 0 with *problem and *at (the parent id where it breaks). */
static int chain_judge(struct chains *c, const struct set *s, const int *state, size_t i, const char **problem,
                       uint64_t *at)
{
    size_t sp = 0, k = i;
    const char *why = NULL;
    uint64_t where = 0;
    int d = 0;
    for (;;) {
        if (c->depth[k] || c->problem[k]) {
            d = c->depth[k];
            why = c->problem[k];
            where = c->at[k];
            break;
        }
        if (c->walking[k]) { /* ids that loop: no chain ends there */
            why = "parent chain loops";
            where = s->v[k].info.id;
            break;
        }
        c->walking[k] = true;
        c->stack[sp++] = k;
        uint64_t par = s->v[k].info.parent_id;
        if (!par)
            break;
        long p = chain_find(c, par);
        if (p < 0)
            why = "parent image missing";
        else if (state[p] < 0)
            why = "parent image damaged";
        else if (s->v[p].info.taken_ns > s->v[k].info.taken_ns)
            why = "parent taken after its child";
        if (why) {
            where = par;
            break;
        }
        k = (size_t)p;
    }
    while (sp) {
        size_t j = c->stack[--sp];
        c->walking[j] = false;
        if (why) {
            c->problem[j] = why;
            c->at[j] = where;
        } else {
            c->depth[j] = ++d;
        }
    }
    *problem = c->problem[i];
    *at = c->at[i];
    return c->depth[i];
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
                } else if (l > 5 && strcmp(e->d_name + l - 5, ".part") == 0) {
                    /* snapshot mode writes NAME.part and renames it when
                     * complete: one left is a write its process never ended */
                    printf("%s/%s: incomplete image: its process ended while writing it (not an image; "
                           "safe to delete)\n",
                           argv[i], e->d_name);
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
            if (ix.ended && ix.end_images != ix.n + ix.ndeleted)
                printf("%s: warning: the end line counts %llu images, %zu are listed\n", argv[i], ix.end_images,
                       ix.n + ix.ndeleted);
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
    struct chains ch;
    chains_init(&ch, &s);
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
        /* the parent chain, each link judged once for the whole set */
        const char *problem = NULL;
        uint64_t at = 0;
        int depth = chain_judge(&ch, &s, state, i, &problem, &at);
        if (problem) {
            printf("%s: BROKEN CHAIN: %s (%016" PRIx64 ")\n", m->path, problem, at);
            bad++;
        } else {
            printf("%s: ok (%s, chain of %d)\n", m->path, m->info.parent_id ? "incremental" : "full", depth);
            ok++;
        }
    }
    free(state);
    chains_free(&ch);
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
        set_free(&s);
        return 1;
    }
    char d[4096];
    dir_of(args[0], d, sizeof(d));
    add_dir(&s, d);
    m = set_add(&s, args[0]);
    unsigned char *buf = malloc(len);
    if (!buf) {
        set_free(&s);
        return 1;
    }
    int rc = chain_read(&s, m, addr, buf, len);
    set_free(&s);
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
    free(ra.v);
    free(rb.v);
    set_free(&s);
    return unreadable ? 2 : (differ || only_a || only_b) ? 1 : 0;
}

/* Opens path with its directory's images, so that its chain is found. */
static struct img *open_with_dir(struct set *s, const char *path, const char *cmd)
{
    struct img *m = set_add(s, path);
    if (m->open_err) {
        fprintf(stderr, "snapfault image %s: %s: %s\n", cmd, path,
                m->fd < 0 ? strerror(-m->open_err) : errmsg(m->open_err));
        return NULL;
    }
    char d[4096];
    dir_of(path, d, sizeof(d));
    add_dir(s, d);
    return set_add(s, path);
}

/* ls: the ranges of each image with their mappings' protection and name. */
static int cmd_ls(int argc, char **argv)
{
    int status = 0, nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            usage_error("image ls", "unknown option '%s'", argv[i]);
        nfiles++;
        struct set s = {0};
        struct img *m = set_add(&s, argv[i]);
        if (m->open_err) {
            printf("%s: cannot open: %s\n", argv[i], m->fd < 0 ? strerror(-m->open_err) : errmsg(m->open_err));
            status = 1;
        } else {
            printf("%s:\n", argv[i]);
            print_mappings(m->im);
        }
        set_free(&s);
    }
    if (!nfiles)
        usage_error("image ls", "missing IMAGE");
    return status;
}

/* The chain of m, m first, its full image last; NULL if a parent is missing
 * (*n then says how far it went). */
static const sf_image **chain_of(struct set *s, struct img *m, size_t *n)
{
    const sf_image **v = NULL;
    *n = 0;
    for (; m; m = m->info.parent_id ? find_id(s, m->info.parent_id) : NULL) {
        v = realloc(v, (*n + 1) * sizeof(*v));
        if (!v || *n > s->n) { /* longer than the set: a cycle of ids */
            free(v);
            return NULL;
        }
        v[(*n)++] = m->im;
        if (!m->info.parent_id)
            return v;
    }
    free(v);
    return NULL;
}

/* Unsigned level after --zstd=; exits on a bad one. */
static unsigned zstd_flags(const char *arg, const char *cmd)
{
    if (!arg[6])
        return SF_WRITE_ZSTD;
    uint64_t lvl;
    if (arg[6] != '=' || !parse_u64(arg + 7, &lvl) || lvl < 1 || lvl > SF_WRITE_ZSTD_LEVEL_MAX)
        usage_error(cmd, "--zstd=N takes a level from 1 to %d", SF_WRITE_ZSTD_LEVEL_MAX);
    return SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(lvl);
}

/* Every range of out equals m read through its chain, after out verified. */
static int merge_check(struct set *s, struct img *m, int fd, uint64_t *checked)
{
    sf_image *out;
    int rc = sf_image_open(&out, fd);
    if (rc)
        return rc;
    if ((rc = sf_image_verify(out))) {
        sf_image_close(out);
        return rc;
    }
    sf_image_info oi;
    sf_image_get_info(out, &oi);
    if (oi.parent_id || oi.id != m->info.id || oi.ranges != m->info.ranges || oi.bytes != m->info.bytes) {
        sf_image_close(out);
        return -EBADMSG;
    }
    const size_t chunk = 1u << 20;
    uint8_t *a = malloc(chunk), *b = malloc(chunk);
    sf_image_mapping mp, mo;
    for (size_t i = 0; !rc && a && b && sf_image_mapping_get(m->im, i, &mp) == 0; i++) {
        if (sf_image_mapping_get(out, i, &mo) || mo.addr != mp.addr || mo.len != mp.len ||
            mo.prot != mp.prot || strcmp(mo.name, mp.name)) {
            rc = -EBADMSG;
            break;
        }
        for (uint64_t o = 0; !rc && o < mp.len; o += chunk) {
            size_t n = mp.len - o < chunk ? (size_t)(mp.len - o) : chunk;
            if (!(rc = chain_read(s, m, mp.addr + o, a, n)) && !(rc = sf_image_read(out, mp.addr + o, b, n)) &&
                memcmp(a, b, n))
                rc = -EBADMSG;
            *checked += n;
        }
    }
    if (!a || !b)
        rc = -ENOMEM;
    free(a);
    free(b);
    sf_image_close(out);
    return rc;
}

/* merge: flatten IMAGE's chain into one full image OUT, verified. */
static int cmd_merge(int argc, char **argv)
{
    unsigned flags = 0;
    const char *in = NULL, *outp = NULL;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--zstd", 6) == 0)
            flags = zstd_flags(argv[i], "image merge");
        else if (argv[i][0] == '-')
            usage_error("image merge", "unknown option '%s'", argv[i]);
        else if (!in)
            in = argv[i];
        else if (!outp)
            outp = argv[i];
        else
            usage_error("image merge", "too many arguments");
    }
    if (!in || !outp)
        usage_error("image merge", "expected IMAGE OUT");
    struct set s = {0};
    struct img *m = open_with_dir(&s, in, "merge");
    if (!m)
        return 1;
    size_t n;
    const sf_image **chain = chain_of(&s, m, &n);
    if (!chain) {
        fprintf(stderr, "snapfault image merge: %s: parent image missing (chain of %zu found)\n", in, n);
        set_free(&s);
        return 1;
    }
    /* written beside OUT and renamed once it verified: OUT is never a
     * half-written image */
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", outp, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = fd < 0 ? -errno : sf_image_merge(chain, n, fd, flags);
    uint64_t checked = 0;
    if (!rc)
        rc = merge_check(&s, m, fd, &checked);
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    struct stat st = {0};
    if (fd >= 0)
        fstat(fd, &st);
    if (fd >= 0)
        close(fd);
    if (!rc && rename(tmp, outp) < 0)
        rc = -errno;
    if (rc) {
        if (fd >= 0)
            unlink(tmp);
        fprintf(stderr, "snapfault image merge: %s: %s\n", in, errmsg(rc));
    } else {
        printf("%s: %zu images merged into %s (%.1f MiB of memory, %.1f MiB file), verified\n", in, n, outp,
               (double)checked / 1048576.0, (double)st.st_size / 1048576.0);
    }
    free(chain);
    set_free(&s);
    return rc ? 1 : 0;
}

/* ------------------------------------------------------------------------ */
/* export                                                                   */
/* ------------------------------------------------------------------------ */

static int write_full(int fd, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n) { return !n || (p[0] == 0 && !memcmp(p, p + 1, n - 1)); }

/* Copies [addr, addr+len) of m's chain to fd, 1 MiB at a time.  sparse: an
 * all-zero page is skipped with lseek (a hole; the caller sets the file's
 * final size). */
static int copy_range(struct set *s, struct img *m, uint64_t addr, uint64_t len, int fd, bool sparse)
{
    const size_t chunk = 1u << 20, ps = m->info.page_size;
    uint8_t *buf = malloc(chunk);
    int rc = buf ? 0 : -ENOMEM;
    for (uint64_t o = 0; !rc && o < len; o += chunk) {
        size_t n = len - o < chunk ? (size_t)(len - o) : chunk;
        if ((rc = chain_read(s, m, addr + o, buf, n)))
            break;
        for (size_t i = 0; !rc && i < n;) {
            size_t k = n - i < ps ? n - i : ps;
            bool zero = sparse && all_zero(buf + i, k);
            size_t j = i + k;
            while (j < n && sparse && all_zero(buf + j, n - j < ps ? n - j : ps) == zero)
                j += n - j < ps ? n - j : ps;
            if (!sparse)
                j = n;
            if (zero)
                rc = lseek(fd, (off_t)(j - i), SEEK_CUR) < 0 ? -errno : 0;
            else
                rc = write_full(fd, buf + i, j - i);
            i = j;
        }
    }
    free(buf);
    return rc;
}

/* A file name part from a mapping name: "[anon:x y]" -> "anon_x_y". */
static void name_part(const char *name, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = name; *p && o + 1 < cap; p++) {
        char c = *p;
        if (c == '[' || c == ']')
            continue;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '-' || c == '_';
        if (!ok && (!o || out[o - 1] == '_'))
            continue;
        out[o++] = ok ? c : '_';
    }
    while (o && out[o - 1] == '_')
        o--;
    out[o] = 0;
}

static int export_raw(struct set *s, struct img *m, const char *dir)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    sf_image_mapping mp;
    int rc = 0;
    for (size_t i = 0; !rc && sf_image_mapping_get(m->im, i, &mp) == 0; i++) {
        char part[200], path[4400];
        name_part(mp.name, part, sizeof(part));
        snprintf(path, sizeof(path), "%s/%016" PRIx64 "-%016" PRIx64 "%s%s.bin", dir, mp.addr, mp.addr + mp.len,
                 part[0] ? "_" : "", part);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        rc = copy_range(s, m, mp.addr, mp.len, fd, true);
        if (!rc && ftruncate(fd, (off_t)mp.len) < 0)
            rc = -errno;
        if (close(fd) < 0 && !rc)
            rc = -errno;
        if (!rc)
            printf("%s\n", path);
    }
    return rc;
}

/* ELF core file: the program header table describes one PT_NOTE (process
 * status, process info and the file mappings, as a kernel core dump has
 * them) and one PT_LOAD per range; the data of each range follows, page
 * aligned, zero pages as holes.  No registers are known: the status note
 * carries zeros. */
#if defined(__x86_64__)
#define CORE_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define CORE_MACHINE EM_AARCH64
#elif defined(__riscv)
#define CORE_MACHINE EM_RISCV
#else
#define CORE_MACHINE EM_NONE
#endif

struct nbuf {
    uint8_t *p;
    size_t n, cap;
};

static void nb_put(struct nbuf *b, const void *p, size_t n)
{
    if (b->n + n + 8 > b->cap) {
        b->cap = (b->n + n + 8) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fprintf(stderr, "snapfault image export: out of memory\n");
            exit(1);
        }
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    while (b->n % 4)
        b->p[b->n++] = 0;
}

static void note(struct nbuf *b, uint32_t type, const void *desc, size_t len)
{
    Elf64_Nhdr h = {.n_namesz = 5, .n_descsz = (Elf64_Word)len, .n_type = type};
    nb_put(b, &h, sizeof(h));
    nb_put(b, "CORE", 5);
    nb_put(b, desc, len);
}

static int export_core(struct set *s, struct img *m, const char *path)
{
    const uint64_t ps = m->info.page_size;
    size_t nr = (size_t)m->info.ranges;
    struct nbuf nb = {0};

    struct elf_prstatus prs;
    memset(&prs, 0, sizeof(prs));
    note(&nb, NT_PRSTATUS, &prs, sizeof(prs));
    struct elf_prpsinfo psi;
    memset(&psi, 0, sizeof(psi));
    psi.pr_state = 'R';
    psi.pr_sname = 'R';
    snprintf(psi.pr_fname, sizeof(psi.pr_fname), "snapfault");
    snprintf(psi.pr_psargs, sizeof(psi.pr_psargs), "snapfault image %016" PRIx64, m->info.id);
    note(&nb, NT_PRPSINFO, &psi, sizeof(psi));

    /* NT_FILE: count, page size, (start, end, offset in pages) per file
     * mapping, then their names */
    sf_image_mapping mp;
    uint64_t nfiles = 0;
    for (size_t i = 0; sf_image_mapping_get(m->im, i, &mp) == 0; i++)
        nfiles += mp.name[0] == '/';
    if (nfiles) {
        struct nbuf fb = {0};
        size_t want = 16 + 24 * nfiles;
        fb.p = calloc(1, want + 8);
        fb.cap = want + 8;
        if (!fb.p)
            return -ENOMEM;
        uint64_t *w = (uint64_t *)fb.p;
        w[0] = nfiles;
        w[1] = ps;
        size_t k = 0;
        for (size_t i = 0; sf_image_mapping_get(m->im, i, &mp) == 0; i++)
            if (mp.name[0] == '/') {
                w[2 + 3 * k] = mp.addr;
                w[3 + 3 * k] = mp.addr + mp.len;
                w[4 + 3 * k] = mp.offset / ps;
                k++;
            }
        fb.n = want;
        for (size_t i = 0; sf_image_mapping_get(m->im, i, &mp) == 0; i++)
            if (mp.name[0] == '/') {
                size_t l = strlen(mp.name) + 1;
                if (fb.n + l > fb.cap) {
                    fb.cap = (fb.n + l) * 2;
                    fb.p = realloc(fb.p, fb.cap);
                    if (!fb.p)
                        return -ENOMEM;
                }
                memcpy(fb.p + fb.n, mp.name, l);
                fb.n += l;
            }
        note(&nb, NT_FILE, fb.p, fb.n);
        free(fb.p);
    }

    size_t phnum = nr + 1;
    uint64_t off = sizeof(Elf64_Ehdr) + phnum * sizeof(Elf64_Phdr);
    uint64_t note_off = off;
    off += nb.n;
    off = (off + ps - 1) & ~(ps - 1);
    Elf64_Ehdr eh;
    memset(&eh, 0, sizeof(eh));
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_ident[EI_OSABI] = ELFOSABI_NONE;
    eh.e_type = ET_CORE;
    eh.e_machine = CORE_MACHINE;
    eh.e_version = EV_CURRENT;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = (Elf64_Half)(phnum < PN_XNUM ? phnum : PN_XNUM);
    if (phnum >= PN_XNUM) {
        free(nb.p);
        return -EFBIG;
    }
    Elf64_Phdr *ph = calloc(phnum, sizeof(*ph));
    if (!ph)
        return -ENOMEM;
    ph[0] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = note_off, .p_filesz = nb.n, .p_align = 4};
    for (size_t i = 0; sf_image_mapping_get(m->im, i, &mp) == 0; i++) {
        uint32_t f = 0;
        if (!(mp.prot & SF_IMAGE_PROT_KNOWN))
            f = PF_R | PF_W; /* a version 1 image: tracked memory is read-write */
        else
            f = (mp.prot & SF_IMAGE_PROT_READ ? PF_R : 0) | (mp.prot & SF_IMAGE_PROT_WRITE ? PF_W : 0) |
                (mp.prot & SF_IMAGE_PROT_EXEC ? PF_X : 0);
        ph[i + 1] = (Elf64_Phdr){.p_type = PT_LOAD, .p_flags = f, .p_offset = off, .p_vaddr = mp.addr,
                                 .p_filesz = mp.len, .p_memsz = mp.len, .p_align = ps};
        off += mp.len;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = fd < 0 ? -errno : 0;
    if (!rc)
        rc = write_full(fd, &eh, sizeof(eh));
    if (!rc)
        rc = write_full(fd, ph, phnum * sizeof(*ph));
    if (!rc)
        rc = write_full(fd, nb.p, nb.n);
    if (!rc && nr && lseek(fd, (off_t)ph[1].p_offset, SEEK_SET) < 0)
        rc = -errno;
    for (size_t i = 0; !rc && i < nr; i++)
        rc = copy_range(s, m, ph[i + 1].p_vaddr, ph[i + 1].p_filesz, fd, true);
    if (!rc && ftruncate(fd, (off_t)off) < 0) /* zero pages at the end are holes */
        rc = -errno;
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = -errno;
    if (rc && fd >= 0)
        unlink(path);
    free(ph);
    free(nb.p);
    return rc;
}

/* export: an ELF core file (--core FILE) or a file per range (--raw DIR). */
static int cmd_export(int argc, char **argv)
{
    const char *in = NULL, *core = NULL, *raw = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--core") == 0 || strcmp(argv[i], "--raw") == 0) {
            if (i + 1 >= argc)
                usage_error("image export", "%s needs a path", argv[i]);
            *(argv[i][2] == 'c' ? &core : &raw) = argv[i + 1];
            i++;
        } else if (argv[i][0] == '-') {
            usage_error("image export", "unknown option '%s'", argv[i]);
        } else if (!in) {
            in = argv[i];
        } else {
            usage_error("image export", "too many arguments");
        }
    }
    if (!in || (!core && !raw))
        usage_error("image export", "expected IMAGE --core FILE and/or --raw DIR");
    struct set s = {0};
    struct img *m = open_with_dir(&s, in, "export");
    if (!m)
        return 1;
    int rc = 0;
    if (core && (rc = export_core(&s, m, core)))
        fprintf(stderr, "snapfault image export: %s: %s\n", core, errmsg(rc));
    if (!rc && raw && (rc = export_raw(&s, m, raw)))
        fprintf(stderr, "snapfault image export: %s: %s\n", raw, errmsg(rc));
    set_free(&s);
    return rc ? 1 : 0;
}

int cmd_image(int argc, char **argv)
{
    static const char help[] =
        "usage: snapfault image info [--ranges] IMAGE...\n"
        "       snapfault image verify IMAGE...|DIR...\n"
        "       snapfault image cat [--raw] IMAGE ADDR LEN\n"
        "       snapfault image diff [--max N] IMAGE1 IMAGE2\n"
        "       snapfault image ls IMAGE...\n"
        "       snapfault image merge [--zstd[=LEVEL]] IMAGE OUT\n"
        "       snapfault image export IMAGE [--core FILE] [--raw DIR]\n"
        "\n"
        "info    prints each image's id, parent, time and contents (--ranges: and\n"
        "        its ranges, as ls does).\n"
        "verify  checks every block checksum and that each incremental image's parent\n"
        "        chain is complete (parents are looked up beside the image); exits 1 if\n"
        "        anything is damaged or missing.\n"
        "cat     dumps LEN bytes at address ADDR of the imaged process (hex, or --raw),\n"
        "        each page from the nearest image of the chain that holds it.\n"
        "diff    compares two images page by page; exits 0 if equal, 1 if they differ,\n"
        "        2 on trouble (like cmp).\n"
        "ls      lists each range with its protection and mapping name ([heap], a file,\n"
        "        [stack], [anon:NAME]; ? when a version 1 image does not record it).\n"
        "merge   flattens IMAGE and its parents into one full image OUT (zstd-compressed\n"
        "        with --zstd, level 1-19, default 3), verified against the chain before\n"
        "        it is renamed into place.\n"
        "export  writes IMAGE (read through its chain) as an ELF core file gdb opens with\n"
        "        the program (gdb PROG FILE), and/or as one file per range in DIR named\n"
        "        ADDR-END_NAME.bin.\n";
    if (argc < 2)
        usage_error("image", "missing subcommand (info, verify, cat, diff, ls, merge, export)");
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
    if (strcmp(argv[1], "ls") == 0)
        return cmd_ls(argc - 1, argv + 1);
    if (strcmp(argv[1], "merge") == 0)
        return cmd_merge(argc - 1, argv + 1);
    if (strcmp(argv[1], "export") == 0)
        return cmd_export(argc - 1, argv + 1);
    usage_error("image", "unknown subcommand '%s'", argv[1]);
}
