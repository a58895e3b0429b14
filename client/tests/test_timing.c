/*
 * test_timing.c - the client's pure arithmetic: the RTO estimator follows
 * RFC 6298 with protocol.md 5.1's constants (first sample, smoothing, clamp,
 * doubling with a cap), the credit window admits a chunk only when both the
 * chunk count and the byte count fit, and the id map keeps every id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tgc.h"

static void rto_starts_at_300ms(void **state)
{
	struct tgc_rto r;

	tgc_rto_init(&r);
	assert_false(r.have);
	assert_int_equal(r.rto_us, 300000);
}

static void first_sample_sets_srtt_and_half_rttvar(void **state)
{
	struct tgc_rto r;

	tgc_rto_init(&r);
	tgc_rto_sample(&r, 200000);
	assert_int_equal(r.srtt_us, 200000);
	assert_int_equal(r.rttvar_us, 100000);
	assert_int_equal(r.rto_us, 200000 + 4 * 100000);
}

static void later_samples_smooth_with_one_eighth_and_one_quarter(void **state)
{
	struct tgc_rto r;

	tgc_rto_init(&r);
	tgc_rto_sample(&r, 100000);
	tgc_rto_sample(&r, 200000);
	/* RTTVAR = 3/4 * 50000 + 1/4 * |100000 - 200000|, with the old SRTT */
	assert_int_equal(r.rttvar_us, 62500);
	/* SRTT = 7/8 * 100000 + 1/8 * 200000 */
	assert_int_equal(r.srtt_us, 112500);
	assert_int_equal(r.rto_us, 112500 + 4 * 62500);
}

static void rto_is_clamped_to_100ms_and_5s(void **state)
{
	struct tgc_rto r;

	tgc_rto_init(&r);
	tgc_rto_sample(&r, 1000);
	assert_int_equal(r.rto_us, 100000);
	tgc_rto_init(&r);
	tgc_rto_sample(&r, 4000000);
	assert_int_equal(r.rto_us, 5000000);
}

static void backoff_doubles_up_to_5s(void **state)
{
	assert_int_equal(tgc_rto_backoff(300000), 600000);
	assert_int_equal(tgc_rto_backoff(2000000), 4000000);
	assert_int_equal(tgc_rto_backoff(4000000), 5000000);
	assert_int_equal(tgc_rto_backoff(5000000), 5000000);
}

static void window_needs_both_a_credit_and_the_bytes(void **state)
{
	struct tgc_window w;

	tgc_win_init(&w, 2, 1000);
	assert_true(tgc_win_can_send(&w, 1000));
	assert_false(tgc_win_can_send(&w, 1001));
	tgc_win_add(&w, 600);
	assert_false(tgc_win_can_send(&w, 401));  /* bytes would exceed */
	assert_true(tgc_win_can_send(&w, 400));
	tgc_win_add(&w, 400);
	assert_false(tgc_win_can_send(&w, 1));    /* no chunk credit left */
	tgc_win_remove(&w, 600);
	assert_int_equal(w.chunks, 1);
	assert_int_equal(w.bytes, 400);
	assert_true(tgc_win_can_send(&w, 600));
	assert_false(tgc_win_can_send(&w, 601));
}

static void window_of_zero_credits_pauses(void **state)
{
	struct tgc_window w;

	tgc_win_init(&w, 8, 1 << 20);
	tgc_win_update(&w, 0, 1 << 20);
	assert_false(tgc_win_can_send(&w, 1));
	tgc_win_update(&w, 1, 1 << 20);
	assert_true(tgc_win_can_send(&w, 1 << 20));
	/* a shrunk window stops new chunks while old ones are in flight */
	tgc_win_add(&w, 1 << 19);
	tgc_win_update(&w, 4, 1 << 19);
	assert_false(tgc_win_can_send(&w, 1));
}

static void idmap_keeps_every_id_through_growth(void **state)
{
	struct tgc_idmap m;
	uint8_t id[TG_ID_LEN];

	assert_int_equal(tgc_idmap_init(&m, 4), 0);
	for (uint32_t i = 0; i < 5000; i++) {
		struct tg_chunk_id h;

		tg_chunk_hash(&i, sizeof(i), &h);
		assert_int_equal(tgc_idmap_put(&m, h.b, i), i);
	}
	for (uint32_t i = 0; i < 5000; i++) {
		struct tg_chunk_id h;

		tg_chunk_hash(&i, sizeof(i), &h);
		assert_int_equal(tgc_idmap_get(&m, h.b), i);
		/* a second put keeps the first value */
		assert_int_equal(tgc_idmap_put(&m, h.b, 99999), i);
	}
	memset(id, 0xee, sizeof(id));
	assert_int_equal(tgc_idmap_get(&m, id), UINT32_MAX);
	assert_int_equal(m.n, 5000);
	tgc_idmap_free(&m);
}

static void max_frag_follows_the_mtu_table(void **state)
{
	assert_int_equal(tgc_max_frag(1500), 1408);
	assert_int_equal(tgc_max_frag(9000), 8896);
	assert_int_equal(tgc_max_frag(500), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rto_starts_at_300ms),
		cmocka_unit_test(first_sample_sets_srtt_and_half_rttvar),
		cmocka_unit_test(later_samples_smooth_with_one_eighth_and_one_quarter),
		cmocka_unit_test(rto_is_clamped_to_100ms_and_5s),
		cmocka_unit_test(backoff_doubles_up_to_5s),
		cmocka_unit_test(window_needs_both_a_credit_and_the_bytes),
		cmocka_unit_test(window_of_zero_credits_pauses),
		cmocka_unit_test(idmap_keeps_every_id_through_growth),
		cmocka_unit_test(max_frag_follows_the_mtu_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
