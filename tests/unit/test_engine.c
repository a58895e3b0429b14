/*
 * test_engine.c - unit tests for the gateway's protocol engine
 * (gateway/engine*.c) driven as a real client would drive it.
 *
 * The test supplies its own service (gw_service_info/submit/done), so the
 * library's service.o is never linked: jobs run against a real tg_store in a
 * mktemp dir, a real tg_dedup and tg_pipe, and a fake control plane that
 * checks REG_PROOF and AUTH with the real crypto. Submitted jobs either run
 * at once or are held until the test releases them, which is how "no ACK
 * before the store returned" and zombie sessions are observed. The client
 * side builds and parses every packet with tg_proto_build/parse and checks
 * the gateway's MACs and tags with tg_crypto, so a wire or crypto slip in the
 * engine fails here.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "gw.h"
#include "gw_job.h"
#include "tg_chunk.h"
#include "tg_crypto.h"
#include "tg_proto.h"
#include "tg_regkey.h"
#include "tg_store.h"

#define MAX_CHUNK   (1u << 20)
#define SVC_FRAG    1408u
#define SLOTS       8u
#define NSESS       16u
#define QMAX        8192u
#define NORGS       2u
#define NDEV        32u

/* ---- the fake service ---- */

struct fake_org {
	struct tg_org_id org;
	uint8_t key_id[TG_KEYID_LEN];
	uint8_t secret[32];
	uint8_t state;
};

struct fake_dev {
	uint8_t id[TG_ID_LEN];
	uint8_t cred[TG_CRED_LEN];
	unsigned org;
	bool relay, admin;
};

struct gw_service {
	struct gw_service_info info;
	char root[64];
	char dir[96];
	struct tg_store *st;
	struct tg_dedup *dd;
	struct tg_pipe *pipe;
	bool hold;     /* keep submitted jobs until svc_run() */
	bool full;     /* the ring is full: submit refuses */
	struct gw_job *q[QMAX];
	unsigned nq;
	struct gw_job *done[QMAX];
	unsigned dhead, ndone;
	unsigned submitted[GW_JOB_ORG_UPDATE + 1];
	struct fake_org orgs[NORGS];
	struct fake_dev devs[NDEV];
	unsigned ndevs;
	uint64_t next_backup;
	uint8_t last_root[TG_ID_LEN];
	uint32_t last_root_len;
	uint64_t last_backup;
	unsigned last_org;
	struct tg_policy last_store_policy;
};

static struct gw_service *svc;
static struct gw_engine *eng;
static struct gw_counters cnt;
static uint64_t now = 10000000;

const struct gw_service_info *gw_service_info(const struct gw_service *s)
{
	return &s->info;
}

static int org_index(const struct tg_org_id *o)
{
	for (unsigned i = 0; i < NORGS; i++)
		if (tg_id_eq(svc->orgs[i].org.b, o->b))
			return (int)i;
	return -1;
}

static void fake_register(struct gw_job *j)
{
	struct tg_reg_proof *rp = &j->u.reg.req;
	struct fake_org *o = NULL;
	struct fake_dev *d;
	uint8_t salt[16], v[32], proof[32], wk[32], aad[32];

	for (unsigned i = 0; i < NORGS; i++)
		if (!memcmp(svc->orgs[i].key_id, rp->key_id, TG_KEYID_LEN))
			o = &svc->orgs[i];
	if (!o) {
		j->status = TG_ERR_UNKNOWN_ORG;
		return;
	}
	assert_int_equal(tg_regkey_salt(svc->info.provider_guid, rp->key_id, salt), 0);
	assert_int_equal(tg_regkey_verifier(salt, o->secret, 32, v), 0);
	assert_int_equal(tg_reg_proof(v, rp, proof), 0);
	if (!tg_ct_eq(proof, rp->proof, 32)) {
		j->status = TG_ERR_BAD_KEY;
		snprintf(j->msg, sizeof(j->msg), "wrong key\x01");
		return;
	}
	assert_true(svc->ndevs < NDEV);
	d = &svc->devs[svc->ndevs++];
	tg_random(d->id, sizeof(d->id));
	tg_random(d->cred, sizeof(d->cred));
	d->org = (unsigned)(o - svc->orgs);
	d->relay = rp->flags & TG_RF_RELAY;
	memcpy(j->u.reg.ok.org_guid, o->org.b, 16);
	memcpy(j->u.reg.ok.device_id, d->id, 16);
	memcpy(aad, o->org.b, 16);
	memcpy(aad + 16, d->id, 16);
	assert_int_equal(tg_reg_wrap_key(v, rp->client_nonce, rp->server_nonce, wk), 0);
	assert_int_equal(tg_aead_seal(wk, rp->server_nonce, aad, 32, d->cred, 32,
				      j->u.reg.ok.wrapped_cred, j->u.reg.ok.wrap_tag), 0);
	j->status = TG_OK;
}

static void fake_auth(struct gw_job *j)
{
	struct tg_auth *a = &j->u.auth.req;
	struct fake_dev *d = NULL;
	uint8_t proof[32];

	for (unsigned i = 0; i < svc->ndevs; i++)
		if (tg_id_eq(svc->devs[i].id, a->device_id))
			d = &svc->devs[i];
	if (!d) {
		j->status = TG_ERR_BAD_KEY;
		return;
	}
	assert_int_equal(tg_auth_proof(d->cred, a, proof), 0);
	if (!tg_ct_eq(proof, a->proof, 32)) {
		j->status = TG_ERR_BAD_KEY;
		return;
	}
	assert_int_equal(tg_session_key(d->cred, a->client_nonce, a->server_nonce,
					j->u.auth.session_key), 0);
	j->u.auth.org = svc->orgs[d->org].org;
	j->u.auth.state = svc->orgs[d->org].state;
	j->u.auth.relay = d->relay;
	j->u.auth.admin = d->admin;
	assert_int_equal(tg_policy_parse("compress", &j->u.auth.policy), 0);
	j->status = TG_OK;
}

static void fake_run_one(struct gw_job *j)
{
	struct tg_ingest_res res;
	size_t len = 0;
	int rc;

	switch (j->type) {
	case GW_JOB_REGISTER:
		fake_register(j);
		break;
	case GW_JOB_AUTH:
		fake_auth(j);
		break;
	case GW_JOB_OFFER:
		memset(j->u.offer.need, 0, sizeof(j->u.offer.need));
		for (unsigned i = 0; i < j->u.offer.count; i++) {
			struct tg_chunk_id id;

			memcpy(id.b, j->u.offer.ids[i].id, 16);
			if (!tg_dedup_lookup(svc->dd, &j->org, &id) &&
			    tg_store_exists(svc->st, &j->org, &id) != 1)
				j->u.offer.need[i / 8] |= (uint8_t)(1u << (i % 8));
		}
		j->status = TG_OK;
		break;
	case GW_JOB_STORE:
		svc->last_store_policy = j->u.store.policy;
		rc = tg_pipe_ingest(svc->pipe, svc->st, svc->dd, &j->org, &j->u.store.policy,
				    &j->u.store.id, j->u.store.data, j->u.store.len, j->u.store.cap,
				    &res);
		if (rc == 0)
			j->status = res.status == TG_INGEST_DUP ? TG_ERR_DUP : TG_OK;
		else
			j->status = rc == -EBADMSG ? TG_ERR_HASH_MISMATCH : TG_ERR_STORAGE;
		break;
	case GW_JOB_READ:
		rc = tg_pipe_read(svc->pipe, svc->st, &j->org, &j->u.read.id, j->u.read.buf,
				  j->u.read.cap, &len, NULL);
		j->u.read.len = (uint32_t)len;
		j->status = rc == 0 ? TG_OK : rc == -ENOENT ? TG_ERR_NOT_FOUND : TG_ERR_STORAGE;
		break;
	case GW_JOB_BACKUP_END: {
		struct tg_chunk_id id;

		memcpy(id.b, j->u.end.req.root_id, 16);
		if (tg_store_exists(svc->st, &j->org, &id) != 1) {
			j->status = TG_ERR_NOT_FOUND;
			break;
		}
		j->u.end.backup_id = ++svc->next_backup;
		memcpy(svc->last_root, id.b, 16);
		svc->last_root_len = j->u.end.req.root_len;
		svc->last_backup = j->u.end.backup_id;
		svc->last_org = (unsigned)org_index(&j->org);
		j->status = TG_OK;
		break;
	}
	case GW_JOB_RESTORE:
		if (!svc->last_backup || org_index(&j->org) != (int)svc->last_org) {
			j->status = TG_ERR_NOT_FOUND;
			snprintf(j->msg, sizeof(j->msg), "no backup");
			break;
		}
		j->u.restore.ok.backup_id = svc->last_backup;
		memcpy(j->u.restore.ok.root_id, svc->last_root, 16);
		j->u.restore.ok.root_len = svc->last_root_len;
		j->u.restore.ok.total_bytes = svc->last_root_len;
		j->u.restore.ok.created = 1700000000;
		j->status = TG_OK;
		break;
	default:
		fail();
	}
}

static void done_push(struct gw_job *j)
{
	assert_true(svc->ndone < QMAX);
	svc->done[(svc->dhead + svc->ndone) % QMAX] = j;
	svc->ndone++;
}

bool gw_service_submit(struct gw_service *s, struct gw_job *j)
{
	assert_ptr_equal(s, svc);
	if (s->full)
		return false;
	s->submitted[j->type]++;
	if (s->hold) {
		assert_true(s->nq < QMAX);
		s->q[s->nq++] = j;
		return true;
	}
	fake_run_one(j);
	done_push(j);
	return true;
}

unsigned gw_service_done(struct gw_service *s, unsigned worker, struct gw_job **jobs, unsigned n)
{
	unsigned k = 0;

	assert_int_equal(worker, 0);
	while (k < n && s->ndone) {
		jobs[k++] = s->done[s->dhead];
		s->dhead = (s->dhead + 1) % QMAX;
		s->ndone--;
	}
	return k;
}

/* Run every held job (the I/O threads catching up). */
static void svc_run(void)
{
	for (unsigned i = 0; i < svc->nq; i++) {
		fake_run_one(svc->q[i]);
		done_push(svc->q[i]);
	}
	svc->nq = 0;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(p);
}

/* ---- what the engine sends ---- */

struct pkt {
	struct gw_peer to;
	size_t len;
	uint8_t b[];
};

static struct pkt *outq[QMAX];
static unsigned nout, outhead;
static struct pkt *last_pkt;
static bool tx_fail;
static unsigned tx_calls;

static bool fake_tx(void *arg, const struct gw_peer *to, const void *p, size_t len)
{
	struct pkt *k;

	(void)arg;
	tx_calls++;
	if (tx_fail)
		return false;
	assert_true(len <= TG_UDP_PAYLOAD_MAX);
	assert_true(nout < QMAX);
	k = malloc(sizeof(*k) + len);
	assert_non_null(k);
	k->to = *to;
	k->len = len;
	memcpy(k->b, p, len);
	outq[(outhead + nout) % QMAX] = k;
	nout++;
	return true;
}

static void out_clear(void)
{
	while (nout) {
		free(outq[outhead]);
		outhead = (outhead + 1) % QMAX;
		nout--;
	}
	free(last_pkt);
	last_pkt = NULL;
}

/* The next packet the engine sent, parsed; NULL when none. */
static struct pkt *out_next(struct tg_msg *m)
{
	struct pkt *k;

	free(last_pkt);
	last_pkt = NULL;
	if (!nout)
		return NULL;
	k = outq[outhead];
	outhead = (outhead + 1) % QMAX;
	nout--;
	last_pkt = k;
	assert_int_equal(tg_proto_parse(k->b, k->len, m), TG_PERR_OK);
	return k;
}

static void expect(uint8_t type, struct tg_msg *m)
{
	struct pkt *k = out_next(m);

	assert_non_null(k);
	if (m->hdr.type != type)
		fail_msg("expected packet type %u, got %u", type, m->hdr.type);
}

static unsigned out_count_type(uint8_t type)
{
	unsigned n = 0;

	for (unsigned i = 0; i < nout; i++) {
		struct tg_hdr h;
		struct pkt *k = outq[(outhead + i) % QMAX];

		assert_int_equal(tg_proto_parse_hdr(k->b, k->len, &h), TG_PERR_OK);
		n += h.type == type;
	}
	return n;
}

/* ---- set-up ---- */

static struct gw_peer peer_of(uint32_t host, uint16_t port)
{
	struct gw_peer p = {
		.ip = __builtin_bswap32(0xa9fe4d00u | host),
		.port = __builtin_bswap16(port),
		.local_ip = __builtin_bswap32(0xa9fe4d01u),
		.port_id = 0,
	};
	return p;
}

static void engine_up(const struct tg_reasm_cfg *ra, unsigned nsess)
{
	struct gw_engine_cfg ec = {
		.worker_id = 0,
		.svc = svc,
		.tx = fake_tx,
		.tx_arg = NULL,
		.counters = &cnt,
	};
	int err = 0;

	svc->info.reasm = *ra;
	svc->info.sessions_per_worker = nsess;
	memset(&cnt, 0, sizeof(cnt));
	eng = gw_engine_create(&ec, &err);
	assert_int_equal(err, 0);
	assert_non_null(eng);
}

static const struct tg_reasm_cfg default_ra = {
	.mem_total = 24u << 20,
	.mem_per_session = 8u << 20,
	.slots_per_session = SLOTS,
	.max_chunk = MAX_CHUNK,
};

static int setup(void **state)
{
	const char *dirs[1];
	int err;

	(void)state;
	svc = calloc(1, sizeof(*svc));
	assert_non_null(svc);
	snprintf(svc->root, sizeof(svc->root), "/tmp/tg-engine-XXXXXX");
	assert_non_null(mkdtemp(svc->root));
	snprintf(svc->dir, sizeof(svc->dir), "%s/d0", svc->root);
	assert_int_equal(mkdir(svc->dir, 0700), 0);
	dirs[0] = svc->dir;
	svc->st = tg_store_dir_open(dirs, 1, &err);
	assert_non_null(svc->st);
	svc->dd = tg_dedup_create(4096, &err);
	assert_non_null(svc->dd);
	svc->pipe = tg_pipe_create(MAX_CHUNK, &err);
	assert_non_null(svc->pipe);
	for (unsigned i = 0; i < 16; i++)
		svc->info.provider_guid[i] = (uint8_t)(0x50 + i);
	tg_random(svc->info.cookie_secret, 32);
	svc->info.max_chunk = MAX_CHUNK;
	svc->info.frag_size = SVC_FRAG;
	svc->info.nworkers = 1;
	for (unsigned o = 0; o < NORGS; o++) {
		tg_random(svc->orgs[o].org.b, 16);
		tg_random(svc->orgs[o].key_id, TG_KEYID_LEN);
		tg_random(svc->orgs[o].secret, 32);
		svc->orgs[o].state = GW_ORG_ACTIVE;
	}
	now = 10000000;
	tx_fail = false;
	engine_up(&default_ra, NSESS);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	/* Jobs still held point into the engine: hand them back first. */
	svc->hold = false;
	svc_run();
	gw_engine_poll(eng, now);
	gw_engine_destroy(eng);
	eng = NULL;
	out_clear();
	tg_pipe_destroy(svc->pipe);
	tg_dedup_destroy(svc->dd);
	tg_store_close(svc->st);
	nftw(svc->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(svc);
	svc = NULL;
	return 0;
}

/* ---- the client ---- */

struct cli {
	struct gw_peer peer;
	uint8_t device[16], cred[32];
	struct tg_org_id org;
	uint8_t cn[16], sn[16];
	uint64_t token;
	uint8_t key[32];
	uint16_t frag, credits;
	uint32_t credit_bytes, max_chunk;
};

static void cli_send(const struct cli *c, struct tg_msg *m)
{
	uint8_t buf[TG_UDP_PAYLOAD_MAX];
	ssize_t n = tg_proto_build(buf, sizeof(buf), m);

	assert_true(n > 0);
	gw_engine_rx(eng, &c->peer, buf, (size_t)n, now);
}

static void pump(void)
{
	gw_engine_poll(eng, now);
}

/* Register with org o's key (or a wrong secret); returns 0 or the ERROR code. */
static uint16_t cli_register(struct cli *c, unsigned o, bool wrong_key)
{
	struct fake_org *fo = &svc->orgs[o];
	uint8_t secret[32], salt[16], v[32], wk[32], aad[32];
	struct tg_msg m;
	struct tg_reg_proof *rp;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_REG_INIT;
	memcpy(m.u.reg_init.provider_guid, svc->info.provider_guid, 16);
	memcpy(m.u.reg_init.key_id, fo->key_id, TG_KEYID_LEN);
	tg_random(c->cn, 16);
	memcpy(m.u.reg_init.client_nonce, c->cn, 16);
	m.u.reg_init.name_len = 6;
	m.u.reg_init.name = "laptop";
	cli_send(c, &m);
	expect(TG_MSG_REG_CHALLENGE, &m);
	assert_memory_equal(m.u.reg_challenge.client_nonce, c->cn, 16);
	assert_int_equal(tg_regkey_salt(svc->info.provider_guid, fo->key_id, salt), 0);
	assert_memory_equal(m.u.reg_challenge.salt, salt, 16);
	memcpy(c->sn, m.u.reg_challenge.server_nonce, 16);
	memcpy(secret, fo->secret, 32);
	if (wrong_key)
		secret[0] ^= 1;
	assert_int_equal(tg_regkey_verifier(salt, secret, 32, v), 0);

	struct tg_msg p;

	memset(&p, 0, sizeof(p));
	p.hdr.type = TG_MSG_REG_PROOF;
	rp = &p.u.reg_proof;
	memcpy(rp->provider_guid, svc->info.provider_guid, 16);
	memcpy(rp->key_id, fo->key_id, TG_KEYID_LEN);
	memcpy(rp->client_nonce, c->cn, 16);
	memcpy(rp->server_nonce, c->sn, 16);
	memcpy(rp->cookie, m.u.reg_challenge.cookie, 16);
	rp->name_len = 6;
	rp->name = "laptop";
	assert_int_equal(tg_reg_proof(v, rp, rp->proof), 0);
	cli_send(c, &p);
	pump();
	if (!out_next(&m))
		fail_msg("no answer to REG_PROOF");
	if (m.hdr.type == TG_MSG_ERROR) {
		assert_memory_equal(m.u.error.ref_id, c->cn, 16);
		return m.u.error.code;
	}
	assert_int_equal(m.hdr.type, TG_MSG_REG_OK);
	assert_memory_equal(m.u.reg_ok.client_nonce, c->cn, 16);
	memcpy(aad, m.u.reg_ok.org_guid, 16);
	memcpy(aad + 16, m.u.reg_ok.device_id, 16);
	assert_int_equal(tg_reg_wrap_key(v, c->cn, c->sn, wk), 0);
	assert_int_equal(tg_aead_open(wk, c->sn, aad, 32, m.u.reg_ok.wrapped_cred, 32, c->cred,
				      m.u.reg_ok.wrap_tag), 0);
	memcpy(c->org.b, m.u.reg_ok.org_guid, 16);
	memcpy(c->device, m.u.reg_ok.device_id, 16);
	return 0;
}

static void cli_hello(struct cli *c, uint16_t max_frag, uint8_t cookie[16])
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_HELLO;
	memcpy(m.u.hello.device_id, c->device, 16);
	tg_random(c->cn, 16);
	memcpy(m.u.hello.client_nonce, c->cn, 16);
	m.u.hello.max_frag = max_frag;
	cli_send(c, &m);
	expect(TG_MSG_CHALLENGE, &m);
	assert_memory_equal(m.u.challenge.client_nonce, c->cn, 16);
	memcpy(c->sn, m.u.challenge.server_nonce, 16);
	memcpy(cookie, m.u.challenge.cookie, 16);
}

static void cli_auth_send(struct cli *c, uint16_t max_frag, const uint8_t cookie[16])
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_AUTH;
	memcpy(m.u.auth.device_id, c->device, 16);
	memcpy(m.u.auth.client_nonce, c->cn, 16);
	memcpy(m.u.auth.server_nonce, c->sn, 16);
	memcpy(m.u.auth.cookie, cookie, 16);
	m.u.auth.max_frag = max_frag;
	assert_int_equal(tg_auth_proof(c->cred, &m.u.auth, m.u.auth.proof), 0);
	cli_send(c, &m);
}

/* Parse a SESSION_OK and check its mac as a client must. */
static void cli_accept_ok(struct cli *c, const struct tg_msg *m)
{
	uint8_t mac[16];

	assert_int_equal(m->hdr.type, TG_MSG_SESSION_OK);
	assert_memory_equal(m->u.session_ok.client_nonce, c->cn, 16);
	assert_int_equal(tg_session_key(c->cred, c->cn, c->sn, c->key), 0);
	assert_int_equal(tg_session_ok_mac(c->key, &m->u.session_ok, mac), 0);
	assert_memory_equal(mac, m->u.session_ok.mac, 16);
	c->token = m->u.session_ok.token;
	c->frag = m->u.session_ok.frag_size;
	c->credits = m->u.session_ok.credits;
	c->credit_bytes = m->u.session_ok.credit_bytes;
	c->max_chunk = m->u.session_ok.max_chunk;
}

static uint16_t cli_session(struct cli *c, uint16_t max_frag)
{
	uint8_t cookie[16];
	struct tg_msg m;

	cli_hello(c, max_frag, cookie);
	cli_auth_send(c, max_frag, cookie);
	pump();
	if (!out_next(&m))
		fail_msg("no answer to AUTH");
	if (m.hdr.type == TG_MSG_ERROR)
		return m.u.error.code;
	cli_accept_ok(c, &m);
	return 0;
}

/* A registered client with a session, on host h of org o. */
static void cli_open(struct cli *c, unsigned o, uint32_t h)
{
	memset(c, 0, sizeof(*c));
	c->peer = peer_of(h, (uint16_t)(40000 + h));
	assert_int_equal(cli_register(c, o, false), 0);
	assert_int_equal(cli_session(c, SVC_FRAG), 0);
	out_clear();
}

static void cli_simple(struct cli *c, uint8_t type)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = type;
	m.hdr.token = c->token;
	cli_send(c, &m);
}

static uint8_t *chunk_make(uint32_t len, uint32_t seed, struct tg_chunk_id *id)
{
	uint8_t *b = malloc(len);
	uint64_t x = 0x9e3779b97f4a7c15ull ^ seed;

	assert_non_null(b);
	for (uint32_t i = 0; i < len; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		b[i] = (uint8_t)((x * 0x2545f4914f6cdd1dull) >> 56);
	}
	tg_chunk_hash(b, len, id);
	return b;
}

static void cli_frag(const struct cli *c, const uint8_t *b, uint32_t len,
		     const struct tg_chunk_id *id, uint32_t off, uint32_t flen, bool bad_tag)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_DATA;
	m.hdr.token = c->token;
	memcpy(m.u.data.chunk_id, id->b, 16);
	m.u.data.chunk_len = len;
	m.u.data.frag_off = off;
	assert_int_equal(tg_chunk_tag(c->key, 'U', c->token, id->b, len, m.u.data.tag), 0);
	if (bad_tag)
		m.u.data.tag[0] ^= 1;
	m.u.data.frag_len = (uint16_t)flen;
	m.u.data.payload = b + off;
	cli_send(c, &m);
}

static unsigned nfrags(const struct cli *c, uint32_t len)
{
	return (len + c->frag - 1) / c->frag;
}

static void cli_frag_i(const struct cli *c, const uint8_t *b, uint32_t len,
		       const struct tg_chunk_id *id, unsigned i)
{
	uint32_t off = i * c->frag;
	uint32_t flen = len - off < c->frag ? len - off : c->frag;

	cli_frag(c, b, len, id, off, flen, false);
}

static void cli_upload(const struct cli *c, const uint8_t *b, uint32_t len,
		       const struct tg_chunk_id *id)
{
	for (unsigned i = 0; i < nfrags(c, len); i++)
		cli_frag_i(c, b, len, id, i);
}

/* Status of id in the ACKs waiting in the queue (UINT16_MAX: none). */
static uint16_t ack_status(const struct tg_chunk_id *id, unsigned *nacks)
{
	uint16_t st = UINT16_MAX;
	struct tg_msg m;

	if (nacks)
		*nacks = 0;
	while (out_next(&m)) {
		if (m.hdr.type != TG_MSG_ACK)
			continue;
		for (unsigned i = 0; i < m.u.ack.count; i++) {
			struct tg_ack_entry ae;

			tg_ack_entry(&m.u.ack, i, &ae);
			if (tg_id_eq(ae.id, id->b)) {
				st = ae.status;
				if (nacks)
					(*nacks)++;
			}
		}
	}
	return st;
}

static void cli_offer(const struct cli *c, uint32_t seq, const struct tg_chunk_id *ids,
		      const uint32_t *lens, unsigned n)
{
	uint8_t ent[TG_OFFER_MAX * TG_OFFER_ENTRY_LEN];
	struct tg_msg m;

	for (unsigned i = 0; i < n; i++) {
		struct tg_chunk_ref r;

		memcpy(r.id, ids[i].b, 16);
		r.len = lens[i];
		tg_offer_entry_put(ent, i, &r);
	}
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_OFFER;
	m.hdr.token = c->token;
	m.u.offer.offer_seq = seq;
	m.u.offer.count = (uint16_t)n;
	m.u.offer.entries = ent;
	cli_send(c, &m);
}

/* Upload and store one chunk (pump until ACKed); returns its ACK status. */
static uint16_t cli_store(struct cli *c, const uint8_t *b, uint32_t len,
			  const struct tg_chunk_id *id)
{
	cli_upload(c, b, len, id);
	pump();
	return ack_status(id, NULL);
}

/* ---- registration ---- */

static void test_register_good_key_delivers_credential_that_opens(void **state)
{
	struct cli c;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.peer = peer_of(2, 40000);
	assert_int_equal(cli_register(&c, 0, false), 0);
	assert_memory_equal(c.org.b, svc->orgs[0].org.b, 16);
	assert_memory_equal(c.cred, svc->devs[0].cred, 32);
	assert_int_equal(cnt.registrations, 1);
	assert_int_equal(svc->submitted[GW_JOB_REGISTER], 1);
}

static void test_register_wrong_key_gets_bad_key_with_client_nonce(void **state)
{
	struct cli c;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.peer = peer_of(2, 40000);
	assert_int_equal(cli_register(&c, 0, true), TG_ERR_BAD_KEY);
	assert_int_equal(cnt.registrations, 0);
	assert_int_equal(cnt.err_sent[TG_ERR_BAD_KEY], 1);
	assert_int_equal(svc->ndevs, 0);
}

static void test_reg_init_for_another_provider_gets_unknown_org(void **state)
{
	struct tg_msg m;
	struct cli c;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.peer = peer_of(2, 40000);
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_REG_INIT;
	memset(m.u.reg_init.provider_guid, 0xee, 16);
	memset(m.u.reg_init.client_nonce, 0x61, 16);
	m.u.reg_init.name_len = 1;
	m.u.reg_init.name = "x";
	cli_send(&c, &m);
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_UNKNOWN_ORG);
	assert_int_equal(m.hdr.token, 0);
	memset(c.cn, 0x61, 16);
	assert_memory_equal(m.u.error.ref_id, c.cn, 16);
	assert_int_equal(svc->submitted[GW_JOB_REGISTER], 0);
}

/* A cookie lives 30 to 60 s; a stale or forged one gets a new challenge
 * and never reaches the control plane. */
static void test_stale_or_forged_cookie_rechallenged_without_a_job(void **state)
{
	uint8_t cookie[16];
	struct tg_msg m;
	struct cli c;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.peer = peer_of(2, 40000);
	assert_int_equal(cli_register(&c, 0, false), 0);
	out_clear();

	/* Previous bucket still good. */
	now = (now / 30000) * 30000 + 29000;
	cli_hello(&c, SVC_FRAG, cookie);
	now += 2000;
	cli_auth_send(&c, SVC_FRAG, cookie);
	pump();
	expect(TG_MSG_SESSION_OK, &m);
	assert_int_equal(svc->submitted[GW_JOB_AUTH], 1);

	/* Two buckets later: re-challenged, no job. */
	cli_hello(&c, SVC_FRAG, cookie);
	now += 61000;
	cli_auth_send(&c, SVC_FRAG, cookie);
	pump();
	expect(TG_MSG_CHALLENGE, &m);
	assert_memory_equal(m.u.challenge.client_nonce, c.cn, 16);
	assert_int_equal(cnt.drops[GW_DROP_BAD_COOKIE], 1);

	/* A cookie made for another source fails too. */
	cli_hello(&c, SVC_FRAG, cookie);
	c.peer = peer_of(3, 40000);
	cli_auth_send(&c, SVC_FRAG, cookie);
	pump();
	expect(TG_MSG_CHALLENGE, &m);
	assert_int_equal(cnt.drops[GW_DROP_BAD_COOKIE], 2);
	assert_int_equal(svc->submitted[GW_JOB_AUTH], 1);
}

/* ---- sessions ---- */

static void test_session_ok_carries_negotiated_parameters_and_valid_mac(void **state)
{
	uint8_t cookie[16];
	struct tg_msg m;
	struct cli c;
	uint64_t tok;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.peer = peer_of(2, 40000);
	assert_int_equal(cli_register(&c, 0, false), 0);
	out_clear();
	/* The client's path is the narrower one. */
	assert_int_equal(cli_session(&c, 1024), 0);
	assert_int_equal(c.frag, 1024);
	assert_int_not_equal(c.token, 0);
	assert_int_equal(c.credits, SLOTS);
	assert_true(c.credit_bytes >= MAX_CHUNK);
	assert_int_equal(c.max_chunk, MAX_CHUNK);
	assert_int_equal(cnt.sessions_active, 1);
	tok = c.token;

	/* The gateway's is: frag_size never exceeds the service's. */
	assert_int_equal(cli_session(&c, 8896), 0);
	assert_int_equal(c.frag, SVC_FRAG);
	assert_int_not_equal(c.token, tok);
	assert_int_equal(cnt.sessions_active, 2);

	/* A duplicate AUTH is answered with the same session. */
	cli_hello(&c, 2048, cookie);
	cli_auth_send(&c, 2048, cookie);
	pump();
	expect(TG_MSG_SESSION_OK, &m);
	cli_accept_ok(&c, &m);
	tok = c.token;
	cli_auth_send(&c, 2048, cookie);
	pump();
	expect(TG_MSG_SESSION_OK, &m);
	assert_int_equal(m.u.session_ok.token, tok);
	assert_int_equal(cnt.sessions_active, 3);
	assert_int_equal(svc->submitted[GW_JOB_AUTH], 3);

	/* A wrong credential is refused. */
	c.cred[0] ^= 1;
	assert_int_equal(cli_session(&c, 2048), TG_ERR_BAD_KEY);
	assert_int_equal(cnt.sessions_active, 3);
}

static void test_auth_of_deactivated_org_refused(void **state)
{
	struct cli c;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.peer = peer_of(2, 40000);
	assert_int_equal(cli_register(&c, 1, false), 0);
	out_clear();
	svc->orgs[1].state = GW_ORG_DEACTIVATED;
	assert_int_equal(cli_session(&c, SVC_FRAG), TG_ERR_ORG_DEACTIVATED);
	assert_int_equal(cnt.sessions_active, 0);
}

/* ---- backup ---- */

static void test_offer_need_answers_from_own_org_only(void **state)
{
	struct tg_chunk_id ids[2];
	uint32_t lens[2] = { 5000, 7000 };
	uint8_t *a = chunk_make(lens[0], 1, &ids[0]);
	uint8_t *b = chunk_make(lens[1], 2, &ids[1]);
	struct cli ca, cb;
	struct tg_msg m;

	(void)state;
	cli_open(&ca, 0, 2);
	cli_open(&cb, 1, 3);
	assert_int_equal(cli_store(&ca, a, lens[0], &ids[0]), TG_OK);

	cli_offer(&ca, 1, ids, lens, 2);
	pump();
	expect(TG_MSG_NEED, &m);
	assert_int_equal(m.hdr.token, ca.token);
	assert_int_equal(m.u.need.offer_seq, 1);
	assert_int_equal(m.u.need.count, 2);
	assert_int_equal(m.u.need.bitmap[0], 0x2); /* A holds a, lacks b */

	/* Org B is told it needs A's chunk: nothing leaks across tenants. */
	cli_offer(&cb, 9, ids, lens, 2);
	pump();
	expect(TG_MSG_NEED, &m);
	assert_int_equal(m.hdr.token, cb.token);
	assert_int_equal(m.u.need.bitmap[0], 0x3);

	/* A retransmission while the job is out is ignored, then answered. */
	svc->hold = true;
	cli_offer(&ca, 2, ids, lens, 2);
	cli_offer(&ca, 2, ids, lens, 2);
	pump();
	assert_null(out_next(&m));
	assert_int_equal(svc->submitted[GW_JOB_OFFER], 3);
	svc_run();
	pump();
	expect(TG_MSG_NEED, &m);
	assert_int_equal(m.u.need.offer_seq, 2);
	assert_null(out_next(&m));
	cli_offer(&ca, 2, ids, lens, 2);
	expect(TG_MSG_NEED, &m);
	assert_int_equal(m.u.need.offer_seq, 2);
	assert_int_equal(svc->submitted[GW_JOB_OFFER], 3);
	assert_int_equal(cnt.offers, 3);
	assert_int_equal(cnt.offered_ids, 6);
	assert_int_equal(cnt.needed_ids, 1 + 2 + 1);

	/* An entry over max_chunk is a bad request naming the offer. */
	lens[1] = MAX_CHUNK + 1;
	cli_offer(&ca, 3, ids, lens, 2);
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_BAD_REQUEST);
	assert_int_equal(m.u.error.detail, 3);
	free(a);
	free(b);
}

/* Out of order, duplicated fragments; the ACK waits for the store. */
static void test_data_out_of_order_acked_only_after_store_returned(void **state)
{
	uint32_t len = 300000;
	struct tg_chunk_id id;
	uint8_t *b = chunk_make(len, 7, &id);
	uint8_t *back = malloc(len);
	struct cli c;
	struct tg_msg m;
	size_t got = 0;
	unsigned n, nacks;

	(void)state;
	cli_open(&c, 0, 2);
	n = nfrags(&c, len);
	svc->hold = true;
	for (unsigned i = n; i-- > 0;) {
		cli_frag_i(&c, b, len, &id, i);
		if (i % 3 == 0)
			cli_frag_i(&c, b, len, &id, i);
	}
	cli_frag_i(&c, b, len, &id, 0); /* after completion: a dup */
	pump();
	assert_int_equal(svc->submitted[GW_JOB_STORE], 1);
	assert_int_equal(out_count_type(TG_MSG_ACK), 0);
	assert_int_equal(cnt.ra[TG_RA_COMPLETE], 1);
	assert_true(cnt.ra[TG_RA_DUP] >= n / 3);

	/* Complete but not durable: a PING gets an all-ones SACK. */
	cli_simple(&c, TG_MSG_PING);
	expect(TG_MSG_SACK, &m);
	assert_memory_equal(m.u.sack.chunk_id, id.b, 16);
	assert_int_equal(m.u.sack.unit_base, 0);
	for (unsigned i = 0; i < m.u.sack.nunits; i++)
		assert_true(m.u.sack.bitmap[i / 8] >> (i % 8) & 1);
	expect(TG_MSG_PONG, &m);

	svc_run();
	pump();
	assert_int_equal(ack_status(&id, &nacks), TG_OK);
	assert_int_equal(nacks, 1);
	assert_int_equal(cnt.chunks_stored, 1);
	assert_int_equal(tg_pipe_read(svc->pipe, svc->st, &c.org, &id, back, len, &got, NULL), 0);
	assert_int_equal(got, len);
	assert_memory_equal(back, b, len);

	/* Sent again in this session: the remembered answer, no second store. */
	svc->hold = false;
	assert_int_equal(cli_store(&c, b, len, &id), TG_OK);
	assert_int_equal(svc->submitted[GW_JOB_STORE], 1);
	/* Another session of the org: stored by dedup, DUP. */
	struct cli c2;

	cli_open(&c2, 0, 3);
	assert_int_equal(cli_store(&c2, b, len, &id), TG_ERR_DUP);
	assert_int_equal(cnt.chunks_dup, 1);
	free(b);
	free(back);
}

static void test_lost_ack_repaired_when_chunk_data_arrives_again(void **state)
{
	uint32_t len = 40000;
	struct tg_chunk_id id;
	uint8_t *b = chunk_make(len, 8, &id);
	struct cli c;
	struct tg_msg m;

	(void)state;
	cli_open(&c, 0, 2);
	cli_upload(&c, b, len, &id);
	tx_fail = true; /* the ACK is lost */
	pump();
	tx_fail = false;
	assert_int_equal(cnt.drops[GW_DROP_TX_FULL], 1);
	assert_int_equal(out_count_type(TG_MSG_ACK), 0);
	/* The gateway no longer knows the chunk: no SACK, only PONG. */
	cli_simple(&c, TG_MSG_PING);
	expect(TG_MSG_PONG, &m);
	/* The client resends it whole; the ACK comes back, no second store. */
	cli_upload(&c, b, len, &id);
	pump();
	assert_int_equal(ack_status(&id, NULL), TG_OK);
	assert_int_equal(svc->submitted[GW_JOB_STORE], 1);
	/* A forged tag does not get an ACK. */
	cli_frag(&c, b, len, &id, 0, c.frag, true);
	pump();
	assert_int_equal(out_count_type(TG_MSG_ACK), 0);
	assert_int_equal(cnt.ra[TG_RA_DROP_AUTH], 1);
	free(b);
}

static void test_ping_sacks_from_first_missing_unit_then_pong(void **state)
{
	uint32_t len = 100000;
	struct tg_chunk_id id;
	uint8_t *b = chunk_make(len, 9, &id);
	struct cli c;
	struct tg_msg m;
	uint32_t per, first;

	(void)state;
	cli_open(&c, 0, 2);
	per = c.frag / TG_FRAG_UNIT;
	/* Fragments 0, 1, 3 and the last. */
	cli_frag_i(&c, b, len, &id, 0);
	cli_frag_i(&c, b, len, &id, 1);
	cli_frag_i(&c, b, len, &id, 3);
	cli_frag_i(&c, b, len, &id, nfrags(&c, len) - 1);
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_PING;
	m.hdr.token = c.token;
	m.u.ping.nonce = 0x1122334455667788ull;
	cli_send(&c, &m);
	expect(TG_MSG_SACK, &m);
	first = 2 * per;
	assert_int_equal(m.u.sack.chunk_len, len);
	assert_int_equal(m.u.sack.unit_base, first);
	assert_int_equal(m.u.sack.unit_base + m.u.sack.nunits, (len + 63) / 64);
	for (uint32_t i = 0; i < m.u.sack.nunits; i++) {
		uint32_t u = first + i;
		bool held = u >= 3 * per && u < 4 * per;

		held = held || u >= (nfrags(&c, len) - 1) * per;
		assert_int_equal(m.u.sack.bitmap[i / 8] >> (i % 8) & 1, held);
	}
	expect(TG_MSG_PONG, &m);
	assert_int_equal(m.u.pong.nonce, 0x1122334455667788ull);
	assert_int_equal(m.u.pong.credits, SLOTS);
	assert_int_equal(m.u.pong.credit_bytes, c.credit_bytes);
	assert_null(out_next(&m));
	free(b);
}

static void cli_backup_end(const struct cli *c, const struct tg_chunk_id *root, uint32_t len)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_BACKUP_END;
	m.hdr.token = c->token;
	memcpy(m.u.backup_end.root_id, root->b, 16);
	m.u.backup_end.root_len = len;
	m.u.backup_end.nfiles = 1;
	m.u.backup_end.logical_bytes = len;
	m.u.backup_end.name_len = 5;
	m.u.backup_end.name = "daily";
	cli_send(c, &m);
}

static void test_backup_end_retransmission_gets_same_backup_id(void **state)
{
	uint32_t len = 2000;
	struct tg_chunk_id id, missing;
	uint8_t *b = chunk_make(len, 10, &id);
	uint8_t *x = chunk_make(len, 11, &missing);
	struct cli c;
	struct tg_msg m;
	uint64_t bid;

	(void)state;
	cli_open(&c, 0, 2);
	assert_int_equal(cli_store(&c, b, len, &id), TG_OK);
	svc->hold = true;
	cli_backup_end(&c, &id, len);
	cli_backup_end(&c, &id, len); /* while in flight: ignored */
	svc_run();
	pump();
	expect(TG_MSG_BACKUP_DONE, &m);
	assert_int_equal(m.u.backup_done.status, TG_OK);
	assert_memory_equal(m.u.backup_done.root_id, id.b, 16);
	bid = m.u.backup_done.backup_id;
	assert_int_not_equal(bid, 0);
	assert_null(out_next(&m));
	cli_backup_end(&c, &id, len);
	expect(TG_MSG_BACKUP_DONE, &m);
	assert_int_equal(m.u.backup_done.backup_id, bid);
	assert_int_equal(svc->submitted[GW_JOB_BACKUP_END], 1);

	/* A root that is not durable: NOT_FOUND status, backup_id 0. */
	cli_backup_end(&c, &missing, len);
	svc_run();
	pump();
	expect(TG_MSG_BACKUP_DONE, &m);
	assert_int_equal(m.u.backup_done.status, TG_ERR_NOT_FOUND);
	assert_int_equal(m.u.backup_done.backup_id, 0);
	free(b);
	free(x);
}

/* ---- restore ---- */

static void cli_get(const struct cli *c, const struct tg_chunk_id *ids, unsigned n)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_GET;
	m.hdr.token = c->token;
	m.u.get.count = (uint16_t)n;
	m.u.get.ids = ids[0].b;
	cli_send(c, &m);
}

/* Pump until no DATA comes; copy every fragment of id into out, checking
 * each 'D' tag. Returns the number of DATA packets. */
static unsigned collect(const struct cli *c, const struct tg_chunk_id *id, uint32_t len,
			uint8_t *out, uint8_t *seen_units, unsigned *max_per_turn)
{
	uint8_t tag[16];
	unsigned total = 0, turn, quiet = 0;
	struct tg_msg m;

	assert_int_equal(tg_chunk_tag(c->key, 'D', c->token, id->b, len, tag), 0);
	/* A read takes a turn or two to come back before DATA starts. */
	do {
		pump();
		turn = 0;
		while (out_next(&m)) {
			if (m.hdr.type != TG_MSG_DATA)
				continue;
			assert_int_equal(m.hdr.token, c->token);
			assert_memory_equal(m.u.data.chunk_id, id->b, 16);
			assert_int_equal(m.u.data.chunk_len, len);
			assert_memory_equal(m.u.data.tag, tag, 16);
			assert_true(m.u.data.frag_len <= c->frag);
			memcpy(out + m.u.data.frag_off, m.u.data.payload, m.u.data.frag_len);
			for (uint32_t u = m.u.data.frag_off / 64;
			     u < (m.u.data.frag_off + m.u.data.frag_len + 63u) / 64; u++)
				seen_units[u]++;
			turn++;
		}
		total += turn;
		if (max_per_turn && turn > *max_per_turn)
			*max_per_turn = turn;
		quiet = turn ? 0 : quiet + 1;
	} while (quiet < 4);
	return total;
}

static void test_restore_get_serves_original_bytes_with_d_tags_paced(void **state)
{
	uint32_t len = 600000, nunits = (len + 63) / 64;
	struct tg_chunk_id id, bogus;
	uint8_t *b = chunk_make(len, 12, &id);
	uint8_t *out = calloc(1, len), *seen = calloc(1, nunits);
	uint8_t bm[TG_SACK_UNITS_MAX / 8];
	unsigned maxturn = 0, ndata;
	struct cli c;
	struct tg_msg m;

	(void)state;
	memset(&bogus, 0x42, sizeof(bogus));
	cli_open(&c, 0, 2);
	assert_int_equal(cli_store(&c, b, len, &id), TG_OK);

	/* GET before RESTORE_OK is a bad request. */
	cli_get(&c, &id, 1);
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_BAD_REQUEST);

	cli_backup_end(&c, &id, len);
	pump();
	expect(TG_MSG_BACKUP_DONE, &m);
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_RESTORE_REQ;
	m.hdr.token = c.token;
	m.u.restore_req.flags = TG_RF_LATEST;
	cli_send(&c, &m);
	pump();
	expect(TG_MSG_RESTORE_OK, &m);
	assert_memory_equal(m.u.restore_ok.root_id, id.b, 16);
	assert_int_equal(m.u.restore_ok.root_len, len);
	assert_int_equal(cnt.restores, 1);

	cli_get(&c, &id, 1);
	ndata = collect(&c, &id, len, out, seen, &maxturn);
	assert_memory_equal(out, b, len);
	assert_int_equal(ndata, nfrags(&c, len));
	assert_true(maxturn <= 64); /* paced over poll turns */
	assert_true(maxturn < ndata);
	assert_int_equal(cnt.chunks_served, 1);

	/* SACK: units 100..199 missing, the rest held: exactly those come again. */
	memset(bm, 0xff, sizeof(bm));
	for (unsigned u = 100; u < 200; u++)
		bm[u / 8] &= (uint8_t)~(1u << (u % 8));
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_SACK;
	m.hdr.token = c.token;
	memcpy(m.u.sack.chunk_id, id.b, 16);
	m.u.sack.chunk_len = len;
	m.u.sack.unit_base = 0;
	m.u.sack.nunits = 1024;
	m.u.sack.bitmap = bm;
	cli_send(&c, &m);
	memset(seen, 0, nunits);
	memset(out, 0, len);
	collect(&c, &id, len, out, seen, NULL);
	for (unsigned u = 0; u < nunits; u++)
		assert_int_equal(seen[u], u >= 100 && u < 200);
	assert_memory_equal(out + 6400, b + 6400, 6400);

	/* An id the org does not hold: NOT_FOUND naming it. */
	cli_get(&c, &bogus, 1);
	pump(); /* the read starts */
	pump(); /* and comes back */
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_NOT_FOUND);
	assert_memory_equal(m.u.error.ref_id, bogus.b, 16);
	free(b);
	free(out);
	free(seen);
}

/* The read buffers are recycled by other reads; a SACK then re-reads. */
static void test_sack_after_buffer_recycled_rereads_and_sends_only_gaps(void **state)
{
	enum { N = 6 };
	uint32_t len = 20000, nunits = (len + 63) / 64;
	struct tg_chunk_id ids[N];
	uint8_t *bufs[N], *out = calloc(1, len), *seen = calloc(1, nunits);
	uint8_t bm[64];
	struct cli c;
	struct tg_msg m;

	(void)state;
	cli_open(&c, 0, 2);
	for (unsigned i = 0; i < N; i++) {
		bufs[i] = chunk_make(len, 20 + i, &ids[i]);
		assert_int_equal(cli_store(&c, bufs[i], len, &ids[i]), TG_OK);
	}
	cli_backup_end(&c, &ids[0], len);
	pump();
	expect(TG_MSG_BACKUP_DONE, &m);
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_RESTORE_REQ;
	m.hdr.token = c.token;
	m.u.restore_req.flags = TG_RF_LATEST;
	cli_send(&c, &m);
	pump();
	expect(TG_MSG_RESTORE_OK, &m);
	cli_get(&c, ids, N);
	for (int t = 0; t < 20; t++)
		pump();
	out_clear();
	assert_int_equal(svc->submitted[GW_JOB_READ], N);

	memset(bm, 0xff, sizeof(bm));
	bm[0] = 0xf0; /* units 0..3 missing */
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_SACK;
	m.hdr.token = c.token;
	memcpy(m.u.sack.chunk_id, ids[0].b, 16);
	m.u.sack.chunk_len = len;
	m.u.sack.nunits = (uint16_t)nunits;
	m.u.sack.bitmap = bm;
	bm[(nunits - 1) / 8] &= (uint8_t)((1u << (nunits % 8 ? nunits % 8 : 8)) - 1);
	cli_send(&c, &m);
	collect(&c, &ids[0], len, out, seen, NULL);
	assert_int_equal(svc->submitted[GW_JOB_READ], N + 1);
	for (unsigned u = 0; u < nunits; u++)
		assert_int_equal(seen[u], u < 4);
	assert_memory_equal(out, bufs[0], 256);
	for (unsigned i = 0; i < N; i++)
		free(bufs[i]);
	free(out);
	free(seen);
}

/* ---- hostile input ---- */

static void raw_send(const struct gw_peer *p, const void *b, size_t len)
{
	gw_engine_rx(eng, p, b, len, now);
}

static size_t build_ping(uint8_t *buf, uint64_t token)
{
	struct tg_msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_PING;
	m.hdr.token = token;
	return (size_t)tg_proto_build(buf, 64, &m);
}

static void test_every_codec_reject_counted_and_only_version_answered(void **state)
{
	struct gw_peer p = peer_of(9, 5555);
	uint8_t buf[256];
	size_t n;
	struct tg_msg m;
	uint64_t total = 0;

	(void)state;
	n = build_ping(buf, 7);
	raw_send(&p, buf, 10);                                  /* short */
	buf[0] = 0;
	raw_send(&p, buf, n);                                   /* magic */
	n = build_ping(buf, 7);
	buf[2] = 2;
	raw_send(&p, buf, n);                                   /* version */
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_VERSION);
	assert_int_equal(m.u.error.detail, 1);
	assert_int_equal(m.hdr.token, 0);
	n = build_ping(buf, 7);
	buf[3] = 23;
	raw_send(&p, buf, n);                                   /* type */
	n = build_ping(buf, 7);
	buf[5] = 1;
	raw_send(&p, buf, n);                                   /* flags */
	n = build_ping(buf, 7);
	raw_send(&p, buf, n + 1);                               /* len */
	n = build_ping(buf, 7);
	memset(buf + 8, 0, 8);
	raw_send(&p, buf, n);                                   /* token */
	/* OFFER with count 0: 16 + 6 bytes. */
	n = build_ping(buf, 7);
	buf[3] = TG_MSG_OFFER;
	buf[6] = 0;
	buf[7] = 6;
	memset(buf + 16, 0, 6);
	raw_send(&p, buf, 22);                                  /* count */
	/* HELLO with max_frag 100. */
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_HELLO;
	m.u.hello.max_frag = 512;
	n = (size_t)tg_proto_build(buf, sizeof(buf), &m);
	buf[16 + 32] = 0;
	buf[16 + 33] = 100;
	raw_send(&p, buf, n);                                   /* range */
	/* REG_INIT with a control byte in its name. */
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_REG_INIT;
	m.u.reg_init.name_len = 2;
	m.u.reg_init.name = "ab";
	n = (size_t)tg_proto_build(buf, sizeof(buf), &m);
	buf[n - 1] = 0x07;
	raw_send(&p, buf, n);                                   /* name */

	for (unsigned r = TG_PERR_SHORT; r <= TG_PERR_TOKEN; r++) {
		if (cnt.perr[r] != 1)
			fail_msg("perr %s counted %llu times", tg_perr_name(r),
				 (unsigned long long)cnt.perr[r]);
		total += cnt.perr[r];
	}
	assert_int_equal(cnt.drops[GW_DROP_CODEC], total);
	assert_null(out_next(&m)); /* nothing else answered */
	assert_int_equal(cnt.proto_rx_pkts, 0);
}

static void test_garbage_and_gateway_types_never_crash_and_are_counted(void **state)
{
	struct gw_peer p = peer_of(9, 5555);
	uint8_t buf[2048];
	uint64_t x = 12345;
	struct cli c;
	struct tg_msg m;

	(void)state;
	cli_open(&c, 0, 2);
	for (unsigned i = 0; i < 20000; i++) {
		size_t len = i % 300;

		for (size_t k = 0; k < len; k++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			buf[k] = (uint8_t)(x >> 56);
		}
		/* Half of them look like ours so the body parsers get exercised. */
		if (len >= 16 && i % 2) {
			buf[0] = 0x54;
			buf[1] = 0x47;
			buf[2] = 1;
			buf[3] = (uint8_t)(1 + i % 22);
			buf[4] = buf[5] = 0;
			buf[6] = (uint8_t)((len - 16) >> 8);
			buf[7] = (uint8_t)(len - 16);
			if (i % 4 == 1)
				memcpy(buf + 8, &(uint64_t){ __builtin_bswap64(c.token) }, 8);
		}
		raw_send(&p, buf, len);
		if (i % 64 == 0) {
			now++;
			pump();
			out_clear();
		}
	}
	/* A gateway-to-client packet type is dropped as out of state. */
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_PONG;
	m.hdr.token = c.token;
	cli_send(&c, &m);
	assert_true(cnt.drops[GW_DROP_BAD_STATE] >= 1);
	assert_true(cnt.drops[GW_DROP_CODEC] > 10000);
	/* The session still works. */
	out_clear();
	cli_simple(&c, TG_MSG_PING);
	expect(TG_MSG_PONG, &m);
}

static void test_bad_token_gets_rate_limited_bad_session(void **state)
{
	struct gw_peer p = peer_of(9, 5555);
	uint8_t buf[64];
	size_t n = build_ping(buf, 0xdeadbeef);
	unsigned errors = 0;
	struct tg_msg m;

	(void)state;
	for (unsigned i = 0; i < 200; i++)
		raw_send(&p, buf, n);
	while (out_next(&m)) {
		assert_int_equal(m.hdr.type, TG_MSG_ERROR);
		assert_int_equal(m.u.error.code, TG_ERR_BAD_SESSION);
		assert_int_equal(m.hdr.token, 0xdeadbeef);
		errors++;
	}
	assert_int_equal(cnt.drops[GW_DROP_BAD_SESSION], 200);
	assert_true(errors >= 1 && errors < 200);
	assert_int_equal(cnt.drops[GW_DROP_RATE], 200 - errors);
	assert_int_equal(cnt.err_sent[TG_ERR_BAD_SESSION], errors);
	/* The bucket refills with time. */
	now += 2000;
	raw_send(&p, buf, n);
	expect(TG_MSG_ERROR, &m);
}

/* ---- org updates, bounds, timers, shutdown ---- */

static void push_org_update(unsigned o, uint8_t st)
{
	struct gw_job *j = calloc(1, sizeof(*j));

	assert_non_null(j);
	j->type = GW_JOB_ORG_UPDATE;
	j->org = svc->orgs[o].org;
	j->u.upd.state = st;
	done_push(j);
}

static void test_org_deactivation_closes_its_sessions_only(void **state)
{
	struct cli a1, a2, b;
	struct tg_msg m;
	unsigned closes = 0;

	(void)state;
	cli_open(&a1, 0, 2);
	cli_open(&a2, 0, 3);
	cli_open(&b, 1, 4);
	assert_int_equal(cnt.sessions_active, 3);
	push_org_update(0, GW_ORG_DEACTIVATED);
	pump();
	while (out_next(&m)) {
		assert_int_equal(m.hdr.type, TG_MSG_CLOSE);
		assert_int_equal(m.u.close.reason, TG_ERR_ORG_DEACTIVATED);
		assert_true(m.hdr.token == a1.token || m.hdr.token == a2.token);
		closes++;
	}
	assert_int_equal(closes, 2);
	assert_int_equal(cnt.sessions_active, 1);
	cli_simple(&a1, TG_MSG_PING);
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_BAD_SESSION);
	cli_simple(&b, TG_MSG_PING);
	expect(TG_MSG_PONG, &m);
}

static void test_device_release_closes_its_sessions_with_bad_key(void **state)
{
	struct gw_job *j = calloc(1, sizeof(*j));
	struct cli a, b;
	struct tg_msg m;

	(void)state;
	cli_open(&a, 0, 2);
	cli_open(&b, 0, 3);
	assert_non_null(j);
	j->type = GW_JOB_ORG_UPDATE;
	j->org = svc->orgs[0].org;
	j->u.upd.state = GW_ORG_ACTIVE;
	j->u.upd.has_device = true;
	memcpy(j->u.upd.device, a.device, 16);
	done_push(j);
	pump();
	expect(TG_MSG_CLOSE, &m);
	assert_int_equal(m.hdr.token, a.token);
	assert_int_equal(m.u.close.reason, TG_ERR_BAD_KEY);
	assert_null(out_next(&m));
	cli_simple(&b, TG_MSG_PING);
	expect(TG_MSG_PONG, &m);
}

static void test_policy_update_applies_to_chunks_completed_afterwards(void **state)
{
	struct tg_chunk_id id1, id2;
	uint8_t *b1 = chunk_make(3000, 80, &id1), *b2 = chunk_make(3000, 81, &id2);
	struct gw_job *j = calloc(1, sizeof(*j));
	struct cli c;

	(void)state;
	cli_open(&c, 0, 2);
	assert_int_equal(cli_store(&c, b1, 3000, &id1), TG_OK);
	assert_false(svc->last_store_policy.k);
	assert_non_null(j);
	j->type = GW_JOB_ORG_UPDATE;
	j->org = svc->orgs[0].org;
	j->u.upd.has_policy = true;
	assert_int_equal(tg_policy_parse("compress+ec:2+1", &j->u.upd.policy), 0);
	done_push(j);
	pump();
	assert_null(out_next(&(struct tg_msg){ 0 }));
	/* One shard dir holds no 2+1 object: the store fails, but with the new policy. */
	cli_store(&c, b2, 3000, &id2);
	assert_int_equal(svc->last_store_policy.k, 2);
	assert_int_equal(svc->last_store_policy.m, 1);
	free(b1);
	free(b2);
}

static void test_memory_and_slot_bounds_drop_and_count(void **state)
{
	/* 200000-byte chunks take a 256 KiB buffer, 1000-byte ones 64 KiB. */
	const size_t bigcap = (256u << 10) + 1024, tinycap = (64u << 10) + 1024;
	const struct tg_reasm_cfg small = {
		.mem_total = 4 * bigcap + 1000,
		.mem_per_session = 2 * bigcap + 1000,
		.slots_per_session = 3,
		.max_chunk = 256u << 10,
	};
	struct tg_chunk_id ids[9];
	uint8_t *bufs[9];
	uint32_t big = 200000, tiny = 1000;
	struct cli c1, c2, c3;

	(void)state;
	(void)tinycap;
	gw_engine_destroy(eng);
	svc->info.max_chunk = 256u << 10;
	engine_up(&small, NSESS);
	cli_open(&c1, 0, 2);
	cli_open(&c2, 0, 3);
	cli_open(&c3, 0, 4);
	for (unsigned i = 0; i < 9; i++)
		bufs[i] = chunk_make(i < 5 ? big : tiny, 40 + i, &ids[i]);
	/* c1: two big chunks open, the third breaks the session's byte bound. */
	cli_frag_i(&c1, bufs[0], big, &ids[0], 0);
	cli_frag_i(&c1, bufs[1], big, &ids[1], 0);
	cli_frag_i(&c1, bufs[2], big, &ids[2], 0);
	assert_int_equal(cnt.ra[TG_RA_DROP_SESS_MEM], 1);
	/* c2: three small chunks fill its slots; the fourth has bytes but no slot. */
	for (unsigned i = 5; i < 9; i++)
		cli_frag_i(&c2, bufs[i], tiny, &ids[i], 0);
	assert_int_equal(cnt.ra[TG_RA_DROP_SLOTS], 1);
	/* c3: one big fits the worker's total, a second does not. */
	cli_frag_i(&c3, bufs[3], big, &ids[3], 0);
	cli_frag_i(&c3, bufs[4], big, &ids[4], 0);
	assert_int_equal(cnt.ra[TG_RA_DROP_MEM], 1);
	/* A fragment longer than the session's frag_size. */
	cli_frag(&c1, bufs[0], big, &ids[0], 0, 2048, false);
	assert_int_equal(cnt.ra[TG_RA_DROP_RANGE], 1);
	assert_int_equal(cnt.drops[GW_DROP_REASM], 4);
	/* A closed session gives its memory back: c3's second chunk now opens. */
	cli_simple(&c1, TG_MSG_CLOSE);
	assert_int_equal(cnt.sessions_closed, 1);
	cli_frag_i(&c3, bufs[4], big, &ids[4], 0);
	assert_int_equal(cnt.ra[TG_RA_DROP_MEM], 1);
	assert_int_equal(cnt.drops[GW_DROP_REASM], 4);
	for (unsigned i = 0; i < 9; i++)
		free(bufs[i]);
}

static void test_idle_session_freed_after_60_seconds(void **state)
{
	struct cli c, d;
	struct tg_msg m;

	(void)state;
	cli_open(&c, 0, 2);
	cli_open(&d, 0, 3);
	now += 30000;
	cli_simple(&d, TG_MSG_PING); /* d stays alive */
	out_clear();
	now += 30001;
	for (unsigned i = 0; i < NSESS; i++)
		pump();
	assert_int_equal(cnt.sessions_active, 1);
	cli_simple(&c, TG_MSG_PING);
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_BAD_SESSION);
	cli_simple(&d, TG_MSG_PING);
	expect(TG_MSG_PONG, &m);
}

static void test_full_service_ring_sheds_and_counts(void **state)
{
	uint8_t cookie[16];
	struct tg_chunk_id id;
	uint32_t len = 3000;
	uint8_t *b = chunk_make(len, 50, &id);
	struct cli c;
	struct tg_msg m;

	(void)state;
	cli_open(&c, 0, 2);
	svc->full = true;
	cli_offer(&c, 1, &id, &len, 1);
	assert_int_equal(cnt.drops[GW_DROP_OVERLOAD], 1);
	cli_upload(&c, b, len, &id);
	assert_int_equal(cnt.drops[GW_DROP_OVERLOAD], 2);
	/* The shed chunk is forgotten, so a PING shows no SACK for it. */
	cli_simple(&c, TG_MSG_PING);
	expect(TG_MSG_PONG, &m);
	cli_hello(&c, SVC_FRAG, cookie);
	cli_auth_send(&c, SVC_FRAG, cookie);
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_OVERLOADED);
	svc->full = false;
	assert_int_equal(cli_store(&c, b, len, &id), TG_OK);
	free(b);
}

/* A session closed while its chunk is at the store keeps the buffer (ASan
 * would catch a use after free in the store job). */
static void test_closed_session_waits_as_zombie_for_its_jobs(void **state)
{
	uint32_t len = 500000;
	struct tg_chunk_id id;
	uint8_t *b = chunk_make(len, 60, &id);
	struct cli c;
	struct tg_msg m;

	(void)state;
	cli_open(&c, 0, 2);
	svc->hold = true;
	cli_upload(&c, b, len, &id);
	cli_simple(&c, TG_MSG_CLOSE);
	assert_int_equal(cnt.sessions_active, 0);
	cli_simple(&c, TG_MSG_PING);
	expect(TG_MSG_ERROR, &m);
	/* The store runs now and reads the zombie's buffer. */
	svc->hold = false;
	svc_run();
	pump();
	assert_int_equal(out_count_type(TG_MSG_ACK), 0);
	assert_int_equal(tg_store_exists(svc->st, &c.org, &id), 1);
	/* The slot is free again. */
	for (unsigned i = 0; i < NSESS; i++) {
		struct cli k;

		cli_open(&k, 0, 10 + i);
	}
	assert_int_equal(cnt.sessions_active, NSESS);
	free(b);
}

static void test_shutdown_refuses_handshakes_drains_then_closes(void **state)
{
	uint32_t len = 50000;
	struct tg_chunk_id id;
	uint8_t *b = chunk_make(len, 70, &id);
	struct tg_msg m;
	struct cli c;
	bool saw_ack = false, saw_close = false;

	(void)state;
	cli_open(&c, 0, 2);
	svc->hold = true;
	cli_upload(&c, b, len, &id);
	gw_engine_stop_admitting(eng);
	memset(&m, 0, sizeof(m));
	m.hdr.type = TG_MSG_HELLO;
	m.u.hello.max_frag = 1408;
	memset(m.u.hello.client_nonce, 0x33, 16);
	cli_send(&c, &m);
	expect(TG_MSG_ERROR, &m);
	assert_int_equal(m.u.error.code, TG_ERR_OVERLOADED);
	assert_false(gw_engine_drained(eng, now));
	assert_false(gw_engine_drained(eng, now));
	svc_run();
	assert_true(gw_engine_drained(eng, now));
	while (out_next(&m)) {
		if (m.hdr.type == TG_MSG_ACK) {
			assert_false(saw_close);
			assert_int_equal(m.u.ack.credits, 0); /* paused */
			saw_ack = true;
		} else if (m.hdr.type == TG_MSG_CLOSE) {
			assert_int_equal(m.u.close.reason, TG_ERR_OVERLOADED);
			saw_close = true;
		}
	}
	assert_true(saw_ack);
	assert_true(saw_close);
	assert_int_equal(cnt.sessions_active, 0);
	assert_true(gw_engine_drained(eng, now));
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_register_good_key_delivers_credential_that_opens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register_wrong_key_gets_bad_key_with_client_nonce, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reg_init_for_another_provider_gets_unknown_org, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_or_forged_cookie_rechallenged_without_a_job, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_ok_carries_negotiated_parameters_and_valid_mac, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_of_deactivated_org_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_offer_need_answers_from_own_org_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_out_of_order_acked_only_after_store_returned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_ack_repaired_when_chunk_data_arrives_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_sacks_from_first_missing_unit_then_pong, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backup_end_retransmission_gets_same_backup_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_get_serves_original_bytes_with_d_tags_paced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sack_after_buffer_recycled_rereads_and_sends_only_gaps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_codec_reject_counted_and_only_version_answered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_and_gateway_types_never_crash_and_are_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_token_gets_rate_limited_bad_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_org_deactivation_closes_its_sessions_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_device_release_closes_its_sessions_with_bad_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policy_update_applies_to_chunks_completed_afterwards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_and_slot_bounds_drop_and_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_session_freed_after_60_seconds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_service_ring_sheds_and_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_closed_session_waits_as_zombie_for_its_jobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_refuses_handshakes_drains_then_closes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
