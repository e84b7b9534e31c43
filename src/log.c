/*
 * log.c - leveled logging to stderr
 */
#include "config.h"

#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
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
/* Set by the main thread, read by any that logs (the metrics listener's too). */
static _Atomic bool status_line_shown;

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
log_set_status_line(bool shown)
{
	status_line_shown = shown;
}

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

/*
 * The length of the well-formed UTF-8 sequence at s (2 to 4 bytes), its code
 * point in *cp, or 0 if s does not start one: a stray continuation byte, a
 * truncated sequence, an overlong form, a surrogate, or past U+10FFFF.
 */
static size_t
utf8_sequence(const unsigned char *s, uint32_t *cp)
{
	static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
	size_t len;
	uint32_t c;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, c = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, c = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, c = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0; /* also stops at the NUL of a truncated sequence */
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min_cp[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/*
 * Code points that could forge or disguise a log line: C0 and C1 controls,
 * DEL, the line and paragraph separators, and the bidirectional controls.
 */
static bool
unsafe_code_point(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f ||
	       (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/*
 * The escape of the character at s into esc (at most 10 bytes); returns its
 * length and sets *used to the bytes of s it stands for.  Invalid UTF-8
 * bytes become \xNN one by one, unsafe code points \u{N}; with quoted,
 * a double quote and a backslash get a backslash too.
 */
static size_t
escape_char(const char *s, bool quoted, char esc[10], size_t *used)
{
	const unsigned char *u = (const unsigned char *)s;
	uint32_t cp = u[0];
	size_t len = 1;

	if (u[0] >= 0x80) {
		len = utf8_sequence(u, &cp);
		if (len == 0) {
			*used = 1;
			return (size_t)snprintf(esc, 10, "\\x%02x", u[0]);
		}
	}
	*used = len;
	if (cp < 0x80 && unsafe_code_point(cp))
		return (size_t)snprintf(esc, 10, "\\x%02x", (unsigned)cp);
	if (unsafe_code_point(cp))
		return (size_t)snprintf(esc, 10, "\\u{%x}", (unsigned)cp);
	if (quoted && (cp == '"' || cp == '\\')) {
		esc[0] = '\\';
		esc[1] = (char)cp;
		return 2;
	}
	memcpy(esc, s, len);
	return len;
}

/* Copies s into out (outsz >= 4) escaped, cutting it with "..." if it does not fit. */
static void
escape_into(char *out, size_t outsz, const char *s, bool quoted)
{
	size_t o = 0;

	while (*s != '\0') {
		char esc[10];
		size_t used, n = escape_char(s, quoted, esc, &used);

		if (o + n + 4 > outsz) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, esc, n);
		o += n;
		s += used;
	}
	out[o] = '\0';
}

const char *
log_escape(char *out, size_t outsz, const char *s)
{
	escape_into(out, outsz, s != NULL ? s : "(null)", true);
	return out;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048], message[2048], stamp[32];
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
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	/* Whatever a message holds, the line stays one line of valid, visible text. */
	escape_into(line + n, sizeof(line) - (size_t)n, message, false);
	if (target == TARGET_SYSLOG) {
		syslog(priorities[level], "%s", line);
		return;
	}
	if (status_line_shown) {
		/* Erase the progress line; it is drawn again on its next update. */
		fputs("\r\033[K", stderr);
		status_line_shown = false;
	}
	/* One write per line, so lines from a crash are never interleaved. */
	fprintf(stderr, "%s\n", line);
}
