/*
 * ec.c - Reed-Solomon erasure coding of one object into K data + M parity
 * shards, and rebuild of up to M lost shards, over ISA-L.
 *
 * The generator is ISA-L's Cauchy matrix (identity on top, 1/(i ^ j) below):
 * every K x K sub-matrix of a Cauchy-extended identity is invertible, so any
 * K surviving shards rebuild the rest for every K <= 16, M <= 4 we allow.
 * (gf_gen_rs_matrix, the Vandermonde form, does not promise that.)
 *
 * Encode tables are expanded once at create. A rebuild needs the inverse of
 * the survivors' rows, expanded into tables: ~5 us, far more than rebuilding
 * a small stripe, so the result is cached per loss pattern (keyed by the
 * present-bitmask) in a tiny per-instance cache with clock eviction. An
 * instance is therefore per worker and not thread-safe.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "tg_ec.h"

#define TG_EC_ALIGN 64
#define TG_EC_DCACHE 8

/* One cached loss pattern: which shards feed the rebuild, which it writes,
 * and the expanded GF tables that map the one to the other. */
struct tg_ec_dtab {
	uint32_t present;  /* key; 0 = empty slot (never a valid pattern) */
	uint8_t used;      /* clock bit */
	uint8_t nmiss;
	uint8_t src[TG_EC_K_MAX];
	uint8_t miss[TG_EC_M_MAX];
	uint8_t tables[32 * TG_EC_K_MAX * TG_EC_M_MAX];
};

struct tg_ec {
	unsigned k, m;
	unsigned hand;     /* clock hand for eviction */
	uint64_t hits, misses;
	uint8_t gen[TG_EC_SHARDS_MAX * TG_EC_K_MAX];   /* (K+M) x K */
	uint8_t enc_tables[32 * TG_EC_K_MAX * TG_EC_M_MAX];
	struct tg_ec_dtab dcache[TG_EC_DCACHE];
};

struct tg_ec *tg_ec_create(unsigned k, unsigned m, int *err)
{
	struct tg_ec *ec;

	if (k < TG_EC_K_MIN || k > TG_EC_K_MAX || m < TG_EC_M_MIN || m > TG_EC_M_MAX) {
		*err = -EINVAL;
		return NULL;
	}
	ec = calloc(1, sizeof(*ec));
	if (!ec) {
		*err = -ENOMEM;
		return NULL;
	}
	ec->k = k;
	ec->m = m;
	gf_gen_cauchy1_matrix(ec->gen, (int)(k + m), (int)k);
	/* Only the parity rows go into the tables: data shards are copies. */
	ec_init_tables((int)k, (int)m, &ec->gen[k * k], ec->enc_tables);
	*err = 0;
	return ec;
}

void tg_ec_destroy(struct tg_ec *ec)
{
	free(ec);
}

unsigned tg_ec_k(const struct tg_ec *ec)
{
	return ec->k;
}

unsigned tg_ec_m(const struct tg_ec *ec)
{
	return ec->m;
}

void tg_ec_stats(const struct tg_ec *ec, uint64_t *hits, uint64_t *misses)
{
	*hits = ec->hits;
	*misses = ec->misses;
}

size_t tg_ec_shard_len(const struct tg_ec *ec, size_t len)
{
	size_t per = len / ec->k + (len % ec->k != 0);

	/* 0 on overflow: encode rejects it like any other bad length. */
	if (per > SIZE_MAX - (TG_EC_ALIGN - 1))
		return 0;
	return (per + TG_EC_ALIGN - 1) & ~(size_t)(TG_EC_ALIGN - 1);
}

int tg_ec_encode(struct tg_ec *ec, const uint8_t *data, size_t len,
		 uint8_t *const *shards, size_t shard_len)
{
	size_t off = 0;
	unsigned i;

	if (!data || !shards || len == 0 || shard_len == 0 || shard_len > INT_MAX ||
	    shard_len != tg_ec_shard_len(ec, len))
		return -EINVAL;
	for (i = 0; i < ec->k + ec->m; i++)
		if (!shards[i])
			return -EINVAL;

	/* Shards may alias data in place (the pipeline's zero-copy path):
	 * then shards[i] == data + i * shard_len and the copy is skipped. */
	for (i = 0; i < ec->k; i++) {
		size_t n = off < len ? len - off : 0;

		if (n > shard_len)
			n = shard_len;
		if (n && shards[i] != data + off)
			memmove(shards[i], data + off, n);
		if (n < shard_len)
			memset(shards[i] + n, 0, shard_len - n);
		off += n;
	}
	ec_encode_data((int)shard_len, (int)ec->k, (int)ec->m, ec->enc_tables,
		       (unsigned char **)shards, (unsigned char **)&shards[ec->k]);
	return 0;
}

/* Build the decode tables for one loss pattern into t. */
static int tg_ec_dtab_build(const struct tg_ec *ec, uint32_t present, struct tg_ec_dtab *t)
{
	uint8_t b[TG_EC_K_MAX * TG_EC_K_MAX];
	uint8_t inv[TG_EC_K_MAX * TG_EC_K_MAX];
	uint8_t dec[TG_EC_M_MAX * TG_EC_K_MAX];
	unsigned k = ec->k, n = ec->k + ec->m;
	unsigned i, j, l, ns = 0, nm = 0;

	for (i = 0; i < n; i++) {
		if (present & (1u << i)) {
			if (ns < k)
				t->src[ns++] = (uint8_t)i;
		} else {
			t->miss[nm++] = (uint8_t)i;
		}
	}
	for (i = 0; i < k; i++)
		memcpy(&b[i * k], &ec->gen[t->src[i] * k], k);
	if (gf_invert_matrix(b, inv, (int)k) != 0)
		return -EIO; /* cannot happen with a Cauchy generator */

	/* inv maps the K survivors back to the data. A lost data shard is its
	 * row of inv; a lost parity shard is its generator row times inv. */
	for (l = 0; l < nm; l++) {
		unsigned r = t->miss[l];

		if (r < k) {
			memcpy(&dec[l * k], &inv[r * k], k);
			continue;
		}
		for (i = 0; i < k; i++) {
			uint8_t s = 0;

			for (j = 0; j < k; j++)
				s ^= gf_mul(ec->gen[r * k + j], inv[j * k + i]);
			dec[l * k + i] = s;
		}
	}
	ec_init_tables((int)k, (int)nm, dec, t->tables);
	t->nmiss = (uint8_t)nm;
	t->present = present;
	return 0;
}

/* The cached tables for this pattern, computing them on a miss. */
static struct tg_ec_dtab *tg_ec_dtab_get(struct tg_ec *ec, uint32_t present)
{
	struct tg_ec_dtab *t;
	unsigned i;

	for (i = 0; i < TG_EC_DCACHE; i++) {
		t = &ec->dcache[i];
		if (t->present == present) {
			t->used = 1;
			ec->hits++;
			return t;
		}
	}
	ec->misses++;
	/* Clock: skip recently used slots once, take the first cold one. */
	for (;;) {
		t = &ec->dcache[ec->hand];
		ec->hand = (ec->hand + 1) % TG_EC_DCACHE;
		if (!t->used)
			break;
		t->used = 0;
	}
	t->present = 0;
	if (tg_ec_dtab_build(ec, present, t) != 0)
		return NULL;
	t->used = 1;
	return t;
}

int tg_ec_rebuild(struct tg_ec *ec, uint8_t *const *shards, size_t shard_len,
		  const uint8_t *present)
{
	unsigned char *src[TG_EC_K_MAX], *dst[TG_EC_M_MAX];
	unsigned n = ec->k + ec->m, i, nmiss = 0;
	struct tg_ec_dtab *t;
	uint32_t mask = 0;

	if (!shards || !present || shard_len == 0 || shard_len > INT_MAX)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (!shards[i])
			return -EINVAL;
		if (present[i])
			mask |= 1u << i;
		else
			nmiss++;
	}
	if (nmiss == 0)
		return 0;
	if (nmiss > ec->m)
		return -EIO;

	t = tg_ec_dtab_get(ec, mask);
	if (!t)
		return -EIO;
	for (i = 0; i < ec->k; i++)
		src[i] = shards[t->src[i]];
	for (i = 0; i < t->nmiss; i++)
		dst[i] = shards[t->miss[i]];
	ec_encode_data((int)shard_len, (int)ec->k, (int)t->nmiss, t->tables, src, dst);
	return 0;
}
