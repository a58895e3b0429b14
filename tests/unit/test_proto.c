/*
 * test_proto.c - the wire codec (dataplane/proto.c) against the v1 layout.
 *
 * The test carries its own small, deliberately naive encoder (raw_encode)
 * written straight from the wire layout rules: big-endian, fields in
 * declaration order, no validation. It is the second, independent reading
 * of the spec: the codec's builder must produce the same bytes for every
 * valid message, and the parser must reject what raw_encode produces from
 * an invalid one. A seeded mutation loop then throws 200k damaged packets at
 * the parser; under ASan each parse runs on an exactly-sized heap copy, so
 * any read past the datagram is caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tg_proto.h"

#define NTYPES (TG_MSG__MAX - 1)
#define VAR_CAP 16384u
#define TOKEN_A 0x1122334455667788ull

/* A message and the storage its variable part points into. */
struct fx {
	struct tg_msg m;
	uint8_t var[VAR_CAP];
};

/* Fixed body sizes from the wire layout rules, indexed by type. */
static const uint16_t wire_fixed[TG_MSG__MAX] = {
	[TG_MSG_REG_INIT] = 44, [TG_MSG_REG_CHALLENGE] = 64, [TG_MSG_REG_PROOF] = 108,
	[TG_MSG_REG_OK] = 96, [TG_MSG_HELLO] = 36, [TG_MSG_CHALLENGE] = 48,
	[TG_MSG_AUTH] = 100, [TG_MSG_SESSION_OK] = 68, [TG_MSG_OFFER] = 6,
	[TG_MSG_NEED] = 6, [TG_MSG_DATA] = 40, [TG_MSG_ACK] = 8, [TG_MSG_SACK] = 26,
	[TG_MSG_BACKUP_END] = 34, [TG_MSG_BACKUP_DONE] = 26, [TG_MSG_RESTORE_REQ] = 26,
	[TG_MSG_RESTORE_OK] = 44, [TG_MSG_GET] = 2, [TG_MSG_ERROR] = 24, [TG_MSG_CLOSE] = 2,
	[TG_MSG_PING] = 8, [TG_MSG_PONG] = 14,
};

static bool token_zero_type(unsigned t)
{
	return t >= TG_MSG_REG_INIT && t <= TG_MSG_SESSION_OK;
}

/* ---- an independent encoder, straight from the layout rules ---- */

static void put(uint8_t **p, const void *src, size_t n)
{
	if (n)
		memcpy(*p, src, n);
	*p += n;
}

static void put_be(uint8_t **p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		(*p)[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	*p += n;
}

#define P(x, n) put(&p, (x), (n))
#define PA(x) put(&p, (x), sizeof(x))
#define P16(v) put_be(&p, (v), 2)
#define P32(v) put_be(&p, (v), 4)
#define P64(v) put_be(&p, (v), 8)

static size_t raw_encode(const struct tg_msg *m, uint8_t *out)
{
	const uint8_t *body = out + TG_HDR_LEN;
	uint8_t *p = out + TG_HDR_LEN;
	uint8_t *h = out;
	size_t paylen;

	switch (m->hdr.type) {
	case TG_MSG_REG_INIT: {
		const struct tg_reg_init *r = &m->u.reg_init;

		PA(r->provider_guid); PA(r->key_id); PA(r->client_nonce);
		P16(r->flags); P16(r->name_len); P(r->name, r->name_len);
		break;
	}
	case TG_MSG_REG_CHALLENGE: {
		const struct tg_reg_challenge *r = &m->u.reg_challenge;

		PA(r->client_nonce); PA(r->server_nonce); PA(r->salt); PA(r->cookie);
		break;
	}
	case TG_MSG_REG_PROOF: {
		const struct tg_reg_proof *r = &m->u.reg_proof;

		PA(r->provider_guid); PA(r->key_id); PA(r->client_nonce);
		PA(r->server_nonce); PA(r->cookie); P16(r->flags); P16(r->name_len);
		PA(r->proof); P(r->name, r->name_len);
		break;
	}
	case TG_MSG_REG_OK: {
		const struct tg_reg_ok *r = &m->u.reg_ok;

		PA(r->client_nonce); PA(r->org_guid); PA(r->device_id);
		PA(r->wrapped_cred); PA(r->wrap_tag);
		break;
	}
	case TG_MSG_HELLO: {
		const struct tg_hello *r = &m->u.hello;

		PA(r->device_id); PA(r->client_nonce); P16(r->max_frag); P16(r->flags);
		break;
	}
	case TG_MSG_CHALLENGE: {
		const struct tg_challenge *r = &m->u.challenge;

		PA(r->client_nonce); PA(r->server_nonce); PA(r->cookie);
		break;
	}
	case TG_MSG_AUTH: {
		const struct tg_auth *r = &m->u.auth;

		PA(r->device_id); PA(r->client_nonce); PA(r->server_nonce); PA(r->cookie);
		P16(r->max_frag); P16(r->flags); PA(r->proof);
		break;
	}
	case TG_MSG_SESSION_OK: {
		const struct tg_session_ok *r = &m->u.session_ok;

		PA(r->client_nonce); P64(r->token); PA(r->org_guid); P16(r->frag_size);
		P16(r->credits); P32(r->credit_bytes); P32(r->max_chunk); PA(r->mac);
		break;
	}
	case TG_MSG_OFFER:
		P32(m->u.offer.offer_seq); P16(m->u.offer.count);
		P(m->u.offer.entries, (size_t)m->u.offer.count * 20);
		break;
	case TG_MSG_NEED:
		P32(m->u.need.offer_seq); P16(m->u.need.count);
		P(m->u.need.bitmap, (m->u.need.count + 7u) / 8);
		break;
	case TG_MSG_DATA: {
		const struct tg_data *r = &m->u.data;

		PA(r->chunk_id); P32(r->chunk_len); P32(r->frag_off); PA(r->tag);
		P(r->payload, r->frag_len);
		break;
	}
	case TG_MSG_ACK:
		P16(m->u.ack.credits); P16(m->u.ack.count); P32(m->u.ack.credit_bytes);
		P(m->u.ack.entries, (size_t)m->u.ack.count * 20);
		break;
	case TG_MSG_SACK: {
		const struct tg_sack *r = &m->u.sack;

		PA(r->chunk_id); P32(r->chunk_len); P32(r->unit_base); P16(r->nunits);
		P(r->bitmap, (r->nunits + 7u) / 8);
		break;
	}
	case TG_MSG_BACKUP_END: {
		const struct tg_backup_end *r = &m->u.backup_end;

		PA(r->root_id); P32(r->root_len); P32(r->nfiles); P64(r->logical_bytes);
		P16(r->name_len); P(r->name, r->name_len);
		break;
	}
	case TG_MSG_BACKUP_DONE:
		PA(m->u.backup_done.root_id); P64(m->u.backup_done.backup_id);
		P16(m->u.backup_done.status);
		break;
	case TG_MSG_RESTORE_REQ:
		PA(m->u.restore_req.device_id); P64(m->u.restore_req.backup_id);
		P16(m->u.restore_req.flags);
		break;
	case TG_MSG_RESTORE_OK: {
		const struct tg_restore_ok *r = &m->u.restore_ok;

		P64(r->backup_id); PA(r->root_id); P32(r->root_len); P64(r->total_bytes);
		P64(r->created);
		break;
	}
	case TG_MSG_GET:
		P16(m->u.get.count); P(m->u.get.ids, (size_t)m->u.get.count * 16);
		break;
	case TG_MSG_ERROR: {
		const struct tg_error *r = &m->u.error;

		P16(r->code); P32(r->detail); PA(r->ref_id); P16(r->msg_len);
		P(r->msg, r->msg_len);
		break;
	}
	case TG_MSG_CLOSE:
		P16(m->u.close.reason);
		break;
	case TG_MSG_PING:
		P64(m->u.ping.nonce);
		break;
	case TG_MSG_PONG:
		P64(m->u.pong.nonce); P16(m->u.pong.credits); P32(m->u.pong.credit_bytes);
		break;
	default:
		break;
	}
	paylen = (size_t)(p - body);
	put_be(&h, TG_PROTO_MAGIC, 2);
	put_be(&h, TG_PROTO_VERSION, 1);
	put_be(&h, m->hdr.type, 1);
	put_be(&h, m->hdr.flags, 2);
	put_be(&h, paylen, 2);
	put_be(&h, m->hdr.token, 8);
	return TG_HDR_LEN + paylen;
}

/* ---- valid fixtures, one per type ---- */

static void fill(void *dst, size_t n, uint8_t seed)
{
	uint8_t *d = dst;

	for (size_t i = 0; i < n; i++)
		d[i] = (uint8_t)(seed * 31u + i * 7u + 1u);
}

/* Byte i of a name area: printable filler so that only the length matters
 * when a test stretches name_len. */
static void fill_text(uint8_t *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		d[i] = (uint8_t)('a' + i % 26);
}

static void set_name(struct fx *f, const char *s, uint16_t *len, const char **ptr)
{
	fill_text(f->var, VAR_CAP);
	memcpy(f->var, s, strlen(s));
	*len = (uint16_t)strlen(s);
	*ptr = (const char *)f->var;
}

static void make_valid(unsigned type, struct fx *f)
{
	struct tg_msg *m = &f->m;

	memset(f, 0, sizeof(*f));
	m->hdr.type = (uint8_t)type;
	m->hdr.token = token_zero_type(type) ? 0 : TOKEN_A;

	switch (type) {
	case TG_MSG_REG_INIT:
		fill(m->u.reg_init.provider_guid, 16, 1);
		fill(m->u.reg_init.key_id, 8, 2);
		fill(m->u.reg_init.client_nonce, 16, 3);
		m->u.reg_init.flags = TG_RF_RELAY;
		/* UTF-8 bytes >= 0x80 are names too. */
		set_name(f, "laptop-01 \xc3\xa9t\xc3\xa9", &m->u.reg_init.name_len,
			 &m->u.reg_init.name);
		break;
	case TG_MSG_REG_CHALLENGE:
		fill(m->u.reg_challenge.client_nonce, 16, 4);
		fill(m->u.reg_challenge.server_nonce, 16, 5);
		fill(m->u.reg_challenge.salt, 16, 6);
		fill(m->u.reg_challenge.cookie, 16, 7);
		break;
	case TG_MSG_REG_PROOF:
		fill(m->u.reg_proof.provider_guid, 16, 8);
		fill(m->u.reg_proof.key_id, 8, 9);
		fill(m->u.reg_proof.client_nonce, 16, 10);
		fill(m->u.reg_proof.server_nonce, 16, 11);
		fill(m->u.reg_proof.cookie, 16, 12);
		fill(m->u.reg_proof.proof, 32, 13);
		m->u.reg_proof.flags = 0;
		set_name(f, "srv-backup", &m->u.reg_proof.name_len, &m->u.reg_proof.name);
		break;
	case TG_MSG_REG_OK:
		fill(m->u.reg_ok.client_nonce, 16, 14);
		fill(m->u.reg_ok.org_guid, 16, 15);
		fill(m->u.reg_ok.device_id, 16, 16);
		fill(m->u.reg_ok.wrapped_cred, 32, 17);
		fill(m->u.reg_ok.wrap_tag, 16, 18);
		break;
	case TG_MSG_HELLO:
		fill(m->u.hello.device_id, 16, 19);
		fill(m->u.hello.client_nonce, 16, 20);
		m->u.hello.max_frag = 1408;
		m->u.hello.flags = TG_RF_RELAY;
		break;
	case TG_MSG_CHALLENGE:
		fill(m->u.challenge.client_nonce, 16, 21);
		fill(m->u.challenge.server_nonce, 16, 22);
		fill(m->u.challenge.cookie, 16, 23);
		break;
	case TG_MSG_AUTH:
		fill(m->u.auth.device_id, 16, 24);
		fill(m->u.auth.client_nonce, 16, 25);
		fill(m->u.auth.server_nonce, 16, 26);
		fill(m->u.auth.cookie, 16, 27);
		m->u.auth.max_frag = TG_FRAG_MAX;
		m->u.auth.flags = 0;
		fill(m->u.auth.proof, 32, 28);
		break;
	case TG_MSG_SESSION_OK:
		fill(m->u.session_ok.client_nonce, 16, 29);
		m->u.session_ok.token = 0xa1b2c3d4e5f60718ull;
		fill(m->u.session_ok.org_guid, 16, 30);
		m->u.session_ok.frag_size = 1408;
		m->u.session_ok.credits = 0x0102;
		m->u.session_ok.credit_bytes = 0x00801234;
		m->u.session_ok.max_chunk = TG_CHUNK_MAX;
		fill(m->u.session_ok.mac, 16, 31);
		break;
	case TG_MSG_OFFER:
		m->u.offer.offer_seq = 0x01020304;
		m->u.offer.count = 3;
		/* All TG_OFFER_MAX slots valid so that count alone can be raised. */
		for (unsigned i = 0; i < TG_OFFER_MAX; i++) {
			struct tg_chunk_ref r;

			fill(r.id, 16, (uint8_t)(40 + i));
			r.len = i == 0 ? 1 : i == 2 ? TG_CHUNK_MAX : 0x00123456u + i;
			tg_offer_entry_put(f->var, i, &r);
		}
		m->u.offer.entries = f->var;
		break;
	case TG_MSG_NEED:
		m->u.need.offer_seq = 0x0a0b0c0d;
		m->u.need.count = 11;
		f->var[0] = 0xa5;
		f->var[1] = 0x05; /* bits 8 and 10; bits 11..15 must stay 0 */
		m->u.need.bitmap = f->var;
		break;
	case TG_MSG_DATA:
		fill(m->u.data.chunk_id, 16, 32);
		m->u.data.chunk_len = 1048867; /* 16389 units, last one partial */
		m->u.data.frag_off = 66 * TG_FRAG_UNIT;
		fill(m->u.data.tag, 16, 33);
		m->u.data.frag_len = 1408;
		fill(f->var, VAR_CAP, 34);
		m->u.data.payload = f->var;
		break;
	case TG_MSG_ACK:
		m->u.ack.credits = 7;
		m->u.ack.count = 2;
		m->u.ack.credit_bytes = 0x01020304;
		for (unsigned i = 0; i < TG_OFFER_MAX; i++) {
			struct tg_ack_entry e;

			fill(e.id, 16, (uint8_t)(110 + i));
			e.status = i == 1 ? TG_ERR_DUP : i == 2 ? TG_ERR_QUOTA_EXCEEDED : TG_OK;
			tg_ack_entry_put(f->var, i, &e);
		}
		m->u.ack.entries = f->var;
		break;
	case TG_MSG_SACK:
		fill(m->u.sack.chunk_id, 16, 35);
		m->u.sack.chunk_len = 1048867;
		m->u.sack.unit_base = 0x100;
		m->u.sack.nunits = 20;
		memset(f->var, 0xff, VAR_CAP);
		f->var[0] = 0x5a;
		f->var[1] = 0xc3;
		f->var[2] = 0x09; /* bits 16..19 only */
		m->u.sack.bitmap = f->var;
		break;
	case TG_MSG_BACKUP_END:
		fill(m->u.backup_end.root_id, 16, 36);
		m->u.backup_end.root_len = 0x1234;
		m->u.backup_end.nfiles = 0x01020304;
		m->u.backup_end.logical_bytes = 0x0102030405060708ull;
		set_name(f, "nightly 2024-05-01", &m->u.backup_end.name_len,
			 &m->u.backup_end.name);
		break;
	case TG_MSG_BACKUP_DONE:
		fill(m->u.backup_done.root_id, 16, 37);
		m->u.backup_done.backup_id = 0x1112131415161718ull;
		m->u.backup_done.status = TG_OK;
		break;
	case TG_MSG_RESTORE_REQ:
		fill(m->u.restore_req.device_id, 16, 38);
		m->u.restore_req.backup_id = 0x2122232425262728ull;
		m->u.restore_req.flags = TG_RF_ADMIN | TG_RF_LATEST;
		break;
	case TG_MSG_RESTORE_OK:
		m->u.restore_ok.backup_id = 0x3132333435363738ull;
		fill(m->u.restore_ok.root_id, 16, 39);
		m->u.restore_ok.root_len = 0x00010203;
		m->u.restore_ok.total_bytes = 0x0000010203040506ull;
		m->u.restore_ok.created = 1714521600;
		break;
	case TG_MSG_GET:
		m->u.get.count = 3;
		fill(f->var, VAR_CAP, 40);
		m->u.get.ids = f->var;
		break;
	case TG_MSG_ERROR:
		m->u.error.code = TG_ERR_QUOTA_EXCEEDED;
		m->u.error.detail = 0x01020304;
		fill(m->u.error.ref_id, 16, 41);
		set_name(f, "quota exceeded: 100% of 500 GiB", &m->u.error.msg_len,
			 &m->u.error.msg);
		break;
	case TG_MSG_CLOSE:
		m->u.close.reason = TG_ERR_OVERLOADED;
		break;
	case TG_MSG_PING:
		m->u.ping.nonce = 0x4142434445464748ull;
		break;
	case TG_MSG_PONG:
		m->u.pong.nonce = 0x5152535455565758ull;
		m->u.pong.credits = 0x0203;
		m->u.pong.credit_bytes = 0x04050607;
		break;
	default:
		fail_msg("no fixture for type %u", type);
	}
}

/* Bytes of the variable part of a (valid) message. */
static size_t var_len(const struct tg_msg *m)
{
	switch (m->hdr.type) {
	case TG_MSG_REG_INIT: return m->u.reg_init.name_len;
	case TG_MSG_REG_PROOF: return m->u.reg_proof.name_len;
	case TG_MSG_OFFER: return (size_t)m->u.offer.count * 20;
	case TG_MSG_NEED: return (m->u.need.count + 7u) / 8;
	case TG_MSG_DATA: return m->u.data.frag_len;
	case TG_MSG_ACK: return (size_t)m->u.ack.count * 20;
	case TG_MSG_SACK: return (m->u.sack.nunits + 7u) / 8;
	case TG_MSG_BACKUP_END: return m->u.backup_end.name_len;
	case TG_MSG_GET: return (size_t)m->u.get.count * 16;
	case TG_MSG_ERROR: return m->u.error.msg_len;
	default: return 0;
	}
}

/* The count or length field that sizes the variable part. */
static unsigned var_n(const struct tg_msg *m)
{
	switch (m->hdr.type) {
	case TG_MSG_OFFER: return m->u.offer.count;
	case TG_MSG_NEED: return m->u.need.count;
	case TG_MSG_ACK: return m->u.ack.count;
	case TG_MSG_SACK: return m->u.sack.nunits;
	case TG_MSG_GET: return m->u.get.count;
	default: return (unsigned)var_len(m); /* names: one byte each */
	}
}

/* Pointer to the variable part (NULL for fixed-only types). */
static const void *var_ptr(const struct tg_msg *m)
{
	switch (m->hdr.type) {
	case TG_MSG_REG_INIT: return m->u.reg_init.name;
	case TG_MSG_REG_PROOF: return m->u.reg_proof.name;
	case TG_MSG_OFFER: return m->u.offer.entries;
	case TG_MSG_NEED: return m->u.need.bitmap;
	case TG_MSG_DATA: return m->u.data.payload;
	case TG_MSG_ACK: return m->u.ack.entries;
	case TG_MSG_SACK: return m->u.sack.bitmap;
	case TG_MSG_BACKUP_END: return m->u.backup_end.name;
	case TG_MSG_GET: return m->u.get.ids;
	case TG_MSG_ERROR: return m->u.error.msg;
	default: return NULL;
	}
}

/* ---- field-by-field equality ---- */

#define EQI(t, f) assert_int_equal(a->u.t.f, b->u.t.f)
#define EQB(t, f) assert_memory_equal(a->u.t.f, b->u.t.f, sizeof(a->u.t.f))

static void assert_msg_equal(const struct tg_msg *a, const struct tg_msg *b)
{
	size_t vl = var_len(a);

	assert_int_equal(a->hdr.type, b->hdr.type);
	assert_int_equal(a->hdr.flags, b->hdr.flags);
	assert_true(a->hdr.token == b->hdr.token);
	assert_int_equal(var_len(a), var_len(b));
	if (vl)
		assert_memory_equal(var_ptr(a), var_ptr(b), vl);

	switch (a->hdr.type) {
	case TG_MSG_REG_INIT:
		EQB(reg_init, provider_guid); EQB(reg_init, key_id);
		EQB(reg_init, client_nonce); EQI(reg_init, flags); EQI(reg_init, name_len);
		break;
	case TG_MSG_REG_CHALLENGE:
		EQB(reg_challenge, client_nonce); EQB(reg_challenge, server_nonce);
		EQB(reg_challenge, salt); EQB(reg_challenge, cookie);
		break;
	case TG_MSG_REG_PROOF:
		EQB(reg_proof, provider_guid); EQB(reg_proof, key_id);
		EQB(reg_proof, client_nonce); EQB(reg_proof, server_nonce);
		EQB(reg_proof, cookie); EQI(reg_proof, flags); EQI(reg_proof, name_len);
		EQB(reg_proof, proof);
		break;
	case TG_MSG_REG_OK:
		EQB(reg_ok, client_nonce); EQB(reg_ok, org_guid); EQB(reg_ok, device_id);
		EQB(reg_ok, wrapped_cred); EQB(reg_ok, wrap_tag);
		break;
	case TG_MSG_HELLO:
		EQB(hello, device_id); EQB(hello, client_nonce); EQI(hello, max_frag);
		EQI(hello, flags);
		break;
	case TG_MSG_CHALLENGE:
		EQB(challenge, client_nonce); EQB(challenge, server_nonce);
		EQB(challenge, cookie);
		break;
	case TG_MSG_AUTH:
		EQB(auth, device_id); EQB(auth, client_nonce); EQB(auth, server_nonce);
		EQB(auth, cookie); EQI(auth, max_frag); EQI(auth, flags); EQB(auth, proof);
		break;
	case TG_MSG_SESSION_OK:
		EQB(session_ok, client_nonce); EQI(session_ok, token);
		EQB(session_ok, org_guid); EQI(session_ok, frag_size);
		EQI(session_ok, credits); EQI(session_ok, credit_bytes);
		EQI(session_ok, max_chunk); EQB(session_ok, mac);
		break;
	case TG_MSG_OFFER:
		EQI(offer, offer_seq); EQI(offer, count);
		for (unsigned i = 0; i < a->u.offer.count; i++) {
			struct tg_chunk_ref ra, rb;

			tg_offer_entry(&a->u.offer, i, &ra);
			tg_offer_entry(&b->u.offer, i, &rb);
			assert_memory_equal(ra.id, rb.id, 16);
			assert_int_equal(ra.len, rb.len);
		}
		break;
	case TG_MSG_NEED:
		EQI(need, offer_seq); EQI(need, count);
		break;
	case TG_MSG_DATA:
		EQB(data, chunk_id); EQI(data, chunk_len); EQI(data, frag_off);
		EQB(data, tag); EQI(data, frag_len);
		break;
	case TG_MSG_ACK:
		EQI(ack, credits); EQI(ack, count); EQI(ack, credit_bytes);
		for (unsigned i = 0; i < a->u.ack.count; i++) {
			struct tg_ack_entry ea, eb;

			tg_ack_entry(&a->u.ack, i, &ea);
			tg_ack_entry(&b->u.ack, i, &eb);
			assert_memory_equal(ea.id, eb.id, 16);
			assert_int_equal(ea.status, eb.status);
		}
		break;
	case TG_MSG_SACK:
		EQB(sack, chunk_id); EQI(sack, chunk_len); EQI(sack, unit_base);
		EQI(sack, nunits);
		break;
	case TG_MSG_BACKUP_END:
		EQB(backup_end, root_id); EQI(backup_end, root_len); EQI(backup_end, nfiles);
		EQI(backup_end, logical_bytes); EQI(backup_end, name_len);
		break;
	case TG_MSG_BACKUP_DONE:
		EQB(backup_done, root_id); EQI(backup_done, backup_id);
		EQI(backup_done, status);
		break;
	case TG_MSG_RESTORE_REQ:
		EQB(restore_req, device_id); EQI(restore_req, backup_id);
		EQI(restore_req, flags);
		break;
	case TG_MSG_RESTORE_OK:
		EQI(restore_ok, backup_id); EQB(restore_ok, root_id);
		EQI(restore_ok, root_len); EQI(restore_ok, total_bytes);
		EQI(restore_ok, created);
		break;
	case TG_MSG_GET:
		EQI(get, count);
		break;
	case TG_MSG_ERROR:
		EQI(error, code); EQI(error, detail); EQB(error, ref_id); EQI(error, msg_len);
		break;
	case TG_MSG_CLOSE:
		EQI(close, reason);
		break;
	case TG_MSG_PING:
		EQI(ping, nonce);
		break;
	case TG_MSG_PONG:
		EQI(pong, nonce); EQI(pong, credits); EQI(pong, credit_bytes);
		break;
	default:
		fail();
	}
}

/* Parse an exactly-sized heap copy, so that ASan sees any over-read. */
static enum tg_perr parse_exact(const uint8_t *pkt, size_t len, struct tg_msg *out,
				uint8_t **keep)
{
	uint8_t *copy = malloc(len ? len : 1);
	enum tg_perr e;

	assert_non_null(copy);
	if (len)
		memcpy(copy, pkt, len);
	e = tg_proto_parse(copy, len, out);
	if (keep)
		*keep = copy;
	else
		free(copy);
	return e;
}

static void set_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* ---- round trips and layout ---- */

static struct fx g_fx; /* large: keep off the stack */
static uint8_t g_pkt[70000], g_pkt2[70000];

static void test_every_type_round_trips_with_variable_parts(void **state)
{
	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		struct tg_msg out;
		uint8_t *copy;
		ssize_t n;

		make_valid(t, &g_fx);
		n = tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		assert_true(n > 0);
		assert_int_equal(parse_exact(g_pkt, (size_t)n, &out, &copy), TG_PERR_OK);
		assert_msg_equal(&g_fx.m, &out);
		/* Zero-copy: the variable part points into the packet itself. */
		if (var_ptr(&out))
			assert_ptr_equal(var_ptr(&out), copy + TG_HDR_LEN + wire_fixed[t]);
		free(copy);
	}
}

static void test_builder_bytes_match_the_wire_layout_rules(void **state)
{
	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		size_t rn;
		ssize_t n;

		make_valid(t, &g_fx);
		n = tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		rn = raw_encode(&g_fx.m, g_pkt2);
		assert_int_equal(n, rn);
		assert_int_equal(rn, TG_HDR_LEN + wire_fixed[t] + var_len(&g_fx.m));
		assert_memory_equal(g_pkt, g_pkt2, rn);
	}
}

static void test_header_is_big_endian_magic_version_type_flags_paylen_token(void **state)
{
	static const uint8_t want[] = {
		0x54, 0x47, 0x01, 0x15, 0x00, 0x00, 0x00, 0x08,
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
	};
	struct tg_msg m = { .hdr = { .type = TG_MSG_PING, .token = 0x0102030405060708ull } };
	struct tg_hdr h;
	uint8_t buf[64];

	m.u.ping.nonce = 0x1112131415161718ull;
	assert_int_equal(tg_proto_build(buf, sizeof(buf), &m), sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(tg_proto_parse_hdr(buf, sizeof(want), &h), TG_PERR_OK);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.type, TG_MSG_PING);
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.paylen, 8);
	assert_true(h.token == 0x0102030405060708ull);
}

static void test_entry_accessors_round_trip_and_zero_reserved(void **state)
{
	uint8_t ent[3 * 20];
	struct tg_ack_entry ae = { .status = TG_ERR_DUP }, ao;
	struct tg_chunk_ref r = { .len = 0x00345678 }, ro;
	struct tg_offer o = { .count = 2, .entries = ent };
	struct tg_ack a = { .count = 2, .entries = ent };

	memset(ent, 0xee, sizeof(ent));
	fill(r.id, 16, 90);
	tg_offer_entry_put(ent, 1, &r);
	tg_offer_entry(&o, 1, &ro);
	assert_memory_equal(ro.id, r.id, 16);
	assert_int_equal(ro.len, 0x00345678);
	assert_memory_equal(ent + 20 + 16, "\x00\x34\x56\x78", 4);
	/* Out of range reads nothing and hands back zeros. */
	tg_offer_entry(&o, 2, &ro);
	assert_int_equal(ro.len, 0);

	memset(ent, 0xee, sizeof(ent));
	fill(ae.id, 16, 91);
	tg_ack_entry_put(ent, 0, &ae);
	assert_memory_equal(ent + 16, "\x00\x10\x00\x00", 4);
	tg_ack_entry(&a, 0, &ao);
	assert_memory_equal(ao.id, ae.id, 16);
	assert_int_equal(ao.status, TG_ERR_DUP);
	tg_ack_entry(&a, 5, &ao);
	assert_int_equal(ao.status, 0);
}

static void test_names_of_reasons_and_errors(void **state)
{
	const char *seen[TG_PERR__MAX + TG_ERR__MAX];
	unsigned ns = 0;

	assert_string_equal(tg_err_name(TG_ERR_BAD_KEY), "bad key");
	assert_string_equal(tg_err_name(TG_ERR_UNKNOWN_ORG), "unknown organization");
	assert_string_equal(tg_err_name(TG_ERR_SEATS_FULL), "seats full");
	assert_string_equal(tg_err_name(TG_ERR_QUOTA_EXCEEDED), "quota exceeded");
	assert_string_equal(tg_err_name(TG_ERR_ORG_DEACTIVATED), "organization deactivated");
	assert_string_equal(tg_err_name(TG_ERR_RESTORE_OVER_LIMIT), "restore over limit");
	assert_string_equal(tg_err_name(TG_ERR_VERSION), "version mismatch");
	assert_string_equal(tg_err_name(TG_ERR_OVERLOADED), "overloaded");
	assert_string_equal(tg_err_name(TG_ERR_UNAVAILABLE), "control plane unavailable");
	assert_string_equal(tg_perr_name(TG_PERR_SHORT), "short");
	assert_string_equal(tg_perr_name(TG_PERR_MAGIC), "magic");
	/* Every value has its own non-empty name; out of range is safe. */
	for (unsigned i = 0; i < TG_PERR__MAX; i++)
		seen[ns++] = tg_perr_name((enum tg_perr)i);
	for (unsigned i = 0; i < TG_ERR__MAX; i++)
		seen[ns++] = tg_err_name((enum tg_err)i);
	for (unsigned i = 0; i < ns; i++) {
		assert_non_null(seen[i]);
		assert_true(seen[i][0] != '\0');
	}
	for (unsigned i = 0; i < TG_PERR__MAX; i++)
		for (unsigned j = i + 1; j < TG_PERR__MAX; j++)
			assert_string_not_equal(seen[i], seen[j]);
	for (unsigned i = TG_PERR__MAX; i < ns; i++)
		for (unsigned j = i + 1; j < ns; j++)
			assert_string_not_equal(seen[i], seen[j]);
	assert_non_null(tg_perr_name(TG_PERR__MAX));
	assert_non_null(tg_perr_name((enum tg_perr)1000));
	assert_non_null(tg_err_name(TG_ERR__MAX));
	assert_non_null(tg_err_name((enum tg_err)-1));
}

/* ---- header rejects ---- */

static void test_truncation_at_every_length_is_rejected(void **state)
{
	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		struct tg_msg out;
		ssize_t n;

		make_valid(t, &g_fx);
		n = tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		assert_true(n > 0);
		for (size_t l = 0; l < (size_t)n; l++)
			assert_int_equal(parse_exact(g_pkt, l, &out, NULL),
					 l < TG_HDR_LEN ? TG_PERR_SHORT : TG_PERR_LEN);
	}
}

/* The body cut short with paylen patched to agree: the body checks alone
 * must notice. Only DATA can legally shrink (a shorter middle fragment). */
static void test_consistently_truncated_bodies_are_rejected(void **state)
{
	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		struct tg_msg out;
		ssize_t n;

		make_valid(t, &g_fx);
		n = tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		for (size_t l = TG_HDR_LEN; l < (size_t)n; l++) {
			enum tg_perr e;

			memcpy(g_pkt2, g_pkt, l);
			set_be16(g_pkt2 + 6, (uint16_t)(l - TG_HDR_LEN));
			e = parse_exact(g_pkt2, l, &out, NULL);
			if (t == TG_MSG_DATA && e == TG_PERR_OK) {
				assert_int_equal(out.u.data.frag_len % TG_FRAG_UNIT, 0);
				continue;
			}
			assert_int_not_equal(e, TG_PERR_OK);
			if (l - TG_HDR_LEN < wire_fixed[t])
				assert_int_equal(e, TG_PERR_SHORT);
		}
	}
}

static void test_bad_magic_version_type_flags_are_rejected(void **state)
{
	static const uint8_t bad_types[] = { 0, TG_MSG__MAX, 200, 255 };
	static const uint8_t bad_versions[] = { 0, 2, 255 };

	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		struct tg_msg out;
		size_t n;

		make_valid(t, &g_fx);
		n = (size_t)tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);

		memcpy(g_pkt2, g_pkt, n);
		g_pkt2[0] ^= 0x01;
		assert_int_equal(parse_exact(g_pkt2, n, &out, NULL), TG_PERR_MAGIC);
		memcpy(g_pkt2, g_pkt, n);
		g_pkt2[1] = 0x48;
		assert_int_equal(parse_exact(g_pkt2, n, &out, NULL), TG_PERR_MAGIC);

		for (unsigned i = 0; i < sizeof(bad_versions); i++) {
			struct tg_hdr h;

			memcpy(g_pkt2, g_pkt, n);
			g_pkt2[2] = bad_versions[i];
			assert_int_equal(parse_exact(g_pkt2, n, &out, NULL), TG_PERR_VERSION);
			/* The header is still read so that the answer can be made. */
			assert_int_equal(tg_proto_parse_hdr(g_pkt2, n, &h), TG_PERR_VERSION);
			assert_int_equal(h.version, bad_versions[i]);
			assert_int_equal(h.type, t);
			assert_true(h.token == g_fx.m.hdr.token);
		}
		for (unsigned i = 0; i < sizeof(bad_types); i++) {
			memcpy(g_pkt2, g_pkt, n);
			g_pkt2[3] = bad_types[i];
			assert_int_equal(parse_exact(g_pkt2, n, &out, NULL), TG_PERR_TYPE);
		}
		for (unsigned bit = 0; bit < 16; bit++) {
			memcpy(g_pkt2, g_pkt, n);
			set_be16(g_pkt2 + 4, (uint16_t)(1u << bit));
			assert_int_equal(parse_exact(g_pkt2, n, &out, NULL), TG_PERR_FLAGS);
		}
	}
}

static void test_version_mismatch_never_parses_the_body(void **state)
{
	struct tg_msg out;
	uint8_t pkt[TG_HDR_LEN + 3] = { 0x54, 0x47, 0x02, 0xff, 0xff, 0xff, 0, 3 };

	/* Unknown type, bad flags, garbage body: version wins. */
	assert_int_equal(parse_exact(pkt, sizeof(pkt), &out, NULL), TG_PERR_VERSION);
}

static void test_paylen_disagreeing_with_datagram_is_rejected(void **state)
{
	uint8_t *big = calloc(1, TG_HDR_LEN + 65536 + 8);
	struct tg_msg out;

	assert_non_null(big);
	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		size_t n;

		make_valid(t, &g_fx);
		n = (size_t)tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		/* One byte more on the wire than paylen says. */
		memcpy(g_pkt2, g_pkt, n);
		g_pkt2[n] = 0;
		assert_int_equal(parse_exact(g_pkt2, n + 1, &out, NULL), TG_PERR_LEN);
		/* paylen one more, and one less, than the datagram holds. */
		set_be16(g_pkt2 + 6, (uint16_t)(n - TG_HDR_LEN + 1));
		assert_int_equal(parse_exact(g_pkt2, n, &out, NULL), TG_PERR_LEN);
		set_be16(g_pkt2 + 6, (uint16_t)(n - TG_HDR_LEN - 1));
		assert_int_equal(parse_exact(g_pkt2, n, &out, NULL), TG_PERR_LEN);
		/* A datagram longer than any 16-bit paylen can describe. */
		memcpy(big, g_pkt, n);
		set_be16(big + 6, 0xffff);
		assert_int_equal(tg_proto_parse(big, TG_HDR_LEN + 65536, &out), TG_PERR_LEN);
	}
	free(big);
}

/* Trailing bytes with paylen patched: fixed types say LEN, variable ones
 * say their count or name does not match. */
static void test_trailing_body_bytes_are_rejected(void **state)
{
	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		struct tg_msg out;
		enum tg_perr want;
		size_t n;

		if (t == TG_MSG_DATA)
			continue; /* its payload is by definition the rest */
		make_valid(t, &g_fx);
		n = (size_t)tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		memcpy(g_pkt2, g_pkt, n);
		g_pkt2[n] = 'x';
		set_be16(g_pkt2 + 6, (uint16_t)(n + 1 - TG_HDR_LEN));
		switch (t) {
		case TG_MSG_REG_INIT: case TG_MSG_REG_PROOF: case TG_MSG_BACKUP_END:
		case TG_MSG_ERROR:
			want = TG_PERR_NAME;
			break;
		case TG_MSG_OFFER: case TG_MSG_NEED: case TG_MSG_ACK: case TG_MSG_SACK:
		case TG_MSG_GET:
			want = TG_PERR_COUNT;
			break;
		default:
			want = TG_PERR_LEN;
		}
		assert_int_equal(parse_exact(g_pkt2, n + 1, &out, NULL), want);
	}
}

static void test_token_rule_per_type(void **state)
{
	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		struct tg_msg out;
		size_t n;

		make_valid(t, &g_fx);
		if (t == TG_MSG_ERROR) {
			/* ERROR may answer before or within a session. */
			for (unsigned k = 0; k < 2; k++) {
				g_fx.m.hdr.token = k ? TOKEN_A : 0;
				n = (size_t)tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
				assert_int_equal(parse_exact(g_pkt, n, &out, NULL), TG_PERR_OK);
			}
			continue;
		}
		g_fx.m.hdr.token = token_zero_type(t) ? 1 : 0;
		assert_int_equal(tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m), -TG_PERR_TOKEN);
		n = raw_encode(&g_fx.m, g_pkt);
		assert_int_equal(parse_exact(g_pkt, n, &out, NULL), TG_PERR_TOKEN);
	}
}

/* ---- field bounds: one table drives the builder and the parser ---- */

enum { MS_END = 0, MS_FIELD, MS_VAR };

struct mset {
	uint8_t kind;
	uint16_t off;   /* offset in struct tg_msg, or index into the var area */
	uint8_t width;
	uint64_t val;
};

struct fcase {
	uint8_t type;
	enum tg_perr want;
	const char *what;
	struct mset set[4];
};

#define FS(t, f, v) { MS_FIELD, (uint16_t)offsetof(struct tg_msg, u.t.f), \
	(uint8_t)sizeof(((struct tg_msg *)0)->u.t.f), (uint64_t)(v) }
#define VS(i, v) { MS_VAR, (i), 1, (v) }
#define C(T, W, ...) { TG_MSG_##T, TG_PERR_##W, #T " " #__VA_ARGS__, { __VA_ARGS__ } }

static const struct fcase field_cases[] = {
	/* names and flags of registration */
	C(REG_INIT, FLAGS, FS(reg_init, flags, TG_RF_ADMIN)),
	C(REG_INIT, FLAGS, FS(reg_init, flags, 0x8000)),
	C(REG_INIT, NAME, FS(reg_init, name_len, 0)),
	C(REG_INIT, NAME, FS(reg_init, name_len, TG_NAME_MAX + 1)),
	C(REG_INIT, NAME, VS(0, 0x00)),
	C(REG_INIT, NAME, VS(3, 0x1f)),
	C(REG_INIT, NAME, VS(2, '\n')),
	C(REG_INIT, NAME, VS(4, 0x7f)),
	C(REG_INIT, OK, FS(reg_init, name_len, TG_NAME_MAX)),
	C(REG_INIT, OK, FS(reg_init, name_len, 1), FS(reg_init, flags, 0)),
	C(REG_PROOF, FLAGS, FS(reg_proof, flags, TG_RF_LATEST)),
	C(REG_PROOF, NAME, FS(reg_proof, name_len, 0)),
	C(REG_PROOF, NAME, FS(reg_proof, name_len, TG_NAME_MAX + 1)),
	C(REG_PROOF, NAME, VS(9, 0x7f)),
	C(REG_PROOF, OK, FS(reg_proof, flags, TG_RF_RELAY)),
	/* fragment sizes and session parameters */
	C(HELLO, RANGE, FS(hello, max_frag, 0)),
	C(HELLO, RANGE, FS(hello, max_frag, TG_FRAG_MIN - TG_FRAG_UNIT)),
	C(HELLO, RANGE, FS(hello, max_frag, TG_FRAG_MIN - 1)),
	C(HELLO, RANGE, FS(hello, max_frag, TG_FRAG_MIN + 8)),
	C(HELLO, RANGE, FS(hello, max_frag, TG_FRAG_MAX + TG_FRAG_UNIT)),
	C(HELLO, RANGE, FS(hello, max_frag, 0xffff)),
	C(HELLO, FLAGS, FS(hello, flags, TG_RF_ADMIN)),
	C(HELLO, OK, FS(hello, max_frag, TG_FRAG_MIN)),
	C(HELLO, OK, FS(hello, max_frag, TG_FRAG_MAX)),
	C(AUTH, RANGE, FS(auth, max_frag, TG_FRAG_MIN + 1)),
	C(AUTH, RANGE, FS(auth, max_frag, TG_FRAG_MAX + TG_FRAG_UNIT)),
	C(AUTH, FLAGS, FS(auth, flags, 0x0100)),
	C(AUTH, OK, FS(auth, flags, TG_RF_RELAY)),
	C(SESSION_OK, RANGE, FS(session_ok, token, 0)),
	C(SESSION_OK, RANGE, FS(session_ok, frag_size, 500)),
	C(SESSION_OK, RANGE, FS(session_ok, frag_size, TG_FRAG_MAX + TG_FRAG_UNIT)),
	C(SESSION_OK, RANGE, FS(session_ok, credits, 0)),
	C(SESSION_OK, RANGE, FS(session_ok, max_chunk, 0)),
	C(SESSION_OK, RANGE, FS(session_ok, max_chunk, TG_CHUNK_MAX + 1),
	  FS(session_ok, credit_bytes, 0xffffffff)),
	C(SESSION_OK, RANGE, FS(session_ok, credit_bytes, TG_CHUNK_MAX - 1)),
	C(SESSION_OK, OK, FS(session_ok, credit_bytes, TG_CHUNK_MAX)),
	C(SESSION_OK, OK, FS(session_ok, max_chunk, 1), FS(session_ok, credit_bytes, 1),
	  FS(session_ok, credits, 1)),
	/* arrays and bitmaps */
	C(OFFER, COUNT, FS(offer, count, 0)),
	C(OFFER, COUNT, FS(offer, count, TG_OFFER_MAX + 1)),
	C(OFFER, RANGE, VS(36, 0), VS(37, 0), VS(38, 0), VS(39, 0)),
	C(OFFER, RANGE, VS(16, 0), VS(17, 0x40), VS(18, 0), VS(19, 1)),
	C(OFFER, OK, FS(offer, count, TG_OFFER_MAX)),
	C(OFFER, OK, FS(offer, count, 1)),
	C(NEED, COUNT, FS(need, count, 0)),
	C(NEED, COUNT, FS(need, count, TG_OFFER_MAX + 1)),
	C(NEED, FLAGS, VS(1, 0x08)),
	C(NEED, FLAGS, VS(1, 0x80)),
	C(NEED, OK, FS(need, count, 16), VS(1, 0xff)),
	C(ACK, COUNT, FS(ack, count, TG_OFFER_MAX + 1)),
	C(ACK, FLAGS, VS(18, 0x01)),
	C(ACK, FLAGS, VS(39, 0x80)),
	C(ACK, RANGE, VS(16, 0), VS(17, TG_ERR__MAX)),
	C(ACK, RANGE, VS(36, 0x01)),
	C(ACK, OK, FS(ack, count, 0)),
	C(ACK, OK, FS(ack, count, TG_OFFER_MAX)),
	C(ACK, OK, VS(16, 0), VS(17, TG_ERR__MAX - 1)),
	C(GET, COUNT, FS(get, count, 0)),
	C(GET, COUNT, FS(get, count, TG_OFFER_MAX + 1)),
	C(GET, OK, FS(get, count, TG_OFFER_MAX)),
	/* DATA fragment geometry */
	C(DATA, RANGE, FS(data, frag_off, 0xffffffc0)),
	C(DATA, RANGE, FS(data, chunk_len, 0)),
	C(DATA, RANGE, FS(data, chunk_len, TG_CHUNK_MAX + 1)),
	C(DATA, RANGE, FS(data, frag_off, 66 * TG_FRAG_UNIT + 1)),
	C(DATA, RANGE, FS(data, frag_off, 0x100140)),           /* >= chunk_len */
	C(DATA, RANGE, FS(data, frag_off, 0x100100)),           /* runs past the end */
	C(DATA, RANGE, FS(data, frag_len, 0)),
	C(DATA, RANGE, FS(data, frag_len, 1000)),               /* off-grid, not last */
	C(DATA, RANGE, FS(data, chunk_len, TG_CHUNK_MAX), FS(data, frag_off, 0),
	  FS(data, frag_len, TG_FRAG_MAX + TG_FRAG_UNIT)),
	C(DATA, RANGE, FS(data, chunk_len, TG_CHUNK_MAX), FS(data, frag_off, 0),
	  FS(data, frag_len, TG_FRAG_MAX + 1)),
	C(DATA, RANGE, FS(data, chunk_len, 0xffffffff), FS(data, frag_off, 0xffffffc0),
	  FS(data, frag_len, 63)),
	C(DATA, OK, FS(data, chunk_len, 1000), FS(data, frag_off, 896),
	  FS(data, frag_len, 104)),                             /* last, off-grid */
	C(DATA, OK, FS(data, chunk_len, 1), FS(data, frag_off, 0), FS(data, frag_len, 1)),
	C(DATA, OK, FS(data, chunk_len, TG_CHUNK_MAX), FS(data, frag_off, 0),
	  FS(data, frag_len, TG_FRAG_MAX)),
	C(DATA, OK, FS(data, chunk_len, TG_CHUNK_MAX),
	  FS(data, frag_off, TG_CHUNK_MAX - TG_FRAG_UNIT), FS(data, frag_len, TG_FRAG_UNIT)),
	/* SACK window */
	C(SACK, RANGE, FS(sack, nunits, 0)),
	C(SACK, RANGE, FS(sack, nunits, TG_SACK_UNITS_MAX + 1)),
	C(SACK, RANGE, FS(sack, chunk_len, 0)),
	C(SACK, RANGE, FS(sack, chunk_len, TG_CHUNK_MAX + 1)),
	C(SACK, RANGE, FS(sack, unit_base, 0xffffffff)),
	C(SACK, RANGE, FS(sack, unit_base, 16389 - 20 + 1)),
	C(SACK, FLAGS, VS(2, 0x10)),
	C(SACK, OK, FS(sack, unit_base, 16389 - 20)),
	C(SACK, OK, FS(sack, chunk_len, TG_CHUNK_MAX), FS(sack, unit_base, 0),
	  FS(sack, nunits, TG_SACK_UNITS_MAX)),
	/* closing a backup and restores */
	C(BACKUP_END, RANGE, FS(backup_end, root_len, 0)),
	C(BACKUP_END, RANGE, FS(backup_end, root_len, TG_CHUNK_MAX + 1)),
	C(BACKUP_END, NAME, FS(backup_end, name_len, TG_NAME_MAX + 1)),
	C(BACKUP_END, NAME, VS(0, 0x1b)),
	C(BACKUP_END, OK, FS(backup_end, name_len, 0)),
	C(BACKUP_END, OK, FS(backup_end, name_len, TG_NAME_MAX)),
	C(BACKUP_DONE, RANGE, FS(backup_done, status, TG_ERR__MAX)),
	C(BACKUP_DONE, RANGE, FS(backup_done, status, 0xffff)),
	C(BACKUP_DONE, OK, FS(backup_done, status, TG_ERR_STORAGE)),
	C(RESTORE_REQ, FLAGS, FS(restore_req, flags, TG_RF_RELAY)),
	C(RESTORE_REQ, FLAGS, FS(restore_req, flags, 0x0008)),
	C(RESTORE_REQ, OK, FS(restore_req, flags, 0)),
	/* ERROR and CLOSE codes */
	C(ERROR, RANGE, FS(error, code, 0)),
	C(ERROR, RANGE, FS(error, code, TG_ERR__MAX)),
	C(ERROR, NAME, FS(error, msg_len, TG_ERRMSG_MAX + 1)),
	C(ERROR, NAME, VS(0, '\r')),
	C(ERROR, OK, FS(error, msg_len, TG_ERRMSG_MAX)),
	C(ERROR, OK, FS(error, msg_len, 0)),
	C(ERROR, OK, FS(error, code, TG_ERR__MAX - 1)),
	C(CLOSE, RANGE, FS(close, reason, TG_ERR__MAX)),
	C(CLOSE, OK, FS(close, reason, TG_OK)),
};

static void apply_sets(struct fx *f, const struct mset *s, unsigned n)
{
	for (unsigned i = 0; i < n && s[i].kind != MS_END; i++) {
		uint8_t *dst = s[i].kind == MS_VAR ? f->var + s[i].off
						   : (uint8_t *)&f->m + s[i].off;
		uint16_t v16 = (uint16_t)s[i].val;
		uint32_t v32 = (uint32_t)s[i].val;
		uint64_t v64 = s[i].val;

		switch (s[i].width) {
		case 1: *dst = (uint8_t)s[i].val; break;
		case 2: memcpy(dst, &v16, 2); break;
		case 4: memcpy(dst, &v32, 4); break;
		default: memcpy(dst, &v64, 8); break;
		}
	}
}

static void test_field_bounds_agree_in_builder_and_parser(void **state)
{
	for (size_t c = 0; c < sizeof(field_cases) / sizeof(field_cases[0]); c++) {
		const struct fcase *fc = &field_cases[c];
		struct tg_msg out;
		uint8_t *copy;
		ssize_t n;
		size_t rn;

		make_valid(fc->type, &g_fx);
		apply_sets(&g_fx, fc->set, 4);
		n = tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		rn = raw_encode(&g_fx.m, g_pkt2);
		if (fc->want == TG_PERR_OK) {
			if (n != (ssize_t)rn)
				fail_msg("%s: build gave %zd, want %zu", fc->what, n, rn);
			assert_memory_equal(g_pkt, g_pkt2, rn);
			/* out points into the copy: keep it until compared. */
			assert_int_equal(parse_exact(g_pkt2, rn, &out, &copy), TG_PERR_OK);
			assert_msg_equal(&g_fx.m, &out);
			free(copy);
			continue;
		}
		if (n != -(ssize_t)fc->want)
			fail_msg("%s: build gave %zd, want -%s", fc->what, n,
				 tg_perr_name(fc->want));
		if (parse_exact(g_pkt2, rn, &out, NULL) != fc->want)
			fail_msg("%s: parse gave %s, want %s", fc->what,
				 tg_perr_name(parse_exact(g_pkt2, rn, &out, NULL)),
				 tg_perr_name(fc->want));
	}
}

/* A count or length field that disagrees with the bytes that follow. */
struct ncase {
	uint8_t type;
	uint8_t off;    /* body offset of the u16 count/length */
	int delta;      /* added to the valid value; 0 means set 0xffff */
	enum tg_perr want;
};

static const struct ncase count_cases[] = {
	{ TG_MSG_REG_INIT, 42, +1, TG_PERR_NAME },
	{ TG_MSG_REG_INIT, 42, -1, TG_PERR_NAME },
	{ TG_MSG_REG_INIT, 42, 0, TG_PERR_NAME },
	{ TG_MSG_REG_PROOF, 74, +1, TG_PERR_NAME },
	{ TG_MSG_REG_PROOF, 74, 0, TG_PERR_NAME },
	{ TG_MSG_OFFER, 4, +1, TG_PERR_COUNT },
	{ TG_MSG_OFFER, 4, -1, TG_PERR_COUNT },
	{ TG_MSG_OFFER, 4, 0, TG_PERR_COUNT },
	{ TG_MSG_NEED, 4, +6, TG_PERR_COUNT },
	{ TG_MSG_NEED, 4, -4, TG_PERR_COUNT },
	{ TG_MSG_NEED, 4, 0, TG_PERR_COUNT },
	{ TG_MSG_ACK, 2, +1, TG_PERR_COUNT },
	{ TG_MSG_ACK, 2, -1, TG_PERR_COUNT },
	{ TG_MSG_ACK, 2, 0, TG_PERR_COUNT },
	{ TG_MSG_SACK, 24, +5, TG_PERR_COUNT },
	{ TG_MSG_SACK, 24, -12, TG_PERR_COUNT },
	{ TG_MSG_SACK, 24, 0, TG_PERR_COUNT },
	{ TG_MSG_BACKUP_END, 32, +1, TG_PERR_NAME },
	{ TG_MSG_BACKUP_END, 32, -1, TG_PERR_NAME },
	{ TG_MSG_BACKUP_END, 32, 0, TG_PERR_NAME },
	{ TG_MSG_GET, 0, +1, TG_PERR_COUNT },
	{ TG_MSG_GET, 0, -1, TG_PERR_COUNT },
	{ TG_MSG_GET, 0, 0, TG_PERR_COUNT },
	{ TG_MSG_ERROR, 22, +1, TG_PERR_NAME },
	{ TG_MSG_ERROR, 22, -1, TG_PERR_NAME },
	{ TG_MSG_ERROR, 22, 0, TG_PERR_NAME },
};

static void test_counts_disagreeing_with_bytes_are_rejected(void **state)
{
	for (size_t c = 0; c < sizeof(count_cases) / sizeof(count_cases[0]); c++) {
		const struct ncase *nc = &count_cases[c];
		uint8_t *f;
		struct tg_msg out;
		size_t n;

		make_valid(nc->type, &g_fx);
		n = (size_t)tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		f = g_pkt + TG_HDR_LEN + nc->off;
		/* Guard the table: the offset must hold the valid count. */
		assert_int_equal(get_be16(f), var_n(&g_fx.m));
		set_be16(f, nc->delta ? (uint16_t)(get_be16(f) + nc->delta) : 0xffff);
		if (parse_exact(g_pkt, n, &out, NULL) != nc->want)
			fail_msg("type %u off %u delta %d: got %s want %s", nc->type, nc->off,
				 nc->delta, tg_perr_name(parse_exact(g_pkt, n, &out, NULL)),
				 tg_perr_name(nc->want));
	}
}

/* ---- builder specifics ---- */

static void test_builder_refuses_small_buffers_and_bad_headers(void **state)
{
	uint8_t *exact;

	for (unsigned t = 1; t < TG_MSG__MAX; t++) {
		ssize_t n;

		make_valid(t, &g_fx);
		n = tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m);
		assert_true(n > 0);
		/* The exact size fits (on the heap, so ASan checks the writes)... */
		exact = malloc((size_t)n);
		assert_non_null(exact);
		assert_int_equal(tg_proto_build(exact, (size_t)n, &g_fx.m), n);
		assert_memory_equal(exact, g_pkt, (size_t)n);
		free(exact);
		/* ...one byte less, or no buffer, does not. */
		assert_int_equal(tg_proto_build(g_pkt2, (size_t)n - 1, &g_fx.m), -TG_PERR_BUF);
		assert_int_equal(tg_proto_build(NULL, 0, &g_fx.m), -TG_PERR_BUF);

		g_fx.m.hdr.flags = 1;
		assert_int_equal(tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m), -TG_PERR_FLAGS);
		g_fx.m.hdr.flags = 0;
		/* A stale paylen or version in the struct does not matter. */
		g_fx.m.hdr.paylen = 3;
		g_fx.m.hdr.version = 9;
		assert_int_equal(tg_proto_build(g_pkt2, sizeof(g_pkt2), &g_fx.m), n);
		assert_memory_equal(g_pkt, g_pkt2, (size_t)n);
	}
	g_fx.m.hdr.type = 0;
	assert_int_equal(tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m), -TG_PERR_TYPE);
	g_fx.m.hdr.type = TG_MSG__MAX;
	assert_int_equal(tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m), -TG_PERR_TYPE);
}

static void test_builder_refuses_missing_variable_part(void **state)
{
	make_valid(TG_MSG_REG_INIT, &g_fx);
	g_fx.m.u.reg_init.name = NULL;
	assert_int_equal(tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m), -TG_PERR_NAME);
	make_valid(TG_MSG_OFFER, &g_fx);
	g_fx.m.u.offer.entries = NULL;
	assert_int_equal(tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m), -TG_PERR_COUNT);
	make_valid(TG_MSG_DATA, &g_fx);
	g_fx.m.u.data.payload = NULL;
	assert_int_equal(tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m), -TG_PERR_RANGE);
	/* An empty variable part needs no pointer. */
	make_valid(TG_MSG_ACK, &g_fx);
	g_fx.m.u.ack.count = 0;
	g_fx.m.u.ack.entries = NULL;
	assert_int_equal(tg_proto_build(g_pkt, sizeof(g_pkt), &g_fx.m), TG_HDR_LEN + 8);
}

/* ---- seeded mutation loop ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: deterministic across runs and platforms. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static const uint32_t interesting[] = {
	0, 1, 2, 7, 8, 63, 64, 65, 511, 512, 8896, 8897, 8960, 8192, 8193, 0x7f, 0x80,
	0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, TG_CHUNK_MAX, TG_CHUNK_MAX + 1,
	0x7fffffff, 0x80000000, 0xffffffc0, 0xffffffff,
};

static size_t mutate(uint8_t *p, size_t len, size_t cap)
{
	unsigned rounds = 1 + (unsigned)(rng() % 4);

	for (unsigned r = 0; r < rounds; r++) {
		size_t at = len ? (size_t)(rng() % len) : 0;
		uint32_t v = interesting[rng() % (sizeof(interesting) / sizeof(interesting[0]))];

		switch (rng() % 8) {
		case 0:
			if (len)
				p[at] ^= (uint8_t)(1u << (rng() % 8));
			break;
		case 1:
			if (len)
				p[at] = (uint8_t)rng();
			break;
		case 2:
			if (at + 2 <= len)
				set_be16(p + at, (uint16_t)v);
			break;
		case 3:
			if (at + 4 <= len) {
				set_be16(p + at, (uint16_t)(v >> 16));
				set_be16(p + at + 2, (uint16_t)v);
			}
			break;
		case 4:
			len = len ? (size_t)(rng() % len) : 0;
			break;
		case 5: {
			size_t add = 1 + (size_t)(rng() % 64);

			if (len + add <= cap) {
				for (size_t i = 0; i < add; i++)
					p[len + i] = (uint8_t)rng();
				len += add;
			}
			break;
		}
		case 6:
			if (len > 3)
				p[3] = (uint8_t)(1 + rng() % NTYPES);
			break;
		default:
			if (len > TG_HDR_LEN + 1)
				p[TG_HDR_LEN + rng() % (len - TG_HDR_LEN)] = (uint8_t)v;
			break;
		}
	}
	/* Mostly keep paylen honest so that the body checks are reached. */
	if (len >= TG_HDR_LEN && len - TG_HDR_LEN <= 0xffff && rng() % 4)
		set_be16(p + 6, (uint16_t)(len - TG_HDR_LEN));
	return len;
}

static void test_random_mutations_never_overread_and_accepted_rebuild_identically(
	void **state)
{
	unsigned accepted = 0, rejected = 0;
	uint8_t *work = malloc(70000);

	assert_non_null(work);
	rng_state = 0x5eed7a1d0c0ffeeull;
	for (unsigned i = 0; i < 200000; i++) {
		unsigned t = 1 + (unsigned)(rng() % NTYPES);
		struct tg_msg out;
		uint8_t *copy;
		ssize_t n, n2;
		size_t len;

		make_valid(t, &g_fx);
		/* Vary the variable parts' sizes too. */
		if (t == TG_MSG_OFFER || t == TG_MSG_GET)
			*(t == TG_MSG_OFFER ? &g_fx.m.u.offer.count : &g_fx.m.u.get.count) =
				(uint16_t)(1 + rng() % TG_OFFER_MAX);
		if (t == TG_MSG_DATA && rng() % 2) {
			g_fx.m.u.data.frag_off = 896;
			g_fx.m.u.data.chunk_len = 896 + 1 + (uint32_t)(rng() % 300);
			g_fx.m.u.data.frag_len = (uint16_t)(g_fx.m.u.data.chunk_len - 896);
		}
		n = tg_proto_build(work, 70000, &g_fx.m);
		assert_true(n > 0);
		len = mutate(work, (size_t)n, 70000);
		if (parse_exact(work, len, &out, &copy) != TG_PERR_OK) {
			rejected++;
			free(copy);
			continue;
		}
		accepted++;
		n2 = tg_proto_build(g_pkt2, sizeof(g_pkt2), &out);
		if (n2 != (ssize_t)len || memcmp(g_pkt2, copy, len) != 0)
			fail_msg("iteration %u: accepted type %u did not rebuild (%zd vs %zu)",
				 i, out.hdr.type, n2, len);
		free(copy);
	}
	free(work);
	/* The loop must exercise both outcomes to prove anything. */
	assert_true(accepted > 1000);
	assert_true(rejected > 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_type_round_trips_with_variable_parts),
		cmocka_unit_test(test_builder_bytes_match_the_wire_layout_rules),
		cmocka_unit_test(test_header_is_big_endian_magic_version_type_flags_paylen_token),
		cmocka_unit_test(test_entry_accessors_round_trip_and_zero_reserved),
		cmocka_unit_test(test_names_of_reasons_and_errors),
		cmocka_unit_test(test_truncation_at_every_length_is_rejected),
		cmocka_unit_test(test_consistently_truncated_bodies_are_rejected),
		cmocka_unit_test(test_bad_magic_version_type_flags_are_rejected),
		cmocka_unit_test(test_version_mismatch_never_parses_the_body),
		cmocka_unit_test(test_paylen_disagreeing_with_datagram_is_rejected),
		cmocka_unit_test(test_trailing_body_bytes_are_rejected),
		cmocka_unit_test(test_token_rule_per_type),
		cmocka_unit_test(test_field_bounds_agree_in_builder_and_parser),
		cmocka_unit_test(test_counts_disagreeing_with_bytes_are_rejected),
		cmocka_unit_test(test_builder_refuses_small_buffers_and_bad_headers),
		cmocka_unit_test(test_builder_refuses_missing_variable_part),
		cmocka_unit_test(test_random_mutations_never_overread_and_accepted_rebuild_identically),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
