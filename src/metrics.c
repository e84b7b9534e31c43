/*
 * metrics.c - the daemon's Prometheus metrics: counters, the per-service
 * table, and rendering them in the text format 0.0.4
 *
 * Two threads touch a struct metrics: the daemon's main thread updates it
 * and the listener's thread (metrics_server.c) renders it.  Plain counters
 * are C11 atomics (relaxed: each is independent); the per-service table and
 * the floating-point gauges sit behind one mutex.  A scrape copies the table
 * under the mutex and renders the copy without it.  Service SIDs and their
 * escaped labels are never freed before metrics_free, which stops the
 * listener first, so the copy may borrow them.
 */
#include "config.h"

#include "metrics.h"

#include "clock.h"
#include "hash.h"
#include "listen_addr.h"
#include "log.h"
#include "mem.h"
#include "metrics_process.h"
#include "metrics_server.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A scrape larger than this (far beyond METRICS_MAX_SERVICES services) is refused. */
#define EXPOSITION_CAP (64 * 1024 * 1024)

enum http_class { CLASS_2XX, CLASS_3XX, CLASS_4XX, CLASS_5XX, CLASS_ERROR, N_CLASSES };

static const char *const class_names[N_CLASSES] = {"2xx", "3xx", "4xx", "5xx", "error"};

enum row_outcome {
	ROW_RECEIVED,
	ROW_INSERTED,
	ROW_UPDATED,
	ROW_UNCHANGED,
	ROW_DELETED,
	ROW_REJECTED,
	N_OUTCOMES
};

static const char *const outcome_names[N_OUTCOMES] = {
	"received", "inserted", "updated", "unchanged", "deleted", "rejected",
};

struct service_stats {
	char *sid;   /* owned; the lookup key */
	char *label; /* owned; sid escaped for a label value */
	uint64_t pages;
	uint64_t rows[N_OUTCOMES];
	uint64_t users_ok, users_failed;
	bool succeeded; /* sweep_seconds and last_success are set */
	double sweep_seconds;
	double last_success; /* unix time */
};

struct metrics {
	struct metrics_server *server;
	/* Written before the listener starts, read-only after. */
	double start_time; /* unix time metrics_new ran */
	bool have_process_start;
	double process_start; /* unix time the process started, from the kernel */
	char *version_label;  /* PACKAGE_VERSION escaped for a label value */

	/* Zeroed by xcalloc, a valid initial value for lock-free atomics. */
	_Atomic uint64_t http[N_CLASSES];
	_Atomic uint64_t retries;
	_Atomic uint64_t http_429;
	_Atomic uint64_t sweeps;
	_Atomic uint64_t db_reconnects;
	_Atomic uint64_t leases_lost;
	_Atomic uint64_t leases_held;
	_Atomic uint64_t instances_live;
	_Atomic uint64_t users_failing;
	atomic_bool sweep_in_progress;
	atomic_bool config_ok; /* the last reload, or the start, succeeded */

	pthread_mutex_t lock; /* guards everything below */
	bool swept;	      /* last_sweep_seconds is set */
	double last_sweep_seconds;
	size_t sweep_users, sweep_users_done; /* of the current or last sweep */
	struct service_stats *services;	      /* in first-seen order */
	size_t n_services, alloc_services;
	uint32_t *index; /* open addressing: 1 + position in services, 0 = empty */
	size_t index_size;
	bool cap_warned;
	char *instance_label; /* the instance's name escaped for a label value, or NULL */
};

/* Rendering state: a capped buffer that remembers whether anything failed to fit. */
struct render {
	struct buf out;
	bool failed;
};

/* What a scrape copies under the lock, to render without it. */
struct snapshot {
	struct service_stats *services; /* owned array; its strings are borrowed */
	size_t n_services;
	bool swept;
	double last_sweep_seconds;
	size_t sweep_users, sweep_users_done;
};

/* ------------------------------------------------------------ the service table */

/* The slot holding sid, or the empty slot where it belongs; index_size must be > 0. */
static size_t
index_slot(const struct metrics *m, const char *sid)
{
	size_t mask = m->index_size - 1;
	size_t i = (size_t)hash_str(sid) & mask;

	while (m->index[i] != 0 && strcmp(m->services[m->index[i] - 1].sid, sid) != 0)
		i = (i + 1) & mask;
	return i;
}

/* Keeps the index at most half full. */
static void
index_grow(struct metrics *m)
{
	if ((m->n_services + 1) * 2 <= m->index_size)
		return;
	free(m->index);
	m->index_size = m->index_size ? m->index_size * 2 : 16;
	m->index = xcalloc(m->index_size, sizeof(*m->index));
	for (size_t i = 0; i < m->n_services; i++)
		m->index[index_slot(m, m->services[i].sid)] = (uint32_t)(i + 1);
}

/* Escapes a label value as the text format requires: backslash, double quote, line feed. */
static bool
needs_escape(char c)
{
	return c == '\\' || c == '"' || c == '\n';
}

static char *
label_escape(const char *s)
{
	size_t n = 0, o = 0;
	char *out;

	for (const char *p = s; *p != '\0'; p++)
		n += needs_escape(*p) ? 2 : 1;
	out = xmalloc(n + 1);
	for (; *s != '\0'; s++) {
		if (needs_escape(*s))
			out[o++] = '\\';
		out[o++] = *s == '\n' ? 'n' : *s;
	}
	out[o] = '\0';
	return out;
}

static struct service_stats *
service_add(struct metrics *m, const char *sid, size_t slot)
{
	struct service_stats *st;

	if (m->n_services == m->alloc_services) {
		m->alloc_services = m->alloc_services ? m->alloc_services * 2 : 8;
		m->services = xrealloc(m->services, m->alloc_services * sizeof(*m->services));
	}
	st = &m->services[m->n_services++];
	memset(st, 0, sizeof(*st));
	st->sid = xstrdup(sid);
	st->label = label_escape(sid);
	m->index[slot] = (uint32_t)m->n_services;
	return st;
}

/* Finds or adds sid's entry; NULL past METRICS_MAX_SERVICES.  Call with the lock held. */
static struct service_stats *
service_get(struct metrics *m, const char *sid)
{
	size_t slot;

	if (m->index_size > 0) {
		slot = index_slot(m, sid);
		if (m->index[slot] != 0)
			return &m->services[m->index[slot] - 1];
	}
	if (m->n_services >= METRICS_MAX_SERVICES) {
		if (!m->cap_warned) {
			char esc[128];

			log_warning("metrics: more than %d services; not tracking service \"%s\" "
				    "or any further one",
				    METRICS_MAX_SERVICES, log_escape(esc, sizeof(esc), sid));
			m->cap_warned = true;
		}
		return NULL;
	}
	index_grow(m);
	return service_add(m, sid, index_slot(m, sid));
}

/* ------------------------------------------------------------ updates */

static uint64_t
nonnegative(long v)
{
	return v > 0 ? (uint64_t)v : 0;
}

static void
count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

void
metrics_http_response(struct metrics *m, long status)
{
	enum http_class c = CLASS_ERROR;

	if (m == NULL)
		return;
	if (status >= 200 && status < 600)
		c = (enum http_class)(CLASS_2XX + (status / 100 - 2));
	count(&m->http[c]);
}

void
metrics_retry(struct metrics *m, long status)
{
	if (m == NULL)
		return;
	count(&m->retries);
	if (status == 429)
		count(&m->http_429);
}

void
metrics_page(struct metrics *m, const char *service_sid, long received, long inserted, long updated,
	     long unchanged, long deleted, long rejected)
{
	const long rows[N_OUTCOMES] = {
		[ROW_RECEIVED] = received,   [ROW_INSERTED] = inserted, [ROW_UPDATED] = updated,
		[ROW_UNCHANGED] = unchanged, [ROW_DELETED] = deleted,	[ROW_REJECTED] = rejected,
	};
	struct service_stats *st;

	if (m == NULL || service_sid == NULL)
		return;
	pthread_mutex_lock(&m->lock);
	st = service_get(m, service_sid);
	if (st != NULL) {
		st->pages++;
		for (size_t i = 0; i < N_OUTCOMES; i++)
			st->rows[i] += nonnegative(rows[i]);
	}
	pthread_mutex_unlock(&m->lock);
}

void
metrics_user_done(struct metrics *m, const char *service_sid, bool ok)
{
	struct service_stats *st;

	if (m == NULL || service_sid == NULL)
		return;
	pthread_mutex_lock(&m->lock);
	/* A user listed again after a lost database must not count twice. */
	if (m->sweep_users_done < m->sweep_users)
		m->sweep_users_done++;
	st = service_get(m, service_sid);
	if (st != NULL && ok)
		st->users_ok++;
	else if (st != NULL)
		st->users_failed++;
	pthread_mutex_unlock(&m->lock);
}

void
metrics_sweep_users(struct metrics *m, size_t total)
{
	if (m == NULL)
		return;
	pthread_mutex_lock(&m->lock);
	m->sweep_users = total;
	m->sweep_users_done = 0;
	pthread_mutex_unlock(&m->lock);
}

void
metrics_sweep_started(struct metrics *m)
{
	if (m == NULL)
		return;
	atomic_store_explicit(&m->sweep_in_progress, true, memory_order_relaxed);
}

void
metrics_sweep_stopped(struct metrics *m)
{
	if (m == NULL)
		return;
	atomic_store_explicit(&m->sweep_in_progress, false, memory_order_relaxed);
}

void
metrics_sweep_finished(struct metrics *m, double seconds, long users_failed,
		       const char *const *ok_services, size_t n_ok_services)
{
	double now;

	if (m == NULL)
		return;
	now = clock_unix_seconds();
	pthread_mutex_lock(&m->lock);
	m->swept = true;
	m->last_sweep_seconds = seconds;
	for (size_t i = 0; i < n_ok_services; i++) {
		struct service_stats *st =
			ok_services[i] != NULL ? service_get(m, ok_services[i]) : NULL;

		if (st == NULL)
			continue;
		st->succeeded = true;
		st->sweep_seconds = seconds;
		st->last_success = now;
	}
	pthread_mutex_unlock(&m->lock);
	atomic_store_explicit(&m->users_failing, nonnegative(users_failed), memory_order_relaxed);
	count(&m->sweeps);
	atomic_store_explicit(&m->sweep_in_progress, false, memory_order_relaxed);
}

void
metrics_db_reconnect(struct metrics *m)
{
	if (m == NULL)
		return;
	count(&m->db_reconnects);
}

void
metrics_lease_lost(struct metrics *m)
{
	if (m == NULL)
		return;
	count(&m->leases_lost);
}

void
metrics_leases(struct metrics *m, size_t held, int live_instances)
{
	if (m == NULL)
		return;
	atomic_store_explicit(&m->leases_held, held, memory_order_relaxed);
	if (live_instances > 0)
		atomic_store_explicit(&m->instances_live, (uint64_t)live_instances,
				      memory_order_relaxed);
}

void
metrics_instance(struct metrics *m, const char *name)
{
	char *label;

	if (m == NULL)
		return;
	label = label_escape(name);
	pthread_mutex_lock(&m->lock);
	free(m->instance_label);
	m->instance_label = label;
	pthread_mutex_unlock(&m->lock);
}

void
metrics_config_reloaded(struct metrics *m, bool ok)
{
	if (m == NULL)
		return;
	atomic_store_explicit(&m->config_ok, ok, memory_order_relaxed);
}

/* ------------------------------------------------------------ rendering */

static void emit(struct render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
emit(struct render *r, const char *fmt, ...)
{
	char line[512], *big = NULL;
	const char *text = line;
	va_list ap;
	int n;

	if (r->failed)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0) {
		r->failed = true;
		return;
	}
	if ((size_t)n >= sizeof(line)) {
		big = xmalloc((size_t)n + 1);
		va_start(ap, fmt);
		vsnprintf(big, (size_t)n + 1, fmt, ap);
		va_end(ap);
		text = big;
	}
	if (!buf_append(&r->out, text, (size_t)n))
		r->failed = true;
	free(big);
}

static void
family(struct render *r, const char *name, const char *type, const char *help)
{
	emit(r, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Shortest of %.15g and %.17g that reads back as v; Prometheus spells the specials. */
static const char *
format_double(char *out, size_t outsz, double v)
{
	if (isnan(v))
		return "NaN";
	if (isinf(v))
		return v > 0 ? "+Inf" : "-Inf";
	snprintf(out, outsz, "%.15g", v);
	if (strtod(out, NULL) != v)
		snprintf(out, outsz, "%.17g", v);
	return out;
}

static void
counter(struct render *r, const char *name, const char *help, _Atomic uint64_t *c)
{
	family(r, name, "counter", help);
	emit(r, "%s %" PRIu64 "\n", name, atomic_load_explicit(c, memory_order_relaxed));
}

static void
render_http(struct render *r, struct metrics *m)
{
	family(r, "chatsync_http_requests_total", "counter",
	       "Responses from the Twilio API by status class (error: no response received)");
	for (size_t i = 0; i < N_CLASSES; i++)
		emit(r, "chatsync_http_requests_total{class=\"%s\"} %" PRIu64 "\n", class_names[i],
		     atomic_load_explicit(&m->http[i], memory_order_relaxed));
	counter(r, "chatsync_http_retries_total", "Requests retried after a retryable failure",
		&m->retries);
	counter(r, "chatsync_http_429_total", "Retries scheduled after HTTP 429 Too Many Requests",
		&m->http_429);
}

static void
render_service_counters(struct render *r, const struct service_stats *sv, size_t n)
{
	family(r, "chatsync_pages_total", "counter", "Pages committed to the database");
	for (size_t i = 0; i < n; i++)
		emit(r, "chatsync_pages_total{service=\"%s\"} %" PRIu64 "\n", sv[i].label,
		     sv[i].pages);
	family(r, "chatsync_rows_total", "counter",
	       "Memberships received in committed pages, and what became of them");
	for (size_t i = 0; i < n; i++) {
		for (size_t o = 0; o < N_OUTCOMES; o++)
			emit(r, "chatsync_rows_total{service=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
			     sv[i].label, outcome_names[o], sv[i].rows[o]);
	}
	family(r, "chatsync_user_listings_total", "counter",
	       "Users whose listing ended in a sweep, by outcome");
	for (size_t i = 0; i < n; i++) {
		emit(r, "chatsync_user_listings_total{service=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
		     sv[i].label, "ok", sv[i].users_ok);
		emit(r, "chatsync_user_listings_total{service=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
		     sv[i].label, "failed", sv[i].users_failed);
	}
}

static void
render_service_gauges(struct render *r, const struct service_stats *sv, size_t n)
{
	char num[40];

	family(r, "chatsync_service_sweep_duration_seconds", "gauge",
	       "Duration of the last sweep in which every user of the service succeeded");
	for (size_t i = 0; i < n; i++) {
		if (sv[i].succeeded)
			emit(r, "chatsync_service_sweep_duration_seconds{service=\"%s\"} %s\n",
			     sv[i].label, format_double(num, sizeof(num), sv[i].sweep_seconds));
	}
	family(r, "chatsync_service_last_success_timestamp_seconds", "gauge",
	       "Unix time of the end of the last sweep in which every user of the service "
	       "succeeded");
	for (size_t i = 0; i < n; i++) {
		if (sv[i].succeeded)
			emit(r,
			     "chatsync_service_last_success_timestamp_seconds{service=\"%s\"} %s\n",
			     sv[i].label, format_double(num, sizeof(num), sv[i].last_success));
	}
}

static void
render_sweeps(struct render *r, struct metrics *m, const struct snapshot *snap)
{
	char num[40];

	counter(r, "chatsync_sweeps_total", "Sweeps finished", &m->sweeps);
	family(r, "chatsync_sweep_in_progress", "gauge", "1 while a sweep is running");
	emit(r, "chatsync_sweep_in_progress %d\n",
	     atomic_load_explicit(&m->sweep_in_progress, memory_order_relaxed) ? 1 : 0);
	/*
	 * A gauge, but typed untyped: the text format's linters (promtool check
	 * metrics) reserve the _total suffix for counters, and this name is fixed.
	 */
	family(r, "chatsync_sweep_users_total", "untyped",
	       "Users in the current sweep, or in the last one while none runs");
	emit(r, "chatsync_sweep_users_total %zu\n", snap->sweep_users);
	family(r, "chatsync_sweep_users_done", "gauge",
	       "Users of the current or last sweep whose listing has ended, ok or failed");
	emit(r, "chatsync_sweep_users_done %zu\n", snap->sweep_users_done);
	family(r, "chatsync_last_sweep_duration_seconds", "gauge",
	       "Duration of the last finished sweep");
	if (snap->swept)
		emit(r, "chatsync_last_sweep_duration_seconds %s\n",
		     format_double(num, sizeof(num), snap->last_sweep_seconds));
}

/* Copies the service table and the sweep gauges under the lock; the caller frees snap->services. */
static void
snapshot_take(struct metrics *m, struct snapshot *snap)
{
	pthread_mutex_lock(&m->lock);
	snap->n_services = m->n_services;
	snap->services = xmalloc(m->n_services * sizeof(*snap->services));
	if (m->n_services > 0)
		memcpy(snap->services, m->services, m->n_services * sizeof(*snap->services));
	snap->swept = m->swept;
	snap->last_sweep_seconds = m->last_sweep_seconds;
	snap->sweep_users = m->sweep_users;
	snap->sweep_users_done = m->sweep_users_done;
	pthread_mutex_unlock(&m->lock);
}

/* The instance among those of the schema, and the leases it holds. */
static void
render_instance(struct render *r, struct metrics *m)
{
	counter(r, "chatsync_leases_lost_total",
		"Listings of this instance taken over by another instance", &m->leases_lost);
	family(r, "chatsync_leases_held", "gauge",
	       "Leases on users and dimension listings this instance holds");
	emit(r, "chatsync_leases_held %" PRIu64 "\n",
	     atomic_load_explicit(&m->leases_held, memory_order_relaxed));
	family(r, "chatsync_instances_live", "gauge",
	       "Instances of chatsyncd working on the schema, this one included, at its last "
	       "heartbeat");
	emit(r, "chatsync_instances_live %" PRIu64 "\n",
	     atomic_load_explicit(&m->instances_live, memory_order_relaxed));
	family(r, "chatsync_instance_info", "gauge",
	       "This instance's name among those of the schema, as a label; the value is always 1");
	pthread_mutex_lock(&m->lock);
	if (m->instance_label != NULL)
		emit(r, "chatsync_instance_info{instance=\"%s\"} 1\n", m->instance_label);
	pthread_mutex_unlock(&m->lock);
}

static void
render_daemon(struct render *r, struct metrics *m)
{
	char num[40];

	family(r, "chatsync_users_failing", "gauge",
	       "Users that failed in the last finished sweep");
	emit(r, "chatsync_users_failing %" PRIu64 "\n",
	     atomic_load_explicit(&m->users_failing, memory_order_relaxed));
	counter(r, "chatsync_database_reconnects_total", "Reconnections to PostgreSQL",
		&m->db_reconnects);
	family(r, "chatsync_start_time_seconds", "gauge", "Unix time the daemon started");
	emit(r, "chatsync_start_time_seconds %s\n", format_double(num, sizeof(num), m->start_time));
	family(r, "chatsync_config_last_reload_successful", "gauge",
	       "1 if the configuration was loaded at start or by the last reload, 0 if the last "
	       "reload was refused");
	emit(r, "chatsync_config_last_reload_successful %d\n",
	     atomic_load_explicit(&m->config_ok, memory_order_relaxed) ? 1 : 0);
	family(r, "chatsync_build_info", "gauge",
	       "The version of chatsyncd, as a label; the value is always 1");
	emit(r, "chatsync_build_info{version=\"%s\"} 1\n", m->version_label);
	render_instance(r, m);
}

/* One gauge or counter from a reading; the sample is left out if it could not be read. */
static void
reading(struct render *r, const char *name, const char *type, const char *help, bool have,
	double value)
{
	char num[40];

	family(r, name, type, help);
	if (have)
		emit(r, "%s %s\n", name, format_double(num, sizeof(num), value));
}

/* The process_* families, named, typed and described as the Prometheus client libraries do. */
static void
render_process(struct render *r, struct metrics *m)
{
	double v = 0;
	bool have;

	have = metrics_process_cpu_seconds(&v);
	reading(r, "process_cpu_seconds_total", "counter",
		"Total user and system CPU time spent in seconds.", have, v);
	have = metrics_process_resident_bytes(&v);
	reading(r, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", have,
		v);
	have = metrics_process_open_fds(&v);
	reading(r, "process_open_fds", "gauge", "Number of open file descriptors.", have, v);
	have = metrics_process_max_fds(&v);
	reading(r, "process_max_fds", "gauge", "Maximum number of open file descriptors.", have, v);
	reading(r, "process_start_time_seconds", "gauge",
		"Start time of the process since unix epoch in seconds.", m->have_process_start,
		m->process_start);
}

/* Renders the whole exposition into r, families in a fixed order, services in first-seen order. */
static void
render_all(struct render *r, struct metrics *m)
{
	struct snapshot snap;

	snapshot_take(m, &snap);
	render_http(r, m);
	render_service_counters(r, snap.services, snap.n_services);
	render_sweeps(r, m, &snap);
	render_service_gauges(r, snap.services, snap.n_services);
	render_daemon(r, m);
	render_process(r, m);
	free(snap.services);
}

/* The listener's render function: the whole exposition, or false past EXPOSITION_CAP. */
static bool
render_exposition(void *arg, char **body, size_t *len, char *err, size_t errsz)
{
	struct render r = {.failed = false};

	buf_init(&r.out, EXPOSITION_CAP);
	render_all(&r, arg);
	if (r.failed) {
		buf_free(&r.out);
		snprintf(err, errsz, "more than %d bytes", EXPOSITION_CAP);
		return false;
	}
	*len = r.out.len;
	*body = buf_take(&r.out);
	return true;
}

/* ------------------------------------------------------------ lifecycle */

struct metrics *
metrics_new(const char *listen)
{
	struct metrics_render render = {.render = render_exposition};
	struct sockaddr_storage addr;
	struct metrics *m;
	socklen_t len;
	char esc[128], why[128];

	if (!listen_addr_parse(listen, &addr, &len, why, sizeof(why))) {
		log_error("invalid metrics listen address \"%s\": %s",
			  log_escape(esc, sizeof(esc), listen), why);
		return NULL;
	}
	m = xcalloc(1, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	m->start_time = clock_unix_seconds();
	m->have_process_start = metrics_process_start_time(&m->process_start);
	m->version_label = label_escape(PACKAGE_VERSION);
	atomic_init(&m->config_ok, true);
	render.arg = m;
	m->server = metrics_server_new(&addr, &render);
	if (m->server == NULL) {
		log_error("could not listen for metrics on %s", listen);
		metrics_free(m);
		return NULL;
	}
	log_info("serving metrics on %s (port %u) at /metrics", listen,
		 metrics_server_port(m->server));
	return m;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	/* Stops the listener first: no scrape can be reading the table after this. */
	metrics_server_free(m->server);
	for (size_t i = 0; i < m->n_services; i++) {
		free(m->services[i].sid);
		free(m->services[i].label);
	}
	free(m->services);
	free(m->index);
	free(m->version_label);
	free(m->instance_label);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

unsigned
metrics_port(const struct metrics *m)
{
	return m != NULL ? metrics_server_port(m->server) : 0;
}
