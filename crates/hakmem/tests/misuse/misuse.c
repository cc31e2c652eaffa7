/* One misuse per run: misuse <same|cross|late-cross|interior|overflow> <size>.
 * hakmem must end the process with one line naming the fault and address.
 * Threads are created before the first free: creating a thread allocates
 * (glibc's DTV), which could otherwise reuse the freed block and turn the
 * second free into a free of a live block. */
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *g;
static size_t n;
static sem_t go[3], done[3];

static void *worker(void *a) {
    long i = (long)a;
    sem_wait(&go[i]);
    if (i == 0) { g = malloc(n); memset(g, 1, n); } /* allocator thread */
    else free(g);
    sem_post(&done[i]);
    return 0;
}

static void step(int i) { sem_post(&go[i]); sem_wait(&done[i]); }

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    n = (size_t)atol(argv[2]);
    pthread_t t[3];
    for (long i = 0; i < 3; i++) {
        sem_init(&go[i], 0, 0);
        sem_init(&done[i], 0, 0);
        pthread_create(&t[i], 0, worker, (void *)i);
    }
    void *p = malloc(n);
    memset(p, 7, n);
    void *keep = malloc(n); /* a live neighbour, so the slab stays in use */
    if (!strcmp(argv[1], "same")) {
        free(p);
        free(p);
    } else if (!strcmp(argv[1], "cross")) {
        g = p;
        free(p);
        step(1);
    } else if (!strcmp(argv[1], "late-cross")) {
        step(0);                 /* thread 0 allocates g ... */
        pthread_join(t[0], 0);   /* ... and exits */
        step(1);                 /* thread 1 frees it */
        step(2);                 /* thread 2 frees it again */
    } else if (!strcmp(argv[1], "interior")) {
        free((char *)p + 8);
    } else if (!strcmp(argv[1], "overflow")) {
        /* A heap overflow into a free neighbour: find two adjacent blocks,
         * free the second, write 8 bytes past the end of the first (the
         * neighbour's free-list link), then allocate until the corrupted
         * block would be handed out. */
        size_t u = malloc_usable_size(p);
        char *a = malloc(n), *b = malloc(n);
        for (int i = 0; i < 10000 && b != a + u; i++) {
            a = b;
            b = malloc(n);
        }
        if (b != a + u) {
            printf("NO ADJACENT BLOCKS\n");
            return 3;
        }
        free(b);
        memset(a, 'A', u + 8);
        for (int i = 0; i < 100000; i++) {
            char *q = malloc(n);
            if (q == (char *)0x4141414141414141) break;
        }
    } else {
        return 2;
    }
    printf("NOT DETECTED %p\n", keep);
    return 0;
}
