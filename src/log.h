/*
 * log.h - leveled logging
 *
 * Lines go to stderr: with "<N>" priority prefixes and no timestamp when
 * stderr is connected to the systemd journal, with timestamps otherwise; or
 * to syslog when asked to.
 */
#ifndef CHATSYNC_LOG_H
#define CHATSYNC_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* Chooses the destination: syslog (facility daemon) or stderr. */
void log_init(bool use_syslog);

void log_set_level(enum log_level level);
/* Parses "error", "warning", "info" or "debug". */
bool log_level_parse(const char *name, enum log_level *out) __attribute__((warn_unused_result));

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/*
 * A status line (a terminal's progress line) is shown on stderr: the next
 * log line clears it first.
 */
void log_set_status_line(bool shown);

/*
 * Copies s into out (of size outsz, at least 4) so that it is safe to print
 * inside double quotes: quotes and backslashes get a backslash, C0 and C1
 * controls and DEL become \xNN, bidirectional controls and the line and
 * paragraph separators \u{N}, and bytes that are not valid UTF-8 \xNN;
 * valid UTF-8 is kept.  A value too long is cut with "...".  Returns out.
 * Every log line gets the same treatment (without the quoting), so a value
 * from the API can never forge, split or disguise a line.
 */
const char *log_escape(char *out, size_t outsz, const char *s);

#endif
