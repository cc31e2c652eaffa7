/*
 * Multi-threaded malloc stress and C-semantics check for the LD_PRELOAD suite.
 *
 * usage: stress [threads] [seed] [ops_per_thread] [blocks_per_producer] [churn_threads]
 *
 * Everything printed on stdout is a function of the arguments only (counts and
 * checksums of the sizes/tags the program chose), never of addresses, timings
 * or scheduling, so the output with and without LD_PRELOAD must be identical.
 * Any detected error prints "stress: FAIL: ..." on stderr and aborts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("stress: FAIL: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

/* Hide a value from the optimiser so that calls with constant absurd sizes
 * are really made (and not folded or warned about). */
static size_t opaque(size_t x)
{
    __asm__ volatile("" : "+r"(x));
    return x;
}

static void *opaque_ptr(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

static void *volatile sink;

typedef struct {
    uint64_t s;
} rng_t;

static inline uint64_t rnd(rng_t *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rnd_below(rng_t *r, uint64_t n)
{
    return rnd(r) % n;
}

static inline uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 33);
}

/* Weighted toward small: 0 .. 2 MiB + 8 KiB. */
static size_t pick_size(rng_t *r)
{
    uint64_t k = rnd_below(r, 1000);
    if (k < 5)
        return 0;
    if (k < 650)
        return 1 + rnd_below(r, 128);
    if (k < 880)
        return 129 + rnd_below(r, 1024 - 128);
    if (k < 975)
        return 1025 + rnd_below(r, 32 * 1024 - 1024);
    if (k < 997)
        return 32 * 1024 + rnd_below(r, 224 * 1024);
    return 256 * 1024 + rnd_below(r, 2 * 1024 * 1024 + 8192 - 256 * 1024);
}

static size_t pick_align(rng_t *r)
{
    if (rnd_below(r, 50) == 0)
        return (size_t)1 << (13 + rnd_below(r, 8)); /* 8 KiB .. 1 MiB */
    return (size_t)1 << (3 + rnd_below(r, 10));     /* 8 .. 4 KiB */
}

/* The alignment C guarantees for malloc(n): fundamental alignment (16 on
 * x86-64) for objects that can hold a max_align_t, otherwise the largest
 * power of two not above n. */
static size_t fundamental_align(size_t n)
{
    size_t a = 1;
    if (n >= 16)
        return 16;
    while (a * 2 <= n)
        a *= 2;
    return a;
}

/* Pattern: every block gets a 64-bit tag; byte i holds pat(tag, i). Blocks up
 * to FULL bytes are written entirely; larger ones at the first and last 256
 * bytes and every 4093rd byte in between (touching every page). */
#define FULL 65536u

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

/* Verify the positions that fill(p, n, tag) wrote, restricted to < limit. */
static void verify(const void *p, size_t n, uint64_t tag, size_t limit, const char *what)
{
    const unsigned char *b = p;
    FOR_POSITIONS(n, i, {
        if (i < limit && b[i] != pat(tag, i))
            die("%s: pattern mismatch in block of %zu bytes at offset %zu "
                "(got 0x%02x, want 0x%02x)",
                what, n, i, b[i], pat(tag, i));
    });
}

static void verify_zero(const void *p, size_t n, const char *what)
{
    const unsigned char *b = p;
    FOR_POSITIONS(n, i, {
        if (b[i] != 0)
            die("%s: calloc block of %zu bytes not zero at offset %zu", what, n, i);
    });
}

static void check_block(const void *p, size_t n, size_t align, const char *what)
{
    if (p == NULL)
        die("%s(%zu) returned NULL", what, n);
    if ((uintptr_t)p % align != 0)
        die("%s(%zu): pointer not aligned to %zu", what, n, align);
    size_t us = malloc_usable_size((void *)p);
    if (us < n)
        die("%s(%zu): malloc_usable_size %zu < requested", what, n, us);
}

/* ------------------------------------------------------------------------ */
/* C semantics                                                               */

static void expect_null_enomem(void *p, const char *what)
{
    int e = errno;
    if (p != NULL)
        die("%s: expected NULL, got a pointer", what);
    if (e != ENOMEM)
        die("%s: expected errno ENOMEM, got %d", what, e);
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void semantics(void)
{
    /* malloc(0): unique, non-NULL, freeable. */
    enum { NZ = 1000 };
    static void *zs[NZ];
    for (int i = 0; i < NZ; i++) {
        zs[i] = malloc(opaque(0));
        if (zs[i] == NULL)
            die("malloc(0) returned NULL");
    }
    qsort(zs, NZ, sizeof zs[0], cmp_ptr);
    for (int i = 1; i < NZ; i++)
        if (zs[i] == zs[i - 1])
            die("malloc(0) returned the same pointer twice");
    for (int i = 0; i < NZ; i++)
        free(zs[i]);

    /* Overflow and impossible sizes. */
    errno = 0;
    expect_null_enomem(calloc(opaque(SIZE_MAX / 2 + 1), opaque(2)), "calloc(SIZE_MAX/2+1, 2)");
    errno = 0;
    expect_null_enomem(calloc(opaque((size_t)1 << 32), opaque((size_t)1 << 32)), "calloc(2^32, 2^32)");
    errno = 0;
    expect_null_enomem(calloc(opaque(SIZE_MAX), opaque(1)), "calloc(SIZE_MAX, 1)");
    errno = 0;
    expect_null_enomem(calloc(opaque(3), opaque(SIZE_MAX / 2)), "calloc(3, SIZE_MAX/2)");
    errno = 0;
    expect_null_enomem(malloc(opaque(SIZE_MAX)), "malloc(SIZE_MAX)");
    errno = 0;
    expect_null_enomem(malloc(opaque(SIZE_MAX - 4095)), "malloc(SIZE_MAX-4095)");
    errno = 0;
    expect_null_enomem(malloc(opaque((size_t)PTRDIFF_MAX + 1)), "malloc(PTRDIFF_MAX+1)");
    errno = 0;
    expect_null_enomem(aligned_alloc(opaque(4096), opaque(SIZE_MAX - 100)), "aligned_alloc(4096, SIZE_MAX-100)");
    errno = 0;
    expect_null_enomem(memalign(opaque(64), opaque(SIZE_MAX)), "memalign(64, SIZE_MAX)");
    errno = 0;
    expect_null_enomem(reallocarray(NULL, opaque(SIZE_MAX / 2 + 1), opaque(2)), "reallocarray(NULL, SIZE_MAX/2+1, 2)");

    /* posix_memalign: bad alignments give EINVAL and leave *memptr alone. */
    static const size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 100, 4097};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *p = (void *)&sink;
        errno = 0;
        int rc = posix_memalign(&p, opaque(bad[i]), 16);
        if (rc != EINVAL)
            die("posix_memalign(alignment %zu) returned %d, want EINVAL", bad[i], rc);
        if (p != (void *)&sink)
            die("posix_memalign(alignment %zu) failed but modified *memptr", bad[i]);
    }
    {
        void *p = (void *)&sink;
        int rc = posix_memalign(&p, opaque((size_t)1 << 62), 1);
        if (rc != ENOMEM)
            die("posix_memalign(2^62, 1) returned %d, want ENOMEM", rc);
        if (p != (void *)&sink)
            die("posix_memalign(2^62, 1) failed but modified *memptr");
        rc = posix_memalign(&p, 64, opaque(SIZE_MAX - 10));
        if (rc != ENOMEM)
            die("posix_memalign(64, SIZE_MAX-10) returned %d, want ENOMEM", rc);
    }

    /* Non-power-of-two alignment for memalign/aligned_alloc: glibc 2.36
     * rounds it up to the next power of two; C17 also allows NULL+EINVAL. */
    {
        errno = 0;
        void *p = memalign(opaque(24), 10);
        if (p != NULL) {
            if ((uintptr_t)p % 8 != 0)
                die("memalign(24, 10) returned a pointer not even 8-aligned");
            free(p);
        } else if (errno != EINVAL) {
            die("memalign(24, 10) returned NULL with errno %d", errno);
        }
        errno = 0;
        p = aligned_alloc(opaque(3), 10);
        if (p != NULL)
            free(p);
        else if (errno != EINVAL)
            die("aligned_alloc(3, 10) returned NULL with errno %d", errno);
    }

    /* Aligned allocations up to 1 MiB alignment, by all three functions. */
    {
        enum { MAXP = 21 * 5 * 3 };
        static void *ps[MAXP];
        static size_t ns[MAXP];
        int np = 0;
        for (int shift = 0; shift <= 20; shift++) {
            size_t a = (size_t)1 << shift;
            size_t sizes[5] = {0, 1, a, a + 1, a + a / 2 + 3};
            for (int s = 0; s < 5; s++) {
                size_t n = sizes[s];
                void *p;
                /* posix_memalign needs a multiple of sizeof(void *). */
                size_t pa = a < sizeof(void *) ? sizeof(void *) : a;
                int rc = posix_memalign(&p, pa, n);
                if (rc != 0)
                    die("posix_memalign(%zu, %zu) returned %d", pa, n, rc);
                check_block(p, n, pa, "posix_memalign");
                ps[np] = p, ns[np++] = n;
                p = aligned_alloc(a, n);
                check_block(p, n, a, "aligned_alloc");
                ps[np] = p, ns[np++] = n;
                p = memalign(a, n);
                check_block(p, n, a, "memalign");
                ps[np] = p, ns[np++] = n;
            }
        }
        for (int i = 0; i < np; i++)
            fill(ps[i], ns[i], (uint64_t)i * 77);
        for (int i = 0; i < np; i++)
            verify(ps[i], ns[i], (uint64_t)i * 77, SIZE_MAX, "aligned block");
        /* realloc of aligned blocks must keep the contents. */
        for (int i = 0; i < np; i += 2) {
            size_t m = ns[i] * 2 + 100;
            void *q = realloc(ps[i], m);
            check_block(q, m, fundamental_align(m), "realloc(aligned)");
            verify(q, ns[i], (uint64_t)i * 77, ns[i], "realloc(aligned)");
            ps[i] = q;
        }
        for (int i = np - 1; i >= 0; i--)
            free(ps[i]);
    }

    /* valloc / pvalloc are page-aligned; pvalloc rounds the size up. */
    {
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        void *p = valloc(100);
        check_block(p, 100, pg, "valloc");
        free(p);
        p = pvalloc(100);
        check_block(p, pg, pg, "pvalloc");
        fill(p, pg, 5);
        verify(p, pg, 5, SIZE_MAX, "pvalloc");
        free(p);
    }

    /* free(NULL), and free preserves errno (glibc >= 2.33, POSIX 2024). */
    {
        void *p = malloc(opaque(40));
        sink = p;
        errno = EDOM;
        free(NULL);
        free(p);
        if (errno != EDOM)
            die("free() changed errno from EDOM to %d", errno);
        if (malloc_usable_size(NULL) != 0)
            die("malloc_usable_size(NULL) != 0");
    }

    /* realloc(NULL, n) behaves like malloc(n). */
    {
        void *p = realloc(NULL, 1000);
        check_block(p, 1000, 16, "realloc(NULL, 1000)");
        fill(p, 1000, 9);
        verify(p, 1000, 9, SIZE_MAX, "realloc(NULL, 1000)");
        free(p);
        p = realloc(NULL, opaque(0));
        if (p == NULL)
            die("realloc(NULL, 0) returned NULL");
        free(p);
    }

    /* realloc(p, 0): glibc 2.36 frees p and returns NULL (REALLOC_ZERO_BYTES_FREES);
     * other allocators return a unique minimal block. Accept either. */
    {
        void *keep = malloc(1);
        for (int i = 0; i < 100; i++) {
            void *p = malloc(opaque(100 + i));
            if (p == NULL)
                die("malloc(100) returned NULL");
            fill(p, 100, 1);
            void *q = realloc(p, opaque(0));
            if (q != NULL) {
                if (q == keep)
                    die("realloc(p, 0) returned a live pointer");
                free(q);
            }
        }
        free(keep);
    }

    /* Failed realloc/reallocarray leaves the old block intact. */
    {
        void *p = malloc(300);
        fill(p, 300, 11);
        errno = 0;
        expect_null_enomem(realloc(opaque_ptr(p), opaque(SIZE_MAX)), "realloc(p, SIZE_MAX)");
        verify(p, 300, 11, SIZE_MAX, "block after failed realloc");
        errno = 0;
        expect_null_enomem(realloc(opaque_ptr(p), opaque((size_t)PTRDIFF_MAX + 1)), "realloc(p, PTRDIFF_MAX+1)");
        verify(p, 300, 11, SIZE_MAX, "block after failed realloc");
        errno = 0;
        expect_null_enomem(reallocarray(opaque_ptr(p), opaque(SIZE_MAX / 2 + 1), opaque(2)),
                           "reallocarray(p, SIZE_MAX/2+1, 2)");
        verify(p, 300, 11, SIZE_MAX, "block after failed reallocarray");
        void *q = reallocarray(opaque_ptr(p), opaque(100), opaque(10));
        check_block(q, 1000, 16, "reallocarray(p, 100, 10)");
        verify(q, 300, 11, SIZE_MAX, "block after reallocarray");
        free(q);
    }

    /* calloc really zeroes, also memory that was dirtied and freed. */
    for (int round = 0; round < 4; round++) {
        static void *ps[256];
        for (int i = 0; i < 256; i++) {
            ps[i] = malloc(16 * (size_t)(i + 1));
            memset(ps[i], 0xA5, 16 * (size_t)(i + 1));
        }
        for (int i = 0; i < 256; i++)
            free(ps[i]);
        for (int i = 0; i < 256; i++) {
            size_t n = 16 * (size_t)(i + 1);
            ps[i] = calloc(i + 1, 16);
            check_block(ps[i], n, 16, "calloc");
            verify_zero(ps[i], n, "calloc after free");
        }
        for (int i = 0; i < 256; i++)
            free(ps[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* phase 1: per-thread random operations                                     */

enum { OP_MALLOC, OP_CALLOC, OP_POSIX_MEMALIGN, OP_ALIGNED_ALLOC, OP_MEMALIGN,
       OP_REALLOC_NULL, OP_REALLOCARRAY, OP_REALLOC, OP_FREE, NOPS };
static const char *const op_names[NOPS] = {
    "malloc", "calloc", "posix_memalign", "aligned_alloc", "memalign",
    "realloc_null", "reallocarray", "realloc", "free"};

typedef struct {
    void *p;
    size_t n;
    uint64_t tag;
} slot_t;

#define SLOTS 2048

typedef struct {
    pthread_t th;
    int id;
    uint64_t seed;
    long ops;
    uint64_t checksum;
    uint64_t bytes;
    uint64_t counts[NOPS];
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    rng_t r = {w->seed * 1000003u + (uint64_t)w->id};
    slot_t *slots = calloc(SLOTS, sizeof *slots);
    if (slots == NULL)
        die("calloc(slots) failed");
    uint64_t h = 0;

    for (long it = 0; it < w->ops; it++) {
        slot_t *s = &slots[rnd_below(&r, SLOTS)];
        if (s->p != NULL) {
            verify(s->p, s->n, s->tag, SIZE_MAX, "worker block");
            if (rnd_below(&r, 4) == 0) {
                size_t m = pick_size(&r);
                if (m == 0)
                    m = 1; /* realloc(p, 0) is checked in semantics() */
                uint64_t tag = rnd(&r);
                void *q = realloc(s->p, m);
                check_block(q, m, fundamental_align(m), "realloc");
                verify(q, s->n, s->tag, s->n < m ? s->n : m, "realloc moved block");
                fill(q, m, tag);
                *s = (slot_t){q, m, tag};
                w->counts[OP_REALLOC]++;
                w->bytes += m;
                h = mix(h, ((uint64_t)OP_REALLOC << 56) ^ m ^ tag);
            } else {
                free(s->p);
                s->p = NULL;
                w->counts[OP_FREE]++;
                h = mix(h, OP_FREE);
            }
            continue;
        }
        size_t n = pick_size(&r);
        uint64_t tag = rnd(&r);
        uint64_t k = rnd_below(&r, 100);
        void *p;
        int op;
        if (k < 40) {
            op = OP_MALLOC;
            p = malloc(n);
            check_block(p, n, fundamental_align(n), "malloc");
        } else if (k < 55) {
            op = OP_CALLOC;
            size_t cnt = 1 + rnd_below(&r, 16), each = n / cnt + 1;
            n = cnt * each;
            p = calloc(cnt, each);
            check_block(p, n, fundamental_align(n), "calloc");
            verify_zero(p, n, "calloc");
        } else if (k < 65) {
            op = OP_POSIX_MEMALIGN;
            size_t a = pick_align(&r);
            int rc = posix_memalign(&p, a, n);
            if (rc != 0)
                die("posix_memalign(%zu, %zu) returned %d", a, n, rc);
            check_block(p, n, a, "posix_memalign");
            h = mix(h, a);
        } else if (k < 75) {
            op = OP_ALIGNED_ALLOC;
            size_t a = pick_align(&r);
            p = aligned_alloc(a, n);
            check_block(p, n, a, "aligned_alloc");
            h = mix(h, a);
        } else if (k < 85) {
            op = OP_MEMALIGN;
            size_t a = pick_align(&r);
            p = memalign(a, n);
            check_block(p, n, a, "memalign");
            h = mix(h, a);
        } else if (k < 95) {
            op = OP_REALLOC_NULL;
            if (n == 0)
                n = 1;
            p = realloc(NULL, n);
            check_block(p, n, fundamental_align(n), "realloc(NULL)");
        } else {
            op = OP_REALLOCARRAY;
            size_t cnt = 1 + rnd_below(&r, 8), each = n / cnt + 1;
            n = cnt * each;
            p = reallocarray(NULL, cnt, each);
            check_block(p, n, fundamental_align(n), "reallocarray");
        }
        fill(p, n, tag);
        *s = (slot_t){p, n, tag};
        w->counts[op]++;
        w->bytes += n;
        h = mix(h, ((uint64_t)op << 56) ^ n ^ tag);
    }
    for (size_t i = 0; i < SLOTS; i++) {
        if (slots[i].p != NULL) {
            verify(slots[i].p, slots[i].n, slots[i].tag, SIZE_MAX, "worker block at end");
            free(slots[i].p);
            w->counts[OP_FREE]++;
        }
    }
    free(slots);
    w->checksum = h;
    return NULL;
}

static void phase_random(int nthreads, uint64_t seed, long ops)
{
    worker_t *ws = calloc((size_t)nthreads, sizeof *ws);
    for (int i = 0; i < nthreads; i++) {
        ws[i].id = i;
        ws[i].seed = seed;
        ws[i].ops = ops;
        if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0)
            die("pthread_create failed");
    }
    uint64_t counts[NOPS] = {0}, h = 0, bytes = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(ws[i].th, NULL);
        for (int k = 0; k < NOPS; k++)
            counts[k] += ws[i].counts[k];
        h = mix(h, ws[i].checksum);
        bytes += ws[i].bytes;
    }
    printf("random: threads=%d ops=%ld bytes=%llu", nthreads, ops, (unsigned long long)bytes);
    for (int k = 0; k < NOPS; k++)
        printf(" %s=%llu", op_names[k], (unsigned long long)counts[k]);
    printf(" checksum=%016llx\n", (unsigned long long)h);
    free(ws);
}

/* ------------------------------------------------------------------------ */
/* phase 2: producers -> ring -> consumers (cross-thread free)               */

#define RING 256

typedef struct {
    void *p;
    size_t n;
    uint64_t tag;
} item_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    item_t items[RING];
    size_t head, count;
} ring = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0}}, 0, 0};

static void ring_push(item_t it)
{
    pthread_mutex_lock(&ring.mu);
    while (ring.count == RING)
        pthread_cond_wait(&ring.not_full, &ring.mu);
    ring.items[(ring.head + ring.count) % RING] = it;
    ring.count++;
    pthread_cond_signal(&ring.not_empty);
    pthread_mutex_unlock(&ring.mu);
}

static item_t ring_pop(void)
{
    pthread_mutex_lock(&ring.mu);
    while (ring.count == 0)
        pthread_cond_wait(&ring.not_empty, &ring.mu);
    item_t it = ring.items[ring.head];
    ring.head = (ring.head + 1) % RING;
    ring.count--;
    pthread_cond_signal(&ring.not_full);
    pthread_mutex_unlock(&ring.mu);
    return it;
}

typedef struct {
    pthread_t th;
    int id;
    uint64_t seed;
    long blocks;
    uint64_t sum;   /* order-independent: a sum of per-block hashes */
    uint64_t count;
} xfer_t;

static void *producer_main(void *arg)
{
    xfer_t *x = arg;
    rng_t r = {x->seed ^ (0xC0FFEEull + (uint64_t)x->id * 7919u)};
    for (long i = 0; i < x->blocks; i++) {
        size_t n = pick_size(&r);
        uint64_t tag = rnd(&r);
        void *p;
        switch (tag % 4) {
        case 0:
            p = calloc(1, n);
            check_block(p, n, fundamental_align(n), "producer calloc");
            break;
        case 1:
            p = aligned_alloc(64, n);
            check_block(p, n, 64, "producer aligned_alloc");
            break;
        default:
            p = malloc(n);
            check_block(p, n, fundamental_align(n), "producer malloc");
            break;
        }
        fill(p, n, tag);
        x->sum += mix(n, tag);
        x->count++;
        ring_push((item_t){p, n, tag});
    }
    return NULL;
}

static void *consumer_main(void *arg)
{
    xfer_t *x = arg;
    for (;;) {
        item_t it = ring_pop();
        if (it.p == NULL)
            return NULL;
        verify(it.p, it.n, it.tag, SIZE_MAX, "cross-thread block");
        if ((it.tag >> 8) % 5 == 0) {
            /* realloc a block that another thread allocated */
            size_t m = 1 + (it.tag >> 16) % 4096;
            void *q = realloc(it.p, m);
            check_block(q, m, fundamental_align(m), "consumer realloc");
            verify(q, it.n, it.tag, it.n < m ? it.n : m, "consumer realloc");
            it.p = q;
        }
        free(it.p);
        x->sum += mix(it.n, it.tag);
        x->count++;
    }
}

static void phase_cross(int nthreads, uint64_t seed, long blocks)
{
    int np = nthreads, nc = nthreads;
    xfer_t *ps = calloc((size_t)np, sizeof *ps), *cs = calloc((size_t)nc, sizeof *cs);
    for (int i = 0; i < nc; i++)
        if (pthread_create(&cs[i].th, NULL, consumer_main, &cs[i]) != 0)
            die("pthread_create failed");
    for (int i = 0; i < np; i++) {
        ps[i].id = i;
        ps[i].seed = seed;
        ps[i].blocks = blocks;
        if (pthread_create(&ps[i].th, NULL, producer_main, &ps[i]) != 0)
            die("pthread_create failed");
    }
    uint64_t psum = 0, pcount = 0, csum = 0, ccount = 0;
    for (int i = 0; i < np; i++) {
        pthread_join(ps[i].th, NULL);
        psum += ps[i].sum;
        pcount += ps[i].count;
    }
    for (int i = 0; i < nc; i++)
        ring_push((item_t){NULL, 0, 0});
    for (int i = 0; i < nc; i++) {
        pthread_join(cs[i].th, NULL);
        csum += cs[i].sum;
        ccount += cs[i].count;
    }
    if (psum != csum || pcount != ccount)
        die("cross-thread phase: produced %llu blocks, consumed %llu",
            (unsigned long long)pcount, (unsigned long long)ccount);
    printf("cross: producers=%d consumers=%d blocks=%llu checksum=%016llx\n", np, nc,
           (unsigned long long)pcount, (unsigned long long)psum);
    free(ps);
    free(cs);
}

/* ------------------------------------------------------------------------ */
/* phase 3: thread churn; survivors are freed by the main thread              */

#define CHURN_BLOCKS 32

typedef struct {
    pthread_t th;
    int index;
    uint64_t seed;
    int kept;
    item_t keep[CHURN_BLOCKS];
    uint64_t sum;
} churn_t;

static void *churn_main(void *arg)
{
    churn_t *c = arg;
    rng_t r = {c->seed ^ (0xABCDEFull * (uint64_t)(c->index + 1))};
    int nb = 8 + (int)rnd_below(&r, CHURN_BLOCKS - 8 + 1);
    item_t b[CHURN_BLOCKS];
    for (int i = 0; i < nb; i++) {
        size_t n = rnd_below(&r, 10) == 0 ? rnd_below(&r, 65536) : rnd_below(&r, 512);
        uint64_t tag = rnd(&r);
        void *p = malloc(n);
        check_block(p, n, fundamental_align(n), "churn malloc");
        fill(p, n, tag);
        b[i] = (item_t){p, n, tag};
        c->sum += mix(n, tag);
    }
    c->kept = 0;
    for (int i = 0; i < nb; i++) {
        if (b[i].tag & 1) {
            verify(b[i].p, b[i].n, b[i].tag, SIZE_MAX, "churn block");
            free(b[i].p);
        } else {
            c->keep[c->kept++] = b[i];
        }
    }
    return NULL;
}

static void phase_churn(int nthreads, uint64_t seed, int total)
{
    int batch = nthreads * 2;
    churn_t *cs = calloc((size_t)batch, sizeof *cs);
    uint64_t sum = 0, kept = 0;
    for (int base = 0; base < total; base += batch) {
        int n = total - base < batch ? total - base : batch;
        for (int i = 0; i < n; i++) {
            cs[i] = (churn_t){.index = base + i, .seed = seed};
            if (pthread_create(&cs[i].th, NULL, churn_main, &cs[i]) != 0)
                die("pthread_create failed");
        }
        for (int i = 0; i < n; i++) {
            pthread_join(cs[i].th, NULL);
            sum += cs[i].sum;
            for (int k = 0; k < cs[i].kept; k++) {
                item_t *it = &cs[i].keep[k];
                verify(it->p, it->n, it->tag, SIZE_MAX, "block of exited thread");
                free(it->p);
                kept++;
            }
        }
    }
    printf("churn: threads=%d freed_by_main=%llu checksum=%016llx\n", total,
           (unsigned long long)kept, (unsigned long long)sum);
    free(cs);
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    int nthreads = argc > 1 ? atoi(argv[1]) : 4;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : 12345;
    long ops = argc > 3 ? atol(argv[3]) : 200000;
    long blocks = argc > 4 ? atol(argv[4]) : 50000;
    int churn = argc > 5 ? atoi(argv[5]) : 3000;
    if (nthreads < 1)
        nthreads = 1;

    semantics();
    printf("semantics: OK\n");
    fflush(stdout);
    phase_random(nthreads, seed, ops);
    fflush(stdout);
    phase_cross(nthreads, seed, blocks);
    fflush(stdout);
    phase_churn(nthreads, seed, churn);
    semantics(); /* once more, now that the heap has history and threads have exited */
    printf("stress: OK seed=%llu\n", (unsigned long long)seed);
    return 0;
}
