/*
 * main.c - chatsyncd: command line, startup and the sweep loop
 */
#include "config.h"

#include "db.h"
#include "http.h"
#include "log.h"
#include "migrate.h"
#include "settings.h"
#include "sweep.h"

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
};

struct options {
	const char *config_path;
	enum mode mode;
	int verbose;
};

static volatile sig_atomic_t stop_requested;

static void
on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
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
		"  -v, --verbose       log more (repeat for debug)\n"
		"      --help          show this help\n"
		"      --version       show the version\n"
		"\n"
		"Exit status: 0 all users synced; 1 usage or configuration error;\n"
		"2 database unreachable or migration failed; 3 some users failed.\n",
		SYSCONFDIR);
}

static bool
parse_args(int argc, char **argv, struct options *o, int *exit_now)
{
	enum { OPT_ONCE = 256, OPT_CHECK, OPT_MIGRATE, OPT_HELP, OPT_VERSION };
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"once", no_argument, NULL, OPT_ONCE},
		{"check-config", no_argument, NULL, OPT_CHECK},
		{"migrate", no_argument, NULL, OPT_MIGRATE},
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
		case OPT_ONCE:
			o->mode = MODE_ONCE;
			break;
		case OPT_CHECK:
			o->mode = MODE_CHECK_CONFIG;
			break;
		case OPT_MIGRATE:
			o->mode = MODE_MIGRATE;
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

static void
install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

/* Sleeps until deadline (CLOCK_MONOTONIC) or a stop request, whichever is first. */
static void
wait_until(const struct timespec *deadline)
{
	while (!stop_requested) {
		struct timespec now, nap = {0, 100 * 1000 * 1000};

		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > deadline->tv_sec ||
		    (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec))
			return;
		nanosleep(&nap, NULL);
	}
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

static struct db *
connect_and_migrate(const struct settings *s)
{
	struct db *db = db_open(s->conninfo, s->schema);

	if (db == NULL)
		return NULL;
	if (!migrate_apply(db, NULL)) {
		db_close(db);
		return NULL;
	}
	return db;
}

/* Sweeps every interval until stopped.  A lost database is reopened at the next interval. */
static int
run_daemon(const struct settings *s, struct db **db, struct http *http)
{
	log_info("chatsyncd %s started: %zu users, sweeping every %d s", PACKAGE_VERSION,
		 settings_user_count(s), s->interval);
	while (!stop_requested) {
		struct timespec next;

		clock_gettime(CLOCK_MONOTONIC, &next);
		next.tv_sec += s->interval;
		if (*db == NULL || !db_connected(*db)) {
			db_close(*db);
			*db = connect_and_migrate(s);
		}
		if (*db != NULL)
			sweep_run(s, *db, http, &stop_requested);
		wait_until(&next);
	}
	log_info("stopping");
	return EXIT_OK;
}

static int
run(const struct options *o, const struct settings *s)
{
	const struct http_options hopts = {
		.username = s->account_sid,
		.password = s->auth_token,
		.timeout = s->timeout,
		.connect_timeout = s->connect_timeout,
		.abort_flag = &stop_requested,
	};
	struct db *db = connect_and_migrate(s);
	struct http *http;
	int code;

	if (db == NULL)
		return EXIT_DATABASE;
	if (o->mode == MODE_MIGRATE) {
		db_close(db);
		return EXIT_OK;
	}
	http = http_new(&hopts);
	if (http == NULL) {
		db_close(db);
		return EXIT_DATABASE;
	}
	if (o->mode == MODE_ONCE)
		code = exit_code_for(sweep_run(s, db, http, &stop_requested));
	else
		code = run_daemon(s, &db, http);
	http_free(http);
	db_close(db);
	return code;
}

int
main(int argc, char **argv)
{
	struct options o;
	struct settings *s;
	int exit_now, code;
	enum log_level level;

	if (!parse_args(argc, argv, &o, &exit_now))
		return exit_now;
	install_signals();
	s = settings_load(o.config_path);
	if (s == NULL)
		return EXIT_USAGE;
	level = s->log_level + o.verbose;
	log_set_level(level > LOG_LEVEL_DEBUG ? LOG_LEVEL_DEBUG : level);
	if (o.mode == MODE_CHECK_CONFIG) {
		printf("configuration OK\n");
		settings_free(s);
		return EXIT_OK;
	}
	code = run(&o, s);
	settings_free(s);
	return code;
}
