/*
 * default_service.h - the account's default conversation service
 *
 * A conversations service configured without sid is the account's default
 * conversation service: GET /v1/Configuration on the Conversations API
 * names it (default_chat_service_sid).  It is asked before each sweep, so
 * that a new default is followed; its users' conversations are listed at
 * /v1/Users/{U}/Conversations and stored under the SID it names.
 */
#ifndef CHATSYNC_DEFAULT_SERVICE_H
#define CHATSYNC_DEFAULT_SERVICE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

struct http;
struct settings;

/*
 * Sets the sid of each default service of s (settings_service.default_service)
 * to the one the API names, asking it with h (it runs its transfer to its
 * end: none is left behind).  False, with the reason in err, if the API could not be asked,
 * refused (*auth_refused: with 401, the credentials), or named no valid
 * Service SID, or named one that s also lists by its sid; the sid is then
 * as it was.  At most one service is the default (settings_load sees to it).
 */
/*
 * What default_service_resolve calls about once a second while it waits
 * (systemd's watchdog), and the flag that stops it.
 */
struct default_service_hooks {
	void (*tick)(void *arg);
	void *arg;
	const volatile sig_atomic_t *stop;
};

bool default_service_resolve(struct settings *s, struct http *h,
			     const struct default_service_hooks *hooks, bool *auth_refused,
			     char *err, size_t errsz) __attribute__((warn_unused_result));

#endif
