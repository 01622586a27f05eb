/* sfbench.c - entry point of the benchmark binary: one subcommand per
 * benchmark scenario, each printing "RESULT k=v ..." lines for bench/run.py. */
#include "sfbench.h"

#include <string.h>

static const struct {
    const char *name;
    int (*fn)(void);
    const char *help;
} cmds[] = {
    {"fault", cmd_fault, "--mech M [--pattern seq|rand] [--mib 256] [--pages 16384] [--reps 5]"},
    {"collect", cmd_collect, "--mech M [--mib 1024] [--pcts 0,1,10,100] [--reps 5]"},
    {"pause", cmd_pause, "[--mech fork|sf-snap-B] [--mib 256] [--pct 100] [--reps 5]"},
    {"bgsave", cmd_bgsave, "[--mech fork|sf-snap-B] [--mib 1024] [--threads 1] [--reps 3] [--base-ms 1000] [--fsync 0] [--dir /tmp] [--stamp-every 8]"},
    {"rollback", cmd_rollback, "[--mech fork|sf-snap-B|ENGINE] [--mib 256] [--dirty 64] [--iters 200] [--reps 3] [--label rollback]"},
    {"stall", cmd_stall, "--mech M [--writers 1] [--collect 1] [--mib 1024] [--secs 1] [--period-us 1000]"},
    {"memory", cmd_memory, "[--mech fork|sf-B|sf-snap-B] [--mib 1024] [--copies 4096]"},
    {"take", cmd_take, "[--mech fork|raw-wp|raw-mprotect|ENGINE] [--mib 1024] [--pct 1] [--takes 10] [--live 0] [--wait-ms 10000]"},
    {"first-take", cmd_first_take, "[--mech fork|ENGINE] [--mib 1024] [--wait-ms 10000]"},
    {"bg-save", cmd_bg_save, "[--mech fork|ENGINE] [--mib 1024] [--reps 2] [--gap-ms 300] [--sink pipe|null] [--stamp-every 16]"},
    {"engine-memory", cmd_engine_memory, "[--mech fork|ENGINE] [--mib 1024] [--pct 1]"},
    {"probe", cmd_probe, ""},
    {"calib", cmd_calib, "[--n 20000]"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: sfbench SUBCOMMAND [--key value ...]\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-13s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "  list      mechanism names\n"
               "Mechanisms M: the raw ones below, or sf-B / sf-snap-B with B one of auto,\n"
               "uffd-async, uffd-sync, uffd-sync-inthread, uffd-sync-handler, mprotect,\n"
               "soft-dirty (snapfault side: %s).\n"
               "Snapshot engines ENGINE:", sf_side_status());
    for (int i = 0; sf_engine_names[i]; i++)
        fprintf(f, " %s", sf_engine_names[i]);
    fprintf(f, "\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "list") == 0) {
        for (int i = 0; raw_mech_names[i]; i++)
            printf("%s\n", raw_mech_names[i]);
        return 0;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) {
            opt_init(argc - 2, argv + 2);
            return cmds[i].fn();
        }
    usage(stderr);
    return 2;
}
