/* 20,000+ thread create/exit cycles, four threads at a time. Each thread
 * allocates, frees some of its own blocks, frees blocks left behind by the
 * previous batch (cross-thread free of blocks whose owner has exited) and
 * leaves some for the next batch. RSS at cycle 2000 vs at the end must not
 * grow by more than 32 MiB. */
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CYCLES 20000
#define BATCH 4
#define PER 64         /* blocks per thread */
#define HANDOFF 16     /* blocks each thread leaves for the next batch */
#define LIMIT_MIB 32

#include "rss.h"

/* slot[b][i]: blocks left by thread b of the previous batch */
static void *slot[2][BATCH][HANDOFF];
static volatile int failed;

struct arg { int cycle, idx, parity; };

static void *worker(void *v) {
    struct arg *a = v;
    void *mine[PER];
    unsigned seed = (unsigned)a->cycle * 2654435761u;
    for (int i = 0; i < PER; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % 8 == 0 ? 1000 + (seed >> 8) % 20000 : 8 + (seed >> 12) % 700;
        if (a->cycle % 97 == 0 && i == 0) n = 256 * 1024; /* an occasional large block */
        mine[i] = malloc(n);
        if (!mine[i]) { failed = 1; return NULL; }
        memset(mine[i], a->idx + 1, n < 64 ? n : 64);
    }
    /* free what the previous batch's thread with the same index left */
    void **prev = slot[a->parity ^ 1][a->idx];
    for (int i = 0; i < HANDOFF; i++) {
        if (prev[i]) {
            free(prev[i]);
            prev[i] = NULL;
        }
    }
    for (int i = HANDOFF; i < PER; i++) free(mine[i]);
    for (int i = 0; i < HANDOFF; i++) slot[a->parity][a->idx][i] = mine[i];
    return NULL;
}

int main(void) {
    long at2000 = -1;
    struct arg args[BATCH];
    for (int c = 0, b = 0; c < CYCLES; c += BATCH, b++) {
        pthread_t th[BATCH];
        for (int j = 0; j < BATCH; j++) {
            args[j] = (struct arg){c + j, j, b & 1};
            if (pthread_create(&th[j], NULL, worker, &args[j])) { puts("pthread_create failed"); return 1; }
        }
        for (int j = 0; j < BATCH; j++) pthread_join(th[j], NULL);
        if (failed) { puts("malloc failed in worker"); return 1; }
        if (c + BATCH == 2000) at2000 = rss_kib();
    }
    long end = rss_kib();
    printf("rss at cycle 2000: %ld KiB, at cycle %d: %ld KiB, growth %ld KiB\n", at2000, CYCLES, end, end - at2000);
    malloc_trim(0);
    printf("after malloc_trim: %ld KiB\n", rss_kib());
    if (end - at2000 > LIMIT_MIB * 1024) {
        printf("FAIL: rss grew by more than %d MiB\n", LIMIT_MIB);
        return 1;
    }
    puts("OK thread_churn_bounded_rss");
    return 0;
}
