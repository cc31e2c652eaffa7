/* Larson-like single-thread loop for instruction counts (callgrind) and
 * cache simulation (cachegrind): `slots` live blocks of 8..1000 bytes, each
 * step frees a random slot and refills it. Build: gcc -O2 larson_like.c.
 * Run: valgrind --tool=callgrind --trace-children=yes \
 *        env LD_PRELOAD=<lib> ./a.out <steps> [slots] */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
/* Larson-like single-thread loop: 1000 slots, sizes 8..1000, replace random slot, N ops */
static unsigned long long s = 4141;
static inline unsigned rnd(void){ s = s*6364136223846793005ULL + 1442695040888963407ULL; return (unsigned)(s>>33); }
int main(int argc, char**argv){
  long n = argc>1? atol(argv[1]) : 1000000;
  int slots = argc>2? atoi(argv[2]) : 1000;
  void **a = calloc(slots, sizeof(void*));
  for (int i=0;i<slots;i++){ a[i]=malloc(8+rnd()%993); *(char*)a[i]=1; }
  for (long i=0;i<n;i++){
    unsigned k = rnd()%slots;
    free(a[k]);
    size_t sz = 8+rnd()%993;
    a[k]=malloc(sz);
    *(char*)a[k]=1;
  }
  for (int i=0;i<slots;i++) free(a[i]);
  printf("ok\n");
  return 0;
}
