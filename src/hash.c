/*
 * hash.c - FNV-1a and the 128-bit listing digest
 */
#include "config.h"

#include "hash.h"

#include <inttypes.h>
#include <stdio.h>

#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

uint64_t
hash_str(const char *s)
{
	uint64_t h = FNV_BASIS;

	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		h = (h ^ *p) * FNV_PRIME;
	return h;
}

void
hash_digest_init(struct hash_digest *d)
{
	d->h[0] = FNV_BASIS;
	d->h[1] = 0x84222325cbf29ce4ull;
}

void
hash_digest_add(struct hash_digest *d, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		d->h[0] = (d->h[0] ^ p[i]) * FNV_PRIME;
		d->h[1] = (d->h[1] ^ p[i]) * FNV_PRIME + 1;
	}
}

/* The 64-bit finaliser of MurmurHash3: every input bit reaches every output bit. */
static uint64_t
mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

void
hash_digest_hex(const struct hash_digest *d, char out[33])
{
	snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, mix64(d->h[0]), mix64(d->h[1]));
}
