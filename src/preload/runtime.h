/* runtime.h - what the runtime's files share beyond preload.h: the tracker,
 * the mapping model (labels and tracked segments), output and snapshots. */
#ifndef SFP_RUNTIME_H
#define SFP_RUNTIME_H

#include "preload.h"

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

/* runtime.c */
extern sf_tracker *sfp_tracker;
extern struct sfp_label *sfp_labels;
extern size_t sfp_nlabels;
extern uint64_t sfp_t0_ns;
uint64_t sfp_now_ns(void);               /* CLOCK_MONOTONIC */
struct sfp_label *sfp_label_at(uintptr_t addr); /* under the runtime lock */
void sfp_reconcile(void);                /* under the runtime lock */
size_t sfp_drop_unregistered(void);      /* under the runtime lock */
/* Where the summary goes (a dup of stderr taken at start-up, or the stats
 * file); -1 when no summary was asked for. */
int sfp_stats_fd(void);

/* Output files: expands %p, creates 0600 with O_EXCL|O_NOFOLLOW; a path
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
