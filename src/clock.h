/*
 * clock.h - the time helpers every module uses
 *
 * Intervals are measured on CLOCK_MONOTONIC, which no clock change moves;
 * CLOCK_REALTIME is used only for what a person reads (log stamps, Unix
 * timestamps in metrics).
 */
#ifndef CHATSYNC_CLOCK_H
#define CHATSYNC_CLOCK_H

#include <stdbool.h>
#include <time.h>

/* The monotonic clock now. */
struct timespec clock_now(void);

/* The monotonic clock in milliseconds (fractional), for rates and short waits. */
double clock_now_ms(void);

/* t moved on by ms milliseconds. */
struct timespec clock_after_ms(struct timespec t, long ms);

/* Milliseconds from now until t on the monotonic clock; negative once t has passed. */
long clock_ms_until(const struct timespec *t);

/* Seconds from t until now on the monotonic clock. */
double clock_seconds_since(const struct timespec *t);

/* True once the monotonic clock has reached t. */
bool clock_reached(const struct timespec *t);

/* Seconds since the Unix epoch, on the real-time clock. */
double clock_unix_seconds(void);

#endif
