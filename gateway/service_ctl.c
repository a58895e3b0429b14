/*
 * service_ctl.c - the service's control thread: the one owner of the
 * gateway link to tidegate-control (docs/protocol.md section 9).
 *
 * One loop (gw_service_run on the main lcore) does, turn after turn:
 *   - org_update pushes -> one GW_JOB_ORG_UPDATE per worker (a backlog
 *     keeps them in order if a done ring is ever full);
 *   - control jobs: register, auth, restore.authorize, backup.record, each
 *     a blocking link request; a refusal carries the wire error code that
 *     the worker sends to the device unchanged;
 *   - lease requests from I/O threads that ran short, renewals at half-life
 *     of orgs in use, releases of idle leases;
 *   - usage commits every second: one commit in flight at a time with a
 *     gateway-wide increasing commit_seq, retried with the same seq until
 *     tidegate-control answers (applied=false then means it was a replay);
 *   - reconnects with backoff while the link is down. Meanwhile control
 *     jobs are answered UNAVAILABLE and the packet path goes on with the
 *     leases it holds until they expire.
 * It sleeps in poll() on the link and an eventfd (I/O threads, stop), at
 * most SVC_POLL_MS, since workers enqueue without a syscall.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "service_int.h"

/* ---- reading the link's JSON ---- */

static int ctl_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Exactly 2n hex digits into out[n]. */
static bool ctl_get_hex(const json_t *o, const char *key, void *out, size_t n)
{
	const char *v = json_string_value(json_object_get(o, key));
	uint8_t *b = out;

	if (!v || strlen(v) != 2 * n)
		return false;
	for (size_t i = 0; i < n; i++) {
		int hi = ctl_nibble(v[2 * i]), lo = ctl_nibble(v[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* A GUID (dashed) or 32 hex digits. */
static bool ctl_get_id(const json_t *o, const char *key, void *out16)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v && strlen(v) <= 36 && tg_id_from_hex(v, out16) == 0;
}

static bool ctl_get_u64(const json_t *o, const char *key, uint64_t *out)
{
	const json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static void ctl_peer(const struct gw_peer *p, char *out, size_t cap)
{
	char ip[INET_ADDRSTRLEN];

	if (!inet_ntop(AF_INET, &p->ip, ip, sizeof(ip)))
		snprintf(ip, sizeof(ip), "0.0.0.0");
	snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(p->port));
}

static json_t *ctl_hexstr(const void *p, size_t n)
{
	char buf[2 * 64 + 1];

	if (n > 64)
		return NULL;
	svc_hex(p, n, buf);
	return json_string(buf);
}

/* ---- the link ---- */

static void ctl_set_up(struct gw_service *s, bool up)
{
	pthread_mutex_lock(&s->q_lock);
	s->link_up = up;
	pthread_cond_broadcast(&s->q_cv);
	pthread_mutex_unlock(&s->q_lock);
}

/* One connect attempt; 0 or -errno. */
int svc_link_connect(struct gw_service *s, bool first)
{
	uint64_t deadline = svc_now_ms() + s->connect_ms, backoff = SVC_BACKOFF_MIN_MS;
	struct tg_link *l = NULL;
	const json_t *hello;
	uint8_t pg[TG_ID_LEN];
	uint64_t v;
	int rc;

	for (;;) {
		uint64_t now;

		l = tg_link_connect(s->sock_path, s->name, &rc);
		if (l)
			break;
		/* Refusals that no retry will change. */
		if (rc == -EACCES || rc == -EINVAL || rc == -ENAMETOOLONG || rc == -EPROTO)
			return rc;
		now = svc_now_ms();
		if (!first || now >= deadline)
			return rc == -EAGAIN ? -ETIMEDOUT : rc;
		struct timespec ts = { (time_t)(backoff / 1000),
				       (long)(backoff % 1000) * 1000000L };

		if (backoff > deadline - now) {
			ts.tv_sec = (time_t)((deadline - now) / 1000);
			ts.tv_nsec = (long)((deadline - now) % 1000) * 1000000L;
		}
		nanosleep(&ts, NULL);
		backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
	}

	hello = tg_link_hello(l);
	if (!ctl_get_id(hello, "provider_guid", pg)) {
		tg_link_close(l);
		return -EPROTO;
	}
	if (first)
		memcpy(s->info.provider_guid, pg, TG_ID_LEN);
	else if (!tg_id_eq(pg, s->info.provider_guid))
		svc_log("error", "control link: tidegate-control now serves another provider GUID; "
			"this gateway keeps answering for the first one");
	s->lease_ttl_ms = ctl_get_u64(hello, "lease_ttl_ms", &v) && v ? v : 30000;
	s->lease_bytes = ctl_get_u64(hello, "lease_bytes", &v) && v ? v : 0;
	if (s->lease_bytes < SVC_LEASE_MIN)
		s->lease_bytes = SVC_LEASE_MIN;
	/* commit_seq continues above the last one applied. Without it
	 * (Redis down at hello), a floor from the wall clock keeps the
	 * sequence above anything an earlier run used. */
	if (ctl_get_u64(hello, "commit_seq", &v)) {
		if (s->next_seq < v + 1)
			s->next_seq = v + 1;
	} else {
		struct timespec ts;
		uint64_t floor;

		clock_gettime(CLOCK_REALTIME, &ts);
		floor = ((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u) * 1000u;
		if (s->next_seq < floor)
			s->next_seq = floor;
	}
	if (s->commit.pending && s->commit.seq >= s->next_seq)
		s->next_seq = s->commit.seq + 1;
	s->link = l;
	s->backoff_ms = SVC_BACKOFF_MIN_MS;
	ctl_set_up(s, true);
	svc_log("info", "control link up: %s as '%s' (lease %llu bytes, %llu ms)", s->sock_path,
		s->name, (unsigned long long)s->lease_bytes, (unsigned long long)s->lease_ttl_ms);
	return 0;
}

static void ctl_link_down(struct gw_service *s, int rc)
{
	if (!s->link)
		return;
	tg_link_close(s->link);
	s->link = NULL;
	ctl_set_up(s, false);
	s->backoff_ms = SVC_BACKOFF_MIN_MS;
	s->reconnect_ms = svc_now_ms() + s->backoff_ms;
	svc_log("warning", "control link down (%s); reconnecting", strerror(-rc));
}

static void ctl_reconnect(struct gw_service *s, uint64_t now)
{
	int rc;

	if (s->link || now < s->reconnect_ms)
		return;
	rc = svc_link_connect(s, false);
	if (rc == 0)
		return;
	s->backoff_ms = s->backoff_ms * 2 > SVC_BACKOFF_MAX_MS ? SVC_BACKOFF_MAX_MS
							       : s->backoff_ms * 2;
	s->reconnect_ms = svc_now_ms() + s->backoff_ms;
}

/*
 * One request (steals req): 0 and *rep (ok or a refusal), or -errno when
 * there was no answer; a broken link is closed here.
 */
static int ctl_request(struct gw_service *s, json_t *req, json_t **rep)
{
	int rc;

	*rep = NULL;
	if (!req)
		return -ENOMEM;
	if (!s->link) {
		json_decref(req);
		return -ENOTCONN;
	}
	rc = tg_link_request(s->link, req, rep, SVC_LINK_REQ_MS);
	json_decref(req);
	if (rc && rc != -ETIMEDOUT && rc != -EMSGSIZE && rc != -ENOMEM)
		ctl_link_down(s, rc);
	return rc;
}

/* A refusal's wire code (1..TG_ERR__MAX-1) and message; UNAVAILABLE for
 * anything malformed. */
static uint16_t ctl_refusal(const json_t *rep, char *msg, size_t cap)
{
	const json_t *e = json_object_get(rep, "error");
	const char *m = json_string_value(json_object_get(e, "message"));
	const json_t *c = json_object_get(e, "code");
	json_int_t code = json_is_integer(c) ? json_integer_value(c) : 0;

	snprintf(msg, cap, "%s", m ? m : "refused by the control plane");
	if (code < 1 || code >= TG_ERR__MAX || code == TG_ERR_DUP)
		return TG_ERR_UNAVAILABLE;
	return (uint16_t)code;
}

/* For a job: true and *rep on success; otherwise j->status/msg are set. */
static bool ctl_call(struct gw_service *s, struct gw_job *j, json_t *req, json_t **rep)
{
	int rc = ctl_request(s, req, rep);

	if (rc) {
		j->status = TG_ERR_UNAVAILABLE;
		j->retry_after = 1;
		snprintf(j->msg, sizeof(j->msg), "%s",
			 rc == -ETIMEDOUT ? "the control plane did not answer in time"
					  : "the control plane is unreachable");
		return false;
	}
	if (json_is_true(json_object_get(*rep, "ok")))
		return true;
	j->status = ctl_refusal(*rep, j->msg, sizeof(j->msg));
	if (j->status == TG_ERR_UNAVAILABLE)
		j->retry_after = 5;
	json_decref(*rep);
	*rep = NULL;
	return false;
}

static void ctl_malformed(struct gw_service *s, struct gw_job *j, const char *op)
{
	svc_log_limited(s, "error", "control link: malformed %s reply", op);
	j->status = TG_ERR_UNAVAILABLE;
	j->retry_after = 1;
	snprintf(j->msg, sizeof(j->msg), "malformed answer from the control plane");
}

/* ---- control jobs ---- */

static void ctl_register(struct gw_service *s, struct gw_job *j)
{
	const struct tg_reg_proof *p = &j->u.reg.req;
	size_t nlen = p->name_len > TG_NAME_MAX ? TG_NAME_MAX : p->name_len;
	struct tg_reg_ok *ok = &j->u.reg.ok;
	char peer[32];
	json_t *req, *rep;

	ctl_peer(&j->peer, peer, sizeof(peer));
	req = json_pack("{s:s, s:o, s:o, s:o, s:o, s:i, s:s%, s:o, s:s}", "op", "register",
			"provider_guid", ctl_hexstr(p->provider_guid, TG_ID_LEN),
			"key_id", ctl_hexstr(p->key_id, TG_KEYID_LEN),
			"client_nonce", ctl_hexstr(p->client_nonce, TG_NONCE_LEN),
			"server_nonce", ctl_hexstr(p->server_nonce, TG_NONCE_LEN),
			"flags", (int)p->flags, "name", j->u.reg.name_buf, nlen,
			"proof", ctl_hexstr(p->proof, TG_PROOF_LEN), "peer", peer);
	if (!ctl_call(s, j, req, &rep))
		return;
	memcpy(ok->client_nonce, p->client_nonce, TG_NONCE_LEN);
	if (!ctl_get_id(rep, "org", ok->org_guid) || !ctl_get_id(rep, "device_id", ok->device_id) ||
	    !ctl_get_hex(rep, "wrapped_cred", ok->wrapped_cred, TG_CRED_LEN) ||
	    !ctl_get_hex(rep, "wrap_tag", ok->wrap_tag, TG_TAG_LEN))
		ctl_malformed(s, j, "register");
	else
		j->status = TG_OK;
	json_decref(rep);
}

static int ctl_state(const char *st)
{
	if (!st)
		return -1;
	if (strcmp(st, "active") == 0)
		return GW_ORG_ACTIVE;
	if (strcmp(st, "deactivated") == 0)
		return GW_ORG_DEACTIVATED;
	if (strcmp(st, "deleted") == 0)
		return GW_ORG_DELETED;
	return -1;
}

/* An organization's policy; "" (never set) is the default, "compress". */
static bool ctl_policy(const json_t *o, struct tg_policy *pol)
{
	const char *v = json_string_value(json_object_get(o, "policy"));

	if (!v)
		return false;
	return tg_policy_parse(*v ? v : "compress", pol) == 0;
}

static void ctl_auth(struct gw_service *s, struct gw_job *j)
{
	const struct tg_auth *a = &j->u.auth.req;
	char peer[32];
	const char *role, *key;
	json_t *req, *rep;
	int st;

	ctl_peer(&j->peer, peer, sizeof(peer));
	req = json_pack("{s:s, s:o, s:o, s:o, s:i, s:i, s:o, s:s}", "op", "auth",
			"device_id", ctl_hexstr(a->device_id, TG_ID_LEN),
			"client_nonce", ctl_hexstr(a->client_nonce, TG_NONCE_LEN),
			"server_nonce", ctl_hexstr(a->server_nonce, TG_NONCE_LEN),
			"max_frag", (int)a->max_frag, "flags", (int)a->flags,
			"proof", ctl_hexstr(a->proof, TG_PROOF_LEN), "peer", peer);
	if (!ctl_call(s, j, req, &rep))
		return;
	role = json_string_value(json_object_get(rep, "role"));
	st = ctl_state(json_string_value(json_object_get(rep, "state")));
	if (!ctl_get_id(rep, "org", j->u.auth.org.b) ||
	    !ctl_get_hex(rep, "session_key", j->u.auth.session_key, sizeof(j->u.auth.session_key)) ||
	    !ctl_policy(rep, &j->u.auth.policy) || st < 0) {
		ctl_malformed(s, j, "auth");
	} else {
		j->u.auth.admin = role && strcmp(role, "admin") == 0;
		j->u.auth.relay = json_is_true(json_object_get(rep, "relay"));
		j->u.auth.state = (uint8_t)st;
		j->status = TG_OK;
	}
	/* The session key leaves this process only in the worker's job. */
	key = json_string_value(json_object_get(rep, "session_key"));
	if (key)
		OPENSSL_cleanse((char *)(uintptr_t)key, strlen(key));
	json_decref(rep);
}

static void ctl_backup_record(struct gw_service *s, struct gw_job *j)
{
	const struct tg_backup_end *e = &j->u.end.req;
	size_t nlen = e->name_len > TG_NAME_MAX ? TG_NAME_MAX : e->name_len;
	json_t *req, *rep;

	req = json_pack("{s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:s%}", "op", "backup.record",
			"org", ctl_hexstr(j->org.b, TG_ID_LEN),
			"device_id", ctl_hexstr(j->u.end.device, TG_ID_LEN),
			"root_id", ctl_hexstr(e->root_id, TG_ID_LEN),
			"root_len", (json_int_t)e->root_len, "nfiles", (json_int_t)e->nfiles,
			"logical_bytes", (json_int_t)e->logical_bytes,
			"name", j->u.end.name_buf, nlen);
	if (!ctl_call(s, j, req, &rep))
		return;
	if (!ctl_get_u64(rep, "backup_id", &j->u.end.backup_id) || j->u.end.backup_id == 0)
		ctl_malformed(s, j, "backup.record");
	else
		j->status = TG_OK;
	json_decref(rep);
}

static void ctl_restore(struct gw_service *s, struct gw_job *j)
{
	const struct tg_restore_req *r = &j->u.restore.req;
	struct tg_restore_ok *ok = &j->u.restore.ok;
	uint64_t bid = r->flags & TG_RF_LATEST ? 0 : r->backup_id, v;
	json_t *req, *rep;

	req = json_pack("{s:s, s:o, s:o, s:o, s:I, s:b}", "op", "restore.authorize",
			"org", ctl_hexstr(j->org.b, TG_ID_LEN),
			"device_id", ctl_hexstr(j->u.restore.device, TG_ID_LEN),
			"target_device", ctl_hexstr(r->device_id, TG_ID_LEN),
			"backup_id", (json_int_t)bid, "admin", !!(r->flags & TG_RF_ADMIN));
	if (!ctl_call(s, j, req, &rep))
		return;
	memset(ok, 0, sizeof(*ok));
	if (!ctl_get_u64(rep, "backup_id", &ok->backup_id) ||
	    !ctl_get_hex(rep, "root_id", ok->root_id, TG_ID_LEN) ||
	    !ctl_get_u64(rep, "root_len", &v) || v == 0 || v > TG_CHUNK_MAX ||
	    !ctl_get_u64(rep, "total_bytes", &ok->total_bytes) ||
	    !ctl_get_u64(rep, "created", &ok->created)) {
		ctl_malformed(s, j, "restore.authorize");
	} else {
		ok->root_len = (uint32_t)v;
		j->status = TG_OK;
	}
	json_decref(rep);
}

static void ctl_job(struct gw_service *s, struct gw_job *j)
{
	j->status = TG_OK;
	j->msg[0] = '\0';
	j->retry_after = 0;
	if (!s->link) {
		uint64_t secs = s->backoff_ms / 1000u;

		j->retry_after = secs ? (uint32_t)secs : 1;
		svc_fail(s, j, TG_ERR_UNAVAILABLE, "the control plane is unreachable");
		return;
	}
	switch (j->type) {
	case GW_JOB_REGISTER:
		ctl_register(s, j);
		break;
	case GW_JOB_AUTH:
		ctl_auth(s, j);
		break;
	case GW_JOB_BACKUP_END:
		ctl_backup_record(s, j);
		break;
	case GW_JOB_RESTORE:
		ctl_restore(s, j);
		break;
	default:
		j->status = TG_ERR_BAD_REQUEST;
		snprintf(j->msg, sizeof(j->msg), "unknown job type %u", j->type);
	}
	svc_answer(s, j);
}

/* ---- org updates ---- */

static void ctl_backlog_flush(struct gw_service *s)
{
	for (unsigned w = 0; w < s->info.nworkers; w++) {
		struct svc_backlog *b = &s->backlog[w];
		unsigned i = 0;

		while (i < b->n && rte_ring_mp_enqueue(s->done[w], b->q[i]) == 0)
			i++;
		if (i) {
			memmove(b->q, b->q + i, (b->n - i) * sizeof(*b->q));
			b->n -= i;
		}
	}
}

static void ctl_post(struct gw_service *s, unsigned w, struct gw_job *j)
{
	struct svc_backlog *b = &s->backlog[w];

	if (b->n == 0 && rte_ring_mp_enqueue(s->done[w], j) == 0)
		return;
	if (b->n == b->cap) {
		unsigned cap = b->cap ? 2 * b->cap : 64;
		struct gw_job **q = realloc(b->q, cap * sizeof(*q));

		if (!q) {
			svc_log("error", "out of memory: an organization update for worker %u is lost",
				w);
			free(j);
			return;
		}
		b->q = q;
		b->cap = cap;
	}
	b->q[b->n++] = j;
}

/*
 * Give back everything tidegate-control holds for us in org's lease, not
 * just what we had left: what it holds beyond that is either spent (and
 * counted by the commit whatever the lease holds) or a remainder of an
 * earlier lease that expired here first, which would otherwise stay
 * reserved as long as renewals extend it.
 */
static void ctl_release(struct gw_service *s, const char *hex)
{
	json_t *rep = NULL;

	if (!s->link)
		return;
	if (ctl_request(s, json_pack("{s:s, s:s, s:I}", "op", "release", "org", hex, "bytes",
				     (json_int_t)SVC_RELEASE_ALL), &rep) == 0)
		json_decref(rep);
}

static void ctl_org_update(struct gw_service *s, const json_t *m)
{
	struct tg_org_id org;
	struct tg_policy pol;
	struct svc_pool *p;
	uint8_t dev[TG_ID_LEN];
	bool has_pol, has_dev;
	bool release = false;
	char hex[TG_HEX_ID_LEN + 1];
	int st;

	if (!ctl_get_id(m, "org", org.b))
		return;
	st = ctl_state(json_string_value(json_object_get(m, "state")));
	if (st < 0)
		st = GW_ORG_ACTIVE; /* a change that is not a state change */
	has_pol = ctl_policy(m, &pol) && json_string_length(json_object_get(m, "policy")) > 0;
	has_dev = ctl_get_id(m, "device", dev);

	/* The local lease of an org that may no longer store goes back. */
	pthread_mutex_lock(&s->q_lock);
	p = svc_pool_find(s, &org);
	if (p && st != GW_ORG_ACTIVE) {
		/* Refused here at once; after SVC_DENY_MS the control plane
		 * is asked again and says the same, or that it is back. */
		p->deactivated = true;
		p->deny = TG_ERR_ORG_DEACTIVATED;
		p->deny_until_ms = svc_now_ms() + SVC_DENY_MS;
		snprintf(p->deny_msg, sizeof(p->deny_msg), "the organization is deactivated");
		release = p->leased_ms != 0;
		p->avail = 0;
		p->expiry_ms = 0;
	} else if (p) {
		p->deactivated = false;
		p->deny = 0;
	}
	pthread_cond_broadcast(&s->q_cv);
	pthread_mutex_unlock(&s->q_lock);
	tg_id_to_hex(&org, hex);
	if (release)
		ctl_release(s, hex);

	for (unsigned w = 0; w < s->info.nworkers; w++) {
		struct gw_job *j = calloc(1, sizeof(*j));

		if (!j) {
			svc_log("error", "out of memory: an organization update for worker %u is lost",
				w);
			continue;
		}
		j->type = GW_JOB_ORG_UPDATE;
		j->worker = (uint8_t)w;
		j->org = org;
		j->u.upd.state = (uint8_t)st;
		j->u.upd.has_policy = has_pol;
		if (has_pol)
			j->u.upd.policy = pol;
		j->u.upd.has_device = has_dev;
		if (has_dev)
			memcpy(j->u.upd.device, dev, TG_ID_LEN);
		ctl_post(s, w, j);
	}
	if (st != GW_ORG_ACTIVE)
		svc_log("info", "organization %s %s: its sessions are closed", hex,
			st == GW_ORG_DELETED ? "deleted" : "deactivated");
}

static void ctl_pushes(struct gw_service *s)
{
	json_t *m;
	int rc;

	while (s->link && (rc = tg_link_poll_push(s->link, &m)) != 0) {
		const char *op;

		if (rc < 0) {
			ctl_link_down(s, rc);
			return;
		}
		op = json_string_value(json_object_get(m, "op"));
		if (op && strcmp(op, "org_update") == 0)
			ctl_org_update(s, m);
		json_decref(m);
	}
}

/* ---- leases ---- */

struct ctl_lease_act {
	struct svc_pool *p;
	uint64_t want;    /* > 0: an I/O thread waits for this much */
	uint64_t ask;
	bool release;     /* idle: give the lease back */
};

static uint64_t ctl_margin(uint64_t ttl)
{
	uint64_t m = ttl / 10;

	return m > 1000 ? 1000 : m;
}

/* Ask for a lease; 0 granted, >0 the refusal code, <0 no answer. */
static int ctl_lease_ask(struct gw_service *s, const char *hex, uint64_t ask, uint64_t *granted,
			 uint64_t *expires, char *msg, size_t cap)
{
	json_t *rep;
	int rc = ctl_request(s, json_pack("{s:s, s:s, s:I}", "op", "lease", "org", hex, "bytes",
					  (json_int_t)ask), &rep);

	if (rc)
		return rc < 0 ? rc : -EIO;
	if (json_is_true(json_object_get(rep, "ok")) && ctl_get_u64(rep, "granted", granted) &&
	    ctl_get_u64(rep, "expires_ms", expires)) {
		json_decref(rep);
		return 0;
	}
	rc = json_is_true(json_object_get(rep, "ok")) ? TG_ERR_UNAVAILABLE
						       : ctl_refusal(rep, msg, cap);
	json_decref(rep);
	return rc;
}

static void ctl_lease_one(struct gw_service *s, struct ctl_lease_act *a, uint64_t now)
{
	struct svc_pool *p = a->p;
	uint64_t granted = 0, expires = 0, ask = a->ask;
	char msg[96] = "";
	bool topup_refused = false;
	int rc;

	rc = ctl_lease_ask(s, p->hex, ask, &granted, &expires, msg, sizeof(msg));
	/* Less quota left than a full lease: what this chunk needs may fit. */
	if (rc == TG_ERR_QUOTA_EXCEEDED && a->want && ask > a->want) {
		ask = a->want;
		rc = ctl_lease_ask(s, p->hex, ask, &granted, &expires, msg, sizeof(msg));
	}
	if (rc == TG_ERR_QUOTA_EXCEEDED && !a->want && ask > 0) {
		ask = 0; /* no top-up to be had: at least keep what we hold */
		topup_refused = true;
		rc = ctl_lease_ask(s, p->hex, 0, &granted, &expires, msg, sizeof(msg));
	}

	pthread_mutex_lock(&s->q_lock);
	if (rc == 0) {
		if (p->expiry_ms == 0 || now >= p->expiry_ms)
			p->avail = 0;
		p->avail += granted;
		p->expiry_ms = now + expires - ctl_margin(expires);
		p->leased_ms = now;
		p->deny = 0;
		p->deactivated = false;
		if (topup_refused)
			p->topup_fail_ms = now; /* not again at every tick */
	} else if (rc > 0 && a->want) {
		if (!p->deny)
			svc_log("warning", "lease refused for organization %s: %s", p->hex, msg);
		p->deny = (uint16_t)rc;
		p->deny_until_ms = svc_now_ms() + SVC_DENY_MS;
		snprintf(p->deny_msg, sizeof(p->deny_msg), "%s", msg);
	} else if (rc > 0) {
		p->topup_fail_ms = now;
		if (rc == TG_ERR_ORG_DEACTIVATED || rc == TG_ERR_UNKNOWN_ORG)
			p->deactivated = true;
	}
	if (a->want) {
		p->want = 0;
		p->gen++;
	}
	pthread_cond_broadcast(&s->q_cv);
	pthread_mutex_unlock(&s->q_lock);
}

static void ctl_leases(struct gw_service *s, uint64_t now, bool tick)
{
	struct ctl_lease_act *acts;
	unsigned n = 0;

	pthread_mutex_lock(&s->q_lock);
	if (!s->lease_asked && !tick) {
		pthread_mutex_unlock(&s->q_lock);
		return;
	}
	s->lease_asked = false;
	acts = calloc(s->npools ? s->npools : 1, sizeof(*acts));
	for (unsigned i = 0; acts && i < s->npools; i++) {
		struct svc_pool *p = s->pools[i];
		bool live = p->expiry_ms && now < p->expiry_ms;
		/* (An I/O thread may have stamped used_ms after our now.) */
		bool busy = p->used_ms + s->lease_ttl_ms > now;
		struct ctl_lease_act *a = &acts[n];

		if (p->want) {
			a->p = p;
			a->want = p->want;
			a->ask = p->want > s->lease_bytes ? p->want : s->lease_bytes;
			n++;
		} else if (!tick) {
			continue;
		} else if (live && p->avail && !busy) {
			a->p = p;
			a->release = true;
			p->avail = 0;
			p->expiry_ms = 0;
			n++;
		} else if (live && busy && !p->deactivated &&
			   (now >= p->leased_ms + s->lease_ttl_ms / 2 ||
			    p->avail < s->lease_bytes / 4) &&
			   now - p->topup_fail_ms >= SVC_DENY_MS) {
			/* Renew at half-life, top up when low: a busy org
			 * should find its lease ready, not wait for it. */
			a->p = p;
			a->ask = p->avail < s->lease_bytes ? s->lease_bytes - p->avail : 0;
			n++;
		}
	}
	pthread_mutex_unlock(&s->q_lock);
	if (!acts) {
		svc_log("error", "out of memory handling quota leases");
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		if (!s->link) {
			/* Link down: waiters were woken by ctl_set_up and answer
			 * UNAVAILABLE; they clear nothing, so clear for them. */
			pthread_mutex_lock(&s->q_lock);
			if (acts[i].want) {
				acts[i].p->want = 0;
				acts[i].p->gen++;
			}
			pthread_mutex_unlock(&s->q_lock);
			continue;
		}
		if (acts[i].release)
			ctl_release(s, acts[i].p->hex);
		else
			ctl_lease_one(s, &acts[i], svc_now_ms());
	}
	free(acts);
}

/* ---- usage commits ---- */

/* Take the next org's uncommitted usage into s->commit; false if none. */
static bool ctl_commit_next(struct gw_service *s)
{
	bool found = false;

	pthread_mutex_lock(&s->q_lock);
	for (unsigned k = 0; k < s->npools && !found; k++) {
		unsigned i = (s->commit_rr + k) % s->npools;
		struct svc_pool *p = s->pools[i];
		struct svc_commit *c = &s->commit;

		if (!(p->u_stored | p->u_logical | p->u_unique | p->u_chunks | p->u_dup))
			continue;
		c->org = p->org;
		memcpy(c->hex, p->hex, sizeof(c->hex));
		c->stored = p->u_stored;
		c->logical = p->u_logical;
		c->unique = p->u_unique;
		c->chunks = p->u_chunks;
		c->dup = p->u_dup;
		p->u_stored = p->u_logical = p->u_unique = p->u_chunks = p->u_dup = 0;
		c->seq = s->next_seq++;
		c->pending = true;
		s->commit_rr = i + 1;
		found = true;
	}
	pthread_mutex_unlock(&s->q_lock);
	return found;
}

/*
 * Commit what is pending, org after org: 0 when everything is committed,
 * 1 when something has to wait (link down, Redis down).
 */
static int ctl_commits(struct gw_service *s)
{
	for (unsigned guard = 0; guard <= s->npools + 1; guard++) {
		struct svc_commit *c = &s->commit;
		json_t *rep;
		char msg[96];
		uint16_t code;
		int rc;

		if (!c->pending && !ctl_commit_next(s))
			return 0;
		if (!s->link)
			return 1;
		rc = ctl_request(s, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "op",
					      "commit", "org", c->hex, "commit_seq",
					      (json_int_t)c->seq, "stored_bytes",
					      (json_int_t)c->stored, "logical_bytes",
					      (json_int_t)c->logical, "unique_bytes",
					      (json_int_t)c->unique, "chunks", (json_int_t)c->chunks,
					      "dup_chunks", (json_int_t)c->dup), &rep);
		if (rc)
			return 1; /* same seq next time */
		if (json_is_true(json_object_get(rep, "ok"))) {
			c->pending = false;
			json_decref(rep);
			continue;
		}
		code = ctl_refusal(rep, msg, sizeof(msg));
		json_decref(rep);
		if (code == TG_ERR_UNAVAILABLE)
			return 1;
		/* A deleted org, a refused value: retrying cannot help. */
		svc_log("warning", "usage commit for organization %s dropped: %s", c->hex, msg);
		c->pending = false;
	}
	return 1;
}

/* ---- the loop ---- */

static void ctl_wait(struct gw_service *s, int timeout_ms)
{
	struct pollfd pf[2] = { { .fd = s->efd, .events = POLLIN }, { .fd = -1 } };
	nfds_t n = 1;
	uint64_t v;

	if (s->link) {
		pf[1].fd = tg_link_fd(s->link);
		pf[1].events = POLLIN;
		n = 2;
	}
	if (poll(pf, n, timeout_ms) > 0 && (pf[0].revents & POLLIN)) {
		if (read(s->efd, &v, sizeof(v)) < 0)
			return;
	}
}

int gw_service_run(struct gw_service *s)
{
	if (!s)
		return -EINVAL;
	s->commit_ms = svc_now_ms() + SVC_COMMIT_MS;
	s->lease_tick_ms = svc_now_ms() + SVC_LEASE_TICK_MS;
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		uint64_t now = svc_now_ms();
		bool tick = now >= s->lease_tick_ms;
		unsigned budget = 64;
		void *p;

		ctl_reconnect(s, now);
		ctl_pushes(s);
		ctl_backlog_flush(s);
		while (budget-- && rte_ring_mc_dequeue(s->ctl_ring, &p) == 0) {
			ctl_job(s, p);
			ctl_pushes(s); /* org updates never wait behind a burst */
		}
		if (tick)
			s->lease_tick_ms = now + SVC_LEASE_TICK_MS;
		ctl_leases(s, svc_now_ms(), tick);
		if (now >= s->commit_ms) {
			s->commit_ms = now + SVC_COMMIT_MS;
			ctl_commits(s);
		}
		if (rte_ring_count(s->ctl_ring) == 0)
			ctl_wait(s, SVC_POLL_MS);
	}
	svc_run_finish(s);
	return 0;
}

/* destroy: the last usage, then the unused leases back. */
void svc_ctl_final(struct gw_service *s)
{
	uint64_t deadline = svc_now_ms() + SVC_FINAL_MS;

	if (!s->link)
		svc_link_connect(s, false);
	while (ctl_commits(s) != 0) {
		struct timespec ts = { 0, 100000000L };

		if (svc_now_ms() >= deadline || !s->link) {
			svc_log("warning", "shutdown: some usage could not be committed");
			break;
		}
		nanosleep(&ts, NULL);
	}
	for (unsigned i = 0; i < s->npools; i++) {
		struct svc_pool *p = s->pools[i];

		if (p->leased_ms)
			ctl_release(s, p->hex);
		p->avail = 0;
		p->expiry_ms = 0;
	}
}
