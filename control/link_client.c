/*
 * link_client.c - the gateway's blocking client of the gateway link
 * (link_client.h, docs/control.md "Gateway link").
 *
 * One SOCK_SEQPACKET socket: the kernel keeps message boundaries, so one
 * recv() is one JSON object and there is no framing to get wrong. The socket
 * is non-blocking and every wait is a poll() against a deadline, so a request
 * never waits longer than the caller allowed, whatever the control plane does.
 * Replies are matched by seq; a reply nobody waits for any more (its request
 * timed out) is dropped; anything without seq is a push and is queued.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "link_client.h"

#define LINK_NAME_MAX 64u

struct tg_link {
	int fd;
	json_int_t next_seq;
	json_t *hello;
	json_t *pushq[TG_LINK_PUSHQ_MAX]; /* ring */
	size_t push_head, push_count;
	unsigned long pushes_dropped;
	char buf[TG_LINK_MSG_MAX + 1];
};

static int64_t link_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events until deadline (-1: forever). 1 ready, 0 timed out, -errno. */
static int link_wait(int fd, short events, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	int timeout = -1, rc;

	if (deadline >= 0) {
		int64_t left = deadline - link_now_ms();

		if (left <= 0)
			return 0;
		timeout = left > INT_MAX ? INT_MAX : (int)left;
	}
	rc = poll(&p, 1, timeout);
	if (rc < 0)
		return errno == EINTR ? 1 : -errno;
	return rc > 0 ? 1 : 0;
}

/* One message: 1 and *msg, 0 if none came before deadline, or -errno. */
static int link_recv(struct tg_link *l, json_t **msg, int64_t deadline)
{
	for (;;) {
		ssize_t n = recv(l->fd, l->buf, sizeof(l->buf), MSG_DONTWAIT | MSG_TRUNC);
		int rc;

		if (n > 0) {
			json_t *m;

			if ((size_t)n > TG_LINK_MSG_MAX)
				continue; /* truncated: unreadable, skip it */
			m = json_loadb(l->buf, (size_t)n, 0, NULL);
			if (!json_is_object(m)) {
				json_decref(m);
				continue;
			}
			*msg = m;
			return 1;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		rc = link_wait(l->fd, POLLIN, deadline);
		if (rc <= 0)
			return rc;
	}
}

static int link_send(struct tg_link *l, const json_t *msg, int64_t deadline)
{
	char *s = json_dumps(msg, JSON_COMPACT);
	size_t len;
	int rc;

	if (!s)
		return -ENOMEM;
	len = strlen(s);
	if (len > TG_LINK_MSG_MAX) {
		free(s);
		return -EMSGSIZE;
	}
	for (;;) {
		if (send(l->fd, s, len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
			rc = 0;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
			rc = -errno;
			break;
		}
		rc = link_wait(l->fd, POLLOUT, deadline);
		if (rc == 0)
			rc = -ETIMEDOUT;
		if (rc < 0)
			break;
	}
	free(s);
	return rc;
}

static void link_push_add(struct tg_link *l, json_t *m)
{
	if (l->push_count == TG_LINK_PUSHQ_MAX) {
		/* Keep the newest: an org_update supersedes older ones. */
		json_decref(l->pushq[l->push_head]);
		l->push_head = (l->push_head + 1) % TG_LINK_PUSHQ_MAX;
		l->push_count--;
		l->pushes_dropped++;
	}
	l->pushq[(l->push_head + l->push_count) % TG_LINK_PUSHQ_MAX] = m;
	l->push_count++;
}

static bool link_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > LINK_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

/* Map a refused hello to an errno the gateway can act on. */
static int link_hello_errno(const json_t *reply)
{
	const json_t *e = json_object_get(reply, "error");
	const char *reason = json_string_value(json_object_get(e, "reason"));

	if (reason) {
		if (strcmp(reason, "permission_denied") == 0)
			return -EACCES;
		if (strcmp(reason, "name_in_use") == 0)
			return -EADDRINUSE;
		if (strcmp(reason, "unavailable") == 0)
			return -EAGAIN;
		if (strcmp(reason, "bad_request") == 0)
			return -EINVAL;
	}
	if (json_integer_value(json_object_get(e, "code")) == 9) /* TG_ERR_UNAVAILABLE */
		return -EAGAIN;
	return -EPROTO;
}

struct tg_link *tg_link_connect(const char *path, const char *gateway_name, int *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tg_link *l;
	int64_t deadline;
	json_t *hello, *m = NULL;
	int rc, send_rc;

	if (!path || !gateway_name || !link_name_ok(gateway_name)) {
		rc = -EINVAL;
		goto err;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		rc = -ENAMETOOLONG;
		goto err;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	l = calloc(1, sizeof(*l));
	if (!l) {
		rc = -ENOMEM;
		goto err;
	}
	l->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (l->fd < 0) {
		rc = -errno;
		goto err_free;
	}
	if (connect(l->fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK)) {
		rc = -errno;
		goto err_close;
	}

	deadline = link_now_ms() + TG_LINK_HELLO_MS;
	hello = json_pack("{s:s, s:s, s:i}", "op", "hello", "gateway", gateway_name, "pid",
			  (int)getpid());
	if (!hello) {
		rc = -ENOMEM;
		goto err_close;
	}
	send_rc = link_send(l, hello, deadline);
	json_decref(hello);
	/* A refusal (permission) may already be waiting even if send failed. */
	for (;;) {
		rc = link_recv(l, &m, send_rc ? link_now_ms() : deadline);
		if (rc <= 0) {
			rc = send_rc ? send_rc : rc == 0 ? -ETIMEDOUT : rc;
			goto err_close;
		}
		if (json_is_string(json_object_get(m, "op")) &&
		    strcmp(json_string_value(json_object_get(m, "op")), "hello") == 0)
			break;
		link_push_add(l, m);
	}
	if (!json_is_true(json_object_get(m, "ok"))) {
		rc = link_hello_errno(m);
		json_decref(m);
		goto err_close;
	}
	l->hello = m;
	return l;

err_close:
	close(l->fd);
err_free:
	while (l->push_count--)
		json_decref(l->pushq[(l->push_head + l->push_count) % TG_LINK_PUSHQ_MAX]);
	free(l);
err:
	if (err)
		*err = rc;
	return NULL;
}

const json_t *tg_link_hello(const struct tg_link *link)
{
	return link ? link->hello : NULL;
}

int tg_link_request(struct tg_link *l, json_t *req, json_t **reply, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : link_now_ms() + timeout_ms;
	json_int_t seq;
	json_t *m;
	int rc;

	if (!l || !json_is_object(req) || !reply)
		return -EINVAL;
	*reply = NULL;
	seq = ++l->next_seq;
	if (json_object_set_new(req, "seq", json_integer(seq)))
		return -ENOMEM;
	rc = link_send(l, req, deadline);
	if (rc)
		return rc;
	for (;;) {
		const json_t *s;

		rc = link_recv(l, &m, deadline);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0)
			return rc;
		s = json_object_get(m, "seq");
		if (!s) {
			link_push_add(l, m);
			continue;
		}
		if (json_is_integer(s) && json_integer_value(s) == seq) {
			*reply = m;
			return 0;
		}
		json_decref(m); /* the late reply of a request that timed out */
	}
}

int tg_link_poll_push(struct tg_link *l, json_t **msg)
{
	json_t *m;
	int rc;

	if (!l || !msg)
		return -EINVAL;
	*msg = NULL;
	for (;;) {
		if (l->push_count) {
			*msg = l->pushq[l->push_head];
			l->push_head = (l->push_head + 1) % TG_LINK_PUSHQ_MAX;
			l->push_count--;
			return 1;
		}
		rc = link_recv(l, &m, link_now_ms());
		if (rc <= 0)
			return rc;
		if (json_object_get(m, "seq"))
			json_decref(m);
		else
			link_push_add(l, m);
	}
}

unsigned long tg_link_pushes_dropped(const struct tg_link *l)
{
	return l ? l->pushes_dropped : 0;
}

int tg_link_fd(const struct tg_link *l)
{
	return l ? l->fd : -1;
}

void tg_link_close(struct tg_link *l)
{
	if (!l)
		return;
	close(l->fd);
	while (l->push_count) {
		json_decref(l->pushq[l->push_head]);
		l->push_head = (l->push_head + 1) % TG_LINK_PUSHQ_MAX;
		l->push_count--;
	}
	json_decref(l->hello);
	free(l);
}
