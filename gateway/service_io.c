/*
 * service_io.c - the storage I/O threads: OFFER (which ids does this
 * organization lack?), STORE (verify, quota, put durably), READ (get,
 * rebuild, verify) and the store half of BACKUP_END (the root and every
 * manifest piece must be durable for the organization before the backup is
 * recorded).
 *
 * Each thread owns a tg_pipe (scratch buffers and codecs); the store, the
 * dedup index and the quota pools are shared. The index is a cache in front
 * of tg_store_exists(): a hit is trusted only because only durable chunks
 * are ever inserted. Two threads never store the same (org, id) at once:
 * the second waits for the first and then finds a DUP, so a chunk's bytes
 * are charged to the quota once.
 *
 * Quota: a STORE reserves its stored bytes (after compression, before EC)
 * from the organization's local lease pool. When the pool is short the
 * thread asks the control thread for more and waits (bounded); this wait is
 * what gw_job.u.store.lease_waited reports. A worker lcore never waits.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rte_pause.h>

#include "service_int.h"
#include "tg_manifest.h"

#define IO_SPINS      256
#define IO_NAP_MIN_NS 20000L
#define IO_NAP_MAX_NS 1000000L

/* ---- dedup index and the "being stored" table ---- */

static bool io_known(struct gw_service *s, const struct tg_org_id *org,
		     const struct tg_chunk_id *id)
{
	bool hit;

	pthread_mutex_lock(&s->dd_lock);
	hit = tg_dedup_lookup(s->dd, org, id);
	pthread_mutex_unlock(&s->dd_lock);
	return hit;
}

static void io_learn(struct gw_service *s, const struct tg_org_id *org,
		     const struct tg_chunk_id *id)
{
	pthread_mutex_lock(&s->dd_lock);
	tg_dedup_insert(s->dd, org, id);
	pthread_mutex_unlock(&s->dd_lock);
}

/* 1 durable (index or store), 0 not, -errno when the store cannot say. */
static int io_durable(struct gw_service *s, const struct tg_org_id *org,
		      const struct tg_chunk_id *id)
{
	int rc;

	if (io_known(s, org, id))
		return 1;
	rc = tg_store_exists(s->st, org, id);
	if (rc > 0)
		io_learn(s, org, id);
	return rc;
}

/* Claim (org, id) for this thread: false if it is durable already. */
static bool io_claim(struct gw_service *s, unsigned me, const struct tg_org_id *org,
		     const struct tg_chunk_id *id)
{
	pthread_mutex_lock(&s->dd_lock);
	for (;;) {
		bool busy = false;

		if (tg_dedup_lookup(s->dd, org, id)) {
			pthread_mutex_unlock(&s->dd_lock);
			return false;
		}
		for (unsigned i = 0; i < s->nio && !busy; i++)
			busy = s->busy[i].used && tg_id_eq(&s->busy[i].org, org) &&
			       tg_id_eq(&s->busy[i].id, id);
		if (!busy)
			break;
		pthread_cond_wait(&s->dd_cv, &s->dd_lock);
	}
	s->busy[me].used = true;
	s->busy[me].org = *org;
	s->busy[me].id = *id;
	pthread_mutex_unlock(&s->dd_lock);
	return true;
}

static void io_unclaim(struct gw_service *s, unsigned me, bool durable)
{
	pthread_mutex_lock(&s->dd_lock);
	if (durable)
		tg_dedup_insert(s->dd, &s->busy[me].org, &s->busy[me].id);
	s->busy[me].used = false;
	pthread_cond_broadcast(&s->dd_cv);
	pthread_mutex_unlock(&s->dd_lock);
}

/* ---- quota ---- */

static void io_abs_deadline(struct timespec *ts, uint64_t ms_from_now)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms_from_now / 1000u);
	ts->tv_nsec += (long)(ms_from_now % 1000u) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/*
 * Take need bytes from org's lease pool: TG_OK, or the refusal
 * (QUOTA_EXCEEDED, ORG_DEACTIVATED, UNAVAILABLE...) with msg set.
 */
static uint16_t io_reserve(struct gw_service *s, const struct tg_org_id *org, uint64_t need,
			   bool *waited, char *msg, size_t msg_cap)
{
	uint64_t deadline = svc_now_ms() + SVC_LEASE_WAIT_MS;
	struct svc_pool *p;
	uint16_t st = TG_OK;

	pthread_mutex_lock(&s->q_lock);
	p = svc_pool_get(s, org);
	if (!p) {
		pthread_mutex_unlock(&s->q_lock);
		snprintf(msg, msg_cap, "out of memory");
		return TG_ERR_UNAVAILABLE;
	}
	for (;;) {
		uint64_t now = svc_now_ms(), gen;
		struct timespec ts;

		if (p->expiry_ms && now >= p->expiry_ms) {
			p->avail = 0; /* the control plane reclaims it now */
			p->expiry_ms = 0;
		}
		if (p->avail >= need && p->expiry_ms) {
			p->avail -= need;
			p->used_ms = now;
			break;
		}
		p->used_ms = now; /* keeps the lease renewed while we wait */
		if (p->deny && now < p->deny_until_ms) {
			st = p->deny;
			snprintf(msg, msg_cap, "%s", p->deny_msg);
			break;
		}
		if (!s->link_up || __atomic_load_n(&s->run_done, __ATOMIC_ACQUIRE)) {
			st = TG_ERR_UNAVAILABLE;
			snprintf(msg, msg_cap, "no quota lease: the control plane is unreachable");
			break;
		}
		if (now >= deadline) {
			st = TG_ERR_UNAVAILABLE;
			snprintf(msg, msg_cap, "no quota lease within %u s", SVC_LEASE_WAIT_MS / 1000);
			break;
		}
		if (p->want < need)
			p->want = need;
		s->lease_asked = true;
		*waited = true;
		gen = p->gen;
		svc_wake(s);
		/* Short slices: a link that goes down is noticed even if no
		 * answer for this pool ever comes. */
		io_abs_deadline(&ts, 100);
		while (p->gen == gen && s->link_up &&
		       !__atomic_load_n(&s->run_done, __ATOMIC_ACQUIRE) &&
		       pthread_cond_timedwait(&s->q_cv, &s->q_lock, &ts) == 0)
			;
	}
	pthread_mutex_unlock(&s->q_lock);
	return st;
}

/* A put that failed gives its bytes back to the pool. */
static void io_unreserve(struct gw_service *s, const struct tg_org_id *org, uint64_t bytes)
{
	struct svc_pool *p;

	pthread_mutex_lock(&s->q_lock);
	p = svc_pool_get(s, org);
	if (p && p->expiry_ms)
		p->avail += bytes;
	pthread_mutex_unlock(&s->q_lock);
}

static void io_usage(struct gw_service *s, const struct tg_org_id *org, uint64_t stored,
		     uint64_t logical, uint64_t unique, uint64_t chunks, uint64_t dup)
{
	struct svc_pool *p;

	pthread_mutex_lock(&s->q_lock);
	p = svc_pool_get(s, org);
	if (p) {
		p->u_stored += stored;
		p->u_logical += logical;
		p->u_unique += unique;
		p->u_chunks += chunks;
		p->u_dup += dup;
	}
	pthread_mutex_unlock(&s->q_lock);
}

/* ---- the jobs ---- */

static void io_offer(struct gw_service *s, struct gw_job *j)
{
	uint64_t logical = 0, dup = 0;
	unsigned n = j->u.offer.count;

	if (n > TG_OFFER_MAX) {
		svc_fail(s, j, TG_ERR_BAD_REQUEST, "more than %u ids in one offer", TG_OFFER_MAX);
		return;
	}
	memset(j->u.offer.need, 0, sizeof(j->u.offer.need));
	for (unsigned i = 0; i < n; i++) {
		struct tg_chunk_id id;
		int rc;

		memcpy(id.b, j->u.offer.ids[i].id, sizeof(id.b));
		rc = io_durable(s, &j->org, &id);
		if (rc < 0) {
			char hx[TG_HEX_ID_LEN + 1];

			tg_id_to_hex(&id, hx);
			svc_log_limited(s, "error", "storage: cannot look up chunk %s: %s", hx,
					strerror(-rc));
		}
		/* Unknown or unreadable: ask for it. Durable: a dedup hit. */
		if (rc <= 0)
			j->u.offer.need[i / 8] |= (uint8_t)(1u << (i % 8));
		else
			dup++;
		logical += j->u.offer.ids[i].len;
	}
	io_usage(s, &j->org, 0, logical, 0, 0, dup);
	j->status = TG_OK;
	j->msg[0] = '\0';
	svc_answer(s, j);
}

static void io_store(struct gw_service *s, struct svc_io *io, struct gw_job *j)
{
	char hx[TG_HEX_ID_LEN + 1], why[96];
	struct tg_obj obj;
	uint16_t st;
	int rc;

	j->u.store.stored_bytes = 0;
	j->u.store.lease_waited = false;
	tg_id_to_hex(&j->u.store.id, hx);
	if (!j->u.store.data || j->u.store.len == 0 || j->u.store.len > s->info.max_chunk ||
	    j->u.store.cap < j->u.store.len) {
		svc_fail(s, j, TG_ERR_BAD_REQUEST, "chunk length %u out of range", j->u.store.len);
		return;
	}
	/* Verify first: "already stored" is never the answer for bytes that
	 * are not the chunk they claim to be. */
	rc = tg_pipe_encode(io->pipe, &j->u.store.policy, &j->u.store.id, j->u.store.data,
			    j->u.store.len, j->u.store.cap, &obj);
	if (rc == -EBADMSG) {
		svc_fail(s, j, TG_ERR_HASH_MISMATCH, "chunk %s does not hash to its id", hx);
		return;
	}
	if (rc) {
		svc_log_limited(s, "error", "storage: cannot encode chunk %s: %s", hx, strerror(-rc));
		svc_fail(s, j, rc == -EINVAL ? TG_ERR_BAD_REQUEST : TG_ERR_STORAGE,
			 "cannot encode chunk %s: %s", hx, strerror(-rc));
		return;
	}
	if ((unsigned)obj.meta.k + obj.meta.m > s->ndirs) {
		svc_log_limited(s, "error", "storage: policy needs %u shard directories, %u configured",
				(unsigned)obj.meta.k + obj.meta.m, s->ndirs);
		svc_fail(s, j, TG_ERR_STORAGE, "the storage policy needs %u shard directories",
			 (unsigned)obj.meta.k + obj.meta.m);
		return;
	}
	if (!io_claim(s, io->idx, &j->org, &j->u.store.id))
		goto dup;
	rc = tg_store_exists(s->st, &j->org, &j->u.store.id);
	if (rc > 0) {
		io_unclaim(s, io->idx, true);
		goto dup;
	}
	st = io_reserve(s, &j->org, obj.meta.enc_len, &j->u.store.lease_waited, why, sizeof(why));
	if (st != TG_OK) {
		io_unclaim(s, io->idx, false);
		svc_fail(s, j, st, "%s", why);
		return;
	}
	rc = tg_store_put(s->st, &j->org, &obj);
	if (rc) {
		io_unreserve(s, &j->org, obj.meta.enc_len);
		io_unclaim(s, io->idx, false);
		svc_log_limited(s, "error", "storage: cannot store chunk %s: %s", hx, strerror(-rc));
		svc_fail(s, j, TG_ERR_STORAGE, "chunk %s not stored: %s", hx, strerror(-rc));
		return;
	}
	io_unclaim(s, io->idx, true);
	io_usage(s, &j->org, obj.meta.enc_len, 0, j->u.store.len, 1, 0);
	j->u.store.stored_bytes = obj.meta.enc_len;
	j->status = TG_OK;
	j->msg[0] = '\0';
	svc_answer(s, j);
	return;
dup:
	io_usage(s, &j->org, 0, 0, 0, 0, 1);
	j->status = TG_ERR_DUP;
	j->msg[0] = '\0';
	svc_answer(s, j);
}

static unsigned io_popcount(uint32_t v)
{
	return (unsigned)__builtin_popcount(v);
}

/* Map a failed read of chunk hx to an answer; rep says which shards. */
static void io_read_fail(struct gw_service *s, struct gw_job *j, int rc, const char *what,
			 const char *hx, const struct tg_store_report *rep)
{
	switch (rc) {
	case -ENOENT:
		svc_fail(s, j, TG_ERR_NOT_FOUND, "%s %s is not stored", what, hx);
		return;
	case -EUCLEAN:
		svc_log_limited(s, "error",
				"storage: %s %s lost: %u of %u shards missing or corrupt, beyond parity",
				what, hx, io_popcount(rep->missing | rep->corrupt),
				(unsigned)rep->k + rep->m);
		svc_fail(s, j, TG_ERR_STORAGE, "%s %s lost: %u shards bad, beyond parity", what, hx,
			 io_popcount(rep->missing | rep->corrupt));
		return;
	case -EBADMSG:
		svc_log_limited(s, "error", "storage: %s %s is corrupt", what, hx);
		svc_fail(s, j, TG_ERR_STORAGE, "%s %s is corrupt", what, hx);
		return;
	default:
		svc_log_limited(s, "error", "storage: cannot read %s %s: %s", what, hx, strerror(-rc));
		svc_fail(s, j, TG_ERR_STORAGE, "cannot read %s %s: %s", what, hx, strerror(-rc));
	}
}

static void io_read(struct gw_service *s, struct svc_io *io, struct gw_job *j)
{
	struct tg_store_report rep = { 0 };
	char hx[TG_HEX_ID_LEN + 1];
	size_t len = 0;
	int rc;

	j->u.read.len = 0;
	j->u.read.rebuilt = 0;
	tg_id_to_hex(&j->u.read.id, hx);
	if (!j->u.read.buf || j->u.read.cap == 0) {
		svc_fail(s, j, TG_ERR_BAD_REQUEST, "no buffer for chunk %s", hx);
		return;
	}
	rc = tg_pipe_read(io->pipe, s->st, &j->org, &j->u.read.id, j->u.read.buf, j->u.read.cap,
			  &len, &rep);
	if (rc) {
		io_read_fail(s, j, rc, "chunk", hx, &rep);
		return;
	}
	j->u.read.len = (uint32_t)len;
	j->u.read.rebuilt = io_popcount(rep.rebuilt);
	if (rep.rebuilt)
		svc_log_limited(s, "warning", "storage: chunk %s: rebuilt %u shards from parity", hx,
				j->u.read.rebuilt);
	j->status = TG_OK;
	j->msg[0] = '\0';
	svc_answer(s, j);
}

/* BACKUP_END, store half; when it passes, the job goes on to the control
 * thread for backup.record. */
static void io_end(struct gw_service *s, struct svc_io *io, struct gw_job *j)
{
	struct tg_store_report rep = { 0 };
	struct tg_chunk_id root_id;
	char hx[TG_HEX_ID_LEN + 1];
	const uint8_t *pieces;
	uint64_t mlen;
	uint32_t npieces;
	size_t len = 0;
	int rc;

	j->u.end.backup_id = 0;
	memcpy(root_id.b, j->u.end.req.root_id, sizeof(root_id.b));
	tg_id_to_hex(&root_id, hx);
	if (j->u.end.req.root_len == 0 || j->u.end.req.root_len > SVC_ROOT_MAX) {
		svc_fail(s, j, TG_ERR_BAD_REQUEST, "root length %u is not a manifest root's",
			 j->u.end.req.root_len);
		return;
	}
	rc = tg_pipe_read(io->pipe, s->st, &j->org, &root_id, io->root, SVC_ROOT_MAX, &len, &rep);
	if (rc == -ENOSPC) {
		svc_fail(s, j, TG_ERR_BAD_REQUEST, "chunk %s is not a manifest root", hx);
		return;
	}
	if (rc) {
		io_read_fail(s, j, rc, "manifest root", hx, &rep);
		return;
	}
	if (len != j->u.end.req.root_len) {
		svc_fail(s, j, TG_ERR_BAD_REQUEST, "manifest root %s is %zu bytes, not %u", hx, len,
			 j->u.end.req.root_len);
		return;
	}
	if (tg_mf_root_parse(io->root, len, &pieces, &npieces, &mlen)) {
		svc_fail(s, j, TG_ERR_BAD_REQUEST, "chunk %s is not a manifest root", hx);
		return;
	}
	for (uint32_t i = 0; i < npieces; i++) {
		struct tg_chunk_ref ref;
		struct tg_chunk_id id;

		tg_mf_root_piece(pieces, i, &ref);
		memcpy(id.b, ref.id, sizeof(id.b));
		rc = io_durable(s, &j->org, &id);
		if (rc == 1)
			continue;
		tg_id_to_hex(&id, hx);
		if (rc == 0) {
			svc_fail(s, j, TG_ERR_NOT_FOUND, "manifest piece %s is not stored", hx);
		} else {
			svc_log_limited(s, "error", "storage: cannot look up manifest piece %s: %s",
					hx, strerror(-rc));
			svc_fail(s, j, TG_ERR_STORAGE, "cannot look up manifest piece %s", hx);
		}
		return;
	}
	if (!svc_ctl_enqueue(s, j)) {
		j->retry_after = 1;
		svc_fail(s, j, TG_ERR_OVERLOADED, "the gateway is overloaded");
	}
}

static void io_job(struct gw_service *s, struct svc_io *io, struct gw_job *j)
{
	j->retry_after = 0;
	switch (j->type) {
	case GW_JOB_OFFER:
		io_offer(s, j);
		break;
	case GW_JOB_STORE:
		io_store(s, io, j);
		break;
	case GW_JOB_READ:
		io_read(s, io, j);
		break;
	case GW_JOB_BACKUP_END:
		io_end(s, io, j);
		break;
	default:
		svc_fail(s, j, TG_ERR_BAD_REQUEST, "unknown job type %u", j->type);
	}
}

void *svc_io_main(void *arg)
{
	struct svc_io *io = arg;
	struct gw_service *s = io->s;
	long nap = IO_NAP_MIN_NS;
	unsigned spins = 0;

	for (;;) {
		void *p;

		if (rte_ring_mc_dequeue(s->io_ring, &p) == 0) {
			io_job(s, io, p);
			spins = 0;
			nap = IO_NAP_MIN_NS;
			continue;
		}
		if (__atomic_load_n(&s->io_stop, __ATOMIC_ACQUIRE))
			break;
		/* The workers cannot signal (no syscalls on the packet path):
		 * spin a little, then nap, longer while it stays idle. */
		if (spins < IO_SPINS) {
			spins++;
			rte_pause();
			continue;
		}
		struct timespec ts = { 0, nap };

		nanosleep(&ts, NULL);
		if (nap < IO_NAP_MAX_NS)
			nap *= 2;
	}
	return NULL;
}
