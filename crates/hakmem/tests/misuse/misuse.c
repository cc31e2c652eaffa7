/* One misuse per run: misuse <mode> <size>.
 * hakmem must end the process with one line naming the fault and address.
 * Threads are created before the first free: creating a thread allocates
 * (glibc's DTV), which could otherwise reuse the freed block and turn the
 * second free into a free of a live block.
 *
 * Modes:
 *   same, cross, late-cross   double free of a malloc(size) block: second free
 *                             by the same thread, another thread, or after the
 *                             allocating thread exited
 *   aligned-same, aligned-cross  the same with posix_memalign(64 KiB, size)
 *   interior                  free of a pointer inside a block
 *   overflow                  an 8-byte overflow into a free neighbour's list
 *                             link, then allocation until it is reused
 *   segment-end               an overflow off the last block of a segment:
 *                             must fault on the guard page (SIGSEGV)
 *   large-realloc, large-usable  realloc / malloc_usable_size of a freed block
 *   stack, stack-thread, stack-main-from-thread
 *                             free of a stack address: the main thread's own,
 *                             a second thread's own, the main thread's by a
 *                             second thread
 *   realloc-stack, usable-stack  realloc / malloc_usable_size of one
 *   global, global-bss, global-rodata  free of static data
 *   glibc                     no misuse: blocks of glibc's own malloc (found
 *                             with dlsym) in the main thread and in a second
 *                             thread, small and mmapped, are freed, resized
 *                             and sized through hakmem; prints "glibc OK". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
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

static char global_data[256] = {1};
static char global_bss[256];
static const char global_rodata[256] = "constant";

static void *free_own_stack(void *a) {
    (void)a;
    char buf[64];
    memset(buf, 1, sizeof buf);
    free(buf + 16);
    return 0; /* not reached */
}

static void *free_given(void *a) {
    free(a);
    return 0;
}

static void *(*g_malloc)(size_t);
static void *(*g_realloc)(void *, size_t);
static int (*g_posix_memalign)(void **, size_t, size_t);

/* Blocks from glibc's own allocator, freed and resized through hakmem. */
static void glibc_round(void **out) {
    static const size_t sizes[] = {24, 1000, 70000, 200000, 4 << 20};
    for (int i = 0; i < 5; i++) {
        void *p = g_malloc(sizes[i]);
        memset(p, 3, sizes[i]);
        if (malloc_usable_size(p) < sizes[i]) abort();
        p = realloc(p, sizes[i] + 100); /* may stay glibc's */
        if (!p) abort();
        free(p);
        void *q = 0;
        if (g_posix_memalign(&q, 65536, sizes[i])) abort();
        free(q);
        out[i] = g_realloc(0, sizes[i]);
    }
}

static void *glibc_thread(void *a) {
    glibc_round(a);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    n = (size_t)atol(argv[2]);
    pthread_t t[3];
    for (long i = 0; i < 3; i++) {
        sem_init(&go[i], 0, 0);
        sem_init(&done[i], 0, 0);
        pthread_create(&t[i], 0, worker, (void *)i);
    }
    const char *mode = argv[1];
    int aligned = !strncmp(mode, "aligned-", 8);
    if (aligned) mode += 8;
    void *p = 0;
    if (aligned) {
        if (posix_memalign(&p, 65536, n)) return 3;
    } else {
        p = malloc(n);
    }
    memset(p, 7, n);
    void *keep = malloc(n); /* a live neighbour, so the slab stays in use */
    char local[64];
    memset(local, 1, sizeof local);
    if (!strcmp(mode, "same")) {
        free(p);
        free(p);
    } else if (!strcmp(mode, "cross")) {
        g = p;
        free(p);
        step(1);
    } else if (!strcmp(mode, "large-realloc")) {
        free(p);
        p = realloc(p, n / 2);
    } else if (!strcmp(mode, "large-usable")) {
        free(p);
        printf("%zu\n", malloc_usable_size(p));
    } else if (!strcmp(mode, "stack")) {
        free(local + 8);
    } else if (!strcmp(mode, "stack-thread")) {
        pthread_t t;
        pthread_create(&t, 0, free_own_stack, 0);
        pthread_join(t, 0);
    } else if (!strcmp(mode, "stack-main-from-thread")) {
        pthread_t t;
        pthread_create(&t, 0, free_given, local + 32);
        pthread_join(t, 0);
    } else if (!strcmp(mode, "realloc-stack")) {
        p = realloc(local, n);
    } else if (!strcmp(mode, "usable-stack")) {
        printf("%zu\n", malloc_usable_size(local));
    } else if (!strcmp(mode, "global")) {
        free(global_data + 16);
    } else if (!strcmp(mode, "global-bss")) {
        free(global_bss);
    } else if (!strcmp(mode, "global-rodata")) {
        free((void *)global_rodata);
    } else if (!strcmp(mode, "glibc")) {
        void *h = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
        if (!h) return 3;
        g_malloc = (void *(*)(size_t))dlsym(h, "malloc");
        g_realloc = (void *(*)(void *, size_t))dlsym(h, "realloc");
        g_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(h, "posix_memalign");
        if (!g_malloc || !g_realloc || !g_posix_memalign) return 3;
        void *mine[5], *theirs[5];
        for (int round = 0; round < 100; round++) {
            pthread_t t;
            pthread_create(&t, 0, glibc_thread, theirs);
            glibc_round(mine);
            pthread_join(t, 0);
            for (int i = 0; i < 5; i++) { /* theirs from the main thread */
                free(mine[i]);
                free(theirs[i]);
            }
        }
        free(p);
        free(keep);
        printf("glibc OK\n");
        return 0;
    } else if (!strcmp(mode, "late-cross")) {
        step(0);                 /* thread 0 allocates g ... */
        pthread_join(t[0], 0);   /* ... and exits */
        step(1);                 /* thread 1 frees it */
        step(2);                 /* thread 2 frees it again */
    } else if (!strcmp(mode, "interior")) {
        free((char *)p + 8);
    } else if (!strcmp(mode, "overflow")) {
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
    } else if (!strcmp(mode, "segment-end")) {
        /* An overflow off the end of the last block of a 4 MiB segment must
         * fault on the guard page, never reach a neighbouring mapping. */
        size_t u = malloc_usable_size(p);
        char *last = 0;
        for (long i = 0; i < 4000000 && !last; i++) {
            char *q = malloc(n);
            if (((unsigned long)q + u) % (4ul << 20) == 0) last = q;
        }
        if (!last) {
            printf("NO SEGMENT-END BLOCK\n");
            return 3;
        }
        /* The page after the segment must be mapped (the guard), so that
         * the fault below is the guard's and not an accident of layout. */
        if (msync(last + u, 4096, MS_ASYNC) != 0) {
            printf("NO GUARD PAGE after %p\n", (void *)last);
            return 4;
        }
        printf("last block %p\n", (void *)last);
        fflush(stdout);
        memset(last, 'A', u + 64);
    } else {
        return 2;
    }
    printf("NOT DETECTED %p %p\n", keep, p);
    return 0;
}
