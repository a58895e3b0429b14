/*
 * link_client.h - the gateway's side of the gateway link (docs/control.md,
 * "Gateway link"): a small blocking client for tidegate-control's
 * SOCK_SEQPACKET socket, one JSON object per message.
 *
 * The gateway's control thread owns one link: it asks (register, auth, lease,
 * commit...) with tg_link_request(), which waits for the reply with the same
 * seq, and it polls tg_link_fd() for the pushes (org_update) that the control
 * plane sends at any time; pushes that arrive while a request waits are
 * queued for tg_link_poll_push(). Not thread-safe: one thread per link.
 * A library: it never prints, it returns -errno.
 */
#ifndef TG_LINK_CLIENT_H
#define TG_LINK_CLIENT_H

#include <jansson.h>

#define TG_LINK_MSG_MAX     (64 * 1024) /* bytes per message, either way */
#define TG_LINK_PUSHQ_MAX   4096        /* pushes kept unread; the oldest go first */
#define TG_LINK_HELLO_MS    5000        /* how long tg_link_connect waits for hello */

struct tg_link;

/*
 * Connect and say hello as gateway_name. NULL on failure with *err:
 * -ENOENT/-ECONNREFUSED... (socket), -EACCES (not root nor in the admin
 * group), -EADDRINUSE (that gateway name is connected already), -EAGAIN
 * (the control plane has not reached Redis yet: retry), -EINVAL (bad name),
 * -ETIMEDOUT, -EPROTO (anything else the control plane refused).
 */
struct tg_link *tg_link_connect(const char *path, const char *gateway_name, int *err);

/* The control plane's hello reply (provider_guid, lease_ttl_ms, lease_bytes); borrowed. */
const json_t *tg_link_hello(const struct tg_link *link);

/*
 * Send req (borrowed; its "seq" is set here) and wait up to timeout_ms (< 0:
 * forever) for the reply with that seq: 0 and *reply (a new reference; it
 * may be {"ok": false, "error": {...}}, a refusal, not a failure). -ETIMEDOUT
 * leaves the link usable (a late reply is dropped when it comes); -EPIPE or
 * -ECONNRESET: the control plane is gone, close the link and reconnect.
 * -EMSGSIZE: req encodes to more than TG_LINK_MSG_MAX bytes.
 */
int tg_link_request(struct tg_link *link, json_t *req, json_t **reply, int timeout_ms);

/*
 * Next push without blocking: 1 and *msg (new reference), 0 if none, or
 * -errno if the link broke. Call it when tg_link_fd() is readable and after
 * requests (pushes may have been queued while they waited).
 */
int tg_link_poll_push(struct tg_link *link, json_t **msg);

/* Pushes dropped because TG_LINK_PUSHQ_MAX were waiting unread. */
unsigned long tg_link_pushes_dropped(const struct tg_link *link);

int tg_link_fd(const struct tg_link *link);
void tg_link_close(struct tg_link *link);

#endif /* TG_LINK_CLIENT_H */
