/* A thread allocates 100k blocks of mixed sizes and exits; one second later a
 * different thread frees them all. After each round (and malloc_trim(0)) the
 * resident set must be back near the baseline. */
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCKS 100000
#define ROUNDS 3
#define SLACK_MIB 24

static unsigned char **ptrs;
static size_t *sizes;

#include "rss.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void *alloc_thread(void *arg) {
    (void)arg;
    for (size_t i = 0; i < BLOCKS; i++) {
        uint64_t r = next();
        size_t n;
        switch (r % 16) {
        case 0: n = 2048 + (r >> 8) % 30000; break;        /* medium */
        case 1: if ((r >> 8) % 64 == 0) { n = 130000 + (r >> 16) % 200000; break; } /* fallthrough */
        default: n = 2 + (r >> 8) % 511; break;            /* small */
        }
        unsigned char *p = (r >> 40) % 8 == 0 ? calloc(1, n) : malloc(n);
        if (!p) { fprintf(stderr, "alloc %zu failed\n", n); exit(2); }
        p[0] = (unsigned char)i;
        p[n - 1] = (unsigned char)(i >> 8);
        ptrs[i] = p;
        sizes[i] = n;
        if (r % 5 == 0 && i > 0) { /* some churn inside the owner */
            size_t j = (r >> 20) % i;
            free(ptrs[j]);
            ptrs[j] = malloc(sizes[j]);
            if (!ptrs[j]) exit(2);
            ptrs[j][0] = (unsigned char)j;
            ptrs[j][sizes[j] - 1] = (unsigned char)(j >> 8);
        }
    }
    return NULL;
}

static void *free_thread(void *arg) {
    (void)arg;
    sleep(1);
    for (size_t i = 0; i < BLOCKS; i++) {
        unsigned char *p = ptrs[i];
        if (p[0] != (unsigned char)i || p[sizes[i] - 1] != (unsigned char)(i >> 8)) {
            fprintf(stderr, "block %zu corrupted\n", i);
            exit(3);
        }
        free(p);
    }
    return (void *)1;
}

int main(void) {
    ptrs = malloc(BLOCKS * sizeof *ptrs);
    sizes = malloc(BLOCKS * sizeof *sizes);
    if (!ptrs || !sizes) return 1;
    memset(ptrs, 0, BLOCKS * sizeof *ptrs);
    memset(sizes, 0, BLOCKS * sizeof *sizes);
    malloc_trim(0);
    long base = rss_kib();
    printf("baseline rss %ld KiB\n", base);
    int bad = 0;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t a, f;
        if (pthread_create(&a, NULL, alloc_thread, NULL)) return 1;
        pthread_join(a, NULL);
        long peak = rss_kib();
        if (pthread_create(&f, NULL, free_thread, NULL)) return 1;
        void *res;
        pthread_join(f, &res);
        long after_free = rss_kib();
        malloc_trim(0);
        long after_trim = rss_kib();
        printf("round %d: peak %ld KiB, after free %ld KiB, after trim %ld KiB (+%ld KiB)\n", round, peak,
               after_free, after_trim, after_trim - base);
        if (after_trim - base > SLACK_MIB * 1024) bad = 1;
    }
    fflush(stdout);
    if (bad) {
        printf("FAIL: rss did not return within %d MiB of baseline\n", SLACK_MIB);
        return 1;
    }
    puts("OK free_long_after_thread_exit");
    return 0;
}
