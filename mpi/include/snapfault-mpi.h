/* snapfault-mpi.h - coordinated checkpoint/restart of MPI ranks on top of
 * libsnapfault: a consistent cut in the time of one snapshot take,
 * incremental per-rank images streamed by a background thread while the
 * ranks compute, restart from the newest version complete on every rank.
 *
 *     pkg-config --cflags --libs snapfault-mpi
 *
 * Every function returns 0 (or what it says) on success and a negative
 * errno on failure, never aborts and never prints; sfm_strerror() explains
 * the codes, including the meanings below.  Each function states:
 *
 *   - Collective: every rank of the communicator given to sfm_init must call
 *     it, in the same order relative to the other collective calls (as with
 *     MPI collectives), and every rank gets the same return value.
 *   - Thread-safety: the sfm_* functions keep one per-process state and must
 *     be called from one thread at a time (the thread that makes the MPI
 *     calls; MPI_THREAD_SINGLE is enough: snapfault-mpi's own threads never
 *     call MPI).  Other threads may keep writing protected memory at any
 *     time except during sfm_checkpoint (see "The cut") and
 *     sfm_restart_latest.
 *   - Signal-safety: none of these functions is async-signal-safe.
 *
 *                      | writes to   | sfm_protect | sfm_checkpoint | sfm_wait, | sfm_restart
 *                      | protected   |             |                | sfm_sync  | _latest
 *   -------------------+-------------+-------------+----------------+-----------+------------
 *   writes to memory   | ok          | ok          | caller (1)     | ok        | caller
 *   sfm_* call         | see left    | caller (2)  | caller (2)     | caller (2)| caller (2)
 *
 *   (1) stop the threads that write protected memory for the duration of
 *       the call (its stop time is one sf_snapshot_take plus two
 *       reductions), or accept that each page is captured at some instant
 *       during the call rather than at one instant.
 *   (2) one thread at a time per process.
 *
 * The cut.  sfm_checkpoint is collective: every rank enters, one reduction
 * makes sure all have arrived, each takes a copy-on-write snapshot of its
 * protected regions, and a second reduction makes sure all have taken
 * before any returns.  The cut is consistent for a program whose messages
 * are complete at the call (no pending MPI_Isend/MPI_Irecv into or out of
 * protected memory, no message in flight that the restored state would
 * expect to receive again) - the same contract as VeloC's memory API.
 *
 * Files.  Under the directory given to sfm_init (shared by all ranks):
 *   sfm.info                       number of ranks that write here
 *   rank-RRRRR/vVVVVVVVVV.sfimg    snapfault image of rank R at version V
 *                                  (`snapfault image info|verify` read it;
 *                                  one chain of incremental images per rank)
 *   rank-RRRRR/vVVVVVVVVV.meta     its regions (id, address, size) and chain link
 *   vVVVVVVVVV.manifest            version V is complete on every rank
 * A rank's image of V is written to a temporary name, fsync'd, verified
 * (every checksum read back), renamed, and then its .meta is written the
 * same way.  When every rank reports V durable (the reduction inside the
 * next collective call: sfm_checkpoint, sfm_sync or sfm_finalize), rank 0
 * writes V's manifest last and atomically (temporary name, fsync, rename,
 * fsync of the directory), in a thread of its own.  Only versions with a
 * manifest are ever restored, and a restart checks that every rank's .meta
 * and image chain name the manifest's run (a random id per sfm_init), so
 * files of different jobs never mix.  A job that does not restart starts the
 * directory over: its first checkpoint deletes the manifests already there
 * (a restart deletes those newer than the version it restored).
 *
 * A background write that fails (ENOSPC, EIO, a verify mismatch) is sticky:
 * that version and every later one stay incomplete, and every later
 * sfm_checkpoint/sfm_sync returns the error (SFM_EREMOTE on the other
 * ranks); the versions completed before it remain restorable.
 *
 * Images.  The first checkpoint after sfm_init (or after a restart) is a
 * full image; the following ones are incremental over the previous version
 * (only the pages written since), and every `full_every` checkpoints a full
 * image starts a new chain (sfm_set_policy).
 *
 * Pruning.  With keep = N > 0, once the manifest of a newer version is
 * durable, every file of a version older than the base (full image) of the
 * oldest of the N newest complete versions is deleted: the chains of the N
 * kept versions stay whole.  Since chains only end at full images, the
 * directory holds at most about N + full_every versions; with full_every 0
 * (only the first image is full) nothing can be pruned.
 *
 * Kernel writes into protected memory.  sfm_init asks libsnapfault for a
 * backend where the kernel may write into tracked memory (uffd-sync with
 * handler threads: root, CAP_SYS_PTRACE, /dev/userfaultfd or
 * vm.unprivileged_userfaultfd=1), so that an MPI transport that receives
 * through the kernel (Open MPI's vader/sm single-copy CMA, process_vm_readv)
 * may write a halo straight into a protected buffer.  Where that is not
 * allowed, it falls back to a backend where such a kernel write fails with
 * EFAULT (sfm_kernel_writes() returns 0): then keep receive buffers outside
 * the protected regions, or make the transport copy in user space (Open MPI:
 * OMPI_MCA_btl_vader_single_copy_mechanism=none).  Seen with Open MPI 4.1
 * and the mprotect backend: vader prints "Read -1, expected 32768, errno =
 * 14" for a halo row above its 4 KiB eager limit.
 *
 * Environment (read by sfm_init): SNAPFAULT_MPI_BACKEND=uffd-sync|mprotect
 * picks the libsnapfault backend instead of AUTO; SNAPFAULT_MPI_STORE_MB
 * sets the snapshot page store (sf_options.store_limit; default 1 GiB,
 * reserved, not committed): it must hold a copy of every page written
 * while an image is still being written, else that checkpoint fails with
 * -ENOSPC (sticky).  SNAPFAULT_MPI_TEST_GATE_FD (tests only): the writer
 * thread reads one byte from this fd before each image.
 */
#ifndef SNAPFAULT_MPI_H
#define SNAPFAULT_MPI_H

#include <errno.h>
#include <mpi.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SNAPFAULT_MPI_BUILD)
#define SFM_API __attribute__((visibility("default")))
#else
#define SFM_API
#endif

/* Error meanings particular to snapfault-mpi (negative errno values). */
#define SFM_ENOTINIT  (-EBADFD)    /* sfm_init has not been called (or sfm_finalize has) */
#define SFM_EVERSION  (-ERANGE)    /* version not newer than the last one, or not the same
                                      on every rank, or negative */
#define SFM_ENRANKS   (-EXDEV)     /* the directory was written by a different number of ranks */
#define SFM_EREGIONS  (-EBADSLT)   /* protected regions differ (ids or sizes) from the
                                      checkpoint's */
#define SFM_EREMOTE   (-EREMOTEIO) /* the call failed on another rank */
#define SFM_ENOCKPT   (-ENOENT)    /* no version is complete and valid on every rank */

/* Collective over comm (duplicated internally).  Opens (creates) dir, which
 * every rank must see as the same directory, creates this rank's snapshot
 * tracker and its background writer thread.  Call it after MPI_Init.
 * SFM_ENRANKS: dir holds checkpoints of a job with a different number of
 * ranks; -EALREADY: already initialised; -EINVAL: NULL dir or comm
 * MPI_COMM_NULL; -ENOTSUP: no snapshot backend works here (sf_probe says
 * why); other -errno from mkdir/open.  Not thread-safe (one thread at a
 * time, see above).  Not async-signal-safe. */
SFM_API int sfm_init(MPI_Comm comm, const char *dir);

/* Sets the pruning policy (see "Pruning" above): keep the newest keep
 * complete versions (0: keep all, the default), and write a full image
 * every full_every checkpoints (0: only the first checkpoint after init or
 * restart, the default).  Local, but every rank must set the same values
 * before its first sfm_checkpoint (-EINVAL otherwise: negative values, or
 * keep > 0 with full_every == 0, which could never prune).  Not
 * thread-safe.  Not async-signal-safe. */
SFM_API int sfm_set_policy(int keep, int full_every);

/* Local.  Adds [addr, addr+len) to this rank's state under id (>= 0, unique
 * on this rank; ranks may use the same ids for their own regions).  addr and
 * len page-aligned, private anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS,
 * or aligned_alloc'd heap memory) for the uffd backends.  Transparent huge
 * pages are turned off on the range (MADV_NOHUGEPAGE) so that incremental
 * images hold 4 KiB pages, not 2 MiB ones.  The range is tracked from now
 * on and belongs to every later checkpoint.  -EINVAL: unaligned, zero
 * length, negative id; -EEXIST: id already protected, or the range overlaps
 * a protected one (in particular: re-protecting part of a region that a
 * checkpoint already holds); SFM_ENOTINIT; other -errno from sf_track.  On a
 * restart, protect every region again (same id, same size, any address)
 * before sfm_restart_latest.  Not thread-safe.  Not async-signal-safe. */
SFM_API int sfm_protect(int id, void *addr, size_t len);

/* Collective.  Takes checkpoint version (>= 0, the same on every rank and
 * newer than any earlier one of this job, including the version a restart
 * returned).  Returns once every rank has taken its snapshot (see "The
 * cut"); the images are then written by the background thread while the
 * ranks compute.  If the writer is still busy with earlier checkpoints the
 * new one is queued behind them (up to 16 in flight; past that this call
 * first waits for the oldest).  Also completes earlier versions: a version
 * every rank reports durable gets its manifest.  SFM_EVERSION;
 * SFM_ENOTINIT; -ENODATA: no region protected; -errno of a failed earlier
 * background write on this rank (sticky: no later version is written), or
 * SFM_EREMOTE if that happened on another rank; -errno from
 * sf_snapshot_take.  Not thread-safe.  Not async-signal-safe. */
SFM_API int sfm_checkpoint(int version);

/* Local.  Waits until this rank's background writer has written, fsync'd
 * and verified every checkpoint taken so far.  Returns 0 or the -errno of
 * the first failed write (sticky).  The version is complete only once every
 * rank is done and rank 0 has written its manifest: see sfm_sync.  Not
 * thread-safe.  Not async-signal-safe. */
SFM_API int sfm_wait(void);

/* Collective.  sfm_wait on every rank, then the manifest of every version
 * now durable on every rank is written; on return it is durable.  Stores
 * the newest complete version in *complete (-1 if none) when complete is
 * not NULL.  Returns 0, the local write error, or SFM_EREMOTE.  Not
 * thread-safe.  Not async-signal-safe. */
SFM_API int sfm_sync(int *complete);

/* Collective.  Finds the newest version that has a manifest and whose
 * chain of images (and .meta files) verifies on every rank, and copies
 * every region's content back into the memory now protected under the
 * same id (same size required).  A damaged, missing or foreign image on any
 * rank makes it try the previous complete version; a mix of versions is
 * never restored.  Stores the version in *version.  The next checkpoint
 * must be newer, and is a full image.  Call it before the first
 * sfm_checkpoint of this job, with the threads that write protected memory
 * stopped.  SFM_ENOCKPT: no complete valid version; SFM_EREGIONS: the
 * newest valid version holds regions (ids or sizes) not protected now, or
 * the other way round; SFM_EREMOTE: failed on another rank; -EBUSY: a
 * checkpoint was already taken in this job; -EIO and other -errno from
 * reading.  Not thread-safe.  Not async-signal-safe. */
SFM_API int sfm_restart_latest(int *version);

/* Collective.  sfm_sync, then stops the background threads, releases the
 * snapshots and the tracker (protected memory stays as it is, writable and
 * no longer tracked) and frees the duplicated communicator.  After it
 * sfm_init may be called again.  Returns what sfm_sync returned (the state
 * is torn down in every case).  Not thread-safe.  Not async-signal-safe. */
SFM_API int sfm_finalize(void);

/* 1 if the kernel may write into protected memory with this rank's backend
 * (see "Kernel writes" above), 0 if such writes fail with EFAULT,
 * SFM_ENOTINIT before sfm_init.  Thread-safe.  Not async-signal-safe. */
SFM_API int sfm_kernel_writes(void);

/* A static message for a negative errno, with snapfault-mpi's meanings
 * above first, else libsnapfault's (sf_strerror).  Thread-safe,
 * async-signal-safe. */
SFM_API const char *sfm_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* SNAPFAULT_MPI_H */
