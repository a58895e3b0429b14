/*
 * test_service.c - the gateway's service (gateway/service*.c) against the
 * real control plane: a redis-server on a free loopback port and the
 * tidegate-control and tidegate-ctl of this build ($TG_BUILD), in a private
 * temp directory. The test plays the worker lcores: it fills gw_jobs,
 * gw_service_submit()s them and collects the answers with
 * gw_service_done(), so everything between the rings and Redis is real:
 * the link, the Lua scripts, the crypto, the dir store on disk.
 *
 * Proves: create fails fast and cleanly without a control plane; the
 * provider GUID comes from hello; registration with a proof made from the
 * key tidegate-ctl printed (credential unwrapped with the real crypto),
 * wrong proofs and full seats mapped to their wire codes; auth and its
 * session key; OFFER per organization (unknown, then known; never across
 * orgs); STORE ok / dup / hash mismatch / quota exceeded on a tiny quota,
 * with the lease and the committed usage visible in `org show`; READ round
 * trip, rebuild from parity, and a chunk lost beyond parity named in the
 * error; BACKUP_END (root and pieces checked, recorded, idempotent) and
 * RESTORE; an org deactivation reaching every worker's ring within a
 * second; a killed control plane -> UNAVAILABLE while stores go on within
 * the lease, then recovery; the final commit and lease release at destroy.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gw_job.h"
#include "tg_crypto.h"
#include "tg_manifest.h"
#include "tg_regkey.h"

#define MAX_CHUNK   (1u << 20)
#define NDIRS       4
#define NWORKERS    2
#define LEASE_TTL   "2000"
#define NUPD        256

struct env {
	bool ok;
	char tmp[64];
	char build[512];
	char admin[128], gwsock[128], dirs[NDIRS][128];
	int port;
	pid_t redis, control;
	struct gw_service *s;
	pthread_t ctl_thread;
	bool running;
	uint8_t provider[TG_ID_LEN];
	/* org_update messages seen, in arrival order */
	struct {
		struct gw_job *j;
		uint64_t at_ms;
	} upd[NUPD];
	unsigned nupd;
	/* the registered device of acme */
	struct tg_org_id acme, beta, tiny;
	char acme_key[80], beta_key[80];
	uint8_t dev[TG_ID_LEN], cred[TG_CRED_LEN];
	/* a chunk stored in acme */
	uint8_t *c1;
	uint32_t c1_len;
	struct tg_chunk_id c1_id;
	uint64_t beta_stored;
	unsigned beta_chunks;
};

static struct env E;

/* ---- small helpers ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static pid_t spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int nul = open("/dev/null", O_RDONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static void reap(pid_t *pid, int sig)
{
	if (*pid <= 0)
		return;
	kill(*pid, sig);
	waitpid(*pid, NULL, 0);
	*pid = 0;
}

/* tidegate-ctl --json ARGS: the parsed result, or NULL if it failed. */
static json_t *ctl(const char *fmt, ...)
{
	char args[512], cmd[1400], buf[65536];
	size_t n = 0, got;
	va_list ap;
	FILE *f;
	int st;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), "%s/control/tidegate-ctl --socket %s --json %s 2>/dev/null",
		 E.build, E.admin, args);
	f = popen(cmd, "r");
	if (!f)
		return NULL;
	while ((got = fread(buf + n, 1, sizeof(buf) - 1 - n, f)) > 0)
		n += got;
	buf[n] = '\0';
	st = pclose(f);
	if (st != 0)
		return NULL;
	return json_loads(buf, 0, NULL);
}

static long long org_field(const char *org, const char *field)
{
	json_t *o = ctl("org show %s", org);
	long long v = -1;

	if (o && json_is_integer(json_object_get(o, field)))
		v = json_integer_value(json_object_get(o, field));
	json_decref(o);
	return v;
}

/* Poll org show until field == want (or timeout); the last value seen. */
static long long org_wait(const char *org, const char *field, long long want, unsigned ms)
{
	uint64_t end = now_ms() + ms;
	long long v;

	for (;;) {
		v = org_field(org, field);
		if (v == want || now_ms() >= end)
			return v;
		nap_ms(100);
	}
}

static void start_control(void)
{
	char port[16];
	char log[128];
	char bin[600];
	char *argv[] = { bin, "--redis-host", "127.0.0.1", "--redis-port", port,
			 "--admin-socket", E.admin, "--gateway-socket", E.gwsock,
			 "--admin-group", "root", "--lease-ttl-ms", LEASE_TTL,
			 "--lease-bytes", "4M", "--log-level", "debug", NULL };

	snprintf(bin, sizeof(bin), "%s/control/tidegate-control", E.build);
	snprintf(port, sizeof(port), "%d", E.port);
	snprintf(log, sizeof(log), "%s/control.log", E.tmp);
	unlink(E.admin);
	unlink(E.gwsock);
	E.control = spawn(argv, log);
}

static bool control_ready(unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (now_ms() < end) {
		json_t *p = ctl("provider show");
		bool up = p && json_is_string(json_object_get(p, "guid")) &&
			  strcmp(json_string_value(json_object_get(p, "redis")), "up") == 0;

		json_decref(p);
		if (up)
			return true;
		nap_ms(100);
	}
	return false;
}

static void *run_thread(void *arg)
{
	gw_service_run(arg);
	return NULL;
}

static struct gw_service_cfg base_cfg(void)
{
	struct gw_service_cfg c = {
		.control_sock = E.gwsock,
		.name = "gw-test",
		.nstore_dirs = NDIRS,
		.io_threads = 2,
		.nworkers = NWORKERS,
		.max_chunk = MAX_CHUNK,
		.frag_size = 1408,
		.reasm = { .mem_total = 64u << 20, .mem_per_session = 16u << 20,
			   .slots_per_session = 8, .max_chunk = MAX_CHUNK },
		.sessions_per_worker = 64,
		.connect_timeout_ms = 10000,
	};

	for (unsigned i = 0; i < NDIRS; i++)
		c.store_dirs[i] = E.dirs[i];
	return c;
}

/* Everything a worker gets back; org updates are kept aside in E.upd. */
static struct gw_job *await_job(struct gw_job *want, unsigned w, unsigned ms)
{
	static struct gw_job *early[16]; /* answered before being awaited */
	static unsigned nearly;
	uint64_t end = now_ms() + ms;
	struct gw_job *got = NULL;

	for (unsigned i = 0; want && i < nearly; i++) {
		if (early[i] == want) {
			early[i] = early[--nearly];
			return want;
		}
	}
	do {
		for (unsigned ww = 0; ww < NWORKERS; ww++) {
			struct gw_job *js[16];
			unsigned n = gw_service_done(E.s, ww, js, 16);

			for (unsigned i = 0; i < n; i++) {
				if (js[i]->type == GW_JOB_ORG_UPDATE) {
					if (E.nupd < NUPD) {
						E.upd[E.nupd].j = js[i];
						E.upd[E.nupd++].at_ms = now_ms();
					} else {
						free(js[i]);
					}
				} else if (js[i] == want && ww == w) {
					got = want;
				} else if (nearly < 16) {
					early[nearly++] = js[i];
				} else {
					fail_msg("too many answers not awaited");
				}
			}
		}
		if (got || !want)
			return got;
		nap_ms(1);
	} while (now_ms() < end);
	return NULL;
}

/* Submit as worker 0 and wait for the answer. */
static uint16_t run_job(struct gw_job *j)
{
	j->worker = 0;
	j->status = 0xffff;
	assert_true(gw_service_submit(E.s, j));
	assert_ptr_equal(await_job(j, 0, 15000), j);
	return j->status;
}

static void make_chunk(uint32_t len, uint8_t **data, struct tg_chunk_id *id)
{
	*data = malloc(len + 4096);
	assert_non_null(*data);
	assert_int_equal(tg_random(*data, len), 0);
	tg_chunk_hash(*data, len, id);
}

static const struct tg_policy pol_compress = { .compress = true, .level = 1 };
static const struct tg_policy pol_ec = { .compress = true, .level = 1, .k = 2, .m = 1 };

static uint16_t store(const struct tg_org_id *org, const struct tg_policy *pol, uint8_t *data,
		      uint32_t len, const struct tg_chunk_id *id, uint32_t *stored, bool *waited)
{
	struct gw_job *j = calloc(1, sizeof(*j));
	uint16_t st;

	assert_non_null(j);
	j->type = GW_JOB_STORE;
	j->org = *org;
	j->u.store.policy = *pol;
	j->u.store.id = *id;
	j->u.store.data = data;
	j->u.store.len = len;
	j->u.store.cap = len + 4096;
	st = run_job(j);
	if (stored)
		*stored = j->u.store.stored_bytes;
	if (waited)
		*waited = j->u.store.lease_waited;
	free(j);
	return st;
}

/* OFFER ids[0..n-1]; the NEED bits as a mask. */
static uint64_t offer(const struct tg_org_id *org, const struct tg_chunk_id *ids,
		      const uint32_t *lens, unsigned n)
{
	struct gw_job *j = calloc(1, sizeof(*j));
	uint64_t mask = 0;

	assert_non_null(j);
	j->type = GW_JOB_OFFER;
	j->org = *org;
	j->u.offer.count = (uint16_t)n;
	for (unsigned i = 0; i < n; i++) {
		memcpy(j->u.offer.ids[i].id, ids[i].b, TG_ID_LEN);
		j->u.offer.ids[i].len = lens[i];
	}
	assert_int_equal(run_job(j), TG_OK);
	for (unsigned i = 0; i < n; i++)
		if (j->u.offer.need[i / 8] & (1u << (i % 8)))
			mask |= 1ull << i;
	free(j);
	return mask;
}

/* Add an org; its GUID and registration key. */
static void add_org(const char *name, const char *extra, struct tg_org_id *org, char *key)
{
	json_t *o = ctl("org add %s %s", name, extra);

	assert_non_null(o);
	assert_int_equal(tg_id_from_hex(json_string_value(json_object_get(o, "guid")), org->b), 0);
	if (key)
		snprintf(key, 80, "%s", json_string_value(json_object_get(o, "registration_key")));
	json_decref(o);
}

/* REGISTER name with the key text; the job (caller frees). */
static struct gw_job *do_register(const char *key_text, const char *name, bool wrong,
				  uint8_t v[32])
{
	struct gw_job *j = calloc(1, sizeof(*j));
	struct tg_reg_proof *p;
	struct tg_regkey k;
	uint8_t salt[TG_SALT_LEN];

	assert_non_null(j);
	p = &j->u.reg.req;
	assert_int_equal(tg_regkey_parse(key_text, &k), 0);
	assert_int_equal(tg_regkey_salt(E.provider, k.key_id, salt), 0);
	assert_int_equal(tg_regkey_verifier(salt, k.secret, sizeof(k.secret), v), 0);
	j->type = GW_JOB_REGISTER;
	j->peer.ip = htonl(0xc0000201); /* 192.0.2.1 */
	j->peer.port = htons(40000);
	memcpy(p->provider_guid, E.provider, TG_ID_LEN);
	memcpy(p->key_id, k.key_id, TG_KEYID_LEN);
	assert_int_equal(tg_random(p->client_nonce, TG_NONCE_LEN), 0);
	assert_int_equal(tg_random(p->server_nonce, TG_NONCE_LEN), 0);
	p->name_len = (uint16_t)strlen(name);
	memcpy(j->u.reg.name_buf, name, p->name_len);
	p->name = j->u.reg.name_buf;
	assert_int_equal(tg_reg_proof(v, p, p->proof), 0);
	if (wrong)
		p->proof[0] ^= 1;
	run_job(j);
	return j;
}

static struct gw_job *do_auth(const uint8_t dev[TG_ID_LEN], const uint8_t cred[TG_CRED_LEN])
{
	struct gw_job *j = calloc(1, sizeof(*j));
	struct tg_auth *a;

	assert_non_null(j);
	a = &j->u.auth.req;
	j->type = GW_JOB_AUTH;
	j->peer.ip = htonl(0xc0000201);
	j->peer.port = htons(40001);
	memcpy(a->device_id, dev, TG_ID_LEN);
	assert_int_equal(tg_random(a->client_nonce, TG_NONCE_LEN), 0);
	assert_int_equal(tg_random(a->server_nonce, TG_NONCE_LEN), 0);
	a->max_frag = 1408;
	assert_int_equal(tg_auth_proof(cred, a, a->proof), 0);
	run_job(j);
	return j;
}

/* Shard files of (org, id) under every store dir. */
static unsigned shard_paths(const struct tg_org_id *org, const struct tg_chunk_id *id,
			    char paths[][300])
{
	char oh[33], ih[33];
	unsigned n = 0;

	tg_id_to_hex(org, oh);
	tg_id_to_hex(id, ih);
	for (unsigned i = 0; i < NDIRS; i++) {
		snprintf(paths[n], 300, "%s/%s/%.2s/%s", E.dirs[i], oh, ih, ih);
		if (access(paths[n], F_OK) == 0)
			n++;
	}
	return n;
}

/* The shard's index in its header (store_dir.c: byte 8), or -1. */
static int shard_index(const char *path)
{
	uint8_t h[16];
	int fd = open(path, O_RDONLY), n;

	if (fd < 0)
		return -1;
	n = (int)read(fd, h, sizeof(h));
	close(fd);
	return n == (int)sizeof(h) ? h[8] : -1;
}

static void start_service(void)
{
	struct gw_service_cfg c = base_cfg();
	int err = 0;

	E.s = gw_service_create(&c, &err);
	assert_non_null(E.s);
	assert_int_equal(pthread_create(&E.ctl_thread, NULL, run_thread, E.s), 0);
	E.running = true;
}

static void stop_service(void)
{
	if (!E.s)
		return;
	if (E.running) {
		gw_service_request_stop(E.s);
		pthread_join(E.ctl_thread, NULL);
		E.running = false;
	}
	gw_service_destroy(E.s);
	E.s = NULL;
}

/* ---- fixture ---- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st, (void)flag, (void)f;
	return remove(p);
}

static int setup(void **state)
{
	const char *b = getenv("TG_BUILD");
	char bin[600], port[16], log[128];
	char *rargv[] = { "/usr/bin/redis-server", "--port", port, "--bind", "127.0.0.1",
			  "--save", "", "--appendonly", "no", "--dir", E.tmp, "--daemonize", "no",
			  NULL };
	json_t *p;

	(void)state;
	signal(SIGPIPE, SIG_IGN);
	snprintf(E.build, sizeof(E.build), "%s", b ? b : "build");
	snprintf(bin, sizeof(bin), "%s/control/tidegate-control", E.build);
	if (access(bin, X_OK) || access("/usr/bin/redis-server", X_OK))
		return 0; /* every test skips */
	snprintf(E.tmp, sizeof(E.tmp), "/tmp/tg-svc-XXXXXX");
	if (!mkdtemp(E.tmp))
		return -1;
	snprintf(E.admin, sizeof(E.admin), "%s/admin.sock", E.tmp);
	snprintf(E.gwsock, sizeof(E.gwsock), "%s/gateway.sock", E.tmp);
	for (unsigned i = 0; i < NDIRS; i++) {
		snprintf(E.dirs[i], sizeof(E.dirs[i]), "%s/shard%u", E.tmp, i);
		if (mkdir(E.dirs[i], 0750))
			return -1;
	}
	E.port = free_port();
	snprintf(port, sizeof(port), "%d", E.port);
	snprintf(log, sizeof(log), "%s/redis.log", E.tmp);
	E.redis = spawn(rargv, log);
	start_control();
	if (!control_ready(20000))
		return -1;
	p = ctl("provider show");
	if (!p || tg_id_from_hex(json_string_value(json_object_get(p, "guid")), E.provider)) {
		json_decref(p);
		return -1;
	}
	json_decref(p);
	E.ok = true;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	stop_service();
	for (unsigned i = 0; i < E.nupd; i++)
		free(E.upd[i].j);
	free(E.c1);
	reap(&E.control, SIGTERM);
	reap(&E.redis, SIGKILL);
	if (E.tmp[0] && !getenv("TG_TEST_KEEP"))
		nftw(E.tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

#define NEED_ENV()                                                     \
	do {                                                           \
		if (!E.ok)                                             \
			skip();                                        \
	} while (0)

/* ---- tests ---- */

static void create_without_control_plane_fails_fast_and_clean(void **state)
{
	struct gw_service_cfg c;
	char sock[160];
	uint64_t t0;
	int err = 0;

	(void)state;
	NEED_ENV();
	c = base_cfg();
	snprintf(sock, sizeof(sock), "%s/nobody.sock", E.tmp);
	c.control_sock = sock;
	c.connect_timeout_ms = 400;
	t0 = now_ms();
	assert_null(gw_service_create(&c, &err));
	assert_true(err == -ENOENT || err == -ECONNREFUSED || err == -ETIMEDOUT);
	/* It retried for the bound, and not much longer. */
	assert_true(now_ms() - t0 >= 350);
	assert_true(now_ms() - t0 < 3000);

	c = base_cfg();
	c.nstore_dirs = 0;
	assert_null(gw_service_create(&c, &err));
	assert_int_equal(err, -EINVAL);
}

static void create_takes_provider_guid_from_hello(void **state)
{
	const struct gw_service_info *info;
	static const uint8_t zero[32];

	(void)state;
	NEED_ENV();
	start_service();
	info = gw_service_info(E.s);
	assert_non_null(info);
	assert_memory_equal(info->provider_guid, E.provider, TG_ID_LEN);
	assert_memory_not_equal(info->cookie_secret, zero, 32);
	assert_int_equal(info->nworkers, NWORKERS);
	assert_int_equal(info->max_chunk, MAX_CHUNK);
}

static void register_with_printed_key_then_auth(void **state)
{
	uint8_t v[32], key[32], aad[2 * TG_ID_LEN], want[TG_KEY_LEN];
	struct tg_org_id third;
	char key3[80];
	struct gw_job *j, *a;

	(void)state;
	NEED_ENV();
	add_org("acme", "--seats 2 --quota 64M --restore-limit-user unlimited", &E.acme, E.acme_key);
	j = do_register(E.acme_key, "laptop", false, v);
	assert_int_equal(j->status, TG_OK);
	assert_memory_equal(j->u.reg.ok.org_guid, E.acme.b, TG_ID_LEN);
	assert_memory_equal(j->u.reg.ok.client_nonce, j->u.reg.req.client_nonce, TG_NONCE_LEN);
	/* The credential opens with the key the device holds, bound to org and device. */
	memcpy(aad, j->u.reg.ok.org_guid, TG_ID_LEN);
	memcpy(aad + TG_ID_LEN, j->u.reg.ok.device_id, TG_ID_LEN);
	assert_int_equal(tg_reg_wrap_key(v, j->u.reg.req.client_nonce, j->u.reg.req.server_nonce,
					 key), 0);
	assert_int_equal(tg_aead_open(key, j->u.reg.req.server_nonce, aad, sizeof(aad),
				      j->u.reg.ok.wrapped_cred, TG_CRED_LEN, E.cred,
				      j->u.reg.ok.wrap_tag), 0);
	memcpy(E.dev, j->u.reg.ok.device_id, TG_ID_LEN);
	free(j);

	a = do_auth(E.dev, E.cred);
	assert_int_equal(a->status, TG_OK);
	assert_memory_equal(a->u.auth.org.b, E.acme.b, TG_ID_LEN);
	assert_int_equal(tg_session_key(E.cred, a->u.auth.req.client_nonce,
					a->u.auth.req.server_nonce, want), 0);
	assert_memory_equal(a->u.auth.session_key, want, TG_KEY_LEN);
	assert_int_equal(a->u.auth.state, GW_ORG_ACTIVE);
	assert_true(a->u.auth.policy.compress);
	assert_int_equal(a->u.auth.policy.k, 0);
	assert_false(a->u.auth.admin);
	assert_false(a->u.auth.relay);
	free(a);

	/* A wrong credential: BAD_KEY with a reason. */
	E.cred[0] ^= 1;
	a = do_auth(E.dev, E.cred);
	E.cred[0] ^= 1;
	assert_int_equal(a->status, TG_ERR_BAD_KEY);
	assert_true(a->msg[0] != '\0');
	free(a);

	/* A wrong key proof and a full organization: their wire codes. */
	j = do_register(E.acme_key, "desktop", true, v);
	assert_int_equal(j->status, TG_ERR_BAD_KEY);
	free(j);
	add_org("third", "--quota 64M --seats 1", &third, key3);
	j = do_register(key3, "one", false, v);
	assert_int_equal(j->status, TG_OK);
	free(j);
	j = do_register(key3, "two", false, v);
	assert_int_equal(j->status, TG_ERR_SEATS_FULL);
	assert_true(strstr(j->msg, "seat") != NULL);
	free(j);
}

static void offer_answers_per_organization(void **state)
{
	struct tg_chunk_id ids[2];
	uint8_t *other;
	uint32_t lens[2] = { 200000, 1000 }, stored = 0;

	(void)state;
	NEED_ENV();
	add_org("beta", "--seats 2 --quota 64M", &E.beta, E.beta_key);
	E.c1_len = lens[0];
	make_chunk(E.c1_len, &E.c1, &E.c1_id);
	make_chunk(lens[1], &other, &ids[1]);
	ids[0] = E.c1_id;

	assert_int_equal(offer(&E.acme, ids, lens, 2), 0x3);
	assert_int_equal(store(&E.acme, &pol_ec, E.c1, E.c1_len, &E.c1_id, &stored, NULL), TG_OK);
	assert_int_equal(stored, E.c1_len); /* random bytes do not shrink: stored raw */
	assert_int_equal(offer(&E.acme, ids, lens, 2), 0x2);
	/* beta never learns that acme holds the chunk. */
	assert_int_equal(offer(&E.beta, ids, lens, 2), 0x3);
	free(other);
}

static void store_dup_and_hash_mismatch(void **state)
{
	struct tg_chunk_id id;
	uint8_t *d;
	uint32_t stored = 1;
	char paths[NDIRS][300];

	(void)state;
	NEED_ENV();
	assert_int_equal(store(&E.acme, &pol_ec, E.c1, E.c1_len, &E.c1_id, &stored, NULL),
			 TG_ERR_DUP);
	assert_int_equal(stored, 0);

	/* The same new chunk from two sessions at once: stored once, the
	 * other answer is DUP, and the quota is charged once. */
	{
		struct gw_job *j[2];
		uint8_t *d2;
		unsigned ok = 0, dup = 0;

		make_chunk(150000, &d, &id);
		d2 = malloc(150000 + 4096);
		memcpy(d2, d, 150000);
		for (unsigned i = 0; i < 2; i++) {
			j[i] = calloc(1, sizeof(*j[i]));
			j[i]->type = GW_JOB_STORE;
			j[i]->org = E.acme;
			j[i]->u.store.policy = pol_compress;
			j[i]->u.store.id = id;
			j[i]->u.store.data = i ? d2 : d;
			j[i]->u.store.len = 150000;
			j[i]->u.store.cap = 150000 + 4096;
			assert_true(gw_service_submit(E.s, j[i]));
		}
		for (unsigned i = 0; i < 2; i++) {
			assert_ptr_equal(await_job(j[i], 0, 15000), j[i]);
			ok += j[i]->status == TG_OK;
			dup += j[i]->status == TG_ERR_DUP;
		}
		assert_int_equal(ok, 1);
		assert_int_equal(dup, 1);
		assert_int_equal(j[0]->u.store.stored_bytes + j[1]->u.store.stored_bytes, 150000);
		free(j[0]);
		free(j[1]);
		free(d);
		free(d2);
	}

	make_chunk(5000, &d, &id);
	d[100] ^= 0x40; /* the bytes no longer match the id */
	assert_int_equal(store(&E.acme, &pol_compress, d, 5000, &id, NULL, NULL),
			 TG_ERR_HASH_MISMATCH);
	assert_int_equal(shard_paths(&E.acme, &id, paths), 0);
	free(d);
}

static void read_round_trip_rebuild_and_loss(void **state)
{
	size_t cap = tg_store_get_cap(MAX_CHUNK);
	struct gw_job *j = calloc(1, sizeof(*j));
	char paths[NDIRS][300], hx[33];
	struct tg_chunk_id missing;

	(void)state;
	NEED_ENV();
	assert_non_null(j);
	j->type = GW_JOB_READ;
	j->org = E.acme;
	j->u.read.id = E.c1_id;
	j->u.read.buf = malloc(cap);
	j->u.read.cap = (uint32_t)cap;
	assert_int_equal(run_job(j), TG_OK);
	assert_int_equal(j->u.read.len, E.c1_len);
	assert_memory_equal(j->u.read.buf, E.c1, E.c1_len);
	assert_int_equal(j->u.read.rebuilt, 0);

	/* Another org reads nothing of acme's. */
	j->org = E.beta;
	assert_int_equal(run_job(j), TG_ERR_NOT_FOUND);
	j->org = E.acme;

	/* 2+1: one data shard lost is rebuilt, two shards are beyond parity. */
	assert_int_equal(shard_paths(&E.acme, &E.c1_id, paths), 3);
	for (unsigned i = 0; i < 3; i++) {
		if (shard_index(paths[i]) == 0) {
			char t[300];

			memcpy(t, paths[0], sizeof(t));
			memcpy(paths[0], paths[i], sizeof(t));
			memcpy(paths[i], t, sizeof(t));
		}
	}
	assert_int_equal(shard_index(paths[0]), 0);
	assert_int_equal(unlink(paths[0]), 0);
	memset(j->u.read.buf, 0, E.c1_len);
	assert_int_equal(run_job(j), TG_OK);
	assert_int_equal(j->u.read.rebuilt, 1);
	assert_memory_equal(j->u.read.buf, E.c1, E.c1_len);
	assert_int_equal(unlink(paths[1]), 0);
	assert_int_equal(run_job(j), TG_ERR_STORAGE);
	tg_id_to_hex(&E.c1_id, hx);
	assert_non_null(strstr(j->msg, hx));

	/* Every shard gone: not found, and the error names the chunk. */
	assert_int_equal(unlink(paths[2]), 0);
	assert_int_equal(run_job(j), TG_ERR_NOT_FOUND);
	assert_non_null(strstr(j->msg, hx));
	assert_int_equal(tg_random(&missing, sizeof(missing)), 0);
	j->u.read.id = missing;
	assert_int_equal(run_job(j), TG_ERR_NOT_FOUND);
	free(j->u.read.buf);
	free(j);
}

static void quota_lease_refuses_over_a_tiny_quota(void **state)
{
	uint8_t *d[4];
	struct tg_chunk_id id[4];
	uint32_t stored;
	bool waited;
	long long used, reserved;
	json_t *o;

	(void)state;
	NEED_ENV();
	add_org("tiny", "--seats 2 --quota 1M", &E.tiny, NULL);
	for (unsigned i = 0; i < 4; i++)
		make_chunk(300000, &d[i], &id[i]);
	waited = false;
	assert_int_equal(store(&E.tiny, &pol_compress, d[0], 300000, &id[0], &stored, &waited),
			 TG_OK);
	assert_true(waited); /* no lease yet: the first chunk waited for one */
	assert_int_equal(stored, 300000);
	/* The lease is reserved in Redis (a commit may have moved some of
	 * it to used_bytes already: one snapshot of both). */
	o = ctl("org show tiny");
	assert_non_null(o);
	reserved = json_integer_value(json_object_get(o, "reserved_bytes"));
	used = json_integer_value(json_object_get(o, "used_bytes"));
	json_decref(o);
	assert_int_equal(reserved + used, 1 << 20);
	assert_true(reserved > 0);
	assert_int_equal(store(&E.tiny, &pol_compress, d[1], 300000, &id[1], NULL, &waited), TG_OK);
	assert_false(waited); /* spent from the local lease */
	assert_int_equal(store(&E.tiny, &pol_compress, d[2], 300000, &id[2], NULL, NULL), TG_OK);
	assert_int_equal(store(&E.tiny, &pol_compress, d[3], 300000, &id[3], NULL, NULL),
			 TG_ERR_QUOTA_EXCEEDED);
	/* Committed usage arrives within a few seconds, exactly once. */
	assert_int_equal(org_wait("tiny", "used_bytes", 900000, 5000), 900000);
	assert_int_equal(org_field("tiny", "chunks"), 3);
	/* Idle, the lease goes back. */
	assert_int_equal(org_wait("tiny", "reserved_bytes", 0, 8000), 0);
	for (unsigned i = 0; i < 4; i++)
		free(d[i]);
}

static void backup_end_records_and_restore_authorizes(void **state)
{
	struct tg_mf_builder *b;
	struct tg_mf_file f = { .path = "a.bin", .path_len = 5, .type = TG_MF_REG, .mode = 0644,
				.size = 0, .nchunks = 1 };
	struct tg_chunk_ref cref, piece;
	struct tg_chunk_id pid, rid, fake_piece;
	const uint8_t *stream;
	uint8_t *sbuf, root[100];
	size_t slen;
	uint32_t nfiles;
	uint64_t logical, bid;
	long rlen;
	int err;
	struct gw_job *j;
	char hx[33];

	(void)state;
	NEED_ENV();
	memcpy(cref.id, E.c1_id.b, TG_ID_LEN);
	cref.len = E.c1_len;
	f.size = E.c1_len;
	b = tg_mf_builder_create("nightly", 1700000000, &err);
	assert_non_null(b);
	assert_int_equal(tg_mf_add(b, &f, &cref), 0);
	assert_int_equal(tg_mf_finish(b, &stream, &slen, &nfiles, &logical), 0);
	sbuf = malloc(slen + 4096);
	memcpy(sbuf, stream, slen);
	tg_mf_builder_destroy(b);
	tg_chunk_hash(sbuf, slen, &pid);
	memcpy(piece.id, pid.b, TG_ID_LEN);
	piece.len = (uint32_t)slen;
	rlen = tg_mf_root_build(root, 40, &piece, 1, slen);
	assert_int_equal(rlen, 40);
	tg_chunk_hash(root, (size_t)rlen, &rid);
	{
		uint8_t *rb = malloc(4096);

		memcpy(rb, root, (size_t)rlen);
		assert_int_equal(store(&E.acme, &pol_compress, rb, (uint32_t)rlen, &rid, NULL, NULL),
				 TG_OK);
		free(rb);
	}

	j = calloc(1, sizeof(*j));
	j->type = GW_JOB_BACKUP_END;
	j->org = E.acme;
	memcpy(j->u.end.device, E.dev, TG_ID_LEN);
	memcpy(j->u.end.req.root_id, rid.b, TG_ID_LEN);
	j->u.end.req.root_len = (uint32_t)rlen;
	j->u.end.req.nfiles = nfiles;
	j->u.end.req.logical_bytes = logical;
	j->u.end.req.name_len = 7;
	memcpy(j->u.end.name_buf, "nightly", 7);
	j->u.end.req.name = j->u.end.name_buf;
	/* The piece is not stored yet: nothing is recorded, the piece is named. */
	assert_int_equal(run_job(j), TG_ERR_NOT_FOUND);
	tg_id_to_hex(&pid, hx);
	assert_non_null(strstr(j->msg, hx));
	assert_int_equal(store(&E.acme, &pol_compress, sbuf, (uint32_t)slen, &pid, NULL, NULL),
			 TG_OK);
	assert_int_equal(run_job(j), TG_OK);
	bid = j->u.end.backup_id;
	assert_true(bid > 0);
	/* A retransmitted BACKUP_END records nothing new. */
	assert_int_equal(run_job(j), TG_OK);
	assert_int_equal(j->u.end.backup_id, bid);
	/* A root the org does not hold. */
	assert_int_equal(tg_random(&fake_piece, sizeof(fake_piece)), 0);
	memcpy(j->u.end.req.root_id, fake_piece.b, TG_ID_LEN);
	assert_int_equal(run_job(j), TG_ERR_NOT_FOUND);
	free(j);

	j = calloc(1, sizeof(*j));
	j->type = GW_JOB_RESTORE;
	j->org = E.acme;
	memcpy(j->u.restore.device, E.dev, TG_ID_LEN);
	j->u.restore.req.flags = TG_RF_LATEST;
	assert_int_equal(run_job(j), TG_OK);
	assert_int_equal(j->u.restore.ok.backup_id, bid);
	assert_memory_equal(j->u.restore.ok.root_id, rid.b, TG_ID_LEN);
	assert_int_equal(j->u.restore.ok.root_len, (uint32_t)rlen);
	assert_int_equal(j->u.restore.ok.total_bytes, logical);
	/* Another org's device is not found, never more. */
	j->org = E.beta;
	assert_int_equal(run_job(j), TG_ERR_NOT_FOUND);
	/* Admin role not held. */
	j->org = E.acme;
	j->u.restore.req.flags = TG_RF_LATEST | TG_RF_ADMIN;
	assert_int_equal(run_job(j), TG_ERR_BAD_REQUEST);
	free(j);
	free(sbuf);
}

/* The first org update for org with state st seen on worker w since index from. */
static int find_update(unsigned from, unsigned w, const struct tg_org_id *org, uint8_t st)
{
	for (unsigned i = from; i < E.nupd; i++)
		if (E.upd[i].j->worker == w && tg_id_eq(&E.upd[i].j->org, org) &&
		    E.upd[i].j->u.upd.state == st)
			return (int)i;
	return -1;
}

static void deactivation_reaches_every_worker_within_a_second(void **state)
{
	unsigned from = E.nupd;
	uint64_t t0, end;
	int i0 = -1, i1 = -1;
	json_t *o;
	uint8_t *d;
	struct tg_chunk_id id;
	struct gw_job *a;

	(void)state;
	NEED_ENV();
	t0 = now_ms();
	o = ctl("org deactivate acme");
	assert_non_null(o);
	json_decref(o);
	end = t0 + 3000;
	while ((i0 < 0 || i1 < 0) && now_ms() < end) {
		await_job(NULL, 0, 0);
		i0 = find_update(from, 0, &E.acme, GW_ORG_DEACTIVATED);
		i1 = find_update(from, 1, &E.acme, GW_ORG_DEACTIVATED);
		nap_ms(1);
	}
	assert_true(i0 >= 0 && i1 >= 0);
	assert_true(E.upd[i0].at_ms - t0 < 1000);
	assert_true(E.upd[i1].at_ms - t0 < 1000);
	assert_int_equal(E.upd[i0].j->type, GW_JOB_ORG_UPDATE);

	/* No new chunk, no session for it. */
	make_chunk(4000, &d, &id);
	assert_int_equal(store(&E.acme, &pol_compress, d, 4000, &id, NULL, NULL),
			 TG_ERR_ORG_DEACTIVATED);
	a = do_auth(E.dev, E.cred);
	assert_int_equal(a->status, TG_ERR_ORG_DEACTIVATED);
	free(a);

	from = E.nupd;
	o = ctl("org reactivate acme");
	assert_non_null(o);
	json_decref(o);
	end = now_ms() + 3000;
	while (find_update(from, 1, &E.acme, GW_ORG_ACTIVE) < 0 && now_ms() < end) {
		await_job(NULL, 0, 0);
		nap_ms(1);
	}
	assert_true(find_update(from, 1, &E.acme, GW_ORG_ACTIVE) >= 0);
	assert_true(E.upd[find_update(from, 1, &E.acme, GW_ORG_ACTIVE)].j->u.upd.has_policy);
	assert_int_equal(store(&E.acme, &pol_compress, d, 4000, &id, NULL, NULL), TG_OK);
	free(d);
}

static void control_plane_down_then_back(void **state)
{
	uint8_t *d[3];
	struct tg_chunk_id id[3];
	uint32_t stored;
	struct gw_job *a;
	uint64_t end;
	uint16_t st = TG_OK;

	(void)state;
	NEED_ENV();
	for (unsigned i = 0; i < 3; i++)
		make_chunk(100000, &d[i], &id[i]);
	/* beta holds a fresh lease. */
	assert_int_equal(store(&E.beta, &pol_compress, d[0], 100000, &id[0], &stored, NULL), TG_OK);
	E.beta_stored += stored;
	E.beta_chunks++;

	reap(&E.control, SIGKILL);
	/* The packet path goes on within the lease it holds. */
	assert_int_equal(store(&E.beta, &pol_compress, d[1], 100000, &id[1], &stored, NULL), TG_OK);
	E.beta_stored += stored;
	E.beta_chunks++;
	/* Control jobs: UNAVAILABLE, with a retry hint. */
	a = do_auth(E.dev, E.cred);
	assert_int_equal(a->status, TG_ERR_UNAVAILABLE);
	assert_true(a->retry_after > 0);
	free(a);
	/* Once the lease has expired, stores are refused too (retry later). */
	nap_ms(2500);
	assert_int_equal(store(&E.beta, &pol_compress, d[2], 100000, &id[2], NULL, NULL),
			 TG_ERR_UNAVAILABLE);

	start_control();
	assert_true(control_ready(20000));
	end = now_ms() + 15000;
	do {
		a = do_auth(E.dev, E.cred);
		st = a->status;
		free(a);
		if (st != TG_OK)
			nap_ms(200);
	} while (st != TG_OK && now_ms() < end);
	assert_int_equal(st, TG_OK);
	assert_int_equal(store(&E.beta, &pol_compress, d[2], 100000, &id[2], &stored, NULL), TG_OK);
	E.beta_stored += stored;
	E.beta_chunks++;
	/* What was stored during the outage is committed too. */
	assert_int_equal(org_wait("beta", "used_bytes", (long long)E.beta_stored, 8000),
			 (long long)E.beta_stored);
	assert_int_equal(org_field("beta", "chunks"), E.beta_chunks);
	for (unsigned i = 0; i < 3; i++)
		free(d[i]);
}

static void destroy_commits_usage_and_releases_leases(void **state)
{
	uint8_t *d;
	struct tg_chunk_id id;
	uint32_t stored;
	struct gw_job *a;

	(void)state;
	NEED_ENV();
	make_chunk(50000, &d, &id);
	assert_int_equal(store(&E.beta, &pol_compress, d, 50000, &id, &stored, NULL), TG_OK);
	E.beta_stored += stored;
	assert_true(org_field("beta", "reserved_bytes") > 0);
	/* The control loop ends first (a signal); a worker still draining
	 * gets an answer, not silence. */
	gw_service_request_stop(E.s);
	pthread_join(E.ctl_thread, NULL);
	E.running = false;
	a = calloc(1, sizeof(*a));
	a->type = GW_JOB_AUTH;
	assert_int_equal(run_job(a), TG_ERR_OVERLOADED);
	free(a);
	stop_service(); /* at once: before the periodic commit */
	assert_int_equal(org_field("beta", "used_bytes"), (long long)E.beta_stored);
	assert_int_equal(org_field("beta", "reserved_bytes"), 0);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(create_without_control_plane_fails_fast_and_clean),
		cmocka_unit_test(create_takes_provider_guid_from_hello),
		cmocka_unit_test(register_with_printed_key_then_auth),
		cmocka_unit_test(offer_answers_per_organization),
		cmocka_unit_test(store_dup_and_hash_mismatch),
		cmocka_unit_test(read_round_trip_rebuild_and_loss),
		cmocka_unit_test(quota_lease_refuses_over_a_tiny_quota),
		cmocka_unit_test(backup_end_records_and_restore_authorizes),
		cmocka_unit_test(deactivation_reaches_every_worker_within_a_second),
		cmocka_unit_test(control_plane_down_then_back),
		cmocka_unit_test(destroy_commits_usage_and_releases_leases),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
