/*
 * dimension.c - the service, its users and its channels, as the API lists them
 */
#include "config.h"

#include "dimension.h"

#include "cursor.h"
#include "db.h"
#include "mem.h"
#include "page_batch.h"
#include "store.h"
#include "twilio.h"
#include "url.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The fields stored, each a column of the batch in this order, which is the
 * order of the arrays the SQL functions take.  Fields named date_* must be
 * dates; a field named attributes is kept only if configured.
 */
static const struct page_field service_fields[] = {
	{"sid", PAGE_FIELD_STRING},	      {"account_sid", PAGE_FIELD_STRING},
	{"friendly_name", PAGE_FIELD_STRING}, {"date_created", PAGE_FIELD_STRING},
	{"date_updated", PAGE_FIELD_STRING},
};

static const struct page_field user_fields[] = {
	{"sid", PAGE_FIELD_STRING},	     {"account_sid", PAGE_FIELD_STRING},
	{"identity", PAGE_FIELD_STRING},     {"friendly_name", PAGE_FIELD_STRING},
	{"role_sid", PAGE_FIELD_STRING},     {"joined_channels_count", PAGE_FIELD_INTEGER},
	{"is_online", PAGE_FIELD_BOOLEAN},   {"is_notifiable", PAGE_FIELD_BOOLEAN},
	{"attributes", PAGE_FIELD_STRING},   {"date_created", PAGE_FIELD_STRING},
	{"date_updated", PAGE_FIELD_STRING},
};

static const struct page_field channel_fields[] = {
	{"sid", PAGE_FIELD_STRING},
	{"friendly_name", PAGE_FIELD_STRING},
	{"unique_name", PAGE_FIELD_STRING},
	{"type", PAGE_FIELD_STRING},
	{"created_by", PAGE_FIELD_STRING},
	{"members_count", PAGE_FIELD_INTEGER},
	{"messages_count", PAGE_FIELD_INTEGER},
	{"attributes", PAGE_FIELD_STRING},
	{"date_created", PAGE_FIELD_STRING},
	{"date_updated", PAGE_FIELD_STRING},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct page_schema schemas[DIMENSIONS] = {
	[DIMENSION_SERVICE] = {NULL, "IS", "a Service SID", service_fields, N(service_fields)},
	[DIMENSION_USERS] = {"users", "US", "a User SID", user_fields, N(user_fields)},
	[DIMENSION_CHANNELS] = {"channels", "CH", "a Channel SID", channel_fields,
				N(channel_fields)},
};

static const char *const names[DIMENSIONS] = {"service", "users", "channels"};

/* What follows /VERSION/Services/{IS} in the first page's URL, before PageSize. */
static const char *const first_paths[DIMENSIONS] = {
	"",
	"/Users?",
	/* Without Type the API lists the public channels only. */
	"/Channels?Type=public&Type=private&",
};

/*
 * The statement that stores a page, its batch's columns from parameter 5
 * (for the service, whose one entry needs no paging, all but the SID from
 * $3, each an array of one element), then the requests and retries, and
 * for a listing the page's digest: a page with the digest it had last time
 * is not compared again.
 */
static const char service_sql[] =
	"SELECT changed, 0, 0, 0 FROM sync_service_row($1::bigint, $2::text, ($3::text[])[1], "
	"($4::text[])[1], ($5::timestamptz[])[1], ($6::timestamptz[])[1], $7::integer, "
	"$8::integer, $9::bigint)";

static const char users_sql[] =
	"SELECT inserted, updated, unchanged, deleted FROM sync_users_page($1::bigint, $2::text, "
	"$3::boolean, $4::text, $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], "
	"$10::integer[], $11::boolean[], $12::boolean[], $13::text[], $14::timestamptz[], "
	"$15::timestamptz[], $16::integer, $17::integer, $18::text, $19::bigint)";

static const char channels_sql[] =
	"SELECT inserted, updated, unchanged, deleted FROM sync_channels_page($1::bigint, "
	"$2::text, $3::boolean, $4::text, $5::text[], $6::text[], $7::text[], $8::text[], "
	"$9::text[], $10::integer[], $11::integer[], $12::text[], $13::timestamptz[], "
	"$14::timestamptz[], $15::integer, $16::integer, $17::text, $18::bigint)";

static const struct {
	const char *name; /* of the prepared statement */
	const char *sql;
} statements[DIMENSIONS] = {
	{"sync_service_row", service_sql},
	{"sync_users_page", users_sql},
	{"sync_channels_page", channels_sql},
};

const char *
dimension_name(enum dimension d)
{
	return names[d];
}

const struct page_schema *
dimension_schema(enum dimension d)
{
	return &schemas[d];
}

char *
dimension_first_url(enum dimension d, const char *base, enum twilio_api api,
		    const char *service_sid)
{
	const struct twilio_api_info *info = twilio_api_info(api);
	char *rest, *url;

	if (d == DIMENSION_SERVICE)
		return url_service(base, info->version, service_sid, "");
	rest = xasprintf("%sPageSize=%d", first_paths[d], info->max_listing_page_size);
	url = url_service(base, info->version, service_sid, rest);
	free(rest);
	return url;
}

struct page_batch *
dimension_batch_new(enum dimension d)
{
	return page_batch_new_columns(schemas[d].n_fields);
}

bool
dimension_batch_add(enum dimension d, struct page_batch *b, const struct page_entry *e,
		    bool store_attributes, unsigned *drifted)
{
	const struct page_schema *schema = &schemas[d];

	*drifted = e->drifted;
	for (unsigned i = 0; i < schema->n_fields; i++) {
		const char *name = schema->fields[i].name;
		const char *v = e->str[i];

		if (schema->fields[i].type != PAGE_FIELD_STRING) {
			page_batch_add_int(b, i, e->has[i], e->num[i]);
			continue;
		}
		if (strcmp(name, "attributes") == 0 && !store_attributes)
			v = NULL;
		if (v != NULL && strncmp(name, "date_", 5) == 0 && !twilio_date_valid(v)) {
			*drifted |= 1u << i;
			v = NULL;
		}
		page_batch_add_text(b, i, v);
	}
	return page_batch_end_row(b);
}

bool
dimension_send_page(struct db *db, enum dimension d, struct page_batch *b,
		    const struct store_page *page)
{
	const struct page_schema *schema = &schemas[d];
	char run_id[24], requests[16], retries[16], lease[24];
	const char *params[4 + PAGE_MAX_FIELDS + 4];
	char digest[33];
	int n = 0;
	bool ok = true;

	snprintf(run_id, sizeof(run_id), "%" PRId64, page->run_id);
	snprintf(requests, sizeof(requests), "%u", page->requests);
	snprintf(retries, sizeof(retries), "%u", page->retries);
	params[n++] = run_id;
	params[n++] = page->service_sid;
	if (d != DIMENSION_SERVICE) {
		params[n++] = page->first_page ? "t" : "f";
		params[n++] = page->next_url;
	}
	/* The service's statement takes every column but the SID, and picks its element. */
	for (unsigned i = d == DIMENSION_SERVICE ? 1 : 0; i < schema->n_fields; i++) {
		params[n] = page_batch_column(b, i);
		ok = ok && params[n++] != NULL;
	}
	params[n++] = requests;
	params[n++] = retries;
	if (d != DIMENSION_SERVICE) {
		page_batch_digest(b, digest);
		params[n++] = digest;
	}
	params[n++] = store_lease_param(lease, sizeof(lease), page->lease);
	if (!ok)
		db_set_error(db, "the page is too large to send");
	/* libpq copies the parameters into its output buffer before this returns. */
	ok = ok && db_send_prepared(db, statements[d].name, statements[d].sql, n, params);
	page_batch_reopen(b);
	return ok;
}

bool
dimension_page_result(struct db *db, PGresult *res, struct store_counts *out)
{
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK);

	if (ok && PQntuples(res) != 1) {
		db_set_error(db, "storing a page of a dimension listing returned %d rows, not one",
			     PQntuples(res));
		ok = false;
	}
	if (ok) {
		memset(out, 0, sizeof(*out));
		out->refused = PQgetisnull(res, 0, 0);
		if (!out->refused) {
			out->inserted = strtol(PQgetvalue(res, 0, 0), NULL, 10);
			out->updated = strtol(PQgetvalue(res, 0, 1), NULL, 10);
			out->unchanged = strtol(PQgetvalue(res, 0, 2), NULL, 10);
			out->deleted = strtol(PQgetvalue(res, 0, 3), NULL, 10);
		}
	}
	PQclear(res);
	return ok;
}

bool
dimension_position(struct db *db, int64_t run_id, const char *service_sid, enum dimension d,
		   struct cursor_position *out)
{
	static const char sql[] =
		"SELECT c.run_id, c.state, c.next_page_url, c.pages_done, NULL::text "
		"FROM (SELECT) one LEFT JOIN sync_dimension_cursors c "
		"ON c.service_sid = $1 AND c.listing = $2";
	const char *params[2] = {service_sid, names[d]};
	PGresult *res = db_exec_prepared(db, "sync_dimension_position", sql, 2, params);
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK);

	if (ok && PQntuples(res) != 1) {
		db_set_error(db, "reading the cursor of the %s listing returned %d rows", names[d],
			     PQntuples(res));
		ok = false;
	}
	if (ok)
		cursor_position_from_row(res, 0, run_id, out);
	PQclear(res);
	return ok;
}

bool
dimension_record_failure(struct db *db, int64_t run_id, const char *service_sid, enum dimension d,
			 const struct cursor_error *e)
{
	static const char sql[] = "SELECT sync_dimension_failed($1::bigint, $2, $3, $4, $5, "
				  "$6::integer, $7::integer, $8::integer, $9::bigint)";

	return cursor_call_error(db, "sync_dimension_failed", sql, run_id, service_sid, names[d],
				 e);
}

bool
dimension_resolve_users(struct db *db, const char *service_sid, char *const *users, size_t n_users,
			bool all, char ***out, size_t *n_out)
{
	static const char sql[] =
		"SELECT user_key FROM sync_resolve_users($1::text, $2::text[], $3::boolean)";
	struct buf list;
	const char *params[3] = {service_sid, NULL, all ? "t" : "f"};
	PGresult *res = NULL;
	bool ok;

	*out = NULL;
	*n_out = 0;
	buf_init(&list, (size_t)1 << 30);
	ok = buf_append(&list, "{", 1);
	for (size_t i = 0; ok && i < n_users; i++)
		ok = db_array_add_text(&list, users[i]);
	ok = ok && buf_append(&list, "}", 1);
	if (!ok)
		db_set_error(db, "the list of users is too long to send");
	if (ok) {
		params[1] = buf_str(&list);
		res = db_exec_prepared(db, "sync_resolve_users", sql, 3, params);
		ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	}
	if (ok) {
		*n_out = (size_t)PQntuples(res);
		*out = xcalloc(*n_out + 1, sizeof(char *));
		for (size_t i = 0; i < *n_out; i++)
			(*out)[i] = xstrdup(PQgetvalue(res, (int)i, 0));
	}
	PQclear(res);
	buf_free(&list);
	return ok;
}
