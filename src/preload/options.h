/* options.h - the SNAPFAULT_* options table and its parsers (options.c),
 * shared by the preload and the `snapfault` command, which validates what
 * it passes on.  Which values are in force is the preload's (config.c). */
#ifndef SFP_OPTIONS_H
#define SFP_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

enum sfp_mode { SFP_MODE_OFF = 0, SFP_MODE_TRACK, SFP_MODE_SNAPSHOT };
enum sfp_fork { SFP_FORK_FOLLOW = 0, SFP_FORK_UNTRACK };
enum sfp_thp { SFP_THP_SPLIT = 0, SFP_THP_KEEP };

/* SNAPFAULT_INCLUDE bits */
#define SFP_INC_HEAP   (1u << 0)
#define SFP_INC_ANON   (1u << 1)
#define SFP_INC_DATA   (1u << 2)
#define SFP_INC_STACKS (1u << 3)
#define SFP_INC_DEFAULT (SFP_INC_HEAP | SFP_INC_ANON | SFP_INC_DATA)

enum sfp_opt_type { SFP_T_BOOL, SFP_T_DURATION, SFP_T_SIZE, SFP_T_INT, SFP_T_STRING, SFP_T_CHOICE,
                    SFP_T_SIGNAL, SFP_T_INCLUDE, SFP_T_BACKEND };

typedef enum {
    SFP_OPT_MODE,
    SFP_OPT_BACKEND,
    SFP_OPT_INTERVAL,
    SFP_OPT_OUTPUT,
    SFP_OPT_SNAPSHOT_SIGNAL,
    SFP_OPT_SNAPSHOT_EVERY,
    SFP_OPT_INCLUDE,
    SFP_OPT_VERBOSE,
    SFP_OPT_QUIET,
    SFP_OPT_SHOW_STATS,
    SFP_OPT_ATTRIBUTE,
    SFP_OPT_ATTRIBUTE_DEPTH,
    SFP_OPT_FORK,
    SFP_OPT_FOLLOW_EXEC,
    SFP_OPT_STORE_LIMIT,
    SFP_OPT_MAX_IMAGES,
    SFP_OPT_EXIT_IMAGE,
    SFP_OPT_TOP,
    /* user-facing defaults: huge pages, where the summary goes */
    SFP_OPT_THP,
    SFP_OPT_STATS_FILE,
    SFP_OPT_ENGINE,
    /* snapshot mode's disk budget (snapmode.c) */
    SFP_OPT_MAX_BYTES,
    SFP_OPT_KEEP,
    SFP_OPT_FULL_EVERY,
    SFP_OPT_COMPRESS,
    SFP_OPT_POINT_IN_TIME, /* snapshot mode: stop the threads for each take */
    SFP_OPT_COUNT
} sfp_opt;

struct sfp_option_desc {
    const char *name;            /* after SNAPFAULT_, upper case */
    enum sfp_opt_type type;
    const char *dflt;            /* default, as it would be written in the environment */
    const char *const *choices;  /* SFP_T_CHOICE: names, index is the value */
    long min, max;               /* SFP_T_INT range */
    const char *help;
};

extern const struct sfp_option_desc sfp_option_table[SFP_OPT_COUNT];

/* Parses text as the option's type.  Returns 0 and sets *val (and *str for
 * strings, pointing into text), or -1 with a reason in why. */
int sfp_option_parse(sfp_opt o, const char *text, long long *val, const char **why);
bool sfp_ieq(const char *a, const char *b); /* ASCII, without case */
/* SNAPFAULT_* names that are not options but are read by someone (the
 * library's DEBUG, the command's PRELOAD_LIB, ...): never warned about. */
bool sfp_known_other_name(const char *name, size_t n);
/* The option named name[0..n) (without case); SFP_OPT_COUNT for a name
 * that is no option but is known (sfp_known_other_name); -1 for an
 * unknown name. */
int sfp_option_find(const char *name, size_t n);
/* An environment entry "SNAPFAULT_NAME=..." whose NAME is unknown (not an
 * option, not a known other name): NAME, its length in *n; else NULL. */
const char *sfp_env_unknown(const char *entry, size_t *n);
/* The option whose name is closest to name[0..n) (edit distance, without
 * case), or -1 when none is close enough to be a misspelling. */
int sfp_option_closest(const char *name, size_t n);
/* Options given that do nothing in mode (enum sfp_mode): a bit per option. */
bool sfp_option_applies(sfp_opt o, int mode);
int sfp_signal_parse(const char *s); /* "USR2", "SIGUSR2", "12"; -1 if bad */
const char *sfp_signal_name(int sig, char buf[16]);

#endif
