/* Four threads hammer malloc/free/realloc while main forks 50 times. Each
 * child allocates heavily (small, medium and > 128 KiB blocks, including blocks
 * inherited from the parent), starts a thread that allocates, joins it and
 * _exit(0)s. A child that deadlocks is killed by its own alarm (SIGALRM). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 4
#define FORKS 50
#define SLOTS 512

static atomic_int stop;
static void *shared[WORKERS][SLOTS];
static atomic_long ops;
#define STABLE 64
static void *stable[WORKERS][STABLE]; /* allocated by each worker, never touched again */
static atomic_int ready;
static void *main_blocks[STABLE];

static void *hammer(void *v) {
    int id = (int)(intptr_t)v;
    unsigned s = 12345u + (unsigned)id * 7919u;
    void **mine = shared[id];
    for (int i = 0; i < STABLE; i++) {
        size_t n = (size_t)(i * 53 % 3000) + 1 + (i == 7 ? 300000 : 0);
        stable[id][i] = malloc(n);
        if (!stable[id][i]) _exit(11);
        memset(stable[id][i], 0x40 + id, n);
    }
    atomic_fetch_add(&ready, 1);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        s = s * 1103515245u + 12345u;
        unsigned i = (s >> 8) % SLOTS;
        size_t n = (s >> 4) % 64 == 0 ? 140000 + (s >> 12) % 100000 : 1 + (s >> 12) % 4000;
        if (mine[i] && (s & 3) == 0) {
            void *r = realloc(mine[i], n);
            if (!r) { fprintf(stderr, "realloc failed\n"); _exit(10); }
            mine[i] = r;
        } else {
            free(mine[i]);
            mine[i] = malloc(n);
            if (!mine[i]) { fprintf(stderr, "malloc failed\n"); _exit(10); }
        }
        memset(mine[i], id, n < 32 ? n : 32);
        atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
    }
    return NULL;
}

static void *child_thread(void *v) {
    (void)v;
    void *p[100];
    for (int r = 0; r < 20; r++) {
        for (int i = 0; i < 100; i++) {
            p[i] = malloc((size_t)(i * 97 % 5000) + (i % 25 == 0 ? 200000 : 1));
            if (!p[i]) _exit(21);
        }
        for (int i = 0; i < 100; i++) free(p[i]);
    }
    return (void *)1;
}

static void child(int k) {
    alarm(20);
    /* free inherited blocks: the forking thread's, and those of worker threads
     * that do not exist in the child */
    for (int w = 0; w < WORKERS; w++)
        for (int i = 0; i < STABLE; i++) {
            unsigned char *p = stable[w][i];
            if (p[0] != 0x40 + w) _exit(25);
            free(p);
        }
    for (int i = 0; i < STABLE; i++) {
        unsigned char *p = main_blocks[i];
        if (p[0] != 0x77) _exit(26);
        free(p);
    }
    void *local[1000];
    for (int r = 0; r < 10; r++) {
        for (int i = 0; i < 1000; i++) {
            size_t n = (i % 50 == 0) ? 130 * 1024 + (size_t)i * 100 : (size_t)(i * 31 + k) % 3000 + 1;
            local[i] = (i % 3 == 0) ? calloc(1, n) : malloc(n);
            if (!local[i]) _exit(20);
            memset(local[i], r, n < 128 ? n : 128);
        }
        for (int i = 0; i < 1000; i += 2) {
            local[i] = realloc(local[i], (size_t)i * 7 + 1);
            if (!local[i]) _exit(22);
        }
        for (int i = 0; i < 1000; i++) free(local[i]);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, NULL)) _exit(23);
    void *res = NULL;
    pthread_join(t, &res);
    if (res != (void *)1) _exit(24);
    _exit(0);
}

int main(void) {
    pthread_t th[WORKERS];
    for (int i = 0; i < STABLE; i++) {
        size_t n = (size_t)(i * 71 % 5000) + 1 + (i == 3 ? 500000 : 0);
        main_blocks[i] = malloc(n);
        if (!main_blocks[i]) return 1;
        memset(main_blocks[i], 0x77, n);
    }
    for (int i = 0; i < WORKERS; i++)
        if (pthread_create(&th[i], NULL, hammer, (void *)(intptr_t)i)) return 1;
    while (atomic_load(&ready) < WORKERS) usleep(100);
    int bad = 0;
    for (int k = 0; k < FORKS; k++) {
        /* let the workers get going between forks */
        long before = atomic_load(&ops);
        while (atomic_load(&ops) - before < 2000) usleep(100);
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) child(k);
        int st;
        if (waitpid(pid, &st, 0) != pid) { perror("waitpid"); return 1; }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            if (WIFSIGNALED(st))
                printf("child %d killed by signal %d%s\n", k, WTERMSIG(st),
                       WTERMSIG(st) == SIGALRM ? " (deadlock: alarm fired)" : "");
            else
                printf("child %d exited with %d\n", k, WEXITSTATUS(st));
            bad++;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < WORKERS; i++)
        for (int j = 0; j < SLOTS; j++) free(shared[i][j]);
    for (int i = 0; i < WORKERS; i++)
        for (int j = 0; j < STABLE; j++) free(stable[i][j]);
    for (int i = 0; i < STABLE; i++) free(main_blocks[i]);
    printf("%d forks, %d bad children, %ld worker ops\n", FORKS, bad, atomic_load(&ops));
    if (bad) return 1;
    puts("OK fork_under_load");
    return 0;
}
