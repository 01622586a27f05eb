/* track.c - track mode: one collect+reset per interval, the track record
 * (record.h) and the summary at the end. */
#include "runtime.h"
#include "record.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

/* Track mode output */
struct sfp_out *sfp_track_out;
char sfp_track_path[512];
static uint64_t g_seq, g_total_pages, g_peak_pages, g_peak_seq, g_collect_ns, g_collect_max_ns;
/* Rates use each interval's real length: from the previous collect (or the
 * start of tracking) to this one.  g_span_ns sums them, so that the mean
 * (total over the duration) can never exceed the peak. */
static uint64_t g_last_collect_ns, g_span_ns;
static double g_peak_rate; /* pages per second */

/* ------------------------------------------------------------------------
 * Track mode: one collect+reset per interval.
 * ------------------------------------------------------------------------ */
static size_t g_other_label = SIZE_MAX;

static int collect_cb(void *addr, size_t len, void *arg)
{
    uintptr_t a = (uintptr_t)addr, e = a + len;
    while (a < e) {
        size_t i = sfp_seg_lower_bound(a);
        uint32_t label;
        uintptr_t stop;
        if (i < sfp_nsegs && sfp_segs[i].start <= a) {
            label = sfp_segs[i].label;
            stop = sfp_segs[i].end < e ? sfp_segs[i].end : e;
        } else {
            /* tracked by the library but not in the model (a race with a
             * mapping change): count it, under "other" */
            if (g_other_label == SIZE_MAX)
                g_other_label = sfp_label_new(SFP_K_ANON, "other", 0, 0);
            if (g_other_label == UINT32_MAX)
                return 0;
            label = (uint32_t)g_other_label;
            stop = (i < sfp_nsegs && sfp_segs[i].start < e) ? sfp_segs[i].start : e;
        }
        sfp_labels[label].ival += (stop - a) >> sf_page_shift;
        a = stop;
    }
    return 0;
}

static void write_labels(void)
{
    for (size_t i = 0; i < sfp_nlabels; i++) {
        struct sfp_label *l = &sfp_labels[i];
        if (l->announce && l->nsegs) {
            sfp_out_printf(sfp_track_out, SFP_REC_LABEL "\t%u\t%s\t%lx\t%lx\t%s\t%s\n", l->id, sfp_kind_names[l->kind],
                           (unsigned long)l->lo, (unsigned long)l->hi, l->prot, l->name);
            l->announce = false;
        }
    }
}

/* A note for the reader of the record (W), or for -v in snapshot mode. */
void sfp_track_note(const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sfp_info("%s", msg);
    /* In snapshot mode the images lack what is left untracked: said once
     * without -v too. */
    static bool said;
    if (sfp_run_mode == SFP_MODE_SNAPSHOT && !said) {
        said = true;
        sfp_warn("%s: the images do not hold it", msg);
    }
    if (sfp_run_mode == SFP_MODE_TRACK && sfp_track_out)
        sfp_out_printf(sfp_track_out, SFP_REC_NOTE "\t%llu\t%s\n", (unsigned long long)((sfp_now_ns() - sfp_t0_ns) / 1000000), msg);
}

/* Re-arming (collect, take) waits up to 100 ms for calls that retry a
 * kernel write after EFAULT, so that their retry can succeed. */
void sfp_kwrite_wait(void)
{
    for (int i = 0; i < 100 && atomic_load(&sfp_kwrite_hold); i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

void sfp_track_interval(void)
{
    sfp_kwrite_wait();
    uint64_t t0 = sfp_now_ns();
    int rc = sf_collect(sfp_tracker, SF_COLLECT_RESET, collect_cb, NULL);
    if (rc < 0 && sfp_drop_unregistered())
        rc = sf_collect(sfp_tracker, SF_COLLECT_RESET, collect_cb, NULL);
    uint64_t t1 = sfp_now_ns();
    if (rc < 0) {
        sfp_warn_once(SFP_ONCE_TRACK, "collect failed: %s", sf_strerror(rc));
        return;
    }
    uint64_t from = g_last_collect_ns ? g_last_collect_ns : sfp_t0_ns;
    uint64_t span = t1 > from ? t1 - from : 1;
    g_last_collect_ns = t1;
    g_span_ns += span;
    double per_s = 1e9 / (double)span;
    g_collect_ns += t1 - t0;
    if (t1 - t0 > g_collect_max_ns)
        g_collect_max_ns = t1 - t0;
    g_seq++;
    sf_stats st;
    sf_tracker_stats(sfp_tracker, &st);
    uint64_t pages = 0;
    write_labels();
    uint64_t t_ms = (t1 - sfp_t0_ns) / 1000000;
    for (size_t i = 0; i < sfp_nlabels; i++)
        pages += sfp_labels[i].ival;
    sfp_out_printf(sfp_track_out, SFP_REC_IVAL "\t%llu\t%llu\t%llu\t%llu\t%llu\n", (unsigned long long)g_seq,
                   (unsigned long long)t_ms, (unsigned long long)pages,
                   (unsigned long long)st.tracked_bytes, (unsigned long long)((t1 - t0) / 1000));
    for (size_t i = 0; i < sfp_nlabels; i++) {
        struct sfp_label *l = &sfp_labels[i];
        if (l->ival) {
            l->cum += l->ival;
            if (l->ival > l->peak)
                l->peak = l->ival;
            if ((double)l->ival * per_s > l->peak_rate)
                l->peak_rate = (double)l->ival * per_s;
            sfp_out_printf(sfp_track_out, SFP_REC_DIRTY "\t%llu\t%u\t%llu\t%llu\t%llu\n", (unsigned long long)g_seq, l->id,
                           (unsigned long long)l->ival,
                           (unsigned long long)(l->ival << sf_page_shift), (unsigned long long)l->cum);
            l->ival = 0;
        }
        if (!l->nsegs && !l->gone_written && l->id && l->cum + l->peak > 0) {
            sfp_out_printf(sfp_track_out, SFP_REC_GONE "\t%llu\t%u\n", (unsigned long long)t_ms, l->id);
            l->gone_written = true;
        }
    }
    g_total_pages += pages;
    if (pages > g_peak_pages)
        g_peak_pages = pages;
    if ((double)pages * per_s > g_peak_rate) {
        g_peak_rate = (double)pages * per_s;
        g_peak_seq = g_seq;
    }
    sfp_out_flush(sfp_track_out);
}

const char *sfp_exe_name(char *buf, size_t cap)
{
    long n = sfp_raw_syscall(SYS_readlinkat, AT_FDCWD, (long)"/proc/self/exe", (long)buf,
                             (long)cap - 1, 0, 0);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

void sfp_track_header(void)
{
    char exe[256];
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    sfp_out_printf(sfp_track_out, SFP_TRACK_HEAD "\n");
    sfp_out_printf(sfp_track_out, SFP_REC_PROCESS "\tpid=%d\tppid=%ld\tpage=%zu\tinterval_ms=%ld\tbackend=%s\tfaults=%s\t"
                          "start_ns=%lld\texe=%s\n",
                   (int)sfp_pid, sfp_raw_syscall(SYS_getppid, 0, 0, 0, 0, 0, 0), sf_page_size,
                   sfp_interval_ms, sf_backend_name(sfp_backend), sf_fault_mode_name(sfp_fault_mode),
                   (long long)rt.tv_sec * 1000000000LL + rt.tv_nsec, sfp_exe_name(exe, sizeof(exe)));
    if (sfp_opt_val(SFP_OPT_ATTRIBUTE) && !sfp_attr_on)
        sfp_out_printf(sfp_track_out, SFP_REC_NOTE "\t0\twrite attribution needs a sync backend (mprotect or "
                              "uffd-sync in-thread); %s is in use, attribution is off\n",
                       sf_backend_name(sfp_backend));
    sfp_out_flush(sfp_track_out);
}

static int cmp_label_cum(const void *a, const void *b)
{
    const struct sfp_label *x = *(struct sfp_label *const *)a, *y = *(struct sfp_label *const *)b;
    return x->cum < y->cum ? 1 : x->cum > y->cum ? -1 : 0;
}

/* The summary is built whole and written with one write(2), so that the
 * processes of a tree appending to one stats file never interleave. */
struct sumbuf {
    char *p;
    size_t n, cap;
};

static void sum_add(struct sumbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sum_add(struct sumbuf *b, const char *fmt, ...)
{
    if (!b->p)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->n += (size_t)n < b->cap - b->n ? (size_t)n : b->cap - b->n - 1;
}

void sfp_track_summary(bool to_file, const char *how)
{
    uint64_t dur_ns = sfp_now_ns() - sfp_t0_ns;
    /* The mean is over the whole run and at least over the intervals
     * collected: so mean <= peak, the peak being the highest of the
     * intervals' rates over their real lengths. */
    uint64_t over_ns = dur_ns > g_span_ns ? dur_ns : g_span_ns;
    double secs = (double)dur_ns / 1e9, mib = (double)(g_total_pages << sf_page_shift) / 1048576.0;
    double page_mib = (double)sf_page_size / 1048576.0;
    double mean_mibs = over_ns ? mib / ((double)over_ns / 1e9) : 0.0;
    double peak_mibs = g_peak_rate * page_mib;
    if (to_file) {
        sfp_out_printf(sfp_track_out, SFP_REC_END "\t%llu\t%llu\t%llu\t%llu\t%s\n", (unsigned long long)(dur_ns / 1000000),
                       (unsigned long long)g_seq, (unsigned long long)g_total_pages,
                       (unsigned long long)g_peak_pages, how);
        if (sfp_attr_on)
            sfp_attr_report(sfp_track_out->fd >= 0 && !sfp_track_out->failed ? sfp_track_out->fd : -1,
                            (int)sfp_opt_val(SFP_OPT_TOP), false);
        sfp_out_flush(sfp_track_out);
        return;
    }
    int sfd = sfp_stats_fd();
    if (sfd < 0)
        return;
    long top = (long)sfp_opt_val(SFP_OPT_TOP);
    struct sumbuf b = {NULL, 0, 4096 + (size_t)top * 256};
    b.p = sfp_malloc(b.cap);
    sf_stats st;
    sf_tracker_stats(sfp_tracker, &st);
    sum_add(&b,
            "snapfault: pid %d (%s), track mode, backend %s (%s), %.2f s, %llu intervals of %ld ms\n"
            "snapfault: dirtied %llu pages (%.1f MiB): mean %.1f MiB/s, peak %.1f MiB/s (interval %llu)\n"
            "snapfault: tracked now %.1f MiB in %llu ranges; %llu faults; collect mean %.0f us, "
            "max %.0f us; maps scan mean %.0f us\n",
            (int)sfp_pid, how, sf_backend_name(sfp_backend), sf_fault_mode_name(sfp_fault_mode), secs,
            (unsigned long long)g_seq, sfp_interval_ms, (unsigned long long)g_total_pages, mib, mean_mibs,
            peak_mibs, (unsigned long long)g_peak_seq, (double)st.tracked_bytes / 1048576.0,
            (unsigned long long)st.regions, (unsigned long long)st.faults,
            g_seq ? (double)g_collect_ns / (double)g_seq / 1000.0 : 0.0, (double)g_collect_max_ns / 1000.0,
            sfp_scans ? (double)sfp_scan_ns / (double)sfp_scans / 1000.0 : 0.0);
    if (sfp_thp_kept)
        sum_add(&b, "snapfault: %llu ranges with transparent huge pages left untracked (THP=keep), "
                    "%.1f MiB\n",
                (unsigned long long)sfp_thp_kept, (double)sfp_thp_kept_bytes / 1048576.0);
    struct sfp_label **v = sfp_malloc((sfp_nlabels ? sfp_nlabels : 1) * sizeof(*v));
    if (v) {
        size_t k = 0;
        for (size_t i = 0; i < sfp_nlabels; i++)
            if (sfp_labels[i].cum)
                v[k++] = &sfp_labels[i];
        qsort(v, k, sizeof(*v), cmp_label_cum);
        sum_add(&b, "snapfault: top mappings by pages dirtied:\n"
                    "snapfault: %12s %10s %11s %11s  %-5s %s\n",
                "pages", "MiB", "mean MiB/s", "peak MiB/s", "kind", "mapping");
        for (size_t i = 0; i < k && (long)i < top; i++)
            sum_add(&b, "snapfault: %12llu %10.1f %11.2f %11.1f  %-5s %s\n", (unsigned long long)v[i]->cum,
                    (double)v[i]->cum * page_mib,
                    over_ns ? (double)v[i]->cum * page_mib / ((double)over_ns / 1e9) : 0.0,
                    v[i]->peak_rate * page_mib, sfp_kind_names[v[i]->kind], v[i]->name);
        sfp_free(v);
    }
    if (b.p) {
        sfp_write_all(sfd, b.p, b.n);
        sfp_free(b.p);
    }
    if (sfp_attr_on)
        sfp_attr_report(sfd, (int)top, true);
    else if (sfp_opt_val(SFP_OPT_ATTRIBUTE))
        sfp_warn("write attribution needs a sync backend; %s is in use, no call stacks were sampled",
                 sf_backend_name(sfp_backend));
}

/* A forked child: the parent's counts and record are the parent's. */
void sfp_track_forget(void)
{
    g_other_label = SIZE_MAX;
    g_seq = g_total_pages = g_peak_pages = g_peak_seq = g_collect_ns = g_collect_max_ns = 0;
    g_last_collect_ns = g_span_ns = 0;
    g_peak_rate = 0;
    sfp_track_path[0] = 0;
}
