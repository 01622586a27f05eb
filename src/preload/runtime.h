/* runtime.h - what the runtime's files share beyond preload.h: the tracker
 * and the settings in force (lifecycle.c), the mapping model (model.c,
 * reconcile.c), output files (output.c), track mode (track.c), snapshots. */
#ifndef SFP_RUNTIME_H
#define SFP_RUNTIME_H

#include "preload.h"
#include "os.h" /* the OS contract this runtime implements (os_preload.c) and calls */

#include "sf_embed.h"
#include "snapfault.h"

/* What a tracked range is, for the records and the summary. */
enum sfp_kind { SFP_K_HEAP = 0, SFP_K_ANON, SFP_K_DATA, SFP_K_STACK, SFP_K_COUNT };
extern const char *const sfp_kind_names[SFP_K_COUNT];

/* A label is one line of the per-mapping tables: the heap (all its pieces),
 * one anonymous mapping, the program's data segment, one thread stack. */
struct sfp_label {
    uint32_t id;
    uint8_t kind;
    bool announce;          /* extent changed: write an L record */
    bool gone_written;
    uintptr_t lo, hi;       /* extent of what it covers */
    uint32_t nsegs;         /* tracked segments holding this label */
    uint64_t ival;          /* pages dirtied in the current interval */
    uint64_t cum;           /* pages dirtied since start */
    uint64_t peak;          /* most pages in one interval */
    double peak_rate;       /* highest pages per second over one interval's real length */
    char prot[5];           /* permissions in /proc/self/maps when adopted ("rw-p") */
    char name[160];         /* the mapping's name: [heap], a file, [anon:NAME], anon@ADDR */
};

/* One line of /proc/self/maps. */
struct sfp_mapline {
    uintptr_t start, end;
    char perms[5];
    unsigned long long off;
    unsigned long inode;
    const char *path;       /* points into the read buffer; "" for none */
    size_t pathlen;
};

/* maps.c */
char *sfp_maps_read(size_t *len);               /* private heap; NULL on failure */
char *sfp_proc_read(const char *path, size_t *len); /* a /proc file, whole, terminated */
/* VMAs backed by, or marked for, transparent huge pages (smaps). */
struct sfp_thp_range {
    uintptr_t start, end;
    unsigned long huge_kb; /* AnonHugePages */
    bool marked;           /* MADV_HUGEPAGE */
};
size_t sfp_thp_ranges(struct sfp_thp_range **out); /* *out on the private heap */
bool sfp_maps_next(char **cursor, char *end, struct sfp_mapline *ml);
/* Writable load segments of loaded objects (data + bss), page-rounded. */
struct sfp_object {
    uintptr_t lo, hi;
    bool main;
    char name[80];
};
size_t sfp_objects(struct sfp_object *out, size_t max);

/* lifecycle.c: the tracker and the settings in force (set at start-up and
 * again by a forked child that follows). */
extern sf_tracker *sfp_tracker;
extern uint64_t sfp_t0_ns;
extern int sfp_run_mode;                 /* enum sfp_mode */
extern unsigned sfp_include;             /* SFP_INC_* */
extern sf_backend sfp_backend;
extern sf_fault_mode sfp_fault_mode;
extern long sfp_interval_ms;
extern pid_t sfp_pid;
extern bool sfp_attr_on;                 /* write attribution samples */
uint64_t sfp_now_ns(void);               /* CLOCK_MONOTONIC */

static inline uintptr_t page_down(uintptr_t a) { return a & ~(uintptr_t)(sf_page_size - 1); }
static inline uintptr_t page_up(uintptr_t a) { return (a + sf_page_size - 1) & ~(uintptr_t)(sf_page_size - 1); }

/* model.c: labels, and the segments the runtime asked the library to track
 * (sorted, disjoint, each naming its label).  Everything here runs under
 * the runtime lock. */
extern struct sfp_label *sfp_labels;
extern size_t sfp_nlabels;
struct sfp_seg {
    uintptr_t start, end;
    uint32_t label; /* index into sfp_labels */
};
extern struct sfp_seg *sfp_segs;
extern size_t sfp_nsegs;
size_t sfp_seg_lower_bound(uintptr_t addr); /* first segment whose end is above addr */
struct sfp_label *sfp_label_at(uintptr_t addr);
uint32_t sfp_label_new(enum sfp_kind kind, const char *name, uintptr_t lo, uintptr_t hi); /* UINT32_MAX: no memory */
void sfp_seg_track(uintptr_t start, uintptr_t end, uint32_t label); /* what is not tracked yet, under label */
void sfp_seg_untrack(uintptr_t start, uintptr_t end); /* page-aligned; readers gone on return */
bool sfp_refused_overlaps(uintptr_t start, uintptr_t end); /* tracking failed there before */
void sfp_exclude_main_tls(void);
void sfp_model_forget(void);             /* forked child */

/* reconcile.c: the model kept in step with /proc/self/maps. */
void sfp_reconcile(void);
size_t sfp_drop_unregistered(void);
bool sfp_keeps_tracked(const struct sfp_mapline *ml); /* a maps line that keeps tracked pages valid */
extern bool sfp_thp_keep;                /* SNAPFAULT_THP=keep */
extern uint64_t sfp_thp_kept, sfp_thp_kept_bytes;
bool sfp_thp_possible(uintptr_t start, uintptr_t end); /* [start, end) can hold a huge page */
extern char sfp_exe_base[64], sfp_exe_path[160];
extern uint64_t sfp_scans, sfp_scan_ns;  /* reconciles and the time they took */
void sfp_reconcile_forget(void);         /* forked child */

/* track.c: track mode (the record's lines: record.h). */
extern struct sfp_out *sfp_track_out;
extern char sfp_track_path[512];
void sfp_track_header(void);
void sfp_track_interval(void);
void sfp_track_summary(bool to_file, const char *how); /* the E record, or the summary */
void sfp_track_note(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* W line, or -v */
const char *sfp_exe_name(char *buf, size_t cap);
void sfp_track_forget(void);             /* forked child */

/* output.c: output files.  Expands %p, creates 0600 with O_EXCL|O_NOFOLLOW; a path
 * without %p that exists already gets ".PID" appended.  -errno on failure. */
int sfp_create_output(const char *tmpl, char *path, size_t cap);
int sfp_create_dir(const char *tmpl, char *path, size_t cap);

/* A buffered writer that reports its first failure once and then stays
 * silent; the program never notices. */
struct sfp_out {
    int fd;
    bool failed;
    size_t n;
    char buf[1 << 16];
};
void sfp_out_printf(struct sfp_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sfp_out_flush(struct sfp_out *o);
/* Where the summary goes (a dup of stderr taken at start-up, or the stats
 * file); -1 when no summary was asked for. */
void sfp_stats_open(void);
int sfp_stats_fd(void);

/* snapmode.c: snapshot mode, driven by the background thread. */
int sfp_snap_open(void);                 /* the image directory */
void sfp_snap_take_and_write(const char *why);
void sfp_snap_finish(const char *how);   /* at the end: the index's end line, release what is held */
void sfp_snap_summary(void);             /* SHOW_STATS */
void sfp_snap_child(void);               /* forked child: forget the parent's */
void sfp_snap_trigger_install(void);     /* the trigger signal's handler */
long sfp_snap_period_ms(void);           /* SNAPSHOT_EVERY as the disk budget's back-off left it */
/* The final image (SNAPFAULT_EXIT_IMAGE): at exit and on SIGHUP, SIGINT,
 * SIGTERM left at SIG_DFL by the program. */
bool sfp_snap_exit_image(void);          /* the option */
void sfp_snap_fatal_install(void);       /* the fatal signals' handler */
void sfp_snap_final_wait(int sig);       /* any thread: request (0: exit) and wait; AS-safe */
void sfp_snap_serve_final(void);         /* background thread: take and write it */
void sfp_snap_bg_gone(void);             /* background thread ends: release waiters */
bool sfp_bg_alive(void);                 /* the background thread runs (AS-safe) */
extern int sfp_wake_fd[2];               /* the background thread's wake-up pipe */
extern _Atomic int sfp_snap_requests;    /* triggers not yet served */


#endif
