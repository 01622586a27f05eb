/* run.c - `snapfault run`: maps options to SNAPFAULT_* variables, prepends
 * the preload to LD_PRELOAD and execs the program (whose status is ours). */
#include "tools.h"
#include "options.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void help(void)
{
    printf("usage: snapfault run [options] [--] PROGRAM ARGS...\n"
           "\n"
           "Runs PROGRAM with libsnapfault-preload.so, which tracks how it dirties its memory\n"
           "(track mode) or writes copy-on-write memory images of it (snapshot mode).\n"
           "The exit status is the program's.\n"
           "\n"
           "  --mode track|snapshot|off     what to do (default track)\n"
           "  --backend NAME                auto, uffd-async, uffd-sync, mprotect, soft-dirty\n"
           "  --interval DURATION           track mode: collect period (default 100ms)\n"
           "  --snapshot-every DURATION     snapshot mode: take one every DURATION\n"
           "  --snapshot-signal SIG         snapshot mode: take one on SIG (default USR2, 0 = none)\n"
           "  --output PATH                 track: record file, or DIR/ for one record per\n"
           "                                process in DIR; snapshot: image directory;\n"
           "                                %%p is the pid (default snapfault.%%p.sft / .d);\n"
           "                                a file path, never - or a device\n"
           "  --thp split|keep              transparent huge pages: split by tracking (default)\n"
           "                                or kept, their ranges left untracked\n"
           "  --stats-file FILE             append the summary to FILE (implies -s), not stderr\n"
           "  --include LIST                heap,anon,data,stacks (default heap,anon,data)\n"
           "  --attribute                   sample the call stacks of first writes (libunwind)\n"
           "  --fork follow|untrack         forked children: own output, or untracked\n"
           "  --no-follow-exec              do not preload programs PROGRAM executes\n"
           "  --store-limit SIZE            snapshot mode: memory for page copies (default 1G)\n"
           "  --engine cow|mirror|auto      snapshot mode: snapshot engine (default auto: the backend's,\n"
           "                                cow with backend auto)\n"
           "  --max-images N                snapshot mode: stop after N images\n"
           "  --no-exit-image               snapshot mode: no last image at exit\n"
           "  --max-bytes SIZE              snapshot mode: most bytes of images on disk; old\n"
           "                                chains are deleted, the period backs off (K, M, G)\n"
           "  --keep N                      snapshot mode: most images kept on disk\n"
           "  --full-every N                snapshot mode: a full image every N images\n"
           "  --compress LEVEL              snapshot mode: zstd level 1-19 (default 1)\n"
           "  --no-compress                 snapshot mode: uncompressed images\n"
           "  --point-in-time               snapshot mode: stop every thread of the program for\n"
           "                                each take, so an image is one instant (default)\n"
           "  --no-point-in-time            snapshot mode: take without stopping the threads\n"
           "  --show-stats, -s              print a summary at exit (on the stderr the program\n"
           "                                started with)\n"
           "  --verbose, -v                 say what the preload does\n"
           "  --preload PATH                the preload library to use\n"
           "\n"
           "Every option is a SNAPFAULT_* environment variable of the preload:\n");
    for (int o = 0; o < SFP_OPT_COUNT; o++)
        printf("  SNAPFAULT_%-17s %-16s %s\n", sfp_option_table[o].name,
               sfp_option_table[o].dflt[0] ? sfp_option_table[o].dflt : "(none)", sfp_option_table[o].help);
}

/* The preload next to this executable in the build tree, or installed. */
static bool find_preload(char *out, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            const char *rel[] = {"/../src/preload/libsnapfault-preload.so",
                                 "/../" SNAPFAULT_LIBDIR "/libsnapfault-preload.so"};
            for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
                char cand[PATH_MAX + 64];
                snprintf(cand, sizeof(cand), "%s%s", exe, rel[i]);
                if (realpath(cand, out) && access(out, R_OK) == 0)
                    return true;
            }
        }
    }
    snprintf(out, cap, "%s", SNAPFAULT_PRELOAD_INSTALLED);
    return access(out, R_OK) == 0;
}

struct flag {
    const char *name;
    sfp_opt opt;
    const char *value; /* fixed value for flags without argument */
};

static const struct flag flags[] = {
    {"--mode", SFP_OPT_MODE, NULL},
    {"--backend", SFP_OPT_BACKEND, NULL},
    {"--interval", SFP_OPT_INTERVAL, NULL},
    {"--snapshot-every", SFP_OPT_SNAPSHOT_EVERY, NULL},
    {"--snapshot-signal", SFP_OPT_SNAPSHOT_SIGNAL, NULL},
    {"--output", SFP_OPT_OUTPUT, NULL},
    {"--include", SFP_OPT_INCLUDE, NULL},
    {"--attribute", SFP_OPT_ATTRIBUTE, "1"},
    {"--fork", SFP_OPT_FORK, NULL},
    {"--no-follow-exec", SFP_OPT_FOLLOW_EXEC, "0"},
    {"--store-limit", SFP_OPT_STORE_LIMIT, NULL},
    {"--engine", SFP_OPT_ENGINE, NULL},
    {"--max-images", SFP_OPT_MAX_IMAGES, NULL},
    {"--no-exit-image", SFP_OPT_EXIT_IMAGE, "0"},
    {"--show-stats", SFP_OPT_SHOW_STATS, "1"},
    {"-s", SFP_OPT_SHOW_STATS, "1"},
    {"--verbose", SFP_OPT_VERBOSE, "1"},
    {"--thp", SFP_OPT_THP, NULL},
    {"--stats-file", SFP_OPT_STATS_FILE, NULL},
    {"-v", SFP_OPT_VERBOSE, "1"},
    /* snapshot mode's disk budget */
    {"--max-bytes", SFP_OPT_MAX_BYTES, NULL},
    {"--keep", SFP_OPT_KEEP, NULL},
    {"--full-every", SFP_OPT_FULL_EVERY, NULL},
    {"--compress", SFP_OPT_COMPRESS, NULL},
    {"--no-compress", SFP_OPT_COMPRESS, "0"},
    {"--point-in-time", SFP_OPT_POINT_IN_TIME, "1"},
    {"--no-point-in-time", SFP_OPT_POINT_IN_TIME, "0"},
};

/* The directory an output path will be created in must exist and be
 * writable: refusing here is clearer than a warning from the preload. */
static void check_output(const char *path, bool snapshot)
{
    /* Records are files, one per process: "-" and devices are refused
     * before the program starts rather than becoming files named "-" or
     * /dev/stdout.PID. */
    struct stat st;
    if (strcmp(path, "-") == 0)
        usage_error("run", "--output -: records go to a file or a directory, not to stdout (the program's own)");
    if ((strncmp(path, "/dev/", 5) == 0 && strncmp(path, "/dev/shm/", 9) != 0) || strncmp(path, "/proc/", 6) == 0 ||
        (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)))
        usage_error("run", "--output %s: not a regular file or directory path", path);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode) && !snapshot) {
        if (access(path, W_OK | X_OK) != 0)
            usage_error("run", "--output %s: cannot write in it: %s", path, strerror(errno));
        return; /* one record per process inside */
    }
    size_t len = strlen(path);
    if (!snapshot && len > 1 && path[len - 1] == '/') {
        /* a directory to be: made here, one record per process inside */
        char d[PATH_MAX];
        snprintf(d, sizeof(d), "%.*s", (int)(len - 1), path);
        if (mkdir(d, 0700) != 0 && errno != EEXIST)
            usage_error("run", "--output %s: cannot create the directory: %s", path, strerror(errno));
        return;
    }
    if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode) && snapshot)
        usage_error("run", "--output %s: exists and is not a directory (snapshot mode writes images into one)",
                    path);
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    for (size_t k = strlen(dir); k > 1 && dir[k - 1] == '/'; k--)
        dir[k - 1] = 0; /* imgs/ is created in . */
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        usage_error("run", "--output %s: directory %s does not exist", path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        usage_error("run", "--output %s: cannot write in %s: %s", path, dir, strerror(errno));
    if (!strstr(path, "%p") && lstat(path, &st) == 0 && !(snapshot && S_ISDIR(st.st_mode)))
        fprintf(stderr, "snapfault run: note: %s exists; the program's records go to %s.PID\n", path, path);
}

static bool quiet(void)
{
    const char *q = getenv("SNAPFAULT_QUIET");
    long long v;
    const char *why;
    return q && sfp_option_parse(SFP_OPT_QUIET, q, &v, &why) == 0 && v;
}

/* Unknown SNAPFAULT_* names in the environment (with the closest option
 * when it looks like a misspelling), and options that do nothing in the
 * mode: said once here; SNAPFAULT_NOTED keeps the preload from saying
 * them again in every process. */
static void env_notes(int mode, const bool given[SFP_OPT_COUNT])
{
    extern char **environ;
    static const char *const modes[] = {"off", "track", "snapshot"};
    bool q = quiet();
    for (char **e = environ; e && *e && !q; e++) {
        size_t n;
        const char *name = sfp_env_unknown(*e, &n);
        if (!name)
            continue;
        int near = sfp_option_closest(name, n);
        if (near >= 0)
            fprintf(stderr, "snapfault run: warning: unknown setting SNAPFAULT_%.*s ignored; did you mean "
                            "SNAPFAULT_%s?\n", (int)n, name, sfp_option_table[near].name);
        else
            fprintf(stderr, "snapfault run: warning: unknown setting SNAPFAULT_%.*s ignored\n", (int)n, name);
    }
    for (int o = 0; o < SFP_OPT_COUNT && !q && mode != SFP_MODE_OFF; o++) {
        if (sfp_option_applies((sfp_opt)o, mode))
            continue;
        const char *flag = NULL;
        for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++)
            if (flags[k].opt == (sfp_opt)o && flags[k].name[1] == '-') {
                flag = flags[k].name;
                break;
            }
        char env[64];
        snprintf(env, sizeof(env), "SNAPFAULT_%s", sfp_option_table[o].name);
        if (given[o])
            fprintf(stderr, "snapfault run: warning: %s has no effect in %s mode\n", flag ? flag : env, modes[mode]);
        else if (getenv(env))
            fprintf(stderr, "snapfault run: warning: %s has no effect in %s mode\n", env, modes[mode]);
    }
    setenv("SNAPFAULT_NOTED", "1", 1);
}

/* The file execvp would run. */
static bool resolve(const char *prog, char *out, size_t cap)
{
    if (strchr(prog, '/')) {
        snprintf(out, cap, "%s", prog);
        return access(out, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path; *p;) {
        const char *c = strchr(p, ':');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        snprintf(out, cap, "%.*s/%s", (int)n, n ? p : ".", prog);
        struct stat st;
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
            return true;
        p += n + (c != NULL);
    }
    return false;
}

/* Why the loader will ignore LD_PRELOAD for this program, or NULL: a
 * static ELF (no PT_INTERP), or a set-user/group-ID program that runs
 * with other credentials (AT_SECURE).  A script is judged by its
 * interpreter. */
static const char *untracked_why(const char *file, int depth)
{
    static char why[PATH_MAX + 64];
    struct stat st;
    if (stat(file, &st) != 0)
        return NULL;
    if (((st.st_mode & S_ISUID) && st.st_uid != geteuid()) || ((st.st_mode & S_ISGID) && st.st_gid != getegid()))
        return (st.st_mode & S_ISUID) ? "a set-user-ID program (the loader ignores LD_PRELOAD there)"
                                      : "a set-group-ID program (the loader ignores LD_PRELOAD there)";
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    unsigned char head[256];
    ssize_t n = read(fd, head, sizeof(head) - 1);
    const char *res = NULL;
    if (n > 2 && head[0] == '#' && head[1] == '!' && depth < 4) {
        head[n] = 0;
        char *p = (char *)head + 2;
        while (*p == ' ' || *p == '\t')
            p++;
        char *e = p;
        while (*e && *e != ' ' && *e != '\t' && *e != '\n')
            e++;
        *e = 0;
        char interp[PATH_MAX];
        snprintf(interp, sizeof(interp), "%s", p);
        close(fd);
        return untracked_why(interp, depth + 1);
    }
    if (n >= (ssize_t)sizeof(Elf64_Ehdr) && memcmp(head, ELFMAG, SELFMAG) == 0 && head[EI_CLASS] == ELFCLASS64) {
        Elf64_Ehdr eh;
        memcpy(&eh, head, sizeof(eh));
        bool interp = false;
        for (unsigned i = 0; i < eh.e_phnum && !interp; i++) {
            Elf64_Phdr ph;
            if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (Elf64_Off)i * eh.e_phentsize)) != sizeof(ph))
                break;
            interp = ph.p_type == PT_INTERP;
        }
        if (!interp) {
            snprintf(why, sizeof(why), "statically linked (%s has no ELF interpreter, so nothing reads LD_PRELOAD)",
                     file);
            res = why;
        }
    }
    close(fd);
    return res;
}

int cmd_run(int argc, char **argv)
{
    char preload[PATH_MAX] = "";
    const char *mode = NULL, *output = NULL;
    bool given[SFP_OPT_COUNT] = {false};
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (is_help(a)) {
            help();
            return 0;
        }
        if (a[0] != '-')
            break;
        if (strcmp(a, "--preload") == 0 || strncmp(a, "--preload=", 10) == 0) {
            const char *v = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v)
                usage_error("run", "--preload needs a path");
            if (!realpath(v, preload))
                usage_error("run", "--preload %s: %s", v, strerror(errno));
            continue;
        }
        size_t k;
        const char *val = NULL;
        for (k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
            size_t n = strlen(flags[k].name);
            if (strncmp(a, flags[k].name, n) == 0 && (a[n] == 0 || a[n] == '='))
                break;
        }
        if (k == sizeof(flags) / sizeof(flags[0]))
            usage_error("run", "unknown option '%s'", a);
        const struct flag *f = &flags[k];
        size_t n = strlen(f->name);
        if (f->value) {
            if (a[n] == '=')
                usage_error("run", "%s takes no value", f->name);
            val = f->value;
        } else if (a[n] == '=') {
            val = a + n + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            usage_error("run", "%s needs a value", f->name);
        }
        long long v;
        const char *why;
        if (sfp_option_parse(f->opt, val, &v, &why))
            usage_error("run", "%s %s: %s", f->name, val, why);
        if (f->opt == SFP_OPT_MODE)
            mode = val;
        if (f->opt == SFP_OPT_OUTPUT)
            output = val;
        given[f->opt] = true;
        char stats_abs[2 * PATH_MAX + 2];
        if (f->opt == SFP_OPT_STATS_FILE && val[0] != '/') {
            /* the program may change directory: the preload opens it by
             * an absolute name */
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof(cwd)))
                usage_error("run", "--stats-file %s: %s", val, strerror(errno));
            snprintf(stats_abs, sizeof(stats_abs), "%s/%s", cwd, val);
            val = stats_abs;
        }
        char name[64];
        snprintf(name, sizeof(name), "SNAPFAULT_%s", sfp_option_table[f->opt].name);
        setenv(name, val, 1);
    }
    if (i >= argc)
        usage_error("run", "missing PROGRAM");
    if (!mode)
        mode = getenv("SNAPFAULT_MODE");
    long long mode_v = SFP_MODE_TRACK;
    const char *why;
    if (mode && sfp_option_parse(SFP_OPT_MODE, mode, &mode_v, &why))
        mode_v = SFP_MODE_TRACK;
    if (output)
        check_output(output, mode_v == SFP_MODE_SNAPSHOT);
    env_notes((int)mode_v, given);
    char prog[PATH_MAX];
    const char *untracked = mode_v != SFP_MODE_OFF && resolve(argv[i], prog, sizeof(prog)) ? untracked_why(prog, 0)
                                                                                          : NULL;
    if (untracked && !quiet()) {
        const char *v = getenv("SNAPFAULT_VERBOSE");
        long long vv = 0;
        bool verbose = v && sfp_option_parse(SFP_OPT_VERBOSE, v, &vv, &why) == 0 && vv;
        fprintf(stderr, "snapfault run: warning: %s runs untracked: %s; no record%s will appear\n", argv[i],
                verbose ? untracked : strncmp(untracked, "statically", 10) == 0 ? "statically linked" : "set-ID program",
                mode_v == SFP_MODE_SNAPSHOT ? " or image" : "");
        const char *sf = getenv("SNAPFAULT_STATS_FILE"), *ss = getenv("SNAPFAULT_SHOW_STATS");
        if ((sf && *sf) || (ss && sfp_option_parse(SFP_OPT_SHOW_STATS, ss, &vv, &why) == 0 && vv)) {
            FILE *out = sf && *sf ? fopen(sf, "a") : stderr;
            if (out) {
                fprintf(out, "snapfault: pid %d (%s): untracked, %s: no summary\n", (int)getpid(), argv[i], untracked);
                if (out != stderr)
                    fclose(out);
            }
        }
    }
    if (!preload[0]) {
        const char *env = getenv("SNAPFAULT_PRELOAD_LIB");
        if (env && *env) {
            if (!realpath(env, preload))
                usage_error("run", "SNAPFAULT_PRELOAD_LIB=%s: %s", env, strerror(errno));
        } else if (!find_preload(preload, sizeof(preload))) {
            fprintf(stderr, "snapfault run: cannot find libsnapfault-preload.so (tried the build tree "
                            "and %s); use --preload PATH\n", SNAPFAULT_PRELOAD_INSTALLED);
            return 2;
        }
    }
    /* Prepend: the runtime must come before anything else that interposes
     * the same calls. */
    const char *old = getenv("LD_PRELOAD");
    size_t len = strlen(preload) + (old ? strlen(old) : 0) + 2;
    char *ld = malloc(len);
    if (!ld)
        return 2;
    snprintf(ld, len, "%s%s%s", preload, old && *old ? ":" : "", old && *old ? old : "");
    setenv("LD_PRELOAD", ld, 1);
    free(ld);
    execvp(argv[i], argv + i);
    fprintf(stderr, "snapfault run: cannot execute %s: %s\n", argv[i], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
