#include "core/timer.h"

#include <errno.h>
#include <time.h>

double folo_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void folo_sleep_until_s(double t_s) {
    if (!(t_s > 0)) return;
    struct timespec ts = {.tv_sec = (time_t)t_s};
    ts.tv_nsec = (long)((t_s - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec > 999999999) ts.tv_nsec = 999999999;
    int rc;
    do rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    while (rc == EINTR);
}
