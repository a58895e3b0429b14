/*
 * cdc.c - FastCDC content-defined chunking (see tg_cdc.h for why).
 *
 * The gear hash shifts left one bit per byte, so bit k of the fingerprint
 * depends on the last k+1 bytes: masks therefore select HIGH bits, which see
 * a full 64-byte window. The small mask has two more bits than log2(avg)
 * and the large mask two fewer (normalization level 2 of the paper), which
 * narrows the chunk-size distribution around avg.
 */
#include <errno.h>
#include <pthread.h>

#include "tg_cdc.h"
#include "tg_proto.h"

static uint64_t gear[256];

/* splitmix64 from a fixed seed: the table is part of the chunk format. */
static void gear_init(void)
{
	uint64_t x = 0x7469646567617465ull; /* "tidegate" */

	for (unsigned i = 0; i < 256; i++) {
		uint64_t z = (x += 0x9e3779b97f4a7c15ull);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		gear[i] = z ^ (z >> 31);
	}
}

static uint64_t high_mask(unsigned bits)
{
	return bits >= 64 ? ~0ull : ~0ull << (64 - bits);
}

int tg_cdc_init(struct tg_cdc *c, uint32_t min, uint32_t avg, uint32_t max)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	unsigned bits = 0;

	if (!(min >= 64 && min < avg && avg < max && max <= TG_CHUNK_MAX) || (avg & (avg - 1)))
		return -EINVAL;
	while ((1u << bits) < avg)
		bits++;
	if (bits < 4)
		return -EINVAL;
	pthread_once(&once, gear_init);
	c->min = min;
	c->avg = avg;
	c->max = max;
	c->mask_s = high_mask(bits + 2);
	c->mask_l = high_mask(bits - 2);
	return 0;
}

size_t tg_cdc_cut(const struct tg_cdc *c, const uint8_t *p, size_t n)
{
	uint64_t fp = 0;
	size_t i, end, mid;

	if (n <= c->min)
		return n;
	end = n < c->max ? n : c->max;
	mid = end < c->avg ? end : c->avg;
	/* the fingerprint must see a full window before the first cut point */
	for (i = c->min - 64; i < c->min; i++)
		fp = (fp << 1) + gear[p[i]];
	for (; i < mid; i++) {
		fp = (fp << 1) + gear[p[i]];
		if (!(fp & c->mask_s))
			return i + 1;
	}
	for (; i < end; i++) {
		fp = (fp << 1) + gear[p[i]];
		if (!(fp & c->mask_l))
			return i + 1;
	}
	return end;
}
