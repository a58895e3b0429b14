/*
 * model.h - private seam between the parts of the tenant model:
 *
 *   model.c        Redis connection (hiredis async on libevent), scripts by
 *                  SHA, the request life cycle, the command table, replies
 *   model_admin.c  admin commands: validation, one script call, JSON shaping
 *   model_link.c   gateway-link ops: crypto, rate limiting, leases, restores
 *   scripts.c      every Lua script (one atomic check-and-update each)
 *
 * A command handler validates its arguments (a request that fails changes
 * nothing, so every check that needs no Redis happens before the first
 * write is even sent), puts the script's KEYS and ARGV on the request and
 * calls ctl_req_script(). The done callback gets the script's reply and
 * either answers the request or runs another script on the same request.
 *
 * Every script answers {"ok", ...} or {"err", code, field, message}; a
 * Redis-level error (a bug, a full memory) is "internal", a lost connection
 * or a timeout "unavailable".
 */
#ifndef TG_CTL_MODEL_H
#define TG_CTL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "ctl.h"

enum ctl_script_id {
	CTL_S_PROVIDER_INIT,
	CTL_S_ORG_ADD,
	CTL_S_ORG_GET,
	CTL_S_ORG_LIST,
	CTL_S_ORG_SET,
	CTL_S_ORG_STATE,
	CTL_S_ORG_DELETE,
	CTL_S_KEY_ROTATE,
	CTL_S_DEVICE_LIST,
	CTL_S_DEVICE_RELEASE,
	CTL_S_DEVICE_SET,
	CTL_S_USAGE,
	CTL_S_ALERTS,
	CTL_S_REG_LOOKUP,
	CTL_S_RL_FAIL,
	CTL_S_REGISTER,
	CTL_S_AUTH_LOOKUP,
	CTL_S_LEASE,
	CTL_S_COMMIT,
	CTL_S_RELEASE,
	CTL_S_SWEEP,
	CTL_S_LEASE_LIST,
	CTL_S_BACKUP_RECORD,
	CTL_S_RESTORE_AUTH,
	CTL_S_GW_HELLO,
	CTL_S__MAX
};

struct ctl_script {
	const char *name;
	const char *body;
};

/* scripts.c */
extern const struct ctl_script ctl_scripts[CTL_S__MAX];

/* Rate limiting of failed proofs (docs/control.md "Registration keys"). */
#define CTL_RL_WINDOW_S   600
#define CTL_RL_THRESHOLD  5
#define CTL_RL_CAP_S      900

#define CTL_MIN_GRANT     (1ull << 20)  /* smallest useful lease grant */
#define CTL_BYTES_MAX     (1ull << 60)
#define CTL_GUID_STR_LEN  36
#define CTL_ARGS_MAX      72
#define CTL_GW_NAME_MAX   64

struct ctl_req;
typedef void (*ctl_done_fn)(struct ctl_req *r, const redisReply *rep);

struct ctl_req {
	struct ctl_model *m;
	ctl_reply_fn fn;
	void *fn_arg;
	bool link;                /* gateway op: numeric tg_err errors */
	bool answered;
	bool inflight;            /* a script is at Redis; its callback frees us */
	bool retried;             /* NOSCRIPT retry spent */
	bool in_cb;               /* a handler or done callback is running */
	enum ctl_script_id script;
	int nkeys;
	int argc;
	char *argv[CTL_ARGS_MAX];
	size_t argvlen[CTL_ARGS_MAX];
	bool arg_overflow;
	ctl_done_fn done;
	struct event *timer;
	struct ctl_req *next, *prev;  /* the model's list of live requests */
	char gateway[CTL_GW_NAME_MAX + 1];
	json_t *ctx;              /* the handler's own state (owned) */
	void *priv;               /* secrets the handler keeps; wiped and freed */
	size_t priv_len;
};

/* ---- model.c: request plumbing ---- */

/* Arguments of the next script: KEYS first, then ARGV. */
void ctl_req_arg(struct ctl_req *r, const void *p, size_t len);
void ctl_req_args(struct ctl_req *r, const char *s);
void ctl_req_argf(struct ctl_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Run script s with the arguments added so far, nkeys of them KEYS; done
 * gets the reply once it is a well-formed {"ok", ...} array (errors are
 * answered here). The arguments are cleared when done is called. */
void ctl_req_script(struct ctl_req *r, enum ctl_script_id s, int nkeys, ctl_done_fn done);
/* Answer once (steals reply); the request is freed when nothing is pending. */
void ctl_req_reply(struct ctl_req *r, json_t *reply);
/* Answer with a model error code ("unknown_org", ...), mapped to the
 * numeric wire code for gateway ops. */
void ctl_req_fail(struct ctl_req *r, const char *code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A gateway op's success: fields at the top level next to "ok" (steals). */
void ctl_req_link_ok(struct ctl_req *r, json_t *fields);
/* Send an org_update push to every gateway (device: the released device's
 * id, an extra member for gateways that cache credentials; NULL if none). */
void ctl_model_push_org(struct ctl_model *m, const char *guid, const char *state,
			const char *policy);
void ctl_model_push_org_dev(struct ctl_model *m, const char *guid, const char *state,
			    const char *policy, const char *device);

/* Log one line per alert level a script reports crossed ("80,90"; "" none). */
void ctl_log_alerts(const char *guid, const char *name, const char *levels);

const struct ctl_cfg *ctl_model_cfg(const struct ctl_model *m);
/* The provider GUID as 16 bytes; false until known. */
bool ctl_model_provider_id(const struct ctl_model *m, uint8_t id[16]);
/* The provider counters last read from Redis (for provider.show when down). */
void ctl_model_provider_cached(const struct ctl_model *m, json_t *out);
void ctl_model_provider_update(struct ctl_model *m, const redisReply *rep, size_t first);

/* ---- reply readers ---- */
/* Element i of an array reply as a string (bulk or status); NULL for nil,
 * an integer or out of range (ctl_rr_ll reads both integers and strings). */
const char *ctl_rr_str(const redisReply *a, size_t i);
long long ctl_rr_ll(const redisReply *a, size_t i, long long dflt);
/* Value of field f in a flat field/value array starting at index first. */
const char *ctl_rr_field(const redisReply *a, size_t first, const char *f);
long long ctl_rr_field_ll(const redisReply *a, size_t first, const char *f, long long dflt);

/* ---- small shared helpers ---- */
/* Make a random v4 GUID in lowercase dashed form (37 bytes with NUL). */
int ctl_guid_new(char out[CTL_GUID_STR_LEN + 1]);
/* Check and normalize (lowercase) a dashed GUID; false if malformed. */
bool ctl_guid_norm(const char *in, char out[CTL_GUID_STR_LEN + 1]);
void ctl_hex(const void *p, size_t len, char *out);      /* out: 2*len+1 */
int ctl_unhex(const char *s, void *out, size_t len);     /* exactly 2*len digits */

/* ---- handlers ---- */
typedef void (*ctl_handler_fn)(struct ctl_req *r, json_t *args, const struct ctl_caller *who);

/* model_admin.c */
void ctl_admin_provider_show(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_org_add(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_org_list(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_org_show(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_org_set(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_org_deactivate(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_org_reactivate(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_org_delete(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_key_rotate(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_device_list(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_device_release(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_device_set(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_usage(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_billing_export(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_alerts(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_admin_lease_list(struct ctl_req *r, json_t *args, const struct ctl_caller *who);

/* model_link.c */
void ctl_link_hello(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_link_register(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_link_auth(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_link_lease(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_link_commit(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_link_release(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_link_policy(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_link_backup_record(struct ctl_req *r, json_t *args, const struct ctl_caller *who);
void ctl_link_restore_authorize(struct ctl_req *r, json_t *args, const struct ctl_caller *who);

#endif /* TG_CTL_MODEL_H */
