/*
 * status.h - chatsyncd --status: how fresh each configured user is
 */
#ifndef CHATSYNC_STATUS_H
#define CHATSYNC_STATUS_H

#include <stdio.h>

struct db;
struct settings;

/*
 * Prints one line per configured user (last complete listing, its age, the
 * page a listing in progress has reached, the last error) and the last few
 * sweeps.  Returns 0 if every user completed a listing within twice
 * sync.interval, 1 if not, 2 if the database could not be read.
 */
int status_print(struct db *db, const struct settings *s, FILE *out);

#endif
