/*
 * progress.h - a sweep's progress on one updating line of a terminal
 *
 * For chatsyncd --once run by a person: users done of total, pages, rows,
 * the rate and an estimate of the time left, redrawn in place.  It is not a
 * log line: it is shown only when stderr is a terminal, so it never reaches
 * a log file or the journal, and a log line written meanwhile clears it.
 */
#ifndef CHATSYNC_PROGRESS_H
#define CHATSYNC_PROGRESS_H

#include <stddef.h>

struct sweep_progress;

/* Formats the line for a sweep elapsed_s seconds old into out. */
void progress_format(char *out, size_t outsz, const struct sweep_progress *sp, double elapsed_s);

struct progress;

/* A progress line on fd, which the caller owns; NULL if fd is not a terminal. */
struct progress *progress_new(int fd);
void progress_free(struct progress *p);

/* Redraws the line, at most four times a second. */
void progress_show(struct progress *p, const struct sweep_progress *sp);

/* Clears the line, at the end of the sweep. */
void progress_end(struct progress *p);

#endif
