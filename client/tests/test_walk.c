/*
 * test_walk.c - the walk and the manifest on a real tree (/usr/share/doc):
 * the manifest parses back with tg_manifest's hostile-input parser, has one
 * entry per file, directory and symlink with relative paths, types and sizes
 * as lstat sees them; every file's chunk lengths add up to its size, each
 * chunk id is the hash of the bytes at its place, and the manifest's pieces
 * and root cover the stream exactly. Also: a directory's contents land at
 * the root, a file under its base name, an open fd (stdin) under its name.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tgc.h"

#define TREE "/usr/share/doc"
#define SMALL_MAX (64u << 10) /* small chunks: most files get several */

static void check_file(const struct tg_mf_file *f, uint64_t *bytes)
{
	char path[TG_MF_PATH_MAX + sizeof(TREE) + 2];
	struct stat st;
	uint64_t sum = 0;
	uint8_t *buf;
	int fd;

	assert_true(f->path_len > 0 && f->path[0] != '/');
	snprintf(path, sizeof(path), TREE "/%.*s", (int)f->path_len, f->path);
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(f->mode, st.st_mode & 07777);
	assert_int_equal(f->mtime_sec, st.st_mtim.tv_sec);
	if (f->type == TG_MF_DIR) {
		assert_true(S_ISDIR(st.st_mode));
		return;
	}
	if (f->type == TG_MF_LNK) {
		char t[TG_MF_PATH_MAX + 1];
		ssize_t n = readlink(path, t, sizeof(t));

		assert_true(S_ISLNK(st.st_mode));
		assert_int_equal(n, f->link_len);
		assert_memory_equal(t, f->link, f->link_len);
		return;
	}
	assert_int_equal(f->type, TG_MF_REG);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(f->size, (uint64_t)st.st_size);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	buf = malloc(SMALL_MAX);
	for (uint32_t k = 0; k < f->nchunks; k++) {
		struct tg_chunk_ref r;
		struct tg_chunk_id id;

		tg_mf_chunk(f, k, &r);
		assert_true(r.len >= 1 && r.len <= SMALL_MAX);
		assert_int_equal(pread(fd, buf, r.len, (off_t)sum), r.len);
		tg_chunk_hash(buf, r.len, &id);
		assert_memory_equal(id.b, r.id, TG_ID_LEN);
		sum += r.len;
	}
	free(buf);
	close(fd);
	assert_int_equal(sum, f->size);
	*bytes += sum;
}

static unsigned count_entries(const char *dir)
{
	unsigned n = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	assert_non_null(d);
	while ((de = readdir(d))) {
		char p[4096];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (lstat(p, &st))
			continue;
		if (S_ISDIR(st.st_mode))
			n += 1 + count_entries(p);
		else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))
			n++;
	}
	closedir(d);
	return n;
}

static void real_tree_manifest_parses_back_and_adds_up(void **state)
{
	struct tgc_tree t;
	struct tg_mf_iter it;
	struct tg_mf_file f;
	struct tg_chunk_ref *pieces = NULL;
	uint8_t *mf = NULL, *root;
	const uint8_t *rp;
	uint32_t nfiles = 0, seen = 0, npieces;
	uint64_t bytes = 0, mlen, psum = 0;
	size_t len = 0;
	long np, rlen;
	int rc;

	assert_int_equal(tgc_tree_init(&t, SMALL_MAX), 0);
	assert_int_equal(tgc_tree_add_path(&t, TREE), 0);
	assert_true(t.nfiles > 100);
	assert_int_equal(tgc_tree_manifest(&t, "doc", 1700000000, &mf, &len, &nfiles), 0);
	assert_int_equal(nfiles, t.nfiles);
	assert_int_equal(nfiles + t.skipped, count_entries(TREE));

	assert_int_equal(tg_mf_iter_init(&it, mf, len), 0);
	assert_int_equal(it.created, 1700000000);
	assert_int_equal(it.label_len, 3);
	while ((rc = tg_mf_iter_next(&it, &f)) == 1) {
		check_file(&f, &bytes);
		seen++;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(seen, nfiles);
	assert_int_equal(bytes, t.logical);
	assert_true(t.nrefs > t.nfiles / 4); /* multi-chunk files exist */

	/* the pieces cover the stream, the root lists them */
	np = tgc_cut_pieces(mf, len, SMALL_MAX, &pieces);
	assert_true(np >= 1);
	for (long i = 0; i < np; i++) {
		struct tg_chunk_id id;

		assert_true(pieces[i].len <= SMALL_MAX);
		tg_chunk_hash(mf + psum, pieces[i].len, &id);
		assert_memory_equal(id.b, pieces[i].id, TG_ID_LEN);
		psum += pieces[i].len;
	}
	assert_int_equal(psum, len);
	root = malloc(20 + 20 * (size_t)np);
	rlen = tg_mf_root_build(root, 20 + 20 * (size_t)np, pieces, (uint32_t)np, len);
	assert_int_equal(rlen, 20 + 20 * np);
	assert_int_equal(tg_mf_root_parse(root, (size_t)rlen, &rp, &npieces, &mlen), 0);
	assert_int_equal(npieces, np);
	assert_int_equal(mlen, len);
	free(root);
	free(pieces);
	free(mf);
	tgc_tree_free(&t);
}

static void file_goes_under_its_base_name_and_fd_under_its_name(void **state)
{
	char dir[] = "/tmp/tgc-walk-XXXXXX", file[64];
	struct tgc_tree t;
	struct tg_mf_iter it;
	struct tg_mf_file f;
	uint8_t *mf = NULL, data[5000];
	uint32_t nfiles;
	size_t len;
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/hello.txt", dir);
	fd = open(file, O_RDWR | O_CREAT, 0640);
	assert_true(fd >= 0);
	memset(data, 'x', sizeof(data));
	assert_int_equal(write(fd, data, sizeof(data)), sizeof(data));

	assert_int_equal(tgc_tree_init(&t, 0), 0);
	assert_int_equal(tgc_tree_add_path(&t, file), 0);
	assert_int_equal(tgc_tree_add_fd(&t, fd, "stdin"), 0);
	assert_int_equal(tgc_tree_manifest(&t, NULL, 0, &mf, &len, &nfiles), 0);
	assert_int_equal(nfiles, 2);
	assert_int_equal(tg_mf_iter_init(&it, mf, len), 0);
	assert_int_equal(tg_mf_iter_next(&it, &f), 1);
	assert_int_equal(f.path_len, 9);
	assert_memory_equal(f.path, "hello.txt", 9);
	assert_int_equal(f.mode, 0640);
	assert_int_equal(f.size, sizeof(data));
	assert_int_equal(f.nchunks, 1); /* smaller than the minimum: one chunk */
	assert_int_equal(tg_mf_iter_next(&it, &f), 1);
	assert_memory_equal(f.path, "stdin", 5);
	assert_int_equal(f.size, sizeof(data));
	assert_int_equal(tg_mf_iter_next(&it, &f), 0);
	free(mf);
	tgc_tree_free(&t);
	close(fd);
	unlink(file);
	rmdir(dir);
}

static void missing_path_is_an_error_that_names_it(void **state)
{
	struct tgc_tree t;

	assert_int_equal(tgc_tree_init(&t, 0), 0);
	assert_int_equal(tgc_tree_add_path(&t, "/nonexistent/tidegate"), -ENOENT);
	assert_non_null(strstr(t.why, "/nonexistent/tidegate"));
	tgc_tree_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(real_tree_manifest_parses_back_and_adds_up),
		cmocka_unit_test(file_goes_under_its_base_name_and_fd_under_its_name),
		cmocka_unit_test(missing_path_is_an_error_that_names_it),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
