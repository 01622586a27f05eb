/* config.c - the preload's option values: the table of options.c read once
 * from environ at start-up, with secure_getenv semantics and warnings.
 * Every value is copied into the preload's own memory: programs that set
 * their process title (Redis, nginx, PostgreSQL) overwrite the argv and
 * environ area, and their forked children must still see the settings. */
#include "preload.h"

#include <string.h>
#include <strings.h>

static long long g_val[SFP_OPT_COUNT];
static const char *g_str[SFP_OPT_COUNT];
static bool g_explicit[SFP_OPT_COUNT];

static const char *env_lookup(char *const *envp, sfp_opt o)
{
    const char *name = sfp_option_table[o].name;
    size_t n = strlen(name);
    const char *found = NULL;
    for (char *const *e = envp; *e; e++)
        if (strncasecmp(*e, "SNAPFAULT_", 10) == 0 && strncasecmp(*e + 10, name, n) == 0 &&
            (*e)[10 + n] == '=')
            found = *e + 10 + n + 1; /* the last one wins, as with setenv */
    return found;
}

void sfp_options_load(char *const *envp, bool secure)
{
    for (int o = 0; o < SFP_OPT_COUNT; o++) {
        const char *why;
        g_explicit[o] = false;
        g_str[o] = sfp_option_table[o].dflt;
        if (sfp_option_parse((sfp_opt)o, sfp_option_table[o].dflt, &g_val[o], &why))
            g_val[o] = 0; /* the empty default OUTPUT: chosen per mode later */
    }
    if (secure || !envp) {
        sfp_log_init(false, true);
        return;
    }
    /* Verbosity first, so that the warnings below obey it. */
    long long v;
    const char *why, *s;
    bool verbose = (s = env_lookup(envp, SFP_OPT_VERBOSE)) && !sfp_option_parse(SFP_OPT_VERBOSE, s, &v, &why) && v;
    bool quiet = (s = env_lookup(envp, SFP_OPT_QUIET)) && !sfp_option_parse(SFP_OPT_QUIET, s, &v, &why) && v;
    sfp_log_init(verbose, quiet);
    /* Scan environ ourselves (as mimalloc does): getenv may not be usable
     * this early in a preloaded library, and names match without case. */
    for (char *const *e = envp; *e; e++) {
        if (strncasecmp(*e, "SNAPFAULT_", 10) != 0)
            continue;
        const char *name = *e + 10, *eq = strchr(name, '=');
        if (!eq)
            continue;
        size_t n = (size_t)(eq - name);
        int o = sfp_option_find(name, n);
        if (o < 0 || o == SFP_OPT_COUNT) {
            /* Other SNAPFAULT_* variables belong to the library (DEBUG),
             * the command (NOTED, PRELOAD_LIB) or scripts; a typo shows up
             * with SNAPFAULT_VERBOSE=1. */
            if (o < 0)
                sfp_info("unknown option %.*s ignored (see snapfault run --help)", (int)(eq - *e), *e);
            continue;
        }
        if (sfp_option_parse((sfp_opt)o, eq + 1, &v, &why)) {
            sfp_warn("SNAPFAULT_%s=\"%s\": %s; using the default \"%s\"", sfp_option_table[o].name,
                     eq + 1, why, sfp_option_table[o].dflt[0] ? sfp_option_table[o].dflt : "(per mode)");
            continue;
        }
        char *copy = sfp_strdup(eq + 1);
        if (!copy) {
            sfp_warn("SNAPFAULT_%s: no memory to keep its value; using the default", sfp_option_table[o].name);
            continue;
        }
        if (g_explicit[o])
            sfp_free((void *)g_str[o]); /* an earlier copy: the last one wins */
        g_val[o] = v;
        g_str[o] = copy;
        g_explicit[o] = true;
    }
}

long long sfp_opt_val(sfp_opt o) { return g_val[o]; }
const char *sfp_opt_str(sfp_opt o) { return g_str[o] ? g_str[o] : ""; }
bool sfp_opt_explicit(sfp_opt o) { return g_explicit[o]; }
