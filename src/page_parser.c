/*
 * page_parser.c - streaming parser for one page of a user's channel list
 *
 * yajl calls back for every token.  A small stack records which container
 * each nesting level is (the top object, the channels array, an entry, its
 * links, meta, or something being skipped) and `target` records what the
 * next value is for, as set by the key before it.
 */
#include "config.h"

#include "page_parser.h"

#include "mem.h"
#include "twilio.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

enum ctx {
	CTX_TOP,      /* the response object */
	CTX_CHANNELS, /* the "channels" array */
	CTX_ROW,      /* one channel entry */
	CTX_LINKS,    /* an entry's "links" */
	CTX_META,     /* "meta" */
	CTX_SKIP,     /* a container we ignore */
};

enum target {
	T_SKIP,
	T_TOP,
	T_CHANNELS,
	T_META,
	T_ROW,
	T_LINKS,
	T_NEXT_URL,
	T_META_KEY,
	T_META_URL,
	T_STR_FIRST, /* string fields of an entry, index into row_str[] */
	T_INT_LCMI = T_STR_FIRST + 8,
	T_INT_UNREAD,
};

enum row_str {
	RS_CHANNEL,
	RS_ACCOUNT,
	RS_SERVICE,
	RS_MEMBER,
	RS_STATUS,
	RS_CHANNEL_URL,
	RS_MEMBER_URL,
	RS_COUNT,
};

static const struct {
	const char *key;
	enum target target;
} row_keys[] = {
	{"channel_sid", T_STR_FIRST + RS_CHANNEL}, {"account_sid", T_STR_FIRST + RS_ACCOUNT},
	{"service_sid", T_STR_FIRST + RS_SERVICE}, {"member_sid", T_STR_FIRST + RS_MEMBER},
	{"status", T_STR_FIRST + RS_STATUS},	   {"last_consumed_message_index", T_INT_LCMI},
	{"unread_messages_count", T_INT_UNREAD},   {"links", T_LINKS},
};

/* top, channels, an entry, its links: the deepest nesting we keep state for */
#define MAX_STACK 4

struct page_parser {
	struct page_parser_limits limits;
	page_row_fn on_row;
	void *arg;

	yajl_handle yajl;
	size_t offset; /* bytes fed before the current chunk */
	enum ctx stack[MAX_STACK];
	unsigned depth;
	unsigned skip_depth; /* nesting inside a skipped container */
	enum target target;
	bool done_top;

	/* the entry being parsed */
	struct buf str[RS_COUNT];
	bool str_set[RS_COUNT];
	struct membership row;
	const char *row_reject; /* why the entry cannot be stored, or NULL */

	bool saw_channels, saw_meta, meta_key_ok;
	struct buf next_url;
	bool has_next_url;
	struct buf self_url; /* meta.url: the page as the API names it */
	bool has_self_url;
	size_t rows;

	char error[256];
	bool failed;
	bool parsing; /* inside yajl_parse of the current chunk */
};

static int fail(struct page_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
fail(struct page_parser *p, const char *fmt, ...)
{
	size_t at = p->offset;
	char what[200];
	va_list ap;

	if (p->failed)
		return 0;
	if (p->parsing)
		at += yajl_get_bytes_consumed(p->yajl);
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(p->error, sizeof(p->error), "%s at byte %zu", what, at);
	p->failed = true;
	return 0;
}

static void
row_clear(struct page_parser *p)
{
	for (int i = 0; i < RS_COUNT; i++) {
		buf_reset(&p->str[i]);
		p->str_set[i] = false;
	}
	memset(&p->row, 0, sizeof(p->row));
	p->row_reject = NULL;
}

static const char *
row_string(struct page_parser *p, enum row_str i)
{
	return p->str_set[i] ? buf_str(&p->str[i]) : NULL;
}

static int
emit_row(struct page_parser *p)
{
	const char *reject = p->row_reject;

	p->row.channel_sid = row_string(p, RS_CHANNEL);
	p->row.account_sid = row_string(p, RS_ACCOUNT);
	p->row.service_sid = row_string(p, RS_SERVICE);
	p->row.member_sid = row_string(p, RS_MEMBER);
	p->row.status = row_string(p, RS_STATUS);
	p->row.channel_url = row_string(p, RS_CHANNEL_URL);
	p->row.member_url = row_string(p, RS_MEMBER_URL);
	if (reject == NULL && p->row.channel_sid == NULL)
		reject = "channel_sid is missing or null";
	else if (reject == NULL && !twilio_sid_valid(p->row.channel_sid, "CH"))
		reject = "channel_sid is not a Channel SID";
	if (++p->rows > p->limits.max_rows)
		return fail(p, "more than %zu entries in one page", p->limits.max_rows);
	if (!p->on_row(p->arg, &p->row, reject))
		return fail(p, "stopped by the caller");
	return 1;
}

/* Which container does a value opening here start, given the target? */
static enum ctx
ctx_for(enum target t, bool is_map)
{
	if (t == T_TOP && is_map)
		return CTX_TOP;
	if (t == T_CHANNELS && !is_map)
		return CTX_CHANNELS;
	if (t == T_ROW && is_map)
		return CTX_ROW;
	if (t == T_LINKS && is_map)
		return CTX_LINKS;
	if (t == T_META && is_map)
		return CTX_META;
	return CTX_SKIP;
}

const char *
page_parser_field_name(unsigned field)
{
	switch (field) {
	case MEMBERSHIP_ACCOUNT_SID:
		return "account_sid";
	case MEMBERSHIP_SERVICE_SID:
		return "service_sid";
	case MEMBERSHIP_MEMBER_SID:
		return "member_sid";
	case MEMBERSHIP_STATUS:
		return "status";
	case MEMBERSHIP_LAST_CONSUMED:
		return "last_consumed_message_index";
	case MEMBERSHIP_UNREAD:
		return "unread_messages_count";
	case MEMBERSHIP_CHANNEL_URL:
		return "links.channel";
	case MEMBERSHIP_MEMBER_URL:
		return "links.member";
	case MEMBERSHIP_LINKS:
		return "links";
	default:
		return "?";
	}
}

/* The membership_field bit of an entry's target. */
static unsigned
target_field(enum target t)
{
	static const unsigned str_fields[RS_COUNT] = {
		[RS_ACCOUNT] = MEMBERSHIP_ACCOUNT_SID,	   [RS_SERVICE] = MEMBERSHIP_SERVICE_SID,
		[RS_MEMBER] = MEMBERSHIP_MEMBER_SID,	   [RS_STATUS] = MEMBERSHIP_STATUS,
		[RS_CHANNEL_URL] = MEMBERSHIP_CHANNEL_URL, [RS_MEMBER_URL] = MEMBERSHIP_MEMBER_URL,
	};

	if (t >= T_STR_FIRST && t < T_STR_FIRST + RS_COUNT)
		return str_fields[t - T_STR_FIRST];
	if (t == T_INT_LCMI)
		return MEMBERSHIP_LAST_CONSUMED;
	if (t == T_INT_UNREAD)
		return MEMBERSHIP_UNREAD;
	return t == T_LINKS ? MEMBERSHIP_LINKS : 0;
}

/* The entry's field being parsed is NULL (null in the JSON, or of the wrong type). */
static void
clear_field(struct page_parser *p)
{
	if (p->target >= T_STR_FIRST && p->target < T_STR_FIRST + RS_COUNT)
		p->str_set[p->target - T_STR_FIRST] = false;
	else if (p->target == T_INT_LCMI)
		p->row.has_last_consumed_message_index = false;
	else if (p->target == T_INT_UNREAD)
		p->row.has_unread_messages_count = false;
}

/*
 * An entry's field has an unexpected type: the field is left NULL and
 * flagged, the entry stays.  A channel_sid of the wrong type leaves the
 * entry unidentified, and it is rejected for that.
 */
static void
drift(struct page_parser *p)
{
	clear_field(p);
	p->row.drifted |= target_field(p->target);
	if (p->target == T_STR_FIRST + RS_CHANNEL)
		p->row_reject = "channel_sid is not a string";
}

/*
 * A value of the wrong type for its target: a field of an entry drifts,
 * anything else fails the page.
 */
static int
wrong_type(struct page_parser *p, const char *what)
{
	switch (p->target) {
	case T_TOP:
		return fail(p, "the response is %s, not an object", what);
	case T_CHANNELS:
		return fail(p, "\"channels\" is %s, not an array", what);
	case T_META:
		return fail(p, "\"meta\" is %s, not an object", what);
	case T_ROW:
		return fail(p, "an entry of \"channels\" is %s, not an object", what);
	case T_NEXT_URL:
		return fail(p, "meta.next_page_url is %s, not a string", what);
	case T_SKIP:
	case T_META_KEY:
	case T_META_URL:
		return 1;
	default:
		drift(p);
		return 1;
	}
}

/* The target for a value in the current container (arrays have no keys). */
static void
set_array_target(struct page_parser *p)
{
	if (p->skip_depth > 0)
		p->target = T_SKIP;
	else if (p->depth > 0 && p->stack[p->depth - 1] == CTX_CHANNELS)
		p->target = T_ROW;
	else if (p->depth == 0)
		p->target = T_TOP;
}

static int
on_null(void *ctx)
{
	struct page_parser *p = ctx;

	set_array_target(p);
	if (p->target == T_NEXT_URL) {
		p->has_next_url = false;
		return 1;
	}
	if (p->target == T_TOP || p->target == T_CHANNELS || p->target == T_META ||
	    p->target == T_ROW)
		return wrong_type(p, "null");
	clear_field(p); /* any entry field may be null */
	return 1;
}

static int
on_bool(void *ctx, int v)
{
	(void)v;
	set_array_target(ctx);
	return wrong_type(ctx, "a boolean");
}

static int
on_double(void *ctx, double v)
{
	(void)v;
	set_array_target(ctx);
	return wrong_type(ctx, "a number");
}

static int
on_integer(void *ctx, long long v)
{
	struct page_parser *p = ctx;

	set_array_target(p);
	if (p->target == T_INT_LCMI) {
		p->row.has_last_consumed_message_index = true;
		p->row.last_consumed_message_index = v;
		return 1;
	}
	if (p->target == T_INT_UNREAD) {
		p->row.has_unread_messages_count = true;
		p->row.unread_messages_count = v;
		return 1;
	}
	return wrong_type(p, "a number");
}

static int
on_string(void *ctx, const unsigned char *s, size_t len)
{
	struct page_parser *p = ctx;
	struct buf *dst = NULL;

	set_array_target(p);
	if (len > p->limits.max_string)
		return fail(p, "a string is longer than %zu bytes", p->limits.max_string);
	if (p->target >= T_STR_FIRST && p->target < T_STR_FIRST + RS_COUNT) {
		enum row_str i = (enum row_str)(p->target - T_STR_FIRST);

		dst = &p->str[i];
		p->str_set[i] = true;
	} else if (p->target == T_NEXT_URL) {
		dst = &p->next_url;
		p->has_next_url = true;
	} else if (p->target == T_META_URL) {
		dst = &p->self_url;
		p->has_self_url = true;
	} else if (p->target == T_META_KEY) {
		p->meta_key_ok = len == 8 && memcmp(s, "channels", 8) == 0;
		return 1;
	} else {
		return wrong_type(p, "a string");
	}
	buf_reset(dst);
	if (memchr(s, '\0', len) != NULL || !buf_append(dst, s, len))
		return fail(p, "a string holds a NUL character");
	return 1;
}

static int
open_container(struct page_parser *p, bool is_map)
{
	enum ctx c;

	set_array_target(p);
	if (p->depth + p->skip_depth >= p->limits.max_depth)
		return fail(p, "JSON nested deeper than %u levels", p->limits.max_depth);
	c = ctx_for(p->target, is_map);
	if (c == CTX_SKIP && p->target != T_SKIP &&
	    !wrong_type(p, is_map ? "an object" : "an array"))
		return 0;
	p->target = T_SKIP;
	/* Containers we ignore are only counted, so any depth costs no memory. */
	if (c == CTX_SKIP || p->skip_depth > 0) {
		p->skip_depth++;
		return 1;
	}
	if (c == CTX_ROW)
		row_clear(p);
	if (c == CTX_CHANNELS)
		p->saw_channels = true;
	if (c == CTX_META)
		p->saw_meta = true;
	p->stack[p->depth++] = c;
	return 1;
}

static int
close_container(struct page_parser *p)
{
	enum ctx c;

	if (p->skip_depth > 0) {
		p->skip_depth--;
		return 1;
	}
	c = p->stack[--p->depth];
	if (c == CTX_ROW)
		return emit_row(p);
	if (c == CTX_TOP)
		p->done_top = true;
	return 1;
}

static int
on_start_map(void *ctx)
{
	return open_container(ctx, true);
}

/* The end of an object or an array. */
static int
on_end_container(void *ctx)
{
	return close_container(ctx);
}

static int
on_start_array(void *ctx)
{
	return open_container(ctx, false);
}

static enum target
row_key_target(const unsigned char *key, size_t len)
{
	for (size_t i = 0; i < sizeof(row_keys) / sizeof(row_keys[0]); i++) {
		if (strlen(row_keys[i].key) == len && memcmp(row_keys[i].key, key, len) == 0)
			return row_keys[i].target;
	}
	return T_SKIP;
}

static bool
key_is(const unsigned char *key, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(key, want, len) == 0;
}

static int
on_map_key(void *ctx, const unsigned char *key, size_t len)
{
	struct page_parser *p = ctx;

	if (len > p->limits.max_string)
		return fail(p, "a key is longer than %zu bytes", p->limits.max_string);
	p->target = T_SKIP;
	if (p->skip_depth > 0)
		return 1;
	switch (p->stack[p->depth - 1]) {
	case CTX_TOP:
		if (key_is(key, len, "channels"))
			p->target = p->saw_channels ? T_SKIP : T_CHANNELS;
		else if (key_is(key, len, "meta"))
			p->target = p->saw_meta ? T_SKIP : T_META;
		break;
	case CTX_ROW:
		p->target = row_key_target(key, len);
		break;
	case CTX_LINKS:
		if (key_is(key, len, "channel"))
			p->target = T_STR_FIRST + RS_CHANNEL_URL;
		else if (key_is(key, len, "member"))
			p->target = T_STR_FIRST + RS_MEMBER_URL;
		break;
	case CTX_META:
		if (key_is(key, len, "next_page_url"))
			p->target = T_NEXT_URL;
		else if (key_is(key, len, "key"))
			p->target = T_META_KEY;
		else if (key_is(key, len, "url"))
			p->target = T_META_URL;
		break;
	default:
		break;
	}
	return 1;
}

/* yajl allocates through the wrappers, which end the process on out-of-memory. */
static void *
yajl_malloc(void *ctx, size_t size)
{
	(void)ctx;
	return xmalloc(size);
}

static void *
yajl_realloc(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	return xrealloc(ptr, size);
}

static void
yajl_free_mem(void *ctx, void *ptr)
{
	(void)ctx;
	free(ptr);
}

static yajl_alloc_funcs allocator = {yajl_malloc, yajl_realloc, yajl_free_mem, NULL};

static const yajl_callbacks callbacks = {
	.yajl_null = on_null,
	.yajl_boolean = on_bool,
	.yajl_integer = on_integer,
	.yajl_double = on_double,
	.yajl_string = on_string,
	.yajl_start_map = on_start_map,
	.yajl_map_key = on_map_key,
	.yajl_end_map = on_end_container,
	.yajl_start_array = on_start_array,
	.yajl_end_array = on_end_container,
};

void
page_parser_free(struct page_parser *p)
{
	if (p == NULL)
		return;
	if (p->yajl != NULL)
		yajl_free(p->yajl);
	for (int i = 0; i < RS_COUNT; i++)
		buf_free(&p->str[i]);
	buf_free(&p->next_url);
	buf_free(&p->self_url);
	free(p);
}

struct page_parser *
page_parser_new(const struct page_parser_limits *limits, page_row_fn on_row, void *arg)
{
	struct page_parser *p = xcalloc(1, sizeof(*p));

	p->limits = *limits;
	p->on_row = on_row;
	p->arg = arg;
	for (int i = 0; i < RS_COUNT; i++)
		buf_init(&p->str[i], limits->max_string);
	buf_init(&p->next_url, limits->max_string);
	buf_init(&p->self_url, limits->max_string);
	page_parser_reset(p);
	return p;
}
void
page_parser_reset(struct page_parser *p)
{
	if (p->yajl != NULL)
		yajl_free(p->yajl);
	p->yajl = yajl_alloc(&callbacks, &allocator, p);
	p->offset = 0;
	p->depth = 0;
	p->skip_depth = 0;
	p->target = T_TOP;
	p->done_top = false;
	p->saw_channels = p->saw_meta = false;
	p->meta_key_ok = true;
	p->has_next_url = false;
	buf_reset(&p->next_url);
	p->has_self_url = false;
	buf_reset(&p->self_url);
	p->rows = 0;
	p->error[0] = '\0';
	p->failed = false;
	p->parsing = false;
	row_clear(p);
}

static void
syntax_error(struct page_parser *p, yajl_status st, const unsigned char *data, size_t len)
{
	unsigned char *msg;
	char *nl;

	if (st == yajl_status_client_canceled || p->failed)
		return;
	msg = yajl_get_error(p->yajl, 0, data, len);
	nl = strchr((char *)msg, '\n');
	if (nl != NULL)
		*nl = '\0';
	fail(p, "invalid JSON (%s)", (const char *)msg);
	yajl_free_error(p->yajl, msg);
}

bool
page_parser_feed(struct page_parser *p, const char *data, size_t len)
{
	yajl_status st;

	if (p->failed)
		return false;
	if (len > p->limits.max_bytes || p->offset > p->limits.max_bytes - len) {
		fail(p, "response body larger than %zu bytes", p->limits.max_bytes);
		return false;
	}
	p->parsing = true;
	st = yajl_parse(p->yajl, (const unsigned char *)data, len);
	if (st != yajl_status_ok)
		syntax_error(p, st, (const unsigned char *)data, len);
	p->parsing = false;
	if (st != yajl_status_ok)
		return false;
	p->offset += len;
	return true;
}

bool
page_parser_finish(struct page_parser *p)
{
	yajl_status st;

	if (p->failed)
		return false;
	st = yajl_complete_parse(p->yajl);
	if (st != yajl_status_ok) {
		syntax_error(p, st, NULL, 0);
		return fail(p, "invalid JSON (truncated)");
	}
	if (!p->done_top)
		return fail(p, "the response is not a JSON object");
	if (!p->saw_meta)
		return fail(p, "the response has no \"meta\" object");
	if (!p->meta_key_ok)
		return fail(p, "meta.key is not \"channels\"");
	if (!p->saw_channels)
		return fail(p, "the response has no \"channels\" array");
	return true;
}

const char *
page_parser_error(const struct page_parser *p)
{
	return p->error;
}

const char *
page_parser_next_url(const struct page_parser *p)
{
	return p->has_next_url ? buf_str(&p->next_url) : NULL;
}

const char *
page_parser_self_url(const struct page_parser *p)
{
	return p->has_self_url ? buf_str(&p->self_url) : NULL;
}

size_t
page_parser_rows(const struct page_parser *p)
{
	return p->rows;
}
