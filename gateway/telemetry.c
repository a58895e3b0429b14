/*
 * telemetry.c - the gateway's counters as DPDK telemetry commands, read with
 * dpdk-telemetry.py or any client of /var/run/dpdk/<prefix>/dpdk_telemetry.v2:
 *
 *   /tidegate/stats     every gw_counters field summed over the workers
 *   /tidegate/lcore,N   worker N's counters (N = worker index, 0..workers-1)
 *   /tidegate/info      name, version, workers, udp_port, addresses,
 *                       provider_guid, control_link_up, and the sizes the
 *                       gateway runs with (mtu, frag_size, ...)
 *
 * Counters go by field name; the arrays go as dicts by reason name (drops by
 * gw_drop_name, perr by tg_perr_name, ra by tg_ra_name, err_sent by
 * tg_err_name with blanks as '_'), so a script never depends on enum order.
 *
 * The callbacks run on EAL's telemetry thread and read the workers' counters
 * racily (whole aligned 64-bit values, as gw.h promises). A reader count
 * lets main.c know when no callback can touch the shell's state any more,
 * since DPDK offers no way to unregister a command.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_pause.h>
#include <rte_telemetry.h>

#include "gw_job.h"
#include "service_int.h"
#include "shell.h"

static const struct gw_shell *g_sh;
static int g_live;
static int g_readers;

#define CTR(f) { #f, offsetof(struct gw_counters, f) }

static const struct {
	const char *name;
	size_t off;
} ctr_fields[] = {
	CTR(rx_pkts), CTR(rx_bytes), CTR(tx_pkts), CTR(tx_bytes),
	CTR(proto_rx_pkts), CTR(proto_rx_bytes), CTR(data_bytes),
	CTR(arp_replies), CTR(icmp_echo_replies),
	CTR(chunks_stored), CTR(chunks_dup), CTR(chunks_failed),
	CTR(offers), CTR(offered_ids), CTR(needed_ids),
	CTR(registrations), CTR(sessions_opened), CTR(sessions_closed), CTR(sessions_active),
	CTR(lease_waits), CTR(restores), CTR(chunks_served),
};

#define NCTR (sizeof(ctr_fields) / sizeof(ctr_fields[0]))

static bool tel_enter(void)
{
	__atomic_add_fetch(&g_readers, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&g_live, __ATOMIC_SEQ_CST))
		return true;
	__atomic_sub_fetch(&g_readers, 1, __ATOMIC_SEQ_CST);
	return false;
}

static void tel_exit(void)
{
	__atomic_sub_fetch(&g_readers, 1, __ATOMIC_SEQ_CST);
}

static inline uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void ctr_add(struct gw_counters *sum, const struct gw_counters *c)
{
	for (size_t i = 0; i < NCTR; i++)
		*(uint64_t *)((char *)sum + ctr_fields[i].off) +=
			ld((const uint64_t *)((const char *)c + ctr_fields[i].off));
	for (unsigned i = 0; i < GW_DROP__MAX; i++)
		sum->drops[i] += ld(&c->drops[i]);
	for (unsigned i = 0; i < TG_PERR__MAX; i++)
		sum->perr[i] += ld(&c->perr[i]);
	for (unsigned i = 0; i < TG_RA__MAX; i++)
		sum->ra[i] += ld(&c->ra[i]);
	for (unsigned i = 0; i < TG_ERR__MAX; i++)
		sum->err_sent[i] += ld(&c->err_sent[i]);
}

typedef const char *(*name_fn)(unsigned i);

static const char *drop_name(unsigned i) { return gw_drop_name((enum gw_drop)i); }
static const char *perr_name(unsigned i) { return tg_perr_name((enum tg_perr)i); }
static const char *ra_name(unsigned i) { return tg_ra_name((enum tg_ra)i); }
static const char *err_name(unsigned i) { return tg_err_name((enum tg_err)i); }

static int add_dict(struct rte_tel_data *d, const char *key, const uint64_t *v, unsigned n, name_fn name)
{
	struct rte_tel_data *x = rte_tel_data_alloc();
	char k[RTE_TEL_MAX_STRING_LEN];

	if (!x)
		return -ENOMEM;
	rte_tel_data_start_dict(x);
	for (unsigned i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "%s", name(i));
		for (char *p = k; *p; p++)
			if (*p == ' ')
				*p = '_';
		rte_tel_data_add_dict_u64(x, k, v[i]);
	}
	return rte_tel_data_add_dict_container(d, key, x, 0);
}

static int counters_out(struct rte_tel_data *d, const struct gw_counters *c)
{
	rte_tel_data_start_dict(d);
	for (size_t i = 0; i < NCTR; i++)
		rte_tel_data_add_dict_u64(d, ctr_fields[i].name,
					  *(const uint64_t *)((const char *)c + ctr_fields[i].off));
	if (add_dict(d, "drops", c->drops, GW_DROP__MAX, drop_name) ||
	    add_dict(d, "perr", c->perr, TG_PERR__MAX, perr_name) ||
	    add_dict(d, "ra", c->ra, TG_RA__MAX, ra_name) ||
	    add_dict(d, "err_sent", c->err_sent, TG_ERR__MAX, err_name))
		return -ENOMEM;
	return 0;
}

static int cmd_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct gw_counters *sum;
	int rc;

	(void)cmd;
	(void)params;
	sum = calloc(1, sizeof(*sum));
	if (!sum)
		return -ENOMEM;
	if (!tel_enter()) {
		free(sum);
		return -EAGAIN;
	}
	for (unsigned w = 0; w < g_sh->nworkers; w++)
		ctr_add(sum, &g_sh->workers[w]->c);
	tel_exit();
	rc = counters_out(d, sum);
	free(sum);
	return rc;
}

static int cmd_lcore(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct gw_counters *one;
	unsigned long w;
	char *end;
	int rc;

	(void)cmd;
	if (!params || !params[0])
		return -EINVAL;
	errno = 0;
	w = strtoul(params, &end, 10);
	if (errno || *end || params[0] == '-')
		return -EINVAL;
	one = calloc(1, sizeof(*one));
	if (!one)
		return -ENOMEM;
	if (!tel_enter()) {
		free(one);
		return -EAGAIN;
	}
	rc = w < g_sh->nworkers ? 0 : -EINVAL;
	if (!rc)
		ctr_add(one, &g_sh->workers[w]->c);
	tel_exit();
	if (!rc) {
		rc = counters_out(d, one);
		rte_tel_data_add_dict_int(d, "worker", (int)w);
	}
	free(one);
	return rc;
}

static int cmd_info(const char *cmd, const char *params, struct rte_tel_data *d)
{
	const struct gw_service_info *si;
	struct rte_tel_data *addrs;
	const uint8_t *g;
	char buf[64], ip[INET_ADDRSTRLEN];
	int up;

	(void)cmd;
	(void)params;
	addrs = rte_tel_data_alloc();
	if (!addrs)
		return -ENOMEM;
	if (!tel_enter()) {
		rte_tel_data_free(addrs);
		return -EAGAIN;
	}
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "name", g_sh->cfg->name);
	rte_tel_data_add_dict_string(d, "version", TG_VERSION);
	rte_tel_data_add_dict_int(d, "workers", (int)g_sh->nworkers);
	rte_tel_data_add_dict_int(d, "udp_port", g_sh->cfg->udp_port);
	rte_tel_data_add_dict_int(d, "mtu", (int)g_sh->cfg->mtu);
	rte_tel_data_add_dict_int(d, "frag_size", gw_frag_size(g_sh->cfg->mtu));
	rte_tel_data_add_dict_int(d, "sessions_per_worker", (int)g_sh->cfg->sessions);
	rte_tel_data_add_dict_int(d, "mem_mb_per_worker", (int)g_sh->cfg->mem_mb);
	rte_tel_data_add_dict_int(d, "io_threads", (int)g_sh->cfg->io_threads);
	rte_tel_data_add_dict_int(d, "store_dirs", (int)g_sh->cfg->nstore_dirs);
	rte_tel_data_start_array(addrs, RTE_TEL_STRING_VAL);
	for (unsigned i = 0; i < g_sh->cfg->naddrs; i++) {
		const struct gw_addr *a = &g_sh->cfg->addrs[i];

		inet_ntop(AF_INET, &a->ip, ip, sizeof(ip));
		snprintf(buf, sizeof(buf), "%u=%s/%u", a->port_id, ip, a->prefix);
		rte_tel_data_add_array_string(addrs, buf);
	}
	rte_tel_data_add_dict_container(d, "addresses", addrs, 0);
	si = gw_service_info(g_sh->svc);
	if (si) {
		g = si->provider_guid;
		snprintf(buf, sizeof(buf),
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11],
			 g[12], g[13], g[14], g[15]);
		rte_tel_data_add_dict_string(d, "provider_guid", buf);
	}
	/* The service keeps no accessor for it: a racy read of a bool the
	 * control thread writes is all a status line needs. */
	up = g_sh->svc ? __atomic_load_n(&g_sh->svc->link_up, __ATOMIC_RELAXED) : 0;
	rte_tel_data_add_dict_int(d, "control_link_up", up);
	tel_exit();
	return 0;
}

int gw_telemetry_register(const struct gw_shell *sh)
{
	int rc;

	g_sh = sh;
	__atomic_store_n(&g_live, 1, __ATOMIC_SEQ_CST);
	rc = rte_telemetry_register_cmd("/tidegate/stats", cmd_stats,
					"Counters summed over the workers. No parameters.");
	if (!rc)
		rc = rte_telemetry_register_cmd("/tidegate/lcore", cmd_lcore,
						"One worker's counters. Parameter: worker index.");
	if (!rc)
		rc = rte_telemetry_register_cmd("/tidegate/info", cmd_info,
						"Name, version, workers, addresses, provider, control link.");
	return rc;
}

void gw_telemetry_shutdown(void)
{
	__atomic_store_n(&g_live, 0, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&g_readers, __ATOMIC_SEQ_CST))
		rte_pause();
}
