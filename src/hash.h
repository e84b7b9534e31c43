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
 * A 128-bit digest built up over several pieces: the input is read as
 * little-endian 64-bit words, two at a time, into two lanes that each take
 * their word with a multiply and a rotation (a bijection of the lane, so two
 * inputs of one length that differ in one word always differ); the digest is
 * the two lanes crossed with each other and the length, each half finished
 * with a 64-bit mixer.
 * The pieces' boundaries do not count, only their bytes in order.
 * Accidental equality of two different inputs is a 2^-128 event; it is no
 * defence against an adversary, and need not be one (see
 * page_batch_digest).  The bytes are read a word at a time, not a byte: a
 * resync digests every listing it receives.
 */
struct hash_digest {
	uint64_t lane[2];
	uint64_t len;		/* bytes added */
	unsigned char part[16]; /* the bytes of an unfinished block */
};

void hash_digest_init(struct hash_digest *d);
void hash_digest_add(struct hash_digest *d, const void *data, size_t len);
/* Writes the digest as 32 lowercase hex digits and a NUL. */
void hash_digest_hex(const struct hash_digest *d, char out[33]);

#endif
