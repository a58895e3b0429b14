/*
 * test_manifest.c - the manifest builder, its strict parser and the root.
 *
 * A manifest is hostile input on restore: these tests feed the parser bytes
 * written by an encoder of their own (so a builder bug cannot hide a parser
 * bug), truncate and mutate valid streams under ASan, and check that every
 * path the parser ever hands out is one a restore may safely create.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tg_manifest.h"

#define HDR_FIXED   22u
#define ENTRY_FIXED 42u

/* ---- an encoder independent of manifest.c ---- */

static void be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void be64(uint8_t *p, uint64_t v)
{
	be32(p, (uint32_t)(v >> 32));
	be32(p + 4, (uint32_t)v);
}

struct raw {
	uint8_t type, reserved;
	const char *path;
	size_t path_len;
	uint32_t mode;
	uint64_t size;
	uint32_t nsec;
	const char *link;
	size_t link_len;
	uint32_t nchunks;    /* as written in the count field */
	uint32_t nwritten;   /* chunk records actually written */
	uint32_t chunk_len;  /* every chunk's length */
};

static size_t raw_header(uint8_t *p, const char *label, uint32_t nfiles)
{
	size_t ll = label ? strlen(label) : 0;

	be32(p, TG_MF_MAGIC);
	be16(p + 4, TG_MF_VERSION);
	be16(p + 6, 0);
	be64(p + 8, 1700000000);
	be16(p + 16, (uint16_t)ll);
	memcpy(p + 18, label ? label : "", ll);
	be32(p + 18 + ll, nfiles);
	return HDR_FIXED + ll;
}

static size_t raw_entry(uint8_t *p, const struct raw *r)
{
	size_t off = ENTRY_FIXED;

	p[0] = r->type;
	p[1] = r->reserved;
	be16(p + 2, (uint16_t)r->path_len);
	be32(p + 4, r->mode);
	be32(p + 8, 1000);
	be32(p + 12, 1000);
	be64(p + 16, r->size);
	be64(p + 24, 1600000000);
	be32(p + 32, r->nsec);
	be16(p + 36, (uint16_t)r->link_len);
	be32(p + 38, r->nchunks);
	memcpy(p + off, r->path, r->path_len);
	off += r->path_len;
	if (r->link_len)
		memcpy(p + off, r->link, r->link_len);
	off += r->link_len;
	for (uint32_t i = 0; i < r->nwritten; i++) {
		memset(p + off, (int)(i + 1), 16);
		be32(p + off + 16, r->chunk_len);
		off += 20;
	}
	return off;
}

static struct raw reg_file(const char *path, uint32_t nchunks, uint32_t clen)
{
	struct raw r = {
		.type = TG_MF_REG, .path = path, .path_len = strlen(path), .mode = 0644,
		.size = (uint64_t)nchunks * clen, .nchunks = nchunks, .nwritten = nchunks,
		.chunk_len = clen,
	};
	return r;
}

/* Parse a whole stream from an exactly-sized heap copy (so ASan sees any
 * over-read); returns files seen, or the negative error. */
static int parse_all(const uint8_t *buf, size_t len, const char **why)
{
	uint8_t *copy = malloc(len ? len : 1);
	struct tg_mf_iter it;
	struct tg_mf_file f;
	int rc, n = 0;

	assert_non_null(copy);
	memcpy(copy, buf, len);
	rc = tg_mf_iter_init(&it, copy, len);
	if (rc == 0)
		while ((rc = tg_mf_iter_next(&it, &f)) == 1)
			n++;
	if (why)
		*why = it.why;
	free(copy);
	return rc < 0 ? rc : n;
}

static int parse_one_raw(const struct raw *r)
{
	uint8_t *buf = calloc(1, 64 + ENTRY_FIXED + 2 * TG_MF_PATH_MAX + 20 * 64);
	size_t len;
	int rc;

	assert_non_null(buf);
	len = raw_header(buf, NULL, 1);
	len += raw_entry(buf + len, r);
	rc = parse_all(buf, len, NULL);
	free(buf);
	return rc;
}

/* The builder's view of the same raw entry. */
static int build_one_raw(const struct raw *r)
{
	struct tg_chunk_ref refs[64];
	struct tg_mf_builder *b;
	struct tg_mf_file f = {
		.path = r->path, .path_len = (uint16_t)r->path_len, .type = r->type,
		.mode = r->mode, .size = r->size, .mtime_nsec = r->nsec, .link = r->link,
		.link_len = (uint16_t)r->link_len, .nchunks = r->nchunks,
	};
	int err = 0, rc;

	assert_true(r->nwritten <= 64);
	for (uint32_t i = 0; i < r->nwritten; i++) {
		memset(refs[i].id, (int)(i + 1), 16);
		refs[i].len = r->chunk_len;
	}
	b = tg_mf_builder_create(NULL, 0, &err);
	assert_non_null(b);
	rc = tg_mf_add(b, &f, r->nchunks == r->nwritten ? refs : NULL);
	tg_mf_builder_destroy(b);
	return rc;
}

/* ---- an independent judge of what a restore may create ---- */

static bool path_is_safe(const char *p, size_t len)
{
	char *s, *cur, *tok;
	bool ok = true;

	if (len < 1 || len > TG_MF_PATH_MAX || memchr(p, '\0', len) || p[0] == '/')
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return false;
	s = strndup(p, len);
	assert_non_null(s);
	cur = s;
	while ((tok = strsep(&cur, "/")) != NULL)
		if (!*tok || !strcmp(tok, ".") || !strcmp(tok, ".."))
			ok = false;
	free(s);
	return ok;
}

/* ---- round trips ---- */

static void test_round_trip_keeps_every_field(void **state)
{
	static char longpath[TG_MF_PATH_MAX + 1];
	struct tg_chunk_ref many[1000], one = { .len = 12345 };
	struct tg_mf_builder *b;
	struct tg_mf_file in[7], out;
	const struct tg_chunk_ref *refs[7];
	struct tg_mf_iter it;
	const uint8_t *buf;
	uint64_t logical, want_logical = 0;
	uint32_t nfiles;
	size_t len;
	int err = 0;

	(void)state;
	/* The longest path allowed: 255-byte components joined by '/'. */
	memset(longpath, 'x', TG_MF_PATH_MAX);
	for (size_t i = 255; i < TG_MF_PATH_MAX; i += 256)
		longpath[i] = '/';
	longpath[TG_MF_PATH_MAX - 1] = 'z';
	memset(one.id, 0xab, 16);
	for (unsigned i = 0; i < 1000; i++) {
		memset(many[i].id, (int)i, 16);
		many[i].id[15] = (uint8_t)(i >> 8);
		many[i].len = 1 + (i * 7919u) % TG_CHUNK_MAX;
	}
	memset(in, 0, sizeof(in));
	in[0] = (struct tg_mf_file){ .path = "empty", .path_len = 5, .type = TG_MF_REG,
				     .mode = 0600, .uid = 7, .gid = 8, .mtime_sec = -5,
				     .mtime_nsec = 999999999 };
	refs[0] = NULL;
	in[1] = (struct tg_mf_file){ .path = "docs/one", .path_len = 8, .type = TG_MF_REG,
				     .mode = 04755, .size = 12345, .nchunks = 1,
				     .mtime_sec = 1700000001 };
	refs[1] = &one;
	in[2] = (struct tg_mf_file){ .path = "data/many.bin", .path_len = 13, .type = TG_MF_REG,
				     .mode = 0644, .uid = 4294967295u, .nchunks = 1000 };
	for (unsigned i = 0; i < 1000; i++)
		in[2].size += many[i].len;
	refs[2] = many;
	in[3] = (struct tg_mf_file){ .path = "docs", .path_len = 4, .type = TG_MF_DIR,
				     .mode = 01777 };
	refs[3] = NULL;
	in[4] = (struct tg_mf_file){ .path = "docs/link", .path_len = 9, .type = TG_MF_LNK,
				     .mode = 0777, .link = "../../etc/x", .link_len = 11 };
	refs[4] = NULL;
	in[5] = (struct tg_mf_file){ .path = longpath, .path_len = TG_MF_PATH_MAX,
				     .type = TG_MF_DIR, .mode = 0755 };
	refs[5] = NULL;
	in[6] = (struct tg_mf_file){ .path = "caf\xc3\xa9/..x/.hidden", .path_len = 17,
				     .type = TG_MF_REG, .mode = 0 };
	refs[6] = NULL;

	b = tg_mf_builder_create("nightly full", 1700000000, &err);
	assert_non_null(b);
	for (unsigned i = 0; i < 7; i++) {
		assert_int_equal(tg_mf_add(b, &in[i], refs[i]), 0);
		if (in[i].type == TG_MF_REG)
			want_logical += in[i].size;
	}
	assert_int_equal(tg_mf_finish(b, &buf, &len, &nfiles, &logical), 0);
	assert_int_equal(nfiles, 7);
	assert_true(logical == want_logical);

	assert_int_equal(tg_mf_iter_init(&it, buf, len), 0);
	assert_int_equal(it.nfiles, 7);
	assert_true(it.created == 1700000000);
	assert_int_equal(it.label_len, 12);
	assert_memory_equal(it.label, "nightly full", 12);
	for (unsigned i = 0; i < 7; i++) {
		assert_int_equal(tg_mf_iter_next(&it, &out), 1);
		assert_int_equal(out.path_len, in[i].path_len);
		assert_memory_equal(out.path, in[i].path, in[i].path_len);
		assert_int_equal(out.type, in[i].type);
		assert_int_equal(out.mode, in[i].mode);
		assert_int_equal(out.uid, in[i].uid);
		assert_int_equal(out.gid, in[i].gid);
		assert_true(out.size == in[i].size);
		assert_true(out.mtime_sec == in[i].mtime_sec);
		assert_int_equal(out.mtime_nsec, in[i].mtime_nsec);
		assert_int_equal(out.link_len, in[i].link_len);
		if (in[i].link_len)
			assert_memory_equal(out.link, in[i].link, in[i].link_len);
		assert_int_equal(out.nchunks, in[i].nchunks);
		for (uint32_t c = 0; c < out.nchunks; c++) {
			struct tg_chunk_ref r;

			tg_mf_chunk(&out, c, &r);
			assert_memory_equal(r.id, refs[i][c].id, 16);
			assert_int_equal(r.len, refs[i][c].len);
		}
	}
	assert_int_equal(tg_mf_iter_next(&it, &out), 0);
	tg_mf_builder_destroy(b);
}

static void test_empty_manifest_round_trips(void **state)
{
	struct tg_mf_builder *b;
	struct tg_mf_iter it;
	struct tg_mf_file f;
	const uint8_t *buf;
	size_t len;
	uint32_t n = 99;
	int err;

	(void)state;
	b = tg_mf_builder_create(NULL, -1, &err);
	assert_non_null(b);
	assert_int_equal(tg_mf_finish(b, &buf, &len, &n, NULL), 0);
	assert_int_equal(n, 0);
	assert_int_equal(len, HDR_FIXED);
	assert_int_equal(tg_mf_iter_init(&it, buf, len), 0);
	assert_true(it.created == -1);
	assert_null(it.label);
	assert_int_equal(tg_mf_iter_next(&it, &f), 0);
	tg_mf_builder_destroy(b);
}

static void test_builder_refuses_bad_label(void **state)
{
	char big[TG_NAME_MAX + 2];
	int err = 0;

	(void)state;
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_null(tg_mf_builder_create(big, 0, &err));
	assert_int_equal(err, -EINVAL);
	err = 0;
	assert_null(tg_mf_builder_create("bad\x1b[31m", 0, &err));
	assert_int_equal(err, -EINVAL);
	big[TG_NAME_MAX] = '\0';
	{
		struct tg_mf_builder *b = tg_mf_builder_create(big, 0, &err);

		assert_non_null(b);
		tg_mf_builder_destroy(b);
	}
}

static void test_root_round_trip(void **state)
{
	struct tg_chunk_ref p[3] = { { .len = TG_CHUNK_MAX }, { .len = 1 }, { .len = 777 } };
	uint8_t buf[20 + 3 * 20];
	const uint8_t *pieces;
	uint32_t n;
	uint64_t mlen;
	long len;

	(void)state;
	for (int i = 0; i < 3; i++)
		memset(p[i].id, 0x10 + i, 16);
	len = tg_mf_root_build(buf, sizeof(buf), p, 3, (uint64_t)TG_CHUNK_MAX + 1 + 777);
	assert_int_equal(len, 80);
	assert_int_equal(tg_mf_root_parse(buf, (size_t)len, &pieces, &n, &mlen), 0);
	assert_int_equal(n, 3);
	assert_true(mlen == (uint64_t)TG_CHUNK_MAX + 778);
	for (uint32_t i = 0; i < 3; i++) {
		struct tg_chunk_ref r;

		tg_mf_root_piece(pieces, i, &r);
		assert_memory_equal(r.id, p[i].id, 16);
		assert_int_equal(r.len, p[i].len);
	}
	assert_int_equal(tg_mf_root_build(buf, sizeof(buf) - 1, p, 3,
					  (uint64_t)TG_CHUNK_MAX + 778), -ENOSPC);
}

/* ---- rejects ---- */

/* A small valid manifest from the builder, used as a base for patching. */
static uint8_t *valid_manifest(size_t *len)
{
	struct tg_chunk_ref refs[3] = { { .len = 100 }, { .len = 200 }, { .len = 300 } };
	struct tg_mf_file f[4] = {
		{ .path = "a/b/file", .path_len = 8, .type = TG_MF_REG, .mode = 0644,
		  .size = 600, .nchunks = 3 },
		{ .path = "a", .path_len = 1, .type = TG_MF_DIR, .mode = 0755 },
		{ .path = "a/l", .path_len = 3, .type = TG_MF_LNK, .mode = 0777,
		  .link = "b/file", .link_len = 6 },
		{ .path = "zero", .path_len = 4, .type = TG_MF_REG, .mode = 0600 },
	};
	struct tg_mf_builder *b;
	const uint8_t *buf;
	uint8_t *copy;
	int err;

	for (int i = 0; i < 3; i++)
		memset(refs[i].id, 0x30 + i, 16);
	b = tg_mf_builder_create("lbl", 42, &err);
	assert_non_null(b);
	assert_int_equal(tg_mf_add(b, &f[0], refs), 0);
	for (int i = 1; i < 4; i++)
		assert_int_equal(tg_mf_add(b, &f[i], NULL), 0);
	assert_int_equal(tg_mf_finish(b, &buf, len, NULL, NULL), 0);
	copy = malloc(*len);
	assert_non_null(copy);
	memcpy(copy, buf, *len);
	tg_mf_builder_destroy(b);
	return copy;
}

/* Offsets in valid_manifest(): header 25 bytes ("lbl"), first entry next. */
#define VM_NFILES   21u
#define VM_E0       25u

static void test_truncation_at_every_offset_is_badmsg(void **state)
{
	size_t len;
	uint8_t *buf = valid_manifest(&len);

	(void)state;
	assert_int_equal(parse_all(buf, len, NULL), 4);
	for (size_t n = 0; n < len; n++)
		assert_int_equal(parse_all(buf, n, NULL), -EBADMSG);
	free(buf);
}

static void test_bad_magic_version_flags_rejected(void **state)
{
	size_t len;
	uint8_t *buf = valid_manifest(&len);
	const char *why;

	(void)state;
	buf[0] ^= 1;
	assert_int_equal(parse_all(buf, len, &why), -EBADMSG);
	assert_string_equal(why, "bad magic");
	buf[0] ^= 1;
	buf[5] = 2;
	assert_int_equal(parse_all(buf, len, &why), -EBADMSG);
	assert_string_equal(why, "unsupported version");
	buf[5] = 1;
	buf[7] = 1;
	assert_int_equal(parse_all(buf, len, &why), -EBADMSG);
	buf[7] = 0;
	be16(buf + 16, TG_NAME_MAX + 1);
	assert_int_equal(parse_all(buf, len, &why), -EBADMSG);
	be16(buf + 16, 3);
	buf[19] = 0x1b;                    /* escape byte in the label */
	assert_int_equal(parse_all(buf, len, &why), -EBADMSG);
	assert_string_equal(why, "control byte in label");
	buf[19] = 'b';
	assert_int_equal(parse_all(buf, len, NULL), 4);
	free(buf);
}

static void test_nfiles_must_match_the_entries(void **state)
{
	size_t len;
	uint8_t *buf = valid_manifest(&len);
	struct tg_mf_iter it;
	const char *why;

	(void)state;
	be32(buf + VM_NFILES, 0xffffffffu);
	/* Refused at init, before a caller could size anything by it. */
	assert_int_equal(tg_mf_iter_init(&it, buf, len), -EBADMSG);
	be32(buf + VM_NFILES, 5);
	assert_int_equal(parse_all(buf, len, &why), -EBADMSG);
	assert_string_equal(why, "truncated entry");
	be32(buf + VM_NFILES, 3);
	assert_int_equal(parse_all(buf, len, &why), -EBADMSG);
	assert_string_equal(why, "trailing bytes");
	be32(buf + VM_NFILES, 4);
	assert_int_equal(parse_all(buf, len, NULL), 4);
	free(buf);
}

static void test_trailing_bytes_rejected(void **state)
{
	size_t len;
	uint8_t *buf = valid_manifest(&len);
	uint8_t *longer = calloc(1, len + 1);
	const char *why;

	(void)state;
	assert_non_null(longer);
	memcpy(longer, buf, len);
	assert_int_equal(parse_all(longer, len + 1, &why), -EBADMSG);
	assert_string_equal(why, "trailing bytes");
	free(longer);
	free(buf);
}

static void test_nchunks_overflow_and_size_mismatch_rejected(void **state)
{
	size_t len;
	uint8_t *buf = valid_manifest(&len);

	(void)state;
	be32(buf + VM_E0 + 38, 0xffffffffu);
	assert_int_equal(parse_all(buf, len, NULL), -EBADMSG);
	/* In range, but more than the bytes hold: 2^24 * 20 bytes. */
	be32(buf + VM_E0 + 38, TG_MF_CHUNKS_MAX);
	assert_int_equal(parse_all(buf, len, NULL), -EBADMSG);
	be32(buf + VM_E0 + 38, 3);
	be64(buf + VM_E0 + 16, 601);
	assert_int_equal(parse_all(buf, len, NULL), -EBADMSG);
	be64(buf + VM_E0 + 16, 0xffffffffffffffffull);
	assert_int_equal(parse_all(buf, len, NULL), -EBADMSG);
	be64(buf + VM_E0 + 16, 600);
	assert_int_equal(parse_all(buf, len, NULL), 4);
	free(buf);
}

static void test_unsafe_paths_rejected_by_parser_and_builder(void **state)
{
	static const struct {
		const char *p;
		size_t len;
	} bad[] = {
		{ "../x", 4 }, { "a/../../b", 9 }, { "/etc/passwd", 11 }, { "a//b", 4 },
		{ "a/", 2 }, { ".", 1 }, { "..", 2 }, { "a/./b", 5 }, { "a/..", 4 },
		{ "a\0b", 3 }, { "\0", 1 }, { "a\x01" "b", 3 }, { "a\nb", 3 },
		{ "a\x7f", 2 }, { "/", 1 }, { "", 0 },
	};
	static const char *good[] = { "a", "a/b", "..a", "a..", ".hidden", "a/.../b", "a b" };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct raw r = reg_file("", 0, 1);

		r.path = bad[i].p;
		r.path_len = bad[i].len;
		assert_false(path_is_safe(r.path, r.path_len));
		assert_int_equal(parse_one_raw(&r), -EBADMSG);
		assert_int_equal(build_one_raw(&r), -EINVAL);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct raw r = reg_file(good[i], 2, 10);

		assert_int_equal(parse_one_raw(&r), 1);
		assert_int_equal(build_one_raw(&r), 0);
	}
}

static void test_path_longer_than_max_rejected(void **state)
{
	char *p = malloc(TG_MF_PATH_MAX + 1);
	struct raw r;

	(void)state;
	assert_non_null(p);
	memset(p, 'q', TG_MF_PATH_MAX + 1);
	r = reg_file("", 0, 1);
	r.path = p;
	r.path_len = TG_MF_PATH_MAX + 1;
	assert_int_equal(parse_one_raw(&r), -EBADMSG);
	assert_int_equal(build_one_raw(&r), -EINVAL);
	r.path_len = TG_MF_PATH_MAX;
	assert_int_equal(parse_one_raw(&r), 1);
	assert_int_equal(build_one_raw(&r), 0);
	free(p);
}

/* Every field rule, each applied to an otherwise valid entry. */
static void test_field_rules_enforced_by_parser_and_builder(void **state)
{
	struct raw r;

	(void)state;
#define EXPECT_BAD(mut)                                                   \
	do {                                                              \
		r = reg_file("f", 2, 1000);                               \
		mut;                                                      \
		assert_int_equal(parse_one_raw(&r), -EBADMSG);            \
		assert_int_equal(build_one_raw(&r), -EINVAL);             \
	} while (0)
	r = reg_file("f", 2, 1000);
	assert_int_equal(parse_one_raw(&r), 1);
	assert_int_equal(build_one_raw(&r), 0);

	EXPECT_BAD(r.mode = 010000);
	EXPECT_BAD(r.mode = 0xffffffffu);
	EXPECT_BAD(r.type = 0);
	EXPECT_BAD(r.type = 4);
	EXPECT_BAD(r.nsec = 1000000000u);
	EXPECT_BAD((r.chunk_len = 0, r.size = 0));
	EXPECT_BAD((r.chunk_len = TG_CHUNK_MAX + 1, r.size = 2ull * (TG_CHUNK_MAX + 1)));
	EXPECT_BAD(r.size = 1999);
	EXPECT_BAD((r.link = "x", r.link_len = 1));
	/* directories and symlinks carry neither chunks nor size */
	EXPECT_BAD(r.type = TG_MF_DIR);
	EXPECT_BAD((r.type = TG_MF_DIR, r.nchunks = r.nwritten = 0));
	EXPECT_BAD((r.type = TG_MF_LNK, r.nchunks = r.nwritten = 0, r.size = 0));
	EXPECT_BAD((r.type = TG_MF_LNK, r.nchunks = r.nwritten = 0, r.size = 0,
		    r.link = "a\0b", r.link_len = 3));
	EXPECT_BAD((r.type = TG_MF_LNK, r.nchunks = r.nwritten = 0, r.size = 5,
		    r.link = "t", r.link_len = 1));
#undef EXPECT_BAD
	/* the parser alone sees the reserved byte */
	r = reg_file("f", 2, 1000);
	r.reserved = 1;
	assert_int_equal(parse_one_raw(&r), -EBADMSG);
	/* and the builder alone can be handed a count without chunks */
	r = reg_file("f", 2, 1000);
	r.nwritten = 0;
	assert_int_equal(build_one_raw(&r), -EINVAL);
	r = reg_file("f", 0, 1);
	r.nchunks = TG_MF_CHUNKS_MAX + 1;
	assert_int_equal(build_one_raw(&r), -EINVAL);

	r = (struct raw){ .type = TG_MF_LNK, .path = "l", .path_len = 1, .mode = 0777,
			  .link = "/abs/../target", .link_len = 14 };
	assert_int_equal(parse_one_raw(&r), 1);
	assert_int_equal(build_one_raw(&r), 0);
	r = (struct raw){ .type = TG_MF_DIR, .path = "d", .path_len = 1, .mode = 07777 };
	assert_int_equal(parse_one_raw(&r), 1);
	assert_int_equal(build_one_raw(&r), 0);
	r = reg_file("big", 2, TG_CHUNK_MAX);
	assert_int_equal(parse_one_raw(&r), 1);
	assert_int_equal(build_one_raw(&r), 0);
}

static void test_rejected_add_leaves_builder_unchanged(void **state)
{
	struct tg_mf_file bad = { .path = "../x", .path_len = 4, .type = TG_MF_DIR };
	struct tg_mf_file ok = { .path = "x", .path_len = 1, .type = TG_MF_DIR };
	struct tg_mf_builder *b;
	const uint8_t *buf;
	size_t len;
	uint32_t n;
	int err;

	(void)state;
	b = tg_mf_builder_create(NULL, 0, &err);
	assert_non_null(b);
	assert_int_equal(tg_mf_add(b, &ok, NULL), 0);
	assert_int_equal(tg_mf_add(b, &bad, NULL), -EINVAL);
	assert_int_equal(tg_mf_finish(b, &buf, &len, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_int_equal(parse_all(buf, len, NULL), 1);
	tg_mf_builder_destroy(b);
}

static void test_root_rejects(void **state)
{
	struct tg_chunk_ref p[2] = { { .len = 10 }, { .len = 20 } };
	uint8_t buf[60], *big;
	size_t need;

	(void)state;
	assert_int_equal(tg_mf_root_build(buf, sizeof(buf), p, 2, 31), -EINVAL);
	assert_int_equal(tg_mf_root_build(buf, sizeof(buf), p, 0, 0), -EINVAL);
	assert_int_equal(tg_mf_root_build(buf, sizeof(buf), p, TG_MF_PIECES_MAX + 1, 30),
			 -EINVAL);
	p[0].len = 0;
	assert_int_equal(tg_mf_root_build(buf, sizeof(buf), p, 2, 20), -EINVAL);
	p[0].len = TG_CHUNK_MAX + 1;
	assert_int_equal(tg_mf_root_build(buf, sizeof(buf), p, 2, TG_CHUNK_MAX + 21), -EINVAL);
	p[0].len = 10;
	assert_int_equal(tg_mf_root_build(buf, sizeof(buf), p, 2, 30), 60);
	assert_int_equal(tg_mf_root_parse(buf, 60, NULL, NULL, NULL), 0);

	for (size_t n = 0; n < 60; n++) {
		uint8_t *t = malloc(n ? n : 1);

		memcpy(t, buf, n);
		assert_int_equal(tg_mf_root_parse(t, n, NULL, NULL, NULL), -EBADMSG);
		free(t);
	}
	be64(buf + 8, 31);                 /* pieces do not sum */
	assert_int_equal(tg_mf_root_parse(buf, 60, NULL, NULL, NULL), -EBADMSG);
	be64(buf + 8, 30);
	be32(buf + 16, 3);                 /* count beyond the bytes */
	assert_int_equal(tg_mf_root_parse(buf, 60, NULL, NULL, NULL), -EBADMSG);
	be32(buf + 16, 0xffffffffu);
	assert_int_equal(tg_mf_root_parse(buf, 60, NULL, NULL, NULL), -EBADMSG);
	be32(buf + 16, 0);
	assert_int_equal(tg_mf_root_parse(buf, 20, NULL, NULL, NULL), -EBADMSG);
	be32(buf + 16, 2);
	be32(buf + 20 + 16, 0);            /* piece of length 0 */
	be64(buf + 8, 20);
	assert_int_equal(tg_mf_root_parse(buf, 60, NULL, NULL, NULL), -EBADMSG);
	be32(buf + 20 + 16, 10);
	be64(buf + 8, 30);
	buf[7] = 1;                        /* flags */
	assert_int_equal(tg_mf_root_parse(buf, 60, NULL, NULL, NULL), -EBADMSG);
	buf[7] = 0;
	buf[3] ^= 0x20;                    /* magic */
	assert_int_equal(tg_mf_root_parse(buf, 60, NULL, NULL, NULL), -EBADMSG);
	buf[3] ^= 0x20;
	assert_int_equal(tg_mf_root_parse(buf, 60, NULL, NULL, NULL), 0);

	/* The largest root: TG_MF_PIECES_MAX pieces of TG_CHUNK_MAX. */
	need = 20 + (size_t)TG_MF_PIECES_MAX * 20;
	big = malloc(need);
	assert_non_null(big);
	{
		struct tg_chunk_ref *pp = calloc(TG_MF_PIECES_MAX, sizeof(*pp));

		assert_non_null(pp);
		for (uint32_t i = 0; i < TG_MF_PIECES_MAX; i++)
			pp[i].len = TG_CHUNK_MAX;
		assert_int_equal(tg_mf_root_build(big, need, pp, TG_MF_PIECES_MAX,
						  (uint64_t)TG_MF_PIECES_MAX * TG_CHUNK_MAX),
				 (long)need);
		assert_int_equal(tg_mf_root_parse(big, need, NULL, NULL, NULL), 0);
		free(pp);
	}
	free(big);
}

/* ---- mutation ---- */

static uint64_t rng_state;

static uint32_t rnd(void)
{
	/* xorshift64*: deterministic from the seed, so a failure replays. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

static void test_random_mutations_never_yield_unsafe_files(void **state)
{
	static const uint8_t interesting[] = { 0, 1, '.', '/', 0x7f, 0x80, 0xff, 0x0a };
	size_t base_len;
	uint8_t *base = valid_manifest(&base_len);
	unsigned accepted = 0, rejected = 0, files = 0;

	(void)state;
	rng_state = 0x7469646567617465ull; /* "tidegate" */
	for (unsigned iter = 0; iter < 100000; iter++) {
		size_t len = base_len;
		uint8_t *buf = malloc(base_len + 64);
		struct tg_mf_iter it;
		struct tg_mf_file f;
		unsigned nmut = 1 + rnd() % 4;
		int rc;

		assert_non_null(buf);
		memcpy(buf, base, base_len);
		for (unsigned k = 0; k < nmut; k++) {
			size_t at = rnd() % len;

			switch (rnd() % 5) {
			case 0:
				buf[at] ^= (uint8_t)(1u << (rnd() % 8));
				break;
			case 1:
				buf[at] = (uint8_t)rnd();
				break;
			case 2:
				buf[at] = interesting[rnd() % sizeof(interesting)];
				break;
			case 3:
				len = at;
				break;
			default:
				if (len < base_len + 64)
					buf[len++] = (uint8_t)rnd();
				break;
			}
			if (len == 0)
				break;
		}
		{
			/* exact-size copy so ASan catches any read past len */
			uint8_t *exact = malloc(len ? len : 1);

			assert_non_null(exact);
			memcpy(exact, buf, len);
			free(buf);
			buf = exact;
		}
		rc = tg_mf_iter_init(&it, buf, len);
		while (rc == 0 && (rc = tg_mf_iter_next(&it, &f)) == 1) {
			rc = 0;
			uint64_t sum = 0;

			files++;
			assert_true(path_is_safe(f.path, f.path_len));
			assert_true(f.mode <= 07777);
			assert_true(f.mtime_nsec < 1000000000u);
			for (uint32_t c = 0; c < f.nchunks; c++) {
				struct tg_chunk_ref ref;

				tg_mf_chunk(&f, c, &ref);
				assert_true(ref.len >= 1 && ref.len <= TG_CHUNK_MAX);
				sum += ref.len;
			}
			if (f.type == TG_MF_REG)
				assert_true(sum == f.size);
			else
				assert_true(f.size == 0 && f.nchunks == 0);
			if (f.type == TG_MF_LNK)
				assert_true(f.link_len >= 1 && !memchr(f.link, 0, f.link_len));
			else
				assert_int_equal(f.link_len, 0);
		}
		if (rc == 0) {
			accepted++;
		} else {
			assert_int_equal(rc, -EBADMSG);
			rejected++;
		}
		free(buf);
	}
	/* Both outcomes must occur or the loop proved nothing. */
	assert_true(accepted > 1000);
	assert_true(rejected > 1000);
	assert_true(files > 0);
	free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_keeps_every_field),
		cmocka_unit_test(test_empty_manifest_round_trips),
		cmocka_unit_test(test_builder_refuses_bad_label),
		cmocka_unit_test(test_root_round_trip),
		cmocka_unit_test(test_truncation_at_every_offset_is_badmsg),
		cmocka_unit_test(test_bad_magic_version_flags_rejected),
		cmocka_unit_test(test_nfiles_must_match_the_entries),
		cmocka_unit_test(test_trailing_bytes_rejected),
		cmocka_unit_test(test_nchunks_overflow_and_size_mismatch_rejected),
		cmocka_unit_test(test_unsafe_paths_rejected_by_parser_and_builder),
		cmocka_unit_test(test_path_longer_than_max_rejected),
		cmocka_unit_test(test_field_rules_enforced_by_parser_and_builder),
		cmocka_unit_test(test_rejected_add_leaves_builder_unchanged),
		cmocka_unit_test(test_root_rejects),
		cmocka_unit_test(test_random_mutations_never_yield_unsafe_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
