/*
 * Foreign pointers: blocks allocated by glibc's own malloc family (found with
 * dlsym on the already-loaded libc.so.6, which bypasses any LD_PRELOAD
 * interposer) are handed to the ordinary free / realloc / malloc_usable_size
 * symbols, which the preloaded allocator overrides. It must pass them to glibc
 * (or migrate them on realloc) without crashing and without leaking: the
 * resident set size is sampled from /proc/self/statm and must not grow by
 * more than LEAK_LIMIT over OPS operations.
 *
 * usage: foreign [ops] [seed]
 * stdout is deterministic; errors go to stderr and abort.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEAK_LIMIT (64u << 20)
#define SLOTS 1024

static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("foreign: FAIL: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t rnd(rng_t *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rnd_below(rng_t *r, uint64_t n)
{
    return rnd(r) % n;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 33);
}

/* Same sparse pattern scheme as stress.c: small blocks entirely, large ones
 * at both ends and on every page. */
#define FULL 16384u

static inline unsigned char pat(uint64_t tag, size_t i)
{
    uint64_t x = tag + i;
    return (unsigned char)(x ^ (x >> 7) ^ (tag >> 32) ^ (i >> 12));
}

#define FOR_POSITIONS(n, i, BODY)                                          \
    do {                                                                   \
        size_t n_ = (n);                                                   \
        if (n_ <= FULL) {                                                  \
            for (size_t i = 0; i < n_; i++) {                              \
                BODY;                                                      \
            }                                                              \
        } else {                                                           \
            for (size_t i = 0; i < 256; i++) {                             \
                BODY;                                                      \
            }                                                              \
            for (size_t i = 256; i < n_ - 256; i += 4093) {                \
                BODY;                                                      \
            }                                                              \
            for (size_t i = n_ - 256; i < n_; i++) {                       \
                BODY;                                                      \
            }                                                              \
        }                                                                  \
    } while (0)

static void fill(void *p, size_t n, uint64_t tag)
{
    unsigned char *b = p;
    FOR_POSITIONS(n, i, b[i] = pat(tag, i));
}

static void verify(const void *p, size_t n, uint64_t tag, size_t limit, const char *what)
{
    const unsigned char *b = p;
    FOR_POSITIONS(n, i, {
        if (i < limit && b[i] != pat(tag, i))
            die("%s: pattern mismatch in block of %zu bytes at offset %zu", what, n, i);
    });
}

static void verify_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    FOR_POSITIONS(n, i, {
        if (b[i] != 0)
            die("glibc calloc block of %zu bytes not zero at offset %zu", n, i);
    });
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f == NULL)
        die("cannot open /proc/self/statm");
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        die("cannot parse /proc/self/statm");
    fclose(f);
    return resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* glibc's own allocator, bypassing the interposer. */
static void *(*g_malloc)(size_t);
static void *(*g_calloc)(size_t, size_t);
static void *(*g_realloc)(void *, size_t);
static void *(*g_memalign)(size_t, size_t);
static int (*g_posix_memalign)(void **, size_t, size_t);
static void *(*g_aligned_alloc)(size_t, size_t);
static void *(*g_valloc)(size_t);

static void *need(void *h, const char *name)
{
    void *f = dlsym(h, name);
    if (f == NULL)
        die("dlsym(libc.so.6, %s): %s", name, dlerror());
    return f;
}

static size_t pick_size(rng_t *r)
{
    uint64_t k = rnd_below(r, 1000);
    if (k < 3)
        return 128 * 1024 + rnd_below(r, 896 * 1024); /* glibc mmaps these */
    if (k < 50)
        return 513 + rnd_below(r, 64 * 1024);
    return 1 + rnd_below(r, 512);
}

typedef struct {
    void *p;
    size_t n;
    uint64_t tag;
} slot_t;

static slot_t slots[SLOTS];

static void check_usable(void *p, size_t n, const char *what)
{
    size_t us = malloc_usable_size(p);
    if (us < n)
        die("%s: malloc_usable_size %zu < requested %zu", what, us, n);
}

/* Allocate from glibc directly; returns the function index used. */
static int foreign_alloc(rng_t *r, slot_t *s)
{
    size_t n = pick_size(r);
    uint64_t tag = rnd(r);
    int kind = (int)rnd_below(r, 7);
    void *p = NULL;
    switch (kind) {
    case 0:
        p = g_malloc(n);
        break;
    case 1:
        p = g_calloc(1, n);
        if (p != NULL)
            verify_zero(p, n);
        break;
    case 2:
        p = g_memalign(4096, n);
        if (p != NULL && (uintptr_t)p % 4096 != 0)
            die("glibc memalign(4096) misaligned");
        break;
    case 3: {
        size_t a = (size_t)16 << rnd_below(r, 9); /* 16 .. 4096 */
        if (g_posix_memalign(&p, a, n) != 0)
            p = NULL;
        if (p != NULL && (uintptr_t)p % a != 0)
            die("glibc posix_memalign misaligned");
        break;
    }
    case 4:
        p = g_aligned_alloc(64, n);
        break;
    case 5:
        p = g_valloc(n);
        break;
    default:
        p = g_realloc(NULL, n);
        break;
    }
    if (p == NULL)
        die("glibc allocation of %zu bytes (kind %d) failed", n, kind);
    check_usable(p, n, "foreign block");
    fill(p, n, tag);
    *s = (slot_t){p, n, tag};
    return kind;
}

int main(int argc, char **argv)
{
    long ops = argc > 1 ? atol(argv[1]) : 1000000;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : 42;
    void *h = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
    if (h == NULL)
        die("dlopen(libc.so.6, RTLD_NOLOAD): %s", dlerror());
    g_malloc = (void *(*)(size_t))need(h, "malloc");
    g_calloc = (void *(*)(size_t, size_t))need(h, "calloc");
    g_realloc = (void *(*)(void *, size_t))need(h, "realloc");
    g_memalign = (void *(*)(size_t, size_t))need(h, "memalign");
    g_posix_memalign = (int (*)(void **, size_t, size_t))need(h, "posix_memalign");
    g_aligned_alloc = (void *(*)(size_t, size_t))need(h, "aligned_alloc");
    g_valloc = (void *(*)(size_t))need(h, "valloc");

    rng_t r = {seed};
    uint64_t hsum = 0, frees = 0, reallocs = 0, direct = 0;
    size_t base = 0, peak_growth = 0;
    long warmup = ops / 20;

    for (long it = 0; it < ops; it++) {
        if (it == warmup)
            base = rss_bytes();
        if (it > warmup && it % 8192 == 0) {
            size_t now = rss_bytes();
            size_t growth = now > base ? now - base : 0;
            if (growth > peak_growth)
                peak_growth = growth;
            if (growth > LEAK_LIMIT)
                die("RSS grew by %zu MiB after %ld operations on foreign pointers (limit %u MiB): "
                    "frees of glibc blocks are being leaked",
                    growth >> 20, it, LEAK_LIMIT >> 20);
        }

        uint64_t k = rnd_below(&r, 100);
        if (k < 30) {
            /* Allocate from glibc and free through the interposed free at once. */
            slot_t s;
            int kind = foreign_alloc(&r, &s);
            verify(s.p, s.n, s.tag, SIZE_MAX, "foreign block");
            free(s.p);
            hsum = mix(hsum, ((uint64_t)kind << 40) ^ s.n ^ s.tag);
            direct++;
            continue;
        }
        slot_t *s = &slots[rnd_below(&r, SLOTS)];
        if (s->p == NULL) {
            int kind = foreign_alloc(&r, s);
            hsum = mix(hsum, ((uint64_t)kind << 40) ^ s->n ^ s->tag);
        } else if (k < 70) {
            verify(s->p, s->n, s->tag, SIZE_MAX, "foreign block before free");
            check_usable(s->p, s->n, "foreign block before free");
            free(s->p);
            s->p = NULL;
            frees++;
        } else {
            /* realloc of a glibc block through the interposer; the result may
             * belong to either allocator and goes back into the pool. */
            size_t m = pick_size(&r);
            uint64_t tag = rnd(&r);
            void *q = realloc(s->p, m);
            if (q == NULL)
                die("realloc(foreign, %zu) returned NULL", m);
            if ((uintptr_t)q % 16 != 0 && m >= 16)
                die("realloc(foreign, %zu) returned a misaligned pointer", m);
            verify(q, s->n, s->tag, s->n < m ? s->n : m, "realloc of foreign block");
            check_usable(q, m, "realloc of foreign block");
            fill(q, m, tag);
            *s = (slot_t){q, m, tag};
            reallocs++;
            hsum = mix(hsum, m ^ tag);
        }
    }
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i].p != NULL) {
            verify(slots[i].p, slots[i].n, slots[i].tag, SIZE_MAX, "foreign block at end");
            free(slots[i].p);
            frees++;
        }
    }
    size_t end = rss_bytes();
    size_t growth = end > base ? end - base : 0;
    if (growth > LEAK_LIMIT)
        die("RSS grew by %zu MiB over %ld operations on foreign pointers (limit %u MiB)",
            growth >> 20, ops, LEAK_LIMIT >> 20);
    fprintf(stderr, "foreign: rss growth %zu KiB (peak %zu KiB)\n", growth >> 10,
            (peak_growth > growth ? peak_growth : growth) >> 10);
    printf("foreign: OK ops=%ld direct=%llu frees=%llu reallocs=%llu checksum=%016llx\n", ops,
           (unsigned long long)direct, (unsigned long long)frees, (unsigned long long)reallocs,
           (unsigned long long)hsum);
    return 0;
}
