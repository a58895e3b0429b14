/*
 * ctl.c - tidegate-ctl, the provider's command line for tidegate-control
 * (docs/control.md, "tidegate-ctl"). One subcommand per admin command: it
 * turns words and flags into one JSON request on the admin socket, waits for
 * the one-line reply, and prints tables for people or, with --json, the raw
 * result for scripts.
 *
 * Values are checked here only as far as the request's shape needs (a seat
 * count is a number); what is a valid quota, policy or name is the control
 * plane's decision, so the rules live in one place and the error a person
 * sees is the daemon's, with its code.
 *
 * Exit status: 0 ok, 1 refused by the control plane, 2 usage (nothing sent),
 * 3 cannot reach the admin socket (or no reply in time), 4 unavailable (Redis
 * down), 5 permission denied.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#ifndef TG_VERSION
#define TG_VERSION "unknown"
#endif

#define PROG "tidegate-ctl"
#define REPLY_MAX (256u << 20) /* billing of a very large provider still fits */

enum { EX_OK, EX_REFUSED, EX_USAGE, EX_UNREACHABLE, EX_UNAVAILABLE, EX_DENIED };

struct ctl {
	const char *socket;
	double timeout_s;
	bool json;
};

struct cmd;
typedef int (*cmd_fn)(struct ctl *x, const struct cmd *c, int argc, char **argv);

struct cmd {
	const char *group;   /* "org", or NULL for a one-word command */
	const char *name;
	const char *args;    /* usage after the command words */
	const char *summary;
	const char *help;    /* more, for COMMAND --help */
	cmd_fn run;
};

/* ---- errors and usage ---- */

static const char *or_str(const char *a, const char *b)
{
	return a ? a : b;
}

static int usage_err(const struct cmd *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int usage_err(const struct cmd *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (c)
		fprintf(stderr, "\nUsage: " PROG " %s%s%s %s\n(see '" PROG " %s%s%s --help')\n",
			c->group ? c->group : "", c->group ? " " : "", c->name, c->args,
			c->group ? c->group : "", c->group ? " " : "", c->name);
	else
		fprintf(stderr, " (see '" PROG " --help')\n");
	return EX_USAGE;
}

/* ---- the admin socket ---- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short ev, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int64_t left = deadline - now_ms();
	int rc;

	if (left <= 0)
		return 0;
	rc = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
	if (rc < 0 && errno == EINTR)
		return 1;
	return rc;
}

static int unreachable(const struct ctl *x, const char *what)
{
	fprintf(stderr, PROG ": cannot reach %s: %s\n", x->socket, what);
	return EX_UNREACHABLE;
}

/*
 * Send {"cmd", "args"} (args is stolen) and read the reply line. 0 and
 * *result (new reference), or the exit code after printing why.
 */
static int ctl_call(struct ctl *x, const char *cmd, json_t *args, json_t **result)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t deadline = now_ms() + (int64_t)(x->timeout_s * 1000.0);
	json_t *req, *reply = NULL, *err;
	char *line = NULL, *buf = NULL, *nl = NULL;
	size_t len = 0, cap = 0, off = 0;
	const char *code;
	int fd = -1, ex = EX_UNREACHABLE;
	char tmo[64];

	*result = NULL;
	req = json_pack("{s:s, s:o}", "cmd", cmd, "args", args ? args : json_object());
	line = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!line) {
		fprintf(stderr, PROG ": out of memory\n");
		return EX_USAGE;
	}
	len = strlen(line);
	line[len] = '\n'; /* json_dumps' NUL becomes the frame's newline */
	len++;
	snprintf(tmo, sizeof(tmo), "no reply within %g s (--timeout)", x->timeout_s);

	if (strlen(x->socket) >= sizeof(sa.sun_path)) {
		ex = unreachable(x, "socket path too long");
		goto out;
	}
	memcpy(sa.sun_path, x->socket, strlen(x->socket) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ex = unreachable(x, strerror(errno));
		goto out;
	}
	while (off < len) {
		ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);

		if (n >= 0) {
			off += (size_t)n;
		} else if (errno == EAGAIN || errno == EINTR) {
			if (wait_fd(fd, POLLOUT, deadline) == 0) {
				ex = unreachable(x, tmo);
				goto out;
			}
		} else {
			break; /* the daemon may have refused us already: read why */
		}
	}

	off = 0;
	for (;;) {
		ssize_t n;

		if (cap - off < 65536) {
			char *nb;

			if (cap >= REPLY_MAX) {
				ex = unreachable(x, "reply too large");
				goto out;
			}
			cap = cap ? cap * 2 : 65536;
			nb = realloc(buf, cap + 1);
			if (!nb) {
				ex = unreachable(x, "out of memory");
				goto out;
			}
			buf = nb;
		}
		n = recv(fd, buf + off, cap - off, 0);
		if (n > 0) {
			nl = memchr(buf + off, '\n', (size_t)n);
			off += (size_t)n;
			if (nl)
				break;
		} else if (n == 0) {
			ex = unreachable(x, "connection closed without a reply");
			goto out;
		} else if (errno == EAGAIN || errno == EINTR) {
			if (wait_fd(fd, POLLIN, deadline) == 0) {
				ex = unreachable(x, tmo);
				goto out;
			}
		} else {
			ex = unreachable(x, strerror(errno));
			goto out;
		}
	}

	reply = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
	if (!json_is_object(reply) || !json_is_boolean(json_object_get(reply, "ok"))) {
		ex = unreachable(x, "malformed reply");
		goto out;
	}
	if (json_is_true(json_object_get(reply, "ok"))) {
		*result = json_object_get(reply, "result");
		*result = *result ? json_incref(*result) : json_object();
		ex = EX_OK;
		goto out;
	}
	err = json_object_get(reply, "error");
	code = json_string_value(json_object_get(err, "code"));
	fprintf(stderr, PROG ": %s: %s\n", code ? code : "error",
		or_str(json_string_value(json_object_get(err, "message")), "(no message)"));
	ex = !code ? EX_REFUSED :
	     strcmp(code, "unavailable") == 0 ? EX_UNAVAILABLE :
	     strcmp(code, "permission_denied") == 0 ? EX_DENIED : EX_REFUSED;
out:
	if (fd >= 0)
		close(fd);
	json_decref(reply);
	free(buf);
	free(line);
	return ex;
}

/* ---- formatting ---- */

static int64_t jint(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);

	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v))
		return (int64_t)json_real_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

static const char *fmt_size(int64_t v, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double d = (double)v;
	int u = 0;

	if (v < 1024 && v > -1024) {
		snprintf(buf, len, "%lld B", (long long)v);
		return buf;
	}
	while (fabs(d) >= 1024.0 && u < 6) {
		d /= 1024.0;
		u++;
	}
	snprintf(buf, len, "%.1f", d);
	if (strlen(buf) > 2 && strcmp(buf + strlen(buf) - 2, ".0") == 0)
		buf[strlen(buf) - 2] = '\0';
	snprintf(buf + strlen(buf), len - strlen(buf), " %s", units[u]);
	return buf;
}

static const char *fmt_limit(int64_t v, char *buf, size_t len)
{
	if (v < 0)
		return "unlimited";
	if (v == 0)
		return "disabled";
	return fmt_size(v, buf, len);
}

/* Timestamps: integers in seconds or milliseconds since 1970, or text. */
static const char *fmt_time(const json_t *v, char *buf, size_t len)
{
	long long t;
	time_t s;
	struct tm tm;

	if (json_is_string(v))
		return json_string_value(v);
	if (!json_is_integer(v) && !json_is_real(v))
		return "-";
	t = json_is_integer(v) ? json_integer_value(v) : (long long)json_real_value(v);
	if (t > 100000000000LL) /* past year 5138 in seconds: it is milliseconds */
		t /= 1000;
	s = (time_t)t;
	if (!gmtime_r(&s, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, len, "%lld", t);
	return buf;
}

/* quota_fill may be a fraction (0.42) or a percentage (42): shown as 42%. */
static const char *fmt_fill(const json_t *o, char *buf, size_t len)
{
	const json_t *v = json_object_get(o, "quota_fill");
	double f;

	if (json_is_number(v)) {
		f = json_number_value(v);
	} else {
		int64_t q = jint(o, "quota");

		f = q > 0 ? (double)jint(o, "used_bytes") / (double)q : 0.0;
	}
	snprintf(buf, len, "%.0f%%", f * 100.0);
	return buf;
}

static const char *fmt_ratio(const json_t *v, char *buf, size_t len)
{
	snprintf(buf, len, "%.2fx", json_is_number(v) ? json_number_value(v) : 1.0);
	return buf;
}

static const char *fmt_json(const json_t *v, char *buf, size_t len)
{
	char *s;

	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_true(v))
		return "yes";
	if (json_is_false(v))
		return "no";
	if (!v || json_is_null(v))
		return "-";
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	snprintf(buf, len, "%s", s ? s : "?");
	free(s);
	return buf;
}

static void print_json(const json_t *v)
{
	char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);

	if (s)
		printf("%s\n", s);
	free(s);
}

/* ---- tables ---- */

#define TABLE_COLS 10

struct table {
	int ncols;
	const char *hdr[TABLE_COLS];
	bool right[TABLE_COLS];
	char **cells; /* nrows * ncols */
	size_t nrows, cap;
};

static void table_row(struct table *t, ...)
{
	va_list ap;

	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **c = realloc(t->cells, cap * (size_t)t->ncols * sizeof(*c));

		if (!c)
			return;
		t->cells = c;
		t->cap = cap;
	}
	va_start(ap, t);
	for (int i = 0; i < t->ncols; i++) {
		const char *s = va_arg(ap, const char *);

		t->cells[t->nrows * (size_t)t->ncols + (size_t)i] = strdup(s ? s : "-");
	}
	va_end(ap);
	t->nrows++;
}

static void table_print(struct table *t, const char *empty)
{
	size_t w[TABLE_COLS] = { 0 };

	if (t->nrows == 0) {
		printf("%s\n", empty);
		return;
	}
	for (int i = 0; i < t->ncols; i++)
		w[i] = strlen(t->hdr[i]);
	for (size_t r = 0; r < t->nrows; r++)
		for (int i = 0; i < t->ncols; i++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];

			if (s && strlen(s) > w[i])
				w[i] = strlen(s);
		}
	for (size_t r = 0; r <= t->nrows; r++) {
		for (int i = 0; i < t->ncols; i++) {
			const char *s = r == 0 ? t->hdr[i] : t->cells[(r - 1) * (size_t)t->ncols + (size_t)i];
			bool last = i == t->ncols - 1;

			if (!s)
				s = "?";
			if (t->right[i])
				printf("%*s%s", (int)w[i], s, last ? "" : "  ");
			else if (last)
				printf("%s", s);
			else
				printf("%-*s  ", (int)w[i], s);
		}
		printf("\n");
	}
	for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
}

/* ---- key/value views ---- */

enum kv_kind { KV_STR, KV_INT, KV_SIZE, KV_LIMIT, KV_BOOL, KV_TIME, KV_SEATS, KV_ALERT, KV_USED };

struct kv {
	const char *key;
	const char *label;
	enum kv_kind kind;
};

static const struct kv org_view[] = {
	{ "name", "Name", KV_STR },
	{ "guid", "GUID", KV_STR },
	{ "state", "State", KV_STR },
	{ "hosted", "Hosted", KV_BOOL },
	{ "policy", "Policy", KV_STR },
	{ "max_seats", "Seats", KV_SEATS },
	{ "quota", "Quota", KV_SIZE },
	{ "used_bytes", "Used", KV_USED },
	{ "reserved_bytes", "Reserved", KV_SIZE },
	{ "alert_level", "Alert", KV_ALERT },
	{ "restore_limit_user", "Restore limit, user", KV_LIMIT },
	{ "restore_limit_admin", "Restore limit, admin", KV_LIMIT },
	{ "terms_accepted", "Terms accepted", KV_BOOL },
	{ "contact_name", "Contact name", KV_STR },
	{ "contact_email", "Contact email", KV_STR },
	{ "contact_phone", "Contact phone", KV_STR },
	{ "bytes_received", "Received", KV_SIZE },
	{ "bytes_unique", "Unique", KV_SIZE },
	{ "bytes_stored", "Stored", KV_SIZE },
	{ "chunks", "Chunks", KV_INT },
	{ "dup_chunks", "Duplicate chunks", KV_INT },
	{ "key_id", "Key id", KV_STR },
	{ "created", "Created", KV_TIME },
	{ NULL, NULL, KV_STR },
};

static const struct kv device_view[] = {
	{ "name", "Name", KV_STR },
	{ "id", "Id", KV_STR },
	{ "role", "Role", KV_STR },
	{ "relay", "Relayed", KV_BOOL },
	{ "created", "Created", KV_TIME },
	{ NULL, NULL, KV_STR },
};

static const struct kv provider_view[] = {
	{ "guid", "Provider GUID", KV_STR },
	{ "created", "Created", KV_TIME },
	{ "redis", "Redis", KV_STR },
	{ "bad_key_attempts", "Bad key attempts", KV_INT },
	{ "rate_limited", "Rate limited", KV_INT },
	{ NULL, NULL, KV_STR },
};

static bool kv_known(const struct kv *view, const char *key)
{
	if (strcmp(key, "seats_used") == 0 || strcmp(key, "registration_key") == 0)
		return true;
	for (const struct kv *k = view; k->key; k++)
		if (strcmp(k->key, key) == 0)
			return true;
	return false;
}

static void kv_line(const char *label, const char *value)
{
	printf("  %-22s %s\n", label, value);
}

/* Known fields in a fixed order, then whatever else the daemon sent. */
static void print_kv(const json_t *o, const struct kv *view)
{
	char a[96], b[96], line[256];
	const char *key;
	json_t *v;

	for (const struct kv *k = view; k->key; k++) {
		v = json_object_get(o, k->key);
		if (!v)
			continue;
		switch (k->kind) {
		case KV_INT:
			snprintf(line, sizeof(line), "%lld", (long long)jint(o, k->key));
			break;
		case KV_SIZE:
			snprintf(line, sizeof(line), "%s (%lld bytes)",
				 fmt_size(jint(o, k->key), a, sizeof(a)), (long long)jint(o, k->key));
			break;
		case KV_USED:
			snprintf(line, sizeof(line), "%s (%s of quota)",
				 fmt_size(jint(o, k->key), a, sizeof(a)), fmt_fill(o, b, sizeof(b)));
			break;
		case KV_LIMIT:
			snprintf(line, sizeof(line), "%s", fmt_limit(jint(o, k->key), a, sizeof(a)));
			break;
		case KV_TIME:
			snprintf(line, sizeof(line), "%s", fmt_time(v, a, sizeof(a)));
			break;
		case KV_SEATS:
			snprintf(line, sizeof(line), "%lld used of %lld",
				 (long long)jint(o, "seats_used"), (long long)jint(o, k->key));
			break;
		case KV_ALERT:
			if (jint(o, k->key) == 0)
				snprintf(line, sizeof(line), "none");
			else
				snprintf(line, sizeof(line), "%lld%% of quota reached",
					 (long long)jint(o, k->key));
			break;
		case KV_STR:
		case KV_BOOL:
			snprintf(line, sizeof(line), "%s", fmt_json(v, a, sizeof(a)));
			break;
		}
		kv_line(k->label, line);
	}
	json_object_foreach((json_t *)o, key, v) {
		if (!kv_known(view, key))
			kv_line(key, fmt_json(v, line, sizeof(line)));
	}
}

/* ---- argument parsing ---- */

enum flag_type { F_INT, F_SIZE, F_STR, F_BOOL };

struct flag {
	const char *name;   /* without "--" */
	const char *field;  /* JSON field */
	enum flag_type type;
};

/* Organization fields as flags; --max-seats is --seats by its field's name. */
static const struct flag org_flags[] = {
	{ "seats", "max_seats", F_INT },
	{ "max-seats", "max_seats", F_INT },
	{ "quota", "quota", F_SIZE },
	{ "guid", "guid", F_STR },
	{ "name", "name", F_STR },
	{ "hosted", "hosted", F_BOOL },
	{ "contact-name", "contact_name", F_STR },
	{ "contact-email", "contact_email", F_STR },
	{ "contact-phone", "contact_phone", F_STR },
	{ "restore-limit-user", "restore_limit_user", F_SIZE },
	{ "restore-limit-admin", "restore_limit_admin", F_SIZE },
	{ "policy", "policy", F_STR },
	{ "terms-accepted", "terms_accepted", F_BOOL },
	{ NULL, NULL, F_STR },
};

static const struct flag role_flags[] = {
	{ "role", "role", F_STR },
	{ NULL, NULL, F_STR },
};

static const struct flag format_flags[] = {
	{ "format", "format", F_STR },
	{ NULL, NULL, F_STR },
};

static bool parse_i64(const char *s, int64_t *v)
{
	char *end;
	long long x;

	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return false;
	*v = x;
	return true;
}

static int parse_bool(const char *s, bool *b)
{
	if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "1") || !strcmp(s, "on"))
		*b = true;
	else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "0") || !strcmp(s, "off"))
		*b = false;
	else
		return -1;
	return 0;
}

/*
 * Flags (from flags, except those named in deny) go into args; the rest are
 * positional, at most maxpos of them. Booleans: --x, --no-x, --x=BOOL.
 * Returns 0 or EX_USAGE (message printed).
 */
static int parse_args(const struct cmd *c, int argc, char **argv, const struct flag *flags,
		      const char *const *deny, json_t *args, const char **pos, int maxpos,
		      int *npos)
{
	bool dashdash = false;

	*npos = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *eq, *value = NULL;
		const struct flag *f = NULL;
		char name[64];
		bool negated = false;
		size_t n;
		json_t *v;

		if (dashdash || strncmp(a, "--", 2) != 0 || a[2] == '\0') {
			if (!dashdash && strcmp(a, "--") == 0) {
				dashdash = true;
				continue;
			}
			if (*npos >= maxpos)
				return usage_err(c, "unexpected argument '%s'", a);
			pos[(*npos)++] = a;
			continue;
		}
		a += 2;
		eq = strchr(a, '=');
		n = eq ? (size_t)(eq - a) : strlen(a);
		if (n >= sizeof(name))
			return usage_err(c, "unknown option '--%.40s'", a);
		memcpy(name, a, n);
		name[n] = '\0';
		for (const struct flag *g = flags; g && g->name; g++)
			if (strcmp(g->name, name) == 0 ||
			    (g->type == F_BOOL && strncmp(name, "no-", 3) == 0 &&
			     strcmp(g->name, name + 3) == 0)) {
				f = g;
				negated = strcmp(g->name, name) != 0;
			}
		for (const char *const *d = deny; f && d && *d; d++)
			if (strcmp(*d, f->name) == 0)
				f = NULL;
		if (!f)
			return usage_err(c, "unknown option '--%s'", name);
		if (json_object_get(args, f->field))
			return usage_err(c, "--%s given twice", f->name);
		if (eq)
			value = eq + 1;
		else if (f->type != F_BOOL) {
			if (i + 1 >= argc)
				return usage_err(c, "--%s needs a value", f->name);
			value = argv[++i];
		}
		switch (f->type) {
		case F_BOOL: {
			bool b = true;

			if (value && (negated || parse_bool(value, &b)))
				return usage_err(c, "--%s: '%s' is not true or false", name, value);
			v = json_boolean(negated ? false : b);
			break;
		}
		case F_INT: {
			int64_t x;

			if (!parse_i64(value, &x))
				return usage_err(c, "--%s: '%s' is not a number", f->name, value);
			v = json_integer(x);
			break;
		}
		case F_SIZE: {
			int64_t x;

			/* Plain numbers go as integers; "500G", "unlimited" as text for
			 * the control plane to judge. */
			v = parse_i64(value, &x) ? json_integer(x) : json_string(value);
			break;
		}
		default:
			v = json_string(value);
			break;
		}
		if (!v)
			return usage_err(c, "--%s: '%s' is not valid UTF-8", f->name, value);
		json_object_set_new(args, f->field, v);
	}
	return 0;
}

/* Positional arguments exactly: names of what is missing come from c->args. */
static int want_pos(const struct cmd *c, int npos, int min)
{
	if (npos < min)
		return usage_err(c, "missing argument");
	return 0;
}

/* ---- commands ---- */

static void print_key_block(const char *org, const json_t *r)
{
	const char *key = json_string_value(json_object_get(r, "registration_key"));

	if (!key)
		return;
	printf("\nRegistration key (shown only this once):\n\n"
	       "    %s\n\n"
	       "Copy it now and give it to the customer: it cannot be shown again.\n"
	       "'" PROG " key rotate %s' replaces it with a new one.\n",
	       key, org);
}

static int run_simple(struct ctl *x, const char *cmd, json_t *args, json_t **res)
{
	int ex = ctl_call(x, cmd, args, res);

	if (ex == EX_OK && x->json) {
		print_json(*res);
		json_decref(*res);
		*res = NULL;
	}
	return ex;
}

static int cmd_org_add(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	static const char *const deny[] = { "name", NULL };
	json_t *args = json_object(), *r;
	const char *pos[1];
	int npos, ex;

	ex = parse_args(c, argc, argv, org_flags, deny, args, pos, 1, &npos);
	if (!ex)
		ex = want_pos(c, npos, 1);
	if (!ex && !json_object_get(args, "max_seats"))
		ex = usage_err(c, "--seats is required");
	if (!ex && !json_object_get(args, "quota"))
		ex = usage_err(c, "--quota is required");
	if (ex) {
		json_decref(args);
		return ex;
	}
	json_object_set_new(args, "name", json_string(pos[0]));
	ex = run_simple(x, "org.add", args, &r);
	if (ex || !r)
		return ex;
	printf("Added organization '%s'.\n", pos[0]);
	print_kv(r, org_view);
	print_key_block(pos[0], r);
	json_decref(r);
	return EX_OK;
}

static int cmd_org_list(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	struct table t = { .ncols = 8, .hdr = { "NAME", "GUID", "STATE", "SEATS", "USED", "QUOTA", "FILL",
				"POLICY" },
			   .right = { false, false, false, true, true, true, true, false } };
	json_t *args = json_object(), *r, *o;
	const char *pos[1];
	int npos, ex;
	size_t i;

	ex = parse_args(c, argc, argv, NULL, NULL, args, pos, 0, &npos);
	if (ex) {
		json_decref(args);
		return ex;
	}
	ex = run_simple(x, "org.list", args, &r);
	if (ex || !r)
		return ex;
	json_array_foreach(r, i, o) {
		char seats[48], used[32], quota[32], fill[16];

		snprintf(seats, sizeof(seats), "%lld/%lld", (long long)jint(o, "seats_used"),
			 (long long)jint(o, "max_seats"));
		table_row(&t, json_string_value(json_object_get(o, "name")),
			  json_string_value(json_object_get(o, "guid")),
			  json_string_value(json_object_get(o, "state")), seats,
			  fmt_size(jint(o, "used_bytes"), used, sizeof(used)),
			  fmt_size(jint(o, "quota"), quota, sizeof(quota)),
			  fmt_fill(o, fill, sizeof(fill)),
			  json_string_value(json_object_get(o, "policy")));
	}
	table_print(&t, "No organizations.");
	json_decref(r);
	return EX_OK;
}

/* org show|deactivate|reactivate|delete ORG, key rotate ORG. */
static int cmd_org_one(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	json_t *args = json_object(), *r;
	const char *pos[1];
	char cmd[48];
	int npos, ex;

	ex = parse_args(c, argc, argv, NULL, NULL, args, pos, 1, &npos);
	if (!ex)
		ex = want_pos(c, npos, 1);
	if (ex) {
		json_decref(args);
		return ex;
	}
	json_object_set_new(args, "org", json_string(pos[0]));
	snprintf(cmd, sizeof(cmd), "%s.%s", c->group, c->name);
	ex = run_simple(x, cmd, args, &r);
	if (ex || !r)
		return ex;
	if (strcmp(c->name, "delete") == 0) {
		printf("Deleted organization '%s'; its devices and keys are gone.\n", pos[0]);
	} else if (strcmp(c->name, "rotate") == 0) {
		printf("New registration key for '%s' (key id %s); the old key no longer works.\n",
		       pos[0], or_str(json_string_value(json_object_get(r, "key_id")), "?"));
		print_key_block(pos[0], r);
	} else {
		if (strcmp(c->name, "show") != 0)
			printf("Organization '%s' is now %s.\n", pos[0],
			       or_str(json_string_value(json_object_get(r, "state")), c->name));
		print_kv(r, org_view);
	}
	json_decref(r);
	return EX_OK;
}

static int cmd_org_set(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	static const char *const deny[] = { "guid", NULL };
	json_t *args = json_object(), *r;
	const char *pos[1];
	int npos, ex;

	ex = parse_args(c, argc, argv, org_flags, deny, args, pos, 1, &npos);
	if (!ex)
		ex = want_pos(c, npos, 1);
	if (!ex && json_object_size(args) == 0)
		ex = usage_err(c, "nothing to change: give at least one --field");
	if (ex) {
		json_decref(args);
		return ex;
	}
	json_object_set_new(args, "org", json_string(pos[0]));
	ex = run_simple(x, "org.set", args, &r);
	if (ex || !r)
		return ex;
	print_kv(r, org_view);
	json_decref(r);
	return EX_OK;
}

static int cmd_device_list(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	struct table t = { .ncols = 5, .hdr = { "NAME", "ID", "ROLE", "RELAY", "CREATED" } };
	json_t *args = json_object(), *r, *o;
	const char *pos[1];
	int npos, ex;
	size_t i;

	ex = parse_args(c, argc, argv, NULL, NULL, args, pos, 1, &npos);
	if (!ex)
		ex = want_pos(c, npos, 1);
	if (ex) {
		json_decref(args);
		return ex;
	}
	json_object_set_new(args, "org", json_string(pos[0]));
	ex = run_simple(x, "device.list", args, &r);
	if (ex || !r)
		return ex;
	json_array_foreach(r, i, o) {
		char when[64];

		table_row(&t, json_string_value(json_object_get(o, "name")),
			  json_string_value(json_object_get(o, "id")),
			  json_string_value(json_object_get(o, "role")),
			  json_is_true(json_object_get(o, "relay")) ? "yes" : "no",
			  fmt_time(json_object_get(o, "created"), when, sizeof(when)));
	}
	table_print(&t, "No devices.");
	json_decref(r);
	return EX_OK;
}

/* device release ORG DEVICE, device set ORG DEVICE --role R */
static int cmd_device_one(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	bool set = strcmp(c->name, "set") == 0;
	json_t *args = json_object(), *r;
	const char *pos[2];
	char cmd[48];
	int npos, ex;

	ex = parse_args(c, argc, argv, set ? role_flags : NULL, NULL, args, pos, 2, &npos);
	if (!ex)
		ex = want_pos(c, npos, 2);
	if (!ex && set && !json_object_get(args, "role"))
		ex = usage_err(c, "--role is required");
	if (ex) {
		json_decref(args);
		return ex;
	}
	json_object_set_new(args, "org", json_string(pos[0]));
	json_object_set_new(args, "device", json_string(pos[1]));
	snprintf(cmd, sizeof(cmd), "device.%s", c->name);
	ex = run_simple(x, cmd, args, &r);
	if (ex || !r)
		return ex;
	if (set)
		print_kv(r, device_view);
	else
		printf("Released device '%s' of '%s'; its seat is free.\n", pos[1], pos[0]);
	json_decref(r);
	return EX_OK;
}

/* usage [ORG], alerts [ORG] */
static int cmd_org_opt(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	json_t *args = json_object(), *r, *o;
	const char *pos[1];
	int npos, ex;
	size_t i;

	ex = parse_args(c, argc, argv, NULL, NULL, args, pos, 1, &npos);
	if (ex) {
		json_decref(args);
		return ex;
	}
	if (npos)
		json_object_set_new(args, "org", json_string(pos[0]));
	ex = run_simple(x, c->name, args, &r);
	if (ex || !r)
		return ex;
	if (strcmp(c->name, "usage") == 0) {
		struct table t = { .ncols = 8, .hdr = { "NAME", "SEATS", "RECEIVED", "STORED", "QUOTA", "FILL",
					"DEDUP", "COMPRESSION" },
				   .right = { false, true, true, true, true, true, true, true } };

		json_array_foreach(r, i, o) {
			char seats[48], rx[32], st[32], q[32], fill[16], dd[32], cr[32];

			snprintf(seats, sizeof(seats), "%lld/%lld", (long long)jint(o, "seats_used"),
				 (long long)jint(o, "max_seats"));
			table_row(&t, json_string_value(json_object_get(o, "name")), seats,
				  fmt_size(jint(o, "bytes_received"), rx, sizeof(rx)),
				  fmt_size(jint(o, "bytes_stored"), st, sizeof(st)),
				  fmt_size(jint(o, "quota"), q, sizeof(q)), fmt_fill(o, fill, sizeof(fill)),
				  fmt_ratio(json_object_get(o, "dedup_ratio"), dd, sizeof(dd)),
				  fmt_ratio(json_object_get(o, "compression_ratio"), cr, sizeof(cr)));
		}
		table_print(&t, "No organizations.");
	} else {
		struct table t = { .ncols = 5, .hdr = { "TIME", "NAME", "LEVEL", "USED", "QUOTA" },
				   .right = { false, false, true, true, true } };

		json_array_foreach(r, i, o) {
			char when[64], lvl[16], used[32], q[32];

			snprintf(lvl, sizeof(lvl), "%lld%%", (long long)jint(o, "level"));
			table_row(&t, fmt_time(json_object_get(o, "time"), when, sizeof(when)),
				  or_str(json_string_value(json_object_get(o, "name")),
					 json_string_value(json_object_get(o, "org"))), lvl,
				  fmt_size(jint(o, "used_bytes"), used, sizeof(used)),
				  fmt_size(jint(o, "quota"), q, sizeof(q)));
		}
		table_print(&t, "No alerts.");
	}
	json_decref(r);
	return EX_OK;
}

static int cmd_billing_export(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	json_t *args = json_object(), *r;
	const char *pos[1], *data;
	int npos, ex;

	ex = parse_args(c, argc, argv, format_flags, NULL, args, pos, 0, &npos);
	if (!ex && !json_object_get(args, "format"))
		ex = usage_err(c, "--format csv|json is required");
	if (ex) {
		json_decref(args);
		return ex;
	}
	ex = run_simple(x, "billing.export", args, &r);
	if (ex || !r)
		return ex;
	data = json_string_value(json_object_get(r, "data"));
	if (data) {
		fputs(data, stdout);
		if (*data && data[strlen(data) - 1] != '\n')
			putchar('\n');
	} else {
		print_json(json_object_get(r, "data"));
	}
	json_decref(r);
	return EX_OK;
}

/* Leases of one gateway: their count and the bytes they reserve. */
static void lease_summary(const json_t *leases, char *buf, size_t len)
{
	static const char *const amount[] = { "bytes", "granted", "reserved", "amount", NULL };
	char sz[32];
	int64_t total = 0;
	size_t i;
	json_t *l;

	if (!json_is_array(leases)) {
		snprintf(buf, len, json_is_null(leases) ? "unknown (Redis down)" : "-");
		return;
	}
	json_array_foreach(leases, i, l)
		for (const char *const *k = amount; *k; k++)
			if (json_object_get(l, *k)) {
				total += jint(l, *k);
				break;
			}
	snprintf(buf, len, "%zu (%s)", json_array_size(leases), fmt_size(total, sz, sizeof(sz)));
}

static int cmd_gateways(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	struct table t = { .ncols = 4, .hdr = { "NAME", "PID", "CONNECTED SINCE", "LEASES" },
			   .right = { false, true, false, false } };
	json_t *args = json_object(), *r, *o;
	const char *pos[1];
	int npos, ex;
	size_t i;

	ex = parse_args(c, argc, argv, NULL, NULL, args, pos, 0, &npos);
	if (ex) {
		json_decref(args);
		return ex;
	}
	ex = run_simple(x, "gateways", args, &r);
	if (ex || !r)
		return ex;
	json_array_foreach(r, i, o) {
		char pid[24], when[64], leases[64];

		snprintf(pid, sizeof(pid), "%lld", (long long)jint(o, "pid"));
		lease_summary(json_object_get(o, "leases"), leases, sizeof(leases));
		table_row(&t, json_string_value(json_object_get(o, "name")), pid,
			  fmt_time(json_object_get(o, "connected_since"), when, sizeof(when)), leases);
	}
	table_print(&t, "No gateways connected.");
	json_decref(r);
	return EX_OK;
}

static int cmd_provider_show(struct ctl *x, const struct cmd *c, int argc, char **argv)
{
	json_t *args = json_object(), *r;
	const char *pos[1];
	int npos, ex;

	ex = parse_args(c, argc, argv, NULL, NULL, args, pos, 0, &npos);
	if (ex) {
		json_decref(args);
		return ex;
	}
	ex = run_simple(x, "provider.show", args, &r);
	if (ex || !r)
		return ex;
	print_kv(r, provider_view);
	json_decref(r);
	return EX_OK;
}

#define ORG_FIELD_HELP                                                                      \
	"  --seats N                    maximum seats, 1..1000000 (also --max-seats)\n"    \
	"  --quota SIZE                 disk quota after dedup and compression\n"          \
	"  --hosted, --no-hosted        the customer runs its own server that relays\n"    \
	"  --contact-name S, --contact-email S, --contact-phone S\n"                        \
	"  --restore-limit-user SIZE    largest web restore for a user device\n"           \
	"  --restore-limit-admin SIZE   largest web restore for an admin device\n"         \
	"                               (0 disables restores, unlimited: no limit)\n"      \
	"  --policy P                   compress, ec:K+M or compress+ec:K+M\n"             \
	"  --terms-accepted, --no-terms-accepted\n"

static const struct cmd cmds[] = {
	{ "org", "add", "NAME --seats N --quota SIZE [--guid G] [--hosted] [--field VALUE]...",
	  "add an organization; prints its registration key (once)",
	  "Adds an organization and makes its registration key, which is printed\n"
	  "this once only. --guid is the customer's own GUID for a hosted organization\n"
	  "(made up otherwise).\n\n" ORG_FIELD_HELP
	  "  --guid G                     xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\n",
	  cmd_org_add },
	{ "org", "list", "", "list organizations", "", cmd_org_list },
	{ "org", "show", "ORG", "show one organization (by name or GUID)", "", cmd_org_one },
	{ "org", "set", "ORG --field VALUE...", "change an organization's fields",
	  "Changes the fields given; the GUID and the state cannot be set here.\n\n"
	  "  --name NAME                  rename\n" ORG_FIELD_HELP,
	  cmd_org_set },
	{ "org", "deactivate", "ORG", "deactivate: refuse its devices' sessions (data is kept)",
	  "", cmd_org_one },
	{ "org", "reactivate", "ORG", "reactivate a deactivated organization", "", cmd_org_one },
	{ "org", "delete", "ORG", "delete a deactivated organization, its devices and keys", "",
	  cmd_org_one },
	{ "key", "rotate", "ORG", "make a new registration key; the old one stops working",
	  "Registered devices keep working; only new registrations need the new key.\n",
	  cmd_org_one },
	{ "device", "list", "ORG", "list an organization's devices", "", cmd_device_list },
	{ "device", "release", "ORG DEVICE", "release a device (by name or id): frees its seat",
	  "The device's credential is revoked; it must register again.\n", cmd_device_one },
	{ "device", "set", "ORG DEVICE --role user|admin",
	  "set a device's role (selects its web-restore limit)", "", cmd_device_one },
	{ NULL, "usage", "[ORG]", "usage per organization: seats, bytes, ratios", "", cmd_org_opt },
	{ "billing", "export", "--format csv|json", "usage for billing, as CSV or JSON",
	  "Prints the export itself (CSV with a header row); --json prints the\n"
	  "result object around it.\n",
	  cmd_billing_export },
	{ NULL, "alerts", "[ORG]", "quota alerts (80, 90, 100 %), newest first", "", cmd_org_opt },
	{ NULL, "gateways", "", "connected gateways and their leases", "", cmd_gateways },
	{ "provider", "show", "", "provider GUID, Redis state, bad key attempts", "",
	  cmd_provider_show },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static void cmd_words(const struct cmd *c, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s", c->group ? c->group : "", c->group ? " " : "", c->name);
}

static void help_top(FILE *out, const char *group)
{
	char words[64], left[160];

	fprintf(out, "Usage: " PROG " [--socket PATH] [--json] [--timeout SECS] %s%sCOMMAND...\n\n",
		group ? group : "", group ? " " : "");
	if (!group)
		fprintf(out, "Administer tidegate-control: organizations, keys, devices, usage.\n\n");
	fprintf(out, "Commands:\n");
	for (size_t i = 0; i < NCMDS; i++) {
		const struct cmd *c = &cmds[i];

		if (group && (!c->group || strcmp(c->group, group)))
			continue;
		cmd_words(c, words, sizeof(words));
		snprintf(left, sizeof(left), "%s %s", words, c->args);
		if (strlen(left) > 30)
			snprintf(left, sizeof(left), "%s ...", words);
		fprintf(out, "  %-30s %s\n", left, c->summary);
	}
	fprintf(out,
		"\nOptions:\n"
		"  --socket PATH   admin socket (default: $TIDEGATE_ADMIN_SOCKET, else\n"
		"                  /run/tidegate/admin.sock)\n"
		"  --json          print the raw result as JSON instead of tables\n"
		"  --timeout SECS  wait at most SECS for the reply (default 10)\n"
		"  -h, --help      this help; '" PROG " COMMAND --help' for one command\n"
		"\n"
		"SIZE is a number of bytes or an integer with K, M, G, T or P (powers of\n"
		"1024): 500G. ORG is a name or a GUID.\n"
		"\n"
		"Exit status: 0 ok, 1 refused by the control plane, 2 usage error,\n"
		"3 cannot reach the admin socket, 4 unavailable (Redis down: retry later),\n"
		"5 permission denied.\n");
}

static void help_cmd(const struct cmd *c)
{
	char words[64];

	cmd_words(c, words, sizeof(words));
	printf("Usage: " PROG " [--socket PATH] [--json] [--timeout SECS] %s %s\n\n", words,
	       c->args);
	printf("%c%s.\n", c->summary[0] - ('a' <= c->summary[0] && c->summary[0] <= 'z' ? 32 : 0),
	       c->summary + 1);
	if (c->help[0])
		printf("\n%s", c->help);
	printf("\nSee '" PROG " --help' for the global options and exit status.\n");
}

static bool is_group(const char *w)
{
	for (size_t i = 0; i < NCMDS; i++)
		if (cmds[i].group && strcmp(cmds[i].group, w) == 0)
			return true;
	return false;
}

static const struct cmd *find_cmd(const char *group, const char *name)
{
	for (size_t i = 0; i < NCMDS; i++) {
		const struct cmd *c = &cmds[i];

		if (((!group && !c->group) || (group && c->group && !strcmp(group, c->group))) &&
		    name && strcmp(c->name, name) == 0)
			return c;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct ctl x = { .socket = getenv("TIDEGATE_ADMIN_SOCKET"), .timeout_s = 10.0 };
	char **rest = calloc((size_t)argc + 1, sizeof(*rest));
	const struct cmd *c;
	const char *group = NULL;
	bool help = false;
	int nrest = 0, first, ex;

	if (!rest)
		return EX_USAGE;
	if (!x.socket || !*x.socket)
		x.socket = "/run/tidegate/admin.sock";
	/* Global options may come anywhere before "--": `org list --json` works. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			while (i < argc)
				rest[nrest++] = argv[i++];
			break;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			help = true;
		} else if (strcmp(a, "--version") == 0) {
			printf(PROG " %s\n", TG_VERSION);
			free(rest);
			return EX_OK;
		} else if (strcmp(a, "--json") == 0) {
			x.json = true;
		} else if (!strcmp(a, "--socket") || !strncmp(a, "--socket=", 9) ||
			   !strcmp(a, "--timeout") || !strncmp(a, "--timeout=", 10)) {
			bool sock = a[2] == 's';
			const char *v = strchr(a, '=');

			if (v)
				v++;
			else if (i + 1 < argc)
				v = argv[++i];
			else {
				free(rest);
				return usage_err(NULL, "%s needs a value", a);
			}
			if (sock) {
				x.socket = v;
			} else {
				char *end;

				x.timeout_s = strtod(v, &end);
				if (end == v || *end || !(x.timeout_s > 0) || x.timeout_s > 86400) {
					free(rest);
					return usage_err(NULL, "--timeout: '%s' is not 0..86400 seconds", v);
				}
			}
		} else {
			rest[nrest++] = argv[i];
		}
	}

	if (nrest == 0) {
		help_top(help ? stdout : stderr, NULL);
		free(rest);
		return help ? EX_OK : EX_USAGE;
	}
	first = 1;
	if (is_group(rest[0])) {
		group = rest[0];
		if (nrest < 2 || rest[1][0] == '-') {
			free(rest);
			if (help) {
				help_top(stdout, group);
				return EX_OK;
			}
			help_top(stderr, group);
			return EX_USAGE;
		}
		c = find_cmd(group, rest[1]);
		first = 2;
	} else {
		c = find_cmd(NULL, rest[0]);
	}
	if (!c) {
		ex = usage_err(NULL, "unknown command '%s%s%s'", group ? group : "", group ? " " : "",
			       group ? rest[1] : rest[0]);
		free(rest);
		return ex;
	}
	if (help) {
		help_cmd(c);
		free(rest);
		return EX_OK;
	}
	ex = c->run(&x, c, nrest - first, rest + first);
	free(rest);
	fflush(stdout);
	return ex;
}
