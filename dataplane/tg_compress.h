/*
 * tg_compress.h - chunk compression with ISA-L igzip (raw DEFLATE, no
 * gzip/zlib wrapper: the chunk id already checks the bytes).
 *
 * One struct tg_comp per worker holds igzip's level buffer and state so that
 * nothing is allocated per chunk.
 */
#ifndef TG_COMPRESS_H
#define TG_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

struct tg_comp;

/* level 0..3 (igzip's levels). NULL, *err = -EINVAL / -ENOMEM. */
struct tg_comp *tg_comp_create(int level, int *err);
void tg_comp_destroy(struct tg_comp *c);

/*
 * Compress src into dst (capacity cap). Returns the compressed length, or
 * -ENOSPC if the output would not fit in cap: callers pass cap < len to mean
 * "only if it shrinks" and store the chunk raw on -ENOSPC.
 */
long tg_comp_compress(struct tg_comp *c, const uint8_t *src, size_t len,
		      uint8_t *dst, size_t cap);

/*
 * Decompress exactly into dst; returns 0 if the stream was valid and produced
 * exactly out_len bytes, -EBADMSG otherwise (corrupt or wrong length). Never
 * writes past dst + out_len.
 */
int tg_comp_decompress(const uint8_t *src, size_t len, uint8_t *dst, size_t out_len);

#endif /* TG_COMPRESS_H */
