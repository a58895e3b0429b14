/*
 * tg_store.h - the storage backend interface and the embedded `dir` backend.
 *
 * A stored object is one chunk after the pipeline: its payload (the chunk's
 * bytes, raw or igzip-compressed) cut into K data + M parity shards, or a
 * single shard (K=1, M=0) when the policy has no erasure coding. A backend
 * puts and gets whole objects; it never sees policies.
 *
 * Contract every backend keeps:
 *  - put() returns 0 only when every shard is durable (for `dir`: written to a
 *    temporary file, fsync'd, renamed into place, directory fsync'd). On any
 *    failure nothing partial is left visible under the final names.
 *  - Objects are per organization: the same chunk id under two organizations
 *    is two objects, and get() for one org never returns the other's.
 *  - get() verifies each shard's checksum, rebuilds up to M missing or corrupt
 *    shards from parity, and reports exactly which shards were bad.
 *  - A future RADOS or S3 backend implements the same ops table.
 */
#ifndef TG_STORE_H
#define TG_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "tg_ec.h"
#include "tg_types.h"

enum tg_enc {
	TG_ENC_RAW = 0,   /* payload is the chunk's bytes */
	TG_ENC_IGZIP = 1, /* payload is raw DEFLATE from igzip */
};

struct tg_obj_meta {
	struct tg_chunk_id id;
	uint32_t orig_len;  /* the chunk's bytes, 1..TG_CHUNK_MAX */
	uint32_t enc_len;   /* payload bytes (compressed or = orig_len) */
	uint8_t enc;        /* enum tg_enc */
	uint8_t k, m;       /* K=1, M=0: one unsharded copy */
	uint32_t shard_len; /* bytes per shard; K*shard_len >= enc_len */
};

/* An object to put: meta plus K+M shard pointers of shard_len bytes each. */
struct tg_obj {
	struct tg_obj_meta meta;
	const uint8_t *shards[TG_EC_SHARDS_MAX];
};

/* What a get() found. Bit i of a mask is shard i. */
struct tg_store_report {
	uint32_t missing;   /* shard file absent / unreadable */
	uint32_t corrupt;   /* present but failed its checksum or header check */
	uint32_t rebuilt;   /* reconstructed from parity */
	uint8_t k, m;
};

struct tg_store;

struct tg_store_ops {
	const char *name;
	int (*put)(struct tg_store *st, const struct tg_org_id *org, const struct tg_obj *obj);
	int (*get)(struct tg_store *st, const struct tg_org_id *org, const struct tg_chunk_id *id,
		   uint8_t *payload, size_t cap, struct tg_obj_meta *meta,
		   struct tg_store_report *rep);
	int (*exists)(struct tg_store *st, const struct tg_org_id *org, const struct tg_chunk_id *id);
	void (*close)(struct tg_store *st);
};

struct tg_store {
	const struct tg_store_ops *ops;
};

/*
 * put: 0 when all shards are durable; -ENOSPC, -EROFS, -EIO, -EACCES from the
 * file system; -EINVAL for an object that violates the meta rules.
 */
static inline int tg_store_put(struct tg_store *st, const struct tg_org_id *org,
			       const struct tg_obj *obj)
{
	return st->ops->put(st, org, obj);
}

/*
 * get: the payload (enc_len bytes) into payload[cap], meta filled, rep filled
 * (rep may be NULL). Returns 0 (possibly after a rebuild, see rep), -ENOENT if
 * the organization has no such object, -EUCLEAN if more than M shards are
 * missing or corrupt (rep says which), -ENOSPC if cap < enc_len, -EIO.
 * cap must also leave room for K * shard_len bytes (the shards are
 * reassembled in place): use tg_store_get_cap().
 */
static inline int tg_store_get(struct tg_store *st, const struct tg_org_id *org,
			       const struct tg_chunk_id *id, uint8_t *payload, size_t cap,
			       struct tg_obj_meta *meta, struct tg_store_report *rep)
{
	return st->ops->get(st, org, id, payload, cap, meta, rep);
}

/* 1 if the org has the object (at least one readable shard header), 0 if not, -errno. */
static inline int tg_store_exists(struct tg_store *st, const struct tg_org_id *org,
				  const struct tg_chunk_id *id)
{
	return st->ops->exists(st, org, id);
}

static inline void tg_store_close(struct tg_store *st)
{
	if (st)
		st->ops->close(st);
}

/* Payload buffer size that get() needs for any object of orig_len <= max_chunk. */
size_t tg_store_get_cap(size_t max_chunk);

/*
 * The `dir` backend: ndirs shard directories (each a failure domain: a disk,
 * a mount), 1 <= ndirs <= TG_EC_SHARDS_MAX. An object with K+M shards needs
 * ndirs >= K+M; shard i of a chunk goes to dirs[(r + i) % ndirs] where r is
 * derived from the chunk id, so load spreads over all directories. Layout:
 *   <dir>/<org hex>/<first 2 hex of id>/<id hex>
 * Directories must exist; per-org subdirectories are created on demand.
 */
struct tg_store *tg_store_dir_open(const char *const *dirs, unsigned ndirs, int *err);

#endif /* TG_STORE_H */
