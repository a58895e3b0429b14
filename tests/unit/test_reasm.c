/*
 * test_reasm.c - unit tests for chunk reassembly (dataplane/reasm.c).
 *
 * Real chunks of pseudo-random bytes are cut into fragments the way a client
 * cuts them (1408-byte for a 1500 MTU path, 8896-byte for jumbo frames) and
 * fed in various orders. Every outcome is checked against a small per-unit
 * model kept by the test, the result against the source bytes and its
 * XXH3-128 id, and every counter exactly.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tg_reasm.h"

#define MTU_FRAG   1408u
#define JUMBO_FRAG 8896u
#define MIB        (1u << 20)

/* xorshift64*: deterministic, so a failure reproduces. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

struct src {
	uint8_t *bytes;
	uint32_t len;
	struct tg_chunk_id id;
	uint8_t tag[TG_TAG_LEN];
};

static void src_make(struct src *s, uint32_t len)
{
	s->bytes = malloc(len);
	assert_non_null(s->bytes);
	s->len = len;
	for (uint32_t i = 0; i < len; i++)
		s->bytes[i] = (uint8_t)rng();
	tg_chunk_hash(s->bytes, len, &s->id);
	for (unsigned i = 0; i < TG_TAG_LEN; i++)
		s->tag[i] = (uint8_t)rng();
}

static void src_free(struct src *s)
{
	free(s->bytes);
	s->bytes = NULL;
}

struct fr {
	uint32_t off, len;
};

static struct tg_data frag_of(const struct src *s, uint32_t off, uint32_t len)
{
	struct tg_data d;

	memset(&d, 0, sizeof(d));
	memcpy(d.chunk_id, s->id.b, TG_ID_LEN);
	d.chunk_len = s->len;
	d.frag_off = off;
	d.frag_len = (uint16_t)len;
	memcpy(d.tag, s->tag, TG_TAG_LEN);
	d.payload = s->bytes + off;
	return d;
}

/* Cut [from, to) of a chunk into fsize pieces; returns how many (fr may be NULL). */
static unsigned cut(uint32_t from, uint32_t to, uint32_t fsize, struct fr *fr)
{
	unsigned n = 0;

	for (uint32_t off = from; off < to; off += fsize, n++) {
		if (fr) {
			fr[n].off = off;
			fr[n].len = to - off < fsize ? to - off : fsize;
		}
	}
	return n;
}

static struct fr *cut_all(uint32_t len, uint32_t fsize, unsigned *n)
{
	struct fr *fr;

	*n = cut(0, len, fsize, NULL);
	fr = calloc(*n, sizeof(*fr));
	assert_non_null(fr);
	cut(0, len, fsize, fr);
	return fr;
}

static void shuffle(struct fr *fr, unsigned n)
{
	for (unsigned i = n; i > 1; i--) {
		unsigned j = (unsigned)(rng() % i);
		struct fr t = fr[i - 1];

		fr[i - 1] = fr[j];
		fr[j] = t;
	}
}

/*
 * The test's own view of a chunk: which units it has sent and how many
 * distinct bytes that makes. Deliberately naive (one bool per unit).
 */
struct model {
	uint32_t len, nunits;
	bool *held;
	uint32_t bytes;
};

static void model_init(struct model *m, uint32_t len)
{
	m->len = len;
	m->nunits = (len + 63) / 64;
	m->held = calloc(m->nunits, sizeof(bool));
	assert_non_null(m->held);
	m->bytes = 0;
}

static void model_free(struct model *m)
{
	free(m->held);
}

/* What the reassembler must answer for this fragment, and the model updated. */
static enum tg_ra model_add(struct model *m, uint32_t off, uint32_t len)
{
	bool fresh = false;

	if (m->bytes == m->len)
		return TG_RA_DUP;
	for (uint32_t u = off / 64; u * 64 < off + len; u++) {
		if (m->held[u])
			continue;
		m->held[u] = true;
		fresh = true;
		m->bytes += (u + 1) * 64 <= m->len ? 64 : m->len - u * 64;
	}
	if (!fresh)
		return TG_RA_DUP;
	return m->bytes == m->len ? TG_RA_COMPLETE : TG_RA_PARTIAL;
}

static struct tg_reasm_cfg big_cfg(void)
{
	struct tg_reasm_cfg cfg = {
		.mem_total = 256u * MIB,
		.mem_per_session = 64u * MIB,
		.slots_per_session = 8,
		.max_chunk = TG_CHUNK_MAX,
	};
	return cfg;
}

static struct tg_reasm *mk(const struct tg_reasm_cfg *cfg)
{
	int err = 1;
	struct tg_reasm *r = tg_reasm_create(cfg, &err);

	assert_non_null(r);
	assert_int_equal(err, 0);
	return r;
}

static struct tg_reasm_stats stats(const struct tg_reasm *r)
{
	struct tg_reasm_stats st;

	tg_reasm_get_stats(r, &st);
	return st;
}

static void assert_frags(const struct tg_reasm *r, const uint64_t want[TG_RA__MAX])
{
	struct tg_reasm_stats st = stats(r);

	for (unsigned i = 0; i < TG_RA__MAX; i++) {
		if (st.frags[i] != want[i])
			fail_msg("frags[%s] = %llu, want %llu", tg_ra_name((enum tg_ra)i),
				 (unsigned long long)st.frags[i], (unsigned long long)want[i]);
	}
}

static void assert_chunk_is(const struct tg_rchunk *c, const struct src *s)
{
	struct tg_chunk_id h;

	assert_non_null(c);
	assert_true(c->complete);
	assert_int_equal(c->len, s->len);
	assert_int_equal(c->received, s->len);
	assert_true(c->cap >= c->len);
	assert_memory_equal(c->id.b, s->id.b, 16);
	assert_memory_equal(c->buf, s->bytes, s->len);
	tg_chunk_hash(c->buf, c->len, &h);
	assert_memory_equal(h.b, s->id.b, 16);
}

/*
 * Feed fragments fr[0..n) of s, checking every outcome and the received
 * count against the model; returns the chunk if it completed.
 */
static struct tg_rchunk *feed(struct tg_reasm *r, struct tg_rsess *sess, const struct src *s,
			      struct model *m, const struct fr *fr, unsigned n)
{
	struct tg_rchunk *done = NULL;

	for (unsigned i = 0; i < n; i++) {
		struct tg_data d = frag_of(s, fr[i].off, fr[i].len);
		struct tg_rchunk *out = (void *)&out;
		enum tg_ra want = model_add(m, fr[i].off, fr[i].len);
		enum tg_ra got = tg_reasm_add(r, sess, &d, i, NULL, NULL, &out);
		struct tg_rchunk *c = tg_reasm_find(sess, &s->id);

		if (got != want)
			fail_msg("fragment %u (off %u len %u): %s, want %s", i, fr[i].off, fr[i].len,
				 tg_ra_name(got), tg_ra_name(want));
		assert_non_null(c);
		assert_int_equal(c->received, m->bytes);
		if (got == TG_RA_COMPLETE) {
			assert_ptr_equal(out, c);
			done = out;
		} else {
			assert_null(out);
		}
	}
	return done;
}

enum order { IN_ORDER, REVERSE, SHUFFLED };

static const uint32_t chunk_lens[] = {
	1, 63, 64, 65, 1000, 1408, 1409, 8896, 8897, 100000, MIB + 37, TG_CHUNK_MAX,
};
static const uint32_t frag_sizes[] = { MTU_FRAG, JUMBO_FRAG };

static void reassemble_all_sizes(enum order order)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	uint64_t want[TG_RA__MAX] = { 0 };

	assert_non_null(sess);
	for (unsigned li = 0; li < sizeof(chunk_lens) / sizeof(chunk_lens[0]); li++) {
		for (unsigned fi = 0; fi < 2; fi++) {
			struct src s;
			struct model m;
			unsigned n;
			struct fr *fr;
			struct tg_rchunk *c;

			src_make(&s, chunk_lens[li]);
			model_init(&m, s.len);
			fr = cut_all(s.len, frag_sizes[fi], &n);
			if (order == REVERSE)
				for (unsigned i = 0; i < n / 2; i++) {
					struct fr t = fr[i];

					fr[i] = fr[n - 1 - i];
					fr[n - 1 - i] = t;
				}
			else if (order == SHUFFLED)
				shuffle(fr, n);
			c = feed(r, sess, &s, &m, fr, n);
			assert_chunk_is(c, &s);
			assert_int_equal(tg_reasm_sess_inflight(sess), 1);
			tg_reasm_release(r, sess, c);
			assert_int_equal(tg_reasm_sess_inflight(sess), 0);
			assert_null(tg_reasm_find(sess, &s.id));
			want[TG_RA_PARTIAL] += n - 1;
			want[TG_RA_COMPLETE]++;
			free(fr);
			model_free(&m);
			src_free(&s);
		}
	}
	assert_frags(r, want);
	assert_int_equal(stats(r).chunks_completed, want[TG_RA_COMPLETE]);
	assert_int_equal(stats(r).bytes_in_use, 0);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_in_order_fragments_rebuild_the_chunk(void **state)
{
	(void)state;
	reassemble_all_sizes(IN_ORDER);
}

static void test_reverse_order_fragments_rebuild_the_chunk(void **state)
{
	(void)state;
	reassemble_all_sizes(REVERSE);
}

static void test_shuffled_fragments_rebuild_the_chunk(void **state)
{
	(void)state;
	reassemble_all_sizes(SHUFFLED);
}

static void test_duplicated_fragments_are_dup_and_change_nothing(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	uint64_t want[TG_RA__MAX] = { 0 };

	(void)state;
	for (unsigned fi = 0; fi < 2; fi++) {
		struct src s;
		struct model m;
		unsigned n;
		struct fr *fr = cut_all(100000, frag_sizes[fi], &n), *twice;
		struct tg_rchunk *c;

		src_make(&s, 100000);
		model_init(&m, s.len);
		twice = calloc(2 * n, sizeof(*twice));
		assert_non_null(twice);
		for (unsigned i = 0; i < n; i++)
			twice[2 * i] = twice[2 * i + 1] = fr[i];
		shuffle(fr, n);
		c = feed(r, sess, &s, &m, twice, 2 * n);
		assert_chunk_is(c, &s);
		want[TG_RA_PARTIAL] += n - 1;
		want[TG_RA_COMPLETE]++;
		want[TG_RA_DUP] += n;
		assert_frags(r, want);
		/* Once complete and not yet released, every fragment is a dup. */
		for (unsigned i = 0; i < n; i++) {
			struct tg_data d = frag_of(&s, fr[i].off, fr[i].len);

			assert_int_equal(tg_reasm_add(r, sess, &d, 0, NULL, NULL, &c), TG_RA_DUP);
			assert_null(c);
		}
		want[TG_RA_DUP] += n;
		assert_frags(r, want);
		c = tg_reasm_find(sess, &s.id);
		assert_chunk_is(c, &s);
		assert_int_equal(stats(r).chunks_completed, fi + 1);
		tg_reasm_release(r, sess, c);
		free(twice);
		free(fr);
		model_free(&m);
		src_free(&s);
	}
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_retransmit_with_other_fragment_size_overlaps_cleanly(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s;
	struct model m;
	struct fr small[7], *big;
	unsigned nbig;
	struct tg_rchunk *c;
	uint64_t want[TG_RA__MAX] = { 0 };

	(void)state;
	/* 7 MTU fragments hold [0, 9856): all of jumbo fragment 0 and part of 1. */
	src_make(&s, 100000);
	model_init(&m, s.len);
	assert_int_equal(cut(0, 7 * MTU_FRAG, MTU_FRAG, small), 7);
	assert_null(feed(r, sess, &s, &m, small, 7));
	big = cut_all(s.len, JUMBO_FRAG, &nbig);
	assert_int_equal(nbig, 12);
	c = feed(r, sess, &s, &m, big, nbig);
	assert_chunk_is(c, &s);
	want[TG_RA_PARTIAL] = 7 + 10;
	want[TG_RA_DUP] = 1;
	want[TG_RA_COMPLETE] = 1;
	assert_frags(r, want);
	tg_reasm_release(r, sess, c);
	model_free(&m);

	/* The other way round: jumbo fragments 0 and 2 first, then every MTU one. */
	model_init(&m, s.len);
	big[1] = big[2];
	assert_null(feed(r, sess, &s, &m, big, 2));
	free(big);
	big = cut_all(s.len, MTU_FRAG, &nbig);
	c = feed(r, sess, &s, &m, big, nbig);
	assert_chunk_is(c, &s);
	tg_reasm_release(r, sess, c);
	assert_int_equal(stats(r).bytes_in_use, 0);
	free(big);
	model_free(&m);
	src_free(&s);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

/* One fragment of s that must be dropped with reason want and change nothing. */
static void assert_dropped(struct tg_reasm *r, struct tg_rsess *sess, const struct tg_data *d,
			   enum tg_ra want)
{
	struct tg_reasm_stats before = stats(r), after;
	size_t sbytes = tg_reasm_sess_bytes(sess);
	uint32_t inflight = tg_reasm_sess_inflight(sess);
	struct tg_rchunk *out = (void *)&out;

	assert_int_equal(tg_reasm_add(r, sess, d, 99, NULL, NULL, &out), want);
	assert_null(out);
	after = stats(r);
	assert_int_equal(after.frags[want], before.frags[want] + 1);
	assert_int_equal(after.bytes_in_use, before.bytes_in_use);
	assert_int_equal(after.bufs_allocated, before.bufs_allocated);
	assert_int_equal(tg_reasm_sess_bytes(sess), sbytes);
	assert_int_equal(tg_reasm_sess_inflight(sess), inflight);
}

static void test_fragment_past_chunk_end_is_dropped_range(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s;
	struct tg_data d;
	struct tg_rchunk *c;
	uint8_t junk[256];

	(void)state;
	memset(junk, 0xa5, sizeof(junk));
	src_make(&s, 100000);
	/* Before the chunk exists: no chunk may be opened for it. */
	d = frag_of(&s, 99968, 32);
	d.frag_len = 128;
	d.payload = junk;
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	assert_null(tg_reasm_find(sess, &s.id));
	d.frag_off = 100032;
	d.frag_len = 64;
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	/* off + len overflows 32 bits: must still be caught. */
	d.frag_off = 0xffffffc0u;
	d.frag_len = 128;
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	assert_null(tg_reasm_find(sess, &s.id));

	/* Against a chunk in flight: the chunk is left as it was. */
	d = frag_of(&s, 0, MTU_FRAG);
	assert_int_equal(tg_reasm_add(r, sess, &d, 0, NULL, NULL, &c), TG_RA_PARTIAL);
	d = frag_of(&s, 99968, 32);
	d.frag_len = 96;
	d.payload = junk;
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	c = tg_reasm_find(sess, &s.id);
	assert_int_equal(c->received, MTU_FRAG);
	assert_int_equal(stats(r).frags[TG_RA_DROP_RANGE], 4);
	src_free(&s);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_misaligned_fragment_is_dropped_range(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s;
	struct tg_data d;

	(void)state;
	src_make(&s, 100000);
	d = frag_of(&s, 100, MTU_FRAG);
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	/* Only the chunk's last fragment may have a length off the unit grid. */
	d = frag_of(&s, 0, 1000);
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	d = frag_of(&s, 64, 1000);
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	/* Longer than any fragment the wire allows. */
	d = frag_of(&s, 0, TG_FRAG_MAX + 64);
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	assert_null(tg_reasm_find(sess, &s.id));
	/* The same chunk's real last fragment, off-grid in length, is fine. */
	d = frag_of(&s, 99968, 32);
	assert_int_equal(tg_reasm_add(r, sess, &d, 0, NULL, NULL, NULL), TG_RA_PARTIAL);
	assert_int_equal(tg_reasm_find(sess, &s.id)->received, 32);
	assert_int_equal(stats(r).frags[TG_RA_DROP_RANGE], 4);
	src_free(&s);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_zero_length_fragment_or_chunk_is_dropped(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r;
	struct tg_rsess *sess;
	struct src s;
	struct tg_data d;
	uint64_t want[TG_RA__MAX] = { 0 };

	(void)state;
	cfg.max_chunk = MIB;
	r = mk(&cfg);
	sess = tg_reasm_sess_open(r);
	src_make(&s, MIB + 64);
	d = frag_of(&s, 0, 0);
	d.chunk_len = 1000;
	assert_dropped(r, sess, &d, TG_RA_DROP_RANGE);
	want[TG_RA_DROP_RANGE]++;
	d = frag_of(&s, 0, 64);
	d.chunk_len = 0;
	assert_dropped(r, sess, &d, TG_RA_DROP_TOO_BIG);
	want[TG_RA_DROP_TOO_BIG]++;
	/* Legal on the wire (<= TG_CHUNK_MAX) but above this worker's max_chunk. */
	d = frag_of(&s, 0, 64);
	assert_dropped(r, sess, &d, TG_RA_DROP_TOO_BIG);
	want[TG_RA_DROP_TOO_BIG]++;
	d.chunk_len = MIB + 1;
	assert_dropped(r, sess, &d, TG_RA_DROP_TOO_BIG);
	want[TG_RA_DROP_TOO_BIG]++;
	d.chunk_len = MIB;
	assert_int_equal(tg_reasm_add(r, sess, &d, 0, NULL, NULL, NULL), TG_RA_PARTIAL);
	want[TG_RA_PARTIAL]++;
	assert_frags(r, want);
	src_free(&s);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

/* A fragment that must be refused as MISMATCH; junk must not reach the buffer. */
static void mismatch_case(bool change_len)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s;
	struct model m;
	struct fr *fr;
	unsigned n;
	struct tg_data d;
	struct tg_rchunk *c;
	uint8_t junk[MTU_FRAG];
	uint64_t want[TG_RA__MAX] = { 0 };

	src_make(&s, 100000);
	model_init(&m, s.len);
	fr = cut_all(s.len, MTU_FRAG, &n);
	assert_null(feed(r, sess, &s, &m, fr, 2));
	memset(junk, 0x5a, sizeof(junk));
	d = frag_of(&s, 0, MTU_FRAG);
	d.payload = junk;
	if (change_len)
		d.chunk_len += 64;
	else
		d.tag[TG_TAG_LEN - 1] ^= 1;
	assert_dropped(r, sess, &d, TG_RA_DROP_MISMATCH);
	/* And on a unit not held yet. */
	d.frag_off = 5 * MTU_FRAG;
	assert_dropped(r, sess, &d, TG_RA_DROP_MISMATCH);
	c = tg_reasm_find(sess, &s.id);
	assert_int_equal(c->received, 2 * MTU_FRAG);
	assert_int_equal(c->len, s.len);
	assert_memory_equal(c->tag, s.tag, TG_TAG_LEN);
	c = feed(r, sess, &s, &m, fr + 2, n - 2);
	assert_chunk_is(c, &s);
	want[TG_RA_PARTIAL] = n - 1;
	want[TG_RA_COMPLETE] = 1;
	want[TG_RA_DROP_MISMATCH] = 2;
	assert_frags(r, want);
	free(fr);
	model_free(&m);
	src_free(&s);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_chunk_len_change_mid_chunk_is_mismatch(void **state)
{
	(void)state;
	mismatch_case(true);
}

static void test_tag_change_mid_chunk_is_mismatch(void **state)
{
	(void)state;
	mismatch_case(false);
}

struct verifier {
	unsigned calls;
	bool allow;
	const uint8_t *want_tag;
};

static bool verify_cb(void *arg, const struct tg_data *d)
{
	struct verifier *v = arg;

	v->calls++;
	assert_memory_equal(d->tag, v->want_tag, TG_TAG_LEN);
	return v->allow;
}

static void test_verify_refusal_drops_auth_before_taking_memory(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s;
	struct fr *fr;
	unsigned n;
	struct tg_rchunk *c = NULL;
	struct verifier v = { 0 };
	uint64_t want[TG_RA__MAX] = { 0 };

	(void)state;
	src_make(&s, 100000);
	v.want_tag = s.tag;
	fr = cut_all(s.len, MTU_FRAG, &n);
	for (unsigned i = 0; i < 3; i++) {
		struct tg_data d = frag_of(&s, fr[i].off, fr[i].len);

		assert_int_equal(tg_reasm_add(r, sess, &d, 0, verify_cb, &v, &c), TG_RA_DROP_AUTH);
	}
	assert_int_equal(v.calls, 3);
	assert_int_equal(stats(r).bytes_in_use, 0);
	assert_int_equal(stats(r).bufs_allocated, 0);
	assert_int_equal(stats(r).chunks_in_flight, 0);
	assert_int_equal(tg_reasm_sess_bytes(sess), 0);
	assert_null(tg_reasm_find(sess, &s.id));

	/* Admitted: verified once for the chunk, never again per fragment. */
	v.allow = true;
	for (unsigned i = 0; i < n; i++) {
		struct tg_data d = frag_of(&s, fr[i].off, fr[i].len);

		assert_int_equal(tg_reasm_add(r, sess, &d, 0, verify_cb, &v, &c),
				 i == n - 1 ? TG_RA_COMPLETE : TG_RA_PARTIAL);
	}
	assert_int_equal(v.calls, 4);
	assert_chunk_is(c, &s);
	want[TG_RA_DROP_AUTH] = 3;
	want[TG_RA_PARTIAL] = n - 1;
	want[TG_RA_COMPLETE] = 1;
	assert_frags(r, want);
	free(fr);
	src_free(&s);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

/* Open a chunk of s in sess with its first MTU fragment; returns the outcome. */
static enum tg_ra open_one(struct tg_reasm *r, struct tg_rsess *sess, const struct src *s)
{
	struct tg_data d = frag_of(s, 0, s->len < MTU_FRAG ? s->len : MTU_FRAG);

	return tg_reasm_add(r, sess, &d, 0, NULL, NULL, NULL);
}

static void test_slots_bound_refuses_one_chunk_too_many(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r;
	struct tg_rsess *sess, *other;
	struct src s[5];

	(void)state;
	cfg.slots_per_session = 4;
	r = mk(&cfg);
	sess = tg_reasm_sess_open(r);
	other = tg_reasm_sess_open(r);
	for (unsigned i = 0; i < 5; i++)
		src_make(&s[i], 100000);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(open_one(r, sess, &s[i]), TG_RA_PARTIAL);
	assert_int_equal(open_one(r, sess, &s[4]), TG_RA_DROP_SLOTS);
	assert_int_equal(open_one(r, sess, &s[4]), TG_RA_DROP_SLOTS);
	assert_int_equal(stats(r).frags[TG_RA_DROP_SLOTS], 2);
	assert_int_equal(tg_reasm_sess_inflight(sess), 4);
	assert_null(tg_reasm_find(sess, &s[4].id));
	/* The bound is per session: another one still has all its slots. */
	assert_int_equal(open_one(r, other, &s[4]), TG_RA_PARTIAL);
	/* Fragments of chunks already in flight are still taken. */
	{
		struct tg_data d = frag_of(&s[2], MTU_FRAG, MTU_FRAG);

		assert_int_equal(tg_reasm_add(r, sess, &d, 0, NULL, NULL, NULL), TG_RA_PARTIAL);
	}
	tg_reasm_release(r, sess, tg_reasm_find(sess, &s[1].id));
	assert_int_equal(open_one(r, sess, &s[4]), TG_RA_PARTIAL);
	assert_int_equal(tg_reasm_sess_inflight(sess), 4);
	assert_int_equal(stats(r).chunks_in_flight, 5);
	assert_int_equal(stats(r).frags[TG_RA_DROP_SLOTS], 2);
	for (unsigned i = 0; i < 5; i++)
		src_free(&s[i]);
	tg_reasm_sess_close(r, sess);
	tg_reasm_sess_close(r, other);
	tg_reasm_destroy(r);
}

/* Buffer capacity the reassembler gives a chunk of len bytes. */
static size_t probe_cap(uint32_t len)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s;
	size_t cap;

	src_make(&s, len);
	assert_int_equal(open_one(r, sess, &s), len <= MTU_FRAG ? TG_RA_COMPLETE : TG_RA_PARTIAL);
	cap = tg_reasm_find(sess, &s.id)->cap;
	src_free(&s);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
	return cap;
}

static void test_session_byte_bound_refuses_and_is_per_session(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r;
	struct tg_rsess *a, *b;
	struct src s[4];
	size_t cap = probe_cap(100000);

	(void)state;
	cfg.max_chunk = 100000;
	cfg.mem_per_session = 2 * cap + cap / 2;
	r = mk(&cfg);
	a = tg_reasm_sess_open(r);
	b = tg_reasm_sess_open(r);
	for (unsigned i = 0; i < 4; i++)
		src_make(&s[i], 100000);
	assert_int_equal(open_one(r, a, &s[0]), TG_RA_PARTIAL);
	assert_int_equal(open_one(r, a, &s[1]), TG_RA_PARTIAL);
	assert_int_equal(tg_reasm_sess_bytes(a), 2 * cap);
	assert_int_equal(open_one(r, a, &s[2]), TG_RA_DROP_SESS_MEM);
	assert_int_equal(stats(r).frags[TG_RA_DROP_SESS_MEM], 1);
	assert_int_equal(tg_reasm_sess_bytes(a), 2 * cap);
	assert_int_equal(stats(r).bytes_in_use, 2 * cap);
	assert_int_equal(open_one(r, b, &s[2]), TG_RA_PARTIAL);
	assert_int_equal(open_one(r, b, &s[3]), TG_RA_PARTIAL);
	assert_int_equal(stats(r).bytes_in_use, 4 * cap);
	tg_reasm_release(r, a, tg_reasm_find(a, &s[0].id));
	assert_int_equal(tg_reasm_sess_bytes(a), cap);
	assert_int_equal(open_one(r, a, &s[2]), TG_RA_PARTIAL);
	assert_int_equal(stats(r).frags[TG_RA_DROP_SESS_MEM], 1);
	assert_int_equal(stats(r).bytes_peak, 4 * cap);
	for (unsigned i = 0; i < 4; i++)
		src_free(&s[i]);
	tg_reasm_sess_close(r, a);
	tg_reasm_sess_close(r, b);
	tg_reasm_destroy(r);
}

static void test_total_bound_refuses_second_session_until_release(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r;
	struct tg_rsess *a, *b;
	struct src s[2];
	struct model m;
	struct fr *fr;
	unsigned n;
	struct tg_rchunk *c;
	size_t cap = probe_cap(MIB);

	(void)state;
	cfg.max_chunk = MIB;
	cfg.mem_total = cap + cap / 2;
	cfg.mem_per_session = cfg.mem_total;
	r = mk(&cfg);
	a = tg_reasm_sess_open(r);
	b = tg_reasm_sess_open(r);
	src_make(&s[0], MIB);
	src_make(&s[1], MIB - 100);
	model_init(&m, s[0].len);
	fr = cut_all(s[0].len, JUMBO_FRAG, &n);
	assert_null(feed(r, a, &s[0], &m, fr, n / 2));
	assert_int_equal(open_one(r, b, &s[1]), TG_RA_DROP_MEM);
	assert_int_equal(open_one(r, b, &s[1]), TG_RA_DROP_MEM);
	assert_int_equal(stats(r).frags[TG_RA_DROP_MEM], 2);
	assert_int_equal(tg_reasm_sess_bytes(b), 0);
	/* Still refused while a's chunk is complete but not released. */
	c = feed(r, a, &s[0], &m, fr + n / 2, n - n / 2);
	assert_chunk_is(c, &s[0]);
	assert_int_equal(open_one(r, b, &s[1]), TG_RA_DROP_MEM);
	tg_reasm_release(r, a, c);
	assert_int_equal(stats(r).bytes_in_use, 0);
	assert_int_equal(open_one(r, b, &s[1]), TG_RA_PARTIAL);
	assert_int_equal(stats(r).bytes_in_use, cap);
	assert_int_equal(stats(r).frags[TG_RA_DROP_MEM], 3);
	assert_int_equal(stats(r).bufs_allocated, 1);
	free(fr);
	model_free(&m);
	src_free(&s[0]);
	src_free(&s[1]);
	tg_reasm_sess_close(r, a);
	tg_reasm_sess_close(r, b);
	tg_reasm_destroy(r);
}

static void test_session_close_frees_every_chunk(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *a = tg_reasm_sess_open(r), *b = tg_reasm_sess_open(r);
	struct src s[4];
	struct tg_reasm_stats st;
	uint64_t bufs;

	(void)state;
	assert_int_equal(stats(r).sessions, 2);
	src_make(&s[0], 1000);        /* completes with one fragment */
	src_make(&s[1], 100000);
	src_make(&s[2], 2 * MIB);
	src_make(&s[3], 100000);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(open_one(r, a, &s[i]), i == 0 ? TG_RA_COMPLETE : TG_RA_PARTIAL);
	assert_int_equal(open_one(r, b, &s[3]), TG_RA_PARTIAL);
	st = stats(r);
	assert_int_equal(st.chunks_in_flight, 4);
	assert_int_equal(st.bytes_in_use, tg_reasm_sess_bytes(a) + tg_reasm_sess_bytes(b));
	bufs = st.bufs_allocated;
	tg_reasm_sess_close(r, a);
	st = stats(r);
	assert_int_equal(st.sessions, 1);
	assert_int_equal(st.chunks_in_flight, 1);
	assert_int_equal(st.bytes_in_use, tg_reasm_sess_bytes(b));
	tg_reasm_sess_close(r, b);
	st = stats(r);
	assert_int_equal(st.sessions, 0);
	assert_int_equal(st.chunks_in_flight, 0);
	assert_int_equal(st.bytes_in_use, 0);
	/* Their buffers went back to the pool. */
	a = tg_reasm_sess_open(r);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(open_one(r, a, &s[i]), i == 0 ? TG_RA_COMPLETE : TG_RA_PARTIAL);
	assert_int_equal(stats(r).bufs_allocated, bufs);
	for (unsigned i = 0; i < 4; i++)
		src_free(&s[i]);
	/* Left open on purpose: destroy must free it (ASan checks for leaks). */
	tg_reasm_destroy(r);
}

static void test_pool_reuses_buffers_over_1000_chunks(void **state)
{
	static const uint32_t lens[] = { 1000, 65536, 65537, 200000, MIB };
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s[5];
	struct fr *fr[5];
	unsigned n[5];
	uint64_t want[TG_RA__MAX] = { 0 };

	(void)state;
	for (unsigned i = 0; i < 5; i++) {
		src_make(&s[i], lens[i]);
		fr[i] = cut_all(lens[i], JUMBO_FRAG, &n[i]);
	}
	for (unsigned k = 0; k < 1000; k++) {
		unsigned i = k % 5;
		struct model m;
		struct tg_rchunk *c;

		model_init(&m, s[i].len);
		c = feed(r, sess, &s[i], &m, fr[i], n[i]);
		assert_chunk_is(c, &s[i]);
		tg_reasm_release(r, sess, c);
		model_free(&m);
		want[TG_RA_PARTIAL] += n[i] - 1;
		want[TG_RA_COMPLETE]++;
		/* 64 KiB, 128 KiB, 256 KiB and 1 MiB classes: one buffer each. */
		if (k >= 4)
			assert_int_equal(stats(r).bufs_allocated, 4);
	}
	assert_frags(r, want);
	assert_int_equal(stats(r).chunks_completed, 1000);
	assert_int_equal(stats(r).bytes_in_use, 0);
	for (unsigned i = 0; i < 5; i++) {
		free(fr[i]);
		src_free(&s[i]);
	}
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_pool_trims_idle_buffers_to_stay_in_total_bound(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r;
	struct tg_rsess *sess;
	struct src small[3], big;
	size_t cap_small = probe_cap(60000), cap_big = probe_cap(250000);

	(void)state;
	/* Three small buffers fit the bound; three small plus a big one do not. */
	assert_true(3 * cap_small <= cap_big);
	cfg.max_chunk = 250000;
	cfg.mem_total = cap_big;
	cfg.mem_per_session = cap_big;
	r = mk(&cfg);
	sess = tg_reasm_sess_open(r);
	for (unsigned i = 0; i < 3; i++)
		src_make(&small[i], 60000);
	src_make(&big, 250000);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(open_one(r, sess, &small[i]), TG_RA_PARTIAL);
	assert_int_equal(stats(r).bufs_allocated, 3);
	for (unsigned i = 0; i < 3; i++)
		tg_reasm_release(r, sess, tg_reasm_find(sess, &small[i].id));
	/* Idle small buffers give way to the big one instead of refusing it. */
	assert_int_equal(open_one(r, sess, &big), TG_RA_PARTIAL);
	assert_int_equal(stats(r).bufs_allocated, 4);
	tg_reasm_release(r, sess, tg_reasm_find(sess, &big.id));
	/* And the idle big one gives way to a small one again. */
	assert_int_equal(open_one(r, sess, &small[0]), TG_RA_PARTIAL);
	assert_int_equal(stats(r).bufs_allocated, 5);
	assert_int_equal(stats(r).frags[TG_RA_DROP_MEM], 0);
	for (unsigned i = 0; i < 3; i++)
		src_free(&small[i]);
	src_free(&big);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_buffer_fits_ec_shards_and_padding_is_zero(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src full, small;
	struct model m;
	struct fr *fr;
	unsigned n;
	struct tg_rchunk *c;

	(void)state;
	/* Fill a whole 64 KiB buffer with random bytes, then reuse it. */
	src_make(&full, 65536);
	src_make(&small, 1001);
	model_init(&m, full.len);
	fr = cut_all(full.len, JUMBO_FRAG, &n);
	c = feed(r, sess, &full, &m, fr, n);
	assert_chunk_is(c, &full);
	tg_reasm_release(r, sess, c);
	assert_int_equal(open_one(r, sess, &small), TG_RA_COMPLETE);
	c = tg_reasm_find(sess, &small.id);
	assert_chunk_is(c, &small);
	assert_int_equal(stats(r).bufs_allocated, 1);
	for (uint32_t k = 2; k <= 16; k++) {
		uint32_t shard = (c->len + k - 1) / k;
		size_t end;

		shard = (shard + 63) / 64 * 64;
		end = (size_t)k * shard;
		assert_true(end <= c->cap);
		for (size_t i = c->len; i < end; i++)
			if (c->buf[i])
				fail_msg("pad byte %zu (K=%u) is %u", i, k, c->buf[i]);
	}
	for (unsigned i = 0; i < sizeof(chunk_lens) / sizeof(chunk_lens[0]); i++) {
		size_t cap = probe_cap(chunk_lens[i]);

		for (uint32_t k = 2; k <= 16; k++) {
			size_t shard = ((size_t)chunk_lens[i] + k - 1) / k;

			assert_true(k * ((shard + 63) / 64 * 64) <= cap);
		}
	}
	free(fr);
	model_free(&m);
	src_free(&full);
	src_free(&small);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void expect_sack(const struct tg_rchunk *c, const struct model *m, uint32_t base,
			size_t cap)
{
	uint8_t got[TG_SACK_UNITS_MAX / 8 + 8], want[TG_SACK_UNITS_MAX / 8 + 8];
	uint32_t n = base < m->nunits ? m->nunits - base : 0;
	unsigned ret;

	if (n > TG_SACK_UNITS_MAX)
		n = TG_SACK_UNITS_MAX;
	if (n > cap * 8)
		n = (uint32_t)cap * 8;
	memset(got, 0xee, sizeof(got));
	memset(want, 0, sizeof(want));
	for (uint32_t i = 0; i < n; i++)
		if (m->held[base + i])
			want[i / 8] |= (uint8_t)(1u << (i % 8));
	ret = tg_reasm_sack(c, base, got, cap);
	assert_int_equal(ret, n);
	assert_memory_equal(got, want, (n + 7) / 8);
	/* Nothing written past the bytes it describes. */
	assert_int_equal(got[(n + 7) / 8], 0xee);
}

static void test_sack_bitmap_is_exactly_the_held_units(void **state)
{
	static const uint32_t bases[] = { 0, 1, 7, 8, 9, 63, 64, 65, 100, 1000, 1561, 1562 };
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s, big;
	struct model m, mb;
	struct fr *fr;
	unsigned n;
	struct tg_rchunk *c;

	(void)state;
	src_make(&s, 100000);      /* 1563 units, the last one 32 bytes */
	model_init(&m, s.len);
	fr = cut_all(s.len, MTU_FRAG, &n);
	shuffle(fr, n);
	assert_null(feed(r, sess, &s, &m, fr, n / 2));
	{
		/* Plus the chunk's tail, so the last (partial) unit is held. */
		struct fr tail = { 99968, 32 };

		if (!m.held[m.nunits - 1])
			assert_null(feed(r, sess, &s, &m, &tail, 1));
	}
	c = tg_reasm_find(sess, &s.id);
	for (unsigned i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		expect_sack(c, &m, bases[i], 1024);
		expect_sack(c, &m, bases[i], 3);
		expect_sack(c, &m, bases[i], 1);
	}
	assert_int_equal(tg_reasm_sack(c, m.nunits, (uint8_t[8]){ 0 }, 8), 0);
	assert_int_equal(tg_reasm_sack(c, 0, (uint8_t[8]){ 0 }, 0), 0);
	c = feed(r, sess, &s, &m, fr + n / 2, n - n / 2);
	assert_chunk_is(c, &s);
	expect_sack(c, &m, 0, 1024);
	expect_sack(c, &m, 5, 1024);

	/* A max-size chunk has more units than one SACK describes. */
	src_make(&big, TG_CHUNK_MAX);
	model_init(&mb, big.len);
	free(fr);
	fr = cut_all(big.len, JUMBO_FRAG, &n);
	shuffle(fr, n);
	assert_null(feed(r, sess, &big, &mb, fr, n / 3));
	c = tg_reasm_find(sess, &big.id);
	expect_sack(c, &mb, 0, 1024);
	expect_sack(c, &mb, 8192, 1024);
	expect_sack(c, &mb, 65536 - 100, 1024);
	expect_sack(c, &mb, 12345, 1024);
	free(fr);
	model_free(&m);
	model_free(&mb);
	src_free(&s);
	src_free(&big);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_interleaved_chunks_in_one_session(void **state)
{
	static const uint32_t lens[] = { 100000, 1000, MIB + 37 };
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s[3];
	struct model m[3];
	struct fr *fr[3];
	unsigned n[3], next[3] = { 0 }, left = 0, completed = 0;
	struct tg_rchunk *done[3] = { NULL };
	bool seen[3] = { false };

	(void)state;
	for (unsigned i = 0; i < 3; i++) {
		src_make(&s[i], lens[i]);
		model_init(&m[i], lens[i]);
		fr[i] = cut_all(lens[i], i == 2 ? JUMBO_FRAG : MTU_FRAG, &n[i]);
		shuffle(fr[i], n[i]);
		left += n[i];
	}
	while (left) {
		for (unsigned i = 0; i < 3; i++) {
			struct tg_rchunk *c;

			if (next[i] == n[i])
				continue;
			c = feed(r, sess, &s[i], &m[i], &fr[i][next[i]++], 1);
			left--;
			if (c) {
				done[i] = c;
				completed++;
			}
		}
	}
	assert_int_equal(completed, 3);
	assert_int_equal(tg_reasm_sess_inflight(sess), 3);
	for (unsigned k = 0; k < 3; k++) {
		struct tg_rchunk *c = tg_reasm_sess_chunk(sess, k);

		assert_non_null(c);
		for (unsigned i = 0; i < 3; i++)
			if (c == done[i]) {
				assert_false(seen[i]);
				seen[i] = true;
			}
	}
	assert_null(tg_reasm_sess_chunk(sess, 3));
	for (unsigned i = 0; i < 3; i++) {
		assert_true(seen[i]);
		assert_ptr_equal(tg_reasm_find(sess, &s[i].id), done[i]);
		assert_chunk_is(done[i], &s[i]);
	}
	/* Releasing one leaves the other two reachable and the iteration dense. */
	tg_reasm_release(r, sess, done[0]);
	assert_null(tg_reasm_find(sess, &s[0].id));
	assert_non_null(tg_reasm_sess_chunk(sess, 0));
	assert_non_null(tg_reasm_sess_chunk(sess, 1));
	assert_null(tg_reasm_sess_chunk(sess, 2));
	assert_chunk_is(tg_reasm_find(sess, &s[1].id), &s[1]);
	assert_chunk_is(tg_reasm_find(sess, &s[2].id), &s[2]);
	assert_int_equal(stats(r).chunks_completed, 3);
	for (unsigned i = 0; i < 3; i++) {
		free(fr[i]);
		model_free(&m[i]);
		src_free(&s[i]);
	}
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_last_ms_moves_only_on_new_data(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *sess = tg_reasm_sess_open(r);
	struct src s;
	struct tg_data d;
	struct tg_rchunk *c;

	(void)state;
	src_make(&s, 100000);
	d = frag_of(&s, 0, MTU_FRAG);
	assert_int_equal(tg_reasm_add(r, sess, &d, 10, NULL, NULL, NULL), TG_RA_PARTIAL);
	c = tg_reasm_find(sess, &s.id);
	assert_int_equal(c->last_ms, 10);
	assert_int_equal(tg_reasm_add(r, sess, &d, 20, NULL, NULL, NULL), TG_RA_DUP);
	assert_int_equal(c->last_ms, 10);
	d = frag_of(&s, MTU_FRAG, MTU_FRAG);
	assert_int_equal(tg_reasm_add(r, sess, &d, 30, NULL, NULL, NULL), TG_RA_PARTIAL);
	assert_int_equal(c->last_ms, 30);
	src_free(&s);
	tg_reasm_sess_close(r, sess);
	tg_reasm_destroy(r);
}

static void test_release_of_foreign_chunk_is_ignored(void **state)
{
	struct tg_reasm_cfg cfg = big_cfg();
	struct tg_reasm *r = mk(&cfg);
	struct tg_rsess *a = tg_reasm_sess_open(r), *b = tg_reasm_sess_open(r);
	struct src s;
	struct tg_rchunk *c;
	size_t in_use;

	(void)state;
	src_make(&s, 100000);
	assert_int_equal(open_one(r, a, &s), TG_RA_PARTIAL);
	c = tg_reasm_find(a, &s.id);
	in_use = stats(r).bytes_in_use;
	tg_reasm_release(r, b, c);
	assert_int_equal(stats(r).bytes_in_use, in_use);
	assert_int_equal(tg_reasm_sess_inflight(a), 1);
	tg_reasm_release(r, a, c);
	tg_reasm_release(r, a, c);  /* twice: the slot is empty now */
	assert_int_equal(stats(r).bytes_in_use, 0);
	assert_int_equal(stats(r).chunks_in_flight, 0);
	src_free(&s);
	tg_reasm_sess_close(r, a);
	tg_reasm_sess_close(r, b);
	tg_reasm_destroy(r);
}

static void test_create_rejects_unusable_config(void **state)
{
	struct tg_reasm_cfg ok = big_cfg(), cfg;
	int err;

	(void)state;
	err = 0;
	assert_null(tg_reasm_create(NULL, &err));
	assert_int_equal(err, -EINVAL);
	cfg = ok;
	cfg.max_chunk = 0;
	err = 0;
	assert_null(tg_reasm_create(&cfg, &err));
	assert_int_equal(err, -EINVAL);
	cfg = ok;
	cfg.max_chunk = TG_CHUNK_MAX + 1;
	err = 0;
	assert_null(tg_reasm_create(&cfg, &err));
	assert_int_equal(err, -EINVAL);
	cfg = ok;
	cfg.slots_per_session = 0;
	err = 0;
	assert_null(tg_reasm_create(&cfg, &err));
	assert_int_equal(err, -EINVAL);
	/* Bounds that could never admit a max-size chunk. */
	cfg = ok;
	cfg.mem_per_session = TG_CHUNK_MAX;
	err = 0;
	assert_null(tg_reasm_create(&cfg, &err));
	assert_int_equal(err, -EINVAL);
	cfg = ok;
	cfg.mem_total = TG_CHUNK_MAX;
	err = 0;
	assert_null(tg_reasm_create(&cfg, &err));
	assert_int_equal(err, -EINVAL);
	cfg = ok;
	cfg.mem_total = cfg.mem_per_session = probe_cap(TG_CHUNK_MAX);
	tg_reasm_destroy(mk(&cfg));
}

static void test_outcome_names_are_distinct(void **state)
{
	(void)state;
	for (unsigned i = 0; i < TG_RA__MAX; i++) {
		assert_non_null(tg_ra_name((enum tg_ra)i));
		assert_string_not_equal(tg_ra_name((enum tg_ra)i), "unknown");
		for (unsigned j = 0; j < i; j++)
			assert_string_not_equal(tg_ra_name((enum tg_ra)i), tg_ra_name((enum tg_ra)j));
	}
	assert_string_equal(tg_ra_name(TG_RA__MAX), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_in_order_fragments_rebuild_the_chunk),
		cmocka_unit_test(test_reverse_order_fragments_rebuild_the_chunk),
		cmocka_unit_test(test_shuffled_fragments_rebuild_the_chunk),
		cmocka_unit_test(test_duplicated_fragments_are_dup_and_change_nothing),
		cmocka_unit_test(test_retransmit_with_other_fragment_size_overlaps_cleanly),
		cmocka_unit_test(test_fragment_past_chunk_end_is_dropped_range),
		cmocka_unit_test(test_misaligned_fragment_is_dropped_range),
		cmocka_unit_test(test_zero_length_fragment_or_chunk_is_dropped),
		cmocka_unit_test(test_chunk_len_change_mid_chunk_is_mismatch),
		cmocka_unit_test(test_tag_change_mid_chunk_is_mismatch),
		cmocka_unit_test(test_verify_refusal_drops_auth_before_taking_memory),
		cmocka_unit_test(test_slots_bound_refuses_one_chunk_too_many),
		cmocka_unit_test(test_session_byte_bound_refuses_and_is_per_session),
		cmocka_unit_test(test_total_bound_refuses_second_session_until_release),
		cmocka_unit_test(test_session_close_frees_every_chunk),
		cmocka_unit_test(test_pool_reuses_buffers_over_1000_chunks),
		cmocka_unit_test(test_pool_trims_idle_buffers_to_stay_in_total_bound),
		cmocka_unit_test(test_buffer_fits_ec_shards_and_padding_is_zero),
		cmocka_unit_test(test_sack_bitmap_is_exactly_the_held_units),
		cmocka_unit_test(test_interleaved_chunks_in_one_session),
		cmocka_unit_test(test_last_ms_moves_only_on_new_data),
		cmocka_unit_test(test_release_of_foreign_chunk_is_ignored),
		cmocka_unit_test(test_create_rejects_unusable_config),
		cmocka_unit_test(test_outcome_names_are_distinct),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
