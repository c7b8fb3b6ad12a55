/* Monotonic time, the one clock every metric of DESIGN §7 is taken with. */
#ifndef FOLO_CORE_TIMER_H
#define FOLO_CORE_TIMER_H

#include <stdint.h>

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double folo_now_s(void);

#endif
