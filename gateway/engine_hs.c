/*
 * engine_hs.c - the stateless handshakes (docs/protocol.md 3.1-3.8, 4.7,
 * 5.2, 5.3): REG_INIT -> REG_CHALLENGE, REG_PROOF -> register job -> REG_OK,
 * HELLO -> CHALLENGE, AUTH -> auth job -> session -> SESSION_OK.
 *
 * Until a proof packet echoes a cookie we made for its source in this or the
 * previous 30 s bucket, the gateway keeps nothing and asks the control plane
 * nothing, so spoofed floods cost a HMAC each and no memory. Every reply to
 * a packet without a session is rate-limited (it could be reflected).
 */
#include <string.h>

#include "engine_int.h"
#include "tg_regkey.h"

static int cookie_make(const struct gw_engine *e, const struct gw_peer *p, uint32_t bucket,
		       const uint8_t *cn, const uint8_t *sn, uint8_t out[TG_COOKIE_LEN])
{
	uint8_t pb[6];

	/* The peer's byte form is private to the gateway: address and port. */
	memcpy(pb, &p->ip, 4);
	memcpy(pb + 4, &p->port, 2);
	return tg_cookie(e->info.cookie_secret, bucket, pb, sizeof(pb), cn, sn, out);
}

static bool cookie_ok(const struct gw_engine *e, const struct gw_peer *p, const uint8_t *cn,
		      const uint8_t *sn, const uint8_t *cookie)
{
	uint32_t b = (uint32_t)(e->now_ms / GW_BUCKET_MS);
	uint8_t want[TG_COOKIE_LEN];

	if (cookie_make(e, p, b, cn, sn, want) == 0 && tg_ct_eq(want, cookie, TG_COOKIE_LEN))
		return true;
	return cookie_make(e, p, b - 1, cn, sn, want) == 0 && tg_ct_eq(want, cookie, TG_COOKIE_LEN);
}

static void send_reg_challenge(struct gw_engine *e, const struct gw_peer *to, const uint8_t *pg,
			       const uint8_t *key_id, const uint8_t *cn)
{
	struct tg_reg_challenge *c;
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_REG_CHALLENGE;
	c = &m.u.reg_challenge;
	memcpy(c->client_nonce, cn, TG_NONCE_LEN);
	if (gw_rnd(e, c->server_nonce, TG_NONCE_LEN) ||
	    tg_regkey_salt(pg, key_id, c->salt) ||
	    cookie_make(e, to, (uint32_t)(e->now_ms / GW_BUCKET_MS), cn, c->server_nonce, c->cookie)) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	gw_tx_msg(e, to, &m);
}

static void send_challenge(struct gw_engine *e, const struct gw_peer *to, const uint8_t *cn)
{
	struct tg_challenge *c;
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_CHALLENGE;
	c = &m.u.challenge;
	memcpy(c->client_nonce, cn, TG_NONCE_LEN);
	if (gw_rnd(e, c->server_nonce, TG_NONCE_LEN) ||
	    cookie_make(e, to, (uint32_t)(e->now_ms / GW_BUCKET_MS), cn, c->server_nonce, c->cookie)) {
		gw_drop(e, GW_DROP_OVERLOAD);
		return;
	}
	gw_tx_msg(e, to, &m);
}

/* A pre-session ERROR: ref_id is the packet's client nonce (3.19). */
static void hs_error(struct gw_engine *e, const struct gw_peer *to, uint16_t code,
		     const uint8_t *cn, const char *msg)
{
	if (gw_rl_allow(e, to))
		gw_send_error(e, to, 0, code, 0, cn, msg);
}

/* A retransmitted proof whose job is still out is answered by that job. */
static bool hs_inflight(const struct gw_engine *e, uint8_t type, const uint8_t *cn,
			const uint8_t *sn)
{
	for (unsigned i = 0; i < GW_HS_MAX; i++) {
		const struct gw_job *j = e->hs[i];
		const uint8_t *jcn, *jsn;

		if (!j || j->type != type)
			continue;
		if (type == GW_JOB_REGISTER) {
			jcn = j->u.reg.req.client_nonce;
			jsn = j->u.reg.req.server_nonce;
		} else {
			jcn = j->u.auth.req.client_nonce;
			jsn = j->u.auth.req.server_nonce;
		}
		if (!memcmp(jcn, cn, TG_NONCE_LEN) && !memcmp(jsn, sn, TG_NONCE_LEN))
			return true;
	}
	return false;
}

static int hs_slot(const struct gw_engine *e)
{
	for (unsigned i = 0; i < GW_HS_MAX; i++)
		if (!e->hs[i])
			return (int)i;
	return -1;
}

/* Take a job and a handshake slot, or answer OVERLOADED. */
static struct gw_job *hs_job(struct gw_engine *e, const struct gw_peer *from, const uint8_t *cn,
			     int *slot)
{
	struct gw_job *j;

	*slot = hs_slot(e);
	j = *slot >= 0 ? gw_job_get(e) : NULL;
	if (!j) {
		gw_drop(e, GW_DROP_OVERLOAD);
		hs_error(e, from, TG_ERR_OVERLOADED, cn, "too many handshakes in progress");
	}
	return j;
}

static void hs_submit(struct gw_engine *e, const struct gw_peer *from, struct gw_job *j,
		      int slot, const uint8_t *cn)
{
	j->peer = *from;
	if (!gw_service_submit(e->cfg.svc, j)) {
		gw_job_put(e, j);
		gw_drop(e, GW_DROP_OVERLOAD);
		hs_error(e, from, TG_ERR_OVERLOADED, cn, "gateway busy");
		return;
	}
	e->hs[slot] = j;
}

static void rx_reg_init(struct gw_engine *e, const struct gw_peer *from,
			const struct tg_reg_init *ri)
{
	if (!gw_rl_allow(e, from))
		return;
	if (e->stopping) {
		gw_send_error(e, from, 0, TG_ERR_OVERLOADED, 0, ri->client_nonce, "shutting down");
		return;
	}
	if (!tg_id_eq(ri->provider_guid, e->info.provider_guid)) {
		gw_send_error(e, from, 0, TG_ERR_UNKNOWN_ORG, 0, ri->client_nonce,
			      "unknown provider");
		return;
	}
	send_reg_challenge(e, from, ri->provider_guid, ri->key_id, ri->client_nonce);
}

static void rx_reg_proof(struct gw_engine *e, const struct gw_peer *from,
			 const struct tg_reg_proof *rp)
{
	struct gw_job *j;
	int slot;

	if (!cookie_ok(e, from, rp->client_nonce, rp->server_nonce, rp->cookie)) {
		gw_drop(e, GW_DROP_BAD_COOKIE);
		if (gw_rl_allow(e, from))
			send_reg_challenge(e, from, rp->provider_guid, rp->key_id, rp->client_nonce);
		return;
	}
	if (e->stopping) {
		hs_error(e, from, TG_ERR_OVERLOADED, rp->client_nonce, "shutting down");
		return;
	}
	if (!tg_id_eq(rp->provider_guid, e->info.provider_guid)) {
		hs_error(e, from, TG_ERR_UNKNOWN_ORG, rp->client_nonce, "unknown provider");
		return;
	}
	if (hs_inflight(e, GW_JOB_REGISTER, rp->client_nonce, rp->server_nonce))
		return;
	j = hs_job(e, from, rp->client_nonce, &slot);
	if (!j)
		return;
	j->type = GW_JOB_REGISTER;
	j->u.reg.req = *rp;
	memcpy(j->u.reg.name_buf, rp->name, rp->name_len);
	j->u.reg.req.name = j->u.reg.name_buf;
	hs_submit(e, from, j, slot, rp->client_nonce);
}

static void rx_hello(struct gw_engine *e, const struct gw_peer *from, const struct tg_hello *h)
{
	if (!gw_rl_allow(e, from))
		return;
	if (e->stopping) {
		gw_send_error(e, from, 0, TG_ERR_OVERLOADED, 0, h->client_nonce, "shutting down");
		return;
	}
	send_challenge(e, from, h->client_nonce);
}

/* The live session a duplicate AUTH (same device and nonces) opened. */
static struct gw_sess *sess_of_auth(struct gw_engine *e, const uint8_t *device,
				    const uint8_t *cn, const uint8_t *sn)
{
	for (unsigned i = 0; i < e->nsess; i++) {
		struct gw_sess *s = &e->sess[i];

		if (s->state == GW_S_ACTIVE && !memcmp(s->ok.client_nonce, cn, TG_NONCE_LEN) &&
		    !memcmp(s->sn, sn, TG_NONCE_LEN) && tg_id_eq(s->device, device))
			return s;
	}
	return NULL;
}

static void send_session_ok(struct gw_engine *e, const struct gw_peer *to, struct gw_sess *s)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_SESSION_OK;
	m.u.session_ok = s->ok;
	gw_tx_msg(e, to, &m);
}

static void rx_auth(struct gw_engine *e, const struct gw_peer *from, const struct tg_auth *a)
{
	struct gw_sess *s;
	struct gw_job *j;
	int slot;

	if (!cookie_ok(e, from, a->client_nonce, a->server_nonce, a->cookie)) {
		gw_drop(e, GW_DROP_BAD_COOKIE);
		if (gw_rl_allow(e, from))
			send_challenge(e, from, a->client_nonce);
		return;
	}
	if (e->stopping) {
		hs_error(e, from, TG_ERR_OVERLOADED, a->client_nonce, "shutting down");
		return;
	}
	s = sess_of_auth(e, a->device_id, a->client_nonce, a->server_nonce);
	if (s) {
		send_session_ok(e, from, s);
		return;
	}
	if (hs_inflight(e, GW_JOB_AUTH, a->client_nonce, a->server_nonce))
		return;
	if (!e->nfree) {
		gw_drop(e, GW_DROP_OVERLOAD);
		hs_error(e, from, TG_ERR_OVERLOADED, a->client_nonce, "no free session slot");
		return;
	}
	j = hs_job(e, from, a->client_nonce, &slot);
	if (!j)
		return;
	j->type = GW_JOB_AUTH;
	j->u.auth.req = *a;
	hs_submit(e, from, j, slot, a->client_nonce);
}

void gw_hs_rx(struct gw_engine *e, const struct gw_peer *from, const struct tg_msg *m)
{
	switch (m->hdr.type) {
	case TG_MSG_REG_INIT:
		rx_reg_init(e, from, &m->u.reg_init);
		break;
	case TG_MSG_REG_PROOF:
		rx_reg_proof(e, from, &m->u.reg_proof);
		break;
	case TG_MSG_HELLO:
		rx_hello(e, from, &m->u.hello);
		break;
	case TG_MSG_AUTH:
		rx_auth(e, from, &m->u.auth);
		break;
	default:
		gw_drop(e, GW_DROP_BAD_STATE);
		break;
	}
}

static void reg_done(struct gw_engine *e, struct gw_job *j)
{
	const uint8_t *cn = j->u.reg.req.client_nonce;
	struct tg_msg m;

	if (j->status != TG_OK) {
		gw_send_error(e, &j->peer, 0, j->status, j->retry_after, cn, j->msg);
		return;
	}
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_REG_OK;
	m.u.reg_ok = j->u.reg.ok;
	memcpy(m.u.reg_ok.client_nonce, cn, TG_NONCE_LEN);
	if (gw_tx_msg(e, &j->peer, &m))
		e->c->registrations++;
}

static uint32_t credit_bytes_of(const struct gw_engine *e)
{
	/*
	 * Buffers come in power-of-two classes, so a window of half the
	 * session's buffer bytes always fits what the client may send; never
	 * below one max-size chunk (the protocol's promise).
	 */
	size_t cb = e->info.reasm.mem_per_session / 2;

	if (cb < e->info.max_chunk)
		cb = e->info.max_chunk;
	if (cb > UINT32_MAX)
		cb = UINT32_MAX;
	return (uint32_t)cb;
}

static void auth_done(struct gw_engine *e, struct gw_job *j)
{
	const struct tg_auth *a = &j->u.auth.req;
	struct tg_session_ok *ok;
	struct gw_sess *s;
	uint64_t token;

	if (j->status != TG_OK) {
		gw_send_error(e, &j->peer, 0, j->status, j->retry_after, a->client_nonce, j->msg);
		return;
	}
	if (j->u.auth.state != GW_ORG_ACTIVE) {
		gw_send_error(e, &j->peer, 0, TG_ERR_ORG_DEACTIVATED, 0, a->client_nonce,
			      "organization deactivated");
		return;
	}
	if (!(a->flags & TG_RF_RELAY) != !j->u.auth.relay) {
		gw_send_error(e, &j->peer, 0, TG_ERR_BAD_REQUEST, 0, a->client_nonce,
			      "relay flag differs from the registration");
		return;
	}
	s = sess_of_auth(e, a->device_id, a->client_nonce, a->server_nonce);
	if (s) {
		send_session_ok(e, &j->peer, s);
		return;
	}
	if (e->stopping) {
		gw_send_error(e, &j->peer, 0, TG_ERR_OVERLOADED, 0, a->client_nonce, "shutting down");
		return;
	}
	s = gw_sess_new(e, &token);
	if (!s) {
		gw_drop(e, GW_DROP_OVERLOAD);
		gw_send_error(e, &j->peer, 0, TG_ERR_OVERLOADED, 0, a->client_nonce,
			      "no free session slot");
		return;
	}
	s->peer = j->peer;
	s->org = j->u.auth.org;
	memcpy(s->device, a->device_id, TG_ID_LEN);
	memcpy(s->key, j->u.auth.session_key, TG_KEY_LEN);
	memcpy(s->sn, a->server_nonce, TG_NONCE_LEN);
	s->policy = j->u.auth.policy;
	s->admin = j->u.auth.admin;
	s->relay = j->u.auth.relay;
	s->frag_size = a->max_frag < e->info.frag_size ? a->max_frag : e->info.frag_size;
	s->credits = (uint16_t)e->info.reasm.slots_per_session;
	s->credit_bytes = credit_bytes_of(e);

	ok = &s->ok;
	memcpy(ok->client_nonce, a->client_nonce, TG_NONCE_LEN);
	ok->token = token;
	memcpy(ok->org_guid, s->org.b, TG_ID_LEN);
	ok->frag_size = s->frag_size;
	ok->credits = s->credits;
	ok->credit_bytes = s->credit_bytes;
	ok->max_chunk = e->info.max_chunk;
	if (tg_session_ok_mac(s->key, ok, ok->mac)) {
		gw_sess_close(e, s, false, TG_OK);
		gw_send_error(e, &j->peer, 0, TG_ERR_UNAVAILABLE, 0, a->client_nonce, "crypto");
		return;
	}
	send_session_ok(e, &j->peer, s);
}

void gw_hs_done(struct gw_engine *e, struct gw_job *j)
{
	for (unsigned i = 0; i < GW_HS_MAX; i++)
		if (e->hs[i] == j)
			e->hs[i] = NULL;
	if (j->type == GW_JOB_REGISTER)
		reg_done(e, j);
	else
		auth_done(e, j);
}
