/*
 * log.c - leveled logging to stderr
 */
#include "config.h"

#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>

enum log_target {
	TARGET_STDERR,	/* plain lines with timestamps */
	TARGET_JOURNAL, /* stderr read by journald: "<N>" prefixes */
	TARGET_SYSLOG,
};

/* Read by the metrics server's thread too. */
static _Atomic int current_level = LOG_LEVEL_INFO;
static enum log_target target = TARGET_STDERR;

static const int priorities[] = {
	[LOG_LEVEL_ERROR] = LOG_ERR,
	[LOG_LEVEL_WARNING] = LOG_WARNING,
	[LOG_LEVEL_INFO] = LOG_INFO,
	[LOG_LEVEL_DEBUG] = LOG_DEBUG,
};

/* systemd sets JOURNAL_STREAM to "DEV:INODE" of the stream it gave us. */
static bool
stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void
log_init(bool use_syslog)
{
	if (use_syslog) {
		openlog("chatsyncd", LOG_PID, LOG_DAEMON);
		target = TARGET_SYSLOG;
	} else {
		target = stderr_is_journal() ? TARGET_JOURNAL : TARGET_STDERR;
	}
}

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARNING] = "warning",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

void
log_set_level(enum log_level level)
{
	current_level = level;
}

bool
log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	return false;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	if ((int)level > current_level)
		return;
	if (target == TARGET_STDERR) {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		n = snprintf(line, sizeof(line), "%s.%03ldZ %s: ", stamp, ts.tv_nsec / 1000000,
			     level_names[level]);
	} else if (target == TARGET_JOURNAL) {
		n = snprintf(line, sizeof(line), "<%d>%s: ", priorities[level], level_names[level]);
	} else {
		n = 0;
	}
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (target == TARGET_SYSLOG) {
		syslog(priorities[level], "%s", line);
		return;
	}
	/* One write per line, so lines from a crash are never interleaved. */
	fprintf(stderr, "%s\n", line);
}

const char *
log_escape(char *out, size_t outsz, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (s == NULL)
		s = "(null)";
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[4];
		size_t n = 0;

		if (c < 0x20 || c == 0x7f) {
			esc[n++] = '\\';
			esc[n++] = 'x';
			esc[n++] = hex[c >> 4];
			esc[n++] = hex[c & 15];
		} else if (c == '"' || c == '\\') {
			esc[n++] = '\\';
			esc[n++] = (char)c;
		} else {
			esc[n++] = (char)c;
		}
		if (o + n + 4 > outsz) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, esc, n);
		o += n;
	}
	out[o] = '\0';
	return out;
}
