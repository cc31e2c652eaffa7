/* Shared library linked (DT_NEEDED) into first_op_before_constructors. ld.so
 * initialises it BEFORE the preloaded allocator (it sits later in the search
 * list), so its constructor's calls are among the allocator's first. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int lib_status = -1;
static void *lib_keep;

__attribute__((constructor)) static void lib_ctor(void) {
    int bad = 0;
    free(NULL);
    char *a = malloc(24);
    if (!a) { bad |= 1; goto out; }
    memset(a, 0x5a, 24);
    int *z = calloc(100, sizeof(int));
    if (!z) { bad |= 2; goto out; }
    for (int i = 0; i < 100; i++) if (z[i]) bad |= 4;
    a = realloc(a, 5000);
    if (!a) { bad |= 8; goto out; }
    for (int i = 0; i < 24; i++) if (a[i] != 0x5a) bad |= 16;
    free(z);
    void *big = malloc(300 << 10); /* large path */
    if (!big) bad |= 32;
    memset(big, 1, 300 << 10);
    free(big);
    lib_keep = a; /* freed later by main */
out:
    lib_status = bad;
}

int first_op_lib_status(void) { return lib_status; }
void *first_op_lib_block(void) { return lib_keep; }
