/*
 * walk.c - what a backup consists of: walk the PATHs (regular files,
 * directories, symlinks; special files are counted and left out), cut every
 * regular file with FastCDC (tg_cdc) into chunks of at most the gateway's
 * max_chunk, hash each with tg_chunk_hash, and serialize the manifest
 * (tg_manifest.h) from the result.
 *
 * Files are read once here with large sequential reads; the upload re-reads
 * only the chunks the gateway needs and checks each against its id, so a
 * file changed between the walk and the upload is caught, not stored wrong.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tgc.h"

#define READ_MIN (16u << 20)

int tgc_cdc_params(uint32_t max_chunk, struct tg_cdc *cdc)
{
	uint32_t avg = 1;

	if (max_chunk >= TG_CDC_MAX)
		return tg_cdc_init(cdc, TG_CDC_MIN, TG_CDC_AVG, TG_CDC_MAX);
	while (avg * 2 <= max_chunk / 4)
		avg *= 2;
	return tg_cdc_init(cdc, avg / 4, avg, max_chunk);
}

int tgc_tree_init(struct tgc_tree *t, uint32_t max_chunk)
{
	memset(t, 0, sizeof(*t));
	if (!max_chunk || max_chunk > TG_CHUNK_MAX)
		max_chunk = TG_CHUNK_MAX;
	t->max_chunk = max_chunk;
	t->buf_len = READ_MIN > 2 * (size_t)max_chunk ? READ_MIN : 2 * (size_t)max_chunk;
	t->buf = malloc(t->buf_len);
	return t->buf ? 0 : -ENOMEM;
}

void tgc_tree_free(struct tgc_tree *t)
{
	for (size_t i = 0; i < t->nfiles; i++) {
		free(t->files[i].path);
		free(t->files[i].src);
		free(t->files[i].link);
	}
	free(t->files);
	free(t->refs);
	free(t->buf);
	memset(t, 0, sizeof(*t));
}

static struct tgc_file *file_new(struct tgc_tree *t, const char *path, const struct stat *st)
{
	struct tgc_file *f;

	if (t->nfiles == t->fcap) {
		size_t cap = t->fcap ? t->fcap * 2 : 256;
		struct tgc_file *v = realloc(t->files, cap * sizeof(*v));

		if (!v)
			return NULL;
		t->files = v;
		t->fcap = cap;
	}
	f = &t->files[t->nfiles];
	memset(f, 0, sizeof(*f));
	f->path = strdup(path);
	if (!f->path)
		return NULL;
	f->src_fd = -1;
	f->mode = st->st_mode & 07777;
	f->uid = st->st_uid;
	f->gid = st->st_gid;
	f->mtime_sec = st->st_mtim.tv_sec;
	f->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
	f->first = (uint32_t)t->nrefs;
	t->nfiles++;
	return f;
}

static int ref_add(struct tgc_tree *t, const uint8_t *p, size_t len, uint32_t file, uint64_t off)
{
	struct tgc_ref *r;
	struct tg_chunk_id id;

	if (t->nrefs == t->rcap) {
		size_t cap = t->rcap ? t->rcap * 2 : 1024;
		struct tgc_ref *v = realloc(t->refs, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		t->refs = v;
		t->rcap = cap;
	}
	tg_chunk_hash(p, len, &id);
	r = &t->refs[t->nrefs++];
	memcpy(r->id, id.b, TG_ID_LEN);
	r->len = (uint32_t)len;
	r->file = file;
	r->off = off;
	return 0;
}

/* Read fd to its end, cutting chunks; the file entry is t->files[fi]. */
static int chunk_fd(struct tgc_tree *t, int fd, uint32_t fi)
{
	struct tg_cdc cdc;
	size_t have = 0, pos = 0;
	uint64_t off = 0;
	bool eof = false;
	int rc;

	rc = tgc_cdc_params(t->max_chunk, &cdc);
	if (rc)
		return rc;
	for (;;) {
		size_t cut;

		/* keep at least max bytes ahead of the cursor unless at EOF */
		if (!eof && have - pos < cdc.max) {
			memmove(t->buf, t->buf + pos, have - pos);
			have -= pos;
			pos = 0;
			while (have < t->buf_len) {
				ssize_t n = read(fd, t->buf + have, t->buf_len - have);

				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0)
					return -errno;
				if (n == 0) {
					eof = true;
					break;
				}
				have += (size_t)n;
			}
		}
		if (pos == have)
			break;
		cut = tg_cdc_cut(&cdc, t->buf + pos, have - pos);
		if (t->files[fi].nchunks >= TG_MF_CHUNKS_MAX)
			return -EFBIG;
		rc = ref_add(t, t->buf + pos, cut, fi, off);
		if (rc)
			return rc;
		t->files[fi].nchunks++;
		off += cut;
		pos += cut;
		if (t->tick)
			t->tick(t->tick_arg);
	}
	t->files[fi].size = off;
	t->logical += off;
	return 0;
}

static int add_reg(struct tgc_tree *t, const char *mpath, const char *src)
{
	struct tgc_file *f;
	struct stat st;
	uint32_t fi;
	int fd, rc;

	fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		snprintf(t->why, sizeof(t->why), "%s: %s", src, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		snprintf(t->why, sizeof(t->why), "%s: not a regular file any more", src);
		return -EINVAL;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	f = file_new(t, mpath, &st);
	if (!f || !(f->src = strdup(src))) {
		close(fd);
		return -ENOMEM;
	}
	f->type = TG_MF_REG;
	fi = (uint32_t)(f - t->files);
	rc = chunk_fd(t, fd, fi);
	if (rc)
		snprintf(t->why, sizeof(t->why), "%s: %s", src, strerror(-rc));
	close(fd);
	return rc;
}

static int add_lnk(struct tgc_tree *t, const char *mpath, const char *src, const struct stat *st)
{
	char target[TG_MF_PATH_MAX + 1];
	struct tgc_file *f;
	ssize_t n;

	n = readlink(src, target, sizeof(target));
	if (n < 1 || n > (ssize_t)TG_MF_PATH_MAX) {
		snprintf(t->why, sizeof(t->why), "%s: unreadable symlink", src);
		return n < 0 ? -errno : -ENAMETOOLONG;
	}
	target[n] = 0;
	f = file_new(t, mpath, st);
	if (!f || !(f->link = strdup(target)))
		return -ENOMEM;
	f->type = TG_MF_LNK;
	return 0;
}

static bool name_ok(const char *n)
{
	for (; *n; n++)
		if ((unsigned char)*n < 0x20 || *n == 0x7f)
			return false;
	return true;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walk directory src whose manifest path is mpath ("" = the root). */
static int add_dir_contents(struct tgc_tree *t, const char *mpath, const char *src,
			    unsigned depth)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if (depth > 256) {
		snprintf(t->why, sizeof(t->why), "%s: directories nested too deep", src);
		return -ELOOP;
	}
	d = opendir(src);
	if (!d) {
		rc = -errno;
		snprintf(t->why, sizeof(t->why), "%s: %s", src, strerror(errno));
		return rc;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			char **v = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*v));

			if (!v) {
				rc = -ENOMEM;
				goto out;
			}
			names = v;
		}
		if (!(names[n] = strdup(de->d_name))) {
			rc = -ENOMEM;
			goto out;
		}
		n++;
	}
	/* sorted: the same tree gives the same manifest, hence the same pieces */
	qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < n && !rc; i++) {
		char *cs = NULL, *cm = NULL;
		struct stat st;

		if (asprintf(&cs, "%s/%s", src, names[i]) < 0)
			cs = NULL;
		if (*mpath ? asprintf(&cm, "%s/%s", mpath, names[i]) < 0 :
			     !(cm = strdup(names[i])))
			cm = NULL;
		if (!cs || !cm) {
			rc = -ENOMEM;
		} else if (!name_ok(names[i])) {
			t->skipped++; /* control bytes: the manifest cannot carry it */
		} else if (strlen(cm) > TG_MF_PATH_MAX) {
			snprintf(t->why, sizeof(t->why), "%s: path too long", cs);
			rc = -ENAMETOOLONG;
		} else if (lstat(cs, &st)) {
			if (errno != ENOENT) { /* vanished since readdir: fine */
				rc = -errno;
				snprintf(t->why, sizeof(t->why), "%s: %s", cs, strerror(errno));
			}
		} else if (S_ISDIR(st.st_mode)) {
			struct tgc_file *f = file_new(t, cm, &st);

			if (!f)
				rc = -ENOMEM;
			else
				f->type = TG_MF_DIR;
			if (!rc)
				rc = add_dir_contents(t, cm, cs, depth + 1);
		} else if (S_ISREG(st.st_mode)) {
			rc = add_reg(t, cm, cs);
		} else if (S_ISLNK(st.st_mode)) {
			rc = add_lnk(t, cm, cs, &st);
		} else {
			t->skipped++;
		}
		free(cs);
		free(cm);
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return rc;
}

int tgc_tree_add_path(struct tgc_tree *t, const char *path)
{
	char tmp[PATH_MAX];
	const char *base;
	struct stat st;
	size_t l;

	if (lstat(path, &st)) {
		int rc = -errno;

		snprintf(t->why, sizeof(t->why), "%s: %s", path, strerror(errno));
		return rc;
	}
	if (S_ISDIR(st.st_mode))
		return add_dir_contents(t, "", path, 0);
	/* the base name, without trailing slashes */
	l = strlen(path);
	if (l >= sizeof(tmp))
		return -ENAMETOOLONG;
	strcpy(tmp, path);
	while (l > 1 && tmp[l - 1] == '/')
		tmp[--l] = 0;
	base = strrchr(tmp, '/') ? strrchr(tmp, '/') + 1 : tmp;
	if (S_ISREG(st.st_mode))
		return add_reg(t, base, path);
	if (S_ISLNK(st.st_mode))
		return add_lnk(t, base, path, &st);
	snprintf(t->why, sizeof(t->why), "%.400s: not a file, directory or symlink", path);
	return -EINVAL;
}

int tgc_tree_add_fd(struct tgc_tree *t, int fd, const char *name)
{
	struct tgc_file *f;
	struct stat st;
	int rc;

	if (fstat(fd, &st) || lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	f = file_new(t, name, &st);
	if (!f)
		return -ENOMEM;
	f->type = TG_MF_REG;
	f->src_fd = fd;
	rc = chunk_fd(t, fd, (uint32_t)(f - t->files));
	if (rc)
		snprintf(t->why, sizeof(t->why), "%s: %s", name, strerror(-rc));
	return rc;
}

int tgc_tree_manifest(const struct tgc_tree *t, const char *label, int64_t created,
		      uint8_t **buf, size_t *len, uint32_t *nfiles)
{
	struct tg_chunk_ref *refs = NULL;
	size_t rcap = 0;
	struct tg_mf_builder *b;
	const uint8_t *out;
	int err = 0, rc = 0;

	b = tg_mf_builder_create(label, created, &err);
	if (!b)
		return err ? err : -ENOMEM;
	for (size_t i = 0; i < t->nfiles && !rc; i++) {
		const struct tgc_file *f = &t->files[i];
		struct tg_mf_file mf = {
			.path = f->path, .path_len = (uint16_t)strlen(f->path),
			.type = f->type, .mode = f->mode, .uid = f->uid, .gid = f->gid,
			.size = f->size, .mtime_sec = f->mtime_sec, .mtime_nsec = f->mtime_nsec,
			.link = f->link, .link_len = f->link ? (uint16_t)strlen(f->link) : 0,
			.nchunks = f->nchunks,
		};

		if (f->nchunks > rcap) {
			struct tg_chunk_ref *v = realloc(refs, f->nchunks * sizeof(*v));

			if (!v) {
				rc = -ENOMEM;
				break;
			}
			refs = v;
			rcap = f->nchunks;
		}
		for (uint32_t k = 0; k < f->nchunks; k++) {
			memcpy(refs[k].id, t->refs[f->first + k].id, TG_ID_LEN);
			refs[k].len = t->refs[f->first + k].len;
		}
		rc = tg_mf_add(b, &mf, refs);
	}
	if (!rc)
		rc = tg_mf_finish(b, &out, len, nfiles, NULL);
	if (!rc) {
		*buf = malloc(*len ? *len : 1);
		if (!*buf)
			rc = -ENOMEM;
		else
			memcpy(*buf, out, *len);
	}
	free(refs);
	tg_mf_builder_destroy(b);
	return rc;
}

long tgc_cut_pieces(const uint8_t *buf, size_t len, uint32_t max_chunk,
		    struct tg_chunk_ref **out)
{
	struct tg_chunk_ref *v = NULL;
	struct tg_cdc cdc;
	size_t n = 0, cap = 0, off = 0;
	int rc;

	rc = tgc_cdc_params(max_chunk, &cdc);
	if (rc)
		return rc;
	while (off < len) {
		size_t cut = tg_cdc_cut(&cdc, buf + off, len - off);
		struct tg_chunk_id id;

		if (n == cap) {
			struct tg_chunk_ref *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*nv));

			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
		}
		tg_chunk_hash(buf + off, cut, &id);
		memcpy(v[n].id, id.b, TG_ID_LEN);
		v[n].len = (uint32_t)cut;
		n++;
		off += cut;
	}
	if (n > TG_MF_PIECES_MAX) {
		free(v);
		return -EFBIG;
	}
	*out = v;
	return (long)n;
}
