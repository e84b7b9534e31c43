/*
 * hash.c - FNV-1a and the 128-bit listing digest
 */
#include "config.h"

#include "hash.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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

/* Odd multipliers of the two lanes (any odd number makes the step a bijection). */
#define LANE0_MUL 0x9e3779b97f4a7c15ull
#define LANE1_MUL 0xc2b2ae3d27d4eb4full

static uint64_t
rotl64(uint64_t x, unsigned r)
{
	return (x << r) | (x >> (64 - r));
}

/* The eight bytes at p as a little-endian word, whatever the machine's order. */
static uint64_t
load_le64(const unsigned char *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
	       (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
	       (uint64_t)p[7] << 56;
}

static void
absorb_block(struct hash_digest *d, const unsigned char *p)
{
	d->lane[0] = rotl64((d->lane[0] ^ load_le64(p)) * LANE0_MUL, 31);
	d->lane[1] = rotl64((d->lane[1] ^ load_le64(p + 8)) * LANE1_MUL, 29);
}

void
hash_digest_init(struct hash_digest *d)
{
	d->lane[0] = FNV_BASIS;
	d->lane[1] = 0x84222325cbf29ce4ull;
	d->len = 0;
}

void
hash_digest_add(struct hash_digest *d, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t used = (size_t)(d->len % sizeof(d->part));

	d->len += len;
	if (used > 0) {
		size_t take = sizeof(d->part) - used;

		if (take > len)
			take = len;
		memcpy(d->part + used, p, take);
		p += take;
		len -= take;
		if (used + take < sizeof(d->part))
			return;
		absorb_block(d, d->part);
	}
	for (; len >= sizeof(d->part); p += sizeof(d->part), len -= sizeof(d->part))
		absorb_block(d, p);
	if (len > 0)
		memcpy(d->part, p, len);
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
	struct hash_digest last = *d;
	size_t used = (size_t)(d->len % sizeof(d->part));
	uint64_t a, b;

	/* The unfinished block, zero-filled; the length tells its zeros from the input's. */
	if (used > 0) {
		memset(last.part + used, 0, sizeof(last.part) - used);
		absorb_block(&last, last.part);
	}
	/* (lane 0, lane 1) to (a, b) is a bijection: a gives lane 0, then b lane 1. */
	a = last.lane[0] ^ last.len;
	b = last.lane[1] ^ rotl64(last.lane[0], 41);
	snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, mix64(a), mix64(b));
}
