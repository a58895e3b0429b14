/*
 * restore_write.c - writing a restore beneath its target directory and
 * nowhere else (protocol.md 5.5 step 6). A manifest is hostile input and a
 * target may already hold planted symlinks, so every path is resolved one
 * component at a time with openat(O_NOFOLLOW | O_DIRECTORY) from the target's
 * fd: "..", absolute paths and symlinks anywhere in the path are refused,
 * never followed. Symlinks themselves are created by the caller last, and
 * modes, owners and mtimes are applied on fds opened without following.
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

bool tgc_rw_path_ok(const char *path, size_t len)
{
	size_t start = 0;

	if (!path || len < 1 || len > TG_MF_PATH_MAX || path[0] == '/')
		return false;
	for (size_t i = 0; i <= len; i++) {
		size_t cl;

		if (i < len && path[i] == 0)
			return false;
		if (i < len && path[i] != '/')
			continue;
		cl = i - start;
		if (cl == 0 || cl > NAME_MAX)
			return false;
		if (path[start] == '.' && (cl == 1 || (cl == 2 && path[start + 1] == '.')))
			return false;
		start = i + 1;
	}
	return true;
}

int tgc_rw_open(struct tgc_rw *w, const char *target, bool force)
{
	struct dirent *de;
	DIR *d;
	int fd;

	memset(w, 0, sizeof(*w));
	w->rootfd = w->cache_fd = -1;
	w->owners = geteuid() == 0;
	if (mkdir(target, 0777) && errno != EEXIST) {
		snprintf(w->why, sizeof(w->why), "%s: %s", target, strerror(errno));
		return -errno;
	}
	w->rootfd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->rootfd < 0) {
		int rc = -errno;

		snprintf(w->why, sizeof(w->why), "%s: %s", target, strerror(errno));
		return rc;
	}
	if (force)
		return 0;
	fd = dup(w->rootfd);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			closedir(d);
			snprintf(w->why, sizeof(w->why), "%s: not empty (use --force)", target);
			close(w->rootfd);
			w->rootfd = -1;
			return -ENOTEMPTY;
		}
	}
	closedir(d);
	return 0;
}

void tgc_rw_close(struct tgc_rw *w)
{
	if (w->cache_fd >= 0)
		close(w->cache_fd);
	free(w->cache_path);
	if (w->rootfd >= 0)
		close(w->rootfd);
	w->cache_fd = w->rootfd = -1;
	w->cache_path = NULL;
}

static void put_fd(const struct tgc_rw *w, int fd)
{
	if (fd >= 0 && fd != w->rootfd)
		close(fd);
}

/*
 * Open the directory that holds path's last component, creating missing
 * directories (0700 until their own metadata is applied) when create is set.
 * leaf gets the last component. Returns a dir fd (close with put_fd).
 */
static int walk_parent(struct tgc_rw *w, const char *path, size_t len, bool create,
		       char leaf[NAME_MAX + 1])
{
	size_t start = 0;
	int fd = w->rootfd;

	if (!tgc_rw_path_ok(path, len)) {
		snprintf(w->why, sizeof(w->why), "unsafe path refused: %.*s", (int)(len > 200 ? 200 : len), path);
		return -EINVAL;
	}
	for (size_t i = 0; i <= len; i++) {
		char comp[NAME_MAX + 1];
		size_t cl;
		int nfd;

		if (i < len && path[i] != '/')
			continue;
		cl = i - start;
		memcpy(comp, path + start, cl);
		comp[cl] = 0;
		start = i + 1;
		if (i == len) {
			memcpy(leaf, comp, cl + 1);
			return fd;
		}
		nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0 && errno == ENOENT && create) {
			if (mkdirat(fd, comp, 0700) && errno != EEXIST) {
				int rc = -errno;

				put_fd(w, fd);
				return rc;
			}
			nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (nfd < 0) {
			int rc = errno == ENOTDIR ? -ELOOP : -errno;

			snprintf(w->why, sizeof(w->why), "%.*s: %s%s", (int)(i > 200 ? 200 : i), path,
				 strerror(errno),
				 errno == ELOOP || errno == ENOTDIR ? " (a symlink or file in the way: refused)" : "");
			put_fd(w, fd);
			return rc;
		}
		put_fd(w, fd);
		fd = nfd;
	}
	return -EINVAL; /* not reached: the loop returns at i == len */
}

int tgc_rw_mkdir(struct tgc_rw *w, const char *path, size_t len)
{
	char leaf[NAME_MAX + 1];
	struct stat st;
	int dfd, rc = 0;

	dfd = walk_parent(w, path, len, true, leaf);
	if (dfd < 0)
		return dfd;
	if (mkdirat(dfd, leaf, 0700)) {
		rc = -errno;
		if (errno == EEXIST && !fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW))
			rc = S_ISDIR(st.st_mode) ? 0 : -ELOOP;
		if (rc)
			snprintf(w->why, sizeof(w->why), "%.*s: cannot make directory: %s",
				 (int)(len > 200 ? 200 : len), path, strerror(-rc));
	}
	put_fd(w, dfd);
	return rc;
}

static int open_leaf(struct tgc_rw *w, const char *path, size_t len, bool create)
{
	char leaf[NAME_MAX + 1];
	int dfd, fd, flags = O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;

	dfd = walk_parent(w, path, len, create, leaf);
	if (dfd < 0)
		return dfd;
	if (create)
		flags |= O_CREAT | O_TRUNC;
	fd = openat(dfd, leaf, flags, 0600);
	if (fd < 0 && create && errno == EACCES) {
		/* a read-only file from an earlier restore (--force): replace it */
		unlinkat(dfd, leaf, 0);
		fd = openat(dfd, leaf, flags | O_EXCL, 0600);
	}
	if (fd < 0) {
		int rc = -errno;

		snprintf(w->why, sizeof(w->why), "%.*s: %s%s", (int)(len > 200 ? 200 : len), path,
			 strerror(errno), errno == ELOOP ? " (symlink in the way: refused)" : "");
		put_fd(w, dfd);
		return rc;
	}
	put_fd(w, dfd);
	return fd;
}

static void cache_drop(struct tgc_rw *w)
{
	if (w->cache_fd >= 0)
		close(w->cache_fd);
	free(w->cache_path);
	w->cache_fd = -1;
	w->cache_path = NULL;
}

static void cache_set(struct tgc_rw *w, int fd, const char *path, size_t len)
{
	cache_drop(w);
	w->cache_path = strndup(path, len);
	if (!w->cache_path) {
		close(fd);
		return;
	}
	w->cache_fd = fd;
}

int tgc_rw_create(struct tgc_rw *w, const char *path, size_t len)
{
	int fd = open_leaf(w, path, len, true);

	if (fd < 0)
		return fd;
	cache_set(w, fd, path, len);
	return 0;
}

int tgc_rw_write(struct tgc_rw *w, const char *path, size_t len, uint64_t off,
		 const uint8_t *buf, size_t n)
{
	if (!w->cache_path || strlen(w->cache_path) != len || memcmp(w->cache_path, path, len)) {
		int fd = open_leaf(w, path, len, false);

		if (fd < 0)
			return fd;
		cache_set(w, fd, path, len);
		if (w->cache_fd < 0)
			return -ENOMEM;
	}
	while (n) {
		ssize_t k = pwrite(w->cache_fd, buf, n, (off_t)off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			int rc = k < 0 ? -errno : -EIO;

			snprintf(w->why, sizeof(w->why), "%.*s: write: %s", (int)(len > 200 ? 200 : len),
				 path, strerror(-rc));
			return rc;
		}
		buf += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
	return 0;
}

int tgc_rw_symlink(struct tgc_rw *w, const char *path, size_t len, const char *target,
		   size_t tlen)
{
	char leaf[NAME_MAX + 1], *t;
	struct stat st;
	int dfd, rc = 0;

	t = strndup(target, tlen);
	if (!t)
		return -ENOMEM;
	dfd = walk_parent(w, path, len, true, leaf);
	if (dfd < 0) {
		free(t);
		return dfd;
	}
	if (symlinkat(t, dfd, leaf)) {
		rc = -errno;
		/* --force over an earlier restore: replace a symlink, nothing else */
		if (errno == EEXIST && !fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) &&
		    S_ISLNK(st.st_mode) && !unlinkat(dfd, leaf, 0))
			rc = symlinkat(t, dfd, leaf) ? -errno : 0;
		if (rc)
			snprintf(w->why, sizeof(w->why), "%.*s: symlink: %s",
				 (int)(len > 200 ? 200 : len), path, strerror(-rc));
	}
	free(t);
	put_fd(w, dfd);
	return rc;
}

int tgc_rw_meta(struct tgc_rw *w, const struct tg_mf_file *f)
{
	struct timespec ts[2] = {
		{ .tv_sec = (time_t)f->mtime_sec, .tv_nsec = (long)f->mtime_nsec },
		{ .tv_sec = (time_t)f->mtime_sec, .tv_nsec = (long)f->mtime_nsec },
	};
	char leaf[NAME_MAX + 1];
	int dfd, fd, rc = 0;

	cache_drop(w); /* a later write must not move an mtime already set */
	dfd = walk_parent(w, f->path, f->path_len, false, leaf);
	if (dfd < 0)
		return dfd;
	if (f->type == TG_MF_LNK) {
		if (w->owners && fchownat(dfd, leaf, f->uid, f->gid, AT_SYMLINK_NOFOLLOW))
			rc = -errno;
		if (!rc && utimensat(dfd, leaf, ts, AT_SYMLINK_NOFOLLOW))
			rc = -errno;
		goto out;
	}
	fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
		    (f->type == TG_MF_DIR ? O_DIRECTORY : 0));
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	/* chown first: it clears set-id bits that chmod then restores */
	if (w->owners && fchown(fd, f->uid, f->gid))
		rc = -errno;
	if (!rc && fchmod(fd, f->mode & 07777))
		rc = -errno;
	if (!rc && futimens(fd, ts))
		rc = -errno;
	close(fd);
out:
	if (rc)
		snprintf(w->why, sizeof(w->why), "%.*s: metadata: %s",
			 (int)(f->path_len > 200 ? 200 : f->path_len), f->path, strerror(-rc));
	put_fd(w, dfd);
	return rc;
}
