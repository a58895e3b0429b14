/*
 * shell.h - private seam between the files of tidegate-gateway's DPDK shell:
 * config.c (options and the ini file), main.c (EAL, ports, lcores, signals),
 * net.c (the worker loop: Ethernet, ARP, ICMP echo, IPv4, UDP) and
 * telemetry.c (/tidegate/ commands). The protocol side never sees this
 * header; it knows the shell only through gw.h.
 */
#ifndef TG_GW_SHELL_H
#define TG_GW_SHELL_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_common.h>
#include <rte_ether.h>
#include <rte_mempool.h>

#include "gw.h"

#define GW_PROG "tidegate-gateway"
#define GW_ADDRS_MAX 16       /* --addr entries */
#define GW_PORTS_MAX 8        /* distinct DPDK ports in use */
#define GW_BURST 32
#define GW_TXB 64             /* frames buffered per port before a TX burst */
#define GW_NEIGH 256          /* per-worker neighbour table, power of two */

#ifndef TG_VERSION
#define TG_VERSION "unknown"
#endif

struct gw_addr {
	uint16_t port_id;
	uint8_t prefix;
	uint32_t ip;                 /* network order */
	uint32_t mask;               /* network order */
};

struct gw_config {
	struct gw_addr addrs[GW_ADDRS_MAX];
	unsigned naddrs;
	uint16_t udp_port;           /* host order */
	char control_sock[256];
	char name[64];
	char store_dirs[GW_STORE_DIRS_MAX][256];
	unsigned nstore_dirs;
	unsigned io_threads;
	unsigned mtu;
	unsigned mem_mb;
	unsigned sessions;
};

/* config.c: our options (argv after "--"). 0: run; 1: done, exit 0
 * (--help, --version); -1: error already reported, exit 1. */
int gw_config_parse(struct gw_config *cfg, int argc, char **argv);
/* The option part of --help, also EAL's usage hook. */
void gw_config_usage(void);
/* Largest DATA payload for an MTU: a multiple of 64 <= MTU-20-8-16-40. */
uint16_t gw_frag_size(unsigned mtu);

/* main.c: one line on stderr, "tidegate-gateway: LEVEL: ...". Not on the
 * packet path. */
void gw_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One DPDK port as every worker sees it (read-only once workers run). */
struct gw_port {
	uint16_t port_id;
	struct rte_ether_addr mac;
	unsigned naddrs;
	struct gw_addr addrs[GW_ADDRS_MAX];
	bool tx_cksum;               /* IPv4+UDP checksum offload enabled */
	bool rx_cksum;               /* RX checksum flags are meaningful */
	bool rss;
	bool started;
	uint16_t nq;
};

struct gw_txq {
	uint16_t n;
	struct rte_mbuf *m[GW_TXB];
};

struct gw_neigh {
	uint32_t ip;                 /* network order; 0: empty */
	uint16_t port;               /* port slot */
	bool valid;                  /* mac known */
	uint64_t asked_ms;           /* last ARP request we sent for it */
	struct rte_ether_addr mac;
};

/* One worker lcore's state: only its own lcore writes it (counters are read
 * racily by telemetry). */
struct gw_worker {
	struct gw_counters c __rte_cache_aligned;
	unsigned id;                 /* worker index = queue index on every port */
	unsigned lcore;
	struct rte_mempool *pool;
	struct gw_engine *eng;
	uint64_t now_ms;
	uint64_t tsc_per_ms;
	uint16_t ip_id;
	uint16_t udp_port_be;
	uint16_t max_payload;        /* largest UDP payload the MTU lets us send */
	unsigned nports;
	const struct gw_port *ports;
	struct gw_txq txq[GW_PORTS_MAX];
	struct gw_neigh neigh[GW_NEIGH];
	int drain_rc;                /* 0: drained; -ETIMEDOUT: gave up */
} __rte_cache_aligned;

/* The process-wide view telemetry reads. */
struct gw_shell {
	const struct gw_config *cfg;
	const struct gw_port *ports;
	unsigned nports;
	struct gw_worker *workers[GW_WORKERS_MAX];
	unsigned nworkers;
	struct gw_service *svc;
};

/* net.c */
extern volatile int gw_stop_flag;
void gw_net_worker_init(struct gw_worker *w, unsigned udp_port, unsigned mtu);
bool gw_net_tx(void *arg, const struct gw_peer *to, const void *payload, size_t len);
int gw_net_worker_main(void *arg);
/* Frees buffered frames that never went out (after the loop returned). */
void gw_net_worker_fini(struct gw_worker *w);

/* telemetry.c */
/* The commands read *sh until gw_telemetry_shutdown() has returned. */
int gw_telemetry_register(const struct gw_shell *sh);
/* After it returns no command touches the shell's state again. */
void gw_telemetry_shutdown(void);

#endif /* TG_GW_SHELL_H */
