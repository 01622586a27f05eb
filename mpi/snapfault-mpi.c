/* snapfault-mpi.c - coordinated checkpoint/restart of MPI ranks on the
 * public libsnapfault API (snapfault.h) only.  Semantics, files and the
 * pruning rule: include/snapfault-mpi.h.
 *
 * Threads.  The caller's thread makes every MPI call.  Each rank has one
 * writer thread that turns snapshots into durable, verified images (FIFO
 * jobs), and rank 0 has a manifest thread that writes the manifests of the
 * versions the last reduction found durable on every rank, then deletes
 * what the pruning rule allows.  Neither thread calls MPI: what they did is
 * reported through the reductions inside the next collective call. */
#define SNAPFAULT_MPI_BUILD 1
#include "snapfault-mpi.h"

#include <snapfault.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QMAX 16          /* checkpoints in flight per rank */
#define RESTORE_CHUNK 64 /* pages per restore read (one full-image block) */
#define MAX_CANDIDATES 4096 /* versions a restart considers, newest first */
#define META_MAGIC "snapfault-mpi meta 1"
#define MAN_MAGIC "snapfault-mpi manifest 1"
#define INFO_MAGIC "snapfault-mpi 1"

struct region {
    int id;
    void *addr;
    size_t len;
};

struct job {
    enum { JOB_IMAGE, JOB_PRUNE } kind;
    int version;
    int parent_version; /* -1: full image */
    sf_snapshot *s;     /* borrowed: the state keeps it as the next parent */
    sf_snapshot *prev;  /* owned: released once s is written */
    int cutoff;         /* JOB_PRUNE */
    struct region *regs; /* copy of the region table at the take */
    size_t nregs;
};

struct vent {
    int v, base;
};

static struct {
    bool inited;
    MPI_Comm comm;
    int rank, nranks;
    char dir[PATH_MAX / 2], rankdir[PATH_MAX / 2];
    sf_tracker *t;
    int kernel_writes;
    uint64_t run_id;
    int keep, full_every;

    struct region *regs;
    size_t nregs, regcap;

    int last_version;  /* newest version of this job (taken or restarted), -1 */
    bool taken_any;
    sf_snapshot *last_snap;
    int last_snap_version;
    int chain_base;    /* base of the last version's chain; -1: next is full */
    int since_full;

    struct vent *vers; /* versions of this job, ascending, with their bases */
    size_t nvers, vercap;

    /* writer thread */
    pthread_t writer;
    bool writer_on;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* jobs queued, stop, progress */
    struct job q[QMAX];
    int qhead, qn;
    bool busy, stop;
    int done_upto;          /* newest version durable on this rank */
    int werr;               /* first failed write, sticky */
    int prune_sent;
    int gate_fd;

    /* manifest thread (rank 0) */
    pthread_t mthread;
    bool mthread_on;
    int m_target;           /* newest version durable on every rank */
    int m_written;          /* newest manifest durable (and pruning done) */
    int m_cutoff;           /* published pruning cutoff */
    int m_err;
} S = {.gate_fd = -1};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t fnv64(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Writes text plus a "sum" line to path through a temporary name, fsync,
 * rename, fsync of the directory. */
static int write_atomic(const char *dir, const char *path, const char *text)
{
    char tmp[PATH_MAX], body[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t n = strlen(text);
    snprintf(body, sizeof body, "sum %016" PRIx64 "\n", fnv64(text, n));
    int rc = write_all(fd, text, n);
    if (!rc)
        rc = write_all(fd, body, strlen(body));
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path) < 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
    else
        rc = fsync_dir(dir);
    return rc;
}

/* Reads a file written by write_atomic; checks its sum.  Returns a
 * malloc'd NUL-terminated text without the sum line, or NULL (errno). */
static char *read_checked(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf)
            break;
        if (n == cap) {
            if (cap > (64u << 20)) {
                free(buf);
                buf = NULL;
                errno = EFBIG;
                break;
            }
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            buf = NULL;
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf)
        return NULL;
    buf[n] = 0;
    /* the last line is "sum HEX\n" over everything before it */
    if (n < 22 || buf[n - 1] != '\n') {
        free(buf);
        errno = EBADMSG;
        return NULL;
    }
    char *last = buf + n - 1;
    while (last > buf && last[-1] != '\n')
        last--;
    uint64_t want;
    if (sscanf(last, "sum %" SCNx64, &want) != 1 || fnv64(buf, (size_t)(last - buf)) != want) {
        free(buf);
        errno = EBADMSG;
        return NULL;
    }
    *last = 0;
    return buf;
}

static void image_path(char *out, size_t cap, int version)
{
    snprintf(out, cap, "%s/v%09d.sfimg", S.rankdir, version);
}

static void meta_path(char *out, size_t cap, int version)
{
    snprintf(out, cap, "%s/v%09d.meta", S.rankdir, version);
}

static void manifest_path(char *out, size_t cap, int version)
{
    snprintf(out, cap, "%s/v%09d.manifest", S.dir, version);
}

/* The version a file name "vNNNNNNNNN.<ext>[.tmp]" names, or -1. */
static int name_version(const char *name, const char *ext)
{
    if (name[0] != 'v')
        return -1;
    char *end;
    errno = 0;
    long v = strtol(name + 1, &end, 10);
    if (errno || end != name + 10 || v < 0 || v > INT_MAX || *end != '.')
        return -1;
    if (ext && strncmp(end + 1, ext, strlen(ext)) != 0)
        return -1;
    return (int)v;
}

/* Deletes every file in dir named for a version < cutoff (all extensions
 * when ext is NULL, temporary names included). */
static void delete_older(const char *dir, const char *ext, int cutoff)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    bool any = false;
    while ((e = readdir(d))) {
        int v = name_version(e->d_name, ext);
        if (v >= 0 && v < cutoff) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (unlink(p) == 0)
                any = true;
        }
    }
    closedir(d);
    if (any)
        fsync_dir(dir);
}

static int vent_push(int v, int base)
{
    if (S.nvers == S.vercap) {
        size_t nc = S.vercap ? 2 * S.vercap : 64;
        struct vent *nv = realloc(S.vers, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        S.vers = nv;
        S.vercap = nc;
    }
    S.vers[S.nvers++] = (struct vent){v, base};
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Writer thread                                                            */
/* ------------------------------------------------------------------------ */

static int write_meta(const struct job *j, uint64_t id, uint64_t parent_id, uint64_t bytes)
{
    size_t cap = 512 + j->nregs * 64;
    char *text = malloc(cap);
    if (!text)
        return -ENOMEM;
    int n = snprintf(text, cap,
                     META_MAGIC "\nversion %d\nrank %d\nnranks %d\nrun %016" PRIx64
                                "\nparent %d\nid %016" PRIx64 "\nparent_id %016" PRIx64
                                "\nbytes %" PRIu64 "\nregions %zu\n",
                     j->version, S.rank, S.nranks, S.run_id, j->parent_version, id, parent_id, bytes,
                     j->nregs);
    for (size_t i = 0; i < j->nregs; i++)
        n += snprintf(text + n, cap - (size_t)n, "region %d %" PRIxPTR " %zu\n", j->regs[i].id,
                      (uintptr_t)j->regs[i].addr, j->regs[i].len);
    char path[PATH_MAX];
    meta_path(path, sizeof path, j->version);
    int rc = write_atomic(S.rankdir, path, text);
    free(text);
    return rc;
}

/* Opens and fully verifies an image; checks its ids.  Returns 0 or -errno. */
static int verify_image(const char *path, uint64_t id, uint64_t parent_id)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    sf_image *im;
    int rc = sf_image_open(&im, fd);
    if (!rc) {
        sf_image_info info;
        rc = sf_image_get_info(im, &info);
        if (!rc && (info.id != id || info.parent_id != parent_id))
            rc = -EBADMSG;
        if (!rc)
            rc = sf_image_verify(im);
        sf_image_close(im);
    }
    close(fd);
    return rc;
}

static int write_image_job(struct job *j)
{
    char fin[PATH_MAX], tmp[PATH_MAX + 8];
    image_path(fin, sizeof fin, j->version);
    snprintf(tmp, sizeof tmp, "%s.tmp", fin);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    bool incr = j->parent_version >= 0;
    int rc = incr ? sf_snapshot_write_incremental(j->s, j->prev, fd) : sf_snapshot_write(j->s, fd);
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    struct stat st;
    if (!rc && fstat(fd, &st) < 0)
        rc = -errno;
    if (close(fd) < 0 && !rc)
        rc = -errno;
    uint64_t id = sf_snapshot_id(j->s), pid = incr ? sf_snapshot_id(j->prev) : 0;
    if (!rc)
        rc = verify_image(tmp, id, pid);
    if (!rc && rename(tmp, fin) < 0)
        rc = -errno;
    if (rc) {
        unlink(tmp);
        return rc;
    }
    /* the .meta is written after the image is durable under its name
     * (write_atomic fsyncs the directory, which makes the rename durable) */
    return write_meta(j, id, pid, (uint64_t)st.st_size);
}

static void gate_wait(void)
{
    if (S.gate_fd < 0)
        return;
    char c;
    ssize_t r;
    do
        r = read(S.gate_fd, &c, 1);
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        close(S.gate_fd);
        S.gate_fd = -1;
    }
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&S.mu);
    for (;;) {
        while (!S.qn && !S.stop)
            pthread_cond_wait(&S.cv, &S.mu);
        if (!S.qn)
            break;
        struct job j = S.q[S.qhead];
        S.busy = true;
        bool failed = S.werr != 0;
        pthread_mutex_unlock(&S.mu);

        int rc = 0;
        if (j.kind == JOB_PRUNE) {
            delete_older(S.rankdir, NULL, j.cutoff);
        } else if (!failed) {
            gate_wait();
            rc = write_image_job(&j);
        }
        if (j.prev)
            sf_snapshot_release(j.prev);
        free(j.regs);

        pthread_mutex_lock(&S.mu);
        S.qhead = (S.qhead + 1) % QMAX;
        S.qn--;
        S.busy = false;
        if (j.kind == JOB_IMAGE) {
            if (rc && !S.werr)
                S.werr = rc;
            if (!rc && !failed && !S.werr)
                S.done_upto = j.version;
        }
        pthread_cond_broadcast(&S.cv);
    }
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

/* Queues a job; waits for room.  Called with S.mu not held. */
static void enqueue(const struct job *j)
{
    pthread_mutex_lock(&S.mu);
    while (S.qn == QMAX)
        pthread_cond_wait(&S.cv, &S.mu);
    S.q[(S.qhead + S.qn) % QMAX] = *j;
    S.qn++;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

/* ------------------------------------------------------------------------ */
/* Manifest thread (rank 0)                                                 */
/* ------------------------------------------------------------------------ */

static void *manifest_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&S.mu);
    for (;;) {
        while (S.m_target <= S.m_written && !S.stop)
            pthread_cond_wait(&S.cv, &S.mu);
        if (S.m_target <= S.m_written)
            break;
        int target = S.m_target, from = S.m_written, err = S.m_err;
        /* S.vers grows (realloc) in the caller's thread under S.mu: copy the
         * entries up to target while holding it */
        size_t n = 0;
        while (n < S.nvers && S.vers[n].v <= target)
            n++;
        struct vent *vs = malloc((n ? n : 1) * sizeof(*vs));
        if (vs)
            memcpy(vs, S.vers, n * sizeof(*vs));
        int keep = S.keep;
        pthread_mutex_unlock(&S.mu);
        if (!vs)
            err = err ? err : -ENOMEM;
        for (size_t i = 0; i < n && !err; i++) {
            if (vs[i].v <= from || vs[i].v > target)
                continue;
            /* a manifest per version, in order; the chain is what the
             * bases say (the meta files carry the same links) */
            size_t cap = 256 + 12 * n;
            char *text = malloc(cap);
            if (!text) {
                err = -ENOMEM;
                break;
            }
            int len = snprintf(text, cap, MAN_MAGIC "\nversion %d\nnranks %d\nrun %016" PRIx64 "\nbase %d\nchain",
                               vs[i].v, S.nranks, S.run_id, vs[i].base);
            for (size_t k = 0; k < n; k++)
                if (vs[k].v >= vs[i].base && vs[k].v <= vs[i].v)
                    len += snprintf(text + len, cap - (size_t)len, " %d", vs[k].v);
            snprintf(text + len, cap - (size_t)len, "\n");
            char path[PATH_MAX];
            manifest_path(path, sizeof path, vs[i].v);
            err = write_atomic(S.dir, path, text);
            free(text);
        }
        int cutoff = 0;
        if (!err && keep > 0 && n) {
            size_t c = n < (size_t)keep ? 0 : n - (size_t)keep;
            cutoff = vs[c].base;
            /* manifests first: a version is never listed without its files */
            delete_older(S.dir, "manifest", cutoff);
        }
        free(vs);
        pthread_mutex_lock(&S.mu);
        if (err && !S.m_err)
            S.m_err = err;
        if (!err) {
            S.m_written = target;
            if (cutoff > S.m_cutoff)
                S.m_cutoff = cutoff;
        } else {
            S.m_written = S.m_target; /* give up on these; the error is sticky */
        }
        pthread_cond_broadcast(&S.cv);
    }
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The reduction every collective call makes                                */
/* ------------------------------------------------------------------------ */

enum { X_VMIN, X_VMAX_NEG, X_DONE, X_ERR, X_MDONE_NEG, X_CUTOFF_NEG, X_N };

/* One MPI_Allreduce (MIN over int64) carrying this rank's argument and
 * error and what its threads did; then acts on what the others did: rank 0
 * is told which versions every rank has durable, every rank which prune
 * cutoff is safe.  No rank leaves before all have entered. */
static int exchange(int version, int local_err, int64_t out[X_N])
{
    int64_t in[X_N];
    pthread_mutex_lock(&S.mu);
    int werr = S.werr ? S.werr : (S.rank == 0 ? S.m_err : 0);
    in[X_VMIN] = version;
    in[X_VMAX_NEG] = -(int64_t)version;
    in[X_DONE] = S.done_upto;
    in[X_ERR] = local_err ? local_err : werr;
    in[X_MDONE_NEG] = S.rank == 0 ? -(int64_t)S.m_written : INT64_MAX;
    in[X_CUTOFF_NEG] = S.rank == 0 ? -(int64_t)S.m_cutoff : INT64_MAX;
    pthread_mutex_unlock(&S.mu);
    int mrc = MPI_Allreduce(in, out, X_N, MPI_INT64_T, MPI_MIN, S.comm);
    if (mrc != MPI_SUCCESS)
        return -EIO;
    int done = (int)out[X_DONE];
    int cutoff = (int)-out[X_CUTOFF_NEG];
    pthread_mutex_lock(&S.mu);
    if (S.rank == 0 && done > S.m_target) {
        S.m_target = done;
        pthread_cond_broadcast(&S.cv);
    }
    bool prune = cutoff > S.prune_sent;
    if (prune)
        S.prune_sent = cutoff;
    pthread_mutex_unlock(&S.mu);
    if (prune) {
        struct job j = {.kind = JOB_PRUNE, .cutoff = cutoff, .version = -1, .parent_version = -1};
        enqueue(&j);
    }
    return 0;
}

/* The error every rank returns: its own, else SFM_EREMOTE if any failed. */
static int agree(int local, int64_t global_min)
{
    if (local)
        return local;
    return global_min < 0 ? SFM_EREMOTE : 0;
}

/* ------------------------------------------------------------------------ */
/* Public functions                                                         */
/* ------------------------------------------------------------------------ */

static int check_info_file(void)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/sfm.info", S.dir);
    char *text = read_checked(path);
    if (!text) {
        if (errno != ENOENT)
            return -EBADMSG;
        char body[128];
        snprintf(body, sizeof body, INFO_MAGIC "\nnranks %d\n", S.nranks);
        return write_atomic(S.dir, path, body);
    }
    int n = -1;
    const char *p = strstr(text, "\nnranks ");
    if (strncmp(text, INFO_MAGIC "\n", strlen(INFO_MAGIC) + 1) != 0 || !p || sscanf(p, "\nnranks %d", &n) != 1) {
        free(text);
        return -EBADMSG;
    }
    free(text);
    return n == S.nranks ? 0 : SFM_ENRANKS;
}

SFM_API int sfm_init(MPI_Comm comm, const char *dir)
{
    if (S.inited)
        return -EALREADY;
    if (!dir || comm == MPI_COMM_NULL || strlen(dir) + 16 >= sizeof(S.dir))
        return -EINVAL;
    MPI_Comm c;
    if (MPI_Comm_dup(comm, &c) != MPI_SUCCESS)
        return -EIO;
    int rank, n;
    MPI_Comm_rank(c, &rank);
    MPI_Comm_size(c, &n);

    snprintf(S.dir, sizeof S.dir, "%s", dir);
    S.rank = rank;
    S.nranks = n;
    /* rank 0 creates the directory and checks/creates sfm.info */
    int rc0 = 0;
    uint64_t run_id = 0;
    if (rank == 0) {
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            rc0 = -errno;
        if (!rc0)
            rc0 = check_info_file();
        if (getrandom(&run_id, sizeof run_id, 0) != sizeof run_id)
            run_id = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
    }
    int64_t b[2] = {rc0, (int64_t)run_id};
    MPI_Bcast(b, 2, MPI_INT64_T, 0, c);
    rc0 = (int)b[0];
    run_id = (uint64_t)b[1];

    /* every rank: its directory and its tracker */
    int rc = rc0;
    sf_tracker *t = NULL;
    int kw = 0;
    if (!rc) {
        snprintf(S.rankdir, sizeof S.rankdir, "%s/rank-%05d", dir, rank);
        if (mkdir(S.rankdir, 0755) < 0 && errno != EEXIST)
            rc = -errno;
    }
    if (!rc) {
        sf_options o = {.backend = SF_BACKEND_AUTO, .flags = SF_OPT_SNAPSHOTS | SF_OPT_KERNEL_WRITES};
        const char *mb = getenv("SNAPFAULT_MPI_STORE_MB");
        if (mb && *mb && strtoull(mb, NULL, 10) > 0)
            o.store_limit = (size_t)strtoull(mb, NULL, 10) << 20;
        const char *be = getenv("SNAPFAULT_MPI_BACKEND");
        if (be && *be) {
            int bk = sf_backend_parse(be);
            if (bk >= 0) {
                o.backend = (sf_backend)bk;
                o.flags &= ~SF_OPT_KERNEL_WRITES;
            }
        }
        rc = sf_tracker_create(&t, &o);
        if (rc == -ENOTSUP && (o.flags & SF_OPT_KERNEL_WRITES)) {
            o.flags &= ~SF_OPT_KERNEL_WRITES;
            rc = sf_tracker_create(&t, &o);
        } else if (!rc && (o.flags & SF_OPT_KERNEL_WRITES)) {
            kw = 1;
        }
        if (!rc && !kw)
            kw = sf_tracker_fault_mode(t) == SF_FAULTS_HANDLER_THREAD ||
                 sf_tracker_fault_mode(t) == SF_FAULTS_NONE;
    }
    int64_t e = rc, emin;
    MPI_Allreduce(&e, &emin, 1, MPI_INT64_T, MPI_MIN, c);
    if (emin < 0) {
        sf_tracker_destroy(t);
        MPI_Comm_free(&c);
        return rc0 ? rc0 : agree(rc, emin);
    }

    S.comm = c;
    S.t = t;
    S.kernel_writes = kw;
    S.run_id = run_id;
    S.keep = 0;
    S.full_every = 0;
    S.nregs = 0;
    S.last_version = -1;
    S.taken_any = false;
    S.last_snap = NULL;
    S.last_snap_version = -1;
    S.chain_base = -1;
    S.since_full = 0;
    S.nvers = 0;
    S.qhead = S.qn = 0;
    S.busy = S.stop = false;
    S.done_upto = -1;
    S.werr = 0;
    S.prune_sent = 0;
    S.m_target = S.m_written = -1;
    S.m_cutoff = 0;
    S.m_err = 0;
    S.gate_fd = -1;
    const char *g = getenv("SNAPFAULT_MPI_TEST_GATE_FD");
    if (g && *g)
        S.gate_fd = atoi(g);
    pthread_mutex_init(&S.mu, NULL);
    pthread_cond_init(&S.cv, NULL);
    rc = -pthread_create(&S.writer, NULL, writer_main, NULL);
    S.writer_on = !rc;
    S.mthread_on = false;
    if (!rc && rank == 0) {
        rc = -pthread_create(&S.mthread, NULL, manifest_main, NULL);
        S.mthread_on = !rc;
    }
    /* a thread that cannot start is fatal for the rank; say so to all */
    e = rc;
    MPI_Allreduce(&e, &emin, 1, MPI_INT64_T, MPI_MIN, c);
    S.inited = true;
    if (emin < 0) {
        sfm_finalize();
        return agree(rc, emin);
    }
    return 0;
}

SFM_API int sfm_set_policy(int keep, int full_every)
{
    if (!S.inited)
        return SFM_ENOTINIT;
    if (keep < 0 || full_every < 0 || (keep > 0 && full_every == 0))
        return -EINVAL;
    if (S.taken_any)
        return -EBUSY;
    pthread_mutex_lock(&S.mu);
    S.keep = keep;
    S.full_every = full_every;
    pthread_mutex_unlock(&S.mu);
    return 0;
}

SFM_API int sfm_protect(int id, void *addr, size_t len)
{
    if (!S.inited)
        return SFM_ENOTINIT;
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)addr;
    if (id < 0 || !addr || !len || (a & (uintptr_t)(ps - 1)) || (len & (size_t)(ps - 1)) || a + len < a)
        return -EINVAL;
    for (size_t i = 0; i < S.nregs; i++) {
        uintptr_t b = (uintptr_t)S.regs[i].addr;
        if (S.regs[i].id == id || (a < b + S.regs[i].len && b < a + len))
            return -EEXIST;
    }
    if (S.nregs == S.regcap) {
        size_t nc = S.regcap ? 2 * S.regcap : 8;
        struct region *nr = realloc(S.regs, nc * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        S.regs = nr;
        S.regcap = nc;
    }
    madvise(addr, len, MADV_NOHUGEPAGE); /* 4 KiB granularity; best effort */
    int rc = sf_track(S.t, addr, len);
    if (rc)
        return rc;
    S.regs[S.nregs++] = (struct region){id, addr, len};
    return 0;
}

SFM_API int sfm_checkpoint(int version)
{
    if (!S.inited)
        return SFM_ENOTINIT;
    int local = 0;
    if (version < 0 || version <= S.last_version)
        local = SFM_EVERSION;
    else if (!S.nregs)
        local = -ENODATA;
    int64_t x[X_N];
    int rc = exchange(version, local, x);
    if (rc)
        return rc;
    if (local)
        return local;
    if (x[X_VMIN] != -x[X_VMAX_NEG])
        return SFM_EVERSION;
    if (x[X_ERR] < 0) {
        pthread_mutex_lock(&S.mu);
        int mine = S.werr ? S.werr : (S.rank == 0 ? S.m_err : 0);
        pthread_mutex_unlock(&S.mu);
        return agree(mine, x[X_ERR]);
    }

    /* the cut: everyone has arrived (the reduction above); take; make sure
     * everyone has taken before anyone returns */
    sf_snapshot *s = NULL;
    pthread_mutex_lock(&S.mu);
    while (S.qn == QMAX) /* back-pressure: at most QMAX in flight */
        pthread_cond_wait(&S.cv, &S.mu);
    pthread_mutex_unlock(&S.mu);
    rc = sf_snapshot_take(S.t, &s);
    int64_t e = rc, emin;
    if (MPI_Allreduce(&e, &emin, 1, MPI_INT64_T, MPI_MIN, S.comm) != MPI_SUCCESS)
        emin = -EIO;
    if (emin < 0) {
        sf_snapshot_release(s);
        return agree(rc, emin);
    }

    bool full = S.chain_base < 0 || (S.full_every > 0 && S.since_full >= S.full_every);
    struct job j = {.kind = JOB_IMAGE, .version = version, .s = s, .prev = S.last_snap};
    j.parent_version = full ? -1 : S.last_snap_version;
    j.regs = malloc(S.nregs * sizeof(*j.regs));
    if (!j.regs) {
        /* cannot describe the regions: fail this version on this rank (the
         * others learn it at the next reduction) */
        pthread_mutex_lock(&S.mu);
        if (!S.werr)
            S.werr = -ENOMEM;
        pthread_mutex_unlock(&S.mu);
    } else {
        memcpy(j.regs, S.regs, S.nregs * sizeof(*j.regs));
        j.nregs = S.nregs;
    }
    if (full) {
        S.chain_base = version;
        S.since_full = 1;
    } else {
        S.since_full++;
    }
    pthread_mutex_lock(&S.mu);
    if (vent_push(version, S.chain_base) && !S.werr)
        S.werr = -ENOMEM;
    pthread_mutex_unlock(&S.mu);
    if (!S.taken_any && S.rank == 0 && S.last_version < 0) {
        /* a fresh job (no restart) in a used directory starts it over: the
         * old manifests go, so no old version is ever paired with ours */
        DIR *d = opendir(S.dir);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (name_version(de->d_name, "manifest") >= 0) {
                    char p[PATH_MAX];
                    snprintf(p, sizeof p, "%s/%s", S.dir, de->d_name);
                    unlink(p);
                }
            }
            closedir(d);
        }
    }
    S.taken_any = true;
    S.last_version = version;
    S.last_snap = s;
    S.last_snap_version = version;
    enqueue(&j);
    return 0;
}

SFM_API int sfm_wait(void)
{
    if (!S.inited)
        return SFM_ENOTINIT;
    pthread_mutex_lock(&S.mu);
    while (S.qn)
        pthread_cond_wait(&S.cv, &S.mu);
    int rc = S.werr;
    pthread_mutex_unlock(&S.mu);
    return rc;
}

SFM_API int sfm_sync(int *complete)
{
    if (!S.inited)
        return SFM_ENOTINIT;
    int local = sfm_wait();
    int64_t x[X_N];
    int rc = exchange(0, local, x);
    if (rc)
        return rc;
    /* rank 0 writes the manifests up to what every rank has durable */
    int done = (int)x[X_DONE], merr = 0, newest = -1;
    if (S.rank == 0) {
        pthread_mutex_lock(&S.mu);
        while (S.m_written < done && S.m_target >= done && !S.m_err)
            pthread_cond_wait(&S.cv, &S.mu);
        merr = S.m_err;
        newest = S.m_written;
        pthread_mutex_unlock(&S.mu);
    }
    /* rank 0's newest manifest: the others contribute -(-1) = 1 */
    int64_t in[2] = {local ? local : merr, -(int64_t)newest}, out[2];
    if (MPI_Allreduce(in, out, 2, MPI_INT64_T, MPI_MIN, S.comm) != MPI_SUCCESS)
        return -EIO;
    if (complete)
        *complete = (int)-out[1];
    return agree(local ? local : merr, out[0] < 0 ? out[0] : x[X_ERR]);
}

/* ------------------------------------------------------------------------ */
/* Restart                                                                  */
/* ------------------------------------------------------------------------ */

struct meta {
    int version, rank, nranks, parent;
    uint64_t run, id, parent_id, bytes;
    size_t nregs;
    struct region *regs; /* addr = address at checkpoint time */
};

static int parse_meta(int version, struct meta *m)
{
    char path[PATH_MAX];
    meta_path(path, sizeof path, version);
    char *text = read_checked(path);
    if (!text)
        return errno == ENOENT ? -ENOENT : -EBADMSG;
    memset(m, 0, sizeof *m);
    int rc = -EBADMSG;
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    if (!line || strcmp(line, META_MAGIC) != 0)
        goto out;
    int fields = 0;
    size_t nr = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        if (sscanf(line, "version %d", &m->version) == 1)
            fields |= 1;
        else if (sscanf(line, "rank %d", &m->rank) == 1)
            fields |= 2;
        else if (sscanf(line, "nranks %d", &m->nranks) == 1)
            fields |= 4;
        else if (sscanf(line, "run %" SCNx64, &m->run) == 1)
            fields |= 8;
        else if (sscanf(line, "parent_id %" SCNx64, &m->parent_id) == 1)
            fields |= 16;
        else if (sscanf(line, "parent %d", &m->parent) == 1)
            fields |= 32;
        else if (sscanf(line, "id %" SCNx64, &m->id) == 1)
            fields |= 64;
        else if (sscanf(line, "bytes %" SCNu64, &m->bytes) == 1)
            fields |= 128;
        else if (sscanf(line, "regions %zu", &m->nregs) == 1) {
            if (m->nregs > (1u << 20))
                goto out;
            m->regs = calloc(m->nregs ? m->nregs : 1, sizeof(*m->regs));
            if (!m->regs) {
                rc = -ENOMEM;
                goto out;
            }
            fields |= 256;
        } else if (!strncmp(line, "region ", 7)) {
            int id;
            uintptr_t a;
            size_t l;
            if (!m->regs || nr >= m->nregs || sscanf(line, "region %d %" SCNxPTR " %zu", &id, &a, &l) != 3)
                goto out;
            m->regs[nr++] = (struct region){id, (void *)a, l};
        } else
            goto out;
    }
    if (fields == 511 && nr == m->nregs && m->version == version)
        rc = 0;
out:
    free(text);
    if (rc) {
        free(m->regs);
        m->regs = NULL;
    }
    return rc;
}

struct chain {
    int n;
    struct meta *m;   /* newest first */
    int *fd;
    sf_image **im;
};

static void chain_free(struct chain *c)
{
    for (int i = 0; i < c->n; i++) {
        sf_image_close(c->im[i]);
        if (c->fd[i] >= 0)
            close(c->fd[i]);
        free(c->m[i].regs);
    }
    free(c->m);
    free(c->fd);
    free(c->im);
    memset(c, 0, sizeof *c);
}

/* Opens and verifies this rank's chain for version v of run `run` whose
 * manifest says it is `chain` (ascending, chain[0] the base).  0 or
 * -EBADMSG/-ENOENT (damaged or missing: fall back), -ENOMEM. */
static int chain_open(struct chain *c, int v, uint64_t run, const int *chain, int nchain)
{
    memset(c, 0, sizeof *c);
    c->m = calloc((size_t)nchain, sizeof(*c->m));
    c->fd = malloc((size_t)nchain * sizeof(int));
    c->im = calloc((size_t)nchain, sizeof(*c->im));
    if (!c->m || !c->fd || !c->im) {
        free(c->m);
        free(c->fd);
        free(c->im);
        return -ENOMEM;
    }
    int rc = 0;
    if (chain[nchain - 1] != v)
        rc = -EBADMSG;
    for (int i = 0; i < nchain && !rc; i++) {
        int ver = chain[nchain - 1 - i]; /* newest first */
        c->fd[i] = -1;
        c->n = i + 1;
        struct meta *m = &c->m[i];
        if ((rc = parse_meta(ver, m)))
            break;
        int want_parent = i + 1 < nchain ? chain[nchain - 2 - i] : -1;
        if (m->rank != S.rank || m->nranks != S.nranks || m->run != run || m->parent != want_parent) {
            rc = -EBADMSG;
            break;
        }
        if (i > 0 && c->m[i - 1].parent_id != m->id) {
            rc = -EBADMSG;
            break;
        }
        if ((want_parent < 0) != (m->parent_id == 0)) {
            rc = -EBADMSG;
            break;
        }
        char path[PATH_MAX];
        image_path(path, sizeof path, ver);
        c->fd[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (c->fd[i] < 0) {
            rc = -ENOENT;
            break;
        }
        struct stat st;
        if (fstat(c->fd[i], &st) < 0 || (uint64_t)st.st_size != m->bytes) {
            rc = -EBADMSG;
            break;
        }
        if ((rc = sf_image_open(&c->im[i], c->fd[i]))) {
            rc = rc == -ENOMEM ? rc : -EBADMSG;
            break;
        }
        sf_image_info info;
        sf_image_get_info(c->im[i], &info);
        if (info.id != m->id || info.parent_id != m->parent_id) {
            rc = -EBADMSG;
            break;
        }
        if ((rc = sf_image_verify(c->im[i]))) {
            rc = rc == -ENOMEM ? rc : -EBADMSG;
            break;
        }
    }
    if (rc)
        chain_free(c);
    return rc;
}

/* The protected regions must be exactly the newest meta's, by id and size. */
static int regions_match(const struct meta *m)
{
    if (m->nregs != S.nregs)
        return SFM_EREGIONS;
    for (size_t i = 0; i < m->nregs; i++) {
        size_t k = 0;
        while (k < S.nregs && S.regs[k].id != m->regs[i].id)
            k++;
        if (k == S.nregs || S.regs[k].len != m->regs[i].len)
            return SFM_EREGIONS;
    }
    return 0;
}

/* Copies old address range [a, a+len) as of the chain's newest image into
 * dst: per chunk, the newest image that holds each page.  sf_image_read
 * fails with -ENODATA when an incremental image lacks a page of the span,
 * so a span that fails is retried page by page; spans still unresolved go
 * to the parent, as whole runs first. */
static int chain_restore(const struct chain *c, uintptr_t a, size_t len, char *dst, char *tmp, size_t ps)
{
    for (size_t off = 0; off < len; off += RESTORE_CHUNK * ps) {
        size_t n = len - off < RESTORE_CHUNK * ps ? (len - off) / ps : RESTORE_CHUNK;
        bool todo[RESTORE_CHUNK];
        for (size_t p = 0; p < n; p++)
            todo[p] = true;
        size_t left = n;
        for (int i = 0; i < c->n && left; i++) {
            /* runs of unresolved pages */
            for (size_t p = 0; p < n;) {
                if (!todo[p]) {
                    p++;
                    continue;
                }
                size_t q = p;
                while (q < n && todo[q])
                    q++;
                uint64_t addr = a + off + p * ps;
                int rc = sf_image_read(c->im[i], addr, tmp, (q - p) * ps);
                if (rc == 0) {
                    memcpy(dst + off + p * ps, tmp, (q - p) * ps);
                    for (size_t k = p; k < q; k++)
                        todo[k] = false;
                    left -= q - p;
                } else if (rc == -ENODATA && q - p > 1) {
                    for (size_t k = p; k < q; k++) {
                        int r1 = sf_image_read(c->im[i], a + off + k * ps, tmp, ps);
                        if (r1 == 0) {
                            memcpy(dst + off + k * ps, tmp, ps);
                            todo[k] = false;
                            left--;
                        } else if (r1 != -ENODATA) {
                            return r1;
                        }
                    }
                } else if (rc != -ENODATA) {
                    return rc;
                }
                p = q;
            }
        }
        if (left)
            return -EBADMSG; /* the base image lacks a page: not a valid chain */
    }
    return 0;
}

static int parse_manifest(int v, uint64_t *run, int **chain, int *nchain)
{
    char path[PATH_MAX];
    manifest_path(path, sizeof path, v);
    char *text = read_checked(path);
    if (!text)
        return -EBADMSG;
    int rc = -EBADMSG, ver = -1, nr = -1, base = -1;
    char *p;
    if (strncmp(text, MAN_MAGIC "\n", strlen(MAN_MAGIC) + 1) != 0)
        goto out;
    if (!(p = strstr(text, "\nversion ")) || sscanf(p, "\nversion %d", &ver) != 1 || ver != v)
        goto out;
    if (!(p = strstr(text, "\nnranks ")) || sscanf(p, "\nnranks %d", &nr) != 1)
        goto out;
    if (nr != S.nranks) {
        rc = SFM_ENRANKS;
        goto out;
    }
    if (!(p = strstr(text, "\nrun ")) || sscanf(p, "\nrun %" SCNx64, run) != 1)
        goto out;
    if (!(p = strstr(text, "\nbase ")) || sscanf(p, "\nbase %d", &base) != 1)
        goto out;
    if (!(p = strstr(text, "\nchain")))
        goto out;
    p += 6;
    int cap = 16, n = 0;
    int *ch = malloc((size_t)cap * sizeof(int));
    while (ch) {
        char *end;
        while (*p == ' ')
            p++;
        if (*p == '\n' || !*p)
            break;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > INT_MAX || (n && x <= ch[n - 1])) {
            free(ch);
            ch = NULL;
            break;
        }
        if (n == cap) {
            int *nc = realloc(ch, (size_t)(cap *= 2) * sizeof(int));
            if (!nc) {
                free(ch);
                ch = NULL;
                break;
            }
            ch = nc;
        }
        ch[n++] = (int)x;
        p = end;
    }
    if (!ch || !n || ch[0] != base || ch[n - 1] != v) {
        free(ch);
        goto out;
    }
    *chain = ch;
    *nchain = n;
    rc = 0;
out:
    free(text);
    return rc;
}

static int cmp_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

SFM_API int sfm_restart_latest(int *version)
{
    if (!S.inited)
        return SFM_ENOTINIT;
    if (!version)
        return -EINVAL;
    int local = S.taken_any ? -EBUSY : 0;
    /* rank 0 lists the manifests (the newest MAX_CANDIDATES); everyone
     * tries them newest first */
    int nv = 0, vs[MAX_CANDIDATES + 1];
    if (S.rank == 0 && !local) {
        DIR *d = opendir(S.dir);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                int v = name_version(e->d_name, "manifest");
                size_t l = strlen(e->d_name);
                if (v < 0 || l < 9 || strcmp(e->d_name + l - 9, ".manifest") != 0)
                    continue;
                vs[nv++] = v;
                if (nv > MAX_CANDIDATES) { /* drop the oldest */
                    qsort(vs, (size_t)nv, sizeof(int), cmp_desc);
                    nv--;
                }
            }
            closedir(d);
        }
        qsort(vs, (size_t)nv, sizeof(int), cmp_desc);
    }
    int64_t lin = local, lmin;
    MPI_Allreduce(&lin, &lmin, 1, MPI_INT64_T, MPI_MIN, S.comm);
    if (lmin < 0)
        return agree(local, lmin);
    MPI_Bcast(&nv, 1, MPI_INT, 0, S.comm);
    MPI_Bcast(vs, nv, MPI_INT, 0, S.comm);

    long ps = sysconf(_SC_PAGESIZE);
    char *tmp = malloc((size_t)RESTORE_CHUNK * (size_t)ps);
    int result = SFM_ENOCKPT;
    for (int k = 0; k < nv; k++) {
        int v = vs[k];
        uint64_t run = 0;
        int *chain = NULL, nchain = 0;
        struct chain c = {0};
        /* status: 0 usable, 1 damaged here (fall back), <0 an error that
         * ends the search (wrong rank count, region mismatch, ENOMEM) */
        int st = !tmp ? -ENOMEM : 0;
        if (!st) {
            int r = parse_manifest(v, &run, &chain, &nchain);
            st = r == SFM_ENRANKS ? r : r ? 1 : 0;
        }
        if (!st) {
            int r = chain_open(&c, v, run, chain, nchain);
            st = r == -ENOMEM ? r : r ? 1 : 0;
        }
        if (!st)
            st = regions_match(&c.m[0]);
        int64_t in[2] = {st < 0 ? st : 0, -(int64_t)(st > 0)}, out[2];
        MPI_Allreduce(in, out, 2, MPI_INT64_T, MPI_MIN, S.comm);
        if (out[0] < 0) {
            result = agree(st < 0 ? st : 0, out[0]);
            chain_free(&c);
            free(chain);
            break;
        }
        if (out[1] < 0) { /* damaged on some rank: the previous version */
            chain_free(&c);
            free(chain);
            continue;
        }
        /* valid everywhere: restore every region */
        int r = 0;
        for (size_t i = 0; i < c.m[0].nregs && !r; i++) {
            const struct region *old = &c.m[0].regs[i];
            size_t j = 0;
            while (S.regs[j].id != old->id)
                j++;
            r = chain_restore(&c, (uintptr_t)old->addr, old->len, S.regs[j].addr, tmp, (size_t)ps);
        }
        int64_t rr = r, rmin;
        MPI_Allreduce(&rr, &rmin, 1, MPI_INT64_T, MPI_MIN, S.comm);
        int base = nchain ? chain[0] : v;
        chain_free(&c);
        free(chain);
        if (rmin < 0) {
            /* memory may now hold a partial restore: an error, not a fallback */
            result = agree(r, rmin);
            break;
        }
        result = 0;
        *version = v;
        S.last_version = v;
        pthread_mutex_lock(&S.mu);
        vent_push(v, base);
        S.done_upto = v;
        S.m_target = S.m_written = v;
        pthread_mutex_unlock(&S.mu);
        S.chain_base = -1; /* the next checkpoint is a full image */
        if (S.rank == 0) {
            /* manifests newer than v are of a run that did not finish
             * them validly: never let them pair with our new images */
            for (int q = 0; q < k; q++) {
                char p[PATH_MAX];
                manifest_path(p, sizeof p, vs[q]);
                unlink(p);
            }
            fsync_dir(S.dir);
        }
        break;
    }
    free(tmp);
    return result;
}

SFM_API int sfm_finalize(void)
{
    if (!S.inited)
        return SFM_ENOTINIT;
    int rc = S.comm != MPI_COMM_NULL ? sfm_sync(NULL) : 0;
    pthread_mutex_lock(&S.mu);
    while (S.qn)
        pthread_cond_wait(&S.cv, &S.mu);
    S.stop = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    if (S.writer_on)
        pthread_join(S.writer, NULL);
    S.writer_on = false;
    if (S.mthread_on)
        pthread_join(S.mthread, NULL);
    sf_snapshot_release(S.last_snap);
    S.last_snap = NULL;
    sf_tracker_destroy(S.t);
    S.t = NULL;
    free(S.regs);
    S.regs = NULL;
    S.nregs = S.regcap = 0;
    free(S.vers);
    S.vers = NULL;
    S.nvers = S.vercap = 0;
    if (S.gate_fd >= 0)
        close(S.gate_fd);
    S.gate_fd = -1;
    MPI_Comm_free(&S.comm);
    pthread_cond_destroy(&S.cv);
    pthread_mutex_destroy(&S.mu);
    S.inited = false;
    return rc;
}

SFM_API int sfm_kernel_writes(void)
{
    return S.inited ? S.kernel_writes : SFM_ENOTINIT;
}

SFM_API const char *sfm_strerror(int err)
{
    switch (err) {
    case SFM_ENOTINIT:
        return "snapfault-mpi: sfm_init has not been called";
    case SFM_EVERSION:
        return "snapfault-mpi: checkpoint version not newer than the last one, or not the same on every rank";
    case SFM_ENRANKS:
        return "snapfault-mpi: the checkpoint directory was written by a different number of ranks";
    case SFM_EREGIONS:
        return "snapfault-mpi: the protected regions (ids, sizes) differ from the checkpoint's";
    case SFM_EREMOTE:
        return "snapfault-mpi: the operation failed on another rank";
    case SFM_ENOCKPT:
        return "snapfault-mpi: no checkpoint version is complete and valid on every rank";
    case -ENODATA:
        return "snapfault-mpi: no region protected";
    default:
        return sf_strerror(err);
    }
}
