/* 1,000,000 free/realloc calls, through the preloaded allocator, on blocks
 * that glibc's own malloc/memalign produced (found with dlopen(RTLD_NOLOAD) +
 * dlsym, so they are foreign to the preload). Includes page-aligned blocks,
 * large (mmap'ed by glibc) blocks, realloc growing/shrinking and realloc to 0.
 * Contents must survive realloc, and RSS must stay bounded (< +64 MiB). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OPS 1000000
#define LIMIT_MIB 64

#include "rss.h"

int main(void) {
    void *libc = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
    if (!libc) { printf("dlopen libc: %s\n", dlerror()); return 1; }
    void *(*g_malloc)(size_t) = (void *(*)(size_t))dlsym(libc, "malloc");
    void *(*g_memalign)(size_t, size_t) = (void *(*)(size_t, size_t))dlsym(libc, "memalign");
    if (!g_malloc || !g_memalign) { puts("dlsym failed"); return 1; }
    int preloaded = dlsym(RTLD_DEFAULT, "hakmem_version") != NULL;
    printf("hakmem %s; glibc malloc %s the process's malloc\n", preloaded ? "preloaded" : "not loaded",
           (void *)g_malloc == (void *)malloc ? "is" : "is not");
    if (preloaded && (void *)g_malloc == (void *)malloc) { puts("FAIL: could not reach glibc's own malloc"); return 1; }

    enum { LIVE = 256 };
    unsigned char *live[LIVE] = {0};
    size_t livesz[LIVE] = {0};
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    long base = -1, peak = 0;
    long ops = 0, frees = 0, reallocs = 0, bad = 0;
    for (long it = 0; ops < OPS; it++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        int slot = (int)(rng % LIVE);
        if (live[slot]) { /* free (or realloc-then-free) a hakmem or glibc block */
            free(live[slot]);
            live[slot] = NULL;
            ops++;
            frees++;
        }
        size_t n;
        unsigned char *p;
        switch ((rng >> 8) % 10) {
        case 0: n = 4096 * (1 + (rng >> 16) % 8); p = g_memalign(4096, n); break;       /* page-aligned */
        case 1: n = 64 + (rng >> 16) % 1000; p = g_memalign(64 << ((rng >> 30) % 4), n); break;
        case 2: n = (rng >> 16) % 64 == 0 ? 200000 + (rng >> 24) % 300000 : 5000 + (rng >> 16) % 60000; p = g_malloc(n); break;
        default: n = 2 + (rng >> 16) % 1024; p = g_malloc(n); break;
        }
        if (!p) { puts("glibc malloc failed"); return 1; }
        p[0] = (unsigned char)it;
        p[n - 1] = (unsigned char)(it >> 8);
        unsigned r = (unsigned)(rng >> 40) % 4;
        if (r != 0) { /* realloc the foreign block */
            size_t m = r == 1 ? n * 2 + 3 : r == 2 ? (n > 2 ? n / 2 : 1) : (rng >> 50) % 32 == 0 ? 0 : n + 1;
            unsigned char *q = realloc(p, m);
            ops++;
            reallocs++;
            if (m == 0) { /* glibc frees and returns NULL; hakmem may return a minimal block */
                free(q);
                continue;
            }
            if (!q) { puts("realloc of a foreign block returned NULL"); return 1; }
            size_t keep = m < n ? m : n;
            if (q[0] != (unsigned char)it || (keep == n && q[n - 1] != (unsigned char)(it >> 8))) bad++;
            p = q;
            n = m;
        }
        live[slot] = p;
        livesz[slot] = n;
        if (ops >= 20000 && base < 0) base = rss_kib();
        if (base >= 0 && it % 4096 == 0) {
            long r2 = rss_kib();
            if (r2 > peak) peak = r2;
        }
    }
    for (int i = 0; i < LIVE; i++) free(live[i]);
    long end = rss_kib();
    if (end > peak) peak = end;
    printf("%ld ops (%ld free, %ld realloc), %ld corrupted; rss base %ld KiB, peak %ld KiB (+%ld KiB), end %ld KiB\n",
           ops, frees, reallocs, bad, base, peak, peak - base, end);
    (void)livesz;
    if (bad) return 1;
    if (peak - base > LIMIT_MIB * 1024) { printf("FAIL: rss grew by more than %d MiB\n", LIMIT_MIB); return 1; }
    puts("OK foreign_million");
    return 0;
}
