/*
 * tap.h - a tiny TAP producer for unit tests (run by automake's tap-driver.sh)
 */
#ifndef CHATSYNC_TAP_H
#define CHATSYNC_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int tap_count, tap_failed;

static bool tap_ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));

static bool
tap_ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	printf("%s %d - ", cond ? "ok" : "not ok", ++tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!cond)
		tap_failed++;
	return cond;
}

#define ok(cond, ...) tap_ok((cond), __VA_ARGS__)

/* Compares two strings (either may be NULL) and shows both on failure. */
#define is_str(got, want, ...)                                                                     \
	do {                                                                                       \
		const char *g_ = (got), *w_ = (want);                                              \
		bool same_ = (g_ == NULL && w_ == NULL) ||                                         \
			     (g_ != NULL && w_ != NULL && strcmp(g_, w_) == 0);                    \
		if (!tap_ok(same_, __VA_ARGS__))                                                   \
			printf("#   got:  \"%s\"\n#   want: \"%s\"\n", g_ ? g_ : "(null)",         \
			       w_ ? w_ : "(null)");                                                \
	} while (0)

#define is_int(got, want, ...)                                                                     \
	do {                                                                                       \
		long long g_ = (got), w_ = (want);                                                 \
		if (!tap_ok(g_ == w_, __VA_ARGS__))                                                \
			printf("#   got:  %lld\n#   want: %lld\n", g_, w_);                        \
	} while (0)

static int __attribute__((unused)) tap_done(void)
{
	printf("1..%d\n", tap_count);
	return tap_failed ? 1 : 0;
}

#endif
