/*
 * engine_up.c - the backup direction of a session (docs/protocol.md 3.9-3.15,
 * 5.4): OFFER -> offer job -> NEED, DATA -> reassembly -> store job -> ACK,
 * PING -> SACKs + PONG, BACKUP_END -> backup-end job -> BACKUP_DONE.
 *
 * The one rule that matters: an ACK entry leaves only after the store job
 * came back, so TG_OK always means durable. ACK entries are gathered per
 * session and flushed once per poll turn with the current credits. A lost
 * ACK is repaired from a small ring of recent durable answers when the
 * client, having seen no SACK for the chunk, resends it.
 */
#include <string.h>

#include "engine_int.h"

/* Checked once per chunk, on the fragment that opens it (tg_reasm). */
static bool verify_up(void *arg, const struct tg_data *d)
{
	const struct gw_sess *s = arg;
	uint8_t tag[TG_TAG_LEN];

	if (tg_chunk_tag(s->key, 'U', s->token, d->chunk_id, d->chunk_len, tag))
		return false;
	return tg_ct_eq(tag, d->tag, TG_TAG_LEN);
}

static uint16_t credits_now(const struct gw_engine *e, const struct gw_sess *s)
{
	/* 0 = pause: a stopping gateway takes no new chunks. */
	return e->stopping ? 0 : s->credits;
}

/* ---- OFFER / NEED ---- */

static void send_need(struct gw_engine *e, struct gw_sess *s, const struct gw_need_rec *r)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_NEED;
	m.hdr.token = s->token;
	m.u.need.offer_seq = r->seq;
	m.u.need.count = r->count;
	m.u.need.bitmap = r->bits;
	gw_tx_msg(e, &s->peer, &m);
}

void gw_up_offer(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m)
{
	const struct tg_offer *o = &m->u.offer;
	struct tg_chunk_ref ref;
	struct gw_job *j;

	for (unsigned i = 0; i < o->count; i++) {
		tg_offer_entry(o, i, &ref);
		if (ref.len > e->info.max_chunk) {
			gw_drop(e, GW_DROP_BAD_STATE);
			gw_send_error(e, &s->peer, s->token, TG_ERR_BAD_REQUEST, o->offer_seq, ref.id,
				      "chunk larger than max_chunk");
			return;
		}
	}
	for (unsigned k = 0; k < GW_NEED_CACHE; k++) {
		const struct gw_need_rec *r = &s->need[k];

		if (r->valid && r->seq == o->offer_seq && r->count == o->count) {
			send_need(e, s, r);
			return;
		}
	}
	for (unsigned k = 0; k < s->noffers; k++)
		if (s->offer_seq[k] == o->offer_seq)
			return; /* retransmission: its job will answer */
	if (e->stopping) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	if (s->noffers >= GW_OFFERS_MAX) {
		gw_drop(e, GW_DROP_BAD_STATE);
		return;
	}
	j = gw_job_get(e);
	if (!j) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	j->type = GW_JOB_OFFER;
	j->u.offer.count = o->count;
	j->u.offer.offer_seq = o->offer_seq;
	for (unsigned i = 0; i < o->count; i++)
		tg_offer_entry(o, i, &j->u.offer.ids[i]);
	if (!gw_job_submit_sess(e, s, j))
		return;
	s->offer_seq[s->noffers++] = o->offer_seq;
	e->c->offers++;
	e->c->offered_ids += o->count;
}

static void offer_done(struct gw_engine *e, struct gw_sess *s, const struct gw_job *j)
{
	struct gw_need_rec *r;
	unsigned nb = (j->u.offer.count + 7u) / 8u;

	for (unsigned k = 0; k < s->noffers; k++) {
		if (s->offer_seq[k] == j->u.offer.offer_seq) {
			s->offer_seq[k] = s->offer_seq[--s->noffers];
			break;
		}
	}
	if (s->state != GW_S_ACTIVE)
		return;
	if (j->status != TG_OK) {
		gw_send_error(e, &s->peer, s->token, j->status, j->u.offer.offer_seq, NULL, j->msg);
		return;
	}
	r = &s->need[s->need_next];
	s->need_next = (uint8_t)((s->need_next + 1) % GW_NEED_CACHE);
	r->valid = true;
	r->seq = j->u.offer.offer_seq;
	r->count = j->u.offer.count;
	memcpy(r->bits, j->u.offer.need, nb);
	/* The wire wants the unused high bits of the last byte clear. */
	if (r->count % 8)
		r->bits[nb - 1] &= (uint8_t)((1u << (r->count % 8)) - 1);
	for (unsigned i = 0; i < nb; i++)
		e->c->needed_ids += (uint64_t)__builtin_popcount(r->bits[i]);
	send_need(e, s, r);
}

/* ---- ACK ---- */

static void send_acks(struct gw_engine *e, struct gw_sess *s)
{
	/* Within a session no packet may exceed the largest DATA datagram. */
	unsigned per = (s->frag_size + 32u) / TG_ACK_ENTRY_LEN;
	unsigned done = 0;

	if (per > TG_OFFER_MAX)
		per = TG_OFFER_MAX;
	while (done < s->npend) {
		unsigned n = s->npend - done < per ? s->npend - done : per;
		struct tg_msg m;

		for (unsigned i = 0; i < n; i++) {
			struct tg_ack_entry ae;

			memcpy(ae.id, s->pend[done + i].id.b, TG_ID_LEN);
			ae.status = s->pend[done + i].status;
			tg_ack_entry_put(e->scratch, i, &ae);
		}
		memset(&m, 0, sizeof(m));
		m.hdr.type = TG_MSG_ACK;
		m.hdr.token = s->token;
		m.u.ack.credits = credits_now(e, s);
		m.u.ack.credit_bytes = s->credit_bytes;
		m.u.ack.count = (uint16_t)n;
		m.u.ack.entries = e->scratch;
		if (gw_tx_msg(e, &s->peer, &m)) {
			for (unsigned i = 0; i < n; i++)
				if (s->pend[done + i].status != TG_OK)
					e->c->err_sent[s->pend[done + i].status]++;
		}
		done += n;
	}
	s->npend = 0;
}

static bool pend_has(const struct gw_sess *s, const struct tg_chunk_id *id)
{
	for (unsigned i = 0; i < s->npend; i++)
		if (tg_id_eq(s->pend[i].id.b, id->b))
			return true;
	return false;
}

static void pend_add(struct gw_engine *e, struct gw_sess *s, const struct tg_chunk_id *id,
		     uint16_t status)
{
	for (unsigned i = 0; i < s->npend; i++) {
		if (tg_id_eq(s->pend[i].id.b, id->b)) {
			s->pend[i].status = status;
			return;
		}
	}
	if (s->npend == GW_ACK_PEND)
		send_acks(e, s);
	s->pend[s->npend].id = *id;
	s->pend[s->npend].status = status;
	s->npend++;
	if (!s->ack_listed) {
		s->ack_listed = true;
		e->ack_list[e->nack_list++] = gw_sess_idx(e, s);
	}
}

void gw_up_flush_acks(struct gw_engine *e)
{
	for (unsigned i = 0; i < e->nack_list; i++) {
		struct gw_sess *s = &e->sess[e->ack_list[i]];

		s->ack_listed = false;
		if (s->state == GW_S_ACTIVE && s->npend)
			send_acks(e, s);
	}
	e->nack_list = 0;
}

static const struct gw_ack_rec *recent_find(const struct gw_sess *s, const uint8_t *id)
{
	for (unsigned i = 0; i < s->nrecent; i++)
		if (tg_id_eq(s->recent[i].id.b, id))
			return &s->recent[i];
	return NULL;
}

static void recent_add(struct gw_sess *s, const struct tg_chunk_id *id, uint16_t status)
{
	struct gw_ack_rec *r = &s->recent[s->recent_next];

	/* Slots [0, nrecent) are filled; the oldest is overwritten first. */
	r->id = *id;
	r->status = status;
	s->recent_next = (uint8_t)((s->recent_next + 1) % GW_ACK_RECENT);
	s->nrecent += s->nrecent < GW_ACK_RECENT;
}

/* ---- DATA ---- */

static void store_submit(struct gw_engine *e, struct gw_sess *s, struct tg_rchunk *c)
{
	struct gw_job *j = gw_job_get(e);

	if (!j) {
		gw_drop(e, GW_DROP_OVERLOAD);
		tg_reasm_release(e->ra, s->rs, c);
		return;
	}
	j->type = GW_JOB_STORE;
	j->u.store.policy = s->policy;
	j->u.store.id = c->id;
	j->u.store.data = c->buf;
	j->u.store.len = c->len;
	j->u.store.cap = (uint32_t)c->cap;
	if (!gw_job_submit_sess(e, s, j))
		tg_reasm_release(e->ra, s->rs, c);
}

void gw_up_data(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m)
{
	const struct tg_data *d = &m->u.data;
	struct tg_rchunk *c = NULL;
	struct tg_chunk_id id;
	enum tg_ra r;

	if (d->frag_len > s->frag_size) {
		e->c->ra[TG_RA_DROP_RANGE]++;
		gw_drop(e, GW_DROP_REASM);
		return;
	}
	if (e->stopping) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	memcpy(id.b, d->chunk_id, TG_ID_LEN);
	if (!tg_reasm_find(s->rs, &id)) {
		const struct gw_ack_rec *rec = recent_find(s, d->chunk_id);

		if (rec) {
			/* Durable already: its ACK was lost, send it again (the
			 * tag is checked once per chunk and turn, as on open). */
			if (!pend_has(s, &id) && !verify_up(s, d)) {
				e->c->ra[TG_RA_DROP_AUTH]++;
				gw_drop(e, GW_DROP_REASM);
				return;
			}
			e->c->ra[TG_RA_DUP]++;
			e->c->data_bytes += d->frag_len;
			pend_add(e, s, &id, rec->status);
			return;
		}
	}
	r = tg_reasm_add(e->ra, s->rs, d, e->now_ms, verify_up, s, &c);
	e->c->ra[r]++;
	if (r >= TG_RA_DROP_TOO_BIG) {
		gw_drop(e, GW_DROP_REASM);
		return;
	}
	e->c->data_bytes += d->frag_len;
	if (r == TG_RA_COMPLETE && c)
		store_submit(e, s, c);
}

static void store_done(struct gw_engine *e, struct gw_sess *s, const struct gw_job *j)
{
	struct tg_rchunk *c = tg_reasm_find(s->rs, &j->u.store.id);
	uint16_t st = j->status;

	/* The job is back: only now may the buffer go. */
	if (c && c->buf == j->u.store.data)
		tg_reasm_release(e->ra, s->rs, c);
	if (s->state != GW_S_ACTIVE)
		return;
	if (st >= TG_ERR__MAX)
		st = TG_ERR_STORAGE;
	if (st == TG_OK)
		e->c->chunks_stored++;
	else if (st == TG_ERR_DUP)
		e->c->chunks_dup++;
	else
		e->c->chunks_failed++;
	if (j->u.store.lease_waited)
		e->c->lease_waits++;
	if (st == TG_OK || st == TG_ERR_DUP)
		recent_add(s, &j->u.store.id, st);
	pend_add(e, s, &j->u.store.id, st);
}

/* ---- PING: SACKs then PONG ---- */

static void send_sack(struct gw_engine *e, struct gw_sess *s, const struct tg_rchunk *c,
		      uint32_t base, uint16_t n, const uint8_t *bm)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_SACK;
	m.hdr.token = s->token;
	memcpy(m.u.sack.chunk_id, c->id.b, TG_ID_LEN);
	m.u.sack.chunk_len = c->len;
	m.u.sack.unit_base = base;
	m.u.sack.nunits = n;
	m.u.sack.bitmap = bm;
	gw_tx_msg(e, &s->peer, &m);
}

static void sack_chunk(struct gw_engine *e, struct gw_sess *s, const struct tg_rchunk *c)
{
	/* Keep each SACK within the session's packet-size rule (42 + bitmap). */
	size_t maxb = s->frag_size + 14u;
	uint8_t bm[TG_SACK_UNITS_MAX / 8];
	uint32_t base = 0, first = UINT32_MAX, n;

	if (maxb > sizeof(bm))
		maxb = sizeof(bm);
	if (c->complete) {
		/* Complete, waiting for storage: nothing to resend. */
		n = c->nunits < maxb * 8 ? c->nunits : (uint32_t)(maxb * 8);
		memset(bm, 0xff, (n + 7) / 8);
		if (n % 8)
			bm[(n + 7) / 8 - 1] = (uint8_t)((1u << (n % 8)) - 1);
		send_sack(e, s, c, 0, (uint16_t)n, bm);
		return;
	}
	/* Start at the first missing unit. */
	while (first == UINT32_MAX && (n = tg_reasm_sack(c, base, bm, maxb)) > 0) {
		for (uint32_t i = 0; i < n; i++) {
			if (!(bm[i / 8] >> (i % 8) & 1)) {
				first = base + i;
				break;
			}
		}
		base += n;
	}
	if (first == UINT32_MAX)
		return;
	for (base = first; (n = tg_reasm_sack(c, base, bm, maxb)) > 0; base += n)
		send_sack(e, s, c, base, (uint16_t)n, bm);
}

void gw_up_ping(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m)
{
	struct tg_rchunk *c;
	struct tg_msg p;

	for (unsigned i = 0; (c = tg_reasm_sess_chunk(s->rs, i)) != NULL; i++)
		sack_chunk(e, s, c);
	memset(&p, 0, sizeof(p));
	p.hdr.type = TG_MSG_PONG;
	p.hdr.token = s->token;
	p.u.pong.nonce = m->u.ping.nonce;
	p.u.pong.credits = credits_now(e, s);
	p.u.pong.credit_bytes = s->credit_bytes;
	gw_tx_msg(e, &s->peer, &p);
}

/* ---- BACKUP_END / BACKUP_DONE ---- */

static void send_backup_done(struct gw_engine *e, struct gw_sess *s, const uint8_t *root,
			     uint64_t backup_id, uint16_t status)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_BACKUP_DONE;
	m.hdr.token = s->token;
	memcpy(m.u.backup_done.root_id, root, TG_ID_LEN);
	m.u.backup_done.backup_id = status == TG_OK ? backup_id : 0;
	m.u.backup_done.status = status;
	if (gw_tx_msg(e, &s->peer, &m) && status != TG_OK)
		e->c->err_sent[status]++;
}

void gw_up_backup_end(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m)
{
	const struct tg_backup_end *be = &m->u.backup_end;
	struct gw_job *j;

	if (s->end_done && tg_id_eq(s->end_root, be->root_id)) {
		/* Idempotent: the same root gets the same backup_id. */
		send_backup_done(e, s, s->end_root, s->end_backup_id, TG_OK);
		return;
	}
	if (s->end_inflight) {
		if (!tg_id_eq(s->end_root, be->root_id))
			gw_drop(e, GW_DROP_BAD_STATE);
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
	j->type = GW_JOB_BACKUP_END;
	memcpy(j->u.end.device, s->device, TG_ID_LEN);
	j->u.end.req = *be;
	memcpy(j->u.end.name_buf, be->name, be->name_len);
	j->u.end.req.name = j->u.end.name_buf;
	if (!gw_job_submit_sess(e, s, j))
		return;
	s->end_inflight = true;
	s->end_done = false;
	memcpy(s->end_root, be->root_id, TG_ID_LEN);
}

static void end_done(struct gw_engine *e, struct gw_sess *s, const struct gw_job *j)
{
	uint16_t st = j->status < TG_ERR__MAX ? j->status : TG_ERR_STORAGE;

	s->end_inflight = false;
	if (s->state != GW_S_ACTIVE)
		return;
	if (st == TG_OK) {
		s->end_done = true;
		s->end_backup_id = j->u.end.backup_id;
	}
	send_backup_done(e, s, j->u.end.req.root_id, j->u.end.backup_id, st);
}

void gw_up_done(struct gw_engine *e, struct gw_sess *s, struct gw_job *j)
{
	switch (j->type) {
	case GW_JOB_OFFER:
		offer_done(e, s, j);
		break;
	case GW_JOB_STORE:
		store_done(e, s, j);
		break;
	case GW_JOB_BACKUP_END:
		end_done(e, s, j);
		break;
	default:
		break;
	}
}
