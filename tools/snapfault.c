/* snapfault.c - the `snapfault` command: run a program under the preload,
 * report on what it recorded, probe the kernel, inspect snapshot images. */
#include "tools.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: snapfault COMMAND [ARGS...]\n"
    "\n"
    "  run [options] -- PROGRAM ARGS...   run PROGRAM with libsnapfault-preload.so\n"
    "  report FILE|DIR [--svg OUT.svg]     summarize a track record or an image directory\n"
    "  probe                               what this kernel and process support\n"
    "  image info|verify|cat|diff ...      inspect snapshot images and chains\n"
    "\n"
    "`snapfault COMMAND --help` describes each.  Exit status 2 means bad usage.\n";

bool is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

void usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "snapfault%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see snapfault %s%s--help)\n", cmd ? cmd : "", cmd ? " " : "");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage_error(NULL, "missing command");
    const char *cmd = argv[1];
    if (is_help(cmd)) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "report") == 0)
        return cmd_report(argc - 1, argv + 1);
    if (strcmp(cmd, "probe") == 0)
        return cmd_probe(argc - 1, argv + 1);
    if (strcmp(cmd, "image") == 0)
        return cmd_image(argc - 1, argv + 1);
    usage_error(NULL, "unknown command '%s'", cmd);
}
