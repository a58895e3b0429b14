/*
 * config.c - tidegate-gateway's own options (the part of argv after "--")
 * and its ini file. One declarative table drives getopt_long, --help and
 * the file's keys (section [gateway], keys named like the long options), so
 * an option added here is known everywhere at once.
 *
 * Precedence: built-in default < config file < command line; a repeatable
 * option given on the command line replaces the file's list rather than
 * adding to it, so a flag always means exactly what it says. Every error is
 * fatal at start and names where it came from ("--mtu: ..." or
 * "FILE:LINE: ..."): a gateway that guesses what its config meant is worse
 * than one that refuses to start.
 *
 * Debian's libinih is built without line numbers in the handler, so the file
 * goes through our own reader, which counts lines, refuses over-long ones
 * instead of letting inih split them, and strips leading blanks so an
 * indented line is never taken for a continuation of the previous value.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "shell.h"

enum opt_type {
	OPT_UINT,   /* unsigned, min..max */
	OPT_STR,    /* char[size], 1..size-1 bytes */
	OPT_NAME,   /* OPT_STR limited to [A-Za-z0-9._-] */
	OPT_ADDR,   /* PORT=IPV4/PREFIX, repeatable */
	OPT_DIR,    /* an existing directory, repeatable */
	OPT_CONFIG, /* command line only */
	OPT_HELP,
	OPT_VERSION,
	OPT_CHECK,  /* command line only: parse, print, exit */
};

struct gw_opt {
	const char *name;
	int short_name;
	enum opt_type type;
	const char *metavar;
	const char *def;        /* parsed like any other value; NULL: none */
	unsigned long min, max;
	size_t off, size;
	const char *help;
};

#define F(field) offsetof(struct gw_config, field), sizeof(((struct gw_config *)0)->field)

static const struct gw_opt gw_opts[] = {
	{ "config", 0, OPT_CONFIG, "FILE", NULL, 0, 0, 0, 0,
	  "ini file with the same keys as these options, in section [gateway]" },
	{ "addr", 0, OPT_ADDR, "PORT=IPV4/PREFIX", NULL, 0, 0, F(addrs),
	  "our address on DPDK port PORT, e.g. 0=169.254.10.1/24 (repeatable, at least one)" },
	{ "udp-port", 0, OPT_UINT, "N", "7447", 1, 65535, F(udp_port),
	  "UDP port of the tidegate protocol" },
	{ "control-sock", 0, OPT_STR, "PATH", "/run/tidegate/gateway.sock", 0, 0, F(control_sock),
	  "tidegate-control's gateway link socket" },
	{ "name", 0, OPT_NAME, "NAME", NULL, 0, 0, F(name),
	  "this gateway's name on the gateway link (default gw-<hostname>)" },
	{ "store-dir", 0, OPT_DIR, "DIR", NULL, 0, 0, F(store_dirs),
	  "shard directory of the store, must exist (repeatable, 1..20)" },
	{ "io-threads", 0, OPT_UINT, "N", "2", 1, 64, F(io_threads),
	  "storage I/O threads" },
	{ "mtu", 0, OPT_UINT, "N", "1500", 596, 9216, F(mtu),
	  "port MTU; DATA fragments are sized to it" },
	{ "mem-mb", 0, OPT_UINT, "N", "256", 8, 65536, F(mem_mb),
	  "reassembly memory per worker lcore, MiB" },
	{ "sessions", 0, OPT_UINT, "N", "1024", 1, 1u << 20, F(sessions),
	  "sessions per worker lcore" },
	{ "check-config", 0, OPT_CHECK, NULL, NULL, 0, 0, 0, 0,
	  "parse the options and the config file, print the result and exit (no EAL, no port)" },
	{ "help", 'h', OPT_HELP, NULL, NULL, 0, 0, 0, 0, "show this help and exit" },
	{ "version", 0, OPT_VERSION, NULL, NULL, 0, 0, 0, 0, "show the version and exit" },
};

#define NOPTS (sizeof(gw_opts) / sizeof(gw_opts[0]))

static bool opt_in_file(const struct gw_opt *o)
{
	return o->type != OPT_CONFIG && o->type != OPT_HELP && o->type != OPT_VERSION &&
	       o->type != OPT_CHECK;
}

static bool opt_repeats(const struct gw_opt *o)
{
	return o->type == OPT_ADDR || o->type == OPT_DIR;
}

uint16_t gw_frag_size(unsigned mtu)
{
	long room = (long)mtu - 20 - 8 - 16 - 40;

	if (room < (long)TG_FRAG_MIN)
		return 0;
	if (room > (long)TG_FRAG_MAX)
		room = TG_FRAG_MAX;
	return (uint16_t)(room / TG_FRAG_UNIT * TG_FRAG_UNIT);
}

void gw_config_usage(void)
{
	char left[64];

	printf("Usage: " GW_PROG " [EAL options] -- [options]\n\n"
	       "Options (after \"--\"; command line beats the config file):\n");
	for (size_t i = 0; i < NOPTS; i++) {
		const struct gw_opt *o = &gw_opts[i];

		if (o->short_name)
			snprintf(left, sizeof(left), "-%c, --%s%s%s", o->short_name, o->name,
				 o->metavar ? " " : "", o->metavar ? o->metavar : "");
		else
			snprintf(left, sizeof(left), "    --%s%s%s", o->name,
				 o->metavar ? " " : "", o->metavar ? o->metavar : "");
		printf("  %-34s %s", left, o->help);
		if (o->def)
			printf(" (default %s)", o->def);
		printf("\n");
	}
	printf("\nExample:\n  " GW_PROG " -l 0,1 --vdev net_af_packet0,iface=eth1 -- \\\n"
	       "      --addr 0=169.254.10.1/24 --store-dir /srv/tidegate/0 --store-dir /srv/tidegate/1\n");
}

/* ---- values ---- */

static int set_error(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int set_error(char *err, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, n, fmt, ap);
	va_end(ap);
	return -1;
}

static int parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (!s[0] || s[0] == '-' || s[0] == '+' || s[0] == ' ')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_addr(const char *s, struct gw_addr *a, char *err, size_t n)
{
	char buf[64], *eq, *slash;
	unsigned long port, prefix;
	struct in_addr ip;
	uint32_t h;

	if (strlen(s) >= sizeof(buf))
		return set_error(err, n, "'%s' is too long", s);
	strcpy(buf, s);
	eq = strchr(buf, '=');
	slash = eq ? strchr(eq, '/') : NULL;
	if (!eq || !slash)
		return set_error(err, n, "'%s' is not PORT=IPV4/PREFIX", s);
	*eq = '\0';
	*slash = '\0';
	if (parse_ulong(buf, 0, RTE_MAX_ETHPORTS - 1, &port))
		return set_error(err, n, "'%s': port '%s' is not a DPDK port number", s, buf);
	if (inet_pton(AF_INET, eq + 1, &ip) != 1)
		return set_error(err, n, "'%s': '%s' is not an IPv4 address", s, eq + 1);
	if (parse_ulong(slash + 1, 1, 32, &prefix))
		return set_error(err, n, "'%s': prefix '%s' is not in 1..32", s, slash + 1);
	h = ntohl(ip.s_addr);
	if (h == 0 || (h >> 24) == 127 || (h >> 28) >= 14)
		return set_error(err, n, "'%s': %s cannot be a host's address", s, eq + 1);
	a->port_id = (uint16_t)port;
	a->prefix = (uint8_t)prefix;
	a->ip = ip.s_addr;
	a->mask = htonl(prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix));
	return 0;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

static bool name_ok(const char *s)
{
	for (; *s; s++)
		if (!name_char(*s))
			return false;
	return true;
}

/* One value of one option into cfg. -1 with the reason in err. */
static int opt_set(struct gw_config *cfg, const struct gw_opt *o, const char *v, char *err, size_t n)
{
	char *field = (char *)cfg + o->off;
	unsigned long u;
	struct stat st;

	switch (o->type) {
	case OPT_UINT:
		if (parse_ulong(v, o->min, o->max, &u))
			return set_error(err, n, "'%s' is not a number in %lu..%lu", v, o->min, o->max);
		if (o->size == sizeof(uint16_t))
			*(uint16_t *)field = (uint16_t)u;
		else
			*(unsigned *)field = (unsigned)u;
		return 0;
	case OPT_NAME:
		if (!name_ok(v))
			return set_error(err, n, "'%s' may hold only letters, digits, '.', '_', '-'", v);
		/* fall through */
	case OPT_STR:
		if (!v[0] || strlen(v) >= o->size)
			return set_error(err, n, "must be 1..%zu bytes", o->size - 1);
		strcpy(field, v);
		return 0;
	case OPT_ADDR:
		if (cfg->naddrs >= GW_ADDRS_MAX)
			return set_error(err, n, "at most %d addresses", GW_ADDRS_MAX);
		if (parse_addr(v, &cfg->addrs[cfg->naddrs], err, n))
			return -1;
		for (unsigned i = 0; i < cfg->naddrs; i++)
			if (cfg->addrs[i].ip == cfg->addrs[cfg->naddrs].ip)
				return set_error(err, n, "'%s': address given twice", v);
		cfg->naddrs++;
		return 0;
	case OPT_DIR:
		if (cfg->nstore_dirs >= GW_STORE_DIRS_MAX)
			return set_error(err, n, "at most %d store directories", GW_STORE_DIRS_MAX);
		if (!v[0] || strlen(v) >= sizeof(cfg->store_dirs[0]))
			return set_error(err, n, "path must be 1..%zu bytes", sizeof(cfg->store_dirs[0]) - 1);
		if (stat(v, &st))
			return set_error(err, n, "'%s': %s", v, strerror(errno));
		if (!S_ISDIR(st.st_mode))
			return set_error(err, n, "'%s' is not a directory", v);
		for (unsigned i = 0; i < cfg->nstore_dirs; i++)
			if (!strcmp(cfg->store_dirs[i], v))
				return set_error(err, n, "'%s' given twice", v);
		strcpy(cfg->store_dirs[cfg->nstore_dirs++], v);
		return 0;
	default:
		return set_error(err, n, "not allowed here");
	}
}

/* A repeatable option's list is emptied before the first value of a new source. */
static void opt_reset(struct gw_config *cfg, const struct gw_opt *o)
{
	if (o->type == OPT_ADDR)
		cfg->naddrs = 0;
	else if (o->type == OPT_DIR)
		cfg->nstore_dirs = 0;
}

static const struct gw_opt *opt_find(const char *name)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (!strcmp(gw_opts[i].name, name))
			return &gw_opts[i];
	return NULL;
}

/* ---- the file ---- */

struct cfg_file {
	const char *path;
	FILE *f;
	char *buf;
	size_t cap;
	int lineno;
	int err_line;
	char err[320];
	struct gw_config *cfg;
	int seen[NOPTS];
};

static void file_error(struct cfg_file *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void file_error(struct cfg_file *c, const char *fmt, ...)
{
	va_list ap;

	if (c->err_line)
		return;
	c->err_line = c->lineno;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

static char *file_reader(char *str, int num, void *stream)
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
		file_error(c, "NUL byte in line");
		return NULL;
	}
	p = c->buf;
	while (n > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	if (n >= num) {
		file_error(c, "line longer than %d bytes", num - 1);
		return NULL;
	}
	memcpy(str, p, (size_t)n);
	str[n] = '\0';
	return str;
}

static int file_handler(void *user, const char *section, const char *name, const char *value)
{
	struct cfg_file *c = user;
	const struct gw_opt *o;
	char msg[256];
	size_t i;

	if (strcmp(section, "gateway")) {
		file_error(c, "key '%s' outside section [gateway]", name);
		return 0;
	}
	o = opt_find(name);
	if (!o || !opt_in_file(o)) {
		file_error(c, "unknown key '%s'", name);
		return 0;
	}
	i = (size_t)(o - gw_opts);
	if (c->seen[i] && !opt_repeats(o)) {
		file_error(c, "%s: already set on line %d", name, c->seen[i]);
		return 0;
	}
	if (!c->seen[i])
		opt_reset(c->cfg, o);
	c->seen[i] = c->lineno;
	if (opt_set(c->cfg, o, value, msg, sizeof(msg))) {
		file_error(c, "%s: %s", name, msg);
		return 0;
	}
	return 1;
}

static int config_file(struct gw_config *cfg, const char *path)
{
	struct cfg_file c = { .path = path, .cfg = cfg };
	int ret;

	c.f = fopen(path, "r");
	if (!c.f) {
		gw_log("error", "--config %s: %s", path, strerror(errno));
		return -1;
	}
	ret = ini_parse_stream(file_reader, &c, file_handler, &c);
	if (c.err_line && (ret == 0 || ret >= c.err_line)) {
		/* our own message, when it is the first error of the file */
		gw_log("error", "%s:%d: %s", path, c.err_line, c.err);
		ret = -1;
	} else if (ret > 0) {
		gw_log("error", "%s:%d: expected 'key = value' or '[gateway]'", path, ret);
		ret = -1;
	} else if (ret < 0) {
		gw_log("error", "%s: out of memory", path);
		ret = -1;
	} else if (ferror(c.f)) {
		gw_log("error", "%s: read error", path);
		ret = -1;
	}
	free(c.buf);
	fclose(c.f);
	return ret;
}

/* ---- the command line ---- */

static void config_defaults(struct gw_config *cfg)
{
	char host[64] = "";
	char err[256];

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NOPTS; i++)
		if (gw_opts[i].def)
			opt_set(cfg, &gw_opts[i], gw_opts[i].def, err, sizeof(err));
	if (gethostname(host, sizeof(host) - 1) || !host[0])
		strcpy(host, "localhost");
	/* A host name can be longer than our name field or carry odd bytes:
	 * keep what a link name may hold. */
	snprintf(cfg->name, sizeof(cfg->name), "gw-%.50s", host);
	for (char *p = cfg->name; *p; p++)
		if (!name_char(*p))
			*p = '-';
}

/* --check-config: the effective configuration, in the config file's own
 * form, so it can be diffed against what was meant. */
static void config_print(const struct gw_config *cfg, const char *file)
{
	char ip[INET_ADDRSTRLEN];

	printf("# " GW_PROG " --check-config: %s parsed\n[gateway]\n", file ? file : "(no file)");
	for (unsigned i = 0; i < cfg->naddrs; i++) {
		struct in_addr a = { .s_addr = cfg->addrs[i].ip };

		inet_ntop(AF_INET, &a, ip, sizeof(ip));
		printf("addr = %u=%s/%u\n", cfg->addrs[i].port_id, ip, cfg->addrs[i].prefix);
	}
	printf("udp-port = %u\ncontrol-sock = %s\nname = %s\n", cfg->udp_port, cfg->control_sock,
	       cfg->name);
	for (unsigned i = 0; i < cfg->nstore_dirs; i++)
		printf("store-dir = %s\n", cfg->store_dirs[i]);
	printf("io-threads = %u\nmtu = %u\nmem-mb = %u\nsessions = %u\n", cfg->io_threads,
	       cfg->mtu, cfg->mem_mb, cfg->sessions);
	printf("# fragment size for this MTU: %u bytes\n", gw_frag_size(cfg->mtu));
}

int gw_config_parse(struct gw_config *cfg, int argc, char **argv)
{
	struct option longopts[NOPTS + 1];
	struct { const struct gw_opt *o; const char *v; } flags[128];
	bool reset[NOPTS] = { false };
	const char *config = NULL;
	bool check = false;
	unsigned nflags = 0;
	char msg[256];
	int c;

	config_defaults(cfg);
	for (size_t i = 0; i < NOPTS; i++) {
		longopts[i] = (struct option){
			gw_opts[i].name,
			gw_opts[i].metavar ? required_argument : no_argument,
			NULL, 256 + (int)i,
		};
	}
	memset(&longopts[NOPTS], 0, sizeof(longopts[NOPTS]));

	/* The first pass only collects: the file goes first whatever the
	 * order on the command line. */
	opterr = 0;
	optind = 0; /* GNU: re-initialise, EAL has used getopt before us */
	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		const struct gw_opt *o;

		if (c == 'h') {
			gw_config_usage();
			return 1;
		}
		if (c == '?' || c == ':') {
			if (optopt >= 256 && optopt < 256 + (int)NOPTS)
				gw_log("error", "--%s needs a value (see --help)", gw_opts[optopt - 256].name);
			else if (optopt)
				gw_log("error", "unknown option '-%c' (see --help)", optopt);
			else
				gw_log("error", "unknown option '%s' (see --help)", argv[optind - 1]);
			return -1;
		}
		o = &gw_opts[c - 256];
		if (o->type == OPT_HELP) {
			gw_config_usage();
			return 1;
		}
		if (o->type == OPT_VERSION) {
			printf(GW_PROG " " TG_VERSION "\n");
			return 1;
		}
		if (o->type == OPT_CHECK) {
			check = true;
			continue;
		}
		if (o->type == OPT_CONFIG) {
			if (config) {
				gw_log("error", "--config: given twice");
				return -1;
			}
			config = optarg;
			continue;
		}
		if (nflags >= sizeof(flags) / sizeof(flags[0])) {
			gw_log("error", "too many options");
			return -1;
		}
		flags[nflags].o = o;
		flags[nflags++].v = optarg;
	}
	if (optind < argc) {
		gw_log("error", "unexpected argument '%s' (see --help)", argv[optind]);
		return -1;
	}
	if (config && config_file(cfg, config))
		return -1;
	for (unsigned i = 0; i < nflags; i++) {
		const struct gw_opt *o = flags[i].o;
		size_t k = (size_t)(o - gw_opts);

		if (!reset[k])
			opt_reset(cfg, o);
		reset[k] = true;
		if (opt_set(cfg, o, flags[i].v, msg, sizeof(msg))) {
			gw_log("error", "--%s: %s", o->name, msg);
			return -1;
		}
	}
	if (!cfg->naddrs) {
		gw_log("error", "--addr: at least one address is needed (see --help)");
		return -1;
	}
	if (!cfg->nstore_dirs) {
		gw_log("error", "--store-dir: at least one store directory is needed (see --help)");
		return -1;
	}
	if (check) {
		config_print(cfg, config);
		return 1;
	}
	return 0;
}
