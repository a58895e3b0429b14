/*
 * model.c - the tenant model's core: the Redis connection (hiredis async
 * API on the libevent adapter, so a slow Redis never blocks the sockets),
 * the Lua scripts by SHA, the life cycle of one request, the command table
 * and the reply helpers shared with the daemon.
 *
 * Connection states: DOWN -> CONNECTING (TCP connect, AUTH, SELECT, SCRIPT
 * LOAD of every script, provider_init, all pipelined) -> UP. Anything that
 * fails or takes longer than redis_timeout_ms drops the connection, and the
 * next attempt waits 100 ms, doubling to 5 s. Only UP serves requests;
 * otherwise they are answered "unavailable" at once and nothing is queued
 * (fail closed for money: a lease or a seat is never granted blind).
 *
 * A request whose script does not answer within redis_timeout_ms is
 * answered "unavailable" and the connection is dropped: a Redis that hangs
 * is treated as down, so later requests fail at once instead of each
 * waiting out its own timeout.
 *
 * SHAs are computed here (SHA-1 of the script text, as Redis does) so that
 * EVALSHA can be pipelined behind SCRIPT LOAD; a NOSCRIPT reply (Redis
 * restarted or SCRIPT FLUSH) reloads every script and retries the call once.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "model.h"
#include "tg_crypto.h"
#include "tg_proto.h"
#include "tg_types.h"

#define CTL_BACKOFF_MIN_MS 100u
#define CTL_BACKOFF_MAX_MS 5000u
#define CTL_TIMEOUT_DEFAULT_MS 2000

enum ctl_redis_state { CTL_R_DOWN, CTL_R_CONNECTING, CTL_R_UP };

struct ctl_model {
	struct event_base *base;
	struct ctl_cfg cfg;
	redisAsyncContext *ac;
	enum ctl_redis_state state;
	unsigned backoff_ms;
	unsigned failures;          /* attempts since the last UP, for logging */
	struct event *retry_ev;     /* reconnect after the backoff */
	struct event *setup_ev;     /* connect + setup deadline */
	struct event *drop_ev;      /* drop the connection outside hiredis */
	bool setup_failed;          /* this attempt already failed: stay quiet */
	const char *drop_why;       /* static string: why drop_ev was fired */
	char sha[CTL_S__MAX][41];
	char guid[CTL_GUID_STR_LEN + 1];
	json_t *provider;           /* last provider record read from Redis */
	ctl_push_fn push_fn;
	void *push_arg;
	struct ctl_req *reqs;       /* every live request */
	bool sweeping;
};

/* ---- small helpers ---- */

void ctl_hex(const void *p, size_t len, char *out)
{
	static const char hx[] = "0123456789abcdef";
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hx[b[i] >> 4];
		out[2 * i + 1] = hx[b[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int ctl_unhex(const char *s, void *out, size_t len)
{
	uint8_t *b = out;

	if (!s || strlen(s) != 2 * len)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

bool ctl_guid_norm(const char *in, char out[CTL_GUID_STR_LEN + 1])
{
	if (!in || strlen(in) != CTL_GUID_STR_LEN)
		return false;
	for (unsigned i = 0; i < CTL_GUID_STR_LEN; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		int c = (unsigned char)in[i];

		if (dash ? c != '-' : hexval(c) < 0)
			return false;
		out[i] = (char)tolower(c);
	}
	out[CTL_GUID_STR_LEN] = '\0';
	return true;
}

int ctl_guid_new(char out[CTL_GUID_STR_LEN + 1])
{
	uint8_t b[16];
	char hx[33];
	int ret = tg_random(b, sizeof(b));

	if (ret)
		return ret;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);  /* RFC 4122 version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);  /* RFC 4122 variant */
	ctl_hex(b, sizeof(b), hx);
	snprintf(out, CTL_GUID_STR_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hx, hx + 8, hx + 12,
		 hx + 16, hx + 20);
	return 0;
}

/* ---- reply readers ---- */

const char *ctl_rr_str(const redisReply *a, size_t i)
{
	const redisReply *e;

	if (!a || a->type != REDIS_REPLY_ARRAY || i >= a->elements)
		return NULL;
	e = a->element[i];
	if (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS)
		return e->str;
	return NULL;
}

long long ctl_rr_ll(const redisReply *a, size_t i, long long dflt)
{
	const redisReply *e;
	const char *s;
	char *end;
	long long v;

	if (!a || a->type != REDIS_REPLY_ARRAY || i >= a->elements)
		return dflt;
	e = a->element[i];
	if (e->type == REDIS_REPLY_INTEGER)
		return e->integer;
	s = ctl_rr_str(a, i);
	if (!s || !*s)
		return dflt;
	errno = 0;
	v = strtoll(s, &end, 10);
	return errno || *end ? dflt : v;
}

const char *ctl_rr_field(const redisReply *a, size_t first, const char *f)
{
	if (!a || a->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = first; i + 1 < a->elements; i += 2) {
		const char *k = ctl_rr_str(a, i);

		if (k && strcmp(k, f) == 0)
			return ctl_rr_str(a, i + 1);
	}
	return NULL;
}

long long ctl_rr_field_ll(const redisReply *a, size_t first, const char *f, long long dflt)
{
	const char *s = ctl_rr_field(a, first, f);
	char *end;
	long long v;

	if (!s || !*s)
		return dflt;
	errno = 0;
	v = strtoll(s, &end, 10);
	return errno || *end ? dflt : v;
}

/* ---- replies ---- */

json_t *ctl_reply_ok(json_t *result)
{
	json_t *o = json_object();

	if (!o) {
		json_decref(result);
		return NULL;
	}
	json_object_set_new(o, "ok", json_true());
	json_object_set_new(o, "result", result ? result : json_object());
	return o;
}

static json_t *reply_err_v(const char *code, const char *field, const char *fmt, va_list ap)
{
	json_t *o = json_object(), *e = json_object();
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (!o || !e) {
		json_decref(o);
		json_decref(e);
		return NULL;
	}
	json_object_set_new(e, "code", json_string(code));
	json_object_set_new(e, "message", json_string(msg));
	if (field && *field)
		json_object_set_new(e, "field", json_string(field));
	json_object_set_new(o, "ok", json_false());
	json_object_set_new(o, "error", e);
	return o;
}

json_t *ctl_reply_err(const char *code, const char *field, const char *fmt, ...)
{
	va_list ap;
	json_t *o;

	va_start(ap, fmt);
	o = reply_err_v(code, field, fmt, ap);
	va_end(ap);
	return o;
}

static json_t *link_err_v(int tg_code, const char *fmt, va_list ap)
{
	json_t *o = json_object(), *e = json_object();
	char msg[TG_ERRMSG_MAX + 1];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (!o || !e) {
		json_decref(o);
		json_decref(e);
		return NULL;
	}
	json_object_set_new(e, "code", json_integer(tg_code));
	json_object_set_new(e, "name", json_string(tg_err_name((enum tg_err)tg_code)));
	json_object_set_new(e, "message", json_string(msg));
	json_object_set_new(o, "ok", json_false());
	json_object_set_new(o, "error", e);
	return o;
}

json_t *ctl_reply_link_err(int tg_code, const char *fmt, ...)
{
	va_list ap;
	json_t *o;

	va_start(ap, fmt);
	o = link_err_v(tg_code, fmt, ap);
	va_end(ap);
	return o;
}

/* Model error codes as the wire codes a gateway hands to a device. An
 * internal error is UNAVAILABLE: the device retries later, it does not
 * give up on a fault of ours. */
static int link_code(const char *code)
{
	static const struct {
		const char *code;
		int tg;
	} map[] = {
		{ "bad_key", TG_ERR_BAD_KEY },
		{ "unknown_org", TG_ERR_UNKNOWN_ORG },
		{ "seats_full", TG_ERR_SEATS_FULL },
		{ "quota_exceeded", TG_ERR_QUOTA_EXCEEDED },
		{ "org_deactivated", TG_ERR_ORG_DEACTIVATED },
		{ "restore_over_limit", TG_ERR_RESTORE_OVER_LIMIT },
		{ "rate_limited", TG_ERR_RATE_LIMITED },
		{ "not_found", TG_ERR_NOT_FOUND },
		{ "unknown_device", TG_ERR_NOT_FOUND },
		{ "bad_request", TG_ERR_BAD_REQUEST },
		{ "bad_value", TG_ERR_BAD_REQUEST },
		{ "unknown_command", TG_ERR_BAD_REQUEST },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(map[i].code, code) == 0)
			return map[i].tg;
	return TG_ERR_UNAVAILABLE;
}

/* ---- requests ---- */

static void req_send(struct ctl_req *r);

static void req_clear_args(struct ctl_req *r)
{
	for (int i = 0; i < r->argc; i++)
		free(r->argv[i]);
	r->argc = 0;
	r->arg_overflow = false;
}

static void req_free(struct ctl_req *r)
{
	struct ctl_model *m = r->m;

	if (r->prev)
		r->prev->next = r->next;
	else
		m->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	req_clear_args(r);
	if (r->timer)
		event_free(r->timer);
	json_decref(r->ctx);
	if (r->priv) {
		OPENSSL_cleanse(r->priv, r->priv_len);
		free(r->priv);
	}
	free(r);
}

/* Freed once answered, with no script at Redis and no callback running. */
static void req_settle(struct ctl_req *r)
{
	if (r->answered && !r->inflight && !r->in_cb)
		req_free(r);
}

void ctl_req_reply(struct ctl_req *r, json_t *reply)
{
	if (r->answered) {
		json_decref(reply);
		return;
	}
	r->answered = true;
	if (r->fn && reply)
		r->fn(r->fn_arg, reply);
	else
		json_decref(reply);
	req_settle(r);
}

void ctl_req_fail(struct ctl_req *r, const char *code, const char *field, const char *fmt, ...)
{
	va_list ap;
	json_t *o;

	va_start(ap, fmt);
	o = r->link ? link_err_v(link_code(code), fmt, ap) : reply_err_v(code, field, fmt, ap);
	va_end(ap);
	ctl_req_reply(r, o);
}

void ctl_req_link_ok(struct ctl_req *r, json_t *fields)
{
	if (!fields)
		fields = json_object();
	json_object_set_new(fields, "ok", json_true());
	ctl_req_reply(r, fields);
}

void ctl_req_arg(struct ctl_req *r, const void *p, size_t len)
{
	char *c;

	if (r->argc >= CTL_ARGS_MAX) {
		r->arg_overflow = true;
		return;
	}
	c = malloc(len + 1);
	if (!c) {
		r->arg_overflow = true;
		return;
	}
	memcpy(c, p, len);
	c[len] = '\0';
	r->argv[r->argc] = c;
	r->argvlen[r->argc++] = len;
}

void ctl_req_args(struct ctl_req *r, const char *s)
{
	ctl_req_arg(r, s, strlen(s));
}

void ctl_req_argf(struct ctl_req *r, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf)) {
		r->arg_overflow = true;
		return;
	}
	ctl_req_arg(r, buf, (size_t)n);
}

void ctl_req_script(struct ctl_req *r, enum ctl_script_id s, int nkeys, ctl_done_fn done)
{
	r->script = s;
	r->nkeys = nkeys;
	r->done = done;
	r->retried = false;
	if (r->arg_overflow || nkeys > r->argc) {
		req_clear_args(r);
		ctl_req_fail(r, "internal", NULL, "too many script arguments");
		return;
	}
	req_send(r);
}

static int timeout_ms(const struct ctl_model *m)
{
	return m->cfg.redis_timeout_ms > 0 ? m->cfg.redis_timeout_ms : CTL_TIMEOUT_DEFAULT_MS;
}

static void ms_to_tv(int ms, struct timeval *tv)
{
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
}

static void load_scripts(struct ctl_model *m, redisCallbackFn *cb);

static void on_script_reply(redisAsyncContext *c, void *reply, void *priv)
{
	struct ctl_req *r = priv;
	struct ctl_model *m = r->m;
	const redisReply *rep = reply;
	const char *tag;

	(void)c;
	r->inflight = false;
	r->in_cb = true;  /* answering below must not free r under us */
	evtimer_del(r->timer);
	if (r->answered)
		goto out;
	if (!rep) {
		req_clear_args(r);
		ctl_req_fail(r, "unavailable", NULL, "the connection to Redis was lost");
		goto out;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		if (strncmp(rep->str, "NOSCRIPT", 8) == 0 && !r->retried && m->state == CTL_R_UP) {
			ctl_log(LOG_NOTICE, "redis: script cache empty (restart?), reloading scripts");
			r->retried = true;
			load_scripts(m, NULL);
			req_send(r);
			goto out;
		}
		ctl_log(LOG_ERR, "redis: script %s failed: %s", ctl_scripts[r->script].name, rep->str);
		req_clear_args(r);
		ctl_req_fail(r, "internal", NULL, "internal error in the tenant store");
		goto out;
	}
	req_clear_args(r);
	tag = ctl_rr_str(rep, 0);
	if (!tag) {
		ctl_log(LOG_ERR, "redis: script %s: malformed reply", ctl_scripts[r->script].name);
		ctl_req_fail(r, "internal", NULL, "internal error in the tenant store");
		goto out;
	}
	if (strcmp(tag, "err") == 0) {
		const char *code = ctl_rr_str(rep, 1), *field = ctl_rr_str(rep, 2);
		const char *msg = ctl_rr_str(rep, 3);

		ctl_req_fail(r, code ? code : "internal", field, "%s", msg ? msg : "error");
		goto out;
	}
	r->done(r, rep);
out:
	r->in_cb = false;
	req_settle(r);
}

static void req_send(struct ctl_req *r)
{
	struct ctl_model *m = r->m;
	const char *argv[CTL_ARGS_MAX + 3];
	size_t len[CTL_ARGS_MAX + 3];
	char nk[16];
	struct timeval tv;
	int n = 0;

	if (m->state != CTL_R_UP || !m->ac) {
		req_clear_args(r);
		ctl_req_fail(r, "unavailable", NULL, "Redis is unavailable; retry later");
		return;
	}
	snprintf(nk, sizeof(nk), "%d", r->nkeys);
	argv[n] = "EVALSHA";
	len[n++] = 7;
	argv[n] = m->sha[r->script];
	len[n++] = 40;
	argv[n] = nk;
	len[n++] = strlen(nk);
	for (int i = 0; i < r->argc; i++) {
		argv[n] = r->argv[i];
		len[n++] = r->argvlen[i];
	}
	if (redisAsyncCommandArgv(m->ac, on_script_reply, r, n, argv, len) != REDIS_OK) {
		req_clear_args(r);
		ctl_req_fail(r, "unavailable", NULL, "Redis is unavailable; retry later");
		return;
	}
	r->inflight = true;
	ms_to_tv(timeout_ms(m), &tv);
	evtimer_add(r->timer, &tv);
}

/* Drop the connection from the event loop, never from inside hiredis. */
static void drop_soon(struct ctl_model *m, const char *why)
{
	m->drop_why = why;
	event_active(m->drop_ev, EV_TIMEOUT, 0);
}

static void on_req_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_req *r = arg;
	struct ctl_model *m = r->m;

	(void)fd;
	(void)what;
	ctl_log(LOG_WARNING, "redis: script %s timed out after %d ms", ctl_scripts[r->script].name,
		timeout_ms(m));
	ctl_req_fail(r, "unavailable", NULL, "Redis did not answer in time; retry later");
	/* r stays allocated while inflight: the drop runs its callback with a
	 * NULL reply, which frees it. */
	drop_soon(m, "a script timed out");
}

static struct ctl_req *req_new(struct ctl_model *m, ctl_reply_fn fn, void *arg, bool link)
{
	struct ctl_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->timer = evtimer_new(m->base, on_req_timeout, r);
	if (!r->timer) {
		free(r);
		return NULL;
	}
	r->m = m;
	r->fn = fn;
	r->fn_arg = arg;
	r->link = link;
	r->next = m->reqs;
	if (m->reqs)
		m->reqs->prev = r;
	m->reqs = r;
	return r;
}

/* ---- connection ---- */

static void schedule_retry(struct ctl_model *m)
{
	struct timeval tv;

	ms_to_tv((int)m->backoff_ms, &tv);
	evtimer_add(m->retry_ev, &tv);
	m->backoff_ms = m->backoff_ms * 2 > CTL_BACKOFF_MAX_MS ? CTL_BACKOFF_MAX_MS
							      : m->backoff_ms * 2;
}

/* The connection is gone (or about to be freed by the caller). */
static void model_lost(struct ctl_model *m, const char *why)
{
	bool was_up = m->state == CTL_R_UP;

	m->ac = NULL;
	m->state = CTL_R_DOWN;
	m->sweeping = false;
	evtimer_del(m->setup_ev);
	if (was_up)
		ctl_log(LOG_ERR, "redis: connection lost (%s); requests fail until it is back", why);
	else if (m->failures++ == 0)
		ctl_log(LOG_WARNING, "redis: cannot connect to %s:%d (%s); retrying with backoff",
			m->cfg.redis_host, m->cfg.redis_port, why);
	else
		ctl_log(LOG_DEBUG, "redis: connect attempt failed (%s)", why);
	schedule_retry(m);
}

static void model_drop(struct ctl_model *m, const char *why)
{
	redisAsyncContext *ac = m->ac;

	if (!ac)
		return;
	model_lost(m, why);
	/* Runs every pending callback with a NULL reply (their requests are
	 * answered "unavailable") and the disconnect callback, which sees the
	 * context is no longer ours. */
	redisAsyncFree(ac);
}

static void on_drop(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_model *m = arg;

	(void)fd;
	(void)what;
	model_drop(m, m->drop_why ? m->drop_why : "dropped");
}

static void on_setup_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	model_drop(arg, "connect/setup timeout");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct ctl_model *m = ac->data;

	if (m && m->ac == ac)
		model_lost(m, status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "error"));
}

/* A setup step's reply; the last one (provider_init) makes us UP. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
	struct ctl_model *m = ac->data;
	const redisReply *rep = reply;
	intptr_t step = (intptr_t)priv;

	if (!m || m->ac != ac || m->state != CTL_R_CONNECTING || m->setup_failed)
		return;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		/* Loud once, then quiet while the backoff retries the same way. */
		ctl_log(m->failures ? LOG_DEBUG : LOG_ERR, "redis: set-up failed at %s%s: %s",
			step == -1 ? "AUTH" : step == -2 ? "SELECT" :
			step < CTL_S__MAX ? "SCRIPT LOAD " : "EVALSHA provider_init",
			step >= 0 && step < CTL_S__MAX ? ctl_scripts[step].name : "",
			rep ? rep->str : "no reply");
		m->setup_failed = true;
		drop_soon(m, "set-up failed");
		return;
	}
	if (step >= 0 && step < CTL_S__MAX &&
	    (rep->type != REDIS_REPLY_STRING || strcmp(rep->str, m->sha[step]) != 0)) {
		ctl_log(LOG_ERR, "redis: SCRIPT LOAD %s returned an unexpected SHA",
			ctl_scripts[step].name);
		m->setup_failed = true;
		drop_soon(m, "set-up failed");
		return;
	}
	if (step != CTL_S__MAX)
		return;
	/* provider_init: {'ok', guid, created, bad_key_attempts, rate_limited} */
	if (!ctl_guid_norm(ctl_rr_str(rep, 1), m->guid)) {
		ctl_log(LOG_ERR, "redis: tg:provider holds no valid provider GUID");
		m->setup_failed = true;
		drop_soon(m, "set-up failed");
		return;
	}
	ctl_model_provider_update(m, rep, 1);
	evtimer_del(m->setup_ev);
	m->state = CTL_R_UP;
	m->backoff_ms = CTL_BACKOFF_MIN_MS;
	m->failures = 0;
	ctl_log(LOG_NOTICE, "redis: connected to %s:%d, provider %s", m->cfg.redis_host,
		m->cfg.redis_port, m->guid);
}

static void load_scripts(struct ctl_model *m, redisCallbackFn *cb)
{
	for (intptr_t i = 0; i < CTL_S__MAX; i++)
		redisAsyncCommand(m->ac, cb, cb ? (void *)i : NULL, "SCRIPT LOAD %s",
				  ctl_scripts[i].body);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
	struct ctl_model *m = cac->data;
	redisAsyncContext *ac;
	char cand[CTL_GUID_STR_LEN + 1];

	if (!m || m->ac != cac)
		return;
	ac = m->ac;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback */
		model_lost(m, cac->errstr[0] ? cac->errstr : "connect failed");
		return;
	}
	if (m->cfg.redis_password[0])
		redisAsyncCommand(ac, on_setup_reply, (void *)(intptr_t)-1, "AUTH %s",
				  m->cfg.redis_password);
	if (m->cfg.redis_db)
		redisAsyncCommand(ac, on_setup_reply, (void *)(intptr_t)-2, "SELECT %d",
				  m->cfg.redis_db);
	load_scripts(m, on_setup_reply);
	/* Keep the GUID we already know if Redis lost its data: devices hold
	 * it, and a new one would orphan every registration. */
	if (m->guid[0])
		memcpy(cand, m->guid, sizeof(cand));
	else if (ctl_guid_new(cand)) {
		drop_soon(m, "set-up failed");
		return;
	}
	redisAsyncCommand(ac, on_setup_reply, (void *)(intptr_t)CTL_S__MAX,
			  "EVALSHA %s 1 tg:provider %s", m->sha[CTL_S_PROVIDER_INIT], cand);
}

static void model_connect(struct ctl_model *m)
{
	redisAsyncContext *ac;
	struct timeval tv;

	if (m->ac || m->state != CTL_R_DOWN)
		return;
	if (m->cfg.redis_host[0] == '/')
		ac = redisAsyncConnectUnix(m->cfg.redis_host);
	else
		ac = redisAsyncConnect(m->cfg.redis_host, m->cfg.redis_port);
	if (!ac) {
		model_lost(m, "out of memory");
		return;
	}
	if (ac->err) {
		char why[128];

		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		model_lost(m, why);
		return;
	}
	ac->data = m;
	if (redisLibeventAttach(ac, m->base) != REDIS_OK) {
		redisAsyncFree(ac);
		model_lost(m, "libevent attach failed");
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	m->ac = ac;
	m->state = CTL_R_CONNECTING;
	m->setup_failed = false;
	ms_to_tv(timeout_ms(m), &tv);
	evtimer_add(m->setup_ev, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	model_connect(arg);
}

static int script_shas(struct ctl_model *m)
{
	for (int i = 0; i < CTL_S__MAX; i++) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen = 0;

		if (!EVP_Digest(ctl_scripts[i].body, strlen(ctl_scripts[i].body), md, &mdlen,
				EVP_sha1(), NULL) || mdlen != 20)
			return -EIO;
		ctl_hex(md, 20, m->sha[i]);
	}
	return 0;
}

struct ctl_model *ctl_model_create(struct event_base *base, const struct ctl_cfg *cfg, int *err)
{
	struct ctl_model *m = calloc(1, sizeof(*m));
	int ret = -ENOMEM;

	if (!m)
		goto err_out;
	m->base = base;
	m->cfg = *cfg;
	m->backoff_ms = CTL_BACKOFF_MIN_MS;
	/* provider.show answers from here while Redis is down, so every field
	 * exists from the start. */
	m->provider = json_pack("{s:s, s:i, s:i, s:i}", "guid", "", "created", 0,
				"bad_key_attempts", 0, "rate_limited", 0);
	m->retry_ev = evtimer_new(base, on_retry, m);
	m->setup_ev = evtimer_new(base, on_setup_timeout, m);
	m->drop_ev = event_new(base, -1, 0, on_drop, m);
	if (!m->provider || !m->retry_ev || !m->setup_ev || !m->drop_ev)
		goto err_free;
	ret = script_shas(m);
	if (ret)
		goto err_free;
	model_connect(m);
	return m;

err_free:
	ctl_model_destroy(m);
err_out:
	if (err)
		*err = ret;
	return NULL;
}

void ctl_model_destroy(struct ctl_model *m)
{
	if (!m)
		return;
	if (m->ac) {
		redisAsyncContext *ac = m->ac;

		m->ac = NULL;
		m->state = CTL_R_DOWN;
		redisAsyncFree(ac);
	}
	/* Requests not at Redis are already answered or about to be; answer
	 * any straggler so that no caller waits forever. */
	while (m->reqs) {
		struct ctl_req *r = m->reqs;

		r->inflight = false;
		r->in_cb = false;
		if (!r->answered) {
			req_clear_args(r);
			ctl_req_fail(r, "unavailable", NULL, "the control plane is shutting down");
		} else {
			req_free(r);
		}
	}
	if (m->retry_ev)
		event_free(m->retry_ev);
	if (m->setup_ev)
		event_free(m->setup_ev);
	if (m->drop_ev)
		event_free(m->drop_ev);
	json_decref(m->provider);
	free(m);
}

/* ---- periodic work ---- */

static void sweep_done(struct ctl_req *r, const redisReply *rep)
{
	long long n = ctl_rr_ll(rep, 1, 0);

	r->m->sweeping = false;
	if (n > 0)
		ctl_log(LOG_INFO, "lease sweep: reclaimed %lld expired lease(s)", n);
	ctl_req_reply(r, NULL);
}

static void sweep_answered(void *arg, json_t *reply)
{
	struct ctl_model *m = arg;

	/* Only failures get here with a reply; success answers NULL. */
	m->sweeping = false;
	json_decref(reply);
}

void ctl_model_cron(struct ctl_model *m)
{
	struct ctl_req *r;

	if (m->state == CTL_R_DOWN && !m->ac && !evtimer_pending(m->retry_ev, NULL)) {
		model_connect(m);
		return;
	}
	if (m->state != CTL_R_UP || m->sweeping)
		return;
	r = req_new(m, sweep_answered, m, false);
	if (!r)
		return;
	m->sweeping = true;
	ctl_req_args(r, "tg:leases");
	ctl_req_script(r, CTL_S_SWEEP, 1, sweep_done);
}

/* ---- accessors ---- */

bool ctl_model_redis_up(const struct ctl_model *m)
{
	return m && m->state == CTL_R_UP;
}

const char *ctl_model_provider_guid(const struct ctl_model *m)
{
	return m ? m->guid : "";
}

bool ctl_model_provider_id(const struct ctl_model *m, uint8_t id[16])
{
	return m->guid[0] && tg_id_from_hex(m->guid, id) == 0;
}

const struct ctl_cfg *ctl_model_cfg(const struct ctl_model *m)
{
	return &m->cfg;
}

void ctl_model_on_push(struct ctl_model *m, ctl_push_fn fn, void *arg)
{
	m->push_fn = fn;
	m->push_arg = arg;
}

void ctl_model_push_org_dev(struct ctl_model *m, const char *guid, const char *state,
			    const char *policy, const char *device)
{
	json_t *msg;

	if (!m->push_fn || !guid)
		return;
	msg = json_pack("{s:s, s:s, s:s, s:s}", "op", "org_update", "org", guid, "state",
			state ? state : "", "policy", policy ? policy : "");
	if (!msg)
		return;
	if (device)
		json_object_set_new(msg, "device", json_string(device));
	m->push_fn(m->push_arg, msg);
	json_decref(msg);
}

void ctl_model_push_org(struct ctl_model *m, const char *guid, const char *state,
			const char *policy)
{
	ctl_model_push_org_dev(m, guid, state, policy, NULL);
}

void ctl_log_alerts(const char *guid, const char *name, const char *levels)
{
	char lv[16];

	/* Levels are the config's percentages: digits and commas, short. */
	while (levels && *levels) {
		size_t n = strcspn(levels, ",");

		if (n > 0 && n < sizeof(lv)) {
			memcpy(lv, levels, n);
			lv[n] = '\0';
			ctl_log(LOG_WARNING, "alert: organization %s reached %s%% of its quota%s%s%s",
				guid ? guid : "?", lv, name ? " (" : "", name ? name : "",
				name ? ")" : "");
		}
		levels += n;
		if (*levels == ',')
			levels++;
	}
}

void ctl_model_provider_update(struct ctl_model *m, const redisReply *rep, size_t first)
{
	static const char *const names[] = { "guid", "created", "bad_key_attempts",
					     "rate_limited" };

	json_object_set_new(m->provider, names[0], json_string(m->guid));
	for (size_t i = 1; i < 4; i++)
		json_object_set_new(m->provider, names[i],
				    json_integer(ctl_rr_ll(rep, first + i, 0)));
}

void ctl_model_provider_cached(const struct ctl_model *m, json_t *out)
{
	json_object_update(out, m->provider);
	json_object_set_new(out, "guid", json_string(m->guid));
}

/* ---- the command table ---- */

static const struct ctl_cmd {
	const char *name;
	ctl_handler_fn fn;
	bool link;   /* a gateway op: gateways only, wire error codes */
	bool redis;  /* answered "unavailable" at once while Redis is down */
} ctl_cmds[] = {
	{ "provider.show", ctl_admin_provider_show, false, false },
	{ "org.add", ctl_admin_org_add, false, true },
	{ "org.list", ctl_admin_org_list, false, true },
	{ "org.show", ctl_admin_org_show, false, true },
	{ "org.set", ctl_admin_org_set, false, true },
	{ "org.deactivate", ctl_admin_org_deactivate, false, true },
	{ "org.reactivate", ctl_admin_org_reactivate, false, true },
	{ "org.delete", ctl_admin_org_delete, false, true },
	{ "key.rotate", ctl_admin_key_rotate, false, true },
	{ "device.list", ctl_admin_device_list, false, true },
	{ "device.release", ctl_admin_device_release, false, true },
	{ "device.set", ctl_admin_device_set, false, true },
	{ "usage", ctl_admin_usage, false, true },
	{ "billing.export", ctl_admin_billing_export, false, true },
	{ "alerts", ctl_admin_alerts, false, true },
	{ "lease.list", ctl_admin_lease_list, false, true },
	{ "link.hello", ctl_link_hello, true, false },
	{ "link.register", ctl_link_register, true, true },
	{ "link.auth", ctl_link_auth, true, true },
	{ "link.lease", ctl_link_lease, true, true },
	{ "link.commit", ctl_link_commit, true, true },
	{ "link.release", ctl_link_release, true, true },
	{ "link.policy", ctl_link_policy, true, true },
	{ "link.backup.record", ctl_link_backup_record, true, true },
	{ "link.restore.authorize", ctl_link_restore_authorize, true, true },
};

/* Gateway names become part of Redis keys (tg:gw:<name>, lease members). */
static bool gateway_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > CTL_GW_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return false;
	return true;
}

void ctl_model_call(struct ctl_model *m, const char *cmd, json_t *args,
		    const struct ctl_caller *who, ctl_reply_fn fn, void *arg)
{
	bool gw = who && who->kind == CTL_CALLER_GATEWAY;
	const struct ctl_cmd *c = NULL;
	struct ctl_req *r;
	json_t *empty = NULL;

	for (size_t i = 0; cmd && i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
		if (strcmp(ctl_cmds[i].name, cmd) == 0)
			c = &ctl_cmds[i];
	if (c && c->link != gw)
		c = NULL;  /* admins do not speak link ops, nor gateways admin commands */
	if (!c) {
		fn(arg, gw ? ctl_reply_link_err(TG_ERR_BAD_REQUEST, "unknown op '%s'", cmd ? cmd : "")
			   : ctl_reply_err("unknown_command", NULL, "unknown command '%s'",
					   cmd ? cmd : ""));
		return;
	}
	if (gw && !gateway_name_ok(who->gateway)) {
		fn(arg, ctl_reply_link_err(TG_ERR_BAD_REQUEST, "bad gateway name"));
		return;
	}
	if (c->redis && m->state != CTL_R_UP) {
		fn(arg, gw ? ctl_reply_link_err(TG_ERR_UNAVAILABLE,
						"control plane cannot reach Redis; retry later")
			   : ctl_reply_err("unavailable", NULL, "Redis is unavailable; retry later"));
		return;
	}
	if (!args)
		args = empty = json_object();
	if (!json_is_object(args)) {
		fn(arg, gw ? ctl_reply_link_err(TG_ERR_BAD_REQUEST, "arguments must be an object")
			   : ctl_reply_err("bad_request", "args", "args must be an object"));
		return;
	}
	r = req_new(m, fn, arg, gw);
	if (!r) {
		fn(arg, gw ? ctl_reply_link_err(TG_ERR_UNAVAILABLE, "out of memory")
			   : ctl_reply_err("internal", NULL, "out of memory"));
		json_decref(empty);
		return;
	}
	if (gw)
		snprintf(r->gateway, sizeof(r->gateway), "%s", who->gateway);
	r->in_cb = true;
	c->fn(r, args, who);
	r->in_cb = false;
	json_decref(empty);
	/* A handler answers, or has a script at Redis; anything else is a bug
	 * that must not leave a caller waiting. */
	if (!r->answered && !r->inflight)
		ctl_req_fail(r, "internal", NULL, "internal error: request not answered");
	req_settle(r);
}
