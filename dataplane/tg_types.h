/*
 * tg_types.h - small types every dataplane module shares: 128-bit ids
 * (chunk ids, organization GUIDs, device ids) and their hex forms.
 *
 * Functions in dataplane/ return 0 or a positive count on success and
 * -errno on failure (the DPDK convention); constructors return NULL and
 * report the reason through an int *err out-parameter.
 */
#ifndef TG_TYPES_H
#define TG_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TG_HEX_ID_LEN 32 /* hex digits of a 16-byte id, without NUL */

/* An organization's GUID: the tenant boundary for dedup, storage and quota. */
struct tg_org_id {
	uint8_t b[16];
};

/* A chunk id: XXH3-128 of the chunk's bytes, canonical (big-endian) form. */
struct tg_chunk_id {
	uint8_t b[16];
};

static inline bool tg_id_eq(const void *a, const void *b)
{
	return memcmp(a, b, 16) == 0;
}

/* Write 32 lowercase hex digits and a NUL into out[33]. */
void tg_id_to_hex(const void *id16, char out[TG_HEX_ID_LEN + 1]);
/* Parse exactly 32 hex digits (dashes of a GUID form are accepted and
 * skipped); returns 0 or -EINVAL. */
int tg_id_from_hex(const char *s, void *id16);

/* XXH3-128 of buf, in the canonical byte order used on the wire and disk.
 * Uses the run-time dispatched entry point (AVX2/AVX-512 where present). */
void tg_chunk_hash(const void *buf, size_t len, struct tg_chunk_id *out);

#endif /* TG_TYPES_H */
