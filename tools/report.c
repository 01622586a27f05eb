/* report.c - `snapfault report`: a human summary of a track record (and an
 * SVG plot of dirty rate per mapping), or of a snapshot image directory. */
#include "tools.h"
#include "record.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct label {
    unsigned id;
    char kind[16];
    unsigned long lo, hi;
    char prot[8];
    char name[192];
    unsigned long long cum, peak;
    double peak_rate; /* MiB/s over one interval's real length */
    bool gone;
};

struct interval {
    unsigned long long seq, t_ms, pages, tracked, collect_us;
};

struct dirty {
    size_t ival; /* index into intervals */
    unsigned label;
    unsigned long long pages;
};

struct record {
    char pid[32], ppid[32], exe[512], backend[64], faults[64];
    long interval_ms, page;
    struct label *labels;
    size_t nlabels;
    struct interval *iv;
    size_t niv;
    struct dirty *d;
    size_t nd;
    char **attr, **warn;
    size_t nattr, nwarn;
    bool ended;
    unsigned long long end_ms, end_pages;
    char how[16];
    size_t bad_lines;
};

static double mib(unsigned long long pages, long page) { return (double)pages * (double)page / 1048576.0; }

static void *grow(void *p, size_t n, size_t size)
{
    /* doubling at powers of two */
    if (n && (n & (n - 1)))
        return p;
    void *q = realloc(p, (n ? 2 * n : 16) * size);
    if (!q) {
        fprintf(stderr, "snapfault report: out of memory\n");
        exit(1);
    }
    return q;
}

static struct label *label_get(struct record *r, unsigned id)
{
    for (size_t i = 0; i < r->nlabels; i++)
        if (r->labels[i].id == id)
            return &r->labels[i];
    r->labels = grow(r->labels, r->nlabels, sizeof(*r->labels));
    struct label *l = &r->labels[r->nlabels++];
    memset(l, 0, sizeof(*l));
    l->id = id;
    snprintf(l->name, sizeof(l->name), "#%u", id);
    return l;
}

static const char *field(const char *line, const char *key, char *out, size_t cap)
{
    /* "key=value" fields of the P line, tab separated */
    size_t kl = strlen(key);
    for (const char *p = line; (p = strstr(p, key)); p++) {
        if ((p == line || p[-1] == '\t') && p[kl] == '=') {
            const char *v = p + kl + 1, *e = strchr(v, '\t');
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return out;
        }
    }
    out[0] = 0;
    return out;
}

static int parse_record(const char *path, struct record *r)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "snapfault report: %s: %s\n", path, strerror(errno));
        return -1;
    }
    memset(r, 0, sizeof(*r));
    r->page = 4096;
    /* The magic first, from a short read: a file that is not a record (a
     * device such as /dev/zero, a large binary) is rejected without
     * reading more of it.  Lines are bounded: one longer than LINE_MAX_REC
     * is counted bad and skipped, never held whole. */
    static const char magic[] = SFP_TRACK_HEAD;
    char head[sizeof(magic) - 1];
    size_t got = fread(head, 1, sizeof(head), f);
    if (got != sizeof(head) || memcmp(head, magic, sizeof(head)) != 0) {
        fprintf(stderr, "snapfault report: %s: %s\n", path, got ? "not a snapfault track record" : "empty file");
        fclose(f);
        return -1;
    }
    enum { LINE_MAX_REC = 1 << 16 };
    char *line = malloc(LINE_MAX_REC);
    if (!line) {
        fclose(f);
        return -1;
    }
    bool first = true; /* the rest of the magic line */
    while (fgets(line, LINE_MAX_REC, f)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n')
            line[--n] = 0;
        else if (!feof(f)) { /* too long: skip to its end */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            r->bad_lines++;
            first = false;
            continue;
        }
        if (first) {
            first = false;
            continue;
        }
        char tag = line[0];
        const char *rest = line + 2;
        if (n < 2 || line[1] != '\t') {
            r->bad_lines++;
            continue;
        }
        if (tag == SFP_REC_PROCESS[0]) {
            char tmp[64];
            field(rest, "pid", r->pid, sizeof(r->pid));
            field(rest, "ppid", r->ppid, sizeof(r->ppid));
            field(rest, "exe", r->exe, sizeof(r->exe));
            field(rest, "backend", r->backend, sizeof(r->backend));
            field(rest, "faults", r->faults, sizeof(r->faults));
            r->interval_ms = atol(field(rest, "interval_ms", tmp, sizeof(tmp)));
            r->page = atol(field(rest, "page", tmp, sizeof(tmp)));
            if (r->page <= 0)
                r->page = 4096;
        } else if (tag == SFP_REC_LABEL[0]) {
            unsigned id;
            char kind[16], name[192], prot[8] = "";
            unsigned long lo, hi;
            int used = 0;
            if (sscanf(rest, "%u\t%15s\t%lx\t%lx\t%n", &id, kind, &lo, &hi, &used) != 4 || !used) {
                r->bad_lines++;
                continue;
            }
            /* L ID KIND START END PROT NAME; records without PROT
             * (older ones) have the name right after END */
            const char *nm = rest + used;
            if (strlen(nm) > 5 && nm[4] == '\t' && strchr("r-", nm[0]) && strchr("w-", nm[1]) &&
                strchr("x-", nm[2]) && strchr("ps", nm[3])) {
                memcpy(prot, nm, 4);
                prot[4] = 0;
                nm += 5;
            }
            if (!*nm) {
                r->bad_lines++;
                continue;
            }
            snprintf(name, sizeof(name), "%.191s", nm);
            struct label *l = label_get(r, id);
            snprintf(l->prot, sizeof(l->prot), "%s", prot);
            snprintf(l->kind, sizeof(l->kind), "%s", kind);
            snprintf(l->name, sizeof(l->name), "%s", name);
            l->lo = lo;
            l->hi = hi;
            l->gone = false;
        } else if (tag == SFP_REC_IVAL[0]) {
            struct interval iv;
            if (sscanf(rest, "%llu\t%llu\t%llu\t%llu\t%llu", &iv.seq, &iv.t_ms, &iv.pages, &iv.tracked,
                       &iv.collect_us) != 5) {
                r->bad_lines++;
                continue;
            }
            r->iv = grow(r->iv, r->niv, sizeof(*r->iv));
            r->iv[r->niv++] = iv;
        } else if (tag == SFP_REC_DIRTY[0]) {
            unsigned long long seq, pages, bytes, cum;
            unsigned id;
            if (sscanf(rest, "%llu\t%u\t%llu\t%llu\t%llu", &seq, &id, &pages, &bytes, &cum) != 5 || !r->niv ||
                r->iv[r->niv - 1].seq != seq) {
                r->bad_lines++;
                continue;
            }
            struct label *l = label_get(r, id);
            l->cum += pages;
            if (pages > l->peak)
                l->peak = pages;
            r->d = grow(r->d, r->nd, sizeof(*r->d));
            r->d[r->nd++] = (struct dirty){r->niv - 1, id, pages};
        } else if (tag == SFP_REC_GONE[0]) {
            unsigned long long t;
            unsigned id;
            if (sscanf(rest, "%llu\t%u", &t, &id) == 2)
                label_get(r, id)->gone = true;
        } else if (tag == SFP_REC_END[0]) {
            unsigned long long t, ivs, pages, peak;
            char how[16];
            r->ended = true;
            r->end_ms = strtoull(rest, NULL, 10);
            if (sscanf(rest, "%llu\t%llu\t%llu\t%llu\t%15s", &t, &ivs, &pages, &peak, how) == 5)
                snprintf(r->how, sizeof(r->how), "%s", how);
        } else if (tag == SFP_REC_ATTR[0]) {
            r->attr = grow(r->attr, r->nattr, sizeof(*r->attr));
            r->attr[r->nattr++] = strdup(rest);
        } else if (tag == SFP_REC_NOTE[0]) {
            const char *msg = strchr(rest, '\t');
            r->warn = grow(r->warn, r->nwarn, sizeof(*r->warn));
            r->warn[r->nwarn++] = strdup(msg ? msg + 1 : rest);
        } else if (tag != '#') {
            r->bad_lines++;
        }
    }
    free(line);
    fclose(f);
    return 0;
}


/* Seconds covered by interval i: from the previous collect (or the start
 * of tracking) to this one, its real length (a last interval cut short by
 * the exit is short, and so are the pages it holds), at least 1 ms (the
 * record's resolution). */
static double span(const struct record *r, size_t i)
{
    unsigned long long prev = i ? r->iv[i - 1].t_ms : 0;
    unsigned long long ms = r->iv[i].t_ms > prev ? r->iv[i].t_ms - prev : 0;
    return (double)(ms ? ms : 1) / 1000.0;
}

/* The length every mean is taken over: the duration, and never less than
 * the intervals' lengths summed, so that no mean exceeds its peak. */
static double mean_over(const struct record *r)
{
    double sum = 0;
    for (size_t i = 0; i < r->niv; i++)
        sum += span(r, i);
    double dur = r->ended ? (double)r->end_ms / 1000.0 : r->niv ? (double)r->iv[r->niv - 1].t_ms / 1000.0 : 0;
    return dur > sum ? dur : sum;
}

static void label_rates(struct record *r)
{
    for (size_t j = 0; j < r->nd; j++) {
        struct label *l = label_get(r, r->d[j].label);
        double rate = mib(r->d[j].pages, r->page) / span(r, r->d[j].ival);
        if (rate > l->peak_rate)
            l->peak_rate = rate;
    }
}

static int cmp_cum(const void *a, const void *b)
{
    const struct label *x = a, *y = b;
    return x->cum < y->cum ? 1 : x->cum > y->cum ? -1 : (int)x->id - (int)y->id;
}

static void summary(const char *path, struct record *r, int top)
{
    unsigned long long total = 0, peak = 0, max_tracked = 0, csum = 0, cmax = 0;
    double peak_rate = 0, peak_t = 0;
    for (size_t i = 0; i < r->niv; i++) {
        total += r->iv[i].pages;
        double rate = mib(r->iv[i].pages, r->page) / span(r, i);
        if (rate > peak_rate) {
            peak_rate = rate;
            peak = r->iv[i].pages;
            peak_t = (double)r->iv[i].t_ms / 1000.0;
        }
        if (r->iv[i].tracked > max_tracked)
            max_tracked = r->iv[i].tracked;
        csum += r->iv[i].collect_us;
        if (r->iv[i].collect_us > cmax)
            cmax = r->iv[i].collect_us;
    }
    double dur = r->ended ? (double)r->end_ms / 1000.0 : r->niv ? (double)r->iv[r->niv - 1].t_ms / 1000.0 : 0;
    double over = mean_over(r);
    label_rates(r);
    printf("record:    %s\n", path);
    printf("process:   pid %s, %s\n", r->pid[0] ? r->pid : "?", r->exe[0] ? r->exe : "?");
    printf("backend:   %s (faults: %s), interval %ld ms\n", r->backend, r->faults, r->interval_ms);
    printf("duration:  %.2f s, %zu intervals%s\n", dur, r->niv,
           r->ended ? "" : " (no exit record: the process was killed or is still running)");
    printf("dirtied:   %llu pages (%.1f MiB); mean %.1f MiB/s; peak %.1f MiB/s (%llu pages) at %.2f s\n",
           total, mib(total, r->page), over > 0 ? mib(total, r->page) / over : 0.0, peak_rate, peak, peak_t);
    printf("tracked:   up to %.1f MiB\n", (double)max_tracked / 1048576.0);
    printf("collect:   mean %.0f us, max %llu us\n", r->niv ? (double)csum / (double)r->niv : 0.0, cmax);
    qsort(r->labels, r->nlabels, sizeof(*r->labels), cmp_cum);
    printf("\ntop mappings by pages dirtied:\n");
    printf("%12s %10s %11s %11s  %-5s %-4s  %s\n", "pages", "MiB", "mean MiB/s", "peak MiB/s", "kind", "prot",
           "mapping");
    for (size_t i = 0; i < r->nlabels && (int)i < top; i++) {
        struct label *l = &r->labels[i];
        if (!l->cum)
            break;
        printf("%12llu %10.1f %11.2f %11.1f  %-5s %-4s  %s%s\n", l->cum, mib(l->cum, r->page),
               over > 0 ? mib(l->cum, r->page) / over : 0.0, l->peak_rate, l->kind, l->prot[0] ? l->prot : "-",
               l->name, l->gone ? " (unmapped)" : "");
    }
    if (r->nattr) {
        printf("\ntop writers (call stacks of first writes after a reset):\n");
        for (size_t i = 0; i < r->nattr && (int)i < top; i++) {
            char *tab = strchr(r->attr[i], '\t');
            if (!tab)
                continue;
            *tab = 0;
            printf("%12s pages  ", r->attr[i]);
            for (char *p = tab + 1; *p; p++)
                fputs(*p == ';' ? "\n                     <- " : (char[]){*p, 0}, stdout);
            putchar('\n');
        }
    }
    for (size_t i = 0; i < r->nwarn; i++)
        printf("\nnote: %s\n", r->warn[i]);
    if (r->bad_lines)
        printf("\nnote: %zu malformed lines were skipped\n", r->bad_lines);
}

/* ------------------------------------------------------------------------
 * SVG: dirty rate over time, one line per top mapping, "other" and total.
 * ------------------------------------------------------------------------ */
static void xml_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static double nice_step(double range, int ticks)
{
    double raw = range / ticks, mag = pow(10, floor(log10(raw)));
    double n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
}

static int write_svg(const char *out, struct record *r, int top)
{
    /* labels are sorted by cum already (summary) */
    int k = 0;
    while (k < top && k < 8 && (size_t)k < r->nlabels && r->labels[k].cum)
        k++;
    size_t n = r->niv;
    double *rate = calloc((size_t)(k + 2) * (n ? n : 1), sizeof(double));
    if (!rate)
        return -1;
    /* series k: other, k+1: total */
    for (size_t j = 0; j < r->nd; j++) {
        int s = k;
        for (int q = 0; q < k; q++)
            if (r->labels[q].id == r->d[j].label)
                s = q;
        rate[(size_t)s * n + r->d[j].ival] += mib(r->d[j].pages, r->page) / span(r, r->d[j].ival);
    }
    double ymax = 0, tmax = n ? (double)r->iv[n - 1].t_ms / 1000.0 : 1;
    for (size_t i = 0; i < n; i++) {
        rate[(size_t)(k + 1) * n + i] = mib(r->iv[i].pages, r->page) / span(r, i);
        if (rate[(size_t)(k + 1) * n + i] > ymax)
            ymax = rate[(size_t)(k + 1) * n + i];
    }
    if (ymax <= 0)
        ymax = 1;
    if (tmax <= 0)
        tmax = 1;
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        fprintf(stderr, "snapfault report: cannot write %s: %s\n", out, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(rate);
        return -1;
    }
    const int W = 960, H = 520, L = 70, R = 250, T = 50, B = 60;
    const int pw = W - L - R, ph = H - T - B;
    double ystep = nice_step(ymax, 5), xstep = nice_step(tmax, 8);
    ymax = ceil(ymax / ystep) * ystep;
    static const char *const colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                         "#8c564b", "#e377c2", "#17becf"};
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\" font-weight=\"bold\">Dirty rate per mapping: pid %s ",
            L, r->pid);
    xml_escape(f, r->exe);
    fprintf(f, "</text>\n<text x=\"%d\" y=\"40\" fill=\"#555\">backend ", L);
    xml_escape(f, r->backend);
    fprintf(f, ", interval %ld ms, %zu intervals</text>\n", r->interval_ms, n);
    for (double y = 0; y <= ymax + ystep / 2; y += ystep) {
        double py = T + ph - y / ymax * ph;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, py, L + pw, py);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6, py + 4, y);
    }
    for (double x = 0; x <= tmax + xstep / 2; x += xstep) {
        double px = L + x / tmax * pw;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>\n", px, T, px, T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", px, T + ph + 18, x);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n", L, T, pw, ph);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">time (s)</text>\n", L + pw / 2, H - 18);
    fprintf(f, "<text x=\"18\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 18 %d)\">dirty rate (MiB/s)"
               "</text>\n", T + ph / 2, T + ph / 2);
    for (int s = 0; s < k + 2; s++) {
        bool any = false;
        for (size_t i = 0; i < n && !any; i++)
            any = rate[(size_t)s * n + i] > 0;
        if (!any && s != k + 1)
            continue;
        const char *color = s < k ? colors[s % 8] : s == k ? "#999999" : "#000000";
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s points=\"", color,
                s == k + 1 ? "1.2" : "1.8", s == k + 1 ? " stroke-dasharray=\"5,3\"" : "");
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%.1f,%.1f ", L + (double)r->iv[i].t_ms / 1000.0 / tmax * pw,
                    T + ph - rate[(size_t)s * n + i] / ymax * ph);
        fprintf(f, "\"/>\n");
        int ly = T + 10 + s * 20;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"%s/>\n",
                L + pw + 14, ly, L + pw + 36, ly, color, s == k + 1 ? " stroke-dasharray=\"5,3\"" : "");
        fprintf(f, "<text x=\"%d\" y=\"%d\">", L + pw + 42, ly + 4);
        if (s < k) {
            /* long names are cut to keep the legend inside the picture */
            char shortname[40];
            size_t nl = strlen(r->labels[s].name);
            memcpy(shortname, r->labels[s].name, nl < sizeof(shortname) - 1 ? nl : sizeof(shortname) - 1);
            shortname[nl < sizeof(shortname) - 1 ? nl : sizeof(shortname) - 1] = 0;
            xml_escape(f, shortname);
            fprintf(f, " (%.1f MiB)", mib(r->labels[s].cum, r->page));
        } else {
            fputs(s == k ? "other mappings" : "total", f);
        }
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
    int err = ferror(f);
    if (fclose(f) != 0 || err) {
        fprintf(stderr, "snapfault report: cannot write %s\n", out);
        free(rate);
        return -1;
    }
    free(rate);
    return 0;
}

static void free_record(struct record *r)
{
    for (size_t i = 0; i < r->nattr; i++)
        free(r->attr[i]);
    for (size_t i = 0; i < r->nwarn; i++)
        free(r->warn[i]);
    free(r->attr);
    free(r->warn);
    free(r->labels);
    free(r->iv);
    free(r->d);
}

/* ------------------------------------------------------------------------
 * A process tree: several records (one per process, as make or git leave
 * them), summarised together.  Each record is read with the same bounded
 * reader and only its totals are kept.
 * ------------------------------------------------------------------------ */
struct proc {
    char pid[32], ppid[32], exe[256], how[16];
    unsigned long long pages;
    double secs, peak_rate;
    bool ended;
};

struct prog {
    char exe[256];
    unsigned long long pages, procs;
    double secs;
};

static int cmp_proc(const void *a, const void *b)
{
    const struct proc *x = a, *y = b;
    return x->pages < y->pages ? 1 : x->pages > y->pages ? -1 : strcmp(x->pid, y->pid);
}

static int cmp_prog(const void *a, const void *b)
{
    const struct prog *x = a, *y = b;
    return x->pages < y->pages ? 1 : x->pages > y->pages ? -1 : strcmp(x->exe, y->exe);
}

static bool is_record(const char *path)
{
    static const char magic[] = SFP_TRACK_MAGIC " ";
    char head[sizeof(magic) - 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return false;
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && read(fd, head, sizeof(head)) == (ssize_t)sizeof(head) &&
              memcmp(head, magic, sizeof(head)) == 0;
    close(fd);
    return ok;
}

static int report_tree(char **files, size_t n, int top)
{
    struct proc *pv = calloc(n ? n : 1, sizeof(*pv));
    struct prog *gv = calloc(n ? n : 1, sizeof(*gv));
    if (!pv || !gv) {
        fprintf(stderr, "snapfault report: out of memory\n");
        return 1;
    }
    size_t np = 0, ng = 0, unreadable = 0, killed = 0;
    unsigned long long total = 0;
    double first_peak = 0;
    for (size_t i = 0; i < n; i++) {
        struct record r;
        if (parse_record(files[i], &r)) {
            unreadable++;
            continue;
        }
        struct proc *p = &pv[np++];
        snprintf(p->pid, sizeof(p->pid), "%s", r.pid[0] ? r.pid : "?");
        snprintf(p->ppid, sizeof(p->ppid), "%s", r.ppid[0] ? r.ppid : "?");
        snprintf(p->exe, sizeof(p->exe), "%.255s", r.exe[0] ? r.exe : "?");
        snprintf(p->how, sizeof(p->how), "%s", r.ended ? (r.how[0] ? r.how : "exit") : "killed");
        p->ended = r.ended;
        killed += !r.ended;
        for (size_t k = 0; k < r.niv; k++) {
            p->pages += r.iv[k].pages;
            double rate = mib(r.iv[k].pages, r.page) / span(&r, k);
            if (rate > p->peak_rate)
                p->peak_rate = rate;
        }
        p->secs = mean_over(&r);
        if (p->peak_rate > first_peak)
            first_peak = p->peak_rate;
        total += p->pages * (unsigned long long)r.page / 4096;
        size_t g;
        for (g = 0; g < ng; g++)
            if (strcmp(gv[g].exe, p->exe) == 0)
                break;
        if (g == ng)
            snprintf(gv[ng++].exe, sizeof(gv[0].exe), "%s", p->exe);
        gv[g].pages += p->pages;
        gv[g].procs++;
        gv[g].secs += p->secs;
        free_record(&r);
    }
    if (!np) {
        fprintf(stderr, "snapfault report: no readable track records\n");
        free(pv);
        free(gv);
        return 1;
    }
    qsort(pv, np, sizeof(*pv), cmp_proc);
    qsort(gv, ng, sizeof(*gv), cmp_prog);
    printf("process tree: %zu records (%zu processes without an exit record)%s\n", np, killed,
           unreadable ? ", some files unreadable" : "");
    printf("dirtied:      %llu pages (%.1f MiB) in all; highest rate of one process %.1f MiB/s\n", total,
           mib(total, 4096), first_peak);
    printf("\nprograms by pages dirtied:\n%12s %10s %8s %10s  %s\n", "pages", "MiB", "procs", "seconds",
           "program");
    for (size_t g = 0; g < ng && (int)g < top; g++)
        printf("%12llu %10.1f %8llu %10.2f  %s\n", gv[g].pages, mib(gv[g].pages, 4096), gv[g].procs, gv[g].secs,
               gv[g].exe);
    printf("\nprocesses by pages dirtied:\n%12s %10s %8s %8s %8s %11s  %s\n", "pages", "MiB", "pid", "ppid", "ended",
           "peak MiB/s", "program");
    for (size_t i = 0; i < np && (int)i < top; i++)
        printf("%12llu %10.1f %8s %8s %8s %11.1f  %s\n", pv[i].pages, mib(pv[i].pages, 4096), pv[i].pid, pv[i].ppid,
               pv[i].how, pv[i].peak_rate, pv[i].exe);
    free(pv);
    free(gv);
    return unreadable ? 1 : 0;
}

/* The track records in a directory (DIR/snapfault.PID.sft, or any name). */
static size_t dir_records(const char *path, char ***out)
{
    DIR *d = opendir(path);
    size_t n = 0;
    *out = NULL;
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        if (!is_record(p))
            continue;
        *out = grow(*out, n, sizeof(**out));
        (*out)[n++] = strdup(p);
    }
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------------
 * A snapshot image directory: the chains its index files describe.
 * ------------------------------------------------------------------------ */
static int report_dir(const char *path, int top)
{
    char **recs;
    size_t nrec = dir_records(path, &recs);
    if (nrec) {
        printf("records in %s:\n", path);
        int rc = report_tree(recs, nrec, top);
        for (size_t i = 0; i < nrec; i++)
            free(recs[i]);
        free(recs);
        return rc;
    }
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "snapfault report: %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct dirent *e;
    int nindex = 0;
    printf("image directory: %s\n", path);
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (nl < 7 || strcmp(e->d_name + nl - 6, ".index") != 0)
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        nindex++;
        char line[1024];
        unsigned long long n = 0, failed = 0, bytes = 0, pause_sum = 0, pause_max = 0, wsum = 0, full = 0;
        char header[256] = "";
        while (fgets(line, sizeof(line), f)) {
            unsigned long long seq, size, pause, wus;
            char name[256], id[32], parent[32];
            if (line[0] == '#') {
                size_t hl = strcspn(line + 1, "\n");
                if (hl >= sizeof(header))
                    hl = sizeof(header) - 1;
                memcpy(header, line + 1, hl);
                header[hl] = 0;
            } else if (line[0] == SFP_IDX_IMAGE[0] &&
                       sscanf(line + 2, "%llu\t%255s\t%31s\t%31s\t%llu\t%llu\t%llu", &seq, name, id, parent, &size,
                              &pause, &wus) == 7) {
                n++;
                bytes += size;
                pause_sum += pause;
                if (pause > pause_max)
                    pause_max = pause;
                wsum += wus;
                full += strtoull(parent, NULL, 16) == 0;
            } else if (line[0] == SFP_IDX_FAILED[0]) {
                failed++;
            }
        }
        fclose(f);
        for (char *t = header; *t; t++)
            if (*t == '\t')
                *t = ' ';
        printf("\n%s (%s)\n", e->d_name, header);
        printf("  images:  %llu (%llu full, %llu incremental), %llu failed\n", n, full, n - full, failed);
        printf("  size:    %.1f MiB\n", (double)bytes / 1048576.0);
        printf("  pause:   mean %.0f us, max %llu us (snapshot take)\n", n ? (double)pause_sum / (double)n : 0.0,
               pause_max);
        printf("  write:   mean %.1f ms\n", n ? (double)wsum / (double)n / 1000.0 : 0.0);
    }
    closedir(d);
    if (!nindex) {
        fprintf(stderr, "snapfault report: %s: no track records and no snapshot index files\n", path);
        return 1;
    }
    printf("\n(snapfault image verify %s checks every image and parent link)\n", path);
    return 0;
}

int cmd_report(int argc, char **argv)
{
    const char *file = NULL, *svg = NULL;
    char **files = NULL;
    size_t nfiles = 0;
    int top = 10;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("usage: snapfault report FILE [--svg OUT.svg] [--top N]\n"
                   "       snapfault report FILE FILE... | DIR [--top N]\n\n"
                   "FILE is a track-mode record: prints the total and peak dirty rate, a table of\n"
                   "mappings by pages dirtied and, with write attribution, the top writing call\n"
                   "stacks.  --svg also writes a plot of the dirty rate over time per mapping.\n"
                   "Several FILEs, or a DIR holding track records (snapfault run --output DIR/),\n"
                   "are summarised as one process tree: programs and processes by pages dirtied.\n"
                   "A DIR holding snapshot indexes: prints its image chains.\n");
            return 0;
        }
        if (strcmp(argv[i], "--svg") == 0) {
            if (++i >= argc)
                usage_error("report", "--svg needs a file name");
            svg = argv[i];
        } else if (strcmp(argv[i], "--top") == 0) {
            char *end;
            if (++i >= argc || (top = (int)strtol(argv[i], &end, 10)) <= 0 || *end)
                usage_error("report", "--top needs a positive number");
        } else if (argv[i][0] == '-' && argv[i][1]) {
            usage_error("report", "unknown option '%s'", argv[i]);
        } else {
            files = grow(files, nfiles, sizeof(*files));
            files[nfiles++] = argv[i];
            file = files[0];
        }
    }
    if (!file)
        usage_error("report", "missing FILE");
    if (nfiles > 1) {
        if (svg)
            usage_error("report", "--svg takes one record");
        return report_tree(files, nfiles, top);
    }
    struct stat st;
    if (stat(file, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (svg)
            usage_error("report", "--svg needs a track record, not a directory");
        return report_dir(file, top);
    }
    struct record r;
    if (parse_record(file, &r))
        return 1;
    summary(file, &r, top);
    if (svg) {
        if (write_svg(svg, &r, top))
            return 1;
        printf("\nplot: %s\n", svg);
    }
    return 0;
}
