/*
 * ctl.h - the seams inside tidegate-control (docs/control.md).
 *
 *   config.c   one declarative table: config file, flags, --help, example
 *   main.c     libevent loop, the admin socket, the gateway link, the 1 s cron
 *   model.c    the tenant model: validation, Redis (hiredis async), Lua
 *              scripts by SHA, keys, seats, leases, usage, alerts
 *
 * The daemon (main.c) parses sockets and framing and knows nothing of Redis;
 * the model answers commands and knows nothing of sockets. They meet at
 * ctl_model_call(): a command name, its JSON args, who asks, and a callback
 * that receives the complete reply object ({"ok": ...}).
 */
#ifndef TG_CTL_H
#define TG_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <event2/event.h>
#include <jansson.h>

struct ctl_cfg {
	char redis_host[256];
	int redis_port;
	char redis_password[256];   /* empty: no AUTH */
	int redis_db;
	int redis_timeout_ms;       /* connect and command timeout */
	char admin_socket[108];
	char gateway_socket[108];
	char admin_group[64];       /* members may use both sockets; root always may */
	uint64_t lease_bytes;       /* default grant per (gateway, org) */
	uint32_t lease_ttl_ms;
	uint32_t alert_levels[3];   /* percent, ascending: 80 90 100 */
	int log_level;              /* syslog levels: 3 err .. 7 debug */
};

/* Who is asking: admin commands and gateway ops share the model. */
enum ctl_caller_kind { CTL_CALLER_ADMIN, CTL_CALLER_GATEWAY };

struct ctl_caller {
	enum ctl_caller_kind kind;
	const char *gateway;        /* gateway name for CTL_CALLER_GATEWAY */
	uid_t uid;
};

/* The reply is a new reference the callee takes ownership of. */
typedef void (*ctl_reply_fn)(void *arg, json_t *reply);
/* A push to every gateway (e.g. org_update); msg is borrowed. */
typedef void (*ctl_push_fn)(void *arg, json_t *msg);

struct ctl_model;

struct ctl_model *ctl_model_create(struct event_base *base, const struct ctl_cfg *cfg, int *err);
void ctl_model_destroy(struct ctl_model *m);

/*
 * Run one command. Admin commands use the names of docs/control.md
 * ("org.add", "usage", ...); gateway ops are prefixed "link."
 * ("link.register", "link.lease", ...); "lease.list" returns every lease for
 * the daemon's `gateways` reply. args is borrowed. fn is called exactly once,
 * possibly before ctl_model_call returns (validation errors, Redis down).
 */
void ctl_model_call(struct ctl_model *m, const char *cmd, json_t *args,
		    const struct ctl_caller *who, ctl_reply_fn fn, void *arg);

/* Called once a second by the daemon: reconnect with backoff, sweep leases. */
void ctl_model_cron(struct ctl_model *m);

bool ctl_model_redis_up(const struct ctl_model *m);
/* The provider GUID (made at first start, kept in Redis); "" until known. */
const char *ctl_model_provider_guid(const struct ctl_model *m);
void ctl_model_on_push(struct ctl_model *m, ctl_push_fn fn, void *arg);

/* Helpers for replies, shared by both sides. */
json_t *ctl_reply_ok(json_t *result);  /* steals result (NULL: {}) */
json_t *ctl_reply_err(const char *code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Gateway-link error: numeric wire code (enum tg_err) plus its name. */
json_t *ctl_reply_link_err(int tg_code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* config.c */
void ctl_cfg_defaults(struct ctl_cfg *cfg);
/* Parse argv (and the --config file it names); on error prints a message
 * naming the file and line or the flag and returns -1; --help,
 * --print-config-example and --check-config print and return 1; 0 to run. */
int ctl_cfg_load(struct ctl_cfg *cfg, int argc, char **argv);
/* Print an example config file with every option documented (from the table). */
void ctl_cfg_print_example(FILE *out);

/* log.c-style logging in main.c: one log type per component, levels. */
void ctl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* TG_CTL_H */
