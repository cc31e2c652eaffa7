/* Allocation before any constructor: a .preinit_array entry (runs before every
 * shared library's constructor, the preloaded allocator's included), a DT_NEEDED
 * library's constructor (initialised before the preload), and constructor(101)
 * in the executable. Each does malloc/free/calloc/realloc/free(NULL); blocks
 * from early phases are checked and freed in main. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int first_op_lib_status(void);
void *first_op_lib_block(void);

#define NKEEP 64
static void *keep_pre[NKEEP];
static void *keep_ctor[NKEEP];
static int pre_status = -1, ctor_status = -1;

static size_t sz(int i) { return (size_t)(i * 37 % 2000) + 1 + (i % 7 == 0 ? 200000 : 0); }

static int phase(void **keep, unsigned char tag) {
    int bad = 0;
    free(NULL);
    free(NULL);
    void *p = malloc(1);
    if (!p) return 1;
    free(p);
    for (int i = 0; i < NKEEP; i++) {
        size_t n = sz(i);
        unsigned char *q;
        if (i % 3 == 0) {
            q = calloc(1, n);
            if (!q) return 2;
            for (size_t j = 0; j < n; j++) if (q[j]) { bad |= 4; break; }
        } else {
            q = malloc(n);
            if (!q) return 8;
        }
        memset(q, tag, n);
        if (i % 2 == 0) {
            q = realloc(q, n * 2 + 5);
            if (!q) return 16;
            for (size_t j = 0; j < n; j++) if (q[j] != tag) { bad |= 32; break; }
            memset(q, tag, n * 2 + 5);
        }
        keep[i] = q;
    }
    /* free every third now, the rest later */
    for (int i = 0; i < NKEEP; i += 3) { free(keep[i]); keep[i] = NULL; }
    void *r = realloc(NULL, 100);
    if (!r) return 64;
    free(r);
    return bad;
}

static void preinit(int argc, char **argv, char **envp) {
    (void)argc; (void)argv; (void)envp;
    pre_status = phase(keep_pre, 0xa1);
}
__attribute__((section(".preinit_array"), used)) static void (*preinit_p)(int, char **, char **) = preinit;

__attribute__((constructor(101))) static void ctor101(void) {
    ctor_status = phase(keep_ctor, 0xc3);
}

static int check(void **keep, unsigned char tag) {
    for (int i = 0; i < NKEEP; i++) {
        if (!keep[i]) continue;
        size_t n = i % 2 == 0 ? sz(i) * 2 + 5 : sz(i);
        unsigned char *q = keep[i];
        if (q[0] != tag || q[n - 1] != tag) return 1;
        free(q);
    }
    return 0;
}

int main(void) {
    printf("preinit=%d lib=%d ctor101=%d\n", pre_status, first_op_lib_status(), ctor_status);
    if (pre_status != 0 || first_op_lib_status() != 0 || ctor_status != 0) return 1;
    if (check(keep_pre, 0xa1)) { puts("preinit blocks corrupted"); return 2; }
    if (check(keep_ctor, 0xc3)) { puts("ctor101 blocks corrupted"); return 3; }
    char *lb = first_op_lib_block();
    for (int i = 0; i < 24; i++) if (lb[i] != 0x5a) { puts("lib block corrupted"); return 4; }
    free(lb);
    puts("OK first_op_before_constructors");
    return 0;
}
