/*
 * proto.c - the wire codec of protocol v1 (tg_proto.h, docs/protocol.md).
 *
 * One table describes every message type: its fixed body as a list of
 * fields in wire order, its variable part, its token rule and its field
 * checks. The parser and the builder both walk that table and call the
 * same check function, so the two cannot drift apart: whatever the builder
 * emits parses back, and whatever parses rebuilds to the same bytes.
 *
 * Multi-byte fields are moved with memcpy plus be*toh/htobe*, never by
 * casting the buffer to a struct: datagrams have no alignment guarantee and
 * wire structs would tie the layout to the compiler's padding rules.
 * Nothing here allocates; parsed variable parts point into the caller's
 * buffer.
 */
#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "tg_proto.h"

/* ---- big-endian loads and stores ---- */

static inline uint16_t tg_ld16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return be16toh(v);
}

static inline uint32_t tg_ld32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static inline uint64_t tg_ld64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

static inline void tg_st16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, sizeof(v));
}

static inline void tg_st32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof(v));
}

static inline void tg_st64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof(v));
}

/* ---- names ---- */

static const char *const perr_names[TG_PERR__MAX] = {
	[TG_PERR_OK] = "ok",
	[TG_PERR_SHORT] = "short",
	[TG_PERR_MAGIC] = "magic",
	[TG_PERR_VERSION] = "version",
	[TG_PERR_TYPE] = "type",
	[TG_PERR_FLAGS] = "flags",
	[TG_PERR_LEN] = "len",
	[TG_PERR_COUNT] = "count",
	[TG_PERR_NAME] = "name",
	[TG_PERR_RANGE] = "range",
	[TG_PERR_TOKEN] = "token",
	[TG_PERR_BUF] = "buf",
};

const char *tg_perr_name(enum tg_perr e)
{
	if ((unsigned)e >= TG_PERR__MAX)
		return "unknown";
	return perr_names[e];
}

/* These words reach administrators and end users (client error messages,
 * logs), so they read as the product speaks, not as identifiers. */
static const char *const err_names[TG_ERR__MAX] = {
	[TG_OK] = "ok",
	[TG_ERR_BAD_KEY] = "bad key",
	[TG_ERR_UNKNOWN_ORG] = "unknown organization",
	[TG_ERR_SEATS_FULL] = "seats full",
	[TG_ERR_QUOTA_EXCEEDED] = "quota exceeded",
	[TG_ERR_ORG_DEACTIVATED] = "organization deactivated",
	[TG_ERR_RESTORE_OVER_LIMIT] = "restore over limit",
	[TG_ERR_VERSION] = "version mismatch",
	[TG_ERR_OVERLOADED] = "overloaded",
	[TG_ERR_UNAVAILABLE] = "control plane unavailable",
	[TG_ERR_BAD_SESSION] = "bad session",
	[TG_ERR_RATE_LIMITED] = "rate limited",
	[TG_ERR_HASH_MISMATCH] = "hash mismatch",
	[TG_ERR_NOT_FOUND] = "not found",
	[TG_ERR_STORAGE] = "storage failure",
	[TG_ERR_BAD_REQUEST] = "bad request",
	[TG_ERR_DUP] = "already stored",
};

const char *tg_err_name(enum tg_err e)
{
	if ((unsigned)e >= TG_ERR__MAX)
		return "unknown error";
	return err_names[e];
}

/* ---- the message table ---- */

/* A fixed-body field: an integer of 2, 4 or 8 bytes, or a byte array. */
enum tg_fkind { TG_FK_END = 0, TG_FK_INT, TG_FK_BYTES };

struct tg_field {
	uint16_t off;   /* offset of the host field in struct tg_msg */
	uint8_t kind;   /* enum tg_fkind */
	uint8_t size;   /* wire bytes */
};

#define MOFF(t, f) ((uint16_t)offsetof(struct tg_msg, u.t.f))
#define FI(t, f) { MOFF(t, f), TG_FK_INT, (uint8_t)sizeof(((struct tg_msg *)0)->u.t.f) }
#define FB(t, f) { MOFF(t, f), TG_FK_BYTES, (uint8_t)sizeof(((struct tg_msg *)0)->u.t.f) }
#define FEND { 0, TG_FK_END, 0 }

/* What follows the fixed body. */
enum tg_vkind {
	TG_VK_NONE = 0,
	TG_VK_ARRAY,   /* n * elem bytes: names (elem 1), ids, entries */
	TG_VK_BITMAP,  /* ceil(n / 8) bytes */
	TG_VK_REST,    /* everything left; n is set from it (DATA payload) */
};

enum tg_tok { TG_TOK_ZERO, TG_TOK_SET, TG_TOK_ANY };

struct tg_desc {
	uint16_t fixed;                 /* fixed body bytes (docs/protocol.md) */
	uint8_t tok;                    /* enum tg_tok */
	uint8_t vkind;                  /* enum tg_vkind */
	uint8_t velem;                  /* bytes per element of an array */
	uint8_t vperr;                  /* reason when n disagrees with the bytes */
	uint16_t n_off;                 /* offset of the uint16 n field */
	uint16_t p_off;                 /* offset of the variable part's pointer */
	enum tg_perr (*check)(const struct tg_msg *m);
	const struct tg_field *fields;
};

/* Field lists in wire order = declaration order of the tg_proto.h structs. */
static const struct tg_field f_reg_init[] = {
	FB(reg_init, provider_guid), FB(reg_init, key_id), FB(reg_init, client_nonce),
	FI(reg_init, flags), FI(reg_init, name_len), FEND,
};
static const struct tg_field f_reg_challenge[] = {
	FB(reg_challenge, client_nonce), FB(reg_challenge, server_nonce),
	FB(reg_challenge, salt), FB(reg_challenge, cookie), FEND,
};
static const struct tg_field f_reg_proof[] = {
	FB(reg_proof, provider_guid), FB(reg_proof, key_id), FB(reg_proof, client_nonce),
	FB(reg_proof, server_nonce), FB(reg_proof, cookie), FI(reg_proof, flags),
	FI(reg_proof, name_len), FB(reg_proof, proof), FEND,
};
static const struct tg_field f_reg_ok[] = {
	FB(reg_ok, client_nonce), FB(reg_ok, org_guid), FB(reg_ok, device_id),
	FB(reg_ok, wrapped_cred), FB(reg_ok, wrap_tag), FEND,
};
static const struct tg_field f_hello[] = {
	FB(hello, device_id), FB(hello, client_nonce), FI(hello, max_frag),
	FI(hello, flags), FEND,
};
static const struct tg_field f_challenge[] = {
	FB(challenge, client_nonce), FB(challenge, server_nonce), FB(challenge, cookie),
	FEND,
};
static const struct tg_field f_auth[] = {
	FB(auth, device_id), FB(auth, client_nonce), FB(auth, server_nonce),
	FB(auth, cookie), FI(auth, max_frag), FI(auth, flags), FB(auth, proof), FEND,
};
static const struct tg_field f_session_ok[] = {
	FB(session_ok, client_nonce), FI(session_ok, token), FB(session_ok, org_guid),
	FI(session_ok, frag_size), FI(session_ok, credits), FI(session_ok, credit_bytes),
	FI(session_ok, max_chunk), FB(session_ok, mac), FEND,
};
static const struct tg_field f_offer[] = {
	FI(offer, offer_seq), FI(offer, count), FEND,
};
static const struct tg_field f_need[] = {
	FI(need, offer_seq), FI(need, count), FEND,
};
/* frag_len is not on the wire: the payload is the rest of the datagram. */
static const struct tg_field f_data[] = {
	FB(data, chunk_id), FI(data, chunk_len), FI(data, frag_off), FB(data, tag), FEND,
};
static const struct tg_field f_ack[] = {
	FI(ack, credits), FI(ack, count), FI(ack, credit_bytes), FEND,
};
static const struct tg_field f_sack[] = {
	FB(sack, chunk_id), FI(sack, chunk_len), FI(sack, unit_base), FI(sack, nunits),
	FEND,
};
static const struct tg_field f_backup_end[] = {
	FB(backup_end, root_id), FI(backup_end, root_len), FI(backup_end, nfiles),
	FI(backup_end, logical_bytes), FI(backup_end, name_len), FEND,
};
static const struct tg_field f_backup_done[] = {
	FB(backup_done, root_id), FI(backup_done, backup_id), FI(backup_done, status),
	FEND,
};
static const struct tg_field f_restore_req[] = {
	FB(restore_req, device_id), FI(restore_req, backup_id), FI(restore_req, flags),
	FEND,
};
static const struct tg_field f_restore_ok[] = {
	FI(restore_ok, backup_id), FB(restore_ok, root_id), FI(restore_ok, root_len),
	FI(restore_ok, total_bytes), FI(restore_ok, created), FEND,
};
static const struct tg_field f_get[] = {
	FI(get, count), FEND,
};
static const struct tg_field f_error[] = {
	FI(error, code), FI(error, detail), FB(error, ref_id), FI(error, msg_len), FEND,
};
static const struct tg_field f_close[] = {
	FI(close, reason), FEND,
};
static const struct tg_field f_ping[] = {
	FI(ping, nonce), FEND,
};
static const struct tg_field f_pong[] = {
	FI(pong, nonce), FI(pong, credits), FI(pong, credit_bytes), FEND,
};

/* ---- shared field checks (one per type, used by parse and build) ---- */

/* Names end up in logs, JSON and terminals: refuse control bytes so that a
 * device name cannot forge log lines or escape sequences. Bytes >= 0x80 are
 * allowed so that UTF-8 names pass untouched. */
static bool tg_text_ok(const char *s, unsigned n)
{
	const uint8_t *p = (const uint8_t *)s;

	for (unsigned i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return false;
	return true;
}

static enum tg_perr tg_check_name(const char *s, unsigned n, unsigned min, unsigned max)
{
	if (n < min || n > max || !tg_text_ok(s, n))
		return TG_PERR_NAME;
	return TG_PERR_OK;
}

static bool tg_frag_size_ok(uint32_t v)
{
	return v >= TG_FRAG_MIN && v <= TG_FRAG_MAX && v % TG_FRAG_UNIT == 0;
}

static bool tg_chunk_len_ok(uint32_t v)
{
	return v >= 1 && v <= TG_CHUNK_MAX;
}

/* Bits past n in the last byte must be zero so that every bitmap has exactly
 * one encoding (and a rebuilt packet equals the received one). */
static bool tg_bitmap_tail_ok(const uint8_t *bm, unsigned nbits)
{
	unsigned rem = nbits % 8;

	if (rem == 0)
		return true;
	return (bm[nbits / 8] & (uint8_t)~((1u << rem) - 1)) == 0;
}

static enum tg_perr chk_reg_init(const struct tg_msg *m)
{
	const struct tg_reg_init *r = &m->u.reg_init;

	if (r->flags & ~TG_RF_RELAY)
		return TG_PERR_FLAGS;
	return tg_check_name(r->name, r->name_len, 1, TG_NAME_MAX);
}

static enum tg_perr chk_reg_proof(const struct tg_msg *m)
{
	const struct tg_reg_proof *r = &m->u.reg_proof;

	if (r->flags & ~TG_RF_RELAY)
		return TG_PERR_FLAGS;
	return tg_check_name(r->name, r->name_len, 1, TG_NAME_MAX);
}

static enum tg_perr chk_hello(const struct tg_msg *m)
{
	if (m->u.hello.flags & ~TG_RF_RELAY)
		return TG_PERR_FLAGS;
	if (!tg_frag_size_ok(m->u.hello.max_frag))
		return TG_PERR_RANGE;
	return TG_PERR_OK;
}

static enum tg_perr chk_auth(const struct tg_msg *m)
{
	if (m->u.auth.flags & ~TG_RF_RELAY)
		return TG_PERR_FLAGS;
	if (!tg_frag_size_ok(m->u.auth.max_frag))
		return TG_PERR_RANGE;
	return TG_PERR_OK;
}

static enum tg_perr chk_session_ok(const struct tg_msg *m)
{
	const struct tg_session_ok *s = &m->u.session_ok;

	if (s->token == 0 || !tg_frag_size_ok(s->frag_size) || s->credits < 1 ||
	    !tg_chunk_len_ok(s->max_chunk) || s->credit_bytes < s->max_chunk)
		return TG_PERR_RANGE;
	return TG_PERR_OK;
}

static enum tg_perr chk_offer(const struct tg_msg *m)
{
	const struct tg_offer *o = &m->u.offer;

	if (o->count < 1 || o->count > TG_OFFER_MAX)
		return TG_PERR_COUNT;
	for (unsigned i = 0; i < o->count; i++)
		if (!tg_chunk_len_ok(tg_ld32(o->entries + i * TG_OFFER_ENTRY_LEN + TG_ID_LEN)))
			return TG_PERR_RANGE;
	return TG_PERR_OK;
}

static enum tg_perr chk_need(const struct tg_msg *m)
{
	const struct tg_need *n = &m->u.need;

	if (n->count < 1 || n->count > TG_OFFER_MAX)
		return TG_PERR_COUNT;
	if (!tg_bitmap_tail_ok(n->bitmap, n->count))
		return TG_PERR_FLAGS;
	return TG_PERR_OK;
}

static enum tg_perr chk_data(const struct tg_msg *m)
{
	const struct tg_data *d = &m->u.data;
	/* 64-bit so that a frag_off near 2^32 cannot wrap past chunk_len. */
	uint64_t end = (uint64_t)d->frag_off + d->frag_len;

	if (!tg_chunk_len_ok(d->chunk_len) || d->frag_off % TG_FRAG_UNIT ||
	    d->frag_off >= d->chunk_len || d->frag_len < 1 || d->frag_len > TG_FRAG_MAX ||
	    end > d->chunk_len)
		return TG_PERR_RANGE;
	/* Only a chunk's last fragment may end off the unit grid, so SACK units
	 * map to whole fragments. */
	if (d->frag_len % TG_FRAG_UNIT && end != d->chunk_len)
		return TG_PERR_RANGE;
	return TG_PERR_OK;
}

static enum tg_perr chk_ack(const struct tg_msg *m)
{
	const struct tg_ack *a = &m->u.ack;

	if (a->count > TG_OFFER_MAX)
		return TG_PERR_COUNT;
	for (unsigned i = 0; i < a->count; i++) {
		const uint8_t *e = a->entries + i * TG_ACK_ENTRY_LEN;

		if (tg_ld16(e + TG_ID_LEN + 2) != 0)
			return TG_PERR_FLAGS;
		if (tg_ld16(e + TG_ID_LEN) >= TG_ERR__MAX)
			return TG_PERR_RANGE;
	}
	return TG_PERR_OK;
}

static enum tg_perr chk_sack(const struct tg_msg *m)
{
	const struct tg_sack *s = &m->u.sack;
	uint64_t units = ((uint64_t)s->chunk_len + TG_FRAG_UNIT - 1) / TG_FRAG_UNIT;

	if (s->nunits < 1 || s->nunits > TG_SACK_UNITS_MAX || !tg_chunk_len_ok(s->chunk_len) ||
	    (uint64_t)s->unit_base + s->nunits > units)
		return TG_PERR_RANGE;
	if (!tg_bitmap_tail_ok(s->bitmap, s->nunits))
		return TG_PERR_FLAGS;
	return TG_PERR_OK;
}

static enum tg_perr chk_backup_end(const struct tg_msg *m)
{
	const struct tg_backup_end *b = &m->u.backup_end;

	if (!tg_chunk_len_ok(b->root_len))
		return TG_PERR_RANGE;
	return tg_check_name(b->name, b->name_len, 0, TG_NAME_MAX);
}

static enum tg_perr chk_backup_done(const struct tg_msg *m)
{
	if (m->u.backup_done.status >= TG_ERR__MAX)
		return TG_PERR_RANGE;
	return TG_PERR_OK;
}

static enum tg_perr chk_restore_req(const struct tg_msg *m)
{
	if (m->u.restore_req.flags & ~(TG_RF_ADMIN | TG_RF_LATEST))
		return TG_PERR_FLAGS;
	return TG_PERR_OK;
}

static enum tg_perr chk_get(const struct tg_msg *m)
{
	if (m->u.get.count < 1 || m->u.get.count > TG_OFFER_MAX)
		return TG_PERR_COUNT;
	return TG_PERR_OK;
}

/* The message is shown to people like a name is, so the same byte rule. */
static enum tg_perr chk_error(const struct tg_msg *m)
{
	const struct tg_error *e = &m->u.error;

	if (e->code < 1 || e->code >= TG_ERR__MAX)
		return TG_PERR_RANGE;
	return tg_check_name(e->msg, e->msg_len, 0, TG_ERRMSG_MAX);
}

static enum tg_perr chk_close(const struct tg_msg *m)
{
	if (m->u.close.reason >= TG_ERR__MAX)
		return TG_PERR_RANGE;
	return TG_PERR_OK;
}

#define VNONE .vkind = TG_VK_NONE, .vperr = TG_PERR_LEN
#define VAR(kind, elem, perr, t, n, p) \
	.vkind = (kind), .velem = (elem), .vperr = (perr), \
	.n_off = MOFF(t, n), .p_off = MOFF(t, p)

static const struct tg_desc descs[TG_MSG__MAX] = {
	[TG_MSG_REG_INIT] = { 44, TG_TOK_ZERO,
		VAR(TG_VK_ARRAY, 1, TG_PERR_NAME, reg_init, name_len, name),
		.check = chk_reg_init, .fields = f_reg_init },
	[TG_MSG_REG_CHALLENGE] = { 64, TG_TOK_ZERO, VNONE, .fields = f_reg_challenge },
	[TG_MSG_REG_PROOF] = { 108, TG_TOK_ZERO,
		VAR(TG_VK_ARRAY, 1, TG_PERR_NAME, reg_proof, name_len, name),
		.check = chk_reg_proof, .fields = f_reg_proof },
	[TG_MSG_REG_OK] = { 96, TG_TOK_ZERO, VNONE, .fields = f_reg_ok },
	[TG_MSG_HELLO] = { 36, TG_TOK_ZERO, VNONE, .check = chk_hello, .fields = f_hello },
	[TG_MSG_CHALLENGE] = { 48, TG_TOK_ZERO, VNONE, .fields = f_challenge },
	[TG_MSG_AUTH] = { 100, TG_TOK_ZERO, VNONE, .check = chk_auth, .fields = f_auth },
	[TG_MSG_SESSION_OK] = { 68, TG_TOK_ZERO, VNONE,
		.check = chk_session_ok, .fields = f_session_ok },
	[TG_MSG_OFFER] = { 6, TG_TOK_SET,
		VAR(TG_VK_ARRAY, TG_OFFER_ENTRY_LEN, TG_PERR_COUNT, offer, count, entries),
		.check = chk_offer, .fields = f_offer },
	[TG_MSG_NEED] = { 6, TG_TOK_SET,
		VAR(TG_VK_BITMAP, 1, TG_PERR_COUNT, need, count, bitmap),
		.check = chk_need, .fields = f_need },
	[TG_MSG_DATA] = { TG_DATA_HDR_LEN, TG_TOK_SET,
		VAR(TG_VK_REST, 1, TG_PERR_RANGE, data, frag_len, payload),
		.check = chk_data, .fields = f_data },
	[TG_MSG_ACK] = { 8, TG_TOK_SET,
		VAR(TG_VK_ARRAY, TG_ACK_ENTRY_LEN, TG_PERR_COUNT, ack, count, entries),
		.check = chk_ack, .fields = f_ack },
	[TG_MSG_SACK] = { 26, TG_TOK_SET,
		VAR(TG_VK_BITMAP, 1, TG_PERR_COUNT, sack, nunits, bitmap),
		.check = chk_sack, .fields = f_sack },
	[TG_MSG_BACKUP_END] = { 34, TG_TOK_SET,
		VAR(TG_VK_ARRAY, 1, TG_PERR_NAME, backup_end, name_len, name),
		.check = chk_backup_end, .fields = f_backup_end },
	[TG_MSG_BACKUP_DONE] = { 26, TG_TOK_SET, VNONE,
		.check = chk_backup_done, .fields = f_backup_done },
	[TG_MSG_RESTORE_REQ] = { 26, TG_TOK_SET, VNONE,
		.check = chk_restore_req, .fields = f_restore_req },
	[TG_MSG_RESTORE_OK] = { 44, TG_TOK_SET, VNONE, .fields = f_restore_ok },
	[TG_MSG_GET] = { 2, TG_TOK_SET,
		VAR(TG_VK_ARRAY, TG_ID_LEN, TG_PERR_COUNT, get, count, ids),
		.check = chk_get, .fields = f_get },
	[TG_MSG_ERROR] = { 24, TG_TOK_ANY,
		VAR(TG_VK_ARRAY, 1, TG_PERR_NAME, error, msg_len, msg),
		.check = chk_error, .fields = f_error },
	[TG_MSG_CLOSE] = { 2, TG_TOK_SET, VNONE, .check = chk_close, .fields = f_close },
	[TG_MSG_PING] = { 8, TG_TOK_SET, VNONE, .fields = f_ping },
	[TG_MSG_PONG] = { 14, TG_TOK_SET, VNONE, .fields = f_pong },
};

/* ---- table walkers ---- */

static void tg_fields_decode(const struct tg_field *f, const uint8_t *p, struct tg_msg *m)
{
	uint8_t *base = (uint8_t *)m;

	for (; f->kind != TG_FK_END; p += f->size, f++) {
		uint16_t v16;
		uint32_t v32;
		uint64_t v64;

		if (f->kind == TG_FK_BYTES) {
			memcpy(base + f->off, p, f->size);
			continue;
		}
		switch (f->size) {
		case 2:
			v16 = tg_ld16(p);
			memcpy(base + f->off, &v16, 2);
			break;
		case 4:
			v32 = tg_ld32(p);
			memcpy(base + f->off, &v32, 4);
			break;
		default:
			v64 = tg_ld64(p);
			memcpy(base + f->off, &v64, 8);
			break;
		}
	}
}

static void tg_fields_encode(const struct tg_field *f, uint8_t *p, const struct tg_msg *m)
{
	const uint8_t *base = (const uint8_t *)m;

	for (; f->kind != TG_FK_END; p += f->size, f++) {
		uint16_t v16;
		uint32_t v32;
		uint64_t v64;

		if (f->kind == TG_FK_BYTES) {
			memcpy(p, base + f->off, f->size);
			continue;
		}
		switch (f->size) {
		case 2:
			memcpy(&v16, base + f->off, 2);
			tg_st16(p, v16);
			break;
		case 4:
			memcpy(&v32, base + f->off, 4);
			tg_st32(p, v32);
			break;
		default:
			memcpy(&v64, base + f->off, 8);
			tg_st64(p, v64);
			break;
		}
	}
}

/*
 * The variable part's count and pointer are reached by offset so that one
 * walker serves every type. The pointer fields are all pointers to character
 * types, which share the representation of void * (C11 6.2.5p28), so moving
 * them through a const void * with memcpy is exact.
 */
static uint16_t tg_var_n(const struct tg_desc *d, const struct tg_msg *m)
{
	uint16_t n;

	memcpy(&n, (const uint8_t *)m + d->n_off, sizeof(n));
	return n;
}

static const void *tg_var_ptr(const struct tg_desc *d, const struct tg_msg *m)
{
	const void *p;

	memcpy(&p, (const uint8_t *)m + d->p_off, sizeof(p));
	return p;
}

static void tg_var_set(const struct tg_desc *d, struct tg_msg *m, const void *p)
{
	memcpy((uint8_t *)m + d->p_off, &p, sizeof(p));
}

/* Bytes the variable part occupies according to the fixed fields. */
static size_t tg_var_len(const struct tg_desc *d, const struct tg_msg *m)
{
	size_t n;

	if (d->vkind == TG_VK_NONE)
		return 0;
	n = tg_var_n(d, m);
	if (d->vkind == TG_VK_BITMAP)
		return (n + 7) / 8;
	return n * d->velem;
}

static enum tg_perr tg_token_check(const struct tg_desc *d, uint64_t token)
{
	if (d->tok == TG_TOK_ZERO && token != 0)
		return TG_PERR_TOKEN;
	if (d->tok == TG_TOK_SET && token == 0)
		return TG_PERR_TOKEN;
	return TG_PERR_OK;
}

/* ---- public entry points ---- */

enum tg_perr tg_proto_parse_hdr(const void *buf, size_t len, struct tg_hdr *h)
{
	const uint8_t *p = buf;

	if (!p || len < TG_HDR_LEN)
		return TG_PERR_SHORT;
	/* Fill the whole header before judging it: a caller answering a
	 * version mismatch wants the type and token it was sent. */
	h->version = p[2];
	h->type = p[3];
	h->flags = tg_ld16(p + 4);
	h->paylen = tg_ld16(p + 6);
	h->token = tg_ld64(p + 8);
	if (tg_ld16(p) != TG_PROTO_MAGIC)
		return TG_PERR_MAGIC;
	if (h->version != TG_PROTO_VERSION)
		return TG_PERR_VERSION;
	if (h->type == 0 || h->type >= TG_MSG__MAX)
		return TG_PERR_TYPE;
	if (h->flags != TG_HF_NONE)
		return TG_PERR_FLAGS;
	if (h->paylen != len - TG_HDR_LEN)
		return TG_PERR_LEN;
	return TG_PERR_OK;
}

enum tg_perr tg_proto_parse(const void *buf, size_t len, struct tg_msg *m)
{
	const uint8_t *body;
	const struct tg_desc *d;
	enum tg_perr e;
	size_t rest;

	e = tg_proto_parse_hdr(buf, len, &m->hdr);
	if (e != TG_PERR_OK)
		return e;
	body = (const uint8_t *)buf + TG_HDR_LEN;
	d = &descs[m->hdr.type];
	e = tg_token_check(d, m->hdr.token);
	if (e != TG_PERR_OK)
		return e;
	if (m->hdr.paylen < d->fixed)
		return TG_PERR_SHORT;
	tg_fields_decode(d->fields, body, m);

	rest = m->hdr.paylen - d->fixed;
	if (d->vkind == TG_VK_REST) {
		/* paylen is 16 bits, so the rest always fits the n field. */
		uint16_t n = (uint16_t)rest;

		memcpy((uint8_t *)m + d->n_off, &n, sizeof(n));
	} else if (tg_var_len(d, m) != rest) {
		return d->vperr;
	}
	if (d->vkind != TG_VK_NONE)
		tg_var_set(d, m, body + d->fixed);
	return d->check ? d->check(m) : TG_PERR_OK;
}

ssize_t tg_proto_build(void *buf, size_t cap, const struct tg_msg *m)
{
	const struct tg_desc *d;
	const void *var = NULL;
	uint8_t *p = buf;
	size_t vlen, total;
	enum tg_perr e;

	if (m->hdr.type == 0 || m->hdr.type >= TG_MSG__MAX)
		return -TG_PERR_TYPE;
	if (m->hdr.flags != TG_HF_NONE)
		return -TG_PERR_FLAGS;
	d = &descs[m->hdr.type];
	e = tg_token_check(d, m->hdr.token);
	if (e != TG_PERR_OK)
		return -(ssize_t)e;
	vlen = tg_var_len(d, m);
	if (d->vkind != TG_VK_NONE) {
		var = tg_var_ptr(d, m);
		if (vlen && !var)
			return -(ssize_t)d->vperr;
	}
	if (d->check) {
		e = d->check(m);
		if (e != TG_PERR_OK)
			return -(ssize_t)e;
	}
	/* The checks bound every variable part far below this; kept so that a
	 * future limit change cannot silently truncate paylen. */
	if (d->fixed + vlen > UINT16_MAX)
		return -TG_PERR_RANGE;
	total = TG_HDR_LEN + d->fixed + vlen;
	if (!p || cap < total)
		return -TG_PERR_BUF;

	tg_st16(p, TG_PROTO_MAGIC);
	p[2] = TG_PROTO_VERSION;
	p[3] = m->hdr.type;
	tg_st16(p + 4, TG_HF_NONE);
	tg_st16(p + 6, (uint16_t)(d->fixed + vlen));
	tg_st64(p + 8, m->hdr.token);
	tg_fields_encode(d->fields, p + TG_HDR_LEN, m);
	/* memmove: a caller may rebuild a message parsed from this buffer. */
	if (vlen)
		memmove(p + TG_HDR_LEN + d->fixed, var, vlen);
	return (ssize_t)total;
}

void tg_offer_entry(const struct tg_offer *o, unsigned i, struct tg_chunk_ref *out)
{
	const uint8_t *e;

	if (i >= o->count) {
		memset(out, 0, sizeof(*out));
		return;
	}
	e = o->entries + (size_t)i * TG_OFFER_ENTRY_LEN;
	memcpy(out->id, e, TG_ID_LEN);
	out->len = tg_ld32(e + TG_ID_LEN);
}

void tg_ack_entry(const struct tg_ack *a, unsigned i, struct tg_ack_entry *out)
{
	const uint8_t *e;

	if (i >= a->count) {
		memset(out, 0, sizeof(*out));
		return;
	}
	e = a->entries + (size_t)i * TG_ACK_ENTRY_LEN;
	memcpy(out->id, e, TG_ID_LEN);
	out->status = tg_ld16(e + TG_ID_LEN);
}

void tg_offer_entry_put(uint8_t *entries, unsigned i, const struct tg_chunk_ref *in)
{
	uint8_t *e = entries + (size_t)i * TG_OFFER_ENTRY_LEN;

	memcpy(e, in->id, TG_ID_LEN);
	tg_st32(e + TG_ID_LEN, in->len);
}

void tg_ack_entry_put(uint8_t *entries, unsigned i, const struct tg_ack_entry *in)
{
	uint8_t *e = entries + (size_t)i * TG_ACK_ENTRY_LEN;

	memcpy(e, in->id, TG_ID_LEN);
	tg_st16(e + TG_ID_LEN, in->status);
	tg_st16(e + TG_ID_LEN + 2, 0); /* reserved */
}
