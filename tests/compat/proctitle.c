/* proctitle.c - sets its process title as Redis, nginx and PostgreSQL do:
 * the contiguous argv + environ block is overwritten (after the program
 * copied what it needs), then a forked child takes an image on SIGUSR2.
 *
 *   proctitle DIR
 *
 * The child raises SIGUSR2, waits until DIR/snap-PID.index lists one image
 * (an event, not a delay), then exits (its final image); the parent waits
 * for it and prints "child status N".  The settings the preload read at
 * start-up must survive the overwrite. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int listed(const char *dir)
{
    char path[4096], line[1024];
    snprintf(path, sizeof(path), "%s/snap-%d.index", dir, (int)getpid());
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += line[0] == 'S' && line[1] == '\t';
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: proctitle DIR\n");
        return 2;
    }
    char *dir = strdup(argv[1]);
    /* The block: argv strings, then environ strings, each right after the
     * previous one (as the kernel lays them out). */
    char *start = argv[0], *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++)
        if (argv[i] == end)
            end = argv[i] + strlen(argv[i]) + 1;
    size_t nenv = 0;
    for (char **e = environ; *e; e++)
        nenv++;
    char **copy = calloc(nenv + 1, sizeof(*copy));
    for (size_t i = 0; i < nenv; i++) {
        if (environ[i] == end)
            end = environ[i] + strlen(environ[i]) + 1;
        copy[i] = strdup(environ[i]);
    }
    environ = copy; /* the program's own copy, as setproctitle keeps */
    memset(start, 0, (size_t)(end - start));
    snprintf(start, (size_t)(end - start), "proctitle: child of the title");
    printf("overwrote %zu bytes\n", (size_t)(end - start));
    fflush(stdout);
    char *buf = malloc(1 << 20);
    memset(buf, 'c', 1 << 20);
    pid_t pid = fork();
    if (pid == 0) {
        memcpy(buf, "CHILD-PATTERN", 13);
        raise(SIGUSR2);
        for (int i = 0; listed(dir) < 1; i++) {
            if (i == 20000) { /* loud safety net: 20 s */
                fprintf(stderr, "proctitle: the child's image never appeared in %s\n", dir);
                _exit(1);
            }
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("child status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return 0;
}
