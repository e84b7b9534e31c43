/*
 * test_log.c - log_escape: control characters, quotes and backslashes,
 * bytes passed through, truncation to the buffer and NUL termination
 */
#include "config.h"

#include "log.h"

#include "tap.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CANARY 'X'

/* A buffer of outsz bytes inside a larger one, so that writes past it show. */
struct guarded {
	char buf[512];
	size_t outsz;
};

static const char *
escape(struct guarded *g, size_t outsz, const char *s)
{
	memset(g->buf, CANARY, sizeof(g->buf));
	g->outsz = outsz;
	return log_escape(g->buf, outsz, s);
}

/* True if nothing was written past the first outsz bytes. */
static bool
untouched_after(const struct guarded *g)
{
	for (size_t i = g->outsz; i < sizeof(g->buf); i++) {
		if (g->buf[i] != CANARY)
			return false;
	}
	return true;
}

/* True if the result is NUL-terminated within outsz bytes. */
static bool
terminated(const struct guarded *g)
{
	return memchr(g->buf, '\0', g->outsz) != NULL;
}

static void
test_plain(void)
{
	struct guarded g;
	const char *r = escape(&g, 64, "US0123 ann lee/ops@example.com");

	ok(r == g.buf, "returns out");
	is_str(r, "US0123 ann lee/ops@example.com", "printable ASCII is copied as is");
	is_str(escape(&g, 64, ""), "", "an empty string gives an empty string");
	is_str(escape(&g, 64, NULL), "(null)", "NULL is shown as (null)");
	is_str(escape(&g, 64, "Zo\xc3\xab \xce\xa9mega \xe6\x97\xa5\xe6\x9c\xac"),
	       "Zo\xc3\xab \xce\xa9mega \xe6\x97\xa5\xe6\x9c\xac",
	       "bytes >= 0x80 (UTF-8) pass through");
	is_str(escape(&g, 64, "'single' 100% {}"), "'single' 100% {}",
	       "single quotes and %% are not escaped");
}

static void
test_escapes(void)
{
	struct guarded g;
	char all[32];

	is_str(escape(&g, 64, "a\nb"), "a\\x0ab", "a newline becomes \\x0a");
	is_str(escape(&g, 64, "\r\t\x1b[0m"), "\\x0d\\x09\\x1b[0m",
	       "carriage return, tab and escape are hex-escaped");
	is_str(escape(&g, 64, "del\x7f"), "del\\x7f", "DEL (0x7f) is hex-escaped");
	is_str(escape(&g, 64, "say \"hi\""), "say \\\"hi\\\"", "double quotes get a backslash");
	is_str(escape(&g, 64, "C:\\dir\\"), "C:\\\\dir\\\\", "so do backslashes");
	is_str(escape(&g, 64, "\\x0a"), "\\\\x0a",
	       "a literal \\x0a in the value stays distinguishable from an escaped newline");
	for (int c = 1; c < 32; c++)
		all[c - 1] = (char)c;
	all[31] = '\0';
	escape(&g, 512, all);
	ok(strlen(g.buf) == 31 * 4 && strspn(g.buf, "\\x0123456789abcdef") == 31 * 4,
	   "every control character 0x01..0x1f becomes a 4-byte \\xNN (%zu bytes)", strlen(g.buf));
	ok(strncmp(g.buf, "\\x01", 4) == 0 && strcmp(g.buf + 30 * 4, "\\x1f") == 0,
	   "lower-case hex, two digits: \\x01 .. \\x1f");
}

static void
test_truncation(void)
{
	struct guarded g;
	char s[64];

	is_str(escape(&g, 16, "0123456789ab"), "0123456789ab",
	       "a value of outsz - 4 bytes is copied whole");
	ok(untouched_after(&g), "nothing written past outsz");
	is_str(escape(&g, 16, "0123456789abcdefghij"), "0123456789ab...",
	       "a longer value is cut and ends in ...");
	ok(untouched_after(&g) && strlen(g.buf) == 15, "it fills outsz exactly, NUL included");
	is_str(escape(&g, 16, "\n\n\n\n\n\n"), "\\x0a\\x0a\\x0a...",
	       "the cut never splits an escape sequence");
	ok(untouched_after(&g), "nothing written past outsz");
	is_str(escape(&g, 16, "012345678\n"), "012345678...",
	       "an escape that does not fit is left out whole");
	is_str(escape(&g, 16, "0123456789\"\"\"\"\""), "0123456789\\\"...",
	       "nor is a backslash parted from its quote");
	is_str(escape(&g, 4, "abc"), "...", "the smallest buffer (4 bytes) holds the ...");
	ok(untouched_after(&g), "and nothing past it");
	is_str(escape(&g, 4, ""), "", "an empty value fits even there");

	/* Whatever the length, the result is the value or a prefix of it and "...". */
	memset(s, 'v', sizeof(s));
	for (size_t outsz = 4; outsz <= 24; outsz++) {
		bool good = true;

		for (size_t len = 0; len < sizeof(s); len++) {
			size_t n;

			s[len] = '\0';
			escape(&g, outsz, s);
			s[len] = 'v';
			if (!terminated(&g) || !untouched_after(&g)) {
				good = false;
				break;
			}
			n = strlen(g.buf);
			if (n == len && strncmp(g.buf, s, len) == 0)
				continue;
			if (len < outsz - 3 || n < 3 || strcmp(g.buf + n - 3, "...") != 0 ||
			    strncmp(g.buf, s, n - 3) != 0)
				good = false;
		}
		ok(good,
		   "outsz %zu: for every length, NUL-terminated within outsz, "
		   "whole or cut with ...",
		   outsz);
	}
}

/* Bytes that are not UTF-8, and code points that disguise text, are escaped; UTF-8 is kept. */
static void
test_unicode(void)
{
	struct guarded g;

	is_str(escape(&g, 64,
		      "a\xff"
		      "b"),
	       "a\\xffb", "a byte that starts no UTF-8 sequence: \\xff");
	is_str(escape(&g, 64, "\x80x"), "\\x80x", "a stray continuation byte: \\x80");
	is_str(escape(&g, 64, "\xc3"), "\\xc3", "a sequence cut by the end of the value");
	is_str(escape(&g, 64, "\xc3("), "\\xc3(", "a sequence cut by an ASCII byte");
	is_str(escape(&g, 64, "\xc0\xaf"), "\\xc0\\xaf", "an overlong '/' (C0 AF)");
	is_str(escape(&g, 64, "\xe0\x80\xaf"), "\\xe0\\x80\\xaf", "an overlong 3-byte form");
	is_str(escape(&g, 64, "\xed\xa0\x80"), "\\xed\\xa0\\x80", "a UTF-16 surrogate (U+D800)");
	is_str(escape(&g, 64, "\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80", "past U+10FFFF");
	is_str(escape(&g, 64,
		      "\xc2\x85"
		      "next"),
	       "\\u{85}next", "a C1 control (NEL, U+0085)");
	is_str(escape(&g, 64,
		      "\xc2\x9b"
		      "31m"),
	       "\\u{9b}31m", "the C1 CSI (U+009B)");
	is_str(escape(&g, 64, "user\xe2\x80\xaegpj.exe"), "user\\u{202e}gpj.exe",
	       "RIGHT-TO-LEFT OVERRIDE (U+202E)");
	is_str(escape(&g, 64, "\xe2\x81\xa6x\xe2\x81\xa9"), "\\u{2066}x\\u{2069}",
	       "bidirectional isolates (U+2066, U+2069)");
	is_str(escape(&g, 64, "\xe2\x80\x8f\xd8\x9c"), "\\u{200f}\\u{61c}",
	       "RIGHT-TO-LEFT MARK and ARABIC LETTER MARK");
	is_str(escape(&g, 64,
		      "a\xe2\x80\xa8"
		      "b"),
	       "a\\u{2028}b", "LINE SEPARATOR (U+2028)");
	is_str(escape(&g, 64, "\xc2\xa0\xe2\x82\xac\xf0\x9f\x98\x80"),
	       "\xc2\xa0\xe2\x82\xac\xf0\x9f\x98\x80", "NBSP, euro sign and an emoji are kept");
	is_str(escape(&g, 13, "abcdef\xe2\x82\xac\xe2\x82\xac"), "abcdef\xe2\x82\xac...",
	       "a cut never splits a UTF-8 sequence");
	ok(untouched_after(&g) && terminated(&g), "and stays within outsz");
}

/* Every line logged is one line of valid, visible text, whatever the message holds. */
static void
test_lines(void)
{
	char path[] = "/tmp/test_log.XXXXXX", got[512];
	int fd = mkstemp(path), saved = dup(2);
	ssize_t n;

	if (fd < 0 || saved < 0 || dup2(fd, 2) < 0) {
		ok(false, "log lines: could not capture stderr");
		return;
	}
	log_init(false);
	log_set_level(LOG_LEVEL_INFO);
	log_warning("value %s end", "one\ntwo\xe2\x80\xae\xff\\\"");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	n = pread(fd, got, sizeof(got) - 1, 0);
	close(fd);
	unlink(path);
	got[n > 0 ? n : 0] = '\0';
	ok(strchr(got, '\n') == got + strlen(got) - 1,
	   "log lines: a newline in a message does not split the line");
	ok(strstr(got, "warning: value one\\x0atwo\\u{202e}\\xff\\\" end\n") != NULL,
	   "log lines: controls, bidi and bad bytes are escaped, quotes are not (%s)", got);
}

int
main(void)
{
	test_plain();
	test_escapes();
	test_truncation();
	test_unicode();
	test_lines();
	return tap_done();
}
