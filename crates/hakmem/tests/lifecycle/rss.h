/* Resident set size of this process in KiB, from /proc/self/statm (-1 on
 * error). Shared by the lifecycle scenarios. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static long rss_kib(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    long size, res;
    if (sscanf(buf, "%ld %ld", &size, &res) != 2) return -1;
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}
