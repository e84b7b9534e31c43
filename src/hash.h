/*
 * hash.h - the non-cryptographic hashes: FNV-1a for tables and loop
 * detection, and the 128-bit digest that tells an unchanged listing
 */
#ifndef CHATSYNC_HASH_H
#define CHATSYNC_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The 64-bit FNV-1a hash of the NUL-terminated string s. */
uint64_t hash_str(const char *s);

/*
 * A 128-bit digest built up over several pieces: two FNV-1a lanes with
 * different bases, each finished with a 64-bit mixer.  Accidental equality
 * of two different inputs is a 2^-128 event; it is no defence against an
 * adversary, and need not be one (see page_batch_digest).
 */
struct hash_digest {
	uint64_t h[2];
};

void hash_digest_init(struct hash_digest *d);
void hash_digest_add(struct hash_digest *d, const void *data, size_t len);
/* Writes the digest as 32 lowercase hex digits and a NUL. */
void hash_digest_hex(const struct hash_digest *d, char out[33]);

#endif
