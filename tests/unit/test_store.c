/*
 * test_store.c - the `dir` storage backend on real directories under /tmp.
 *
 * Each test gets a fresh tree of 20 shard directories. Objects are encoded
 * with the real erasure coder (ec.c) so rebuilds are checked bit-exact. The
 * tests damage the tree the way disks and operators do (whole directories
 * gone, flipped bytes, truncated or moved files, planted FIFOs and symlinks)
 * and check exactly which shards get() reports and that put() leaves nothing
 * half-written behind. Tests run as root, so failures are provoked with
 * structure (a file where a directory must be), not with permissions.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
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
#include <xxhash.h>

#include "tg_proto.h"
#include "tg_store.h"

#define NDIRS_MAX TG_EC_SHARDS_MAX
#define HDR_LEN   96u   /* the shard header, per store_dir.c's format comment */
#define HDR_INDEX 8u
#define HDR_SUM   88u

struct fixture {
	char root[64];
	char dir[NDIRS_MAX][96];
	const char *dirp[NDIRS_MAX];
};

static struct fixture fx;

static int rm_cb(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(p);
}

static void rm_rf(const char *p)
{
	nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int rm_inside_cb(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	return ftw->level ? remove(p) : 0;
}

/* Remove everything inside a directory, keeping the directory itself. */
static void empty_dir(const char *p)
{
	nftw(p, rm_inside_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
	(void)state;
	strcpy(fx.root, "/tmp/tg_store_test.XXXXXX");
	if (!mkdtemp(fx.root))
		return -1;
	for (int i = 0; i < NDIRS_MAX; i++) {
		snprintf(fx.dir[i], sizeof(fx.dir[i]), "%s/d%02d", fx.root, i);
		if (mkdir(fx.dir[i], 0750))
			return -1;
		fx.dirp[i] = fx.dir[i];
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	rm_rf(fx.root);
	return 0;
}

static struct tg_store *open_store(unsigned ndirs)
{
	int err = 0;
	struct tg_store *st = tg_store_dir_open(fx.dirp, ndirs, &err);

	assert_non_null(st);
	assert_int_equal(err, 0);
	return st;
}

/* ---- objects ---- */

static uint64_t rng = 88172645463325252ull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

struct tobj {
	struct tg_obj obj;
	uint8_t *payload;    /* enc_len bytes */
	uint8_t *shardbuf;   /* (k+m) * shard_len */
	size_t len;
};

static void tobj_make(struct tobj *t, unsigned k, unsigned m, size_t len)
{
	size_t sl;

	memset(t, 0, sizeof(*t));
	t->len = len;
	t->payload = malloc(len);
	assert_non_null(t->payload);
	for (size_t i = 0; i < len; i++)
		t->payload[i] = (uint8_t)rnd();
	tg_chunk_hash(t->payload, len, &t->obj.meta.id);
	t->obj.meta.orig_len = (uint32_t)len;
	t->obj.meta.enc_len = (uint32_t)len;
	t->obj.meta.enc = TG_ENC_RAW;
	t->obj.meta.k = (uint8_t)k;
	t->obj.meta.m = (uint8_t)m;
	if (k == 1) {
		sl = len;
		t->shardbuf = malloc(sl);
		assert_non_null(t->shardbuf);
		memcpy(t->shardbuf, t->payload, len);
		t->obj.shards[0] = t->shardbuf;
	} else {
		uint8_t *sh[TG_EC_SHARDS_MAX];
		int err = 0;
		struct tg_ec *ec = tg_ec_create(k, m, &err);

		assert_non_null(ec);
		sl = tg_ec_shard_len(ec, len);
		t->shardbuf = malloc((k + m) * sl);
		assert_non_null(t->shardbuf);
		for (unsigned i = 0; i < k + m; i++) {
			sh[i] = t->shardbuf + i * sl;
			t->obj.shards[i] = sh[i];
		}
		assert_int_equal(tg_ec_encode(ec, t->payload, len, sh, sl), 0);
		tg_ec_destroy(ec);
	}
	t->obj.meta.shard_len = (uint32_t)sl;
}

static void tobj_free(struct tobj *t)
{
	free(t->payload);
	free(t->shardbuf);
}

static void org_make(struct tg_org_id *o, uint8_t tag)
{
	for (int i = 0; i < 16; i++)
		o->b[i] = (uint8_t)(tag * 31 + i);
}

/* get() into a fresh buffer of tg_store_get_cap(len); checks bit-exactness
 * and meta on success and returns the result. */
static int get_check(struct tg_store *st, const struct tg_org_id *org, const struct tobj *t,
		     struct tg_store_report *rep)
{
	size_t cap = tg_store_get_cap(t->len);
	uint8_t *buf = malloc(cap);
	struct tg_obj_meta meta;
	int rc;

	assert_non_null(buf);
	memset(rep, 0xee, sizeof(*rep));
	rc = tg_store_get(st, org, &t->obj.meta.id, buf, cap, &meta, rep);
	if (rc == 0) {
		assert_memory_equal(buf, t->payload, t->obj.meta.enc_len);
		assert_memory_equal(&meta.id, &t->obj.meta.id, 16);
		assert_int_equal(meta.orig_len, t->obj.meta.orig_len);
		assert_int_equal(meta.enc_len, t->obj.meta.enc_len);
		assert_int_equal(meta.enc, t->obj.meta.enc);
		assert_int_equal(meta.k, t->obj.meta.k);
		assert_int_equal(meta.m, t->obj.meta.m);
		assert_int_equal(meta.shard_len, t->obj.meta.shard_len);
	}
	free(buf);
	return rc;
}

/* ---- looking at the tree ---- */

static void shard_path(unsigned d, const struct tg_org_id *org, const struct tg_chunk_id *id,
		       char *out, size_t cap)
{
	char oh[33], ih[33];

	tg_id_to_hex(org->b, oh);
	tg_id_to_hex(id->b, ih);
	snprintf(out, cap, "%s/%s/%c%c/%s", fx.dir[d], oh, ih[0], ih[1], ih);
}

/* Which directory holds shard index idx (read from the header), or -1. */
static int dir_of_shard(unsigned ndirs, const struct tg_org_id *org,
			const struct tg_chunk_id *id, unsigned idx)
{
	for (unsigned d = 0; d < ndirs; d++) {
		char p[256];
		uint8_t h[HDR_LEN];
		int fd;

		shard_path(d, org, id, p, sizeof(p));
		fd = open(p, O_RDONLY);
		if (fd < 0)
			continue;
		assert_int_equal(pread(fd, h, HDR_LEN, 0), HDR_LEN);
		close(fd);
		if (h[HDR_INDEX] == idx)
			return (int)d;
	}
	return -1;
}

static void shard_file(unsigned ndirs, const struct tg_org_id *org, const struct tobj *t,
		       unsigned idx, char *out, size_t cap)
{
	int d = dir_of_shard(ndirs, org, &t->obj.meta.id, idx);

	assert_true(d >= 0);
	shard_path((unsigned)d, org, &t->obj.meta.id, out, cap);
}

struct walk {
	unsigned files, bad_names, foreign, mine;
	char org_hex[33];
};

static struct walk walk_acc;

static int walk_cb(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	const char *base = p + ftw->base;
	size_t bl = strlen(base);

	(void)sb;
	if (type != FTW_F)
		return 0;
	walk_acc.files++;
	if (bl != 32 || strspn(base, "0123456789abcdef") != 32)
		walk_acc.bad_names++;
	if (walk_acc.org_hex[0] && !strstr(p, walk_acc.org_hex))
		walk_acc.foreign++;
	else
		walk_acc.mine++;
	return 0;
}

/* Count the regular files under every shard directory; names that are not
 * a final shard name (temporaries) and files outside org (if given). */
static struct walk walk_tree(const struct tg_org_id *org)
{
	memset(&walk_acc, 0, sizeof(walk_acc));
	if (org)
		tg_id_to_hex(org->b, walk_acc.org_hex);
	nftw(fx.root, walk_cb, 16, FTW_PHYS);
	return walk_acc;
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static uint32_t data_mask(unsigned k)
{
	return (1u << k) - 1;
}

/* ---- round trips ---- */

static void test_round_trip_unsharded_k1_m0(void **state)
{
	struct tg_org_id org;
	struct tg_store_report rep;

	(void)state;
	org_make(&org, 1);
	for (unsigned ndirs = 1; ndirs <= 3; ndirs += 2) {
		struct tg_store *st = open_store(ndirs);
		static const size_t lens[] = { 1, 63, 64, 65, 100000, TG_CHUNK_MAX };

		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			struct tobj t;

			tobj_make(&t, 1, 0, lens[i]);
			assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 0);
			assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
			assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 1);
			assert_int_equal(get_check(st, &org, &t, &rep), 0);
			assert_int_equal(rep.missing | rep.corrupt | rep.rebuilt, 0);
			assert_int_equal(rep.k, 1);
			assert_int_equal(rep.m, 0);
			tobj_free(&t);
		}
		tg_store_close(st);
	}
	assert_int_equal(walk_tree(&org).bad_names, 0);
}

static void test_round_trip_compressed_payload_and_padded_k1_shard(void **state)
{
	struct tg_store *st = open_store(2);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;

	(void)state;
	org_make(&org, 2);
	tobj_make(&t, 1, 0, 1000);
	/* igzip payload shorter than the chunk, in a shard padded to 64 */
	t.obj.meta.enc = TG_ENC_IGZIP;
	t.obj.meta.orig_len = 5000;
	t.obj.meta.enc_len = 1000;
	t.obj.meta.shard_len = 1024;
	t.shardbuf = realloc(t.shardbuf, 1024);
	memset(t.shardbuf + 1000, 0, 24);
	t.obj.shards[0] = t.shardbuf;
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	t.len = 5000; /* cap for the chunk's length */
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.missing | rep.corrupt, 0);
	tobj_free(&t);
	tg_store_close(st);
}

static void test_round_trip_ec_policies_all_dir_counts(void **state)
{
	static const unsigned km[][2] = { { 2, 1 }, { 3, 2 }, { 4, 2 }, { 8, 3 }, { 10, 4 }, { 16, 4 } };
	static const size_t lens[] = { 1, 64, 1000, 65537, 1u << 20 };
	struct tg_org_id org;

	(void)state;
	org_make(&org, 3);
	for (size_t p = 0; p < sizeof(km) / sizeof(km[0]); p++) {
		unsigned k = km[p][0], m = km[p][1];
		unsigned ndirs_opts[2] = { k + m, NDIRS_MAX };

		for (int o = 0; o < 2; o++) {
			struct tg_store *st = open_store(ndirs_opts[o]);

			for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
				struct tg_store_report rep;
				struct tobj t;
				unsigned seen = 0;

				tobj_make(&t, k, m, lens[l]);
				assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
				assert_int_equal(get_check(st, &org, &t, &rep), 0);
				assert_int_equal(rep.missing | rep.corrupt | rep.rebuilt, 0);
				assert_int_equal(rep.k, k);
				assert_int_equal(rep.m, m);
				/* every shard is in a directory of its own */
				for (unsigned i = 0; i < k + m; i++) {
					int d = dir_of_shard(ndirs_opts[o], &org, &t.obj.meta.id, i);

					assert_true(d >= 0);
					assert_false(seen & (1u << d));
					seen |= 1u << d;
				}
				tobj_free(&t);
			}
			tg_store_close(st);
		}
	}
	assert_int_equal(walk_tree(&org).bad_names, 0);
	assert_int_equal(walk_tree(&org).foreign, 0);
}

static void test_get_cap_suffices_for_every_k_and_small_cap_is_enospc(void **state)
{
	struct tg_store *st = open_store(NDIRS_MAX);
	struct tg_org_id org;

	(void)state;
	org_make(&org, 4);
	for (unsigned k = 2; k <= TG_EC_K_MAX; k++) {
		unsigned m = k + 4 <= NDIRS_MAX ? 4 : NDIRS_MAX - k;
		size_t len = TG_CHUNK_MAX - (rnd() % 4096);
		size_t cap = tg_store_get_cap(len);
		struct tg_obj_meta meta;
		struct tobj t;
		uint8_t *buf;

		tobj_make(&t, k, m, len);
		assert_true(cap >= (size_t)k * t.obj.meta.shard_len);
		assert_true(cap <= tg_store_get_cap(TG_CHUNK_MAX));
		assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
		buf = malloc(cap);
		assert_int_equal(tg_store_get(st, &org, &t.obj.meta.id, buf, cap, &meta, NULL), 0);
		assert_memory_equal(buf, t.payload, len);
		assert_int_equal(tg_store_get(st, &org, &t.obj.meta.id, buf,
					      (size_t)k * t.obj.meta.shard_len - 1, &meta, NULL),
				 -ENOSPC);
		free(buf);
		tobj_free(&t);
	}
	tg_store_close(st);
}

/* ---- tenancy ---- */

static void test_objects_are_per_organization(void **state)
{
	struct tg_store *st = open_store(5);
	struct tg_org_id a, b;
	struct tg_store_report rep;
	struct tobj t;
	struct walk w;

	(void)state;
	org_make(&a, 10);
	org_make(&b, 11);
	tobj_make(&t, 3, 2, 50000);
	assert_int_equal(tg_store_put(st, &a, &t.obj), 0);
	assert_int_equal(get_check(st, &b, &t, &rep), -ENOENT);
	assert_int_equal(tg_store_exists(st, &b, &t.obj.meta.id), 0);
	assert_int_equal(tg_store_exists(st, &a, &t.obj.meta.id), 1);
	w = walk_tree(&a);
	assert_int_equal(w.files, 5);
	assert_int_equal(w.foreign, 0);
	/* the same chunk under B is a second object */
	assert_int_equal(tg_store_put(st, &b, &t.obj), 0);
	assert_int_equal(get_check(st, &b, &t, &rep), 0);
	assert_int_equal(walk_tree(&a).foreign, 5);
	tobj_free(&t);
	tg_store_close(st);
}

static void test_shard_moved_between_organizations_is_refused(void **state)
{
	struct tg_store *st = open_store(3);
	struct tg_org_id a, b;
	struct tg_store_report rep;
	char pa[256], pb[256], dirb[256];
	struct tobj t;

	(void)state;
	org_make(&a, 12);
	org_make(&b, 13);
	/* A lone file moved into B's path: B does not get A's bytes. */
	tobj_make(&t, 1, 0, 3000);
	assert_int_equal(tg_store_put(st, &a, &t.obj), 0);
	shard_file(3, &a, &t, 0, pa, sizeof(pa));
	strcpy(pb, pa);
	{
		char ah[33], bh[33];

		tg_id_to_hex(a.b, ah);
		tg_id_to_hex(b.b, bh);
		memcpy(strstr(pb, ah), bh, 32);
	}
	strcpy(dirb, pb);
	*strrchr(dirb, '/') = '\0';
	*strrchr(dirb, '/') = '\0';
	assert_int_equal(mkdir(dirb, 0750), 0);
	strcpy(dirb, pb);
	*strrchr(dirb, '/') = '\0';
	assert_int_equal(mkdir(dirb, 0750), 0);
	assert_int_equal(rename(pa, pb), 0);
	assert_int_equal(get_check(st, &b, &t, &rep), -EUCLEAN);
	assert_int_equal(rep.corrupt, 1u << 0);
	assert_int_equal(tg_store_exists(st, &b, &t.obj.meta.id), 0);
	tobj_free(&t);

	/* B holds the chunk too, and one of its shards is replaced by A's
	 * byte-identical copy: only the header's org tells them apart. */
	tobj_make(&t, 2, 1, 7000);
	assert_int_equal(tg_store_put(st, &a, &t.obj), 0);
	assert_int_equal(tg_store_put(st, &b, &t.obj), 0);
	shard_file(3, &a, &t, 1, pa, sizeof(pa));
	shard_file(3, &b, &t, 1, pb, sizeof(pb));
	assert_int_equal(rename(pa, pb), 0);
	assert_int_equal(get_check(st, &b, &t, &rep), 0);
	assert_int_equal(rep.corrupt, 1u << 1);
	assert_int_equal(rep.missing, 0);
	assert_int_equal(rep.rebuilt, 1u << 1);
	tobj_free(&t);
	tg_store_close(st);
}

/* ---- rebuilds ---- */

static void test_rebuild_after_losing_up_to_m_whole_directories(void **state)
{
	static const unsigned km[][2] = { { 2, 1 }, { 4, 2 }, { 8, 3 }, { 6, 4 } };
	uint8_t tag = 20;

	(void)state;
	for (size_t p = 0; p < sizeof(km) / sizeof(km[0]); p++) {
		unsigned k = km[p][0], m = km[p][1], n = k + m;

		for (unsigned extra = 0; extra <= 2; extra += 2) {
			unsigned ndirs = n + extra;

			for (unsigned lost = 1; lost <= m; lost++) {
				for (int trial = 0; trial < 6; trial++) {
					struct tg_store *st = open_store(ndirs);
					struct tg_store_report rep;
					struct tg_org_id org;
					uint32_t mask = 0;
					struct tobj t;

					org_make(&org, tag++);
					tobj_make(&t, k, m, 1000 + rnd() % 300000);
					assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
					/* trial 0: the first data shards; 1: parity
					 * only (when there is room); then random */
					while ((unsigned)__builtin_popcount(mask) < lost) {
						unsigned i = trial == 0 ? (unsigned)__builtin_popcount(mask)
							   : trial == 1 ? n - 1 - (unsigned)__builtin_popcount(mask)
							   : rnd() % n;

						mask |= 1u << i;
					}
					for (unsigned i = 0; i < n; i++) {
						char oh[33], p2[256];
						int d;

						if (!(mask & (1u << i)))
							continue;
						d = dir_of_shard(ndirs, &org, &t.obj.meta.id, i);
						assert_true(d >= 0);
						tg_id_to_hex(org.b, oh);
						snprintf(p2, sizeof(p2), "%s/%s", fx.dir[d], oh);
						rm_rf(p2);
					}
					assert_int_equal(get_check(st, &org, &t, &rep), 0);
					assert_int_equal(rep.missing, mask);
					assert_int_equal(rep.corrupt, 0);
					assert_int_equal(rep.rebuilt, mask & data_mask(k));
					assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 1);
					tobj_free(&t);
					tg_store_close(st);
				}
			}
		}
	}
}

static void test_losing_all_directory_contents_is_enoent(void **state)
{
	struct tg_store *st = open_store(4);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;

	(void)state;
	org_make(&org, 30);
	tobj_make(&t, 2, 2, 9999);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	for (int d = 0; d < 4; d++)
		empty_dir(fx.dir[d]);
	assert_int_equal(walk_tree(NULL).files, 0);
	assert_int_equal(get_check(st, &org, &t, &rep), -ENOENT);
	assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 0);
	tobj_free(&t);
	tg_store_close(st);
}

/* Dedup answers "already durable" from exists(), and such a chunk is never
 * sent again: so exists() must mean "get() can rebuild it" (>= K shards),
 * not "some shard file is there". 4+2: K shards left -> 1, K-1 -> 0. */
static void test_exists_needs_k_shards_not_one(void **state)
{
	struct tg_store *st = open_store(6);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;
	char oh[33], ih[33], p[256];

	(void)state;
	org_make(&org, 31);
	tobj_make(&t, 4, 2, 70000);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	tg_id_to_hex(org.b, oh);
	tg_id_to_hex(t.obj.meta.id.b, ih);
	for (unsigned i = 0; i < 3; i++) {
		int d = dir_of_shard(6, &org, &t.obj.meta.id, i);

		assert_true(d >= 0);
		snprintf(p, sizeof(p), "%s/%s/%c%c/%s", fx.dir[d], oh, ih[0], ih[1], ih);
		assert_int_equal(unlink(p), 0);
		if (i < 2)
			assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 1);
		else
			assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 0);
	}
	assert_int_equal(get_check(st, &org, &t, &rep), -EUCLEAN);
	/* Putting it again heals it, and then it exists. */
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 1);
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	tobj_free(&t);
	tg_store_close(st);
}

static void test_flipped_payload_byte_in_any_shard_is_corrupt_and_rebuilt(void **state)
{
	struct tg_store *st = open_store(7);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;

	(void)state;
	org_make(&org, 31);
	tobj_make(&t, 4, 2, 100000);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	for (unsigned i = 0; i < 6; i++) {
		char p[256];
		off_t at = HDR_LEN + rnd() % t.obj.meta.shard_len;

		shard_file(7, &org, &t, i, p, sizeof(p));
		flip_byte(p, at);
		assert_int_equal(get_check(st, &org, &t, &rep), 0);
		assert_int_equal(rep.corrupt, 1u << i);
		assert_int_equal(rep.missing, 0);
		assert_int_equal(rep.rebuilt, (1u << i) & data_mask(4));
		flip_byte(p, at);
		assert_int_equal(get_check(st, &org, &t, &rep), 0);
		assert_int_equal(rep.corrupt, 0);
	}
	tobj_free(&t);
	tg_store_close(st);
}

static void test_flipped_header_byte_at_every_offset_is_corrupt(void **state)
{
	struct tg_store *st = open_store(3);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;
	char p[256];

	(void)state;
	org_make(&org, 32);
	tobj_make(&t, 2, 1, 5000);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	shard_file(3, &org, &t, 0, p, sizeof(p));
	for (off_t off = 0; off < (off_t)HDR_LEN; off++) {
		flip_byte(p, off);
		assert_int_equal(get_check(st, &org, &t, &rep), 0);
		assert_int_equal(rep.corrupt, 1u << 0);
		assert_int_equal(rep.rebuilt, 1u << 0);
		flip_byte(p, off);
	}
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.corrupt, 0);
	tobj_free(&t);
	tg_store_close(st);
}

/* Rewrite one header field and re-seal the header checksum, so only the
 * field checks (not the checksum) can catch it. */
static void reseal(const char *path, void (*edit)(uint8_t *h))
{
	uint8_t h[HDR_LEN];
	uint64_t s;
	int fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, h, HDR_LEN, 0), HDR_LEN);
	edit(h);
	s = XXH3_64bits(h, HDR_SUM);
	for (int i = 0; i < 8; i++)
		h[HDR_SUM + i] = (uint8_t)(s >> (8 * i));
	assert_int_equal(pwrite(fd, h, HDR_LEN, 0), HDR_LEN);
	close(fd);
}

static void ed_k17(uint8_t *h) { h[9] = 17; }
static void ed_m5(uint8_t *h) { h[10] = 5; }
static void ed_index(uint8_t *h) { h[8] = 3; }
static void ed_index_swap(uint8_t *h) { h[8] = 1; }
static void ed_enc(uint8_t *h) { h[11] = 7; }
static void ed_orig0(uint8_t *h) { memset(h + 12, 0, 4); }
static void ed_orig_big(uint8_t *h) { memset(h + 12, 0xff, 4); }
static void ed_enc_len(uint8_t *h) { h[16] ^= 1; }
static void ed_shard_len(uint8_t *h) { h[21] ^= 0x10; }
static void ed_shard_huge(uint8_t *h) { memset(h + 20, 0xff, 4); }
static void ed_org(uint8_t *h) { h[30] ^= 1; }
static void ed_id(uint8_t *h) { h[50] ^= 1; }
static void ed_reserved(uint8_t *h) { h[70] = 1; }
static void ed_version(uint8_t *h) { h[4] = 2; }
static void ed_none(uint8_t *h) { (void)h; }

static void test_header_fields_bound_checked_even_with_valid_checksum(void **state)
{
	static void (*const edits[])(uint8_t *) = {
		ed_k17, ed_m5, ed_index, ed_index_swap, ed_enc, ed_orig0, ed_orig_big,
		ed_enc_len, ed_shard_len, ed_shard_huge, ed_org, ed_id, ed_reserved,
		ed_version,
	};
	struct tg_store *st = open_store(3);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;
	char p[256];

	(void)state;
	org_make(&org, 33);
	tobj_make(&t, 2, 1, 5000);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	shard_file(3, &org, &t, 0, p, sizeof(p));
	/* re-sealing an untouched header must keep it valid */
	reseal(p, ed_none);
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.corrupt, 0);
	for (size_t e = 0; e < sizeof(edits) / sizeof(edits[0]); e++) {
		reseal(p, edits[e]);
		assert_int_equal(get_check(st, &org, &t, &rep), 0);
		assert_int_equal(rep.corrupt, 1u << 0);
		assert_int_equal(rep.rebuilt, 1u << 0);
		assert_int_equal(tg_store_put(st, &org, &t.obj), 0); /* heal */
	}
	tobj_free(&t);
	tg_store_close(st);
}

static void test_truncated_or_extended_shard_is_corrupt(void **state)
{
	static const long cuts[] = { -1, -64, 0 /* to zero */, 50 /* inside header */, +1 };
	struct tg_store *st = open_store(5);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;

	(void)state;
	org_make(&org, 34);
	tobj_make(&t, 3, 2, 20000);
	for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
		off_t full = HDR_LEN + t.obj.meta.shard_len;
		off_t to = cuts[c] < 0 ? full + cuts[c] : cuts[c] == 1 ? full + 1 : cuts[c];
		unsigned i = (unsigned)(c % 5);
		char p[256];

		assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
		shard_file(5, &org, &t, i, p, sizeof(p));
		assert_int_equal(truncate(p, to), 0);
		assert_int_equal(get_check(st, &org, &t, &rep), 0);
		assert_int_equal(rep.corrupt, 1u << i);
		assert_int_equal(rep.missing, 0);
		assert_int_equal(rep.rebuilt, (1u << i) & data_mask(3));
	}
	tobj_free(&t);
	tg_store_close(st);
}

static void test_planted_symlink_fifo_or_directory_is_corrupt(void **state)
{
	struct tg_store *st = open_store(3);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;
	char p[256], other[256];

	(void)state;
	org_make(&org, 35);
	tobj_make(&t, 2, 1, 4000);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	shard_file(3, &org, &t, 0, p, sizeof(p));

	/* a symlink to the genuine bytes is still refused: shards are files */
	snprintf(other, sizeof(other), "%s/elsewhere", fx.root);
	assert_int_equal(rename(p, other), 0);
	assert_int_equal(symlink(other, p), 0);
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.corrupt, 1u << 0);
	unlink(p);

	assert_int_equal(mkfifo(p, 0600), 0);  /* must not block */
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.corrupt, 1u << 0);
	unlink(p);

	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.corrupt, 1u << 0);
	rmdir(p);
	unlink(other);
	tobj_free(&t);
	tg_store_close(st);
}

static void test_more_than_m_bad_is_euclean_with_exact_masks(void **state)
{
	struct tg_store *st = open_store(7);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;
	char p[256];

	(void)state;
	org_make(&org, 36);
	tobj_make(&t, 4, 2, 30000);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	/* shards 1 and 4 gone, shard 2 corrupt: three bad, M = 2 */
	shard_file(7, &org, &t, 1, p, sizeof(p));
	assert_int_equal(unlink(p), 0);
	shard_file(7, &org, &t, 4, p, sizeof(p));
	assert_int_equal(unlink(p), 0);
	shard_file(7, &org, &t, 2, p, sizeof(p));
	flip_byte(p, HDR_LEN + 5);
	assert_int_equal(get_check(st, &org, &t, &rep), -EUCLEAN);
	assert_int_equal(rep.missing, (1u << 1) | (1u << 4));
	assert_int_equal(rep.corrupt, 1u << 2);
	assert_int_equal(rep.rebuilt, 0);
	assert_int_equal(rep.k, 4);
	assert_int_equal(rep.m, 2);
	/* healing the corrupt one brings it back within M */
	flip_byte(p, HDR_LEN + 5);
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.missing, (1u << 1) | (1u << 4));
	assert_int_equal(rep.rebuilt, 1u << 1);
	tobj_free(&t);

	/* unsharded: its one copy corrupt is beyond M = 0 */
	tobj_make(&t, 1, 0, 777);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	shard_file(7, &org, &t, 0, p, sizeof(p));
	flip_byte(p, HDR_LEN);
	assert_int_equal(get_check(st, &org, &t, &rep), -EUCLEAN);
	assert_int_equal(rep.corrupt, 1u);
	tobj_free(&t);
	tg_store_close(st);
}

/* ---- put durability and failure ---- */

static void test_put_leaves_no_temporary_files(void **state)
{
	struct tg_store *st = open_store(NDIRS_MAX);
	struct tg_org_id org;
	struct walk w;

	(void)state;
	org_make(&org, 40);
	for (int i = 0; i < 10; i++) {
		struct tobj t;

		tobj_make(&t, 2 + (unsigned)i, 4, 1 + rnd() % 200000);
		assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
		assert_int_equal(tg_store_put(st, &org, &t.obj), 0); /* idempotent */
		tobj_free(&t);
	}
	w = walk_tree(&org);
	assert_int_equal(w.bad_names, 0);
	assert_int_equal(w.foreign, 0);
	assert_int_equal(w.files, 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11 + 40);
	tg_store_close(st);
}

static void test_reput_heals_a_corrupt_shard(void **state)
{
	struct tg_store *st = open_store(3);
	struct tg_store_report rep;
	struct tg_org_id org;
	struct tobj t;
	char p[256];

	(void)state;
	org_make(&org, 41);
	tobj_make(&t, 2, 1, 12345);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	shard_file(3, &org, &t, 2, p, sizeof(p));
	flip_byte(p, HDR_LEN + 100);
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.corrupt, 1u << 2);
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	assert_int_equal(get_check(st, &org, &t, &rep), 0);
	assert_int_equal(rep.corrupt, 0);
	tobj_free(&t);
	tg_store_close(st);
}

/* A regular file where the org directory (or its 2-hex subdirectory) must
 * go fails mkdir/open even for root. Each directory takes its turn as the
 * broken one, so the failure hits the first, a middle and the last shard. */
static void test_failed_put_leaves_no_final_or_temp_file(void **state)
{
	uint8_t tag = 50;

	(void)state;
	for (int level = 0; level < 2; level++) {
		for (unsigned bad = 0; bad < 4; bad++) {
			struct tg_store *st = open_store(4);
			struct tg_store_report rep;
			struct tg_org_id org;
			char oh[33], ih[33], p[256];
			struct tobj t;
			struct walk w;
			int fd;

			org_make(&org, tag++);
			tobj_make(&t, 2, 2, 40000);
			tg_id_to_hex(org.b, oh);
			tg_id_to_hex(t.obj.meta.id.b, ih);
			if (level == 0) {
				snprintf(p, sizeof(p), "%s/%s", fx.dir[bad], oh);
			} else {
				snprintf(p, sizeof(p), "%s/%s", fx.dir[bad], oh);
				assert_int_equal(mkdir(p, 0750), 0);
				snprintf(p, sizeof(p), "%s/%s/%c%c", fx.dir[bad], oh, ih[0], ih[1]);
			}
			fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0600);
			assert_true(fd >= 0);
			close(fd);

			assert_int_equal(tg_store_put(st, &org, &t.obj), -ENOTDIR);
			w = walk_tree(&org);
			assert_int_equal(w.mine, 1); /* only the blocking file */
			assert_int_equal(w.bad_names, level); /* the "xx" file */
			assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 0);
			assert_int_equal(get_check(st, &org, &t, &rep), -ENOENT);
			unlink(p);
			assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
			assert_int_equal(get_check(st, &org, &t, &rep), 0);
			tobj_free(&t);
			tg_store_close(st);
		}
	}
}

/* A non-empty directory squatting on one shard's final name: every shard
 * is written and fsync'd, then that one rename fails (EISDIR), so the put
 * must take back the finals it already renamed into the other dirs. */
static void test_failed_rename_takes_back_published_shards(void **state)
{
	uint8_t tag = 80;

	(void)state;
	for (unsigned bad = 0; bad < 4; bad++) {
		struct tg_store *st = open_store(4);
		struct tg_store_report rep;
		struct tg_org_id org;
		char oh[33], ih[33], p[256];
		struct tobj t;
		struct walk w;
		int fd;

		org_make(&org, tag++);
		tobj_make(&t, 3, 1, 30000);
		tg_id_to_hex(org.b, oh);
		tg_id_to_hex(t.obj.meta.id.b, ih);
		snprintf(p, sizeof(p), "%s/%s", fx.dir[bad], oh);
		assert_int_equal(mkdir(p, 0750), 0);
		snprintf(p, sizeof(p), "%s/%s/%c%c", fx.dir[bad], oh, ih[0], ih[1]);
		assert_int_equal(mkdir(p, 0750), 0);
		snprintf(p, sizeof(p), "%s/%s/%c%c/%s", fx.dir[bad], oh, ih[0], ih[1], ih);
		assert_int_equal(mkdir(p, 0750), 0);
		strcat(p, "/x");
		fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0600);
		assert_true(fd >= 0);
		close(fd);

		assert_int_equal(tg_store_put(st, &org, &t.obj), -EISDIR);
		w = walk_tree(&org);
		assert_int_equal(w.mine, 1); /* only the squatter's "x" */
		assert_int_equal(tg_store_exists(st, &org, &t.obj.meta.id), 0);
		assert_int_equal(get_check(st, &org, &t, &rep), -EUCLEAN);
		assert_int_equal(rep.missing | rep.corrupt, 0xf);
		unlink(p);
		*strrchr(p, '/') = '\0';
		rmdir(p);
		assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
		assert_int_equal(get_check(st, &org, &t, &rep), 0);
		tobj_free(&t);
		tg_store_close(st);
	}
}

static void test_invalid_meta_is_einval_and_writes_nothing(void **state)
{
	struct tg_store *st = open_store(NDIRS_MAX);
	struct tg_store *st3 = open_store(3);
	struct tg_org_id org;
	struct tobj base, t;
	struct tg_obj o;
	uint8_t *big = calloc(17, 8192);

	(void)state;
	org_make(&org, 60);
	tobj_make(&base, 4, 2, 10000);
	t = base;
#define EXPECT_EINVAL(mut)                                                     \
	do {                                                                   \
		o = t.obj;                                                     \
		mut;                                                           \
		assert_int_equal(tg_store_put(st, &org, &o), -EINVAL);         \
	} while (0)
	for (int i = 0; i < TG_EC_SHARDS_MAX; i++)
		if (!t.obj.shards[i])
			t.obj.shards[i] = big;
	EXPECT_EINVAL(o.meta.k = 17);
	EXPECT_EINVAL(o.meta.k = 0);
	EXPECT_EINVAL(o.meta.k = 1);                   /* K=1 needs M=0 */
	EXPECT_EINVAL(o.meta.m = 0);                   /* K>=2 needs M>=1 */
	EXPECT_EINVAL(o.meta.m = 5);
	EXPECT_EINVAL(o.meta.enc = 2);
	EXPECT_EINVAL(o.meta.orig_len = 0);
	EXPECT_EINVAL(o.meta.orig_len = TG_CHUNK_MAX + 1);
	EXPECT_EINVAL(o.meta.enc_len = 9999);          /* raw: must equal orig */
	EXPECT_EINVAL((o.meta.enc = TG_ENC_IGZIP, o.meta.enc_len = 10001));
	EXPECT_EINVAL((o.meta.enc = TG_ENC_IGZIP, o.meta.enc_len = 0));
	EXPECT_EINVAL(o.meta.shard_len = 64);          /* k*shard_len < enc_len */
	EXPECT_EINVAL(o.meta.shard_len += 64);         /* not tg_ec_shard_len */
	EXPECT_EINVAL(o.meta.shard_len = 0);
	EXPECT_EINVAL(o.shards[5] = NULL);
	EXPECT_EINVAL((o.meta.k = 1, o.meta.m = 0, o.meta.shard_len = 10000 + 64));
	assert_int_equal(tg_store_put(st, NULL, &t.obj), -EINVAL);
	assert_int_equal(tg_store_put(st, &org, NULL), -EINVAL);
	/* 4+2 needs six directories */
	assert_int_equal(tg_store_put(st3, &org, &t.obj), -EINVAL);
#undef EXPECT_EINVAL
	assert_int_equal(walk_tree(NULL).files, 0);
	/* and the unmodified object is fine */
	assert_int_equal(tg_store_put(st, &org, &t.obj), 0);
	tobj_free(&base);
	free(big);
	tg_store_close(st3);
	tg_store_close(st);
}

static void test_open_rejects_bad_directory_sets(void **state)
{
	const char *dup[2] = { fx.dir[0], fx.dir[0] };
	const char *missing[2] = { fx.dir[0], "/nonexistent/tg_store_dir" };
	const char *nul[2] = { fx.dir[0], NULL };
	char file[128];
	const char *notdir[1] = { file };
	int err, fd;

	(void)state;
	err = 0;
	assert_null(tg_store_dir_open(fx.dirp, 0, &err));
	assert_int_equal(err, -EINVAL);
	err = 0;
	assert_null(tg_store_dir_open(fx.dirp, TG_EC_SHARDS_MAX + 1, &err));
	assert_int_equal(err, -EINVAL);
	err = 0;
	assert_null(tg_store_dir_open(dup, 2, &err));
	assert_int_equal(err, -EINVAL);
	err = 0;
	assert_null(tg_store_dir_open(missing, 2, &err));
	assert_int_equal(err, -ENOENT);
	err = 0;
	assert_null(tg_store_dir_open(nul, 2, &err));
	assert_int_equal(err, -EINVAL);
	snprintf(file, sizeof(file), "%s/plainfile", fx.root);
	fd = open(file, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	err = 0;
	assert_null(tg_store_dir_open(notdir, 1, &err));
	assert_int_equal(err, -ENOTDIR);
}

/* ---- shared store ---- */

struct reader_arg {
	struct tg_store *st;
	const struct tg_org_id *org;
	const struct tobj *objs;
	unsigned nobjs;
	int seed;
	int failures;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	size_t cap = tg_store_get_cap(TG_CHUNK_MAX);
	uint8_t *buf = malloc(cap);

	for (int it = 0; it < 400 && buf; it++) {
		const struct tobj *t = &a->objs[(unsigned)(it + a->seed) % a->nobjs];
		struct tg_store_report rep;
		struct tg_obj_meta meta;

		if (tg_store_get(a->st, a->org, &t->obj.meta.id, buf, cap, &meta, &rep) ||
		    memcmp(buf, t->payload, t->len) || rep.rebuilt == 0)
			a->failures++;
	}
	free(buf);
	return NULL;
}

/* Rebuilds share the store's codecs; concurrent ones must not see each
 * other's decode tables (different loss patterns per object). */
static void test_concurrent_rebuilds_on_a_shared_store(void **state)
{
	enum { NOBJ = 10 };
	struct tg_store *st = open_store(8);
	struct reader_arg args[4];
	pthread_t th[4];
	struct tg_org_id org;
	struct tobj objs[NOBJ];
	unsigned np = 0;

	(void)state;
	org_make(&org, 70);
	/* ten distinct pairs of lost data shards: more loss patterns than a
	 * codec caches, so its decode tables are rebuilt while in use */
	for (unsigned a = 0; a < 5; a++) {
		for (unsigned b = a + 1; b < 5; b++, np++) {
			char p[256];

			tobj_make(&objs[np], 5, 3, 20000 + np * 1000);
			assert_int_equal(tg_store_put(st, &org, &objs[np].obj), 0);
			shard_file(8, &org, &objs[np], a, p, sizeof(p));
			assert_int_equal(unlink(p), 0);
			shard_file(8, &org, &objs[np], b, p, sizeof(p));
			assert_int_equal(unlink(p), 0);
		}
	}
	for (int i = 0; i < 4; i++) {
		args[i] = (struct reader_arg){ .st = st, .org = &org, .objs = objs, .nobjs = NOBJ,
					       .seed = i * 3 };
		assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].failures, 0);
	}
	for (unsigned i = 0; i < NOBJ; i++)
		tobj_free(&objs[i]);
	tg_store_close(st);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_round_trip_unsharded_k1_m0),
		T(test_round_trip_compressed_payload_and_padded_k1_shard),
		T(test_round_trip_ec_policies_all_dir_counts),
		T(test_get_cap_suffices_for_every_k_and_small_cap_is_enospc),
		T(test_objects_are_per_organization),
		T(test_shard_moved_between_organizations_is_refused),
		T(test_rebuild_after_losing_up_to_m_whole_directories),
		T(test_losing_all_directory_contents_is_enoent),
		T(test_exists_needs_k_shards_not_one),
		T(test_flipped_payload_byte_in_any_shard_is_corrupt_and_rebuilt),
		T(test_flipped_header_byte_at_every_offset_is_corrupt),
		T(test_header_fields_bound_checked_even_with_valid_checksum),
		T(test_truncated_or_extended_shard_is_corrupt),
		T(test_planted_symlink_fifo_or_directory_is_corrupt),
		T(test_more_than_m_bad_is_euclean_with_exact_masks),
		T(test_put_leaves_no_temporary_files),
		T(test_reput_heals_a_corrupt_shard),
		T(test_failed_put_leaves_no_final_or_temp_file),
		T(test_failed_rename_takes_back_published_shards),
		T(test_invalid_meta_is_einval_and_writes_nothing),
		T(test_open_rejects_bad_directory_sets),
		T(test_concurrent_rebuilds_on_a_shared_store),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
