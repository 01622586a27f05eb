/* run.c - `snapfault run`: maps options to SNAPFAULT_* variables, prepends
 * the preload to LD_PRELOAD and execs the program (whose status is ours). */
#include "tools.h"
#include "preload.h"

#include <errno.h>
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
           "  --output PATH                 track: record file; snapshot: image directory;\n"
           "                                %%p is the pid (default snapfault.%%p.sft / .d)\n"
           "  --include LIST                heap,anon,data,stacks (default heap,anon,data)\n"
           "  --attribute                   sample the call stacks of first writes (libunwind)\n"
           "  --fork follow|untrack         forked children: own output, or untracked\n"
           "  --no-follow-exec              do not preload programs PROGRAM executes\n"
           "  --store-limit SIZE            snapshot mode: memory for page copies (default 1G)\n"
           "  --engine cow|mirror|auto      snapshot mode: snapshot engine (default auto: the backend's,\n"
           "                                cow with backend auto)\n"
           "  --max-images N                snapshot mode: stop after N images\n"
           "  --no-exit-image               snapshot mode: no last image at exit\n"
           "  --show-stats, -s              print a summary on stderr at exit\n"
           "  --verbose, -v                 say what the preload does\n"
           "  --preload PATH                the preload library to use\n"
           "\n"
           "Every option is a SNAPFAULT_* environment variable of the preload:\n");
    for (int o = 0; o < SFP_OPT_COUNT; o++)
        printf("  SNAPFAULT_%-17s %-16s %s\n", sfp_option_table[o].name,
               sfp_option_table[o].dflt[0] ? sfp_option_table[o].dflt : "-", sfp_option_table[o].help);
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
    {"-v", SFP_OPT_VERBOSE, "1"},
};

/* The directory an output path will be created in must exist and be
 * writable: refusing here is clearer than a warning from the preload. */
static void check_output(const char *path, bool snapshot)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        usage_error("run", "--output %s: directory %s does not exist", path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        usage_error("run", "--output %s: cannot write in %s: %s", path, dir, strerror(errno));
    if (!strstr(path, "%p") && lstat(path, &st) == 0 && !(snapshot && S_ISDIR(st.st_mode)))
        fprintf(stderr, "snapfault run: note: %s exists; the program's records go to %s.PID\n", path, path);
}

int cmd_run(int argc, char **argv)
{
    char preload[PATH_MAX] = "";
    const char *mode = NULL, *output = NULL;
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
        char name[64];
        snprintf(name, sizeof(name), "SNAPFAULT_%s", sfp_option_table[f->opt].name);
        setenv(name, val, 1);
    }
    if (i >= argc)
        usage_error("run", "missing PROGRAM");
    if (output)
        check_output(output, mode && strcmp(mode, "snapshot") == 0);
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
