/*
 * tg_chunk.h - the chunk pipeline: verify, dedup, then the organization's
 * storage policy (compress, erasure-code, both), and the reverse for reads.
 *
 * Policy strings (DESIGN.md): "compress", "ec:K+M", "compress+ec:K+M"
 * with 2<=K<=16, 1<=M<=4. A chunk that does not shrink under compression is
 * stored raw. tg_pipe_encode() produces shards but does no I/O, so the
 * gateway can encode on a worker lcore and put() on an I/O thread;
 * tg_pipe_ingest() / tg_pipe_read() are the synchronous whole path used by
 * tests, the bench and the restore side.
 *
 * The dedup index is per organization by construction: its key is
 * (org, chunk id), so one organization can never learn, through dedup, that
 * another holds a chunk.
 */
#ifndef TG_CHUNK_H
#define TG_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_store.h"
#include "tg_types.h"

#define TG_POLICY_STR_MAX 32

struct tg_policy {
	bool compress;
	uint8_t level;   /* igzip level 0..3 (default 1) */
	uint8_t k, m;    /* k == 0: no erasure coding */
};

/* Parse a policy string; 0 or -EINVAL (unknown word, K/M out of range,
 * trailing garbage). */
int tg_policy_parse(const char *s, struct tg_policy *p);
/* Canonical string, e.g. "compress+ec:8+3"; returns length or -ENOSPC. */
int tg_policy_format(const struct tg_policy *p, char *buf, size_t cap);

/* ---- dedup index: (org, chunk id) -> known durable ---- */
struct tg_dedup;
/* capacity: entries kept in memory (LRU-free open addressing; when full the
 * oldest probe run is overwritten and misses fall back to the store). */
struct tg_dedup *tg_dedup_create(size_t capacity, int *err);
void tg_dedup_destroy(struct tg_dedup *d);
bool tg_dedup_lookup(struct tg_dedup *d, const struct tg_org_id *org, const struct tg_chunk_id *id);
void tg_dedup_insert(struct tg_dedup *d, const struct tg_org_id *org, const struct tg_chunk_id *id);

/* ---- the pipeline, one per worker (owns scratch buffers and codecs) ---- */
struct tg_pipe;

struct tg_pipe *tg_pipe_create(size_t max_chunk, int *err);
void tg_pipe_destroy(struct tg_pipe *p);

/*
 * Verify XXH3-128(data) == *id (-EBADMSG if not), then encode under policy
 * into out (shard pointers into the pipe's scratch or, when data_cap is
 * large enough for K*shard_len, into data itself, whose tail is then
 * zero-padded). out is valid until the next call on p.
 */
int tg_pipe_encode(struct tg_pipe *p, const struct tg_policy *pol, const struct tg_chunk_id *id,
		   uint8_t *data, size_t len, size_t data_cap, struct tg_obj *out);

/*
 * Decode a payload read from a store into out (cap >= meta->orig_len):
 * decompress if needed and verify the chunk id. -EBADMSG if the result does
 * not hash to meta->id.
 */
int tg_pipe_decode(struct tg_pipe *p, const struct tg_obj_meta *meta, const uint8_t *payload,
		   uint8_t *out, size_t cap);

enum tg_ingest_status {
	TG_INGEST_STORED = 0, /* new, now durable */
	TG_INGEST_DUP = 1,    /* already durable for this org, nothing written */
};

struct tg_ingest_res {
	enum tg_ingest_status status;
	uint32_t stored_bytes;  /* payload bytes (after compression, before EC) */
	uint8_t enc;            /* enum tg_enc used */
};

/* Verify, dedup (index then store), encode and put. 0 or -errno. */
int tg_pipe_ingest(struct tg_pipe *p, struct tg_store *st, struct tg_dedup *dd,
		   const struct tg_org_id *org, const struct tg_policy *pol,
		   const struct tg_chunk_id *id, uint8_t *data, size_t len, size_t data_cap,
		   struct tg_ingest_res *res);

/* Get, rebuild if needed, decode and verify into out; *len = chunk bytes.
 * Errors as tg_store_get(), plus -EBADMSG for a payload that fails its id. */
int tg_pipe_read(struct tg_pipe *p, struct tg_store *st, const struct tg_org_id *org,
		 const struct tg_chunk_id *id, uint8_t *out, size_t cap, size_t *len,
		 struct tg_store_report *rep);

#endif /* TG_CHUNK_H */
