/*
 * engine_int.h - private state of one worker lcore's protocol engine, shared
 * by engine.c (lifecycle, dispatch, sessions, jobs, timers), engine_hs.c
 * (stateless handshakes), engine_up.c (backup: OFFER, DATA, ACK, PING,
 * BACKUP_END) and engine_down.c (restore: RESTORE_REQ, GET, paced DATA).
 *
 * Everything here is owned by one lcore: no locks, no atomics. Every table
 * is sized at create time from the service's info, so the packet path never
 * allocates. Sessions are slots in one array; a slot is found by token
 * through an open-addressing hash, and a closed slot whose jobs are still
 * out at the service stays a zombie (its memory untouched) until the last
 * job comes back.
 */
#ifndef TG_GW_ENGINE_INT_H
#define TG_GW_ENGINE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "gw.h"
#include "gw_job.h"
#include "tg_crypto.h"
#include "tg_proto.h"
#include "tg_reasm.h"

#define GW_IDLE_MS        60000u  /* session idle timeout (protocol.md 5.1) */
#define GW_BUCKET_MS      30000u  /* cookie time bucket */
#define GW_RND_POOL       4096u   /* CSPRNG bytes kept for nonces and tokens */
#define GW_HS_MAX         64u     /* REGISTER/AUTH jobs in flight per worker */
#define GW_OFFERS_MAX     4u      /* OFFER jobs in flight per session */
#define GW_NEED_CACHE     4u      /* answered NEEDs kept per session */
#define GW_ACK_RECENT     32u     /* durable acks remembered per session */
#define GW_ACK_PEND       64u     /* ack entries waiting for the turn's flush */
#define GW_READ_BUFS      4u      /* restore read buffers per worker */
#define GW_TX_BUDGET      64u     /* restore DATA fragments per poll turn */
#define GW_DONE_BURST     32u
#define GW_DONE_TURN      256u    /* completions handled per poll turn */
#define GW_IDLE_SCAN      64u     /* session slots checked for idleness per turn */
#define GW_RL_SLOTS       1024u   /* per-source rate limit buckets */
#define GW_RL_SRC_RATE    20u     /* pre-session replies per second per source */
#define GW_RL_SRC_BURST   32u
#define GW_RL_ALL_RATE    2000u   /* ... and for the whole worker */
#define GW_RL_ALL_BURST   512u

enum gw_sess_state {
	GW_S_FREE = 0,
	GW_S_ACTIVE,
	GW_S_ZOMBIE, /* closed, waiting for its jobs to come back */
};

struct gw_ack_rec {
	struct tg_chunk_id id;
	uint16_t status;
};

struct gw_need_rec {
	bool valid;
	uint16_t count;
	uint32_t seq;
	uint8_t bits[(TG_OFFER_MAX + 7) / 8];
};

struct gw_sess {
	uint8_t state;             /* enum gw_sess_state */
	bool admin, relay;
	bool ack_listed;           /* on the engine's ack flush list */
	bool get_listed;           /* on the engine's read-start list */
	bool end_inflight, end_done;
	bool restore_inflight, restore_done, restore_ok;
	uint8_t noffers;
	uint8_t need_next;
	uint8_t npend;
	uint8_t recent_next;
	uint8_t nrecent;
	uint16_t frag_size;
	uint16_t credits;
	uint32_t credit_bytes;
	uint32_t jobs;             /* jobs of this session at the service */
	uint64_t gen;              /* bumped when the slot is freed */
	uint64_t token;
	uint64_t last_ms;
	struct gw_peer peer;       /* source of the most recent valid packet */
	struct tg_org_id org;
	uint8_t device[TG_ID_LEN];
	uint8_t key[TG_KEY_LEN];
	struct tg_policy policy;
	struct tg_session_ok ok;   /* answered again to a duplicate AUTH */
	uint8_t sn[TG_NONCE_LEN];
	struct tg_rsess *rs;
	uint32_t offer_seq[GW_OFFERS_MAX];
	struct gw_need_rec need[GW_NEED_CACHE];
	struct gw_ack_rec pend[GW_ACK_PEND];
	struct gw_ack_rec recent[GW_ACK_RECENT];
	uint8_t end_root[TG_ID_LEN];
	uint64_t end_backup_id;
	struct tg_restore_req rreq;
	struct tg_restore_ok rok;
	struct tg_chunk_id *getq;  /* credits entries: ids waiting for a read buffer */
	uint16_t gq_head, gq_len;
};

enum gw_rbuf_state {
	GW_RB_FREE = 0,
	GW_RB_READING,  /* a READ job points at buf */
	GW_RB_SEND,     /* units left to send */
	GW_RB_IDLE,     /* all sent; kept for SACK repairs until recycled */
};

struct gw_rbuf {
	uint8_t state;
	bool preset;          /* todo was set by a SACK before the read returned */
	uint32_t sess;
	uint64_t gen;
	struct tg_chunk_id id;
	uint8_t tag[TG_TAG_LEN];
	uint32_t len;
	uint32_t nunits;
	uint32_t pending;     /* bits set in todo */
	uint32_t cursor;      /* next unit to look at */
	uint64_t idle_since;
	uint8_t *buf;
	uint64_t *todo;       /* units to send */
};

struct gw_tb {
	uint64_t last_ms;
	uint64_t milli;       /* tokens * 1000 */
};

struct gw_rl_ent {
	uint32_t ip;
	bool used;
	struct gw_tb tb;
};

struct gw_hent {
	uint64_t token;       /* 0: empty */
	uint32_t idx;
};

struct gw_engine {
	struct gw_engine_cfg cfg;
	struct gw_service_info info;
	struct gw_counters *c;
	struct gw_counters own_counters;
	struct tg_reasm *ra;
	bool stopping, closed_all;
	uint64_t now_ms;

	/* sessions */
	unsigned nsess;
	struct gw_sess *sess;
	uint32_t *sess_free;
	unsigned nfree;
	struct gw_hent *ht;
	uint32_t ht_mask;
	unsigned ht_bits;
	uint32_t *ack_list;
	unsigned nack_list;
	uint32_t *get_list;
	unsigned nget_list;
	unsigned idle_cursor;
	struct tg_chunk_id *getq_mem;

	/* jobs */
	unsigned njobs;
	struct gw_job *jobs;
	struct gw_job **job_free;
	unsigned njob_free;
	struct gw_job *hs[GW_HS_MAX];   /* handshakes in flight */

	/* restore */
	uint32_t read_cap;
	struct gw_rbuf rb[GW_READ_BUFS];
	unsigned rb_rr;

	/* randomness and rate limits */
	uint8_t rnd[GW_RND_POOL];
	unsigned rnd_pos;
	struct gw_tb rl_all;
	struct gw_rl_ent rl[GW_RL_SLOTS];

	/* scratch */
	uint8_t txbuf[TG_UDP_PAYLOAD_MAX + 64];
	uint8_t scratch[TG_OFFER_MAX * TG_ACK_ENTRY_LEN];
};

/* engine.c */
bool gw_tx_msg(struct gw_engine *e, const struct gw_peer *to, struct tg_msg *m);
bool gw_send_error(struct gw_engine *e, const struct gw_peer *to, uint64_t token, uint16_t code,
		   uint32_t detail, const uint8_t *ref, const char *msg);
bool gw_rl_allow(struct gw_engine *e, const struct gw_peer *from);
int gw_rnd(struct gw_engine *e, void *out, size_t n);
struct gw_job *gw_job_get(struct gw_engine *e);
void gw_job_put(struct gw_engine *e, struct gw_job *j);
bool gw_job_submit_sess(struct gw_engine *e, struct gw_sess *s, struct gw_job *j);
struct gw_sess *gw_sess_new(struct gw_engine *e, uint64_t *token);
void gw_sess_close(struct gw_engine *e, struct gw_sess *s, bool send_close, uint16_t reason);
static inline uint32_t gw_sess_idx(const struct gw_engine *e, const struct gw_sess *s)
{
	return (uint32_t)(s - e->sess);
}
void gw_drop(struct gw_engine *e, enum gw_drop d);

/* engine_hs.c */
void gw_hs_rx(struct gw_engine *e, const struct gw_peer *from, const struct tg_msg *m);
void gw_hs_done(struct gw_engine *e, struct gw_job *j);

/* engine_up.c */
void gw_up_offer(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m);
void gw_up_data(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m);
void gw_up_ping(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m);
void gw_up_backup_end(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m);
void gw_up_done(struct gw_engine *e, struct gw_sess *s, struct gw_job *j);
void gw_up_flush_acks(struct gw_engine *e);

/* engine_down.c */
void gw_down_restore_req(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m);
void gw_down_get(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m);
void gw_down_sack(struct gw_engine *e, struct gw_sess *s, const struct tg_msg *m);
void gw_down_done(struct gw_engine *e, struct gw_sess *s, struct gw_job *j);
void gw_down_sess_closed(struct gw_engine *e, struct gw_sess *s);
void gw_down_poll(struct gw_engine *e);

#endif /* TG_GW_ENGINE_INT_H */
