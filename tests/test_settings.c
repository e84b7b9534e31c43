/*
 * test_settings.c - unit tests for src/settings.c: loading, defaults,
 * validation, the one error line per failure, and the auth token sources
 *
 * Every configuration is written into a private mkdtemp() directory, and
 * stderr is redirected to a file there around each settings_load() so the
 * logged error line can be checked: it must name the file, the line and the
 * key, and must never hold the auth token.
 */
#include "config.h"

#include "log.h"
#include "settings.h"

#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ACCOUNT "AC0123456789abcdef0123456789abcdef"
#define SERVICE_A "IS0123456789abcdef0123456789abcdef"
#define SERVICE_B "ISfedcba9876543210FEDCBA9876543210"
/* Distinctive, so finding it in a log line cannot be an accident. */
#define TOKEN "tok-S3CR3T-71c9e0a4d2"
#define FILE_TOKEN "filetok-S3CR3T-5b8f"
#define ENV_TOKEN "envtok-S3CR3T-0d3e"
#define KEY_SID "SK0123456789abcdef0123456789abcdef"
#define KEY_SECRET "keysecret-S3CR3T-88a1"
#define FILE_KEY_SECRET "filekey-S3CR3T-42c0"
#define ENV_KEY_SECRET "envkey-S3CR3T-9f17"

static char tmpdir[] = "/tmp/test_settings.XXXXXX";
static char errlog[65536]; /* stderr of the last load */
static int conf_serial;

static void
bail(const char *what)
{
	printf("Bail out! %s: %s\n", what, strerror(errno));
	exit(99);
}

static void
path_in_tmp(char *out, size_t outsz, const char *name)
{
	snprintf(out, outsz, "%s/%s", tmpdir, name);
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0)
		bail(path);
	if (chmod(path, mode) != 0)
		bail(path);
}

/* settings_load(path) with stderr captured into errlog. */
static struct settings *
load_captured(const char *path)
{
	char logpath[PATH_MAX];
	struct settings *s;
	int fd, saved;
	ssize_t n;

	path_in_tmp(logpath, sizeof(logpath), "stderr.log");
	fd = open(logpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		bail(logpath);
	fflush(stderr);
	saved = dup(2);
	if (saved < 0 || dup2(fd, 2) < 0)
		bail("dup2");
	s = settings_load(path, SETTINGS_TOKEN_READ);
	fflush(stderr);
	if (dup2(saved, 2) < 0)
		bail("dup2");
	close(saved);
	n = pread(fd, errlog, sizeof(errlog) - 1, 0);
	close(fd);
	if (n < 0)
		bail(logpath);
	errlog[n] = '\0';
	unlink(logpath);
	return s;
}

/*
 * The parts of a configuration file.  NULL means the default: a valid account
 * and token, one valid service; every other key omitted.
 */
struct conf {
	const char *account; /* the account_sid line */
	const char *token;   /* the auth_token / auth_token_file lines */
	const char *twilio;  /* more lines inside twilio: { } */
	const char *database;
	const char *sync;
	const char *services; /* the services = ( ... ); lines */
	const char *log;
	const char *extra;     /* after the groups */
	bool only_twilio_sync; /* leave the database and log groups out */
	mode_t mode;	       /* 0 means 0600 */
};

static void
render(char *out, size_t outsz, const struct conf *c)
{
	char database[512] = "", log[512] = "";

	if (!c->only_twilio_sync) {
		snprintf(database, sizeof(database), "database: {\n  %s\n};\n",
			 c->database ? c->database : "");
		snprintf(log, sizeof(log), "log: {\n  %s\n};\n", c->log ? c->log : "");
	}
	snprintf(out, outsz,
		 "# written by test_settings\n"
		 "twilio: {\n"
		 "  %s\n"
		 "  %s\n"
		 "  %s\n"
		 "};\n"
		 "%s"
		 "sync: {\n"
		 "  %s\n"
		 "  %s\n"
		 "};\n"
		 "%s"
		 "%s\n",
		 c->account ? c->account : "account_sid = \"" ACCOUNT "\";",
		 c->token ? c->token : "auth_token = \"" TOKEN "\";", c->twilio ? c->twilio : "",
		 database, c->sync ? c->sync : "",
		 c->services ? c->services
			     : "services = ( { sid = \"" SERVICE_A
			       "\"; users = [ \"alice\" ]; } );",
		 log, c->extra ? c->extra : "");
}

/* Line number (from 1) of the first line of text holding marker, or 0. */
static int
line_of(const char *text, const char *marker)
{
	const char *at = strstr(text, marker);
	int line = 1;

	if (at == NULL)
		return 0;
	for (const char *p = text; p < at; p++)
		line += *p == '\n';
	return line;
}

static int
count_lines(const char *s)
{
	int n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

/* Writes c to a new file, loads it; text and path are filled for the caller. */
static struct settings *
load_conf(const struct conf *c, char *text, size_t textsz, char *path, size_t pathsz)
{
	char name[64];

	snprintf(name, sizeof(name), "conf%d.conf", ++conf_serial);
	path_in_tmp(path, pathsz, name);
	render(text, textsz, c);
	write_file(path, text, c->mode ? c->mode : 0600);
	return load_captured(path);
}

static void
no_secret_logged(const char *desc)
{
	ok(strstr(errlog, TOKEN) == NULL && strstr(errlog, FILE_TOKEN) == NULL &&
		   strstr(errlog, ENV_TOKEN) == NULL && strstr(errlog, KEY_SECRET) == NULL &&
		   strstr(errlog, FILE_KEY_SECRET) == NULL &&
		   strstr(errlog, ENV_KEY_SECRET) == NULL,
	   "%s: no secret is in the log", desc);
}

/*
 * Loads c, which must be refused with exactly one error line naming the
 * file, the line holding marker, and key.
 */
static void
refused(const char *desc, const struct conf *c, const char *marker, const char *key)
{
	char text[4096], path[PATH_MAX], where[PATH_MAX + 32];
	struct settings *s = load_conf(c, text, sizeof(text), path, sizeof(path));
	int line = marker ? line_of(text, marker) : 0;
	int failed_before = tap_failed;

	if (marker != NULL && line == 0) {
		printf("Bail out! marker \"%s\" is not in the test's own config\n", marker);
		exit(99);
	}
	if (!ok(s == NULL, "%s: refused", desc))
		settings_free(s);
	ok(count_lines(errlog) == 1 && strstr(errlog, "error: ") != NULL,
	   "%s: one error line is logged", desc);
	ok(strstr(errlog, path) != NULL, "%s: the error names the file", desc);
	ok(strstr(errlog, key) != NULL, "%s: the error names the key %s", desc, key);
	no_secret_logged(desc);
	if (marker != NULL) {
		snprintf(where, sizeof(where), "%s:%d: ", path, line);
		ok(strstr(errlog, where) != NULL, "%s: the error names line %d", desc, line);
	}
	if (tap_failed != failed_before)
		printf("#   log: %s", errlog);
}

static struct settings *
accepted(const char *desc, const struct conf *c)
{
	char text[4096], path[PATH_MAX];
	struct settings *s = load_conf(c, text, sizeof(text), path, sizeof(path));

	if (!ok(s != NULL, "%s: accepted", desc))
		printf("#   log: %s", errlog);
	no_secret_logged(desc);
	return s;
}

static void
test_full(void)
{
	char path[PATH_MAX], text[4096];
	struct settings *s;

	path_in_tmp(path, sizeof(path), "full.conf");
	snprintf(text, sizeof(text),
		 "twilio: {\n"
		 "  base_url = \"https://chat.example.org:8443\";\n"
		 "  account_sid = \"" ACCOUNT "\";\n"
		 "  auth_token = \"" TOKEN "\";\n"
		 "  page_size = 250;   # a comment\n"
		 "  timeout = 45;\n"
		 "  connect_timeout = 7;\n"
		 "  concurrency = 3;\n"
		 "};\n"
		 "database: {\n"
		 "  conninfo = \"host=/tmp dbname=chat\";\n"
		 "  schema = \"chat_sync2\";\n"
		 "};\n"
		 "sync: {\n"
		 "  interval = 120;\n"
		 "  services = (\n"
		 "    { sid = \"" SERVICE_A "\";\n"
		 "      users = [ \"US0123456789abcdef0123456789abcdef\",\n"
		 "                \"alice@example.com\" ]; },\n"
		 "    { sid = \"" SERVICE_B "\"; users = [ \"bob smith\" ]; }\n"
		 "  );\n"
		 "};\n"
		 "log: {\n"
		 "  level = \"debug\";\n"
		 "};\n");
	write_file(path, text, 0600);
	s = load_captured(path);
	if (!ok(s != NULL, "a full configuration loads")) {
		printf("#   log: %s", errlog);
		return;
	}
	is_str(errlog, "", "nothing is logged for a valid 0600 file");
	is_str(s->path, path, "path");
	is_str(s->base_url, "https://chat.example.org:8443", "twilio.base_url");
	is_str(s->services[0].base_url, "https://chat.example.org:8443",
	       "every service of the default API is listed there");
	is_str(s->account_sid, ACCOUNT, "twilio.account_sid");
	is_str(s->auth_token, TOKEN, "twilio.auth_token");
	ok(s->auth_token_file == NULL, "twilio.auth_token_file is unset");
	is_int(s->page_size, 250, "twilio.page_size");
	is_int(s->timeout, 45, "twilio.timeout");
	is_int(s->connect_timeout, 7, "twilio.connect_timeout");
	is_int(s->concurrency, 3, "twilio.concurrency");
	is_str(s->conninfo, "host=/tmp dbname=chat", "database.conninfo");
	is_str(s->schema, "chat_sync2", "database.schema");
	is_int(s->interval, 120, "sync.interval");
	is_str(s->log_level_name, "debug", "log.level name");
	is_int(s->log_level, LOG_LEVEL_DEBUG, "log.level parsed");
	is_int(s->n_services, 2, "two services");
	if (s->n_services == 2) {
		is_str(s->services[0].sid, SERVICE_A, "first service sid");
		is_int(s->services[0].n_users, 2, "first service has two users");
		if (s->services[0].n_users == 2) {
			is_str(s->services[0].users[0], "US0123456789abcdef0123456789abcdef",
			       "a User SID is kept as written");
			is_str(s->services[0].users[1], "alice@example.com",
			       "an identity is kept as written");
		}
		is_str(s->services[1].sid, SERVICE_B, "second service sid (mixed-case hex)");
		is_int(s->services[1].n_users, 1, "second service has one user");
		if (s->services[1].n_users == 1)
			is_str(s->services[1].users[0], "bob smith", "a user with a space");
	}
	is_int(settings_user_count(s), 3, "settings_user_count counts over services");
	settings_free(s);
}

static void
test_defaults(void)
{
	struct settings *s = accepted("minimal configuration", &(struct conf){0});

	if (s == NULL)
		return;
	is_str(s->base_url, "", "default twilio.base_url: none");
	is_str(s->services[0].base_url, "https://ip-messaging.twilio.com",
	       "a service of the default API (ip_messaging_v1) is listed at its host");
	is_int(s->services[0].api, TWILIO_API_IP_MESSAGING_V1, "the default API");
	is_int(s->services[0].page_size, 1000, "its page size: twilio.page_size");
	is_int(s->page_size, 1000, "default page_size");
	is_int(s->timeout, 30, "default timeout");
	is_int(s->connect_timeout, 10, "default connect_timeout");
	is_int(s->concurrency, 8, "default concurrency");
	is_str(s->conninfo, "", "default conninfo");
	is_str(s->schema, "chatsync", "default schema");
	is_int(s->interval, 300, "default interval");
	is_str(s->log_level_name, "info", "default log.level");
	is_int(s->log_level, LOG_LEVEL_INFO, "default log level parsed");
	ok(s->auth_token_file == NULL, "no auth_token_file by default");
	is_int(s->n_services, 1, "one service");
	is_int(settings_user_count(s), 1, "one user");
	ok(s->dimensions, "sync.dimensions is on by default");
	ok(!s->store_attributes, "sync.store_attributes is off by default");
	ok(!settings_discovers_users(s), "no discovery by default");
	settings_free(s);

	/* groups may be left out altogether */
	s = accepted("only twilio and sync groups", &(struct conf){.only_twilio_sync = true});
	if (s != NULL)
		is_str(s->schema, "chatsync", "default schema without a database group");
	settings_free(s);
}

static void
test_bounds(void)
{
	static const struct {
		const char *line, *key;
		int value;
	} ok_values[] = {
		{"page_size = 1;", "page_size", 1},
		{"page_size = 1000;", "page_size", 1000},
		{"timeout = 3600;", "timeout", 3600},
		{"connect_timeout = 1;", "connect_timeout", 1},
		{"concurrency = 64;", "concurrency", 64},
	};
	struct settings *s;

	for (size_t i = 0; i < sizeof(ok_values) / sizeof(ok_values[0]); i++) {
		s = accepted(ok_values[i].line, &(struct conf){.twilio = ok_values[i].line});
		if (s == NULL)
			continue;
		if (strcmp(ok_values[i].key, "page_size") == 0)
			is_int(s->page_size, ok_values[i].value, "%s", ok_values[i].line);
		else if (strcmp(ok_values[i].key, "timeout") == 0)
			is_int(s->timeout, ok_values[i].value, "%s", ok_values[i].line);
		else if (strcmp(ok_values[i].key, "connect_timeout") == 0)
			is_int(s->connect_timeout, ok_values[i].value, "%s", ok_values[i].line);
		else
			is_int(s->concurrency, ok_values[i].value, "%s", ok_values[i].line);
		settings_free(s);
	}
	s = accepted("interval = 604800", &(struct conf){.sync = "interval = 604800;"});
	if (s != NULL)
		is_int(s->interval, 604800, "interval may be a week");
	settings_free(s);

	refused("page_size = 0", &(struct conf){.twilio = "page_size = 0;"}, "page_size",
		"twilio.page_size");
	refused("page_size = 1001", &(struct conf){.twilio = "page_size = 1001;"}, "page_size",
		"twilio.page_size");
	refused("page_size = -5", &(struct conf){.twilio = "page_size = -5;"}, "page_size",
		"twilio.page_size");
	refused("page_size as a string", &(struct conf){.twilio = "page_size = \"10\";"},
		"page_size", "twilio.page_size");
	refused("page_size as a float", &(struct conf){.twilio = "page_size = 10.5;"}, "page_size",
		"twilio.page_size");
	refused("page_size huge (int64)", &(struct conf){.twilio = "page_size = 4294967297L;"},
		"page_size", "twilio.page_size");
	refused("concurrency = 65", &(struct conf){.twilio = "concurrency = 65;"}, "concurrency",
		"twilio.concurrency");
	refused("interval = 0", &(struct conf){.sync = "interval = 0;"}, "interval",
		"sync.interval");
	refused("base_url as a number", &(struct conf){.twilio = "base_url = 5;"}, "base_url",
		"twilio.base_url");
}

static void
test_unknown(void)
{
	refused("unknown key in twilio", &(struct conf){.twilio = "page_sizes = 10;"}, "page_sizes",
		"twilio.page_sizes");
	refused("key of another group", &(struct conf){.database = "interval = 10;"},
		"interval = 10", "database.interval");
	refused("unknown key in log", &(struct conf){.log = "file = \"/tmp/x\";"},
		"file =", "log.file");
	refused("unknown top-level group", &(struct conf){.extra = "bogus: { a = 1; };"},
		"bogus:", "bogus");
	refused("unknown top-level scalar", &(struct conf){.extra = "verbose = true;"}, "verbose",
		"verbose");
	refused("a known group that is not a group",
		&(struct conf){.only_twilio_sync = true, .extra = "log = \"debug\";"},
		"log =", "log");
}

static void
test_sids(void)
{
	refused("account_sid with a wrong prefix",
		&(struct conf){.account = "account_sid = \"SK0123456789abcdef0123456789abcdef\";"},
		"account_sid", "twilio.account_sid");
	refused("account_sid too short",
		&(struct conf){.account = "account_sid = \"AC0123456789abcdef0123456789abcde\";"},
		"account_sid", "twilio.account_sid");
	refused("account_sid not hex",
		&(struct conf){.account = "account_sid = \"ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\";"},
		"account_sid", "twilio.account_sid");
	refused("service sid with a wrong prefix",
		&(struct conf){.services = "services = ( { sid = "
					   "\"IT0123456789abcdef0123456789abcdef\"; users = "
					   "[\"alice\"]; } );"},
		"services", "sync.services");
	refused("service sid with 31 hex digits",
		&(struct conf){.services = "services = ( { sid = "
					   "\"IS0123456789abcdef0123456789abcde\"; users = "
					   "[\"alice\"]; } );"},
		"services", "sync.services");
	refused("service sid with 33 hex digits",
		&(struct conf){.services = "services = ( { sid = "
					   "\"IS0123456789abcdef0123456789abcdef0\"; users = "
					   "[\"alice\"]; } );"},
		"services", "sync.services");
	refused("service sid not hex",
		&(struct conf){.services = "services = ( { sid = "
					   "\"IS0123456789abcdef0123456789abcdeg\"; users = "
					   "[\"alice\"]; } );"},
		"services", "sync.services");
	refused("an invalid sid on its own line inside a service group names the sid's line",
		&(struct conf){.services = "services = (\n"
					   "    {\n"
					   "      users = [ \"alice\" ];\n"
					   "      sid = \"IS123\";\n"
					   "    }\n"
					   "  );"},
		"\"IS123\"", "sync.services[0]");
	refused("a duplicate service sid on its own line names that line",
		&(struct conf){.services = "services = (\n"
					   "    { sid = \"" SERVICE_A "\"; users = [ \"u1\" ]; },\n"
					   "    {\n"
					   "      users = [ \"u2\" ];\n"
					   "      sid = \"" SERVICE_A "\"; # again\n"
					   "    }\n"
					   "  );"},
		"# again", "sync.services[1]");
	refused("service without a sid",
		&(struct conf){.services = "services = ( { users = [\"alice\"]; } );"}, "services",
		"sync.services");
	refused("service with an unknown key",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = [\"alice\"]; name = \"x\"; } );"},
		"services", "sync.services");
}

static void
test_users(void)
{
	struct settings *s;

	refused("empty users list",
		&(struct conf){.services =
				       "services = ( { sid = \"" SERVICE_A "\"; users = [ ]; } );"},
		"services", "sync.services");
	refused("an empty-string user",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = [ \"alice\", \"\" ]; } );"},
		"services", "sync.services");
	refused("a user that is not a string",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = [ 5 ]; } );"},
		"services", "sync.services");
	refused("a duplicate user",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = [ \"bob\", \"alice\", \"bob\" ]; } );"},
		"services", "sync.services");
	refused("a duplicate service",
		&(struct conf){.services = "services = (\n"
					   "    { sid = \"" SERVICE_A "\"; users = [ \"u1\" ]; },\n"
					   "    { sid = \"" SERVICE_A "\"; users = [ \"u2\" ]; }\n"
					   "  );"},
		"\"u2\"", "sync.services[1]");
	refused("no services", &(struct conf){.services = "services = ( );"}, "services",
		"sync.services");
	refused("service without users",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A "\"; } );"},
		"services", "sync.services");

	s = accepted("the same user in two services",
		     &(struct conf){
			     .services = "services = (\n"
					 "    { sid = \"" SERVICE_A "\"; users = [ \"bob\" ]; },\n"
					 "    { sid = \"" SERVICE_B "\"; users = [ \"bob\" ]; }\n"
					 "  );"});
	if (s != NULL)
		is_int(settings_user_count(s), 2, "the same user in two services counts twice");
	settings_free(s);

	refused("users a string other than \"all\"",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = \"al\"; } );"},
		"\"al\"", "sync.services[0]");
	s = accepted("users = \"all\"", &(struct conf){.services = "services = (\n"
								   "    { sid = \"" SERVICE_A
								   "\"; users = \"all\"; },\n"
								   "    { sid = \"" SERVICE_B
								   "\"; users = [ \"bob\" ]; }\n"
								   "  );"});
	if (s != NULL) {
		ok(s->services[0].all_users && s->services[0].n_users == 0,
		   "users = \"all\": the service's users are discovered, none configured");
		ok(!s->services[1].all_users, "a list of users: no discovery");
		is_int(settings_user_count(s), 1, "discovered users are not counted as configured");
		ok(settings_discovers_users(s), "settings_discovers_users: a service says \"all\"");
	}
	settings_free(s);
}

static void
test_base_url(void)
{
	static const char *const good[] = {
		"http://127.0.0.1:8080",
		"http://[::1]:9",
		"http://localhost",
		"https://anything.example.net",
		"https://anything.example.net:444/",
	};
	static const char *const bad[] = {
		"http://example.com",
		"http://10.1.2.3:8080",
		"https://ip-messaging.twilio.com/v1",
		"https://ip-messaging.twilio.com?PageSize=5",
		"https://user:pw@ip-messaging.twilio.com",
		"ip-messaging.twilio.com",
	};
	char line[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct settings *s;

		snprintf(line, sizeof(line), "base_url = \"%s\";", good[i]);
		s = accepted(line, &(struct conf){.twilio = line});
		if (s != NULL)
			is_str(s->services[0].base_url, good[i], "base_url is kept as written");
		settings_free(s);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(line, sizeof(line), "base_url = \"%s\";", bad[i]);
		refused(line, &(struct conf){.twilio = line}, "base_url", "twilio.base_url");
	}
}

static void
test_schema_and_level(void)
{
	char line[128], name[80];
	struct settings *s;

	s = accepted("schema _sync_2", &(struct conf){.database = "schema = \"_sync_2\";"});
	if (s != NULL)
		is_str(s->schema, "_sync_2", "schema _sync_2");
	settings_free(s);

	memset(name, 'a', 63);
	name[63] = '\0';
	snprintf(line, sizeof(line), "schema = \"%s\";", name);
	s = accepted("a 63-character schema", &(struct conf){.database = line});
	settings_free(s);
	snprintf(line, sizeof(line), "schema = \"%sa\";", name);
	refused("a 64-character schema", &(struct conf){.database = line}, "schema",
		"database.schema");

	refused("schema with capitals", &(struct conf){.database = "schema = \"ChatSync\";"},
		"schema", "database.schema");
	refused("schema with a dash", &(struct conf){.database = "schema = \"chat-sync\";"},
		"schema", "database.schema");
	refused("schema starting with a digit", &(struct conf){.database = "schema = \"1chat\";"},
		"schema", "database.schema");
	refused("schema quoting attempt",
		&(struct conf){.database = "schema = \"x\\\"; drop table y; --\";"}, "schema",
		"database.schema");
	refused("empty schema", &(struct conf){.database = "schema = \"\";"}, "schema",
		"database.schema");

	s = accepted("log.level error", &(struct conf){.log = "level = \"error\";"});
	if (s != NULL)
		is_int(s->log_level, LOG_LEVEL_ERROR, "log.level error");
	settings_free(s);
	s = accepted("log.level warning", &(struct conf){.log = "level = \"warning\";"});
	if (s != NULL)
		is_int(s->log_level, LOG_LEVEL_WARNING, "log.level warning");
	settings_free(s);
	s = accepted("log.level debug", &(struct conf){.log = "level = \"debug\";"});
	if (s != NULL)
		is_int(s->log_level, LOG_LEVEL_DEBUG, "log.level debug");
	settings_free(s);
	refused("log.level verbose", &(struct conf){.log = "level = \"verbose\";"}, "level",
		"log.level");
	refused("log.level empty", &(struct conf){.log = "level = \"\";"}, "level", "log.level");
	refused("log.level as a number", &(struct conf){.log = "level = 3;"}, "level", "log.level");
}

static void
test_token(void)
{
	char tokfile[PATH_MAX], tokdir[PATH_MAX], line[PATH_MAX + 64], missing[PATH_MAX];
	struct settings *s;

	path_in_tmp(tokfile, sizeof(tokfile), "auth_token");
	write_file(tokfile, FILE_TOKEN "\n", 0600);
	path_in_tmp(tokdir, sizeof(tokdir), "tokdir");
	if (mkdir(tokdir, 0700) != 0)
		bail(tokdir);
	path_in_tmp(missing, sizeof(missing), "no-such-token-file");

	snprintf(line, sizeof(line), "auth_token_file = \"%s\";", tokfile);
	s = accepted("auth_token_file", &(struct conf){.token = line});
	if (s != NULL) {
		is_str(s->auth_token, FILE_TOKEN,
		       "the token file is read, trailing newline stripped");
		is_str(s->auth_token_file, tokfile, "auth_token_file is kept");
	}
	settings_free(s);

	/* the key is absent: the twilio group is the closest line there is */
	refused("no token at all", &(struct conf){.token = ""}, "twilio: {", "twilio.auth_token");
	refused("an empty auth_token", &(struct conf){.token = "auth_token = \"\";"}, "auth_token",
		"twilio.auth_token");

	snprintf(line, sizeof(line), "auth_token = \"" TOKEN "\"; auth_token_file = \"%s\";",
		 tokfile);
	refused("both auth_token and auth_token_file", &(struct conf){.token = line},
		"auth_token_file", "twilio.auth_token_file");

	snprintf(line, sizeof(line), "auth_token_file = \"%s\";", missing);
	refused("a missing auth_token_file", &(struct conf){.token = line}, "auth_token_file",
		"twilio.auth_token_file");
	ok(strstr(errlog, missing) != NULL, "the missing token file is named");

	snprintf(line, sizeof(line), "auth_token_file = \"%s\";", tokdir);
	refused("an auth_token_file that cannot be read (a directory)",
		&(struct conf){.token = line}, "auth_token_file", "twilio.auth_token_file");

	if (geteuid() != 0) {
		char locked[PATH_MAX];

		path_in_tmp(locked, sizeof(locked), "locked_token");
		write_file(locked, FILE_TOKEN "\n", 0000);
		snprintf(line, sizeof(line), "auth_token_file = \"%s\";", locked);
		refused("an auth_token_file without read permission", &(struct conf){.token = line},
			"auth_token_file", "twilio.auth_token_file");
	} else {
		ok(true, "# SKIP running as root: mode 000 does not stop reading");
	}

	{
		char fifo[PATH_MAX], link[PATH_MAX];

		/* A FIFO would hang start-up at open() or read() without a writer. */
		path_in_tmp(fifo, sizeof(fifo), "token_fifo");
		unlink(fifo);
		if (mkfifo(fifo, 0600) != 0)
			bail(fifo);
		snprintf(line, sizeof(line), "auth_token_file = \"%s\";", fifo);
		refused("an auth_token_file that is a FIFO (refused at once, not waited on)",
			&(struct conf){.token = line}, "auth_token_file", "twilio.auth_token_file");
		ok(strstr(errlog, "is not a regular file") != NULL, "the FIFO: the error says why");
		unlink(fifo);

		path_in_tmp(link, sizeof(link), "token_link");
		unlink(link);
		if (symlink(tokfile, link) != 0)
			bail(link);
		snprintf(line, sizeof(line), "auth_token_file = \"%s\";", link);
		refused("an auth_token_file that is a symbolic link", &(struct conf){.token = line},
			"auth_token_file", "twilio.auth_token_file");
		ok(strstr(errlog, "it is a symbolic link") != NULL, "the link: the error says why");
		unlink(link);
	}

	write_file(tokfile, "\n", 0600);
	snprintf(line, sizeof(line), "auth_token_file = \"%s\";", tokfile);
	refused("an auth_token_file holding only a newline", &(struct conf){.token = line},
		"auth_token_file", "twilio.auth_token");
	write_file(tokfile, FILE_TOKEN "\n", 0600);

	/* the environment wins over both */
	setenv("TWILIO_AUTH_TOKEN", ENV_TOKEN, 1);
	s = accepted("TWILIO_AUTH_TOKEN with auth_token", &(struct conf){0});
	if (s != NULL)
		is_str(s->auth_token, ENV_TOKEN, "TWILIO_AUTH_TOKEN wins over auth_token");
	settings_free(s);
	snprintf(line, sizeof(line), "auth_token_file = \"%s\";", tokfile);
	s = accepted("TWILIO_AUTH_TOKEN with auth_token_file", &(struct conf){.token = line});
	if (s != NULL)
		is_str(s->auth_token, ENV_TOKEN, "TWILIO_AUTH_TOKEN wins over auth_token_file");
	settings_free(s);
	s = accepted("TWILIO_AUTH_TOKEN alone", &(struct conf){.token = ""});
	if (s != NULL)
		is_str(s->auth_token, ENV_TOKEN, "TWILIO_AUTH_TOKEN alone is enough");
	settings_free(s);
	refused("TWILIO_AUTH_TOKEN does not excuse a bad page_size",
		&(struct conf){.twilio = "page_size = 0;"}, "page_size", "twilio.page_size");
	unsetenv("TWILIO_AUTH_TOKEN");

	s = accepted("auth_token after TWILIO_AUTH_TOKEN is unset", &(struct conf){0});
	if (s != NULL)
		is_str(s->auth_token, TOKEN, "auth_token is used without the environment");
	settings_free(s);

	/* a relative auth_token_file is a systemd credential (LoadCredential=) */
	{
		char cred[PATH_MAX];

		path_in_tmp(cred, sizeof(cred), "twilio-token");
		write_file(cred, FILE_TOKEN "\n", 0600);
		setenv("CREDENTIALS_DIRECTORY", tmpdir, 1);
		s = accepted("a credential name",
			     &(struct conf){.token = "auth_token_file = \"twilio-token\";"});
		if (s != NULL)
			is_str(s->auth_token, FILE_TOKEN,
			       "a relative auth_token_file is read from $CREDENTIALS_DIRECTORY");
		settings_free(s);
		unsetenv("CREDENTIALS_DIRECTORY");
		unlink(cred);
	}
}

/* An API key instead of the auth token: the same sources and rules. */
static void
test_api_key(void)
{
	char keyfile[PATH_MAX], line[PATH_MAX + 128];
	struct settings *s;

	s = accepted("an API key",
		     &(struct conf){.token = "api_key_sid = \"" KEY_SID "\";\n"
					     "  api_key_secret = \"" KEY_SECRET "\";"});
	if (s != NULL) {
		is_str(settings_api_user(s), KEY_SID, "the API key SID is the user");
		is_str(settings_api_password(s), KEY_SECRET, "its secret the password");
		ok(s->auth_token == NULL, "no auth token is needed");
	}
	settings_free(s);
	s = accepted("the auth token", &(struct conf){0});
	if (s != NULL) {
		is_str(settings_api_user(s), s->account_sid,
		       "without a key: the account is the user");
		is_str(settings_api_password(s), TOKEN, "and the auth token the password");
	}
	settings_free(s);

	refused("an API key SID that is not one",
		&(struct conf){.token = "api_key_sid = \"SK12\";\n"
					"  api_key_secret = \"" KEY_SECRET "\";"},
		"SK12", "twilio.api_key_sid");
	refused("an API key and an auth token",
		&(struct conf){.token = "auth_token = \"" TOKEN "\";\n"
					"  api_key_sid = \"" KEY_SID "\";\n"
					"  api_key_secret = \"" KEY_SECRET "\";"},
		"api_key_sid", "twilio.api_key_sid");
	refused("an API key secret without its SID",
		&(struct conf){.token = "api_key_secret = \"" KEY_SECRET "\";"}, "twilio: {",
		"twilio.api_key_sid");
	refused("an API key SID without a secret",
		&(struct conf){.token = "api_key_sid = \"" KEY_SID "\";"}, "twilio: {",
		"twilio.api_key_secret");

	path_in_tmp(keyfile, sizeof(keyfile), "api_key_secret");
	write_file(keyfile, FILE_KEY_SECRET "\n", 0600);
	snprintf(line, sizeof(line),
		 "api_key_sid = \"" KEY_SID "\";\n  api_key_secret_file = \"%s\";", keyfile);
	s = accepted("api_key_secret_file", &(struct conf){.token = line});
	if (s != NULL)
		is_str(s->api_key_secret, FILE_KEY_SECRET,
		       "the secret file is read, newline stripped");
	settings_free(s);
	setenv("TWILIO_API_KEY_SECRET", ENV_KEY_SECRET, 1);
	s = accepted("TWILIO_API_KEY_SECRET with api_key_secret_file",
		     &(struct conf){.token = line});
	if (s != NULL)
		is_str(s->api_key_secret, ENV_KEY_SECRET, "TWILIO_API_KEY_SECRET wins");
	settings_free(s);
	unsetenv("TWILIO_API_KEY_SECRET");
	snprintf(line, sizeof(line),
		 "api_key_sid = \"" KEY_SID "\";\n  api_key_secret = \"" KEY_SECRET "\";\n"
		 "  api_key_secret_file = \"%s\";",
		 keyfile);
	refused("both api_key_secret and api_key_secret_file", &(struct conf){.token = line},
		"api_key_secret_file", "twilio.api_key_secret_file");
	unlink(keyfile);
}

#define SERVICE_B_LINE "\"IS0123456789abcdef0123456789abcdee\""

/* sync.services[].api and base_url: where each service's memberships are listed. */
static void
test_service_api(void)
{
	struct settings *s;

	s = accepted(
		"a Chat v2 service beside a v1 one",
		&(struct conf){.twilio = "page_size = 200; region = \"ie1\";",
			       .services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = [\"alice\"]; api = \"chat_v2\"; },"
					   " { sid = " SERVICE_B_LINE
					   "; users = [\"bob\"]; api = \"ip_messaging_v1\"; } );"});
	if (s != NULL && s->n_services == 2) {
		is_int(s->services[0].api, TWILIO_API_CHAT_V2, "api = \"chat_v2\"");
		is_str(s->services[0].base_url, "https://chat.ie1.twilio.com",
		       "Chat v2 is listed at chat.twilio.com, moved to the region");
		is_int(s->services[0].page_size, 50, "its pages: 50 at most, as the API allows");
		is_int(s->services[1].api, TWILIO_API_IP_MESSAGING_V1, "api = \"ip_messaging_v1\"");
		is_str(s->services[1].base_url, "https://ip-messaging.ie1.twilio.com",
		       "IP Messaging v1 at ip-messaging.twilio.com");
		is_int(s->services[1].page_size, 200, "its pages: twilio.page_size");
	}
	settings_free(s);
	s = accepted("a service's own base_url",
		     &(struct conf){.twilio = "base_url = \"http://127.0.0.1:9\";",
				    .services = "services = ( { sid = \"" SERVICE_A
						"\"; users = [\"alice\"]; api = \"chat_v2\";"
						" base_url = \"http://127.0.0.1:10\"; },"
						" { sid = " SERVICE_B_LINE
						"; users = [\"bob\"]; api = \"chat_v2\"; } );"});
	if (s != NULL && s->n_services == 2) {
		is_str(s->services[0].base_url, "http://127.0.0.1:10", "wins over twilio.base_url");
		is_str(s->services[1].base_url, "http://127.0.0.1:9",
		       "twilio.base_url serves every API of a service without one");
	}
	settings_free(s);
	refused("an API that does not exist",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = [\"alice\"]; api = \"chat_v3\"; } );"},
		"chat_v3", "sync.services[0]");
	ok(strstr(errlog, "api must be \"ip_messaging_v1\", \"chat_v2\" or \"conversations\"") !=
		   NULL,
	   "the error says which APIs there are");
	s = accepted("conversations",
		     &(struct conf){
			     .twilio = "page_size = 1000;",
			     .services = "services = ( { sid = \"" SERVICE_A
					 "\"; users = [\"alice\"]; api = \"conversations\"; } );"});
	if (s != NULL) {
		is_str(s->services[0].base_url, "https://conversations.twilio.com",
		       "conversations: its own host");
		is_int(s->services[0].page_size, 50, "conversations: PageSize at most 50");
	}
	settings_free(s);
	s = accepted("conversations without sid",
		     &(struct conf){.services = "services = ( { users = [\"alice\"];"
						" api = \"conversations\"; } );"});
	if (s != NULL)
		ok(s->services[0].default_service && s->services[0].sid == NULL,
		   "is the account's default conversation service, its sid unknown yet");
	settings_free(s);
	refused("two conversations groups without sid",
		&(struct conf){.services = "services = ( { users = [\"alice\"];"
					   " api = \"conversations\"; }, { users = [\"bob\"];"
					   " api = \"conversations\"; } );"},
		"bob", "sync.services[1]");
	ok(strstr(errlog, "only one can be the account's default conversation service") != NULL,
	   "the error says that only one can be the default");
	refused("ip_messaging_v1 without sid",
		&(struct conf){.services = "services = ( { users = [\"alice\"]; } );"}, "alice",
		"sync.services[0]");
	ok(strstr(errlog, "sid must be a Service SID") != NULL, "the error asks for a sid");
	ok(strstr(errlog, "default conversation service") == NULL,
	   "without a word of a default service, which only conversations has");
	refused("api as a number",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = [\"alice\"]; api = 2; } );"},
		"api = 2", "sync.services[0]");
	refused("a service's base_url over plain http to another host",
		&(struct conf){.services = "services = ( { sid = \"" SERVICE_A
					   "\"; users = [\"alice\"];"
					   " base_url = \"http://chat.example.org\"; } );"},
		"chat.example.org", "sync.services[0]");
	ok(strstr(errlog, "loopback") != NULL, "the error says why");
}

/* twilio.region and twilio.edge move the base URL's host, as Twilio's libraries do. */
static void
test_region(void)
{
	struct settings *s;

	s = accepted("a region and an edge",
		     &(struct conf){.twilio = "region = \"au1\"; edge = \"sydney\";"});
	if (s != NULL)
		is_str(s->services[0].base_url, "https://ip-messaging.sydney.au1.twilio.com",
		       "base_url moves to the edge and the region");
	settings_free(s);
	setenv("TWILIO_REGION", "ie1", 1);
	s = accepted("TWILIO_REGION", &(struct conf){0});
	if (s != NULL)
		is_str(s->services[0].base_url, "https://ip-messaging.ie1.twilio.com",
		       "TWILIO_REGION, without the key, moves it to its region");
	settings_free(s);
	s = accepted("twilio.region and TWILIO_REGION",
		     &(struct conf){.twilio = "region = \"us1\";"});
	if (s != NULL)
		is_str(s->services[0].base_url, "https://ip-messaging.us1.twilio.com",
		       "the key wins");
	settings_free(s);
	unsetenv("TWILIO_REGION");
	s = accepted("a region with a loopback base_url",
		     &(struct conf){
			     .twilio = "region = \"ie1\"; base_url = \"http://127.0.0.1:9\";"});
	if (s != NULL)
		is_str(s->services[0].base_url, "http://127.0.0.1:9",
		       "a host not under twilio.com stays");
	settings_free(s);
	refused("a region that is not a name", &(struct conf){.twilio = "region = \"IE 1\";"},
		"region", "twilio.region");
}

static void
test_file_errors(void)
{
	char path[PATH_MAX], text[512], where[PATH_MAX + 16];
	struct settings *s;

	path_in_tmp(path, sizeof(path), "does-not-exist.conf");
	s = load_captured(path);
	ok(s == NULL, "a missing file is refused");
	settings_free(s);
	ok(strstr(errlog, path) != NULL && count_lines(errlog) == 1,
	   "the missing file is named in one line");

	path_in_tmp(path, sizeof(path), "syntax.conf");
	snprintf(text, sizeof(text),
		 "twilio: {\n  account_sid = \"" ACCOUNT "\";\n  auth_token = \"" TOKEN
		 "\";\n  page_size = ;\n};\n");
	write_file(path, text, 0600);
	s = load_captured(path);
	ok(s == NULL, "a syntax error is refused");
	settings_free(s);
	snprintf(where, sizeof(where), "%s:4: ", path);
	ok(strstr(errlog, where) != NULL, "the syntax error names the file and line 4");
	no_secret_logged("syntax error");

	path_in_tmp(path, sizeof(path), "unterminated.conf");
	snprintf(text, sizeof(text),
		 "twilio: {\n  account_sid = \"" ACCOUNT "\";\n  auth_token = \"" TOKEN
		 ";\n  page_size = 5;\n};\n");
	write_file(path, text, 0600);
	s = load_captured(path);
	ok(s == NULL && errlog[0] != '\0', "an unterminated token string is a syntax error");
	settings_free(s);
	no_secret_logged("unterminated token string");

	path_in_tmp(path, sizeof(path), "unquoted.conf");
	snprintf(text, sizeof(text),
		 "twilio: {\n  account_sid = \"" ACCOUNT "\";\n  auth_token = " TOKEN ";\n};\n");
	write_file(path, text, 0600);
	s = load_captured(path);
	ok(s == NULL && errlog[0] != '\0', "an unquoted token is a syntax error");
	settings_free(s);
	no_secret_logged("unquoted token");

	s = accepted("a token in a 0644 file", &(struct conf){.mode = 0644});
	ok(strstr(errlog, "readable by group or others") != NULL,
	   "a token in a group/world-readable file draws a warning");
	settings_free(s);

	{
		static const struct {
			const char *conninfo;
			bool has_password;
		} conninfos[] = {
			{"conninfo = \"dbname=x password=S3cr3tPw\";", true},
			{"conninfo = \"dbname=x password = S3cr3tPw\";", true},
			{"conninfo = \"postgresql://u:S3cr3tPw@db.example/x\";", true},
			{"conninfo = \"postgresql://db.example/x?password=S3cr3tPw\";", true},
			{"conninfo = \"postgresql://u@db.example/x\";", false},
			{"conninfo = \"dbname=x passfile=/run/credentials/pgpass\";", false},
		};

		for (size_t i = 0; i < sizeof(conninfos) / sizeof(conninfos[0]); i++) {
			s = accepted(conninfos[i].conninfo,
				     &(struct conf){.database = conninfos[i].conninfo,
						    .mode = 0644});
			ok((strstr(errlog, "holds a password in database.conninfo") != NULL) ==
				   conninfos[i].has_password,
			   "%s in a 0644 file: %s", conninfos[i].conninfo,
			   conninfos[i].has_password ? "a warning" : "no warning");
			ok(strstr(errlog, "S3cr3tPw") == NULL, "%s: the password is not logged",
			   conninfos[i].conninfo);
			settings_free(s);
		}
		s = accepted("a password in a 0600 file",
			     &(struct conf){.database = conninfos[0].conninfo, .mode = 0600});
		ok(strstr(errlog, "holds a password") == NULL,
		   "a password in a 0600 file: no warning");
		settings_free(s);
	}

	settings_free(NULL);
	ok(true, "settings_free(NULL) does nothing");
}

/* metrics.listen is loopback unless metrics.allow_remote; neither changes on a reload. */
static void
test_metrics_listen(void)
{
	static const char *const remote[] = {"0.0.0.0:19187",	    "10.1.2.3:19187",
					     "128.0.0.1:19187",	    "[::]:19187",
					     "[2001:db8::1]:19187", "[::ffff:127.0.0.1]:19187"};
	static const char *const loopback[] = {"127.0.0.1:19187", "127.255.255.254:0",
					       "[::1]:19187"};
	char extra[256];
	struct settings *s;

	s = accepted("no metrics group", &(struct conf){0});
	if (s != NULL)
		ok(s->metrics_listen[0] == '\0' && !s->metrics_allow_remote,
		   "metrics are off and metrics.allow_remote is false by default");
	settings_free(s);
	for (size_t i = 0; i < sizeof(remote) / sizeof(remote[0]); i++) {
		snprintf(extra, sizeof(extra), "metrics: {\n  listen = \"%s\";\n};", remote[i]);
		refused(remote[i], &(struct conf){.extra = extra}, "listen =", "metrics.listen");
		ok(strstr(errlog, "not a loopback address") != NULL &&
			   strstr(errlog, "metrics.allow_remote = true") != NULL,
		   "%s: the error says why and what allows it", remote[i]);
		snprintf(extra, sizeof(extra),
			 "metrics: {\n  listen = \"%s\";\n  allow_remote = true;\n};", remote[i]);
		s = accepted(remote[i], &(struct conf){.extra = extra});
		if (s != NULL)
			ok(strcmp(s->metrics_listen, remote[i]) == 0 && s->metrics_allow_remote,
			   "%s with metrics.allow_remote = true is accepted", remote[i]);
		settings_free(s);
	}
	for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
		snprintf(extra, sizeof(extra), "metrics: {\n  listen = \"%s\";\n};", loopback[i]);
		s = accepted(loopback[i], &(struct conf){.extra = extra});
		if (s != NULL)
			ok(strcmp(s->metrics_listen, loopback[i]) == 0,
			   "%s needs no metrics.allow_remote", loopback[i]);
		settings_free(s);
	}
	refused("metrics.allow_remote as a string",
		&(struct conf){.extra = "metrics: {\n  allow_remote = \"yes\";\n};"},
		"allow_remote", "metrics.allow_remote");
}

static void
test_metrics_fixed(void)
{
	struct settings *old = accepted(
		"a remote metrics listener",
		&(struct conf){
			.extra = "metrics: { listen = \"0.0.0.0:19187\"; allow_remote = true; };"});
	struct settings *fresh =
		accepted("a loopback one",
			 &(struct conf){.extra = "metrics: { listen = \"127.0.0.1:19188\"; };"});

	if (old != NULL && fresh != NULL) {
		is_int(settings_keep_fixed(fresh, old), 2,
		       "a reload keeps both metrics.listen and metrics.allow_remote");
		ok(strcmp(fresh->metrics_listen, "0.0.0.0:19187") == 0 &&
			   fresh->metrics_allow_remote,
		   "with their running values");
	}
	settings_free(old);
	settings_free(fresh);
}

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

int
main(void)
{
	unsetenv("TWILIO_AUTH_TOKEN");
	if (mkdtemp(tmpdir) == NULL)
		bail("mkdtemp");
	test_full();
	test_defaults();
	test_bounds();
	test_unknown();
	test_sids();
	test_users();
	test_base_url();
	test_schema_and_level();
	test_token();
	test_api_key();
	test_region();
	test_service_api();
	test_file_errors();
	test_metrics_listen();
	test_metrics_fixed();
	if (nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS) != 0)
		ok(false, "remove %s: %s", tmpdir, strerror(errno));
	return tap_done();
}
