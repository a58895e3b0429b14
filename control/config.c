/*
 * config.c - tidegate-control's options. One declarative table (the habit of
 * Redis's standardConfig table) drives the config file, the command-line
 * flags, --help, --print-config-example and --check-config: a new option is
 * one line below and every place that shows or reads options learns it at
 * once.
 *
 * Precedence: built-in default < config file < flag. Every error is fatal at
 * start and says where it came from ("FILE:LINE: ..." or "--flag: ..."): a
 * daemon that guesses what its config meant is worse than one that refuses
 * to start.
 *
 * The file is read with inih. Debian's libinih is built without line numbers
 * in the handler and with 200-byte lines, so we feed it through our own
 * reader, which counts lines, rejects longer ones instead of letting them be
 * split, and strips leading blanks so an indented line is never taken for a
 * continuation of the previous value.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "ctl.h"

#ifndef TG_VERSION
#define TG_VERSION "unknown"
#endif

#define CFG_PROG "tidegate-control"
#define CFG_WRAP 78

enum cfg_type {
	CFG_STR,      /* char[size]; length min..max */
	CFG_INT,      /* int; min..max */
	CFG_U32,      /* uint32_t; min..max */
	CFG_BYTES,    /* uint64_t; integer with an optional K/M/G/T/P (powers of 1024) */
	CFG_PERCENTS, /* uint32_t[3]; strictly ascending, each min..max */
	CFG_LOGLEVEL, /* int; syslog level by name or number, min..max */
};

struct cfg_opt {
	const char *name;    /* flag without "--", file key */
	enum cfg_type type;
	const char *metavar;
	const char *def;     /* parsed like any other value */
	int64_t min, max;
	size_t off, size;
	const char *help;
};

#define KiB (INT64_C(1) << 10)
#define MiB (INT64_C(1) << 20)
#define TiB (INT64_C(1) << 40)

#define OPT(n, t, mv, d, lo, hi, field, h)                                     \
	{ n, t, mv, d, lo, hi, offsetof(struct ctl_cfg, field),                \
	  sizeof(((struct ctl_cfg *)0)->field), h }

static const struct cfg_opt cfg_opts[] = {
	OPT("redis-host", CFG_STR, "HOST", "127.0.0.1", 1, 255, redis_host,
	    "Redis server: host name or IP address, or the path of its Unix socket "
	    "(starting with /; redis-port is then ignored)."),
	OPT("redis-port", CFG_INT, "PORT", "6379", 1, 65535, redis_port,
	    "Redis server TCP port."),
	OPT("redis-password", CFG_STR, "SECRET", "", 0, 255, redis_password,
	    "Password sent with AUTH; empty: no AUTH. If you set it here, keep this file "
	    "readable only by root and the daemon's group (mode 0640)."),
	OPT("redis-db", CFG_INT, "N", "0", 0, 65535, redis_db,
	    "Redis logical database (SELECT)."),
	OPT("redis-timeout-ms", CFG_INT, "MS", "2000", 10, 600000, redis_timeout_ms,
	    "Timeout for connecting to Redis and for each command, in milliseconds."),
	OPT("admin-socket", CFG_STR, "PATH", "/run/tidegate/admin.sock", 1, 107, admin_socket,
	    "Unix stream socket for tidegate-ctl, created with mode 0660."),
	OPT("gateway-socket", CFG_STR, "PATH", "/run/tidegate/gateway.sock", 1, 107,
	    gateway_socket,
	    "Unix SOCK_SEQPACKET socket for tidegate-gateway, created with mode 0660."),
	OPT("admin-group", CFG_STR, "GROUP", "tidegate", 1, 63, admin_group,
	    "Group whose members may use both sockets (the sockets are given to this "
	    "group); root always may."),
	OPT("lease-bytes", CFG_BYTES, "SIZE", "1G", MiB, TiB, lease_bytes,
	    "Quota bytes a gateway is granted per lease for one organization; K, M, G, T "
	    "are powers of 1024."),
	OPT("lease-ttl-ms", CFG_U32, "MS", "30000", 1000, 3600000, lease_ttl_ms,
	    "Lease lifetime in milliseconds. Gateways renew at half-life; the reservation "
	    "of a gateway that vanished comes back after this."),
	OPT("alert-levels", CFG_PERCENTS, "P1,P2,P3", "80,90,100", 1, 100, alert_levels,
	    "Quota fill percentages, ascending, that raise an alert when crossed upward."),
	OPT("log-level", CFG_LOGLEVEL, "LEVEL", "info", 3, 7, log_level,
	    "Least important message logged: err, warning, notice, info or debug (or the "
	    "syslog number 3..7)."),
};

#define CFG_NOPTS (sizeof(cfg_opts) / sizeof(cfg_opts[0]))

static const char *const cfg_level_names[] = {
	"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
};

/* Options are looked up with '_' and '-' alike and case-blind, so a file
 * written as redis_port or REDIS-PORT still means what it says. */
static const struct cfg_opt *cfg_find(const char *name)
{
	for (size_t i = 0; i < CFG_NOPTS; i++) {
		const char *a = cfg_opts[i].name, *b = name;

		for (; *a && *b; a++, b++) {
			int cb = *b == '_' ? '-' : tolower((unsigned char)*b);

			if (*a != cb)
				break;
		}
		if (!*a && !*b)
			return &cfg_opts[i];
	}
	return NULL;
}

static int cfg_parse_i64(const char *s, int64_t *v)
{
	char *end;
	long long x;

	if (!*s || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (end == s || *end)
		return -EINVAL;
	*v = x;
	return 0;
}

static int cfg_parse_bytes(const char *s, int64_t *v)
{
	static const char units[] = "KMGTP";
	char num[32];
	size_t n = strlen(s);
	int shift = 0;
	const char *u;
	int64_t x;
	int rc;

	if (n == 0 || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, n + 1);
	u = strchr(units, toupper((unsigned char)num[n - 1]));
	if (u && *u) {
		shift = 10 * (int)(u - units + 1);
		num[--n] = '\0';
	}
	rc = cfg_parse_i64(num, &x);
	if (rc)
		return rc;
	if (x < 0)
		return -EINVAL;
	if (shift && x > (INT64_MAX >> shift))
		return -ERANGE;
	*v = x << shift;
	return 0;
}

/* Sizes in the largest unit that divides them: 1M..1T, not 1048576..1099511627776. */
static void cfg_fmt_size(int64_t v, char *buf, size_t len)
{
	static const char units[] = "KMGTP";
	int u = -1;

	while (u < 4 && v != 0 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%" PRId64, v);
	else
		snprintf(buf, len, "%" PRId64 "%c", v, units[u]);
}

static void cfg_fmt_range(const struct cfg_opt *o, char *buf, size_t len)
{
	char lo[24], hi[24];

	if (o->type == CFG_BYTES) {
		cfg_fmt_size(o->min, lo, sizeof(lo));
		cfg_fmt_size(o->max, hi, sizeof(hi));
		snprintf(buf, len, "%s..%s", lo, hi);
	} else {
		snprintf(buf, len, "%" PRId64 "..%" PRId64, o->min, o->max);
	}
}

/* Parse one value into cfg; on error writes a message (without location). */
static int cfg_apply(struct ctl_cfg *cfg, const struct cfg_opt *o, const char *val,
		     char *msg, size_t msglen)
{
	void *field = (char *)cfg + o->off;
	char range[64];
	int64_t v = 0;
	int rc = 0;

	cfg_fmt_range(o, range, sizeof(range));
	switch (o->type) {
	case CFG_STR: {
		size_t n = strlen(val);

		if (n < (size_t)o->min || n > (size_t)o->max || n >= o->size) {
			snprintf(msg, msglen, "must be %" PRId64 "..%" PRId64 " bytes long, not %zu",
				 o->min, o->max, n);
			return -1;
		}
		for (size_t i = 0; i < n; i++) {
			if ((unsigned char)val[i] < 0x20 || val[i] == 0x7f) {
				snprintf(msg, msglen, "control characters are not allowed");
				return -1;
			}
		}
		memcpy(field, val, n + 1);
		return 0;
	}
	case CFG_INT:
	case CFG_U32:
		rc = cfg_parse_i64(val, &v);
		break;
	case CFG_BYTES:
		rc = cfg_parse_bytes(val, &v);
		if (rc == -EINVAL) {
			snprintf(msg, msglen,
				 "'%s' is not a size (an integer, optionally followed by K, M, G, T or P)",
				 val);
			return -1;
		}
		break;
	case CFG_LOGLEVEL:
		for (size_t i = 0; i < sizeof(cfg_level_names) / sizeof(cfg_level_names[0]); i++) {
			if (strcasecmp(val, cfg_level_names[i]) == 0) {
				v = (int64_t)i;
				goto check_range;
			}
		}
		rc = cfg_parse_i64(val, &v);
		if (rc == -EINVAL) {
			snprintf(msg, msglen,
				 "'%s' is not a level (err, warning, notice, info, debug or 3..7)", val);
			return -1;
		}
		break;
	case CFG_PERCENTS: {
		uint32_t out[3];
		const char *p = val;
		char item[24];

		for (int i = 0; i < 3; i++) {
			size_t n = strcspn(p, ",");

			while (n && isspace((unsigned char)*p)) {
				p++;
				n--;
			}
			while (n && isspace((unsigned char)p[n - 1]))
				n--;
			if (n == 0 || n >= sizeof(item))
				goto bad_percents;
			memcpy(item, p, n);
			item[n] = '\0';
			if (cfg_parse_i64(item, &v) || v < o->min || v > o->max)
				goto bad_percents;
			if (i > 0 && (uint32_t)v <= out[i - 1])
				goto bad_percents;
			out[i] = (uint32_t)v;
			p += strcspn(p, ",");
			if (i < 2) {
				if (*p != ',')
					goto bad_percents;
				p++;
			}
		}
		while (isspace((unsigned char)*p))
			p++;
		if (*p)
			goto bad_percents;
		memcpy(field, out, sizeof(out));
		return 0;
bad_percents:
		snprintf(msg, msglen,
			 "'%s' is not three ascending percentages %s separated by commas", val,
			 range);
		return -1;
	}
	}

	if (rc == -EINVAL) {
		snprintf(msg, msglen, "'%s' is not an integer", val);
		return -1;
	}
check_range:
	if (rc == -ERANGE || v < o->min || v > o->max) {
		snprintf(msg, msglen, "'%s' is out of range (%s)", val, range);
		return -1;
	}
	switch (o->type) {
	case CFG_INT:
	case CFG_LOGLEVEL:
		*(int *)field = (int)v;
		break;
	case CFG_U32:
		*(uint32_t *)field = (uint32_t)v;
		break;
	case CFG_BYTES:
		*(uint64_t *)field = (uint64_t)v;
		break;
	default:
		break;
	}
	return 0;
}

void ctl_cfg_defaults(struct ctl_cfg *cfg)
{
	char msg[256];

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < CFG_NOPTS; i++) {
		/* The table's defaults are parsed like user input, so a default
		 * outside its own bounds is caught by the first run of anything. */
		if (cfg_apply(cfg, &cfg_opts[i], cfg_opts[i].def, msg, sizeof(msg))) {
			fprintf(stderr, CFG_PROG ": built-in default of %s: %s\n",
				cfg_opts[i].name, msg);
			abort();
		}
	}
}

/* Word-wrap text to CFG_WRAP columns: the first line follows whatever the
 * caller printed (first columns wide), the others start with prefix. */
static void cfg_wrap(FILE *out, size_t first, const char *prefix, const char *text)
{
	size_t used = first;
	const char *p = text;

	while (*p) {
		size_t room = CFG_WRAP > used + 20 ? CFG_WRAP - used : 20;
		size_t n = strlen(p);

		if (n > room) {
			n = room;
			while (n > 0 && p[n] != ' ')
				n--;
			if (n == 0)
				n = strcspn(p, " ");
		}
		fprintf(out, "%.*s\n", (int)n, p);
		p += n;
		while (*p == ' ')
			p++;
		if (*p)
			fputs(prefix, out);
		used = strlen(prefix);
	}
}

static void cfg_print_help(FILE *out)
{
	char def[160], range[64], left[48];

	fprintf(out,
		"Usage: " CFG_PROG " [--config FILE] [--OPTION VALUE]...\n"
		"\n"
		"The tidegate control plane: keeps every organization's seats, quota and keys\n"
		"in Redis, answers tidegate-ctl on the admin socket and tidegate-gateway on the\n"
		"gateway link (docs/control.md).\n"
		"\n"
		"  --config FILE             read options from FILE (key = value); flags given\n"
		"                            on the command line override it\n"
		"  --print-config-example    print a config file with every option, then exit\n"
		"  --check-config            read the config file and flags, print the\n"
		"                            configuration they make (or the first error),\n"
		"                            then exit\n"
		"  -h, --help                print this help, then exit\n"
		"  --version                 print the version, then exit\n"
		"\n"
		"Options (each is also a config file key: the name without the dashes):\n");
	for (size_t i = 0; i < CFG_NOPTS; i++) {
		const struct cfg_opt *o = &cfg_opts[i];

		snprintf(left, sizeof(left), "  --%s %s", o->name, o->metavar);
		if (strlen(left) < 28)
			fprintf(out, "%-28s", left);
		else
			fprintf(out, "%s\n%-28s", left, "");
		cfg_wrap(out, 28, "                            ", o->help);
		if (o->type == CFG_STR)
			snprintf(def, sizeof(def), "default: %s",
				 o->def[0] ? o->def : "empty");
		else {
			cfg_fmt_range(o, range, sizeof(range));
			snprintf(def, sizeof(def), "default: %s; range %s", o->def, range);
		}
		fprintf(out, "%-28s(%s)\n", "", def);
	}
}

void ctl_cfg_print_example(FILE *out)
{
	char range[64];

	fprintf(out,
		"# tidegate-control configuration (docs/control.md)\n"
		"#\n"
		"# Generated by `tidegate-control --print-config-example`: every option with\n"
		"# its built-in default, commented out. The syntax is `key = value`, one per\n"
		"# line; `#` or `;` starts a comment. A key may also be written in a section\n"
		"# named after its first word: `[redis]` then `port = 6380` is the same as\n"
		"# `redis-port = 6380`. Every key is also a command-line flag (--redis-port\n"
		"# 6380), and flags override this file. An unknown key, a bad value or a\n"
		"# number out of range stops the daemon at start, naming the file and line.\n"
		"# Lines are at most 199 bytes. `tidegate-control --config FILE --check-config`\n"
		"# checks a file and prints the configuration it makes.\n");
	for (size_t i = 0; i < CFG_NOPTS; i++) {
		const struct cfg_opt *o = &cfg_opts[i];

		fprintf(out, "\n# ");
		cfg_wrap(out, 2, "# ", o->help);
		if (o->type != CFG_STR) {
			cfg_fmt_range(o, range, sizeof(range));
			fprintf(out, "# Range: %s.\n", range);
		}
		fprintf(out, "#%s =%s%s\n", o->name, o->def[0] ? " " : "", o->def);
	}
}

/* One option's current value in the form the config file takes. */
static void cfg_fmt_value(const struct ctl_cfg *cfg, const struct cfg_opt *o, char *buf,
			  size_t len)
{
	const void *field = (const char *)cfg + o->off;

	switch (o->type) {
	case CFG_STR:
		snprintf(buf, len, "%s", (const char *)field);
		break;
	case CFG_INT:
		snprintf(buf, len, "%d", *(const int *)field);
		break;
	case CFG_U32:
		snprintf(buf, len, "%" PRIu32, *(const uint32_t *)field);
		break;
	case CFG_BYTES:
		cfg_fmt_size((int64_t)*(const uint64_t *)field, buf, len);
		break;
	case CFG_PERCENTS: {
		const uint32_t *p = field;

		snprintf(buf, len, "%" PRIu32 ",%" PRIu32 ",%" PRIu32, p[0], p[1], p[2]);
		break;
	}
	case CFG_LOGLEVEL: {
		int v = *(const int *)field;

		snprintf(buf, len, "%s", v >= 0 && v < 8 ? cfg_level_names[v] : "?");
		break;
	}
	}
}

/*
 * --check-config: the configuration the daemon would run with, as a config
 * file (so it can be diffed, or saved and used). The Redis password is not
 * echoed to a terminal or a log: only whether one is set.
 */
static void cfg_print_effective(FILE *out, const struct ctl_cfg *cfg, const char *config)
{
	char val[300];

	fprintf(out, "# tidegate-control: configuration OK (%s%s)\n",
		config ? "from " : "built-in defaults and flags", config ? config : "");
	for (size_t i = 0; i < CFG_NOPTS; i++) {
		const struct cfg_opt *o = &cfg_opts[i];

		cfg_fmt_value(cfg, o, val, sizeof(val));
		if (o->off == offsetof(struct ctl_cfg, redis_password) && val[0])
			snprintf(val, sizeof(val), "(set, not shown)");
		fprintf(out, "%s =%s%s\n", o->name, val[0] ? " " : "", val);
	}
}

/* ---- the config file ---- */

struct cfg_file {
	struct ctl_cfg *cfg;
	const char *path;
	FILE *f;
	char *buf;
	size_t cap;
	int lineno;
	int err_line;          /* first error found by us (reader or handler) */
	char err[320];
	int seen[CFG_NOPTS];   /* line that set each option, 0: not yet */
};

static void cfg_file_error(struct cfg_file *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void cfg_file_error(struct cfg_file *c, const char *fmt, ...)
{
	va_list ap;

	if (c->err_line)
		return;
	c->err_line = c->lineno;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

static char *cfg_reader(char *str, int num, void *stream)
{
	struct cfg_file *c = stream;
	ssize_t n = getline(&c->buf, &c->cap, c->f);
	const char *p;

	if (n < 0)
		return NULL;
	c->lineno++;
	if (n > 0 && c->buf[n - 1] == '\n')
		n--;
	if (n > 0 && c->buf[n - 1] == '\r')
		n--;
	if (memchr(c->buf, '\0', (size_t)n)) {
		cfg_file_error(c, "NUL byte in line");
		return NULL;
	}
	p = c->buf;
	while (n > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	if (n >= num) {
		cfg_file_error(c, "line longer than %d bytes", num - 1);
		return NULL;
	}
	memcpy(str, p, (size_t)n);
	str[n] = '\0';
	return str;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
	struct cfg_file *c = user;
	const struct cfg_opt *o;
	char full[160], msg[256];
	size_t i;

	if (section[0])
		snprintf(full, sizeof(full), "%s-%s", section, name);
	else
		snprintf(full, sizeof(full), "%s", name);
	o = cfg_find(full);
	if (!o) {
		if (section[0])
			cfg_file_error(c, "unknown option '%s' (key '%s' in section [%s])", full,
				       name, section);
		else
			cfg_file_error(c, "unknown option '%s'", full);
		return 0;
	}
	i = (size_t)(o - cfg_opts);
	if (c->seen[i]) {
		cfg_file_error(c, "%s: already set on line %d", o->name, c->seen[i]);
		return 0;
	}
	c->seen[i] = c->lineno;
	if (cfg_apply(c->cfg, o, value, msg, sizeof(msg))) {
		cfg_file_error(c, "%s: %s", o->name, msg);
		return 0;
	}
	return 1;
}

static int cfg_load_file(struct ctl_cfg *cfg, const char *path)
{
	struct cfg_file c = { .cfg = cfg, .path = path };
	int ret;

	c.f = fopen(path, "re");
	if (!c.f) {
		fprintf(stderr, CFG_PROG ": %s: cannot open: %s\n", path, strerror(errno));
		return -1;
	}
	ret = ini_parse_stream(cfg_reader, &c, cfg_handler, &c);
	if (ret == 0 && ferror(c.f)) {
		fprintf(stderr, CFG_PROG ": %s:%d: read error: %s\n", path, c.lineno + 1,
			strerror(errno));
		ret = -1;
	} else if (c.err_line && (ret >= 0 && (ret == 0 || ret >= c.err_line))) {
		fprintf(stderr, CFG_PROG ": %s:%d: %s\n", path, c.err_line, c.err);
		ret = -1;
	} else if (ret > 0) {
		fprintf(stderr, CFG_PROG ": %s:%d: expected 'key = value' or '[section]'\n",
			path, ret);
		ret = -1;
	} else if (ret < 0) {
		fprintf(stderr, CFG_PROG ": %s: out of memory\n", path);
		ret = -1;
	}
	free(c.buf);
	fclose(c.f);
	return ret;
}

/* ---- the command line ---- */

struct cfg_flag {
	const struct cfg_opt *opt;
	const char *value;
};

int ctl_cfg_load(struct ctl_cfg *cfg, int argc, char **argv)
{
	struct cfg_flag *flags;
	const char *config = NULL;
	char msg[256];
	int nflags = 0, rc = -1;
	bool check = false;

	ctl_cfg_defaults(cfg);
	flags = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*flags));
	if (!flags) {
		fprintf(stderr, CFG_PROG ": out of memory\n");
		return -1;
	}

	/* First pass: syntax only, so that flags can be applied after the
	 * file whatever their order relative to --config. */
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq, *value = NULL;
		char name[64];
		size_t n;

		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			cfg_print_help(stdout);
			rc = 1;
			goto out;
		}
		if (strcmp(arg, "--version") == 0) {
			printf(CFG_PROG " %s\n", TG_VERSION);
			rc = 1;
			goto out;
		}
		if (strcmp(arg, "--print-config-example") == 0) {
			ctl_cfg_print_example(stdout);
			rc = 1;
			goto out;
		}
		if (strcmp(arg, "--check-config") == 0) {
			check = true;
			continue;
		}
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
			fprintf(stderr, CFG_PROG ": unexpected argument '%s' (see --help)\n", arg);
			goto out;
		}
		arg += 2;
		eq = strchr(arg, '=');
		n = eq ? (size_t)(eq - arg) : strlen(arg);
		if (n >= sizeof(name)) {
			fprintf(stderr, CFG_PROG ": unknown option '--%.*s...' (see --help)\n", 20,
				arg);
			goto out;
		}
		memcpy(name, arg, n);
		name[n] = '\0';
		if (eq) {
			value = eq + 1;
		} else {
			if (i + 1 >= argc) {
				fprintf(stderr, CFG_PROG ": --%s needs a value (see --help)\n", name);
				goto out;
			}
			value = argv[++i];
		}
		if (strcmp(name, "config") == 0) {
			if (config) {
				fprintf(stderr, CFG_PROG ": --config given twice\n");
				goto out;
			}
			config = value;
			continue;
		}
		flags[nflags].opt = cfg_find(name);
		if (!flags[nflags].opt || strchr(name, '_')) {
			fprintf(stderr, CFG_PROG ": unknown option '--%s' (see --help)\n", name);
			goto out;
		}
		flags[nflags++].value = value;
	}

	if (config && cfg_load_file(cfg, config))
		goto out;
	for (int i = 0; i < nflags; i++) {
		if (cfg_apply(cfg, flags[i].opt, flags[i].value, msg, sizeof(msg))) {
			fprintf(stderr, CFG_PROG ": --%s: %s\n", flags[i].opt->name, msg);
			goto out;
		}
	}
	if (strcmp(cfg->admin_socket, cfg->gateway_socket) == 0) {
		fprintf(stderr, CFG_PROG ": admin-socket and gateway-socket are both '%s'\n",
			cfg->admin_socket);
		goto out;
	}
	rc = 0;
	if (check) {
		cfg_print_effective(stdout, cfg, config);
		rc = 1;
	}
out:
	free(flags);
	return rc;
}
