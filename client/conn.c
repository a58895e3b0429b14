/*
 * conn.c - the client's UDP socket and the handshakes of protocol.md 5.2
 * (registration) and 5.3 (session): a connected kernel UDP socket with DF
 * set, pacing, the stateless-cookie handshakes with their 500 ms..4 s
 * retransmission timers and 30 s give-up, and the session packets no
 * transfer engine claims (PONG, ERROR, CLOSE, keepalive PING).
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tgc.h"

#define HS_RTO_FIRST_US 500000u
#define HS_RTO_CAP_US   4000000u
#define HS_GIVEUP_NS    (30ull * 1000000000ull)
#define KEEPALIVE_NS    (10ull * 1000000000ull)

/*
 * Fault injection for tests on hosts without netem: TIDEGATE_TEST_LOSS=P
 * drops P percent of the datagrams this client sends and receives, so the
 * loss recovery of 5.4/5.5 can be exercised against a real gateway.
 */
static unsigned test_loss_ppm(void)
{
	static int cached = -1;

	if (cached < 0) {
		const char *v = getenv("TIDEGATE_TEST_LOSS");
		double p = v ? atof(v) : 0;

		cached = p > 0 && p < 100 ? (int)(p * 10000) : 0;
		if (cached)
			srandom((unsigned)tgc_now_ns());
	}
	return (unsigned)cached;
}

static bool test_drop(void)
{
	unsigned ppm = test_loss_ppm();

	return ppm && (unsigned)(random() % 1000000) < ppm;
}

uint16_t tgc_max_frag(unsigned mtu)
{
	long room = (long)mtu - 20 - 8 - (long)TG_HDR_LEN - (long)TG_DATA_HDR_LEN;

	if (room < (long)TG_FRAG_MIN)
		return 0;
	room &= ~(long)(TG_FRAG_UNIT - 1);
	if (room > (long)TG_FRAG_MAX)
		room = TG_FRAG_MAX;
	return (uint16_t)room;
}

int tgc_conn_open(struct tgc_conn *c, const char *host, unsigned mtu, unsigned rate_mbit,
		  unsigned timeout_s)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_DGRAM };
	struct addrinfo *res = NULL;
	char name[256], *colon;
	const char *port = "7447";
	int one, rc, buf;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->max_frag = tgc_max_frag(mtu);
	if (!c->max_frag)
		return -EINVAL;
	if (strlen(host) >= sizeof(name))
		return -EINVAL;
	strcpy(name, host);
	colon = strrchr(name, ':');
	if (colon) {
		*colon = 0;
		port = colon + 1;
		if (!*port)
			return -EINVAL;
	}
	rc = getaddrinfo(name, port, &hints, &res);
	if (rc || !res)
		return -EHOSTUNREACH;
	memcpy(&c->gw, res->ai_addr, sizeof(c->gw));
	freeaddrinfo(res);

	c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	/* DF: the protocol never relies on IP fragmentation (section 1) */
	one = IP_PMTUDISC_DO;
	setsockopt(c->fd, IPPROTO_IP, IP_MTU_DISCOVER, &one, sizeof(one));
	/* a restore receives whole windows of chunks in a burst */
	buf = 16 << 20;
	if (setsockopt(c->fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)))
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	buf = 4 << 20;
	if (setsockopt(c->fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf)))
		setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	if (connect(c->fd, (struct sockaddr *)&c->gw, sizeof(c->gw))) {
		rc = -errno;
		close(c->fd);
		c->fd = -1;
		return rc;
	}
	c->rate_bps = (uint64_t)rate_mbit * 1000000ull;
	c->timeout_s = timeout_s ? timeout_s : 120;
	c->last_rx_ns = tgc_now_ns();
	tgc_rto_init(&c->rto);
	return 0;
}

void tgc_conn_close(struct tgc_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->open = false;
}

static void pace(struct tgc_conn *c, size_t len)
{
	uint64_t now, cost;

	if (!c->rate_bps)
		return;
	/* the wire also carries IPv4 + UDP + Ethernet framing */
	cost = (uint64_t)(len + 20 + 8 + 38) * 8ull * 1000000000ull / c->rate_bps;
	now = tgc_now_ns();
	if (c->pace_next_ns > now) {
		uint64_t d = c->pace_next_ns - now;

		/* sleeping costs ~60 us of slack: only sleep for real gaps */
		if (d > 200000) {
			struct timespec ts = { (time_t)(d / 1000000000ull), (long)(d % 1000000000ull) };

			nanosleep(&ts, NULL);
		} else {
			while (tgc_now_ns() < c->pace_next_ns)
				;
		}
	} else if (now - c->pace_next_ns > 2000000ull) {
		c->pace_next_ns = now; /* idle: no credit for the past beyond 2 ms */
	}
	c->pace_next_ns += cost;
}

static bool needs_token(uint8_t type)
{
	return type >= TG_MSG_OFFER && type != TG_MSG_ERROR;
}

int tgc_send(struct tgc_conn *c, struct tg_msg *m)
{
	ssize_t n;

	if (!m->hdr.token && needs_token(m->hdr.type))
		m->hdr.token = c->token;
	n = tg_proto_build(c->txbuf, sizeof(c->txbuf), m);
	if (n < 0)
		return -EINVAL;
	pace(c, (size_t)n);
	for (; !test_drop();) {
		ssize_t w = send(c->fd, c->txbuf, (size_t)n, 0);

		if (w == n)
			break;
		if (w < 0 && errno == EINTR)
			continue;
		/* ICMP port unreachable arrives as ECONNREFUSED on a connected
		 * socket; the gateway may just be starting: treat as a loss */
		if (w < 0 && (errno == ECONNREFUSED || errno == ENOBUFS || errno == EAGAIN))
			break;
		return w < 0 ? -errno : -EIO;
	}
	c->st.packets++;
	c->st.wire_bytes += (uint64_t)n;
	if (m->hdr.type == TG_MSG_DATA)
		c->st.data_bytes += m->u.data.frag_len;
	c->last_tx_ns = tgc_now_ns();
	return 0;
}

int tgc_recv(struct tgc_conn *c, struct tg_msg *m, uint64_t timeout_us)
{
	uint64_t end = tgc_now_ns() + timeout_us * 1000ull;

	for (;;) {
		uint64_t now = tgc_now_ns();
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ssize_t n;
		int ms, pr;

		n = recv(c->fd, c->rxbuf, sizeof(c->rxbuf), MSG_DONTWAIT);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNREFUSED)
			return -errno;
		if (n >= 0 && test_drop())
			continue;
		if (n >= 0) {
			c->st.rx_packets++;
			if (tg_proto_parse(c->rxbuf, (size_t)n, m) != TG_PERR_OK) {
				c->st.rx_dropped++;
				continue;
			}
			/* in a session, only packets carrying our token (or a
			 * pre-session reply during a handshake) count as life */
			if (c->open && m->hdr.token && m->hdr.token != c->token) {
				c->st.rx_dropped++;
				continue;
			}
			if (c->open && m->hdr.token == c->token)
				c->last_rx_ns = tgc_now_ns();
			return 1;
		}
		if (now >= end)
			return 0;
		ms = (int)((end - now + 999999) / 1000000);
		pr = poll(&p, 1, ms);
		if (pr < 0 && errno != EINTR)
			return -errno;
	}
}

void tgc_set_gw_err(struct tgc_conn *c, uint16_t code, uint32_t detail, const char *msg,
		    size_t len)
{
	size_t k = 0;

	c->gw_err = code;
	c->gw_detail = detail;
	/* never print a gateway's bytes unescaped (3.19) */
	for (size_t i = 0; msg && i < len && k + 5 < sizeof(c->gw_msg); i++) {
		unsigned char ch = (unsigned char)msg[i];

		if (ch >= 0x20 && ch < 0x7f && ch != '\\')
			c->gw_msg[k++] = (char)ch;
		else
			k += (size_t)snprintf(c->gw_msg + k, sizeof(c->gw_msg) - k, "\\x%02x", ch);
	}
	c->gw_msg[k] = 0;
}

static uint64_t hs_backoff(uint64_t rto)
{
	rto *= 2;
	return rto > HS_RTO_CAP_US ? HS_RTO_CAP_US : rto;
}

/* An ERROR that concerns this handshake: ref_id is our nonce, or VERSION. */
static bool hs_error_for_us(const struct tg_msg *m, const uint8_t cn[TG_NONCE_LEN])
{
	return m->hdr.type == TG_MSG_ERROR &&
	       (m->u.error.code == TG_ERR_VERSION || !memcmp(m->u.error.ref_id, cn, TG_NONCE_LEN));
}

static int hs_error(struct tgc_conn *c, const struct tg_msg *m)
{
	tgc_set_gw_err(c, m->u.error.code, m->u.error.detail, m->u.error.msg, m->u.error.msg_len);
	return -EPROTO;
}

int tgc_register(struct tgc_conn *c, const struct tg_regkey *key, struct tgc_cred *e)
{
	struct tg_msg out, in;
	uint8_t cn[TG_NONCE_LEN], v[32];
	uint64_t start = tgc_now_ns(), rto = HS_RTO_FIRST_US, next;
	size_t nlen = strlen(e->device);
	bool proof_sent = false;
	int rc;

	if (!nlen || nlen > TG_NAME_MAX)
		return -EINVAL;
	if (tg_random(cn, sizeof(cn)))
		return -EIO;
	memset(&out, 0, sizeof(out));
	out.hdr.type = TG_MSG_REG_INIT;
	memcpy(out.u.reg_init.provider_guid, e->provider, TG_ID_LEN);
	memcpy(out.u.reg_init.key_id, key->key_id, TG_KEYID_LEN);
	memcpy(out.u.reg_init.client_nonce, cn, TG_NONCE_LEN);
	out.u.reg_init.flags = e->relay ? TG_RF_RELAY : 0;
	out.u.reg_init.name_len = (uint16_t)nlen;
	out.u.reg_init.name = e->device;
	rc = tgc_send(c, &out);
	if (rc)
		return rc;
	next = tgc_now_ns() + rto * 1000;
	for (;;) {
		uint64_t now = tgc_now_ns();

		if (now - start >= HS_GIVEUP_NS)
			return -ETIMEDOUT;
		if (now >= next) {
			rc = tgc_send(c, &out);
			if (rc)
				return rc;
			rto = hs_backoff(rto);
			next = now + rto * 1000;
			continue;
		}
		rc = tgc_recv(c, &in, (next - now) / 1000 + 1);
		if (rc < 0)
			return rc;
		if (!rc)
			continue;
		if (in.hdr.type == TG_MSG_REG_CHALLENGE &&
		    !memcmp(in.u.reg_challenge.client_nonce, cn, TG_NONCE_LEN)) {
			struct tg_reg_proof *p = &out.u.reg_proof;
			uint8_t salt[TG_SALT_LEN];

			/* the salt is derived from public values (4.1): compute it
			 * rather than take a forged challenge's word for it */
			if (tg_regkey_salt(e->provider, key->key_id, salt))
				return -EIO;
			if (tg_regkey_verifier(salt, key->secret,
					       TG_REGKEY_SECRET_LEN, v))
				return -EIO;
			memset(&out, 0, sizeof(out));
			out.hdr.type = TG_MSG_REG_PROOF;
			memcpy(p->provider_guid, e->provider, TG_ID_LEN);
			memcpy(p->key_id, key->key_id, TG_KEYID_LEN);
			memcpy(p->client_nonce, cn, TG_NONCE_LEN);
			memcpy(p->server_nonce, in.u.reg_challenge.server_nonce, TG_NONCE_LEN);
			memcpy(p->cookie, in.u.reg_challenge.cookie, TG_COOKIE_LEN);
			p->flags = e->relay ? TG_RF_RELAY : 0;
			p->name_len = (uint16_t)nlen;
			p->name = e->device;
			if (tg_reg_proof(v, p, p->proof))
				return -EIO;
			rc = tgc_send(c, &out);
			if (rc)
				return rc;
			proof_sent = true;
			rto = HS_RTO_FIRST_US;
			next = tgc_now_ns() + rto * 1000;
		} else if (in.hdr.type == TG_MSG_REG_OK && proof_sent &&
			   !memcmp(in.u.reg_ok.client_nonce, cn, TG_NONCE_LEN)) {
			uint8_t wk[32], aad[2 * TG_ID_LEN];

			if (tg_reg_wrap_key(v, cn, out.u.reg_proof.server_nonce, wk))
				return -EIO;
			memcpy(aad, in.u.reg_ok.org_guid, TG_ID_LEN);
			memcpy(aad + TG_ID_LEN, in.u.reg_ok.device_id, TG_ID_LEN);
			if (tg_aead_open(wk, out.u.reg_proof.server_nonce, aad, sizeof(aad),
					 in.u.reg_ok.wrapped_cred, TG_CRED_LEN, e->cred,
					 in.u.reg_ok.wrap_tag)) {
				c->st.rx_dropped++; /* forged or damaged: keep trying */
				continue;
			}
			memcpy(e->org, in.u.reg_ok.org_guid, TG_ID_LEN);
			memcpy(e->device_id, in.u.reg_ok.device_id, TG_ID_LEN);
			return 0;
		} else if (hs_error_for_us(&in, cn)) {
			if (in.u.error.code == TG_ERR_VERSION && proof_sent)
				continue; /* VERSION only counts while waiting for a challenge */
			return hs_error(c, &in);
		}
	}
}

int tgc_session_open(struct tgc_conn *c, const struct tgc_cred *e)
{
	struct tg_msg out, in;
	uint8_t cn[TG_NONCE_LEN];
	uint64_t start = tgc_now_ns(), rto = HS_RTO_FIRST_US, next;
	bool auth_sent = false;
	int rc;

	c->open = false;
	c->token = 0;
	if (tg_random(cn, sizeof(cn)))
		return -EIO;
	memset(&out, 0, sizeof(out));
	out.hdr.type = TG_MSG_HELLO;
	memcpy(out.u.hello.device_id, e->device_id, TG_ID_LEN);
	memcpy(out.u.hello.client_nonce, cn, TG_NONCE_LEN);
	out.u.hello.max_frag = c->max_frag;
	out.u.hello.flags = e->relay ? TG_RF_RELAY : 0;
	rc = tgc_send(c, &out);
	if (rc)
		return rc;
	next = tgc_now_ns() + rto * 1000;
	for (;;) {
		uint64_t now = tgc_now_ns();

		if (now - start >= HS_GIVEUP_NS)
			return -ETIMEDOUT;
		if (now >= next) {
			rc = tgc_send(c, &out);
			if (rc)
				return rc;
			rto = hs_backoff(rto);
			next = now + rto * 1000;
			continue;
		}
		rc = tgc_recv(c, &in, (next - now) / 1000 + 1);
		if (rc < 0)
			return rc;
		if (!rc)
			continue;
		if (in.hdr.type == TG_MSG_CHALLENGE &&
		    !memcmp(in.u.challenge.client_nonce, cn, TG_NONCE_LEN)) {
			struct tg_auth *a = &out.u.auth;

			memset(&out, 0, sizeof(out));
			out.hdr.type = TG_MSG_AUTH;
			memcpy(a->device_id, e->device_id, TG_ID_LEN);
			memcpy(a->client_nonce, cn, TG_NONCE_LEN);
			memcpy(a->server_nonce, in.u.challenge.server_nonce, TG_NONCE_LEN);
			memcpy(a->cookie, in.u.challenge.cookie, TG_COOKIE_LEN);
			a->max_frag = c->max_frag;
			a->flags = e->relay ? TG_RF_RELAY : 0;
			if (tg_auth_proof(e->cred, a, a->proof) ||
			    tg_session_key(e->cred, cn, a->server_nonce, c->key))
				return -EIO;
			rc = tgc_send(c, &out);
			if (rc)
				return rc;
			auth_sent = true;
			rto = HS_RTO_FIRST_US;
			next = tgc_now_ns() + rto * 1000;
		} else if (in.hdr.type == TG_MSG_SESSION_OK && auth_sent &&
			   !memcmp(in.u.session_ok.client_nonce, cn, TG_NONCE_LEN)) {
			const struct tg_session_ok *s = &in.u.session_ok;
			uint8_t mac[TG_TAG_LEN];

			if (tg_session_ok_mac(c->key, s, mac) || !tg_ct_eq(mac, s->mac, TG_TAG_LEN)) {
				c->st.rx_dropped++;
				continue;
			}
			c->token = s->token;
			c->offer_seq = 1;
			c->open = true;
			memcpy(c->org, s->org_guid, TG_ID_LEN);
			memcpy(c->device_id, e->device_id, TG_ID_LEN);
			c->flags = e->relay ? TG_RF_RELAY : 0;
			c->frag_size = s->frag_size;
			c->credits = s->credits;
			c->credit_bytes = s->credit_bytes;
			c->max_chunk = s->max_chunk;
			c->last_rx_ns = tgc_now_ns();
			if (s->frag_size > c->max_frag) {
				tgc_session_close(c, TG_ERR_BAD_REQUEST);
				tgc_set_gw_err(c, TG_ERR_BAD_REQUEST, 0, "frag_size above max_frag", 24);
				return -EPROTO;
			}
			return 0;
		} else if (hs_error_for_us(&in, cn)) {
			if (in.u.error.code == TG_ERR_VERSION && auth_sent)
				continue;
			return hs_error(c, &in);
		}
	}
}

void tgc_session_close(struct tgc_conn *c, uint16_t reason)
{
	struct tg_msg m;

	if (!c->open)
		return;
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_CLOSE;
	m.u.close.reason = reason;
	tgc_send(c, &m);
	c->open = false;
}

int tgc_session_common(struct tgc_conn *c, const struct tg_msg *m)
{
	switch (m->hdr.type) {
	case TG_MSG_PONG:
		c->credits = m->u.pong.credits;
		c->credit_bytes = m->u.pong.credit_bytes;
		return 0;
	case TG_MSG_ERROR:
		if (m->hdr.token != c->token)
			return 0;
		tgc_set_gw_err(c, m->u.error.code, m->u.error.detail, m->u.error.msg,
			       m->u.error.msg_len);
		if (m->u.error.code == TG_ERR_BAD_SESSION)
			c->open = false;
		return -EPROTO;
	case TG_MSG_CLOSE:
		if (m->hdr.token != c->token)
			return 0;
		c->open = false;
		tgc_set_gw_err(c, m->u.close.reason ? m->u.close.reason : TG_ERR_BAD_SESSION, 0,
			       "the gateway closed the session", 30);
		return -EPROTO;
	default:
		return 0;
	}
}

int tgc_keepalive(struct tgc_conn *c)
{
	struct tg_msg m;
	int rc;

	if (!c->open)
		return 0;
	while ((rc = tgc_recv(c, &m, 0)) > 0) {
		rc = tgc_session_common(c, &m);
		if (rc)
			return rc;
	}
	if (rc < 0)
		return rc;
	if (tgc_now_ns() - c->last_tx_ns < KEEPALIVE_NS)
		return 0;
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_PING;
	m.u.ping.nonce = ++c->ping_nonce;
	return tgc_send(c, &m);
}

bool tgc_dead(const struct tgc_conn *c)
{
	return tgc_now_ns() - c->last_rx_ns > (uint64_t)c->timeout_s * 1000000000ull;
}
