/* A process whose main thread exits while another thread keeps running:
 * its thread-group leader is a zombie in /proc/<pid>/stat, the process is
 * alive. Prints "READY <pid>" once the main thread is about to exit; the
 * worker then waits for signals (default actions: SIGINT ends the process). */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *worker(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 1;
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    pthread_exit(NULL);
}
