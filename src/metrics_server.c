/*
 * metrics_server.c - the HTTP listener that serves GET /metrics
 *
 * libmicrohttpd runs the listener on its internal polling thread; every
 * request is answered from that thread, a scrape by calling the render
 * function, and its messages are logged from there too.  MHD_stop_daemon
 * joins the thread, so after metrics_server_free no render call is running
 * or will start.
 */
#include "config.h"

#include "metrics_server.h"

#include "clock.h"
#include "log.h"
#include "mem.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define ERROR_CONTENT_TYPE "text/plain; charset=utf-8"

/*
 * Keep the listener cheap to hold open: it is only ever scraped.  One
 * address may hold half the connections, so a client that opens many and
 * sends nothing cannot keep every other scraper out; an idle connection is
 * closed after CONNECTION_TIMEOUT_S.  A connection past the per-address
 * limit is closed at once; with MAX_CONNECTIONS open, libmicrohttpd accepts
 * no more until one closes.
 */
#define MAX_CONNECTIONS 16
#define MAX_CONNECTIONS_PER_IP 8
#define CONNECTION_TIMEOUT_S 30

/* libmicrohttpd's message for a connection past either limit, logged at most this often. */
#define LIMIT_MESSAGE "Server reached connection limit"
#define LIMIT_LOG_INTERVAL_S 60

struct metrics_server {
	struct MHD_Daemon *daemon;
	unsigned port;
	struct metrics_render render;
	/* Connections refused past the limits; only the listener's thread touches these. */
	bool refused_logged;
	struct timespec refused_logged_at;
	unsigned long refused_unlogged; /* since refused_logged_at */
};

/* Queues resp (which it always destroys) with its headers; MHD_NO if resp is NULL. */
static enum MHD_Result
respond(struct MHD_Connection *conn, unsigned status, struct MHD_Response *resp,
	const char *content_type, const char *allow)
{
	enum MHD_Result ret;

	if (resp == NULL)
		return MHD_NO;
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES)
		ret = MHD_NO;
	else if (allow != NULL &&
		 MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES)
		ret = MHD_NO;
	else
		ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
respond_text(struct MHD_Connection *conn, unsigned status, const char *text, const char *allow)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);

	return respond(conn, status, resp, ERROR_CONTENT_TYPE, allow);
}

static enum MHD_Result
respond_metrics(struct MHD_Connection *conn, const struct metrics_server *s)
{
	struct MHD_Response *resp;
	char *body = NULL, err[256];
	size_t len = 0;

	if (!s->render.render(s->render.arg, &body, &len, err, sizeof(err))) {
		log_error("metrics: could not render the exposition: %s", err);
		return respond_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "exposition too large\n",
				    NULL);
	}
	/* MHD frees body with free() once sent, or at once if it cannot make a response. */
	resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	return respond(conn, MHD_HTTP_OK, resp, CONTENT_TYPE, NULL);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	   const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls)
{
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)req_cls;
	if (strcmp(url, "/metrics") != 0)
		return respond_text(conn, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
	/* MHD sends a HEAD response's headers without its body. */
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return respond_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n",
				    "GET, HEAD");
	return respond_metrics(conn, cls);
}

/*
 * A connection refused past the limits: one line, then none for
 * LIMIT_LOG_INTERVAL_S, so a client that keeps opening connections cannot
 * flood the log; the next line says how many were refused meanwhile.
 */
static void
log_refused(struct metrics_server *s)
{
	if (s->refused_logged &&
	    clock_seconds_since(&s->refused_logged_at) < LIMIT_LOG_INTERVAL_S) {
		s->refused_unlogged++;
		return;
	}
	if (s->refused_unlogged == 0)
		log_warning(
			"metrics server: refused a connection past the limits (%d open, %d from "
			"one address); such refusals are logged at most once a minute",
			MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP);
	else
		log_warning(
			"metrics server: refused a connection past the limits (%d open, %d from "
			"one address), and %lu more since the last such line",
			MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, s->refused_unlogged);
	s->refused_logged = true;
	s->refused_logged_at = clock_now();
	s->refused_unlogged = 0;
}

/* Routes libmicrohttpd's own messages (bind failures, bad clients) to our log. */
static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (strncmp(msg, LIMIT_MESSAGE, strlen(LIMIT_MESSAGE)) == 0) {
		log_refused(cls);
		return;
	}
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warning("metrics server: %s", msg);
}

static unsigned
sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* The bound port, read from the socket (MHD_DAEMON_INFO_BIND_PORT needs MHD 0.9.62). */
static unsigned
bound_port(struct MHD_Daemon *d)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (info == NULL || getsockname(info->listen_fd, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	return sockaddr_port(&ss);
}

static struct MHD_Daemon *
start_daemon(struct metrics_server *s, const struct sockaddr_storage *addr)
{
	unsigned flags =
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG;

	if (addr->ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* The logger goes first so MHD sends it every message; the port only names it in them. */
	return MHD_start_daemon(flags, (uint16_t)sockaddr_port(addr), NULL, NULL, &on_request, s,
				MHD_OPTION_EXTERNAL_LOGGER, &on_mhd_log, s, MHD_OPTION_SOCK_ADDR,
				(const struct sockaddr *)addr, MHD_OPTION_CONNECTION_LIMIT,
				(unsigned int)MAX_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
				(unsigned int)MAX_CONNECTIONS_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT,
				(unsigned int)CONNECTION_TIMEOUT_S, MHD_OPTION_END);
}

struct metrics_server *
metrics_server_new(const struct sockaddr_storage *addr, const struct metrics_render *render)
{
	struct metrics_server *s = xcalloc(1, sizeof(*s));

	s->render = *render;
	s->daemon = start_daemon(s, addr);
	if (s->daemon == NULL) {
		free(s);
		return NULL;
	}
	s->port = bound_port(s->daemon);
	return s;
}

unsigned
metrics_server_port(const struct metrics_server *s)
{
	return s != NULL ? s->port : 0;
}

void
metrics_server_free(struct metrics_server *s)
{
	if (s == NULL)
		return;
	/* Joins the listener thread: no scrape can be running after this. */
	MHD_stop_daemon(s->daemon);
	free(s);
}
