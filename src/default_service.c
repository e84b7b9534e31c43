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
#include <time.h>
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
 * Waits about wait_ms on h, ticking; a transfer in flight is moved on.  A
 * failure of the wait is logged and waited out: the transfer's own timeout
 * ends it.
 */
static void
wait_on(struct http *h, const struct default_service_hooks *hooks, int wait_ms)
{
	char why[256];

	if (hooks->tick != NULL)
		hooks->tick(hooks->arg);
	if (!http_run(h, wait_ms, NULL, 0, why, sizeof(why))) {
		log_warning("waiting for the transfer failed: %s", why);
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	}
}

/*
 * GET BASE/v1/Configuration: the default service's SID into out.  *status:
 * the HTTP status, 0 if the transfer failed, -1 if it could not start or
 * was stopped.
 */
static bool
ask(struct http *h, const struct default_service_hooks *hooks, const char *base,
    const struct http_auth *auth, char out[35], bool *auth_refused, int *status, char *err,
    size_t errsz)
{
	char *url = url_join(base, "/v1/Configuration");
	struct fetch f = {0};
	bool ok;

	*status = -1;
	buf_init(&f.body, BODY_CAP);
	ok = http_get(h, url, auth, on_body, on_done, &f, err, errsz);
	/* f is the transfer's until on_done: never left before. */
	while (ok && !f.done)
		wait_on(h, hooks, 1000);
	if (ok && (f.res.aborted || f.res.transport_error)) {
		*status = f.res.aborted && !f.too_big ? -1 : 0;
		snprintf(err, errsz, "GET %s: %s", url,
			 f.too_big		  ? "the response is too large"
			 : f.res.error[0] != '\0' ? f.res.error
						  : "the transfer failed");
		ok = false;
	} else if (ok && f.res.status != 200) {
		*status = (int)f.res.status;
		*auth_refused = f.res.status == 401;
		snprintf(err, errsz, "GET %s: %s", url,
			 f.res.error[0] != '\0' ? f.res.error : "no response");
		ok = false;
	} else if (ok && !parse_sid(buf_str(&f.body), out)) {
		*status = 200;
		snprintf(err, errsz, "GET %s: the response names no default_chat_service_sid", url);
		ok = false;
	}
	buf_free(&f.body);
	free(url);
	return ok;
}

/*
 * ask() with the service's credentials, again after a 429, a 5xx or a
 * failed transfer, up to
 * twilio.max_retries times, waiting twilio.backoff_base_ms, then twice as
 * long each time (at most twilio.max_backoff seconds), unless stopped.
 */
static bool
ask_with_retries(const struct settings *s, const struct settings_service *svc, struct http *h,
		 const struct default_service_hooks *hooks, char out[35], bool *auth_refused,
		 char *err, size_t errsz)
{
	const struct http_auth auth = {settings_service_user(s, svc),
				       settings_service_password(s, svc)};
	long wait_ms = s->backoff_base_ms;

	for (int attempt = 0;; attempt++) {
		int status;

		if (ask(h, hooks, svc->base_url, &auth, out, auth_refused, &status, err, errsz))
			return true;
		if (attempt >= s->max_retries || !(status == 0 || status == 429 || status >= 500))
			return false;
		log_warning("%s; asking again in %ld ms", err, wait_ms);
		for (long left = wait_ms; left > 0 && !*hooks->stop; left -= 1000)
			wait_on(h, hooks, (int)(left < 1000 ? left : 1000));
		if (*hooks->stop)
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
default_service_resolve(struct settings *s, struct http *h,
			const struct default_service_hooks *hooks, bool *auth_refused, char *err,
			size_t errsz)
{
	*auth_refused = false;
	for (size_t i = 0; i < s->n_services; i++) {
		struct settings_service *svc = &s->services[i];
		char sid[35];

		if (!svc->default_service)
			continue;
		if (!ask_with_retries(s, svc, h, hooks, sid, auth_refused, err, errsz))
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
