/*
 * test_hash.c - the listing digest: pieces, lengths, every byte counted
 */
#include "config.h"

#include "hash.h"

#include "tap.h"

#include <stdio.h>
#include <string.h>

static void
digest(const void *data, size_t len, char out[33])
{
	struct hash_digest d;

	hash_digest_init(&d);
	hash_digest_add(&d, data, len);
	hash_digest_hex(&d, out);
}

/* The digest of data added in pieces of piece bytes (the last one shorter). */
static void
digest_pieces(const unsigned char *data, size_t len, size_t piece, char out[33])
{
	struct hash_digest d;

	hash_digest_init(&d);
	for (size_t at = 0; at < len; at += piece)
		hash_digest_add(&d, data + at, len - at < piece ? len - at : piece);
	hash_digest_hex(&d, out);
}

static void
test_pinned(void)
{
	char out[33];

	/*
	 * Pinned: digests are stored on the cursors, so the algorithm must not
	 * drift.  The values were checked against a separate implementation of
	 * the algorithm hash.h describes.
	 */
	digest("", 0, out);
	is_str(out, "efd01f60ba99292625e69d68756e949e", "nothing: the known value");
	digest("chatsync", 8, out);
	is_str(out, "d70f17038665ff0b455ec846998a95f7", "a short input: the known value");
	digest("0123456789abcdef0123456789abcdef!", 33, out);
	is_str(out, "b4826368a9d51fc2ab50eecf67802eba", "two blocks and a byte: the known value");
}

static void
test_pieces(void)
{
	unsigned char data[200];
	char whole[33], pieces[33];
	bool same = true;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 37 + 11);
	digest(data, sizeof(data), whole);
	for (size_t piece = 1; piece <= 40; piece++) {
		digest_pieces(data, sizeof(data), piece, pieces);
		if (strcmp(whole, pieces) != 0) {
			same = false;
			printf("# pieces of %zu bytes: %s, whole: %s\n", piece, pieces, whole);
		}
	}
	ok(same, "pieces of 1 to 40 bytes give the digest of the whole");
}

static void
test_every_byte_counts(void)
{
	unsigned char data[67], changed[67];
	char base[33], out[33];
	unsigned differ = 0, tried = 0;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i + 1);
	digest(data, sizeof(data), base);
	for (size_t i = 0; i < sizeof(data); i++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			memcpy(changed, data, sizeof(data));
			changed[i] ^= (unsigned char)(1u << bit);
			digest(changed, sizeof(changed), out);
			tried++;
			differ += strcmp(out, base) != 0;
		}
	}
	is_int(differ, tried, "each of the 536 single-bit changes changes the digest");

	/* The zero fill of a last block is not the input's zeros. */
	digest("a", 1, base);
	digest("a\0", 2, out);
	ok(strcmp(base, out) != 0, "a trailing NUL byte changes the digest");
	digest("0123456789abcdef", 16, base);
	digest("0123456789abcdef\0", 17, out);
	ok(strcmp(base, out) != 0, "so does one after a whole block");

	digest("ab", 2, base);
	digest("ba", 2, out);
	ok(strcmp(base, out) != 0, "the order of bytes counts");
}

int
main(void)
{
	test_pinned();
	test_pieces();
	test_every_byte_counts();
	return tap_done();
}
