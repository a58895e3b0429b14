/*
 * tg_manifest.h - the manifest of one backup: every file with its path,
 * type, mode, owner, size, mtime and list of chunks, serialized as a byte
 * stream that is stored like any chunk.
 *
 * A manifest may be larger than one chunk, so a backup has two levels: the
 * manifest stream is cut into pieces of at most TG_CHUNK_MAX bytes (each
 * stored as a chunk), and a small root object lists those pieces; the root's
 * chunk id is what BACKUP_END carries and what a restore starts from.
 *
 * The parser treats a manifest as hostile input (it comes from a client and
 * from storage): every length is bounded, counts must match the bytes, and
 * paths must be relative, without "." or ".." components, empty components,
 * NUL bytes, or more than TG_MF_PATH_MAX bytes, so a restore can never write
 * outside its target directory.
 *
 * Wire form: big-endian, see docs/protocol.md "Manifest".
 */
#ifndef TG_MANIFEST_H
#define TG_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "tg_proto.h"
#include "tg_types.h"

#define TG_MF_MAGIC      0x54474d46u /* "TGMF" */
#define TG_MF_ROOT_MAGIC 0x54474d52u /* "TGMR" */
#define TG_MF_VERSION    1u
#define TG_MF_PATH_MAX   4096u
#define TG_MF_CHUNKS_MAX (1u << 24)  /* per file: 16 Mi chunks (>= 16 TiB) */
#define TG_MF_PIECES_MAX 4096u       /* manifest pieces in a root (16 GiB) */

enum tg_mf_type {
	TG_MF_REG = 1,   /* regular file: chunks */
	TG_MF_DIR = 2,   /* directory: no chunks */
	TG_MF_LNK = 3,   /* symlink: target in link/link_len, no chunks */
};

struct tg_mf_file {
	const char *path;      /* relative, '/'-separated, not NUL-terminated */
	uint16_t path_len;
	uint8_t type;          /* enum tg_mf_type */
	uint32_t mode;         /* permission bits (07777) */
	uint32_t uid, gid;
	uint64_t size;         /* regular: sum of chunk lengths */
	int64_t mtime_sec;
	uint32_t mtime_nsec;   /* < 1e9 */
	const char *link;      /* symlink target (TG_MF_LNK) */
	uint16_t link_len;
	uint32_t nchunks;
	const uint8_t *chunks; /* nchunks * 20 bytes: id[16] + len (be32); tg_mf_chunk() */
};

/* Read entry i of f->chunks. */
void tg_mf_chunk(const struct tg_mf_file *f, uint32_t i, struct tg_chunk_ref *out);

/* ---- building ---- */
struct tg_mf_builder;

/* label: optional backup label (may be NULL); created: unix seconds. */
struct tg_mf_builder *tg_mf_builder_create(const char *label, int64_t created, int *err);
void tg_mf_builder_destroy(struct tg_mf_builder *b);
/* Append one file; chunks (nchunks entries) are copied. -EINVAL if f breaks a rule. */
int tg_mf_add(struct tg_mf_builder *b, const struct tg_mf_file *f, const struct tg_chunk_ref *chunks);
/* The serialized stream (valid until destroy); fills file count and logical bytes. */
int tg_mf_finish(struct tg_mf_builder *b, const uint8_t **buf, size_t *len,
		 uint32_t *nfiles, uint64_t *logical_bytes);

/* ---- parsing ---- */
struct tg_mf_iter {
	const uint8_t *buf;
	size_t len, off;
	uint32_t nfiles, seen;
	int64_t created;
	const char *label;
	uint16_t label_len;
	const char *why;       /* after -EBADMSG: what was wrong (static string) */
};

/* Check the stream header; 0 or -EBADMSG (it->why says why). */
int tg_mf_iter_init(struct tg_mf_iter *it, const uint8_t *buf, size_t len);
/* 1 and *f set; 0 at the end (after checking no trailing bytes); -EBADMSG. */
int tg_mf_iter_next(struct tg_mf_iter *it, struct tg_mf_file *f);

/* ---- the root: list of manifest pieces ---- */
/* Serialize a root listing npieces pieces into buf; returns length or -ENOSPC/-EINVAL. */
long tg_mf_root_build(uint8_t *buf, size_t cap, const struct tg_chunk_ref *pieces,
		      uint32_t npieces, uint64_t manifest_len);
/* Parse a root; pieces points into buf (npieces * 20 bytes, read with
 * tg_mf_root_piece()). 0 or -EBADMSG (lengths must add up to manifest_len). */
int tg_mf_root_parse(const uint8_t *buf, size_t len, const uint8_t **pieces,
		     uint32_t *npieces, uint64_t *manifest_len);
void tg_mf_root_piece(const uint8_t *pieces, uint32_t i, struct tg_chunk_ref *out);

#endif /* TG_MANIFEST_H */
