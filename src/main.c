/*
 * main.c - chatsyncd: command line, startup and the sweep loop
 */
#include "config.h"

#include "backoff.h"
#include "clock.h"
#include "db.h"
#include "default_service.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "migrate.h"
#include "notify.h"
#include "progress.h"
#include "settings.h"
#include "status.h"
#include "sweep.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif

enum exit_code {
	EXIT_OK = 0,
	EXIT_USAGE = 1,	       /* usage or configuration error */
	EXIT_DATABASE = 2,     /* database unreachable or migration failed */
	EXIT_USERS_FAILED = 3, /* the sweep finished but some users failed */
};

enum mode {
	MODE_DAEMON,
	MODE_ONCE,
	MODE_CHECK_CONFIG,
	MODE_MIGRATE,
	MODE_STATUS,
};

struct options {
	const char *config_path;
	enum mode mode;
	int verbose;
};

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void
on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void
on_reload_signal(int sig)
{
	(void)sig;
	reload_requested = 1;
}

static void
usage(FILE *out)
{
	fprintf(out,
		"Usage: chatsyncd [OPTION]...\n"
		"Keep a PostgreSQL copy of Twilio Programmable Chat channel memberships.\n"
		"\n"
		"  -c, --config FILE   configuration file (default %s/chatsyncd.conf)\n"
		"      --once          sweep every configured user once, then exit\n"
		"      --check-config  validate the configuration, print \"configuration OK\"\n"
		"      --migrate       apply pending schema migrations, then exit\n"
		"      --status        show each user's last sync and the recent sweeps\n"
		"  -v, --verbose       log more (repeat for debug)\n"
		"      --help          show this help\n"
		"      --version       show the version\n"
		"\n"
		"Without --once, sweeps every sync.interval seconds until SIGTERM or SIGINT;\n"
		"SIGHUP reloads the configuration.\n"
		"\n"
		"Exit status: 0 all users synced; 1 usage or configuration error (or the\n"
		"API refused the credentials, or --status found a stale user); 2 database\n"
		"unreachable or migration failed; 3 some users failed.\n",
		SYSCONFDIR);
}

static bool
parse_args(int argc, char **argv, struct options *o, int *exit_now)
{
	/* An option that picks a mode returns OPT_MODE + the mode. */
	enum { OPT_HELP = 256, OPT_VERSION, OPT_MODE };
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"once", no_argument, NULL, OPT_MODE + MODE_ONCE},
		{"check-config", no_argument, NULL, OPT_MODE + MODE_CHECK_CONFIG},
		{"migrate", no_argument, NULL, OPT_MODE + MODE_MIGRATE},
		{"status", no_argument, NULL, OPT_MODE + MODE_STATUS},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, OPT_HELP},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	int c;

	o->config_path = SYSCONFDIR "/chatsyncd.conf";
	o->mode = MODE_DAEMON;
	o->verbose = 0;
	*exit_now = -1;
	for (c = getopt_long(argc, argv, "c:v", longopts, NULL); c != -1;
	     c = getopt_long(argc, argv, "c:v", longopts, NULL)) {
		switch (c) {
		case 'c':
			o->config_path = optarg;
			break;
		case 'v':
			o->verbose++;
			break;
		case OPT_MODE + MODE_ONCE:
		case OPT_MODE + MODE_CHECK_CONFIG:
		case OPT_MODE + MODE_MIGRATE:
		case OPT_MODE + MODE_STATUS:
			o->mode = (enum mode)(c - OPT_MODE);
			break;
		case OPT_HELP:
			usage(stdout);
			*exit_now = EXIT_OK;
			return false;
		case OPT_VERSION:
			printf("chatsyncd %s\n", PACKAGE_VERSION);
			*exit_now = EXIT_OK;
			return false;
		default:
			usage(stderr);
			*exit_now = EXIT_USAGE;
			return false;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "chatsyncd: unexpected argument \"%s\"\n", argv[optind]);
		*exit_now = EXIT_USAGE;
		return false;
	}
	return true;
}

static bool
handle_signal(int sig, void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = handler;
	if (sigaction(sig, &sa, NULL) == 0)
		return true;
	fprintf(stderr, "chatsyncd: could not handle signal %d: %s\n", sig, strerror(errno));
	return false;
}

static bool
install_signals(void)
{
	return handle_signal(SIGTERM, on_stop_signal) && handle_signal(SIGINT, on_stop_signal) &&
	       handle_signal(SIGHUP, on_reload_signal) && handle_signal(SIGPIPE, SIG_IGN);
}

static int
exit_code_for(enum sweep_result r)
{
	switch (r) {
	case SWEEP_OK:
	case SWEEP_INTERRUPTED:
		return EXIT_OK;
	case SWEEP_USERS_FAILED:
		return EXIT_USERS_FAILED;
	case SWEEP_AUTH_FAILED:
		return EXIT_USAGE;
	case SWEEP_DB_FAILED:
		return EXIT_DATABASE;
	}
	return EXIT_DATABASE;
}

static void
apply_log_settings(const struct settings *s, int verbose)
{
	int level = (int)s->log_level + verbose;

	log_set_level(level > LOG_LEVEL_DEBUG ? LOG_LEVEL_DEBUG : (enum log_level)level);
}

/* Everything a running daemon holds; settings and http are swapped on reload. */
struct daemon {
	const struct options *o;
	struct settings *s;
	struct progress *progress; /* --once at a terminal, else NULL */
	struct db *db;		   /* cursors, the schema lock */
	struct db **writers;	   /* page commits: database.writers connections */
	size_t n_writers;
	struct http *http;
	struct metrics *metrics; /* NULL when metrics.listen is empty */
	struct timespec last_status;
};

static struct http *
http_for(const struct settings *s)
{
	const struct http_options hopts = {
		.username = settings_api_user(s),
		.password = settings_api_password(s),
		.proxy = s->proxy,
		.timeout = s->timeout,
		.connect_timeout = s->connect_timeout,
		.abort_flag = &stop_requested,
	};
	char why[256];
	struct http *h = http_new(&hopts, why, sizeof(why));

	if (h == NULL)
		log_error("%s", why);
	return h;
}

/* During a sweep: watchdog pings, and the progress as systemd's STATUS= once a second. */
static void
on_tick(void *arg, const struct sweep_progress *p)
{
	struct daemon *d = arg;

	progress_show(d->progress, p);
	notify_watchdog();
	if (clock_seconds_since(&d->last_status) < 1.0)
		return;
	d->last_status = clock_now();
	notify_status("sweep %" PRId64 ": %zu of %zu users started, %lu pages", p->run_id,
		      p->users_started, p->users_total, p->pages);
}

/* While the default conversation service is asked for: systemd's watchdog is fed. */
static void
on_resolve_tick(void *arg)
{
	(void)arg;
	notify_watchdog();
}

static enum sweep_result
sweep_once(struct daemon *d)
{
	const struct default_service_hooks resolve_hooks = {.tick = on_resolve_tick,
							    .stop = &stop_requested};
	const struct sweep_hooks hooks = {.tick = on_tick, .arg = d, .metrics = d->metrics};
	char why[512];
	bool refused;

	/* The account's default conversation service first: its users are stored under its SID. */
	if (!default_service_resolve(d->s, d->http, &resolve_hooks, &refused, why, sizeof(why))) {
		if (stop_requested)
			return SWEEP_INTERRUPTED;
		log_error("could not learn the account's default conversation service: %s; "
			  "no sweep until the next interval",
			  why);
		return refused ? SWEEP_AUTH_FAILED : SWEEP_USERS_FAILED;
	}
	memset(&d->last_status, 0, sizeof(d->last_status));
	return sweep_run(d->s, d->db, d->writers, d->n_writers, d->http, &stop_requested, &hooks);
}

/* SIGHUP: a fresh, valid configuration replaces the old one; a bad one changes nothing. */
static void
reload(struct daemon *d)
{
	struct settings *fresh;
	struct http *http;

	notify_reloading();
	log_info("reloading %s", d->o->config_path);
	fresh = settings_load(d->o->config_path, SETTINGS_TOKEN_READ);
	if (fresh == NULL) {
		log_error("keeping the running configuration: %s is not valid", d->o->config_path);
		metrics_config_reloaded(d->metrics, false);
		notify_ready();
		return;
	}
	settings_keep_fixed(fresh, d->s);
	http = http_for(fresh);
	if (http == NULL) {
		settings_free(fresh);
		metrics_config_reloaded(d->metrics, false);
		notify_ready();
		return;
	}
	http_free(d->http);
	settings_free(d->s);
	d->http = http;
	d->s = fresh;
	apply_log_settings(d->s, d->o->verbose);
	log_info("configuration reloaded: %zu users%s, sweeping every %d s",
		 settings_user_count(d->s),
		 settings_discovers_users(d->s) ? " and every user of some services" : "",
		 d->s->interval);
	metrics_config_reloaded(d->metrics, true);
	notify_ready();
}

/* The start of the next sweep: one interval after this one's, plus up to 5% jitter (max 10 s). */
static struct timespec
next_sweep_time(const struct timespec *start, int interval, uint64_t *rng)
{
	long jitter_ms = interval * 50L;

	if (jitter_ms > 10000)
		jitter_ms = 10000;
	jitter_ms = jitter_ms > 0 ? (long)(backoff_random(rng) % (uint64_t)(jitter_ms + 1)) : 0;
	return clock_after_ms(*start, interval * 1000L + jitter_ms);
}

/* Waits for the next sweep; a reload meanwhile re-times it with the new interval. */
static void
wait_for_next_sweep(struct daemon *d, const struct timespec *start, uint64_t *rng)
{
	struct timespec next = next_sweep_time(start, d->s->interval, rng);

	if (clock_reached(&next) && !stop_requested)
		log_info("the sweep took longer than sync.interval (%d s); starting the next now",
			 d->s->interval);
	notify_status("idle; next sweep in %.0f s", -clock_seconds_since(&next));
	while (!stop_requested && !clock_reached(&next)) {
		struct timespec nap = {0, 100 * 1000 * 1000};

		if (reload_requested) {
			reload_requested = 0;
			reload(d);
			next = next_sweep_time(start, d->s->interval, rng);
		}
		notify_watchdog();
		nanosleep(&nap, NULL);
	}
}

/* Are all connections up (reconnecting those that are not)? */
static bool
connected(struct daemon *d)
{
	/* A round trip each: a connection the server closed while idle shows only then. */
	return sweep_connections_usable(d->db, d->writers, d->n_writers, true, false, NULL);
}

static int
run_daemon(struct daemon *d)
{
	uint64_t rng = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;

	log_info("chatsyncd %s started: %zu users%s, sweeping every %d s", PACKAGE_VERSION,
		 settings_user_count(d->s),
		 settings_discovers_users(d->s) ? " and every user of some services" : "",
		 d->s->interval);
	while (!stop_requested) {
		struct timespec start;

		if (reload_requested) {
			reload_requested = 0;
			reload(d);
		}
		start = clock_now();
		if (connected(d))
			sweep_once(d);
		wait_for_next_sweep(d, &start, &rng);
	}
	return EXIT_OK;
}

/* A connection to the configured database, or NULL (logged). */
static struct db *
connect_db(const struct settings *s)
{
	char why[512];
	struct db *db = db_open(s->conninfo, s->schema, why, sizeof(why));

	if (db == NULL)
		log_error("could not connect to the database: %s", why);
	return db;
}

/* While a start waits or migrates, each EXTEND_TIMEOUT_USEC= asks systemd for this much more. */
#define START_EXTEND_USEC (30LL * 1000000)

/* While another chatsyncd holds the schema lock: say so once, and keep systemd patient. */
static void
on_lock_wait(void *arg, bool first)
{
	struct db *db = arg;

	if (first)
		log_warning("another chatsyncd is writing to schema %s; waiting for it to stop",
			    db_schema_ident(db));
	notify_status("waiting for another chatsyncd to stop writing to schema %s",
		      db_schema_ident(db));
	notify_extend_timeout(START_EXTEND_USEC);
	notify_watchdog();
}

/* A long migration: keep systemd's start timeout and watchdog from ending it. */
static void
on_migrate_tick(void *arg)
{
	(void)arg;
	notify_extend_timeout(START_EXTEND_USEC);
	notify_watchdog();
}

/*
 * Takes the schema lock, then migrates: no migration runs while another
 * chatsyncd writes to the schema.  false (logged) on failure or a stop.
 */
static bool
lock_and_migrate(struct daemon *d)
{
	bool fenced;

	if (!db_lock_schema(d->db, &stop_requested, on_lock_wait, d->db)) {
		if (!stop_requested)
			log_error("could not take the schema lock: %s", db_error(d->db));
		return false;
	}
	/*
	 * Fenced before migrating (where the schema has the fence): a former
	 * writer that wakes up now can commit nothing while the schema changes.
	 * Fenced again after, as a schema that just got the fence needs.
	 */
	if (!db_has_fence(d->db, &fenced) || (fenced && !db_take_fence(d->db))) {
		log_error("could not take the writer's fencing epoch: %s", db_error(d->db));
		return false;
	}
	notify_status("applying schema migrations");
	notify_extend_timeout(START_EXTEND_USEC);
	if (!migrate_apply(d->db, NULL, on_migrate_tick, NULL)) {
		log_error("could not migrate the schema: %s", db_error(d->db));
		return false;
	}
	if (!db_take_fence(d->db)) {
		log_error("could not take the writer's fencing epoch: %s", db_error(d->db));
		return false;
	}
	return true;
}

static int
run_sync(struct daemon *d)
{
	int code;

	d->writers = xcalloc((size_t)d->s->writers, sizeof(struct db *));
	for (; d->n_writers < (size_t)d->s->writers; d->n_writers++) {
		d->writers[d->n_writers] = connect_db(d->s);
		if (d->writers[d->n_writers] == NULL)
			return EXIT_DATABASE;
		if (!db_set_epoch(d->writers[d->n_writers], db_epoch(d->db))) {
			log_error("could not set a writer's fencing epoch: %s",
				  db_error(d->writers[d->n_writers]));
			db_close(d->writers[d->n_writers]);
			return EXIT_DATABASE;
		}
	}
	d->http = http_for(d->s);
	if (d->http == NULL)
		return EXIT_DATABASE;
	notify_ready();
	if (d->o->mode == MODE_ONCE) {
		d->progress = progress_new(STDERR_FILENO);
		code = exit_code_for(sweep_once(d));
		progress_end(d->progress);
		progress_free(d->progress);
	} else {
		code = run_daemon(d);
	}
	log_info("stopping");
	notify_stopping();
	return code;
}

/* --migrate, --once and the daemon: metrics first (served while waiting), the lock, migrations. */
static int
run_writer(struct daemon *d)
{
	if (d->o->mode != MODE_MIGRATE && d->s->metrics_listen[0] != '\0') {
		d->metrics = metrics_new(d->s->metrics_listen);
		if (d->metrics == NULL)
			return EXIT_USAGE;
	}
	if (!lock_and_migrate(d))
		return stop_requested ? EXIT_OK : EXIT_DATABASE;
	if (d->o->mode == MODE_MIGRATE)
		return EXIT_OK;
	return run_sync(d);
}

static int
run(struct daemon *d)
{
	int code;

	d->db = connect_db(d->s);
	if (d->db == NULL)
		return EXIT_DATABASE;
	if (d->o->mode == MODE_STATUS)
		code = status_print(d->db, d->s, stdout);
	else
		code = run_writer(d);
	metrics_free(d->metrics);
	http_free(d->http);
	for (size_t i = 0; i < d->n_writers; i++)
		db_close(d->writers[i]);
	free(d->writers);
	db_close(d->db);
	return code;
}

/* --check-config, --migrate and --status never call Twilio, so never read the token. */
static enum settings_token
token_needed(enum mode mode)
{
	switch (mode) {
	case MODE_DAEMON:
	case MODE_ONCE:
		return SETTINGS_TOKEN_READ;
	case MODE_CHECK_CONFIG:
		return SETTINGS_TOKEN_NAMED;
	case MODE_MIGRATE:
	case MODE_STATUS:
		return SETTINGS_TOKEN_IGNORED;
	}
	return SETTINGS_TOKEN_READ;
}

int
main(int argc, char **argv)
{
	struct options o;
	struct daemon d = {.o = &o};
	int exit_now, code;

	if (!parse_args(argc, argv, &o, &exit_now))
		return exit_now;
	if (!install_signals())
		return EXIT_USAGE;
	d.s = settings_load(o.config_path, token_needed(o.mode));
	if (d.s == NULL)
		return EXIT_USAGE;
	log_init(d.s->log_syslog);
	apply_log_settings(d.s, o.verbose);
	if (o.mode == MODE_CHECK_CONFIG) {
		printf("configuration OK\n");
		settings_free(d.s);
		return EXIT_OK;
	}
	notify_init();
	code = run(&d);
	settings_free(d.s);
	curl_global_cleanup();
	return code;
}
