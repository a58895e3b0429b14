/*
 * store_dir.c - the embedded `dir` storage backend: one shard per file, K+M
 * shard directories, each its own failure domain.
 *
 * Layout (tg_store.h): shard i of chunk <id> for organization <org> lives at
 *   dirs[(r + i) % ndirs]/<org hex>/<id hex[0..1]>/<id hex>
 * with r the little-endian u32 in id bytes 12..15 (ids are XXH3-128, so
 * this spreads evenly). Every path is built from the hex of ids only and is
 * opened relative to a directory fd held since open(), so no caller-supplied
 * string ever reaches a path. The same directory may not be given twice: two
 * shards of one chunk would then share one file name.
 *
 * A shard file is a 96-byte header followed by shard_len payload bytes.
 * Header, little-endian (written and read on the same storage hosts):
 *    0  4  magic "TGSH"
 *    4  2  format version (1)
 *    6  2  header length (96)
 *    8  1  shard index (0..K+M-1; < K: data, else parity)
 *    9  1  K       (1 with M = 0, or 2..16 with M 1..4)
 *   10  1  M
 *   11  1  enc     (enum tg_enc)
 *   12  4  orig_len  (1..TG_CHUNK_MAX)
 *   16  4  enc_len   (raw: = orig_len; igzip: 1..orig_len)
 *   20  4  shard_len (K = 1: enc_len..roundup64(enc_len);
 *                     EC: exactly roundup64(ceil(enc_len / K)), tg_ec_shard_len)
 *   24 16  organization id
 *   40 16  chunk id
 *   56  8  XXH3-64 of the shard_len payload bytes
 *   64 24  reserved, zero
 *   88  8  XXH3-64 of header bytes 0..87
 * The file is exactly 96 + shard_len bytes long. The header repeats the
 * organization and chunk id so that a file copied or moved to another
 * organization's path is refused rather than served to the wrong tenant.
 *
 * Everything read from disk is hostile: a shard that fails any check is
 * counted corrupt (and rebuilt from parity when it can be), never trusted
 * and never fatal.
 *
 * put() writes every shard to a temporary file first (O_EXCL, writev,
 * fsync), and only when all are durable renames them into place and fsyncs
 * the directories, so a failed put leaves no final file it created.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#define tg_xxh3_64 XXH3_64bits_dispatch
#else
#define tg_xxh3_64 XXH3_64bits
#endif

#include "tg_proto.h"
#include "tg_store.h"

#define SH_MAGIC      "TGSH"
#define SH_VERSION    1u
#define SH_HDR_LEN    96u
#define SH_HSUM_OFF   88u
#define SH_ALIGN      64u
#define SH_DIR_MODE   0750
#define SH_FILE_MODE  0640
#define SH_TMP_TRIES  16

/* "<org hex>/<2 hex>/<id hex>" */
#define SH_REL_MAX (TG_HEX_ID_LEN + 1 + 2 + 1 + TG_HEX_ID_LEN + 1)

struct store_dir {
	struct tg_store base;
	unsigned ndirs;
	int dfd[TG_EC_SHARDS_MAX];
	uint32_t tmp_seq;
	/* tg_ec caches decode tables and is not thread-safe, while one store
	 * may serve several I/O threads: codecs are shared under this lock.
	 * Rebuilds are the rare path, so contention does not matter. */
	pthread_mutex_t ec_lock;
	struct tg_ec *ec[TG_EC_K_MAX + 1][TG_EC_M_MAX + 1];
};

struct shard_hdr {
	uint8_t index;
	struct tg_obj_meta meta;
	struct tg_org_id org;
	uint64_t sum;
};

/* ---- little-endian helpers ---- */

static inline void le16w(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void le32w(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void le64w(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t le16r(const uint8_t *p)
{
	return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static inline uint32_t le32r(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64r(const uint8_t *p)
{
	return (uint64_t)le32r(p) | (uint64_t)le32r(p + 4) << 32;
}

/* ---- the meta rules, shared by put() and the header reader ---- */

static uint64_t roundup_align(uint64_t v)
{
	return (v + SH_ALIGN - 1) & ~(uint64_t)(SH_ALIGN - 1);
}

static bool meta_valid(const struct tg_obj_meta *m)
{
	uint64_t per;

	if (m->k == 1) {
		if (m->m != 0)
			return false;
	} else if (m->k < TG_EC_K_MIN || m->k > TG_EC_K_MAX ||
		   m->m < TG_EC_M_MIN || m->m > TG_EC_M_MAX) {
		return false;
	}
	if (m->orig_len < 1 || m->orig_len > TG_CHUNK_MAX)
		return false;
	switch (m->enc) {
	case TG_ENC_RAW:
		if (m->enc_len != m->orig_len)
			return false;
		break;
	case TG_ENC_IGZIP:
		/* the pipeline stores a chunk raw unless compression shrinks it */
		if (m->enc_len < 1 || m->enc_len > m->orig_len)
			return false;
		break;
	default:
		return false;
	}
	if ((uint64_t)m->k * m->shard_len < m->enc_len)
		return false;
	per = (m->enc_len + (uint64_t)m->k - 1) / m->k;
	if (m->k == 1)
		return m->shard_len <= roundup_align(per);
	/* tg_ec_encode() accepts exactly this length and no other */
	return m->shard_len == roundup_align(per);
}

static bool meta_eq(const struct tg_obj_meta *a, const struct tg_obj_meta *b)
{
	return tg_id_eq(&a->id, &b->id) && a->orig_len == b->orig_len &&
	       a->enc_len == b->enc_len && a->enc == b->enc && a->k == b->k &&
	       a->m == b->m && a->shard_len == b->shard_len;
}

size_t tg_store_get_cap(size_t max_chunk)
{
	size_t lim = max_chunk < TG_CHUNK_MAX ? max_chunk : TG_CHUNK_MAX;
	size_t best = 0;

	if (lim == 0)
		lim = 1;
	/* K * shard_len grows with the payload, so the largest chunk bounds
	 * every object; which K pads most depends on the length. */
	for (size_t k = 1; k <= TG_EC_K_MAX; k++) {
		size_t need = k * (size_t)roundup_align((lim + k - 1) / k);

		if (need > best)
			best = need;
	}
	return best > max_chunk ? best : max_chunk;
}

/* ---- header codec ---- */

static void hdr_encode(uint8_t h[SH_HDR_LEN], const struct tg_org_id *org,
		       const struct tg_obj_meta *m, unsigned index, uint64_t sum)
{
	memset(h, 0, SH_HDR_LEN);
	memcpy(h, SH_MAGIC, 4);
	le16w(h + 4, SH_VERSION);
	le16w(h + 6, SH_HDR_LEN);
	h[8] = (uint8_t)index;
	h[9] = m->k;
	h[10] = m->m;
	h[11] = m->enc;
	le32w(h + 12, m->orig_len);
	le32w(h + 16, m->enc_len);
	le32w(h + 20, m->shard_len);
	memcpy(h + 24, org->b, 16);
	memcpy(h + 40, m->id.b, 16);
	le64w(h + 56, sum);
	le64w(h + SH_HSUM_OFF, tg_xxh3_64(h, SH_HSUM_OFF));
}

/* 0 if h is a well-formed header on its own terms, else -EBADMSG. */
static int hdr_decode(const uint8_t h[SH_HDR_LEN], struct shard_hdr *out)
{
	if (memcmp(h, SH_MAGIC, 4) != 0 || le16r(h + 4) != SH_VERSION ||
	    le16r(h + 6) != SH_HDR_LEN)
		return -EBADMSG;
	if (le64r(h + SH_HSUM_OFF) != tg_xxh3_64(h, SH_HSUM_OFF))
		return -EBADMSG;
	for (unsigned i = 64; i < SH_HSUM_OFF; i++)
		if (h[i])
			return -EBADMSG;
	memset(out, 0, sizeof(*out));
	out->index = h[8];
	out->meta.k = h[9];
	out->meta.m = h[10];
	out->meta.enc = h[11];
	out->meta.orig_len = le32r(h + 12);
	out->meta.enc_len = le32r(h + 16);
	out->meta.shard_len = le32r(h + 20);
	memcpy(out->org.b, h + 24, 16);
	memcpy(out->meta.id.b, h + 40, 16);
	out->sum = le64r(h + 56);
	if (!meta_valid(&out->meta) || out->index >= out->meta.k + out->meta.m)
		return -EBADMSG;
	return 0;
}

/* ---- small I/O helpers ---- */

static unsigned shard_dir(const struct store_dir *sd, const struct tg_chunk_id *id, unsigned i)
{
	return (le32r(id->b + 12) % sd->ndirs + i) % sd->ndirs;
}

static void rel_names(const struct tg_org_id *org, const struct tg_chunk_id *id,
		      char orghex[TG_HEX_ID_LEN + 1], char sub[3], char idhex[TG_HEX_ID_LEN + 1])
{
	tg_id_to_hex(org->b, orghex);
	tg_id_to_hex(id->b, idhex);
	sub[0] = idhex[0];
	sub[1] = idhex[1];
	sub[2] = '\0';
}

/* Bytes read (short only at end of file), or -errno. */
static ssize_t pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, off + (off_t)done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int writev_full(int fd, struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		ssize_t n = writev(fd, iov, cnt);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* mkdir name under parent if absent; a new entry is made durable by
 * fsyncing the parent, or a crash could lose the directory and with it
 * shards already acknowledged. */
static int mkdir_durable(int parent, const char *name)
{
	if (mkdirat(parent, name, SH_DIR_MODE) == 0)
		return fsync(parent) ? -errno : 0;
	return errno == EEXIST ? 0 : -errno;
}

/* Open (creating if asked) <org>/<sub> under dfd; the fd or -errno. */
static int subdir_open(int dfd, const char *orghex, const char *sub, bool create)
{
	int ofd, sfd, rc;

	if (create) {
		rc = mkdir_durable(dfd, orghex);
		if (rc)
			return rc;
	}
	ofd = openat(dfd, orghex, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ofd < 0)
		return -errno;
	if (create) {
		rc = mkdir_durable(ofd, sub);
		if (rc)
			goto err_close;
	}
	sfd = openat(ofd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0) {
		rc = -errno;
		goto err_close;
	}
	close(ofd);
	return sfd;

err_close:
	close(ofd);
	return rc;
}

/* ---- put ---- */

struct shard_put {
	int subfd;
	bool tmp_made, final_made;
	char tmp[TG_HEX_ID_LEN + 40];
};

/* Write one shard, header then payload, to a new temporary file in subfd
 * and make it durable. */
static int shard_write_tmp(struct store_dir *sd, struct shard_put *sp, const char *idhex,
			   const uint8_t hdr[SH_HDR_LEN], const uint8_t *payload, size_t len,
			   unsigned index)
{
	struct iovec iov[2];
	int fd = -1, rc;

	for (int t = 0; t < SH_TMP_TRIES && fd < 0; t++) {
		uint32_t seq = __atomic_fetch_add(&sd->tmp_seq, 1, __ATOMIC_RELAXED);

		snprintf(sp->tmp, sizeof(sp->tmp), ".%s.%02x.%08x.%08x.tmp", idhex, index,
			 (unsigned)getpid(), seq);
		fd = openat(sp->subfd, sp->tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC,
			    SH_FILE_MODE);
		if (fd < 0 && errno != EEXIST)
			return -errno;
	}
	if (fd < 0)
		return -EEXIST;
	sp->tmp_made = true;

	iov[0].iov_base = (void *)(uintptr_t)hdr;
	iov[0].iov_len = SH_HDR_LEN;
	iov[1].iov_base = (void *)(uintptr_t)payload;
	iov[1].iov_len = len;
	rc = writev_full(fd, iov, 2);
	if (!rc && fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	return rc;
}

static int dir_put(struct tg_store *s, const struct tg_org_id *org, const struct tg_obj *obj)
{
	struct store_dir *sd = (struct store_dir *)s;
	struct shard_put sp[TG_EC_SHARDS_MAX];
	char orghex[TG_HEX_ID_LEN + 1], idhex[TG_HEX_ID_LEN + 1], sub[3];
	unsigned n, i;
	int rc = 0;

	if (!org || !obj || !meta_valid(&obj->meta))
		return -EINVAL;
	n = obj->meta.k + obj->meta.m;
	if (n > sd->ndirs)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!obj->shards[i])
			return -EINVAL;
	rel_names(org, &obj->meta.id, orghex, sub, idhex);
	for (i = 0; i < n; i++)
		sp[i] = (struct shard_put){ .subfd = -1 };

	/* Phase 1: every shard durable under a temporary name. */
	for (i = 0; i < n; i++) {
		uint8_t hdr[SH_HDR_LEN];
		size_t len = obj->meta.shard_len;

		rc = subdir_open(sd->dfd[shard_dir(sd, &obj->meta.id, i)], orghex, sub, true);
		if (rc < 0)
			goto err_undo;
		sp[i].subfd = rc;
		hdr_encode(hdr, org, &obj->meta, i, tg_xxh3_64(obj->shards[i], len));
		rc = shard_write_tmp(sd, &sp[i], idhex, hdr, obj->shards[i], len, i);
		if (rc)
			goto err_undo;
	}
	/* Phase 2: publish. An existing file is replaced, not kept: it may be
	 * the corrupt copy a client is re-sending this chunk to heal. */
	for (i = 0; i < n; i++) {
		struct stat stb;
		bool existed = fstatat(sp[i].subfd, idhex, &stb, AT_SYMLINK_NOFOLLOW) == 0;

		if (renameat(sp[i].subfd, sp[i].tmp, sp[i].subfd, idhex)) {
			rc = -errno;
			goto err_undo;
		}
		sp[i].tmp_made = false;
		sp[i].final_made = !existed;
	}
	/* Phase 3: the renames themselves durable. If that fails the shards
	 * stay: each is whole and checksummed, the caller reports failure (so
	 * nothing is acknowledged), and a concurrent put of the same chunk may
	 * already have replaced them with its own, which must not be unlinked. */
	for (i = 0; i < n; i++) {
		if (fsync(sp[i].subfd)) {
			rc = -errno;
			for (i = 0; i < n; i++) {
				sp[i].final_made = false;
				(void)fsync(sp[i].subfd);
			}
			goto err_undo;
		}
	}
	for (i = 0; i < n; i++)
		close(sp[i].subfd);
	return 0;

err_undo:
	for (i = 0; i < n; i++) {
		if (sp[i].subfd < 0)
			continue;
		if (sp[i].tmp_made)
			unlinkat(sp[i].subfd, sp[i].tmp, 0);
		if (sp[i].final_made)
			unlinkat(sp[i].subfd, idhex, 0);
		if (sp[i].tmp_made || sp[i].final_made)
			(void)fsync(sp[i].subfd);
		close(sp[i].subfd);
	}
	return rc;
}

/* ---- get ---- */

/*
 * Open the shard at position pos and check its header against the file and
 * against what was asked for. 0 and *fdp open on success; -EBADMSG for a
 * corrupt or foreign shard; -ENOENT / -ENOTDIR when absent; other -errno
 * when unreadable.
 */
static int shard_open(struct store_dir *sd, unsigned pos, const char *rel,
		      const struct tg_org_id *org, const struct tg_chunk_id *id,
		      int *fdp, struct shard_hdr *h)
{
	uint8_t buf[SH_HDR_LEN];
	struct stat stb;
	ssize_t n;
	int fd, rc;

	/* O_NONBLOCK: a FIFO planted under a shard name must not hang us. */
	fd = openat(sd->dfd[shard_dir(sd, id, pos)], rel,
		    O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return errno == ELOOP ? -EBADMSG : -errno;
	if (fstat(fd, &stb)) {
		rc = -errno;
		goto err_close;
	}
	rc = -EBADMSG;
	if (!S_ISREG(stb.st_mode) || stb.st_size < (off_t)SH_HDR_LEN)
		goto err_close;
	n = pread_full(fd, buf, SH_HDR_LEN, 0);
	if (n < 0) {
		rc = (int)n;
		goto err_close;
	}
	if ((size_t)n != SH_HDR_LEN || hdr_decode(buf, h))
		goto err_close;
	if (!tg_id_eq(&h->org, org) || !tg_id_eq(&h->meta.id, id) || h->index != pos ||
	    (unsigned)h->meta.k + h->meta.m > sd->ndirs ||
	    (uint64_t)stb.st_size != SH_HDR_LEN + (uint64_t)h->meta.shard_len)
		goto err_close;
	*fdp = fd;
	return 0;

err_close:
	close(fd);
	return rc;
}

static struct tg_ec *ec_get_locked(struct store_dir *sd, unsigned k, unsigned m, int *err)
{
	if (!sd->ec[k][m])
		sd->ec[k][m] = tg_ec_create(k, m, err);
	return sd->ec[k][m];
}

static int rebuild(struct store_dir *sd, const struct tg_obj_meta *meta, uint8_t *payload,
		   uint8_t *parity, uint32_t bad)
{
	uint8_t *shards[TG_EC_SHARDS_MAX];
	uint8_t present[TG_EC_SHARDS_MAX];
	unsigned k = meta->k, m = meta->m;
	struct tg_ec *ec;
	int rc = 0;

	for (unsigned i = 0; i < k + m; i++) {
		shards[i] = i < k ? payload + (size_t)i * meta->shard_len
				  : parity + (size_t)(i - k) * meta->shard_len;
		present[i] = !(bad & (1u << i));
	}
	pthread_mutex_lock(&sd->ec_lock);
	ec = ec_get_locked(sd, k, m, &rc);
	if (ec)
		rc = tg_ec_rebuild(ec, shards, meta->shard_len, present);
	pthread_mutex_unlock(&sd->ec_lock);
	return rc;
}

static int dir_get(struct tg_store *s, const struct tg_org_id *org, const struct tg_chunk_id *id,
		   uint8_t *payload, size_t cap, struct tg_obj_meta *meta,
		   struct tg_store_report *rep)
{
	struct store_dir *sd = (struct store_dir *)s;
	char orghex[TG_HEX_ID_LEN + 1], idhex[TG_HEX_ID_LEN + 1], sub[3], rel[SH_REL_MAX];
	struct shard_hdr hdr[TG_EC_SHARDS_MAX];
	int fds[TG_EC_SHARDS_MAX];
	struct tg_store_report r = { 0 };
	struct tg_obj_meta mt = { 0 };
	uint8_t *parity = NULL;
	unsigned limit = sd->ndirs, n = 0, pos;
	bool known = false, any_file = false;
	int rc, hard = 0;
	uint32_t bad;

	if (!org || !id || (!payload && cap))
		return -EINVAL;
	rel_names(org, id, orghex, sub, idhex);
	snprintf(rel, sizeof(rel), "%s/%s/%s", orghex, sub, idhex);
	for (pos = 0; pos < TG_EC_SHARDS_MAX; pos++)
		fds[pos] = -1;

	/* Headers first: the first good one tells K+M, and so how far to look
	 * (with ndirs > K+M the later directories hold none of this chunk). */
	for (pos = 0; pos < limit; pos++) {
		rc = shard_open(sd, pos, rel, org, id, &fds[pos], &hdr[pos]);
		if (rc == -ENOENT || rc == -ENOTDIR) {
			r.missing |= 1u << pos;
			continue;
		}
		any_file = true;
		if (rc == -EBADMSG) {
			r.corrupt |= 1u << pos;
			continue;
		}
		if (rc < 0) {
			r.missing |= 1u << pos;
			hard = rc;
			continue;
		}
		if (!known) {
			mt = hdr[pos].meta;
			known = true;
			n = mt.k + mt.m;
			limit = n;
		} else if (!meta_eq(&mt, &hdr[pos].meta)) {
			close(fds[pos]);
			fds[pos] = -1;
			r.corrupt |= 1u << pos;
		}
	}
	if (!known) {
		if (rep)
			*rep = r;
		if (!any_file)
			return -ENOENT;
		return (r.corrupt || !hard) ? -EUCLEAN : hard;
	}
	r.k = mt.k;
	r.m = mt.m;
	if (meta)
		*meta = mt;
	if (cap < (size_t)mt.k * mt.shard_len) {
		rc = -ENOSPC;
		goto out;
	}
	if (mt.m) {
		parity = malloc((size_t)mt.m * mt.shard_len);
		if (!parity) {
			rc = -ENOMEM;
			goto out;
		}
	}

	/* Payloads: data shards straight into place in the caller's buffer,
	 * parity into scratch; every one against its checksum. */
	for (pos = 0; pos < n; pos++) {
		uint8_t *dst;
		ssize_t got;

		if (fds[pos] < 0)
			continue;
		dst = pos < mt.k ? payload + (size_t)pos * mt.shard_len
				 : parity + (size_t)(pos - mt.k) * mt.shard_len;
		got = pread_full(fds[pos], dst, mt.shard_len, SH_HDR_LEN);
		if (got < 0)
			r.missing |= 1u << pos;
		else if ((size_t)got != mt.shard_len || tg_xxh3_64(dst, mt.shard_len) != hdr[pos].sum)
			r.corrupt |= 1u << pos;
	}
	bad = r.missing | r.corrupt;
	if ((unsigned)__builtin_popcount(bad) > mt.m) {
		rc = -EUCLEAN;
		goto out;
	}
	rc = 0;
	if (bad & ((1u << mt.k) - 1)) {
		rc = rebuild(sd, &mt, payload, parity, bad);
		if (rc == 0)
			r.rebuilt = bad & ((1u << mt.k) - 1);
		else if (rc == -EINVAL)
			rc = -EIO;
	}

out:
	for (pos = 0; pos < TG_EC_SHARDS_MAX; pos++)
		if (fds[pos] >= 0)
			close(fds[pos]);
	free(parity);
	if (rep)
		*rep = r;
	return rc;
}

/*
 * The object exists when at least K shards carry headers that agree with
 * each other: then get() can rebuild it. One stray shard (a crash between
 * renames, losses beyond parity) is not enough, because dedup answers from
 * this and a chunk it calls durable is never sent again.
 */
static int dir_exists(struct tg_store *s, const struct tg_org_id *org, const struct tg_chunk_id *id)
{
	struct store_dir *sd = (struct store_dir *)s;
	char orghex[TG_HEX_ID_LEN + 1], idhex[TG_HEX_ID_LEN + 1], sub[3], rel[SH_REL_MAX];
	struct shard_hdr h, first;
	uint32_t seen = 0;
	unsigned agree = 0;
	int hard = 0;

	if (!org || !id)
		return -EINVAL;
	rel_names(org, id, orghex, sub, idhex);
	snprintf(rel, sizeof(rel), "%s/%s/%s", orghex, sub, idhex);
	for (unsigned pos = 0; pos < sd->ndirs; pos++) {
		int fd = -1, rc = shard_open(sd, pos, rel, org, id, &fd, &h);

		if (rc == 0) {
			close(fd);
			if (!agree) {
				first = h;
			} else if (memcmp(&h.meta, &first.meta, sizeof(h.meta)) != 0) {
				continue;
			}
			if (h.index >= 32 || (seen & (1u << h.index)))
				continue;
			seen |= 1u << h.index;
			if (++agree >= first.meta.k)
				return 1;
			continue;
		}
		if (rc != -ENOENT && rc != -ENOTDIR && rc != -EBADMSG)
			hard = rc;
	}
	return hard;
}

static void dir_close(struct tg_store *s)
{
	struct store_dir *sd = (struct store_dir *)s;

	for (unsigned i = 0; i < sd->ndirs; i++)
		close(sd->dfd[i]);
	for (unsigned k = 0; k <= TG_EC_K_MAX; k++)
		for (unsigned m = 0; m <= TG_EC_M_MAX; m++)
			tg_ec_destroy(sd->ec[k][m]);
	pthread_mutex_destroy(&sd->ec_lock);
	free(sd);
}

static const struct tg_store_ops dir_ops = {
	.name = "dir",
	.put = dir_put,
	.get = dir_get,
	.exists = dir_exists,
	.close = dir_close,
};

struct tg_store *tg_store_dir_open(const char *const *dirs, unsigned ndirs, int *err)
{
	struct stat st[TG_EC_SHARDS_MAX];
	struct store_dir *sd;
	unsigned i = 0;
	int rc;

	if (!dirs || ndirs < 1 || ndirs > TG_EC_SHARDS_MAX) {
		rc = -EINVAL;
		goto err_out;
	}
	sd = calloc(1, sizeof(*sd));
	if (!sd) {
		rc = -ENOMEM;
		goto err_out;
	}
	sd->base.ops = &dir_ops;
	sd->ndirs = ndirs;
	for (i = 0; i < ndirs; i++) {
		if (!dirs[i]) {
			rc = -EINVAL;
			goto err_close;
		}
		sd->dfd[i] = open(dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (sd->dfd[i] < 0) {
			rc = -errno;
			goto err_close;
		}
		if (fstat(sd->dfd[i], &st[i])) {
			rc = -errno;
			close(sd->dfd[i]);
			goto err_close;
		}
		/* Shards of one chunk share a file name across directories, so
		 * one directory listed twice would lose shards. */
		for (unsigned j = 0; j < i; j++) {
			if (st[j].st_dev == st[i].st_dev && st[j].st_ino == st[i].st_ino) {
				rc = -EINVAL;
				close(sd->dfd[i]);
				goto err_close;
			}
		}
	}
	rc = pthread_mutex_init(&sd->ec_lock, NULL);
	if (rc) {
		rc = -rc;
		goto err_close;
	}
	return &sd->base;

err_close:
	while (i-- > 0)
		close(sd->dfd[i]);
	free(sd);
err_out:
	if (err)
		*err = rc;
	return NULL;
}
