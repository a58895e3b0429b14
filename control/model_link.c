/*
 * model_link.c - the gateway link's ops (docs/control.md "Gateway link"):
 * registration and session authentication, quota leases, commits, policy,
 * backup records and restore authorization.
 *
 * Registration and auth are the two places a device proves a secret, so
 * they run in this order, each step a script or plain computation:
 *   1. lookup script: a source that is locked out gets rate_limited before
 *      anything else happens (its proof is not even checked); otherwise the
 *      verifier V (or the credential) comes back;
 *   2. the proof is recomputed here (tg_crypto.h) and compared in constant
 *      time; a wrong one is counted against the source (rl_fail script) and
 *      answered bad_key, revealing nothing about the organization;
 *   3. only then does the organization's state matter: seats, deactivation,
 *      relay permission (the register script admits the seat atomically).
 * The credential leaves this process only sealed for the device
 * (AES-256-GCM under a key derived from V and both nonces).
 *
 * Every op answers with the numeric wire code of enum tg_err (model.c maps
 * the scripts' codes), so a gateway forwards it to the device unchanged.
 * Everything a later callback needs is copied into the request (r->priv,
 * wiped on free): the request's JSON arguments are only borrowed.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <openssl/crypto.h>

#include "model.h"
#include "tg_crypto.h"
#include "tg_proto.h"
#include "tg_regkey.h"
#include "tg_types.h"

#define PEER_MAX 64
#define SEQ_MAX  ((1ll << 53) - 1)  /* exact in the scripts' Lua numbers */
#define LEASE_TTL_DEFAULT_MS 30000u

/* ---- argument readers: each fails the request (BAD_REQUEST) itself ---- */

static bool arg_hex(struct ctl_req *r, json_t *args, const char *key, void *out, size_t len)
{
	json_t *v = json_object_get(args, key);

	if (!json_is_string(v) || ctl_unhex(json_string_value(v), out, len)) {
		ctl_req_fail(r, "bad_request", key, "%s must be %zu bytes of hex", key, len);
		return false;
	}
	return true;
}

static bool arg_uint(struct ctl_req *r, json_t *args, const char *key, long long max,
		     bool required, long long *out)
{
	json_t *v = json_object_get(args, key);

	if (!v && !required) {
		*out = 0;
		return true;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max) {
		ctl_req_fail(r, "bad_request", key, "%s must be an integer from 0 to %lld", key, max);
		return false;
	}
	*out = json_integer_value(v);
	return true;
}

/* An organization on the link: its GUID, dashed or as 32 hex digits. */
static bool arg_org(struct ctl_req *r, json_t *args, char out[CTL_GUID_STR_LEN + 1])
{
	json_t *v = json_object_get(args, "org");
	uint8_t id[16];
	char hx[33];

	if (!json_is_string(v) || strlen(json_string_value(v)) > CTL_GUID_STR_LEN ||
	    tg_id_from_hex(json_string_value(v), id)) {
		ctl_req_fail(r, "bad_request", "org", "org must be an organization GUID");
		return false;
	}
	tg_id_to_hex(id, hx);
	snprintf(out, CTL_GUID_STR_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hx, hx + 8, hx + 12,
		 hx + 16, hx + 20);
	return true;
}

/* Device and backup names: 1..64 (or 0..64) bytes, no control bytes
 * (docs/protocol.md "name bytes"). */
static bool arg_name(struct ctl_req *r, json_t *args, const char *key, size_t min,
		     char out[TG_NAME_MAX + 1])
{
	json_t *v = json_object_get(args, key);
	size_t n;

	if (!v && min == 0) {
		out[0] = '\0';
		return true;
	}
	n = json_is_string(v) ? json_string_length(v) : 0;
	if (!json_is_string(v) || n < min || n > TG_NAME_MAX)
		goto bad;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)json_string_value(v)[i];

		if (c < 0x20 || c == 0x7f)
			goto bad;
	}
	memcpy(out, json_string_value(v), n);
	out[n] = '\0';
	return true;
bad:
	ctl_req_fail(r, "bad_request", key, "%s must be %zu..%u name bytes", key, min, TG_NAME_MAX);
	return false;
}

/*
 * The rate-limit key's source: the device's address without its port, so
 * that changing ports does not reset the count ("1.2.3.4:5" -> "1.2.3.4",
 * "[fe80::1%eth0]:5" -> "fe80::1%eth0"). It becomes part of a Redis key,
 * so only address characters pass.
 */
static bool arg_peer(struct ctl_req *r, json_t *args, char out[PEER_MAX + 1])
{
	json_t *v = json_object_get(args, "peer");
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;
	const char *colon;
	size_t n;

	if (!s)
		goto bad;
	if (*s == '[') {
		const char *end = strchr(s, ']');

		if (!end)
			goto bad;
		s++;
		n = (size_t)(end - s);
	} else if ((colon = strchr(s, ':')) && !strchr(colon + 1, ':')) {
		n = (size_t)(colon - s);
	} else {
		n = strlen(s);
	}
	if (n == 0 || n > PEER_MAX)
		goto bad;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr(".:%_-", s[i]))
			goto bad;
	memcpy(out, s, n);
	out[n] = '\0';
	return true;
bad:
	ctl_req_fail(r, "bad_request", "peer", "peer must be the device's address");
	return false;
}

static uint32_t lease_ttl(const struct ctl_req *r)
{
	const struct ctl_cfg *cfg = ctl_model_cfg(r->m);

	return cfg->lease_ttl_ms ? cfg->lease_ttl_ms : LEASE_TTL_DEFAULT_MS;
}

/* Count one failed proof against src, then answer bad_key. */
static void rl_fail_done(struct ctl_req *r, const redisReply *rep)
{
	long long n = ctl_rr_ll(rep, 1, 0), lock = ctl_rr_ll(rep, 2, 0);
	const char *why = json_string_value(json_object_get(r->ctx, "why"));

	if (lock > 0)
		ctl_log(LOG_WARNING, "rate limit: %lld failed proofs from %s; locked out for %lld s",
			n, json_string_value(json_object_get(r->ctx, "src")), lock);
	ctl_req_fail(r, "bad_key", NULL, "%s", why ? why : "wrong proof");
}

static void rl_fail(struct ctl_req *r, const char *src, const char *why)
{
	json_decref(r->ctx);
	r->ctx = json_pack("{s:s, s:s}", "why", why, "src", src);
	ctl_req_argf(r, "tg:rl:%s", src);
	ctl_req_argf(r, "tg:rl:%s:lock", src);
	ctl_req_args(r, "tg:provider");
	ctl_req_argf(r, "%d", CTL_RL_WINDOW_S);
	ctl_req_argf(r, "%d", CTL_RL_THRESHOLD);
	ctl_req_argf(r, "%d", CTL_RL_CAP_S);
	ctl_req_script(r, CTL_S_RL_FAIL, 3, rl_fail_done);
}

/* ---- hello ---- */

static void hello_reply(struct ctl_req *r, const char *commit_seq)
{
	const struct ctl_cfg *cfg = ctl_model_cfg(r->m);
	json_t *o = json_pack("{s:s, s:s, s:I, s:I}", "op", "hello", "provider_guid",
			      ctl_model_provider_guid(r->m), "lease_ttl_ms",
			      (json_int_t)lease_ttl(r), "lease_bytes", (json_int_t)cfg->lease_bytes);

	if (commit_seq)
		json_object_set_new(o, "commit_seq", json_integer(strtoll(commit_seq, NULL, 10)));
	ctl_req_link_ok(r, o);
}

static void hello_done(struct ctl_req *r, const redisReply *rep)
{
	hello_reply(r, ctl_rr_str(rep, 1));
}

/*
 * Not a table op of docs/control.md but its answer: the daemon may route
 * a gateway's hello here. The reply adds "commit_seq", the last commit this
 * gateway had applied, so a restarted gateway can continue its sequence
 * above it (exactly-once across restarts). Without Redis it still answers,
 * without commit_seq, as long as the provider GUID is known.
 */
void ctl_link_hello(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	long long pid = 0;
	json_t *v = json_object_get(args, "pid");

	if (!ctl_model_provider_guid(r->m)[0]) {
		ctl_req_fail(r, "unavailable", NULL, "the control plane has not reached Redis yet");
		return;
	}
	if (json_is_integer(v))
		pid = json_integer_value(v);
	if (!ctl_model_redis_up(r->m)) {
		hello_reply(r, NULL);
		return;
	}
	ctl_req_argf(r, "tg:gw:%s", r->gateway);
	ctl_req_argf(r, "%lld", pid);
	ctl_req_script(r, CTL_S_GW_HELLO, 1, hello_done);
}

/* ---- register ---- */

struct reg_state {
	struct tg_reg_proof p;        /* p.name points at name below */
	char name[TG_NAME_MAX + 1];
	char src[PEER_MAX + 1];
	char keyid[2 * TG_KEYID_LEN + 1];
	char org[CTL_GUID_STR_LEN + 1];
	uint8_t v[32];
	uint8_t cred[TG_CRED_LEN];
	uint8_t dev[TG_ID_LEN];
};

static void register_done(struct ctl_req *r, const redisReply *rep)
{
	struct reg_state *s = r->priv;
	const char *dev = ctl_rr_str(rep, 1), *cred = ctl_rr_str(rep, 2);
	const char *policy = ctl_rr_str(rep, 3);
	uint8_t key[32], aad[2 * TG_ID_LEN], ct[TG_CRED_LEN], tag[16];
	char ct_hex[2 * TG_CRED_LEN + 1], tag_hex[33], dev_hex[33];
	json_t *o;
	int ret;

	if (!dev || !cred || ctl_unhex(dev, s->dev, TG_ID_LEN) ||
	    ctl_unhex(cred, s->cred, TG_CRED_LEN) || tg_id_from_hex(s->org, aad)) {
		ctl_req_fail(r, "internal", NULL, "malformed device record");
		return;
	}
	memcpy(aad + TG_ID_LEN, s->dev, TG_ID_LEN);
	ret = tg_reg_wrap_key(s->v, s->p.client_nonce, s->p.server_nonce, key);
	if (!ret)
		ret = tg_aead_seal(key, s->p.server_nonce, aad, sizeof(aad), s->cred, TG_CRED_LEN,
				   ct, tag);
	OPENSSL_cleanse(key, sizeof(key));
	if (ret) {
		ctl_req_fail(r, "internal", NULL, "could not seal the credential");
		return;
	}
	ctl_hex(ct, sizeof(ct), ct_hex);
	ctl_hex(tag, sizeof(tag), tag_hex);
	ctl_hex(s->dev, TG_ID_LEN, dev_hex);
	if (ctl_rr_ll(rep, 4, 0))
		ctl_log(LOG_NOTICE, "register: device '%s' (%s) joined organization %s%s", s->name,
			dev_hex, s->org, s->p.flags & TG_RF_RELAY ? " through its relay" : "");
	o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "org", s->org, "device_id", dev_hex,
		      "wrapped_cred", ct_hex, "wrap_tag", tag_hex, "policy", policy ? policy : "");
	ctl_req_link_ok(r, o);
}

static void reg_lookup_done(struct ctl_req *r, const redisReply *rep)
{
	struct reg_state *s = r->priv;
	const char *org = ctl_rr_str(rep, 1);
	uint8_t want[TG_PROOF_LEN], nonces[2 * TG_NONCE_LEN];
	char nonce_hex[4 * TG_NONCE_LEN + 1], dev_hex[33], cred_hex[2 * TG_CRED_LEN + 1];
	bool good;

	if (!ctl_guid_norm(org, s->org) || ctl_unhex(ctl_rr_str(rep, 2), s->v, sizeof(s->v)) ||
	    tg_reg_proof(s->v, &s->p, want)) {
		ctl_req_fail(r, "internal", NULL, "malformed key record");
		return;
	}
	good = tg_ct_eq(want, s->p.proof, TG_PROOF_LEN);
	OPENSSL_cleanse(want, sizeof(want));
	if (!good) {
		ctl_log(LOG_INFO, "register: wrong registration key proof from %s", s->src);
		rl_fail(r, s->src, "the registration key is wrong");
		return;
	}
	if (tg_random(s->dev, sizeof(s->dev)) || tg_random(s->cred, sizeof(s->cred))) {
		ctl_req_fail(r, "internal", NULL, "no randomness");
		return;
	}
	memcpy(nonces, s->p.client_nonce, TG_NONCE_LEN);
	memcpy(nonces + TG_NONCE_LEN, s->p.server_nonce, TG_NONCE_LEN);
	ctl_hex(nonces, sizeof(nonces), nonce_hex);
	ctl_hex(s->dev, sizeof(s->dev), dev_hex);
	ctl_hex(s->cred, sizeof(s->cred), cred_hex);
	ctl_req_args(r, "tg:keyid");
	ctl_req_argf(r, "tg:org:%s", s->org);
	ctl_req_argf(r, "tg:org:%s:devices", s->org);
	ctl_req_argf(r, "tg:dev:%s", dev_hex);
	ctl_req_args(r, s->org);
	ctl_req_args(r, s->keyid);
	ctl_req_args(r, s->name);
	ctl_req_args(r, s->p.flags & TG_RF_RELAY ? "1" : "0");
	ctl_req_args(r, nonce_hex);
	ctl_req_args(r, dev_hex);
	ctl_req_args(r, cred_hex);
	OPENSSL_cleanse(cred_hex, sizeof(cred_hex));
	ctl_req_script(r, CTL_S_REGISTER, 4, register_done);
}

void ctl_link_register(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	struct reg_state *s = calloc(1, sizeof(*s));
	uint8_t pid[TG_ID_LEN], mine[TG_ID_LEN];
	json_t *pg = json_object_get(args, "provider_guid");
	long long flags;

	if (!s) {
		ctl_req_fail(r, "internal", NULL, "out of memory");
		return;
	}
	r->priv = s;
	r->priv_len = sizeof(*s);
	if (!json_is_string(pg) || tg_id_from_hex(json_string_value(pg), pid)) {
		ctl_req_fail(r, "bad_request", "provider_guid", "provider_guid must be a GUID");
		return;
	}
	if (!arg_hex(r, args, "key_id", s->p.key_id, TG_KEYID_LEN) ||
	    !arg_hex(r, args, "client_nonce", s->p.client_nonce, TG_NONCE_LEN) ||
	    !arg_hex(r, args, "server_nonce", s->p.server_nonce, TG_NONCE_LEN) ||
	    !arg_hex(r, args, "proof", s->p.proof, TG_PROOF_LEN) ||
	    !arg_uint(r, args, "flags", TG_RF_RELAY, false, &flags) ||
	    !arg_name(r, args, "name", 1, s->name) || !arg_peer(r, args, s->src))
		return;
	if (!ctl_model_provider_id(r->m, mine) || !tg_id_eq(pid, mine)) {
		ctl_req_fail(r, "unknown_org", "provider_guid", "this is not the provider named");
		return;
	}
	memcpy(s->p.provider_guid, pid, TG_ID_LEN);
	s->p.flags = (uint16_t)flags;
	s->p.name = s->name;
	s->p.name_len = (uint16_t)strlen(s->name);
	ctl_hex(s->p.key_id, TG_KEYID_LEN, s->keyid);
	ctl_req_argf(r, "tg:rl:%s:lock", s->src);
	ctl_req_args(r, "tg:provider");
	ctl_req_args(r, "tg:keyid");
	ctl_req_args(r, s->keyid);
	ctl_req_script(r, CTL_S_REG_LOOKUP, 3, reg_lookup_done);
}

/* ---- auth ---- */

struct auth_state {
	struct tg_auth a;
	char src[PEER_MAX + 1];
	uint8_t cred[TG_CRED_LEN];
};

static void auth_lookup_done(struct ctl_req *r, const redisReply *rep)
{
	struct auth_state *s = r->priv;
	const char *org = ctl_rr_str(rep, 1), *relay = ctl_rr_str(rep, 4);
	const char *state = ctl_rr_str(rep, 6);
	uint8_t want[TG_PROOF_LEN], key[TG_KEY_LEN];
	char key_hex[2 * TG_KEY_LEN + 1];
	bool good, is_relay = relay && strcmp(relay, "1") == 0;
	json_t *o;

	if (!org || !state || ctl_unhex(ctl_rr_str(rep, 3), s->cred, TG_CRED_LEN) ||
	    tg_auth_proof(s->cred, &s->a, want)) {
		ctl_req_fail(r, "internal", NULL, "malformed device record");
		return;
	}
	good = tg_ct_eq(want, s->a.proof, TG_PROOF_LEN);
	OPENSSL_cleanse(want, sizeof(want));
	if (!good) {
		ctl_log(LOG_INFO, "auth: wrong credential proof from %s", s->src);
		rl_fail(r, s->src, "the device credential is wrong");
		return;
	}
	if (strcmp(state, "active") != 0) {
		ctl_req_fail(r, "org_deactivated", NULL, "the organization is deactivated");
		return;
	}
	if (!!(s->a.flags & TG_RF_RELAY) != is_relay) {
		ctl_req_fail(r, "bad_request", "flags", "the relay flag differs from registration");
		return;
	}
	if (tg_session_key(s->cred, s->a.client_nonce, s->a.server_nonce, key)) {
		ctl_req_fail(r, "internal", NULL, "could not derive the session key");
		return;
	}
	ctl_hex(key, sizeof(key), key_hex);
	OPENSSL_cleanse(key, sizeof(key));
	o = json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:s}", "org", org, "device_name",
		      ctl_rr_str(rep, 2) ? ctl_rr_str(rep, 2) : "", "role",
		      ctl_rr_str(rep, 5) ? ctl_rr_str(rep, 5) : "user", "relay", is_relay,
		      "session_key", key_hex, "policy",
		      ctl_rr_str(rep, 7) ? ctl_rr_str(rep, 7) : "", "state", state);
	OPENSSL_cleanse(key_hex, sizeof(key_hex));
	ctl_req_link_ok(r, o);
}

void ctl_link_auth(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	struct auth_state *s = calloc(1, sizeof(*s));
	char dev_hex[33];
	long long max_frag, flags;

	if (!s) {
		ctl_req_fail(r, "internal", NULL, "out of memory");
		return;
	}
	r->priv = s;
	r->priv_len = sizeof(*s);
	if (!arg_hex(r, args, "device_id", s->a.device_id, TG_ID_LEN) ||
	    !arg_hex(r, args, "client_nonce", s->a.client_nonce, TG_NONCE_LEN) ||
	    !arg_hex(r, args, "server_nonce", s->a.server_nonce, TG_NONCE_LEN) ||
	    !arg_hex(r, args, "proof", s->a.proof, TG_PROOF_LEN) ||
	    !arg_uint(r, args, "max_frag", 0xffff, true, &max_frag) ||
	    !arg_uint(r, args, "flags", TG_RF_RELAY, false, &flags) || !arg_peer(r, args, s->src))
		return;
	s->a.max_frag = (uint16_t)max_frag;
	s->a.flags = (uint16_t)flags;
	ctl_hex(s->a.device_id, TG_ID_LEN, dev_hex);
	ctl_req_argf(r, "tg:rl:%s:lock", s->src);
	ctl_req_args(r, "tg:provider");
	ctl_req_argf(r, "tg:dev:%s", dev_hex);
	ctl_req_script(r, CTL_S_AUTH_LOOKUP, 3, auth_lookup_done);
}

/* ---- leases and commits ---- */

static void lease_done(struct ctl_req *r, const redisReply *rep)
{
	/* expires_ms is the lease's remaining life, not a date: gateways and
	 * the control plane share no clock (Redis keeps the absolute expiry). */
	ctl_req_link_ok(r, json_pack("{s:O, s:I, s:I}", "org", r->ctx, "granted",
				     (json_int_t)ctl_rr_ll(rep, 1, 0), "expires_ms",
				     (json_int_t)ctl_rr_ll(rep, 2, 0)));
}

static void org_keys(struct ctl_req *r, const char *org)
{
	ctl_req_argf(r, "tg:org:%s", org);
	ctl_req_argf(r, "tg:org:%s:lease_exp", org);
	ctl_req_argf(r, "tg:org:%s:lease_amt", org);
	ctl_req_args(r, "tg:leases");
}

void ctl_link_lease(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	char org[CTL_GUID_STR_LEN + 1];
	long long bytes;

	if (!arg_org(r, args, org) ||
	    !arg_uint(r, args, "bytes", (long long)CTL_BYTES_MAX, true, &bytes))
		return;
	r->ctx = json_string(org);
	org_keys(r, org);
	ctl_req_argf(r, "tg:gw:%s", r->gateway);
	ctl_req_args(r, org);
	ctl_req_args(r, r->gateway);
	ctl_req_argf(r, "%lld", bytes);
	ctl_req_argf(r, "%u", lease_ttl(r));
	ctl_req_argf(r, "%llu", CTL_MIN_GRANT);
	ctl_req_script(r, CTL_S_LEASE, 5, lease_done);
}

static void commit_done(struct ctl_req *r, const redisReply *rep)
{
	ctl_log_alerts(json_string_value(r->ctx), NULL, ctl_rr_str(rep, 2));
	ctl_req_link_ok(r, json_pack("{s:b}", "applied", ctl_rr_ll(rep, 1, 0) != 0));
}

void ctl_link_commit(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	static const char *const counters[] = { "stored_bytes", "logical_bytes", "unique_bytes",
						"chunks", "dup_chunks" };
	const struct ctl_cfg *cfg = ctl_model_cfg(r->m);
	char org[CTL_GUID_STR_LEN + 1];
	long long seq, val[5];

	if (!arg_org(r, args, org))
		return;
	if (!arg_uint(r, args, "commit_seq", SEQ_MAX, true, &seq))
		return;
	if (seq == 0) {
		ctl_req_fail(r, "bad_request", "commit_seq", "commit_seq starts at 1");
		return;
	}
	for (int i = 0; i < 5; i++)
		if (!arg_uint(r, args, counters[i], (long long)CTL_BYTES_MAX, false, &val[i]))
			return;
	r->ctx = json_string(org);
	ctl_req_argf(r, "tg:gw:%s", r->gateway);
	ctl_req_argf(r, "tg:org:%s", org);
	ctl_req_argf(r, "tg:org:%s:lease_exp", org);
	ctl_req_argf(r, "tg:org:%s:lease_amt", org);
	ctl_req_args(r, "tg:leases");
	ctl_req_args(r, org);
	ctl_req_args(r, r->gateway);
	ctl_req_argf(r, "%lld", seq);
	for (int i = 0; i < 5; i++)
		ctl_req_argf(r, "%lld", val[i]);
	for (int i = 0; i < 3; i++)
		ctl_req_argf(r, "%u", cfg->alert_levels[i] ? cfg->alert_levels[i]
							    : (unsigned)(80 + 10 * i));
	ctl_req_script(r, CTL_S_COMMIT, 5, commit_done);
}

static void release_done(struct ctl_req *r, const redisReply *rep)
{
	ctl_req_link_ok(r, NULL);
}

void ctl_link_release(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	char org[CTL_GUID_STR_LEN + 1];
	long long bytes;

	if (!arg_org(r, args, org) ||
	    !arg_uint(r, args, "bytes", (long long)CTL_BYTES_MAX, true, &bytes))
		return;
	org_keys(r, org);
	ctl_req_args(r, org);
	ctl_req_args(r, r->gateway);
	ctl_req_argf(r, "%lld", bytes);
	ctl_req_script(r, CTL_S_RELEASE, 4, release_done);
}

/* ---- policy ---- */

static void policy_done(struct ctl_req *r, const redisReply *rep)
{
	const char *policy = ctl_rr_field(rep, 1, "policy"), *state = ctl_rr_field(rep, 1, "state");

	ctl_req_link_ok(r, json_pack("{s:O, s:s, s:s, s:I, s:I}", "org", r->ctx, "policy",
				     policy ? policy : "", "state", state ? state : "",
				     "restore_limit_user",
				     (json_int_t)ctl_rr_field_ll(rep, 1, "restore_limit_user", 0),
				     "restore_limit_admin",
				     (json_int_t)ctl_rr_field_ll(rep, 1, "restore_limit_admin", 0)));
}

void ctl_link_policy(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	char org[CTL_GUID_STR_LEN + 1];

	if (!arg_org(r, args, org))
		return;
	r->ctx = json_string(org);
	ctl_req_args(r, org);
	ctl_req_script(r, CTL_S_ORG_GET, 0, policy_done);
}

/* ---- backups and restores ---- */

static void backup_record_done(struct ctl_req *r, const redisReply *rep)
{
	ctl_req_link_ok(r, json_pack("{s:I}", "backup_id", (json_int_t)ctl_rr_ll(rep, 1, 0)));
}

void ctl_link_backup_record(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	char org[CTL_GUID_STR_LEN + 1], name[TG_NAME_MAX + 1], dev[33], root[33];
	uint8_t id[TG_ID_LEN];
	long long root_len, nfiles, logical;

	if (!arg_org(r, args, org) || !arg_hex(r, args, "device_id", id, TG_ID_LEN))
		return;
	ctl_hex(id, TG_ID_LEN, dev);
	if (!arg_hex(r, args, "root_id", id, TG_ID_LEN))
		return;
	ctl_hex(id, TG_ID_LEN, root);
	if (!arg_uint(r, args, "root_len", TG_CHUNK_MAX, true, &root_len) ||
	    !arg_uint(r, args, "nfiles", 0xffffffffll, true, &nfiles) ||
	    !arg_uint(r, args, "logical_bytes", SEQ_MAX, true, &logical) ||
	    !arg_name(r, args, "name", 0, name))
		return;
	if (root_len == 0) {
		ctl_req_fail(r, "bad_request", "root_len", "root_len must be at least 1");
		return;
	}
	ctl_req_argf(r, "tg:dev:%s", dev);
	ctl_req_argf(r, "tg:dev:%s:backups", dev);
	ctl_req_args(r, org);
	ctl_req_args(r, dev);
	ctl_req_args(r, root);
	ctl_req_argf(r, "%lld", root_len);
	ctl_req_argf(r, "%lld", nfiles);
	ctl_req_argf(r, "%lld", logical);
	ctl_req_args(r, name);
	ctl_req_script(r, CTL_S_BACKUP_RECORD, 2, backup_record_done);
}

static void restore_done(struct ctl_req *r, const redisReply *rep)
{
	const char *root = ctl_rr_str(rep, 2);

	ctl_req_link_ok(r, json_pack("{s:I, s:s, s:I, s:I, s:I}",
				     "backup_id", (json_int_t)ctl_rr_ll(rep, 1, 0),
				     "root_id", root ? root : "",
				     "root_len", (json_int_t)ctl_rr_ll(rep, 3, 0),
				     "total_bytes", (json_int_t)ctl_rr_ll(rep, 4, 0),
				     "created", (json_int_t)ctl_rr_ll(rep, 5, 0)));
}

void ctl_link_restore_authorize(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	static const uint8_t zero[TG_ID_LEN];
	char org[CTL_GUID_STR_LEN + 1], dev[33], target[33];
	uint8_t id[TG_ID_LEN];
	json_t *admin = json_object_get(args, "admin"), *t = json_object_get(args, "target_device");
	long long bid;

	if (!arg_org(r, args, org) || !arg_hex(r, args, "device_id", id, TG_ID_LEN))
		return;
	ctl_hex(id, TG_ID_LEN, dev);
	memcpy(target, dev, sizeof(target));
	/* No target, null, "" or all zeros (RESTORE_REQ's "this device"): the
	 * requester's own backups. */
	if (t && !json_is_null(t) && !(json_is_string(t) && !*json_string_value(t))) {
		if (!arg_hex(r, args, "target_device", id, TG_ID_LEN))
			return;
		if (memcmp(id, zero, TG_ID_LEN) != 0)
			ctl_hex(id, TG_ID_LEN, target);
	}
	if (!arg_uint(r, args, "backup_id", SEQ_MAX, false, &bid))
		return;
	if (admin && !json_is_boolean(admin)) {
		ctl_req_fail(r, "bad_request", "admin", "admin must be true or false");
		return;
	}
	ctl_req_argf(r, "tg:org:%s", org);
	ctl_req_argf(r, "tg:dev:%s", dev);
	ctl_req_argf(r, "tg:dev:%s", target);
	ctl_req_args(r, org);
	ctl_req_args(r, dev);
	ctl_req_args(r, target);
	ctl_req_argf(r, "%lld", bid);
	ctl_req_args(r, json_is_true(admin) ? "1" : "0");
	ctl_req_script(r, CTL_S_RESTORE_AUTH, 3, restore_done);
}
