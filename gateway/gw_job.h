/*
 * gw_job.h - the work a worker lcore hands to the service and gets back.
 *
 * Everything that may block (the gateway link to tidegate-control, the
 * store's syscalls, fsync) is a job. A worker takes a job from its own pool,
 * fills the request half, gw_service_submit()s it (a lock-free rte_ring
 * enqueue; false when full: the worker sheds and counts), and later finds it
 * again, answer half filled, in gw_service_done(). Memory rules:
 *  - a job, and every buffer it points to, stays owned by the worker that
 *    submitted it; the service only reads the request and writes the answer,
 *    and never touches the job after handing it back;
 *  - a worker must not free or reuse anything a job in flight points to
 *    (a closing session waits, as a zombie, for its jobs to come back);
 *  - GW_JOB_ORG_UPDATE is the one message the service makes itself (malloc);
 *    the worker free()s it after applying it.
 */
#ifndef TG_GW_JOB_H
#define TG_GW_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "gw.h"
#include "tg_chunk.h"
#include "tg_proto.h"
#include "tg_types.h"

enum gw_job_type {
	/* control thread: the gateway link */
	GW_JOB_REGISTER = 1, /* link "register" */
	GW_JOB_AUTH,         /* link "auth" */
	GW_JOB_BACKUP_END,   /* check the root and its pieces are durable, then "backup.record" */
	GW_JOB_RESTORE,      /* link "restore.authorize" */
	/* I/O threads: the store */
	GW_JOB_OFFER,        /* which offered ids does this org lack? (index, then store) */
	GW_JOB_STORE,        /* verify, reserve quota, encode, put durably */
	GW_JOB_READ,         /* get (rebuilding if need be), decode, verify */
	/* service -> worker, unsolicited */
	GW_JOB_ORG_UPDATE,
};

enum gw_org_state {
	GW_ORG_ACTIVE = 0,
	GW_ORG_DEACTIVATED = 1,
	GW_ORG_DELETED = 2,
};

struct gw_job {
	uint8_t type;              /* enum gw_job_type */
	uint8_t worker;            /* submitting worker */
	uint16_t status;           /* answer: enum tg_err (TG_OK, TG_ERR_DUP, ...) */
	uint32_t sess;             /* the worker's session slot (worker-private meaning) */
	uint64_t sess_gen;         /* slot generation when submitted */
	struct gw_peer peer;       /* the client, for handshakes answered later */
	struct tg_org_id org;      /* request: the session's organization (not REGISTER/AUTH) */
	char msg[96];              /* answer: a human reason to put in ERROR (may be "") */
	uint32_t retry_after;      /* answer: seconds hint for UNAVAILABLE/RATE_LIMITED */
	union {
		struct {               /* GW_JOB_REGISTER */
			struct tg_reg_proof req;     /* name points into name_buf */
			char name_buf[TG_NAME_MAX];
			struct tg_reg_ok ok;         /* answer */
		} reg;
		struct {               /* GW_JOB_AUTH */
			struct tg_auth req;
			/* answer */
			struct tg_org_id org;
			uint8_t session_key[32];
			struct tg_policy policy;
			bool admin;          /* device role is org admin */
			bool relay;          /* device registered by a relay */
			uint8_t state;       /* enum gw_org_state */
		} auth;
		struct {               /* GW_JOB_OFFER */
			uint16_t count;
			uint32_t offer_seq;
			struct tg_chunk_ref ids[TG_OFFER_MAX];
			uint8_t need[(TG_OFFER_MAX + 7) / 8]; /* answer, bit i LSB first */
		} offer;
		struct {               /* GW_JOB_STORE */
			struct tg_policy policy;
			struct tg_chunk_id id;
			uint8_t *data;       /* the reassembled chunk (the worker's buffer) */
			uint32_t len;
			uint32_t cap;        /* room in data for in-place EC (tg_rchunk.cap) */
			/* answer */
			uint32_t stored_bytes; /* after compression, before EC (quota bytes) */
			bool lease_waited;     /* had to wait for a quota lease */
		} store;
		struct {               /* GW_JOB_BACKUP_END */
			uint8_t device[TG_ID_LEN];
			struct tg_backup_end req;  /* name points into name_buf */
			char name_buf[TG_NAME_MAX];
			uint64_t backup_id;        /* answer */
		} end;
		struct {               /* GW_JOB_RESTORE */
			uint8_t device[TG_ID_LEN];     /* requester */
			struct tg_restore_req req;
			bool admin;                    /* requester's role allows TG_RF_ADMIN */
			struct tg_restore_ok ok;       /* answer */
		} restore;
		struct {               /* GW_JOB_READ */
			struct tg_chunk_id id;
			uint8_t *buf;        /* the worker's buffer, cap bytes */
			uint32_t cap;        /* >= tg_store_get_cap(max_chunk) */
			uint32_t len;        /* answer: chunk bytes in buf */
			uint32_t rebuilt;    /* answer: shards rebuilt from parity */
		} read;
		struct {               /* GW_JOB_ORG_UPDATE (from the service) */
			uint8_t state;       /* enum gw_org_state */
			bool has_policy;
			struct tg_policy policy;
			bool has_device;     /* a device was released: close its sessions (BAD_KEY) */
			uint8_t device[TG_ID_LEN];
		} upd;
	} u;
};

/* What every worker needs from the service at create time (stable). */
struct gw_service_info {
	uint8_t provider_guid[TG_ID_LEN];
	uint8_t cookie_secret[32];     /* random per process */
	uint32_t max_chunk;
	uint16_t frag_size;
	struct tg_reasm_cfg reasm;
	unsigned sessions_per_worker;
	unsigned nworkers;
};

const struct gw_service_info *gw_service_info(const struct gw_service *s);

/* Worker side, lock-free. False if the service's ring is full (shed). */
bool gw_service_submit(struct gw_service *s, struct gw_job *j);
/* Up to n answered jobs and org updates for this worker. */
unsigned gw_service_done(struct gw_service *s, unsigned worker, struct gw_job **jobs, unsigned n);

#endif /* TG_GW_JOB_H */
