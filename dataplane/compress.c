/*
 * compress.c - chunk compression with ISA-L igzip: raw DEFLATE (no gzip or
 * zlib wrapper and no CRC: the chunk id, XXH3-128 of the bytes, is the check
 * that matters and the pipeline verifies it after every decompress).
 *
 * A struct tg_comp owns the igzip stream and the level buffer, sized at
 * create with ISA-L's recommended ISAL_DEF_LVLx_DEFAULT, so compressing a
 * chunk allocates nothing. Level 0 needs no level buffer. Level 2 is present
 * in ISA-L 2.30 (ISAL_DEF_LVL2_DEFAULT), but builds of the library without
 * it exist: create probes the level once and steps down to the next lower
 * level that the library accepts rather than failing every chunk later.
 *
 * Decompression has no context in the contract; its ~85 KiB inflate state
 * lives in one thread-local slot per thread (too big for a worker's stack
 * budget, and per-chunk malloc is what the pipeline avoids everywhere else).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include <isa-l/igzip_lib.h>

#include "tg_compress.h"

struct tg_comp {
	struct isal_zstream strm;
	int level;
	uint32_t level_buf_size;
	uint8_t *level_buf;
};

static uint32_t tg_comp_level_buf_size(int level)
{
	switch (level) {
	case 1:
		return ISAL_DEF_LVL1_DEFAULT;
#ifdef ISAL_DEF_LVL2_DEFAULT
	case 2:
		return ISAL_DEF_LVL2_DEFAULT;
#endif
	case 3:
		return ISAL_DEF_LVL3_DEFAULT;
	default:
		return 0;
	}
}

static int tg_comp_run(struct tg_comp *c, const uint8_t *src, uint32_t len,
		       uint8_t *dst, uint32_t cap, uint32_t *out)
{
	struct isal_zstream *s = &c->strm;
	int ret;

	isal_deflate_stateless_init(s);
	s->next_in = (uint8_t *)src;
	s->avail_in = len;
	s->next_out = dst;
	s->avail_out = cap;
	s->level = (uint32_t)c->level;
	s->level_buf = c->level_buf;
	s->level_buf_size = c->level_buf_size;
	s->gzip_flag = IGZIP_DEFLATE;
	s->flush = NO_FLUSH;
	s->end_of_stream = 1;
	ret = isal_deflate_stateless(s);
	*out = s->total_out;
	return ret;
}

/* Set up c for level; 0, or -EINVAL if the library refuses the level. */
static int tg_comp_set_level(struct tg_comp *c, int level)
{
	static const uint8_t probe[1] = { 0 };
	uint8_t out[64];
	uint32_t n;

	free(c->level_buf);
	c->level = level;
	c->level_buf = NULL;
	c->level_buf_size = tg_comp_level_buf_size(level);
	if (level > 0 && c->level_buf_size == 0)
		return -EINVAL; /* header without this level */
	if (c->level_buf_size) {
		c->level_buf = malloc(c->level_buf_size);
		if (!c->level_buf)
			return -ENOMEM;
	}
	return tg_comp_run(c, probe, sizeof(probe), out, sizeof(out), &n) == COMP_OK ? 0 : -EINVAL;
}

struct tg_comp *tg_comp_create(int level, int *err)
{
	struct tg_comp *c;
	int ret = -EINVAL, l;

	if (level < ISAL_DEF_MIN_LEVEL || level > ISAL_DEF_MAX_LEVEL || level > 3) {
		*err = -EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		*err = -ENOMEM;
		return NULL;
	}
	/* Step down only past a level the library lacks; level 0 always works. */
	for (l = level; l >= 0; l--) {
		ret = tg_comp_set_level(c, l);
		if (ret != -EINVAL)
			break;
	}
	if (ret)
		goto err_free;
	*err = 0;
	return c;

err_free:
	free(c->level_buf);
	free(c);
	*err = ret;
	return NULL;
}

void tg_comp_destroy(struct tg_comp *c)
{
	if (!c)
		return;
	free(c->level_buf);
	free(c);
}

long tg_comp_compress(struct tg_comp *c, const uint8_t *src, size_t len,
		      uint8_t *dst, size_t cap)
{
	uint32_t n;
	int ret;

	if (!src || !dst || len == 0 || len > UINT32_MAX)
		return -EINVAL;
	if (cap > UINT32_MAX)
		cap = UINT32_MAX;
	ret = tg_comp_run(c, src, (uint32_t)len, dst, (uint32_t)cap, &n);
	if (ret == STATELESS_OVERFLOW)
		return -ENOSPC;
	if (ret != COMP_OK)
		return -EIO;
	return (long)n;
}

static __thread struct inflate_state tg_comp_inflate;

int tg_comp_decompress(const uint8_t *src, size_t len, uint8_t *dst, size_t out_len)
{
	struct inflate_state *st = &tg_comp_inflate;
	int ret;

	if (!src || !dst || len == 0 || len > UINT32_MAX || out_len == 0 || out_len > UINT32_MAX)
		return -EBADMSG;
	isal_inflate_init(st);
	st->next_in = (uint8_t *)src;
	st->avail_in = (uint32_t)len;
	st->next_out = dst;
	st->avail_out = (uint32_t)out_len;
	st->crc_flag = ISAL_DEFLATE;
	st->hist_bits = 0;
	ret = isal_inflate_stateless(st);
	/* Exactly out_len bytes from exactly len bytes: a short stream, a
	 * longer one (ISAL_OUT_OVERFLOW) or trailing bytes are all corrupt. */
	if (ret != ISAL_DECOMP_OK || st->total_out != out_len || st->avail_in != 0)
		return -EBADMSG;
	return 0;
}
