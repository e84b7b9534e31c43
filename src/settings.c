/*
 * settings.c - the configuration file: load, validate, free
 *
 * Every scalar key is described once in setting_defs[]: its group, name,
 * type, default and bounds.  Loading fills a fresh struct settings from the
 * defaults, overlays the file, and validates all of it; the caller only ever
 * sees a complete, valid configuration or NULL.
 */
#include "config.h"

#include "settings.h"

#include "listen_addr.h"
#include "mem.h"
#include "twilio.h"
#include "url.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_TOKEN_FILE 4096

enum setting_type {
	SETTING_STRING,
	SETTING_INT,
	SETTING_BOOL,
};

/*
 * One key of the file.  A key that is not reloadable keeps its old value
 * when SIGHUP brings a new one (see settings_keep_fixed).
 */
struct setting_def {
	const char *group;
	const char *name;
	enum setting_type type;
	size_t offset;
	const char *default_string;
	long long default_int;
	long long min, max;
	bool reloadable;
};

#define FIELD(f) offsetof(struct settings, f)
/* Rows of the table below, one a line. */
/* clang-format off */
#define STR(g, n, f, def, rl) {g, n, SETTING_STRING, FIELD(f), def, 0, 0, 0, rl}
#define INT(g, n, f, def, lo, hi, rl) {g, n, SETTING_INT, FIELD(f), NULL, def, lo, hi, rl}
#define BOOL(g, n, f, def, rl) {g, n, SETTING_BOOL, FIELD(f), NULL, def, 0, 1, rl}
/* clang-format on */

static const struct setting_def setting_defs[] = {
	STR("twilio", "base_url", base_url, "", true),
	STR("twilio", "account_sid", account_sid, NULL, true),
	STR("twilio", "auth_token", auth_token, NULL, true),
	STR("twilio", "auth_token_file", auth_token_file, NULL, true),
	STR("twilio", "api_key_sid", api_key_sid, NULL, true),
	STR("twilio", "api_key_secret", api_key_secret, NULL, true),
	STR("twilio", "api_key_secret_file", api_key_secret_file, NULL, true),
	STR("twilio", "proxy", proxy, "", true),
	STR("twilio", "region", region, "", true),
	STR("twilio", "edge", edge, "", true),
	INT("twilio", "page_size", page_size, 1000, 1, 1000, true),
	INT("twilio", "timeout", timeout, 30, 1, 3600, true),
	INT("twilio", "connect_timeout", connect_timeout, 10, 1, 600, true),
	INT("twilio", "concurrency", concurrency, 8, 1, 64, true),
	INT("twilio", "max_rps", max_rps, 0, 0, 100000, true),
	INT("twilio", "account_max_rps", account_max_rps, 0, 0, 100000, true),
	INT("twilio", "max_retries", max_retries, 5, 0, 100, true),
	INT("twilio", "max_backoff", max_backoff, 60, 1, 3600, true),
	INT("twilio", "backoff_base_ms", backoff_base_ms, 500, 1, 60000, true),
	INT("limits", "max_body", max_body, 16 << 20, 1024, 1 << 30, true),
	INT("limits", "max_string", max_string, 65536, 256, 16 << 20, true),
	INT("limits", "max_depth", max_depth, 32, 4, 1000, true),
	INT("limits", "max_pages", max_pages, 10000, 1, 10000000, true),
	STR("database", "conninfo", conninfo, "", false),
	STR("database", "schema", schema, "chatsync", false),
	INT("database", "writers", writers, 2, 1, 16, false),
	INT("sync", "interval", interval, 300, 1, 7 * 86400, true),
	STR("sync", "instance_name", instance_name, "", false),
	INT("sync", "lease_seconds", lease_seconds, 30, 3, 3600, true),
	BOOL("sync", "dimensions", dimensions, true, true),
	BOOL("sync", "store_attributes", store_attributes, false, true),
	INT("history", "retention_days", retention_days, 0, 0, 36500, true),
	STR("log", "level", log_level_name, "info", true),
	BOOL("log", "syslog", log_syslog, false, false),
	STR("metrics", "listen", metrics_listen, "", false),
	BOOL("metrics", "allow_remote", metrics_allow_remote, false, false),
};

/* Keys that are not scalars of setting_defs[] but are still allowed. */
static const char *const list_keys[] = {"sync.services"};

struct loader {
	const char *path;
	struct settings *s;
	bool token_in_file;	     /* twilio.auth_token is written in the file */
	bool key_secret_in_file;     /* twilio.api_key_secret is */
	bool service_secret_in_file; /* a service group's auth_token or api_key_secret is */
	enum settings_token token;
};

static void fail_at(const struct loader *l, const config_setting_t *at, const char *key,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
fail_at(const struct loader *l, const config_setting_t *at, const char *key, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (at != NULL && config_setting_source_line(at) > 0)
		log_error("%s:%d: %s: %s", l->path, config_setting_source_line(at), key, msg);
	else
		log_error("%s: %s: %s", l->path, key, msg);
}

static const struct setting_def *
find_def(const char *group, const char *name)
{
	for (size_t i = 0; i < sizeof(setting_defs) / sizeof(setting_defs[0]); i++) {
		if (strcmp(setting_defs[i].group, group) == 0 &&
		    strcmp(setting_defs[i].name, name) == 0)
			return &setting_defs[i];
	}
	return NULL;
}

static bool
is_list_key(const char *group, const char *name)
{
	char key[128];

	snprintf(key, sizeof(key), "%s.%s", group, name);
	for (size_t i = 0; i < sizeof(list_keys) / sizeof(list_keys[0]); i++) {
		if (strcmp(list_keys[i], key) == 0)
			return true;
	}
	return false;
}

static bool
is_known_group(const char *group)
{
	for (size_t i = 0; i < sizeof(setting_defs) / sizeof(setting_defs[0]); i++) {
		if (strcmp(setting_defs[i].group, group) == 0)
			return true;
	}
	return false;
}

static void
apply_defaults(struct settings *s)
{
	for (size_t i = 0; i < sizeof(setting_defs) / sizeof(setting_defs[0]); i++) {
		const struct setting_def *d = &setting_defs[i];
		void *field = (char *)s + d->offset;

		if (d->type == SETTING_STRING)
			*(char **)field = xstrdup(d->default_string);
		else if (d->type == SETTING_BOOL)
			*(bool *)field = d->default_int != 0;
		else
			*(int *)field = (int)d->default_int;
	}
}

static bool
load_scalar(struct loader *l, const struct setting_def *d, const config_setting_t *cs)
{
	void *field = (char *)l->s + d->offset;
	char key[128];
	long long v;

	snprintf(key, sizeof(key), "%s.%s", d->group, d->name);
	if (d->type == SETTING_STRING) {
		if (config_setting_type(cs) != CONFIG_TYPE_STRING) {
			fail_at(l, cs, key, "must be a string");
			return false;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(config_setting_get_string(cs));
		return true;
	}
	if (d->type == SETTING_BOOL) {
		if (config_setting_type(cs) != CONFIG_TYPE_BOOL) {
			fail_at(l, cs, key, "must be true or false");
			return false;
		}
		*(bool *)field = config_setting_get_bool(cs) != 0;
		return true;
	}
	if (config_setting_type(cs) == CONFIG_TYPE_INT)
		v = config_setting_get_int(cs);
	else if (config_setting_type(cs) == CONFIG_TYPE_INT64)
		v = config_setting_get_int64(cs);
	else {
		fail_at(l, cs, key, "must be an integer");
		return false;
	}
	if (v < d->min || v > d->max) {
		fail_at(l, cs, key, "%lld is out of range (%lld..%lld)", v, d->min, d->max);
		return false;
	}
	*(int *)field = (int)v;
	return true;
}

static bool
load_users(struct loader *l, struct settings_service *svc, const config_setting_t *service,
	   const char *key)
{
	const config_setting_t *users = config_setting_get_member(service, "users");
	int n;

	if (users == NULL) {
		fail_at(l, service, key, "users is missing (a list of user strings, or \"all\")");
		return false;
	}
	if (config_setting_type(users) == CONFIG_TYPE_STRING) {
		svc->all_users = strcmp(config_setting_get_string(users), "all") == 0;
		if (!svc->all_users)
			fail_at(l, users, key, "must be a list of user strings, or \"all\"");
		return svc->all_users;
	}
	if (!config_setting_is_aggregate(users) ||
	    config_setting_type(users) == CONFIG_TYPE_GROUP) {
		fail_at(l, users, key, "must be a list of user strings, or \"all\"");
		return false;
	}
	n = config_setting_length(users);
	if (n == 0) {
		fail_at(l, users, key, "must name at least one user");
		return false;
	}
	svc->users = xcalloc((size_t)n, sizeof(char *));
	for (int i = 0; i < n; i++) {
		const config_setting_t *u = config_setting_get_elem(users, (unsigned)i);
		const char *v = config_setting_get_string(u);

		if (v == NULL || v[0] == '\0') {
			fail_at(l, u, key, "user %d must be a non-empty string", i + 1);
			return false;
		}
		for (size_t j = 0; j < svc->n_users; j++) {
			if (strcmp(svc->users[j], v) == 0) {
				fail_at(l, u, key, "user \"%s\" is listed twice", v);
				return false;
			}
		}
		svc->users[svc->n_users++] = xstrdup(v);
	}
	return true;
}

/* A service's api and base_url (its effective base URL comes in resolve_services). */
static bool
load_api(struct loader *l, struct settings_service *svc, const config_setting_t *cs,
	 const char *key)
{
	const config_setting_t *at;
	const char *name = "ip_messaging_v1", *base;
	char err[256];

	at = config_setting_get_member(cs, "api");
	if (at != NULL && config_setting_type(at) != CONFIG_TYPE_STRING) {
		fail_at(l, at, key, "api must be a string");
		return false;
	}
	if (at != NULL)
		name = config_setting_get_string(at);
	if (!twilio_api_parse(name, &svc->api)) {
		fail_at(l, at, key,
			"api must be \"ip_messaging_v1\", \"chat_v2\" or \"conversations\"");
		return false;
	}
	at = config_setting_get_member(cs, "base_url");
	if (at == NULL)
		return true;
	if (config_setting_type(at) != CONFIG_TYPE_STRING) {
		fail_at(l, at, key, "base_url must be a string");
		return false;
	}
	base = config_setting_get_string(at);
	if (!url_check_base(base, err, sizeof(err))) {
		fail_at(l, at, key, "base_url: %s", err);
		return false;
	}
	svc->base_url = xstrdup(base);
	return true;
}

/* A conversations service without sid: the account's default one, at most once. */
static bool
load_default_service(struct loader *l, struct settings_service *svc, const config_setting_t *cs,
		     const char *key)
{
	for (size_t i = 0; i + 1 < l->s->n_services; i++) {
		if (l->s->services[i].default_service) {
			fail_at(l, cs, key,
				"a second service without sid: only one can be the account's "
				"default conversation service");
			return false;
		}
	}
	svc->default_service = true;
	return true;
}

static bool read_secret_file(struct loader *l, const config_setting_t *at, const char *key,
			     const char *name, char **out);

/* The credential keys a service group may have, for a subaccount. */
static const char *const credential_keys[] = {"account_sid",	 "auth_token",
					      "auth_token_file", "api_key_sid",
					      "api_key_secret",	 "api_key_secret_file"};

static bool
is_service_key(const char *name)
{
	static const char *const keys[] = {"sid", "users", "api", "base_url"};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (strcmp(name, keys[i]) == 0)
			return true;
	}
	for (size_t i = 0; i < sizeof(credential_keys) / sizeof(credential_keys[0]); i++) {
		if (strcmp(name, credential_keys[i]) == 0)
			return true;
	}
	return false;
}

/* The string member name of group cs, or NULL; false (logged) if it is not a string. */
static bool
group_string(struct loader *l, const config_setting_t *cs, const char *key, const char *name,
	     const char **out)
{
	const config_setting_t *at = config_setting_get_member(cs, name);

	*out = NULL;
	if (at == NULL)
		return true;
	*out = config_setting_get_string(at);
	if (*out != NULL)
		return true;
	fail_at(l, at, key, "%s must be a string", name);
	return false;
}

/*
 * The secret of a subaccount's credentials: inline (value) or in a file
 * (file, read as twilio.auth_token_file is), exactly one of the two.
 */
static bool
load_service_secret(struct loader *l, struct settings_service *svc, const config_setting_t *cs,
		    const char *key, const char *name, const char *value, const char *file)
{
	char file_key[96];

	snprintf(file_key, sizeof(file_key), "%s.%s_file", key, name);
	if ((value == NULL) == (file == NULL)) {
		fail_at(l, cs, key,
			"a service with its own account_sid needs its %s: give %s or %s_file", name,
			name, name);
		return false;
	}
	if (value != NULL) {
		svc->secret = xstrdup(value);
		l->service_secret_in_file = true;
	} else if (l->token == SETTINGS_TOKEN_READ &&
		   !read_secret_file(l, config_setting_get_member(cs, file_key + strlen(key) + 1),
				     file_key, file, &svc->secret)) {
		return false;
	}
	if (l->token == SETTINGS_TOKEN_READ && svc->secret[0] == '\0') {
		fail_at(l, cs, key, "its %s is empty", name);
		return false;
	}
	return true;
}

/*
 * A subaccount's own credentials in a service group: account_sid, with its
 * auth token or an API key of it, from the group or a file (never from the
 * environment, which holds twilio.*'s).  Without account_sid the service
 * uses twilio.*'s, and no other credential key may be given.
 */
static bool
load_service_credentials(struct loader *l, struct settings_service *svc, const config_setting_t *cs,
			 const char *key)
{
	const char *v[sizeof(credential_keys) / sizeof(credential_keys[0])];
	const char *account, *token, *token_file, *key_sid, *key_secret, *key_secret_file;

	for (size_t i = 0; i < sizeof(credential_keys) / sizeof(credential_keys[0]); i++) {
		if (!group_string(l, cs, key, credential_keys[i], &v[i]))
			return false;
	}
	account = v[0], token = v[1], token_file = v[2], key_sid = v[3], key_secret = v[4],
	key_secret_file = v[5];
	if (account == NULL) {
		for (size_t i = 1; i < sizeof(v) / sizeof(v[0]); i++) {
			if (v[i] != NULL) {
				fail_at(l, config_setting_get_member(cs, credential_keys[i]), key,
					"%s is given without the account_sid it belongs to",
					credential_keys[i]);
				return false;
			}
		}
		return true;
	}
	if (!twilio_sid_valid(account, "AC")) {
		fail_at(l, config_setting_get_member(cs, "account_sid"), key,
			"account_sid must be an Account SID (AC followed by 32 hex digits)");
		return false;
	}
	svc->account_sid = xstrdup(account);
	if (key_sid == NULL) {
		if (key_secret != NULL || key_secret_file != NULL) {
			fail_at(l, cs, key, "an API key secret is given, but no api_key_sid");
			return false;
		}
		return load_service_secret(l, svc, cs, key, "auth_token", token, token_file);
	}
	if (!twilio_sid_valid(key_sid, "SK")) {
		fail_at(l, config_setting_get_member(cs, "api_key_sid"), key,
			"api_key_sid must be an API key SID (SK followed by 32 hex digits)");
		return false;
	}
	if (token != NULL || token_file != NULL) {
		fail_at(l, cs, key, "give either an API key or an auth token, not both");
		return false;
	}
	svc->api_key_sid = xstrdup(key_sid);
	return load_service_secret(l, svc, cs, key, "api_key_secret", key_secret, key_secret_file);
}

static bool
load_service(struct loader *l, const config_setting_t *cs, size_t index)
{
	struct settings_service *svc = &l->s->services[l->s->n_services];
	const config_setting_t *sid_at;
	const char *sid = NULL;
	char key[64];

	snprintf(key, sizeof(key), "sync.services[%zu]", index);
	if (config_setting_type(cs) != CONFIG_TYPE_GROUP) {
		fail_at(l, cs, key, "must be a group { sid = \"IS...\"; users = [ ... ]; }");
		return false;
	}
	for (int i = 0; i < config_setting_length(cs); i++) {
		const char *name = config_setting_name(config_setting_get_elem(cs, (unsigned)i));

		if (!is_service_key(name)) {
			fail_at(l, config_setting_get_elem(cs, (unsigned)i), key,
				"unknown key \"%s\"", name);
			return false;
		}
	}
	l->s->n_services++;
	if (!load_api(l, svc, cs, key) || !load_service_credentials(l, svc, cs, key))
		return false;
	sid_at = config_setting_get_member(cs, "sid");
	if (sid_at == NULL && svc->api == TWILIO_API_CONVERSATIONS)
		return load_default_service(l, svc, cs, key) && load_users(l, svc, cs, key);
	if (!config_setting_lookup_string(cs, "sid", &sid) || !twilio_sid_valid(sid, "IS")) {
		/* The sid line if there is one, else the group's. */
		fail_at(l, sid_at ? sid_at : cs, key,
			"sid must be a Service SID (IS followed by 32 hex digits)%s",
			svc->api == TWILIO_API_CONVERSATIONS
				? ", or no sid for the account's default conversation service"
				: "");
		return false;
	}
	for (size_t i = 0; i + 1 < l->s->n_services; i++) {
		if (l->s->services[i].sid != NULL && strcmp(l->s->services[i].sid, sid) == 0) {
			fail_at(l, sid_at, key, "service %s is listed twice", sid);
			return false;
		}
	}
	svc->sid = xstrdup(sid);
	return load_users(l, svc, cs, key);
}

static bool
load_services(struct loader *l, const config_setting_t *list)
{
	int n;

	if (config_setting_type(list) != CONFIG_TYPE_LIST) {
		fail_at(l, list, "sync.services", "must be a list ( { ... }, ... )");
		return false;
	}
	n = config_setting_length(list);
	l->s->services = xcalloc((size_t)n, sizeof(struct settings_service));
	for (int i = 0; i < n; i++) {
		if (!load_service(l, config_setting_get_elem(list, (unsigned)i), (size_t)i))
			return false;
	}
	return true;
}

static bool
load_group(struct loader *l, const config_setting_t *group)
{
	const char *gname = config_setting_name(group);

	if (gname == NULL || !is_known_group(gname) ||
	    config_setting_type(group) != CONFIG_TYPE_GROUP) {
		fail_at(l, group, gname ? gname : "(top level)",
			"unknown setting (expected groups twilio, database, sync, history, log, "
			"limits, metrics)");
		return false;
	}
	for (int i = 0; i < config_setting_length(group); i++) {
		const config_setting_t *cs = config_setting_get_elem(group, (unsigned)i);
		const char *name = config_setting_name(cs);
		const struct setting_def *d = find_def(gname, name);
		char key[128];

		snprintf(key, sizeof(key), "%s.%s", gname, name);
		if (d != NULL) {
			if (!load_scalar(l, d, cs))
				return false;
			if (strcmp(key, "twilio.auth_token") == 0)
				l->token_in_file = true;
			if (strcmp(key, "twilio.api_key_secret") == 0)
				l->key_secret_in_file = true;
		} else if (is_list_key(gname, name)) {
			if (!load_services(l, cs))
				return false;
		} else {
			fail_at(l, cs, key, "unknown key");
			return false;
		}
	}
	return true;
}

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif

/*
 * A relative auth_token_file names a credential: under systemd it is read
 * from $CREDENTIALS_DIRECTORY (LoadCredential=), otherwise from
 * SYSCONFDIR/chatsync/, where the unit's LoadCredential= takes it from.
 * Returns a path the caller owns.
 */
static char *
token_path(const char *file)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");

	if (file[0] == '/')
		return xstrdup(file);
	if (dir != NULL && dir[0] != '\0')
		return xasprintf("%s/%s", dir, file);
	return xasprintf("%s/chatsync/%s", SYSCONFDIR, file);
}

/* A secret of the account, its three sources, and where it is kept. */
struct secret {
	const char *key;      /* "auth_token" */
	const char *file_key; /* "auth_token_file" */
	const char *env;      /* "TWILIO_AUTH_TOKEN" */
	const char *what;     /* "auth token", for messages */
};

static const struct secret auth_token_secret = {"auth_token", "auth_token_file",
						"TWILIO_AUTH_TOKEN", "auth token"};
static const struct secret api_key_secret = {"api_key_secret", "api_key_secret_file",
					     "TWILIO_API_KEY_SECRET", "API key secret"};

/* Reads the secret file name (see token_path) into *out. */
static bool
read_secret_file(struct loader *l, const config_setting_t *at, const char *key, const char *name,
		 char **out)
{
	char buf[MAX_TOKEN_FILE + 1];
	char *file = token_path(name);
	struct stat st;
	bool ok = false;
	ssize_t n;
	int fd;

	/* Not through a symbolic link, and without waiting on a FIFO's writer. */
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		fail_at(l, at, key, "could not open \"%s\": %s", file,
			errno == ELOOP ? "it is a symbolic link" : strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		fail_at(l, at, key, "\"%s\" is not a regular file", file);
		close(fd);
		goto out;
	}
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n < 0 || n > MAX_TOKEN_FILE) {
		fail_at(l, at, key, "could not read \"%s\": %s", file,
			n < 0 ? strerror(errno) : "file too large");
		goto out;
	}
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n] = '\0';
	free(*out);
	*out = xstrdup(buf);
	ok = true;
out:
	explicit_bzero(buf, sizeof(buf));
	free(file);
	return ok;
}

/*
 * Does a libpq connection string carry a password: a password keyword, or a
 * URI whose user information has one (postgresql://user:secret@host)?
 */
static bool
conninfo_has_password(const char *conninfo)
{
	const char *authority, *end;

	for (const char *p = strstr(conninfo, "password"); p != NULL;
	     p = strstr(p + 1, "password")) {
		const char *q = p + strlen("password");

		while (*q == ' ' || *q == '\t')
			q++;
		if (*q == '=')
			return true;
	}
	authority = strstr(conninfo, "://");
	if (authority == NULL)
		return false;
	authority += 3;
	end = authority + strcspn(authority, "/?");
	for (const char *at = authority; at < end; at++) {
		if (*at == '@')
			return memchr(authority, ':', (size_t)(at - authority)) != NULL;
	}
	return false;
}

/* Secrets in a file that others can read draw a warning (never the secret itself). */
static void
warn_readable_secrets(const struct loader *l)
{
	struct stat st;

	if (stat(l->path, &st) != 0 || (st.st_mode & 077) == 0)
		return;
	if (l->token_in_file)
		log_warning("%s holds twilio.auth_token and is readable by group or others; "
			    "chmod 600 it or use auth_token_file",
			    l->path);
	if (l->key_secret_in_file)
		log_warning("%s holds twilio.api_key_secret and is readable by group or others; "
			    "chmod 600 it or use api_key_secret_file",
			    l->path);
	if (l->service_secret_in_file)
		log_warning(
			"%s holds the auth token or API key secret of a service's account and is "
			"readable by group or others; chmod 600 it or use auth_token_file or "
			"api_key_secret_file",
			l->path);
	if (conninfo_has_password(l->s->conninfo))
		log_warning("%s holds a password in database.conninfo and is readable by group or "
			    "others; use a password file (PGPASSFILE, see chatsyncd(8))",
			    l->path);
}

/*
 * Resolves one secret into *value (the field of its inline key): the
 * environment wins, then the file, then the inline value.  file is the
 * field of its file key.
 */
static bool
resolve_secret(struct loader *l, const config_t *cf, const struct secret *sec, char **value,
	       const char *file)
{
	char file_path[64], key_path[64], msg[160];
	const config_setting_t *file_at, *value_at;
	const char *env = getenv(sec->env);

	snprintf(file_path, sizeof(file_path), "twilio.%s", sec->file_key);
	snprintf(key_path, sizeof(key_path), "twilio.%s", sec->key);
	file_at = config_lookup(cf, file_path);
	value_at = config_lookup(cf, key_path);
	if (env != NULL && env[0] != '\0') {
		free(*value);
		*value = xstrdup(env);
	} else if (file != NULL) {
		if (*value != NULL) {
			fail_at(l, file_at, file_path, "give either %s or %s, not both", sec->key,
				sec->file_key);
			return false;
		}
		if (l->token != SETTINGS_TOKEN_READ)
			return true; /* named, not read: nothing will call Twilio */
		if (!read_secret_file(l, file_at, file_path, file, value))
			return false;
	}
	if (l->token == SETTINGS_TOKEN_IGNORED)
		return true;
	if (*value == NULL || (*value)[0] == '\0') {
		const config_setting_t *at = file_at ? file_at : value_at;

		snprintf(msg, sizeof(msg), "no %s (set %s, %s or %s)", sec->what, sec->key,
			 sec->file_key, sec->env);
		fail_at(l, at ? at : config_lookup(cf, "twilio"),
			at == file_at && at ? file_path : key_path, "%s", msg);
		return false;
	}
	return true;
}

/*
 * The credentials: an API key (api_key_sid with its secret), which Twilio
 * recommends, or the account's auth token; not both in the file.
 */
static bool
resolve_credentials(struct loader *l, const config_t *cf)
{
	struct settings *s = l->s;

	if (s->api_key_sid == NULL &&
	    (s->api_key_secret != NULL || s->api_key_secret_file != NULL)) {
		fail_at(l, config_lookup(cf, "twilio"), "twilio.api_key_sid",
			"an API key secret is given, but no api_key_sid");
		return false;
	}
	if (s->api_key_sid == NULL)
		return resolve_secret(l, cf, &auth_token_secret, &s->auth_token,
				      s->auth_token_file);
	if (!twilio_sid_valid(s->api_key_sid, "SK")) {
		fail_at(l, config_lookup(cf, "twilio.api_key_sid"), "twilio.api_key_sid",
			"must be an API key SID (SK followed by 32 hex digits)");
		return false;
	}
	if (s->auth_token != NULL || s->auth_token_file != NULL) {
		fail_at(l, config_lookup(cf, "twilio.api_key_sid"), "twilio.api_key_sid",
			"give either an API key or an auth token, not both");
		return false;
	}
	return resolve_secret(l, cf, &api_key_secret, &s->api_key_secret, s->api_key_secret_file);
}

static bool
schema_ok(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > 63 || !(islower((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_')
			return false;
	}
	return true;
}

/* metrics.listen: empty, or ADDR:PORT on loopback unless metrics.allow_remote says otherwise. */
static bool
metrics_listen_ok(struct loader *l, const config_t *cf)
{
	const char *listen = l->s->metrics_listen;
	const config_setting_t *at = config_lookup(cf, "metrics.listen");
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char err[256];

	if (listen[0] == '\0')
		return true;
	if (!listen_addr_parse(listen, &addr, &addr_len, err, sizeof(err))) {
		fail_at(l, at, "metrics.listen",
			"must be ADDR:PORT with a numeric address "
			"(e.g. 127.0.0.1:19187 or [::1]:19187)");
		return false;
	}
	if (!l->s->metrics_allow_remote && !listen_addr_is_loopback(&addr)) {
		fail_at(l, at, "metrics.listen",
			"\"%s\" is not a loopback address (127.0.0.0/8 or [::1]); the endpoint has "
			"no authentication: set metrics.allow_remote = true to serve it there",
			listen);
		return false;
	}
	return true;
}

/*
 * twilio.region and twilio.edge (else TWILIO_REGION and TWILIO_EDGE): names
 * that move each service's host, as Twilio's helper libraries do (see
 * resolve_services and url_regional).
 */
static bool
resolve_region(struct loader *l, const config_t *cf)
{
	struct settings *s = l->s;
	static const char *const keys[2] = {"region", "edge"};
	char **fields[2] = {&s->region, &s->edge};
	static const char *const envs[2] = {"TWILIO_REGION", "TWILIO_EDGE"};
	for (int i = 0; i < 2; i++) {
		const char *env = getenv(envs[i]);
		char key[32];

		snprintf(key, sizeof(key), "twilio.%s", keys[i]);
		if ((*fields[i])[0] == '\0' && env != NULL && env[0] != '\0') {
			free(*fields[i]);
			*fields[i] = xstrdup(env);
		}
		if ((*fields[i])[0] != '\0' && !url_label_ok(*fields[i])) {
			/* The key's line, or the variable it came from. */
			const char *from = config_lookup(cf, key) != NULL ? "" : envs[i];

			fail_at(l, config_lookup(cf, key), key,
				"\"%s\"%s%s is not a %s name (lowercase letters, digits, '-')",
				*fields[i], from[0] != '\0' ? " from " : "", from, keys[i]);
			return false;
		}
	}
	return true;
}

/*
 * Each service's base URL: its own base_url, else twilio.base_url, else its
 * API's host; then moved by twilio.region and twilio.edge.  Its page size:
 * twilio.page_size, at most its API's.
 */
static void
resolve_services(struct settings *s)
{
	for (size_t i = 0; i < s->n_services; i++) {
		struct settings_service *svc = &s->services[i];
		const struct twilio_api_info *api = twilio_api_info(svc->api);
		const char *base = svc->base_url != NULL    ? svc->base_url
				   : s->base_url[0] != '\0' ? s->base_url
							    : api->host;
		char *moved = url_regional(base, s->region, s->edge);

		free(svc->base_url);
		svc->base_url = moved;
		svc->page_size =
			s->page_size < api->max_page_size ? s->page_size : api->max_page_size;
	}
}

static bool
validate(struct loader *l, const config_t *cf)
{
	struct settings *s = l->s;
	char err[256];

	if (s->proxy[0] != '\0' && !url_check_proxy(s->proxy, err, sizeof(err))) {
		fail_at(l, config_lookup(cf, "twilio.proxy"), "twilio.proxy", "%s", err);
		return false;
	}
	if (s->base_url[0] != '\0' && !url_check_base(s->base_url, err, sizeof(err))) {
		fail_at(l, config_lookup(cf, "twilio.base_url"), "twilio.base_url", "%s", err);
		return false;
	}
	if (!resolve_region(l, cf))
		return false;
	if (s->account_sid == NULL || !twilio_sid_valid(s->account_sid, "AC")) {
		fail_at(l, config_lookup(cf, "twilio.account_sid"), "twilio.account_sid",
			"must be an Account SID (AC followed by 32 hex digits)");
		return false;
	}
	if (!schema_ok(s->schema)) {
		fail_at(l, config_lookup(cf, "database.schema"), "database.schema",
			"must be a lowercase SQL identifier ([a-z_][a-z0-9_]*, at most 63)");
		return false;
	}
	if (!log_level_parse(s->log_level_name, &s->log_level)) {
		fail_at(l, config_lookup(cf, "log.level"), "log.level",
			"must be one of error, warning, info, debug");
		return false;
	}
	if (!metrics_listen_ok(l, cf))
		return false;
	if (s->n_services == 0) {
		fail_at(l, config_lookup(cf, "sync.services"), "sync.services",
			"must list at least one service");
		return false;
	}
	resolve_services(s);
	if (!resolve_credentials(l, cf))
		return false;
	warn_readable_secrets(l);
	return true;
}

static bool
load_file(struct loader *l, config_t *cf)
{
	const config_setting_t *root;

	if (!config_read_file(cf, l->path)) {
		if (config_error_type(cf) == CONFIG_ERR_FILE_IO)
			log_error("could not read configuration file \"%s\": %s", l->path,
				  strerror(errno));
		else
			log_error("%s:%d: syntax error: %s",
				  config_error_file(cf) ? config_error_file(cf) : l->path,
				  config_error_line(cf), config_error_text(cf));
		return false;
	}
	root = config_root_setting(cf);
	for (int i = 0; i < config_setting_length(root); i++) {
		if (!load_group(l, config_setting_get_elem(root, (unsigned)i)))
			return false;
	}
	return validate(l, cf);
}

struct settings *
settings_load(const char *path, enum settings_token token)
{
	struct settings *s = xcalloc(1, sizeof(*s));
	struct loader l = {.path = path, .s = s, .token = token};
	config_t cf;
	bool ok;

	s->path = xstrdup(path);
	apply_defaults(s);
	config_init(&cf);
	ok = load_file(&l, &cf);
	config_destroy(&cf);
	if (!ok) {
		settings_free(s);
		return NULL;
	}
	return s;
}

void
settings_free(struct settings *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < sizeof(setting_defs) / sizeof(setting_defs[0]); i++) {
		if (setting_defs[i].type == SETTING_STRING) {
			char **field = (char **)((char *)s + setting_defs[i].offset);

			if (*field != NULL &&
			    (field == &s->auth_token || field == &s->api_key_secret))
				explicit_bzero(*field, strlen(*field));
			free(*field);
		}
	}
	for (size_t i = 0; i < s->n_services; i++) {
		for (size_t j = 0; j < s->services[i].n_users; j++)
			free(s->services[i].users[j]);
		free(s->services[i].users);
		free(s->services[i].sid);
		free(s->services[i].base_url);
		free(s->services[i].account_sid);
		free(s->services[i].api_key_sid);
		if (s->services[i].secret != NULL)
			explicit_bzero(s->services[i].secret, strlen(s->services[i].secret));
		free(s->services[i].secret);
	}
	free(s->services);
	free(s->path);
	free(s);
}

size_t
settings_user_count(const struct settings *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_services; i++)
		n += s->services[i].n_users;
	return n;
}

static bool
same_value(const struct setting_def *d, const struct settings *a, const struct settings *b)
{
	const void *fa = (const char *)a + d->offset, *fb = (const char *)b + d->offset;

	if (d->type == SETTING_STRING) {
		const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;

		return (sa == NULL && sb == NULL) ||
		       (sa != NULL && sb != NULL && strcmp(sa, sb) == 0);
	}
	if (d->type == SETTING_BOOL)
		return *(const bool *)fa == *(const bool *)fb;
	return *(const int *)fa == *(const int *)fb;
}

size_t
settings_keep_fixed(struct settings *fresh, const struct settings *old)
{
	size_t kept = 0;

	for (size_t i = 0; i < sizeof(setting_defs) / sizeof(setting_defs[0]); i++) {
		const struct setting_def *d = &setting_defs[i];
		void *dst = (char *)fresh + d->offset;
		const void *src = (const char *)old + d->offset;

		if (d->reloadable || same_value(d, fresh, old))
			continue;
		log_warning("%s.%s changed, but takes effect only when chatsyncd restarts",
			    d->group, d->name);
		if (d->type == SETTING_STRING) {
			free(*(char **)dst);
			*(char **)dst = xstrdup(*(char *const *)src);
		} else if (d->type == SETTING_BOOL) {
			*(bool *)dst = *(const bool *)src;
		} else {
			*(int *)dst = *(const int *)src;
		}
		kept++;
	}
	return kept;
}

bool
settings_discovers_users(const struct settings *s)
{
	for (size_t i = 0; i < s->n_services; i++) {
		if (s->services[i].all_users)
			return true;
	}
	return false;
}

const char *
settings_api_user(const struct settings *s)
{
	return s->api_key_sid != NULL ? s->api_key_sid : s->account_sid;
}

const char *
settings_api_password(const struct settings *s)
{
	return s->api_key_sid != NULL ? s->api_key_secret : s->auth_token;
}

const char *
settings_service_user(const struct settings *s, const struct settings_service *svc)
{
	if (svc->account_sid == NULL)
		return settings_api_user(s);
	return svc->api_key_sid != NULL ? svc->api_key_sid : svc->account_sid;
}

const char *
settings_service_password(const struct settings *s, const struct settings_service *svc)
{
	return svc->account_sid == NULL ? settings_api_password(s) : svc->secret;
}
