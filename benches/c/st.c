#include <stdlib.h>
#include <stdio.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000000;
  size_t sz = argc > 2 ? atoi(argv[2]) : 32;
  void *keep[64] = {0};
  unsigned long sum = 0;
  for (int i = 0; i < n; i++) {
    void *p = malloc(sz);
    *(volatile char *)p = 1;
    sum += (unsigned long)p & 0xff;
    free(p);
  }
  printf("%lu\n", sum);
  return 0;
}
