/*
 * creds.c - the credentials file: one line per registered device,
 *   tidegate-cred v1 <provider_guid> <device_name> <relay 0|1> <org_guid> <device_id_hex> <cred_hex>
 * Mode 0600, replaced atomically (temp file, fsync, rename, fsync of the
 * directory) so a crash leaves the old file or the new one, never half of
 * either: losing a credential costs the customer a seat.
 *
 * Device names may hold spaces (protocol name bytes), so the name field is
 * percent-encoded: '%', bytes <= 0x20 and bytes >= 0x7f become %XX.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tgc.h"

#define CRED_MAGIC "tidegate-cred"
#define LINE_MAX_LEN 1024

static void hex_put(const uint8_t *b, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int hex_get(const char *s, uint8_t *b, size_t n)
{
	if (strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int tgc_cred_format(const struct tgc_cred *e, char *out, size_t cap)
{
	char pg[33], org[33], dev[33], cred[65], name[TG_NAME_MAX * 3 + 1];
	size_t k = 0;
	int n;

	if (!e->device[0] || strlen(e->device) > TG_NAME_MAX)
		return -EINVAL;
	for (const unsigned char *p = (const unsigned char *)e->device; *p; p++) {
		if (*p <= 0x20 || *p >= 0x7f || *p == '%')
			k += (size_t)sprintf(name + k, "%%%02X", *p);
		else
			name[k++] = (char)*p;
	}
	name[k] = 0;
	hex_put(e->provider, TG_ID_LEN, pg);
	hex_put(e->org, TG_ID_LEN, org);
	hex_put(e->device_id, TG_ID_LEN, dev);
	hex_put(e->cred, TG_CRED_LEN, cred);
	n = snprintf(out, cap, CRED_MAGIC " v1 %s %s %d %s %s %s\n", pg, name, e->relay ? 1 : 0,
		     org, dev, cred);
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}

static int name_decode(const char *s, char *out)
{
	size_t k = 0;

	for (; *s; s++) {
		int c = (unsigned char)*s;

		if (*s == '%') {
			int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);

			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = hi << 4 | lo;
			s += 2;
		}
		if (c < 0x20 || c == 0x7f || k >= TG_NAME_MAX)
			return -EINVAL;
		out[k++] = (char)c;
	}
	if (!k)
		return -EINVAL;
	out[k] = 0;
	return 0;
}

int tgc_cred_parse(const char *line, struct tgc_cred *e)
{
	char buf[LINE_MAX_LEN], *f[9], *save = NULL, *tok;
	unsigned n = 0;

	if (strlen(line) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, line);
	for (tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if (n == 9)
			return -EINVAL;
		f[n++] = tok;
	}
	if (n != 8 || strcmp(f[0], CRED_MAGIC) || strcmp(f[1], "v1"))
		return -EINVAL;
	memset(e, 0, sizeof(*e));
	if (tg_id_from_hex(f[2], e->provider) || name_decode(f[3], e->device))
		return -EINVAL;
	if (strcmp(f[4], "0") && strcmp(f[4], "1"))
		return -EINVAL;
	e->relay = f[4][0] == '1';
	if (tg_id_from_hex(f[5], e->org) || tg_id_from_hex(f[6], e->device_id) ||
	    hex_get(f[7], e->cred, TG_CRED_LEN))
		return -EINVAL;
	return 0;
}

int tgc_creds_load(const char *path, struct tgc_creds *c, unsigned *bad_line)
{
	char line[LINE_MAX_LEN + 2];
	unsigned lineno = 0;
	FILE *fp;
	int rc = 0;

	memset(c, 0, sizeof(*c));
	fp = fopen(path, "re");
	if (!fp)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), fp)) {
		struct tgc_cred e;
		size_t l = strlen(line);

		lineno++;
		if (l && line[l - 1] == '\n')
			line[--l] = 0;
		else if (!feof(fp)) { /* longer than any valid line */
			rc = -EBADMSG;
			break;
		}
		if (l && line[l - 1] == '\r')
			line[--l] = 0;
		if (!l || line[0] == '#')
			continue;
		if (tgc_cred_parse(line, &e)) {
			rc = -EBADMSG;
			break;
		}
		rc = tgc_creds_put(c, &e);
		if (rc)
			break;
	}
	if (!rc && ferror(fp))
		rc = -EIO;
	fclose(fp);
	if (rc) {
		if (bad_line)
			*bad_line = lineno;
		tgc_creds_free(c);
	}
	return rc;
}

/* mkdir -p of path's directory, new levels 0700 (it holds secrets). */
static int make_parent(const char *path)
{
	char dir[4096];
	char *slash;

	if (strlen(path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(dir, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

static int fsync_dir_of(const char *path)
{
	char dir[4096];
	char *slash;
	int fd, rc = 0;

	if (strlen(path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

int tgc_creds_save(const char *path, const struct tgc_creds *c)
{
	char tmp[4200], line[LINE_MAX_LEN];
	int fd, rc;

	rc = make_parent(path);
	if (rc)
		return rc;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	/* umask may have cut bits, never added: still say 0600 explicitly */
	if (fchmod(fd, 0600)) {
		rc = -errno;
		goto err_unlink;
	}
	for (size_t i = 0; i < c->n; i++) {
		int n = tgc_cred_format(&c->v[i], line, sizeof(line));

		if (n < 0) {
			rc = n;
			goto err_unlink;
		}
		if (write(fd, line, (size_t)n) != n) {
			rc = -EIO;
			goto err_unlink;
		}
	}
	if (fsync(fd)) {
		rc = -errno;
		goto err_unlink;
	}
	if (close(fd)) {
		fd = -1;
		rc = -errno;
		goto err_unlink;
	}
	fd = -1;
	if (rename(tmp, path)) {
		rc = -errno;
		goto err_unlink;
	}
	return fsync_dir_of(path);

err_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

struct tgc_cred *tgc_creds_find(struct tgc_creds *c, const uint8_t *provider,
				const char *device, bool relay)
{
	for (size_t i = 0; i < c->n; i++) {
		struct tgc_cred *e = &c->v[i];

		if (e->relay == relay && !strcmp(e->device, device) &&
		    (!provider || !memcmp(e->provider, provider, TG_ID_LEN)))
			return e;
	}
	return NULL;
}

int tgc_creds_put(struct tgc_creds *c, const struct tgc_cred *e)
{
	struct tgc_cred *old = tgc_creds_find(c, e->provider, e->device, e->relay);

	if (old) {
		*old = *e;
		return 0;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 8;
		struct tgc_cred *v = realloc(c->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = *e;
	return 0;
}

void tgc_creds_free(struct tgc_creds *c)
{
	free(c->v);
	memset(c, 0, sizeof(*c));
}
