/*
 * main.c - tidegate-gateway: EAL, our options, the ports, one worker per
 * worker lcore, the service on the main lcore, and a clean stop.
 *
 *   main lcore : options, EAL, ports, gw_service_create(), engines, then
 *                gw_service_run() (the control thread) until a signal
 *   worker w   : gw_net_worker_main(): queue w of every port (net.c)
 *
 * Start-up order matters for the tests and for operators: nothing listens
 * before the control link is up (gw_service_create connects), and "ready"
 * is logged only once the ports are started and every worker is polling, so
 * a datagram sent after "ready" is answered.
 *
 * Stop: SIGINT/SIGTERM sets gw_stop_flag and asks the service to stop; the
 * workers stop admitting and drain (in-flight chunks reach the store and are
 * acknowledged), the service then commits usage and releases its leases,
 * and only then is anything freed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "shell.h"

#define GW_RXD 1024
#define GW_TXD 1024
#define GW_POOL_CACHE 256
#define GW_SLOTS_PER_SESSION 64   /* chunk credits granted to a session */

static struct gw_service *g_svc;

void gw_log(const char *level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n = snprintf(line, sizeof(line), GW_PROG ": %s: ", level);

	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	n = (int)strlen(line);
	line[n++] = '\n';
	/* One write per line: lines of several threads never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

static void on_signal(int sig)
{
	struct gw_service *s;

	(void)sig;
	__atomic_store_n(&gw_stop_flag, 1, __ATOMIC_SEQ_CST);
	s = __atomic_load_n(&g_svc, __ATOMIC_SEQ_CST);
	if (s)
		gw_service_request_stop(s); /* async-signal-safe by contract */
}

static int signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL))
		return -errno;
	sa.sa_handler = SIG_IGN;
	return sigaction(SIGPIPE, &sa, NULL) ? -errno : 0;
}

static void eal_usage_hook(const char *prgname)
{
	(void)prgname;
	printf("\n");
	gw_config_usage();
}

static const char *addr_str(const struct gw_addr *a, char *buf, size_t n)
{
	char ip[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &a->ip, ip, sizeof(ip));
	snprintf(buf, n, "%u=%s/%u", a->port_id, ip, a->prefix);
	return buf;
}

/* ---- ports ---- */

static int ports_collect(const struct gw_config *cfg, struct gw_port *ports, unsigned *nports)
{
	char a[64];

	*nports = 0;
	for (unsigned i = 0; i < cfg->naddrs; i++) {
		const struct gw_addr *ad = &cfg->addrs[i];
		unsigned k;

		if (!rte_eth_dev_is_valid_port(ad->port_id)) {
			gw_log("error", "--addr %s: no DPDK port %u (%u available; add one with --vdev or -a)",
			       addr_str(ad, a, sizeof(a)), ad->port_id, rte_eth_dev_count_avail());
			return -1;
		}
		for (k = 0; k < *nports && ports[k].port_id != ad->port_id; k++)
			;
		if (k == *nports) {
			if (k == GW_PORTS_MAX) {
				gw_log("error", "--addr %s: at most %d ports", addr_str(ad, a, sizeof(a)),
				       GW_PORTS_MAX);
				return -1;
			}
			memset(&ports[k], 0, sizeof(ports[k]));
			ports[k].port_id = ad->port_id;
			(*nports)++;
		}
		ports[k].addrs[ports[k].naddrs++] = *ad;
	}
	return 0;
}

static int port_setup(struct gw_port *p, unsigned nq, unsigned mtu, struct rte_mempool **qpool)
{
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	struct rte_eth_rxconf rxc;
	struct rte_eth_txconf txc;
	uint16_t nrxd = GW_RXD, ntxd = GW_TXD;
	const uint64_t rx_ck = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
	const uint64_t tx_ck = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
	char name[RTE_ETH_NAME_MAX_LEN] = "?";
	uint32_t over;
	int rc;

	rte_eth_dev_get_name_by_port(p->port_id, name);
	rc = rte_eth_dev_info_get(p->port_id, &info);
	if (rc) {
		gw_log("error", "port %u (%s): no device info: %s", p->port_id, name, strerror(-rc));
		return -1;
	}
	if (nq > info.max_rx_queues || nq > info.max_tx_queues) {
		gw_log("error", "port %u (%s): %u RX/%u TX queues, but %u workers need one pair each "
		       "(give it more queues, e.g. qpairs=%u for net_af_packet, or fewer lcores with -l)",
		       p->port_id, name, info.max_rx_queues, info.max_tx_queues, nq, nq);
		return -1;
	}
	/* The frame bound the way ethdev computes it, so the error names
	 * --mtu rather than coming back from configure() as EINVAL. */
	over = info.max_mtu != UINT16_MAX && info.max_rx_pktlen > info.max_mtu ?
	       info.max_rx_pktlen - info.max_mtu : RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN;
	if (mtu > info.max_mtu || mtu < info.min_mtu || mtu + over > info.max_rx_pktlen) {
		unsigned hi = info.max_rx_pktlen > over ? info.max_rx_pktlen - over : 0;

		gw_log("error", "--mtu %u: port %u (%s) takes %u..%u", mtu, p->port_id, name,
		       info.min_mtu, hi < info.max_mtu ? hi : info.max_mtu);
		return -1;
	}
	memset(&conf, 0, sizeof(conf));
	conf.rxmode.mtu = mtu;
	p->nq = (uint16_t)nq;
	if (nq > 1) {
		uint64_t hf = info.flow_type_rss_offloads &
			      (RTE_ETH_RSS_NONFRAG_IPV4_UDP | RTE_ETH_RSS_IPV4);

		if (hf & RTE_ETH_RSS_NONFRAG_IPV4_UDP) {
			conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
			conf.rx_adv_conf.rss_conf.rss_hf = hf;
			p->rss = true;
		} else {
			gw_log("warning", "port %u (%s): no RSS on IPv4 UDP; the PMD spreads %u queues its own way",
			       p->port_id, name, nq);
		}
	}
	if ((info.rx_offload_capa & rx_ck) == rx_ck) {
		conf.rxmode.offloads |= rx_ck;
		p->rx_cksum = true;
	}
	if ((info.tx_offload_capa & tx_ck) == tx_ck) {
		conf.txmode.offloads |= tx_ck;
		p->tx_cksum = true;
	}
	/* Each TX queue only ever sees mbufs of its worker's pool, refcnt 1. */
	if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE)
		conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;

	rc = rte_eth_dev_configure(p->port_id, (uint16_t)nq, (uint16_t)nq, &conf);
	if (rc) {
		gw_log("error", "port %u (%s): configure: %s", p->port_id, name, strerror(-rc));
		return -1;
	}
	/* configure() only records the MTU for most PMDs; set_mtu() applies
	 * it (net_af_packet sets the kernel interface's, and refuses one its
	 * frames cannot hold: better a clear start-up error than jumbo frames
	 * dropped silently). */
	rc = rte_eth_dev_set_mtu(p->port_id, (uint16_t)mtu);
	if (rc == -ENOTSUP) {
		gw_log("warning", "port %u (%s): cannot set the MTU; make sure it is %u", p->port_id,
		       name, mtu);
	} else if (rc) {
		gw_log("error", "--mtu %u: port %u (%s) refuses it: %s%s", mtu, p->port_id, name,
		       strerror(-rc), strncmp(name, "net_af_packet", 13) ? "" :
		       " (net_af_packet: give it a bigger framesz=)");
		return -1;
	}
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(p->port_id, &nrxd, &ntxd);
	if (rc) {
		gw_log("error", "port %u (%s): descriptors: %s", p->port_id, name, strerror(-rc));
		return -1;
	}
	rxc = info.default_rxconf;
	rxc.offloads = conf.rxmode.offloads;
	txc = info.default_txconf;
	txc.offloads = conf.txmode.offloads;
	for (unsigned q = 0; q < nq; q++) {
		int sock = qpool[q]->socket_id;

		rc = rte_eth_rx_queue_setup(p->port_id, (uint16_t)q, nrxd, (unsigned)sock, &rxc, qpool[q]);
		if (!rc)
			rc = rte_eth_tx_queue_setup(p->port_id, (uint16_t)q, ntxd, (unsigned)sock, &txc);
		if (rc) {
			gw_log("error", "port %u (%s): queue %u: %s", p->port_id, name, q, strerror(-rc));
			return -1;
		}
	}
	rc = rte_eth_macaddr_get(p->port_id, &p->mac);
	if (rc) {
		gw_log("error", "port %u (%s): no MAC address: %s", p->port_id, name, strerror(-rc));
		return -1;
	}
	return 0;
}

static int port_start(struct gw_port *p)
{
	char name[RTE_ETH_NAME_MAX_LEN] = "?", mac[RTE_ETHER_ADDR_FMT_SIZE];
	struct rte_eth_link link;
	int rc;

	rte_eth_dev_get_name_by_port(p->port_id, name);
	rc = rte_eth_dev_start(p->port_id);
	if (rc) {
		gw_log("error", "port %u (%s): start: %s", p->port_id, name, strerror(-rc));
		return -1;
	}
	p->started = true;
	/* Frames for other hosts are not ours to look at; a PMD that cannot
	 * filter (-ENOTSUP) is filtered in software (net.c). */
	rte_eth_promiscuous_disable(p->port_id);
	rte_eth_allmulticast_disable(p->port_id);
	memset(&link, 0, sizeof(link));
	rte_eth_link_get_nowait(p->port_id, &link);
	rte_ether_format_addr(mac, sizeof(mac), &p->mac);
	gw_log("info", "port %u (%s): mac %s, %u queue pair%s%s, checksums rx %s tx %s, link %s",
	       p->port_id, name, mac, p->nq, p->nq > 1 ? "s" : "", p->rss ? " (RSS)" : "",
	       p->rx_cksum ? "offloaded" : "software", p->tx_cksum ? "offloaded" : "software",
	       link.link_status ? "up" : "down");
	return 0;
}

/* One pool per socket with a worker, each big enough for its workers' queues. */
static int pools_create(struct gw_worker **w, unsigned nworkers, unsigned nports, unsigned mtu,
			struct rte_mempool **pools)
{
	unsigned per_socket[RTE_MAX_NUMA_NODES] = { 0 };
	uint32_t room = RTE_MBUF_DEFAULT_DATAROOM;
	char name[RTE_MEMPOOL_NAMESIZE];

	/* A whole frame (MTU + Ethernet + VLAN + CRC) fits one mbuf. */
	if (mtu + RTE_ETHER_HDR_LEN + 8 > room)
		room = mtu + RTE_ETHER_HDR_LEN + 8;
	for (unsigned i = 0; i < nworkers; i++) {
		unsigned s = rte_lcore_to_socket_id(w[i]->lcore);

		if (s >= RTE_MAX_NUMA_NODES)
			s = 0;
		per_socket[s]++;
	}
	for (unsigned s = 0; s < RTE_MAX_NUMA_NODES; s++) {
		unsigned n;

		if (!per_socket[s])
			continue;
		n = per_socket[s] * (nports * (GW_RXD + GW_TXD + GW_TXB) + 2 * GW_BURST +
				     2 * GW_POOL_CACHE) + 1024;
		snprintf(name, sizeof(name), "gw_mbuf_s%u", s);
		pools[s] = rte_pktmbuf_pool_create(name, n, GW_POOL_CACHE, 0,
						   (uint16_t)(room + RTE_PKTMBUF_HEADROOM), (int)s);
		if (!pools[s]) {
			gw_log("error", "mbuf pool of %u on socket %u: %s (more memory: -m, or hugepages)",
			       n, s, rte_strerror(rte_errno));
			return -1;
		}
	}
	for (unsigned i = 0; i < nworkers; i++) {
		unsigned s = rte_lcore_to_socket_id(w[i]->lcore);

		w[i]->pool = pools[s < RTE_MAX_NUMA_NODES ? s : 0];
	}
	return 0;
}

/* ---- the service's configuration from ours ---- */

static void service_cfg(const struct gw_config *cfg, unsigned nworkers, struct gw_service_cfg *sc)
{
	size_t total = (size_t)cfg->mem_mb << 20, per;

	memset(sc, 0, sizeof(*sc));
	sc->control_sock = cfg->control_sock;
	sc->name = cfg->name;
	for (unsigned i = 0; i < cfg->nstore_dirs; i++)
		sc->store_dirs[i] = cfg->store_dirs[i];
	sc->nstore_dirs = cfg->nstore_dirs;
	sc->io_threads = cfg->io_threads;
	sc->nworkers = nworkers;
	sc->max_chunk = TG_CHUNK_MAX;
	sc->frag_size = gw_frag_size(cfg->mtu);
	/* One session may hold an eighth of its worker's memory (8..64 MiB):
	 * several fast sessions share a worker, a lone one still fills a
	 * long pipe. A session can always hold one largest chunk. */
	per = total / 8;
	if (per < (8u << 20))
		per = 8u << 20;
	if (per > (64u << 20))
		per = 64u << 20;
	if (per > total)
		per = total;
	sc->reasm.mem_total = total;
	sc->reasm.mem_per_session = per;
	sc->reasm.slots_per_session = GW_SLOTS_PER_SESSION;
	sc->reasm.max_chunk = TG_CHUNK_MAX;
	sc->sessions_per_worker = cfg->sessions;
}

/* ---- main ---- */

static bool has_check_config(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--check-config"))
			return true;
	return false;
}

int main(int argc, char **argv)
{
	static struct gw_config cfg;
	struct gw_shell sh = { .cfg = &cfg };
	struct gw_port ports[GW_PORTS_MAX];
	struct rte_mempool *pools[RTE_MAX_NUMA_NODES] = { NULL };
	struct gw_worker *workers[GW_WORKERS_MAX] = { NULL };
	struct gw_service_cfg sc;
	struct gw_service *svc = NULL;
	char *ours[128];
	int nours = 0, dd = -1, eal_argc, rc, ret = 1;
	unsigned nworkers = 0, nports = 0, lcore;
	bool eal = false, tel = false;
	char line[512];
	size_t off;

	/* Our options are after "--"; without one, only our -h/--help and
	 * --version are ours (so they work without EAL). */
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			dd = i;
			break;
		}
	ours[nours++] = argv[0];
	if (dd >= 0) {
		if (argc - dd > (int)(sizeof(ours) / sizeof(ours[0])) - 1) {
			gw_log("error", "too many options");
			return 1;
		}
		for (int i = dd + 1; i < argc; i++)
			ours[nours++] = argv[i];
		eal_argc = dd;
	} else if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
				 !strcmp(argv[1], "--version"))) {
		ours[nours++] = argv[1];
		eal_argc = 1;
	} else if (has_check_config(argc, argv)) {
		/* --check-config never starts EAL: every argument is ours. */
		if (argc > (int)(sizeof(ours) / sizeof(ours[0])) - 1) {
			gw_log("error", "too many options");
			return 1;
		}
		for (int i = 1; i < argc; i++)
			ours[nours++] = argv[i];
		eal_argc = 1;
	} else {
		eal_argc = argc;
	}
	ours[nours] = NULL;
	rc = gw_config_parse(&cfg, nours, ours);
	if (rc)
		return rc > 0 ? 0 : 1;
	if (signals_install()) {
		gw_log("error", "signal handlers: %s", strerror(errno));
		return 1;
	}

	rte_set_application_usage_hook(eal_usage_hook);
	optind = 0; /* GNU getopt: a fresh start for EAL's parser */
	rc = rte_eal_init(eal_argc, argv);
	if (rc < 0) {
		gw_log("error", "EAL: %s (check the EAL options before \"--\")", rte_strerror(rte_errno));
		return 1;
	}
	eal = true;

	RTE_LCORE_FOREACH_WORKER(lcore) {
		if (nworkers == GW_WORKERS_MAX) {
			gw_log("error", "at most %d worker lcores (-l)", GW_WORKERS_MAX);
			goto out;
		}
		workers[nworkers] = rte_zmalloc_socket("gw_worker", sizeof(struct gw_worker),
						       RTE_CACHE_LINE_SIZE,
						       (int)rte_lcore_to_socket_id(lcore));
		if (!workers[nworkers]) {
			gw_log("error", "worker state: out of memory");
			goto out;
		}
		workers[nworkers]->id = nworkers;
		workers[nworkers]->lcore = lcore;
		nworkers++;
	}
	if (!nworkers) {
		gw_log("error", "no worker lcore: give EAL at least two (e.g. -l 0,1)");
		goto out;
	}
	if (ports_collect(&cfg, ports, &nports))
		goto out;
	if (pools_create(workers, nworkers, nports, cfg.mtu, pools))
		goto out;
	for (unsigned i = 0; i < nports; i++) {
		struct rte_mempool *qpool[GW_WORKERS_MAX];

		for (unsigned q = 0; q < nworkers; q++)
			qpool[q] = workers[q]->pool;
		if (port_setup(&ports[i], nworkers, cfg.mtu, qpool))
			goto out;
	}

	service_cfg(&cfg, nworkers, &sc);
	svc = gw_service_create(&sc, &rc);
	if (!svc) {
		gw_log("error", "service (--control-sock %s, --store-dir ...): %s", cfg.control_sock,
		       strerror(-rc));
		goto out;
	}
	__atomic_store_n(&g_svc, svc, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&gw_stop_flag, __ATOMIC_SEQ_CST))
		gw_service_request_stop(svc); /* a signal came while we connected */

	for (unsigned i = 0; i < nworkers; i++) {
		struct gw_worker *w = workers[i];
		struct gw_engine_cfg ec = {
			.worker_id = i,
			.svc = svc,
			.tx = gw_net_tx,
			.tx_arg = w,
			.counters = &w->c,
		};

		w->ports = ports;
		w->nports = nports;
		gw_net_worker_init(w, cfg.udp_port, cfg.mtu);
		w->eng = gw_engine_create(&ec, &rc);
		if (!w->eng) {
			gw_log("error", "engine of worker %u: %s", i, strerror(-rc));
			goto out;
		}
	}
	for (unsigned i = 0; i < nports; i++)
		if (port_start(&ports[i]))
			goto out;

	sh.ports = ports;
	sh.nports = nports;
	sh.nworkers = nworkers;
	sh.svc = svc;
	for (unsigned i = 0; i < nworkers; i++)
		sh.workers[i] = workers[i];
	if (gw_telemetry_register(&sh))
		gw_log("warning", "telemetry commands not registered");
	else
		tel = true;

	for (unsigned i = 0; i < nworkers; i++) {
		rc = rte_eal_remote_launch(gw_net_worker_main, workers[i], workers[i]->lcore);
		if (rc) {
			gw_log("error", "launch worker %u on lcore %u: %s", i, workers[i]->lcore,
			       strerror(-rc));
			__atomic_store_n(&gw_stop_flag, 1, __ATOMIC_SEQ_CST);
			rte_eal_mp_wait_lcore();
			goto out;
		}
	}

	off = (size_t)snprintf(line, sizeof(line), "ready: ports");
	for (unsigned i = 0; i < nports && off < sizeof(line); i++) {
		char name[RTE_ETH_NAME_MAX_LEN] = "?";

		rte_eth_dev_get_name_by_port(ports[i].port_id, name);
		off += (size_t)snprintf(line + off, sizeof(line) - off, "%s %u (%s)", i ? "," : "",
					ports[i].port_id, name);
	}
	if (off < sizeof(line))
		off += (size_t)snprintf(line + off, sizeof(line) - off, ", udp port %u, addresses",
					cfg.udp_port);
	for (unsigned i = 0; i < cfg.naddrs && off < sizeof(line); i++) {
		char a[64];

		off += (size_t)snprintf(line + off, sizeof(line) - off, " %s",
					addr_str(&cfg.addrs[i], a, sizeof(a)));
	}
	if (off < sizeof(line))
		off += (size_t)snprintf(line + off, sizeof(line) - off, ", %u worker%s (lcores",
					nworkers, nworkers > 1 ? "s" : "");
	for (unsigned i = 0; i < nworkers && off < sizeof(line); i++)
		off += (size_t)snprintf(line + off, sizeof(line) - off, " %u", workers[i]->lcore);
	if (off < sizeof(line))
		snprintf(line + off, sizeof(line) - off, "), name %s, control %s", cfg.name,
			 cfg.control_sock);
	if (!__atomic_load_n(&gw_stop_flag, __ATOMIC_SEQ_CST))
		gw_log("info", "%s", line);

	rc = gw_service_run(svc);
	__atomic_store_n(&gw_stop_flag, 1, __ATOMIC_SEQ_CST);
	if (rc)
		gw_log("error", "service: %s", strerror(-rc));
	else
		gw_log("info", "stopping: draining in-flight work");
	rte_eal_mp_wait_lcore();
	ret = rc ? 1 : 0;
	for (unsigned i = 0; i < nworkers; i++)
		if (workers[i]->drain_rc)
			gw_log("warning", "worker %u: gave up waiting for storage at stop", i);

out:
	__atomic_store_n(&gw_stop_flag, 1, __ATOMIC_SEQ_CST);
	if (tel)
		gw_telemetry_shutdown();
	/* Workers have returned (or never ran): the service may finish the
	 * I/O they queued, then the engines whose jobs those were go. */
	__atomic_store_n(&g_svc, NULL, __ATOMIC_SEQ_CST);
	gw_service_destroy(svc);
	for (unsigned i = 0; i < nworkers; i++) {
		gw_engine_destroy(workers[i]->eng);
		gw_net_worker_fini(workers[i]);
	}
	for (unsigned i = 0; i < nports; i++) {
		if (ports[i].started)
			rte_eth_dev_stop(ports[i].port_id);
		rte_eth_dev_close(ports[i].port_id);
	}
	for (unsigned i = 0; i < nworkers; i++)
		rte_free(workers[i]);
	for (unsigned s = 0; s < RTE_MAX_NUMA_NODES; s++)
		rte_mempool_free(pools[s]);
	if (eal)
		rte_eal_cleanup();
	if (!ret)
		gw_log("info", "stopped");
	return ret;
}
