/*
 * notify.c - the systemd service notification protocol (sd_notify)
 */
#include "config.h"

#include "notify.h"

#include "clock.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;
static int notify_fd = -1;
static long long watchdog_usec;
static long long last_ping_usec;

static long long
monotonic_usec(void)
{
	return (long long)(clock_now_ms() * 1000.0);
}

static void
init_watchdog(void)
{
	const char *usec = getenv("WATCHDOG_USEC");
	const char *pid = getenv("WATCHDOG_PID");

	if (usec == NULL)
		return;
	if (pid != NULL && strtol(pid, NULL, 10) != (long)getpid())
		return;
	watchdog_usec = strtoll(usec, NULL, 10);
	if (watchdog_usec < 0)
		watchdog_usec = 0;
}

void
notify_init(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	size_t len;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof(notify_addr.sun_path)) {
		log_warning("NOTIFY_SOCKET is too long; not notifying systemd");
		return;
	}
	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, path, len);
	if (path[0] == '@')
		notify_addr.sun_path[0] = '\0'; /* abstract namespace */
	notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (notify_fd < 0) {
		log_warning("could not create the systemd notification socket: %s",
			    strerror(errno));
		return;
	}
	init_watchdog();
	last_ping_usec = monotonic_usec();
}

static void
send_message(const char *msg)
{
	if (notify_fd < 0)
		return;
	if (sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL, (const struct sockaddr *)&notify_addr,
		   notify_addr_len) < 0)
		log_debug("could not notify systemd: %s", strerror(errno));
}

void
notify_ready(void)
{
	send_message("READY=1");
}

void
notify_reloading(void)
{
	char msg[64];

	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%lld", monotonic_usec());
	send_message(msg);
}

void
notify_stopping(void)
{
	send_message("STOPPING=1");
}

void
notify_status(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	if (notify_fd < 0)
		return;
	n = snprintf(msg, sizeof(msg), "STATUS=");
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	for (char *p = msg; *p != '\0'; p++) {
		if (*p == '\n')
			*p = ' ';
	}
	send_message(msg);
}

void
notify_extend_timeout(long long usec)
{
	char msg[64];

	snprintf(msg, sizeof(msg), "EXTEND_TIMEOUT_USEC=%lld", usec);
	send_message(msg);
}

void
notify_watchdog(void)
{
	long long now;

	if (notify_fd < 0 || watchdog_usec == 0)
		return;
	now = monotonic_usec();
	if (now - last_ping_usec < watchdog_usec / 2)
		return;
	last_ping_usec = now;
	send_message("WATCHDOG=1");
}
