/* test_sfm_api.c - libsnapfault-mpi's errors for misuse and its region
 * matching, under mpirun with 2+ ranks (the mpi suite).  Every check is on
 * return codes and memory contents, none on timing.
 *
 *   mpirun -np 2 test_sfm_api DIR     (DIR must not exist yet) */
#include <mpi.h>
#include <snapfault-mpi.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int rank, failures;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s\n", rank, __FILE__, __LINE__, \
                    #cond);                                                               \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)
#define EXPECT(call, want)                                                                    \
    do {                                                                                      \
        int got_ = (call);                                                                    \
        if (got_ != (want)) {                                                                 \
            fprintf(stderr, "rank %d: %s:%d: %s = %d (%s), expected %d (%s)\n", rank, __FILE__, \
                    __LINE__, #call, got_, sfm_strerror(got_), (want), sfm_strerror(want));    \
            failures++;                                                                       \
        }                                                                                     \
    } while (0)

static void *pages(size_t n)
{
    void *p = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

static void fill(void *p, size_t n, int seed)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        c[i] = (unsigned char)(i * 31 + (size_t)seed * 7 + (size_t)rank * 101);
}

static int same(const void *p, size_t n, int seed)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != (unsigned char)(i * 31 + (size_t)seed * 7 + (size_t)rank * 101))
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (argc < 2) {
        fprintf(stderr, "usage: test_sfm_api DIR\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const char *dir = argv[1];
    long ps = sysconf(_SC_PAGESIZE);
    if (ps != 4096) {
        printf("page size %ld: skipped\n", ps);
        MPI_Finalize();
        return 77;
    }
    char *a = pages(16), *b = pages(4), *c = pages(2);

    /* before init */
    EXPECT(sfm_protect(0, a, 4096), SFM_ENOTINIT);
    EXPECT(sfm_checkpoint(1), SFM_ENOTINIT);
    EXPECT(sfm_wait(), SFM_ENOTINIT);
    EXPECT(sfm_finalize(), SFM_ENOTINIT);
    EXPECT(sfm_kernel_writes(), SFM_ENOTINIT);

    EXPECT(sfm_init(MPI_COMM_WORLD, NULL), -EINVAL);
    EXPECT(sfm_init(MPI_COMM_WORLD, dir), 0);
    EXPECT(sfm_init(MPI_COMM_WORLD, dir), -EALREADY);
    CHECK(sfm_kernel_writes() == 0 || sfm_kernel_writes() == 1);

    /* nothing to checkpoint yet; nothing to restart from */
    EXPECT(sfm_checkpoint(1), -ENODATA);
    int v = -7;
    EXPECT(sfm_restart_latest(&v), SFM_ENOCKPT);

    EXPECT(sfm_set_policy(-1, 0), -EINVAL);
    EXPECT(sfm_set_policy(2, 0), -EINVAL); /* could never prune */
    EXPECT(sfm_set_policy(0, 0), 0);

    /* protect */
    EXPECT(sfm_protect(0, a + 1, 4096), -EINVAL);
    EXPECT(sfm_protect(0, a, 100), -EINVAL);
    EXPECT(sfm_protect(-1, a, 4096), -EINVAL);
    EXPECT(sfm_protect(0, a, 0), -EINVAL);
    EXPECT(sfm_protect(0, a, 8 * 4096), 0);
    EXPECT(sfm_protect(0, a + 8 * 4096, 4096), -EEXIST);     /* id reused */
    EXPECT(sfm_protect(1, a + 4 * 4096, 8 * 4096), -EEXIST); /* overlap */
    EXPECT(sfm_protect(1, b, 4 * 4096), 0);
    fill(a, 8 * 4096, 1);
    fill(b, 4 * 4096, 2);

    /* versions */
    EXPECT(sfm_checkpoint(-1), SFM_EVERSION);
    EXPECT(sfm_checkpoint(rank == 0 ? 5 : 6), SFM_EVERSION); /* not the same everywhere */
    EXPECT(sfm_checkpoint(5), 0);
    EXPECT(sfm_checkpoint(5), SFM_EVERSION);
    EXPECT(sfm_checkpoint(4), SFM_EVERSION);
    EXPECT(sfm_set_policy(0, 0), -EBUSY);
    EXPECT(sfm_restart_latest(&v), -EBUSY);

    /* after the first checkpoint: an overlapping range is refused, a new
     * disjoint one joins the next checkpoint */
    EXPECT(sfm_protect(2, a, 4096), -EEXIST);
    EXPECT(sfm_protect(2, b + 4096, 4096), -EEXIST);
    EXPECT(sfm_protect(2, c, 2 * 4096), 0);
    fill(c, 2 * 4096, 3);
    fill(a + 4096, 4096, 4); /* one page of a changes */
    EXPECT(sfm_checkpoint(6), 0);
    int complete = -1;
    EXPECT(sfm_sync(&complete), 0);
    CHECK(complete == 6);
    EXPECT(sfm_finalize(), 0);

    /* a second job restarts with the regions at new addresses */
    char *a2 = pages(8), *b2 = pages(4), *c2 = pages(2);
    EXPECT(sfm_init(MPI_COMM_WORLD, dir), 0);
    EXPECT(sfm_protect(2, c2, 2 * 4096), 0);
    EXPECT(sfm_protect(0, a2, 8 * 4096), 0);
    /* region 1 missing: a clear error, memory untouched */
    EXPECT(sfm_restart_latest(&v), SFM_EREGIONS);
    EXPECT(sfm_protect(1, b2, 2 * 4096), 0); /* wrong size */
    EXPECT(sfm_restart_latest(&v), SFM_EREGIONS);
    EXPECT(sfm_finalize(), 0);

    char *b3 = pages(4);
    memset(a2, 0, 8 * 4096);
    memset(c2, 0, 2 * 4096);
    EXPECT(sfm_init(MPI_COMM_WORLD, dir), 0);
    EXPECT(sfm_protect(2, c2, 2 * 4096), 0);
    EXPECT(sfm_protect(0, a2, 8 * 4096), 0);
    EXPECT(sfm_protect(1, b3, 4 * 4096), 0);
    v = -1;
    EXPECT(sfm_restart_latest(&v), 0);
    CHECK(v == 6);
    CHECK(same(a2, 4096, 1));
    CHECK(same(a2 + 4096, 4096, 4));
    /* the rest of a was filled with seed 1 over the whole 8 pages */
    {
        char ref[8 * 4096];
        fill(ref, sizeof ref, 1);
        CHECK(memcmp(a2 + 2 * 4096, ref + 2 * 4096, 6 * 4096) == 0);
    }
    CHECK(same(b3, 4 * 4096, 2));
    CHECK(same(c2, 2 * 4096, 3));
    EXPECT(sfm_checkpoint(6), SFM_EVERSION); /* not newer than the restart */
    EXPECT(sfm_checkpoint(7), 0);
    EXPECT(sfm_finalize(), 0);
    CHECK(strstr(sfm_strerror(SFM_ENRANKS), "number of ranks") != NULL);
    CHECK(sfm_strerror(-ENOMEM) != NULL);

    int all;
    MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s: %d failed checks\n", all ? "FAIL" : "PASS", all);
    MPI_Finalize();
    return all ? 1 : 0;
}
