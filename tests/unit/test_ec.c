/*
 * test_ec.c - erasure coding: every allowed K+M encodes and rebuilds any
 * loss of up to M shards bit-exact (data and parity alike), refuses M+1,
 * and computes decode tables once per loss pattern.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tg_ec.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static void fill_random(uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(rng() >> 32);
}

/* One encoded object: the shards, a pristine copy, and the input. */
struct coded {
	struct tg_ec *ec;
	unsigned n;
	size_t len, shard_len;
	uint8_t *data;
	uint8_t *buf;   /* n * shard_len, shards live here */
	uint8_t *orig;  /* copy of buf right after encode */
	uint8_t *shards[TG_EC_SHARDS_MAX];
};

static void coded_make(struct coded *c, struct tg_ec *ec, size_t len)
{
	unsigned i;

	c->ec = ec;
	c->n = tg_ec_k(ec) + tg_ec_m(ec);
	c->len = len;
	c->shard_len = tg_ec_shard_len(ec, len);
	c->data = malloc(len);
	c->buf = malloc(c->n * c->shard_len);
	c->orig = malloc(c->n * c->shard_len);
	assert_non_null(c->data);
	assert_non_null(c->buf);
	assert_non_null(c->orig);
	fill_random(c->data, len);
	/* Garbage in the shard buffers: encode must overwrite all of it,
	 * padding included. */
	memset(c->buf, 0xEE, c->n * c->shard_len);
	for (i = 0; i < c->n; i++)
		c->shards[i] = c->buf + i * c->shard_len;
	assert_int_equal(tg_ec_encode(ec, c->data, len, c->shards, c->shard_len), 0);
	memcpy(c->orig, c->buf, c->n * c->shard_len);
}

static void coded_free(struct coded *c)
{
	free(c->data);
	free(c->buf);
	free(c->orig);
}

/* Lose the shards in lost_mask (overwrite them with junk), rebuild, and
 * require every shard to equal what encode produced. */
static void lose_and_rebuild(struct coded *c, uint32_t lost_mask)
{
	uint8_t present[TG_EC_SHARDS_MAX];
	unsigned i;

	for (i = 0; i < c->n; i++) {
		present[i] = !(lost_mask & (1u << i));
		if (!present[i])
			memset(c->shards[i], (int)(0x5A ^ i), c->shard_len);
	}
	assert_int_equal(tg_ec_rebuild(c->ec, c->shards, c->shard_len, present), 0);
	assert_memory_equal(c->buf, c->orig, c->n * c->shard_len);
}

static uint32_t random_mask(unsigned n, unsigned lost)
{
	uint32_t mask = 0;

	while ((unsigned)__builtin_popcount(mask) < lost)
		mask |= 1u << (rng() % n);
	return mask;
}

static const size_t sizes[] = { 1, 1000, 64 * 1024 + 3, 1024 * 1024 };

static void test_shard_len_is_ceil_div_k_rounded_to_64(void **state)
{
	unsigned k, m = 1;
	size_t len;
	int err;

	(void)state;
	for (k = TG_EC_K_MIN; k <= TG_EC_K_MAX; k++) {
		struct tg_ec *ec = tg_ec_create(k, m, &err);

		assert_non_null(ec);
		for (len = 1; len < 5000; len += 37) {
			size_t sl = tg_ec_shard_len(ec, len);

			assert_int_equal(sl % 64, 0);
			assert_true(sl * k >= len);
			assert_true(sl < 64 || (sl - 64) * k < len);
		}
		tg_ec_destroy(ec);
	}
}

static void test_create_rejects_k_m_out_of_range(void **state)
{
	static const unsigned bad[][2] = { { 0, 1 }, { 1, 1 }, { 17, 1 }, { 8, 0 },
					   { 8, 5 }, { 2, 100 }, { 1000, 2 } };
	unsigned i;
	int err;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = 0;
		assert_null(tg_ec_create(bad[i][0], bad[i][1], &err));
		assert_int_equal(err, -EINVAL);
	}
}

static void test_encode_lays_data_out_contiguously_zero_padded(void **state)
{
	struct coded c;
	size_t i;
	int err;
	struct tg_ec *ec = tg_ec_create(5, 2, &err);

	(void)state;
	assert_non_null(ec);
	coded_make(&c, ec, 1000);
	for (i = 0; i < 5 * c.shard_len; i++) {
		uint8_t want = i < c.len ? c.data[i] : 0;

		assert_int_equal(c.buf[i], want);
	}
	coded_free(&c);
	tg_ec_destroy(ec);
}

static void test_encode_rejects_wrong_shard_len(void **state)
{
	uint8_t data[100], sb[4][128];
	uint8_t *shards[4] = { sb[0], sb[1], sb[2], sb[3] };
	int err;
	struct tg_ec *ec = tg_ec_create(2, 2, &err);

	(void)state;
	assert_non_null(ec);
	memset(data, 1, sizeof(data));
	assert_int_equal(tg_ec_encode(ec, data, sizeof(data), shards, 128), -EINVAL);
	assert_int_equal(tg_ec_encode(ec, data, 0, shards, 64), -EINVAL);
	assert_int_equal(tg_ec_encode(ec, data, sizeof(data), shards, 64), 0);
	tg_ec_destroy(ec);
}

/* The pipeline encodes with data shards pointing into the payload buffer. */
static void test_encode_in_place_matches_copying_encode(void **state)
{
	struct coded c;
	uint8_t *inplace, *shards[TG_EC_SHARDS_MAX];
	unsigned i;
	int err;
	struct tg_ec *ec = tg_ec_create(8, 3, &err);

	(void)state;
	assert_non_null(ec);
	coded_make(&c, ec, 100000);
	inplace = malloc(c.n * c.shard_len);
	assert_non_null(inplace);
	memset(inplace, 0xCC, c.n * c.shard_len);
	memcpy(inplace, c.data, c.len);
	for (i = 0; i < c.n; i++)
		shards[i] = inplace + i * c.shard_len;
	assert_int_equal(tg_ec_encode(ec, inplace, c.len, shards, c.shard_len), 0);
	assert_memory_equal(inplace, c.orig, c.n * c.shard_len);
	free(inplace);
	coded_free(&c);
	tg_ec_destroy(ec);
}

static void check_exhaustive(unsigned k, unsigned m)
{
	unsigned s, n = k + m;
	uint32_t mask;
	int err;
	struct tg_ec *ec = tg_ec_create(k, m, &err);

	assert_non_null(ec);
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct coded c;
		unsigned tried = 0;

		coded_make(&c, ec, sizes[s]);
		for (mask = 1; mask < (1u << n); mask++) {
			if ((unsigned)__builtin_popcount(mask) > m)
				continue;
			lose_and_rebuild(&c, mask);
			tried++;
		}
		/* sum_{i=1..m} C(n, i) patterns */
		assert_true(tried >= n);
		coded_free(&c);
	}
	tg_ec_destroy(ec);
}

static void test_4p2_rebuilds_every_loss_of_up_to_2(void **state)
{
	(void)state;
	check_exhaustive(4, 2);
}

static void test_8p3_rebuilds_every_loss_of_up_to_3(void **state)
{
	(void)state;
	check_exhaustive(8, 3);
}

static void test_every_k_m_rebuilds_random_losses_up_to_m(void **state)
{
	unsigned k, m, s, i, lost;

	(void)state;
	for (k = TG_EC_K_MIN; k <= TG_EC_K_MAX; k++) {
		for (m = TG_EC_M_MIN; m <= TG_EC_M_MAX; m++) {
			unsigned n = k + m;
			int err;
			struct tg_ec *ec = tg_ec_create(k, m, &err);

			assert_non_null(ec);
			assert_int_equal(tg_ec_k(ec), k);
			assert_int_equal(tg_ec_m(ec), m);
			for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
				struct coded c;

				coded_make(&c, ec, sizes[s]);
				/* The hard cases deterministically: all parity
				 * lost, the first M data shards lost, and the
				 * last data shard with all but one parity. */
				lose_and_rebuild(&c, ((1u << m) - 1) << k);
				lose_and_rebuild(&c, (1u << m) - 1);
				lose_and_rebuild(&c, (1u << (k - 1)) | (((1u << m) - 2) << k));
				for (lost = 1; lost <= m; lost++)
					for (i = 0; i < 3; i++)
						lose_and_rebuild(&c, random_mask(n, lost));
				coded_free(&c);
			}
			tg_ec_destroy(ec);
		}
	}
}

static void test_more_than_m_lost_is_eio_and_writes_nothing(void **state)
{
	unsigned k, m, i;

	(void)state;
	for (k = TG_EC_K_MIN; k <= TG_EC_K_MAX; k += 7) {
		for (m = TG_EC_M_MIN; m <= TG_EC_M_MAX; m++) {
			uint8_t present[TG_EC_SHARDS_MAX];
			struct coded c;
			uint32_t mask;
			int err;
			struct tg_ec *ec = tg_ec_create(k, m, &err);

			assert_non_null(ec);
			coded_make(&c, ec, 5000);
			mask = random_mask(k + m, m + 1);
			for (i = 0; i < c.n; i++) {
				present[i] = !(mask & (1u << i));
				if (!present[i])
					memset(c.shards[i], 0x77, c.shard_len);
			}
			assert_int_equal(tg_ec_rebuild(ec, c.shards, c.shard_len, present), -EIO);
			for (i = 0; i < c.n; i++) {
				if (present[i]) {
					assert_memory_equal(c.shards[i], c.orig + i * c.shard_len,
							    c.shard_len);
				} else {
					uint8_t junk[64];

					memset(junk, 0x77, sizeof(junk));
					assert_memory_equal(c.shards[i], junk, sizeof(junk));
				}
			}
			coded_free(&c);
			tg_ec_destroy(ec);
		}
	}
}

static void test_nothing_missing_is_a_no_op(void **state)
{
	uint8_t present[TG_EC_SHARDS_MAX];
	struct coded c;
	uint64_t hits, misses;
	int err;
	struct tg_ec *ec = tg_ec_create(6, 3, &err);

	(void)state;
	assert_non_null(ec);
	coded_make(&c, ec, 777);
	memset(present, 1, sizeof(present));
	assert_int_equal(tg_ec_rebuild(ec, c.shards, c.shard_len, present), 0);
	assert_memory_equal(c.buf, c.orig, c.n * c.shard_len);
	tg_ec_stats(ec, &hits, &misses);
	assert_int_equal(hits + misses, 0);
	coded_free(&c);
	tg_ec_destroy(ec);
}

static void test_decode_tables_computed_once_per_loss_pattern(void **state)
{
	struct coded c;
	uint64_t hits, misses;
	unsigned i;
	int err;
	struct tg_ec *ec = tg_ec_create(8, 3, &err);

	(void)state;
	assert_non_null(ec);
	coded_make(&c, ec, 64 * 1024);

	/* One pattern, many stripes: one table build. */
	for (i = 0; i < 10; i++)
		lose_and_rebuild(&c, (1u << 2) | (1u << 9));
	tg_ec_stats(ec, &hits, &misses);
	assert_int_equal(misses, 1);
	assert_int_equal(hits, 9);

	/* A second pattern is its own entry; the first stays cached. */
	lose_and_rebuild(&c, 1u << 0);
	lose_and_rebuild(&c, (1u << 2) | (1u << 9));
	lose_and_rebuild(&c, 1u << 0);
	tg_ec_stats(ec, &hits, &misses);
	assert_int_equal(misses, 2);
	assert_int_equal(hits, 11);

	/* Many more patterns than cache slots: entries get evicted and
	 * recomputed, and every rebuild is still exact (a stale table used
	 * for the wrong pattern would corrupt shards). */
	for (i = 0; i < 11; i++)
		lose_and_rebuild(&c, (1u << i) | (1u << ((i + 3) % 11)));
	for (i = 0; i < 11; i++)
		lose_and_rebuild(&c, (1u << i) | (1u << ((i + 3) % 11)));
	tg_ec_stats(ec, &hits, &misses);
	assert_true(misses > 2 + 11);
	coded_free(&c);
	tg_ec_destroy(ec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shard_len_is_ceil_div_k_rounded_to_64),
		cmocka_unit_test(test_create_rejects_k_m_out_of_range),
		cmocka_unit_test(test_encode_lays_data_out_contiguously_zero_padded),
		cmocka_unit_test(test_encode_rejects_wrong_shard_len),
		cmocka_unit_test(test_encode_in_place_matches_copying_encode),
		cmocka_unit_test(test_4p2_rebuilds_every_loss_of_up_to_2),
		cmocka_unit_test(test_8p3_rebuilds_every_loss_of_up_to_3),
		cmocka_unit_test(test_every_k_m_rebuilds_random_losses_up_to_m),
		cmocka_unit_test(test_more_than_m_lost_is_eio_and_writes_nothing),
		cmocka_unit_test(test_nothing_missing_is_a_no_op),
		cmocka_unit_test(test_decode_tables_computed_once_per_loss_pattern),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
