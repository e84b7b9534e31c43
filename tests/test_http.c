/*
 * test_http.c - unit tests for src/http.c against a server on loopback:
 * a response that arrives between two calls of http_run() is reported by
 * the next one at once, not after its whole wait
 */
#include "config.h"

#include "http.h"

#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * A server of one connection: it answers each request once the test lets
 * it (go), and keeps the connection open.
 */
struct server {
	int listener;
	int port;
	atomic_int requests; /* requests read so far */
	atomic_int go;	     /* requests it may answer */
	atomic_int answered; /* answers sent */
	atomic_bool stop;
	pthread_t thread;
};

static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			     "Content-Length: 2\r\n\r\n{}";

static void
sleep_ms(unsigned ms)
{
	struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&t, NULL);
}

static double
now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1000 + (double)t.tv_nsec / 1e6;
}

static void *
serve(void *arg)
{
	struct server *s = arg;
	char buf[4096];
	size_t have = 0;
	int fd = accept(s->listener, NULL, NULL);

	if (fd < 0)
		return NULL;
	while (!atomic_load(&s->stop)) {
		ssize_t n = recv(fd, buf + have, sizeof(buf) - 1 - have, MSG_DONTWAIT);

		if (n == 0)
			break;
		if (n < 0) {
			sleep_ms(1);
			continue;
		}
		have += (size_t)n;
		buf[have] = '\0';
		if (strstr(buf, "\r\n\r\n") == NULL)
			continue;
		have = 0;
		atomic_fetch_add(&s->requests, 1);
		while (atomic_load(&s->go) < atomic_load(&s->requests) && !atomic_load(&s->stop))
			sleep_ms(1);
		if (send(fd, answer, sizeof(answer) - 1, MSG_NOSIGNAL) < 0)
			break;
		atomic_fetch_add(&s->answered, 1);
	}
	/* The connection stays open (no EOF to wake a poll) until the test ends. */
	while (!atomic_load(&s->stop))
		sleep_ms(1);
	close(fd);
	return NULL;
}

static bool
server_start(struct server *s)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);

	memset(s, 0, sizeof(*s));
	s->listener = socket(AF_INET, SOCK_STREAM, 0);
	if (s->listener < 0 || bind(s->listener, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(s->listener, 1) != 0 ||
	    getsockname(s->listener, (struct sockaddr *)&a, &len) != 0)
		return false;
	s->port = ntohs(a.sin_port);
	return pthread_create(&s->thread, NULL, serve, s) == 0;
}

static void
server_stop(struct server *s)
{
	atomic_store(&s->stop, true);
	shutdown(s->listener, SHUT_RDWR);
	pthread_join(s->thread, NULL);
	close(s->listener);
}

struct outcome {
	int done;
	long status;
	size_t body;
};

static bool
on_body(void *arg, const char *data, size_t len)
{
	struct outcome *o = arg;

	(void)data;
	o->body += len;
	return true;
}

static void
on_done(void *arg, const struct http_result *res)
{
	struct outcome *o = arg;

	o->done++;
	o->status = res->status;
}

/* Waits (at most 5 s) until *counter reaches n; false if it did not. */
static bool
await_count(atomic_int *counter, int n)
{
	for (int i = 0; i < 5000 && atomic_load(counter) < n; i++)
		sleep_ms(1);
	return atomic_load(counter) >= n;
}

int
main(void)
{
	struct http_options opts = {.username = "AC",
				    .password = "secret",
				    .timeout = 30,
				    .connect_timeout = 5};
	struct server s;
	struct outcome o = {0};
	struct http *h;
	char err[256], url[64];
	double t0, waited;
	bool sent = true;

	alarm(60); /* whatever happens, CI is not held up */
	if (!server_start(&s)) {
		printf("1..0 # SKIP cannot listen on 127.0.0.1\n");
		return 0;
	}
	h = http_new(&opts, err, sizeof(err));
	ok(h != NULL, "a client");
	if (h == NULL)
		return tap_done();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/x", s.port);
	ok(http_get(h, url, NULL, on_body, on_done, &o, err, sizeof(err)), "a GET starts");

	/* Short calls until the server has the request; it answers only when let. */
	for (int i = 0; atomic_load(&s.requests) == 0; i++) {
		if (i == 500 || !http_run(h, 10, NULL, 0, err, sizeof(err))) {
			sent = false;
			break;
		}
	}
	ok(sent && o.done == 0, "the request reaches the server, and no answer yet");

	/*
	 * With a transfer running and nothing ended, calls wait (for as long
	 * as they are given, or as libcurl's timers ask): a second of them is
	 * a few calls, not a busy loop.
	 */
	{
		int calls = 0;
		bool all_ok = true;

		t0 = now_ms();
		while (now_ms() - t0 < 1000) {
			all_ok = http_run(h, 300, NULL, 0, err, sizeof(err)) && all_ok;
			calls++;
		}
		ok(all_ok && o.done == 0 && calls < 100,
		   "while the answer is awaited, calls wait: %d in a second, nothing reported",
		   calls);
	}

	/* The answer arrives whole while no call runs. */
	atomic_store(&s.go, 1);
	ok(await_count(&s.answered, 1), "the server answers");
	sleep_ms(50); /* loopback: the answer is in the client's socket */
	t0 = now_ms();
	ok(http_run(h, 5000, NULL, 0, err, sizeof(err)), "the next call succeeds");
	waited = now_ms() - t0;
	is_int(o.done, 1, "it reports the transfer ended");
	ok(o.status == 200 && o.body == 2, "with its status and body (%ld, %zu bytes)", o.status,
	   o.body);
	ok(waited < 1000, "without waiting for activity first (%.0f ms of a 5000 ms wait)", waited);

	/* With nothing running, a call still waits the time it is given. */
	t0 = now_ms();
	ok(http_run(h, 300, NULL, 0, err, sizeof(err)), "an idle call succeeds");
	waited = now_ms() - t0;
	ok(waited >= 250 && o.done == 1, "and waits its time (%.0f ms of 300), reporting nothing",
	   waited);

	http_free(h);
	server_stop(&s);
	return tap_done();
}
