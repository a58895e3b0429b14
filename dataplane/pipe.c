/*
 * pipe.c - the chunk pipeline: verify the chunk id, dedup per organization,
 * apply the organization's storage policy (compress, erasure-code, both),
 * put; and the reverse for reads (get, rebuild, decompress, verify).
 *
 * One struct tg_pipe per worker. Every buffer the hot path needs is
 * allocated at create for the largest chunk: the compression output (which
 * doubles as the data-shard stripe, so it has room for K*shard_len), the
 * parity shards, and the payload buffer for reads. Codecs are created on
 * first use and kept: one igzip context per level, one tg_ec per (K, M)
 * (each caches its decode tables), so steady state allocates nothing.
 *
 * Zero copy where it can: when the payload buffer (the caller's data for raw
 * chunks, our scratch for compressed ones) has room for K*shard_len bytes,
 * the data shards point straight into it and only the tail is zero-padded.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tg_chunk.h"
#include "tg_compress.h"
#include "tg_ec.h"
#include "tg_proto.h"
#include "tg_store.h"

#define TG_PIPE_ALIGN 64
#define TG_PIPE_LEVELS 4

struct tg_pipe {
	size_t max_chunk;
	size_t stripe_cap;   /* bytes of stripe: max_chunk + padding for any K */
	size_t parity_cap;   /* bytes per parity shard buffer */
	size_t read_cap;     /* tg_store_get_cap(max_chunk) */
	uint8_t *stripe;     /* compressed payload / copied raw stripe */
	uint8_t *parity[TG_EC_M_MAX];
	uint8_t *read_buf;
	struct tg_comp *comp[TG_PIPE_LEVELS];
	struct tg_ec *ec[TG_EC_K_MAX + 1][TG_EC_M_MAX + 1];
};

static size_t tg_pipe_round(size_t n)
{
	return (n + TG_PIPE_ALIGN - 1) & ~(size_t)(TG_PIPE_ALIGN - 1);
}

static uint8_t *tg_pipe_alloc(size_t n)
{
	void *p;

	if (posix_memalign(&p, TG_PIPE_ALIGN, tg_pipe_round(n)) != 0)
		return NULL;
	return p;
}

struct tg_pipe *tg_pipe_create(size_t max_chunk, int *err)
{
	struct tg_pipe *p;
	unsigned i;

	if (max_chunk == 0 || max_chunk > TG_CHUNK_MAX) {
		*err = -EINVAL;
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		goto err_nomem;
	p->max_chunk = max_chunk;
	/* K * round64(ceil(len / K)) <= len + 64 * K */
	p->stripe_cap = max_chunk + TG_PIPE_ALIGN * TG_EC_K_MAX;
	/* The widest shard is K = 2's. */
	p->parity_cap = tg_pipe_round(max_chunk / TG_EC_K_MIN + 1);
	p->read_cap = tg_store_get_cap(max_chunk);
	p->stripe = tg_pipe_alloc(p->stripe_cap);
	p->read_buf = tg_pipe_alloc(p->read_cap);
	if (!p->stripe || !p->read_buf)
		goto err_free;
	for (i = 0; i < TG_EC_M_MAX; i++) {
		p->parity[i] = tg_pipe_alloc(p->parity_cap);
		if (!p->parity[i])
			goto err_free;
	}
	*err = 0;
	return p;

err_free:
	tg_pipe_destroy(p);
err_nomem:
	*err = -ENOMEM;
	return NULL;
}

void tg_pipe_destroy(struct tg_pipe *p)
{
	unsigned i, j;

	if (!p)
		return;
	for (i = 0; i < TG_PIPE_LEVELS; i++)
		tg_comp_destroy(p->comp[i]);
	for (i = 0; i <= TG_EC_K_MAX; i++)
		for (j = 0; j <= TG_EC_M_MAX; j++)
			tg_ec_destroy(p->ec[i][j]);
	for (i = 0; i < TG_EC_M_MAX; i++)
		free(p->parity[i]);
	free(p->read_buf);
	free(p->stripe);
	free(p);
}

static bool tg_pipe_policy_ok(const struct tg_policy *pol)
{
	if (!pol->compress && pol->k == 0)
		return false;
	if (pol->compress && pol->level >= TG_PIPE_LEVELS)
		return false;
	if (pol->k != 0 && (pol->k < TG_EC_K_MIN || pol->k > TG_EC_K_MAX ||
			    pol->m < TG_EC_M_MIN || pol->m > TG_EC_M_MAX))
		return false;
	return true;
}

static int tg_pipe_verify(const uint8_t *data, size_t len, const struct tg_chunk_id *id)
{
	struct tg_chunk_id h;

	tg_chunk_hash(data, len, &h);
	return tg_id_eq(&h, id) ? 0 : -EBADMSG;
}

/* Compress into the stripe if the policy asks and the chunk shrinks.
 * Returns the compressed length, 0 to store raw, or -errno. */
static long tg_pipe_compress(struct tg_pipe *p, const struct tg_policy *pol,
			     const uint8_t *data, size_t len)
{
	struct tg_comp **c = &p->comp[pol->level];
	long n;
	int err;

	if (!pol->compress || len < 2)
		return 0;
	if (!*c) {
		*c = tg_comp_create(pol->level, &err);
		if (!*c)
			return err;
	}
	/* cap < len: only a payload that shrinks is worth the decompress. */
	n = tg_comp_compress(*c, data, len, p->stripe, len - 1);
	return n == -ENOSPC ? 0 : n;
}

static struct tg_ec *tg_pipe_ec(struct tg_pipe *p, unsigned k, unsigned m, int *err)
{
	struct tg_ec **e = &p->ec[k][m];

	if (!*e)
		*e = tg_ec_create(k, m, err);
	return *e;
}

/* Everything tg_pipe_encode does after the id check. */
static int tg_pipe_encode_verified(struct tg_pipe *p, const struct tg_policy *pol,
				   const struct tg_chunk_id *id, uint8_t *data, size_t len,
				   size_t data_cap, struct tg_obj *out)
{
	uint8_t *payload = data, *shards[TG_EC_SHARDS_MAX];
	size_t enc_len = len, payload_cap = data_cap, shard_len;
	struct tg_obj_meta *meta = &out->meta;
	unsigned i, k, m;
	long n;
	int err;

	n = tg_pipe_compress(p, pol, data, len);
	if (n < 0)
		return (int)n;
	memset(out, 0, sizeof(*out));
	meta->enc = TG_ENC_RAW;
	if (n > 0) {
		payload = p->stripe;
		payload_cap = p->stripe_cap;
		enc_len = (size_t)n;
		meta->enc = TG_ENC_IGZIP;
	}

	if (pol->k == 0) {
		k = 1;
		m = 0;
		shard_len = enc_len;
		out->shards[0] = payload;
	} else {
		struct tg_ec *ec = tg_pipe_ec(p, pol->k, pol->m, &err);

		if (!ec)
			return err;
		k = pol->k;
		m = pol->m;
		shard_len = tg_ec_shard_len(ec, enc_len);
		/* Raw data in a buffer without room for the padding is copied
		 * into the stripe by tg_ec_encode (shards there, data here). */
		if (payload_cap < k * shard_len)
			payload_cap = 0;
		for (i = 0; i < k; i++)
			shards[i] = (payload_cap ? payload : p->stripe) + i * shard_len;
		for (i = 0; i < m; i++)
			shards[k + i] = p->parity[i];
		err = tg_ec_encode(ec, payload, enc_len, shards, shard_len);
		if (err)
			return err;
		for (i = 0; i < k + m; i++)
			out->shards[i] = shards[i];
	}
	meta->id = *id;
	meta->orig_len = (uint32_t)len;
	meta->enc_len = (uint32_t)enc_len;
	meta->k = (uint8_t)k;
	meta->m = (uint8_t)m;
	meta->shard_len = (uint32_t)shard_len;
	return 0;
}

static int tg_pipe_check_in(const struct tg_pipe *p, const struct tg_policy *pol,
			    const uint8_t *data, size_t len, size_t data_cap)
{
	if (!data || len == 0 || len > p->max_chunk || data_cap < len)
		return -EINVAL;
	if (!pol || !tg_pipe_policy_ok(pol))
		return -EINVAL;
	return 0;
}

int tg_pipe_encode(struct tg_pipe *p, const struct tg_policy *pol, const struct tg_chunk_id *id,
		   uint8_t *data, size_t len, size_t data_cap, struct tg_obj *out)
{
	int err = tg_pipe_check_in(p, pol, data, len, data_cap);

	if (err)
		return err;
	err = tg_pipe_verify(data, len, id);
	if (err)
		return err;
	return tg_pipe_encode_verified(p, pol, id, data, len, data_cap, out);
}

int tg_pipe_decode(struct tg_pipe *p, const struct tg_obj_meta *meta, const uint8_t *payload,
		   uint8_t *out, size_t cap)
{
	if (!meta || !payload || !out)
		return -EINVAL;
	if (meta->orig_len == 0 || meta->enc_len == 0)
		return -EBADMSG;
	if (cap < meta->orig_len)
		return -ENOSPC;
	switch (meta->enc) {
	case TG_ENC_RAW:
		if (meta->enc_len != meta->orig_len)
			return -EBADMSG;
		if (out != payload)
			memmove(out, payload, meta->orig_len);
		break;
	case TG_ENC_IGZIP:
		if (meta->enc_len >= meta->orig_len)
			return -EBADMSG; /* we only ever store what shrank */
		if (tg_comp_decompress(payload, meta->enc_len, out, meta->orig_len))
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	return tg_pipe_verify(out, meta->orig_len, &meta->id);
}

int tg_pipe_ingest(struct tg_pipe *p, struct tg_store *st, struct tg_dedup *dd,
		   const struct tg_org_id *org, const struct tg_policy *pol,
		   const struct tg_chunk_id *id, uint8_t *data, size_t len, size_t data_cap,
		   struct tg_ingest_res *res)
{
	struct tg_obj obj;
	int err;

	if (!st || !org || !id || !res)
		return -EINVAL;
	err = tg_pipe_check_in(p, pol, data, len, data_cap);
	if (err)
		return err;
	/* Verify before dedup: a sender must not get "already stored" for
	 * bytes that are not the chunk it names. */
	err = tg_pipe_verify(data, len, id);
	if (err)
		return err;

	memset(res, 0, sizeof(*res));
	res->status = TG_INGEST_DUP;
	if (dd && tg_dedup_lookup(dd, org, id))
		return 0;
	err = tg_store_exists(st, org, id);
	if (err < 0)
		return err;
	if (err > 0) {
		if (dd)
			tg_dedup_insert(dd, org, id);
		return 0;
	}

	err = tg_pipe_encode_verified(p, pol, id, data, len, data_cap, &obj);
	if (err)
		return err;
	err = tg_store_put(st, org, &obj);
	if (err)
		return err;
	/* Only what is durable goes into the index. */
	if (dd)
		tg_dedup_insert(dd, org, id);
	res->status = TG_INGEST_STORED;
	res->stored_bytes = obj.meta.enc_len;
	res->enc = obj.meta.enc;
	return 0;
}

int tg_pipe_read(struct tg_pipe *p, struct tg_store *st, const struct tg_org_id *org,
		 const struct tg_chunk_id *id, uint8_t *out, size_t cap, size_t *len,
		 struct tg_store_report *rep)
{
	struct tg_obj_meta meta;
	int err;

	if (!st || !org || !id || !out || !len)
		return -EINVAL;
	err = tg_store_get(st, org, id, p->read_buf, p->read_cap, &meta, rep);
	if (err)
		return err;
	if (!tg_id_eq(&meta.id, id))
		return -EBADMSG;
	err = tg_pipe_decode(p, &meta, p->read_buf, out, cap);
	if (err)
		return err;
	*len = meta.orig_len;
	return 0;
}
