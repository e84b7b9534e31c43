/*
 * metrics_process.h - the standard process metrics, read from the kernel
 *
 * The values the Prometheus client libraries export as process_*: CPU
 * time, resident memory, open and maximum file descriptors, and the start
 * time.  No state and no logging: each function reads the kernel afresh,
 * from any thread, and returns false if it cannot (no /proc); the scrape
 * then leaves that value out.
 */
#ifndef CHATSYNC_METRICS_PROCESS_H
#define CHATSYNC_METRICS_PROCESS_H

#include <stdbool.h>

/* User and system CPU time of every thread, in seconds (getrusage). */
bool metrics_process_cpu_seconds(double *seconds) __attribute__((warn_unused_result));

/* Resident set size in bytes (/proc/self/statm). */
bool metrics_process_resident_bytes(double *bytes) __attribute__((warn_unused_result));

/* Open file descriptors (/proc/self/fd, not counting the one that reads it). */
bool metrics_process_open_fds(double *n) __attribute__((warn_unused_result));

/* The soft limit on open file descriptors (RLIMIT_NOFILE). */
bool metrics_process_max_fds(double *n) __attribute__((warn_unused_result));

/*
 * When the process started, in Unix time: /proc/self/stat's start time
 * (clock ticks since boot) plus /proc/stat's btime.  Whole seconds of boot
 * time, so it may be up to a second off.
 */
bool metrics_process_start_time(double *seconds) __attribute__((warn_unused_result));

#endif
