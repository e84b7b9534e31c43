/*
 * main.c - chatsyncd: command line, startup and the sweep loop
 */
#include "config.h"

#include "backoff.h"
#include "clock.h"
#include "db.h"
#include "default_service.h"
#include "http.h"
#include "lease.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "migrate.h"
#include "notify.h"
#include "progress.h"
#include "run.h"
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
	struct db *db;		   /* cursors, claims and leases */
	struct db **writers;	   /* page commits: database.writers connections */
	size_t n_writers;
	struct http *http;
	struct metrics *metrics; /* NULL when metrics.listen is empty */
	struct timespec last_status;
	char *instance_name;
	int64_t instance_id; /* 0 until registered */
	int live_instances;  /* at the last heartbeat */
	struct timespec last_heartbeat;
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

/* Tells the schema the instance is alive, every third of sync.lease_seconds between sweeps. */
static void
heartbeat_when_due(struct daemon *d)
{
	int live;

	if (clock_seconds_since(&d->last_heartbeat) * 3 < (double)d->s->lease_seconds)
		return;
	d->last_heartbeat = clock_now();
	if (!lease_heartbeat(d->db, d->instance_id, d->s->lease_seconds, false, &live)) {
		log_warning("could not tell the schema this instance is alive: %s",
			    db_error(d->db));
		return;
	}
	d->live_instances = live;
	metrics_leases(d->metrics, 0, live);
}

/*
 * The sweep to work on: the open one, or a new one.  Without force (the
 * daemon), none until sync.interval after the last began, whoever began
 * it: *wait_seconds says how long to wait, and 0 is returned.
 */
static int64_t
join_sweep(struct daemon *d, bool force, bool *resumed, double *wait_seconds)
{
	int64_t run_id;

	if (!run_join(d->db, d->instance_id, d->s->interval, force, &run_id, resumed,
		      wait_seconds)) {
		log_error("could not begin a sweep: %s", db_error(d->db));
		*wait_seconds = 0;
		return 0;
	}
	return run_id;
}

static enum sweep_result
sweep_once(struct daemon *d, double *wait_seconds)
{
	const struct default_service_hooks resolve_hooks = {.tick = on_resolve_tick,
							    .stop = &stop_requested};
	const struct sweep_hooks hooks = {.tick = on_tick, .arg = d, .metrics = d->metrics};
	struct sweep_lease lease = {.instance_id = d->instance_id,
				    .live_instances = d->live_instances};
	char why[512];
	bool refused;

	*wait_seconds = 0;

	/* The account's default conversation service first: its users are stored under its SID. */
	if (!default_service_resolve(d->s, d->http, &resolve_hooks, &refused, why, sizeof(why))) {
		if (stop_requested)
			return SWEEP_INTERRUPTED;
		log_error("could not learn the account's default conversation service: %s; "
			  "no sweep until the next interval",
			  why);
		return refused ? SWEEP_AUTH_FAILED : SWEEP_USERS_FAILED;
	}
	lease.run_id = join_sweep(d, d->o->mode == MODE_ONCE, &lease.resumed, wait_seconds);
	if (lease.run_id == 0)
		return *wait_seconds > 0 ? SWEEP_OK : SWEEP_DB_FAILED;
	memset(&d->last_status, 0, sizeof(d->last_status));
	return sweep_run(d->s, d->db, d->writers, d->n_writers, d->http, &lease, &stop_requested,
			 &hooks);
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
		heartbeat_when_due(d);
		nanosleep(&nap, NULL);
	}
}

/*
 * Another instance began a sweep less than sync.interval ago: this one
 * waits that long before it looks again.
 */
static void
wait_for_others(struct daemon *d, double seconds)
{
	struct timespec until = clock_after_ms(clock_now(), (long)(seconds * 1000) + 1);

	log_debug("the last sweep began less than sync.interval ago; looking again in %.1f s",
		  seconds);
	notify_status("idle; next sweep in %.0f s", seconds);
	while (!stop_requested && !reload_requested && !clock_reached(&until)) {
		struct timespec nap = {0, 100 * 1000 * 1000};

		notify_watchdog();
		heartbeat_when_due(d);
		nanosleep(&nap, NULL);
	}
}

/* Are all connections up (reconnecting those that are not)? */
static bool
connected(struct daemon *d)
{
	/* A round trip each: a connection the server closed while idle shows only then. */
	return sweep_connections_usable(d->db, d->writers, d->n_writers, true);
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
		if (connected(d)) {
			double wait;

			sweep_once(d, &wait);
			if (wait > 0) {
				wait_for_others(d, wait);
				continue;
			}
		}
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

/* While another chatsyncd migrates the schema: say so once, and keep systemd patient. */
static bool
on_migrate_wait(void *arg, bool first)
{
	struct db *db = arg;

	if (first)
		log_info("another chatsyncd is migrating schema %s; waiting for it",
			 db_schema_ident(db));
	notify_status("waiting for another chatsyncd to migrate schema %s", db_schema_ident(db));
	notify_extend_timeout(START_EXTEND_USEC);
	notify_watchdog();
	return !stop_requested;
}

/* A long migration: keep systemd's start timeout and watchdog from ending it. */
static void
on_migrate_tick(void *arg)
{
	(void)arg;
	notify_extend_timeout(START_EXTEND_USEC);
	notify_watchdog();
}

/* The migrations' lock is held: they are applied now. */
static void
on_migrate_locked(void *arg)
{
	(void)arg;
	notify_status("applying schema migrations");
	notify_extend_timeout(START_EXTEND_USEC);
}

/* Migrates the schema, under the migrations' lock.  false (logged) on failure or a stop. */
static bool
migrate(struct daemon *d)
{
	const struct migrate_hooks hooks = {
		.waiting = on_migrate_wait,
		.locked = on_migrate_locked,
		.tick = on_migrate_tick,
		.arg = d->db,
	};

	notify_extend_timeout(START_EXTEND_USEC);
	if (migrate_apply(d->db, NULL, &hooks))
		return true;
	if (!stop_requested)
		log_error("could not migrate the schema: %s", db_error(d->db));
	return false;
}

/* sync.instance_name, or host:pid:start (unix seconds). */
static char *
instance_name(const struct settings *s)
{
	char host[256];

	if (s->instance_name[0] != '\0')
		return xstrdup(s->instance_name);
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	return xasprintf("%s:%ld:%lld", host, (long)getpid(), (long long)time(NULL));
}

/* The instance joins the schema's: registered, named on its connection, in the metrics. */
static bool
register_instance(struct daemon *d)
{
	size_t reaped;

	d->instance_name = instance_name(d->s);
	if (!lease_reap(d->db, d->s->instance_name[0] != '\0' ? d->s->instance_name : NULL,
			&reaped))
		log_warning("could not look for instances of this host that are gone: %s",
			    db_error(d->db));
	else if (reaped > 0)
		log_info("%zu instance%s of this host or name gone without a word: %s leases are "
			 "free",
			 reaped, reaped == 1 ? "" : "s", reaped == 1 ? "its" : "their");
	if (!lease_register(d->db, d->instance_name, d->s->lease_seconds, &d->instance_id) ||
	    !db_set_instance(d->db, d->instance_id, d->instance_name)) {
		log_error("could not register this instance: %s", db_error(d->db));
		return false;
	}
	d->last_heartbeat = clock_now();
	if (!lease_heartbeat(d->db, d->instance_id, d->s->lease_seconds, false, &d->live_instances))
		d->live_instances = 1;
	metrics_instance(d->metrics, d->instance_name);
	metrics_leases(d->metrics, 0, d->live_instances);
	log_info("instance %s (%" PRId64 "), one of %d live on schema %s", d->instance_name,
		 d->instance_id, d->live_instances, db_schema_ident(d->db));
	return true;
}

/* A clean stop: the instance no longer counts as live. */
static void
unregister_instance(struct daemon *d)
{
	int live;

	if (d->instance_id == 0 || !db_connected(d->db))
		return;
	if (!lease_heartbeat(d->db, d->instance_id, d->s->lease_seconds, true, &live))
		log_warning("could not record this instance's stop: %s", db_error(d->db));
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
		if (!db_set_instance(d->writers[d->n_writers], d->instance_id, d->instance_name)) {
			log_error("could not name a writer's session: %s",
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
		double wait;

		code = exit_code_for(sweep_once(d, &wait));
		progress_end(d->progress);
		progress_free(d->progress);
	} else {
		code = run_daemon(d);
	}
	log_info("stopping");
	notify_stopping();
	return code;
}

/* --migrate, --once, the daemon: metrics first (served while waiting), migrations, the instance. */
static int
run_writer(struct daemon *d)
{
	int code;

	if (d->o->mode != MODE_MIGRATE && d->s->metrics_listen[0] != '\0') {
		d->metrics = metrics_new(d->s->metrics_listen);
		if (d->metrics == NULL)
			return EXIT_USAGE;
	}
	if (!migrate(d))
		return stop_requested ? EXIT_OK : EXIT_DATABASE;
	if (d->o->mode == MODE_MIGRATE)
		return EXIT_OK;
	if (!register_instance(d))
		return EXIT_DATABASE;
	code = run_sync(d);
	unregister_instance(d);
	return code;
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
	free(d->instance_name);
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
