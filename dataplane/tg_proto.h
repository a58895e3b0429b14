/*
 * tg_proto.h - the tidegate wire protocol, version 1: the one header every
 * component (gateway, client, bench, tests) takes its wire definitions from.
 *
 * docs/protocol.md is the prose spec; this header is its executable half.
 * Every packet is one UDP datagram: a 16-byte common header followed by a
 * type-specific body. All multi-byte integers are big-endian (network order)
 * on the wire, because packets cross hosts of any endianness; the codec
 * (proto.c) converts to host order and never exposes raw wire structs.
 *
 * The codec is zero-copy for variable parts: a parsed message points into the
 * caller's buffer (names, id arrays, bitmaps, fragment payloads), so the buffer
 * must outlive the parsed struct. Parsers take (buf, len), trust neither, and
 * return a reason code from enum tg_perr for every reject so that callers can
 * count drops by reason.
 */
#ifndef TG_PROTO_H
#define TG_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TG_PROTO_MAGIC   0x5447u /* "TG" */
#define TG_PROTO_VERSION 1u
#define TG_HDR_LEN       16u

/* Limits every implementation enforces (docs/protocol.md, "Limits"). */
#define TG_ID_LEN         16u          /* XXH3-128 chunk id, GUIDs, device ids */
#define TG_NONCE_LEN      16u
#define TG_COOKIE_LEN     16u
#define TG_SALT_LEN       16u
#define TG_KEYID_LEN      8u           /* public part of a registration key */
#define TG_PROOF_LEN      32u          /* HMAC-SHA256 */
#define TG_TAG_LEN        16u          /* truncated HMAC-SHA256 */
#define TG_CRED_LEN       32u          /* device credential */
#define TG_NAME_MAX       64u          /* device / backup names, bytes */
#define TG_ERRMSG_MAX     200u
#define TG_CHUNK_MAX      (4u << 20)   /* largest chunk, bytes */
#define TG_FRAG_UNIT      64u          /* fragment offsets and lengths are multiples
                                        * of this, except a chunk's last fragment */
#define TG_FRAG_MIN       512u         /* smallest negotiated fragment payload */
#define TG_UDP_PAYLOAD_MAX 8972u       /* 9000-byte jumbo frame less IPv4 + UDP */
#define TG_FRAG_MAX       8896u        /* largest multiple of TG_FRAG_UNIT that fits
                                        * a jumbo frame with both headers */
#define TG_OFFER_MAX      64u          /* chunk ids per OFFER, NEED, ACK, GET */
#define TG_SACK_UNITS_MAX 8192u        /* bits in one SACK bitmap (1 KiB) */
#define TG_DEFAULT_PORT   7447u

/* Common header flags. */
#define TG_HF_NONE 0u /* v1 defines no header flags; receivers reject others */

enum tg_msg_type {
	TG_MSG_REG_INIT = 1,       /* C->G start registration with a key id */
	TG_MSG_REG_CHALLENGE = 2,  /* G->C nonce, salt, stateless cookie */
	TG_MSG_REG_PROOF = 3,      /* C->G HMAC proof of the registration key */
	TG_MSG_REG_OK = 4,         /* G->C device id and wrapped credential */
	TG_MSG_HELLO = 5,          /* C->G start a session with a device id */
	TG_MSG_CHALLENGE = 6,      /* G->C nonce and stateless cookie */
	TG_MSG_AUTH = 7,           /* C->G HMAC proof of the device credential */
	TG_MSG_SESSION_OK = 8,     /* G->C token, fragment size, credits */
	TG_MSG_OFFER = 9,          /* C->G chunk ids the client could send */
	TG_MSG_NEED = 10,          /* G->C which offered chunks to send */
	TG_MSG_DATA = 11,          /* both: one fragment of one chunk */
	TG_MSG_ACK = 12,           /* G->C per-chunk durable status, credits */
	TG_MSG_SACK = 13,          /* both: received-unit bitmap of one chunk */
	TG_MSG_BACKUP_END = 14,    /* C->G manifest root, close the backup */
	TG_MSG_BACKUP_DONE = 15,   /* G->C backup recorded (manifest durable) */
	TG_MSG_RESTORE_REQ = 16,   /* C->G which backup to restore */
	TG_MSG_RESTORE_OK = 17,    /* G->C the backup's manifest root */
	TG_MSG_GET = 18,           /* C->G send me these chunks */
	TG_MSG_ERROR = 19,         /* G->C an error code, why, about what */
	TG_MSG_CLOSE = 20,         /* both: end of session */
	TG_MSG_PING = 21,          /* C->G keepalive, asks for credits and SACKs */
	TG_MSG_PONG = 22,          /* G->C keepalive answer with credits */
	TG_MSG__MAX
};

/* Error codes carried by ERROR (and in ACK / BACKUP_DONE status fields). */
enum tg_err {
	TG_OK = 0,
	TG_ERR_BAD_KEY = 1,            /* registration key (or credential) wrong */
	TG_ERR_UNKNOWN_ORG = 2,        /* key id / provider GUID names no organization */
	TG_ERR_SEATS_FULL = 3,         /* organization has no free seat */
	TG_ERR_QUOTA_EXCEEDED = 4,     /* organization's disk quota reached */
	TG_ERR_ORG_DEACTIVATED = 5,    /* organization is deactivated */
	TG_ERR_RESTORE_OVER_LIMIT = 6, /* restore larger than the web-restore limit */
	TG_ERR_VERSION = 7,            /* protocol version not spoken here */
	TG_ERR_OVERLOADED = 8,         /* gateway sheds load: retry later */
	TG_ERR_UNAVAILABLE = 9,        /* control plane unavailable: retry later */
	TG_ERR_BAD_SESSION = 10,       /* unknown or expired session */
	TG_ERR_RATE_LIMITED = 11,      /* too many failed attempts from this source */
	TG_ERR_HASH_MISMATCH = 12,     /* chunk bytes do not hash to its id */
	TG_ERR_NOT_FOUND = 13,         /* no such backup / chunk for this org */
	TG_ERR_STORAGE = 14,           /* storage failed; chunk not durable */
	TG_ERR_BAD_REQUEST = 15,       /* well-formed but not allowed now */
	TG_ERR_DUP = 16,               /* ACK status: already durable (dedup) */
	TG_ERR__MAX
};

/* Why a packet was rejected by the codec; every value is a drop counter. */
enum tg_perr {
	TG_PERR_OK = 0,
	TG_PERR_SHORT,      /* shorter than the header or the fixed body */
	TG_PERR_MAGIC,      /* not a tidegate packet */
	TG_PERR_VERSION,    /* version != TG_PROTO_VERSION */
	TG_PERR_TYPE,       /* unknown message type */
	TG_PERR_FLAGS,      /* reserved header flags or reserved fields set */
	TG_PERR_LEN,        /* paylen disagrees with the datagram length */
	TG_PERR_COUNT,      /* an element count out of range or not matching length */
	TG_PERR_NAME,       /* name length out of range or bad bytes */
	TG_PERR_RANGE,      /* a field's value out of its allowed range */
	TG_PERR_TOKEN,      /* token zero where one is required, or set where not */
	TG_PERR_BUF,        /* build: output buffer too small */
	TG_PERR__MAX
};

const char *tg_perr_name(enum tg_perr e);  /* "short", "magic", ... */
const char *tg_err_name(enum tg_err e);    /* "bad key", "seats full", ... */

/* Flags in REG_INIT / REG_PROOF / HELLO / AUTH. */
#define TG_RF_RELAY 0x0001u /* sent by a hosted org's backup server for a device */
#define TG_RF_ADMIN 0x0002u /* RESTORE_REQ: act with the org-admin role */
#define TG_RF_LATEST 0x0004u /* RESTORE_REQ: the newest backup, ignore backup_id */

/* ---- parsed messages (host byte order, pointers into the packet) ---- */

struct tg_hdr {
	uint8_t version;
	uint8_t type;     /* enum tg_msg_type */
	uint16_t flags;
	uint16_t paylen;  /* body bytes after the 16-byte header */
	uint64_t token;   /* session token; 0 before a session exists */
};

struct tg_reg_init {
	uint8_t provider_guid[TG_ID_LEN];
	uint8_t key_id[TG_KEYID_LEN];
	uint8_t client_nonce[TG_NONCE_LEN];
	uint16_t flags;            /* TG_RF_RELAY */
	uint16_t name_len;         /* 1..TG_NAME_MAX */
	const char *name;          /* device name, not NUL-terminated */
};

struct tg_reg_challenge {
	uint8_t client_nonce[TG_NONCE_LEN];
	uint8_t server_nonce[TG_NONCE_LEN];
	uint8_t salt[TG_SALT_LEN];
	uint8_t cookie[TG_COOKIE_LEN];
};

struct tg_reg_proof {
	uint8_t provider_guid[TG_ID_LEN];
	uint8_t key_id[TG_KEYID_LEN];
	uint8_t client_nonce[TG_NONCE_LEN];
	uint8_t server_nonce[TG_NONCE_LEN];
	uint8_t cookie[TG_COOKIE_LEN];
	uint16_t flags;
	uint16_t name_len;
	uint8_t proof[TG_PROOF_LEN];
	const char *name;
};

struct tg_reg_ok {
	uint8_t client_nonce[TG_NONCE_LEN];
	uint8_t org_guid[TG_ID_LEN];
	uint8_t device_id[TG_ID_LEN];
	uint8_t wrapped_cred[TG_CRED_LEN]; /* AES-256-GCM ciphertext */
	uint8_t wrap_tag[TG_TAG_LEN];      /* its GCM tag */
};

struct tg_hello {
	uint8_t device_id[TG_ID_LEN];
	uint8_t client_nonce[TG_NONCE_LEN];
	uint16_t max_frag;         /* TG_FRAG_MIN..TG_FRAG_MAX, multiple of unit */
	uint16_t flags;
};

struct tg_challenge {
	uint8_t client_nonce[TG_NONCE_LEN];
	uint8_t server_nonce[TG_NONCE_LEN];
	uint8_t cookie[TG_COOKIE_LEN];
};

struct tg_auth {
	uint8_t device_id[TG_ID_LEN];
	uint8_t client_nonce[TG_NONCE_LEN];
	uint8_t server_nonce[TG_NONCE_LEN];
	uint8_t cookie[TG_COOKIE_LEN];
	uint16_t max_frag;
	uint16_t flags;
	uint8_t proof[TG_PROOF_LEN];
};

struct tg_session_ok {
	uint8_t client_nonce[TG_NONCE_LEN];
	uint64_t token;            /* non-zero; carried in every later header */
	uint8_t org_guid[TG_ID_LEN];
	uint16_t frag_size;        /* TG_FRAG_MIN..TG_FRAG_MAX, multiple of unit */
	uint16_t credits;          /* chunks in flight (unacknowledged), >= 1 */
	uint32_t credit_bytes;     /* bytes in flight, >= max_chunk when credits >= 1 */
	uint32_t max_chunk;        /* largest chunk accepted, <= TG_CHUNK_MAX */
	uint8_t mac[TG_TAG_LEN];   /* proves the gateway derived the session key */
};

struct tg_chunk_ref {          /* OFFER entry */
	uint8_t id[TG_ID_LEN];
	uint32_t len;              /* 1..TG_CHUNK_MAX */
};

struct tg_offer {
	uint32_t offer_seq;
	uint16_t count;            /* 1..TG_OFFER_MAX */
	const uint8_t *entries;    /* count * 20 wire bytes; use tg_offer_entry() */
};

struct tg_need {
	uint32_t offer_seq;
	uint16_t count;            /* 1..TG_OFFER_MAX, as in the OFFER */
	const uint8_t *bitmap;     /* ceil(count/8) bytes, bit i (LSB first) = send i */
};

struct tg_data {
	uint8_t chunk_id[TG_ID_LEN];
	uint32_t chunk_len;        /* 1..TG_CHUNK_MAX */
	uint32_t frag_off;         /* multiple of TG_FRAG_UNIT, < chunk_len */
	uint8_t tag[TG_TAG_LEN];   /* per-chunk tag under the session key */
	uint16_t frag_len;         /* payload bytes; off+len <= chunk_len */
	const uint8_t *payload;
};

struct tg_ack_entry {
	uint8_t id[TG_ID_LEN];
	uint16_t status;           /* TG_OK stored, TG_ERR_DUP, or an error */
};

struct tg_ack {
	uint16_t credits;
	uint16_t count;            /* 0..TG_OFFER_MAX */
	uint32_t credit_bytes;
	const uint8_t *entries;    /* count * 20 wire bytes; use tg_ack_entry() */
};

struct tg_sack {
	uint8_t chunk_id[TG_ID_LEN];
	uint32_t chunk_len;
	uint32_t unit_base;        /* first TG_FRAG_UNIT-sized unit in the bitmap */
	uint16_t nunits;           /* 1..TG_SACK_UNITS_MAX bits */
	const uint8_t *bitmap;     /* ceil(nunits/8) bytes, bit i = unit base+i held */
};

struct tg_backup_end {
	uint8_t root_id[TG_ID_LEN]; /* manifest root chunk, already durable */
	uint32_t root_len;
	uint32_t nfiles;
	uint64_t logical_bytes;    /* sum of file sizes in the backup */
	uint16_t name_len;         /* 0..TG_NAME_MAX */
	const char *name;          /* optional label */
};

struct tg_backup_done {
	uint8_t root_id[TG_ID_LEN];
	uint64_t backup_id;        /* unique per device, increasing */
	uint16_t status;           /* enum tg_err */
};

struct tg_restore_req {
	uint8_t device_id[TG_ID_LEN]; /* whose backup; all-zero = this device */
	uint64_t backup_id;        /* ignored with TG_RF_LATEST */
	uint16_t flags;            /* TG_RF_ADMIN, TG_RF_LATEST */
};

struct tg_restore_ok {
	uint64_t backup_id;
	uint8_t root_id[TG_ID_LEN];
	uint32_t root_len;
	uint64_t total_bytes;      /* logical bytes the restore will return */
	uint64_t created;          /* unix seconds */
};

struct tg_get {
	uint16_t count;            /* 1..TG_OFFER_MAX */
	const uint8_t *ids;        /* count * 16 bytes */
};

struct tg_error {
	uint16_t code;             /* enum tg_err */
	uint32_t detail;           /* e.g. the offending offer_seq */
	uint8_t ref_id[TG_ID_LEN]; /* the chunk or device concerned, or zeros */
	uint16_t msg_len;          /* 0..TG_ERRMSG_MAX */
	const char *msg;
};

struct tg_close {
	uint16_t reason;           /* enum tg_err, TG_OK for a normal close */
};

struct tg_ping {
	uint64_t nonce;            /* echoed in PONG */
};

struct tg_pong {
	uint64_t nonce;
	uint16_t credits;
	uint32_t credit_bytes;
};

struct tg_msg {
	struct tg_hdr hdr;
	union {
		struct tg_reg_init reg_init;
		struct tg_reg_challenge reg_challenge;
		struct tg_reg_proof reg_proof;
		struct tg_reg_ok reg_ok;
		struct tg_hello hello;
		struct tg_challenge challenge;
		struct tg_auth auth;
		struct tg_session_ok session_ok;
		struct tg_offer offer;
		struct tg_need need;
		struct tg_data data;
		struct tg_ack ack;
		struct tg_sack sack;
		struct tg_backup_end backup_end;
		struct tg_backup_done backup_done;
		struct tg_restore_req restore_req;
		struct tg_restore_ok restore_ok;
		struct tg_get get;
		struct tg_error error;
		struct tg_close close;
		struct tg_ping ping;
		struct tg_pong pong;
	} u;
};

/* Wire sizes of fixed bodies and entries (docs/protocol.md tables). */
#define TG_OFFER_ENTRY_LEN 20u
#define TG_ACK_ENTRY_LEN   20u
#define TG_DATA_HDR_LEN    40u /* DATA body before the payload */

/*
 * Parse the common header only: magic, version, type, flags, and that paylen
 * matches len exactly. Cheap enough for the gateway's first look at a packet.
 */
enum tg_perr tg_proto_parse_hdr(const void *buf, size_t len, struct tg_hdr *h);

/*
 * Parse a whole datagram (header and body). On success fills *m and returns
 * TG_PERR_OK; on failure returns the reason and *m is unspecified. Checks
 * every field the spec bounds, including whether the type requires a token.
 */
enum tg_perr tg_proto_parse(const void *buf, size_t len, struct tg_msg *m);

/*
 * Build m (m->hdr.type selects the body; magic, version and paylen are
 * filled in) into buf. Returns the datagram length, or -(enum tg_perr) if m
 * violates the spec (the same checks as the parser) or cap is too small.
 */
ssize_t tg_proto_build(void *buf, size_t cap, const struct tg_msg *m);

/* Entry accessors for the variable arrays of OFFER and ACK. */
void tg_offer_entry(const struct tg_offer *o, unsigned i, struct tg_chunk_ref *out);
void tg_ack_entry(const struct tg_ack *a, unsigned i, struct tg_ack_entry *out);
/* Encoders for building those arrays into caller memory (wire order). */
void tg_offer_entry_put(uint8_t *entries, unsigned i, const struct tg_chunk_ref *in);
void tg_ack_entry_put(uint8_t *entries, unsigned i, const struct tg_ack_entry *in);

#endif /* TG_PROTO_H */
