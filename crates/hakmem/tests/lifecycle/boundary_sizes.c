/* Size-class boundaries +-1, impossible sizes and alignments, and every
 * memalign power of two. Class boundaries: 16..128 step 16, then four per
 * doubling (x1.25, x1.5, x1.75, x2) up to 128 KiB; sizes a bit past the table
 * (the direct-mapped path) are covered too. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int bad;
/* opaque to the compiler, so it cannot fold impossible requests */
static volatile size_t v_size_max = SIZE_MAX;
static size_t hide(size_t x) { return x + (v_size_max - SIZE_MAX); }
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL: " __VA_ARGS__); putchar('\n'); bad++; } } while (0)

static void use(unsigned char *p, size_t n, const char *what, size_t arg) {
    if (n == 0) return;
    unsigned char t = (unsigned char)(n * 31 + 7), u = n > 1 ? (unsigned char)(t ^ 0xff) : t;
    p[0] = t;
    p[n - 1] = u;
    if (n > 2) memset(p + 1, 0x3c, n - 2);
    CHECK(p[0] == t && p[n - 1] == u, "%s(%zu): read back", what, arg);
    CHECK(malloc_usable_size(p) >= n, "%s(%zu): usable %zu < %zu", what, arg, malloc_usable_size(p), n);
}

static void expect_enomem_malloc(size_t n, const char *name) {
    n = hide(n);
    errno = 0;
    void *p = malloc(n);
    CHECK(p == NULL && errno == ENOMEM, "malloc(%s) = %p errno %d", name, p, errno);
    if (p) free(p);
    errno = 0;
    p = calloc(1, n);
    CHECK(p == NULL && errno == ENOMEM, "calloc(1, %s) = %p errno %d", name, p, errno);
    if (p) free(p);
    void *q = malloc(100);
    memset(q, 0x11, 100);
    errno = 0;
    p = realloc(q, n);
    CHECK(p == NULL && errno == ENOMEM, "realloc(p, %s) = %p errno %d", name, p, errno);
    if (p) free(p);
    else {
        CHECK(((unsigned char *)q)[99] == 0x11, "realloc(p, %s) failure clobbered the old block", name);
        free(q);
    }
}

int main(void) {
    /* the boundary list */
    size_t bounds[64];
    int nb = 0;
    for (size_t s = 16; s <= 128; s += 16) bounds[nb++] = s;
    for (size_t k = 128; k < 128 * 1024; k *= 2) {
        bounds[nb++] = k + k / 4;
        bounds[nb++] = k + k / 2;
        bounds[nb++] = k + 3 * k / 4;
        bounds[nb++] = 2 * k;
    }
    bounds[nb++] = 256 * 1024;
    bounds[nb++] = 1024 * 1024;
    printf("%d boundaries, last %zu\n", nb, bounds[nb - 2]);

    void *prev = NULL;
    for (int i = 0; i < nb; i++) {
        for (int d = -1; d <= 1; d++) {
            size_t n = bounds[i] + (size_t)d;
            unsigned char *p = malloc(n);
            CHECK(p != NULL, "malloc(%zu) NULL", n);
            if (!p) continue;
            CHECK(((uintptr_t)p & 15) == 0, "malloc(%zu) = %p not 16-aligned", n, (void *)p);
            use(p, n, "malloc", n);
            unsigned char *z = calloc(n, 1);
            CHECK(z != NULL, "calloc(%zu) NULL", n);
            if (z) {
                CHECK(z[0] == 0 && z[n - 1] == 0 && z[n / 2] == 0, "calloc(%zu) not zeroed", n);
                use(z, n, "calloc", n);
                free(z);
            }
            /* grow across the next boundary and shrink back, contents kept */
            size_t up = (i + 1 < nb ? bounds[i + 1] : n * 2) + 1;
            p[0] = 0xe1;
            p[n - 1] = 0xe2;
            unsigned char *r = realloc(p, up);
            CHECK(r && r[0] == 0xe1 && r[n - 1] == 0xe2, "realloc(%zu -> %zu) lost data", n, up);
            if (!r) { free(p); continue; }
            use(r, up, "realloc-up", up);
            r[0] = 0xd1;
            size_t down = n > 1 ? n - 1 : 1;
            r[down - 1] = 0xd2;
            unsigned char *s = realloc(r, down);
            CHECK(s && s[0] == 0xd1 && s[down - 1] == 0xd2, "realloc(%zu -> %zu) lost data", up, down);
            if (!s) { free(r); continue; }
            free(prev);
            prev = s; /* keep one block alive across iterations */
        }
    }
    free(prev);

    /* malloc(0) and realloc to 0-ish */
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 && z2 && z1 != z2, "malloc(0) must return unique pointers (%p %p)", z1, z2);
    free(z1);
    free(z2);

    /* impossible sizes */
    expect_enomem_malloc(SIZE_MAX, "SIZE_MAX");
    expect_enomem_malloc(SIZE_MAX / 2, "SIZE_MAX/2");
    expect_enomem_malloc(PTRDIFF_MAX, "PTRDIFF_MAX");
    expect_enomem_malloc((size_t)PTRDIFF_MAX + 1, "PTRDIFF_MAX+1");
    expect_enomem_malloc(SIZE_MAX - 4095, "SIZE_MAX-4095");
    expect_enomem_malloc(SIZE_MAX - 16, "SIZE_MAX-16");
    errno = 0;
    void *ov = calloc(hide(SIZE_MAX / 2), 3);
    CHECK(ov == NULL && errno == ENOMEM, "calloc(SIZE_MAX/2, 3) = %p errno %d", ov, errno);
    errno = 0;
    ov = calloc(hide((size_t)1 << 33), (size_t)1 << 33);
    CHECK(ov == NULL && errno == ENOMEM, "calloc(2^33, 2^33) = %p errno %d", ov, errno);

    /* alignment: absurd, invalid, large */
    void *out = (void *)0x1234;
    int rc = posix_memalign(&out, hide((size_t)1 << 40), 16);
    CHECK(rc == ENOMEM, "posix_memalign(1<<40, 16) = %d (want ENOMEM %d)", rc, ENOMEM);
    CHECK(out == (void *)0x1234 || out == NULL, "posix_memalign failure wrote %p", out);
    if (rc == 0) free(out);
    out = (void *)0x1234;
    rc = posix_memalign(&out, (size_t)1 << 40, (size_t)1 << 40);
    CHECK(rc == ENOMEM, "posix_memalign(1<<40, 1<<40) = %d (want ENOMEM)", rc);
    if (rc == 0) free(out);
    out = NULL;
    rc = posix_memalign(&out, (size_t)1 << 62, 1);
    CHECK(rc == ENOMEM, "posix_memalign(1<<62, 1) = %d (want ENOMEM)", rc);
    if (rc == 0) free(out);
    size_t badal[] = {0, 1, 4, 24, 48, 4097, ((size_t)1 << 20) + 8};
    for (size_t i = 0; i < sizeof badal / sizeof *badal; i++) {
        out = (void *)0x1234;
        rc = posix_memalign(&out, badal[i], 64);
        CHECK(rc == EINVAL, "posix_memalign(%zu) = %d (want EINVAL)", badal[i], rc);
        if (rc == 0) free(out);
    }
    errno = 0;
    void *m = memalign(hide((size_t)1 << 40), 16);
    CHECK(m == NULL && errno == ENOMEM, "memalign(1<<40, 16) = %p errno %d", m, errno);
    errno = 0;
    m = aligned_alloc((size_t)1 << 40, (size_t)1 << 40);
    CHECK(m == NULL && errno == ENOMEM, "aligned_alloc(1<<40, 1<<40) = %p errno %d", m, errno);
    errno = 0;
    m = memalign(64, hide(SIZE_MAX - 100));
    CHECK(m == NULL && errno == ENOMEM, "memalign(64, SIZE_MAX-100) = %p errno %d", m, errno);

    unsigned char *a = aligned_alloc((size_t)1 << 20, (size_t)1 << 20);
    CHECK(a && ((uintptr_t)a & ((1u << 20) - 1)) == 0, "aligned_alloc(1<<20, 1<<20) = %p", (void *)a);
    if (a) { use(a, (size_t)1 << 20, "aligned_alloc", (size_t)1 << 20); free(a); }

    int aligned_ok = 0;
    for (size_t al = 16; al <= ((size_t)1 << 22); al *= 2) {
        size_t sizes[] = {0, 1, al, al - 1, al + 1};
        for (int j = 0; j < 5; j++) {
            size_t n = sizes[j];
            unsigned char *p = memalign(al, n);
            CHECK(p != NULL, "memalign(%zu, %zu) NULL", al, n);
            if (!p) continue;
            CHECK(((uintptr_t)p & (al - 1)) == 0, "memalign(%zu, %zu) = %p misaligned", al, n, (void *)p);
            use(p, n, "memalign", al);
            void *q = NULL;
            rc = posix_memalign(&q, al, n);
            CHECK(rc == 0 && q && ((uintptr_t)q & (al - 1)) == 0, "posix_memalign(%zu, %zu) = %d %p", al, n, rc, q);
            if (rc == 0) { use(q, n, "posix_memalign", al); free(q); }
            /* realloc of an aligned block keeps the data */
            if (n) {
                p[0] = 0x99;
                unsigned char *r = realloc(p, n + 100);
                CHECK(r && r[0] == 0x99, "realloc(memalign(%zu, %zu)) lost data", al, n);
                p = r ? r : p;
            }
            free(p);
            aligned_ok++;
        }
    }
    unsigned char *v = valloc(1);
    CHECK(v && ((uintptr_t)v & 4095) == 0, "valloc(1) = %p", (void *)v);
    if (v) { use(v, 1, "valloc", 1); free(v); }
    v = pvalloc(4097);
    CHECK(v && ((uintptr_t)v & 4095) == 0 && malloc_usable_size(v) >= 8192, "pvalloc(4097) = %p", (void *)v);
    free(v);

    printf("%d aligned allocations checked, %d failures\n", aligned_ok, bad);
    if (bad) return 1;
    puts("OK boundary_sizes");
    return 0;
}
