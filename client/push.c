/*
 * push.c - tidegate-push: back up directories, files or stdin to a tidegate
 * gateway (protocol.md 5.4). Registers the device on first use, walks and
 * chunks the data, offers every chunk id, sends only what the gateway needs
 * within its credits, then the manifest pieces and root, then BACKUP_END.
 * An interrupted run is resumed by running it again: durable chunks come
 * back "not needed" and only the rest travels.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define PROG "tidegate-push"
#define MAX_DEVICES 256

struct opts {
	const char *gateway, *creds, *label, *stdin_name, *key;
	uint8_t provider[TG_ID_LEN];
	bool have_provider, relay, register_only, json, progress;
	const char *devices[MAX_DEVICES];
	unsigned ndevices;
	unsigned mtu, rate, timeout;
	char **paths;
	int npaths;
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: " PROG " [options] PATH...\n"
"Back up PATHs (directories, files, '-' for stdin) to a tidegate gateway.\n"
"A directory contributes its contents at the backup's root; a file its name.\n"
"\n"
"  -g, --gateway HOST[:PORT]  gateway address (required; port default 7447)\n"
"  -P, --provider GUID        provider GUID (needed to register)\n"
"  -k, --key KEY              registration key (or TIDEGATE_KEY, or --key-file)\n"
"      --key-file FILE        read the registration key from FILE\n"
"  -c, --credentials FILE     default /var/lib/tidegate/credentials (root)\n"
"                             or ~/.config/tidegate/credentials\n"
"  -n, --device NAME          device name (default: the hostname); repeatable\n"
"                             with --relay: one registration and session each;\n"
"                             with as many PATHs as devices, device i backs up\n"
"                             PATH i, otherwise every device backs up all PATHs\n"
"      --relay                act as a hosted organization's backup server\n"
"  -l, --label LABEL          backup label\n"
"      --mtu N                path MTU (default 1500; 9000 for jumbo)\n"
"      --rate MBIT            pacing in Mbit/s, 0 = unlimited (default)\n"
"      --timeout SEC          dead-gateway timeout (default 120)\n"
"      --stdin-name NAME      name of '-' in the backup (default \"stdin\")\n"
"      --register-only        register (if needed) and exit\n"
"  -q, --quiet                no progress line\n"
"      --progress             progress line even when stderr is not a terminal\n"
"      --json                 one JSON summary object per device on stdout\n"
"  -h, --help                 this help\n"
"\n"
"Exit: 0 ok, 2 usage, 3 local error, 10+N gateway error N, 30 no answer.\n");
}

static char *read_key_file(const char *path)
{
	char buf[256];
	FILE *f = fopen(path, "re");
	char *nl;

	if (!f)
		return NULL;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return NULL;
	}
	fclose(f);
	nl = strpbrk(buf, "\r\n");
	if (nl)
		*nl = 0;
	return strdup(buf);
}

static bool name_ok(const char *s, size_t min)
{
	size_t l = strlen(s);

	if (l < min || l > TG_NAME_MAX)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || !*s || *end || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* ---- reading chunks back for the upload ---- */

struct reader {
	struct tgc_tree *t;
	int fd;
	uint32_t file;
	char why[600];
};

static int read_chunk(void *arg, const struct tgc_item *it, uint8_t *buf)
{
	struct reader *r = arg;
	const struct tgc_file *f;
	struct tg_chunk_id id;
	size_t got = 0;
	int fd;

	if (it->mem) {
		memcpy(buf, it->mem, it->len);
		return 0;
	}
	f = &r->t->files[it->src];
	if (f->src_fd >= 0) {
		fd = f->src_fd;
	} else {
		if (r->fd < 0 || r->file != it->src) {
			if (r->fd >= 0)
				close(r->fd);
			r->fd = open(f->src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
			r->file = it->src;
			if (r->fd < 0) {
				snprintf(r->why, sizeof(r->why), "%s: %s", f->src, strerror(errno));
				return -errno;
			}
		}
		fd = r->fd;
	}
	while (got < it->len) {
		ssize_t n = pread(fd, buf + got, it->len - got, (off_t)(it->off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	tg_chunk_hash(buf, it->len, &id);
	if (got != it->len || memcmp(id.b, it->id, TG_ID_LEN)) {
		snprintf(r->why, sizeof(r->why), "%s: changed during the backup", f->src ? f->src : f->path);
		return -ESTALE;
	}
	return 0;
}

/* stdin to an anonymous temporary file: chunks are re-read on demand */
static int spool_stdin(void)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char buf[1 << 16], tmpl[4096];
	int fd;

	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(tmpl, sizeof(tmpl), "%s/tidegate-stdin-XXXXXX", dir);
		fd = mkstemp(tmpl);
		if (fd < 0)
			return -errno;
		unlink(tmpl);
	}
	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			return -errno;
		}
		if (!n)
			break;
		if (write(fd, buf, (size_t)n) != n) {
			close(fd);
			return -EIO;
		}
	}
	return fd;
}

/* TIDEGATE_DEBUG=1: one line per stage with its time, for tuning */
static void stage(const char *what, uint64_t t0)
{
	static int on = -1;

	if (on < 0)
		on = getenv("TIDEGATE_DEBUG") != NULL;
	if (on)
		fprintf(stderr, PROG ": debug: %.3f s %s\n", (double)(tgc_now_ns() - t0) / 1e9, what);
}

static void keepalive_tick(void *arg)
{
	tgc_keepalive(arg);
}

struct result {
	uint64_t backup_id;
	uint8_t root[TG_ID_LEN];
	uint32_t nfiles;
	uint64_t logical, chunks;
	struct tgc_up_stats up;
};

/* Upload a stage; on BAD_SESSION reopen once and resume (5.3, 5.4). */
static int upload_stage(struct tgc_conn *c, const struct tgc_cred *cr, const struct opts *o,
			struct tgc_item *items, size_t n, struct reader *rd, struct result *res,
			const struct tgc_progress *pg, bool *reopened)
{
	for (;;) {
		int rc = tgc_upload(c, items, n, read_chunk, rd, &res->up, pg);

		if (rc != -EPROTO || c->gw_err != TG_ERR_BAD_SESSION || *reopened)
			return rc;
		*reopened = true;
		tgc_upload_reset(items, n);
		rc = tgc_cli_session(c, cr, o->timeout);
		if (rc)
			return rc;
	}
}

static int backup_one(const struct opts *o, const char *device, char **paths, int npaths,
		      int stdin_fd, json_t *out, int *exit_code)
{
	struct tgc_cli_progress prog = { .prog = PROG, .stage = "backup", .enabled = o->progress };
	struct tgc_progress pg = { tgc_cli_progress, &prog };
	struct tgc_item *items = NULL, *pieces_it = NULL, root_it;
	struct tg_chunk_ref *pieces = NULL;
	struct tgc_idmap map = { 0 };
	struct reader rd = { .fd = -1 };
	struct result res;
	struct tgc_tree t;
	struct tgc_conn *c;
	struct tgc_cred cr;
	uint8_t *mf = NULL, rootbuf[20 + 20 * TG_MF_PIECES_MAX];
	size_t mf_len = 0, nitems = 0;
	long npieces = 0, root_len;
	bool reopened = false;
	uint64_t t0 = tgc_now_ns();
	int rc;

	memset(&res, 0, sizeof(res));
	memset(&t, 0, sizeof(t));
	c = calloc(1, sizeof(*c));
	if (!c)
		return *exit_code = 3, -ENOMEM;
	rc = tgc_conn_open(c, o->gateway, o->mtu, o->rate, o->timeout);
	if (rc) {
		fprintf(stderr, PROG ": gateway %s: %s\n", o->gateway,
			rc == -EHOSTUNREACH ? "cannot resolve" : strerror(-rc));
		free(c);
		return *exit_code = 2, rc;
	}
	rc = tgc_cli_credential(PROG, c, o->creds, o->have_provider ? o->provider : NULL, device,
				o->relay, o->key, true, &cr, exit_code);
	if (rc)
		goto out_conn;
	if (o->register_only) {
		if (out) {
			char h[33];
			json_t *j = json_object();

			tg_id_to_hex(cr.org, h);
			json_object_set_new(j, "org", json_string(h));
			tg_id_to_hex(cr.device_id, h);
			json_object_set_new(j, "device_id", json_string(h));
			json_object_set_new(j, "device", json_string(device));
			json_array_append_new(out, j);
		}
		goto out_conn;
	}
	stage("credential", t0);
	rc = tgc_cli_session(c, &cr, o->timeout);
	if (rc) {
		*exit_code = tgc_cli_fail(PROG, rc, c, "session");
		goto out_conn;
	}
	stage("session", t0);

	/* walk and chunk, keeping the session alive */
	rc = tgc_tree_init(&t, c->max_chunk);
	if (rc)
		goto err_local;
	t.tick = keepalive_tick;
	t.tick_arg = c;
	for (int i = 0; i < npaths && !rc; i++)
		rc = strcmp(paths[i], "-") ? tgc_tree_add_path(&t, paths[i]) :
					     tgc_tree_add_fd(&t, stdin_fd, o->stdin_name);
	if (rc) {
		fprintf(stderr, PROG ": %s\n", t.why[0] ? t.why : strerror(-rc));
		*exit_code = 3;
		goto out_close;
	}
	if (t.skipped)
		fprintf(stderr, PROG ": warning: %u special files or unrepresentable names left out\n",
			t.skipped);
	rd.t = &t;
	stage("walk", t0);

	/* the unique chunks, in file order */
	items = calloc(t.nrefs + 1, sizeof(*items));
	rc = items ? tgc_idmap_init(&map, t.nrefs) : -ENOMEM;
	if (rc)
		goto err_local;
	for (size_t i = 0; i < t.nrefs; i++) {
		const struct tgc_ref *r = &t.refs[i];

		if (tgc_idmap_get(&map, r->id) != UINT32_MAX)
			continue;
		if (tgc_idmap_put(&map, r->id, (uint32_t)nitems) == UINT32_MAX) {
			rc = -ENOMEM;
			goto err_local;
		}
		memcpy(items[nitems].id, r->id, TG_ID_LEN);
		items[nitems].len = r->len;
		items[nitems].src = r->file;
		items[nitems].off = r->off;
		nitems++;
	}
	res.chunks = nitems;
	prog.start_ns = tgc_now_ns();
	rc = upload_stage(c, &cr, o, items, nitems, &rd, &res, &pg, &reopened);
	tgc_cli_progress_end(&prog);
	if (rc)
		goto err_xfer;
	stage("file chunks", t0);

	/* the manifest stream, its pieces, then the root (5.4 step 7) */
	rc = tgc_tree_manifest(&t, o->label, (int64_t)time(NULL), &mf, &mf_len, &res.nfiles);
	if (rc)
		goto err_local;
	res.logical = t.logical;
	npieces = tgc_cut_pieces(mf, mf_len, c->max_chunk, &pieces);
	if (npieces < 0) {
		rc = (int)npieces;
		goto err_local;
	}
	pieces_it = calloc((size_t)npieces, sizeof(*pieces_it));
	if (!pieces_it) {
		rc = -ENOMEM;
		goto err_local;
	}
	for (long i = 0, off = 0; i < npieces; off += pieces[i].len, i++) {
		memcpy(pieces_it[i].id, pieces[i].id, TG_ID_LEN);
		pieces_it[i].len = pieces[i].len;
		pieces_it[i].src = UINT32_MAX;
		pieces_it[i].mem = mf + off;
	}
	/* identical pieces (rare) must be offered once: keep the first */
	{
		size_t k = 0;

		for (long i = 0; i < npieces; i++) {
			bool dup = false;

			for (size_t j = 0; j < k && !dup; j++)
				dup = !memcmp(pieces_it[j].id, pieces_it[i].id, TG_ID_LEN);
			if (!dup)
				pieces_it[k++] = pieces_it[i];
		}
		rc = upload_stage(c, &cr, o, pieces_it, k, &rd, &res, NULL, &reopened);
	}
	if (rc)
		goto err_xfer;
	root_len = tg_mf_root_build(rootbuf, sizeof(rootbuf), pieces, (uint32_t)npieces, mf_len);
	if (root_len < 0) {
		rc = (int)root_len;
		goto err_local;
	}
	memset(&root_it, 0, sizeof(root_it));
	{
		struct tg_chunk_id id;

		tg_chunk_hash(rootbuf, (size_t)root_len, &id);
		memcpy(root_it.id, id.b, TG_ID_LEN);
	}
	root_it.len = (uint32_t)root_len;
	root_it.src = UINT32_MAX;
	root_it.mem = rootbuf;
	rc = upload_stage(c, &cr, o, &root_it, 1, &rd, &res, NULL, &reopened);
	if (rc)
		goto err_xfer;
	memcpy(res.root, root_it.id, TG_ID_LEN);
	stage("manifest", t0);
	rc = tgc_backup_end(c, root_it.id, root_it.len, res.nfiles, res.logical, o->label,
			    &res.backup_id);
	if (rc == -EPROTO && c->gw_err == TG_ERR_BAD_SESSION && !reopened) {
		reopened = true;
		rc = tgc_cli_session(c, &cr, o->timeout);
		if (!rc)
			rc = tgc_backup_end(c, root_it.id, root_it.len, res.nfiles, res.logical,
					    o->label, &res.backup_id);
	}
	if (rc)
		goto err_xfer;
	tgc_session_close(c, TG_OK);
	stage("backup end", t0);

	if (out) {
		char h[33];
		json_t *j = json_object();

		json_object_set_new(j, "backup_id", json_integer((json_int_t)res.backup_id));
		tg_id_to_hex(res.root, h);
		json_object_set_new(j, "root", json_string(h));
		tg_id_to_hex(c->org, h);
		json_object_set_new(j, "org", json_string(h));
		tg_id_to_hex(cr.device_id, h);
		json_object_set_new(j, "device_id", json_string(h));
		json_object_set_new(j, "device", json_string(device));
		json_object_set_new(j, "files", json_integer(res.nfiles));
		json_object_set_new(j, "logical_bytes", json_integer((json_int_t)res.logical));
		json_object_set_new(j, "chunks", json_integer((json_int_t)res.chunks));
		json_object_set_new(j, "chunks_offered", json_integer((json_int_t)res.up.offered));
		json_object_set_new(j, "chunks_needed", json_integer((json_int_t)res.up.needed));
		json_object_set_new(j, "chunks_dup", json_integer((json_int_t)res.up.dup));
		json_object_set_new(j, "data_bytes", json_integer((json_int_t)c->st.data_bytes));
		json_object_set_new(j, "wire_bytes", json_integer((json_int_t)c->st.wire_bytes));
		json_object_set_new(j, "packets", json_integer((json_int_t)c->st.packets));
		json_object_set_new(j, "retransmits", json_integer((json_int_t)c->st.retransmits));
		json_object_set_new(j, "seconds", json_real((double)(tgc_now_ns() - t0) / 1e9));
		json_array_append_new(out, j);
	}
	rc = 0;
	goto out_close;

err_xfer:
	if (rc == -ESTALE || (rc != -EPROTO && rc != -ETIMEDOUT && rd.why[0])) {
		fprintf(stderr, PROG ": %s\n", rd.why[0] ? rd.why : strerror(-rc));
		*exit_code = 3;
		tgc_session_close(c, TG_ERR_BAD_REQUEST);
	} else {
		*exit_code = tgc_cli_fail(PROG, rc, c, "backup");
		tgc_session_close(c, rc == -EPROTO ? c->gw_err : TG_ERR_UNAVAILABLE);
	}
	goto out_close;
err_local:
	*exit_code = tgc_cli_fail(PROG, rc, c, "backup");
	tgc_session_close(c, TG_ERR_BAD_REQUEST);
out_close:
	if (c->open)
		tgc_session_close(c, TG_OK);
out_conn:
	if (rd.fd >= 0)
		close(rd.fd);
	free(items);
	free(pieces_it);
	free(pieces);
	free(mf);
	tgc_idmap_free(&map);
	if (t.buf)
		tgc_tree_free(&t);
	tgc_conn_close(c);
	free(c);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_KEYFILE = 256, O_RELAY, O_MTU, O_RATE, O_TIMEOUT, O_STDIN, O_REGONLY,
	       O_PROGRESS, O_JSON };
	static const struct option lo[] = {
		{ "gateway", required_argument, NULL, 'g' },
		{ "provider", required_argument, NULL, 'P' },
		{ "key", required_argument, NULL, 'k' },
		{ "key-file", required_argument, NULL, O_KEYFILE },
		{ "credentials", required_argument, NULL, 'c' },
		{ "device", required_argument, NULL, 'n' },
		{ "relay", no_argument, NULL, O_RELAY },
		{ "label", required_argument, NULL, 'l' },
		{ "mtu", required_argument, NULL, O_MTU },
		{ "rate", required_argument, NULL, O_RATE },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "stdin-name", required_argument, NULL, O_STDIN },
		{ "register-only", no_argument, NULL, O_REGONLY },
		{ "quiet", no_argument, NULL, 'q' },
		{ "progress", no_argument, NULL, O_PROGRESS },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .mtu = 1500, .timeout = 120, .stdin_name = "stdin" };
	char host[TG_NAME_MAX + 1], cpath[4096], *keyfile_key = NULL;
	json_t *out = NULL;
	int opt, exit_code = 0, stdin_fd = -1, nstdin = 0;
	bool quiet = false, force_progress = false;

	while ((opt = getopt_long(argc, argv, "g:P:k:c:n:l:qh", lo, NULL)) != -1) {
		switch (opt) {
		case 'g': o.gateway = optarg; break;
		case 'P':
			if (tg_id_from_hex(optarg, o.provider)) {
				fprintf(stderr, PROG ": --provider: not a GUID: %s\n", optarg);
				return 2;
			}
			o.have_provider = true;
			break;
		case 'k': o.key = optarg; break;
		case O_KEYFILE:
			keyfile_key = read_key_file(optarg);
			if (!keyfile_key) {
				fprintf(stderr, PROG ": --key-file %s: cannot read a key\n", optarg);
				return 3;
			}
			o.key = keyfile_key;
			break;
		case 'c': o.creds = optarg; break;
		case 'n':
			if (o.ndevices == MAX_DEVICES || !name_ok(optarg, 1)) {
				fprintf(stderr, PROG ": --device: 1..64 printable bytes (at most %u devices)\n",
					MAX_DEVICES);
				return 2;
			}
			o.devices[o.ndevices++] = optarg;
			break;
		case O_RELAY: o.relay = true; break;
		case 'l':
			if (!name_ok(optarg, 0)) {
				fprintf(stderr, PROG ": --label: at most 64 printable bytes\n");
				return 2;
			}
			o.label = optarg;
			break;
		case O_MTU:
			if (parse_uint(optarg, 576, 9000, &o.mtu) || !tgc_max_frag(o.mtu)) {
				fprintf(stderr, PROG ": --mtu: 576..9000\n");
				return 2;
			}
			break;
		case O_RATE:
			if (parse_uint(optarg, 0, 400000, &o.rate)) {
				fprintf(stderr, PROG ": --rate: Mbit/s, 0 = unlimited\n");
				return 2;
			}
			break;
		case O_TIMEOUT:
			if (parse_uint(optarg, 1, 86400, &o.timeout)) {
				fprintf(stderr, PROG ": --timeout: 1..86400 seconds\n");
				return 2;
			}
			break;
		case O_STDIN:
			if (!name_ok(optarg, 1) || strchr(optarg, '/') || !strcmp(optarg, ".") ||
			    !strcmp(optarg, "..")) {
				fprintf(stderr, PROG ": --stdin-name: a file name\n");
				return 2;
			}
			o.stdin_name = optarg;
			break;
		case O_REGONLY: o.register_only = true; break;
		case 'q': quiet = true; break;
		case O_PROGRESS: force_progress = true; break;
		case O_JSON: o.json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	o.paths = argv + optind;
	o.npaths = argc - optind;
	if (!o.gateway) {
		fprintf(stderr, PROG ": --gateway is required\n");
		usage(stderr);
		return 2;
	}
	if (!o.npaths && !o.register_only) {
		fprintf(stderr, PROG ": nothing to back up (PATH... or '-')\n");
		return 2;
	}
	if (o.ndevices > 1 && !o.relay) {
		fprintf(stderr, PROG ": several --device names need --relay\n");
		return 2;
	}
	for (int i = 0; i < o.npaths; i++)
		nstdin += !strcmp(o.paths[i], "-");
	if (nstdin > 1) {
		fprintf(stderr, PROG ": '-' may be given once\n");
		return 2;
	}
	if (!o.key)
		o.key = getenv("TIDEGATE_KEY");
	if (!o.ndevices) {
		if (gethostname(host, sizeof(host)))
			strcpy(host, "localhost");
		host[TG_NAME_MAX] = 0;
		o.devices[o.ndevices++] = host;
	}
	if (!o.creds)
		o.creds = tgc_cli_default_creds(cpath, sizeof(cpath));
	o.progress = !quiet && (force_progress || isatty(STDERR_FILENO));
	if (nstdin && !o.register_only) {
		stdin_fd = spool_stdin();
		if (stdin_fd < 0) {
			fprintf(stderr, PROG ": stdin: %s\n", strerror(-stdin_fd));
			return 3;
		}
	}
	if (o.json)
		out = json_array();

	for (unsigned d = 0; d < o.ndevices && !exit_code; d++) {
		bool paired = o.ndevices > 1 && (unsigned)o.npaths == o.ndevices;

		backup_one(&o, o.devices[d], paired ? o.paths + d : o.paths, paired ? 1 : o.npaths,
			   stdin_fd, out, &exit_code);
	}
	if (out) {
		size_t n = json_array_size(out);

		for (size_t i = 0; i < n; i++) {
			char *s = json_dumps(json_array_get(out, i), JSON_COMPACT);

			if (s) {
				puts(s);
				free(s);
			}
		}
		json_decref(out);
	}
	if (stdin_fd >= 0)
		close(stdin_fd);
	free(keyfile_key);
	return exit_code;
}
