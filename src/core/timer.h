/* Monotonic time, the one clock every metric of DESIGN §7 is taken with. */
#ifndef FOLO_CORE_TIMER_H
#define FOLO_CORE_TIMER_H

#include <stdint.h>

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double folo_now_s(void);
/* Sleeps until folo_now_s() reaches t_s (returns at once when it has). */
void folo_sleep_until_s(double t_s);

#endif
