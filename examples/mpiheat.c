/* mpiheat - a 2-D heat-equation solver (Jacobi, 5-point stencil) over MPI
 * ranks, each owning a band of rows with one ghost row above and below,
 * exchanged with its neighbours every step straight into the protected
 * grid.  Checkpoints every K steps with libsnapfault-mpi and can restart
 * from the newest complete checkpoint.  Prints the final grid checksum
 * (bitwise: the same for an uninterrupted and a restarted run).
 *
 *   mpirun -np 4 build/examples/mpiheat --dir ckpt --steps 200 --every 20
 *   mpirun -np 4 build/examples/mpiheat --dir ckpt --steps 200 --every 20 --restart
 *
 * Options (all ranks get the same):
 *   --nx N            columns (default 512)
 *   --rows N          rows per rank (default 128)
 *   --steps N         last step (default 100)
 *   --every K         checkpoint after every K-th step, version = step / K (0: never)
 *   --dir D           checkpoint directory (default mpiheat.ckpt)
 *   --restart         restart from the newest complete checkpoint first
 *   --keep N --full-every F   pruning policy (sfm_set_policy)
 *   --active-rows A   update only a band of A rows per step that moves down
 *                     the grid (a small fraction written per step); 0: all
 *   --die-rank R --die-after V   rank R kills itself with SIGKILL halfway
 *                     between checkpoint V (made complete first with
 *                     sfm_sync) and checkpoint V+1
 *   --gate            test mode: the writer thread of every rank waits
 *                     before each image until the next checkpoint is taken,
 *                     so each checkpoint is taken while the previous one is
 *                     still in flight
 *   --bench           print RESULT lines: stop time per checkpoint, bytes per
 *                     image, and a full synchronous write of the same state
 *                     (write + fsync) measured in the same run
 */
#include <mpi.h>
#include <snapfault-mpi.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct state { /* region 1: one page */
    int64_t step; /* steps completed */
    int64_t magic;
};

static int rank, nranks;

static void die(const char *what, int rc)
{
    fprintf(stderr, "mpiheat rank %d: %s: %s\n", rank, what, sfm_strerror(rc));
    MPI_Abort(MPI_COMM_WORLD, 3);
    exit(3);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

static double now(void) { return MPI_Wtime(); }

int main(int argc, char **argv)
{
    long nx = 512, rows = 128, steps = 100, every = 0, keep = 0, full_every = 0, active = 0;
    long die_rank = -1, die_after = -1;
    int restart = 0, gate = 0, bench = 0;
    const char *dir = "mpiheat.ckpt";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NUM(name, var)                      \
    if (!strcmp(a, name) && v) {            \
        var = strtol(v, NULL, 10);          \
        i++;                                \
        continue;                           \
    }
        NUM("--nx", nx)
        NUM("--rows", rows)
        NUM("--steps", steps)
        NUM("--every", every)
        NUM("--keep", keep)
        NUM("--full-every", full_every)
        NUM("--active-rows", active)
        NUM("--die-rank", die_rank)
        NUM("--die-after", die_after)
        if (!strcmp(a, "--dir") && v) {
            dir = v;
            i++;
            continue;
        }
        if (!strcmp(a, "--restart")) {
            restart = 1;
            continue;
        }
        if (!strcmp(a, "--gate")) {
            gate = 1;
            continue;
        }
        if (!strcmp(a, "--bench")) {
            bench = 1;
            continue;
        }
        fprintf(stderr, "mpiheat: unknown option %s\n", a);
        return 2;
    }
    if (nx < 3 || rows < 1 || steps < 0 || every < 0 || active < 0 || active > rows) {
        fprintf(stderr, "mpiheat: bad sizes\n");
        return 2;
    }

    int gate_w = -1;
    if (gate) {
        /* the writer thread reads one byte from this pipe before each image */
        int p[2];
        if (pipe(p) < 0)
            return 2;
        char num[16];
        snprintf(num, sizeof num, "%d", p[0]);
        setenv("SNAPFAULT_MPI_TEST_GATE_FD", num, 1);
        gate_w = p[1];
    }

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);

    long ps = sysconf(_SC_PAGESIZE);
    size_t row_bytes = (size_t)nx * sizeof(double);
    size_t grid_bytes = ((size_t)(rows + 2) * row_bytes + (size_t)ps - 1) & ~((size_t)ps - 1);
    double *u = mmap(NULL, grid_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct state *st = mmap(NULL, (size_t)ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    double *rowbuf = malloc(2 * row_bytes);
    if (u == MAP_FAILED || st == MAP_FAILED || !rowbuf)
        die("mmap", -ENOMEM);
#define U(i, j) u[(size_t)(i) * (size_t)nx + (size_t)(j)]

    int rc;
    if (every || restart) {
        if ((rc = sfm_init(MPI_COMM_WORLD, dir)))
            die("sfm_init", rc);
        if ((rc = sfm_set_policy((int)keep, (int)full_every)))
            die("sfm_set_policy", rc);
        /* state before protect: the initial condition is the first image's */
    }
    /* initial condition: a hot top edge (rank 0's upper ghost row, fixed)
     * and a hot square in the middle of the domain */
    long gy0 = (long)rank * rows; /* global row of local row 1 */
    for (long i = 0; i < rows + 2; i++)
        for (long j = 0; j < nx; j++) {
            long gy = gy0 + i - 1, gny = rows * nranks;
            double val = 0.125 + 0.001 * (double)((gy * 7 + j * 13) % 17); /* no all-zero page */
            if (gy > gny / 3 && gy < gny / 2 && j > nx / 3 && j < nx / 2)
                val = 0.5;
            U(i, j) = val;
        }
    if (rank == 0)
        for (long j = 0; j < nx; j++)
            U(0, j) = 1.0;
    st->step = 0;
    st->magic = 0x6d706968656174;

    if (every || restart) {
        if ((rc = sfm_protect(0, u, grid_bytes)))
            die("sfm_protect grid", rc);
        if ((rc = sfm_protect(1, st, (size_t)ps)))
            die("sfm_protect state", rc);
    }
    if (restart) {
        int version;
        if ((rc = sfm_restart_latest(&version)))
            die("sfm_restart_latest", rc);
        if (rank == 0)
            printf("mpiheat: restarted from version %d at step %" PRId64 "\n", version, st->step);
    }

    int up = rank > 0 ? rank - 1 : MPI_PROC_NULL, down = rank + 1 < nranks ? rank + 1 : MPI_PROC_NULL;
    double stop_sum = 0, stop_max = 0;
    int nckpt = 0;
    for (long s = st->step + 1; s <= steps; s++) {
        if (rank == die_rank && die_after >= 0 && s == die_after * every + every / 2 + 1) {
            fprintf(stderr, "mpiheat rank %d: killing myself at step %ld\n", rank, s);
            raise(SIGKILL);
        }
        /* halo exchange, received straight into the protected grid */
        MPI_Sendrecv(&U(1, 0), (int)nx, MPI_DOUBLE, up, 0, &U(rows + 1, 0), (int)nx, MPI_DOUBLE, down, 0,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Sendrecv(&U(rows, 0), (int)nx, MPI_DOUBLE, down, 1, &U(0, 0), (int)nx, MPI_DOUBLE, up, 1,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        /* Jacobi over the band [lo, hi) of interior rows, in place with the
         * old copy of the row above kept aside */
        long lo = 1, hi = rows + 1;
        if (active) {
            lo = 1 + ((s - 1) * active) % rows;
            hi = lo + active;
            if (hi > rows + 1)
                hi = rows + 1;
        }
        double *prev_old = rowbuf, *cur_old = rowbuf + nx;
        memcpy(prev_old, &U(lo - 1, 0), row_bytes);
        for (long i = lo; i < hi; i++) {
            memcpy(cur_old, &U(i, 0), row_bytes);
            for (long j = 1; j < nx - 1; j++)
                U(i, j) = cur_old[j] + 0.2 * (prev_old[j] + U(i + 1, j) + cur_old[j - 1] + cur_old[j + 1] -
                                             4.0 * cur_old[j]);
            double *t = prev_old;
            prev_old = cur_old;
            cur_old = t;
        }
        st->step = s;

        if (every && s % every == 0) {
            int version = (int)(s / every);
            if (bench) /* time the checkpoint, not the ranks' arrival skew */
                MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now();
            if ((rc = sfm_checkpoint(version)))
                die("sfm_checkpoint", rc);
            double dt = now() - t0;
            if (gate_w >= 0 && nckpt > 0 && write(gate_w, "g", 1) != 1) /* release the previous one */
                die("gate", -errno);
            nckpt++;
            stop_sum += dt;
            if (dt > stop_max)
                stop_max = dt;
            if (version == die_after) {
                int complete;
                if ((rc = sfm_sync(&complete)))
                    die("sfm_sync", rc);
                if (rank == 0)
                    printf("mpiheat: version %d complete\n", complete);
                fflush(stdout);
            }
            if (bench) {
                /* this checkpoint's stop time (max over ranks), its image
                 * size, then the baseline: the same state written in full,
                 * synchronously, with fsync, ranks stopped */
                if ((rc = sfm_wait()))
                    die("sfm_wait", rc);
                double smax;
                MPI_Reduce(&dt, &smax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
                char path[4096];
                snprintf(path, sizeof path, "%s/rank-%05d/v%09d.sfimg", dir, rank, version);
                struct stat sb;
                double bytes = stat(path, &sb) == 0 ? (double)sb.st_size : -1, btot;
                MPI_Reduce(&bytes, &btot, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
                snprintf(path, sizeof path, "%s/full-%05d.bin", dir, rank);
                MPI_Barrier(MPI_COMM_WORLD);
                double f0 = now();
                int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (fd < 0 || write(fd, u, grid_bytes) != (ssize_t)grid_bytes ||
                    write(fd, st, (size_t)ps) != ps || fsync(fd) < 0)
                    die("full write", -errno);
                close(fd);
                double fdt = now() - f0, fmax;
                MPI_Reduce(&fdt, &fmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
                MPI_Barrier(MPI_COMM_WORLD);
                unlink(path);
                /* pages the solver wrote in this interval, per rank: the
                 * band rows, the two ghost rows received, the state page */
                long ghosts = (up != MPI_PROC_NULL) + (down != MPI_PROC_NULL);
                long wrows = active ? active * every : rows;
                if (wrows > rows)
                    wrows = rows;
                double wpages = (double)(wrows + ghosts) * (double)row_bytes / (double)ps + 1, wtot;
                MPI_Reduce(&wpages, &wtot, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
                if (rank == 0)
                    printf("RESULT version=%d stop_ms=%.3f image_bytes_total=%.0f full_sync_ms=%.3f "
                           "state_bytes_per_rank=%zu written_pages_total=%.0f ranks=%d\n",
                           version, smax * 1e3, btot, fmax * 1e3, grid_bytes + (size_t)ps, wtot,
                           nranks);
            }
        }
    }
    if (gate_w >= 0)
        close(gate_w); /* EOF: the writer stops waiting */

    /* checksum: FNV over every rank's interior rows, in rank order */
    uint64_t h = fnv(1469598103934665603ull, &U(1, 0), (size_t)rows * row_bytes), *all = NULL;
    if (rank == 0)
        all = malloc((size_t)nranks * sizeof(uint64_t));
    MPI_Gather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    double sum = 0, tot;
    for (long i = 1; i <= rows; i++)
        for (long j = 0; j < nx; j++)
            sum += U(i, j);
    MPI_Reduce(&sum, &tot, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);

    if (every || restart) {
        int complete = -1;
        if ((rc = sfm_sync(&complete)))
            die("sfm_sync", rc);
        if (rank == 0)
            printf("mpiheat: newest complete checkpoint: version %d (kernel writes into protected "
                   "memory: %s)\n",
                   complete, sfm_kernel_writes() ? "yes" : "no");
        if ((rc = sfm_finalize()))
            die("sfm_finalize", rc);
    }
    if (rank == 0) {
        uint64_t c = 1469598103934665603ull;
        for (int r = 0; r < nranks; r++)
            c = fnv(c, &all[r], sizeof all[r]);
        if (nckpt)
            printf("mpiheat: %d checkpoints, stop time mean %.3f ms, max %.3f ms (rank 0)\n", nckpt,
                   stop_sum * 1e3 / nckpt, stop_max * 1e3);
        printf("mpiheat: steps %ld, sum %.12g, checksum %016" PRIx64 "\n", steps, tot, c);
    }
    free(all);
    free(rowbuf);
    munmap(u, grid_bytes);
    munmap(st, (size_t)ps);
    MPI_Finalize();
    return 0;
}
