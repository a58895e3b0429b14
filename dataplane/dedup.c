/*
 * dedup.c - the in-memory dedup index: (organization, chunk id) -> "known
 * durable". It is a cache in front of tg_store_exists(), not the truth: a
 * miss costs a store lookup, never a wrong answer, so it may forget.
 *
 * Open addressing over one array allocated at create, nothing allocated
 * afterwards (it sits on the packet path). The key is the whole (org, id)
 * pair, so one organization's entry can never answer another's lookup.
 * Chunk ids are XXH3-128 and already uniform; the org GUID is folded in with
 * a multiply so the same chunk under two orgs lands in different places.
 * The table has at least twice `capacity` slots (a power of two). A probe
 * run is at most TG_DEDUP_PROBE slots; when all of them are taken the
 * oldest entry of the run (by insertion stamp) is overwritten.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tg_chunk.h"

#define TG_DEDUP_PROBE 8
#define TG_DEDUP_MAX ((size_t)1 << 30)

struct tg_dedup_ent {
	struct tg_org_id org;
	struct tg_chunk_id id;
	uint32_t stamp; /* insertion order, wraps; only compared within a run */
	uint32_t used;
};

struct tg_dedup {
	size_t mask;
	uint32_t clock;
	struct tg_dedup_ent *ent;
};

static uint64_t tg_dedup_load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static size_t tg_dedup_hash(const struct tg_org_id *org, const struct tg_chunk_id *id)
{
	uint64_t o = tg_dedup_load64(org->b) ^ (tg_dedup_load64(org->b + 8) * 0x9e3779b97f4a7c15ull);
	uint64_t h = tg_dedup_load64(id->b) ^ tg_dedup_load64(id->b + 8);

	h ^= o * 0xff51afd7ed558ccdull;
	h ^= h >> 29;
	return (size_t)h;
}

struct tg_dedup *tg_dedup_create(size_t capacity, int *err)
{
	struct tg_dedup *d;
	size_t n = TG_DEDUP_PROBE;

	if (capacity == 0 || capacity > TG_DEDUP_MAX) {
		*err = -EINVAL;
		return NULL;
	}
	/* Twice the slots: at load <= 1/2 a bounded probe run rarely fills,
	 * so `capacity` entries really do stay cached. */
	while (n < 2 * capacity)
		n <<= 1;
	d = calloc(1, sizeof(*d));
	if (!d)
		goto err_nomem;
	d->ent = calloc(n, sizeof(*d->ent));
	if (!d->ent)
		goto err_free;
	d->mask = n - 1;
	*err = 0;
	return d;

err_free:
	free(d);
err_nomem:
	*err = -ENOMEM;
	return NULL;
}

void tg_dedup_destroy(struct tg_dedup *d)
{
	if (!d)
		return;
	free(d->ent);
	free(d);
}

static bool tg_dedup_match(const struct tg_dedup_ent *e, const struct tg_org_id *org,
			   const struct tg_chunk_id *id)
{
	return tg_id_eq(&e->id, id) && tg_id_eq(&e->org, org);
}

bool tg_dedup_lookup(struct tg_dedup *d, const struct tg_org_id *org, const struct tg_chunk_id *id)
{
	size_t h = tg_dedup_hash(org, id);
	unsigned i;

	for (i = 0; i < TG_DEDUP_PROBE; i++) {
		const struct tg_dedup_ent *e = &d->ent[(h + i) & d->mask];

		/* Slots are never emptied, so an empty one ends the run. */
		if (!e->used)
			return false;
		if (tg_dedup_match(e, org, id))
			return true;
	}
	return false;
}

void tg_dedup_insert(struct tg_dedup *d, const struct tg_org_id *org, const struct tg_chunk_id *id)
{
	size_t h = tg_dedup_hash(org, id);
	struct tg_dedup_ent *victim = NULL;
	unsigned i;

	for (i = 0; i < TG_DEDUP_PROBE; i++) {
		struct tg_dedup_ent *e = &d->ent[(h + i) & d->mask];

		if (!e->used) {
			victim = e;
			break;
		}
		if (tg_dedup_match(e, org, id))
			return;
		/* Oldest = furthest behind the clock, which survives wrap. */
		if (!victim || d->clock - e->stamp > d->clock - victim->stamp)
			victim = e;
	}
	victim->org = *org;
	victim->id = *id;
	victim->stamp = d->clock++;
	victim->used = 1;
}
