/*
 * main.c - tidegate-control, the daemon: one thread, one libevent loop.
 *
 * This file owns sockets and framing and knows nothing of Redis; the model
 * (model*.c) answers every command through ctl_model_call() and knows nothing
 * of sockets (ctl.h). Here live:
 *
 *   the admin socket   unix stream, one JSON object per line (<= 64 KiB),
 *                      for tidegate-ctl;
 *   the gateway link   unix SOCK_SEQPACKET, one JSON object per message
 *                      (<= 64 KiB), hello first, then requests by "seq" and
 *                      pushes (org_update) from the model;
 *   the 1 s cron       ctl_model_cron(): reconnects, lease sweep;
 *   SIGINT/SIGTERM     stop listening, unlink the sockets, exit 0;
 *   ctl_log()          stderr with journald "<N>" level prefixes.
 *
 * Both sockets admit uid 0 and members of admin-group only (SO_PEERCRED).
 * Nothing here blocks on a peer: writes go through bufferevents (admin) or an
 * output queue (gateways), and a peer that does not read is dropped, never
 * waited for. A connection that goes away while the model is still working
 * on its request is kept as a husk until the reply arrives (refs), so a late
 * reply never touches freed memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "ctl.h"
#include "tg_proto.h"

#ifndef TG_VERSION
#define TG_VERSION "unknown"
#endif

#define CTL_MSG_MAX        (64u * 1024u) /* one admin line or one link message */
#define ADMIN_OUT_HIGH     (1u << 20)    /* stop reading requests past this much unsent */
#define ADMIN_CONNS_MAX    256
#define GW_CONNS_MAX       256
#define GW_INFLIGHT_MAX    1024          /* requests per gateway awaiting the model */
#define GW_OUTQ_MAX        4096          /* messages queued for a gateway not reading */
#define GW_READ_BUDGET     32            /* messages per wakeup, then others get a turn */
#define GW_NAME_MAX        64u

/* ---- logging ---- */

static int ctl_log_level = LOG_INFO;

/*
 * One line per message, "<N>" first: journald (and sd-daemon's convention)
 * takes N as the priority and strips it. The component tag is the message's
 * first word by convention: "admin: ...", "link: ...", "redis: ...".
 */
void ctl_log(int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (level > ctl_log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* Names come from peers: keep one message on one line. */
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	fprintf(stderr, "<%d>%s\n", level < 0 ? 0 : level > 7 ? 7 : level, buf);
}

/* ---- daemon state ---- */

struct admin_conn;
struct gw_conn;

struct ctl_daemon;

struct ctl_listener {
	struct ctl_daemon *d;
	const char *what;         /* "admin", "link" */
	const char *path;
	struct evconnlistener *lev;
	dev_t dev;                /* the inode we made, so we unlink only ours */
	ino_t ino;
	bool paused;              /* accept() failed (EMFILE...): retry from cron */
};

struct ctl_daemon {
	struct ctl_cfg cfg;
	struct event_base *base;
	struct ctl_model *model;
	struct ctl_listener admin, gw;
	struct event *sigint, *sigterm, *cron;
	TAILQ_HEAD(, admin_conn) admins;
	TAILQ_HEAD(, gw_conn) gws;
	int nadmins, ngws;
};

struct admin_conn {
	struct ctl_daemon *d;
	struct bufferevent *bev;
	TAILQ_ENTRY(admin_conn) link;
	struct ctl_caller who;
	pid_t pid;
	int refs;      /* one for the connection, one per request in flight */
	bool busy;     /* one request at a time: replies keep request order */
	bool pumping;
	bool eof;
	bool closing;  /* write what is queued, then close */
	bool dead;     /* socket gone; the struct waits for its last reply */
};

struct gw_msg {
	struct gw_msg *next;
	size_t len;
	char data[];
};

struct gw_conn {
	struct ctl_daemon *d;
	int fd;
	struct event *rd, *wr;
	TAILQ_ENTRY(gw_conn) link;
	struct ctl_caller who;
	char name[GW_NAME_MAX + 1];
	pid_t pid;
	time_t connected_since;
	int refs;
	int inflight;
	bool hello;
	bool dead;
	struct gw_msg *outq, **outq_tail;
	int outq_len;
};

struct gw_req {
	struct gw_conn *g;
	json_int_t seq;
};

/* ---- peer credentials ---- */

/*
 * uid 0, or a member of admin-group: primary gid of the connecting process,
 * or the primary or supplementary groups of its user. The group is looked up
 * at every connection, so /etc/group edits apply without a restart.
 */
static bool ctl_peer_allowed(int fd, const char *group, struct ucred *uc, char *why,
			     size_t whylen)
{
	socklen_t len = sizeof(*uc);
	struct group *gr;
	struct passwd *pw;
	gid_t gid, pw_gid, *groups = NULL;
	char *user = NULL;
	int n = 32;
	bool ok = false;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, uc, &len) || len != sizeof(*uc)) {
		snprintf(why, whylen, "cannot read peer credentials: %s", strerror(errno));
		return false;
	}
	if (uc->uid == 0)
		return true;
	gr = getgrnam(group);
	if (!gr) {
		snprintf(why, whylen, "uid %u is not root and group '%s' does not exist",
			 (unsigned)uc->uid, group);
		return false;
	}
	gid = gr->gr_gid;
	if (uc->gid == gid)
		return true;
	pw = getpwuid(uc->uid);
	if (!pw)
		goto deny;
	user = strdup(pw->pw_name);
	pw_gid = pw->pw_gid;
	if (!user)
		goto deny;
	for (int tries = 0; tries < 4; tries++) {
		gid_t *g = realloc(groups, (size_t)n * sizeof(*groups));

		if (!g)
			goto deny;
		groups = g;
		if (getgrouplist(user, pw_gid, groups, &n) >= 0)
			break;
		n = n * 2 + 16;
		if (tries == 3)
			n = 0;
	}
	for (int i = 0; i < n && !ok; i++)
		ok = groups[i] == gid;
deny:
	if (!ok)
		snprintf(why, whylen, "uid %u is not root and not in group '%s'",
			 (unsigned)uc->uid, group);
	free(groups);
	free(user);
	return ok;
}

/* ---- admin socket ---- */

static void admin_pump(struct admin_conn *c);

static void admin_unref(struct admin_conn *c)
{
	if (--c->refs == 0)
		free(c);
}

static void admin_close(struct admin_conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	TAILQ_REMOVE(&c->d->admins, c, link);
	c->d->nadmins--;
	bufferevent_free(c->bev);
	c->bev = NULL;
	admin_unref(c);
}

/* Queue one reply line; the bufferevent writes it when the socket can take it. */
static void admin_send(struct admin_conn *c, json_t *reply)
{
	static const char fallback[] =
		"{\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"cannot encode reply\"}}\n";
	char *s = reply ? json_dumps(reply, JSON_COMPACT) : NULL;

	if (!c->dead) {
		struct evbuffer *out = bufferevent_get_output(c->bev);

		if (s && evbuffer_add(out, s, strlen(s)) == 0 && evbuffer_add(out, "\n", 1) == 0)
			;
		else
			evbuffer_add(out, fallback, sizeof(fallback) - 1);
	}
	free(s);
	json_decref(reply);
}

static void admin_fail_close(struct admin_conn *c, json_t *reply)
{
	admin_send(c, reply);
	c->closing = true;
	if (!c->dead) {
		bufferevent_disable(c->bev, EV_READ);
		evbuffer_drain(bufferevent_get_input(c->bev),
			       evbuffer_get_length(bufferevent_get_input(c->bev)));
	}
}

static void admin_reply(void *arg, json_t *reply)
{
	struct admin_conn *c = arg;

	if (!reply)
		reply = ctl_reply_err("internal", NULL, "no reply from the model");
	admin_send(c, reply);
	c->busy = false;
	if (!c->dead && !c->pumping)
		admin_pump(c);
	admin_unref(c);
}

static int gw_cmp_name(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

/*
 * `gateways`: who is connected is known only here, the leases only in Redis.
 * lease.list may answer with an array of leases that name their "gateway",
 * or with an object keyed by gateway name; either is merged. If Redis is
 * down the connected gateways are still worth showing: leases is null.
 */
static void admin_gateways_reply(void *arg, json_t *reply)
{
	struct admin_conn *c = arg;
	struct ctl_daemon *d = c->d;
	json_t *result = json_object_get(reply, "result");
	bool have_leases = json_is_true(json_object_get(reply, "ok"));
	json_t *arr = json_array(), **rows;
	struct gw_conn *g;
	size_t n = 0, i;

	TAILQ_FOREACH(g, &d->gws, link) {
		json_t *leases = have_leases ? json_array() : json_null();
		json_t *v;

		if (!g->hello)
			continue;
		if (json_is_array(result)) {
			json_array_foreach(result, i, v) {
				const char *gn = json_string_value(json_object_get(v, "gateway"));

				if (gn && strcmp(gn, g->name) == 0)
					json_array_append(leases, v);
			}
		} else if (json_is_object(result) && (v = json_object_get(result, g->name))) {
			json_decref(leases);
			leases = json_deep_copy(v);
		}
		json_array_append_new(arr, json_pack("{s:s, s:i, s:I, s:o}", "name", g->name,
						     "pid", (int)g->pid, "connected_since",
						     (json_int_t)g->connected_since, "leases",
						     leases));
		n++;
	}
	/* Stable output: sorted by name. */
	rows = calloc(n ? n : 1, sizeof(*rows));
	if (rows) {
		json_t *sorted = json_array();

		for (i = 0; i < n; i++)
			rows[i] = json_array_get(arr, i);
		qsort(rows, n, sizeof(*rows), gw_cmp_name);
		for (i = 0; i < n; i++)
			json_array_append(sorted, rows[i]);
		json_decref(arr);
		arr = sorted;
		free(rows);
	}
	json_decref(reply);
	admin_reply(c, ctl_reply_ok(arr));
}

static void admin_request(struct admin_conn *c, const char *line, size_t len)
{
	struct ctl_daemon *d = c->d;
	json_error_t jerr;
	json_t *req, *cmd, *args;
	const char *name;

	req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		admin_reply(c, ctl_reply_err("bad_json", NULL, "bad JSON at column %d: %s",
					     jerr.column, jerr.text));
		return;
	}
	if (!json_is_object(req)) {
		admin_reply(c, ctl_reply_err("bad_request", NULL, "the request is not a JSON object"));
		goto out;
	}
	cmd = json_object_get(req, "cmd");
	if (!json_is_string(cmd)) {
		admin_reply(c, ctl_reply_err("bad_request", "cmd", "\"cmd\" (a string) is missing"));
		goto out;
	}
	args = json_object_get(req, "args");
	if (args && !json_is_object(args)) {
		admin_reply(c, ctl_reply_err("bad_request", "args", "\"args\" must be an object"));
		goto out;
	}
	if (!args) {
		args = json_object();
		json_object_set_new(req, "args", args);
	}
	name = json_string_value(cmd);
	ctl_log(LOG_DEBUG, "admin: uid %u pid %d: %s", (unsigned)c->who.uid, (int)c->pid, name);
	/* Gateway ops and the daemon's own queries are not admin commands. */
	if (strncmp(name, "link.", 5) == 0 || strcmp(name, "lease.list") == 0) {
		admin_reply(c, ctl_reply_err("unknown_command", "cmd", "unknown command '%s'", name));
	} else if (strcmp(name, "gateways") == 0) {
		json_t *none = json_object();

		ctl_model_call(d->model, "lease.list", none, &c->who, admin_gateways_reply, c);
		json_decref(none);
	} else {
		ctl_model_call(d->model, name, args, &c->who, admin_reply, c);
	}
out:
	json_decref(req);
}

/*
 * Take complete lines off the input, one at a time: the next request is read
 * only once the previous one is answered, so replies come back in order and
 * a pipelining client is throttled by the read watermark.
 */
static void admin_pump(struct admin_conn *c)
{
	struct evbuffer *in;
	char *line;

	if (c->pumping || c->dead)
		return;
	c->pumping = true;
	c->refs++;
	while (!c->dead && !c->busy && !c->closing) {
		struct evbuffer_ptr eol;

		in = bufferevent_get_input(c->bev);
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) > ADMIN_OUT_HIGH)
			break; /* resumed by admin_write_cb once the client reads */
		eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			size_t have = evbuffer_get_length(in);

			if (have > CTL_MSG_MAX) {
				admin_fail_close(c, ctl_reply_err("too_large", NULL,
								  "request longer than %u bytes",
								  CTL_MSG_MAX));
			} else if (c->eof && have > 0) {
				/* Last request without its newline: still a request. */
				evbuffer_add(in, "\n", 1);
				continue;
			}
			break;
		}
		if ((size_t)eol.pos > CTL_MSG_MAX) {
			admin_fail_close(c, ctl_reply_err("too_large", NULL,
							  "request longer than %u bytes", CTL_MSG_MAX));
			break;
		}
		line = malloc((size_t)eol.pos + 1);
		if (!line) {
			admin_fail_close(c, ctl_reply_err("internal", NULL, "out of memory"));
			break;
		}
		evbuffer_remove(in, line, (size_t)eol.pos + 1);
		c->busy = true;
		c->refs++; /* dropped by admin_reply */
		admin_request(c, line, (size_t)eol.pos);
		free(line);
	}
	c->pumping = false;
	if (!c->dead && c->eof && !c->busy && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
		c->closing = true;
	if (!c->dead && c->closing && !c->busy &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		admin_close(c);
	admin_unref(c);
}

static void admin_read_cb(struct bufferevent *bev, void *arg)
{
	admin_pump(arg);
}

static void admin_write_cb(struct bufferevent *bev, void *arg)
{
	struct admin_conn *c = arg;

	if (c->closing && !c->busy)
		admin_close(c);
	else
		admin_pump(c);
}

static void admin_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct admin_conn *c = arg;

	if (what & BEV_EVENT_EOF) {
		c->eof = true;
		admin_pump(c);
	} else if (what & BEV_EVENT_ERROR) {
		admin_close(c);
	}
}

static void admin_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
			    struct sockaddr *sa, int salen, void *arg)
{
	struct ctl_daemon *d = ((struct ctl_listener *)arg)->d;
	struct admin_conn *c;
	struct ucred uc;
	char why[160];
	bool allowed;

	if (d->nadmins >= ADMIN_CONNS_MAX) {
		ctl_log(LOG_WARNING, "admin: %d connections already open; refusing one",
			d->nadmins);
		close(fd);
		return;
	}
	allowed = ctl_peer_allowed(fd, d->cfg.admin_group, &uc, why, sizeof(why));
	c = calloc(1, sizeof(*c));
	if (!c)
		goto err_close;
	c->bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev)
		goto err_free;
	c->d = d;
	c->refs = 1;
	c->who.kind = CTL_CALLER_ADMIN;
	c->who.uid = uc.uid;
	c->pid = uc.pid;
	TAILQ_INSERT_TAIL(&d->admins, c, link);
	d->nadmins++;
	bufferevent_setcb(c->bev, admin_read_cb, admin_write_cb, admin_event_cb, c);
	/* Past the largest request, stop reading: bounded memory per client. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, CTL_MSG_MAX + 2);
	if (!allowed) {
		ctl_log(LOG_NOTICE, "admin: refused pid %d: %s", (int)uc.pid, why);
		admin_fail_close(c, ctl_reply_err("permission_denied", NULL, "permission denied: %s",
						  why));
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return;

err_free:
	free(c);
err_close:
	close(fd);
	ctl_log(LOG_ERR, "admin: out of memory accepting a connection");
}

/* ---- gateway link ---- */

static void gw_unref(struct gw_conn *g)
{
	if (--g->refs == 0)
		free(g);
}

static void gw_close(struct gw_conn *g, const char *why)
{
	struct gw_msg *m;

	if (g->dead)
		return;
	g->dead = true;
	if (g->hello)
		ctl_log(LOG_NOTICE, "link: gateway %s (pid %d) gone: %s", g->name, (int)g->pid, why);
	TAILQ_REMOVE(&g->d->gws, g, link);
	g->d->ngws--;
	event_free(g->rd);
	event_free(g->wr);
	close(g->fd);
	while ((m = g->outq)) {
		g->outq = m->next;
		free(m);
	}
	gw_unref(g);
}

static void gw_send_raw(struct gw_conn *g, const char *s, size_t len)
{
	struct gw_msg *m;

	if (g->dead)
		return;
	if (!g->outq) {
		ssize_t n = send(g->fd, s, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n >= 0)
			return;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
			gw_close(g, strerror(errno));
			return;
		}
	}
	if (g->outq_len >= GW_OUTQ_MAX) {
		gw_close(g, "not reading its messages");
		return;
	}
	m = malloc(sizeof(*m) + len);
	if (!m) {
		gw_close(g, "out of memory queueing a message");
		return;
	}
	m->next = NULL;
	m->len = len;
	memcpy(m->data, s, len);
	if (!g->outq)
		g->outq_tail = &g->outq;
	*g->outq_tail = m;
	g->outq_tail = &m->next;
	g->outq_len++;
	event_add(g->wr, NULL);
}

/* Takes reply. */
static void gw_send(struct gw_conn *g, json_t *msg)
{
	char *s = json_dumps(msg, JSON_COMPACT);

	if (!s || strlen(s) > CTL_MSG_MAX) {
		ctl_log(LOG_ERR, "link: cannot encode a message for gateway %s", g->name);
		free(s);
		s = NULL;
		json_decref(msg);
		msg = ctl_reply_link_err(TG_ERR_BAD_REQUEST, "reply could not be encoded");
		if (msg)
			s = json_dumps(msg, JSON_COMPACT);
	}
	if (s)
		gw_send_raw(g, s, strlen(s));
	free(s);
	json_decref(msg);
}

static void gw_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gw_conn *g = arg;
	struct gw_msg *m;

	while ((m = g->outq)) {
		if (send(g->fd, m->data, m->len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
				return;
			gw_close(g, strerror(errno));
			return;
		}
		g->outq = m->next;
		g->outq_len--;
		free(m);
	}
	event_del(g->wr);
}

/* A link error reply: {"seq"?, "ok": false, "error": {code, name, message, reason?}}. */
static json_t *gw_err(const json_t *seq, int code, const char *reason, const char *msg)
{
	json_t *r = json_object(), *e = ctl_reply_link_err(code, "%s", msg);

	if (seq)
		json_object_set_new(r, "seq", json_copy((json_t *)seq));
	if (e)
		json_object_update(r, e);
	json_decref(e);
	if (reason && json_is_object(json_object_get(r, "error")))
		json_object_set_new(json_object_get(r, "error"), "reason", json_string(reason));
	return r;
}

/* Refuse a hello (or the connection before it) and forget the gateway. */
static void gw_refuse(struct gw_conn *g, const json_t *seq, int code, const char *reason,
		      const char *msg)
{
	json_t *r = gw_err(seq, code, reason, msg);

	json_object_set_new(r, "op", json_string("hello"));
	gw_send(g, r);
	gw_close(g, msg);
}

static bool gw_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > GW_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

static void gw_hello(struct gw_conn *g, json_t *req)
{
	struct ctl_daemon *d = g->d;
	const json_t *seq = json_object_get(req, "seq");
	const char *name = json_string_value(json_object_get(req, "gateway"));
	const char *guid = ctl_model_provider_guid(d->model);
	struct gw_conn *o;
	char msg[200];
	json_t *r;

	if (!name || !gw_name_ok(name)) {
		gw_refuse(g, seq, TG_ERR_BAD_REQUEST, "bad_request",
			  "hello needs \"gateway\": 1..64 bytes of [A-Za-z0-9._-]");
		return;
	}
	TAILQ_FOREACH(o, &d->gws, link) {
		if (o->hello && strcmp(o->name, name) == 0) {
			snprintf(msg, sizeof(msg), "gateway '%s' is already connected (pid %d)",
				 name, (int)o->pid);
			gw_refuse(g, seq, TG_ERR_BAD_REQUEST, "name_in_use", msg);
			return;
		}
	}
	/* Without the provider GUID a gateway cannot answer REG_INIT: it must
	 * come back once Redis has been reached. */
	if (!guid || !guid[0]) {
		gw_refuse(g, seq, TG_ERR_UNAVAILABLE, "unavailable",
			  "control plane has not reached Redis yet; retry");
		return;
	}
	snprintf(g->name, sizeof(g->name), "%s", name);
	g->who.gateway = g->name;
	g->hello = true;
	g->connected_since = time(NULL);
	r = json_pack("{s:s, s:b, s:s, s:I, s:I}", "op", "hello", "ok", 1, "provider_guid", guid,
		      "lease_ttl_ms", (json_int_t)d->cfg.lease_ttl_ms, "lease_bytes",
		      (json_int_t)d->cfg.lease_bytes);
	if (r && seq)
		json_object_set_new(r, "seq", json_copy((json_t *)seq));
	ctl_log(LOG_NOTICE, "link: gateway %s connected (pid %d, uid %u)", g->name, (int)g->pid,
		(unsigned)g->who.uid);
	gw_send(g, r);
}

static void gw_reply(void *arg, json_t *reply)
{
	struct gw_req *r = arg;
	struct gw_conn *g = r->g;

	g->inflight--;
	if (!g->dead) {
		json_t *out = json_pack("{s:I}", "seq", r->seq);

		if (json_is_object(reply))
			json_object_update(out, reply);
		else
			json_object_update_new(out, gw_err(NULL, TG_ERR_BAD_REQUEST, "internal",
							   "no reply from the model"));
		gw_send(g, out);
	}
	json_decref(reply);
	free(r);
	gw_unref(g);
}

static bool gw_op_ok(const char *op)
{
	size_t n = strlen(op);

	if (n == 0 || n > 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((op[i] >= 'a' && op[i] <= 'z') || op[i] == '.' || op[i] == '_'))
			return false;
	return true;
}

static void gw_message(struct gw_conn *g, const char *buf, size_t len)
{
	struct ctl_daemon *d = g->d;
	json_error_t jerr;
	json_t *req, *seq;
	const char *op;
	char cmd[48], msg[200];
	struct gw_req *r;

	req = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(req)) {
		snprintf(msg, sizeof(msg), "not a JSON object%s%s", req ? "" : ": ",
			 req ? "" : jerr.text);
		if (!g->hello)
			gw_refuse(g, NULL, TG_ERR_BAD_REQUEST, "bad_request", msg);
		else
			gw_send(g, gw_err(NULL, TG_ERR_BAD_REQUEST, "bad_request", msg));
		json_decref(req);
		return;
	}
	seq = json_object_get(req, "seq");
	op = json_string_value(json_object_get(req, "op"));
	if (!g->hello) {
		if (op && strcmp(op, "hello") == 0)
			gw_hello(g, req);
		else
			gw_refuse(g, seq, TG_ERR_BAD_REQUEST, "bad_request",
				  "the first message must be {\"op\": \"hello\", ...}");
		goto out;
	}
	if (!json_is_integer(seq)) {
		gw_send(g, gw_err(NULL, TG_ERR_BAD_REQUEST, "bad_request",
				  "request without an integer \"seq\""));
		goto out;
	}
	if (!op || !gw_op_ok(op) || strcmp(op, "hello") == 0) {
		gw_send(g, gw_err(seq, TG_ERR_BAD_REQUEST, "bad_request",
				  op ? "bad \"op\"" : "request without \"op\""));
		goto out;
	}
	if (g->inflight >= GW_INFLIGHT_MAX) {
		gw_send(g, gw_err(seq, TG_ERR_OVERLOADED, "overloaded",
				  "too many requests in flight"));
		goto out;
	}
	r = malloc(sizeof(*r));
	if (!r) {
		gw_send(g, gw_err(seq, TG_ERR_OVERLOADED, "overloaded", "out of memory"));
		goto out;
	}
	r->g = g;
	r->seq = json_integer_value(seq);
	g->refs++;
	g->inflight++;
	snprintf(cmd, sizeof(cmd), "link.%s", op);
	ctl_model_call(d->model, cmd, req, &g->who, gw_reply, r);
out:
	json_decref(req);
}

static void gw_read_cb(evutil_socket_t fd, short what, void *arg)
{
	static char buf[CTL_MSG_MAX + 1];
	struct gw_conn *g = arg;

	g->refs++;
	for (int budget = GW_READ_BUDGET; budget > 0 && !g->dead; budget--) {
		/* MSG_TRUNC: the real length of a message larger than buf. */
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);

		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				gw_close(g, strerror(errno));
			break;
		}
		if (n == 0) {
			gw_close(g, "closed by the gateway");
			break;
		}
		if ((size_t)n > CTL_MSG_MAX) {
			gw_send(g, gw_err(NULL, TG_ERR_BAD_REQUEST, "too_large",
					  "message larger than 64 KiB"));
			gw_close(g, "sent a message larger than 64 KiB");
			break;
		}
		gw_message(g, buf, (size_t)n);
	}
	gw_unref(g);
}

static void gw_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			 int salen, void *arg)
{
	struct ctl_daemon *d = ((struct ctl_listener *)arg)->d;
	struct gw_conn *g;
	struct ucred uc;
	char why[160];
	bool allowed;

	if (d->ngws >= GW_CONNS_MAX) {
		ctl_log(LOG_WARNING, "link: %d gateways already connected; refusing one", d->ngws);
		close(fd);
		return;
	}
	allowed = ctl_peer_allowed(fd, d->cfg.admin_group, &uc, why, sizeof(why));
	g = calloc(1, sizeof(*g));
	if (!g)
		goto err_close;
	g->d = d;
	g->fd = fd;
	g->refs = 1;
	g->pid = uc.pid;
	g->who.kind = CTL_CALLER_GATEWAY;
	g->who.uid = uc.uid;
	g->outq_tail = &g->outq;
	g->rd = event_new(d->base, fd, EV_READ | EV_PERSIST, gw_read_cb, g);
	g->wr = event_new(d->base, fd, EV_WRITE | EV_PERSIST, gw_write_cb, g);
	if (!g->rd || !g->wr)
		goto err_free;
	TAILQ_INSERT_TAIL(&d->gws, g, link);
	d->ngws++;
	if (!allowed) {
		char msg[200];

		ctl_log(LOG_NOTICE, "link: refused pid %d: %s", (int)uc.pid, why);
		snprintf(msg, sizeof(msg), "permission denied: %s", why);
		gw_refuse(g, NULL, TG_ERR_BAD_REQUEST, "permission_denied", msg);
		return;
	}
	event_add(g->rd, NULL);
	return;

err_free:
	if (g->rd)
		event_free(g->rd);
	if (g->wr)
		event_free(g->wr);
	free(g);
err_close:
	close(fd);
	ctl_log(LOG_ERR, "link: out of memory accepting a connection");
}

/* A push from the model (org_update...) goes to every gateway past hello. */
static void ctl_push(void *arg, json_t *msg)
{
	struct ctl_daemon *d = arg;
	struct gw_conn *g, *next;
	char *s = json_dumps(msg, JSON_COMPACT);

	if (!s)
		return;
	for (g = TAILQ_FIRST(&d->gws); g; g = next) {
		next = TAILQ_NEXT(g, link);
		if (g->hello)
			gw_send_raw(g, s, strlen(s));
	}
	free(s);
}

/* ---- listening sockets ---- */

static void ctl_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct ctl_listener *l = arg;

	/* EMFILE and friends would make the listener spin: pause, retry in cron. */
	ctl_log(LOG_ERR, "%s: accept: %s; pausing for a second", l->what, strerror(errno));
	evconnlistener_disable(lev);
	l->paused = true;
}

static int ctl_listen(struct ctl_daemon *d, struct ctl_listener *l, int type,
		      evconnlistener_cb cb)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct group *gr;
	struct stat st;
	mode_t old;
	int fd, probe, rc;

	if (strlen(l->path) >= sizeof(sa.sun_path)) {
		ctl_log(LOG_ERR, "%s: socket path too long: %s", l->what, l->path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, l->path, strlen(l->path) + 1);
	if (lstat(l->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			ctl_log(LOG_ERR, "%s: %s exists and is not a socket", l->what, l->path);
			return -EEXIST;
		}
		/* Someone answers: another daemon owns it. Nobody: stale, remove. */
		probe = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (probe < 0)
			return -errno;
		rc = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
		if (rc == 0 || errno == EAGAIN) {
			close(probe);
			ctl_log(LOG_ERR, "%s: another process is listening on %s", l->what, l->path);
			return -EADDRINUSE;
		}
		close(probe);
		if (unlink(l->path) && errno != ENOENT) {
			rc = -errno;
			ctl_log(LOG_ERR, "%s: cannot remove stale %s: %s", l->what, l->path,
				strerror(errno));
			return rc;
		}
	}
	fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	old = umask(0117); /* the socket inode is made 0660, never wider for a moment */
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc) {
		rc = -errno;
		ctl_log(LOG_ERR, "%s: bind %s: %s", l->what, l->path, strerror(errno));
		goto err_close;
	}
	if (lstat(l->path, &st) == 0) {
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	/* Mode 0660 lets the admin group in only if the group owns the socket. */
	gr = getgrnam(d->cfg.admin_group);
	if (!gr)
		ctl_log(LOG_WARNING, "%s: group '%s' does not exist: only root may connect",
			l->what, d->cfg.admin_group);
	else if (chown(l->path, (uid_t)-1, gr->gr_gid))
		ctl_log(LOG_WARNING, "%s: cannot give %s to group '%s': %s", l->what, l->path,
			d->cfg.admin_group, strerror(errno));
	if (listen(fd, 64)) {
		rc = -errno;
		ctl_log(LOG_ERR, "%s: listen %s: %s", l->what, l->path, strerror(errno));
		goto err_unlink;
	}
	l->d = d;
	l->lev = evconnlistener_new(d->base, cb, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
				    0, fd);
	if (!l->lev) {
		rc = -ENOMEM;
		goto err_unlink;
	}
	evconnlistener_set_error_cb(l->lev, ctl_accept_error_cb);
	return 0;

err_unlink:
	unlink(l->path);
err_close:
	close(fd);
	return rc;
}

static void ctl_unlisten(struct ctl_listener *l)
{
	struct stat st;

	if (!l->lev)
		return;
	evconnlistener_free(l->lev);
	l->lev = NULL;
	/* Only the inode we made: a newer daemon may already own the path. */
	if (lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
		unlink(l->path);
}

/* ---- cron, signals, main ---- */

static void ctl_cron_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_daemon *d = arg;

	ctl_model_cron(d->model);
	if (d->admin.paused && d->admin.lev) {
		d->admin.paused = false;
		evconnlistener_enable(d->admin.lev);
	}
	if (d->gw.paused && d->gw.lev) {
		d->gw.paused = false;
		evconnlistener_enable(d->gw.lev);
	}
}

static void ctl_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct ctl_daemon *d = arg;

	ctl_log(LOG_NOTICE, "daemon: %s: shutting down", strsignal((int)sig));
	event_base_loopbreak(d->base);
}

static void ctl_shutdown(struct ctl_daemon *d)
{
	struct admin_conn *c;
	struct gw_conn *g;

	ctl_unlisten(&d->admin);
	ctl_unlisten(&d->gw);
	while ((c = TAILQ_FIRST(&d->admins)))
		admin_close(c);
	while ((g = TAILQ_FIRST(&d->gws)))
		gw_close(g, "control plane shutting down");
	/* Replies still in flight land on husks that free themselves. */
	if (d->model)
		ctl_model_destroy(d->model);
	if (d->cron)
		event_free(d->cron);
	if (d->sigint)
		event_free(d->sigint);
	if (d->sigterm)
		event_free(d->sigterm);
	event_base_free(d->base);
}

int main(int argc, char **argv)
{
	static struct ctl_daemon d;
	struct timeval one_second = { 1, 0 };
	int rc, err = 0;

	rc = ctl_cfg_load(&d.cfg, argc, argv);
	if (rc)
		return rc < 0 ? 2 : 0;
	ctl_log_level = d.cfg.log_level;
	signal(SIGPIPE, SIG_IGN);
	TAILQ_INIT(&d.admins);
	TAILQ_INIT(&d.gws);
	d.admin.what = "admin";
	d.admin.path = d.cfg.admin_socket;
	d.gw.what = "link";
	d.gw.path = d.cfg.gateway_socket;

	d.base = event_base_new();
	if (!d.base) {
		ctl_log(LOG_ERR, "daemon: cannot create the event loop");
		return 1;
	}
	if (ctl_listen(&d, &d.admin, SOCK_STREAM, admin_accept_cb) ||
	    ctl_listen(&d, &d.gw, SOCK_SEQPACKET, gw_accept_cb))
		goto err;
	d.model = ctl_model_create(d.base, &d.cfg, &err);
	if (!d.model) {
		ctl_log(LOG_ERR, "daemon: cannot start the model: %s", strerror(err < 0 ? -err : err));
		goto err;
	}
	ctl_model_on_push(d.model, ctl_push, &d);

	d.sigint = evsignal_new(d.base, SIGINT, ctl_signal_cb, &d);
	d.sigterm = evsignal_new(d.base, SIGTERM, ctl_signal_cb, &d);
	d.cron = event_new(d.base, -1, EV_PERSIST, ctl_cron_cb, &d);
	if (!d.sigint || !d.sigterm || !d.cron || evsignal_add(d.sigint, NULL) ||
	    evsignal_add(d.sigterm, NULL) || evtimer_add(d.cron, &one_second)) {
		ctl_log(LOG_ERR, "daemon: cannot set up signals and the timer");
		goto err;
	}
	ctl_log(LOG_NOTICE, "daemon: tidegate-control %s: admin %s, gateways %s, redis %s:%d",
		TG_VERSION, d.cfg.admin_socket, d.cfg.gateway_socket, d.cfg.redis_host,
		d.cfg.redis_port);
	event_base_dispatch(d.base);
	ctl_shutdown(&d);
	return 0;

err:
	ctl_shutdown(&d);
	return 1;
}
