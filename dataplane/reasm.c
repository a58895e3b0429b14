/*
 * reasm.c - per-worker chunk reassembly with hard memory bounds.
 *
 * Each chunk in flight owns one pooled buffer that holds the chunk's bytes,
 * EC padding, and the chunk's unit bitmap behind the padding, so opening a
 * chunk costs one free-list pop and closing it one push: nothing is
 * allocated per packet. A session is one allocation made at open time: its
 * fixed array of chunk slots and a dense index of the slots in use (so
 * iteration and lookup only touch live chunks).
 *
 * Three bounds hold at every instant: chunks in flight per session, buffer
 * bytes per session and buffer bytes in total. The total bound also caps the
 * memory the pool keeps: before growing, the pool frees idle buffers of other
 * size classes, so a worker never holds more than mem_total of buffers (plus
 * the 1/512 the bitmaps add) whatever mix of chunk sizes it has seen.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tg_reasm.h"

#define RA_CLS_MIN_SHIFT 16u  /* smallest class: 64 KiB */
#define RA_NCLS          16u  /* classes the array can hold; create checks */
/*
 * Padding past the class size so that K data shards of shard_len =
 * roundup64(ceil(len / K)) fit for any K <= 16: K * shard_len < len + K * 64.
 */
#define RA_EC_PAD        (16u * TG_FRAG_UNIT)
#define RA_SLOTS_MAX     65536u

struct tg_rsess {
	struct tg_rsess *prev, *next;  /* the worker's open sessions */
	size_t bytes;                  /* buffer capacity held */
	uint32_t inflight;
	unsigned nslots;
	struct tg_rchunk **live;       /* live[0..inflight): slots in use */
	struct tg_rchunk slots[];
};

struct tg_reasm {
	struct tg_reasm_cfg cfg;
	unsigned ncls;
	void *free_list[RA_NCLS];      /* idle buffers, linked through their first word */
	size_t pool_bytes;             /* capacity of every buffer allocated now */
	struct tg_rsess *sessions;
	struct tg_reasm_stats st;
};

static const char *const ra_names[TG_RA__MAX] = {
	[TG_RA_PARTIAL] = "partial",
	[TG_RA_COMPLETE] = "complete",
	[TG_RA_DUP] = "dup",
	[TG_RA_DROP_TOO_BIG] = "drop_too_big",
	[TG_RA_DROP_RANGE] = "drop_range",
	[TG_RA_DROP_MISMATCH] = "drop_mismatch",
	[TG_RA_DROP_AUTH] = "drop_auth",
	[TG_RA_DROP_SLOTS] = "drop_slots",
	[TG_RA_DROP_SESS_MEM] = "drop_sess_mem",
	[TG_RA_DROP_MEM] = "drop_mem",
};

const char *tg_ra_name(enum tg_ra r)
{
	if ((unsigned)r >= TG_RA__MAX)
		return "unknown";
	return ra_names[r];
}

static inline size_t cls_size(unsigned cls)
{
	return (size_t)1 << (RA_CLS_MIN_SHIFT + cls);
}

static inline size_t cls_cap(unsigned cls)
{
	return cls_size(cls) + RA_EC_PAD;
}

/* One bit per unit of the class's largest chunk; a whole number of words. */
static inline size_t cls_bitmap_words(unsigned cls)
{
	return cls_size(cls) / TG_FRAG_UNIT / 64;
}

static unsigned len_cls(uint32_t len)
{
	unsigned cls = 0;

	while (cls_size(cls) < len)
		cls++;
	return cls;
}

static inline uint32_t units_of(uint32_t len)
{
	return (len + TG_FRAG_UNIT - 1) / TG_FRAG_UNIT;
}

struct tg_reasm *tg_reasm_create(const struct tg_reasm_cfg *cfg, int *err)
{
	struct tg_reasm *r;
	unsigned ncls;
	int e;

	if (!cfg || cfg->max_chunk == 0 || cfg->max_chunk > TG_CHUNK_MAX ||
	    cfg->slots_per_session == 0 || cfg->slots_per_session > RA_SLOTS_MAX) {
		e = -EINVAL;
		goto err_out;
	}
	ncls = len_cls(cfg->max_chunk) + 1;
	if (ncls > RA_NCLS) {
		e = -EINVAL;
		goto err_out;
	}
	/* A bound below one max-size buffer would refuse max-size chunks forever. */
	if (cfg->mem_per_session < cls_cap(ncls - 1) || cfg->mem_total < cls_cap(ncls - 1)) {
		e = -EINVAL;
		goto err_out;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		e = -ENOMEM;
		goto err_out;
	}
	r->cfg = *cfg;
	r->ncls = ncls;
	if (err)
		*err = 0;
	return r;

err_out:
	if (err)
		*err = e;
	return NULL;
}

static void pool_free_buf(struct tg_reasm *r, unsigned cls)
{
	void *b = r->free_list[cls];

	r->free_list[cls] = *(void **)b;
	r->pool_bytes -= cls_cap(cls);
	free(b);
}

void tg_reasm_destroy(struct tg_reasm *r)
{
	if (!r)
		return;
	while (r->sessions)
		tg_reasm_sess_close(r, r->sessions);
	for (unsigned c = 0; c < r->ncls; c++)
		while (r->free_list[c])
			pool_free_buf(r, c);
	free(r);
}

/*
 * Take a buffer of class cls; the caller has checked the in-use bounds. The
 * pool grows only within mem_total: idle buffers of other classes are freed
 * first, which always makes room because in-use bytes plus this one fit.
 */
static uint8_t *pool_get(struct tg_reasm *r, unsigned cls)
{
	size_t cap = cls_cap(cls);
	size_t bytes;
	uint8_t *b;

	if (r->free_list[cls]) {
		b = r->free_list[cls];
		r->free_list[cls] = *(void **)b;
		return b;
	}
	for (unsigned c = r->ncls; c-- > 0 && r->pool_bytes + cap > r->cfg.mem_total;)
		while (r->free_list[c] && r->pool_bytes + cap > r->cfg.mem_total)
			pool_free_buf(r, c);
	if (r->pool_bytes + cap > r->cfg.mem_total)
		return NULL;
	/* Both terms are multiples of 64, as aligned_alloc() wants. */
	bytes = cap + cls_bitmap_words(cls) * sizeof(uint64_t);
	b = aligned_alloc(64, bytes);
	if (!b)
		return NULL;
	r->pool_bytes += cap;
	r->st.bufs_allocated++;
	return b;
}

static void pool_put(struct tg_reasm *r, unsigned cls, uint8_t *b)
{
	*(void **)b = r->free_list[cls];
	r->free_list[cls] = b;
}

struct tg_rsess *tg_reasm_sess_open(struct tg_reasm *r)
{
	struct tg_rsess *s;
	unsigned n;

	if (!r)
		return NULL;
	n = r->cfg.slots_per_session;
	s = calloc(1, sizeof(*s) + n * sizeof(s->slots[0]) + n * sizeof(s->live[0]));
	if (!s)
		return NULL;
	s->nslots = n;
	s->live = (struct tg_rchunk **)(void *)&s->slots[n];
	s->next = r->sessions;
	if (r->sessions)
		r->sessions->prev = s;
	r->sessions = s;
	r->st.sessions++;
	return s;
}

void tg_reasm_sess_close(struct tg_reasm *r, struct tg_rsess *s)
{
	if (!r || !s)
		return;
	while (s->inflight)
		tg_reasm_release(r, s, s->live[s->inflight - 1]);
	if (s->prev)
		s->prev->next = s->next;
	else
		r->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	r->st.sessions--;
	free(s);
}

static bool chunk_of_sess(const struct tg_rsess *s, const struct tg_rchunk *c)
{
	uintptr_t p = (uintptr_t)c, lo = (uintptr_t)&s->slots[0];

	if (p < lo || p >= (uintptr_t)&s->slots[s->nslots])
		return false;
	if ((p - lo) % sizeof(s->slots[0]))
		return false;
	return c->buf != NULL;
}

void tg_reasm_release(struct tg_reasm *r, struct tg_rsess *s, struct tg_rchunk *c)
{
	size_t cap;

	if (!r || !s || !c || !chunk_of_sess(s, c))
		return;
	for (uint32_t i = 0; i < s->inflight; i++) {
		if (s->live[i] == c) {
			s->live[i] = s->live[--s->inflight];
			break;
		}
	}
	cap = c->cap;
	pool_put(r, c->cls, c->buf);
	s->bytes -= cap;
	r->st.bytes_in_use -= cap;
	r->st.chunks_in_flight--;
	memset(c, 0, sizeof(*c));
}

static struct tg_rchunk *find_id(struct tg_rsess *s, const uint8_t *id)
{
	for (uint32_t i = 0; i < s->inflight; i++)
		if (tg_id_eq(s->live[i]->id.b, id))
			return s->live[i];
	return NULL;
}

struct tg_rchunk *tg_reasm_find(struct tg_rsess *s, const struct tg_chunk_id *id)
{
	if (!s || !id)
		return NULL;
	return find_id(s, id->b);
}

struct tg_rchunk *tg_reasm_sess_chunk(struct tg_rsess *s, unsigned i)
{
	if (!s || i >= s->inflight)
		return NULL;
	return s->live[i];
}

/* Static checks first: they cost nothing and protect every later step. */
static enum tg_ra check_frag(const struct tg_reasm *r, const struct tg_data *d)
{
	uint64_t end = (uint64_t)d->frag_off + d->frag_len;

	if (d->chunk_len == 0 || d->chunk_len > r->cfg.max_chunk)
		return TG_RA_DROP_TOO_BIG;
	if (d->frag_len == 0 || d->frag_len > TG_FRAG_MAX || !d->payload ||
	    d->frag_off % TG_FRAG_UNIT || end > d->chunk_len ||
	    (d->frag_len % TG_FRAG_UNIT && end != d->chunk_len))
		return TG_RA_DROP_RANGE;
	return TG_RA_PARTIAL;
}

static enum tg_ra open_chunk(struct tg_reasm *r, struct tg_rsess *s, const struct tg_data *d,
			     tg_reasm_verify_fn verify, void *arg, struct tg_rchunk **cp)
{
	struct tg_rchunk *c = NULL;
	unsigned cls;
	size_t cap;
	uint8_t *buf;

	if (verify && !verify(arg, d))
		return TG_RA_DROP_AUTH;
	if (s->inflight >= s->nslots)
		return TG_RA_DROP_SLOTS;
	cls = len_cls(d->chunk_len);
	cap = cls_cap(cls);
	if (s->bytes + cap > r->cfg.mem_per_session)
		return TG_RA_DROP_SESS_MEM;
	if (r->st.bytes_in_use + cap > r->cfg.mem_total)
		return TG_RA_DROP_MEM;
	buf = pool_get(r, cls);
	if (!buf)
		return TG_RA_DROP_MEM;

	for (unsigned i = 0; i < s->nslots; i++) {
		if (!s->slots[i].buf) {
			c = &s->slots[i];
			break;
		}
	}
	memcpy(c->id.b, d->chunk_id, sizeof(c->id.b));
	c->len = d->chunk_len;
	c->received = 0;
	c->cap = cap;
	memcpy(c->tag, d->tag, TG_TAG_LEN);
	c->buf = buf;
	c->complete = false;
	c->nunits = units_of(d->chunk_len);
	c->cls = (uint8_t)cls;
	c->units = (uint64_t *)(void *)(buf + cap);
	memset(c->units, 0, (c->nunits + 63) / 64 * sizeof(uint64_t));
	/*
	 * Zero what EC shards may read past the chunk's end, so the padding
	 * never carries bytes of the chunk that used this buffer before.
	 */
	memset(buf + c->len, 0, RA_EC_PAD);

	s->live[s->inflight++] = c;
	s->bytes += cap;
	r->st.bytes_in_use += cap;
	if (r->st.bytes_in_use > r->st.bytes_peak)
		r->st.bytes_peak = r->st.bytes_in_use;
	r->st.chunks_in_flight++;
	*cp = c;
	return TG_RA_PARTIAL;
}

/* The bits of word i that fall in units [first, last]. */
static inline uint64_t word_mask(uint32_t i, uint32_t first, uint32_t last)
{
	uint64_t m = ~0ull;
	uint32_t lo = i * 64;

	if (first > lo)
		m &= ~0ull << (first - lo);
	if (last < lo + 63)
		m &= ~0ull >> (63 - (last - lo));
	return m;
}

/* Set units [first, last] and return how many were clear before. */
static uint32_t units_set(uint64_t *w, uint32_t first, uint32_t last)
{
	uint32_t fresh = 0;

	for (uint32_t i = first / 64; i <= last / 64; i++) {
		uint64_t m = word_mask(i, first, last);

		fresh += (uint32_t)__builtin_popcountll(m & ~w[i]);
		w[i] |= m;
	}
	return fresh;
}

static bool unit_held(const uint64_t *w, uint32_t u)
{
	return (w[u / 64] >> (u % 64)) & 1;
}

static bool units_all_held(const uint64_t *w, uint32_t first, uint32_t last)
{
	for (uint32_t i = first / 64; i <= last / 64; i++) {
		uint64_t m = word_mask(i, first, last);

		if ((w[i] & m) != m)
			return false;
	}
	return true;
}

static enum tg_ra add_frag(struct tg_reasm *r, struct tg_rsess *s, const struct tg_data *d,
			   uint64_t now_ms, tg_reasm_verify_fn verify, void *arg,
			   struct tg_rchunk **out)
{
	struct tg_rchunk *c;
	uint32_t first, last, fresh;
	uint64_t bytes;
	bool tail_fresh;
	enum tg_ra ret;

	ret = check_frag(r, d);
	if (ret != TG_RA_PARTIAL)
		return ret;

	c = find_id(s, d->chunk_id);
	if (c) {
		if (c->len != d->chunk_len || memcmp(c->tag, d->tag, TG_TAG_LEN))
			return TG_RA_DROP_MISMATCH;
		if (c->complete)
			return TG_RA_DUP;
	} else {
		ret = open_chunk(r, s, d, verify, arg, &c);
		if (ret != TG_RA_PARTIAL)
			return ret;
	}

	first = d->frag_off / TG_FRAG_UNIT;
	last = units_of(d->frag_off + d->frag_len) - 1;
	if (units_all_held(c->units, first, last))
		return TG_RA_DUP;
	/*
	 * Overlaps are copied whole: honest retransmits carry the same bytes,
	 * and the chunk hash is checked over the result anyway.
	 */
	memcpy(c->buf + d->frag_off, d->payload, d->frag_len);
	tail_fresh = last == c->nunits - 1 && !unit_held(c->units, last);
	fresh = units_set(c->units, first, last);
	bytes = (uint64_t)fresh * TG_FRAG_UNIT;
	if (tail_fresh)
		bytes -= (uint64_t)c->nunits * TG_FRAG_UNIT - c->len;
	c->received += (uint32_t)bytes;
	c->last_ms = now_ms;
	if (c->received < c->len)
		return TG_RA_PARTIAL;
	c->complete = true;
	r->st.chunks_completed++;
	*out = c;
	return TG_RA_COMPLETE;
}

enum tg_ra tg_reasm_add(struct tg_reasm *r, struct tg_rsess *s, const struct tg_data *d,
			uint64_t now_ms, tg_reasm_verify_fn verify, void *arg,
			struct tg_rchunk **out)
{
	struct tg_rchunk *c = NULL;
	enum tg_ra ret;

	if (!r)
		return TG_RA_DROP_RANGE;
	if (!s || !d) {
		ret = TG_RA_DROP_RANGE;
		goto out;
	}
	ret = add_frag(r, s, d, now_ms, verify, arg, &c);
out:
	r->st.frags[ret]++;
	if (out)
		*out = ret == TG_RA_COMPLETE ? c : NULL;
	return ret;
}

/* Eight bits of the unit bitmap from bit pos, LSB-first like the wire. */
static uint8_t units_byte(const struct tg_rchunk *c, uint32_t pos)
{
	uint32_t nwords = (c->nunits + 63) / 64;
	uint32_t w = pos / 64, sh = pos % 64;
	uint64_t v = c->units[w] >> sh;

	if (sh > 56 && w + 1 < nwords)
		v |= c->units[w + 1] << (64 - sh);
	return (uint8_t)v;
}

unsigned tg_reasm_sack(const struct tg_rchunk *c, uint32_t unit_base, uint8_t *bitmap, size_t cap)
{
	uint32_t n, nbytes;

	if (!c || !c->buf || !bitmap || unit_base >= c->nunits)
		return 0;
	n = c->nunits - unit_base;
	if (n > TG_SACK_UNITS_MAX)
		n = TG_SACK_UNITS_MAX;
	if ((size_t)n > cap * 8)
		n = (uint32_t)(cap * 8);
	if (n == 0)
		return 0;
	nbytes = (n + 7) / 8;
	for (uint32_t j = 0; j < nbytes; j++)
		bitmap[j] = units_byte(c, unit_base + j * 8);
	/* Bits past n describe units the SACK does not cover: the wire wants 0. */
	if (n % 8)
		bitmap[nbytes - 1] &= (uint8_t)((1u << (n % 8)) - 1);
	return n;
}

void tg_reasm_get_stats(const struct tg_reasm *r, struct tg_reasm_stats *st)
{
	if (!r || !st)
		return;
	*st = r->st;
}

uint32_t tg_reasm_sess_inflight(const struct tg_rsess *s)
{
	return s ? s->inflight : 0;
}

size_t tg_reasm_sess_bytes(const struct tg_rsess *s)
{
	return s ? s->bytes : 0;
}
