/*
 * fetch.c - the download engine (protocol.md 5.5): RESTORE_REQ until
 * RESTORE_OK, then GET chunk ids within the credit window, reassemble the
 * 'D'-tagged DATA fragments, verify each chunk's XXH3-128 against its id
 * before handing it over, and recover losses: a chunk with no new fragment
 * for an RTO gets a SACK of the units we hold (the gateway resends the rest)
 * or, when we hold none, its GET again.
 *
 * The gateway serves GETs in order, so a chunk still waiting its turn sees
 * no fragment while earlier chunks stream: its timer only runs while the
 * whole session is silent, which keeps it from being requested twice.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tgc.h"

enum { F_WAIT = 0, F_REQ, F_DONE };

#define RETRY_LIMIT 8
#define MISMATCH_LIMIT 2
#define POLL_CAP_US 50000

struct fitem {
	uint8_t state;
	uint8_t retries, mismatches;
	bool tag_ok;
	uint8_t tag[TG_TAG_LEN];
	uint8_t *buf;
	uint8_t *units;           /* bitmap of held units */
	uint32_t nunits, held;
	uint64_t rto_us, activity_ns;
};

struct down {
	struct tgc_conn *c;
	const struct tgc_want *w;
	struct fitem *f;
	size_t n, next, ndone;
	struct tgc_idmap map;
	struct tgc_window win;
	uint32_t *req;            /* requested, not done */
	size_t nreq;
	uint64_t last_data_ns;
	uint64_t done_bytes, total_bytes;
	unsigned get_max, sack_units_max;
	tgc_deliver_fn fn;
	void *arg;
};

int tgc_restore_req(struct tgc_conn *c, const uint8_t *device_id, uint64_t backup_id,
		    uint16_t flags, struct tg_restore_ok *ok)
{
	struct tg_msg out, in;
	uint64_t rto = c->rto.rto_us, next;
	int rc;

	memset(&out, 0, sizeof(out));
	out.hdr.type = TG_MSG_RESTORE_REQ;
	if (device_id)
		memcpy(out.u.restore_req.device_id, device_id, TG_ID_LEN);
	out.u.restore_req.backup_id = backup_id;
	out.u.restore_req.flags = flags;
	rc = tgc_send(c, &out);
	if (rc)
		return rc;
	next = tgc_now_ns() + rto * 1000;
	for (;;) {
		uint64_t now = tgc_now_ns();

		if (tgc_dead(c))
			return -ETIMEDOUT;
		if (now >= next) {
			out.hdr.token = 0;
			rc = tgc_send(c, &out);
			if (rc)
				return rc;
			rto = tgc_rto_backoff(rto);
			next = now + rto * 1000;
			continue;
		}
		rc = tgc_recv(c, &in, (next - now) / 1000 + 1);
		if (rc < 0)
			return rc;
		if (!rc || in.hdr.token != c->token)
			continue;
		if (in.hdr.type == TG_MSG_RESTORE_OK) {
			*ok = in.u.restore_ok;
			return 0;
		}
		rc = tgc_session_common(c, &in);
		if (rc)
			return rc;
	}
}

static int send_get(struct down *d, const uint32_t *idx, unsigned n)
{
	uint8_t ids[TG_OFFER_MAX * TG_ID_LEN];
	struct tg_msg m;

	for (unsigned k = 0; k < n; k++)
		memcpy(ids + k * TG_ID_LEN, d->w[idx[k]].id, TG_ID_LEN);
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_GET;
	m.u.get.count = (uint16_t)n;
	m.u.get.ids = ids;
	return tgc_send(d->c, &m);
}

static int request_more(struct down *d)
{
	uint32_t batch[TG_OFFER_MAX];
	unsigned nb = 0;
	uint64_t now = tgc_now_ns();
	int rc;

	while (d->next < d->n && tgc_win_can_send(&d->win, d->w[d->next].len)) {
		size_t i = d->next++;
		struct fitem *f = &d->f[i];

		if (f->state != F_WAIT)
			continue;
		f->nunits = (d->w[i].len + TG_FRAG_UNIT - 1) / TG_FRAG_UNIT;
		f->buf = malloc(d->w[i].len);
		f->units = calloc((f->nunits + 7) / 8, 1);
		if (!f->buf || !f->units)
			return -ENOMEM;
		f->state = F_REQ;
		f->rto_us = d->c->rto.rto_us;
		f->activity_ns = now;
		tgc_win_add(&d->win, d->w[i].len);
		d->req[d->nreq++] = (uint32_t)i;
		batch[nb++] = (uint32_t)i;
		if (nb == d->get_max) {
			rc = send_get(d, batch, nb);
			if (rc)
				return rc;
			nb = 0;
		}
	}
	return nb ? send_get(d, batch, nb) : 0;
}

static void req_remove(struct down *d, uint32_t i)
{
	for (size_t k = 0; k < d->nreq; k++)
		if (d->req[k] == i) {
			d->req[k] = d->req[--d->nreq];
			break;
		}
	tgc_win_remove(&d->win, d->w[i].len);
}

static void reset_units(struct fitem *f)
{
	memset(f->units, 0, (f->nunits + 7) / 8);
	f->held = 0;
	f->tag_ok = false;
}

static int on_data(struct down *d, const struct tg_data *dt)
{
	uint32_t i = tgc_idmap_get(&d->map, dt->chunk_id);
	struct tg_chunk_id h;
	struct fitem *f;
	uint32_t u0, u1;
	bool fresh = false;
	int rc;

	/* only chunks we asked for, with the length we expect (3.11) */
	if (i == UINT32_MAX || d->f[i].state != F_REQ || dt->chunk_len != d->w[i].len ||
	    dt->frag_len > d->c->frag_size) {
		d->c->st.rx_dropped++;
		return 0;
	}
	f = &d->f[i];
	if (!f->tag_ok) {
		uint8_t tag[TG_TAG_LEN];

		rc = tg_chunk_tag(d->c->key, 'D', d->c->token, dt->chunk_id, dt->chunk_len, tag);
		if (rc)
			return rc;
		if (!tg_ct_eq(tag, dt->tag, TG_TAG_LEN)) {
			d->c->st.rx_dropped++;
			return 0;
		}
		memcpy(f->tag, tag, TG_TAG_LEN);
		f->tag_ok = true;
	} else if (memcmp(f->tag, dt->tag, TG_TAG_LEN)) {
		d->c->st.rx_dropped++;
		return 0;
	}
	d->last_data_ns = tgc_now_ns();
	u0 = dt->frag_off / TG_FRAG_UNIT;
	u1 = (dt->frag_off + dt->frag_len + TG_FRAG_UNIT - 1) / TG_FRAG_UNIT;
	for (uint32_t u = u0; u < u1; u++) {
		if (f->units[u / 8] >> (u % 8) & 1)
			continue;
		f->units[u / 8] |= (uint8_t)(1u << (u % 8));
		f->held++;
		fresh = true;
	}
	if (!fresh)
		return 0;
	memcpy(f->buf + dt->frag_off, dt->payload, dt->frag_len);
	f->activity_ns = d->last_data_ns;
	f->retries = 0;
	f->rto_us = d->c->rto.rto_us; /* progress ends the back-off */
	if (f->held < f->nunits)
		return 0;

	/* complete: verify before anything is written (5.5 step 5) */
	tg_chunk_hash(f->buf, d->w[i].len, &h);
	if (memcmp(h.b, d->w[i].id, TG_ID_LEN)) {
		if (++f->mismatches >= MISMATCH_LIMIT) {
			tgc_set_gw_err(d->c, TG_ERR_HASH_MISMATCH, 0, "restored chunk failed its hash twice", 36);
			return -EPROTO;
		}
		reset_units(f);
		f->activity_ns = tgc_now_ns();
		return send_get(d, &i, 1);
	}
	rc = d->fn(d->arg, i, f->buf, d->w[i].len);
	if (rc)
		return rc;
	free(f->buf);
	free(f->units);
	f->buf = f->units = NULL;
	f->state = F_DONE;
	d->ndone++;
	d->done_bytes += d->w[i].len;
	req_remove(d, i);
	return 0;
}

/* SACKs of what we hold, from the first hole to the chunk's end. */
static int send_sacks(struct down *d, uint32_t i)
{
	struct fitem *f = &d->f[i];
	uint8_t bm[TG_SACK_UNITS_MAX / 8];
	uint32_t base = 0;
	struct tg_msg m;
	int rc;

	while (base < f->nunits && (f->units[base / 8] >> (base % 8) & 1))
		base++;
	while (base < f->nunits) {
		uint32_t n = f->nunits - base;

		if (n > d->sack_units_max)
			n = d->sack_units_max;
		memset(bm, 0, (n + 7) / 8);
		for (uint32_t k = 0; k < n; k++)
			if (f->units[(base + k) / 8] >> ((base + k) % 8) & 1)
				bm[k / 8] |= (uint8_t)(1u << (k % 8));
		memset(&m, 0, sizeof(m));
		m.hdr.type = TG_MSG_SACK;
		memcpy(m.u.sack.chunk_id, d->w[i].id, TG_ID_LEN);
		m.u.sack.chunk_len = d->w[i].len;
		m.u.sack.unit_base = base;
		m.u.sack.nunits = (uint16_t)n;
		m.u.sack.bitmap = bm;
		rc = tgc_send(d->c, &m);
		if (rc)
			return rc;
		base += n;
	}
	return 0;
}

static int timers(struct down *d, uint64_t now)
{
	uint32_t regets[TG_OFFER_MAX];
	unsigned nr = 0;
	int rc;

	for (size_t k = 0; k < d->nreq; k++) {
		uint32_t i = d->req[k];
		struct fitem *f = &d->f[i];
		uint64_t base = f->activity_ns;

		/* queued behind other chunks at the gateway: wait for silence */
		if (!f->held && d->last_data_ns > base)
			base = d->last_data_ns;
		if (now < base + f->rto_us * 1000)
			continue;
		if (++f->retries > RETRY_LIMIT)
			return -ETIMEDOUT;
		f->rto_us = tgc_rto_backoff(f->rto_us);
		f->activity_ns = now;
		if (f->held) {
			rc = send_sacks(d, i);
			if (rc)
				return rc;
			continue;
		}
		regets[nr++] = i;
		if (nr == d->get_max) {
			rc = send_get(d, regets, nr);
			if (rc)
				return rc;
			nr = 0;
		}
	}
	return nr ? send_get(d, regets, nr) : 0;
}

int tgc_fetch(struct tgc_conn *c, const struct tgc_want *w, size_t n, tgc_deliver_fn fn,
	      void *arg, const struct tgc_progress *pg)
{
	struct down d;
	uint64_t last_pg = 0;
	int rc;

	memset(&d, 0, sizeof(d));
	d.c = c;
	d.w = w;
	d.n = n;
	d.fn = fn;
	d.arg = arg;
	/* packet-size rule: no packet longer than 56 + frag_size */
	d.get_max = (56u + c->frag_size - TG_HDR_LEN - 2u) / TG_ID_LEN;
	if (d.get_max > TG_OFFER_MAX)
		d.get_max = TG_OFFER_MAX;
	d.sack_units_max = (56u + c->frag_size - TG_HDR_LEN - 26u) * 8u;
	if (d.sack_units_max > TG_SACK_UNITS_MAX)
		d.sack_units_max = TG_SACK_UNITS_MAX;
	tgc_win_init(&d.win, c->credits, c->credit_bytes);
	d.f = calloc(n + 1, sizeof(*d.f));
	d.req = malloc((n + 1) * sizeof(*d.req));
	rc = tgc_idmap_init(&d.map, n);
	if (rc || !d.f || !d.req) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		d.total_bytes += w[i].len;
		if (w[i].len < 1 || w[i].len > c->max_chunk) {
			tgc_set_gw_err(c, TG_ERR_BAD_REQUEST, 0, "chunk larger than max_chunk", 27);
			rc = -EPROTO;
			goto out;
		}
		if (tgc_idmap_put(&d.map, w[i].id, (uint32_t)i) != i) {
			d.f[i].state = F_DONE; /* a duplicate id: callers pass unique ids */
			d.ndone++;
		}
	}
	while (d.ndone < n) {
		uint64_t now = tgc_now_ns(), wait;
		struct tg_msg m;

		if (tgc_dead(c)) {
			rc = -ETIMEDOUT;
			goto out;
		}
		rc = request_more(&d);
		if (rc)
			goto out;
		rc = timers(&d, now);
		if (rc)
			goto out;
		if (pg && pg->fn && now - last_pg > 200000000ull) {
			pg->fn(pg->arg, d.done_bytes, d.total_bytes);
			last_pg = now;
		}
		/* credits dropped to zero with nothing requested: ask for news */
		if (!d.nreq && d.next < n && now - c->last_tx_ns > c->rto.rto_us * 1000) {
			memset(&m, 0, sizeof(m));
			m.hdr.type = TG_MSG_PING;
			m.u.ping.nonce = ++c->ping_nonce;
			rc = tgc_send(c, &m);
			if (rc)
				goto out;
		}
		wait = POLL_CAP_US;
		for (unsigned burst = 0; burst < 2048 && (rc = tgc_recv(c, &m, wait)) > 0; burst++) {
			size_t before = d.ndone;

			wait = 0;
			if (m.hdr.token != c->token)
				continue;
			if (m.hdr.type == TG_MSG_DATA) {
				rc = on_data(&d, &m.u.data);
			} else if (m.hdr.type == TG_MSG_PONG) {
				tgc_win_update(&d.win, m.u.pong.credits, m.u.pong.credit_bytes);
				rc = tgc_session_common(c, &m);
			} else {
				rc = tgc_session_common(c, &m);
			}
			if (rc)
				goto out;
			if (d.ndone != before)
				break; /* room in the window: request more first */
		}
		if (rc < 0)
			goto out;
	}
	if (pg && pg->fn)
		pg->fn(pg->arg, d.done_bytes, d.total_bytes);
	rc = 0;
out:
	for (size_t i = 0; d.f && i < n; i++) {
		free(d.f[i].buf);
		free(d.f[i].units);
	}
	free(d.f);
	free(d.req);
	tgc_idmap_free(&d.map);
	return rc;
}
