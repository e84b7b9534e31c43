/*
 * http.c - HTTP GETs over libcurl's multi interface
 */
#include "config.h"

#include "http.h"

#include "mem.h"
#include "twilio.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ERROR_BODY_CAP 4096

struct transfer {
	struct http *h;
	CURL *easy;
	http_body_fn on_body;
	http_done_fn on_done;
	void *arg;
	long status;
	bool sink_refused;
	long retry_after;
	struct buf error_body;
	char curl_error[CURL_ERROR_SIZE];
	struct transfer *next_free;
};

struct http {
	struct http_options opts;
	CURLM *multi;
	struct transfer *free_list;
	int pending;
};

static bool curl_ready;

struct http *
http_new(const struct http_options *opts, char *err, size_t errsz)
{
	struct http *h;

	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(err, errsz, "could not initialise libcurl");
			return NULL;
		}
		curl_ready = true;
	}
	h = xcalloc(1, sizeof(*h));
	h->opts = *opts;
	h->multi = curl_multi_init();
	if (h->multi == NULL) {
		snprintf(err, errsz, "could not create a libcurl multi handle");
		free(h);
		return NULL;
	}
	curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	return h;
}

static void
transfer_destroy(struct transfer *t)
{
	curl_easy_cleanup(t->easy);
	buf_free(&t->error_body);
	free(t);
}

void
http_free(struct http *h)
{
	if (h == NULL)
		return;
	while (h->free_list != NULL) {
		struct transfer *t = h->free_list;

		h->free_list = t->next_free;
		transfer_destroy(t);
	}
	curl_multi_cleanup(h->multi);
	free(h);
}

static size_t
on_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	size_t len = size * nmemb;

	if (t->status == 0)
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
	if (t->status >= 200 && t->status < 300) {
		if (!t->on_body(t->arg, data, len)) {
			t->sink_refused = true;
			return 0;
		}
		return len;
	}
	/* Keep the start of an error body to explain the failure; drop the rest. */
	if (t->error_body.len < ERROR_BODY_CAP) {
		size_t room = ERROR_BODY_CAP - t->error_body.len;

		if (!buf_append(&t->error_body, data, len < room ? len : room))
			return 0;
	}
	return len;
}

static long
parse_retry_after(const char *v)
{
	char *end;
	long secs;
	time_t when;

	while (*v == ' ' || *v == '\t')
		v++;
	secs = strtol(v, &end, 10);
	if (end != v && secs >= 0 && (*end == '\0' || isspace((unsigned char)*end)))
		return secs;
	when = curl_getdate(v, NULL);
	if (when < 0)
		return -1;
	when -= time(NULL);
	return when > 0 ? (long)when : 0;
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	size_t len = size * nmemb;
	static const char name[] = "retry-after:";
	char value[128];

	if (len > sizeof(name) - 1 && len - (sizeof(name) - 1) < sizeof(value) &&
	    strncasecmp(data, name, sizeof(name) - 1) == 0) {
		size_t vlen = len - (sizeof(name) - 1);

		memcpy(value, data + sizeof(name) - 1, vlen);
		while (vlen > 0 && isspace((unsigned char)value[vlen - 1]))
			vlen--;
		value[vlen] = '\0';
		t->retry_after = parse_retry_after(value);
	}
	return len;
}

static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct transfer *t = arg;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return t->h->opts.abort_flag != NULL && *t->h->opts.abort_flag ? 1 : 0;
}

static void
set_options(struct transfer *t, const char *url, const struct http_auth *auth)
{
	const struct http_options *o = &t->h->opts;
	CURL *e = t->easy;
	const char *user = auth != NULL ? auth->username : o->username;
	const char *password = auth != NULL ? auth->password : o->password;

	curl_easy_setopt(e, CURLOPT_URL, url);
	/* An explicit "" also turns off http_proxy and friends from the environment. */
	curl_easy_setopt(e, CURLOPT_PROXY, o->proxy != NULL ? o->proxy : "");
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(e, CURLOPT_USERNAME, user);
	curl_easy_setopt(e, CURLOPT_PASSWORD, password);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, o->timeout);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, o->connect_timeout);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_USERAGENT, PACKAGE_NAME "/" PACKAGE_VERSION);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, t);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->curl_error);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
}

static struct transfer *
transfer_get(struct http *h)
{
	struct transfer *t = h->free_list;

	if (t != NULL) {
		h->free_list = t->next_free;
		curl_easy_reset(t->easy);
	} else {
		t = xcalloc(1, sizeof(*t));
		t->h = h;
		t->easy = curl_easy_init();
		if (t->easy == NULL) {
			free(t);
			return NULL;
		}
		buf_init(&t->error_body, ERROR_BODY_CAP);
	}
	t->status = 0;
	t->sink_refused = false;
	t->retry_after = -1;
	t->curl_error[0] = '\0';
	buf_reset(&t->error_body);
	return t;
}

bool
http_get(struct http *h, const char *url, const struct http_auth *auth, http_body_fn on_body,
	 http_done_fn on_done, void *arg, char *err, size_t errsz)
{
	struct transfer *t = transfer_get(h);
	CURLMcode mc;

	if (t == NULL) {
		snprintf(err, errsz, "could not create a libcurl handle");
		return false;
	}
	t->on_body = on_body;
	t->on_done = on_done;
	t->arg = arg;
	set_options(t, url, auth);
	mc = curl_multi_add_handle(h->multi, t->easy);
	if (mc != CURLM_OK) {
		snprintf(err, errsz, "could not start a transfer: %s", curl_multi_strerror(mc));
		t->next_free = h->free_list;
		h->free_list = t;
		return false;
	}
	h->pending++;
	return true;
}

int
http_pending(const struct http *h)
{
	return h->pending;
}

static void
fill_result(struct transfer *t, CURLcode code, struct http_result *res)
{
	memset(res, 0, sizeof(*res));
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &res->status);
	res->retry_after = t->retry_after;
	if (code == CURLE_ABORTED_BY_CALLBACK || (code == CURLE_WRITE_ERROR && t->sink_refused)) {
		res->aborted = true;
		snprintf(res->error, sizeof(res->error), "transfer aborted");
	} else if (code != CURLE_OK) {
		char detail[CURL_ERROR_SIZE];

		res->transport_error = true;
		twilio_printable(detail, sizeof(detail),
				 t->curl_error[0] ? t->curl_error : curl_easy_strerror(code));
		snprintf(res->error, sizeof(res->error), "%s", detail);
	} else if (res->status < 200 || res->status >= 300) {
		twilio_describe_error(res->status, buf_str(&t->error_body), &res->twilio_code,
				      res->error, sizeof(res->error));
	}
}

static void
finish_transfer(struct http *h, CURL *easy, CURLcode code)
{
	struct transfer *t = NULL;
	struct http_result res;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
	fill_result(t, code, &res);
	curl_multi_remove_handle(h->multi, easy);
	h->pending--;
	t->next_free = h->free_list;
	h->free_list = t;
	t->on_done(t->arg, &res);
}

/* Records a libcurl multi failure as the reason; true if there was none. */
static bool
multi_ok(CURLMcode mc, const char *what, char *err, size_t errsz)
{
	if (mc == CURLM_OK)
		return true;
	snprintf(err, errsz, "%s: %s", what, curl_multi_strerror(mc));
	return false;
}

/* Reports the transfers that have ended; returns how many. */
static int
report_ended(struct http *h)
{
	CURLMsg *msg;
	int left, n = 0;

	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		finish_transfer(h, msg->easy_handle, msg->data.result);
		n++;
	}
	return n;
}

bool
http_run(struct http *h, int timeout_ms, const int *extra_fds, size_t n_fds, char *err,
	 size_t errsz)
{
	struct curl_waitfd extra[HTTP_MAX_EXTRA_FDS];
	int running = 0;
	bool ok;

	if (n_fds > HTTP_MAX_EXTRA_FDS)
		n_fds = HTTP_MAX_EXTRA_FDS;
	for (size_t i = 0; i < n_fds; i++)
		extra[i] = (struct curl_waitfd){.fd = extra_fds[i], .events = CURL_WAIT_POLLIN};
	ok = multi_ok(curl_multi_perform(h->multi, &running), "curl_multi_perform", err, errsz);
	/*
	 * A response that came in whole since the last call ends its transfer
	 * here: it is reported now, not after a wait for activity that may
	 * never come.
	 */
	if (ok && report_ended(h) > 0)
		return true;
	if (ok && !(h->opts.abort_flag && *h->opts.abort_flag && running > 0))
		ok = multi_ok(curl_multi_poll(h->multi, n_fds > 0 ? extra : NULL, (unsigned)n_fds,
					      timeout_ms, NULL),
			      "curl_multi_poll", err, errsz);
	ok = multi_ok(curl_multi_perform(h->multi, &running), "curl_multi_perform", err, errsz) &&
	     ok;
	report_ended(h);
	return ok;
}
