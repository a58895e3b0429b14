/*
 * test_cdc.c - content-defined chunking: bounds always hold, cuts depend only
 * on content (same bytes, same chunks), an insertion near the start of a file
 * changes only the chunks around it, and the average lands near 1 MiB.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tg_cdc.h"
#include "tg_types.h"

#define DATA_LEN (48u << 20)
#define MAXCH 256

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = next();
		memcpy(p + i, &v, n - i < 8 ? n - i : 8);
	}
}

/* Cut p into chunks, recording their ids; returns the count. */
static unsigned cut_all(const struct tg_cdc *c, const uint8_t *p, size_t n,
			struct tg_chunk_id *ids, uint32_t *lens)
{
	unsigned k = 0;

	for (size_t off = 0; off < n; k++) {
		size_t l = tg_cdc_cut(c, p + off, n - off);

		assert_true(l > 0 && k < MAXCH);
		tg_chunk_hash(p + off, l, &ids[k]);
		lens[k] = (uint32_t)l;
		off += l;
	}
	return k;
}

static void bad_parameters_are_refused(void **state)
{
	struct tg_cdc c;

	assert_int_equal(tg_cdc_init(&c, 0, 1024, 4096), -EINVAL);
	assert_int_equal(tg_cdc_init(&c, 2048, 1024, 4096), -EINVAL);
	assert_int_equal(tg_cdc_init(&c, 256, 1000, 4096), -EINVAL); /* not 2^n */
	assert_int_equal(tg_cdc_init(&c, 256, 1024, 1024), -EINVAL);
	assert_int_equal(tg_cdc_init(&c, TG_CDC_MIN, TG_CDC_AVG, TG_CDC_MAX * 2), -EINVAL);
	assert_int_equal(tg_cdc_init(&c, TG_CDC_MIN, TG_CDC_AVG, TG_CDC_MAX), 0);
}

static void chunks_respect_min_and_max_and_cover_the_data(void **state)
{
	struct tg_cdc c;
	uint8_t *p = malloc(DATA_LEN);
	struct tg_chunk_id ids[MAXCH];
	uint32_t lens[MAXCH];
	uint64_t sum = 0;
	unsigned n;

	assert_non_null(p);
	assert_int_equal(tg_cdc_init(&c, TG_CDC_MIN, TG_CDC_AVG, TG_CDC_MAX), 0);
	fill_random(p, DATA_LEN);
	n = cut_all(&c, p, DATA_LEN, ids, lens);
	for (unsigned i = 0; i < n; i++) {
		if (i + 1 < n)
			assert_true(lens[i] >= TG_CDC_MIN);
		assert_true(lens[i] <= TG_CDC_MAX);
		sum += lens[i];
	}
	assert_int_equal(sum, DATA_LEN);
	/* 48 MiB at ~1 MiB average (the minimum adds to it): 20..60 chunks */
	assert_in_range(n, 20, 60);

	/* all-zero data never matches a mask: every chunk is exactly max */
	memset(p, 0, DATA_LEN);
	n = cut_all(&c, p, 3 * TG_CDC_MAX + 5, ids, lens);
	assert_int_equal(n, 4);
	assert_int_equal(lens[0], TG_CDC_MAX);
	assert_int_equal(lens[3], 5);
	free(p);
}

static void short_input_is_one_chunk(void **state)
{
	struct tg_cdc c;
	uint8_t buf[1000] = {1};

	assert_int_equal(tg_cdc_init(&c, TG_CDC_MIN, TG_CDC_AVG, TG_CDC_MAX), 0);
	assert_int_equal(tg_cdc_cut(&c, buf, sizeof(buf)), sizeof(buf));
	assert_int_equal(tg_cdc_cut(&c, buf, 1), 1);
}

static unsigned shared(const struct tg_chunk_id *a, unsigned na,
		       const struct tg_chunk_id *b, unsigned nb)
{
	unsigned s = 0;

	for (unsigned i = 0; i < nb; i++)
		for (unsigned j = 0; j < na; j++)
			if (tg_id_eq(&b[i], &a[j])) {
				s++;
				break;
			}
	return s;
}

static void an_insertion_changes_only_nearby_chunks(void **state)
{
	struct tg_cdc c;
	uint8_t *a = malloc(DATA_LEN), *b = malloc(DATA_LEN + 100);
	struct tg_chunk_id ia[MAXCH], ib[MAXCH];
	uint32_t la[MAXCH], lb[MAXCH];
	unsigned na, nb, s;

	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(tg_cdc_init(&c, TG_CDC_MIN, TG_CDC_AVG, TG_CDC_MAX), 0);
	fill_random(a, DATA_LEN);
	/* insert 100 bytes 5 MiB into the data */
	memcpy(b, a, 5u << 20);
	fill_random(b + (5u << 20), 100);
	memcpy(b + (5u << 20) + 100, a + (5u << 20), DATA_LEN - (5u << 20));
	na = cut_all(&c, a, DATA_LEN, ia, la);
	nb = cut_all(&c, b, DATA_LEN + 100, ib, lb);
	s = shared(ia, na, ib, nb);
	/* at most the chunk around the edit and its neighbour change */
	assert_true(s + 2 >= na);
	/* and fixed-size cutting would have shared none after the edit: the
	 * test would fail if cuts were positional */
	assert_true(s >= na / 2);
	free(a);
	free(b);
}

static void same_bytes_cut_the_same_way(void **state)
{
	struct tg_cdc c1, c2;
	uint8_t *p = malloc(8u << 20);
	struct tg_chunk_id i1[MAXCH], i2[MAXCH];
	uint32_t l1[MAXCH], l2[MAXCH];
	unsigned n1, n2;

	assert_non_null(p);
	fill_random(p, 8u << 20);
	assert_int_equal(tg_cdc_init(&c1, TG_CDC_MIN, TG_CDC_AVG, TG_CDC_MAX), 0);
	assert_int_equal(tg_cdc_init(&c2, TG_CDC_MIN, TG_CDC_AVG, TG_CDC_MAX), 0);
	n1 = cut_all(&c1, p, 8u << 20, i1, l1);
	n2 = cut_all(&c2, p, 8u << 20, i2, l2);
	assert_int_equal(n1, n2);
	assert_memory_equal(l1, l2, n1 * sizeof(l1[0]));
	assert_memory_equal(i1, i2, n1 * sizeof(i1[0]));
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bad_parameters_are_refused),
		cmocka_unit_test(chunks_respect_min_and_max_and_cover_the_data),
		cmocka_unit_test(short_input_is_one_chunk),
		cmocka_unit_test(an_insertion_changes_only_nearby_chunks),
		cmocka_unit_test(same_bytes_cut_the_same_way),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
