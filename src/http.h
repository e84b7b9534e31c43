/*
 * http.h - HTTP GETs over libcurl's multi interface
 *
 * Any number of transfers run at once in the calling thread; http_run()
 * drives them and calls back as body data arrives and when each ends.
 * Only 2xx bodies reach the body callback; an error body is kept (capped)
 * to explain the failure.
 */
#ifndef CHATSYNC_HTTP_H
#define CHATSYNC_HTTP_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

struct http_options {
	const char *username; /* HTTP basic auth user (the Account SID) */
	const char *password; /* borrowed; must outlive the struct http */
	const char *proxy;    /* "" or NULL: none, whatever the environment says */
	long timeout;	      /* seconds for a whole transfer */
	long connect_timeout; /* seconds */
	/* When this becomes non-zero every transfer is aborted. */
	const volatile sig_atomic_t *abort_flag;
};

struct http_result {
	long status;	      /* HTTP status, 0 if none was received */
	bool transport_error; /* connection, TLS, timeout or truncated transfer */
	bool aborted;	      /* stopped by the abort flag or by the body callback */
	long retry_after;     /* seconds from Retry-After, -1 if absent */
	long twilio_code;     /* "code" of a Twilio error body, 0 if none */
	char error[320];      /* human-readable reason when status is not 2xx */
};

/* Return false to abort the transfer. */
typedef bool (*http_body_fn)(void *arg, const char *data, size_t len);
/* res is borrowed for the duration of the call; the callback may start new transfers. */
typedef void (*http_done_fn)(void *arg, const struct http_result *res);

struct http;

/* Returns a client the caller owns, or NULL with the reason in err. */
struct http *http_new(const struct http_options *opts, char *err, size_t errsz)
	__attribute__((warn_unused_result));
void http_free(struct http *h);

/* HTTP basic auth for one request, both borrowed until the request ends. */
struct http_auth {
	const char *username;
	const char *password;
};

/*
 * Starts a GET of url, with auth (NULL: the client's own, from its
 * options); on_done is always called exactly once if this returns true.
 * On failure the reason is in err.
 */
bool http_get(struct http *h, const char *url, const struct http_auth *auth, http_body_fn on_body,
	      http_done_fn on_done, void *arg, char *err, size_t errsz)
	__attribute__((warn_unused_result));

/* Transfers started and not yet reported done. */
int http_pending(const struct http *h);

/*
 * Moves transfers on and reports those that ended; if none had, waits up
 * to timeout_ms for activity on the transfers or for input on one of the
 * n_fds extra_fds (e.g. database sockets), then does so again.  With
 * nothing running it simply waits.  False, with the reason in err, if
 * libcurl failed to wait or to move them on.
 */
#define HTTP_MAX_EXTRA_FDS 32
bool http_run(struct http *h, int timeout_ms, const int *extra_fds, size_t n_fds, char *err,
	      size_t errsz) __attribute__((warn_unused_result));

#endif
