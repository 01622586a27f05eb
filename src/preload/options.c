/* options.c - the one table of SNAPFAULT_* options and their parsers, shared
 * by the preload (which reads environ) and `snapfault run` (which writes it). */
#include "options.h"

#include "snapfault.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const mode_names[] = {"off", "track", "snapshot", NULL};
static const char *const fork_names[] = {"follow", "untrack", NULL};
static const char *const thp_names[] = {"split", "keep", NULL};
/* In sf_engine order. */
static const char *const engine_names[] = {"auto", "cow", "mirror", NULL};

/* Defaults are written as they would be in the environment, so that the
 * table documents itself (`snapfault run --help` prints it). */
const struct sfp_option_desc sfp_option_table[SFP_OPT_COUNT] = {
    [SFP_OPT_MODE] = {"MODE", SFP_T_CHOICE, "track", mode_names, 0, 0,
                      "track | snapshot | off"},
    [SFP_OPT_BACKEND] = {"BACKEND", SFP_T_BACKEND, "auto", NULL, 0, 0,
                         "auto | uffd-async | uffd-sync | mprotect | soft-dirty"},
    [SFP_OPT_INTERVAL] = {"INTERVAL", SFP_T_DURATION, "100ms", NULL, 1, 3600000,
                          "track mode: collect+reset period (ms, s)"},
    [SFP_OPT_OUTPUT] = {"OUTPUT", SFP_T_STRING, "", NULL, 0, 0,
                        "track: record file; snapshot: image directory; %p = pid "
                        "(default snapfault.%p.sft / snapfault.%p.d)"},
    [SFP_OPT_SNAPSHOT_SIGNAL] = {"SNAPSHOT_SIGNAL", SFP_T_SIGNAL, "USR2", NULL, 0, 0,
                                 "snapshot mode: signal that takes a snapshot (0 = none)"},
    [SFP_OPT_SNAPSHOT_EVERY] = {"SNAPSHOT_EVERY", SFP_T_DURATION, "0", NULL, 0, 86400000,
                                "snapshot mode: period between snapshots (0 = signal only)"},
    [SFP_OPT_INCLUDE] = {"INCLUDE", SFP_T_INCLUDE, "heap,anon,data", NULL, 0, 0,
                         "what to track: heap, anon, data, stacks (comma list)"},
    [SFP_OPT_VERBOSE] = {"VERBOSE", SFP_T_BOOL, "0", NULL, 0, 0,
                         "print what the preload does on stderr"},
    [SFP_OPT_QUIET] = {"QUIET", SFP_T_BOOL, "0", NULL, 0, 0,
                       "do not even warn about bad options or output failures"},
    [SFP_OPT_SHOW_STATS] = {"SHOW_STATS", SFP_T_BOOL, "0", NULL, 0, 0,
                            "print a summary on stderr at exit"},
    [SFP_OPT_ATTRIBUTE] = {"ATTRIBUTE", SFP_T_BOOL, "0", NULL, 0, 0,
                           "track mode: sample the call stack of first writes (libunwind)"},
    [SFP_OPT_ATTRIBUTE_DEPTH] = {"ATTRIBUTE_DEPTH", SFP_T_INT, "6", NULL, 1, 16,
                                 "frames kept per sampled stack"},
    [SFP_OPT_FORK] = {"FORK", SFP_T_CHOICE, "follow", fork_names, 0, 0,
                      "forked child: follow (own output via %p) | untrack"},
    [SFP_OPT_FOLLOW_EXEC] = {"FOLLOW_EXEC", SFP_T_BOOL, "1", NULL, 0, 0,
                             "keep the preload in programs this one executes"},
    [SFP_OPT_STORE_LIMIT] = {"STORE_LIMIT", SFP_T_SIZE, "1G", NULL, 0, 0,
                             "snapshot mode: memory for page copies (K, M, G)"},
    [SFP_OPT_MAX_IMAGES] = {"MAX_IMAGES", SFP_T_INT, "0", NULL, 0, 1000000,
                            "snapshot mode: stop after this many images (0 = no limit)"},
    [SFP_OPT_EXIT_IMAGE] = {"EXIT_IMAGE", SFP_T_BOOL, "1", NULL, 0, 0,
                            "snapshot mode: a last image at exit and on SIGTERM/SIGINT/SIGHUP"},
    [SFP_OPT_TOP] = {"TOP", SFP_T_INT, "10", NULL, 1, 1000,
                     "entries in the summary's tables"},
    [SFP_OPT_THP] = {"THP", SFP_T_CHOICE, "split", thp_names, 0, 0,
                     "transparent huge pages: split (tracked 4 KiB-grained) | keep (left untracked)"},
    [SFP_OPT_STATS_FILE] = {"STATS_FILE", SFP_T_STRING, "", NULL, 0, 0,
                            "append the summary to this file (implies SHOW_STATS; default: stderr)"},
    [SFP_OPT_ENGINE] = {"ENGINE", SFP_T_CHOICE, "auto", engine_names, 0, 0,
                        "snapshot mode: cow | mirror (a shadow of all tracked memory) | auto "
                        "(the backend's; cow with backend auto)"},
    /* snapshot mode's disk budget and retention (doc/PRELOAD.md) */
    [SFP_OPT_MAX_BYTES] = {"MAX_BYTES", SFP_T_SIZE, "0", NULL, 0, 0,
                           "snapshot mode: most bytes this process's images take on disk (0 = no limit)"},
    [SFP_OPT_KEEP] = {"KEEP", SFP_T_INT, "0", NULL, 0, 1000000,
                      "snapshot mode: most images kept on disk (0 = all)"},
    [SFP_OPT_FULL_EVERY] = {"FULL_EVERY", SFP_T_INT, "0", NULL, 0, 1000000,
                            "snapshot mode: a full image every N (0 = as KEEP/MAX_BYTES need)"},
    [SFP_OPT_COMPRESS] = {"COMPRESS", SFP_T_INT, "1", NULL, 0, 19,
                          "snapshot mode: zstd level of image blocks (0 = uncompressed)"},
    [SFP_OPT_POINT_IN_TIME] = {"POINT_IN_TIME", SFP_T_BOOL, "1", NULL, 0, 0,
                               "snapshot mode: stop every thread for each take (one instant)"},
};

/* Not options, but read by the library (DEBUG, STOP_SIGNAL, STOP_TIMEOUT_MS), by `snapfault run`
 * (PRELOAD_LIB) or by the compat suite (TOOL): never called unknown. */
static const char *const other_names[] = {"DEBUG", "PRELOAD_LIB", "TOOL", "STOP_SIGNAL",
                                          "STOP_TIMEOUT_MS", "NOTED", NULL};

bool sfp_known_other_name(const char *name, size_t n)
{
    for (int i = 0; other_names[i]; i++)
        if (strlen(other_names[i]) == n && strncasecmp(name, other_names[i], n) == 0)
            return true;
    return false;
}

int sfp_option_find(const char *name, size_t n)
{
    for (int o = 0; o < SFP_OPT_COUNT; o++)
        if (strlen(sfp_option_table[o].name) == n && strncasecmp(name, sfp_option_table[o].name, n) == 0)
            return o;
    return sfp_known_other_name(name, n) ? SFP_OPT_COUNT : -1;
}

const char *sfp_env_unknown(const char *entry, size_t *n)
{
    if (strncasecmp(entry, "SNAPFAULT_", 10) != 0)
        return NULL;
    const char *name = entry + 10, *eq = strchr(name, '=');
    if (!eq)
        return NULL;
    *n = (size_t)(eq - name);
    return sfp_option_find(name, *n) < 0 ? name : NULL;
}

/* Levenshtein distance without case, for names of at most 31 characters. */
static size_t name_distance(const char *a, size_t na, const char *b)
{
    size_t nb = strlen(b), row[32];
    if (na > 31 || nb > 31)
        return SIZE_MAX;
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t sub = diag + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            diag = up;
        }
    }
    return row[nb];
}

int sfp_option_closest(const char *name, size_t n)
{
    int best = -1;
    size_t bd = SIZE_MAX;
    for (int o = 0; o < SFP_OPT_COUNT; o++) {
        size_t d = name_distance(name, n, sfp_option_table[o].name);
        if (d < bd)
            bd = d, best = o;
    }
    /* a third of the name may be wrong, at least one character */
    size_t limit = n / 3 > 1 ? n / 3 : 1;
    return bd <= limit ? best : -1;
}

bool sfp_option_applies(sfp_opt o, int mode)
{
    switch (o) {
    case SFP_OPT_SNAPSHOT_SIGNAL:
    case SFP_OPT_SNAPSHOT_EVERY:
    case SFP_OPT_STORE_LIMIT:
    case SFP_OPT_MAX_IMAGES:
    case SFP_OPT_EXIT_IMAGE:
    case SFP_OPT_MAX_BYTES:
    case SFP_OPT_KEEP:
    case SFP_OPT_FULL_EVERY:
    case SFP_OPT_COMPRESS:
    case SFP_OPT_POINT_IN_TIME:
        return mode == SFP_MODE_SNAPSHOT;
    case SFP_OPT_ATTRIBUTE:
    case SFP_OPT_ATTRIBUTE_DEPTH:
    case SFP_OPT_STATS_FILE:
        return mode == SFP_MODE_TRACK;
    default:
        return true;
    }
}

bool sfp_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
    return *a == *b;
}

static int parse_bool(const char *s, long long *v)
{
    static const char *const yes[] = {"1", "true", "yes", "on", NULL};
    static const char *const no[] = {"0", "false", "no", "off", NULL};
    for (int i = 0; yes[i]; i++)
        if (sfp_ieq(s, yes[i]))
            return *v = 1, 0;
    for (int i = 0; no[i]; i++)
        if (sfp_ieq(s, no[i]))
            return *v = 0, 0;
    return -1;
}

/* A decimal number with an optional fraction, then a unit; out in units of
 * 1/scale of the base (milliseconds, bytes). */
static int parse_scaled(const char *s, const char *const units[], const long long mult[],
                        long long *v)
{
    const char *p = s;
    long long ip = 0, frac = 0, fden = 1;
    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        if (ip > LLONG_MAX / 10 - 10)
            return -1;
        ip = ip * 10 + (*p++ - '0');
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p)) {
            if (fden < 1000000000) {
                frac = frac * 10 + (*p - '0');
                fden *= 10;
            }
            p++;
        }
    }
    while (*p == ' ')
        p++;
    for (int i = 0; units[i]; i++) {
        if (sfp_ieq(p, units[i])) {
            if (ip > LLONG_MAX / mult[i])
                return -1;
            *v = ip * mult[i] + frac * mult[i] / fden;
            return 0;
        }
    }
    return -1;
}

static int parse_duration_ms(const char *s, long long *ms)
{
    /* A bare number is milliseconds; "us" rounds up to whole milliseconds
     * only when non-zero, since the runtime sleeps in milliseconds. */
    static const char *const units[] = {"", "ms", "s", "sec", "m", "min", "us", NULL};
    static const long long mult[] = {1000, 1000, 1000000, 1000000, 60000000, 60000000, 1};
    long long us;
    if (parse_scaled(s, units, mult, &us))
        return -1;
    *ms = (us + 999) / 1000;
    return 0;
}

static int parse_size(const char *s, long long *bytes)
{
    static const char *const units[] = {"", "b", "k", "kb", "kib", "m", "mb", "mib",
                                        "g", "gb", "gib", "t", "tb", "tib", NULL};
    static const long long mult[] = {1, 1, 1LL << 10, 1LL << 10, 1LL << 10, 1LL << 20, 1LL << 20,
                                     1LL << 20, 1LL << 30, 1LL << 30, 1LL << 30, 1LL << 40,
                                     1LL << 40, 1LL << 40};
    return parse_scaled(s, units, mult, bytes);
}

static const struct {
    const char *name;
    int sig;
} sig_names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"USR1", SIGUSR1},
                 {"USR2", SIGUSR2}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"PWR", SIGPWR},
                 {"URG", SIGURG},   {"WINCH", SIGWINCH}};

int sfp_signal_parse(const char *s)
{
    if (!s || !*s)
        return -1;
    if (isdigit((unsigned char)*s)) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end || v < 0 || v >= NSIG)
            return -1;
        return (int)v;
    }
    if ((s[0] == 'S' || s[0] == 's') && (s[1] == 'I' || s[1] == 'i') && (s[2] == 'G' || s[2] == 'g'))
        s += 3;
    for (size_t i = 0; i < sizeof(sig_names) / sizeof(sig_names[0]); i++)
        if (sfp_ieq(s, sig_names[i].name))
            return sig_names[i].sig;
    if (strncasecmp(s, "RTMIN+", 6) == 0) {
        char *end;
        long v = strtol(s + 6, &end, 10);
        if (*end || v < 0 || SIGRTMIN + v > SIGRTMAX)
            return -1;
        return SIGRTMIN + (int)v;
    }
    return -1;
}

const char *sfp_signal_name(int sig, char buf[16])
{
    for (size_t i = 0; i < sizeof(sig_names) / sizeof(sig_names[0]); i++)
        if (sig_names[i].sig == sig) {
            snprintf(buf, 16, "SIG%s", sig_names[i].name);
            return buf;
        }
    snprintf(buf, 16, "%d", sig);
    return buf;
}

static int parse_include(const char *s, long long *v)
{
    static const struct {
        const char *name;
        unsigned bit;
    } parts[] = {{"heap", SFP_INC_HEAP}, {"anon", SFP_INC_ANON}, {"data", SFP_INC_DATA},
                 {"stacks", SFP_INC_STACKS}, {"stack", SFP_INC_STACKS},
                 {"all", SFP_INC_HEAP | SFP_INC_ANON | SFP_INC_DATA | SFP_INC_STACKS},
                 {"none", 0}};
    unsigned bits = 0;
    const char *p = s;
    while (*p) {
        const char *e = p;
        while (*e && *e != ',' && *e != '+')
            e++;
        size_t n = (size_t)(e - p);
        size_t i;
        for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
            if (strlen(parts[i].name) == n && strncasecmp(p, parts[i].name, n) == 0)
                break;
        if (i == sizeof(parts) / sizeof(parts[0]))
            return -1;
        bits |= parts[i].bit;
        p = *e ? e + 1 : e;
    }
    *v = bits;
    return 0;
}

int sfp_option_parse(sfp_opt o, const char *text, long long *val, const char **why)
{
    const struct sfp_option_desc *d = &sfp_option_table[o];
    *why = NULL;
    switch (d->type) {
    case SFP_T_BOOL:
        if (parse_bool(text, val))
            return *why = "expected 1/true/yes/on or 0/false/no/off", -1;
        return 0;
    case SFP_T_DURATION:
        if (parse_duration_ms(text, val))
            return *why = "expected a duration such as 100ms, 1s or 2.5s", -1;
        if (*val < d->min || *val > d->max)
            return *why = "duration out of range", -1;
        return 0;
    case SFP_T_SIZE:
        if (parse_size(text, val))
            return *why = "expected a size such as 512M or 2G", -1;
        return 0;
    case SFP_T_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end)
            return *why = "expected an integer", -1;
        if (v < d->min || v > d->max)
            return *why = "integer out of range", -1;
        *val = v;
        return 0;
    }
    case SFP_T_STRING:
        if (!*text)
            return *why = "empty", -1;
        *val = 0;
        return 0;
    case SFP_T_CHOICE:
        for (int i = 0; d->choices[i]; i++)
            if (sfp_ieq(text, d->choices[i]))
                return *val = i, 0;
        return *why = "unknown value", -1;
    case SFP_T_SIGNAL: {
        int s = sfp_signal_parse(text);
        if (s < 0 || s == SIGSEGV || s == SIGBUS || s == SIGKILL || s == SIGSTOP)
            return *why = "expected a catchable signal name or number (0 = none)", -1;
        *val = s;
        return 0;
    }
    case SFP_T_INCLUDE:
        if (parse_include(text, val))
            return *why = "expected a comma list of heap, anon, data, stacks", -1;
        return 0;
    case SFP_T_BACKEND: {
        int b = sf_backend_parse(text);
        if (b < 0)
            return *why = "unknown backend", -1;
        *val = b;
        return 0;
    }
    }
    return -1;
}
