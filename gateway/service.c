/*
 * service.c - the gateway's service: everything a worker lcore must never
 * wait for (the gateway link to tidegate-control, the store's syscalls and
 * fsyncs) runs here, behind rte_rings (gw.h, gw_job.h).
 *
 * This file holds the lifecycle (create, destroy), the rings and the calls
 * the workers make. The rings are plain rte_rings placed in aligned_alloc'd
 * memory with rte_ring_init(), so the service needs no EAL and unit tests
 * drive it without one:
 *   io_ring   MP/MC   workers -> I/O threads (OFFER, STORE, READ, BACKUP_END)
 *   ctl_ring  MP/MC   workers and I/O threads -> control thread
 *   done[w]   MP/SC   service -> worker w (answers and org updates)
 * The control ring is multi-consumer for one reason: once the control loop
 * has returned (shutdown), whoever enqueues a control job also drains the
 * ring and answers OVERLOADED itself, so no job is ever stranded and no
 * worker waits forever for an answer while it drains.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "service_int.h"
#include "tg_crypto.h"

#define SVC_LOG_PER_SEC 10u

uint64_t svc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void svc_vlog(const char *level, const char *fmt, va_list ap)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "tidegate-gateway: %s: ", level);

	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	n = (int)strlen(line);
	line[n++] = '\n';
	/* One write per line, so lines of several threads never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

void svc_log(const char *level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	svc_vlog(level, fmt, ap);
	va_end(ap);
}

/* Storage trouble can come once per chunk: at most SVC_LOG_PER_SEC lines a
 * second, and a count of what was left out. */
void svc_log_limited(struct gw_service *s, const char *level, const char *fmt, ...)
{
	uint64_t sec = svc_now_ms() / 1000u;
	unsigned dropped = 0;
	bool print;
	va_list ap;

	pthread_mutex_lock(&s->log_lock);
	if (sec != s->log_sec) {
		dropped = s->log_dropped;
		s->log_sec = sec;
		s->log_n = 0;
		s->log_dropped = 0;
	}
	print = s->log_n < SVC_LOG_PER_SEC;
	if (print)
		s->log_n++;
	else
		s->log_dropped++;
	pthread_mutex_unlock(&s->log_lock);
	if (dropped)
		svc_log("warning", "%u similar messages suppressed", dropped);
	if (!print)
		return;
	va_start(ap, fmt);
	svc_vlog(level, fmt, ap);
	va_end(ap);
}

void svc_hex(const void *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

void svc_wake(struct gw_service *s)
{
	uint64_t one = 1;

	if (write(s->efd, &one, sizeof(one)) < 0)
		return; /* counter full: it is awake already */
}

/* Hand a job back to its worker. The done rings are far larger than any
 * worker's job pool, so this waits only in theory; once destroy has begun
 * the workers are gone and nothing waits for it. */
void svc_answer(struct gw_service *s, struct gw_job *j)
{
	struct rte_ring *r = s->done[j->worker];

	while (rte_ring_mp_enqueue(r, j) != 0) {
		struct timespec ts = { 0, 50000 };

		if (__atomic_load_n(&s->destroying, __ATOMIC_ACQUIRE))
			return;
		nanosleep(&ts, NULL);
	}
}

void svc_fail(struct gw_service *s, struct gw_job *j, uint16_t status, const char *fmt, ...)
{
	va_list ap;

	j->status = status;
	va_start(ap, fmt);
	vsnprintf(j->msg, sizeof(j->msg), fmt, ap);
	va_end(ap);
	svc_answer(s, j);
}

/* After the control loop has returned: answer what is queued. */
static void svc_ctl_drain(struct gw_service *s)
{
	void *p;

	while (rte_ring_mc_dequeue(s->ctl_ring, &p) == 0) {
		struct gw_job *j = p;

		j->retry_after = 1;
		svc_fail(s, j, TG_ERR_OVERLOADED, "the gateway is shutting down");
	}
}

bool svc_ctl_enqueue(struct gw_service *s, struct gw_job *j)
{
	if (__atomic_load_n(&s->run_done, __ATOMIC_SEQ_CST)) {
		j->retry_after = 1;
		svc_fail(s, j, TG_ERR_OVERLOADED, "the gateway is shutting down");
		return true;
	}
	if (rte_ring_mp_enqueue(s->ctl_ring, j) != 0)
		return false;
	/* Pairs with the store of run_done before the control loop's last
	 * drain: either that drain sees this job, or we see run_done. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&s->run_done, __ATOMIC_SEQ_CST))
		svc_ctl_drain(s);
	return true;
}

/* ---- quota pools: lookup by organization (caller holds q_lock) ---- */

static unsigned svc_pool_hash(const struct tg_org_id *org)
{
	uint64_t a, b;

	memcpy(&a, org->b, 8);
	memcpy(&b, org->b + 8, 8);
	a ^= b * 0x9e3779b97f4a7c15ull;
	a ^= a >> 31;
	return (unsigned)(a * 0xff51afd7ed558ccdull >> 32);
}

static int svc_ptab_grow(struct gw_service *s)
{
	unsigned n = s->ptab_mask ? 2 * (s->ptab_mask + 1) : 64;
	struct svc_pool **t = calloc(n, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (unsigned i = 0; i < s->npools; i++) {
		unsigned h = svc_pool_hash(&s->pools[i]->org) & (n - 1);

		while (t[h])
			h = (h + 1) & (n - 1);
		t[h] = s->pools[i];
	}
	free(s->ptab);
	s->ptab = t;
	s->ptab_mask = n - 1;
	return 0;
}

struct svc_pool *svc_pool_find(struct gw_service *s, const struct tg_org_id *org)
{
	if (!s->ptab)
		return NULL;
	for (unsigned h = svc_pool_hash(org) & s->ptab_mask; s->ptab[h];
	     h = (h + 1) & s->ptab_mask)
		if (tg_id_eq(&s->ptab[h]->org, org))
			return s->ptab[h];
	return NULL;
}

/* The organization's pool, made on first use; NULL only without memory. */
struct svc_pool *svc_pool_get(struct gw_service *s, const struct tg_org_id *org)
{
	struct svc_pool *p = svc_pool_find(s, org);
	unsigned h;

	if (p)
		return p;
	if ((s->npools + 1) * 2 > (s->ptab ? s->ptab_mask + 1 : 0) && svc_ptab_grow(s))
		return NULL;
	if (s->npools == s->cap_pools) {
		unsigned cap = s->cap_pools ? 2 * s->cap_pools : 16;
		struct svc_pool **v = realloc(s->pools, cap * sizeof(*v));

		if (!v)
			return NULL;
		s->pools = v;
		s->cap_pools = cap;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->org = *org;
	tg_id_to_hex(org, p->hex);
	s->pools[s->npools++] = p;
	for (h = svc_pool_hash(org) & s->ptab_mask; s->ptab[h]; h = (h + 1) & s->ptab_mask)
		;
	s->ptab[h] = p;
	return p;
}

/* ---- rings ---- */

static struct rte_ring *svc_ring(const char *name, unsigned count, unsigned flags, int *err)
{
	ssize_t sz = rte_ring_get_memsize(count);
	struct rte_ring *r;
	size_t n;
	int rc;

	if (sz < 0) {
		*err = (int)sz;
		return NULL;
	}
	n = ((size_t)sz + 127) & ~(size_t)127;
	r = aligned_alloc(128, n);
	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	memset(r, 0, n);
	rc = rte_ring_init(r, name, count, flags);
	if (rc) {
		free(r);
		*err = rc < 0 ? rc : -EINVAL;
		return NULL;
	}
	return r;
}

/* ---- lifecycle ---- */

static int svc_cfg_check(const struct gw_service_cfg *cfg)
{
	if (!cfg || !cfg->control_sock || !cfg->name)
		return -EINVAL;
	if (cfg->nstore_dirs < 1 || cfg->nstore_dirs > GW_STORE_DIRS_MAX)
		return -EINVAL;
	if (cfg->io_threads < 1 || cfg->io_threads > 256)
		return -EINVAL;
	if (cfg->nworkers < 1 || cfg->nworkers > GW_WORKERS_MAX)
		return -EINVAL;
	if (cfg->max_chunk < 1 || cfg->max_chunk > TG_CHUNK_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < cfg->nstore_dirs; i++)
		if (!cfg->store_dirs[i])
			return -EINVAL;
	return 0;
}

static void svc_free(struct gw_service *s)
{
	void *p;

	if (s->io) {
		for (unsigned i = 0; i < s->nio; i++) {
			tg_pipe_destroy(s->io[i].pipe);
			free(s->io[i].root);
		}
		free(s->io);
	}
	for (unsigned w = 0; w < GW_WORKERS_MAX; w++) {
		/* Org updates nobody took: ours to free. Anything else in a
		 * done ring belongs to a worker. */
		while (s->done[w] && rte_ring_sc_dequeue(s->done[w], &p) == 0) {
			struct gw_job *j = p;

			if (j->type == GW_JOB_ORG_UPDATE)
				free(j);
		}
		free(s->done[w]);
		for (unsigned i = 0; i < s->backlog[w].n; i++)
			free(s->backlog[w].q[i]);
		free(s->backlog[w].q);
	}
	free(s->io_ring);
	free(s->ctl_ring);
	if (s->link)
		tg_link_close(s->link);
	for (unsigned i = 0; i < s->npools; i++)
		free(s->pools[i]);
	free(s->pools);
	free(s->ptab);
	free(s->busy);
	tg_dedup_destroy(s->dd);
	tg_store_close(s->st);
	if (s->efd >= 0)
		close(s->efd);
	pthread_mutex_destroy(&s->dd_lock);
	pthread_cond_destroy(&s->dd_cv);
	pthread_mutex_destroy(&s->q_lock);
	pthread_cond_destroy(&s->q_cv);
	pthread_mutex_destroy(&s->log_lock);
	free(s->sock_path);
	free(s->name);
	free(s);
}

static void svc_io_join(struct gw_service *s)
{
	__atomic_store_n(&s->io_stop, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&s->q_lock);
	pthread_cond_broadcast(&s->q_cv);
	pthread_mutex_unlock(&s->q_lock);
	for (unsigned i = 0; s->io && i < s->nio; i++) {
		if (s->io[i].started)
			pthread_join(s->io[i].tid, NULL);
		s->io[i].started = false;
	}
}

struct gw_service *gw_service_create(const struct gw_service_cfg *cfg, int *err)
{
	struct gw_service *s;
	pthread_condattr_t ca;
	char name[RTE_RING_NAMESIZE];
	int rc = svc_cfg_check(cfg);

	if (rc)
		goto err;
	s = calloc(1, sizeof(*s));
	if (!s) {
		rc = -ENOMEM;
		goto err;
	}
	s->efd = -1;
	pthread_mutex_init(&s->dd_lock, NULL);
	pthread_cond_init(&s->dd_cv, NULL);
	pthread_mutex_init(&s->q_lock, NULL);
	pthread_mutex_init(&s->log_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->q_cv, &ca);
	pthread_condattr_destroy(&ca);

	s->nio = cfg->io_threads;
	s->ndirs = cfg->nstore_dirs;
	s->connect_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : SVC_CONNECT_MS;
	s->info.max_chunk = cfg->max_chunk;
	s->info.frag_size = cfg->frag_size;
	s->info.reasm = cfg->reasm;
	s->info.sessions_per_worker = cfg->sessions_per_worker;
	s->info.nworkers = cfg->nworkers;
	s->sock_path = strdup(cfg->control_sock);
	s->name = strdup(cfg->name);
	s->busy = calloc(s->nio, sizeof(*s->busy));
	s->io = calloc(s->nio, sizeof(*s->io));
	if (!s->sock_path || !s->name || !s->busy || !s->io) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = tg_random(s->info.cookie_secret, sizeof(s->info.cookie_secret));
	if (rc)
		goto err_free;

	s->st = tg_store_dir_open(cfg->store_dirs, cfg->nstore_dirs, &rc);
	if (!s->st)
		goto err_free;
	s->dd = tg_dedup_create(SVC_DEDUP_ENTRIES, &rc);
	if (!s->dd)
		goto err_free;
	s->io_ring = svc_ring("gw_io", SVC_IO_RING, 0, &rc);
	if (!s->io_ring)
		goto err_free;
	s->ctl_ring = svc_ring("gw_ctl", SVC_CTL_RING, 0, &rc);
	if (!s->ctl_ring)
		goto err_free;
	for (unsigned w = 0; w < cfg->nworkers; w++) {
		snprintf(name, sizeof(name), "gw_done_%u", w);
		s->done[w] = svc_ring(name, SVC_DONE_RING, RING_F_SC_DEQ, &rc);
		if (!s->done[w])
			goto err_free;
	}
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->efd < 0) {
		rc = -errno;
		goto err_free;
	}
	for (unsigned i = 0; i < s->nio; i++) {
		s->io[i].s = s;
		s->io[i].idx = i;
		s->io[i].pipe = tg_pipe_create(cfg->max_chunk, &rc);
		if (!s->io[i].pipe)
			goto err_free;
		s->io[i].root = malloc(SVC_ROOT_MAX);
		if (!s->io[i].root) {
			rc = -ENOMEM;
			goto err_free;
		}
	}

	rc = svc_link_connect(s, true);
	if (rc)
		goto err_free;

	for (unsigned i = 0; i < s->nio; i++) {
		rc = -pthread_create(&s->io[i].tid, NULL, svc_io_main, &s->io[i]);
		if (rc)
			goto err_threads;
		s->io[i].started = true;
	}
	return s;

err_threads:
	__atomic_store_n(&s->run_done, 1, __ATOMIC_SEQ_CST);
	svc_io_join(s);
err_free:
	svc_free(s);
err:
	if (err)
		*err = rc;
	return NULL;
}

void gw_service_request_stop(struct gw_service *s)
{
	if (!s)
		return;
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	svc_wake(s); /* async-signal-safe: a signal handler may call this */
}

/* gw_service_run() as it returns, or destroy when run never ran. */
void svc_run_finish(struct gw_service *s)
{
	__atomic_store_n(&s->run_done, 1, __ATOMIC_SEQ_CST);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	svc_ctl_drain(s);
	pthread_mutex_lock(&s->q_lock);
	pthread_cond_broadcast(&s->q_cv);
	pthread_mutex_unlock(&s->q_lock);
}

void gw_service_destroy(struct gw_service *s)
{
	unsigned stray = 0;
	void *p;

	if (!s)
		return;
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	if (!__atomic_load_n(&s->run_done, __ATOMIC_SEQ_CST))
		svc_run_finish(s);
	/* The I/O threads finish what is queued (nothing, when every worker
	 * drained as it should), then the last usage goes to the control
	 * plane and the unused leases go back. */
	svc_io_join(s);
	__atomic_store_n(&s->destroying, 1, __ATOMIC_RELEASE);
	while (rte_ring_mc_dequeue(s->ctl_ring, &p) == 0)
		stray++;
	if (stray)
		svc_log("warning", "%u control jobs were still queued at shutdown", stray);
	svc_ctl_final(s);
	svc_free(s);
}

const struct gw_service_info *gw_service_info(const struct gw_service *s)
{
	return s ? &s->info : NULL;
}

bool gw_service_submit(struct gw_service *s, struct gw_job *j)
{
	if (!s || !j || j->worker >= s->info.nworkers)
		return false;
	switch (j->type) {
	case GW_JOB_REGISTER:
	case GW_JOB_AUTH:
	case GW_JOB_RESTORE:
		return svc_ctl_enqueue(s, j);
	case GW_JOB_OFFER:
	case GW_JOB_STORE:
	case GW_JOB_READ:
	case GW_JOB_BACKUP_END:
		/* BACKUP_END checks the store first (an I/O thread), then
		 * goes on to the control thread for backup.record. */
		return rte_ring_mp_enqueue(s->io_ring, j) == 0;
	default:
		return false;
	}
}

unsigned gw_service_done(struct gw_service *s, unsigned worker, struct gw_job **jobs, unsigned n)
{
	if (!s || worker >= s->info.nworkers || !jobs)
		return 0;
	return rte_ring_sc_dequeue_burst(s->done[worker], (void **)jobs, n, NULL);
}
