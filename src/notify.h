/*
 * notify.h - the systemd service notification protocol (sd_notify)
 *
 * Speaks the protocol directly: one datagram per message to the socket
 * named by $NOTIFY_SOCKET.  Without that variable every call does nothing.
 */
#ifndef CHATSYNC_NOTIFY_H
#define CHATSYNC_NOTIFY_H

#include <stdbool.h>

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID; call once at startup. */
void notify_init(void);

/* Sends "READY=1". */
void notify_ready(void);

/* Sends "RELOADING=1" (with MONOTONIC_USEC) or "READY=1" after a reload. */
void notify_reloading(void);

/* Sends "STOPPING=1". */
void notify_stopping(void);

/* Sends "STATUS=..." (printf-style; newlines are replaced). */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Sends "EXTEND_TIMEOUT_USEC=usec": the start (or stop) may take usec
 * longer from now, for a start that waits on a lock or runs migrations.
 */
void notify_extend_timeout(long long usec);

/*
 * Sends "WATCHDOG=1" if the watchdog is on and half its interval has passed
 * since the last ping; cheap enough to call on every loop iteration.
 */
void notify_watchdog(void);

#endif
