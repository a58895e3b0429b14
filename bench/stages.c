/*
 * stages.c - `tidegate-bench stages`: how fast one core runs each stage of
 * the chunk pipeline on real data, beside a memcpy of the same bytes
 * measured in the same run.
 *
 * Every stage walks a whole data set (64 MiB by default, far beyond the
 * caches) in 1 MiB chunks, the gateway's average chunk, so each figure is
 * "from memory" the way a worker sees chunks. A stage runs once untimed
 * first (page faults, codec tables, and its self-check: compressed chunks
 * must decompress to the input, rebuilt shards must equal the lost ones),
 * then --reps timed times. Throughput is input bytes (the chunk's bytes,
 * before compression or parity) per second; cycles are TSC ticks per input
 * byte.
 *
 * The stages call the dataplane's own functions (tg_chunk_hash, tg_comp_*,
 * tg_ec_*, tg_pipe_encode, tg_store_put), so a figure here is the code the
 * gateway runs, not a lookalike.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "tg_chunk.h"
#include "tg_compress.h"
#include "tg_ec.h"
#include "tg_store.h"
#include "tg_types.h"

#define ST_CHUNK      BENCH_MIB
#define ST_REPS_MAX   1000
#define ST_RES_MAX    128
#define ST_NAME_MAX   40

struct st_res {
	char stage[ST_NAME_MAX];
	const char *data;
	size_t bytes;          /* input bytes per repeat */
	unsigned reps;
	struct bench_mmm gbps, cpb;
	double ratio;          /* compression: input / output bytes; 0: n/a */
	double vs_memcpy;      /* median / memcpy's median on the same data */
	char note[96];
};

/* What a stage function gets; one per data set. */
struct st_ctx {
	const struct bench_data *d;
	unsigned nchunks;
	struct tg_chunk_id *ids;  /* precomputed ids of every chunk */
	bool warmup;              /* the untimed first pass: self-checks run */
	void *arg;                /* the stage's own state */
	double sec;               /* self-timed stages fill these */
	uint64_t cyc;
	uint64_t in, out;         /* compression byte counts of the last pass */
	uint64_t sink;            /* results folded here so nothing is optimized out */
	char note[96];
};

typedef int (*st_fn)(struct st_ctx *c);

struct st_opts {
	unsigned reps;
	size_t size;
	int cpu;
	const char *json;
	const char *store_parent;
	bool data_on[3];
};

static const char *const st_data_names[3] = { "text", "binary", "random" };

static struct st_res st_res[ST_RES_MAX];
static unsigned st_nres;

/* ---- the stages ---- */

static int st_memcpy(struct st_ctx *c)
{
	uint8_t *dst = c->arg;

	for (unsigned i = 0; i < c->nchunks; i++)
		memcpy(dst + (size_t)i * ST_CHUNK, c->d->buf + (size_t)i * ST_CHUNK, ST_CHUNK);
	c->sink += dst[c->sink % c->d->len];
	return 0;
}

static int st_hash(struct st_ctx *c)
{
	struct tg_chunk_id id;

	for (unsigned i = 0; i < c->nchunks; i++) {
		tg_chunk_hash(c->d->buf + (size_t)i * ST_CHUNK, ST_CHUNK, &id);
		c->sink += id.b[0];
		if (c->warmup && !tg_id_eq(&id, &c->ids[i]))
			return -EIO;
	}
	return 0;
}

struct st_comp {
	struct tg_comp *comp;
	uint8_t *out, *check;
	size_t cap;
};

static int st_igzip(struct st_ctx *c)
{
	struct st_comp *a = c->arg;

	c->in = c->out = 0;
	for (unsigned i = 0; i < c->nchunks; i++) {
		const uint8_t *src = c->d->buf + (size_t)i * ST_CHUNK;
		long n = tg_comp_compress(a->comp, src, ST_CHUNK, a->out, a->cap);

		if (n < 0)
			return (int)n;
		c->in += ST_CHUNK;
		c->out += (uint64_t)n;
		if (c->warmup && (tg_comp_decompress(a->out, (size_t)n, a->check, ST_CHUNK) ||
				  memcmp(a->check, src, ST_CHUNK)))
			return -EIO;
	}
	return 0;
}

struct st_ec {
	struct tg_ec *ec;
	unsigned k, m;
	size_t sl;         /* shard_len of a 1 MiB chunk */
	uint8_t *stripes;  /* nchunks * k * sl: each chunk laid out as its data shards */
	uint8_t *parity;   /* nchunks * m * sl */
};

static void st_ec_shards(const struct st_ec *a, unsigned chunk, uint8_t **shards)
{
	uint8_t *s = a->stripes + (size_t)chunk * a->k * a->sl;
	uint8_t *p = a->parity + (size_t)chunk * a->m * a->sl;

	for (unsigned i = 0; i < a->k; i++)
		shards[i] = s + i * a->sl;
	for (unsigned i = 0; i < a->m; i++)
		shards[a->k + i] = p + i * a->sl;
}

/* Data shards alias the stripe (the pipeline's zero-copy layout): this is
 * the coding itself, parity written to memory per chunk. */
static int st_ec_encode(struct st_ctx *c)
{
	struct st_ec *a = c->arg;
	uint8_t *shards[TG_EC_SHARDS_MAX];
	int ret;

	for (unsigned i = 0; i < c->nchunks; i++) {
		st_ec_shards(a, i, shards);
		ret = tg_ec_encode(a->ec, shards[0], ST_CHUNK, shards, a->sl);
		if (ret)
			return ret;
	}
	c->sink += a->parity[c->sink % a->sl];
	return 0;
}

/* The first M data shards of every chunk are lost: the worst case, every
 * lost shard is data that must be solved for. The warm-up pass overwrites
 * them first and checks that the rebuild brings the chunk's bytes back. */
static int st_ec_rebuild(struct st_ctx *c)
{
	struct st_ec *a = c->arg;
	uint8_t *shards[TG_EC_SHARDS_MAX], present[TG_EC_SHARDS_MAX];
	int ret;

	memset(present, 1, sizeof(present));
	memset(present, 0, a->m);
	for (unsigned i = 0; i < c->nchunks; i++) {
		st_ec_shards(a, i, shards);
		if (c->warmup)
			for (unsigned j = 0; j < a->m; j++)
				memset(shards[j], 0xa5, a->sl);
		ret = tg_ec_rebuild(a->ec, shards, a->sl, present);
		if (ret)
			return ret;
		if (c->warmup && memcmp(shards[0], c->d->buf + (size_t)i * ST_CHUNK, ST_CHUNK))
			return -EIO;
	}
	c->sink += shards[0][c->sink % a->sl];
	return 0;
}

/* The per-chunk ingest work in one pass: hash the chunk, then EC-encode it
 * while it is still in cache, data shards in place, parity into a scratch
 * reused per chunk (what tg_pipe does). */
static int st_hash_ec(struct st_ctx *c)
{
	struct st_ec *a = c->arg;
	uint8_t *shards[TG_EC_SHARDS_MAX];
	struct tg_chunk_id id;
	int ret;

	for (unsigned i = 0; i < c->nchunks; i++) {
		uint8_t *data = c->d->buf + (size_t)i * ST_CHUNK;

		tg_chunk_hash(data, ST_CHUNK, &id);
		for (unsigned j = 0; j < a->k; j++)
			shards[j] = data + j * a->sl;
		for (unsigned j = 0; j < a->m; j++)
			shards[a->k + j] = a->parity + j * a->sl;
		ret = tg_ec_encode(a->ec, data, ST_CHUNK, shards, a->sl);
		if (ret)
			return ret;
		c->sink += id.b[0];
	}
	return 0;
}

struct st_pipe {
	struct tg_pipe *pipe;
	struct tg_policy pol;
};

static int st_pipe(struct st_ctx *c)
{
	struct st_pipe *a = c->arg;
	struct tg_obj obj;
	int ret;

	c->in = c->out = 0;
	for (unsigned i = 0; i < c->nchunks; i++) {
		ret = tg_pipe_encode(a->pipe, &a->pol, &c->ids[i], c->d->buf + (size_t)i * ST_CHUNK,
				     ST_CHUNK, ST_CHUNK, &obj);
		if (ret)
			return ret;
		if (a->pol.compress) {  /* a ratio only where the policy compresses */
			c->in += ST_CHUNK;
			c->out += obj.meta.enc_len;
		}
	}
	return 0;
}

struct st_store {
	struct tg_pipe *pipe;
	struct tg_policy pol;    /* k == 0: store the chunk raw, one shard */
	char root[256];
	unsigned ndirs;
};

/* Fresh, empty shard directories for one pass. */
static int st_store_dirs(struct st_store *a, char dirs[][300], const char **dp)
{
	int ret = bench_rmtree(a->root);

	if (ret)
		return ret;
	if (mkdir(a->root, 0700))
		return -errno;
	for (unsigned i = 0; i < a->ndirs; i++) {
		snprintf(dirs[i], 300, "%s/d%02u", a->root, i);
		if (mkdir(dirs[i], 0700))
			return -errno;
		dp[i] = dirs[i];
	}
	return 0;
}

/* Only tg_store_put is timed; encoding each chunk (untimed) is in between. */
static int st_store(struct st_ctx *c)
{
	struct st_store *a = c->arg;
	char dirs[TG_EC_SHARDS_MAX][300];
	const char *dp[TG_EC_SHARDS_MAX];
	struct tg_org_id org = { { 0x7b } };
	struct tg_store *st;
	struct tg_obj obj;
	int ret;

	ret = st_store_dirs(a, dirs, dp);
	if (ret)
		return ret;
	st = tg_store_dir_open(dp, a->ndirs, &ret);
	if (!st)
		return ret;
	c->sec = 0;
	c->cyc = 0;
	for (unsigned i = 0; i < c->nchunks && !ret; i++) {
		uint8_t *data = c->d->buf + (size_t)i * ST_CHUNK;
		double t0;
		uint64_t c0;

		if (a->pol.k) {
			ret = tg_pipe_encode(a->pipe, &a->pol, &c->ids[i], data, ST_CHUNK, ST_CHUNK,
					     &obj);
			if (ret)
				break;
		} else {
			memset(&obj, 0, sizeof(obj));
			obj.meta.id = c->ids[i];
			obj.meta.orig_len = obj.meta.enc_len = obj.meta.shard_len = ST_CHUNK;
			obj.meta.enc = TG_ENC_RAW;
			obj.meta.k = 1;
			obj.shards[0] = data;
		}
		t0 = bench_now();
		c0 = bench_tsc();
		ret = tg_store_put(st, &org, &obj);
		c->cyc += bench_tsc() - c0;
		c->sec += bench_now() - t0;
	}
	if (!ret && c->warmup) {
		/* The last chunk must read back whole. */
		size_t cap = tg_store_get_cap(ST_CHUNK);
		unsigned last = c->nchunks - 1;
		uint8_t *back = malloc(cap);
		struct tg_obj_meta meta;

		ret = back ? tg_store_get(st, &org, &c->ids[last], back, cap, &meta, NULL) : -ENOMEM;
		if (!ret && (meta.enc != TG_ENC_RAW ||
			     memcmp(back, c->d->buf + (size_t)last * ST_CHUNK, ST_CHUNK)))
			ret = -EIO;
		free(back);
	}
	tg_store_close(st);
	(void)bench_rmtree(a->root);
	return ret;
}

/* ---- the runner ---- */

static int st_run(struct st_ctx *c, const char *stage, st_fn fn, bool self_timed,
		  const struct st_opts *o)
{
	double gbps[ST_REPS_MAX], cpb[ST_REPS_MAX], bytes = (double)c->d->len;
	struct st_res *r;
	int ret;

	if (st_nres == ST_RES_MAX)
		return -ENOSPC;
	fprintf(stderr, "  %-28s %s\n", stage, c->d->name);
	c->note[0] = '\0';
	c->warmup = true;
	ret = fn(c);
	c->warmup = false;
	if (ret) {
		fprintf(stderr, "tidegate-bench: stage '%s' on %s failed: %s\n", stage, c->d->name,
			strerror(-ret));
		return ret;
	}
	for (unsigned i = 0; i < o->reps; i++) {
		double t0 = bench_now();
		uint64_t c0 = bench_tsc();

		ret = fn(c);
		if (ret) {
			fprintf(stderr, "tidegate-bench: stage '%s' on %s failed: %s\n", stage,
				c->d->name, strerror(-ret));
			return ret;
		}
		if (!self_timed) {
			c->cyc = bench_tsc() - c0;
			c->sec = bench_now() - t0;
		}
		gbps[i] = c->sec > 0 ? bytes / c->sec / 1e9 : 0;
		cpb[i] = (double)c->cyc / bytes;
	}
	r = &st_res[st_nres++];
	memset(r, 0, sizeof(*r));
	snprintf(r->stage, sizeof(r->stage), "%s", stage);
	r->data = c->d->name;
	r->bytes = c->d->len;
	r->reps = o->reps;
	bench_mmm(gbps, o->reps, &r->gbps);
	bench_mmm(cpb, o->reps, &r->cpb);
	if (c->out)
		r->ratio = (double)c->in / (double)c->out;
	snprintf(r->note, sizeof(r->note), "%s", c->note);
	c->in = c->out = 0;
	return 0;
}

static uint8_t *st_alloc(size_t n)
{
	void *p;

	if (posix_memalign(&p, 64, n))
		return NULL;
	memset(p, 0, n);  /* fault the pages in now, not in a timed pass */
	return p;
}

static int st_ec_stages(struct st_ctx *c, unsigned k, unsigned m, const struct st_opts *o)
{
	struct st_ec a = { .k = k, .m = m };
	char name[ST_NAME_MAX];
	uint64_t hits, misses;
	int ret;

	a.ec = tg_ec_create(k, m, &ret);
	if (!a.ec)
		return ret;
	a.sl = tg_ec_shard_len(a.ec, ST_CHUNK);
	a.stripes = st_alloc((size_t)c->nchunks * k * a.sl);
	a.parity = st_alloc((size_t)c->nchunks * m * a.sl);
	ret = -ENOMEM;
	if (!a.stripes || !a.parity)
		goto out;
	for (unsigned i = 0; i < c->nchunks; i++)
		memcpy(a.stripes + (size_t)i * k * a.sl, c->d->buf + (size_t)i * ST_CHUNK, ST_CHUNK);
	c->arg = &a;
	snprintf(name, sizeof(name), "ec encode %u+%u", k, m);
	ret = st_run(c, name, st_ec_encode, false, o);
	if (ret)
		goto out;
	snprintf(name, sizeof(name), "ec rebuild %u+%u, %u lost", k, m, m);
	ret = st_run(c, name, st_ec_rebuild, false, o);
	if (ret)
		goto out;
	tg_ec_stats(a.ec, &hits, &misses);
	snprintf(st_res[st_nres - 1].note, sizeof(st_res[0].note),
		 "decode tables: %llu hits, %llu misses", (unsigned long long)hits,
		 (unsigned long long)misses);
out:
	free(a.stripes);
	free(a.parity);
	tg_ec_destroy(a.ec);
	return ret;
}

static int st_comp_stage(struct st_ctx *c, int level, const struct st_opts *o)
{
	struct st_comp a = { .cap = 2 * ST_CHUNK + 65536 };
	char name[ST_NAME_MAX];
	int ret;

	a.comp = tg_comp_create(level, &ret);
	a.out = st_alloc(a.cap);
	a.check = st_alloc(ST_CHUNK);
	if (!a.comp || !a.out || !a.check) {
		ret = a.comp ? -ENOMEM : ret;
		goto out;
	}
	c->arg = &a;
	snprintf(name, sizeof(name), "igzip L%d", level);
	ret = st_run(c, name, st_igzip, false, o);
out:
	free(a.out);
	free(a.check);
	tg_comp_destroy(a.comp);
	return ret;
}

static int st_data_set(const struct bench_data *d, const struct st_opts *o, struct tg_pipe *pipe)
{
	struct st_ctx c = { .d = d, .nchunks = (unsigned)(d->len / ST_CHUNK) };
	static const unsigned ec_cfg[][2] = { { 4, 2 }, { 8, 3 }, { 10, 4 }, { 12, 4 } };
	struct st_pipe pa = { .pipe = pipe };
	struct st_store sa = { .pipe = pipe };
	struct st_ec he = { .k = 8, .m = 3 };
	uint8_t *dst = st_alloc(d->len);
	int ret = -ENOMEM;

	c.ids = calloc(c.nchunks, sizeof(*c.ids));
	if (!dst || !c.ids)
		goto out;
	for (unsigned i = 0; i < c.nchunks; i++)
		tg_chunk_hash(d->buf + (size_t)i * ST_CHUNK, ST_CHUNK, &c.ids[i]);

	c.arg = dst;
	ret = st_run(&c, "memcpy", st_memcpy, false, o);
	if (!ret)
		ret = st_run(&c, "xxh3-128", st_hash, false, o);
	for (int l = 0; l <= 3 && !ret; l++)
		if (l != 2)
			ret = st_comp_stage(&c, l, o);
	for (unsigned i = 0; i < 4 && !ret; i++)
		ret = st_ec_stages(&c, ec_cfg[i][0], ec_cfg[i][1], o);
	if (ret)
		goto out;

	he.ec = tg_ec_create(he.k, he.m, &ret);
	if (!he.ec)
		goto out;
	he.sl = tg_ec_shard_len(he.ec, ST_CHUNK);
	he.parity = st_alloc(he.m * he.sl);
	if (!he.parity || he.k * he.sl != ST_CHUNK) {
		ret = he.parity ? -EINVAL : -ENOMEM;
	} else {
		c.arg = &he;
		ret = st_run(&c, "hash+ec 8+3 one pass", st_hash_ec, false, o);
	}
	free(he.parity);
	tg_ec_destroy(he.ec);
	if (ret)
		goto out;

	c.arg = &pa;
	if ((ret = tg_policy_parse("ec:8+3", &pa.pol)) ||
	    (ret = st_run(&c, "tg_pipe_encode ec:8+3", st_pipe, false, o)))
		goto out;
	if ((ret = tg_policy_parse("compress+ec:8+3", &pa.pol)) ||
	    (ret = st_run(&c, "tg_pipe_encode compress+ec:8+3", st_pipe, false, o)))
		goto out;

	c.arg = &sa;
	snprintf(sa.root, sizeof(sa.root), "%s/store", o->store_parent);
	sa.ndirs = 1;
	ret = st_run(&c, "store put raw (1 file)", st_store, true, o);
	if (ret)
		goto out;
	sa.ndirs = 11;
	if ((ret = tg_policy_parse("ec:8+3", &sa.pol)) ||
	    (ret = st_run(&c, "store put ec:8+3 (11 files)", st_store, true, o)))
		goto out;

	c.arg = dst;
	ret = st_run(&c, "memcpy (again, at the end)", st_memcpy, false, o);
out:
	if (c.sink == 0x5eed)  /* never: keeps the folded results live */
		fputc(' ', stderr);
	free(c.ids);
	free(dst);
	return ret;
}

/* ---- reporting ---- */

static void st_vs_memcpy(void)
{
	for (unsigned i = 0; i < st_nres; i++) {
		struct st_res *r = &st_res[i];

		for (unsigned j = 0; j < st_nres; j++)
			if (st_res[j].data == r->data && strcmp(st_res[j].stage, "memcpy") == 0 &&
			    st_res[j].gbps.med > 0) {
				r->vs_memcpy = r->gbps.med / st_res[j].gbps.med;
				break;
			}
	}
}

static void st_print_table(int cpu, const struct st_opts *o, const struct bench_data *sets,
			   double load_before)
{
	char line[512];

	bench_machine_line(line, sizeof(line));
	printf("tidegate-bench stages: one core (CPU %d), %u repeats, %zu MiB per data set, "
	       "1 MiB chunks\n%s (1-minute load at the start: %.2f)\n", cpu, o->reps,
	       o->size / BENCH_MIB, line, load_before);
	for (unsigned i = 0; i < 3; i++)
		if (sets[i].buf)
			printf("  %-7s %zu MiB (%zu MiB distinct, %u files): %s\n", sets[i].name,
			       sets[i].len / BENCH_MIB, sets[i].read_bytes / BENCH_MIB,
			       sets[i].files, sets[i].source);
	printf("\n%-32s %-7s %8s %8s %8s %8s %8s %7s  %s\n", "stage", "data", "GB/s min", "median",
	       "max", "cyc/B", "vs memcpy", "ratio", "note");
	for (unsigned i = 0; i < st_nres; i++) {
		const struct st_res *r = &st_res[i];
		char ratio[16] = "";

		if (r->ratio > 0)
			snprintf(ratio, sizeof(ratio), "%.2fx", r->ratio);
		printf("%-32s %-7s %8.2f %8.2f %8.2f %8.3f %8.0f%% %7s  %s\n", r->stage, r->data,
		       r->gbps.min, r->gbps.med, r->gbps.max, r->cpb.med, 100 * r->vs_memcpy, ratio,
		       r->note);
	}
	printf("\nGB/s = 10^9 input bytes per second; cyc/B = TSC ticks per input byte (median); "
	       "ratio = input / compressed bytes.\n");
}

static json_t *st_json(int cpu, const struct st_opts *o, const struct bench_data *sets,
		       double load_before)
{
	json_t *root = json_object(), *ds = json_array(), *res = json_array();

	json_object_set_new(root, "command", json_string("stages"));
	json_object_set_new(root, "machine", bench_machine_json());
	json_object_set_new(root, "load1_before", json_real(load_before));
	json_object_set_new(root, "cpu", json_integer(cpu));
	json_object_set_new(root, "reps", json_integer(o->reps));
	json_object_set_new(root, "chunk_bytes", json_integer(ST_CHUNK));
	for (unsigned i = 0; i < 3; i++)
		if (sets[i].buf)
			json_array_append_new(ds, json_pack("{s:s, s:s, s:I, s:I, s:i}", "name",
				sets[i].name, "source", sets[i].source, "bytes",
				(json_int_t)sets[i].len, "distinct_bytes",
				(json_int_t)sets[i].read_bytes, "files", (int)sets[i].files));
	json_object_set_new(root, "datasets", ds);
	for (unsigned i = 0; i < st_nres; i++) {
		const struct st_res *r = &st_res[i];
		json_t *e = json_pack("{s:s, s:s, s:I, s:i, s:o, s:o, s:f}", "stage", r->stage,
				      "data", r->data, "bytes", (json_int_t)r->bytes, "reps",
				      (int)r->reps, "gbytes_per_s", bench_mmm_json(&r->gbps),
				      "cycles_per_byte", bench_mmm_json(&r->cpb), "vs_memcpy",
				      r->vs_memcpy);

		if (r->ratio > 0)
			json_object_set_new(e, "compression_ratio", json_real(r->ratio));
		if (r->note[0])
			json_object_set_new(e, "note", json_string(r->note));
		json_array_append_new(res, e);
	}
	json_object_set_new(root, "results", res);
	return root;
}

/* ---- command line ---- */

static void st_usage(FILE *f)
{
	fprintf(f,
"Usage: tidegate-bench stages [--reps N] [--size-mb N] [--json FILE] [--cpu N]\n"
"                             [--data LIST] [--store-dir DIR]\n"
"\n"
"Single-core throughput of each pipeline stage on real data, in 1 MiB chunks:\n"
"XXH3-128, igzip levels 0/1/3 (with the compression ratio), EC encode 4+2, 8+3,\n"
"10+4, 12+4 and rebuild with M shards lost, hash + EC 8+3 in one pass,\n"
"tg_pipe_encode, the store write path (tg_store_put with fsync, into tmpfs), and\n"
"a memcpy of the same bytes as the baseline, measured in the same run.\n"
"Reports GB/s and TSC cycles/byte, min/median/max over the repeats.\n"
"\n"
"  --reps N        timed repeats per stage after one untimed pass (default 5)\n"
"  --size-mb N     MiB per data set, read once into memory (default 64)\n"
"  --json FILE     also write the results as JSON to FILE ('-': stdout)\n"
"  --cpu N         pin to CPU N (default: the highest CPU allowed)\n"
"  --data LIST     data sets, comma-separated: text,binary,random (default all)\n"
"  --store-dir DIR where the store stages write, a tmpfs (default /dev/shm);\n"
"                  a private directory is made inside and removed after\n"
"  -h, --help      this help\n"
"\n"
"Data sets: text (plain text under /usr/share and /usr/include), binary (ELF\n"
"files under /usr/lib), random (tg_random).\n");
}

static bool st_parse_data(const char *s, struct st_opts *o)
{
	char buf[128], *save = NULL;

	if (strlen(s) >= sizeof(buf))
		return false;
	snprintf(buf, sizeof(buf), "%s", s);
	memset(o->data_on, 0, sizeof(o->data_on));
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		unsigned i;

		for (i = 0; i < 3 && strcmp(t, st_data_names[i]); i++)
			;
		if (i == 3)
			return false;
		o->data_on[i] = true;
	}
	return o->data_on[0] || o->data_on[1] || o->data_on[2];
}

static int st_parse(int argc, char **argv, struct st_opts *o)
{
	static const struct option lo[] = {
		{ "reps", required_argument, NULL, 'r' },
		{ "size-mb", required_argument, NULL, 's' },
		{ "json", required_argument, NULL, 'j' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "data", required_argument, NULL, 'd' },
		{ "store-dir", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	int opt;

	*o = (struct st_opts){ .reps = 5, .size = 64 * (size_t)BENCH_MIB, .cpu = -1,
			       .store_parent = "/dev/shm", .data_on = { true, true, true } };
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'r':
			if (!bench_parse_uint("--reps", optarg, 1, ST_REPS_MAX, &v))
				return 2;
			o->reps = (unsigned)v;
			break;
		case 's':
			if (!bench_parse_uint("--size-mb", optarg, 1, 4096, &v))
				return 2;
			o->size = v * BENCH_MIB;
			break;
		case 'j':
			o->json = optarg;
			break;
		case 'c':
			if (!bench_parse_uint("--cpu", optarg, 0, 1023, &v))
				return 2;
			o->cpu = (int)v;
			break;
		case 'd':
			if (!st_parse_data(optarg, o)) {
				fprintf(stderr, "tidegate-bench: --data takes text,binary,random\n");
				return 2;
			}
			break;
		case 'S':
			o->store_parent = optarg;
			break;
		case 'h':
			st_usage(stdout);
			return 0;
		default:
			st_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tidegate-bench stages: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	return -1;
}

int bench_stages_main(int argc, char **argv)
{
	struct bench_data sets[3] = { 0 };
	char store_parent[240];
	struct tg_pipe *pipe = NULL;
	struct st_opts o;
	double load_before = bench_load1();
	int ret, cpu, status = 1;

	ret = st_parse(argc, argv, &o);
	if (ret >= 0)
		return ret;
	cpu = bench_pin(o.cpu);
	if (cpu < 0) {
		fprintf(stderr, "tidegate-bench: cannot pin to CPU %d: %s\n", o.cpu, strerror(-cpu));
		return 1;
	}
	if (strlen(o.store_parent) > 200) {
		fprintf(stderr, "tidegate-bench: --store-dir is too long\n");
		return 2;
	}
	snprintf(store_parent, sizeof(store_parent), "%s/tg-bench-XXXXXX", o.store_parent);
	if (!mkdtemp(store_parent)) {
		fprintf(stderr, "tidegate-bench: cannot make a directory in %s: %s\n",
			o.store_parent, strerror(errno));
		return 1;
	}
	o.store_parent = store_parent;
	fprintf(stderr, "tidegate-bench stages: pinned to CPU %d, TSC %.3f GHz\n", cpu,
		bench_tsc_hz() / 1e9);
	pipe = tg_pipe_create(ST_CHUNK, &ret);
	if (!pipe) {
		fprintf(stderr, "tidegate-bench: tg_pipe_create: %s\n", strerror(-ret));
		goto out;
	}
	for (unsigned i = 0; i < 3; i++) {
		if (!o.data_on[i])
			continue;
		fprintf(stderr, "loading %s (%zu MiB)\n", st_data_names[i], o.size / BENCH_MIB);
		ret = bench_data_load(&sets[i], st_data_names[i], o.size);
		if (ret) {
			fprintf(stderr, "tidegate-bench: data set %s: %s\n", st_data_names[i],
				strerror(-ret));
			goto out;
		}
		ret = st_data_set(&sets[i], &o, pipe);
		if (ret)
			goto out;
	}
	st_vs_memcpy();
	st_print_table(cpu, &o, sets, load_before);
	if (o.json) {
		json_t *j = st_json(cpu, &o, sets, load_before);

		ret = bench_json_write(j, o.json);
		json_decref(j);
		if (ret) {
			fprintf(stderr, "tidegate-bench: writing %s: %s\n", o.json, strerror(-ret));
			goto out;
		}
	}
	status = 0;
out:
	tg_pipe_destroy(pipe);
	for (unsigned i = 0; i < 3; i++)
		bench_data_free(&sets[i]);
	(void)bench_rmtree(store_parent);
	return status;
}
