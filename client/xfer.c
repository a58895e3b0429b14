/*
 * xfer.c - the upload engine (protocol.md 5.4): OFFER the chunk ids (up to
 * 64 per packet, several offers outstanding), queue what NEED asks for, send
 * each queued chunk's fragments (at most frag_size each) while the credit
 * window allows, take ACKs out of flight, and recover losses: when a chunk's
 * RTO fires, PING; the SACKs that come back name the missing units, which are
 * resent; a chunk no SACK mentions by the PONG is unknown to the gateway and
 * is resent whole. Eight retries without progress, or the dead-gateway
 * timeout, end the backup.
 *
 * Chunk bytes are read (and checked against their id) when the chunk enters
 * the window and freed at its ACK, so memory is bounded by the window.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tgc.h"

enum { ST_NEW = 0, ST_OFFERED, ST_QUEUED, ST_FLIGHT, ST_DONE };

#define MAX_OFFERS   16       /* OFFERs outstanding at once */
#define RETRY_LIMIT  8
#define WINDOW_CAP   (512ull << 20) /* our own bound on bytes held in flight */
#define POLL_CAP_US  50000

struct offer {
	bool active;
	uint32_t seq;
	uint16_t count;
	uint8_t retries;
	uint64_t rto_us, deadline_ns;
	uint32_t idx[TG_OFFER_MAX];
};

struct up {
	struct tgc_conn *c;
	struct tgc_item *it;
	size_t n;
	tgc_read_fn rd;
	void *rd_arg;
	struct tgc_up_stats *st;
	struct tgc_idmap map;
	struct tgc_window win;
	struct offer offers[MAX_OFFERS];
	unsigned noffers;
	size_t cursor;            /* next item to offer */
	uint32_t *queue;          /* FIFO of needed items */
	size_t qhead, qtail, qcap;
	uint32_t *flight;         /* items in flight */
	size_t nflight;
	size_t ndone;
	uint64_t done_bytes, total_bytes;
	bool probing;
	uint64_t probe_nonce, probe_sent_ns, probe_deadline_ns, probe_rto_us;
	unsigned probe_retries;
	uint64_t pause_deadline_ns;
	unsigned offer_max;       /* entries per OFFER under the packet-size rule */
};

/* Entries per OFFER such that the packet stays within 56 + frag_size. */
static unsigned offer_entries(uint16_t frag_size)
{
	size_t room = 56u + frag_size - TG_HDR_LEN - 6u;
	size_t k = room / TG_OFFER_ENTRY_LEN;

	return k > TG_OFFER_MAX ? TG_OFFER_MAX : (unsigned)k;
}

static void q_push(struct up *u, uint32_t i)
{
	u->queue[u->qtail++ % u->qcap] = i;
}

static void item_finish(struct up *u, struct tgc_item *it)
{
	free(it->data);
	it->data = NULL;
	it->state = ST_DONE;
	u->ndone++;
	u->done_bytes += it->len;
}

static void flight_remove(struct up *u, uint32_t i)
{
	for (size_t k = 0; k < u->nflight; k++) {
		if (u->flight[k] == i) {
			u->flight[k] = u->flight[--u->nflight];
			break;
		}
	}
	tgc_win_remove(&u->win, u->it[i].len);
}

static int send_frags(struct up *u, struct tgc_item *it, uint32_t off, uint32_t end, bool retx)
{
	struct tg_msg m;
	int rc;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_DATA;
	memcpy(m.u.data.chunk_id, it->id, TG_ID_LEN);
	m.u.data.chunk_len = it->len;
	memcpy(m.u.data.tag, it->tag, TG_TAG_LEN);
	while (off < end) {
		uint32_t l = end - off < u->c->frag_size ? end - off : u->c->frag_size;

		m.hdr.token = 0;
		m.u.data.frag_off = off;
		m.u.data.frag_len = (uint16_t)l;
		m.u.data.payload = it->data + off;
		rc = tgc_send(u->c, &m);
		if (rc)
			return rc;
		if (retx)
			u->c->st.retransmits++;
		off += l;
	}
	return 0;
}

/* Send the whole chunk (first time or again) and (re)arm its timer. */
static int send_whole(struct up *u, struct tgc_item *it, bool retx)
{
	int rc = send_frags(u, it, 0, it->len, retx);

	if (rc)
		return rc;
	it->sent_ns = tgc_now_ns();
	it->deadline_ns = it->sent_ns + it->rto_us * 1000;
	if (retx)
		it->retransmitted = true;
	else
		u->st->bytes_sent_new += it->len;
	return 0;
}

static int start_chunk(struct up *u, uint32_t i)
{
	struct tgc_item *it = &u->it[i];
	int rc;

	it->data = malloc(it->len);
	if (!it->data)
		return -ENOMEM;
	rc = u->rd(u->rd_arg, it, it->data);
	if (rc)
		return rc;
	rc = tg_chunk_tag(u->c->key, 'U', u->c->token, it->id, it->len, it->tag);
	if (rc)
		return rc;
	it->state = ST_FLIGHT;
	it->probed = it->sacked = false;
	it->held_max = 0;
	it->rto_us = u->c->rto.rto_us;
	u->flight[u->nflight++] = i;
	tgc_win_add(&u->win, it->len);
	return send_whole(u, it, false);
}

static int send_offer(struct up *u, struct offer *o)
{
	uint8_t ent[TG_OFFER_MAX * TG_OFFER_ENTRY_LEN];
	struct tg_msg m;

	for (unsigned k = 0; k < o->count; k++) {
		struct tg_chunk_ref r;

		memcpy(r.id, u->it[o->idx[k]].id, TG_ID_LEN);
		r.len = u->it[o->idx[k]].len;
		tg_offer_entry_put(ent, k, &r);
	}
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_OFFER;
	m.u.offer.offer_seq = o->seq;
	m.u.offer.count = o->count;
	m.u.offer.entries = ent;
	o->deadline_ns = tgc_now_ns() + o->rto_us * 1000;
	return tgc_send(u->c, &m);
}

static int offer_more(struct up *u)
{
	while (u->noffers < MAX_OFFERS && u->cursor < u->n) {
		struct offer *o = NULL;
		int rc;

		for (unsigned k = 0; k < MAX_OFFERS; k++)
			if (!u->offers[k].active) {
				o = &u->offers[k];
				break;
			}
		memset(o, 0, sizeof(*o));
		while (u->cursor < u->n && o->count < u->offer_max) {
			struct tgc_item *it = &u->it[u->cursor];

			if (it->state == ST_NEW) {
				it->state = ST_OFFERED;
				o->idx[o->count++] = (uint32_t)u->cursor;
			}
			u->cursor++;
		}
		if (!o->count)
			break;
		o->active = true;
		o->seq = u->c->offer_seq++;
		o->rto_us = u->c->rto.rto_us;
		u->noffers++;
		u->st->offered += o->count;
		rc = send_offer(u, o);
		if (rc)
			return rc;
	}
	return 0;
}

static void on_need(struct up *u, const struct tg_need *nd)
{
	for (unsigned k = 0; k < MAX_OFFERS; k++) {
		struct offer *o = &u->offers[k];

		if (!o->active || o->seq != nd->offer_seq || o->count != nd->count)
			continue;
		for (unsigned e = 0; e < o->count; e++) {
			struct tgc_item *it = &u->it[o->idx[e]];

			if (it->state != ST_OFFERED)
				continue;
			if (nd->bitmap[e / 8] >> (e % 8) & 1) {
				it->state = ST_QUEUED;
				q_push(u, o->idx[e]);
				u->st->needed++;
			} else {
				u->st->dup++; /* durable already: no ACK will come */
				item_finish(u, it);
			}
		}
		o->active = false;
		u->noffers--;
		return;
	}
}

static int on_ack(struct up *u, const struct tg_ack *a)
{
	uint64_t now = tgc_now_ns();

	tgc_win_update(&u->win, a->credits, a->credit_bytes);
	for (unsigned k = 0; k < a->count; k++) {
		struct tg_ack_entry e;
		struct tgc_item *it;
		uint32_t i;

		tg_ack_entry(a, k, &e);
		i = tgc_idmap_get(&u->map, e.id);
		if (i == UINT32_MAX || u->it[i].state != ST_FLIGHT)
			continue;
		it = &u->it[i];
		flight_remove(u, i);
		if (e.status == TG_OK || e.status == TG_ERR_DUP) {
			/* Karn: only a chunk sent once gives an RTT sample */
			if (!it->retransmitted)
				tgc_rto_sample(&u->c->rto, (now - it->sent_ns) / 1000);
			u->st->acked++;
			if (e.status == TG_ERR_DUP)
				u->st->dup++;
			item_finish(u, it);
		} else if (e.status == TG_ERR_HASH_MISMATCH && it->retries < RETRY_LIMIT) {
			/* resend whole; our bytes are re-read and re-checked */
			it->retries++;
			free(it->data);
			it->data = NULL;
			it->state = ST_QUEUED;
			it->retransmitted = true;
			q_push(u, i);
		} else {
			tgc_set_gw_err(u->c, e.status, 0, NULL, 0);
			return -EPROTO;
		}
	}
	return 0;
}

/* Units [base, base+n) as the SACK says: resend the runs it lacks. */
static int on_sack(struct up *u, const struct tg_sack *s)
{
	uint32_t i = tgc_idmap_get(&u->map, s->chunk_id);
	uint32_t units, held = 0, run = UINT32_MAX;
	struct tgc_item *it;
	int rc;

	if (i == UINT32_MAX || u->it[i].state != ST_FLIGHT || u->it[i].len != s->chunk_len)
		return 0;
	it = &u->it[i];
	units = (it->len + TG_FRAG_UNIT - 1) / TG_FRAG_UNIT;
	if ((uint64_t)s->unit_base + s->nunits > units)
		return 0;
	it->sacked = true;
	for (uint32_t b = 0; b <= s->nunits; b++) {
		bool have = b == s->nunits || (s->bitmap[b / 8] >> (b % 8) & 1);

		if (b < s->nunits && have)
			held++;
		if (!have && run == UINT32_MAX)
			run = b;
		if (have && run != UINT32_MAX) {
			uint32_t off = (s->unit_base + run) * TG_FRAG_UNIT;
			uint32_t end = (s->unit_base + b) * TG_FRAG_UNIT;

			if (end > it->len)
				end = it->len;
			rc = send_frags(u, it, off, end, true);
			if (rc)
				return rc;
			it->retransmitted = true;
			run = UINT32_MAX;
		}
	}
	/* units before unit_base are held (each SACK starts at the first hole) */
	held += s->unit_base;
	if (held > it->held_max) {
		it->held_max = held;
		it->retries = 0;
	}
	return 0;
}

static int probe_start(struct up *u)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_PING;
	m.u.ping.nonce = u->probe_nonce = ++u->c->ping_nonce;
	u->probing = true;
	u->probe_sent_ns = tgc_now_ns();
	u->probe_deadline_ns = u->probe_sent_ns + u->probe_rto_us * 1000;
	return tgc_send(u->c, &m);
}

/* The PONG of our probe: every probed chunk no SACK mentioned is resent whole. */
static int probe_end(struct up *u)
{
	uint64_t now = tgc_now_ns();
	int rc;

	u->probing = false;
	u->probe_retries = 0;
	u->probe_rto_us = u->c->rto.rto_us;
	for (size_t k = 0; k < u->nflight; k++) {
		struct tgc_item *it = &u->it[u->flight[k]];
		uint32_t units = (it->len + TG_FRAG_UNIT - 1) / TG_FRAG_UNIT;

		if (!it->probed)
			continue;
		it->probed = false;
		if (!it->sacked) {
			rc = send_whole(u, it, true);
			if (rc)
				return rc;
		}
		/* complete at the gateway and waiting for storage: not our loss */
		if (!(it->sacked && it->held_max >= units) && ++it->retries > RETRY_LIMIT)
			return -ETIMEDOUT;
		it->sacked = false;
		it->rto_us = tgc_rto_backoff(it->rto_us);
		it->deadline_ns = now + it->rto_us * 1000;
	}
	return 0;
}

static int handle(struct up *u, const struct tg_msg *m)
{
	if (m->hdr.token != u->c->token)
		return 0;
	switch (m->hdr.type) {
	case TG_MSG_NEED:
		on_need(u, &m->u.need);
		return 0;
	case TG_MSG_ACK:
		return on_ack(u, &m->u.ack);
	case TG_MSG_SACK:
		return on_sack(u, &m->u.sack);
	case TG_MSG_PONG:
		tgc_win_update(&u->win, m->u.pong.credits, m->u.pong.credit_bytes);
		u->c->credits = m->u.pong.credits;
		u->c->credit_bytes = m->u.pong.credit_bytes;
		if (u->probing && m->u.pong.nonce == u->probe_nonce) {
			tgc_rto_sample(&u->c->rto, (tgc_now_ns() - u->probe_sent_ns) / 1000);
			return probe_end(u);
		}
		return 0;
	default:
		return tgc_session_common(u->c, m);
	}
}

static int timers(struct up *u, uint64_t now)
{
	bool expired = false;
	int rc;

	for (unsigned k = 0; k < MAX_OFFERS; k++) {
		struct offer *o = &u->offers[k];

		if (!o->active || now < o->deadline_ns)
			continue;
		if (++o->retries > RETRY_LIMIT)
			return -ETIMEDOUT;
		o->rto_us = tgc_rto_backoff(o->rto_us);
		rc = send_offer(u, o);
		if (rc)
			return rc;
	}
	for (size_t k = 0; k < u->nflight; k++) {
		struct tgc_item *it = &u->it[u->flight[k]];

		if (!it->probed && now >= it->deadline_ns) {
			it->probed = true;
			it->sacked = false;
			expired = true;
		}
	}
	if (u->probing && now >= u->probe_deadline_ns) {
		/* the PING or its PONG was lost */
		if (++u->probe_retries > RETRY_LIMIT)
			return -ETIMEDOUT;
		u->probe_rto_us = tgc_rto_backoff(u->probe_rto_us);
		return probe_start(u);
	}
	if (expired && !u->probing)
		return probe_start(u);
	/* credits 0 (or too few for the next chunk) and nothing in flight:
	 * only a PING can bring new credits */
	if (!u->probing && !u->nflight && u->qhead != u->qtail) {
		if (!u->pause_deadline_ns) {
			u->pause_deadline_ns = now + u->c->rto.rto_us * 1000;
		} else if (now >= u->pause_deadline_ns) {
			u->pause_deadline_ns = 0;
			return probe_start(u);
		}
	} else {
		u->pause_deadline_ns = 0;
	}
	return 0;
}

static uint64_t next_deadline(const struct up *u, uint64_t now)
{
	uint64_t d = now + POLL_CAP_US * 1000ull;

	for (unsigned k = 0; k < MAX_OFFERS; k++)
		if (u->offers[k].active && u->offers[k].deadline_ns < d)
			d = u->offers[k].deadline_ns;
	for (size_t k = 0; k < u->nflight; k++) {
		const struct tgc_item *it = &u->it[u->flight[k]];

		if (!it->probed && it->deadline_ns < d)
			d = it->deadline_ns;
	}
	if (u->probing && u->probe_deadline_ns < d)
		d = u->probe_deadline_ns;
	if (u->pause_deadline_ns && u->pause_deadline_ns < d)
		d = u->pause_deadline_ns;
	return d;
}

static int drain(struct up *u, uint64_t wait_us)
{
	struct tg_msg m;
	int rc;

	while ((rc = tgc_recv(u->c, &m, wait_us)) > 0) {
		rc = handle(u, &m);
		if (rc)
			return rc;
		wait_us = 0;
	}
	return rc;
}

void tgc_upload_reset(struct tgc_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct tgc_item *it = &items[i];

		if (it->state == ST_DONE)
			continue;
		free(it->data);
		memset((uint8_t *)it + offsetof(struct tgc_item, state), 0,
		       sizeof(*it) - offsetof(struct tgc_item, state));
	}
}

int tgc_upload(struct tgc_conn *c, struct tgc_item *items, size_t n, tgc_read_fn rd, void *arg,
	       struct tgc_up_stats *st, const struct tgc_progress *pg)
{
	struct up u;
	uint64_t last_pg = 0;
	int rc;

	memset(&u, 0, sizeof(u));
	u.c = c;
	u.it = items;
	u.n = n;
	u.rd = rd;
	u.rd_arg = arg;
	u.st = st;
	u.offer_max = offer_entries(c->frag_size);
	u.probe_rto_us = c->rto.rto_us;
	tgc_win_init(&u.win, c->credits, c->credit_bytes);
	u.qcap = n + 1;
	u.queue = malloc(u.qcap * sizeof(*u.queue));
	u.flight = malloc(u.qcap * sizeof(*u.flight));
	rc = tgc_idmap_init(&u.map, n);
	if (rc || !u.queue || !u.flight) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		u.total_bytes += items[i].len;
		if (items[i].state == ST_DONE) {
			u.ndone++;
			u.done_bytes += items[i].len;
			continue;
		}
		tgc_upload_reset(&items[i], 1);
		if (tgc_idmap_put(&u.map, items[i].id, (uint32_t)i) == UINT32_MAX) {
			rc = -ENOMEM;
			goto out;
		}
	}

	while (u.ndone < n) {
		uint64_t now = tgc_now_ns(), wait;

		if (tgc_dead(c)) {
			rc = -ETIMEDOUT;
			goto out;
		}
		rc = offer_more(&u);
		if (rc)
			goto out;
		/* start chunks while the window has room; look at the
		 * gateway's answers between chunks so ACKs free credits early */
		while (u.qhead != u.qtail) {
			uint32_t i = u.queue[u.qhead % u.qcap];
			uint64_t cap = u.win.credit_bytes < WINDOW_CAP ? u.win.credit_bytes : WINDOW_CAP;

			if (!tgc_win_can_send(&u.win, u.it[i].len) ||
			    (u.nflight && u.win.bytes + u.it[i].len > cap))
				break;
			u.qhead++;
			rc = start_chunk(&u, i);
			if (rc)
				goto out;
			rc = drain(&u, 0);
			if (rc)
				goto out;
		}
		rc = timers(&u, now);
		if (rc)
			goto out;
		if (pg && pg->fn && now - last_pg > 200000000ull) {
			pg->fn(pg->arg, u.done_bytes, u.total_bytes);
			last_pg = now;
		}
		if (u.ndone >= n)
			break;
		now = tgc_now_ns();
		wait = next_deadline(&u, now);
		wait = wait > now ? (wait - now) / 1000 + 1 : 0;
		rc = drain(&u, wait);
		if (rc)
			goto out;
	}
	if (pg && pg->fn)
		pg->fn(pg->arg, u.done_bytes, u.total_bytes);
	rc = 0;
out:
	if (rc) {
		for (size_t i = 0; i < n; i++) {
			free(items[i].data);
			items[i].data = NULL;
		}
	}
	tgc_idmap_free(&u.map);
	free(u.queue);
	free(u.flight);
	return rc;
}

int tgc_backup_end(struct tgc_conn *c, const uint8_t root[TG_ID_LEN], uint32_t root_len,
		   uint32_t nfiles, uint64_t logical, const char *label, uint64_t *backup_id)
{
	struct tg_msg out, in;
	uint64_t rto = c->rto.rto_us, next;
	int rc;

	memset(&out, 0, sizeof(out));
	out.hdr.type = TG_MSG_BACKUP_END;
	memcpy(out.u.backup_end.root_id, root, TG_ID_LEN);
	out.u.backup_end.root_len = root_len;
	out.u.backup_end.nfiles = nfiles;
	out.u.backup_end.logical_bytes = logical;
	out.u.backup_end.name_len = label ? (uint16_t)strlen(label) : 0;
	out.u.backup_end.name = label;
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
		if (in.hdr.type == TG_MSG_BACKUP_DONE &&
		    !memcmp(in.u.backup_done.root_id, root, TG_ID_LEN)) {
			if (in.u.backup_done.status != TG_OK) {
				tgc_set_gw_err(c, in.u.backup_done.status, 0, NULL, 0);
				return -EPROTO;
			}
			*backup_id = in.u.backup_done.backup_id;
			return 0;
		}
		rc = tgc_session_common(c, &in);
		if (rc)
			return rc;
	}
}
