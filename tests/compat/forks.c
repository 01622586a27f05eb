/* forks.c - fork, vfork, posix_spawn, exec and threads under snapfault: every
 * child runs, writes memory and reports; outputs and statuses must match. */
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static unsigned long touch(size_t mib, unsigned seed)
{
    size_t n = mib << 20;
    unsigned char *p = malloc(n);
    unsigned long s = 0;
    for (size_t i = 0; i < n; i += 64)
        p[i] = (unsigned char)(i * seed);
    for (size_t i = 0; i < n; i += 64)
        s += p[i];
    free(p);
    return s;
}

static void *thread_main(void *arg)
{
    unsigned long *r = arg;
    *r = touch(4, 3);
    return NULL;
}

static int wait_status(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        printf("exec'd child: %lu\n", touch(2, 5));
        return 7;
    }
    printf("parent: %lu\n", touch(8, 1));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* lives past one interval: the preload sets itself up here too */
        usleep(250000);
        printf("forked child: %lu\n", touch(4, 2));
        exit(3);
    }
    printf("fork child exit %d\n", wait_status(pid));
    fflush(stdout);
    pid = vfork();
    if (pid == 0) {
        execl(argv[0], argv[0], "child", (char *)NULL);
        _exit(127);
    }
    printf("vfork+exec child exit %d\n", wait_status(pid));
    fflush(stdout);
    char *args[] = {argv[0], "child", NULL};
    if (posix_spawn(&pid, argv[0], NULL, NULL, args, environ) != 0)
        return 1;
    printf("posix_spawn child exit %d\n", wait_status(pid));
    fflush(stdout);
    char *empty_env[] = {NULL};
    pid = fork();
    if (pid == 0) {
        execve(argv[0], args, empty_env); /* the preload follows anyway */
        _exit(127);
    }
    printf("execve with empty environment exit %d\n", wait_status(pid));
    pthread_t th[3];
    unsigned long res[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, thread_main, &res[i]);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    printf("threads: %lu %lu %lu\n", res[0], res[1], res[2]);
    printf("system: %d\n", WEXITSTATUS(system("exit 5")));
    return 0;
}
