/*
 * tg_cdc.h - content-defined chunking, FastCDC-style (Xia et al., USENIX
 * ATC '16): a gear rolling hash over the last 64 bytes, a stricter mask
 * before the average size and a looser one after it ("normalized chunking"),
 * and hard minimum and maximum sizes. An edit shifts only the chunks around
 * it, so a changed file still dedups against its previous backup.
 *
 * The gear table is generated from a fixed seed: cut points are part of the
 * format (two clients must cut the same bytes the same way to dedup), so the
 * seed and the masks never change within a protocol version.
 */
#ifndef TG_CDC_H
#define TG_CDC_H

#include <stddef.h>
#include <stdint.h>

#define TG_CDC_MIN (256u << 10) /* 256 KiB */
#define TG_CDC_AVG (1u << 20)   /* 1 MiB */
#define TG_CDC_MAX (4u << 20)   /* 4 MiB = TG_CHUNK_MAX */

struct tg_cdc {
	uint32_t min, avg, max;
	uint64_t mask_s, mask_l;
};

/* min < avg < max, avg a power of two, max <= TG_CHUNK_MAX; 0 or -EINVAL. */
int tg_cdc_init(struct tg_cdc *c, uint32_t min, uint32_t avg, uint32_t max);

/*
 * Length of the next chunk at the start of p[0..n). If n <= min, returns n.
 * Otherwise scans for a cut point and returns it, or max if none is found
 * within max bytes. The caller must pass at least max bytes unless the data
 * ends within n (then a return of n means "the rest is one chunk").
 */
size_t tg_cdc_cut(const struct tg_cdc *c, const uint8_t *p, size_t n);

#endif /* TG_CDC_H */
