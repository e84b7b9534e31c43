/*
 * mem.h - allocation wrappers and a capped growable buffer
 *
 * The x* allocators never return NULL: on out-of-memory they log and exit,
 * and the service manager restarts the daemon.
 */
#ifndef CHATSYNC_MEM_H
#define CHATSYNC_MEM_H

#include <stdbool.h>
#include <stddef.h>

#define WARN_UNUSED __attribute__((warn_unused_result))

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Returns a copy the caller owns; xstrdup(NULL) returns NULL. */
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string the caller owns. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A growable byte buffer with a hard cap, always NUL-terminated once it
 * holds anything.  Appending past the cap fails and leaves the buffer as it
 * was; the caller decides what "too big" means.
 */
struct buf {
	char *data;
	size_t len;
	size_t alloc;
	size_t cap;
};

void buf_init(struct buf *b, size_t cap);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
bool buf_append(struct buf *b, const void *data, size_t len) WARN_UNUSED;
bool buf_append_str(struct buf *b, const char *s) WARN_UNUSED;
/* Hands the contents over to the caller ("" when empty) and resets b. */
char *buf_take(struct buf *b);
/* Borrowed view of the contents, "" when empty. */
const char *buf_str(const struct buf *b);

#endif
