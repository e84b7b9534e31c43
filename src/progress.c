/*
 * progress.c - a sweep's progress on one updating line of a terminal
 */
#include "config.h"

#include "progress.h"

#include "clock.h"
#include "log.h"
#include "mem.h"
#include "sweep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REDRAW_MS 250

struct progress {
	int fd;
	struct timespec started;
	double last_ms; /* of the last redraw; 0 before the first */
};

/* A duration for a person: "45s", "12m05s", "3h20m". */
static void
duration_text(double seconds, char *out, size_t outsz)
{
	long s = (long)(seconds + 0.5);

	if (s < 60)
		snprintf(out, outsz, "%lds", s);
	else if (s < 3600)
		snprintf(out, outsz, "%ldm%02lds", s / 60, s % 60);
	else
		snprintf(out, outsz, "%ldh%02ldm", s / 3600, s % 3600 / 60);
}

void
progress_format(char *out, size_t outsz, const struct sweep_progress *sp, double elapsed_s)
{
	double rate = elapsed_s > 0 ? (double)sp->rows / elapsed_s : 0;
	char eta[32] = "-";

	/* Users finish at a steadier pace than rows arrive: the estimate follows users. */
	if (sp->users_done > 0 && sp->users_done < sp->users_total && elapsed_s > 0)
		duration_text(elapsed_s / (double)sp->users_done *
				      (double)(sp->users_total - sp->users_done),
			      eta, sizeof(eta));
	else if (sp->users_done >= sp->users_total)
		snprintf(eta, sizeof(eta), "0s");
	snprintf(out, outsz,
		 "sweep %lld: %zu of %zu users, %lu pages, %lu rows, %.0f rows/s, ETA %s",
		 (long long)sp->run_id, sp->users_done, sp->users_total, sp->pages, sp->rows, rate,
		 eta);
}

struct progress *
progress_new(int fd)
{
	struct progress *p;

	if (!isatty(fd))
		return NULL;
	p = xcalloc(1, sizeof(*p));
	p->fd = fd;
	p->started = clock_now();
	return p;
}

void
progress_free(struct progress *p)
{
	free(p);
}

/* Writes all of s; a terminal that cannot take it only loses the progress line. */
static void
put(const struct progress *p, const char *s)
{
	size_t len = strlen(s);

	while (len > 0) {
		ssize_t n = write(p->fd, s, len);

		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

void
progress_show(struct progress *p, const struct sweep_progress *sp)
{
	char line[256], out[300];
	double now = clock_now_ms();

	if (p == NULL || (p->last_ms > 0 && now - p->last_ms < REDRAW_MS))
		return;
	p->last_ms = now;
	progress_format(line, sizeof(line), sp, clock_seconds_since(&p->started));
	/* Back to the start of the line, the text, then erase what an older, longer one left. */
	snprintf(out, sizeof(out), "\r%s\033[K", line);
	put(p, out);
	log_set_status_line(true);
}

void
progress_end(struct progress *p)
{
	if (p == NULL)
		return;
	put(p, "\r\033[K");
	log_set_status_line(false);
}
