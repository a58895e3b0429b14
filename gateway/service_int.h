/*
 * service_int.h - private state of the gateway's service, shared by
 * service.c (lifecycle, rings, the worker-facing calls), service_ctl.c (the
 * control thread: the gateway link, quota leases, usage commits, org
 * updates) and service_io.c (the storage I/O threads).
 *
 * Who touches what:
 *  - rings: lock-free; workers produce into io_ring/ctl_ring and consume
 *    their own done ring; the service produces into the done rings;
 *  - the dedup index and the "being stored" table: dd_lock (I/O threads);
 *  - quota pools (one per organization: the local share of its lease, and
 *    the usage not yet committed): q_lock, which the I/O threads and the
 *    control thread take briefly; a link round trip is never made under it;
 *  - the link itself, the commit sequence, the org-update backlog: the
 *    control thread only (and destroy, once that thread has returned).
 */
#ifndef TG_GW_SERVICE_INT_H
#define TG_GW_SERVICE_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include <rte_ring.h>

#include "gw.h"
#include "gw_job.h"
#include "link_client.h"
#include "tg_chunk.h"
#include "tg_manifest.h"
#include "tg_store.h"

#define SVC_IO_RING        16384u  /* I/O jobs queued (all workers) */
#define SVC_CTL_RING       4096u   /* control jobs queued (all workers) */
#define SVC_DONE_RING      16384u  /* answers queued per worker */
#define SVC_DEDUP_ENTRIES  (1u << 18) /* a cache: misses go to the store */
#define SVC_LINK_REQ_MS    5000    /* one link request's wait */
#define SVC_CONNECT_MS     30000u  /* first connect, default bound */
#define SVC_BACKOFF_MIN_MS 100u
#define SVC_BACKOFF_MAX_MS 5000u
#define SVC_POLL_MS        10      /* control loop's longest sleep */
#define SVC_COMMIT_MS      1000u   /* usage commit period */
#define SVC_LEASE_TICK_MS  100u    /* renewals, top-ups, idle releases */
#define SVC_LEASE_WAIT_MS  5000u   /* an I/O thread's longest wait for a lease */
#define SVC_DENY_MS        1000u   /* a refused lease is not asked again before */
#define SVC_LEASE_MIN      (4ull << 20)
#define SVC_ROOT_MAX       (20u + 20u * TG_MF_PIECES_MAX)
#define SVC_FINAL_MS       5000u   /* final commit and release at destroy */
#define SVC_RELEASE_ALL    (1ull << 60) /* the link's largest byte count */

/* One organization's local quota and usage. */
struct svc_pool {
	struct tg_org_id org;
	char hex[TG_HEX_ID_LEN + 1];
	uint64_t avail;          /* bytes of our live lease not yet spent */
	uint64_t expiry_ms;      /* local (monotonic) end of the lease; 0 none */
	uint64_t leased_ms;      /* last grant or renewal */
	uint64_t used_ms;        /* last reservation */
	uint64_t want;           /* bytes an I/O thread waits for; 0: none */
	uint64_t topup_fail_ms;  /* last refused top-up */
	uint64_t gen;            /* bumped on every lease answer */
	uint16_t deny;           /* tg_err that refuses leases until deny_until_ms */
	uint64_t deny_until_ms;
	bool deactivated;        /* org_update said deactivated/deleted: no renewals */
	char deny_msg[96];
	/* usage not yet committed */
	uint64_t u_stored, u_logical, u_unique, u_chunks, u_dup;
};

/* A commit on the link: kept until tidegate-control answered it, so a
 * retry carries the same commit_seq (exactly once). */
struct svc_commit {
	bool pending;
	struct tg_org_id org;
	char hex[TG_HEX_ID_LEN + 1];
	uint64_t seq;
	uint64_t stored, logical, unique, chunks, dup;
};

struct svc_io {
	struct gw_service *s;
	unsigned idx;
	pthread_t tid;
	bool started;
	struct tg_pipe *pipe;
	uint8_t *root;           /* SVC_ROOT_MAX bytes, BACKUP_END */
};

struct svc_backlog {
	struct gw_job **q;
	unsigned n, cap;
};

struct gw_service {
	struct gw_service_info info;
	char *sock_path, *name;
	unsigned nio;
	unsigned ndirs;
	unsigned connect_ms;

	struct tg_store *st;
	struct tg_dedup *dd;
	pthread_mutex_t dd_lock;
	pthread_cond_t dd_cv;
	struct {                  /* (org, id) an I/O thread is storing now */
		bool used;
		struct tg_org_id org;
		struct tg_chunk_id id;
	} *busy;

	struct rte_ring *io_ring, *ctl_ring, *done[GW_WORKERS_MAX];
	int efd;                  /* wakes the control thread (I/O threads, stop) */

	/* the link: control thread */
	struct tg_link *link;
	bool link_up;             /* read by I/O threads under q_lock */
	uint64_t backoff_ms, reconnect_ms;
	uint64_t lease_ttl_ms, lease_bytes;
	uint64_t next_seq;
	struct svc_commit commit;
	uint64_t commit_ms, lease_tick_ms;
	unsigned commit_rr;
	struct svc_backlog backlog[GW_WORKERS_MAX];

	/* quota pools */
	pthread_mutex_t q_lock;
	pthread_cond_t q_cv;
	struct svc_pool **pools;  /* insertion order, for the control thread */
	unsigned npools, cap_pools;
	struct svc_pool **ptab;   /* open addressing by org */
	unsigned ptab_mask;
	bool lease_asked;         /* some pool has want > 0 */

	/* lifecycle */
	int stop;                 /* request_stop (atomic) */
	int run_done;             /* the control loop has returned (atomic) */
	int io_stop;              /* destroy: I/O threads finish the ring and exit */
	int destroying;           /* answers may be dropped: workers are gone */
	struct svc_io *io;

	/* logging: storage errors are rate-limited */
	pthread_mutex_t log_lock;
	uint64_t log_sec;
	unsigned log_n, log_dropped;
};

/* service.c */
uint64_t svc_now_ms(void);
void svc_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void svc_log_limited(struct gw_service *s, const char *level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void svc_answer(struct gw_service *s, struct gw_job *j);
void svc_fail(struct gw_service *s, struct gw_job *j, uint16_t status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
bool svc_ctl_enqueue(struct gw_service *s, struct gw_job *j);
void svc_wake(struct gw_service *s);
void svc_run_finish(struct gw_service *s);
void svc_hex(const void *p, size_t n, char *out);
/* Quota pools, under q_lock: find, or find and make. */
struct svc_pool *svc_pool_find(struct gw_service *s, const struct tg_org_id *org);
struct svc_pool *svc_pool_get(struct gw_service *s, const struct tg_org_id *org);

/* service_ctl.c */
int svc_link_connect(struct gw_service *s, bool first);
void svc_ctl_final(struct gw_service *s);

/* service_io.c */
void *svc_io_main(void *arg);

#endif /* TG_GW_SERVICE_INT_H */
