/*
 * settings.h - the configuration file: load, validate, free
 */
#ifndef CHATSYNC_SETTINGS_H
#define CHATSYNC_SETTINGS_H

#include "log.h"
#include "twilio.h"

#include <stdbool.h>
#include <stddef.h>

struct settings_service {
	/*
	 * The Service SID; NULL for the account's default conversation service
	 * (api conversations without sid) until a sweep has asked the API
	 * which it is (default_service_resolve in default_service.h).
	 */
	char *sid;
	bool default_service; /* no sid configured: the account's default conversation service */
	char **users;	      /* as written in the file: a User SID or an identity */
	size_t n_users;
	bool all_users;	     /* users = "all": the service's users listing says who they are */
	enum twilio_api api; /* api: which API lists its memberships */
	char *base_url;	     /* where: its base_url, else twilio.base_url, else the API's host,
				moved by twilio.region and twilio.edge */
	int page_size;	     /* twilio.page_size, at most what the API allows */
	/*
	 * A subaccount's own credentials (account_sid given in the group), else
	 * all NULL and twilio.*'s are used: its Account SID, its API key SID
	 * (NULL with an auth token), and the auth token or the key's secret
	 * (never log it).
	 */
	char *account_sid;
	char *api_key_sid;
	char *secret;
};

/* Plain data: everything a sweep needs, validated. */
struct settings {
	char *path;

	char *base_url; /* twilio.base_url as configured, "" for each API's own host */
	char *proxy;	/* "" for none: proxies from the environment are never used */
	char *region;	/* twilio.region or TWILIO_REGION, "" for none: already in base_url */
	char *edge;	/* twilio.edge or TWILIO_EDGE, the same */
	char *account_sid;
	char *auth_token; /* secret: never log it */
	char *auth_token_file;
	char *api_key_sid;    /* SK...: with it, the API key is used instead of the token */
	char *api_key_secret; /* secret: never log it */
	char *api_key_secret_file;
	int page_size;
	int timeout;
	int connect_timeout;
	int concurrency;
	int max_rps;	     /* 0: no cap */
	int account_max_rps; /* shared by the live instances of the schema; 0: no cap */
	int max_retries;
	int max_backoff;     /* seconds */
	int backoff_base_ms; /* first retry waits between this and twice this */

	/* Limits on what one response may hold; past them the page is refused. */
	int max_body;	/* bytes */
	int max_string; /* bytes of one JSON string */
	int max_depth;	/* JSON nesting */
	int max_pages;	/* pages of one user's listing */

	char *conninfo;
	int writers; /* connections that commit pages */
	char *schema;

	int interval;
	char *instance_name;   /* sync.instance_name: "" for host:pid:start */
	int lease_seconds;     /* sync.lease_seconds: a claimed user's lease, renewed every third */
	bool dimensions;       /* sync.dimensions: list the services, users and channels too */
	bool store_attributes; /* sync.store_attributes: keep the PII-marked attributes */
	int retention_days;    /* history.retention_days: 0 keeps all */
	struct settings_service *services;
	size_t n_services;

	char *log_level_name;
	enum log_level log_level;
	bool log_syslog;

	char *metrics_listen;	   /* "" when off */
	bool metrics_allow_remote; /* metrics_listen may be other than loopback */
};

/*
 * Reads and validates path.  On success returns settings the caller owns
 * (free with settings_free); on failure logs one line naming the file, the
 * line and the key, and returns NULL.  The environment variable
 * TWILIO_AUTH_TOKEN, when set, wins over auth_token and auth_token_file;
 * with twilio.api_key_sid, TWILIO_API_KEY_SECRET over api_key_secret and
 * api_key_secret_file (and no auth token is read).
 * token says what the command needs of the auth token: commands that never
 * call Twilio do not read the token file (auth_token may then be NULL).
 */
enum settings_token {
	SETTINGS_TOKEN_READ,	/* read it: the sweeps call Twilio */
	SETTINGS_TOKEN_NAMED,	/* a source must be configured, but is not read (--check-config) */
	SETTINGS_TOKEN_IGNORED, /* not needed at all (--migrate, --status) */
};
struct settings *settings_load(const char *path, enum settings_token token)
	__attribute__((warn_unused_result));
void settings_free(struct settings *s);

/*
 * For a reload: every key that cannot change while running (database.*,
 * log.syslog, metrics.*) gets old's value back in fresh, with a warning
 * for each that differed.  Returns how many were kept.
 */
size_t settings_keep_fixed(struct settings *fresh, const struct settings *old);

/*
 * Total number of configured users over every service (a service with
 * users = "all" counts none: its users are known once listed).
 */
size_t settings_user_count(const struct settings *s);

/* The user and password of the API's basic authentication (borrowed). */
const char *settings_api_user(const struct settings *s);
const char *settings_api_password(const struct settings *s);

/* The same for the requests of service svc: its own credentials, else twilio.*'s. */
const char *settings_service_user(const struct settings *s, const struct settings_service *svc);
const char *settings_service_password(const struct settings *s, const struct settings_service *svc);

/* Does a service say users = "all"? */
bool settings_discovers_users(const struct settings *s);

#endif
