/* exitimg.c - snapshot mode's final image, driven by events only.
 *
 *   exitimg DIR N HOW
 *
 * Fills a buffer, then N times: writes "ROUND-i", raises the snapshot
 * trigger (SIGUSR2) and waits until the index in DIR lists i images (no
 * period, no sleep a verdict relies on: the wait ends on the image).  Then
 * prints "buf ADDR", writes FINAL-PATTERN into the buffer and ends by HOW:
 *   exit     return from main           term     raise(SIGTERM)
 *   int      raise(SIGINT), then exit    pause    print "ready", wait to be killed
 *   handler  own SIGTERM handler, raise(SIGTERM), then exit 0
 *   _exit    _exit(0)                   kill     raise(SIGKILL)
 *   child    a forked child writes CHILD-PATTERN and exits; the parent exits
 *   mmaploop print "ready", then map and unmap until killed
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t handled;
static void on_term(int sig) { handled = sig; }

/* Images listed in DIR/snap-PID.index so far. */
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
    if (argc != 4) {
        fprintf(stderr, "usage: exitimg DIR N HOW\n");
        return 2;
    }
    const char *dir = argv[1], *how = argv[3];
    int rounds = atoi(argv[2]);
    size_t n = 1u << 20;
    char *buf = malloc(n); /* mmapped by malloc: anonymous memory, tracked */
    memset(buf, 'a', n);
    for (int i = 1; i <= rounds; i++) {
        snprintf(buf, 32, "ROUND-%d", i);
        raise(SIGUSR2);
        while (listed(dir) < i) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    printf("buf %p\n", (void *)buf);
    fflush(stdout);
    memcpy(buf, "FINAL-PATTERN", 13);
    if (strcmp(how, "term") == 0) {
        raise(SIGTERM);
    } else if (strcmp(how, "int") == 0) {
        raise(SIGINT);
        printf("after SIGINT\n");
    } else if (strcmp(how, "pause") == 0) {
        printf("ready\n");
        fflush(stdout);
        for (;;)
            pause();
    } else if (strcmp(how, "mmaploop") == 0) {
        /* killed while it maps and unmaps: the signal often lands inside
         * the runtime's interposers, which must defer it, not deadlock */
        printf("ready\n");
        fflush(stdout);
        for (;;) {
            void *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m != MAP_FAILED) {
                memset(m, 1, 4096);
                munmap(m, 1 << 16);
            }
        }
    } else if (strcmp(how, "handler") == 0) {
        signal(SIGTERM, on_term);
        raise(SIGTERM);
        printf("handled %d\n", handled == SIGTERM);
    } else if (strcmp(how, "_exit") == 0) {
        _exit(0);
    } else if (strcmp(how, "kill") == 0) {
        raise(SIGKILL);
    } else if (strcmp(how, "child") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            memcpy(buf, "CHILD-PATTERN", 13);
            printf("child %d\n", (int)getpid());
            exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        printf("child status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    return 0;
}
