/*
 * test_dedup.c - dedup is per organization: a chunk is stored once per
 * organization and never once for all of them, the in-memory index never
 * answers across organizations, a restarted gateway (fresh index) still
 * finds what is durable, and a full index forgets instead of failing.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_chunk.h"
#include "tg_store.h"

#define MAX_CHUNK (256u * 1024)
#define NDIRS 6 /* ec:4+2 */
#define CHUNK_LEN 100000

static const struct tg_org_id org_a = { { 0xa0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 } };
static const struct tg_org_id org_b = { { 0xb0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 } };

static uint64_t rng_state = 0xd1b54a32d192ed03ull;

static void fill_random(void *buf, size_t n)
{
	uint8_t *p = buf;
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t x = rng_state;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		rng_state = x;
		p[i] = (uint8_t)(x >> 24);
	}
}

/* Everything one test needs: NDIRS shard dirs, a store, a pipe, an index. */
struct fix {
	char root[64];
	char path[NDIRS][96];
	const char *ptr[NDIRS];
	struct tg_store *st;
	struct tg_pipe *p;
	struct tg_dedup *dd;
	struct tg_policy pol;
	uint8_t data[CHUNK_LEN + 64 * TG_EC_K_MAX];
	struct tg_chunk_id id;
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	unsigned i;
	int err;

	assert_non_null(f);
	strcpy(f->root, "/tmp/tg-dedup-XXXXXX");
	assert_non_null(mkdtemp(f->root));
	for (i = 0; i < NDIRS; i++) {
		snprintf(f->path[i], sizeof(f->path[i]), "%s/d%u", f->root, i);
		assert_int_equal(mkdir(f->path[i], 0700), 0);
		f->ptr[i] = f->path[i];
	}
	f->st = tg_store_dir_open(f->ptr, NDIRS, &err);
	assert_non_null(f->st);
	f->p = tg_pipe_create(MAX_CHUNK, &err);
	assert_non_null(f->p);
	f->dd = tg_dedup_create(1024, &err);
	assert_non_null(f->dd);
	assert_int_equal(tg_policy_parse("ec:4+2", &f->pol), 0);
	fill_random(f->data, CHUNK_LEN);
	tg_chunk_hash(f->data, CHUNK_LEN, &f->id);
	*state = f;
	return 0;
}

static int rm_one(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(p);
}

static int teardown(void **state)
{
	struct fix *f = *state;

	tg_dedup_destroy(f->dd);
	tg_pipe_destroy(f->p);
	tg_store_close(f->st);
	nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static unsigned nfiles;

static int count_one(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)p;
	(void)sb;
	(void)ftw;
	if (type == FTW_F)
		nfiles++;
	return 0;
}

/* Regular files under <dir>/<org hex>/ over all shard directories. */
static unsigned org_files(const struct fix *f, const struct tg_org_id *org)
{
	char hex[TG_HEX_ID_LEN + 1], p[160];
	unsigned i;

	tg_id_to_hex(org, hex);
	nfiles = 0;
	for (i = 0; i < NDIRS; i++) {
		snprintf(p, sizeof(p), "%s/%s", f->path[i], hex);
		nftw(p, count_one, 16, FTW_PHYS);
	}
	return nfiles;
}

static int ingest(struct fix *f, struct tg_dedup *dd, const struct tg_org_id *org,
		  struct tg_ingest_res *res)
{
	return tg_pipe_ingest(f->p, f->st, dd, org, &f->pol, &f->id, f->data, CHUNK_LEN,
			      sizeof(f->data), res);
}

static void test_same_chunk_twice_in_one_org_is_dup_and_stored_once(void **state)
{
	struct fix *f = *state;
	struct tg_ingest_res res;

	assert_int_equal(ingest(f, f->dd, &org_a, &res), 0);
	assert_int_equal(res.status, TG_INGEST_STORED);
	assert_int_equal(org_files(f, &org_a), 6);
	assert_int_equal(ingest(f, f->dd, &org_a, &res), 0);
	assert_int_equal(res.status, TG_INGEST_DUP);
	assert_int_equal(res.stored_bytes, 0);
	assert_int_equal(org_files(f, &org_a), 6);
	/* Without the index too (store fallback only). */
	assert_int_equal(ingest(f, NULL, &org_a, &res), 0);
	assert_int_equal(res.status, TG_INGEST_DUP);
	assert_int_equal(org_files(f, &org_a), 6);
}

static void test_same_chunk_in_two_orgs_is_stored_twice(void **state)
{
	struct fix *f = *state;
	struct tg_ingest_res res;
	uint8_t out[CHUNK_LEN];
	size_t len;

	/* One index for both: it must not turn B's chunk into A's dup. */
	assert_int_equal(ingest(f, f->dd, &org_a, &res), 0);
	assert_int_equal(res.status, TG_INGEST_STORED);
	assert_int_equal(ingest(f, f->dd, &org_b, &res), 0);
	assert_int_equal(res.status, TG_INGEST_STORED);
	assert_int_equal(org_files(f, &org_a), 6);
	assert_int_equal(org_files(f, &org_b), 6);

	assert_int_equal(tg_pipe_read(f->p, f->st, &org_a, &f->id, out, sizeof(out), &len, NULL), 0);
	assert_int_equal(len, CHUNK_LEN);
	assert_memory_equal(out, f->data, CHUNK_LEN);
	assert_int_equal(tg_pipe_read(f->p, f->st, &org_b, &f->id, out, sizeof(out), &len, NULL), 0);
	assert_memory_equal(out, f->data, CHUNK_LEN);
}

static void test_org_cannot_read_chunk_only_another_org_has(void **state)
{
	struct fix *f = *state;
	struct tg_ingest_res res;
	uint8_t out[CHUNK_LEN];
	size_t len = 12345;

	assert_int_equal(ingest(f, f->dd, &org_b, &res), 0);
	assert_int_equal(res.status, TG_INGEST_STORED);
	assert_int_equal(tg_pipe_read(f->p, f->st, &org_a, &f->id, out, sizeof(out), &len, NULL),
			 -ENOENT);
	assert_int_equal(len, 12345);
	assert_int_equal(tg_store_exists(f->st, &org_a, &f->id), 0);
	assert_false(tg_dedup_lookup(f->dd, &org_a, &f->id));
	assert_int_equal(org_files(f, &org_a), 0);
}

static void test_fresh_index_after_restart_still_reports_dup(void **state)
{
	struct fix *f = *state;
	struct tg_ingest_res res;
	struct tg_dedup *fresh;
	int err;

	assert_int_equal(ingest(f, f->dd, &org_a, &res), 0);
	assert_int_equal(res.status, TG_INGEST_STORED);

	fresh = tg_dedup_create(1024, &err);
	assert_non_null(fresh);
	assert_false(tg_dedup_lookup(fresh, &org_a, &f->id));
	assert_int_equal(ingest(f, fresh, &org_a, &res), 0);
	assert_int_equal(res.status, TG_INGEST_DUP);
	assert_int_equal(org_files(f, &org_a), 6);
	/* The store's answer is remembered: next time no store lookup is needed. */
	assert_true(tg_dedup_lookup(fresh, &org_a, &f->id));
	/* ... and still not for another org. */
	assert_int_equal(ingest(f, fresh, &org_b, &res), 0);
	assert_int_equal(res.status, TG_INGEST_STORED);
	tg_dedup_destroy(fresh);
}

static void test_index_never_answers_across_orgs(void **state)
{
	struct tg_chunk_id ids[200];
	struct tg_dedup *d;
	unsigned i, b;
	int err;

	(void)state;
	d = tg_dedup_create(4096, &err);
	assert_non_null(d);
	fill_random(ids, sizeof(ids));
	for (i = 0; i < 200; i++)
		tg_dedup_insert(d, &org_b, &ids[i]);
	for (i = 0; i < 200; i++) {
		assert_true(tg_dedup_lookup(d, &org_b, &ids[i]));
		assert_false(tg_dedup_lookup(d, &org_a, &ids[i]));
		/* Orgs one byte apart, in every byte position. */
		for (b = 0; b < 16; b++) {
			struct tg_org_id o = org_b;

			o.b[b] ^= 0x80;
			assert_false(tg_dedup_lookup(d, &o, &ids[i]));
		}
	}
	tg_dedup_destroy(d);
}

static void test_index_keeps_what_fits_and_only_that(void **state)
{
	struct tg_chunk_id ids[1000], other;
	struct tg_dedup *d;
	unsigned i, present = 0;
	int err;

	(void)state;
	d = tg_dedup_create(1000, &err);
	assert_non_null(d);
	fill_random(ids, sizeof(ids));
	fill_random(&other, sizeof(other));
	for (i = 0; i < 1000; i++)
		tg_dedup_insert(d, &org_a, &ids[i]);
	/* A cache may drop a few to a full probe run, not more. */
	for (i = 0; i < 1000; i++)
		present += tg_dedup_lookup(d, &org_a, &ids[i]);
	assert_true(present >= 990);
	assert_false(tg_dedup_lookup(d, &org_a, &other));
	tg_dedup_destroy(d);
}

static void test_full_index_overwrites_oldest_instead_of_failing(void **state)
{
	struct tg_chunk_id ids[1000];
	struct tg_dedup *d;
	unsigned i, present = 0;
	int err;

	(void)state;
	/* capacity 4 -> 8 slots (2x, at least one probe run of 8): a single
	 * run that every key competes for, so eviction order decides. */
	d = tg_dedup_create(4, &err);
	assert_non_null(d);
	fill_random(ids, sizeof(ids));
	for (i = 0; i < 1000; i++) {
		tg_dedup_insert(d, &org_a, &ids[i]);
		assert_true(tg_dedup_lookup(d, &org_a, &ids[i]));
	}
	for (i = 0; i < 1000; i++)
		present += tg_dedup_lookup(d, &org_a, &ids[i]);
	/* Bounded (nothing grew) and the oldest went first: the 8 newest stay. */
	assert_int_equal(present, 8);
	for (i = 992; i < 1000; i++)
		assert_true(tg_dedup_lookup(d, &org_a, &ids[i]));
	/* Re-inserting a present key does not evict anything. */
	tg_dedup_insert(d, &org_a, &ids[992]);
	for (i = 992; i < 1000; i++)
		assert_true(tg_dedup_lookup(d, &org_a, &ids[i]));
	tg_dedup_destroy(d);
}

static void test_dedup_create_rejects_zero_capacity(void **state)
{
	int err = 0;

	(void)state;
	assert_null(tg_dedup_create(0, &err));
	assert_int_equal(err, -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_same_chunk_twice_in_one_org_is_dup_and_stored_once,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_chunk_in_two_orgs_is_stored_twice, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_org_cannot_read_chunk_only_another_org_has, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_fresh_index_after_restart_still_reports_dup, setup,
						teardown),
		cmocka_unit_test(test_index_never_answers_across_orgs),
		cmocka_unit_test(test_index_keeps_what_fits_and_only_that),
		cmocka_unit_test(test_full_index_overwrites_oldest_instead_of_failing),
		cmocka_unit_test(test_dedup_create_rejects_zero_capacity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
