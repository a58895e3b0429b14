/*
 * linkctl.c - tidegate-linkctl: speak the gateway link by hand. Sends one op
 * as a gateway would (through tg_link, the gateway's own client library) and
 * prints the reply as one JSON line; --listen prints the control plane's
 * pushes. It is how tests and people poke the control plane's gateway side
 * without a gateway, and how the gateway work checks its expectations.
 *
 * Fields are key=value (a string) or key:=JSON (a number, bool, object...),
 * the httpie convention, so an all-digit hex id stays a string; a whole
 * JSON object may be given instead.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "link_client.h"

#ifndef TG_VERSION
#define TG_VERSION "unknown"
#endif

#define PROG "tidegate-linkctl"

enum { EX_OK = 0, EX_REFUSED = 1, EX_USAGE = 2, EX_UNREACHABLE = 3 };

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: " PROG " [--socket PATH] [--gateway NAME] [--timeout MS] [--listen SECS]\n"
		"                        [OP [FIELD=STRING | FIELD:=JSON | JSON-OBJECT]...]\n"
		"\n"
		"Send one gateway-link op to tidegate-control as gateway NAME and print the\n"
		"reply as one JSON line (docs/control.md, \"Gateway link\").\n"
		"\n"
		"  OP                 register, auth, lease, commit, release, policy,\n"
		"                     backup.record, restore.authorize...; \"hello\" prints the\n"
		"                     hello reply\n"
		"  FIELD=STRING       a string field:  org=acme device_id=00ff...\n"
		"  FIELD:=JSON        any JSON value:  bytes:=1048576 admin:=true\n"
		"  --socket PATH      gateway socket (default: $TIDEGATE_GATEWAY_SOCKET or\n"
		"                     /run/tidegate/gateway.sock)\n"
		"  --gateway NAME     gateway name to say hello with (default: linkctl-PID)\n"
		"  --timeout MS       wait at most MS for the reply (default 10000)\n"
		"  --listen SECS      then print every push (org_update...) for SECS seconds\n"
		"  -h, --help         print this help\n"
		"\n"
		"Exit status: 0 ok, 1 the control plane refused (\"ok\": false), 2 usage\n"
		"error, 3 cannot reach the control plane or no reply in time.\n");
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see --help)\n");
	return EX_USAGE;
}

static bool parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Adds one FIELD=STRING, FIELD:=JSON or {...} argument to req. */
static int add_field(json_t *req, const char *arg)
{
	const char *eq = strchr(arg, '=');
	json_t *v;
	char key[128];
	size_t klen;

	if (arg[0] == '{') {
		v = json_loads(arg, 0, NULL);
		if (!json_is_object(v)) {
			json_decref(v);
			return bad_usage("'%s' is not a JSON object", arg);
		}
		json_object_update(req, v);
		json_decref(v);
		return 0;
	}
	if (!eq || eq == arg)
		return bad_usage("'%s' is not FIELD=STRING or FIELD:=JSON", arg);
	klen = (size_t)(eq - arg);
	if (eq[-1] == ':')
		klen--;
	if (klen == 0 || klen >= sizeof(key))
		return bad_usage("bad field name in '%s'", arg);
	memcpy(key, arg, klen);
	key[klen] = '\0';
	if (eq[-1] == ':') {
		v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
		if (!v)
			return bad_usage("the value in '%s' is not JSON", arg);
	} else {
		v = json_string(eq + 1);
		if (!v)
			return bad_usage("the value in '%s' is not UTF-8", arg);
	}
	json_object_set_new(req, key, v);
	return 0;
}

static void print_json(const json_t *m)
{
	char *s = json_dumps(m, JSON_COMPACT);

	if (s) {
		printf("%s\n", s);
		fflush(stdout);
	}
	free(s);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Print pushes until deadline; 0, or EX_UNREACHABLE if the link broke. */
static int listen_pushes(struct tg_link *link, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = tg_link_fd(link), .events = POLLIN };
		json_t *m;
		int64_t left;
		int rc;

		while ((rc = tg_link_poll_push(link, &m)) == 1) {
			print_json(m);
			json_decref(m);
		}
		if (rc < 0) {
			fprintf(stderr, PROG ": link closed: %s\n", strerror(-rc));
			return EX_UNREACHABLE;
		}
		left = deadline - now_ms();
		if (left <= 0)
			return EX_OK;
		if (poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left) < 0 && errno != EINTR) {
			fprintf(stderr, PROG ": poll: %s\n", strerror(errno));
			return EX_UNREACHABLE;
		}
	}
}

int main(int argc, char **argv)
{
	const char *sock = getenv("TIDEGATE_GATEWAY_SOCKET");
	const char *gateway = NULL, *op = NULL;
	char defname[32];
	long timeout = 10000, listen_s = -1;
	struct tg_link *link;
	json_t *req, *reply = NULL;
	int i, rc, err = 0, ex = EX_OK;

	if (!sock || !*sock)
		sock = "/run/tidegate/gateway.sock";
	req = json_object();
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			json_decref(req);
			return EX_OK;
		}
		if (strcmp(a, "--version") == 0) {
			printf(PROG " %s\n", TG_VERSION);
			json_decref(req);
			return EX_OK;
		}
		if (strncmp(a, "--", 2) == 0 && !op) {
			const char *v = i + 1 < argc ? argv[i + 1] : NULL;

			if (strcmp(a, "--socket") && strcmp(a, "--gateway") && strcmp(a, "--timeout") &&
			    strcmp(a, "--listen")) {
				json_decref(req);
				return bad_usage("unknown option '%s'", a);
			}
			if (!v) {
				json_decref(req);
				return bad_usage("%s needs a value", a);
			}
			i++;
			if (strcmp(a, "--socket") == 0)
				sock = v;
			else if (strcmp(a, "--gateway") == 0)
				gateway = v;
			else if (strcmp(a, "--timeout") == 0 && !parse_long(v, 1, 3600000, &timeout)) {
				json_decref(req);
				return bad_usage("--timeout: '%s' is not 1..3600000 ms", v);
			} else if (strcmp(a, "--listen") == 0 && !parse_long(v, 0, 86400, &listen_s)) {
				json_decref(req);
				return bad_usage("--listen: '%s' is not 0..86400 seconds", v);
			}
			continue;
		}
		if (!op) {
			op = a;
			continue;
		}
		if (add_field(req, a)) {
			json_decref(req);
			return EX_USAGE;
		}
	}
	if (!op && listen_s < 0) {
		usage(stderr);
		json_decref(req);
		return EX_USAGE;
	}
	if (!gateway) {
		snprintf(defname, sizeof(defname), "linkctl-%d", (int)getpid());
		gateway = defname;
	}

	link = tg_link_connect(sock, gateway, &err);
	if (!link) {
		const char *why = strerror(-err);

		if (err == -EACCES)
			why = "permission denied (not root and not in the admin group)";
		else if (err == -EADDRINUSE)
			why = "a gateway with this name is connected already";
		else if (err == -EAGAIN)
			why = "the control plane has not reached Redis yet; retry";
		else if (err == -EINVAL)
			why = "bad gateway name (1..64 bytes of [A-Za-z0-9._-])";
		fprintf(stderr, PROG ": %s: %s\n", sock, why);
		json_decref(req);
		return err == -EINVAL ? EX_USAGE : EX_UNREACHABLE;
	}

	if (op && strcmp(op, "hello") == 0) {
		print_json(tg_link_hello(link));
	} else if (op) {
		json_object_set_new(req, "op", json_string(op));
		rc = tg_link_request(link, req, &reply, (int)timeout);
		if (rc) {
			fprintf(stderr, PROG ": %s: %s\n", op,
				rc == -ETIMEDOUT ? "no reply in time" : strerror(-rc));
			ex = rc == -EMSGSIZE ? EX_USAGE : EX_UNREACHABLE;
			goto out;
		}
		print_json(reply);
		if (!json_is_true(json_object_get(reply, "ok")))
			ex = EX_REFUSED;
	}
	if (listen_s >= 0) {
		rc = listen_pushes(link, now_ms() + listen_s * 1000);
		if (rc)
			ex = rc;
	}
out:
	json_decref(reply);
	json_decref(req);
	tg_link_close(link);
	return ex;
}
