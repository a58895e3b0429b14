/*
 * tgc.h - the client library behind tidegate-push and tidegate-restore: the
 * client side of docs/protocol.md (sections 3 to 7) over a kernel UDP socket.
 *
 * One file per concern: conn.c (socket, pacing, handshakes, session),
 * creds.c (credentials file), walk.c (tree walk, FastCDC, manifest),
 * xfer.c (upload: offers, credits, fragments, loss recovery), fetch.c
 * (download: GETs within credits, verification), restore_write.c (writes
 * confined beneath the target directory), timing.c (RTO estimator, credit
 * window, id map). Errors: functions return 0/count or -errno; -EPROTO means
 * "the gateway answered with an error" (conn->gw_err, conn->gw_msg say
 * which) and -ETIMEDOUT means "no answer". The library never prints.
 */
#ifndef TGC_H
#define TGC_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tg_manifest.h"
#include "tg_proto.h"
#include "tg_cdc.h"
#include "tg_crypto.h"
#include "tg_regkey.h"
#include "tg_types.h"

/* ---- time ---- */
uint64_t tgc_now_ns(void);

/* ---- RTO estimator (RFC 6298 as protocol.md 5.1 fixes it) ---- */
#define TGC_RTO_INIT_US 300000u
#define TGC_RTO_MIN_US  100000u
#define TGC_RTO_MAX_US  5000000u

struct tgc_rto {
	bool have;          /* a first sample has been taken */
	uint64_t srtt_us;
	uint64_t rttvar_us;
	uint64_t rto_us;    /* current base RTO */
};

void tgc_rto_init(struct tgc_rto *r);
void tgc_rto_sample(struct tgc_rto *r, uint64_t rtt_us);
/* Doubled RTO for one more retry of the same thing, capped at the maximum. */
uint64_t tgc_rto_backoff(uint64_t rto_us);

/* ---- credit window (5.4 step 3) ---- */
struct tgc_window {
	uint16_t credits;        /* chunks allowed in flight */
	uint32_t credit_bytes;   /* bytes allowed in flight */
	uint32_t chunks;         /* chunks in flight now */
	uint64_t bytes;          /* bytes in flight now */
};

void tgc_win_init(struct tgc_window *w, uint16_t credits, uint32_t credit_bytes);
/* The gateway's latest absolute window (ACK, PONG). */
void tgc_win_update(struct tgc_window *w, uint16_t credits, uint32_t credit_bytes);
bool tgc_win_can_send(const struct tgc_window *w, uint32_t len);
void tgc_win_add(struct tgc_window *w, uint32_t len);
void tgc_win_remove(struct tgc_window *w, uint32_t len);

/* ---- id -> index map (open addressing; ids are hashes already) ---- */
struct tgc_idmap {
	struct tgc_idslot {
		uint8_t id[TG_ID_LEN];
		uint32_t val;
	} *slots;
	size_t cap, n;
};

int tgc_idmap_init(struct tgc_idmap *m, size_t hint);
void tgc_idmap_free(struct tgc_idmap *m);
/* Returns the value stored for id, or UINT32_MAX. */
uint32_t tgc_idmap_get(const struct tgc_idmap *m, const uint8_t id[TG_ID_LEN]);
/* Inserts (id, val) unless present; returns the value now stored, or
 * UINT32_MAX on allocation failure. */
uint32_t tgc_idmap_put(struct tgc_idmap *m, const uint8_t id[TG_ID_LEN], uint32_t val);

/* ---- credentials file ---- */
struct tgc_cred {
	uint8_t provider[TG_ID_LEN];
	char device[TG_NAME_MAX + 1];
	bool relay;
	uint8_t org[TG_ID_LEN];
	uint8_t device_id[TG_ID_LEN];
	uint8_t cred[TG_CRED_LEN];
};

struct tgc_creds {
	struct tgc_cred *v;
	size_t n, cap;
};

/* A missing file loads as empty. -EBADMSG with *bad_line set for a corrupt line. */
int tgc_creds_load(const char *path, struct tgc_creds *c, unsigned *bad_line);
/* Atomic (temp file in the same directory, fsync, rename), mode 0600; the
 * directory is created (0700) if missing. */
int tgc_creds_save(const char *path, const struct tgc_creds *c);
/* provider may be NULL (any provider). */
struct tgc_cred *tgc_creds_find(struct tgc_creds *c, const uint8_t *provider,
				const char *device, bool relay);
/* Replaces the entry of the same (provider, device, relay) or appends. */
int tgc_creds_put(struct tgc_creds *c, const struct tgc_cred *e);
void tgc_creds_free(struct tgc_creds *c);
/* One line (with '\n') into out; parse one line without its '\n'. */
int tgc_cred_format(const struct tgc_cred *e, char *out, size_t cap);
int tgc_cred_parse(const char *line, struct tgc_cred *e);

/* ---- connection and session ---- */
struct tgc_stats {
	uint64_t packets, wire_bytes, data_bytes, retransmits;
	uint64_t rx_packets, rx_dropped;
};

struct tgc_conn {
	int fd;
	struct sockaddr_in gw;
	uint16_t max_frag;          /* from the MTU */
	uint64_t rate_bps;          /* pacing, 0 = unlimited */
	uint64_t pace_next_ns;
	unsigned timeout_s;         /* dead gateway */
	/* session */
	bool open;
	uint16_t flags;             /* TG_RF_RELAY */
	uint64_t token;
	uint8_t key[TG_KEY_LEN];
	uint8_t org[TG_ID_LEN];
	uint8_t device_id[TG_ID_LEN];
	uint16_t frag_size;
	uint16_t credits;
	uint32_t credit_bytes;
	uint32_t max_chunk;
	uint64_t last_rx_ns, last_tx_ns;
	uint64_t ping_nonce;
	uint32_t offer_seq;         /* increasing within a session (3.9) */
	struct tgc_rto rto;
	/* last gateway error (-EPROTO) */
	uint16_t gw_err;
	uint32_t gw_detail;
	char gw_msg[TG_ERRMSG_MAX * 4 + 1]; /* escaped */
	struct tgc_stats st;
	uint8_t txbuf[TG_UDP_PAYLOAD_MAX];
	uint8_t rxbuf[TG_UDP_PAYLOAD_MAX + 64];
};

/* max_frag for an IPv4 path MTU: MTU - 20 - 8 - 16 - 40, down to a multiple of 64. */
uint16_t tgc_max_frag(unsigned mtu);
/* host: "HOST[:PORT]". */
int tgc_conn_open(struct tgc_conn *c, const char *host, unsigned mtu, unsigned rate_mbit,
		  unsigned timeout_s);
void tgc_conn_close(struct tgc_conn *c);
/* Build and send one packet (header token filled from the session when
 * m->hdr.token is 0 and the type needs one); paced. */
int tgc_send(struct tgc_conn *c, struct tg_msg *m);
/* Wait up to timeout_us for one valid packet: 1 and *m set, 0 on timeout. */
int tgc_recv(struct tgc_conn *c, struct tg_msg *m, uint64_t timeout_us);

/* Registration (5.2): on success e->org, device_id and cred are set. */
int tgc_register(struct tgc_conn *c, const struct tg_regkey *key, struct tgc_cred *e);
/* Session handshake (5.3) with a stored credential. */
int tgc_session_open(struct tgc_conn *c, const struct tgc_cred *e);
/* CLOSE(reason), once, no answer. */
void tgc_session_close(struct tgc_conn *c, uint16_t reason);
/*
 * Handle a packet no transfer engine claimed: PONG credits, ERROR and CLOSE
 * for this session. Returns 0, or -EPROTO when the session is over.
 */
int tgc_session_common(struct tgc_conn *c, const struct tg_msg *m);
/* PING when nothing was sent for 10 s; drains what arrived meanwhile. */
int tgc_keepalive(struct tgc_conn *c);
/* True when the gateway has been silent past the dead-gateway timeout. */
bool tgc_dead(const struct tgc_conn *c);
/* Record a gateway error (for -EPROTO) with an escaped message. */
void tgc_set_gw_err(struct tgc_conn *c, uint16_t code, uint32_t detail, const char *msg,
		    size_t len);

/* ---- tree walk and manifest ---- */
struct tgc_file {
	char *path;            /* manifest path (relative) */
	char *src;             /* where to read a regular file from */
	int src_fd;            /* or an open fd (stdin spool), else -1 */
	uint8_t type;          /* enum tg_mf_type */
	uint32_t mode, uid, gid;
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	char *link;
	uint32_t first, nchunks; /* into tree->refs */
};

struct tgc_ref {             /* one chunk of one file, in order */
	uint8_t id[TG_ID_LEN];
	uint32_t len;
	uint32_t file;
	uint64_t off;
};

struct tgc_tree {
	struct tgc_file *files;
	size_t nfiles, fcap;
	struct tgc_ref *refs;
	size_t nrefs, rcap;
	uint64_t logical;
	uint32_t max_chunk;
	unsigned skipped;           /* special files left out */
	uint8_t *buf;               /* read buffer */
	size_t buf_len;
	void (*tick)(void *arg);    /* called between chunks (keepalive) */
	void *tick_arg;
	char why[512];              /* what went wrong, for the caller's message */
};

int tgc_tree_init(struct tgc_tree *t, uint32_t max_chunk);
void tgc_tree_free(struct tgc_tree *t);
/* A directory contributes its contents at the manifest root; anything else
 * its base name. */
int tgc_tree_add_path(struct tgc_tree *t, const char *path);
/* A regular file already open (stdin spooled to a temporary file). */
int tgc_tree_add_fd(struct tgc_tree *t, int fd, const char *name);
/* Serialize the manifest stream (caller frees *buf). */
int tgc_tree_manifest(const struct tgc_tree *t, const char *label, int64_t created,
		      uint8_t **buf, size_t *len, uint32_t *nfiles);
/* Cut buf into chunk pieces (same chunker, max max_chunk); returns count or -errno. */
long tgc_cut_pieces(const uint8_t *buf, size_t len, uint32_t max_chunk,
		    struct tg_chunk_ref **out);
int tgc_cdc_params(uint32_t max_chunk, struct tg_cdc *cdc);

/* ---- upload engine ---- */
struct tgc_item;
typedef int (*tgc_read_fn)(void *arg, const struct tgc_item *it, uint8_t *buf);

struct tgc_item {
	uint8_t id[TG_ID_LEN];
	uint32_t len;
	uint32_t src;            /* caller's index (file), or UINT32_MAX for mem */
	uint64_t off;
	const uint8_t *mem;      /* in-memory source */
	/* engine state */
	uint8_t state;
	uint8_t retries;
	bool retransmitted;
	bool probed, sacked;
	uint32_t held_max;       /* most units the gateway reported holding */
	uint64_t rto_us;
	uint64_t deadline_ns;
	uint64_t sent_ns;
	uint8_t *data;
	uint8_t tag[TG_TAG_LEN];
};

struct tgc_up_stats {
	uint64_t offered, needed, dup, acked, bytes_sent_new;
};

struct tgc_progress {
	void (*fn)(void *arg, uint64_t done, uint64_t total);
	void *arg;
};

/* Offer all items, send the needed ones within credits, until every one
 * is answered. Items already done are skipped, so a second call resumes. */
int tgc_upload(struct tgc_conn *c, struct tgc_item *items, size_t n, tgc_read_fn rd, void *arg,
	       struct tgc_up_stats *st, const struct tgc_progress *pg);
/* Reset items not yet done for a new session (BAD_SESSION resume). */
void tgc_upload_reset(struct tgc_item *items, size_t n);
/* BACKUP_END until BACKUP_DONE. */
int tgc_backup_end(struct tgc_conn *c, const uint8_t root[TG_ID_LEN], uint32_t root_len,
		   uint32_t nfiles, uint64_t logical, const char *label, uint64_t *backup_id);

/* ---- download engine ---- */
struct tgc_want {
	uint8_t id[TG_ID_LEN];
	uint32_t len;
};

/* Called with each verified chunk, in any order; non-zero stops the fetch. */
typedef int (*tgc_deliver_fn)(void *arg, size_t idx, const uint8_t *data, uint32_t len);

int tgc_restore_req(struct tgc_conn *c, const uint8_t *device_id, uint64_t backup_id,
		    uint16_t flags, struct tg_restore_ok *ok);
int tgc_fetch(struct tgc_conn *c, const struct tgc_want *w, size_t n, tgc_deliver_fn fn,
	      void *arg, const struct tgc_progress *pg);

/* ---- restore writer ---- */
struct tgc_rw {
	int rootfd;
	bool owners;             /* chown (running as root) */
	int cache_fd;            /* last regular file opened for writing */
	char *cache_path;
	char why[256];
};

int tgc_rw_open(struct tgc_rw *w, const char *target, bool force);
void tgc_rw_close(struct tgc_rw *w);
/* Reject absolute paths and empty, "." or ".." components. */
bool tgc_rw_path_ok(const char *path, size_t len);
int tgc_rw_mkdir(struct tgc_rw *w, const char *path, size_t len);
int tgc_rw_create(struct tgc_rw *w, const char *path, size_t len);
int tgc_rw_write(struct tgc_rw *w, const char *path, size_t len, uint64_t off,
		 const uint8_t *buf, size_t n);
int tgc_rw_symlink(struct tgc_rw *w, const char *path, size_t len, const char *target,
		   size_t tlen);
/* Mode, owner (when allowed) and mtime of one entry, never through a symlink. */
int tgc_rw_meta(struct tgc_rw *w, const struct tg_mf_file *f);

#endif /* TGC_H */
