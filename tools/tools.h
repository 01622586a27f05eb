/* tools.h - the `snapfault` command's subcommands and the helpers they share:
 * usage errors, which exit 2 with a one-line reason. */
#ifndef SF_TOOLS_H
#define SF_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int cmd_run(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_image(int argc, char **argv);

/* Prints "snapfault CMD: reason" and a pointer to --help; exits 2. */
_Noreturn void usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool is_help(const char *arg);

#endif
