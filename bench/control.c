/*
 * control.c - `tidegate-bench control`: how many seat admissions and lease
 * grants per second tidegate-control sustains through the gateway link,
 * beside what redis-benchmark gets from the same Redis running the same
 * Lua script with EVALSHA (issue 6: the daemon should reach at least 50 %).
 *
 * The comparison is honest only if the script is the very one the daemon
 * runs: the bench links the daemon's own sources (control/scripts.c),
 * takes the SHA1 of each body and asks Redis with SCRIPT EXISTS whether
 * tidegate-control loaded exactly that script before redis-benchmark runs
 * it. Its arguments mirror the daemon's: the same key names, a fresh device
 * id and name per call (__rand_int__), values of the same lengths.
 *
 * An admission through the link is two scripts (reg_lookup, then register
 * after the proof is checked in the daemon) plus the daemon's crypto and
 * JSON, so the report gives the ratio to the register script alone (the
 * issue's "same script") and to the two scripts back to back.
 *
 * Load generator: K links, one thread each (tg_link is one thread per
 * link), each waiting for its reply before the next request, like
 * redis-benchmark's K clients without pipelining.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <openssl/evp.h>

#include "bench.h"
#include "control.h"
#include "ctlenv.h"
#include "link_client.h"
#include "model.h"
#include "tg_crypto.h"
#include "tg_regkey.h"
#include "tg_types.h"

#define CB_CONNS_MAX    64
#define CB_LAT_MAX      (1u << 21)       /* latencies kept per worker */
#define CB_REQ_MS       5000             /* one request's timeout */
#define CB_SEATS        1000000          /* tidegate-ctl's maximum */
#define CB_RB_MAX       900000           /* redis-benchmark calls: below the seats */
#define CB_RB_CALIBRATE 2000             /* calls of the run that finds the rate */
#define CB_PEER         "192.0.2.1"

enum cb_op { CB_REGISTER, CB_LEASE };

struct cb_org {
	char name[32];
	char guid[40];
	struct tg_regkey key;
	char key_id_hex[2 * TG_KEYID_LEN + 1];
	uint8_t v[32];             /* the registration key's verifier */
};

struct cb_run;

struct cb_worker {
	pthread_t th;
	struct cb_run *run;
	struct tg_link *link;
	unsigned idx;
	uint64_t ok, refused, failed;
	char first_error[160];
	float *lat_us;
	size_t nlat;
	double t_end;
};

struct cb_run {
	enum cb_op op;
	const struct cb_org *org;
	uint8_t provider[TG_ID_LEN];
	char provider_hex[TG_HEX_ID_LEN + 1];
	unsigned conns;
	pthread_mutex_t lock;      /* with cond: the workers start together */
	pthread_cond_t cond;
	bool go;
	double t_start, deadline;
	struct cb_worker w[CB_CONNS_MAX];
};

static void cb_hex(const uint8_t *p, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[p[i] >> 4];
		out[2 * i + 1] = d[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ---- the load generator ---- */

static json_t *cb_register_req(struct cb_worker *w, uint64_t n)
{
	const struct cb_run *r = w->run;
	struct tg_reg_proof p = { 0 };
	char name[TG_NAME_MAX + 1], cn[33], sn[33], proof[65];

	snprintf(name, sizeof(name), "bench-%u-%llu", w->idx, (unsigned long long)n);
	memcpy(p.provider_guid, r->provider, TG_ID_LEN);
	memcpy(p.key_id, r->org->key.key_id, TG_KEYID_LEN);
	if (tg_random(p.client_nonce, TG_NONCE_LEN) || tg_random(p.server_nonce, TG_NONCE_LEN))
		return NULL;
	p.name = name;
	p.name_len = (uint16_t)strlen(name);
	if (tg_reg_proof(r->org->v, &p, p.proof))
		return NULL;
	cb_hex(p.client_nonce, TG_NONCE_LEN, cn);
	cb_hex(p.server_nonce, TG_NONCE_LEN, sn);
	cb_hex(p.proof, TG_PROOF_LEN, proof);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s}", "op", "register",
			 "provider_guid", r->provider_hex, "key_id", r->org->key_id_hex,
			 "client_nonce", cn, "server_nonce", sn, "flags", 0, "name", name,
			 "proof", proof, "peer", CB_PEER);
}

static json_t *cb_lease_req(struct cb_worker *w)
{
	return json_pack("{s:s, s:s, s:I}", "op", "lease", "org", w->run->org->guid, "bytes",
			 (json_int_t)CB_LEASE_BYTES);
}

/* A reply counts as a success only when it carries what the op promises. */
static bool cb_reply_good(enum cb_op op, const json_t *rep)
{
	if (!json_is_true(json_object_get(rep, "ok")))
		return false;
	if (op == CB_REGISTER)
		return json_is_string(json_object_get(rep, "device_id")) &&
		       json_is_string(json_object_get(rep, "wrapped_cred"));
	return json_integer_value(json_object_get(rep, "granted")) == (json_int_t)CB_LEASE_BYTES;
}

static void cb_note_error(struct cb_worker *w, const json_t *rep, int err)
{
	const json_t *e = rep ? json_object_get(rep, "error") : NULL;

	if (w->first_error[0])
		return;
	if (e)
		snprintf(w->first_error, sizeof(w->first_error), "%s: %s",
			 json_is_string(json_object_get(e, "name"))
				 ? json_string_value(json_object_get(e, "name")) : "?",
			 json_is_string(json_object_get(e, "message"))
				 ? json_string_value(json_object_get(e, "message")) : "");
	else if (rep)
		snprintf(w->first_error, sizeof(w->first_error), "reply without what was asked");
	else
		snprintf(w->first_error, sizeof(w->first_error), "link: %s", strerror(-err));
}

static void *cb_worker_main(void *arg)
{
	struct cb_worker *w = arg;
	struct cb_run *r = w->run;
	uint64_t n = 0;

	pthread_mutex_lock(&r->lock);
	while (!r->go)
		pthread_cond_wait(&r->cond, &r->lock);
	pthread_mutex_unlock(&r->lock);
	while (bench_now() < r->deadline && !ctlenv_stop_flag) {
		json_t *req = r->op == CB_REGISTER ? cb_register_req(w, n++) : cb_lease_req(w);
		json_t *rep = NULL;
		double t0 = bench_now();
		int err;

		if (!req) {
			w->failed++;
			snprintf(w->first_error, sizeof(w->first_error), "cannot build a request");
			break;
		}
		err = tg_link_request(w->link, req, &rep, CB_REQ_MS);
		json_decref(req);
		if (err) {
			w->failed++;
			cb_note_error(w, NULL, err);
			if (err != -ETIMEDOUT)
				break;
			continue;
		}
		if (cb_reply_good(r->op, rep)) {
			w->ok++;
			if (w->nlat < CB_LAT_MAX)
				w->lat_us[w->nlat++] = (float)((bench_now() - t0) * 1e6);
		} else {
			w->refused++;
			cb_note_error(w, rep, 0);
		}
		json_decref(rep);
	}
	w->t_end = bench_now();
	return NULL;
}

static double cb_self_cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static int cb_cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

static void cb_percentiles(struct cb_run *r, struct cb_link_res *res)
{
	size_t n = 0, at = 0;
	float *all;

	for (unsigned i = 0; i < r->conns; i++)
		n += r->w[i].nlat;
	all = n ? malloc(n * sizeof(*all)) : NULL;
	if (!all)
		return;
	for (unsigned i = 0; i < r->conns; i++) {
		memcpy(all + at, r->w[i].lat_us, r->w[i].nlat * sizeof(*all));
		at += r->w[i].nlat;
	}
	qsort(all, n, sizeof(*all), cb_cmp_float);
	res->p50_us = all[n / 2];
	res->p99_us = all[(size_t)((double)n * 0.99)];
	free(all);
}

static int cb_link_phase(struct ctlenv *e, struct cb_run *r, const struct cb_opts *o,
			 struct cb_link_res *res, char *why, size_t cap)
{
	double c0, r0, b0, c1, r1, b1, t_end = 0;
	unsigned started = 0;
	int ret = 0;

	memset(res, 0, sizeof(*res));
	r->conns = o->conns;
	for (unsigned i = 0; i < r->conns; i++) {
		struct cb_worker *w = &r->w[i];
		char name[64];

		memset(w, 0, sizeof(*w));
		w->run = r;
		w->idx = i;
		w->lat_us = malloc(CB_LAT_MAX * sizeof(*w->lat_us));
		snprintf(name, sizeof(name), "bench-%s-%u", r->op == CB_REGISTER ? "reg" : "lease",
			 i);
		w->link = tg_link_connect(e->gateway_sock, name, &ret);
		if (!w->link || !w->lat_us) {
			snprintf(why, cap, "gateway link %s: %s", name,
				 w->link ? "out of memory" : strerror(-ret));
			ret = w->link ? -ENOMEM : ret;
			goto out;
		}
	}
	r->go = false;
	r->deadline = 0;
	for (; started < r->conns; started++)
		if (pthread_create(&r->w[started].th, NULL, cb_worker_main, &r->w[started]))
			break;
	c0 = ctlenv_cpu_s(e->control_pid);
	r0 = ctlenv_cpu_s(e->redis_pid);
	b0 = cb_self_cpu_s();
	pthread_mutex_lock(&r->lock);
	r->t_start = bench_now();
	/* Threads that could not start: the ones that did stop at once. */
	r->deadline = started == r->conns ? r->t_start + o->seconds : 0;
	r->go = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	for (unsigned i = 0; i < started; i++) {
		struct cb_worker *w = &r->w[i];

		pthread_join(w->th, NULL);
		res->ok += w->ok;
		res->refused += w->refused;
		res->failed += w->failed;
		if (w->t_end > t_end)
			t_end = w->t_end;
		if (!res->first_error[0] && w->first_error[0])
			snprintf(res->first_error, sizeof(res->first_error), "%s", w->first_error);
	}
	c1 = ctlenv_cpu_s(e->control_pid);
	r1 = ctlenv_cpu_s(e->redis_pid);
	b1 = cb_self_cpu_s();
	if (started < r->conns) {
		snprintf(why, cap, "cannot start %u threads", r->conns);
		ret = -EAGAIN;
		goto out;
	}
	res->seconds = t_end - r->t_start;
	res->rate = res->seconds > 0 ? (double)res->ok / res->seconds : 0;
	res->control_cpu = res->seconds > 0 ? (c1 - c0) / res->seconds : 0;
	res->redis_cpu = res->seconds > 0 ? (r1 - r0) / res->seconds : 0;
	res->bench_cpu = res->seconds > 0 ? (b1 - b0) / res->seconds : 0;
	cb_percentiles(r, res);
out:
	for (unsigned i = 0; i < r->conns; i++) {
		if (r->w[i].link)
			tg_link_close(r->w[i].link);
		free(r->w[i].lat_us);
		r->w[i].link = NULL;
		r->w[i].lat_us = NULL;
	}
	return ret;
}

/* ---- redis-benchmark beside it ---- */

static int cb_sha1_hex(const char *s, char out[41])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned len = 0;

	if (!EVP_Digest(s, strlen(s), md, &len, EVP_sha1(), NULL) || len != 20)
		return -EIO;
	cb_hex(md, 20, out);
	return 0;
}

/* The script's SHA, and whether tidegate-control loaded that very body. */
static int cb_script_sha(struct ctlenv *e, enum ctl_script_id id, struct cb_rb_res *res)
{
	redisReply *r;

	if (cb_sha1_hex(ctl_scripts[id].body, res->sha))
		return -EIO;
	r = redisCommand(e->rc, "SCRIPT EXISTS %s", res->sha);
	res->loaded_by_control = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
				 r->element[0]->integer == 1;
	if (r)
		freeReplyObject(r);
	if (res->loaded_by_control)
		return 0;
	/* Not loaded (a daemon that changed how it loads scripts): load the
	 * same body ourselves; the report says so. */
	r = redisCommand(e->rc, "SCRIPT LOAD %s", ctl_scripts[id].body);
	if (!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, res->sha)) {
		if (r)
			freeReplyObject(r);
		return -EIO;
	}
	freeReplyObject(r);
	return 0;
}

/* The fields of redis-benchmark --csv's last line: "name","rps","avg",
 * "min","p50","p95","p99","max". */
static bool cb_rb_parse(const char *out, struct cb_rb_res *res)
{
	const char *line = NULL, *p = out;
	double f[8];
	unsigned n = 0;

	for (const char *q = out; *q; q++)
		if (q == out || q[-1] == '\n')
			if (strncmp(q, "\"EVALSHA", 8) == 0)
				line = q;
	if (!line)
		return false;
	p = line;
	while (n < 8 && (p = strstr(p, "\",\""))) {
		p += 3;
		f[++n] = strtod(p, NULL);
		if (n == 7)
			break;
	}
	if (n < 7 || f[1] <= 0)
		return false;
	res->rps = f[1];
	res->p50_ms = f[4];
	res->p99_ms = f[6];
	return true;
}

static int cb_rb_once(struct ctlenv *e, unsigned conns, unsigned long n, char **cmd,
		      double timeout, struct cb_rb_res *res, char *why, size_t cap)
{
	char port[16], c[16], nreq[24], *argv[64], *out = NULL;
	unsigned a = 0;
	double r0, r1, t0;
	int ret;

	snprintf(port, sizeof(port), "%d", e->port);
	snprintf(c, sizeof(c), "%u", conns);
	snprintf(nreq, sizeof(nreq), "%lu", n);
	argv[a++] = e->rb_bin;
	argv[a++] = "-h";
	argv[a++] = "127.0.0.1";
	argv[a++] = "-p";
	argv[a++] = port;
	argv[a++] = "-c";
	argv[a++] = c;
	argv[a++] = "-n";
	argv[a++] = nreq;
	argv[a++] = "-r";
	argv[a++] = "2000000000";
	argv[a++] = "--csv";
	for (; *cmd && a < 63; cmd++)
		argv[a++] = *cmd;
	argv[a] = NULL;
	r0 = ctlenv_cpu_s(e->redis_pid);
	t0 = bench_now();
	ret = ctlenv_run(e, argv, timeout, "redis-benchmark.log", &out);
	r1 = ctlenv_cpu_s(e->redis_pid);
	if (ret || !cb_rb_parse(out, res)) {
		snprintf(why, cap, "redis-benchmark: %s", ret < 0 ? strerror(-ret)
			 : ret ? "exit status not 0" : "no result line in its --csv output");
		free(out);
		return ret < 0 ? ret : -EPROTO;
	}
	free(out);
	res->requests = n;
	res->redis_cpu = (r1 - r0) / (bench_now() - t0);
	return 0;
}

/* A short run finds the rate, then a run of about --seconds measures it. */
static int cb_rb(struct ctlenv *e, enum ctl_script_id id, char **cmd,
		 const struct cb_opts *o, unsigned long max_n, struct cb_rb_res *res, char *why,
		 size_t cap)
{
	unsigned long n;
	int ret;

	memset(res, 0, sizeof(*res));
	ret = cb_script_sha(e, id, res);
	if (ret) {
		snprintf(why, cap, "cannot find or load script %s", ctl_scripts[id].name);
		return ret;
	}
	/* cmd[1] is the SHA placeholder: the caller left it for us. */
	cmd[1] = res->sha;
	ret = cb_rb_once(e, o->conns, CB_RB_CALIBRATE, cmd, 30, res, why, cap);
	if (ret)
		return ret;
	n = (unsigned long)(res->rps * o->seconds);
	if (n < CB_RB_CALIBRATE)
		n = CB_RB_CALIBRATE;
	if (n > max_n)
		n = max_n;
	return cb_rb_once(e, o->conns, n, cmd, 4.0 * o->seconds + 30, res, why, cap);
}

/* ---- set-up: two organizations and their keys ---- */

static int cb_org_add(struct ctlenv *e, const char *name, const uint8_t provider[TG_ID_LEN],
		      struct cb_org *org, char *why, size_t cap)
{
	char seats[16];
	const char *args[] = { "org", "add", name, "--seats", seats, "--quota", "1P", NULL };
	uint8_t salt[TG_SALT_LEN];
	json_t *res = NULL, *r;
	const char *key, *guid;
	int ret;

	snprintf(seats, sizeof(seats), "%d", CB_SEATS);
	ret = ctlenv_ctl(e, args, &res, why, cap);
	if (ret)
		return ret;
	r = json_is_object(json_object_get(res, "result")) ? json_object_get(res, "result") : res;
	key = json_string_value(json_object_get(r, "registration_key"));
	guid = json_string_value(json_object_get(r, "guid"));
	if (!key || !guid || tg_regkey_parse(key, &org->key) ||
	    tg_regkey_salt(provider, org->key.key_id, salt) ||
	    tg_regkey_verifier(salt, org->key.secret, TG_REGKEY_SECRET_LEN, org->v)) {
		snprintf(why, cap, "org add %s: no registration key and GUID in the reply", name);
		json_decref(res);
		return -EPROTO;
	}
	snprintf(org->name, sizeof(org->name), "%s", name);
	snprintf(org->guid, sizeof(org->guid), "%s", guid);
	cb_hex(org->key.key_id, TG_KEYID_LEN, org->key_id_hex);
	json_decref(res);
	return 0;
}

static int cb_provider(struct ctlenv *e, uint8_t out[TG_ID_LEN], char *why, size_t cap)
{
	struct tg_link *l;
	const char *g;
	int err;

	l = tg_link_connect(e->gateway_sock, "bench-hello", &err);
	if (!l) {
		snprintf(why, cap, "gateway link: %s", strerror(-err));
		return err;
	}
	g = json_string_value(json_object_get(tg_link_hello(l), "provider_guid"));
	err = g && tg_id_from_hex(g, out) == 0 ? 0 : -EPROTO;
	if (err)
		snprintf(why, cap, "hello without a provider_guid");
	tg_link_close(l);
	return err;
}

static long long cb_hget_ll(struct ctlenv *e, const char *key, const char *field)
{
	redisReply *r = redisCommand(e->rc, "HGET %s %s", key, field);
	long long v = -1;

	if (r && r->type == REDIS_REPLY_STRING)
		v = strtoll(r->str, NULL, 10);
	if (r)
		freeReplyObject(r);
	return v;
}

/* ---- the run ---- */

static int cb_measure(struct ctlenv *e, const struct cb_opts *o, struct cb_report *rep,
		      char *why, size_t cap)
{
	static struct cb_run run = {   /* big (per-worker state): not on the stack */
		.lock = PTHREAD_MUTEX_INITIALIZER,
		.cond = PTHREAD_COND_INITIALIZER,
	};
	struct cb_org a = { 0 }, b = { 0 };
	char k_org[64], k_exp[80], k_amt[80], k_devs[80], k_dev[80], dev_id[40], nonces[80],
	     cred[80], gw_key[40];
	int ret;

	if ((ret = cb_provider(e, run.provider, why, cap)) ||
	    (ret = cb_org_add(e, "bench-link", run.provider, &a, why, cap)) ||
	    (ret = cb_org_add(e, "bench-redis", run.provider, &b, why, cap)))
		return ret;
	tg_id_to_hex(run.provider, run.provider_hex);

	fprintf(stderr, "seat admissions through the link, %u s...\n", o->seconds);
	run.op = CB_REGISTER;
	run.org = &a;
	if ((ret = cb_link_phase(e, &run, o, &rep->reg, why, cap)))
		return ret;
	snprintf(k_org, sizeof(k_org), "tg:org:%s", a.guid);
	rep->seats_after = cb_hget_ll(e, k_org, "seats_used");

	fprintf(stderr, "lease grants through the link, %u s...\n", o->seconds);
	run.op = CB_LEASE;
	if ((ret = cb_link_phase(e, &run, o, &rep->lease, why, cap)))
		return ret;
	rep->reserved_after = cb_hget_ll(e, k_org, "reserved_bytes");

	/* register: the keys and argument shapes of model_link.c, for org b
	 * (its seats untouched by the link phase); __rand_int__ is 12 digits,
	 * padded here to the 32 hex digits of a device id. */
	snprintf(k_org, sizeof(k_org), "tg:org:%s", b.guid);
	snprintf(k_devs, sizeof(k_devs), "tg:org:%s:devices", b.guid);
	snprintf(k_dev, sizeof(k_dev), "tg:dev:00000000000000000000__rand_int__");
	snprintf(dev_id, sizeof(dev_id), "00000000000000000000__rand_int__");
	memset(nonces, 'a', 64);
	nonces[64] = '\0';
	memset(cred, 'c', 64);
	cred[64] = '\0';
	fprintf(stderr, "redis-benchmark: register, reg_lookup, lease scripts...\n");
	{
		char *cmd[] = { "EVALSHA", NULL, "4", "tg:keyid", k_org, k_devs, k_dev, b.guid,
				b.key_id_hex, "rb-__rand_int__", "0", nonces, dev_id, cred, NULL };

		if ((ret = cb_rb(e, CTL_S_REGISTER, cmd, o, CB_RB_MAX, &rep->rb_reg, why, cap)))
			return ret;
		rep->rb_reg_calls = CB_RB_CALIBRATE + rep->rb_reg.requests;
		rep->rb_seats = cb_hget_ll(e, k_org, "seats_used");
	}
	{
		char *cmd[] = { "EVALSHA", NULL, "3", "tg:rl:" CB_PEER ":lock", "tg:provider",
				"tg:keyid", b.key_id_hex, NULL };

		if ((ret = cb_rb(e, CTL_S_REG_LOOKUP, cmd, o, 10 * CB_RB_MAX, &rep->rb_lookup, why,
				 cap)))
			return ret;
	}
	rep->chain = 1.0 / (1.0 / rep->rb_reg.rps + 1.0 / rep->rb_lookup.rps);
	/* lease: org a, as the link phase asked, one gateway. */
	snprintf(k_org, sizeof(k_org), "tg:org:%s", a.guid);
	snprintf(k_exp, sizeof(k_exp), "tg:org:%s:lease_exp", a.guid);
	snprintf(k_amt, sizeof(k_amt), "tg:org:%s:lease_amt", a.guid);
	snprintf(gw_key, sizeof(gw_key), "tg:gw:bench-rb");
	{
		char bytes[24], ttl[16];
		char *cmd[] = { "EVALSHA", NULL, "5", k_org, k_exp, k_amt, "tg:leases", gw_key,
				a.guid, "bench-rb", bytes, ttl, bytes, NULL };

		snprintf(bytes, sizeof(bytes), "%llu", CB_LEASE_BYTES);
		snprintf(ttl, sizeof(ttl), "%u", 600000u);
		if ((ret = cb_rb(e, CTL_S_LEASE, cmd, o, 10 * CB_RB_MAX, &rep->rb_lease, why, cap)))
			return ret;
		rep->rb_lease_calls = CB_RB_CALIBRATE + rep->rb_lease.requests;
		rep->rb_reserved = cb_hget_ll(e, k_org, "reserved_bytes") - rep->reserved_after;
	}
	return 0;
}

static void cb_usage(FILE *f)
{
	fprintf(f,
"Usage: tidegate-bench control [--seconds N] [--conns K] [--json FILE]\n"
"                              [--control PATH] [--ctl PATH]\n"
"\n"
"Seat admissions/s and lease grants/s through tidegate-control's gateway link,\n"
"beside redis-benchmark running the same Lua scripts (EVALSHA) on the same\n"
"redis-server, and the ratio (target >= 50 %%).\n"
"\n"
"Starts its own redis-server on a free loopback port (temporary directory, no\n"
"persistence) and tidegate-control, creates two organizations with\n"
"tidegate-ctl, measures, and removes everything it started.\n"
"\n"
"  --seconds N     length of each measured phase (default 5, at most 60)\n"
"  --conns K       concurrent gateway links, one thread each, and\n"
"                  redis-benchmark clients (default 4)\n"
"  --json FILE     also write the results as JSON to FILE ('-': stdout)\n"
"  --control PATH  tidegate-control to run (default: next to tidegate-bench)\n"
"  --ctl PATH      tidegate-ctl to run (default: next to tidegate-bench)\n"
"  -h, --help      this help\n"
"\n"
"Needs redis-server and redis-benchmark on PATH. TG_BENCH_KEEP=1 keeps the\n"
"temporary directory (logs) for a look afterwards.\n");
}

static int cb_parse(int argc, char **argv, struct cb_opts *o)
{
	static const struct option lo[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "conns", required_argument, NULL, 'k' },
		{ "json", required_argument, NULL, 'j' },
		{ "control", required_argument, NULL, 'c' },
		{ "ctl", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	int opt;

	*o = (struct cb_opts){ .seconds = 5, .conns = 4 };
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 's':
			if (!bench_parse_uint("--seconds", optarg, 1, 60, &v))
				return 2;
			o->seconds = (unsigned)v;
			break;
		case 'k':
			if (!bench_parse_uint("--conns", optarg, 1, CB_CONNS_MAX, &v))
				return 2;
			o->conns = (unsigned)v;
			break;
		case 'j':
			o->json = optarg;
			break;
		case 'c':
			o->control = optarg;
			break;
		case 't':
			o->ctl = optarg;
			break;
		case 'h':
			cb_usage(stdout);
			return 0;
		default:
			cb_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tidegate-bench control: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	return -1;
}

int bench_control_main(int argc, char **argv)
{
	static struct cb_report rep;
	struct ctlenv e;
	struct cb_opts o;
	char why[1024] = "";
	double load_before = bench_load1();
	int ret;

	ret = cb_parse(argc, argv, &o);
	if (ret >= 0)
		return ret;
	ret = ctlenv_find(&e, o.control, o.ctl, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "tidegate-bench control: %s\n", why);
		return 2;
	}
	fprintf(stderr, "starting redis-server and %s...\n", e.control_bin);
	ret = ctlenv_start(&e, why, sizeof(why));
	if (!ret)
		ret = cb_measure(&e, &o, &rep, why, sizeof(why));
	ctlenv_stop(&e);
	if (ret) {
		fprintf(stderr, "tidegate-bench control: %s\n",
			ctlenv_stop_flag ? "interrupted" : why);
		return 1;
	}
	cb_print(&rep, &o, load_before);
	if (o.json) {
		json_t *j = cb_json(&rep, &o);

		json_object_set_new(j, "load1_before", json_real(load_before));

		ret = bench_json_write(j, o.json);
		json_decref(j);
		if (ret) {
			fprintf(stderr, "tidegate-bench: writing %s: %s\n", o.json, strerror(-ret));
			return 1;
		}
	}
	return cb_checks_ok(&rep) ? 0 : 1;
}
