/*
 * metrics_server.h - the HTTP listener that serves GET /metrics
 *
 * A libmicrohttpd daemon on its own thread.  It knows nothing of what the
 * exposition holds: every scrape calls the render function it was given,
 * on the listener's thread, and sends what that returns.  Any other path
 * is 404, any method other than GET or HEAD 405.
 */
#ifndef CHATSYNC_METRICS_SERVER_H
#define CHATSYNC_METRICS_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct metrics_server;

/*
 * Renders one scrape's body: render(arg, ...) is called on the listener's
 * thread for every GET or HEAD of /metrics.  On success sets *body to text allocated
 * with malloc, which the server then owns and frees, and *len to its
 * length.  If the exposition cannot be rendered (it would pass its size
 * cap) returns false with the reason in err (errsz bytes); the server logs
 * it and answers 500 "exposition too large".
 */
struct metrics_render {
	bool (*render)(void *arg, char **body, size_t *len, char *err, size_t errsz);
	void *arg;
};

/*
 * Starts listening on addr (from listen_addr_parse) and serving scrapes
 * with render, which is copied; render->arg stays borrowed and must outlive
 * the server.  Returns a server the caller owns, or NULL if it cannot
 * listen; libmicrohttpd's own messages, which say why, go to the log as
 * warnings.
 */
struct metrics_server *metrics_server_new(const struct sockaddr_storage *addr,
					  const struct metrics_render *render)
	__attribute__((warn_unused_result));

/* Stops listening, waiting for a scrape in progress to end, and frees s; NULL is a no-op. */
void metrics_server_free(struct metrics_server *s);

/* The TCP port actually listened on (useful with port 0); 0 if unknown or for NULL. */
unsigned metrics_server_port(const struct metrics_server *s);

#endif
