/*
 * engine.c - the gateway side of the wire protocol for one worker lcore:
 * lifecycle, the per-packet dispatch, the session table, the job pool,
 * completions from the service, timers, org updates and shutdown.
 *
 * The state machines themselves live in engine_hs.c (handshakes),
 * engine_up.c (backup) and engine_down.c (restore); see engine_int.h for the
 * shared state. Nothing here blocks, locks, logs or allocates per packet:
 * every table is sized at create time, and everything that may block is a
 * job handed to the service (gw_job.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "tg_store.h"

/* ---- counters, randomness, rate limits, transmit ---- */

void gw_drop(struct gw_engine *e, enum gw_drop d)
{
	e->c->drops[d]++;
}

/* Refilled from tg_random() in gw_engine_poll(); the inline refill only
 * happens when a burst of handshakes empties the pool within one turn. */
int gw_rnd(struct gw_engine *e, void *out, size_t n)
{
	if (n > GW_RND_POOL)
		return -EINVAL;
	if (e->rnd_pos + n > GW_RND_POOL) {
		if (tg_random(e->rnd, GW_RND_POOL))
			return -EIO;
		e->rnd_pos = 0;
	}
	memcpy(out, e->rnd + e->rnd_pos, n);
	/* Never hand the same bytes out twice. */
	memset(e->rnd + e->rnd_pos, 0, n);
	e->rnd_pos += (unsigned)n;
	return 0;
}

static bool tb_take(struct gw_tb *tb, uint64_t now, uint32_t rate, uint32_t burst)
{
	uint64_t cap = (uint64_t)burst * 1000;

	if (now > tb->last_ms) {
		uint64_t add = (now - tb->last_ms) * rate;

		tb->milli = tb->milli + add > cap ? cap : tb->milli + add;
		tb->last_ms = now;
	}
	if (tb->milli < 1000)
		return false;
	tb->milli -= 1000;
	return true;
}

/*
 * Replies to packets without a valid session (challenges, errors) are the
 * reflection surface: a token bucket per source (direct-mapped, a newcomer
 * evicts the previous owner of the slot) and one for the whole worker.
 */
bool gw_rl_allow(struct gw_engine *e, const struct gw_peer *from)
{
	uint32_t h = (uint32_t)(from->ip * 0x9e3779b1u) >> 22;
	struct gw_rl_ent *r = &e->rl[h & (GW_RL_SLOTS - 1)];

	if (!r->used || r->ip != from->ip) {
		r->used = true;
		r->ip = from->ip;
		r->tb.last_ms = e->now_ms;
		r->tb.milli = (uint64_t)GW_RL_SRC_BURST * 1000;
	}
	if (!tb_take(&r->tb, e->now_ms, GW_RL_SRC_RATE, GW_RL_SRC_BURST) ||
	    !tb_take(&e->rl_all, e->now_ms, GW_RL_ALL_RATE, GW_RL_ALL_BURST)) {
		gw_drop(e, GW_DROP_RATE);
		return false;
	}
	return true;
}

bool gw_tx_msg(struct gw_engine *e, const struct gw_peer *to, struct tg_msg *m)
{
	ssize_t n;

	m->hdr.flags = TG_HF_NONE;
	n = tg_proto_build(e->txbuf, sizeof(e->txbuf), m);
	if (n < 0) {
		if (-n < TG_PERR__MAX)
			e->c->perr[-n]++;
		return false;
	}
	if (!e->cfg.tx(e->cfg.tx_arg, to, e->txbuf, (size_t)n)) {
		gw_drop(e, GW_DROP_TX_FULL);
		return false;
	}
	return true;
}

bool gw_send_error(struct gw_engine *e, const struct gw_peer *to, uint64_t token, uint16_t code,
		   uint32_t detail, const uint8_t *ref, const char *msg)
{
	char clean[TG_ERRMSG_MAX];
	struct tg_msg m;
	size_t n = 0;

	if (code < 1 || code >= TG_ERR_DUP)
		code = TG_ERR_UNAVAILABLE;
	/*
	 * The service's text goes on the wire: keep it to the name byte rule,
	 * and to a job's msg[] even when the service left it unterminated.
	 */
	for (; msg && n < sizeof(((struct gw_job *)0)->msg) && msg[n]; n++) {
		unsigned char ch = (unsigned char)msg[n];

		clean[n] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_ERROR;
	m.hdr.token = token;
	m.u.error.code = code;
	m.u.error.detail = detail;
	if (ref)
		memcpy(m.u.error.ref_id, ref, TG_ID_LEN);
	m.u.error.msg_len = (uint16_t)n;
	m.u.error.msg = clean;
	if (!gw_tx_msg(e, to, &m))
		return false;
	e->c->err_sent[code]++;
	return true;
}

/* ---- jobs ---- */

struct gw_job *gw_job_get(struct gw_engine *e)
{
	struct gw_job *j;

	if (!e->njob_free)
		return NULL;
	j = e->job_free[--e->njob_free];
	memset(j, 0, sizeof(*j));
	j->worker = (uint8_t)e->cfg.worker_id;
	return j;
}

void gw_job_put(struct gw_engine *e, struct gw_job *j)
{
	e->job_free[e->njob_free++] = j;
}

static bool job_is_ours(const struct gw_engine *e, const struct gw_job *j)
{
	uintptr_t p = (uintptr_t)j, lo = (uintptr_t)e->jobs;

	return p >= lo && p < (uintptr_t)(e->jobs + e->njobs) && (p - lo) % sizeof(*j) == 0;
}

/* Submit a session's job; on failure the job is back in the pool and the
 * shed is counted. */
bool gw_job_submit_sess(struct gw_engine *e, struct gw_sess *s, struct gw_job *j)
{
	j->sess = gw_sess_idx(e, s);
	j->sess_gen = s->gen;
	j->org = s->org;
	j->peer = s->peer;
	if (!gw_service_submit(e->cfg.svc, j)) {
		gw_job_put(e, j);
		gw_drop(e, GW_DROP_OVERLOAD);
		return false;
	}
	s->jobs++;
	return true;
}

/* ---- the session table: token -> slot, linear probing ---- */

static inline uint32_t ht_slot(const struct gw_engine *e, uint64_t token)
{
	return (uint32_t)((token * 0x9e3779b97f4a7c15ull) >> (64 - e->ht_bits)) & e->ht_mask;
}

static struct gw_sess *ht_find(struct gw_engine *e, uint64_t token)
{
	uint32_t i = ht_slot(e, token);

	if (!token)
		return NULL;
	while (e->ht[i].token) {
		if (e->ht[i].token == token)
			return &e->sess[e->ht[i].idx];
		i = (i + 1) & e->ht_mask;
	}
	return NULL;
}

static void ht_insert(struct gw_engine *e, uint64_t token, uint32_t idx)
{
	uint32_t i = ht_slot(e, token);

	while (e->ht[i].token)
		i = (i + 1) & e->ht_mask;
	e->ht[i].token = token;
	e->ht[i].idx = idx;
}

/* Backward-shift deletion keeps every probe run unbroken without tombstones. */
static void ht_remove(struct gw_engine *e, uint64_t token)
{
	uint32_t i = ht_slot(e, token), j;

	while (e->ht[i].token && e->ht[i].token != token)
		i = (i + 1) & e->ht_mask;
	if (!e->ht[i].token)
		return;
	j = i;
	for (;;) {
		uint32_t home;

		j = (j + 1) & e->ht_mask;
		if (!e->ht[j].token)
			break;
		home = ht_slot(e, e->ht[j].token);
		/* Move j back to the hole i unless its home lies cyclically in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
			e->ht[i] = e->ht[j];
			i = j;
		}
	}
	e->ht[i].token = 0;
}

struct gw_sess *gw_sess_new(struct gw_engine *e, uint64_t *token)
{
	struct gw_sess *s;
	struct tg_chunk_id *getq;
	bool ack_listed, get_listed;
	uint64_t gen, t = 0;
	uint32_t idx;
	unsigned tries;

	if (!e->nfree)
		return NULL;
	for (tries = 0; tries < 8; tries++) {
		if (gw_rnd(e, &t, sizeof(t)))
			return NULL;
		if (t && !ht_find(e, t))
			break;
		t = 0;
	}
	if (!t)
		return NULL;
	idx = e->sess_free[e->nfree - 1];
	s = &e->sess[idx];
	/* Per session, not per packet: the reassembly state has its own slots. */
	struct tg_rsess *rs = tg_reasm_sess_open(e->ra);

	if (!rs)
		return NULL;
	e->nfree--;
	/* The list flags say whether idx is still queued on a list: they
	 * survive the slot's reuse, like the queue memory does. */
	gen = s->gen;
	getq = s->getq;
	ack_listed = s->ack_listed;
	get_listed = s->get_listed;
	memset(s, 0, sizeof(*s));
	s->gen = gen;
	s->getq = getq;
	s->ack_listed = ack_listed;
	s->get_listed = get_listed;
	s->rs = rs;
	s->token = t;
	s->state = GW_S_ACTIVE;
	s->last_ms = e->now_ms;
	ht_insert(e, t, idx);
	e->c->sessions_opened++;
	e->c->sessions_active++;
	*token = t;
	return s;
}

static void sess_free(struct gw_engine *e, struct gw_sess *s)
{
	tg_reasm_sess_close(e->ra, s->rs);
	s->rs = NULL;
	memset(s->key, 0, sizeof(s->key));
	s->gen++;
	s->state = GW_S_FREE;
	e->sess_free[e->nfree++] = gw_sess_idx(e, s);
}

/*
 * Forget the session: its token stops working at once; its memory waits,
 * as a zombie, for the jobs that still point into it.
 */
void gw_sess_close(struct gw_engine *e, struct gw_sess *s, bool send_close, uint16_t reason)
{
	if (s->state != GW_S_ACTIVE)
		return;
	if (send_close) {
		struct tg_msg m;

		memset(&m, 0, sizeof(m));
		m.hdr.type = TG_MSG_CLOSE;
		m.hdr.token = s->token;
		m.u.close.reason = reason;
		if (gw_tx_msg(e, &s->peer, &m) && reason != TG_OK && reason < TG_ERR__MAX)
			e->c->err_sent[reason]++;
	}
	ht_remove(e, s->token);
	gw_down_sess_closed(e, s);
	s->npend = 0;
	s->state = GW_S_ZOMBIE;
	e->c->sessions_closed++;
	e->c->sessions_active--;
	if (!s->jobs)
		sess_free(e, s);
}

/* ---- create / destroy ---- */

static bool info_ok(const struct gw_service_info *in)
{
	return in && in->sessions_per_worker >= 1 && in->sessions_per_worker <= (1u << 20) &&
	       in->max_chunk >= 1 && in->max_chunk <= TG_CHUNK_MAX &&
	       in->frag_size >= TG_FRAG_MIN && in->frag_size <= TG_FRAG_MAX &&
	       in->reasm.slots_per_session >= 1 && in->reasm.slots_per_session <= UINT16_MAX &&
	       in->reasm.max_chunk >= in->max_chunk;
}

struct gw_engine *gw_engine_create(const struct gw_engine_cfg *cfg, int *err)
{
	const struct gw_service_info *info;
	struct gw_engine *e;
	unsigned credits, nstore, bits;
	uint32_t nunits_max;
	int rc = -EINVAL;

	if (!cfg || !cfg->svc || !cfg->tx || cfg->worker_id >= GW_WORKERS_MAX)
		goto err_out;
	info = gw_service_info(cfg->svc);
	if (!info_ok(info))
		goto err_out;
	rc = -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		goto err_out;
	e->cfg = *cfg;
	e->info = *info;
	e->info.frag_size = (uint16_t)(info->frag_size / TG_FRAG_UNIT * TG_FRAG_UNIT);
	e->c = cfg->counters ? cfg->counters : &e->own_counters;
	e->ra = tg_reasm_create(&info->reasm, &rc);
	if (!e->ra)
		goto err_free;
	rc = -ENOMEM;

	e->nsess = info->sessions_per_worker;
	credits = info->reasm.slots_per_session;
	e->sess = calloc(e->nsess, sizeof(*e->sess));
	e->sess_free = calloc(e->nsess, sizeof(*e->sess_free));
	e->ack_list = calloc(e->nsess, sizeof(*e->ack_list));
	e->get_list = calloc(e->nsess, sizeof(*e->get_list));
	e->getq_mem = calloc((size_t)e->nsess * credits, sizeof(*e->getq_mem));
	for (bits = 4; (1u << bits) < 2 * e->nsess; bits++)
		;
	e->ht_bits = bits;
	e->ht_mask = (1u << bits) - 1;
	e->ht = calloc((size_t)1 << bits, sizeof(*e->ht));
	if (!e->sess || !e->sess_free || !e->ack_list || !e->get_list || !e->getq_mem || !e->ht)
		goto err_free;
	for (unsigned i = 0; i < e->nsess; i++) {
		e->sess[i].getq = e->getq_mem + (size_t)i * credits;
		e->sess_free[i] = e->nsess - 1 - i;
	}
	e->nfree = e->nsess;

	/*
	 * Jobs: STOREs are bounded by what reassembly can hold complete (one
	 * smallest buffer each), the rest by per-session limits; a pool too
	 * small only sheds, counted.
	 */
	nstore = (unsigned)(info->reasm.mem_total / (64u << 10));
	if ((uint64_t)e->nsess * credits < nstore)
		nstore = e->nsess * credits;
	e->njobs = nstore + 2 * e->nsess + GW_HS_MAX + GW_READ_BUFS;
	if (e->njobs > 65536)
		e->njobs = 65536;
	e->jobs = calloc(e->njobs, sizeof(*e->jobs));
	e->job_free = calloc(e->njobs, sizeof(*e->job_free));
	if (!e->jobs || !e->job_free)
		goto err_free;
	for (unsigned i = 0; i < e->njobs; i++)
		e->job_free[i] = &e->jobs[e->njobs - 1 - i];
	e->njob_free = e->njobs;

	e->read_cap = (uint32_t)tg_store_get_cap(info->max_chunk);
	nunits_max = (info->max_chunk + TG_FRAG_UNIT - 1) / TG_FRAG_UNIT;
	for (unsigned i = 0; i < GW_READ_BUFS; i++) {
		size_t cap = (e->read_cap + 63u) & ~(size_t)63;

		e->rb[i].buf = aligned_alloc(64, cap);
		e->rb[i].todo = calloc((nunits_max + 63) / 64, sizeof(uint64_t));
		if (!e->rb[i].buf || !e->rb[i].todo)
			goto err_free;
	}

	rc = -EIO;
	if (tg_random(e->rnd, sizeof(e->rnd)))
		goto err_free;
	e->rl_all.milli = (uint64_t)GW_RL_ALL_BURST * 1000;
	if (err)
		*err = 0;
	return e;

err_free:
	gw_engine_destroy(e);
err_out:
	if (err)
		*err = rc;
	return NULL;
}

void gw_engine_destroy(struct gw_engine *e)
{
	if (!e)
		return;
	for (unsigned i = 0; e->sess && i < e->nsess; i++)
		if (e->sess[i].rs)
			tg_reasm_sess_close(e->ra, e->sess[i].rs);
	tg_reasm_destroy(e->ra);
	for (unsigned i = 0; i < GW_READ_BUFS; i++) {
		free(e->rb[i].buf);
		free(e->rb[i].todo);
	}
	free(e->jobs);
	free(e->job_free);
	free(e->ht);
	free(e->getq_mem);
	free(e->get_list);
	free(e->ack_list);
	free(e->sess_free);
	free(e->sess);
	memset(e->rnd, 0, sizeof(e->rnd));
	free(e);
}

/* ---- the packet path ---- */

static void answer_version(struct gw_engine *e, const struct gw_peer *from)
{
	if (!gw_rl_allow(e, from))
		return;
	gw_send_error(e, from, 0, TG_ERR_VERSION, TG_PROTO_VERSION, NULL, "");
}

void gw_engine_rx(struct gw_engine *e, const struct gw_peer *from, const uint8_t *payload,
		  size_t len, uint64_t now_ms)
{
	struct gw_sess *s;
	struct tg_msg m;
	enum tg_perr pe;

	e->now_ms = now_ms;
	pe = tg_proto_parse(payload, len, &m);
	if (pe != TG_PERR_OK) {
		e->c->perr[pe < TG_PERR__MAX ? pe : TG_PERR_SHORT]++;
		gw_drop(e, GW_DROP_CODEC);
		/* Only a packet with our magic and another version is answered. */
		if (pe == TG_PERR_VERSION)
			answer_version(e, from);
		return;
	}
	e->c->proto_rx_pkts++;
	e->c->proto_rx_bytes += len;

	switch (m.hdr.type) {
	case TG_MSG_REG_INIT:
	case TG_MSG_REG_PROOF:
	case TG_MSG_HELLO:
	case TG_MSG_AUTH:
		gw_hs_rx(e, from, &m);
		return;
	case TG_MSG_OFFER:
	case TG_MSG_DATA:
	case TG_MSG_SACK:
	case TG_MSG_BACKUP_END:
	case TG_MSG_RESTORE_REQ:
	case TG_MSG_GET:
	case TG_MSG_CLOSE:
	case TG_MSG_PING:
		break;
	default:
		/* Gateway-to-client types have no business arriving here. */
		gw_drop(e, GW_DROP_BAD_STATE);
		return;
	}

	s = ht_find(e, m.hdr.token);
	if (!s) {
		gw_drop(e, GW_DROP_BAD_SESSION);
		if (gw_rl_allow(e, from))
			gw_send_error(e, from, m.hdr.token, TG_ERR_BAD_SESSION, 0, NULL,
				      "unknown or expired session");
		return;
	}
	/* NAT rebinding: answers follow the most recent valid packet. */
	s->peer = *from;
	s->last_ms = now_ms;

	switch (m.hdr.type) {
	case TG_MSG_OFFER:
		gw_up_offer(e, s, &m);
		break;
	case TG_MSG_DATA:
		gw_up_data(e, s, &m);
		break;
	case TG_MSG_PING:
		gw_up_ping(e, s, &m);
		break;
	case TG_MSG_BACKUP_END:
		gw_up_backup_end(e, s, &m);
		break;
	case TG_MSG_RESTORE_REQ:
		gw_down_restore_req(e, s, &m);
		break;
	case TG_MSG_GET:
		gw_down_get(e, s, &m);
		break;
	case TG_MSG_SACK:
		gw_down_sack(e, s, &m);
		break;
	case TG_MSG_CLOSE:
		gw_sess_close(e, s, false, TG_OK);
		break;
	default:
		break;
	}
}

/* ---- completions, org updates, timers ---- */

static void org_update(struct gw_engine *e, const struct gw_job *j)
{
	for (unsigned i = 0; i < e->nsess; i++) {
		struct gw_sess *s = &e->sess[i];

		if (s->state != GW_S_ACTIVE || !tg_id_eq(s->org.b, j->org.b))
			continue;
		if (j->u.upd.state != GW_ORG_ACTIVE) {
			gw_sess_close(e, s, true, TG_ERR_ORG_DEACTIVATED);
			continue;
		}
		/* A released device's sessions end as its credential did. */
		if (j->u.upd.has_device && tg_id_eq(s->device, j->u.upd.device)) {
			gw_sess_close(e, s, true, TG_ERR_BAD_KEY);
			continue;
		}
		if (j->u.upd.has_policy)
			s->policy = j->u.upd.policy; /* chunks completed from now on */
	}
}

static void job_done(struct gw_engine *e, struct gw_job *j)
{
	struct gw_sess *s;

	if (j->type == GW_JOB_ORG_UPDATE) {
		org_update(e, j);
		free(j);
		return;
	}
	if (!job_is_ours(e, j))
		return; /* not ours to touch */
	if (j->type == GW_JOB_REGISTER || j->type == GW_JOB_AUTH) {
		gw_hs_done(e, j);
		gw_job_put(e, j);
		return;
	}
	if (j->sess >= e->nsess || e->sess[j->sess].gen != j->sess_gen ||
	    e->sess[j->sess].state == GW_S_FREE) {
		gw_job_put(e, j);
		return;
	}
	s = &e->sess[j->sess];
	s->jobs--;
	switch (j->type) {
	case GW_JOB_OFFER:
	case GW_JOB_STORE:
	case GW_JOB_BACKUP_END:
		gw_up_done(e, s, j);
		break;
	case GW_JOB_RESTORE:
	case GW_JOB_READ:
		gw_down_done(e, s, j);
		break;
	default:
		break;
	}
	gw_job_put(e, j);
	if (s->state == GW_S_ZOMBIE && !s->jobs)
		sess_free(e, s);
}

static void idle_scan(struct gw_engine *e)
{
	for (unsigned n = 0; n < GW_IDLE_SCAN && n < e->nsess; n++) {
		struct gw_sess *s = &e->sess[e->idle_cursor];

		e->idle_cursor = (e->idle_cursor + 1) % e->nsess;
		if (s->state == GW_S_ACTIVE && e->now_ms >= s->last_ms + GW_IDLE_MS)
			gw_sess_close(e, s, false, TG_OK);
	}
}

void gw_engine_poll(struct gw_engine *e, uint64_t now_ms)
{
	struct gw_job *done[GW_DONE_BURST];
	unsigned total = 0, n;

	e->now_ms = now_ms;
	if (e->rnd_pos >= GW_RND_POOL / 2 && tg_random(e->rnd, GW_RND_POOL) == 0)
		e->rnd_pos = 0;
	do {
		n = gw_service_done(e->cfg.svc, e->cfg.worker_id, done, GW_DONE_BURST);
		for (unsigned i = 0; i < n; i++)
			job_done(e, done[i]);
		total += n;
	} while (n == GW_DONE_BURST && total < GW_DONE_TURN);
	gw_down_poll(e);
	gw_up_flush_acks(e);
	idle_scan(e);
}

/* ---- shutdown ---- */

void gw_engine_stop_admitting(struct gw_engine *e)
{
	e->stopping = true;
}

bool gw_engine_drained(struct gw_engine *e, uint64_t now_ms)
{
	if (!e->stopping)
		return false;
	gw_engine_poll(e, now_ms);
	if (e->njob_free != e->njobs)
		return false;
	if (!e->closed_all) {
		for (unsigned i = 0; i < e->nsess; i++)
			gw_sess_close(e, &e->sess[i], true, TG_ERR_OVERLOADED);
		e->closed_all = true;
	}
	return true;
}
