/*
 * test_restore_write.c - the restore writer stays beneath its target:
 * "../x", absolute paths, "." and empty components are refused, and so is
 * any path through a symlink planted in the target (as a directory on the
 * way or as the file itself) - nothing outside changes. It restores modes
 * and mtimes (directories after their contents), creates symlinks without
 * following them, and refuses a non-empty target without --force.
 */
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

struct fx {
	char base[64];
	char target[96];
	char outside[96];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->base, "/tmp/tgc-rw-XXXXXX");
	if (!mkdtemp(f->base))
		return -1;
	snprintf(f->target, sizeof(f->target), "%s/target", f->base);
	snprintf(f->outside, sizeof(f->outside), "%s/outside", f->base);
	if (mkdir(f->target, 0755) || mkdir(f->outside, 0755))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s; rm -rf %s", f->base, f->base);
	if (system(cmd))
		return -1;
	free(f);
	return 0;
}

static bool exists(const char *dir, const char *name)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return !lstat(p, &st);
}

static void escaping_paths_are_refused(void **state)
{
	static const char *const bad[] = {
		"../x", "../outside/x", "/tmp/x", "a/../../x", "a/./b", "a//b", ".", "..", "a/",
	};
	struct fx *f = *state;
	struct tgc_rw w;

	assert_int_equal(tgc_rw_open(&w, f->target, false), 0);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t l = strlen(bad[i]);

		assert_false(tgc_rw_path_ok(bad[i], l));
		assert_true(tgc_rw_create(&w, bad[i], l) < 0);
		assert_true(tgc_rw_mkdir(&w, bad[i], l) < 0);
		assert_true(tgc_rw_symlink(&w, bad[i], l, "y", 1) < 0);
	}
	/* an embedded NUL cannot cut a path short either */
	assert_false(tgc_rw_path_ok("a\0/../../x", 10));
	assert_false(exists(f->base, "x"));
	assert_false(exists(f->outside, "x"));
	assert_true(tgc_rw_path_ok("a/b/c.txt", 9));
	tgc_rw_close(&w);
}

static void planted_symlinks_are_never_followed(void **state)
{
	struct fx *f = *state;
	char p[256], buf[32] = { 0 };
	struct tgc_rw w;
	int fd;

	/* target/evil -> outside (a directory), target/file -> outside/victim */
	snprintf(p, sizeof(p), "%s/victim", f->outside);
	fd = open(p, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "safe", 4), 4);
	close(fd);
	snprintf(p, sizeof(p), "%s/evil", f->target);
	assert_int_equal(symlink(f->outside, p), 0);
	snprintf(p, sizeof(p), "%s/file", f->target);
	snprintf(buf, sizeof(buf), "../outside/victim");
	assert_int_equal(symlink(buf, p), 0);

	assert_int_equal(tgc_rw_open(&w, f->target, true), 0);
	assert_int_equal(tgc_rw_create(&w, "evil/x", 6), -ELOOP);
	assert_int_equal(tgc_rw_mkdir(&w, "evil/d", 6), -ELOOP);
	assert_int_equal(tgc_rw_mkdir(&w, "evil/d/e", 8), -ELOOP);
	assert_int_equal(tgc_rw_symlink(&w, "evil/l", 6, "/etc/passwd", 11), -ELOOP);
	assert_true(tgc_rw_write(&w, "evil/victim", 11, 0, (const uint8_t *)"PWNED", 5) < 0);
	/* the leaf itself a symlink: open with O_NOFOLLOW refuses it */
	assert_true(tgc_rw_create(&w, "file", 4) < 0);
	assert_true(tgc_rw_write(&w, "file", 4, 0, (const uint8_t *)"PWNED", 5) < 0);
	/* a directory entry that is a symlink is not "an existing directory" */
	assert_true(tgc_rw_mkdir(&w, "evil", 4) < 0);
	tgc_rw_close(&w);

	assert_false(exists(f->outside, "x"));
	assert_false(exists(f->outside, "d"));
	assert_false(exists(f->outside, "l"));
	snprintf(p, sizeof(p), "%s/victim", f->outside);
	fd = open(p, O_RDONLY);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(read(fd, buf, sizeof(buf)), 4);
	close(fd);
	assert_string_equal(buf, "safe");
}

static struct tg_mf_file entry(const char *path, uint8_t type, uint32_t mode, int64_t mtime,
			       uint32_t nsec)
{
	struct tg_mf_file f = {
		.path = path, .path_len = (uint16_t)strlen(path), .type = type, .mode = mode,
		.uid = getuid(), .gid = getgid(), .mtime_sec = mtime, .mtime_nsec = nsec,
	};

	return f;
}

static void modes_and_mtimes_are_restored(void **state)
{
	struct fx *f = *state;
	struct tg_mf_file d = entry("d", TG_MF_DIR, 0750, 1000000000, 5);
	struct tg_mf_file sub = entry("d/sub", TG_MF_DIR, 0500, 1100000000, 0);
	struct tg_mf_file r = entry("d/sub/f", TG_MF_REG, 0640, 1200000000, 123456789);
	struct tg_mf_file l = entry("d/link", TG_MF_LNK, 0777, 1300000000, 7);
	struct tgc_rw w;
	struct stat st;
	char p[256], buf[32] = { 0 };
	int fd;

	assert_int_equal(tgc_rw_open(&w, f->target, false), 0);
	assert_int_equal(tgc_rw_mkdir(&w, d.path, d.path_len), 0);
	assert_int_equal(tgc_rw_mkdir(&w, sub.path, sub.path_len), 0);
	assert_int_equal(tgc_rw_create(&w, r.path, r.path_len), 0);
	assert_int_equal(tgc_rw_write(&w, r.path, r.path_len, 6, (const uint8_t *)"world", 5), 0);
	assert_int_equal(tgc_rw_write(&w, r.path, r.path_len, 0, (const uint8_t *)"hello ", 6), 0);
	assert_int_equal(tgc_rw_symlink(&w, l.path, l.path_len, "sub/f", 5), 0);
	/* files and links first, then directories deepest first */
	assert_int_equal(tgc_rw_meta(&w, &r), 0);
	assert_int_equal(tgc_rw_meta(&w, &l), 0);
	assert_int_equal(tgc_rw_meta(&w, &sub), 0);
	assert_int_equal(tgc_rw_meta(&w, &d), 0);
	tgc_rw_close(&w);

	snprintf(p, sizeof(p), "%s/d/sub/f", f->target);
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_mtim.tv_sec, 1200000000);
	assert_int_equal(st.st_mtim.tv_nsec, 123456789);
	fd = open(p, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof(buf)), 11);
	close(fd);
	assert_string_equal(buf, "hello world");
	snprintf(p, sizeof(p), "%s/d/sub", f->target);
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0500);
	assert_int_equal(st.st_mtim.tv_sec, 1100000000);
	snprintf(p, sizeof(p), "%s/d", f->target);
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(st.st_mtim.tv_sec, 1000000000);
	assert_int_equal(st.st_mtim.tv_nsec, 5);
	snprintf(p, sizeof(p), "%s/d/link", f->target);
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(st.st_mtim.tv_sec, 1300000000);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(readlink(p, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "sub/f");
}

static void non_empty_target_needs_force(void **state)
{
	struct fx *f = *state;
	struct tgc_rw w;
	char p[256];
	int fd;

	snprintf(p, sizeof(p), "%s/existing", f->target);
	fd = open(p, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(tgc_rw_open(&w, f->target, false), -ENOTEMPTY);
	tgc_rw_close(&w);
	assert_int_equal(tgc_rw_open(&w, f->target, true), 0);
	/* --force over an earlier restore: a read-only file is replaced */
	assert_int_equal(chmod(p, 0444), 0);
	assert_int_equal(tgc_rw_create(&w, "existing", 8), 0);
	assert_int_equal(tgc_rw_write(&w, "existing", 8, 0, (const uint8_t *)"new", 3), 0);
	tgc_rw_close(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(escaping_paths_are_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(planted_symlinks_are_never_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(modes_and_mtimes_are_restored, setup, teardown),
		cmocka_unit_test_setup_teardown(non_empty_target_needs_force, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
