/* Out of memory under RLIMIT_AS: the limit is set inside the program to the
 * current address-space size plus ROOM (so the C runtime and whatever the
 * allocator reserved at start-up still fit). Allocate 64-byte blocks until
 * malloc returns NULL (errno must be ENOMEM), free them all; then 8 MiB blocks
 * until NULL, free them all; then the memory must be allocatable again
 * (3/4 of ROOM as 1 MiB blocks, then small blocks again). Blocks are chained
 * through their first word, so the test itself needs no memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define ROOM (256 * MIB)

#include "rss.h"

/* allocate blocks of size n until NULL or `cap` blocks; returns count and the
 * chain; *err gets errno of the failing call (0 if the cap was reached) */
static size_t fill(size_t n, size_t cap, void **head, int *err, int touch_all) {
    size_t count = 0;
    *head = NULL;
    *err = 0;
    while (count < cap) {
        errno = 0;
        void **p = malloc(n);
        if (!p) { *err = errno; break; }
        if (touch_all) memset(p, 0xab, n);
        else { ((char *)p)[n - 1] = 1; }
        p[0] = *head;
        *head = p;
        count++;
    }
    return count;
}

static void drain(void *head) {
    while (head) {
        void *next = *(void **)head;
        free(head);
        head = next;
    }
}

int main(void) {
    /* warm up: let the allocator and stdio set themselves up first */
    for (size_t n = 16; n <= 16 * MIB; n *= 2) free(malloc(n));
    long vm = statm_field(0);
    printf("address space before limit: %ld MiB\n", vm >> 20);
    fflush(stdout);
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = (rlim_t)vm + ROOM;
    if (setrlimit(RLIMIT_AS, &rl)) { perror("setrlimit"); return 1; }
    int bad = 0, err;
    void *head;

    /* 1. small blocks until exhaustion */
    size_t cap = ROOM / 64 * 2;
    size_t small = fill(64, cap, &head, &err, 0);
    printf("64 B: %zu blocks (%zu MiB) before NULL, errno %d (%s)\n", small, small * 64 >> 20, err,
           err == ENOMEM ? "ENOMEM" : "NOT ENOMEM");
    if (err != ENOMEM) bad |= 1;
    if (small * 64 < ROOM / 2) { printf("  too few: expected at least %zu MiB\n", ROOM / 2 >> 20); bad |= 2; }
    /* while exhausted: other entry points fail cleanly too */
    errno = 0;
    void *big = malloc(64 * MIB);
    printf("exhausted: malloc(64 MiB) = %s, errno %d\n", big ? "non-NULL" : "NULL", errno);
    if (big) free(big);
    else if (errno != ENOMEM) bad |= 4;
    drain(head);

    /* 2. large blocks until exhaustion (needs the small blocks' space back) */
    size_t large = fill(8 * MIB, ROOM / (8 * MIB) * 2, &head, &err, 0);
    printf("8 MiB: %zu blocks (%zu MiB) before NULL, errno %d (%s)\n", large, large * 8, err,
           err == ENOMEM ? "ENOMEM" : "NOT ENOMEM");
    if (err != ENOMEM) bad |= 8;
    if (large * 8 * MIB < ROOM / 2) { printf("  too few: expected at least %zu MiB\n", ROOM / 2 >> 20); bad |= 16; }
    errno = 0;
    void *c = calloc(ROOM / 64, 64);
    printf("exhausted: calloc(%zu MiB) = %s, errno %d\n", ROOM >> 20, c ? "non-NULL" : "NULL", errno);
    if (c) { free(c); bad |= 32; }
    else if (errno != ENOMEM) bad |= 32;
    drain(head);

    /* 3. everything can be allocated again */
    size_t want = ROOM * 3 / 4 / MIB;
    size_t mid = fill(MIB, want, &head, &err, 1);
    printf("1 MiB again: %zu of %zu blocks%s\n", mid, want, mid == want ? "" : " (FAILED)");
    if (mid != want) bad |= 64;
    drain(head);
    size_t small2 = fill(64, ROOM * 3 / 4 / 64, &head, &err, 0);
    printf("64 B again: %zu of %zu blocks%s\n", small2, ROOM * 3 / 4 / 64, small2 == ROOM * 3 / 4 / 64 ? "" : " (FAILED)");
    if (small2 != ROOM * 3 / 4 / 64) bad |= 128;
    drain(head);
    printf("address space at end: %ld MiB (limit %ld MiB)\n", statm_field(0) >> 20, (long)(rl.rlim_cur >> 20));
    if (bad) { printf("FAIL (mask %d)\n", bad); return 1; }
    puts("OK oom_under_ulimit");
    return 0;
}
