/*
 * engine_down.c - the restore direction of a session (docs/protocol.md
 * 3.16-3.18, 5.5): RESTORE_REQ -> restore job -> RESTORE_OK, GET -> read job
 * into one of the worker's few read buffers -> DATA with 'D' tags, and C->G
 * SACK -> resend what the client lacks.
 *
 * Read buffers are the worker's whole restore memory (allocated at create,
 * tg_store_get_cap(max_chunk) bytes each), so GETs wait in a per-session
 * queue bounded by the session's credits until a buffer is free. Sending is
 * paced: at most GW_TX_BUDGET fragments per poll turn over all buffers, and
 * a full TX stops the turn without losing the fragment, so a restore never
 * overflows the port's TX ring. A buffer whose chunk was sent whole stays
 * readable (IDLE) for SACK repairs until another read recycles it.
 */
#include <string.h>

#include "engine_int.h"

/* ---- unit bitmaps ---- */

static void bm_set_all(uint64_t *w, uint32_t n)
{
	memset(w, 0xff, (n + 63) / 64 * sizeof(uint64_t));
	if (n % 64)
		w[n / 64] = (1ull << (n % 64)) - 1;
}

static void bm_clear_all(uint64_t *w, uint32_t n)
{
	memset(w, 0, (n + 63) / 64 * sizeof(uint64_t));
}

static inline bool bm_get(const uint64_t *w, uint32_t i)
{
	return (w[i / 64] >> (i % 64)) & 1;
}

static inline void bm_set(uint64_t *w, uint32_t i)
{
	w[i / 64] |= 1ull << (i % 64);
}

static inline void bm_clr(uint64_t *w, uint32_t i)
{
	w[i / 64] &= ~(1ull << (i % 64));
}

/* First set bit at or after from, or n. */
static uint32_t bm_next(const uint64_t *w, uint32_t n, uint32_t from)
{
	for (uint32_t i = from / 64; i < (n + 63) / 64; i++) {
		uint64_t v = w[i];

		if (i == from / 64)
			v &= ~0ull << (from % 64);
		if (v) {
			uint32_t b = i * 64 + (uint32_t)__builtin_ctzll(v);

			return b < n ? b : n;
		}
	}
	return n;
}

static uint32_t bm_count(const uint64_t *w, uint32_t n)
{
	uint32_t c = 0;

	for (uint32_t i = 0; i < (n + 63) / 64; i++)
		c += (uint32_t)__builtin_popcountll(w[i]);
	return c;
}

static inline uint32_t units_of(uint32_t len)
{
	return (len + TG_FRAG_UNIT - 1) / TG_FRAG_UNIT;
}

/* ---- read buffers ---- */

static struct gw_rbuf *rb_find(struct gw_engine *e, const struct gw_sess *s, const uint8_t *id)
{
	uint32_t idx = gw_sess_idx(e, s);

	for (unsigned k = 0; k < GW_READ_BUFS; k++) {
		struct gw_rbuf *rb = &e->rb[k];

		if (rb->state != GW_RB_FREE && rb->sess == idx && rb->gen == s->gen &&
		    tg_id_eq(rb->id.b, id))
			return rb;
	}
	return NULL;
}

/* A free buffer, else the one idle longest (its chunk was sent whole). */
static struct gw_rbuf *rb_take(struct gw_engine *e)
{
	struct gw_rbuf *best = NULL;

	for (unsigned k = 0; k < GW_READ_BUFS; k++) {
		struct gw_rbuf *rb = &e->rb[k];

		if (rb->state == GW_RB_FREE)
			return rb;
		if (rb->state == GW_RB_IDLE && (!best || rb->idle_since < best->idle_since))
			best = rb;
	}
	return best;
}

static bool rb_start_read(struct gw_engine *e, struct gw_sess *s, struct gw_rbuf *rb,
			  const struct tg_chunk_id *id, bool preset)
{
	struct gw_job *j = gw_job_get(e);

	if (!j) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return false;
	}
	j->type = GW_JOB_READ;
	j->u.read.id = *id;
	j->u.read.buf = rb->buf;
	j->u.read.cap = e->read_cap;
	if (!gw_job_submit_sess(e, s, j))
		return false;
	rb->state = GW_RB_READING;
	rb->sess = gw_sess_idx(e, s);
	rb->gen = s->gen;
	rb->id = *id;
	rb->preset = preset;
	return true;
}

void gw_down_sess_closed(struct gw_engine *e, struct gw_sess *s)
{
	uint32_t idx = gw_sess_idx(e, s);

	/* A buffer a read job points at comes free when the job returns. */
	for (unsigned k = 0; k < GW_READ_BUFS; k++) {
		struct gw_rbuf *rb = &e->rb[k];

		if (rb->state != GW_RB_FREE && rb->state != GW_RB_READING && rb->sess == idx &&
		    rb->gen == s->gen)
			rb->state = GW_RB_FREE;
	}
	s->gq_len = 0;
}

/* ---- the GET queue ---- */

static bool getq_has(const struct gw_sess *s, const uint8_t *id)
{
	for (unsigned i = 0; i < s->gq_len; i++)
		if (tg_id_eq(s->getq[(s->gq_head + i) % s->credits].b, id))
			return true;
	return false;
}

static void getq_push(struct gw_engine *e, struct gw_sess *s, const uint8_t *id)
{
	if (getq_has(s, id))
		return;
	if (s->gq_len >= s->credits) {
		/* The client asked for more than its window. */
		gw_drop(e, GW_DROP_BAD_STATE);
		return;
	}
	memcpy(s->getq[(s->gq_head + s->gq_len) % s->credits].b, id, TG_ID_LEN);
	s->gq_len++;
	if (!s->get_listed) {
		s->get_listed = true;
		e->get_list[e->nget_list++] = gw_sess_idx(e, s);
	}
}

/* ---- packets ---- */

static void send_restore_ok(struct gw_engine *e, struct gw_sess *s)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_RESTORE_OK;
	m.hdr.token = s->token;
	m.u.restore_ok = s->rok;
	gw_tx_msg(e, &s->peer, &m);
}

static bool same_req(const struct tg_restore_req *a, const struct tg_restore_req *b)
{
	return tg_id_eq(a->device_id, b->device_id) && a->backup_id == b->backup_id &&
	       a->flags == b->flags;
}

static bool zero_id(const uint8_t *id)
{
	static const uint8_t z[TG_ID_LEN];

	return !memcmp(id, z, TG_ID_LEN);
}

void gw_down_restore_req(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m)
{
	const struct tg_restore_req *rq = &m->u.restore_req;
	bool other = !zero_id(rq->device_id) && !tg_id_eq(rq->device_id, s->device);
	struct gw_job *j;

	if (s->restore_done && s->restore_ok && same_req(rq, &s->rreq)) {
		send_restore_ok(e, s);
		return;
	}
	if (s->restore_inflight) {
		if (!same_req(rq, &s->rreq))
			gw_drop(e, GW_DROP_BAD_STATE);
		return;
	}
	/* Another device's backup needs the flag and the role (3.16). */
	if ((other && !(rq->flags & TG_RF_ADMIN)) || ((rq->flags & TG_RF_ADMIN) && !s->admin)) {
		gw_send_error(e, &s->peer, s->token, TG_ERR_BAD_REQUEST, 0, rq->device_id,
			      "restoring another device needs the org-admin role");
		return;
	}
	if (e->stopping) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	j = gw_job_get(e);
	if (!j) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	j->type = GW_JOB_RESTORE;
	memcpy(j->u.restore.device, s->device, TG_ID_LEN);
	j->u.restore.req = *rq;
	j->u.restore.admin = s->admin;
	if (!gw_job_submit_sess(e, s, j))
		return;
	s->restore_inflight = true;
	s->restore_done = false;
	s->rreq = *rq;
}

static void restore_done(struct gw_engine *e, struct gw_sess *s, const struct gw_job *j)
{
	const uint8_t *ref = j->u.restore.req.device_id;

	s->restore_inflight = false;
	if (s->state != GW_S_ACTIVE)
		return;
	if (j->status != TG_OK) {
		gw_send_error(e, &s->peer, s->token, j->status, j->retry_after,
			      zero_id(ref) ? s->device : ref, j->msg);
		return;
	}
	s->restore_done = true;
	s->restore_ok = true;
	s->rok = j->u.restore.ok;
	e->c->restores++;
	send_restore_ok(e, s);
}

void gw_down_get(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m)
{
	const struct tg_get *g = &m->u.get;

	if (!s->restore_ok) {
		gw_send_error(e, &s->peer, s->token, TG_ERR_BAD_REQUEST, 0, NULL,
			      "GET before RESTORE_OK");
		return;
	}
	if (e->stopping) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	for (unsigned i = 0; i < g->count; i++) {
		const uint8_t *id = g->ids + (size_t)i * TG_ID_LEN;
		struct gw_rbuf *rb = rb_find(e, s, id);

		if (!rb) {
			getq_push(e, s, id);
			continue;
		}
		/* A repeated GET resends the whole chunk. */
		if (rb->state == GW_RB_READING) {
			rb->preset = false;
		} else {
			bm_set_all(rb->todo, rb->nunits);
			rb->pending = rb->nunits;
			rb->cursor = 0;
			rb->state = GW_RB_SEND;
		}
	}
}

void gw_down_sack(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m)
{
	const struct tg_sack *sk = &m->u.sack;
	struct gw_rbuf *rb;

	if (!s->restore_ok || sk->chunk_len > e->info.max_chunk) {
		gw_drop(e, GW_DROP_BAD_STATE);
		return;
	}
	rb = rb_find(e, s, sk->chunk_id);
	if (rb && rb->state == GW_RB_READING) {
		if (rb->preset && rb->len == sk->chunk_len)
			for (uint32_t i = 0; i < sk->nunits; i++)
				if (!(sk->bitmap[i / 8] >> (i % 8) & 1))
					bm_set(rb->todo, sk->unit_base + i);
		return;
	}
	if (rb && rb->len != sk->chunk_len) {
		gw_drop(e, GW_DROP_BAD_STATE);
		return;
	}
	if (rb) {
		for (uint32_t i = 0; i < sk->nunits; i++) {
			uint32_t u = sk->unit_base + i;

			if (!(sk->bitmap[i / 8] >> (i % 8) & 1) && !bm_get(rb->todo, u)) {
				bm_set(rb->todo, u);
				rb->pending++;
			}
		}
		if (rb->pending && rb->state == GW_RB_IDLE) {
			rb->state = GW_RB_SEND;
			rb->cursor = 0;
		}
		return;
	}
	if (e->stopping) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	/* The buffer was recycled: read the chunk again, send only the gaps. */
	rb = rb_take(e);
	if (rb && rb->state != GW_RB_READING) {
		struct tg_chunk_id id;

		memcpy(id.b, sk->chunk_id, TG_ID_LEN);
		rb->state = GW_RB_FREE;
		rb->len = sk->chunk_len;
		rb->nunits = units_of(sk->chunk_len);
		bm_clear_all(rb->todo, rb->nunits);
		for (uint32_t i = 0; i < sk->nunits; i++)
			if (!(sk->bitmap[i / 8] >> (i % 8) & 1))
				bm_set(rb->todo, sk->unit_base + i);
		if (rb_start_read(e, s, rb, &id, true))
			return;
	}
	getq_push(e, s, sk->chunk_id);
}

static void read_done(struct gw_engine *e, struct gw_sess *s, const struct gw_job *j)
{
	struct gw_rbuf *rb = NULL;
	uint32_t len = j->u.read.len;

	for (unsigned k = 0; k < GW_READ_BUFS; k++)
		if (e->rb[k].buf == j->u.read.buf && e->rb[k].state == GW_RB_READING)
			rb = &e->rb[k];
	if (!rb)
		return;
	if (s->state != GW_S_ACTIVE) {
		rb->state = GW_RB_FREE;
		return;
	}
	if (j->status != TG_OK || len < 1 || len > e->info.max_chunk ||
	    tg_chunk_tag(s->key, 'D', s->token, rb->id.b, len, rb->tag)) {
		uint16_t st = j->status == TG_OK ? TG_ERR_STORAGE : j->status;

		rb->state = GW_RB_FREE;
		gw_send_error(e, &s->peer, s->token, st, 0, rb->id.b, j->msg);
		return;
	}
	/* A SACK's gaps only describe a chunk of the length it named. */
	if (rb->preset && (rb->len != len || !bm_count(rb->todo, units_of(len))))
		rb->preset = false;
	rb->len = len;
	rb->nunits = units_of(len);
	if (!rb->preset)
		bm_set_all(rb->todo, rb->nunits);
	rb->pending = bm_count(rb->todo, rb->nunits);
	rb->cursor = 0;
	rb->state = GW_RB_SEND;
	e->c->chunks_served++;
}

void gw_down_done(struct gw_engine *e, struct gw_sess *s, struct gw_job *j)
{
	if (j->type == GW_JOB_RESTORE)
		restore_done(e, s, j);
	else if (j->type == GW_JOB_READ)
		read_done(e, s, j);
}

/* ---- per poll turn: start reads, send paced DATA ---- */

static void start_reads(struct gw_engine *e)
{
	unsigned keep = 0;

	for (unsigned i = 0; i < e->nget_list; i++) {
		struct gw_sess *s = &e->sess[e->get_list[i]];
		struct gw_rbuf *rb;

		while (!e->stopping && s->state == GW_S_ACTIVE && s->gq_len && (rb = rb_take(e))) {
			if (!rb_start_read(e, s, rb, &s->getq[s->gq_head], false))
				break;
			s->gq_head = (uint16_t)((s->gq_head + 1) % s->credits);
			s->gq_len--;
		}
		if (s->state == GW_S_ACTIVE && s->gq_len && !e->stopping)
			e->get_list[keep++] = e->get_list[i];
		else
			s->get_listed = false;
	}
	e->nget_list = keep;
}

/* Send rb's pending units, merging adjacent ones up to frag_size; false
 * when TX is full (the fragment stays pending). */
static bool rb_send(struct gw_engine *e, struct gw_rbuf *rb, unsigned *budget)
{
	struct gw_sess *s = &e->sess[rb->sess];
	uint32_t max_units = s->frag_size / TG_FRAG_UNIT;

	while (*budget && rb->pending) {
		uint32_t u = bm_next(rb->todo, rb->nunits, rb->cursor), n = 0, off, flen;
		struct tg_msg m;

		if (u >= rb->nunits)
			u = bm_next(rb->todo, rb->nunits, 0);
		if (u >= rb->nunits) {
			rb->pending = 0;
			break;
		}
		while (n < max_units && u + n < rb->nunits && bm_get(rb->todo, u + n))
			n++;
		off = u * TG_FRAG_UNIT;
		flen = n * TG_FRAG_UNIT;
		if (off + flen > rb->len)
			flen = rb->len - off;
		memset(&m, 0, sizeof(m));
		m.hdr.type = TG_MSG_DATA;
		m.hdr.token = s->token;
		memcpy(m.u.data.chunk_id, rb->id.b, TG_ID_LEN);
		m.u.data.chunk_len = rb->len;
		m.u.data.frag_off = off;
		memcpy(m.u.data.tag, rb->tag, TG_TAG_LEN);
		m.u.data.frag_len = (uint16_t)flen;
		m.u.data.payload = rb->buf + off;
		if (!gw_tx_msg(e, &s->peer, &m))
			return false;
		for (uint32_t i = 0; i < n; i++)
			bm_clr(rb->todo, u + i);
		rb->pending -= n;
		rb->cursor = u + n;
		(*budget)--;
	}
	if (!rb->pending) {
		rb->state = GW_RB_IDLE;
		rb->idle_since = e->now_ms;
	}
	return true;
}

void gw_down_poll(struct gw_engine *e)
{
	unsigned budget = GW_TX_BUDGET;

	start_reads(e);
	for (unsigned k = 0; k < GW_READ_BUFS && budget; k++) {
		struct gw_rbuf *rb = &e->rb[(e->rb_rr + k) % GW_READ_BUFS];

		if (rb->state == GW_RB_SEND && !rb_send(e, rb, &budget))
			break;
	}
	e->rb_rr = (e->rb_rr + 1) % GW_READ_BUFS;
}
