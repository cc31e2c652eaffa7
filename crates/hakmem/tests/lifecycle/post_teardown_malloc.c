/* pthread key destructors that malloc/realloc/free, some running before the
 * allocator's own thread-exit destructor and many after it. glibc runs
 * destructors in key-index order, for up to PTHREAD_DESTRUCTOR_ITERATIONS
 * rounds: keys created in .preinit_array (before the allocator's load-time key)
 * get lower indices, keys created in main (after the first malloc) higher ones,
 * including indices >= 32 (glibc's second-level table). Destructors re-arm their
 * key so later rounds run too. Surviving blocks are handed to main, which checks
 * their contents and frees them after the threads are gone. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EARLY_KEYS 4
#define LATE_KEYS 60
#define NKEYS (EARLY_KEYS + LATE_KEYS)
#define THREADS 200
#define BATCH 8
#define REARM 2 /* extra rounds per key */
#define MAXKEEP (THREADS * NKEYS * (REARM + 1) * 2 + THREADS * 16)

static pthread_key_t keys[NKEYS];
static int early_ok;

struct kept { unsigned char *p; size_t n; unsigned char tag; };
static struct kept kept[MAXKEEP];
static size_t nkept;
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int failed;

static void keep(unsigned char *p, size_t n, unsigned char tag) {
    pthread_mutex_lock(&kept_lock);
    if (nkept < MAXKEEP) kept[nkept++] = (struct kept){p, n, tag};
    else free(p);
    pthread_mutex_unlock(&kept_lock);
}

/* value encodes (key index << 8) | round + 1 */
static void destructor(void *v) {
    uintptr_t val = (uintptr_t)v;
    unsigned ki = (unsigned)(val >> 8), round = (unsigned)(val & 0xff) - 1;
    size_t n1 = 8 + (ki * 131 + round * 17) % 1000;
    size_t n2 = (ki % 5 == 0) ? 200000 + ki : n1 * 3 + 1;
    unsigned char tag = (unsigned char)(ki * 7 + round + 1);

    unsigned char *a = malloc(n1);
    unsigned char *b = calloc(1, n1);
    if (!a || !b) { failed = 1; return; }
    for (size_t i = 0; i < n1; i++) if (b[i]) { failed = 2; break; }
    memset(a, tag, n1);
    a = realloc(a, n2);
    if (!a) { failed = 3; return; }
    for (size_t i = 0; i < n1; i++) if (a[i] != tag) { failed = 4; break; }
    memset(a, tag, n2);
    if (n2 > 100000) { /* large -> small realloc, keep only the small block */
        a = realloc(a, 100);
        if (!a) { failed = 8; return; }
        for (size_t i = 0; i < 100; i++) if (a[i] != tag) { failed = 9; break; }
        n2 = 100;
    }
    free(b);
    unsigned char *c = malloc(64);
    if (!c) { failed = 5; return; }
    c = realloc(c, 16);
    free(c);
    keep(a, n2, tag);
    unsigned char *d = malloc(40);
    if (!d) { failed = 6; return; }
    memset(d, tag, 40);
    keep(d, 40, tag);
    if (round < REARM) pthread_setspecific(keys[ki], (void *)(((uintptr_t)ki << 8) | (round + 2)));
}

static void preinit(int argc, char **argv, char **envp) {
    (void)argc; (void)argv; (void)envp;
    int ok = 1;
    for (int i = 0; i < EARLY_KEYS; i++)
        if (pthread_key_create(&keys[i], destructor)) ok = 0;
    early_ok = ok;
}
__attribute__((section(".preinit_array"), used)) static void (*preinit_p)(int, char **, char **) = preinit;

static void *worker(void *arg) {
    uintptr_t t = (uintptr_t)arg;
    /* odd threads allocate before arming keys; even ones never call malloc
     * themselves, so their first allocation happens inside a destructor */
    void *p = NULL;
    if (t & 1) {
        p = malloc(100 + t);
        if (!p) failed = 7;
    }
    for (int k = 0; k < NKEYS; k++) pthread_setspecific(keys[k], (void *)(((uintptr_t)k << 8) | 1));
    if (p) free(p);
    if (t % 4 == 1) {
        /* a small working set owned by this thread at exit */
        void *q[32];
        for (int i = 0; i < 32; i++) q[i] = malloc(16 * (i + 1));
        for (int i = 0; i < 32; i += 2) free(q[i]);
        for (int i = 1; i < 32; i += 2) keep(q[i], 0, 0);
    }
    return NULL;
}

int main(void) {
    if (!early_ok) { puts("early pthread_key_create failed"); return 1; }
    void *first = malloc(32); /* the main thread's first malloc */
    free(first);
    for (int i = EARLY_KEYS; i < NKEYS; i++)
        if (pthread_key_create(&keys[i], destructor)) { puts("pthread_key_create failed"); return 1; }
    printf("key indices: early %u..%u late %u..%u\n", (unsigned)keys[0], (unsigned)keys[EARLY_KEYS - 1],
           (unsigned)keys[EARLY_KEYS], (unsigned)keys[NKEYS - 1]);
    for (int t = 0; t < THREADS; t += BATCH) {
        pthread_t th[BATCH];
        for (int j = 0; j < BATCH; j++)
            if (pthread_create(&th[j], NULL, worker, (void *)(uintptr_t)(t + j))) { puts("pthread_create failed"); return 1; }
        for (int j = 0; j < BATCH; j++) pthread_join(th[j], NULL);
        if (failed) { printf("destructor failure %d\n", failed); return 1; }
    }
    size_t expect = (size_t)THREADS * NKEYS * (REARM + 1) * 2;
    printf("kept %zu blocks (expected at least %zu)\n", nkept, expect);
    if (nkept < expect) return 1;
    for (size_t i = 0; i < nkept; i++) {
        struct kept *k = &kept[i];
        if (k->n && (k->p[0] != k->tag || k->p[k->n - 1] != k->tag)) {
            printf("block %zu (%zu bytes) corrupted\n", i, k->n);
            return 1;
        }
        free(k->p);
    }
    /* the allocator still works normally afterwards */
    for (int i = 0; i < 10000; i++) free(malloc((size_t)i % 4096 + 1));
    puts("OK post_teardown_malloc");
    return 0;
}
