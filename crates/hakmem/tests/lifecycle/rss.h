/* Address-space size (which = 0) or resident set (which = 1) of this
 * process in bytes, from /proc/self/statm (-1 on error); rss_kib() in KiB.
 * Shared by the lifecycle scenarios. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static inline long statm_field(int which) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    long size, res;
    if (sscanf(buf, "%ld %ld", &size, &res) != 2) return -1;
    return (which ? res : size) * sysconf(_SC_PAGESIZE);
}

static inline long rss_kib(void) {
    long b = statm_field(1);
    return b < 0 ? -1 : b / 1024;
}
