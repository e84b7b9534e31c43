/*
 * test_progress.c - the progress line's text
 */
#include "config.h"

#include "progress.h"
#include "sweep.h"

#include "tap.h"

#include <unistd.h>

int
main(void)
{
	struct sweep_progress sp = {.run_id = 7, .users_total = 10000};
	char line[256];

	progress_format(line, sizeof(line), &sp, 0);
	is_str(line, "sweep 7: 0 of 10000 users, 0 pages, 0 rows, 0 rows/s, ETA -",
	       "at the start: no rate, no estimate");
	sp.users_done = 2500;
	sp.pages = 2600;
	sp.rows = 50000;
	progress_format(line, sizeof(line), &sp, 20);
	is_str(line, "sweep 7: 2500 of 10000 users, 2600 pages, 50000 rows, 2500 rows/s, ETA 1m00s",
	       "a quarter done in 20 s: 60 s to go");
	sp.users_done = 10;
	progress_format(line, sizeof(line), &sp, 12);
	is_str(line, "sweep 7: 10 of 10000 users, 2600 pages, 50000 rows, 4167 rows/s, ETA 3h19m",
	       "hours are shown as hours and minutes");
	sp.users_done = 9999;
	progress_format(line, sizeof(line), &sp, 999.9);
	is_str(line, "sweep 7: 9999 of 10000 users, 2600 pages, 50000 rows, 50 rows/s, ETA 0s",
	       "almost done");
	sp.users_done = 10000;
	progress_format(line, sizeof(line), &sp, 1000);
	is_str(line, "sweep 7: 10000 of 10000 users, 2600 pages, 50000 rows, 50 rows/s, ETA 0s",
	       "done");
	progress_format(line, 16, &sp, 1000);
	is_str(line, "sweep 7: 10000 ", "cut to the buffer");
	ok(progress_new(-1) == NULL, "no progress line without a terminal");
	progress_show(NULL, &sp);
	progress_end(NULL);
	progress_free(NULL);
	ok(true, "a NULL progress line does nothing");
	return tap_done();
}
