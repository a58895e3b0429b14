/*
 * types.c - ids and their hex forms, and the chunk hash.
 *
 * The chunk hash uses xxHash's x86 dispatcher (xxh_x86dispatch.h), which
 * picks the AVX2 or AVX-512 kernel at run time: Debian builds plain
 * XXH3_128bits for SSE2 (~17 GB/s here) while the dispatched entry point runs
 * at ~78 GB/s in cache. The canonical form is big-endian so that an id reads
 * the same on the wire, on disk and in hex.
 */
#include <errno.h>
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#define tg_xxh3_128 XXH3_128bits_dispatch
#else
#define tg_xxh3_128 XXH3_128bits
#endif

#include "tg_types.h"

void tg_id_to_hex(const void *id16, char out[TG_HEX_ID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *b = id16;

	for (unsigned i = 0; i < 16; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 0xf];
	}
	out[TG_HEX_ID_LEN] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tg_id_from_hex(const char *s, void *id16)
{
	uint8_t out[16];
	unsigned n = 0;

	if (!s)
		return -EINVAL;
	for (; *s; s++) {
		int v;

		if (*s == '-')
			continue;
		v = hexval(*s);
		if (v < 0 || n >= 32)
			return -EINVAL;
		if (n % 2 == 0)
			out[n / 2] = (uint8_t)(v << 4);
		else
			out[n / 2] |= (uint8_t)v;
		n++;
	}
	if (n != 32)
		return -EINVAL;
	memcpy(id16, out, 16);
	return 0;
}

void tg_chunk_hash(const void *buf, size_t len, struct tg_chunk_id *out)
{
	XXH128_hash_t h = tg_xxh3_128(buf, len);
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, h);
	memcpy(out->b, c.digest, sizeof(out->b));
}
