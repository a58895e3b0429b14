/*
 * data.c - the bench's data sets, read once into memory so that no stage
 * measures the file system:
 *
 *   text    plain text the machine already has: licenses, package docs,
 *           man pages, Perl modules, C headers (files that are compressed
 *           already, or hold control bytes, are skipped: they are not text)
 *   binary  ELF executables and shared libraries under /usr/lib (at most
 *           2 MiB of each, so one huge library does not make the whole set)
 *   random  tg_random's CSPRNG bytes: incompressible by construction
 *
 * A machine with less than the asked size of a kind repeats what it found;
 * read_bytes says how much was distinct, and the report says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "tg_crypto.h"

#define BENCH_FILE_MAX   (8u * BENCH_MIB)  /* a text file larger than this is not a doc */
#define BENCH_BIN_TAKE   (2u * BENCH_MIB)  /* bytes taken from one binary */

static const char *const text_roots[] = {
	"/usr/share/common-licenses", "/usr/share/doc", "/usr/share/man",
	"/usr/share/perl5", "/usr/include", NULL,
};
static const char *const bin_roots[] = { "/usr/lib", NULL };

/* nftw has no user pointer: the walk's state lives here (one walk at a time). */
static struct {
	struct bench_data *d;
	size_t fill;
	bool text;
} walk;

static bool is_compressed(const uint8_t *p, size_t n)
{
	static const struct {
		const char *magic;
		size_t len;
	} m[] = {
		{ "\x1f\x8b", 2 }, { "\xfd" "7zXZ", 5 }, { "BZh", 3 }, { "\x28\xb5\x2f\xfd", 4 },
		{ "\x89PNG", 4 }, { "PK\x03\x04", 4 }, { "%PDF", 4 }, { "\xff\xd8\xff", 3 },
	};

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (n >= m[i].len && memcmp(p, m[i].magic, m[i].len) == 0)
			return true;
	return false;
}

static bool is_text(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x09 || (p[i] > 0x0d && p[i] < 0x20 && p[i] != 0x1b))
			return false;
	return true;
}

static bool is_elf(const uint8_t *p, size_t n)
{
	return n >= 4 && memcmp(p, "\x7f" "ELF", 4) == 0;
}

/* Read at most cap bytes of path to dst; the count, or -errno. */
static ssize_t read_some(const char *path, uint8_t *dst, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got < cap) {
		ssize_t n = read(fd, dst + got, cap - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return (ssize_t)got;
}

static int take_file(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	struct bench_data *d = walk.d;
	size_t room = d->len - walk.fill, cap;
	uint8_t *dst = d->buf + walk.fill;
	ssize_t n;

	if (type != FTW_F || !S_ISREG(sb->st_mode) || sb->st_size == 0)
		return 0;
	if (walk.text && (size_t)sb->st_size > BENCH_FILE_MAX)
		return 0;
	cap = walk.text ? (size_t)sb->st_size : BENCH_BIN_TAKE;
	if (cap > room)
		cap = room;
	n = read_some(path, dst, cap);
	if (n <= 0)
		return 0;
	if (walk.text ? (is_compressed(dst, (size_t)n) || !is_text(dst, (size_t)n))
		      : !is_elf(dst, (size_t)n))
		return 0;
	walk.fill += (size_t)n;
	d->files++;
	return walk.fill == d->len ? 1 : 0;  /* full: stop the walk */
}

static int bench_data_walk(struct bench_data *d, const char *const *roots, bool text)
{
	walk.d = d;
	walk.fill = 0;
	walk.text = text;
	for (unsigned i = 0; roots[i] && walk.fill < d->len; i++)
		(void)nftw(roots[i], take_file, 32, FTW_PHYS | FTW_MOUNT);
	if (walk.fill == 0)
		return -ENOENT;
	d->read_bytes = walk.fill;
	/* Not enough distinct bytes: repeat them (the report says so). */
	for (size_t off = walk.fill; off < d->len; off += walk.fill) {
		size_t n = d->len - off < walk.fill ? d->len - off : walk.fill;

		memcpy(d->buf + off, d->buf, n);
	}
	return 0;
}

int bench_data_load(struct bench_data *d, const char *name, size_t len)
{
	void *p;
	int ret;

	memset(d, 0, sizeof(*d));
	if (len == 0)
		return -EINVAL;
	if (posix_memalign(&p, 64, len))
		return -ENOMEM;
	d->buf = p;
	d->len = len;
	if (strcmp(name, "text") == 0) {
		d->name = "text";
		d->source = "/usr/share/{common-licenses,doc,man,perl5}, /usr/include: plain text";
		ret = bench_data_walk(d, text_roots, true);
	} else if (strcmp(name, "binary") == 0) {
		d->name = "binary";
		d->source = "/usr/lib: ELF executables and libraries, <= 2 MiB of each";
		ret = bench_data_walk(d, bin_roots, false);
	} else if (strcmp(name, "random") == 0) {
		d->name = "random";
		d->source = "tg_random (OpenSSL RAND_bytes)";
		ret = 0;
		for (size_t off = 0; off < len && !ret; off += BENCH_MIB)
			ret = tg_random(d->buf + off, len - off < BENCH_MIB ? len - off : BENCH_MIB);
		d->read_bytes = len;
	} else {
		ret = -EINVAL;
	}
	if (ret) {
		bench_data_free(d);
		return ret;
	}
	return 0;
}

void bench_data_free(struct bench_data *d)
{
	free(d->buf);
	d->buf = NULL;
	d->len = 0;
}
