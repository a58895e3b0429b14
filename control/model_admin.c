/*
 * model_admin.c - the admin commands of docs/control.md ("Admin socket"):
 * validate every argument, then run one script, then shape its reply.
 *
 * Validation happens entirely before the script is sent, and every field is
 * checked against one table (org_fields[]) so org.add and org.set cannot
 * disagree; a bad value is refused with code bad_value and the field's name,
 * and unknown fields are refused too (a typo must not be silently ignored).
 * Sizes are JSON integers or strings with a binary unit ("500G", "64M");
 * restore limits also take "unlimited" (-1). Values reach the scripts in
 * canonical form (decimal bytes, "0"/"1" for booleans, the canonical policy
 * string), so what Redis holds never depends on how an admin typed it.
 *
 * Registration keys are made here (tg_regkey.h) and shown once: only the
 * key id and the verifier V = HMAC(salt, secret) go to Redis, the secret
 * lives in the request's wiped scratch until the reply is built.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <openssl/crypto.h>

#include "model.h"
#include "tg_chunk.h"
#include "tg_crypto.h"
#include "tg_regkey.h"
#include "tg_types.h"

#define ORG_NAME_MAX   64
#define CONTACT_MAX    128
#define SEATS_MAX      1000000
#define QUOTA_MIN      (1ll << 20)
#define ORG_REF_MAX    64

/* ---- the organization's fields ---- */

enum fkind { F_STR, F_INT, F_BOOL };

enum vkind { V_NAME, V_GUID, V_BOOL, V_CONTACT, V_SEATS, V_QUOTA, V_RLIMIT, V_POLICY };

/* Settable fields, in the order they are stored, with their defaults
 * (NULL: required at org.add; name and guid are passed apart). */
static const struct org_field {
	const char *name;
	enum vkind kind;
	const char *dflt;
} org_fields[] = {
	{ "name", V_NAME, NULL },
	{ "guid", V_GUID, "" },
	{ "hosted", V_BOOL, "0" },
	{ "contact_name", V_CONTACT, "" },
	{ "contact_email", V_CONTACT, "" },
	{ "contact_phone", V_CONTACT, "" },
	{ "max_seats", V_SEATS, NULL },
	{ "quota", V_QUOTA, NULL },
	{ "restore_limit_user", V_RLIMIT, "-1" },
	{ "restore_limit_admin", V_RLIMIT, "-1" },
	{ "policy", V_POLICY, "compress" },
	{ "terms_accepted", V_BOOL, "0" },
};
#define N_ORG_FIELDS (sizeof(org_fields) / sizeof(org_fields[0]))

/* What an org looks like in a reply; key_verifier never leaves Redis. */
static const struct {
	const char *name;
	enum fkind kind;
} org_out[] = {
	{ "guid", F_STR }, { "name", F_STR }, { "state", F_STR }, { "hosted", F_BOOL },
	{ "contact_name", F_STR }, { "contact_email", F_STR }, { "contact_phone", F_STR },
	{ "max_seats", F_INT }, { "quota", F_INT }, { "restore_limit_user", F_INT },
	{ "restore_limit_admin", F_INT }, { "policy", F_STR }, { "terms_accepted", F_BOOL },
	{ "seats_used", F_INT }, { "used_bytes", F_INT }, { "reserved_bytes", F_INT },
	{ "bytes_received", F_INT }, { "bytes_unique", F_INT }, { "bytes_stored", F_INT },
	{ "chunks", F_INT }, { "dup_chunks", F_INT }, { "alert_level", F_INT },
	{ "created", F_INT }, { "key_id", F_STR },
};

static json_t *org_json(const redisReply *h, size_t first)
{
	json_t *o = json_object();

	for (size_t i = 0; o && i < sizeof(org_out) / sizeof(org_out[0]); i++) {
		const char *v = ctl_rr_field(h, first, org_out[i].name);

		switch (org_out[i].kind) {
		case F_STR:
			json_object_set_new(o, org_out[i].name, json_string(v ? v : ""));
			break;
		case F_INT:
			json_object_set_new(o, org_out[i].name,
					    json_integer(ctl_rr_field_ll(h, first, org_out[i].name, 0)));
			break;
		case F_BOOL:
			json_object_set_new(o, org_out[i].name, json_boolean(v && strcmp(v, "1") == 0));
			break;
		}
	}
	return o;
}

/* json_pack refuses NULL strings; a nil from Redis reads as "". */
static const char *S(const char *s)
{
	return s ? s : "";
}

/* ---- value parsers ---- */

/* A byte size: a JSON integer, or a string of digits with an optional
 * K/M/G/T/P (powers of 1024), or "unlimited" (-1) when allowed. 0, -EINVAL
 * for anything else, -ERANGE past 2^60. */
static int ctl_parse_size(const json_t *v, bool allow_unlimited, long long *out)
{
	static const char units[] = "KMGTP";
	const char *s, *u;
	unsigned long long n = 0;
	unsigned shift = 0;
	size_t digits = 0;

	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return -EINVAL;
	s = json_string_value(v);
	if (allow_unlimited && strcasecmp(s, "unlimited") == 0) {
		*out = -1;
		return 0;
	}
	for (; isdigit((unsigned char)*s); s++, digits++) {
		if (digits >= 19)
			return -ERANGE;
		n = n * 10 + (unsigned)(*s - '0');
	}
	if (digits == 0)
		return -EINVAL;
	if (*s) {
		u = strchr(units, toupper((unsigned char)*s));
		if (!u || s[1])
			return -EINVAL;
		shift = 10u * (unsigned)(u - units + 1);
	}
	if (n > (CTL_BYTES_MAX >> shift))
		return -ERANGE;
	*out = (long long)(n << shift);
	return 0;
}

/* JSON integers only: "10" (a string), 1.5 and true are refused. */
static bool int_value(const json_t *v, long long *out)
{
	if (!json_is_integer(v))
		return false;
	*out = json_integer_value(v);
	return true;
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > ORG_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return false;
	return true;
}

/* Printable bytes: no control characters (UTF-8 passes, jansson checked it). */
static bool text_ok(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/*
 * Check one field and write its canonical stored form into out. Fails the
 * request (bad_value naming the field) and returns false on a bad value.
 */
static bool org_field_check(struct ctl_req *r, const struct org_field *f, const json_t *v,
			    char *out, size_t cap)
{
	const char *n = f->name;
	long long x;
	int ret;

	switch (f->kind) {
	case V_NAME:
		if (!json_is_string(v) || !name_ok(json_string_value(v)))
			goto bad_name;
		snprintf(out, cap, "%s", json_string_value(v));
		return true;
	case V_GUID:
		if (!json_is_string(v) || !ctl_guid_norm(json_string_value(v), out))
			goto bad_guid;
		return true;
	case V_BOOL:
		if (!json_is_boolean(v))
			goto bad_bool;
		snprintf(out, cap, "%d", json_is_true(v) ? 1 : 0);
		return true;
	case V_CONTACT:
		if (!json_is_string(v) || json_string_length(v) > CONTACT_MAX ||
		    !text_ok(json_string_value(v), json_string_length(v)))
			goto bad_contact;
		snprintf(out, cap, "%s", json_string_value(v));
		return true;
	case V_SEATS:
		if (!int_value(v, &x) || x < 1 || x > SEATS_MAX)
			goto bad_seats;
		snprintf(out, cap, "%lld", x);
		return true;
	case V_QUOTA:
		ret = ctl_parse_size(v, false, &x);
		if (ret || x < QUOTA_MIN || x > (long long)CTL_BYTES_MAX)
			goto bad_quota;
		snprintf(out, cap, "%lld", x);
		return true;
	case V_RLIMIT:
		ret = ctl_parse_size(v, true, &x);
		if (ret || x < -1 || x > (long long)CTL_BYTES_MAX)
			goto bad_rlimit;
		snprintf(out, cap, "%lld", x);
		return true;
	case V_POLICY: {
		struct tg_policy p;

		if (!json_is_string(v) || tg_policy_parse(json_string_value(v), &p) ||
		    tg_policy_format(&p, out, cap) < 0)
			goto bad_policy;
		return true;
	}
	}
	return false;

bad_name:
	ctl_req_fail(r, "bad_value", n, "%s must be 1..%d characters of A-Z a-z 0-9 . _ -", n,
		     ORG_NAME_MAX);
	return false;
bad_guid:
	ctl_req_fail(r, "bad_value", n,
		     "%s must be a GUID like 0f8fad5b-d9cb-469f-a165-70867728950e", n);
	return false;
bad_bool:
	ctl_req_fail(r, "bad_value", n, "%s must be true or false", n);
	return false;
bad_contact:
	ctl_req_fail(r, "bad_value", n, "%s must be a string of at most %d printable bytes", n,
		     CONTACT_MAX);
	return false;
bad_seats:
	ctl_req_fail(r, "bad_value", n, "%s must be an integer from 1 to %d", n, SEATS_MAX);
	return false;
bad_quota:
	ctl_req_fail(r, "bad_value", n,
		     "%s must be a size from 1M to 1024P (2^60) bytes: an integer, or a "
		     "string such as \"500G\" (units K M G T P, powers of 1024)", n);
	return false;
bad_rlimit:
	ctl_req_fail(r, "bad_value", n,
		     "%s must be 0 (disabled), -1 or \"unlimited\", or a size up to 1024P "
		     "(an integer, or a string such as \"10G\")", n);
	return false;
bad_policy:
	ctl_req_fail(r, "bad_value", n,
		     "%s must be compress, ec:K+M or compress+ec:K+M with 2<=K<=16, 1<=M<=4", n);
	return false;
}

static const struct org_field *org_field_find(const char *name)
{
	for (size_t i = 0; i < N_ORG_FIELDS; i++)
		if (strcmp(org_fields[i].name, name) == 0)
			return &org_fields[i];
	return NULL;
}

/* The "org" argument: a name or a GUID, resolved by the script. */
static const char *org_ref(struct ctl_req *r, json_t *args, const char *key, bool required)
{
	json_t *v = json_object_get(args, key);
	const char *s;

	if (!v) {
		if (required)
			ctl_req_fail(r, "bad_value", key, "%s is required (a name or a GUID)", key);
		return required ? NULL : "";
	}
	s = json_is_string(v) ? json_string_value(v) : NULL;
	if (!s || !*s || strlen(s) > ORG_REF_MAX || !text_ok(s, strlen(s))) {
		ctl_req_fail(r, "bad_value", key, "%s must be an organization name or GUID", key);
		return NULL;
	}
	return s;
}

static void push_org(struct ctl_req *r, const redisReply *h, size_t first)
{
	ctl_model_push_org(r->m, ctl_rr_field(h, first, "guid"), ctl_rr_field(h, first, "state"),
			   ctl_rr_field(h, first, "policy"));
}

static void add_alert_levels(struct ctl_req *r)
{
	const struct ctl_cfg *cfg = ctl_model_cfg(r->m);

	for (int i = 0; i < 3; i++)
		ctl_req_argf(r, "%u", cfg->alert_levels[i] ? cfg->alert_levels[i]
							    : (unsigned)(80 + 10 * i));
}

/* A new registration key: its id and verifier go to ARGV, the shown form
 * to r->priv (wiped when the request is freed). */
static bool new_regkey(struct ctl_req *r)
{
	struct tg_regkey k;
	uint8_t pid[16], salt[TG_SALT_LEN], v[32];
	char idhex[2 * TG_KEYID_LEN + 1], vhex[65];
	bool ok = false;

	if (!ctl_model_provider_id(r->m, pid)) {
		ctl_req_fail(r, "unavailable", NULL, "the provider GUID is not known yet; retry");
		return false;
	}
	r->priv = calloc(1, TG_REGKEY_STR_LEN + 1);
	if (!r->priv)
		goto out;
	r->priv_len = TG_REGKEY_STR_LEN + 1;
	if (tg_regkey_generate(&k) || tg_regkey_salt(pid, k.key_id, salt) ||
	    tg_regkey_verifier(salt, k.secret, sizeof(k.secret), v) ||
	    tg_regkey_format(&k, r->priv, r->priv_len) < 0)
		goto out;
	ctl_hex(k.key_id, TG_KEYID_LEN, idhex);
	ctl_hex(v, sizeof(v), vhex);
	ctl_req_args(r, idhex);
	ctl_req_args(r, vhex);
	ok = true;
out:
	OPENSSL_cleanse(&k, sizeof(k));
	OPENSSL_cleanse(v, sizeof(v));
	OPENSSL_cleanse(vhex, sizeof(vhex));
	if (!ok)
		ctl_req_fail(r, "internal", NULL, "could not make a registration key");
	return ok;
}

/* ---- provider ---- */

static void provider_done(struct ctl_req *r, const redisReply *rep)
{
	json_t *o = json_object();

	ctl_model_provider_update(r->m, rep, 1);
	ctl_model_provider_cached(r->m, o);
	json_object_set_new(o, "redis", json_string("up"));
	ctl_req_reply(r, ctl_reply_ok(o));
}

void ctl_admin_provider_show(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	json_t *o;

	if (ctl_model_redis_up(r->m)) {
		ctl_req_args(r, "tg:provider");
		ctl_req_args(r, ctl_model_provider_guid(r->m));
		ctl_req_script(r, CTL_S_PROVIDER_INIT, 1, provider_done);
		return;
	}
	/* Answered while Redis is down: that is what "redis": "down" is for. */
	o = json_object();
	ctl_model_provider_cached(r->m, o);
	json_object_set_new(o, "redis", json_string("down"));
	ctl_req_reply(r, ctl_reply_ok(o));
}

/* ---- organizations ---- */

static void org_add_done(struct ctl_req *r, const redisReply *rep)
{
	json_t *o = org_json(rep, 1);

	json_object_set_new(o, "registration_key", json_string(r->priv));
	ctl_log(LOG_NOTICE, "org.add: organization %s (%s) created",
		ctl_rr_field(rep, 1, "name"), ctl_rr_field(rep, 1, "guid"));
	ctl_req_reply(r, ctl_reply_ok(o));
}

void ctl_admin_org_add(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	char val[N_ORG_FIELDS][CONTACT_MAX + 1];
	char guid[CTL_GUID_STR_LEN + 1];
	const char *key;
	json_t *v;

	json_object_foreach(args, key, v) {
		const struct org_field *f = org_field_find(key);

		if (strcmp(key, "state") == 0) {
			ctl_req_fail(r, "bad_value", key, "a new organization is active; state "
				     "changes with org.deactivate / org.reactivate");
			return;
		}
		if (!f) {
			ctl_req_fail(r, "bad_value", key, "unknown field '%s'", key);
			return;
		}
	}
	for (size_t i = 0; i < N_ORG_FIELDS; i++) {
		const struct org_field *f = &org_fields[i];

		v = json_object_get(args, f->name);
		if (!v && !f->dflt) {
			ctl_req_fail(r, "bad_value", f->name, "%s is required", f->name);
			return;
		}
		if (v && !org_field_check(r, f, v, val[i], sizeof(val[i])))
			return;
		if (!v)
			snprintf(val[i], sizeof(val[i]), "%s", f->dflt);
	}
	if (val[1][0])
		memcpy(guid, val[1], sizeof(guid));
	else if (ctl_guid_new(guid)) {
		ctl_req_fail(r, "internal", NULL, "could not make a GUID");
		return;
	}
	ctl_req_args(r, "tg:orgs");
	ctl_req_args(r, "tg:orgname");
	ctl_req_args(r, "tg:keyid");
	ctl_req_argf(r, "tg:org:%s", guid);
	ctl_req_args(r, guid);
	ctl_req_args(r, val[0]);
	if (!new_regkey(r))
		return;
	for (size_t i = 2; i < N_ORG_FIELDS; i++) {
		ctl_req_args(r, org_fields[i].name);
		ctl_req_args(r, val[i]);
	}
	ctl_req_script(r, CTL_S_ORG_ADD, 4, org_add_done);
}

static void org_list_done(struct ctl_req *r, const redisReply *rep)
{
	json_t *a = json_array();

	for (size_t i = 1; i < rep->elements; i++)
		json_array_append_new(a, org_json(rep->element[i], 0));
	ctl_req_reply(r, ctl_reply_ok(a));
}

void ctl_admin_org_list(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	ctl_req_args(r, "tg:orgs");
	ctl_req_script(r, CTL_S_ORG_LIST, 1, org_list_done);
}

static void org_show_done(struct ctl_req *r, const redisReply *rep)
{
	ctl_req_reply(r, ctl_reply_ok(org_json(rep, 1)));
}

void ctl_admin_org_show(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", true);

	if (!ref)
		return;
	ctl_req_args(r, ref);
	ctl_req_script(r, CTL_S_ORG_GET, 0, org_show_done);
}

static void org_set_done(struct ctl_req *r, const redisReply *rep)
{
	ctl_log_alerts(ctl_rr_field(rep, 2, "guid"), ctl_rr_field(rep, 2, "name"), ctl_rr_str(rep, 1));
	push_org(r, rep, 2);
	ctl_req_reply(r, ctl_reply_ok(org_json(rep, 2)));
}

void ctl_admin_org_set(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", true), *key;
	char val[CONTACT_MAX + 1];
	json_t *v;

	if (!ref)
		return;
	ctl_req_args(r, "tg:orgname");
	ctl_req_args(r, ref);
	add_alert_levels(r);
	json_object_foreach(args, key, v) {
		const struct org_field *f = org_field_find(key);

		if (strcmp(key, "org") == 0)
			continue;
		if (strcmp(key, "guid") == 0 || strcmp(key, "state") == 0) {
			ctl_req_fail(r, "bad_value", key, "%s cannot be changed with org.set%s", key,
				     strcmp(key, "state") == 0 ? " (use org.deactivate / org.reactivate)"
							       : "");
			return;
		}
		if (!f) {
			ctl_req_fail(r, "bad_value", key, "unknown field '%s'", key);
			return;
		}
		if (!org_field_check(r, f, v, val, sizeof(val)))
			return;
		ctl_req_args(r, key);
		ctl_req_args(r, val);
	}
	ctl_req_script(r, CTL_S_ORG_SET, 1, org_set_done);
}

static void org_state_done(struct ctl_req *r, const redisReply *rep)
{
	if (ctl_rr_ll(rep, 1, 0))
		ctl_log(LOG_NOTICE, "organization %s (%s) is now %s", ctl_rr_field(rep, 2, "name"),
			ctl_rr_field(rep, 2, "guid"), ctl_rr_field(rep, 2, "state"));
	push_org(r, rep, 2);
	ctl_req_reply(r, ctl_reply_ok(org_json(rep, 2)));
}

static void org_state(struct ctl_req *r, json_t *args, const char *state)
{
	const char *ref = org_ref(r, args, "org", true);

	if (!ref)
		return;
	ctl_req_args(r, ref);
	ctl_req_args(r, state);
	ctl_req_script(r, CTL_S_ORG_STATE, 0, org_state_done);
}

void ctl_admin_org_deactivate(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	org_state(r, args, "deactivated");
}

void ctl_admin_org_reactivate(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	org_state(r, args, "active");
}

static void org_delete_done(struct ctl_req *r, const redisReply *rep)
{
	const char *guid = ctl_rr_str(rep, 1);

	ctl_log(LOG_NOTICE, "org.delete: organization %s (%s) deleted", ctl_rr_str(rep, 2), guid);
	ctl_model_push_org(r->m, guid, "deleted", "");
	ctl_req_reply(r, ctl_reply_ok(NULL));
}

void ctl_admin_org_delete(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", true);

	if (!ref)
		return;
	ctl_req_args(r, "tg:orgs");
	ctl_req_args(r, "tg:orgname");
	ctl_req_args(r, "tg:keyid");
	ctl_req_args(r, "tg:leases");
	ctl_req_args(r, ref);
	ctl_req_script(r, CTL_S_ORG_DELETE, 4, org_delete_done);
}

static void key_rotate_done(struct ctl_req *r, const redisReply *rep)
{
	struct tg_regkey k;
	char idhex[2 * TG_KEYID_LEN + 1] = "";
	json_t *o;

	if (tg_regkey_parse(r->priv, &k) == 0)
		ctl_hex(k.key_id, TG_KEYID_LEN, idhex);
	OPENSSL_cleanse(&k, sizeof(k));
	o = json_pack("{s:s, s:s}", "registration_key", (const char *)r->priv, "key_id", idhex);
	ctl_log(LOG_NOTICE, "key.rotate: organization %s (%s) has a new registration key",
		ctl_rr_str(rep, 2), ctl_rr_str(rep, 1));
	ctl_model_push_org(r->m, ctl_rr_str(rep, 1), ctl_rr_str(rep, 3), ctl_rr_str(rep, 4));
	ctl_req_reply(r, ctl_reply_ok(o));
}

void ctl_admin_key_rotate(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", true);

	if (!ref)
		return;
	ctl_req_args(r, "tg:keyid");
	ctl_req_args(r, ref);
	if (!new_regkey(r))
		return;
	ctl_req_script(r, CTL_S_KEY_ROTATE, 1, key_rotate_done);
}

/* ---- devices ---- */

static json_t *device_json(const redisReply *d, size_t first)
{
	const char *relay = ctl_rr_str(d, first + 2), *role = ctl_rr_str(d, first + 3);

	return json_pack("{s:s, s:s, s:b, s:s, s:I}", "id", S(ctl_rr_str(d, first)),
			 "name", S(ctl_rr_str(d, first + 1)), "relay",
			 relay && strcmp(relay, "1") == 0, "role", role ? role : "user",
			 "created", (json_int_t)ctl_rr_ll(d, first + 4, 0));
}

static void device_list_done(struct ctl_req *r, const redisReply *rep)
{
	json_t *a = json_array();

	for (size_t i = 2; i < rep->elements; i++)
		json_array_append_new(a, device_json(rep->element[i], 0));
	ctl_req_reply(r, ctl_reply_ok(a));
}

void ctl_admin_device_list(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", true);

	if (!ref)
		return;
	ctl_req_args(r, ref);
	ctl_req_script(r, CTL_S_DEVICE_LIST, 0, device_list_done);
}

static const char *device_ref(struct ctl_req *r, json_t *args)
{
	json_t *v = json_object_get(args, "device");
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;

	if (!s || !*s || strlen(s) > TG_NAME_MAX || !text_ok(s, strlen(s))) {
		ctl_req_fail(r, "bad_value", "device", "device must be a device name or id");
		return NULL;
	}
	return s;
}

static void device_release_done(struct ctl_req *r, const redisReply *rep)
{
	ctl_log(LOG_NOTICE, "device.release: device %s (%s) of %s released; seat freed",
		ctl_rr_str(rep, 3), ctl_rr_str(rep, 2), ctl_rr_str(rep, 1));
	/* An org_update lets a gateway that caches credentials forget this
	 * device's at once (the "device" member says which one). */
	ctl_model_push_org_dev(r->m, ctl_rr_str(rep, 1), ctl_rr_str(rep, 4), ctl_rr_str(rep, 5),
			       ctl_rr_str(rep, 2));
	ctl_req_reply(r, ctl_reply_ok(NULL));
}

void ctl_admin_device_release(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", true), *dev;

	if (!ref || !(dev = device_ref(r, args)))
		return;
	ctl_req_args(r, ref);
	ctl_req_args(r, dev);
	ctl_req_script(r, CTL_S_DEVICE_RELEASE, 0, device_release_done);
}

static void device_set_done(struct ctl_req *r, const redisReply *rep)
{
	ctl_req_reply(r, ctl_reply_ok(device_json(rep, 2)));
}

void ctl_admin_device_set(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", true), *dev, *role;
	json_t *v;

	if (!ref || !(dev = device_ref(r, args)))
		return;
	v = json_object_get(args, "role");
	role = json_is_string(v) ? json_string_value(v) : "";
	if (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0) {
		ctl_req_fail(r, "bad_value", "role", "role must be \"user\" or \"admin\"");
		return;
	}
	ctl_req_args(r, ref);
	ctl_req_args(r, dev);
	ctl_req_args(r, role);
	ctl_req_script(r, CTL_S_DEVICE_SET, 0, device_set_done);
}

/* ---- usage, billing, alerts ---- */

static double ratio(long long num, long long den)
{
	double x = den > 0 ? (double)num / (double)den : 1.0;

	return (double)(long long)(x * 10000.0 + 0.5) / 10000.0;
}

/* One usage row from {guid, name, seats_used, max_seats, bytes_received,
 * bytes_unique, bytes_stored, quota, used_bytes}. */
static json_t *usage_row(const redisReply *u)
{
	long long recv = ctl_rr_ll(u, 4, 0), uniq = ctl_rr_ll(u, 5, 0);
	long long stored = ctl_rr_ll(u, 6, 0), quota = ctl_rr_ll(u, 7, 0);
	long long used = ctl_rr_ll(u, 8, 0);

	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f}",
			 "org", S(ctl_rr_str(u, 0)), "name", S(ctl_rr_str(u, 1)),
			 "seats_used", (json_int_t)ctl_rr_ll(u, 2, 0),
			 "max_seats", (json_int_t)ctl_rr_ll(u, 3, 0),
			 "bytes_received", (json_int_t)recv, "bytes_stored", (json_int_t)stored,
			 "quota", (json_int_t)quota, "quota_fill", quota > 0 ? ratio(used, quota) : 0.0,
			 "dedup_ratio", ratio(recv, uniq), "compression_ratio", ratio(uniq, stored));
}

static json_t *usage_rows(const redisReply *rep)
{
	json_t *a = json_array();

	for (size_t i = 1; i < rep->elements; i++)
		json_array_append_new(a, usage_row(rep->element[i]));
	return a;
}

static void usage_done(struct ctl_req *r, const redisReply *rep)
{
	ctl_req_reply(r, ctl_reply_ok(usage_rows(rep)));
}

void ctl_admin_usage(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", false);

	if (!ref)
		return;
	ctl_req_args(r, "tg:orgs");
	ctl_req_args(r, ref);
	ctl_req_script(r, CTL_S_USAGE, 1, usage_done);
}

static char *usage_csv(const json_t *rows)
{
	static const char hdr[] = "org,name,seats_used,max_seats,bytes_received,bytes_stored,"
				  "quota,quota_fill,dedup_ratio,compression_ratio\n";
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	size_t i;
	json_t *row;

	if (!f)
		return NULL;
	fputs(hdr, f);
	/* Names are [A-Za-z0-9._-] and GUIDs hex: no field needs quoting. */
	json_array_foreach(rows, i, row) {
		fprintf(f, "%s,%s,%lld,%lld,%lld,%lld,%lld,%.4f,%.4f,%.4f\n",
			json_string_value(json_object_get(row, "org")),
			json_string_value(json_object_get(row, "name")),
			(long long)json_integer_value(json_object_get(row, "seats_used")),
			(long long)json_integer_value(json_object_get(row, "max_seats")),
			(long long)json_integer_value(json_object_get(row, "bytes_received")),
			(long long)json_integer_value(json_object_get(row, "bytes_stored")),
			(long long)json_integer_value(json_object_get(row, "quota")),
			json_real_value(json_object_get(row, "quota_fill")),
			json_real_value(json_object_get(row, "dedup_ratio")),
			json_real_value(json_object_get(row, "compression_ratio")));
	}
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

static void billing_done(struct ctl_req *r, const redisReply *rep)
{
	json_t *rows = usage_rows(rep);
	bool csv = strcmp(json_string_value(r->ctx), "csv") == 0;
	char *data = csv ? usage_csv(rows) : json_dumps(rows, JSON_COMPACT);

	json_decref(rows);
	if (!data) {
		ctl_req_fail(r, "internal", NULL, "out of memory");
		return;
	}
	ctl_req_reply(r, ctl_reply_ok(json_pack("{s:s, s:s}", "format", csv ? "csv" : "json",
						"data", data)));
	free(data);
}

void ctl_admin_billing_export(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	json_t *v = json_object_get(args, "format");
	const char *fmt = json_is_string(v) ? json_string_value(v) : "";

	if (strcmp(fmt, "csv") != 0 && strcmp(fmt, "json") != 0) {
		ctl_req_fail(r, "bad_value", "format", "format must be \"csv\" or \"json\"");
		return;
	}
	r->ctx = json_string(fmt);
	ctl_req_args(r, "tg:orgs");
	ctl_req_args(r, "");
	ctl_req_script(r, CTL_S_USAGE, 1, billing_done);
}

static void alerts_done(struct ctl_req *r, const redisReply *rep)
{
	const char *only = ctl_rr_str(rep, 1);
	json_t *a = json_array();

	for (size_t i = 2; i < rep->elements; i++) {
		const char *s = ctl_rr_str(rep, i);
		json_t *rec = s ? json_loads(s, 0, NULL) : NULL;
		const char *org = json_string_value(json_object_get(rec, "org"));

		if (rec && org && (!only || !*only || strcmp(org, only) == 0))
			json_array_append(a, rec);
		json_decref(rec);
	}
	ctl_req_reply(r, ctl_reply_ok(a));
}

void ctl_admin_alerts(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	const char *ref = org_ref(r, args, "org", false);

	if (!ref)
		return;
	ctl_req_args(r, "tg:alerts");
	ctl_req_args(r, ref);
	ctl_req_script(r, CTL_S_ALERTS, 1, alerts_done);
}

/* ---- leases, for the daemon's `gateways` ---- */

static void lease_list_done(struct ctl_req *r, const redisReply *rep)
{
	long long now = ctl_rr_ll(rep, 1, 0);
	json_t *a = json_array();

	for (size_t i = 2; i < rep->elements; i++) {
		const redisReply *l = rep->element[i];
		long long left = ctl_rr_ll(l, 4, 0) - now;

		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:I, s:I}",
						   "org", S(ctl_rr_str(l, 0)),
						   "name", S(ctl_rr_str(l, 1)),
						   "gateway", S(ctl_rr_str(l, 2)),
						   "bytes", (json_int_t)ctl_rr_ll(l, 3, 0),
						   "expires_ms", (json_int_t)(left > 0 ? left : 0)));
	}
	ctl_req_reply(r, ctl_reply_ok(a));
}

void ctl_admin_lease_list(struct ctl_req *r, json_t *args, const struct ctl_caller *who)
{
	ctl_req_args(r, "tg:leases");
	ctl_req_script(r, CTL_S_LEASE_LIST, 1, lease_list_done);
}
