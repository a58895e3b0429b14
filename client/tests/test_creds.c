/*
 * test_creds.c - the credentials file: what is saved loads back field for
 * field (names with spaces too), the file is mode 0600 whatever the umask,
 * a save replaces the file by rename (a reader of the old file still sees it
 * whole, no temporary is left behind), and a corrupt line is refused with
 * its line number.
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
#include <dirent.h>
#include <unistd.h>

#include <cmocka.h>

#include "tgc.h"

struct fx {
	char dir[64];
	char path[160];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->dir, "/tmp/tgc-creds-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	/* a directory that does not exist yet: save creates it */
	snprintf(f->path, sizeof(f->path), "%s/sub/credentials", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd))
		return -1;
	free(f);
	return 0;
}

static void fill(struct tgc_cred *e, const char *name, bool relay, uint8_t seed)
{
	memset(e, 0, sizeof(*e));
	for (unsigned i = 0; i < TG_ID_LEN; i++) {
		e->provider[i] = (uint8_t)(seed + i);
		e->org[i] = (uint8_t)(seed * 3 + i);
		e->device_id[i] = (uint8_t)(seed * 7 + i);
	}
	for (unsigned i = 0; i < TG_CRED_LEN; i++)
		e->cred[i] = (uint8_t)(seed ^ (i * 13));
	snprintf(e->device, sizeof(e->device), "%s", name);
	e->relay = relay;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void saved_credentials_load_back_field_for_field(void **state)
{
	struct fx *f = *state;
	struct tgc_creds c = { 0 }, back;
	struct tgc_cred a, b, *e;
	unsigned bad = 0;

	fill(&a, "laptop-01", false, 1);
	fill(&b, "srv 2 %odd", true, 9);
	assert_int_equal(tgc_creds_put(&c, &a), 0);
	assert_int_equal(tgc_creds_put(&c, &b), 0);
	assert_int_equal(tgc_creds_save(f->path, &c), 0);
	assert_int_equal(tgc_creds_load(f->path, &back, &bad), 0);
	assert_int_equal(back.n, 2);
	e = tgc_creds_find(&back, a.provider, "laptop-01", false);
	assert_non_null(e);
	assert_memory_equal(e, &a, sizeof(a));
	e = tgc_creds_find(&back, NULL, "srv 2 %odd", true);
	assert_non_null(e);
	assert_memory_equal(e, &b, sizeof(b));
	/* the relay flag and the provider are part of the key */
	assert_null(tgc_creds_find(&back, NULL, "srv 2 %odd", false));
	assert_null(tgc_creds_find(&back, b.provider, "laptop-01", false));
	tgc_creds_free(&c);
	tgc_creds_free(&back);
}

static void missing_file_loads_empty(void **state)
{
	struct fx *f = *state;
	struct tgc_creds c;

	assert_int_equal(tgc_creds_load(f->path, &c, NULL), 0);
	assert_int_equal(c.n, 0);
}

static void file_is_mode_0600_whatever_the_umask(void **state)
{
	struct fx *f = *state;
	struct tgc_creds c = { 0 };
	struct tgc_cred a;
	struct stat st;
	mode_t old = umask(0);

	fill(&a, "dev", false, 3);
	assert_int_equal(tgc_creds_put(&c, &a), 0);
	assert_int_equal(tgc_creds_save(f->path, &c), 0);
	umask(old);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	tgc_creds_free(&c);
}

static void save_replaces_the_file_atomically(void **state)
{
	struct fx *f = *state;
	struct tgc_creds c = { 0 }, back;
	struct tgc_cred a, b;
	struct stat st1, st2;
	char buf[4096], dir[128];
	struct dirent *de;
	unsigned entries = 0;
	ssize_t n;
	DIR *d;
	int fd;

	fill(&a, "one", false, 5);
	assert_int_equal(tgc_creds_put(&c, &a), 0);
	assert_int_equal(tgc_creds_save(f->path, &c), 0);
	assert_int_equal(stat(f->path, &st1), 0);
	fd = open(f->path, O_RDONLY);
	assert_true(fd >= 0);

	fill(&b, "two", false, 6);
	assert_int_equal(tgc_creds_put(&c, &b), 0);
	assert_int_equal(tgc_creds_save(f->path, &c), 0);
	assert_int_equal(stat(f->path, &st2), 0);
	/* a new inode took the name: the old file was never rewritten in place */
	assert_true(st1.st_ino != st2.st_ino);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = 0;
	assert_non_null(strstr(buf, " one "));
	assert_null(strstr(buf, " two "));
	close(fd);
	assert_int_equal(tgc_creds_load(f->path, &back, NULL), 0);
	assert_int_equal(back.n, 2);
	tgc_creds_free(&back);
	/* no temporary file left next to it */
	snprintf(dir, sizeof(dir), "%s/sub", f->dir);
	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			entries++;
	closedir(d);
	assert_int_equal(entries, 1);
	tgc_creds_free(&c);
}

static void corrupt_lines_are_refused_with_their_line_number(void **state)
{
	struct fx *f = *state;
	static const char *const bad[] = {
		"tidegate-cred v1 zz0102030405060708090a0b0c0d0e0f dev 0 00000000000000000000000000000000 00000000000000000000000000000000 0000000000000000000000000000000000000000000000000000000000000000",
		"tidegate-cred v2 000102030405060708090a0b0c0d0e0f dev 0 00000000000000000000000000000000 00000000000000000000000000000000 0000000000000000000000000000000000000000000000000000000000000000",
		"tidegate-cred v1 000102030405060708090a0b0c0d0e0f dev 2 00000000000000000000000000000000 00000000000000000000000000000000 0000000000000000000000000000000000000000000000000000000000000000",
		"tidegate-cred v1 000102030405060708090a0b0c0d0e0f dev 0 00000000000000000000000000000000 00000000000000000000000000000000 00000000",
		"tidegate-cred v1 000102030405060708090a0b0c0d0e0f dev 0 00000000000000000000000000000000",
		"tidegate-cred v1 000102030405060708090a0b0c0d0e0f dev 0 00000000000000000000000000000000 00000000000000000000000000000000 0000000000000000000000000000000000000000000000000000000000000000 extra",
		"garbage",
	};
	struct tgc_creds c = { 0 }, back;
	struct tgc_cred a;
	char line[512], text[4096], sub[128];

	snprintf(sub, sizeof(sub), "%s/sub", f->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	fill(&a, "good", false, 7);
	assert_true(tgc_cred_format(&a, line, sizeof(line)) > 0);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		unsigned lineno = 0;

		/* line 1 good, 2 blank, 3 comment, 4 good, 5 the corrupt one
		 * (line already ends in a newline) */
		snprintf(text, sizeof(text), "%s\n# comment\n%s%s\n", line, line, bad[i]);
		write_file(f->path, text);
		assert_int_equal(tgc_creds_load(f->path, &back, &lineno), -EBADMSG);
		assert_int_equal(lineno, 5);
		assert_null(back.v);
	}
	/* and the same file without the bad line loads */
	snprintf(text, sizeof(text), "%s\n# comment\n%s", line, line);
	(void)c;
	write_file(f->path, text);
	assert_int_equal(tgc_creds_load(f->path, &back, NULL), 0);
	assert_int_equal(back.n, 1);
	tgc_creds_free(&back);
	tgc_creds_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(saved_credentials_load_back_field_for_field, setup, teardown),
		cmocka_unit_test_setup_teardown(missing_file_loads_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(file_is_mode_0600_whatever_the_umask, setup, teardown),
		cmocka_unit_test_setup_teardown(save_replaces_the_file_atomically, setup, teardown),
		cmocka_unit_test_setup_teardown(corrupt_lines_are_refused_with_their_line_number, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
