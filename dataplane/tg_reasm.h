/*
 * tg_reasm.h - sessions' chunk reassembly with hard memory bounds.
 *
 * Fragments of a chunk arrive in any order, duplicated or overlapping. Each
 * chunk in flight owns one contiguous buffer from the worker's pool (so the
 * pipeline hashes and erasure-codes it in place) and a bitmap of received
 * TG_FRAG_UNIT-sized units. A fragment past the chunk's end, misaligned, with
 * a chunk length or tag differing from the chunk's first fragment, is dropped
 * with a reason. Memory is bounded three ways, each enforced and counted:
 * chunks in flight per session, bytes per session, bytes in total.
 *
 * Buffers come from per-size-class free lists (power-of-two classes from
 * 64 KiB to the max chunk, each padded so K data shards of any EC policy can
 * point into it); a buffer is malloc'd only when its class's list is empty
 * and the total bound allows it, and is reused afterwards: nothing is
 * allocated per packet. One struct tg_reasm per worker; not thread-safe.
 */
#ifndef TG_REASM_H
#define TG_REASM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_proto.h"
#include "tg_types.h"

struct tg_reasm_cfg {
	size_t mem_total;          /* bytes of chunk buffers for all sessions */
	size_t mem_per_session;    /* bytes of chunk buffers one session may hold */
	unsigned slots_per_session;/* chunks in flight per session (its credits) */
	uint32_t max_chunk;        /* <= TG_CHUNK_MAX */
};

enum tg_ra {
	/* accepted */
	TG_RA_PARTIAL = 0,   /* stored; chunk not complete yet */
	TG_RA_COMPLETE,      /* stored; chunk complete, *out set */
	TG_RA_DUP,           /* every unit already held: nothing new */
	/* dropped, one counter each */
	TG_RA_DROP_TOO_BIG,  /* chunk_len 0 or > max_chunk */
	TG_RA_DROP_RANGE,    /* off/len misaligned, zero, or past chunk_len */
	TG_RA_DROP_MISMATCH, /* chunk_len or tag differs from the chunk's first fragment */
	TG_RA_DROP_AUTH,     /* new chunk whose tag the verify callback refused */
	TG_RA_DROP_SLOTS,    /* session already has slots_per_session chunks in flight */
	TG_RA_DROP_SESS_MEM, /* session's byte bound reached */
	TG_RA_DROP_MEM,      /* worker's total byte bound reached */
	TG_RA__MAX
};

const char *tg_ra_name(enum tg_ra r);

/* A chunk being reassembled; read-only to callers. */
struct tg_rchunk {
	struct tg_chunk_id id;
	uint32_t len;        /* chunk length */
	uint32_t received;   /* bytes received so far (distinct) */
	size_t cap;          /* buffer capacity, >= len, padded for EC */
	uint8_t tag[TG_TAG_LEN];
	uint8_t *buf;
	bool complete;
	/* private: bitmap, size class, list links */
	uint64_t *units;
	uint32_t nunits;
	uint8_t cls;
	uint64_t last_ms;    /* time of the last new fragment (for SACK timers) */
};

struct tg_rsess;  /* reassembly state of one session */
struct tg_reasm;  /* one per worker: pool, bounds, counters */

struct tg_reasm_stats {
	uint64_t frags[TG_RA__MAX];   /* fragments by outcome */
	uint64_t chunks_completed;
	uint64_t bytes_in_use;        /* buffer bytes held now */
	uint64_t bytes_peak;
	uint64_t bufs_allocated;      /* buffers ever malloc'd (pool growth) */
	uint32_t chunks_in_flight;
	uint32_t sessions;
};

struct tg_reasm *tg_reasm_create(const struct tg_reasm_cfg *cfg, int *err);
/* Frees every buffer; sessions must be closed first (their memory is freed too). */
void tg_reasm_destroy(struct tg_reasm *r);

struct tg_rsess *tg_reasm_sess_open(struct tg_reasm *r);
/* Drops every incomplete chunk of the session and returns its buffers. */
void tg_reasm_sess_close(struct tg_reasm *r, struct tg_rsess *s);

/*
 * Called once when a fragment would open a new chunk, before any memory is
 * taken: returns true if d's tag is authentic for this session. Lets the
 * caller verify the per-chunk tag (an HMAC) once per chunk, never per packet.
 */
typedef bool (*tg_reasm_verify_fn)(void *arg, const struct tg_data *d);

/*
 * Add one parsed DATA fragment (now_ms: a monotonic clock reading). On
 * TG_RA_COMPLETE *out is the complete chunk: it stays owned by the session
 * until tg_reasm_release(). verify may be NULL (tests).
 */
enum tg_ra tg_reasm_add(struct tg_reasm *r, struct tg_rsess *s, const struct tg_data *d,
			uint64_t now_ms, tg_reasm_verify_fn verify, void *arg,
			struct tg_rchunk **out);

/* Give a chunk's buffer back (complete or not: abandoning it frees it too). */
void tg_reasm_release(struct tg_reasm *r, struct tg_rsess *s, struct tg_rchunk *c);

/* The session's chunk with this id, or NULL. */
struct tg_rchunk *tg_reasm_find(struct tg_rsess *s, const struct tg_chunk_id *id);

/* Iterate a session's chunks in flight: i from 0 while it returns non-NULL. */
struct tg_rchunk *tg_reasm_sess_chunk(struct tg_rsess *s, unsigned i);

/*
 * Fill a SACK body for c starting at unit_base: bitmap (cap bytes) of held
 * units, at most TG_SACK_UNITS_MAX. Returns the number of units described.
 */
unsigned tg_reasm_sack(const struct tg_rchunk *c, uint32_t unit_base, uint8_t *bitmap, size_t cap);

void tg_reasm_get_stats(const struct tg_reasm *r, struct tg_reasm_stats *st);
uint32_t tg_reasm_sess_inflight(const struct tg_rsess *s);
size_t tg_reasm_sess_bytes(const struct tg_rsess *s);

#endif /* TG_REASM_H */
