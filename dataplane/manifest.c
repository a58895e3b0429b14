/*
 * manifest.c - the backup manifest: builder, strict parser, and the root
 * object that lists the manifest's pieces.
 *
 * A manifest comes from a client and comes back from storage, and a restore
 * turns its paths into files on disk, so the parser treats it as hostile:
 * every count is checked against the bytes left before anything it counts is
 * read, every path is checked so that it cannot name anything outside the
 * restore target, and the builder runs the very same checks on what it emits
 * (it serializes an entry, then parses it back), so the two can never
 * disagree about what a valid manifest is.
 *
 * Byte format, all integers big-endian (a manifest is read on any host):
 *
 *   stream header
 *     0  be32  magic 0x54474d46 "TGMF"
 *     4  be16  version (1)
 *     6  be16  flags (0; anything else is rejected)
 *     8  be64  created, unix seconds (signed)
 *    16  be16  label_len, 0..TG_NAME_MAX
 *    18        label (label_len bytes, no control bytes)
 *     .  be32  nfiles
 *   then nfiles entries, each a 42-byte fixed part and three variable parts
 *     0  u8    type (1 regular, 2 directory, 3 symlink)
 *     1  u8    reserved (0)
 *     2  be16  path_len, 1..TG_MF_PATH_MAX
 *     4  be32  mode, permission bits only (<= 07777)
 *     8  be32  uid
 *    12  be32  gid
 *    16  be64  size (regular: sum of chunk lengths; dir/symlink: 0)
 *    24  be64  mtime_sec (signed)
 *    32  be32  mtime_nsec (< 1e9)
 *    36  be16  link_len (symlink: 1..TG_MF_PATH_MAX; others: 0)
 *    38  be32  nchunks (regular: 0..TG_MF_CHUNKS_MAX; others: 0)
 *    42        path (path_len bytes), link (link_len bytes),
 *              chunks (nchunks * 20: id[16] + be32 len, len 1..TG_CHUNK_MAX)
 *   and nothing after the last entry.
 *
 * A path is relative and '/'-separated; it has no empty component (so no
 * leading '/', no "//", no trailing '/'), no "." or ".." component, and no
 * NUL or control byte (0x00-0x1f, 0x7f). A symlink target is stored as-is
 * (absolute and ".." targets are legitimate) but must hold no NUL: restore
 * creates the link, it never writes through it.
 *
 * Root object (lists the manifest's pieces, each stored as a chunk):
 *     0  be32  magic 0x54474d52 "TGMR"
 *     4  be16  version (1)
 *     6  be16  flags (0)
 *     8  be64  manifest_len (sum of the piece lengths)
 *    16  be32  npieces, 1..TG_MF_PIECES_MAX
 *    20        pieces, npieces * 20 (id[16] + be32 len, 1..TG_CHUNK_MAX)
 *   exactly 20 + npieces * 20 bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tg_manifest.h"

#define MF_HDR_FIXED   22u /* stream header without the label */
#define MF_ENTRY_FIXED 42u
#define MF_CHUNK_LEN   20u
#define MF_ROOT_HDR    20u
#define MF_NSEC_MAX    1000000000u

/* ---- big-endian helpers ---- */

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

static inline void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)(v >> 32));
	wr32(p + 4, (uint32_t)v);
}

static void ref_read(const uint8_t *p, struct tg_chunk_ref *out)
{
	memcpy(out->id, p, TG_ID_LEN);
	out->len = rd32(p + TG_ID_LEN);
}

static void ref_write(uint8_t *p, const struct tg_chunk_ref *in)
{
	memcpy(p, in->id, TG_ID_LEN);
	wr32(p + TG_ID_LEN, in->len);
}

void tg_mf_chunk(const struct tg_mf_file *f, uint32_t i, struct tg_chunk_ref *out)
{
	ref_read(f->chunks + (size_t)i * MF_CHUNK_LEN, out);
}

void tg_mf_root_piece(const uint8_t *pieces, uint32_t i, struct tg_chunk_ref *out)
{
	ref_read(pieces + (size_t)i * MF_CHUNK_LEN, out);
}

/* ---- the rules ---- */

static bool is_ctl(uint8_t c)
{
	return c < 0x20 || c == 0x7f;
}

/* NULL if p[0..len) is a safe relative path, else why not. */
static const char *path_check(const char *p, size_t len)
{
	size_t start = 0;

	if (len < 1 || len > TG_MF_PATH_MAX)
		return "path length";
	for (size_t i = 0; i <= len; i++) {
		size_t clen;

		if (i < len && p[i] != '/') {
			if (is_ctl((uint8_t)p[i]))
				return "control byte in path";
			continue;
		}
		clen = i - start;
		if (clen == 0)
			return "empty path component";
		if (p[start] == '.' && (clen == 1 || (clen == 2 && p[start + 1] == '.')))
			return "dot component in path";
		start = i + 1;
	}
	return NULL;
}

static bool label_ok(const char *l, size_t len)
{
	if (len > TG_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (is_ctl((uint8_t)l[i]))
			return false;
	return true;
}

/*
 * Parse the entry at buf[off..len) into f and return its total length, or 0
 * with *why set. Counts are checked against the bytes left (in 64 bits)
 * before the bytes they count are touched.
 */
static size_t entry_parse(const uint8_t *buf, size_t len, size_t off, struct tg_mf_file *f,
			  const char **why)
{
	const uint8_t *p = buf + off;
	size_t left = len - off;
	uint64_t var, sum = 0;

	if (left < MF_ENTRY_FIXED) {
		*why = "truncated entry";
		return 0;
	}
	memset(f, 0, sizeof(*f));
	f->type = p[0];
	f->path_len = rd16(p + 2);
	f->mode = rd32(p + 4);
	f->uid = rd32(p + 8);
	f->gid = rd32(p + 12);
	f->size = rd64(p + 16);
	f->mtime_sec = (int64_t)rd64(p + 24);
	f->mtime_nsec = rd32(p + 32);
	f->link_len = rd16(p + 36);
	f->nchunks = rd32(p + 38);

	if (f->type != TG_MF_REG && f->type != TG_MF_DIR && f->type != TG_MF_LNK) {
		*why = "unknown file type";
		return 0;
	}
	if (p[1] != 0) {
		*why = "reserved byte set";
		return 0;
	}
	if (f->mode > 07777) {
		*why = "mode has bits beyond 07777";
		return 0;
	}
	if (f->mtime_nsec >= MF_NSEC_MAX) {
		*why = "mtime_nsec out of range";
		return 0;
	}
	if (f->path_len < 1 || f->path_len > TG_MF_PATH_MAX) {
		*why = "path length";
		return 0;
	}
	if (f->type == TG_MF_LNK) {
		if (f->link_len < 1 || f->link_len > TG_MF_PATH_MAX) {
			*why = "symlink target length";
			return 0;
		}
	} else if (f->link_len != 0) {
		*why = "link target on a non-symlink";
		return 0;
	}
	if (f->type != TG_MF_REG) {
		if (f->nchunks != 0) {
			*why = "chunks on a non-regular file";
			return 0;
		}
		if (f->size != 0) {
			*why = "size on a non-regular file";
			return 0;
		}
	} else if (f->nchunks > TG_MF_CHUNKS_MAX) {
		*why = "too many chunks";
		return 0;
	}
	var = (uint64_t)f->path_len + f->link_len + (uint64_t)f->nchunks * MF_CHUNK_LEN;
	if (var > left - MF_ENTRY_FIXED) {
		*why = "entry longer than the stream";
		return 0;
	}

	f->path = (const char *)p + MF_ENTRY_FIXED;
	f->link = f->link_len ? f->path + f->path_len : NULL;
	f->chunks = f->nchunks ? p + MF_ENTRY_FIXED + f->path_len + f->link_len : NULL;

	*why = path_check(f->path, f->path_len);
	if (*why)
		return 0;
	if (f->link_len && memchr(f->link, '\0', f->link_len)) {
		*why = "NUL in symlink target";
		return 0;
	}
	for (uint32_t i = 0; i < f->nchunks; i++) {
		uint32_t clen = rd32(f->chunks + (size_t)i * MF_CHUNK_LEN + TG_ID_LEN);

		if (clen < 1 || clen > TG_CHUNK_MAX) {
			*why = "chunk length out of range";
			return 0;
		}
		/* nchunks <= 2^24 and clen <= 2^22 cannot wrap 64 bits, but
		 * the check costs nothing and keeps the invariant local. */
		if (sum > UINT64_MAX - clen) {
			*why = "chunk lengths overflow";
			return 0;
		}
		sum += clen;
	}
	if (f->type == TG_MF_REG && sum != f->size) {
		*why = "size is not the sum of chunk lengths";
		return 0;
	}
	return MF_ENTRY_FIXED + (size_t)var;
}

/* ---- parsing ---- */

static int iter_fail(struct tg_mf_iter *it, const char *why)
{
	it->why = why;
	return -EBADMSG;
}

int tg_mf_iter_init(struct tg_mf_iter *it, const uint8_t *buf, size_t len)
{
	uint16_t label_len;

	memset(it, 0, sizeof(*it));
	it->buf = buf;
	it->len = len;
	if (!buf || len < MF_HDR_FIXED)
		return iter_fail(it, "truncated header");
	if (rd32(buf) != TG_MF_MAGIC)
		return iter_fail(it, "bad magic");
	if (rd16(buf + 4) != TG_MF_VERSION)
		return iter_fail(it, "unsupported version");
	if (rd16(buf + 6) != 0)
		return iter_fail(it, "unknown flags");
	it->created = (int64_t)rd64(buf + 8);
	label_len = rd16(buf + 16);
	if (label_len > TG_NAME_MAX)
		return iter_fail(it, "label too long");
	if ((size_t)label_len > len - MF_HDR_FIXED)
		return iter_fail(it, "truncated label");
	if (!label_ok((const char *)buf + 18, label_len))
		return iter_fail(it, "control byte in label");
	it->label = label_len ? (const char *)buf + 18 : NULL;
	it->label_len = label_len;
	it->nfiles = rd32(buf + 18 + label_len);
	it->off = MF_HDR_FIXED + label_len;
	/* Each entry takes at least its fixed part: refuse a count the bytes
	 * cannot hold before the caller sizes anything by it. */
	if ((uint64_t)it->nfiles * MF_ENTRY_FIXED > len - it->off)
		return iter_fail(it, "more files than the stream can hold");
	return 0;
}

int tg_mf_iter_next(struct tg_mf_iter *it, struct tg_mf_file *f)
{
	const char *why = NULL;
	size_t n;

	/* Errors are sticky: a caller that ignores one cannot walk on into
	 * bytes the parser never vouched for. */
	if (it->why)
		return -EBADMSG;
	if (!it->buf || it->off > it->len)
		return iter_fail(it, "iterator not initialized");
	if (it->seen == it->nfiles) {
		if (it->off != it->len)
			return iter_fail(it, "trailing bytes");
		return 0;
	}
	n = entry_parse(it->buf, it->len, it->off, f, &why);
	if (!n)
		return iter_fail(it, why);
	it->off += n;
	it->seen++;
	return 1;
}

/* ---- building ---- */

struct tg_mf_builder {
	uint8_t *buf;
	size_t len, cap;
	size_t nfiles_off;
	uint32_t nfiles;
	uint64_t logical;
};

static int mf_reserve(struct tg_mf_builder *b, size_t more)
{
	size_t want, ncap;
	uint8_t *nbuf;

	if (more > SIZE_MAX - b->len)
		return -ENOMEM;
	want = b->len + more;
	if (want <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 4096;
	while (ncap < want)
		ncap = ncap > SIZE_MAX / 2 ? want : ncap * 2;
	nbuf = realloc(b->buf, ncap);
	if (!nbuf)
		return -ENOMEM;
	b->buf = nbuf;
	b->cap = ncap;
	return 0;
}

struct tg_mf_builder *tg_mf_builder_create(const char *label, int64_t created, int *err)
{
	struct tg_mf_builder *b;
	size_t label_len = label ? strlen(label) : 0;
	int rc;

	if (!label_ok(label, label_len)) {
		rc = -EINVAL;
		goto err_out;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		rc = -ENOMEM;
		goto err_out;
	}
	rc = mf_reserve(b, MF_HDR_FIXED + label_len);
	if (rc)
		goto err_free;
	wr32(b->buf, TG_MF_MAGIC);
	wr16(b->buf + 4, TG_MF_VERSION);
	wr16(b->buf + 6, 0);
	wr64(b->buf + 8, (uint64_t)created);
	wr16(b->buf + 16, (uint16_t)label_len);
	if (label_len)
		memcpy(b->buf + 18, label, label_len);
	b->nfiles_off = 18 + label_len;
	wr32(b->buf + b->nfiles_off, 0);
	b->len = MF_HDR_FIXED + label_len;
	return b;

err_free:
	free(b);
err_out:
	if (err)
		*err = rc;
	return NULL;
}

void tg_mf_builder_destroy(struct tg_mf_builder *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b);
}

int tg_mf_add(struct tg_mf_builder *b, const struct tg_mf_file *f, const struct tg_chunk_ref *chunks)
{
	struct tg_mf_file check;
	const char *why;
	size_t need, n;
	uint8_t *p;
	int rc;

	if (!b || !f || b->nfiles == UINT32_MAX)
		return -EINVAL;
	/* Bound the allocation before making it; the full rules run below. */
	if (f->path_len > TG_MF_PATH_MAX || f->link_len > TG_MF_PATH_MAX ||
	    f->nchunks > TG_MF_CHUNKS_MAX)
		return -EINVAL;
	if ((f->path_len && !f->path) || (f->link_len && !f->link) ||
	    (f->nchunks && !chunks))
		return -EINVAL;
	need = MF_ENTRY_FIXED + f->path_len + f->link_len + (size_t)f->nchunks * MF_CHUNK_LEN;
	rc = mf_reserve(b, need);
	if (rc)
		return rc;

	p = b->buf + b->len;
	p[0] = f->type;
	p[1] = 0;
	wr16(p + 2, f->path_len);
	wr32(p + 4, f->mode);
	wr32(p + 8, f->uid);
	wr32(p + 12, f->gid);
	wr64(p + 16, f->size);
	wr64(p + 24, (uint64_t)f->mtime_sec);
	wr32(p + 32, f->mtime_nsec);
	wr16(p + 36, f->link_len);
	wr32(p + 38, f->nchunks);
	p += MF_ENTRY_FIXED;
	if (f->path_len)
		memcpy(p, f->path, f->path_len);
	p += f->path_len;
	if (f->link_len)
		memcpy(p, f->link, f->link_len);
	p += f->link_len;
	for (uint32_t i = 0; i < f->nchunks; i++)
		ref_write(p + (size_t)i * MF_CHUNK_LEN, &chunks[i]);

	/* The parser is the definition of valid: run it on what we wrote and
	 * drop the entry (b->len unchanged) if it says no. */
	n = entry_parse(b->buf, b->len + need, b->len, &check, &why);
	if (n != need)
		return -EINVAL;
	b->len += need;
	b->nfiles++;
	if (f->type == TG_MF_REG)
		b->logical += f->size;
	wr32(b->buf + b->nfiles_off, b->nfiles);
	return 0;
}

int tg_mf_finish(struct tg_mf_builder *b, const uint8_t **buf, size_t *len,
		 uint32_t *nfiles, uint64_t *logical_bytes)
{
	if (!b || !buf || !len)
		return -EINVAL;
	*buf = b->buf;
	*len = b->len;
	if (nfiles)
		*nfiles = b->nfiles;
	if (logical_bytes)
		*logical_bytes = b->logical;
	return 0;
}

/* ---- the root ---- */

/* 0 if the pieces are in range and add up to manifest_len without wrapping. */
static int pieces_check(const uint8_t *pieces, uint32_t npieces, uint64_t manifest_len)
{
	uint64_t sum = 0;

	if (npieces < 1 || npieces > TG_MF_PIECES_MAX)
		return -1;
	for (uint32_t i = 0; i < npieces; i++) {
		uint32_t l = rd32(pieces + (size_t)i * MF_CHUNK_LEN + TG_ID_LEN);

		if (l < 1 || l > TG_CHUNK_MAX)
			return -1;
		sum += l; /* <= 4096 * 4 MiB: cannot wrap */
	}
	return sum == manifest_len ? 0 : -1;
}

long tg_mf_root_build(uint8_t *buf, size_t cap, const struct tg_chunk_ref *pieces,
		      uint32_t npieces, uint64_t manifest_len)
{
	size_t need;

	if (!pieces || npieces < 1 || npieces > TG_MF_PIECES_MAX)
		return -EINVAL;
	need = MF_ROOT_HDR + (size_t)npieces * MF_CHUNK_LEN;
	if (!buf || cap < need)
		return -ENOSPC;
	wr32(buf, TG_MF_ROOT_MAGIC);
	wr16(buf + 4, TG_MF_VERSION);
	wr16(buf + 6, 0);
	wr64(buf + 8, manifest_len);
	wr32(buf + 16, npieces);
	for (uint32_t i = 0; i < npieces; i++)
		ref_write(buf + MF_ROOT_HDR + (size_t)i * MF_CHUNK_LEN, &pieces[i]);
	if (pieces_check(buf + MF_ROOT_HDR, npieces, manifest_len))
		return -EINVAL;
	return (long)need;
}

int tg_mf_root_parse(const uint8_t *buf, size_t len, const uint8_t **pieces,
		     uint32_t *npieces, uint64_t *manifest_len)
{
	uint64_t mlen;
	uint32_t n;

	if (!buf || len < MF_ROOT_HDR)
		return -EBADMSG;
	if (rd32(buf) != TG_MF_ROOT_MAGIC || rd16(buf + 4) != TG_MF_VERSION ||
	    rd16(buf + 6) != 0)
		return -EBADMSG;
	mlen = rd64(buf + 8);
	n = rd32(buf + 16);
	if (n < 1 || n > TG_MF_PIECES_MAX)
		return -EBADMSG;
	if ((uint64_t)len != MF_ROOT_HDR + (uint64_t)n * MF_CHUNK_LEN)
		return -EBADMSG;
	if (pieces_check(buf + MF_ROOT_HDR, n, mlen))
		return -EBADMSG;
	if (pieces)
		*pieces = buf + MF_ROOT_HDR;
	if (npieces)
		*npieces = n;
	if (manifest_len)
		*manifest_len = mlen;
	return 0;
}
