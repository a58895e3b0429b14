/*
 * restore.c - tidegate-restore: bring a backup back into a directory
 * (protocol.md 5.5). RESTORE_REQ picks the backup; the root, the manifest
 * pieces and then every distinct file chunk are fetched within the credit
 * window and verified ('D' tag, XXH3-128) before a byte is written; writes
 * stay beneath the target (restore_write.c); symlinks come last, then modes,
 * owners (as root) and mtimes, directories deepest first.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define PROG "tidegate-restore"

static void usage(FILE *f)
{
	fprintf(f,
"usage: " PROG " [options] TARGET_DIR\n"
"Restore a backup from a tidegate gateway into TARGET_DIR.\n"
"\n"
"  -g, --gateway HOST[:PORT]  gateway address (required; port default 7447)\n"
"  -c, --credentials FILE     default /var/lib/tidegate/credentials (root)\n"
"                             or ~/.config/tidegate/credentials\n"
"  -n, --device NAME          this device's name (default: the hostname)\n"
"      --relay                the device is relayed by this hosted-org server\n"
"  -b, --backup ID            backup id (default: the latest)\n"
"      --from-device HEX      another device of the organization (needs --admin)\n"
"      --admin                act with the org-admin role\n"
"      --force                allow a non-empty TARGET_DIR\n"
"      --mtu N                path MTU (default 1500; 9000 for jumbo)\n"
"      --timeout SEC          dead-gateway timeout (default 120)\n"
"  -q, --quiet                no progress line\n"
"      --progress             progress line even when stderr is not a terminal\n"
"      --json                 JSON summary on stdout\n"
"  -h, --help                 this help\n"
"\n"
"Exit: 0 ok, 2 usage, 3 local error, 10+N gateway error N, 30 no answer.\n");
}

/* ---- fetch sinks ---- */

struct buf_sink {               /* root and manifest pieces into one buffer */
	uint8_t *buf;
	const uint64_t *offs;
};

static int to_buf(void *arg, size_t idx, const uint8_t *data, uint32_t len)
{
	struct buf_sink *s = arg;

	memcpy(s->buf + s->offs[idx], data, len);
	return 0;
}

struct use {                    /* one place a chunk goes */
	uint32_t file;
	uint32_t next;              /* next use of the same chunk, UINT32_MAX ends */
	uint64_t off;
};

struct file_sink {
	struct tgc_rw *w;
	const struct tg_mf_file *files;
	const struct use *uses;
	const uint32_t *head;       /* per unique chunk: first use */
	bool *done;
	int err;
};

static int to_files(void *arg, size_t idx, const uint8_t *data, uint32_t len)
{
	struct file_sink *s = arg;

	for (uint32_t u = s->head[idx]; u != UINT32_MAX; u = s->uses[u].next) {
		const struct tg_mf_file *f = &s->files[s->uses[u].file];
		int rc = tgc_rw_write(s->w, f->path, f->path_len, s->uses[u].off, data, len);

		if (rc)
			return s->err = rc;
	}
	s->done[idx] = true;
	return 0;
}

static int depth_cmp(const void *a, const void *b)
{
	const struct tg_mf_file *x = *(const struct tg_mf_file *const *)a;
	const struct tg_mf_file *y = *(const struct tg_mf_file *const *)b;
	unsigned dx = 0, dy = 0;

	for (unsigned i = 0; i < x->path_len; i++)
		dx += x->path[i] == '/';
	for (unsigned i = 0; i < y->path_len; i++)
		dy += y->path[i] == '/';
	return dx < dy ? 1 : dx > dy ? -1 : 0;
}

struct ropts {
	const char *gateway, *creds, *device, *target;
	bool relay, admin, force, json, progress, have_backup, have_from;
	uint64_t backup_id;
	uint8_t from[TG_ID_LEN];
	unsigned mtu, timeout;
};

/* Reopen the session and re-request the same backup (BAD_SESSION, once). */
static int reopen(struct tgc_conn *c, const struct tgc_cred *cr, const struct ropts *o,
		  uint64_t backup_id)
{
	struct tg_restore_ok ok;
	int rc = tgc_cli_session(c, cr, o->timeout);

	if (rc)
		return rc;
	return tgc_restore_req(c, o->have_from ? o->from : NULL, backup_id,
			       o->admin ? TG_RF_ADMIN : 0, &ok);
}

static int run(const struct ropts *o, int *exit_code)
{
	struct tgc_cli_progress prog = { .prog = PROG, .stage = "restore", .enabled = o->progress };
	struct tgc_progress pg = { tgc_cli_progress, &prog };
	struct tgc_conn *c;
	struct tgc_cred cr;
	struct tg_restore_ok ok;
	struct tgc_rw w = { .rootfd = -1, .cache_fd = -1 };
	struct tgc_want *wants = NULL;
	struct tg_mf_file *files = NULL;
	struct tg_mf_file **dirs = NULL;
	struct use *uses = NULL;
	uint32_t *head = NULL;
	uint64_t *offs = NULL, manifest_len = 0, bytes = 0;
	uint8_t *rootbuf = NULL, *mf = NULL;
	bool *done = NULL, reopened = false;
	struct tgc_idmap map = { 0 };
	struct tg_mf_iter it;
	const uint8_t *pieces;
	uint32_t npieces;
	size_t nfiles = 0, fcap = 0, nuses = 0, ucap = 0, nwant = 0, ndirs = 0;
	uint64_t t0 = tgc_now_ns();
	uint16_t flags;
	int rc;

	c = calloc(1, sizeof(*c));
	if (!c)
		return *exit_code = 3, -ENOMEM;
	rc = tgc_conn_open(c, o->gateway, o->mtu, 0, o->timeout);
	if (rc) {
		fprintf(stderr, PROG ": gateway %s: %s\n", o->gateway,
			rc == -EHOSTUNREACH ? "cannot resolve" : strerror(-rc));
		free(c);
		return *exit_code = 2, rc;
	}
	rc = tgc_cli_credential(PROG, c, o->creds, NULL, o->device, o->relay, NULL, false, &cr,
				exit_code);
	if (rc)
		goto out;
	rc = tgc_rw_open(&w, o->target, o->force);
	if (rc) {
		fprintf(stderr, PROG ": %s\n", w.why[0] ? w.why : strerror(-rc));
		*exit_code = 3;
		goto out;
	}
	rc = tgc_cli_session(c, &cr, o->timeout);
	if (rc)
		goto err_gw;
	flags = (o->admin ? TG_RF_ADMIN : 0) | (o->have_backup ? 0 : TG_RF_LATEST);
	rc = tgc_restore_req(c, o->have_from ? o->from : NULL, o->backup_id, flags, &ok);
	if (rc)
		goto err_gw;
	if (ok.root_len < 1 || ok.root_len > c->max_chunk) {
		tgc_set_gw_err(c, TG_ERR_BAD_REQUEST, 0, "root length out of range", 24);
		rc = -EPROTO;
		goto err_gw;
	}

	/* the root, then the manifest pieces (5.5 step 2) */
	{
		struct tgc_want rw;
		uint64_t zero = 0;
		struct buf_sink s;

		rootbuf = malloc(ok.root_len);
		if (!rootbuf) {
			rc = -ENOMEM;
			goto err_local;
		}
		memcpy(rw.id, ok.root_id, TG_ID_LEN);
		rw.len = ok.root_len;
		s.buf = rootbuf;
		s.offs = &zero;
		rc = tgc_fetch(c, &rw, 1, to_buf, &s, NULL);
		if (rc)
			goto err_gw;
	}
	if (tg_mf_root_parse(rootbuf, ok.root_len, &pieces, &npieces, &manifest_len)) {
		fprintf(stderr, PROG ": the backup's manifest root is malformed\n");
		*exit_code = 3;
		rc = -EBADMSG;
		goto out_close;
	}
	{
		struct buf_sink s;
		uint64_t off = 0;

		wants = calloc(npieces, sizeof(*wants));
		offs = calloc(npieces, sizeof(*offs));
		mf = malloc(manifest_len ? manifest_len : 1);
		if (!wants || !offs || !mf) {
			rc = -ENOMEM;
			goto err_local;
		}
		/* identical pieces are fetched once each time they appear: the
		 * sink writes at each piece's own offset */
		for (uint32_t i = 0; i < npieces; i++) {
			struct tg_chunk_ref r;

			tg_mf_root_piece(pieces, i, &r);
			memcpy(wants[i].id, r.id, TG_ID_LEN);
			wants[i].len = r.len;
			offs[i] = off;
			off += r.len;
		}
		s.buf = mf;
		s.offs = offs;
		for (uint32_t i = 0; i < npieces; i++) {
			rc = tgc_fetch(c, &wants[i], 1, to_buf, &s, NULL);
			if (rc)
				goto err_gw;
			s.offs++;
		}
		free(wants);
		wants = NULL;
	}
	rc = tg_mf_iter_init(&it, mf, manifest_len);
	while (!rc) {
		struct tg_mf_file f;

		rc = tg_mf_iter_next(&it, &f);
		if (rc <= 0)
			break;
		if (nfiles == fcap) {
			struct tg_mf_file *v = realloc(files, (fcap = fcap ? fcap * 2 : 256) * sizeof(*v));

			if (!v) {
				rc = -ENOMEM;
				goto err_local;
			}
			files = v;
		}
		files[nfiles++] = f;
		rc = 0;
	}
	if (rc) {
		fprintf(stderr, PROG ": the backup's manifest is malformed: %s\n",
			it.why ? it.why : "?");
		*exit_code = 3;
		goto out_close;
	}

	/* directories and empty files first; every distinct chunk once */
	rc = tgc_idmap_init(&map, 1024);
	if (rc)
		goto err_local;
	for (size_t i = 0; i < nfiles; i++) {
		const struct tg_mf_file *f = &files[i];
		uint64_t off = 0;

		if (f->type == TG_MF_DIR)
			rc = tgc_rw_mkdir(&w, f->path, f->path_len);
		else if (f->type == TG_MF_REG)
			rc = tgc_rw_create(&w, f->path, f->path_len);
		if (rc) {
			fprintf(stderr, PROG ": %s\n", w.why[0] ? w.why : strerror(-rc));
			*exit_code = 3;
			goto out_close;
		}
		if (f->type != TG_MF_REG)
			continue;
		bytes += f->size;
		for (uint32_t k = 0; k < f->nchunks; k++) {
			struct tg_chunk_ref r;
			uint32_t u;

			tg_mf_chunk(f, k, &r);
			if (nuses == ucap) {
				struct use *v = realloc(uses, (ucap = ucap ? ucap * 2 : 1024) * sizeof(*v));

				if (!v) {
					rc = -ENOMEM;
					goto err_local;
				}
				uses = v;
			}
			if (nwant % 1024 == 0) {
				struct tgc_want *v = realloc(wants, (nwant + 1024) * sizeof(*v));
				uint32_t *h = realloc(head, (nwant + 1024) * sizeof(*h));

				if (v)
					wants = v;
				if (h)
					head = h;
				if (!v || !h) {
					rc = -ENOMEM;
					goto err_local;
				}
			}
			u = tgc_idmap_get(&map, r.id);
			if (u == UINT32_MAX) {
				u = (uint32_t)nwant++;
				if (tgc_idmap_put(&map, r.id, u) == UINT32_MAX) {
					rc = -ENOMEM;
					goto err_local;
				}
				memcpy(wants[u].id, r.id, TG_ID_LEN);
				wants[u].len = r.len;
				head[u] = UINT32_MAX;
			} else if (wants[u].len != r.len) {
				fprintf(stderr, PROG ": the manifest gives one chunk two lengths\n");
				*exit_code = 3;
				rc = -EBADMSG;
				goto out_close;
			}
			/* append, so a chunk's uses are written in file order */
			uses[nuses].file = (uint32_t)i;
			uses[nuses].off = off;
			uses[nuses].next = head[u];
			head[u] = (uint32_t)nuses++;
			off += r.len;
		}
	}

	/* the file chunks (5.5 steps 3-5) */
	done = calloc(nwant + 1, sizeof(*done));
	if (!done) {
		rc = -ENOMEM;
		goto err_local;
	}
	{
		struct file_sink s = { &w, files, uses, head, done, 0 };

		prog.start_ns = tgc_now_ns();
		for (;;) {
			size_t k = 0;

			/* on a second pass only what is still missing */
			for (size_t i = 0; i < nwant; i++) {
				if (done[i])
					continue;
				if (k != i) {
					wants[k] = wants[i];
					head[k] = head[i];
					done[k] = false;
				}
				k++;
			}
			nwant = k;
			rc = tgc_fetch(c, wants, nwant, to_files, &s, &pg);
			if (rc == -EPROTO && c->gw_err == TG_ERR_BAD_SESSION && !reopened) {
				reopened = true;
				rc = reopen(c, &cr, o, ok.backup_id);
				if (!rc)
					continue;
			}
			break;
		}
		tgc_cli_progress_end(&prog);
		if (rc && s.err) {
			fprintf(stderr, PROG ": %s\n", w.why[0] ? w.why : strerror(-rc));
			*exit_code = 3;
			goto out_close;
		}
		if (rc)
			goto err_gw;
	}

	/* symlinks last, then metadata; directories deepest first (5.5 step 6) */
	for (size_t i = 0; i < nfiles; i++) {
		const struct tg_mf_file *f = &files[i];

		if (f->type != TG_MF_LNK)
			continue;
		rc = tgc_rw_symlink(&w, f->path, f->path_len, f->link, f->link_len);
		if (rc)
			goto err_write;
	}
	dirs = malloc((nfiles + 1) * sizeof(*dirs));
	if (!dirs) {
		rc = -ENOMEM;
		goto err_local;
	}
	for (size_t i = 0; i < nfiles; i++) {
		if (files[i].type == TG_MF_DIR) {
			dirs[ndirs++] = &files[i];
			continue;
		}
		rc = tgc_rw_meta(&w, &files[i]);
		if (rc)
			goto err_write;
	}
	qsort(dirs, ndirs, sizeof(*dirs), depth_cmp);
	for (size_t i = 0; i < ndirs; i++) {
		rc = tgc_rw_meta(&w, dirs[i]);
		if (rc)
			goto err_write;
	}
	tgc_session_close(c, TG_OK);
	if (o->json) {
		json_t *j = json_object();
		char *s;

		json_object_set_new(j, "backup_id", json_integer((json_int_t)ok.backup_id));
		json_object_set_new(j, "files", json_integer((json_int_t)nfiles));
		json_object_set_new(j, "bytes", json_integer((json_int_t)bytes));
		json_object_set_new(j, "chunks", json_integer((json_int_t)nuses));
		json_object_set_new(j, "seconds", json_real((double)(tgc_now_ns() - t0) / 1e9));
		s = json_dumps(j, JSON_COMPACT);
		if (s)
			puts(s);
		free(s);
		json_decref(j);
	}
	rc = 0;
	goto out_close;

err_write:
	fprintf(stderr, PROG ": %s\n", w.why[0] ? w.why : strerror(-rc));
	*exit_code = 3;
	goto out_close;
err_local:
	*exit_code = tgc_cli_fail(PROG, rc, c, "restore");
	goto out_close;
err_gw:
	*exit_code = tgc_cli_fail(PROG, rc, c, "restore");
out_close:
	if (c->open)
		tgc_session_close(c, *exit_code ? TG_ERR_BAD_REQUEST : TG_OK);
out:
	tgc_rw_close(&w);
	tgc_idmap_free(&map);
	free(wants);
	free(offs);
	free(head);
	free(uses);
	free(done);
	free(files);
	free(dirs);
	free(rootbuf);
	free(mf);
	tgc_conn_close(c);
	free(c);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_RELAY = 256, O_FROM, O_ADMIN, O_FORCE, O_MTU, O_TIMEOUT, O_PROGRESS, O_JSON };
	static const struct option lo[] = {
		{ "gateway", required_argument, NULL, 'g' },
		{ "credentials", required_argument, NULL, 'c' },
		{ "device", required_argument, NULL, 'n' },
		{ "relay", no_argument, NULL, O_RELAY },
		{ "backup", required_argument, NULL, 'b' },
		{ "from-device", required_argument, NULL, O_FROM },
		{ "admin", no_argument, NULL, O_ADMIN },
		{ "force", no_argument, NULL, O_FORCE },
		{ "mtu", required_argument, NULL, O_MTU },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "quiet", no_argument, NULL, 'q' },
		{ "progress", no_argument, NULL, O_PROGRESS },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ropts o = { .mtu = 1500, .timeout = 120 };
	char host[TG_NAME_MAX + 1], cpath[4096], *end;
	bool quiet = false, force_progress = false;
	int opt, exit_code = 0;

	while ((opt = getopt_long(argc, argv, "g:c:n:b:qh", lo, NULL)) != -1) {
		switch (opt) {
		case 'g': o.gateway = optarg; break;
		case 'c': o.creds = optarg; break;
		case 'n':
			if (!*optarg || strlen(optarg) > TG_NAME_MAX) {
				fprintf(stderr, PROG ": --device: 1..64 bytes\n");
				return 2;
			}
			o.device = optarg;
			break;
		case O_RELAY: o.relay = true; break;
		case 'b':
			errno = 0;
			o.backup_id = strtoull(optarg, &end, 10);
			if (errno || !*optarg || *end) {
				fprintf(stderr, PROG ": --backup: a backup id (number)\n");
				return 2;
			}
			o.have_backup = true;
			break;
		case O_FROM:
			if (tg_id_from_hex(optarg, o.from)) {
				fprintf(stderr, PROG ": --from-device: 32 hex digits\n");
				return 2;
			}
			o.have_from = true;
			break;
		case O_ADMIN: o.admin = true; break;
		case O_FORCE: o.force = true; break;
		case O_MTU: {
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || v < 576 || v > 9000) {
				fprintf(stderr, PROG ": --mtu: 576..9000\n");
				return 2;
			}
			o.mtu = (unsigned)v;
			break;
		}
		case O_TIMEOUT: {
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || v < 1 || v > 86400) {
				fprintf(stderr, PROG ": --timeout: 1..86400 seconds\n");
				return 2;
			}
			o.timeout = (unsigned)v;
			break;
		}
		case 'q': quiet = true; break;
		case O_PROGRESS: force_progress = true; break;
		case O_JSON: o.json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!o.gateway || argc - optind != 1) {
		fprintf(stderr, PROG ": --gateway and one TARGET_DIR are required\n");
		usage(stderr);
		return 2;
	}
	o.target = argv[optind];
	if (!o.device) {
		if (gethostname(host, sizeof(host)))
			strcpy(host, "localhost");
		host[TG_NAME_MAX] = 0;
		o.device = host;
	}
	if (!o.creds)
		o.creds = tgc_cli_default_creds(cpath, sizeof(cpath));
	o.progress = !quiet && (force_progress || isatty(STDERR_FILENO));
	run(&o, &exit_code);
	return exit_code;
}
