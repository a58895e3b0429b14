/*
 * timing.c - the client's small pure pieces: the clock, the RTO estimator
 * of protocol.md 5.1 (RFC 6298: alpha 1/8, beta 1/4, RTO = SRTT + 4*RTTVAR,
 * clamped to 100 ms..5 s, doubled per retry), the credit window of 5.4 and
 * an id -> index map. Kept apart from the engines so unit tests can drive
 * them with exact numbers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tgc.h"

uint64_t tgc_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t clamp_rto(uint64_t v)
{
	if (v < TGC_RTO_MIN_US)
		return TGC_RTO_MIN_US;
	if (v > TGC_RTO_MAX_US)
		return TGC_RTO_MAX_US;
	return v;
}

void tgc_rto_init(struct tgc_rto *r)
{
	memset(r, 0, sizeof(*r));
	r->rto_us = TGC_RTO_INIT_US;
}

void tgc_rto_sample(struct tgc_rto *r, uint64_t rtt_us)
{
	if (!r->have) {
		r->srtt_us = rtt_us;
		r->rttvar_us = rtt_us / 2;
		r->have = true;
	} else {
		uint64_t err = r->srtt_us > rtt_us ? r->srtt_us - rtt_us : rtt_us - r->srtt_us;

		/* RTTVAR first: it uses the SRTT before this sample (RFC 6298 2.3) */
		r->rttvar_us = (3 * r->rttvar_us + err) / 4;
		r->srtt_us = (7 * r->srtt_us + rtt_us) / 8;
	}
	r->rto_us = clamp_rto(r->srtt_us + 4 * r->rttvar_us);
}

uint64_t tgc_rto_backoff(uint64_t rto_us)
{
	return clamp_rto(rto_us * 2);
}

void tgc_win_init(struct tgc_window *w, uint16_t credits, uint32_t credit_bytes)
{
	memset(w, 0, sizeof(*w));
	w->credits = credits;
	w->credit_bytes = credit_bytes;
}

void tgc_win_update(struct tgc_window *w, uint16_t credits, uint32_t credit_bytes)
{
	w->credits = credits;
	w->credit_bytes = credit_bytes;
}

bool tgc_win_can_send(const struct tgc_window *w, uint32_t len)
{
	return (uint64_t)w->chunks + 1 <= w->credits &&
	       w->bytes + len <= (uint64_t)w->credit_bytes;
}

void tgc_win_add(struct tgc_window *w, uint32_t len)
{
	w->chunks++;
	w->bytes += len;
}

void tgc_win_remove(struct tgc_window *w, uint32_t len)
{
	if (w->chunks)
		w->chunks--;
	w->bytes = w->bytes >= len ? w->bytes - len : 0;
}

/* ---- id map ---- */

static size_t slot_of(const uint8_t id[TG_ID_LEN], size_t cap)
{
	uint64_t h;

	memcpy(&h, id + 8, sizeof(h)); /* ids are hashes: any 8 bytes do */
	return (size_t)(h * 0x9e3779b97f4a7c15ull >> 7) & (cap - 1);
}

int tgc_idmap_init(struct tgc_idmap *m, size_t hint)
{
	size_t cap = 64;

	while (cap < hint * 2)
		cap <<= 1;
	m->slots = malloc(cap * sizeof(*m->slots));
	if (!m->slots)
		return -ENOMEM;
	for (size_t i = 0; i < cap; i++)
		m->slots[i].val = UINT32_MAX;
	m->cap = cap;
	m->n = 0;
	return 0;
}

void tgc_idmap_free(struct tgc_idmap *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->n = 0;
}

uint32_t tgc_idmap_get(const struct tgc_idmap *m, const uint8_t id[TG_ID_LEN])
{
	for (size_t i = slot_of(id, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].val == UINT32_MAX)
			return UINT32_MAX;
		if (!memcmp(m->slots[i].id, id, TG_ID_LEN))
			return m->slots[i].val;
	}
}

static int idmap_grow(struct tgc_idmap *m)
{
	struct tgc_idmap n;

	if (tgc_idmap_init(&n, m->cap))
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].val != UINT32_MAX)
			tgc_idmap_put(&n, m->slots[i].id, m->slots[i].val);
	free(m->slots);
	*m = n;
	return 0;
}

uint32_t tgc_idmap_put(struct tgc_idmap *m, const uint8_t id[TG_ID_LEN], uint32_t val)
{
	size_t i;

	if ((m->n + 1) * 2 > m->cap && idmap_grow(m))
		return UINT32_MAX;
	for (i = slot_of(id, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].val == UINT32_MAX)
			break;
		if (!memcmp(m->slots[i].id, id, TG_ID_LEN))
			return m->slots[i].val;
	}
	memcpy(m->slots[i].id, id, TG_ID_LEN);
	m->slots[i].val = val;
	m->n++;
	return val;
}
