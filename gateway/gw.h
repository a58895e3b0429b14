/*
 * gw.h - the seam inside tidegate-gateway between the DPDK shell (main.c,
 * net.c, telemetry.c: EAL, ports, queues, Ethernet/ARP/ICMP/IPv4/UDP) and
 * the protocol side (engine*.c: one per worker lcore; service*.c: the control
 * thread and the storage I/O threads).
 *
 * The shell owns every mbuf and every syscall-free loop; the engine sees only
 * UDP payloads and answers through a tx callback, so the protocol logic never
 * touches rte_ethdev and can be driven by a test without a port. The engine
 * and the service talk through rte_rings only (no locks on the packet path):
 * the packet path never waits for Redis nor for a disk.
 *
 * Threads:
 *   worker lcores : gw_engine_rx() per packet, gw_engine_poll() per loop turn
 *   main lcore    : gw_service's control thread (gateway link, leases,
 *                   org updates) and the shell's signal/telemetry duties
 *   I/O threads   : plain pthreads started by gw_service_start(): encode,
 *                   put (durable), exists, get
 */
#ifndef TG_GW_H
#define TG_GW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_proto.h"
#include "tg_reasm.h"

#define GW_WORKERS_MAX 16
#define GW_STORE_DIRS_MAX 20

/* Where a datagram came from / goes to. Addresses and ports in network order. */
struct gw_peer {
	uint32_t ip;       /* the client's IPv4 address */
	uint16_t port;     /* the client's UDP port */
	uint32_t local_ip; /* our address it was sent to (answers come from it) */
	uint16_t port_id;  /* DPDK port it arrived on */
};

/*
 * Send one UDP payload to `to`. Called by the engine from its own lcore only;
 * the shell copies the payload into an mbuf and queues it for the next TX
 * burst. Returns false if it could not (no mbuf, TX ring full): the engine
 * counts it and relies on the protocol's retransmission.
 */
typedef bool (*gw_tx_fn)(void *arg, const struct gw_peer *to, const void *payload, size_t len);

/* Why packets were dropped. The shell's reasons come first. */
enum gw_drop {
	GW_DROP_NOT_IPV4 = 0,   /* ethertype neither IPv4 nor ARP */
	GW_DROP_ARP,            /* ARP not for us or malformed */
	GW_DROP_IP_HDR,         /* bad IPv4 header, checksum, length */
	GW_DROP_IP_FRAG,        /* IPv4 fragments (the protocol sizes to the MTU) */
	GW_DROP_NOT_OURS,       /* not one of our addresses */
	GW_DROP_PROTO,          /* IP protocol other than UDP/ICMP */
	GW_DROP_ICMP,           /* ICMP other than echo request, or malformed */
	GW_DROP_UDP_HDR,        /* bad UDP length or checksum */
	GW_DROP_UDP_PORT,       /* not our UDP port */
	GW_DROP_TX_FULL,        /* an answer could not be sent */
	/* the engine's reasons */
	GW_DROP_CODEC,          /* tg_proto_parse() refused it (see perr[]) */
	GW_DROP_BAD_SESSION,    /* token unknown or expired */
	GW_DROP_BAD_COOKIE,     /* handshake cookie wrong or stale */
	GW_DROP_BAD_STATE,      /* valid packet not allowed now */
	GW_DROP_REASM,          /* reassembly refused it (see ra[]) */
	GW_DROP_RATE,           /* rate limit on errors / handshakes */
	GW_DROP_OVERLOAD,       /* job ring full: shed */
	GW_DROP__MAX
};

const char *gw_drop_name(enum gw_drop d);

/* One worker's counters. Written only by its lcore; read racily by the
 * telemetry thread (64-bit aligned stores, so a reader sees whole values). */
struct gw_counters {
	uint64_t rx_pkts, rx_bytes;      /* every frame the worker received */
	uint64_t tx_pkts, tx_bytes;      /* every frame it sent */
	uint64_t proto_rx_pkts;          /* tidegate datagrams accepted by the codec */
	uint64_t proto_rx_bytes;         /* their UDP payload bytes */
	uint64_t data_bytes;             /* DATA payload bytes accepted (new or dup) */
	uint64_t arp_replies, icmp_echo_replies;
	uint64_t chunks_stored;          /* acknowledged TG_OK */
	uint64_t chunks_dup;             /* acknowledged TG_ERR_DUP (dedup hits) */
	uint64_t chunks_failed;          /* acknowledged with an error */
	uint64_t offers, offered_ids, needed_ids;
	uint64_t registrations, sessions_opened, sessions_closed;
	uint64_t sessions_active;
	uint64_t lease_waits;            /* chunks that waited for a quota lease */
	uint64_t restores, chunks_served;
	uint64_t drops[GW_DROP__MAX];
	uint64_t perr[TG_PERR__MAX];     /* codec rejects by reason */
	uint64_t ra[TG_RA__MAX];         /* reassembly outcomes by reason */
	uint64_t err_sent[TG_ERR__MAX];  /* ERROR packets / error statuses sent by code */
};

/* ---- the service: one per process ---- */

struct gw_service_cfg {
	const char *control_sock;        /* tidegate-control's gateway link socket */
	const char *name;                /* this gateway's name on the link */
	const char *store_dirs[GW_STORE_DIRS_MAX];
	unsigned nstore_dirs;
	unsigned io_threads;             /* >= 1 */
	unsigned nworkers;               /* engines that will attach, 1..GW_WORKERS_MAX */
	uint32_t max_chunk;              /* <= TG_CHUNK_MAX */
	uint16_t frag_size;              /* largest DATA payload we grant (MTU-derived) */
	struct tg_reasm_cfg reasm;       /* per worker */
	unsigned sessions_per_worker;
	unsigned connect_timeout_ms;     /* first connect to tidegate-control; 0: 30 s */
};

struct gw_service;

/* Opens the store, connects to tidegate-control (retrying with backoff for
 * up to connect_timeout_ms), starts the I/O threads. NULL and *err on failure
 * (-ETIMEDOUT, -ECONNREFUSED, -ENOENT, -EACCES, ...), nothing left behind. */
struct gw_service *gw_service_create(const struct gw_service_cfg *cfg, int *err);
/* Runs the control thread's loop on the calling thread until
 * gw_service_request_stop(); returns 0 or -errno. */
int gw_service_run(struct gw_service *s);
void gw_service_request_stop(struct gw_service *s);
/* After every worker has returned: drains I/O, commits usage, releases
 * leases, joins threads, frees. */
void gw_service_destroy(struct gw_service *s);

/* ---- the engine: one per worker lcore ---- */

struct gw_engine_cfg {
	unsigned worker_id;              /* 0..nworkers-1 */
	struct gw_service *svc;
	gw_tx_fn tx;
	void *tx_arg;
	struct gw_counters *counters;    /* owned by the shell, zeroed */
};

struct gw_engine;

struct gw_engine *gw_engine_create(const struct gw_engine_cfg *cfg, int *err);
/* One UDP payload (the bytes after the UDP header) from `from`. */
void gw_engine_rx(struct gw_engine *e, const struct gw_peer *from, const uint8_t *payload,
		  size_t len, uint64_t now_ms);
/* Once per loop turn: completions from the service, timers, org updates. */
void gw_engine_poll(struct gw_engine *e, uint64_t now_ms);
/* Shutdown: refuse new handshakes (OVERLOADED); true once nothing is in
 * flight to storage, then CLOSE(OVERLOADED) has been sent to every session. */
void gw_engine_stop_admitting(struct gw_engine *e);
bool gw_engine_drained(struct gw_engine *e, uint64_t now_ms);
void gw_engine_destroy(struct gw_engine *e);

#endif /* TG_GW_H */
