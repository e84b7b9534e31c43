/*
 * test_metrics.c - unit tests for src/metrics.c and src/metrics_server.c:
 * the Prometheus endpoint scraped over loopback with libcurl (exact
 * exposition text, label escaping, 404/405, the service cap, concurrent
 * updates and scrapes, and that metrics_free closes the listener), the
 * connection limits, the error metrics_new logs for an invalid listen
 * address, and src/metrics_process.c's readings of the process
 */
#include "config.h"

#include "metrics.h"

#include "clock.h"
#include "mem.h"
#include "metrics_process.h"
#include "tap.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define SVC_A "IS0123456789abcdef0123456789abcdef"
#define SVC_C "IS0123456789abcdef0123456789abcdee"
/* Everything a label value must escape, and a byte it must not. */
#define SVC_ODD "IS\"quoted\"\\back\nline\t"
#define SVC_ODD_LABEL "IS\\\"quoted\\\"\\\\back\\nline\t"

#define BODY_CAP (16 * 1024 * 1024)

struct scrape {
	CURLcode code;
	long status;
	char content_type[128];
	char allow[64];
	struct buf body;
};

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct scrape *s = arg;

	return buf_append(&s->body, data, size * nmemb) ? size * nmemb : 0;
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct scrape *s = arg;
	size_t len = size * nmemb;
	static const char name[] = "Allow: ";

	if (len > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
		size_t vlen = len - (sizeof(name) - 1);

		while (vlen > 0 && (data[sizeof(name) - 2 + vlen] == '\n' ||
				    data[sizeof(name) - 2 + vlen] == '\r'))
			vlen--;
		if (vlen < sizeof(s->allow)) {
			memcpy(s->allow, data + sizeof(name) - 1, vlen);
			s->allow[vlen] = '\0';
		}
	}
	return len;
}

/* Requests path with method over loopback; the caller frees s->body with buf_free. */
static void
scrape(unsigned port, const char *method, const char *path, struct scrape *s)
{
	CURL *e = curl_easy_init();
	char url[128];
	char *ct = NULL;

	memset(s, 0, sizeof(*s));
	buf_init(&s->body, BODY_CAP);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (strcmp(method, "GET") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
	s->code = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &s->status);
	if (curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct != NULL)
		snprintf(s->content_type, sizeof(s->content_type), "%s", ct);
	curl_easy_cleanup(e);
}

/* GET /metrics; returns the body the caller owns ("" on failure, which the asserts show). */
static char *
get_metrics(unsigned port)
{
	struct scrape s;

	scrape(port, "GET", "/metrics", &s);
	if (s.code != CURLE_OK || s.status != 200)
		printf("# GET /metrics: curl %d, HTTP %ld\n", (int)s.code, s.status);
	return buf_take(&s.body);
}

/* Removes the first line starting with prefix from text, parsing the value after it. */
static bool
take_line(char *text, const char *prefix, double *value)
{
	size_t plen = strlen(prefix);
	char *line = text, *end;

	while (strncmp(line, prefix, plen) != 0) {
		line = strchr(line, '\n');
		if (line == NULL)
			return false;
		line++;
	}
	*value = strtod(line + plen, &end);
	if (end == line + plen || *end != '\n')
		return false;
	memmove(line, end + 1, strlen(end + 1) + 1);
	return true;
}

/* The process_* samples of one scrape. */
struct process_values {
	double cpu, resident, open_fds, max_fds, start;
};

/* Takes the five process_* samples out of text; false if any is missing. */
static bool
take_process(char *text, struct process_values *p)
{
	bool all = take_line(text, "process_cpu_seconds_total ", &p->cpu);

	all = take_line(text, "process_resident_memory_bytes ", &p->resident) && all;
	all = take_line(text, "process_open_fds ", &p->open_fds) && all;
	all = take_line(text, "process_max_fds ", &p->max_fds) && all;
	return take_line(text, "process_start_time_seconds ", &p->start) && all;
}

static size_t
count_substr(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* The SID of the i-th generated service. */
static const char *
nth_sid(char *out, size_t outsz, int i)
{
	snprintf(out, outsz, "IS%032d", i);
	return out;
}

static size_t
count_lines_with(const char *text, const char *prefix)
{
	size_t n = 0, plen = strlen(prefix);

	for (const char *line = text; line != NULL && *line != '\0';) {
		if (strncmp(line, prefix, plen) == 0)
			n++;
		line = strchr(line, '\n');
		if (line != NULL)
			line++;
	}
	return n;
}

/* ------------------------------------------------------------ the endpoint */

static void
test_null(void)
{
	static const char *const services[] = {SVC_A};

	metrics_http_response(NULL, 200);
	metrics_retry(NULL, 429);
	metrics_page(NULL, SVC_A, 1, 1, 1, 1, 1, 1);
	metrics_user_done(NULL, SVC_A, true);
	metrics_sweep_started(NULL);
	metrics_sweep_stopped(NULL);
	metrics_sweep_finished(NULL, 1.0, 0, services, 1);
	metrics_sweep_users(NULL, 3);
	metrics_db_reconnect(NULL);
	metrics_lease_lost(NULL);
	metrics_leases(NULL, 1, 1);
	metrics_instance(NULL, "x");
	metrics_config_reloaded(NULL, false);
	metrics_free(NULL);
	is_int(metrics_port(NULL), 0, "every function accepts a NULL struct metrics");
}

static void
test_cannot_listen(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	char listen_on[64];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ok(metrics_new("localhost:9187") == NULL, "metrics_new refuses a host name");
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 1) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		ok(true, "metrics_new fails on a busy port # SKIP cannot bind a loopback socket");
	} else {
		snprintf(listen_on, sizeof(listen_on), "127.0.0.1:%u", ntohs(sin.sin_port));
		ok(metrics_new(listen_on) == NULL, "metrics_new fails on a busy port (%s)",
		   listen_on);
	}
	if (fd >= 0)
		close(fd);
}

/* chatsync_sweep_users_total and _done before any sweep. */
#define SWEEP_USERS_NONE                                                                           \
	"# HELP chatsync_sweep_users_total Users in the current sweep, or in the last one while "  \
	"none runs\n"                                                                              \
	"# TYPE chatsync_sweep_users_total untyped\n"                                              \
	"chatsync_sweep_users_total 0\n"                                                           \
	"# HELP chatsync_sweep_users_done Users of the current or last sweep whose listing has "   \
	"ended, ok or failed\n"                                                                    \
	"# TYPE chatsync_sweep_users_done gauge\n"                                                 \
	"chatsync_sweep_users_done 0\n"

/* The instance's families: leases lost, held, live instances, and its name's sample (or ""). */
#define INSTANCE_EXPOSITION(lost, held, live, info)                                                \
	"# HELP chatsync_leases_lost_total Listings of this instance taken over by another "       \
	"instance\n"                                                                               \
	"# TYPE chatsync_leases_lost_total counter\n"                                              \
	"chatsync_leases_lost_total " lost "\n"                                                    \
	"# HELP chatsync_leases_held Leases on users and dimension listings this instance holds\n" \
	"# TYPE chatsync_leases_held gauge\n"                                                      \
	"chatsync_leases_held " held "\n"                                                          \
	"# HELP chatsync_instances_live Instances of chatsyncd working on the schema, this one "   \
	"included, at its last heartbeat\n"                                                        \
	"# TYPE chatsync_instances_live gauge\n"                                                   \
	"chatsync_instances_live " live "\n"                                                       \
	"# HELP chatsync_instance_info This instance's name among those of the schema, as a "      \
	"label; the value is always 1\n"                                                           \
	"# TYPE chatsync_instance_info gauge\n" info

/*
 * What follows chatsync_start_time_seconds, once take_process has taken the
 * process_* samples out: every family but process_*'s is exact.
 */
#define TAIL_EXPOSITION(instance)                                                                  \
	"# HELP chatsync_config_last_reload_successful 1 if the configuration was loaded at "      \
	"start or by the last reload, 0 if the last reload was refused\n"                          \
	"# TYPE chatsync_config_last_reload_successful gauge\n"                                    \
	"chatsync_config_last_reload_successful 1\n"                                               \
	"# HELP chatsync_build_info The version of chatsyncd, as a label; the value is always 1\n" \
	"# TYPE chatsync_build_info gauge\n"                                                       \
	"chatsync_build_info{version=\"" PACKAGE_VERSION "\"} 1\n" instance                        \
	"# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"      \
	"# TYPE process_cpu_seconds_total counter\n"                                               \
	"# HELP process_resident_memory_bytes Resident memory size in bytes.\n"                    \
	"# TYPE process_resident_memory_bytes gauge\n"                                             \
	"# HELP process_open_fds Number of open file descriptors.\n"                               \
	"# TYPE process_open_fds gauge\n"                                                          \
	"# HELP process_max_fds Maximum number of open file descriptors.\n"                        \
	"# TYPE process_max_fds gauge\n"                                                           \
	"# HELP process_start_time_seconds Start time of the process since unix epoch in "         \
	"seconds.\n"                                                                               \
	"# TYPE process_start_time_seconds gauge\n"

static const char fresh_exposition[] =
	"# HELP chatsync_http_requests_total Responses from the Twilio API by status class "
	"(error: no response received)\n"
	"# TYPE chatsync_http_requests_total counter\n"
	"chatsync_http_requests_total{class=\"2xx\"} 0\n"
	"chatsync_http_requests_total{class=\"3xx\"} 0\n"
	"chatsync_http_requests_total{class=\"4xx\"} 0\n"
	"chatsync_http_requests_total{class=\"5xx\"} 0\n"
	"chatsync_http_requests_total{class=\"error\"} 0\n"
	"# HELP chatsync_http_retries_total Requests retried after a retryable failure\n"
	"# TYPE chatsync_http_retries_total counter\n"
	"chatsync_http_retries_total 0\n"
	"# HELP chatsync_http_429_total Retries scheduled after HTTP 429 Too Many Requests\n"
	"# TYPE chatsync_http_429_total counter\n"
	"chatsync_http_429_total 0\n"
	"# HELP chatsync_pages_total Pages committed to the database\n"
	"# TYPE chatsync_pages_total counter\n"
	"# HELP chatsync_rows_total Memberships received in committed pages, and what became of "
	"them\n"
	"# TYPE chatsync_rows_total counter\n"
	"# HELP chatsync_user_listings_total Users whose listing ended in a sweep, by outcome\n"
	"# TYPE chatsync_user_listings_total counter\n"
	"# HELP chatsync_sweeps_total Sweeps finished\n"
	"# TYPE chatsync_sweeps_total counter\n"
	"chatsync_sweeps_total 0\n"
	"# HELP chatsync_sweep_in_progress 1 while a sweep is running\n"
	"# TYPE chatsync_sweep_in_progress gauge\n"
	"chatsync_sweep_in_progress 0\n" SWEEP_USERS_NONE
	"# HELP chatsync_last_sweep_duration_seconds Duration of the last finished sweep\n"
	"# TYPE chatsync_last_sweep_duration_seconds gauge\n"
	"# HELP chatsync_service_sweep_duration_seconds Duration of the last sweep in which every "
	"user of the service succeeded\n"
	"# TYPE chatsync_service_sweep_duration_seconds gauge\n"
	"# HELP chatsync_service_last_success_timestamp_seconds Unix time of the end of the last "
	"sweep in which every user of the service succeeded\n"
	"# TYPE chatsync_service_last_success_timestamp_seconds gauge\n"
	"# HELP chatsync_users_failing Users that failed in the last finished sweep\n"
	"# TYPE chatsync_users_failing gauge\n"
	"chatsync_users_failing 0\n"
	"# HELP chatsync_database_reconnects_total Reconnections to PostgreSQL\n"
	"# TYPE chatsync_database_reconnects_total counter\n"
	"chatsync_database_reconnects_total 0\n"
	"# HELP chatsync_start_time_seconds Unix time the daemon started\n"
	"# TYPE chatsync_start_time_seconds gauge\n" TAIL_EXPOSITION(
		INSTANCE_EXPOSITION("0", "0", "0", ""));

static const char busy_exposition[] =
	"# HELP chatsync_http_requests_total Responses from the Twilio API by status class "
	"(error: no response received)\n"
	"# TYPE chatsync_http_requests_total counter\n"
	"chatsync_http_requests_total{class=\"2xx\"} 3\n"
	"chatsync_http_requests_total{class=\"3xx\"} 2\n"
	"chatsync_http_requests_total{class=\"4xx\"} 3\n"
	"chatsync_http_requests_total{class=\"5xx\"} 2\n"
	"chatsync_http_requests_total{class=\"error\"} 5\n"
	"# HELP chatsync_http_retries_total Requests retried after a retryable failure\n"
	"# TYPE chatsync_http_retries_total counter\n"
	"chatsync_http_retries_total 4\n"
	"# HELP chatsync_http_429_total Retries scheduled after HTTP 429 Too Many Requests\n"
	"# TYPE chatsync_http_429_total counter\n"
	"chatsync_http_429_total 2\n"
	"# HELP chatsync_pages_total Pages committed to the database\n"
	"# TYPE chatsync_pages_total counter\n"
	"chatsync_pages_total{service=\"" SVC_A "\"} 3\n"
	"chatsync_pages_total{service=\"" SVC_ODD_LABEL "\"} 1\n"
	"chatsync_pages_total{service=\"" SVC_C "\"} 0\n"
	"# HELP chatsync_rows_total Memberships received in committed pages, and what became of "
	"them\n"
	"# TYPE chatsync_rows_total counter\n"
	"chatsync_rows_total{service=\"" SVC_A "\",outcome=\"received\"} 110\n"
	"chatsync_rows_total{service=\"" SVC_A "\",outcome=\"inserted\"} 90\n"
	"chatsync_rows_total{service=\"" SVC_A "\",outcome=\"updated\"} 5\n"
	"chatsync_rows_total{service=\"" SVC_A "\",outcome=\"unchanged\"} 13\n"
	"chatsync_rows_total{service=\"" SVC_A "\",outcome=\"deleted\"} 1\n"
	"chatsync_rows_total{service=\"" SVC_A "\",outcome=\"rejected\"} 2\n"
	"chatsync_rows_total{service=\"" SVC_ODD_LABEL "\",outcome=\"received\"} 1\n"
	"chatsync_rows_total{service=\"" SVC_ODD_LABEL "\",outcome=\"inserted\"} 1\n"
	"chatsync_rows_total{service=\"" SVC_ODD_LABEL "\",outcome=\"updated\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_ODD_LABEL "\",outcome=\"unchanged\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_ODD_LABEL "\",outcome=\"deleted\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_ODD_LABEL "\",outcome=\"rejected\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_C "\",outcome=\"received\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_C "\",outcome=\"inserted\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_C "\",outcome=\"updated\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_C "\",outcome=\"unchanged\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_C "\",outcome=\"deleted\"} 0\n"
	"chatsync_rows_total{service=\"" SVC_C "\",outcome=\"rejected\"} 0\n"
	"# HELP chatsync_user_listings_total Users whose listing ended in a sweep, by outcome\n"
	"# TYPE chatsync_user_listings_total counter\n"
	"chatsync_user_listings_total{service=\"" SVC_A "\",outcome=\"ok\"} 2\n"
	"chatsync_user_listings_total{service=\"" SVC_A "\",outcome=\"failed\"} 0\n"
	"chatsync_user_listings_total{service=\"" SVC_ODD_LABEL "\",outcome=\"ok\"} 0\n"
	"chatsync_user_listings_total{service=\"" SVC_ODD_LABEL "\",outcome=\"failed\"} 1\n"
	"chatsync_user_listings_total{service=\"" SVC_C "\",outcome=\"ok\"} 0\n"
	"chatsync_user_listings_total{service=\"" SVC_C "\",outcome=\"failed\"} 1\n"
	"# HELP chatsync_sweeps_total Sweeps finished\n"
	"# TYPE chatsync_sweeps_total counter\n"
	"chatsync_sweeps_total 1\n"
	"# HELP chatsync_sweep_in_progress 1 while a sweep is running\n"
	"# TYPE chatsync_sweep_in_progress gauge\n"
	"chatsync_sweep_in_progress 0\n" SWEEP_USERS_NONE
	"# HELP chatsync_last_sweep_duration_seconds Duration of the last finished sweep\n"
	"# TYPE chatsync_last_sweep_duration_seconds gauge\n"
	"chatsync_last_sweep_duration_seconds 2.5\n"
	"# HELP chatsync_service_sweep_duration_seconds Duration of the last sweep in which every "
	"user of the service succeeded\n"
	"# TYPE chatsync_service_sweep_duration_seconds gauge\n"
	"chatsync_service_sweep_duration_seconds{service=\"" SVC_A "\"} 2.5\n"
	"# HELP chatsync_service_last_success_timestamp_seconds Unix time of the end of the last "
	"sweep in which every user of the service succeeded\n"
	"# TYPE chatsync_service_last_success_timestamp_seconds gauge\n"
	"# HELP chatsync_users_failing Users that failed in the last finished sweep\n"
	"# TYPE chatsync_users_failing gauge\n"
	"chatsync_users_failing 2\n"
	"# HELP chatsync_database_reconnects_total Reconnections to PostgreSQL\n"
	"# TYPE chatsync_database_reconnects_total counter\n"
	"chatsync_database_reconnects_total 3\n"
	"# HELP chatsync_start_time_seconds Unix time the daemon started\n"
	"# TYPE chatsync_start_time_seconds gauge\n" TAIL_EXPOSITION(INSTANCE_EXPOSITION(
		"2", "7", "3", "chatsync_instance_info{instance=\"host:1:\\\"x\\\"\\\\\"} 1\n"));

static void
test_fresh(struct metrics *m, double started_after, double started_before)
{
	char *text = get_metrics(metrics_port(m));
	struct process_values pv;
	double start = 0;

	ok(take_line(text, "chatsync_start_time_seconds ", &start),
	   "the exposition has chatsync_start_time_seconds");
	ok(take_process(text, &pv), "and the five process_* samples");
	ok(start >= started_after - 0.001 && start <= started_before + 0.001,
	   "chatsync_start_time_seconds is when metrics_new ran (%.3f)", start);
	is_str(text, fresh_exposition, "a fresh exposition: every family, zero counters");
	free(text);
}

/* Feeds a known history; busy_exposition is what it must render as. */
static void
feed_history(struct metrics *m)
{
	static const long statuses[] = {200, 204, 299, 301, 304, 404, 429, 499,
					500, 599, 0,   -1,  99,	 199, 600};
	static const char *const ok_services[] = {SVC_A, NULL};

	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
		metrics_http_response(m, statuses[i]);
	metrics_retry(m, 429);
	metrics_retry(m, 500);
	metrics_retry(m, 0);
	metrics_retry(m, 429);
	metrics_page(m, SVC_A, 100, 90, 5, 3, 1, 2);
	metrics_page(m, SVC_ODD, 1, 1, 0, 0, 0, 0);
	metrics_page(m, SVC_A, 10, 0, 0, 10, 0, 0);
	metrics_page(m, SVC_A, -5, -1, -1, -1, -1, -1); /* a page, but no negative rows */
	metrics_page(m, NULL, 1, 1, 1, 1, 1, 1);	/* ignored */
	metrics_user_done(m, SVC_A, true);
	metrics_user_done(m, SVC_ODD, false);
	metrics_user_done(m, SVC_A, true);
	metrics_user_done(m, SVC_C, false); /* first seen here: third in order */
	metrics_user_done(m, NULL, false);  /* ignored */
	metrics_db_reconnect(m);
	metrics_db_reconnect(m);
	metrics_db_reconnect(m);
	metrics_lease_lost(m);
	metrics_lease_lost(m);
	metrics_leases(m, 7, 3);
	metrics_leases(m, 7, 0); /* live instances unknown: the last count stays */
	metrics_instance(m, "host:1:x");
	metrics_instance(m, "host:1:\"x\"\\"); /* the last name counts, escaped */
	metrics_sweep_finished(m, 2.5, 2, ok_services, 1);
}

static void
test_in_progress(struct metrics *m)
{
	char *text;

	metrics_sweep_started(m);
	text = get_metrics(metrics_port(m));
	ok(strstr(text, "\nchatsync_sweep_in_progress 1\n") != NULL,
	   "chatsync_sweep_in_progress is 1 during a sweep");
	ok(strstr(text, "\nchatsync_last_sweep_duration_seconds ") == NULL,
	   "no last sweep duration before a sweep finished");
	free(text);
}

static void
test_busy(struct metrics *m)
{
	double before = clock_unix_seconds(), after, last = 0, start = 0;
	struct process_values pv;
	char *text;

	feed_history(m);
	after = clock_unix_seconds();
	text = get_metrics(metrics_port(m));
	ok(take_line(text, "chatsync_start_time_seconds ", &start), "still a start time");
	ok(take_process(text, &pv), "still the process_* samples");
	ok(take_line(text,
		     "chatsync_service_last_success_timestamp_seconds{service=\"" SVC_A "\"} ",
		     &last),
	   "a last-success timestamp for the service that succeeded");
	ok(last >= before - 0.001 && last <= after + 0.001,
	   "the last-success timestamp is when the sweep finished (%.3f)", last);
	is_str(text, busy_exposition,
	       "the exposition after a known history (classes, escaping, first-seen order)");
	free(text);
}

static void
test_second_sweep(struct metrics *m)
{
	static const char *const ok_services[] = {SVC_A, SVC_ODD};
	char *text;

	metrics_sweep_started(m);
	metrics_sweep_finished(m, 0.1, 0, ok_services, 2);
	text = get_metrics(metrics_port(m));
	ok(strstr(text, "\nchatsync_sweeps_total 2\n") != NULL, "a second sweep is counted");
	ok(strstr(text, "\nchatsync_last_sweep_duration_seconds 0.1\n") != NULL,
	   "the last sweep duration is replaced (and printed as 0.1)");
	ok(strstr(text, "\nchatsync_users_failing 0\n") != NULL,
	   "chatsync_users_failing follows the last sweep");
	ok(strstr(text, "\nchatsync_service_sweep_duration_seconds{service=\"" SVC_A
			"\"} 0.1\nchatsync_service_sweep_duration_seconds{service=\"" SVC_ODD_LABEL
			"\"} 0.1\n# HELP") != NULL,
	   "both services' sweep durations, in first-seen order");
	is_int(count_lines_with(text, "chatsync_service_last_success_timestamp_seconds{"), 2,
	       "both services have a last-success timestamp");
	free(text);

	metrics_sweep_started(m);
	metrics_sweep_stopped(m);
	text = get_metrics(metrics_port(m));
	ok(strstr(text, "\nchatsync_sweep_in_progress 0\n") != NULL,
	   "a sweep that stops unfinished is no longer in progress");
	ok(strstr(text, "\nchatsync_sweeps_total 2\n") != NULL, "and is not counted as finished");
	free(text);
}

static void
test_http(struct metrics *m)
{
	static const char *const not_found[] = {"/", "/metrics/", "/metricsx", "/favicon.ico"};
	static const char *const not_allowed[] = {"POST", "PUT", "DELETE", "OPTIONS"};
	unsigned port = metrics_port(m);
	struct scrape s;

	scrape(port, "GET", "/metrics", &s);
	is_int(s.status, 200, "GET /metrics is 200");
	is_str(s.content_type, "text/plain; version=0.0.4; charset=utf-8",
	       "the text format's content type");
	ok(s.body.len > 0 && s.body.data[s.body.len - 1] == '\n',
	   "the exposition ends in a newline");
	buf_free(&s.body);
	scrape(port, "GET", "/metrics?name[]=x", &s);
	is_int(s.status, 200, "a query string is ignored");
	buf_free(&s.body);
	scrape(port, "HEAD", "/metrics", &s);
	ok(s.code == CURLE_OK && s.status == 200 && s.body.len == 0,
	   "HEAD /metrics is 200, no body");
	buf_free(&s.body);
	for (size_t i = 0; i < sizeof(not_found) / sizeof(not_found[0]); i++) {
		scrape(port, "GET", not_found[i], &s);
		is_int(s.status, 404, "GET %s is 404", not_found[i]);
		buf_free(&s.body);
	}
	for (size_t i = 0; i < sizeof(not_allowed) / sizeof(not_allowed[0]); i++) {
		scrape(port, not_allowed[i], "/metrics", &s);
		ok(s.status == 405 && strcmp(s.allow, "GET, HEAD") == 0,
		   "%s /metrics is 405 with Allow: GET, HEAD (got %ld, \"%s\")", not_allowed[i],
		   s.status, s.allow);
		buf_free(&s.body);
	}
}

struct scraper {
	unsigned port;
	int rounds;
	int complete;
};

static void *
scrape_loop(void *arg)
{
	struct scraper *sc = arg;

	for (int i = 0; i < sc->rounds; i++) {
		char *text = get_metrics(sc->port);

		if (strstr(text, "\nchatsync_start_time_seconds ") != NULL)
			sc->complete++;
		free(text);
	}
	return NULL;
}

/* Updates from this thread while another scrapes, as in the daemon; run it under TSan. */
static void
test_concurrent(void)
{
	struct metrics *m = metrics_new("127.0.0.1:0");
	struct scraper sc = {.port = metrics_port(m), .rounds = 20};
	pthread_t thread;
	char sid[64], want[128], *text;

	ok(m != NULL && pthread_create(&thread, NULL, scrape_loop, &sc) == 0,
	   "a scraper thread runs");
	if (m == NULL)
		return;
	for (int i = 0; i < 50000; i++) {
		nth_sid(sid, sizeof(sid), i % 300);
		metrics_http_response(m, 200);
		metrics_page(m, sid, 2, 1, 0, 1, 0, 0);
		if (i % 1000 == 0) {
			metrics_sweep_started(m);
			metrics_sweep_finished(m, 1.0, 0, (const char *const[]){sid}, 1);
		}
	}
	pthread_join(thread, NULL);
	is_int(sc.complete, sc.rounds, "every concurrent scrape was a whole exposition");
	text = get_metrics(metrics_port(m));
	ok(strstr(text, "\nchatsync_http_requests_total{class=\"2xx\"} 50000\n") != NULL,
	   "no update was lost");
	snprintf(want, sizeof(want), "\nchatsync_pages_total{service=\"%s\"} 166\n",
		 nth_sid(sid, sizeof(sid), 299));
	ok(strstr(text, want) != NULL, "per-service counts add up");
	free(text);
	metrics_free(m);
}

/* Runs fn with stderr sent to a temporary file; returns what was written (caller frees). */
static char *
capture_stderr(void (*fn)(struct metrics *), struct metrics *m)
{
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO);
	struct buf out;
	char chunk[4096];
	size_t n;

	buf_init(&out, 1 << 20);
	if (tmp == NULL || saved < 0)
		return buf_take(&out);
	fflush(stderr);
	dup2(fileno(tmp), STDERR_FILENO);
	fn(m);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(tmp);
	while ((n = fread(chunk, 1, sizeof(chunk), tmp)) > 0) {
		if (!buf_append(&out, chunk, n))
			break;
	}
	fclose(tmp);
	return buf_take(&out);
}

static void
new_with_host_name(struct metrics *unused)
{
	struct metrics *m = metrics_new("localhost:9187");

	(void)unused;
	if (m != NULL)
		printf("# metrics_new accepted a host name\n");
	metrics_free(m);
}

/* The one line metrics_new logs for an address it refuses says which and why. */
static void
test_invalid_logged(void)
{
	char *log = capture_stderr(new_with_host_name, NULL);

	is_int(count_substr(log, "invalid metrics listen address"), 1,
	       "one error for an invalid listen address");
	ok(strstr(log, "\"localhost:9187\": not a numeric IPv4 address") != NULL,
	   "it names the address and the reason");
	free(log);
}

static void
add_too_many(struct metrics *m)
{
	char sid[64];

	for (int i = 0; i < METRICS_MAX_SERVICES + 50; i++)
		metrics_page(m, nth_sid(sid, sizeof(sid), i), 1, 1, 0, 0, 0, 0);
	metrics_user_done(m, "IS-another-new-one", true);
	/* Known services are still counted past the cap. */
	metrics_page(m, nth_sid(sid, sizeof(sid), 0), 1, 1, 0, 0, 0, 0);
}

static void
check_capped(const char *text)
{
	char sid[64], want[128];

	is_int(count_lines_with(text, "chatsync_pages_total{"), METRICS_MAX_SERVICES,
	       "the table holds METRICS_MAX_SERVICES services");
	snprintf(want, sizeof(want), "\nchatsync_pages_total{service=\"%s\"} 1\n",
		 nth_sid(sid, sizeof(sid), METRICS_MAX_SERVICES - 1));
	ok(strstr(text, want) != NULL, "the last service that fits is there");
	ok(strstr(text, nth_sid(sid, sizeof(sid), METRICS_MAX_SERVICES)) == NULL &&
		   strstr(text, "IS-another-new-one") == NULL,
	   "services past the cap are not");
	snprintf(want, sizeof(want), "\nchatsync_pages_total{service=\"%s\"} 2\n",
		 nth_sid(sid, sizeof(sid), 0));
	ok(strstr(text, want) != NULL, "a known service is still counted past the cap");
}

static void
test_cap(void)
{
	struct metrics *m = metrics_new("127.0.0.1:0");
	char sid[64], *log, *text;

	ok(m != NULL, "a second listener");
	if (m == NULL)
		return;
	log = capture_stderr(add_too_many, m);
	is_int(count_substr(log, "more than 10000 services"), 1,
	       "one warning when the service table is full");
	ok(strstr(log, nth_sid(sid, sizeof(sid), METRICS_MAX_SERVICES)) != NULL,
	   "the warning names the first service dropped");
	free(log);
	text = get_metrics(metrics_port(m));
	check_capped(text);
	free(text);
	metrics_free(m);
}

static void
test_ipv6(void)
{
	struct metrics *m = metrics_new("[::1]:0");
	struct scrape s;
	CURL *e;
	char url[64];

	if (m == NULL) {
		ok(true, "an IPv6 listener # SKIP cannot listen on [::1] here");
		return;
	}
	ok(metrics_port(m) > 0, "an IPv6 listener on port %u", metrics_port(m));
	memset(&s, 0, sizeof(s));
	buf_init(&s.body, BODY_CAP);
	e = curl_easy_init();
	snprintf(url, sizeof(url), "http://[::1]:%u/metrics", metrics_port(m));
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
	s.code = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &s.status);
	curl_easy_cleanup(e);
	ok(s.code == CURLE_OK && s.status == 200 &&
		   strstr(buf_str(&s.body), "chatsync_sweeps_total") != NULL,
	   "scraped over IPv6");
	buf_free(&s.body);
	metrics_free(m);
}

/* ------------------------------------------------------------ sweep progress, reloads */

static bool
has_line(const char *text, const char *line)
{
	char want[256];

	snprintf(want, sizeof(want), "\n%s\n", line);
	return strstr(text, want) != NULL;
}

static void
test_sweep_users(void)
{
	static const char *const ok_services[] = {SVC_A};
	struct metrics *m = metrics_new("127.0.0.1:0");
	char *text;

	if (!ok(m != NULL, "a listener for the sweep's progress"))
		return;
	metrics_sweep_users(m, 3);
	metrics_sweep_started(m);
	metrics_user_done(m, SVC_A, true);
	metrics_user_done(m, SVC_C, false);
	text = get_metrics(metrics_port(m));
	ok(has_line(text, "chatsync_sweep_users_total 3") &&
		   has_line(text, "chatsync_sweep_users_done 2"),
	   "during a sweep of 3 users, 2 of which ended (ok or failed): total 3, done 2");
	free(text);
	metrics_user_done(m, SVC_A, true);
	metrics_user_done(m, SVC_A, false); /* listed again after a lost database */
	metrics_sweep_finished(m, 1.0, 1, ok_services, 1);
	text = get_metrics(metrics_port(m));
	ok(has_line(text, "chatsync_sweep_users_total 3") &&
		   has_line(text, "chatsync_sweep_users_done 3"),
	   "after the sweep: total 3, done 3, never more than the total");
	free(text);
	metrics_sweep_users(m, 5);
	text = get_metrics(metrics_port(m));
	ok(has_line(text, "chatsync_sweep_users_total 5") &&
		   has_line(text, "chatsync_sweep_users_done 0"),
	   "the next sweep starts over: total 5, done 0");
	free(text);
	metrics_free(m);
}

static void
test_config_reloaded(void)
{
	struct metrics *m = metrics_new("127.0.0.1:0");
	char *text;

	if (!ok(m != NULL, "a listener for the reload gauge"))
		return;
	metrics_config_reloaded(m, false);
	text = get_metrics(metrics_port(m));
	ok(has_line(text, "chatsync_config_last_reload_successful 0"),
	   "a refused reload sets chatsync_config_last_reload_successful to 0");
	free(text);
	metrics_config_reloaded(m, true);
	text = get_metrics(metrics_port(m));
	ok(has_line(text, "chatsync_config_last_reload_successful 1"),
	   "a successful reload sets it back to 1");
	free(text);
	metrics_free(m);
}

/* ------------------------------------------------------------ process_* */

/* Busy for ms of wall-clock time. */
static void
spin(long ms)
{
	struct timespec until = clock_after_ms(clock_now(), ms);
	volatile unsigned long x = 0;

	while (!clock_reached(&until))
		x++;
}

static void
test_process_fds(void)
{
	double before = -1, during = -1, after = -1, limit = 0;
	struct rlimit rl, lower;
	int fds[3];

	ok(metrics_process_open_fds(&before), "metrics_process_open_fds reads /proc/self/fd");
	for (size_t i = 0; i < 3; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ok(metrics_process_open_fds(&during) && during == before + 3,
	   "three more open files count three (%.0f, then %.0f)", before, during);
	for (size_t i = 0; i < 3; i++)
		close(fds[i]);
	ok(metrics_process_open_fds(&after) && after == before, "and closing them uncounts them");

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_max < 200) {
		ok(true, "process_max_fds follows the soft limit # SKIP no room to lower it");
		return;
	}
	lower = (struct rlimit){.rlim_cur = 200, .rlim_max = rl.rlim_max};
	if (setrlimit(RLIMIT_NOFILE, &lower) != 0) {
		ok(true, "process_max_fds follows the soft limit # SKIP setrlimit failed");
		return;
	}
	ok(metrics_process_max_fds(&limit) && limit == 200,
	   "metrics_process_max_fds is the soft RLIMIT_NOFILE (%.0f with 200 set)", limit);
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		ok(false, "restore RLIMIT_NOFILE");
}

static void
test_process_usage(double main_started)
{
	const size_t size = 64 << 20;
	double cpu0 = -1, cpu1 = -1, rss0 = -1, rss1 = -1, start = 0;
	char *block;

	ok(metrics_process_cpu_seconds(&cpu0), "metrics_process_cpu_seconds reads the CPU time");
	spin(200);
	ok(metrics_process_cpu_seconds(&cpu1) && cpu1 >= cpu0 + 0.02,
	   "200 ms of spinning shows in it (%.3f s, then %.3f s)", cpu0, cpu1);

	ok(metrics_process_resident_bytes(&rss0) && rss0 > 0,
	   "metrics_process_resident_bytes reads /proc/self/statm (%.0f)", rss0);
	block = xmalloc(size);
	memset(block, 0x5a, size);
	ok(metrics_process_resident_bytes(&rss1) && rss1 >= rss0 + (double)size / 2,
	   "64 MB written to shows in it (%.0f, then %.0f)", rss0, rss1);
	free(block);

	ok(metrics_process_start_time(&start) && start <= main_started + 1.0 &&
		   start > main_started - 300,
	   "metrics_process_start_time is just before main() ran (%.2f, main at %.2f)", start,
	   main_started);
}

/* The process_* samples of a scrape hold what the readings give. */
static void
test_process_scraped(void)
{
	struct metrics *m = metrics_new("127.0.0.1:0");
	struct process_values pv = {0};
	double max_fds = 0, start = 0;
	char *text;

	if (!ok(m != NULL, "a listener for the process_* samples"))
		return;
	text = get_metrics(metrics_port(m));
	ok(take_process(text, &pv), "a scrape has the five process_* samples");
	ok(pv.cpu > 0 && pv.resident > 0 && pv.open_fds >= 3,
	   "CPU time, resident memory and open fds are there (%.3f s, %.0f bytes, %.0f fds)",
	   pv.cpu, pv.resident, pv.open_fds);
	ok(metrics_process_max_fds(&max_fds) && pv.max_fds == max_fds,
	   "process_max_fds is the soft limit (%.0f)", pv.max_fds);
	ok(metrics_process_start_time(&start) && pv.start == start,
	   "process_start_time_seconds is the process's start (%.2f)", pv.start);
	free(text);
	metrics_free(m);
}

/* ------------------------------------------------------------ connection limits */

/* A TCP connection to 127.0.0.1:port from the loopback address from; -1 if it cannot be made. */
static int
connect_from(const char *from, unsigned port)
{
	struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	inet_pton(AF_INET, from, &src.sin_addr);
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	dst.sin_port = htons((uint16_t)port);
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
	    connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends GET /metrics on fd: whether a status line came back within wait_ms. */
static bool
answered(int fd, int wait_ms)
{
	static const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char got[9];
	size_t len = 0;

	if (fd < 0 || send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1))
		return false;
	while (len < sizeof(got) && poll(&p, 1, wait_ms) == 1) {
		ssize_t n = recv(fd, got + len, sizeof(got) - len, 0);

		if (n <= 0)
			return false;
		len += (size_t)n;
	}
	return len == sizeof(got) && memcmp(got, "HTTP/1.", 7) == 0;
}

static void
close_all(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

/* 16 idle connections from 127.0.0.1 and 127.0.0.2 fill the listener; one more is refused. */
static void
check_total_limit(unsigned port, int *idle)
{
	int extra;

	for (size_t i = 8; i < 16; i++)
		idle[i] = connect_from("127.0.0.2", port);
	extra = connect_from("127.0.0.3", port);
	ok(!answered(extra, 1000),
	   "with 8 idle connections from each of two addresses, one from a third is not served");
	close(extra);
}

static void
limits_with_stderr(struct metrics *m)
{
	unsigned port = metrics_port(m);
	int idle[16], ninth, other;

	for (size_t i = 0; i < 16; i++)
		idle[i] = i < 8 ? connect_from("127.0.0.1", port) : -1;
	ninth = connect_from("127.0.0.1", port);
	ok(ninth >= 0 && !answered(ninth, 1000),
	   "with 8 idle connections from 127.0.0.1, a 9th from there is not served");
	close(ninth);
	/* Refused in the order they came, before the next one is served. */
	for (int i = 0; i < 20; i++) {
		int fd = connect_from("127.0.0.1", port);

		if (fd >= 0)
			close(fd);
	}
	other = connect_from("127.0.0.2", port);
	if (other < 0) {
		ok(true, "another address is still served # SKIP cannot connect from 127.0.0.2");
		close_all(idle, 16);
		return;
	}
	ok(answered(other, 10000), "while one from 127.0.0.2 is served");
	close(other);
	check_total_limit(port, idle);
	close_all(idle, 16);
	other = connect_from("127.0.0.1", port);
	ok(answered(other, 10000), "once they close, 127.0.0.1 is served again");
	close(other);
}

static void
test_connection_limits(void)
{
	struct metrics *m = metrics_new("127.0.0.1:0");
	char *log;

	if (!ok(m != NULL, "a listener for the connection limits"))
		return;
	log = capture_stderr(limits_with_stderr, m);
	is_int(count_substr(log, "refused a connection past the limits"), 1,
	       "the 21 connections refused from 127.0.0.1 are logged once");
	ok(strstr(log, "Server reached connection limit") == NULL,
	   "and not once each in libmicrohttpd's words");
	free(log);
	metrics_free(m);
}

int
main(void)
{
	double main_started = clock_unix_seconds();
	struct metrics *m;
	double before, after;
	unsigned port;
	struct scrape s;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		printf("1..0 # SKIP could not initialise libcurl\n");
		return 0;
	}
	test_process_fds();
	test_process_usage(main_started);
	test_null();
	test_cannot_listen();
	test_invalid_logged();

	before = clock_unix_seconds();
	m = metrics_new("127.0.0.1:0");
	after = clock_unix_seconds();
	ok(m != NULL, "metrics_new on 127.0.0.1:0");
	if (m == NULL) {
		curl_global_cleanup();
		return tap_done();
	}
	port = metrics_port(m);
	ok(port > 0 && port <= 65535, "listening on a real port (%u)", port);
	test_fresh(m, before, after);
	test_in_progress(m);
	test_busy(m);
	test_second_sweep(m);
	test_http(m);

	metrics_free(m);
	scrape(port, "GET", "/metrics", &s);
	is_int(s.code, CURLE_COULDNT_CONNECT, "metrics_free closes the listener");
	buf_free(&s.body);

	test_concurrent();
	test_cap();
	test_ipv6();
	test_sweep_users();
	test_config_reloaded();
	test_process_scraped();
	test_connection_limits();
	curl_global_cleanup();
	return tap_done();
}
