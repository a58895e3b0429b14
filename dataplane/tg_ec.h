/*
 * tg_ec.h - Reed-Solomon erasure coding over ISA-L (erasure_code.h).
 *
 * A coded object is K data shards and M parity shards of equal length
 * (shard_len, a multiple of 64 so ISA-L's vector kernels see whole lines).
 * Data is laid out contiguously across data shards, zero-padded at the end.
 * Decode tables are computed once per loss pattern and cached (gf_invert_matrix
 * + ec_init_tables cost ~5 us, more than rebuilding a small stripe).
 */
#ifndef TG_EC_H
#define TG_EC_H

#include <stddef.h>
#include <stdint.h>

#define TG_EC_K_MIN 2
#define TG_EC_K_MAX 16
#define TG_EC_M_MIN 1
#define TG_EC_M_MAX 4
#define TG_EC_SHARDS_MAX (TG_EC_K_MAX + TG_EC_M_MAX)

struct tg_ec;

/* NULL and *err = -EINVAL for K or M out of range, -ENOMEM. Not thread-safe:
 * one per worker (it caches decode tables). */
struct tg_ec *tg_ec_create(unsigned k, unsigned m, int *err);
void tg_ec_destroy(struct tg_ec *ec);
unsigned tg_ec_k(const struct tg_ec *ec);
unsigned tg_ec_m(const struct tg_ec *ec);

/* Bytes per shard for len bytes of data: ceil(len / K) rounded up to 64. */
size_t tg_ec_shard_len(const struct tg_ec *ec, size_t len);

/*
 * Encode: copies data into shards[0..K-1] (zero-padding the tail) and
 * computes parity into shards[K..K+M-1]. Each shards[i] has shard_len bytes,
 * shard_len == tg_ec_shard_len(ec, len). Returns 0 or -EINVAL.
 */
int tg_ec_encode(struct tg_ec *ec, const uint8_t *data, size_t len,
		 uint8_t *const *shards, size_t shard_len);

/*
 * Rebuild missing shards in place. present[i] is nonzero for each shard whose
 * bytes are good; the others are overwritten with reconstructed bytes.
 * Returns 0, or -EIO when more than M shards are missing (nothing written).
 */
int tg_ec_rebuild(struct tg_ec *ec, uint8_t *const *shards, size_t shard_len,
		  const uint8_t *present);

/* Decode-table cache counters since create (for tests and telemetry). */
void tg_ec_stats(const struct tg_ec *ec, uint64_t *hits, uint64_t *misses);

#endif /* TG_EC_H */
