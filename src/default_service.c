/*
 * default_service.c - the account's default conversation service
 */
#include "config.h"

#include "default_service.h"

#include "http.h"
#include "log.h"
#include "mem.h"
#include "settings.h"
#include "twilio.h"
#include "url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

/* The configuration is one small object. */
#define BODY_CAP ((size_t)64 * 1024)

struct fetch {
	struct buf body;
	struct http_result res;
	bool done;
	bool too_big;
};

static bool
on_body(void *arg, const char *data, size_t len)
{
	struct fetch *f = arg;

	if (!buf_append(&f->body, data, len)) {
		f->too_big = true;
		return false;
	}
	return true;
}

static void
on_done(void *arg, const struct http_result *res)
{
	struct fetch *f = arg;

	f->res = *res;
	f->done = true;
}

/* The default_chat_service_sid of a configuration body, into out; false if none is valid. */
static bool
parse_sid(const char *body, char out[35])
{
	static const char *path[] = {"default_chat_service_sid", NULL};
	yajl_val tree = yajl_tree_parse(body, NULL, 0), v;
	bool ok = false;

	if (tree == NULL)
		return false;
	v = yajl_tree_get(tree, path, yajl_t_string);
	if (v != NULL && twilio_sid_valid(YAJL_GET_STRING(v), "IS")) {
		snprintf(out, 35, "%s", YAJL_GET_STRING(v));
		ok = true;
	}
	yajl_tree_free(tree);
	return ok;
}

/*
 * GET BASE/v1/Configuration: the default service's SID into out.  *status:
 * the HTTP status, 0 if the transfer failed, -1 if it could not start.
 */
static bool
ask(struct http *h, const char *base, char out[35], bool *auth_refused, int *status, char *err,
    size_t errsz)
{
	char *url = url_join(base, "/v1/Configuration");
	struct fetch f = {0};
	bool ok;

	*status = -1; /* not asked */

	buf_init(&f.body, BODY_CAP);
	ok = http_get(h, url, on_body, on_done, &f, err, errsz);
	while (ok && !f.done)
		ok = http_run(h, 1000, NULL, 0, err, errsz);
	if (ok && !f.res.aborted) /* aborted: a stop, or the body over its cap */
		*status = f.res.transport_error ? 0 : (int)f.res.status;
	if (ok && f.too_big) {
		snprintf(err, errsz, "GET %s: the response is over %zu bytes", url, BODY_CAP);
		ok = false;
	} else if (ok && f.res.status != 200) {
		*auth_refused = f.res.status == 401;
		snprintf(err, errsz, "GET %s: %s", url,
			 f.res.error[0] != '\0' ? f.res.error : "no response");
		ok = false;
	} else if (ok && !parse_sid(buf_str(&f.body), out)) {
		snprintf(err, errsz, "GET %s: the response names no default_chat_service_sid", url);
		ok = false;
	}
	buf_free(&f.body);
	free(url);
	return ok;
}

/*
 * ask(), again after a 429, a 5xx or a failed transfer, up to
 * twilio.max_retries times, waiting twilio.backoff_base_ms, then twice as
 * long each time (at most twilio.max_backoff seconds).
 */
static bool
ask_with_retries(const struct settings *s, struct http *h, const char *base, char out[35],
		 bool *auth_refused, char *err, size_t errsz)
{
	long wait_ms = s->backoff_base_ms;

	for (int attempt = 0;; attempt++) {
		int status;

		if (ask(h, base, out, auth_refused, &status, err, errsz))
			return true;
		if (attempt >= s->max_retries || !(status == 0 || status == 429 || status >= 500))
			return false;
		log_warning("%s; asking again in %ld ms", err, wait_ms);
		if (!http_run(h, (int)wait_ms, NULL, 0, err, errsz))
			return false;
		wait_ms =
			wait_ms * 2 > s->max_backoff * 1000L ? s->max_backoff * 1000L : wait_ms * 2;
	}
}

/* Is sid also configured as the sid of another service than s->services[self]? */
static bool
listed_elsewhere(const struct settings *s, size_t self, const char *sid)
{
	for (size_t i = 0; i < s->n_services; i++) {
		if (i != self && !s->services[i].default_service && s->services[i].sid != NULL &&
		    strcmp(s->services[i].sid, sid) == 0)
			return true;
	}
	return false;
}

bool
default_service_resolve(struct settings *s, struct http *h, bool *auth_refused, char *err,
			size_t errsz)
{
	*auth_refused = false;
	for (size_t i = 0; i < s->n_services; i++) {
		struct settings_service *svc = &s->services[i];
		char sid[35];

		if (!svc->default_service)
			continue;
		if (!ask_with_retries(s, h, svc->base_url, sid, auth_refused, err, errsz))
			return false;
		if (listed_elsewhere(s, i, sid)) {
			snprintf(err, errsz,
				 "the account's default conversation service %s is also configured "
				 "by its sid",
				 sid);
			return false;
		}
		if (svc->sid == NULL || strcmp(svc->sid, sid) != 0) {
			log_info("the account's default conversation service is %s", sid);
			free(svc->sid);
			svc->sid = xstrdup(sid);
		}
	}
	return true;
}
