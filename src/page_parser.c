/*
 * page_parser.c - streaming parser for one page of a listing of the API
 *
 * yajl calls back for every token.  A small stack records which container
 * each nesting level is (the top object, the array of entries, an entry, an
 * object field of it such as "links", meta, or something being skipped) and
 * `target` records what the next value is for, as set by the key before it.
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
	CTX_TOP,     /* the response object */
	CTX_ENTRIES, /* the array of entries ("channels", "users") */
	CTX_ROW,     /* one entry (or, without schema->key, the response itself) */
	CTX_SUB,     /* an object field of an entry ("links") */
	CTX_META,    /* "meta" */
	CTX_SKIP,    /* a container we ignore */
};

enum target {
	T_SKIP,
	T_TOP,
	T_ENTRIES,
	T_META,
	T_ROW,
	T_NEXT_URL,
	T_META_KEY,
	T_META_URL,
	T_FIELD, /* field number p->field of the entry */
};

/* top, the entries, an entry, an object field of it: the deepest nesting we keep state for */
#define MAX_STACK 4

struct page_parser {
	const struct page_schema *schema;
	struct page_parser_limits limits;
	page_row_fn on_row;
	void *arg;

	yajl_handle yajl;
	size_t offset; /* bytes fed before the current chunk */
	enum ctx stack[MAX_STACK];
	unsigned depth;
	unsigned skip_depth; /* nesting inside a skipped container */
	enum target target;
	unsigned field; /* for T_FIELD */
	unsigned sub;	/* the object field being parsed, in CTX_SUB */
	size_t key_len; /* strlen(schema->key) */
	bool done_top;

	/* Each field's name split once: "links.channel" is leaf "channel" inside "links". */
	struct {
		const char *leaf;
		size_t leaf_len;
		size_t within_len; /* the object field's name before '.'; 0 at the entry's level */
	} names[PAGE_MAX_FIELDS];

	/* the entry being parsed */
	struct buf str[PAGE_MAX_FIELDS];
	struct page_entry row;
	const char *row_reject; /* why the entry cannot be stored, or NULL */

	bool saw_entries, saw_meta, meta_key_ok;
	struct buf next_url;
	bool has_next_url;
	struct buf self_url; /* meta.url: the page as the API names it */
	bool has_self_url;
	size_t rows;

	char reject[96]; /* the reason for row_reject, when it names a field */
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

static const struct page_field *
field_of(const struct page_parser *p, unsigned i)
{
	return &p->schema->fields[i];
}

static void
row_clear(struct page_parser *p)
{
	for (unsigned i = 0; i < p->schema->n_fields; i++)
		buf_reset(&p->str[i]);
	memset(&p->row, 0, sizeof(p->row));
	p->row_reject = NULL;
}

static int
emit_row(struct page_parser *p)
{
	const char *reject = p->row_reject;
	const char *sid_name = field_of(p, 0)->name;

	for (unsigned i = 0; i < p->schema->n_fields; i++)
		p->row.str[i] = field_of(p, i)->type == PAGE_FIELD_STRING && p->row.has[i]
					? buf_str(&p->str[i])
					: NULL;
	if (reject == NULL && p->row.str[0] == NULL) {
		snprintf(p->reject, sizeof(p->reject), "%s is missing or null", sid_name);
		reject = p->reject;
	} else if (reject == NULL && !twilio_sid_valid(p->row.str[0], p->schema->sid_prefix)) {
		snprintf(p->reject, sizeof(p->reject), "%s is not %s", sid_name,
			 p->schema->sid_kind);
		reject = p->reject;
	}
	if (++p->rows > p->limits.max_rows)
		return fail(p, "more than %zu entries in one page", p->limits.max_rows);
	if (!p->on_row(p->arg, &p->row, reject))
		return fail(p, "stopped by the caller");
	return 1;
}

/* Which container does a value opening here start, given the target? */
static enum ctx
ctx_for(const struct page_parser *p, bool is_map)
{
	switch (p->target) {
	case T_TOP:
		return !is_map ? CTX_SKIP : p->schema->key == NULL ? CTX_ROW : CTX_TOP;
	case T_ENTRIES:
		return is_map ? CTX_SKIP : CTX_ENTRIES;
	case T_ROW:
		return is_map ? CTX_ROW : CTX_SKIP;
	case T_META:
		return is_map ? CTX_META : CTX_SKIP;
	case T_FIELD:
		return is_map && field_of(p, p->field)->type == PAGE_FIELD_OBJECT ? CTX_SUB
										  : CTX_SKIP;
	default:
		return CTX_SKIP;
	}
}

/* The entry's field being parsed is NULL (null in the JSON, or of the wrong type). */
static void
clear_field(struct page_parser *p)
{
	if (p->target == T_FIELD)
		p->row.has[p->field] = false;
}

/*
 * An entry's field has an unexpected type: the field is left NULL and
 * flagged, the entry stays.  A SID of the wrong type leaves the entry
 * unidentified: it is rejected for that, and not flagged.
 */
static void
drift(struct page_parser *p)
{
	clear_field(p);
	if (p->field > 0)
		p->row.drifted |= 1u << p->field;
	else {
		snprintf(p->reject, sizeof(p->reject), "%s is not a string", field_of(p, 0)->name);
		p->row_reject = p->reject;
	}
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
	case T_ENTRIES:
		return fail(p, "\"%s\" is %s, not an array", p->schema->key, what);
	case T_META:
		return fail(p, "\"meta\" is %s, not an object", what);
	case T_ROW:
		return fail(p, "an entry of \"%s\" is %s, not an object", p->schema->key, what);
	case T_NEXT_URL:
		return fail(p, "meta.next_page_url is %s, not a string", what);
	case T_FIELD:
		drift(p);
		return 1;
	default:
		return 1;
	}
}

/* The target for a value in the current container (arrays have no keys). */
static void
set_array_target(struct page_parser *p)
{
	if (p->skip_depth > 0)
		p->target = T_SKIP;
	else if (p->depth > 0 && p->stack[p->depth - 1] == CTX_ENTRIES)
		p->target = T_ROW;
	else if (p->depth == 0)
		p->target = T_TOP;
}

/* Is the value for the target a field of this type? */
static bool
field_is(const struct page_parser *p, enum page_field_type type)
{
	return p->target == T_FIELD && field_of(p, p->field)->type == type;
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
	if (p->target == T_TOP || p->target == T_ENTRIES || p->target == T_META ||
	    p->target == T_ROW)
		return wrong_type(p, "null");
	clear_field(p); /* any entry field may be null */
	return 1;
}

static int
on_bool(void *ctx, int v)
{
	struct page_parser *p = ctx;

	set_array_target(p);
	if (field_is(p, PAGE_FIELD_BOOLEAN)) {
		p->row.has[p->field] = true;
		p->row.num[p->field] = v != 0;
		return 1;
	}
	return wrong_type(p, "a boolean");
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
	if (field_is(p, PAGE_FIELD_INTEGER)) {
		p->row.has[p->field] = true;
		p->row.num[p->field] = v;
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
	if (field_is(p, PAGE_FIELD_STRING)) {
		dst = &p->str[p->field];
		p->row.has[p->field] = true;
	} else if (p->target == T_NEXT_URL) {
		dst = &p->next_url;
		p->has_next_url = true;
	} else if (p->target == T_META_URL) {
		dst = &p->self_url;
		p->has_self_url = true;
	} else if (p->target == T_META_KEY) {
		p->meta_key_ok = len == p->key_len && memcmp(s, p->schema->key, len) == 0;
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
	c = ctx_for(p, is_map);
	if (c == CTX_SKIP && p->target != T_SKIP &&
	    !wrong_type(p, is_map ? "an object" : "an array"))
		return 0;
	if (c == CTX_SUB)
		p->sub = p->field;
	p->target = T_SKIP;
	/* Containers we ignore are only counted, so any depth costs no memory. */
	if (c == CTX_SKIP || p->skip_depth > 0) {
		p->skip_depth++;
		return 1;
	}
	if (c == CTX_ROW)
		row_clear(p);
	if (c == CTX_ENTRIES)
		p->saw_entries = true;
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
	if (c == CTX_ROW && p->depth == 0)
		p->done_top = true; /* a response that is one entry */
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

static bool
key_is(const unsigned char *key, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(key, want, len) == 0;
}

/*
 * The field named key: at the entry's level (within is NULL) or inside the
 * object field within ("links").  Called for every key of every entry.
 */
static bool
find_field(struct page_parser *p, const char *within, const unsigned char *key, size_t len)
{
	size_t within_len = within != NULL ? strlen(within) : 0;

	for (unsigned i = 0; i < p->schema->n_fields; i++) {
		if (p->names[i].within_len != within_len || p->names[i].leaf_len != len ||
		    memcmp(p->names[i].leaf, key, len) != 0)
			continue;
		if (within_len > 0 && memcmp(field_of(p, i)->name, within, within_len) != 0)
			continue;
		p->target = T_FIELD;
		p->field = i;
		return true;
	}
	return false;
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
		if (key_is(key, len, p->schema->key))
			p->target = p->saw_entries ? T_SKIP : T_ENTRIES;
		else if (key_is(key, len, "meta"))
			p->target = p->saw_meta ? T_SKIP : T_META;
		break;
	case CTX_ROW:
		find_field(p, NULL, key, len);
		break;
	case CTX_SUB:
		find_field(p, field_of(p, p->sub)->name, key, len);
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
	for (unsigned i = 0; i < PAGE_MAX_FIELDS; i++)
		buf_free(&p->str[i]);
	buf_free(&p->next_url);
	buf_free(&p->self_url);
	free(p);
}

struct page_parser *
page_parser_new(const struct page_schema *schema, const struct page_parser_limits *limits,
		page_row_fn on_row, void *arg)
{
	struct page_parser *p = xcalloc(1, sizeof(*p));

	p->schema = schema;
	p->key_len = schema->key != NULL ? strlen(schema->key) : 0;
	for (unsigned i = 0; i < schema->n_fields; i++) {
		const char *name = schema->fields[i].name, *dot = strchr(name, '.');

		p->names[i].within_len = dot != NULL ? (size_t)(dot - name) : 0;
		p->names[i].leaf = dot != NULL ? dot + 1 : name;
		p->names[i].leaf_len = strlen(p->names[i].leaf);
	}
	p->limits = *limits;
	p->on_row = on_row;
	p->arg = arg;
	for (unsigned i = 0; i < PAGE_MAX_FIELDS; i++)
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
	p->saw_entries = p->saw_meta = false;
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
	if (p->schema->key == NULL)
		return true; /* one entry, no meta */
	if (!p->saw_meta)
		return fail(p, "the response has no \"meta\" object");
	if (!p->meta_key_ok)
		return fail(p, "meta.key is not \"%s\"", p->schema->key);
	if (!p->saw_entries)
		return fail(p, "the response has no \"%s\" array", p->schema->key);
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
