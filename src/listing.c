/*
 * listing.c - one user's listing within a sweep
 */
#include "config.h"

#include "listing.h"

#include "backoff.h"
#include "clock.h"
#include "commit_queue.h"
#include "conversation.h"
#include "cursor.h"
#include "db.h"
#include "dimension.h"
#include "hash.h"
#include "http.h"
#include "lease.h"
#include "log.h"
#include "mem.h"
#include "membership.h"
#include "metrics.h"
#include "page_batch.h"
#include "page_parser.h"
#include "settings.h"
#include "twilio.h"
#include "url.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The API never sends more than 1000 entries a page (PageSize's maximum). */
#define MAX_ROWS_PER_PAGE 1000

/*
 * Pages of one listing remembered to detect a next_page_url loop;
 * limits.max_pages stops longer listings.
 */
#define LOOP_MEMORY 1024

/*
 * A page's digest: that of its accepted entries (page_batch_digest()), and
 * for a page parsed without a remark (nothing rejected, drifted or
 * unexpected), a colon and the digest of its body as received (see
 * sql/014_page_bodies.sql).
 */
#define DIGEST_HEX 32
#define PAGE_DIGEST_LEN (2 * DIGEST_HEX + 1)

/*
 * A body that may be the stored one is kept unparsed up to this size; a
 * longer one is parsed as it comes.  A page of 50 conversations is about
 * 60 KiB.
 */
#define BODY_KEEP_CAP ((size_t)1 << 20)

/*
 * What the body digest stands for, with the API, the parser's limits and
 * its schema's fields (body_start()): bump it when the same bytes would no
 * longer make the same entries otherwise (a change of what the parsers or
 * the batches make of a field, or of what they accept), so that no page is
 * taken for unchanged on a digest made before.
 */
#define BODY_DIGEST_FORMAT "chatsync page body 1"

/* What was stored of a page of the listing, by its number. */
struct known_page {
	char digest[PAGE_DIGEST_LEN + 1]; /* "": none */
	long entries;			  /* -1: unknown */
	char *next_url;			  /* NULL: none (a last page), or unknown */
};

enum listing_state {
	LISTING_IDLE,
	LISTING_FETCHING,   /* a request is in flight */
	LISTING_WAITING,    /* backing off before retrying the page (or waiting for the pacer) */
	LISTING_COMMITTING, /* the page is in the commit queue */
};

struct listing {
	struct sweep_state *st;
	enum listing_state state;
	size_t service_index;
	const char *service_sid;
	const char *user;
	char user_esc[160]; /* for log lines */
	char *url;	    /* the page being fetched */
	char *first_url;    /* the listing's first page */
	bool first_page;    /* url is the listing's first page */
	bool restarted;	    /* already restarted from page 1 once */
	unsigned page_no;   /* 1-based number of the page being fetched */
	unsigned attempts;  /* retries spent on this page */
	struct timespec retry_at;
	unsigned requests; /* not yet counted in the run */
	unsigned retries;  /* not yet counted in the run */
	unsigned rejected;
	char *next_url; /* while committing: the page's next_page_url, NULL on the last */
	char digest[PAGE_DIGEST_LEN + 1]; /* of a user's page, once it has arrived */
	struct known_page *known;	  /* what is stored of the listing's pages, by number */
	unsigned n_known;
	struct hash_digest body_hash; /* of a user's page's body, as it arrives */
	struct buf body;	      /* the body, kept unparsed while keeping_body */
	bool keeping_body;	      /* the page's stored digest has a body part to compare */
	bool body_skipped;	      /* the body was the stored one: the page was not parsed */
	long unparsed_rows;	      /* then, its entries as stored */
	unsigned remarks;	      /* entries of the page rejected, drifted or unexpected */
	/*
	 * For each page of the listing before this one: its digest if it was
	 * skipped as unchanged, else NULL; each followed by a comma.
	 */
	struct buf earlier;
	struct buf earlier_literal;   /* while committing a last page: earlier as text[] */
	struct buf unchanged_literal; /* while committing an unchanged listing: its digests */
	bool all_skipped;	      /* every page before this one skipped, from page 1 on */
	unsigned skipped_pages;	      /* pages skipped since the last one committed, */
	unsigned skipped_rows;	      /* their entries, */
	unsigned skipped_rejected;    /* and those rejected */
	unsigned drift_logged;	  /* membership fields already logged as drifted in this listing */
	struct url_seen *fetched; /* the pages fetched in this listing */
	int dimension;		  /* the dimension listed (enum dimension), or -1: a user's */
	struct page_parser_limits limits;
	struct page_parser *parser; /* of the listing in progress: one of those below */
	struct page_batch *batch;
	struct page_parser *membership_parser;
	struct page_batch *membership_batch;
	bool conversations;	  /* a user's listing of conversations */
	char foreign_service[35]; /* of the default service: an entry of another service, or "" */
	struct page_parser *conversation_parser; /* made when first needed */
	struct page_batch *conversation_batch;
	struct page_parser *dimension_parser[DIMENSIONS]; /* made when first needed */
	struct page_batch *dimension_batch[DIMENSIONS];
	struct commit commit;
	struct http_auth auth; /* the service's credentials */
	int64_t lease;	       /* the token of the listing's lease */
	bool lease_lost;       /* another instance took the lease over: the listing is dropped */
};

void
sweep_state_lost(struct sweep_state *st, struct db *db)
{
	if (!st->db_lost)
		snprintf(st->lost_reason, sizeof(st->lost_reason), "%s", db_error(db));
	st->db_lost = true;
}

bool
sweep_state_may_work(const struct sweep_state *st)
{
	return !*st->stop && !st->db_lost && !st->auth_failed;
}

/*
 * A field with an unexpected type is stored as NULL and the membership is
 * kept; each such field is logged once per listing, not once per entry.
 */
static void
log_drift(struct listing *l, const struct membership *m)
{
	unsigned fresh = m->drifted & ~l->drift_logged;

	for (unsigned bit = 1; fresh != 0; bit <<= 1) {
		if ((fresh & bit) == 0)
			continue;
		fresh &= ~bit;
		log_warning(
			"service %s user \"%s\" page %u: channel %s: %s has an unexpected type; "
			"stored as NULL (not logged again in this listing)",
			l->service_sid, l->user_esc, l->page_no, m->channel_sid,
			membership_field_name(bit));
	}
	l->drift_logged |= m->drifted;
}

static bool
on_row(void *arg, const struct page_entry *e, const char *reject)
{
	struct listing *l = arg;
	struct membership row, *m = &row;
	char esc[128];

	membership_from_entry(e, m);
	if (reject != NULL || m->drifted != 0 ||
	    (m->status != NULL && !twilio_status_known(m->status)))
		l->remarks++;
	if (reject != NULL) {
		l->rejected++;
		log_warning("service %s user \"%s\" page %u: rejected an entry: %s "
			    "(channel_sid \"%s\")",
			    l->service_sid, l->user_esc, l->page_no, reject,
			    log_escape(esc, sizeof(esc), m->channel_sid));
		return true;
	}
	if ((m->drifted & ~l->drift_logged) != 0)
		log_drift(l, m);
	if (m->status != NULL && !twilio_status_known(m->status))
		log_warning(
			"service %s user \"%s\" page %u: channel %s has unexpected status \"%s\"",
			l->service_sid, l->user_esc, l->page_no, m->channel_sid,
			log_escape(esc, sizeof(esc), m->status));
	return page_batch_add(l->batch, m);
}

/* An entry of a user's conversations listing. */
static bool
on_conversation(void *arg, const struct page_entry *e, const char *reject)
{
	struct listing *l = arg;
	unsigned drifted, fresh;
	char esc[128];

	if (reject != NULL) {
		l->rejected++;
		log_warning("service %s user \"%s\" page %u: rejected an entry: %s "
			    "(conversation_sid \"%s\")",
			    l->service_sid, l->user_esc, l->page_no, reject,
			    log_escape(esc, sizeof(esc), e->str[0]));
		l->remarks++;
		return true;
	}
	/*
	 * The account's default service is listed at /v1/Users/{U}/...: should
	 * the default change under the sweep, its entries are another service's.
	 */
	if (l->st->s->services[l->service_index].default_service &&
	    conversation_service_sid(e) != NULL &&
	    strcmp(conversation_service_sid(e), l->service_sid) != 0) {
		if (l->foreign_service[0] == '\0')
			twilio_printable(l->foreign_service, sizeof(l->foreign_service),
					 conversation_service_sid(e));
		return true;
	}
	if (!conversation_batch_add(l->batch, e, &drifted))
		return false;
	if (drifted != 0)
		l->remarks++;
	fresh = drifted & ~l->drift_logged;
	for (unsigned bit = 1; fresh != 0; bit <<= 1) {
		if ((fresh & bit) == 0)
			continue;
		fresh &= ~bit;
		log_warning("service %s user \"%s\" page %u: conversation %s: %s has an unexpected "
			    "type or value; stored as NULL (not logged again in this listing)",
			    l->service_sid, l->user_esc, l->page_no, e->str[0],
			    conversation_field_name(bit));
	}
	l->drift_logged |= drifted;
	return true;
}

/* An entry of a dimension listing. */
static bool
on_dimension_entry(void *arg, const struct page_entry *e, const char *reject)
{
	struct listing *l = arg;
	enum dimension d = (enum dimension)l->dimension;
	const struct page_schema *schema = dimension_schema(d);
	unsigned drifted, fresh;
	char esc[128];

	if (reject == NULL && d == DIMENSION_SERVICE && strcmp(e->str[0], l->service_sid) != 0)
		reject = "sid is not the service asked for";
	if (reject != NULL) {
		l->rejected++;
		log_warning("service %s %s listing page %u: rejected an entry: %s (sid \"%s\")",
			    l->service_sid, dimension_name(d), l->page_no, reject,
			    log_escape(esc, sizeof(esc), e->str[0]));
		return true;
	}
	if (!dimension_batch_add(d, l->batch, e, l->st->s->store_attributes, &drifted))
		return false;
	fresh = drifted & ~l->drift_logged;
	for (unsigned i = 0; fresh != 0 && i < schema->n_fields; i++) {
		if ((fresh & (1u << i)) != 0)
			log_warning(
				"service %s %s listing page %u: %s: %s has an unexpected type or "
				"value; stored as NULL (not logged again in this listing)",
				l->service_sid, dimension_name(d), l->page_no, e->str[0],
				schema->fields[i].name);
	}
	l->drift_logged |= drifted;
	return true;
}

/* Parses the body kept so far, and stops keeping it. */
static bool
parse_kept_body(struct listing *l)
{
	bool ok = page_parser_feed(l->parser, l->body.data, l->body.len);

	l->keeping_body = false;
	buf_reset(&l->body);
	return ok;
}

static bool
on_body(void *arg, const char *data, size_t len)
{
	struct listing *l = arg;

	if (l->dimension < 0)
		hash_digest_add(&l->body_hash, data, len);
	if (l->keeping_body) {
		if (buf_append(&l->body, data, len))
			return true;
		/* Too long to keep: parsed as it comes, as any other. */
		if (!parse_kept_body(l))
			return false;
	}
	return page_parser_feed(l->parser, data, len);
}

static void on_done(void *arg, const struct http_result *res);

bool
listing_busy(const struct listing *l)
{
	return l->state != LISTING_IDLE;
}

bool
listing_holds_slot(const struct listing *l)
{
	return l->state != LISTING_IDLE && !(l->state == LISTING_COMMITTING && l->next_url == NULL);
}

static void
forget_known(struct listing *l)
{
	for (unsigned i = 0; i < l->n_known; i++)
		free(l->known[i].next_url);
	free(l->known);
	l->known = NULL;
	l->n_known = 0;
}

void
listing_release(struct listing *l)
{
	l->st->uncounted_requests += l->requests;
	l->st->uncounted_retries += l->retries;
	l->requests = l->retries = 0;
	if (l->state == LISTING_COMMITTING)
		commit_queue_forget(l->st->commits, &l->commit);
	free(l->url);
	free(l->first_url);
	free(l->next_url);
	l->url = l->first_url = l->next_url = NULL;
	forget_known(l);
	buf_reset(&l->earlier);
	buf_free(&l->body);
	l->keeping_body = l->body_skipped = false;
	url_seen_clear(l->fetched);
	l->state = LISTING_IDLE;
}

/* A user's part in the sweep ended, as the progress and the metrics count it. */
static void
user_done(struct sweep_state *st, const char *service_sid, bool ok)
{
	st->progress.users_done++;
	metrics_user_done(st->metrics, service_sid, ok);
}

/*
 * Records on the user's cursor that its listing failed; a failure that
 * cannot be recorded is counted all the same.
 */
static void
record_failure(struct sweep_state *st, const char *service_sid, const char *user,
	       const char *user_esc, const struct cursor_error *e)
{
	if (cursor_record_error(st->db, st->run_id, service_sid, user, e, true))
		return;
	st->uncounted_requests += e->requests;
	st->uncounted_retries += e->retries;
	/* With the database lost the user is listed again once it is back: no failure to count. */
	if (!db_alive(st->db)) {
		sweep_state_lost(st, st->db);
		return;
	}
	st->unrecorded_failures++;
	log_error("service %s user \"%s\": could not record the failure: %s", service_sid, user_esc,
		  db_error(st->db));
}

/* The dimension listing ended (complete or failed): the sweep hears of it. */
static void
dimension_ended(struct listing *l)
{
	struct sweep_state *st = l->st;
	size_t service_index = l->service_index;
	int d = l->dimension;

	listing_release(l);
	if (st->dimension_ended != NULL)
		st->dimension_ended(st->dimension_ended_arg, service_index, d);
}

/* The dimension listing failed: logged, and recorded on its cursor and in sync_errors. */
static void
dimension_failed(struct listing *l, const struct cursor_error *e)
{
	struct sweep_state *st = l->st;
	enum dimension d = (enum dimension)l->dimension;

	log_warning("service %s: the %s listing failed: %s", l->service_sid, dimension_name(d),
		    e->message);
	/* The users are not failed for it: the service's metrics stay theirs. */
	if (dimension_record_failure(st->db, st->run_id, l->service_sid, d, e)) {
		l->requests = l->retries = 0;
	} else if (!db_alive(st->db)) {
		sweep_state_lost(st, st->db);
		listing_release(l); /* listed again once the database is back */
		return;
	} else {
		log_error("service %s: could not record the failure of the %s listing: %s",
			  l->service_sid, dimension_name(d), db_error(st->db));
	}
	dimension_ended(l);
}

static void fail_user(struct listing *l, const char *kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The user's listing failed, for a reason of this kind (see struct cursor_error). */
static void
fail_user(struct listing *l, const char *kind, const char *fmt, ...)
{
	struct sweep_state *st = l->st;
	char reason[512];
	struct cursor_error e = {reason, kind, l->page_no, l->requests, l->retries, l->lease};
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (l->dimension >= 0) {
		dimension_failed(l, &e);
		return;
	}
	log_warning("service %s user \"%s\": %s", l->service_sid, l->user_esc, reason);
	st->service_failed[l->service_index] = true;
	user_done(st, l->service_sid, false);
	record_failure(st, l->service_sid, l->user, l->user_esc, &e);
	l->requests = l->retries = 0;
	listing_release(l);
}

/* May the listing go on: the sweep may work, and the lease is still its own? */
static bool
may_go_on(const struct listing *l)
{
	return sweep_state_may_work(l->st) && !l->lease_lost;
}

static void drop_lost_lease(struct listing *l);

/* The listing may not go on: it ends here, told to the sweep if its lease was lost. */
static void
stop_here(struct listing *l)
{
	if (l->lease_lost)
		drop_lost_lease(l);
	else
		listing_release(l);
}

/* What is stored of the page being fetched, or NULL. */
static const struct known_page *
known_page(const struct listing *l)
{
	return l->page_no >= 1 && l->page_no <= l->n_known ? &l->known[l->page_no - 1] : NULL;
}

/* Has the stored digest d a body part? */
static bool
has_body_digest(const char *d)
{
	return strlen(d) == PAGE_DIGEST_LEN && d[DIGEST_HEX] == ':';
}

/* Do two page digests (either may lack its body part) stand for the same entries? */
static bool
same_entries(const char *a, const char *b)
{
	return strlen(a) >= DIGEST_HEX && strncmp(a, b, DIGEST_HEX) == 0 &&
	       (b[DIGEST_HEX] == '\0' || b[DIGEST_HEX] == ':');
}

/*
 * A user's page's body is digested as it arrives, after what it means to
 * this build (BODY_DIGEST_FORMAT), to which API and under which limits;
 * it is kept unparsed if the page's stored digest has a body part, since
 * it may then need no parsing.
 */
static void
body_start(struct listing *l)
{
	const struct known_page *k = known_page(l);
	const struct settings_service *svc = &l->st->s->services[l->service_index];

	l->body_skipped = false;
	l->remarks = 0;
	buf_reset(&l->body);
	l->keeping_body = false;
	if (l->dimension >= 0)
		return;
	const uint64_t terms[] = {(uint64_t)svc->api, l->limits.max_bytes, l->limits.max_string,
				  l->limits.max_depth, l->limits.max_rows};

	const struct page_schema *schema =
		l->conversations ? &conversation_schema : &membership_schema;

	hash_digest_init(&l->body_hash);
	hash_digest_add(&l->body_hash, BODY_DIGEST_FORMAT, sizeof(BODY_DIGEST_FORMAT));
	hash_digest_add(&l->body_hash, terms, sizeof(terms));
	/* The fields the parser reads, and how: a schema that changes makes other digests. */
	hash_digest_add(&l->body_hash, schema->key, strlen(schema->key) + 1);
	hash_digest_add(&l->body_hash, schema->sid_prefix, strlen(schema->sid_prefix) + 1);
	for (unsigned i = 0; i < schema->n_fields; i++) {
		const uint64_t type = schema->fields[i].type;

		hash_digest_add(&l->body_hash, schema->fields[i].name,
				strlen(schema->fields[i].name) + 1);
		hash_digest_add(&l->body_hash, &type, sizeof(type));
	}
	l->keeping_body = k != NULL && has_body_digest(k->digest) && k->entries >= 0;
}

static bool skipped_unchanged(struct listing *l, size_t rows);
static void queue_commit(struct listing *l);
static void entries_digest(struct listing *l);

/*
 * The next page the parsed page names (a copy, or NULL).  With
 * twilio.region or twilio.edge it is asked of that host, whatever Twilio's
 * host the API names, as Twilio's helper libraries do; any other host is
 * refused by next_url_ok().
 */
static char *
parsed_next_url(struct listing *l)
{
	const char *next =
		l->dimension == DIMENSION_SERVICE ? NULL : page_parser_next_url(l->parser);

	if (next == NULL)
		return NULL;
	return l->st->s->region[0] != '\0' || l->st->s->edge[0] != '\0'
		       ? url_regional(next, l->st->s->region, l->st->s->edge)
		       : xstrdup(next);
}

/*
 * Parses the body of a page that was not parsed because it was the stored
 * one, for it to be sent whole after all; false if the user failed.
 */
static bool
parse_skipped_body(struct listing *l)
{
	char *next;
	bool same;

	page_parser_reset(l->parser);
	page_batch_reset(l->batch);
	l->rejected = l->remarks = 0;
	l->foreign_service[0] = '\0';
	l->body_skipped = false;
	if (!page_parser_feed(l->parser, l->body.data, l->body.len) ||
	    !page_parser_finish(l->parser)) {
		fail_user(l, "parse", "could not parse page %u: %s", l->page_no,
			  page_parser_error(l->parser));
		return false;
	}
	if (l->foreign_service[0] != '\0') {
		fail_user(l, "parse", "page %u lists conversations of service %s", l->page_no,
			  l->foreign_service);
		return false;
	}
	next = parsed_next_url(l);
	same = next == NULL ? l->next_url == NULL
			    : l->next_url != NULL && strcmp(next, l->next_url) == 0;
	free(next);
	if (!same) {
		fail_user(l, "parse",
			  "page %u names another next page than the one stored with its digest",
			  l->page_no);
		return false;
	}
	entries_digest(l);
	return true;
}

/* The entries of the page that arrived, parsed or as stored. */
static size_t
page_rows(const struct listing *l)
{
	return l->body_skipped ? (size_t)l->unparsed_rows : page_batch_rows(l->batch);
}

/*
 * The page's body is the one stored, byte for byte: it makes the same
 * entries and names the same next page as then (stored with the digest),
 * so it is not parsed.  A page that names a next page is skipped as
 * unchanged, whether or not pages after it were stored (a listing cut
 * short); one that names none ends the listing as unchanged if it was the
 * last page stored and every page before it was skipped (else it is
 * parsed, to be sent whole).  False: the page is to be parsed.
 */
static bool
body_unchanged(struct listing *l)
{
	const struct known_page *k = known_page(l);
	char hex[DIGEST_HEX + 1];
	bool last;

	if (k == NULL)
		return false;
	hash_digest_hex(&l->body_hash, hex);
	if (strcmp(k->digest + DIGEST_HEX + 1, hex) != 0)
		return false;
	last = k->next_url == NULL;
	if (last && (l->page_no != l->n_known || !l->all_skipped))
		return false;
	if (!last &&
	    (!url_same_listing(k->next_url, l->first_url) || url_seen_has(l->fetched, k->next_url)))
		return false;
	free(l->next_url);
	l->next_url = last ? NULL : xstrdup(k->next_url);
	memcpy(l->digest, k->digest, sizeof(l->digest));
	l->body_skipped = true;
	l->unparsed_rows = k->entries;
	log_debug("service %s user \"%s\" page %u: body as stored: not parsed", l->service_sid,
		  l->user_esc, l->page_no);
	if (last || !skipped_unchanged(l, page_rows(l)))
		queue_commit(l);
	return true;
}

static void
wait_before_fetch(struct listing *l, long delay_ms)
{
	l->retry_at = clock_after_ms(clock_now(), delay_ms);
	l->state = LISTING_WAITING;
}

static void
fetch_page(struct listing *l)
{
	const struct settings *s = l->st->s;
	char why[256];
	long wait;

	if (l->page_no > (unsigned)s->max_pages) {
		fail_user(l, "limit", "listing has more than %d pages (limits.max_pages)",
			  s->max_pages);
		return;
	}
	wait = pacer_take(&l->st->pacer, clock_now_ms());
	if (wait > 0) {
		/* twilio.max_rps: this request waits for its turn. */
		wait_before_fetch(l, wait);
		return;
	}
	url_seen_add(l->fetched, l->url);
	page_parser_reset(l->parser);
	l->foreign_service[0] = '\0';
	page_batch_reset(l->batch);
	l->rejected = 0;
	body_start(l);
	l->state = LISTING_FETCHING;
	if (!http_get(l->st->http, l->url, &l->auth, on_body, on_done, l, why, sizeof(why)))
		fail_user(l, "transport", "could not start a request for page %u: %s", l->page_no,
			  why);
}

/*
 * A commit on wdb failed: the database is gone (the page is fetched again
 * later), or the statement failed on this page's data (the user fails).
 */
void
listing_commit_failed(struct commit *c, struct db *wdb)
{
	struct listing *l = c->owner;
	char why[512];

	if (*l->st->stop) {
		/* Cancelled, or cut short by the stop: fetched again next time. */
		listing_release(l);
		return;
	}
	snprintf(why, sizeof(why), "%s", db_error(wdb));
	if (!db_alive(wdb)) {
		sweep_state_lost(l->st, wdb);
		listing_release(l);
		return;
	}
	fail_user(l, "database", "could not store page %u: %s", l->page_no, why);
}

/*
 * The listing's lease is another instance's now: the listing is dropped
 * without a trace on its cursor (the other has it), and the sweep hears of
 * it (it sees the user or listing through later).
 */
static void
drop_lost_lease(struct listing *l)
{
	struct sweep_state *st = l->st;
	size_t service_index = l->service_index;
	const char *user = l->user;
	int d = l->dimension;

	if (d >= 0)
		log_info("service %s: the %s listing was taken over by another instance; dropped "
			 "here",
			 l->service_sid, dimension_name((enum dimension)d));
	else
		log_info("service %s user \"%s\": taken over by another instance; dropped here",
			 l->service_sid, l->user_esc);
	st->leases_lost++;
	metrics_lease_lost(st->metrics);
	listing_release(l);
	if (st->lease_lost != NULL)
		st->lease_lost(st->lease_lost_arg, service_index, user, d);
}

bool
listing_commit_whole(struct commit *c)
{
	struct listing *l = c->owner;

	if (!l->body_skipped)
		return true;
	if (!parse_skipped_body(l))
		return false;
	c->page.rows = page_rows(l);
	c->page.rejected = l->rejected + l->skipped_rejected;
	return true;
}

/* The page was refused: the listing's lease was taken over by another instance. */
void
listing_commit_refused(struct commit *c)
{
	struct listing *l = c->owner;

	l->lease_lost = true;
	drop_lost_lease(l);
}

bool
listing_lease(const struct listing *l, bool idle_too, struct lease_key *out)
{
	if ((l->state == LISTING_IDLE && !idle_too) || l->lease_lost || l->lease == 0)
		return false;
	out->service_sid = l->service_sid;
	out->user = l->dimension < 0 ? l->user : NULL;
	out->dimension = l->dimension;
	out->token = l->lease;
	return true;
}

void
listing_lease_lost(struct listing *l)
{
	if (l->state == LISTING_IDLE || l->lease_lost)
		return;
	l->lease_lost = true;
	/* A transfer ends first (see on_done), and a page on a writer is refused. */
	if (l->state == LISTING_WAITING ||
	    (l->state == LISTING_COMMITTING && !commit_queue_sending(l->st->commits, &l->commit)))
		drop_lost_lease(l);
}

/*
 * A page was committed, or skipped as unchanged, and another follows: fetch
 * it.
 */
static void
next_page(struct listing *l, bool skipped)
{
	if (!may_go_on(l)) {
		stop_here(l);
		return;
	}
	if (l->dimension < 0 && (!buf_append_str(&l->earlier, skipped ? l->digest : "NULL") ||
				 !buf_append_str(&l->earlier, ","))) {
		fail_user(l, "limit", "listing has too many pages to remember (limits.max_pages)");
		return;
	}
	l->all_skipped = l->all_skipped && skipped;
	free(l->url);
	l->url = l->next_url;
	l->next_url = NULL;
	l->first_page = false;
	l->page_no++;
	l->attempts = 0;
	fetch_page(l);
}

/* The page was committed: move on to the next page, or finish. */
void
listing_committed(struct commit *c, const struct store_counts *counts)
{
	struct listing *l = c->owner;
	struct sweep_state *st = l->st;
	long unchanged = counts->unchanged;

	l->state = LISTING_FETCHING; /* out of the queue: nothing to forget there */
	if (l->dimension >= 0) {
		log_debug("service %s %s listing page %u: %zu entries, %ld inserted, %ld updated, "
			  "%ld unchanged, %ld deleted, %u rejected",
			  l->service_sid, dimension_name((enum dimension)l->dimension), l->page_no,
			  page_batch_rows(l->batch), counts->inserted, counts->updated,
			  counts->unchanged, counts->deleted, l->rejected);
		l->requests = l->retries = 0;
		if (l->next_url == NULL) {
			dimension_ended(l);
			return;
		}
		next_page(l, false);
		return;
	}
	/* The pages skipped before it were counted then; the unchanged call counts them too. */
	if (c->unchanged_sent)
		unchanged -= (long)l->skipped_rows;
	st->progress.pages++;
	st->progress.rows += page_rows(l) + l->rejected;
	metrics_page(st->metrics, l->service_sid, (long)(page_rows(l) + l->rejected),
		     counts->inserted, counts->updated, unchanged, counts->deleted, l->rejected);
	l->requests = l->retries = 0;
	l->skipped_pages = l->skipped_rows = l->skipped_rejected = 0;
	log_debug("service %s user \"%s\" page %u: %zu rows, %ld inserted, %ld updated, "
		  "%ld unchanged, %ld deleted, %u rejected%s",
		  l->service_sid, l->user_esc, l->page_no, page_rows(l), counts->inserted,
		  counts->updated, unchanged, counts->deleted, l->rejected,
		  c->unchanged_sent ? " (the listing is unchanged)" : "");
	if (l->next_url == NULL) {
		user_done(st, l->service_sid, true);
		listing_release(l);
		return;
	}
	next_page(l, false);
}

/*
 * A user's page that is not the last and whose digest is the one stored
 * for its number is skipped: nothing is sent for it, and the next page is
 * fetched.  Its entries are counted here, and in the run with the next page
 * committed.
 */
static bool
skipped_unchanged(struct listing *l, size_t rows)
{
	struct sweep_state *st = l->st;
	const struct known_page *k = known_page(l);

	if (l->next_url == NULL || k == NULL || !same_entries(k->digest, l->digest))
		return false;
	/* The stored digest is the page's; one whose body was parsed again is not sent. */
	memcpy(l->digest, k->digest, sizeof(l->digest));
	st->progress.pages++;
	st->progress.rows += rows + l->rejected;
	metrics_page(st->metrics, l->service_sid, (long)(rows + l->rejected), 0, 0, (long)rows, 0,
		     l->rejected);
	l->skipped_pages++;
	l->skipped_rows += (unsigned)rows;
	l->skipped_rejected += l->rejected;
	log_debug("service %s user \"%s\" page %u: %zu rows, unchanged: skipped", l->service_sid,
		  l->user_esc, l->page_no, rows);
	next_page(l, true);
	return true;
}

/* The text[] literal of the first len bytes of list (entries each followed by a comma). */
static bool
array_literal(struct buf *out, const char *list, size_t len, const char *last)
{
	buf_reset(out);
	if (len > 0 && last == NULL)
		len--; /* the last comma */
	return buf_append_str(out, "{") && buf_append(out, list, len) &&
	       (last == NULL || buf_append_str(out, last)) && buf_append_str(out, "}");
}

/*
 * The digest of the page's entries, and of a page without remarks, its
 * body's after a colon.
 */
static void
entries_digest(struct listing *l)
{
	page_batch_digest(l->batch, l->digest);
	if (l->remarks == 0 && l->rejected == 0) {
		l->digest[DIGEST_HEX] = ':';
		hash_digest_hex(&l->body_hash, l->digest + DIGEST_HEX + 1);
	}
}

/* Hands the page to the commit queue, with what it needs to commit it. */
static void
queue_commit(struct listing *l)
{
	struct commit *c = &l->commit;
	bool user = l->dimension < 0, last = l->next_url == NULL;
	const char *earlier = NULL, *unchanged = NULL;

	if (user && !l->body_skipped) {
		entries_digest(l);
		if (skipped_unchanged(l, page_rows(l)))
			return;
	}
	if (user && last && l->page_no > 1) {
		if (!array_literal(&l->earlier_literal, buf_str(&l->earlier), l->earlier.len,
				   NULL)) {
			fail_user(l, "limit", "listing has too many pages to remember");
			return;
		}
		earlier = buf_str(&l->earlier_literal);
	}
	/* Every page as stored, the last one too: the listing is unchanged. */
	if (user && last && l->all_skipped && l->page_no == l->n_known &&
	    same_entries(l->known[l->page_no - 1].digest, l->digest)) {
		/*
		 * The digests as stored, for the server to compare; should it
		 * refuse, the page goes whole with its own (l->digest).
		 */
		if (!array_literal(&l->unchanged_literal, buf_str(&l->earlier), l->earlier.len,
				   l->known[l->page_no - 1].digest)) {
			fail_user(l, "limit", "listing has too many pages to remember");
			return;
		}
		unchanged = buf_str(&l->unchanged_literal);
	}
	if (l->body_skipped && unchanged == NULL && !parse_skipped_body(l))
		return;
	c->page = (struct store_page){
		.run_id = l->st->run_id,
		.service_sid = l->service_sid,
		.user = l->user,
		.first_page = l->first_page,
		.page_no = l->page_no,
		.next_url = l->next_url,
		.rows = page_rows(l),
		.rejected = l->rejected + l->skipped_rejected,
		.requests = l->requests,
		.retries = l->retries,
		.digest = user ? l->digest : NULL,
		.skipped_pages = l->skipped_pages,
		.skipped_rows = l->skipped_rows,
		.earlier = earlier,
		.unchanged = unchanged,
		.conversations = user && l->conversations,
		.lease = l->lease,
	};
	c->batch = l->batch;
	c->dimension = l->dimension;
	c->owner = l;
	l->state = LISTING_COMMITTING;
	commit_queue_add(l->st->commits, c);
}

/* Checks the next page's URL before the page is committed. */
static bool
next_url_ok(struct listing *l, const char *next)
{
	char esc[256];

	if (next == NULL)
		return true;
	if (!url_same_listing(next, l->first_url)) {
		fail_user(l, "url",
			  "page %u: refusing next_page_url \"%s\": not this user's listing at %s",
			  l->page_no, log_escape(esc, sizeof(esc), next),
			  l->st->s->services[l->service_index].base_url);
		return false;
	}
	if (url_seen_has(l->fetched, next)) {
		fail_user(l, "url",
			  "page %u: next_page_url \"%s\" repeats a page of this listing (a loop)",
			  l->page_no, log_escape(esc, sizeof(esc), next));
		return false;
	}
	return true;
}

/* A page arrived whole: check it, store it, move on. */
static void
page_received(struct listing *l)
{
	if (l->keeping_body) {
		if (body_unchanged(l))
			return;
		if (!parse_kept_body(l)) {
			fail_user(l, "parse", "could not parse page %u: %s", l->page_no,
				  page_parser_error(l->parser));
			return;
		}
	}
	if (!page_parser_finish(l->parser)) {
		fail_user(l, "parse", "could not parse page %u: %s", l->page_no,
			  page_parser_error(l->parser));
		return;
	}
	if (l->foreign_service[0] != '\0') {
		fail_user(l, "parse",
			  "page %u lists conversations of service %s: the account's default "
			  "conversation service changed during the sweep; the next sweep lists it",
			  l->page_no, l->foreign_service);
		return;
	}
	/* The service is one object, without meta; one that was rejected stores nothing. */
	if (l->dimension == DIMENSION_SERVICE && page_batch_rows(l->batch) == 0) {
		fail_user(l, "parse", "the service object was rejected");
		return;
	}
	/* The API may name this page differently from the URL we asked for. */
	if (page_parser_self_url(l->parser) != NULL)
		url_seen_add(l->fetched, page_parser_self_url(l->parser));
	free(l->next_url);
	l->next_url = parsed_next_url(l);
	if (!next_url_ok(l, l->next_url))
		return;
	queue_commit(l);
}

static bool
retryable(const struct http_result *res)
{
	return res->transport_error || res->status == 429 ||
	       (res->status >= 500 && res->status < 600);
}

static void
schedule_retry(struct listing *l, const struct http_result *res)
{
	const struct settings *s = l->st->s;
	long delay = backoff_delay_ms(++l->attempts, s->backoff_base_ms, s->max_backoff * 1000L,
				      res->retry_after, &l->st->rng);

	l->retries++;
	metrics_retry(l->st->metrics, res->status);
	if (res->status == 429 && pacer_throttled(&l->st->pacer, clock_now_ms()))
		log_info("the API is throttling: at most %u users in flight for now",
			 l->st->pacer.limit);
	log_info("service %s user \"%s\" page %u: %s; retry %u of %d in %.1f s", l->service_sid,
		 l->user_esc, l->page_no, res->error, l->attempts, s->max_retries, delay / 1000.0);
	wait_before_fetch(l, delay);
}

/* The API refused a resumed page URL (expired page token): list again from page 1, once. */
static void
restart_listing(struct listing *l, const struct http_result *res)
{
	log_warning("service %s user \"%s\" page %u: %s for a resumed page; restarting the listing "
		    "from page 1",
		    l->service_sid, l->user_esc, l->page_no, res->error);
	l->restarted = true;
	free(l->url);
	l->url = xstrdup(l->first_url);
	l->first_page = true;
	l->page_no = 1;
	l->attempts = 0;
	l->all_skipped = true;
	l->skipped_pages = l->skipped_rows = l->skipped_rejected = 0;
	buf_reset(&l->earlier);
	url_seen_clear(l->fetched);
	fetch_page(l);
}

static void
auth_failed(struct listing *l, const struct http_result *res)
{
	struct sweep_state *st = l->st;
	const struct settings_service *svc = &st->s->services[l->service_index];
	const struct cursor_error e = {"authentication failed", "auth", l->page_no, 0, 0, l->lease};

	if (svc->account_sid != NULL) {
		/* A subaccount's own credentials: its service's users fail, the others go on. */
		st->account_refused[l->service_index] = true;
		fail_user(l, "auth",
			  "authentication failed for account %s (%s): check the credentials of "
			  "its service's group",
			  svc->account_sid, res->error);
		return;
	}
	log_error("authentication failed (%s): check %s; stopping this sweep", res->error,
		  st->s->api_key_sid != NULL ? "twilio.api_key_sid and its secret"
					     : "twilio.account_sid and the auth token");
	st->auth_failed = true;
	st->service_failed[l->service_index] = true;
	/* Not this user's fault: the sweep stays open and tries it again first. */
	if (l->dimension < 0 &&
	    !cursor_record_error(st->db, st->run_id, l->service_sid, l->user, &e, false)) {
		if (!db_alive(st->db))
			sweep_state_lost(st, st->db);
		else
			log_error("service %s user \"%s\": could not record the error: %s",
				  l->service_sid, l->user_esc, db_error(st->db));
	}
	listing_release(l);
}

static bool
succeeded(const struct http_result *res)
{
	return res->status >= 200 && res->status < 300 && !res->transport_error && !res->aborted;
}

/* A resumed page that the API no longer knows (an expired page token)? */
static bool
resumed_page_refused(const struct listing *l, const struct http_result *res)
{
	return (res->status == 400 || res->status == 404) && !l->first_page && !l->restarted;
}

/* The kind of a failed transfer, for sync_errors: "http NNN", or "transport". */
static const char *
http_kind(const struct http_result *res, char *out, size_t outsz)
{
	if (res->transport_error || res->status == 0)
		return "transport";
	snprintf(out, outsz, "http %ld", res->status);
	return out;
}

/* A transfer ended: the sweep's policy for every outcome. */
static void
on_done(void *arg, const struct http_result *res)
{
	struct listing *l = arg;
	const struct settings *s = l->st->s;
	char kind[16];

	l->requests++;
	if (!res->aborted)
		metrics_http_response(l->st->metrics, res->transport_error ? 0 : res->status);
	if (!may_go_on(l))
		stop_here(l);
	else if (succeeded(res)) {
		pacer_success(&l->st->pacer);
		page_received(l);
	} else if (res->aborted && page_parser_error(l->parser)[0] != '\0')
		fail_user(l, "parse", "could not parse page %u: %s", l->page_no,
			  page_parser_error(l->parser));
	else if (res->status == 401 || (res->status == 403 && l->dimension < 0))
		auth_failed(l, res); /* a 403 on a dimension listing: that listing forbidden */
	else if (retryable(res) && l->attempts < (unsigned)s->max_retries)
		schedule_retry(l, res);
	else if (retryable(res))
		fail_user(l, http_kind(res, kind, sizeof(kind)),
			  "could not fetch page %u after %u retries: %s", l->page_no, l->attempts,
			  res->error);
	else if (resumed_page_refused(l, res))
		restart_listing(l, res);
	else if (res->status == 404 && l->page_no == 1 && l->dimension < 0)
		fail_user(l, "http 404", "user not found: could not fetch page 1: %s", res->error);
	else
		fail_user(l, http_kind(res, kind, sizeof(kind)), "could not fetch page %u: %s",
			  l->page_no, res->error);
}

void
sweep_state_fail_user(struct sweep_state *st, size_t service_index, const char *user, int64_t lease,
		      const char *kind, const char *reason)
{
	const char *service_sid = st->s->services[service_index].sid;
	char user_esc[160];

	log_escape(user_esc, sizeof(user_esc), user);
	log_warning("service %s user \"%s\": %s", service_sid, user_esc, reason);
	st->service_failed[service_index] = true;
	user_done(st, service_sid, false);
	const struct cursor_error e = {reason, kind, 0, 0, 0, lease};

	record_failure(st, service_sid, user, user_esc, &e);
}

struct listing *
listing_new(struct sweep_state *st)
{
	const struct settings *s = st->s;
	const struct page_parser_limits limits = {
		.max_bytes = (size_t)s->max_body,
		.max_string = (size_t)s->max_string,
		.max_depth = (unsigned)s->max_depth,
		.max_rows = MAX_ROWS_PER_PAGE,
	};
	struct listing *l = xcalloc(1, sizeof(*l));

	l->st = st;
	l->limits = limits;
	l->membership_parser = page_parser_new(&membership_schema, &limits, on_row, l);
	l->membership_batch = page_batch_new();
	l->fetched = url_seen_new(LOOP_MEMORY);
	l->dimension = -1;
	/* A digest and a comma, or "NULL,", per page: limits.max_pages bounds a listing. */
	buf_init(&l->earlier, ((size_t)s->max_pages + 1) * (PAGE_DIGEST_LEN + 1));
	buf_init(&l->earlier_literal, ((size_t)s->max_pages + 2) * (PAGE_DIGEST_LEN + 1));
	buf_init(&l->unchanged_literal, ((size_t)s->max_pages + 2) * (PAGE_DIGEST_LEN + 1));
	buf_init(&l->body, BODY_KEEP_CAP);
	return l;
}

void
listing_free(struct listing *l)
{
	if (l == NULL)
		return;
	listing_release(l);
	page_parser_free(l->membership_parser);
	page_batch_free(l->membership_batch);
	page_parser_free(l->conversation_parser);
	page_batch_free(l->conversation_batch);
	for (int d = 0; d < DIMENSIONS; d++) {
		page_parser_free(l->dimension_parser[d]);
		page_batch_free(l->dimension_batch[d]);
	}
	url_seen_free(l->fetched);
	buf_free(&l->earlier);
	buf_free(&l->earlier_literal);
	buf_free(&l->unchanged_literal);
	buf_free(&l->body);
	free(l);
}

/*
 * A stored next page is requested with the credentials: it must be a page
 * of this user's listing at the configured base URL, as a next_page_url
 * from a response must.  One that is not (the table was written to, or
 * twilio.base_url changed) restarts the listing from its first page.
 */
static bool
resume_url_ok(struct listing *l, const struct cursor_position *pos)
{
	char esc[256];

	if (url_same_listing(pos->next_url, l->first_url))
		return true;
	log_warning("service %s user \"%s\": the stored next page \"%s\" is not this user's "
		    "listing at %s; restarting the listing from page 1",
		    l->service_sid, l->user_esc, log_escape(esc, sizeof(esc), pos->next_url),
		    l->st->s->services[l->service_index].base_url);
	return false;
}

/*
 * What is stored of the listing's pages, from pos: their digests
 * (comma-separated; may be NULL), entries and next pages (taken over).
 * Entries or next pages that are not one for each page are not used.
 */
static void
known_pages(struct listing *l, struct cursor_position *pos)
{
	const char *list = pos->digests;
	unsigned n = 1;
	bool whole;

	forget_known(l);
	if (list == NULL || l->dimension >= 0)
		return;
	for (const char *p = list; *p != '\0'; p++)
		n += *p == ',';
	whole = pos->n_entries == n && pos->n_next_urls == n;
	l->known = xcalloc(n, sizeof(*l->known));
	for (const char *p = list; l->n_known < n; l->n_known++) {
		struct known_page *k = &l->known[l->n_known];
		size_t len = strcspn(p, ",");
		char *end;

		if (len < sizeof(k->digest))
			memcpy(k->digest, p, len);
		p += len + (p[len] == ',');
		k->entries = -1;
		if (!whole)
			continue;
		if (pos->entries[l->n_known] != NULL) {
			k->entries = strtol(pos->entries[l->n_known], &end, 10);
			if (*end != '\0' || k->entries < 0 || k->entries > MAX_ROWS_PER_PAGE)
				k->entries = -1;
		}
		k->next_url = pos->next_urls[l->n_known];
		pos->next_urls[l->n_known] = NULL;
	}
}

/* Starts a listing whose first page is first_url (taken over) from pos. */
static void
start(struct listing *l, size_t service_index, const char *user, char *first_url,
      struct cursor_position *pos)
{
	const struct settings_service *svc = &l->st->s->services[service_index];

	l->service_index = service_index;
	l->service_sid = svc->sid;
	l->auth.username = settings_service_user(l->st->s, svc);
	l->auth.password = settings_service_password(l->st->s, svc);
	l->user = user;
	log_escape(l->user_esc, sizeof(l->user_esc), user);
	l->first_url = first_url;
	if (pos->start == CURSOR_RESUME && !resume_url_ok(l, pos)) {
		pos->start = CURSOR_FIRST_PAGE;
		pos->pages_done = 0;
	}
	l->first_page = pos->start == CURSOR_FIRST_PAGE;
	l->url = l->first_page ? xstrdup(l->first_url) : pos->next_url;
	if (l->first_page)
		free(pos->next_url);
	pos->next_url = NULL;
	l->page_no = pos->pages_done + 1;
	known_pages(l, pos);
	cursor_position_free(pos); /* what the listing did not take over */
	l->all_skipped = l->first_page;
	l->skipped_pages = l->skipped_rows = l->skipped_rejected = 0;
	buf_reset(&l->earlier);
	for (unsigned k = 1; k < l->page_no; k++) {
		if (!buf_append_str(&l->earlier, "NULL,"))
			break; /* past limits.max_pages: the listing fails at its next page */
	}
	l->requests = l->retries = l->attempts = 0;
	l->lease = pos->lease;
	l->lease_lost = false;
	l->restarted = false;
	l->drift_logged = 0;
	url_seen_clear(l->fetched);
	if (!l->first_page)
		log_info("service %s user \"%s\": resuming at page %u", l->service_sid, l->user_esc,
			 l->page_no);
	fetch_page(l);
}

void
listing_start(struct listing *l, size_t service_index, const char *user,
	      struct cursor_position *pos)
{
	const struct settings_service *svc = &l->st->s->services[service_index];
	const struct twilio_api_info *api = twilio_api_info(svc->api);

	l->dimension = -1;
	l->conversations = api->conversations;
	if (l->conversations && l->conversation_parser == NULL) {
		l->conversation_parser =
			page_parser_new(&conversation_schema, &l->limits, on_conversation, l);
		l->conversation_batch = conversation_batch_new();
	}
	l->parser = l->conversations ? l->conversation_parser : l->membership_parser;
	l->batch = l->conversations ? l->conversation_batch : l->membership_batch;
	l->st->progress.users_started++;
	start(l, service_index, user,
	      url_user_listing(svc->base_url, api->version, svc->default_service ? NULL : svc->sid,
			       user, api->user_listing, svc->page_size),
	      pos);
}

/* How a dimension listing is named in the logs and in sync_errors: "@users". */
static const char *const dimension_labels[DIMENSIONS] = {
	[DIMENSION_SERVICE] = "@service",
	[DIMENSION_USERS] = "@users",
	[DIMENSION_CHANNELS] = "@channels",
};

void
listing_start_dimension(struct listing *l, size_t service_index, enum dimension d,
			struct cursor_position *pos)
{
	const struct settings_service *svc = &l->st->s->services[service_index];

	if (l->dimension_parser[d] == NULL) {
		l->dimension_parser[d] =
			page_parser_new(dimension_schema(d), &l->limits, on_dimension_entry, l);
		l->dimension_batch[d] = dimension_batch_new(d);
	}
	l->dimension = (int)d;
	l->parser = l->dimension_parser[d];
	l->batch = l->dimension_batch[d];
	start(l, service_index, dimension_labels[d],
	      dimension_first_url(d, svc->base_url, svc->api, svc->sid), pos);
}

long
listing_retry_when_due(struct listing *l)
{
	long wait;

	if (l->state != LISTING_WAITING)
		return -1;
	if (!may_go_on(l)) {
		stop_here(l);
		return -1;
	}
	wait = clock_ms_until(&l->retry_at);
	if (wait > 0)
		return wait;
	fetch_page(l);
	return -1;
}

void
listing_abandon(struct listing *l)
{
	if (l->state == LISTING_WAITING ||
	    (l->state == LISTING_COMMITTING && !commit_queue_sending(l->st->commits, &l->commit)))
		listing_release(l);
}
