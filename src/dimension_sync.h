/*
 * dimension_sync.h - a service's own listings in a sweep, and who its users are
 *
 * Before the users' listings of a sweep, each service's dimension listings
 * (the service, its users, its channels: see dimension.h) are fetched and
 * stored a page at a time, one listing after the other, each resumable at
 * its committed cursor.  Then the service's users are resolved: the users
 * listing says who "all" are, and which User SID each identity is.
 */
#ifndef CHATSYNC_DIMENSION_SYNC_H
#define CHATSYNC_DIMENSION_SYNC_H

#include <stdbool.h>
#include <stddef.h>

struct sweep_state;

/*
 * Lists the dimensions of service service_index (unless sync.dimensions is
 * off), then resolves its users into *users (n_users of them, the caller's
 * to free, each string and the array).  A listing that fails is logged and
 * recorded, and the sweep goes on with what the tables hold.  False if the
 * sweep cannot go on now: a stop, a lost database or refused credentials
 * (see st).  tick(arg) is called at least every 200 ms.
 */
bool dimension_sync_service(struct sweep_state *st, size_t service_index, void (*tick)(void *arg),
			    void *arg, char ***users, size_t *n_users)
	__attribute__((warn_unused_result));

#endif
