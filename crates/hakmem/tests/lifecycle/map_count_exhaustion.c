/* 100,000 blocks of 140,000 bytes: more mappings than vm.max_map_count allows
 * when each large block is its own mapping. The allocator must either serve
 * them all or return NULL with ENOMEM -- never abort -- and keep working once
 * they are freed. (Regression: hakmem aborted with "munmap failed" when
 * trimming an aligned mapping needed one mapping more than the limit.) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *p[100000];

int main(void) {
    int i;
    for (i = 0; i < 100000; i++) {
        errno = 0;
        p[i] = malloc(140000);
        if (!p[i]) {
            if (errno != ENOMEM) {
                printf("FAIL NULL at %d with errno %d, not ENOMEM\n", i, errno);
                return 1;
            }
            break;
        }
        ((char *)p[i])[139999] = 1;
    }
    for (int j = 0; j < i; j++) free(p[j]);
    for (int j = 0; j < 1000; j++) {
        void *q = malloc(140000);
        if (!q) { printf("FAIL no memory after freeing (%d)\n", j); return 1; }
        memset(q, 2, 140000);
        free(q);
    }
    printf("served %d before the limit\n", i);
    puts("OK map_count_exhaustion");
    return 0;
}
