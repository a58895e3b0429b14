/*
 * test_pipeline.c - the chunk pipeline end to end on this machine's real
 * files: every storage policy stores text compressed and random data raw,
 * reads every chunk back byte for byte (also after losing M shards), refuses
 * a chunk whose bytes do not match its id without storing anything; plus
 * igzip round trips and rejects, and the policy string grammar.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
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
#include "tg_compress.h"
#include "tg_store.h"

#define MAX_CHUNK (1u << 20)
#define NDIRS 20

static const struct tg_org_id org_a = { { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
					  0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 0x01 } };

/* ---- helpers ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static void fill_random(uint8_t *p, size_t n)
{
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

static uint8_t *read_file(const char *path, size_t *len)
{
	struct stat sb;
	uint8_t *buf;
	size_t off = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0) {
		close(fd);
		return NULL;
	}
	buf = malloc((size_t)sb.st_size);
	assert_non_null(buf);
	while (off < (size_t)sb.st_size) {
		ssize_t n = read(fd, buf + off, (size_t)sb.st_size - off);

		assert_true(n > 0);
		off += (size_t)n;
	}
	close(fd);
	*len = off;
	return buf;
}

struct dirs {
	char root[64];
	char path[NDIRS][96];
	const char *ptr[NDIRS];
};

/* Roots still on disk, so a failed test (cmocka longjmps out of it) does
 * not leave its directories behind: the group teardown removes them. */
static char live_roots[8][64];

static void dirs_make(struct dirs *d)
{
	unsigned i;

	strcpy(d->root, "/tmp/tg-pipe-XXXXXX");
	assert_non_null(mkdtemp(d->root));
	for (i = 0; i < 8; i++) {
		if (!live_roots[i][0]) {
			strcpy(live_roots[i], d->root);
			break;
		}
	}
	for (i = 0; i < NDIRS; i++) {
		snprintf(d->path[i], sizeof(d->path[i]), "%s/d%02u", d->root, i);
		assert_int_equal(mkdir(d->path[i], 0700), 0);
		d->ptr[i] = d->path[i];
	}
}

static int rm_one(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(p);
}

static void rm_tree(char *root)
{
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	root[0] = '\0';
}

static void dirs_free(struct dirs *d)
{
	unsigned i;

	for (i = 0; i < 8; i++)
		if (strcmp(live_roots[i], d->root) == 0)
			live_roots[i][0] = '\0';
	rm_tree(d->root);
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

/* Regular files anywhere under the shard directories. */
static unsigned count_files(const struct dirs *d)
{
	nfiles = 0;
	nftw(d->root, count_one, 16, FTW_PHYS);
	return nfiles;
}

/* Delete up to max shard files of (org, id); returns how many. */
static unsigned drop_shards(const struct dirs *d, const struct tg_org_id *org,
			    const struct tg_chunk_id *id, unsigned max)
{
	char oh[TG_HEX_ID_LEN + 1], ih[TG_HEX_ID_LEN + 1], p[256];
	unsigned i, n = 0;

	tg_id_to_hex(org, oh);
	tg_id_to_hex(id, ih);
	for (i = 0; i < NDIRS && n < max; i++) {
		snprintf(p, sizeof(p), "%s/%s/%.2s/%s", d->path[i], oh, ih, ih);
		if (unlink(p) == 0)
			n++;
	}
	return n;
}

/* ---- igzip ---- */

static const char lorem[] =
	"Chunks of backup data are often text: logs, mail, source, documents. "
	"They compress well, and igzip at level 1 is fast enough for the gateway. ";

static uint8_t *make_text(size_t len)
{
	uint8_t *p = malloc(len);
	size_t i;

	assert_non_null(p);
	for (i = 0; i < len; i++)
		p[i] = (uint8_t)lorem[(i * 7 + i / 97) % (sizeof(lorem) - 1)];
	return p;
}

static void test_igzip_round_trips_every_level(void **state)
{
	size_t len = 300000, cap = len + 1024;
	uint8_t *src = make_text(len), *z = malloc(cap), *out = malloc(len);
	int level, err;

	(void)state;
	assert_non_null(z);
	assert_non_null(out);
	for (level = 0; level <= 3; level++) {
		struct tg_comp *c = tg_comp_create(level, &err);
		long n;

		assert_non_null(c);
		n = tg_comp_compress(c, src, len, z, len - 1);
		assert_true(n > 0);
		assert_true((size_t)n < len / 2);
		memset(out, 0, len);
		assert_int_equal(tg_comp_decompress(z, (size_t)n, out, len), 0);
		assert_memory_equal(out, src, len);
		tg_comp_destroy(c);
	}
	free(src);
	free(z);
	free(out);
}

static void test_igzip_create_rejects_bad_level(void **state)
{
	int err = 0;

	(void)state;
	assert_null(tg_comp_create(-1, &err));
	assert_int_equal(err, -EINVAL);
	assert_null(tg_comp_create(4, &err));
	assert_int_equal(err, -EINVAL);
}

static void test_igzip_incompressible_is_enospc(void **state)
{
	size_t len = 100000;
	uint8_t *src = malloc(len), *z = malloc(len);
	int err;
	struct tg_comp *c = tg_comp_create(1, &err);

	(void)state;
	assert_non_null(c);
	fill_random(src, len);
	assert_int_equal(tg_comp_compress(c, src, len, z, len - 1), -ENOSPC);
	/* ... and the same context still works for the next chunk */
	free(src);
	src = make_text(len);
	assert_true(tg_comp_compress(c, src, len, z, len - 1) > 0);
	tg_comp_destroy(c);
	free(src);
	free(z);
}

static void test_igzip_rejects_wrong_length_truncation_and_garbage(void **state)
{
	size_t len = 50000;
	uint8_t *src = make_text(len), z[60000], *out = malloc(len + 64);
	long n;
	int err, i;
	struct tg_comp *c = tg_comp_create(1, &err);

	(void)state;
	assert_non_null(c);
	n = tg_comp_compress(c, src, len, z, sizeof(z) - 8);
	assert_true(n > 8);

	/* Stream longer than out_len: -EBADMSG and not one byte past it. */
	memset(out, 0xAB, len + 64);
	assert_int_equal(tg_comp_decompress(z, (size_t)n, out, len - 1), -EBADMSG);
	for (i = 0; i < 65; i++)
		assert_int_equal(out[len - 1 + (size_t)i], 0xAB);
	/* Stream shorter than out_len. */
	assert_int_equal(tg_comp_decompress(z, (size_t)n, out, len + 1), -EBADMSG);
	/* Truncated stream. */
	assert_int_equal(tg_comp_decompress(z, (size_t)n - 5, out, len), -EBADMSG);
	/* Trailing garbage after the final block. */
	memset(z + n, 0x42, 8);
	assert_int_equal(tg_comp_decompress(z, (size_t)n + 8, out, len), -EBADMSG);
	/* Empty input and zero-length output. */
	assert_int_equal(tg_comp_decompress(z, 0, out, len), -EBADMSG);
	assert_int_equal(tg_comp_decompress(z, (size_t)n, out, 0), -EBADMSG);
	/* Still fine as it was. */
	assert_int_equal(tg_comp_decompress(z, (size_t)n, out, len), 0);
	assert_memory_equal(out, src, len);

	/* Random bytes never crash, and never pass as a stream of this length. */
	for (i = 0; i < 200; i++) {
		fill_random(z, sizeof(z));
		assert_int_equal(tg_comp_decompress(z, 1 + (size_t)i * 37, out, len), -EBADMSG);
	}
	tg_comp_destroy(c);
	free(src);
	free(out);
}

/* ---- policy strings ---- */

static void test_policy_parse_accepts_and_rejects(void **state)
{
	static const struct {
		const char *s;
		int ok;
		bool compress;
		uint8_t level, k, m;
	} t[] = {
		{ "compress", 1, true, 1, 0, 0 },
		{ "compress:0", 1, true, 0, 0, 0 },
		{ "compress:3", 1, true, 3, 0, 0 },
		{ "ec:4+2", 1, false, 1, 4, 2 },
		{ "ec:8+3", 1, false, 1, 8, 3 },
		{ "ec:2+1", 1, false, 1, 2, 1 },
		{ "ec:16+4", 1, false, 1, 16, 4 },
		{ "compress+ec:8+3", 1, true, 1, 8, 3 },
		{ "compress:2+ec:10+4", 1, true, 2, 10, 4 },
		{ "ec:1+1", 0, 0, 0, 0, 0 },
		{ "ec:17+1", 0, 0, 0, 0, 0 },
		{ "ec:8+0", 0, 0, 0, 0, 0 },
		{ "ec:8+5", 0, 0, 0, 0, 0 },
		{ "ec:8+3x", 0, 0, 0, 0, 0 },
		{ "ec:08+3", 0, 0, 0, 0, 0 },
		{ "ec:8+03", 0, 0, 0, 0, 0 },
		{ "ec:0+1", 0, 0, 0, 0, 0 },
		{ "ec:+3", 0, 0, 0, 0, 0 },
		{ "ec:8+", 0, 0, 0, 0, 0 },
		{ "ec:8", 0, 0, 0, 0, 0 },
		{ "ec:", 0, 0, 0, 0, 0 },
		{ "ec:-8+3", 0, 0, 0, 0, 0 },
		{ "ec:8+-3", 0, 0, 0, 0, 0 },
		{ "ec: 8+3", 0, 0, 0, 0, 0 },
		{ "ec:8 +3", 0, 0, 0, 0, 0 },
		{ " compress", 0, 0, 0, 0, 0 },
		{ "compress ", 0, 0, 0, 0, 0 },
		{ "ec:4294967298+3", 0, 0, 0, 0, 0 },
		{ "ec:99999999999999999999999+1", 0, 0, 0, 0, 0 },
		{ "compress+", 0, 0, 0, 0, 0 },
		{ "compress+compress", 0, 0, 0, 0, 0 },
		{ "compress:4", 0, 0, 0, 0, 0 },
		{ "compress:01", 0, 0, 0, 0, 0 },
		{ "compress:", 0, 0, 0, 0, 0 },
		{ "ec:8+3+compress", 0, 0, 0, 0, 0 },
		{ "Compress", 0, 0, 0, 0, 0 },
		{ "compressed", 0, 0, 0, 0, 0 },
		{ "raw", 0, 0, 0, 0, 0 },
		{ "", 0, 0, 0, 0, 0 },
		{ "compress+ec:8+3compress+ec:8+3", 0, 0, 0, 0, 0 },
	};
	unsigned i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct tg_policy p = { .compress = true, .level = 9, .k = 99, .m = 99 };
		int ret = tg_policy_parse(t[i].s, &p);

		if (!t[i].ok) {
			if (ret != -EINVAL)
				fail_msg("accepted \"%s\"", t[i].s);
			continue;
		}
		if (ret != 0)
			fail_msg("rejected \"%s\"", t[i].s);
		assert_int_equal(p.compress, t[i].compress);
		if (p.compress)
			assert_int_equal(p.level, t[i].level);
		assert_int_equal(p.k, t[i].k);
		if (p.k)
			assert_int_equal(p.m, t[i].m);
	}
	assert_int_equal(tg_policy_parse(NULL, &(struct tg_policy){ 0 }), -EINVAL);
}

static void test_policy_format_is_canonical_and_round_trips(void **state)
{
	static const char *const in[] = { "compress", "compress:0", "compress:3", "ec:4+2",
					  "ec:16+4", "compress+ec:8+3", "compress:2+ec:2+1" };
	char buf[TG_POLICY_STR_MAX];
	struct tg_policy p, q;
	unsigned i;

	(void)state;
	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		assert_int_equal(tg_policy_parse(in[i], &p), 0);
		assert_int_equal(tg_policy_format(&p, buf, sizeof(buf)), (int)strlen(in[i]));
		assert_string_equal(buf, in[i]);
		assert_int_equal(tg_policy_parse(buf, &q), 0);
		assert_memory_equal(&p, &q, sizeof(p));
	}
	assert_int_equal(tg_policy_parse("compress:1+ec:8+3", &p), 0);
	assert_int_equal(tg_policy_format(&p, buf, sizeof(buf)), 15);
	assert_string_equal(buf, "compress+ec:8+3");
	assert_int_equal(tg_policy_format(&p, buf, 15), -ENOSPC);
	p = (struct tg_policy){ .compress = false, .k = 0 };
	assert_int_equal(tg_policy_format(&p, buf, sizeof(buf)), -EINVAL);
	p = (struct tg_policy){ .compress = false, .k = 17, .m = 1 };
	assert_int_equal(tg_policy_format(&p, buf, sizeof(buf)), -EINVAL);
}

/* ---- encode: where the shards point ---- */

static void test_encode_shards_alias_data_only_when_it_has_room(void **state)
{
	size_t len = 100000, cap = len + 64 * TG_EC_K_MAX;
	uint8_t *data = malloc(cap), *copy = malloc(len);
	struct tg_policy pol;
	struct tg_chunk_id id;
	struct tg_obj obj;
	int err;
	struct tg_pipe *p = tg_pipe_create(MAX_CHUNK, &err);

	(void)state;
	assert_non_null(p);
	fill_random(data, len);
	memcpy(copy, data, len);
	tg_chunk_hash(data, len, &id);
	assert_int_equal(tg_policy_parse("ec:4+2", &pol), 0);

	/* Room for K * shard_len: data shards are the caller's buffer. */
	assert_int_equal(tg_pipe_encode(p, &pol, &id, data, len, cap, &obj), 0);
	assert_ptr_equal(obj.shards[0], data);
	assert_ptr_equal(obj.shards[1], data + obj.meta.shard_len);
	assert_int_equal(obj.meta.k, 4);
	assert_int_equal(obj.meta.m, 2);
	assert_int_equal(obj.meta.enc, TG_ENC_RAW);
	assert_true((size_t)obj.meta.shard_len * 4 >= len);
	assert_memory_equal(data, copy, len);

	/* No room: shards are scratch, with the same bytes. */
	assert_int_equal(tg_pipe_encode(p, &pol, &id, data, len, len, &obj), 0);
	assert_true(obj.shards[0] < data || obj.shards[0] >= data + cap);
	assert_memory_equal(obj.shards[0], copy, obj.meta.shard_len);
	assert_memory_equal(obj.shards[3], copy + 3 * obj.meta.shard_len,
			    len - 3 * obj.meta.shard_len);

	/* No EC: one shard, the payload itself. */
	assert_int_equal(tg_policy_parse("compress", &pol), 0);
	assert_int_equal(tg_pipe_encode(p, &pol, &id, data, len, len, &obj), 0);
	assert_int_equal(obj.meta.k, 1);
	assert_int_equal(obj.meta.m, 0);
	assert_int_equal(obj.meta.enc, TG_ENC_RAW); /* random: did not shrink */
	assert_int_equal(obj.meta.shard_len, len);
	assert_ptr_equal(obj.shards[0], data);
	assert_null(obj.shards[1]);

	/* Wrong id: refused before anything else. */
	data[len / 2] ^= 1;
	assert_int_equal(tg_pipe_encode(p, &pol, &id, data, len, cap, &obj), -EBADMSG);
	tg_pipe_destroy(p);
	free(data);
	free(copy);
}

static void test_decode_rejects_bad_payloads(void **state)
{
	size_t len = 200000;
	uint8_t *data = make_text(len), *out = malloc(len), *payload;
	struct tg_policy pol;
	struct tg_chunk_id id;
	struct tg_obj obj;
	struct tg_obj_meta meta;
	int err;
	struct tg_pipe *p = tg_pipe_create(MAX_CHUNK, &err);

	(void)state;
	assert_non_null(p);
	tg_chunk_hash(data, len, &id);
	assert_int_equal(tg_policy_parse("compress", &pol), 0);
	assert_int_equal(tg_pipe_encode(p, &pol, &id, data, len, len, &obj), 0);
	assert_int_equal(obj.meta.enc, TG_ENC_IGZIP);
	meta = obj.meta;
	payload = malloc(meta.enc_len);
	memcpy(payload, obj.shards[0], meta.enc_len);

	assert_int_equal(tg_pipe_decode(p, &meta, payload, out, len), 0);
	assert_memory_equal(out, data, len);
	assert_int_equal(tg_pipe_decode(p, &meta, payload, out, len - 1), -ENOSPC);
	meta.enc = 7;
	assert_int_equal(tg_pipe_decode(p, &meta, payload, out, len), -EBADMSG);
	meta = obj.meta;
	meta.id.b[0] ^= 1; /* decompresses fine, wrong chunk */
	assert_int_equal(tg_pipe_decode(p, &meta, payload, out, len), -EBADMSG);
	meta = obj.meta;
	payload[meta.enc_len / 2] ^= 0x10;
	assert_int_equal(tg_pipe_decode(p, &meta, payload, out, len), -EBADMSG);
	/* A raw payload with one flipped bit. */
	meta.enc = TG_ENC_RAW;
	meta.enc_len = meta.orig_len;
	data[5] ^= 1;
	assert_int_equal(tg_pipe_decode(p, &meta, data, out, len), -EBADMSG);
	tg_pipe_destroy(p);
	free(payload);
	free(data);
	free(out);
}

/* ---- real files, every policy, through a real dir store ---- */

enum kind { TEXT, BINARY, RANDOM };

struct input {
	const char *name;
	enum kind kind;
	uint8_t *buf;
	size_t len;
};

#define MAX_INPUTS 64
#define MAX_SEEN 256

static const char *const text_globs[] = {
	"/usr/share/common-licenses/*",
	"/usr/share/dict/*",
	"/usr/share/perl/5.*/Unicode/Collate/allkeys.txt",
	"/usr/share/vim/vim*/doc/version8.txt",
};

static const char *const binary_files[] = {
	"/usr/lib/x86_64-linux-gnu/libc.so.6",
	"/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
};

static struct input inputs[MAX_INPUTS];
static unsigned ninputs;

static void add_input(const char *path, enum kind kind)
{
	size_t len;
	uint8_t *buf;

	if (ninputs == MAX_INPUTS)
		return;
	buf = read_file(path, &len);
	if (!buf)
		return; /* missing on this machine: skip */
	inputs[ninputs++] = (struct input){ strdup(path), kind, buf, len };
}

static int inputs_load(void **state)
{
	unsigned i;
	size_t j;

	(void)state;
	for (i = 0; i < sizeof(text_globs) / sizeof(text_globs[0]); i++) {
		glob_t g;

		if (glob(text_globs[i], 0, NULL, &g) != 0)
			continue;
		for (j = 0; j < g.gl_pathc; j++)
			add_input(g.gl_pathv[j], TEXT);
		globfree(&g);
	}
	for (i = 0; i < sizeof(binary_files) / sizeof(binary_files[0]); i++)
		add_input(binary_files[i], BINARY);
	if (ninputs < MAX_INPUTS) {
		struct input *in = &inputs[ninputs++];

		in->name = strdup("random");
		in->kind = RANDOM;
		in->len = 2 * MAX_CHUNK + 12345;
		in->buf = malloc(in->len);
		assert_non_null(in->buf);
		fill_random(in->buf, in->len);
	}
	return 0;
}

static int inputs_free(void **state)
{
	unsigned i;

	(void)state;
	for (i = 0; i < 8; i++)
		if (live_roots[i][0])
			rm_tree(live_roots[i]);
	for (i = 0; i < ninputs; i++) {
		free((void *)inputs[i].name);
		free(inputs[i].buf);
	}
	return 0;
}

static bool seen_add(struct tg_chunk_id *seen, unsigned *nseen, const struct tg_chunk_id *id)
{
	unsigned i;

	for (i = 0; i < *nseen; i++)
		if (tg_id_eq(&seen[i], id))
			return true;
	assert_true(*nseen < MAX_SEEN);
	seen[(*nseen)++] = *id;
	return false;
}

static void run_policy(const char *policy)
{
	struct tg_chunk_id *seen = calloc(MAX_SEEN, sizeof(*seen));
	uint8_t *chunk = malloc(MAX_CHUNK + 64 * TG_EC_K_MAX), *out = malloc(MAX_CHUNK);
	unsigned i, nseen = 0, nchunks = 0, ntext = 0, nrand = 0;
	struct tg_policy pol;
	struct tg_dedup *dd;
	struct tg_store *st;
	struct tg_pipe *p;
	struct dirs d;
	int err;

	assert_non_null(seen);
	assert_non_null(chunk);
	assert_non_null(out);
	assert_true(ninputs >= 3);
	assert_int_equal(tg_policy_parse(policy, &pol), 0);
	dirs_make(&d);
	st = tg_store_dir_open(d.ptr, NDIRS, &err);
	assert_non_null(st);
	p = tg_pipe_create(MAX_CHUNK, &err);
	assert_non_null(p);
	dd = tg_dedup_create(1024, &err);
	assert_non_null(dd);

	for (i = 0; i < ninputs; i++) {
		const struct input *in = &inputs[i];
		size_t off;

		for (off = 0; off < in->len; off += MAX_CHUNK) {
			size_t len = in->len - off < MAX_CHUNK ? in->len - off : MAX_CHUNK;
			/* Alternate the zero-copy and the copying encode. */
			size_t cap = (nchunks & 1) ? len : MAX_CHUNK + 64 * TG_EC_K_MAX;
			struct tg_store_report rep;
			struct tg_ingest_res res;
			struct tg_chunk_id id;
			size_t got = 0;
			bool dup;

			nchunks++;
			memcpy(chunk, in->buf + off, len);
			tg_chunk_hash(chunk, len, &id);
			dup = seen_add(seen, &nseen, &id);
			err = tg_pipe_ingest(p, st, dd, &org_a, &pol, &id, chunk, len, cap, &res);
			if (err)
				fail_msg("%s: ingest %s @%zu: %d", policy, in->name, off, err);
			if (dup) {
				assert_int_equal(res.status, TG_INGEST_DUP);
			} else {
				assert_int_equal(res.status, TG_INGEST_STORED);
				if (in->kind == TEXT && pol.compress && len > 256) {
					if (res.enc != TG_ENC_IGZIP || res.stored_bytes >= len)
						fail_msg("%s: %s not compressed", policy, in->name);
					ntext++;
				} else if (in->kind == RANDOM || !pol.compress) {
					assert_int_equal(res.enc, TG_ENC_RAW);
					assert_int_equal(res.stored_bytes, len);
					nrand += in->kind == RANDOM;
				}
			}

			/* The first chunk of each file also survives losing M shards. */
			if (off == 0 && pol.k && !dup)
				assert_int_equal(drop_shards(&d, &org_a, &id, pol.m), pol.m);

			memset(out, 0, len);
			memset(&rep, 0xff, sizeof(rep));
			err = tg_pipe_read(p, st, &org_a, &id, out, MAX_CHUNK, &got, &rep);
			if (err)
				fail_msg("%s: read %s @%zu: %d", policy, in->name, off, err);
			assert_int_equal(got, len);
			assert_memory_equal(out, in->buf + off, len);
			if (off == 0 && pol.k && !dup) {
				assert_int_equal(__builtin_popcount(rep.missing), pol.m);
				/* Lost data shards were rebuilt (parity only
				 * if the store chose to); nothing else was. */
				uint32_t data_mask = (1u << pol.k) - 1;

				assert_int_equal(rep.missing & data_mask, rep.rebuilt & data_mask);
				assert_int_equal(rep.rebuilt & ~rep.missing, 0);
			}
		}
	}
	if (pol.compress)
		assert_true(ntext > 0);
	assert_true(nrand > 0 || pol.compress);

	tg_dedup_destroy(dd);
	tg_pipe_destroy(p);
	tg_store_close(st);
	dirs_free(&d);
	free(seen);
	free(chunk);
	free(out);
}

static void test_policy_compress_stores_and_reads_real_files(void **state)
{
	(void)state;
	run_policy("compress");
}

static void test_policy_ec_4p2_stores_and_reads_real_files(void **state)
{
	(void)state;
	run_policy("ec:4+2");
}

static void test_policy_ec_8p3_stores_and_reads_real_files(void **state)
{
	(void)state;
	run_policy("ec:8+3");
}

static void test_policy_compress_ec_8p3_stores_and_reads_real_files(void **state)
{
	(void)state;
	run_policy("compress+ec:8+3");
}

static void test_policy_compress_ec_16p4_stores_and_reads_real_files(void **state)
{
	(void)state;
	run_policy("compress+ec:16+4");
}

static void test_chunk_not_matching_its_id_is_refused_and_not_stored(void **state)
{
	static const char *const policies[] = { "compress", "ec:8+3", "compress+ec:16+4" };
	size_t len = 300000;
	uint8_t *data = make_text(len), *out = malloc(len);
	struct tg_ingest_res res;
	struct tg_chunk_id id;
	struct tg_policy pol;
	struct tg_dedup *dd;
	struct tg_store *st;
	struct tg_pipe *p;
	struct dirs d;
	unsigned i;
	size_t got;
	int err;

	(void)state;
	dirs_make(&d);
	st = tg_store_dir_open(d.ptr, NDIRS, &err);
	assert_non_null(st);
	p = tg_pipe_create(MAX_CHUNK, &err);
	assert_non_null(p);
	dd = tg_dedup_create(64, &err);
	assert_non_null(dd);
	tg_chunk_hash(data, len, &id);
	data[len - 1] ^= 0x01; /* one bit off */

	for (i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
		assert_int_equal(tg_policy_parse(policies[i], &pol), 0);
		assert_int_equal(tg_pipe_ingest(p, st, dd, &org_a, &pol, &id, data, len, len, &res),
				 -EBADMSG);
		assert_int_equal(count_files(&d), 0);
		assert_int_equal(tg_store_exists(st, &org_a, &id), 0);
		assert_false(tg_dedup_lookup(dd, &org_a, &id));
		assert_int_equal(tg_pipe_read(p, st, &org_a, &id, out, len, &got, NULL), -ENOENT);
	}
	/* The right bytes under the same id go through. */
	data[len - 1] ^= 0x01;
	assert_int_equal(tg_pipe_ingest(p, st, dd, &org_a, &pol, &id, data, len, len, &res), 0);
	assert_int_equal(res.status, TG_INGEST_STORED);
	assert_int_equal(count_files(&d), 20);

	tg_dedup_destroy(dd);
	tg_pipe_destroy(p);
	tg_store_close(st);
	dirs_free(&d);
	free(data);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_igzip_round_trips_every_level),
		cmocka_unit_test(test_igzip_create_rejects_bad_level),
		cmocka_unit_test(test_igzip_incompressible_is_enospc),
		cmocka_unit_test(test_igzip_rejects_wrong_length_truncation_and_garbage),
		cmocka_unit_test(test_policy_parse_accepts_and_rejects),
		cmocka_unit_test(test_policy_format_is_canonical_and_round_trips),
		cmocka_unit_test(test_encode_shards_alias_data_only_when_it_has_room),
		cmocka_unit_test(test_decode_rejects_bad_payloads),
		cmocka_unit_test(test_policy_compress_stores_and_reads_real_files),
		cmocka_unit_test(test_policy_ec_4p2_stores_and_reads_real_files),
		cmocka_unit_test(test_policy_ec_8p3_stores_and_reads_real_files),
		cmocka_unit_test(test_policy_compress_ec_8p3_stores_and_reads_real_files),
		cmocka_unit_test(test_policy_compress_ec_16p4_stores_and_reads_real_files),
		cmocka_unit_test(test_chunk_not_matching_its_id_is_refused_and_not_stored),
	};

	return cmocka_run_group_tests(tests, inputs_load, inputs_free);
}
