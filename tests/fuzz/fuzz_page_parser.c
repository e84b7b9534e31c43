/*
 * fuzz_page_parser.c - libFuzzer target for the streaming page parser
 *
 * The input is fed in chunks whose sizes come from its first byte, so the
 * fuzzer explores chunk boundaries as well as content.  Every row handed
 * back is checked for the invariants the writer relies on.
 */
#include "membership.h"
#include "page_parser.h"
#include "twilio.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const struct page_parser_limits limits = {
	.max_bytes = 1 << 20,
	.max_string = 4096,
	.max_depth = 32,
	.max_rows = 1000,
};

static size_t rows;

static bool
check_row(void *arg, const struct page_entry *e, const char *reject)
{
	struct membership row, *m = &row;

	(void)arg;
	membership_from_entry(e, m);
	rows++;
	if (reject == NULL && !twilio_sid_valid(m->channel_sid, "CH"))
		abort(); /* an accepted row must have a valid channel SID */
	if (m->status != NULL && strlen(m->status) > limits.max_string)
		abort();
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct page_parser *p;
	size_t chunk, off = 1;
	bool ok = true;

	if (size == 0)
		return 0;
	if (p == NULL)
		p = page_parser_new(&membership_schema, &limits, check_row, NULL);
	page_parser_reset(p);
	rows = 0;
	chunk = (size_t)data[0] % 64 + 1;
	while (ok && off < size) {
		size_t n = size - off < chunk ? size - off : chunk;

		ok = page_parser_feed(p, (const char *)data + off, n);
		off += n;
	}
	if (ok)
		ok = page_parser_finish(p);
	if (!ok && strstr(page_parser_error(p), " at byte ") == NULL)
		abort(); /* every failure says where */
	if (ok && page_parser_next_url(p) != NULL &&
	    strlen(page_parser_next_url(p)) > limits.max_string)
		abort();
	if (rows != page_parser_rows(p))
		abort();
	return 0;
}
