/*
 * net.c - the worker lcore's run-to-completion loop: RX bursts from its own
 * queue of every port, Ethernet, ARP, ICMP echo, IPv4 and UDP in software,
 * the UDP payloads to the engine (gw_engine_rx), the engine's answers built
 * into frames (gw_net_tx) and sent in one TX burst per port per loop turn.
 *
 * Everything here is per worker: no locks, no syscalls, no logging and no
 * allocation but mbufs on the packet path. Every frame that is not ours or
 * not well formed is dropped and counted by reason (enum gw_drop); the
 * header checks are the ones a host stack makes, because the engine trusts
 * that what reaches it came from the peer the IPv4/UDP headers name.
 *
 * Neighbours: a small direct-mapped table per worker, filled from ARP and
 * from the sources of accepted IPv4 packets. With RSS a worker may never see
 * a client's ARP (it lands on queue 0), but it always sees that client's
 * datagrams first, so answering costs one table probe and no ARP round trip.
 * A source off our subnet is learned too, with the MAC it came from (its
 * router): we have no routes, and replying to the frame's sender is what
 * makes a routed client work.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_udp.h>

#include "shell.h"

#define GW_DRAIN_MS 30000u    /* longest wait for in-flight storage at stop */
#define GW_ARP_RETRY_MS 1000u /* one ARP request per unknown neighbour per second */

volatile int gw_stop_flag;

static const char *const drop_names[GW_DROP__MAX] = {
	[GW_DROP_NOT_IPV4] = "not_ipv4",
	[GW_DROP_ARP] = "arp",
	[GW_DROP_IP_HDR] = "ip_hdr",
	[GW_DROP_IP_FRAG] = "ip_frag",
	[GW_DROP_NOT_OURS] = "not_ours",
	[GW_DROP_PROTO] = "proto",
	[GW_DROP_ICMP] = "icmp",
	[GW_DROP_UDP_HDR] = "udp_hdr",
	[GW_DROP_UDP_PORT] = "udp_port",
	[GW_DROP_TX_FULL] = "tx_full",
	[GW_DROP_CODEC] = "codec",
	[GW_DROP_BAD_SESSION] = "bad_session",
	[GW_DROP_BAD_COOKIE] = "bad_cookie",
	[GW_DROP_BAD_STATE] = "bad_state",
	[GW_DROP_REASM] = "reasm",
	[GW_DROP_RATE] = "rate",
	[GW_DROP_OVERLOAD] = "overload",
};

const char *gw_drop_name(enum gw_drop d)
{
	if ((unsigned)d >= GW_DROP__MAX || !drop_names[d])
		return "unknown";
	return drop_names[d];
}

void gw_net_worker_init(struct gw_worker *w, unsigned udp_port, unsigned mtu)
{
	w->tsc_per_ms = rte_get_tsc_hz() / 1000;
	if (!w->tsc_per_ms)
		w->tsc_per_ms = 1;
	w->udp_port_be = rte_cpu_to_be_16((uint16_t)udp_port);
	w->max_payload = (uint16_t)(mtu - sizeof(struct rte_ipv4_hdr) - sizeof(struct rte_udp_hdr));
	w->ip_id = (uint16_t)(rte_rdtsc() ^ (w->id << 12));
}

/* ---- addresses and neighbours ---- */

static inline int port_slot(const struct gw_worker *w, uint16_t port_id)
{
	for (unsigned i = 0; i < w->nports; i++)
		if (w->ports[i].port_id == port_id)
			return (int)i;
	return -1;
}

static inline const struct gw_addr *our_addr(const struct gw_port *p, uint32_t ip)
{
	for (unsigned i = 0; i < p->naddrs; i++)
		if (p->addrs[i].ip == ip)
			return &p->addrs[i];
	return NULL;
}

static inline bool on_subnet(const struct gw_port *p, uint32_t ip)
{
	for (unsigned i = 0; i < p->naddrs; i++)
		if ((ip & p->addrs[i].mask) == (p->addrs[i].ip & p->addrs[i].mask))
			return true;
	return false;
}

/* A source we may answer: not 0/8, loopback, multicast, limited broadcast. */
static inline bool unicast_src(uint32_t ip_be)
{
	uint32_t h = rte_be_to_cpu_32(ip_be);

	return (h >> 24) != 0 && (h >> 24) != 127 && (h >> 28) < 14;
}

static inline struct gw_neigh *neigh_slot(struct gw_worker *w, unsigned slot, uint32_t ip)
{
	uint32_t h = (rte_be_to_cpu_32(ip) ^ (slot << 24)) * 0x9e3779b1u;

	return &w->neigh[h >> (32 - 8) & (GW_NEIGH - 1)];
}

static inline void neigh_learn(struct gw_worker *w, unsigned slot, uint32_t ip,
			       const struct rte_ether_addr *mac)
{
	struct gw_neigh *n = neigh_slot(w, slot, ip);

	if (n->valid && n->ip == ip && n->port == slot && rte_is_same_ether_addr(&n->mac, mac))
		return;
	n->ip = ip;
	n->port = (uint16_t)slot;
	n->valid = true;
	n->asked_ms = 0;
	rte_ether_addr_copy(mac, &n->mac);
}

/* ---- transmit ---- */

static void txq_flush(struct gw_worker *w, unsigned slot)
{
	struct gw_txq *q = &w->txq[slot];
	uint64_t bytes = 0;
	uint16_t sent;

	if (!q->n)
		return;
	for (uint16_t i = 0; i < q->n; i++)
		bytes += rte_pktmbuf_pkt_len(q->m[i]);
	sent = rte_eth_tx_burst(w->ports[slot].port_id, (uint16_t)w->id, q->m, q->n);
	/* What the PMD refused is still ours: count it out and free it. */
	for (uint16_t i = sent; i < q->n; i++) {
		bytes -= rte_pktmbuf_pkt_len(q->m[i]);
		rte_pktmbuf_free(q->m[i]);
	}
	w->c.tx_pkts += sent;
	w->c.tx_bytes += bytes;
	w->c.drops[GW_DROP_TX_FULL] += (uint64_t)(q->n - sent);
	q->n = 0;
}

static inline void txq_push(struct gw_worker *w, unsigned slot, struct rte_mbuf *m)
{
	struct gw_txq *q = &w->txq[slot];

	if (q->n == GW_TXB)
		txq_flush(w, slot);
	q->m[q->n++] = m;
}

static void arp_fill(struct rte_arp_hdr *a, uint16_t op, const struct rte_ether_addr *sha,
		     uint32_t sip, const struct rte_ether_addr *tha, uint32_t tip)
{
	a->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
	a->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	a->arp_hlen = RTE_ETHER_ADDR_LEN;
	a->arp_plen = sizeof(uint32_t);
	a->arp_opcode = rte_cpu_to_be_16(op);
	rte_ether_addr_copy(sha, &a->arp_data.arp_sha);
	a->arp_data.arp_sip = sip;
	rte_ether_addr_copy(tha, &a->arp_data.arp_tha);
	a->arp_data.arp_tip = tip;
}

/* Who has `ip`? Tell `local`. At most once a second per neighbour slot. */
static void neigh_ask(struct gw_worker *w, unsigned slot, uint32_t ip, uint32_t local)
{
	const struct gw_port *p = &w->ports[slot];
	struct gw_neigh *n = neigh_slot(w, slot, ip);
	static const struct rte_ether_addr zero, bcast = { .addr_bytes = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff } };
	struct rte_ether_hdr *eh;
	struct rte_mbuf *m;

	if (!on_subnet(p, ip) || !our_addr(p, local))
		return;
	if (n->ip == ip && n->port == slot && n->asked_ms &&
	    w->now_ms - n->asked_ms < GW_ARP_RETRY_MS)
		return;
	n->ip = ip;
	n->port = (uint16_t)slot;
	n->valid = false;
	n->asked_ms = w->now_ms ? w->now_ms : 1;
	m = rte_pktmbuf_alloc(w->pool);
	if (!m)
		return;
	eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m, sizeof(*eh) + sizeof(struct rte_arp_hdr));
	if (!eh) {
		rte_pktmbuf_free(m);
		return;
	}
	rte_ether_addr_copy(&bcast, &eh->dst_addr);
	rte_ether_addr_copy(&p->mac, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	arp_fill((struct rte_arp_hdr *)(eh + 1), RTE_ARP_OP_REQUEST, &p->mac, local, &zero, ip);
	txq_push(w, slot, m);
}

/* gw_tx_fn: the engine's answer as Ethernet/IPv4/UDP from its local address. */
bool gw_net_tx(void *arg, const struct gw_peer *to, const void *payload, size_t len)
{
	struct gw_worker *w = arg;
	const struct gw_port *p;
	const struct gw_neigh *n;
	struct rte_ether_hdr *eh;
	struct rte_ipv4_hdr *ip;
	struct rte_udp_hdr *u;
	struct rte_mbuf *m;
	int slot = port_slot(w, to->port_id);

	if (slot < 0 || len > w->max_payload)
		return false;
	p = &w->ports[slot];
	/* Never a source address that is not ours on that port. */
	if (!our_addr(p, to->local_ip))
		return false;
	n = neigh_slot(w, (unsigned)slot, to->ip);
	if (!n->valid || n->ip != to->ip || n->port != slot) {
		neigh_ask(w, (unsigned)slot, to->ip, to->local_ip);
		return false;
	}
	m = rte_pktmbuf_alloc(w->pool);
	if (!m)
		return false;
	eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m, (uint16_t)(sizeof(*eh) + sizeof(*ip) +
								     sizeof(*u) + len));
	if (!eh) {
		rte_pktmbuf_free(m);
		return false;
	}
	ip = (struct rte_ipv4_hdr *)(eh + 1);
	u = (struct rte_udp_hdr *)(ip + 1);
	rte_ether_addr_copy(&n->mac, &eh->dst_addr);
	rte_ether_addr_copy(&p->mac, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->type_of_service = 0;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + sizeof(*u) + len));
	ip->packet_id = rte_cpu_to_be_16(w->ip_id++);
	/* The protocol sizes every datagram to the MTU: never fragment. */
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->hdr_checksum = 0;
	ip->src_addr = to->local_ip;
	ip->dst_addr = to->ip;
	u->src_port = w->udp_port_be;
	u->dst_port = to->port;
	u->dgram_len = rte_cpu_to_be_16((uint16_t)(sizeof(*u) + len));
	u->dgram_cksum = 0;
	memcpy(u + 1, payload, len);
	if (p->tx_cksum) {
		m->l2_len = sizeof(*eh);
		m->l3_len = sizeof(*ip);
		m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_CKSUM;
		u->dgram_cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
	} else {
		ip->hdr_checksum = rte_ipv4_cksum(ip);
		u->dgram_cksum = rte_ipv4_udptcp_cksum(ip, u);
	}
	txq_push(w, (unsigned)slot, m);
	return true;
}

/* ---- receive ---- */

/* Turns a received frame around in place: the reply goes to its sender. */
static inline void eth_reply(const struct gw_port *p, struct rte_ether_hdr *eh)
{
	rte_ether_addr_copy(&eh->src_addr, &eh->dst_addr);
	rte_ether_addr_copy(&p->mac, &eh->src_addr);
}

/* Returns true if m was consumed (queued for TX). */
static bool rx_arp(struct gw_worker *w, unsigned slot, struct rte_mbuf *m, struct rte_ether_hdr *eh,
		   uint32_t len)
{
	const struct gw_port *p = &w->ports[slot];
	struct rte_arp_hdr *a = (struct rte_arp_hdr *)(eh + 1);
	struct rte_ether_addr sha;
	uint32_t sip, tip;
	uint16_t op;

	if (len < sizeof(*eh) + sizeof(*a) ||
	    a->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
	    a->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
	    a->arp_hlen != RTE_ETHER_ADDR_LEN || a->arp_plen != sizeof(uint32_t) ||
	    !rte_is_unicast_ether_addr(&a->arp_data.arp_sha))
		goto drop;
	sip = a->arp_data.arp_sip;
	tip = a->arp_data.arp_tip;
	op = rte_be_to_cpu_16(a->arp_opcode);
	if (!our_addr(p, tip) || (op != RTE_ARP_OP_REQUEST && op != RTE_ARP_OP_REPLY))
		goto drop;
	rte_ether_addr_copy(&a->arp_data.arp_sha, &sha);
	/* sip 0 is a probe (RFC 5227): answer it, learn nothing. */
	if (sip && on_subnet(p, sip) && unicast_src(sip))
		neigh_learn(w, slot, sip, &sha);
	if (op == RTE_ARP_OP_REPLY)
		return false;

	eth_reply(p, eh);
	arp_fill(a, RTE_ARP_OP_REPLY, &p->mac, tip, &sha, sip);
	rte_pktmbuf_data_len(m) = sizeof(*eh) + sizeof(*a);
	rte_pktmbuf_pkt_len(m) = sizeof(*eh) + sizeof(*a);
	m->ol_flags = 0;
	w->c.arp_replies++;
	txq_push(w, slot, m);
	return true;
drop:
	w->c.drops[GW_DROP_ARP]++;
	return false;
}

static bool rx_icmp(struct gw_worker *w, unsigned slot, struct rte_mbuf *m, struct rte_ether_hdr *eh,
		    struct rte_ipv4_hdr *ip, uint16_t ihl, uint16_t tot)
{
	const struct gw_port *p = &w->ports[slot];
	struct rte_icmp_hdr *ic = (struct rte_icmp_hdr *)((uint8_t *)ip + ihl);
	uint16_t ilen = (uint16_t)(tot - ihl);
	uint32_t us = ip->dst_addr;

	if (ilen < sizeof(*ic) || ic->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || ic->icmp_code != 0 ||
	    rte_raw_cksum(ic, ilen) != 0xffff) {
		w->c.drops[GW_DROP_ICMP]++;
		return false;
	}
	neigh_learn(w, slot, ip->src_addr, &eh->src_addr);
	eth_reply(p, eh);
	ip->dst_addr = ip->src_addr;
	ip->src_addr = us;
	ip->time_to_live = 64;
	ip->fragment_offset = 0;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	ic->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	ic->icmp_cksum = 0;
	ic->icmp_cksum = (uint16_t)~rte_raw_cksum(ic, ilen);
	/* Ethernet padding of the request is not part of the answer. */
	rte_pktmbuf_data_len(m) = (uint16_t)(sizeof(*eh) + tot);
	rte_pktmbuf_pkt_len(m) = sizeof(*eh) + tot;
	m->ol_flags = 0;
	w->c.icmp_echo_replies++;
	txq_push(w, slot, m);
	return true;
}

static inline bool udp_cksum_ok(const struct rte_ipv4_hdr *ip, const struct rte_udp_hdr *u,
				uint16_t ulen)
{
	struct {
		uint32_t src, dst;
		uint8_t zero, proto;
		uint16_t len;
	} __attribute__((packed)) ph = { ip->src_addr, ip->dst_addr, 0, IPPROTO_UDP, u->dgram_len };
	uint32_t sum = __rte_raw_cksum(&ph, sizeof(ph), 0);

	sum = __rte_raw_cksum(u, ulen, sum);
	return __rte_raw_cksum_reduce(sum) == 0xffff;
}

static void rx_udp(struct gw_worker *w, unsigned slot, struct rte_mbuf *m, struct rte_ether_hdr *eh,
		   struct rte_ipv4_hdr *ip, uint16_t ihl, uint16_t tot)
{
	const struct gw_port *p = &w->ports[slot];
	struct rte_udp_hdr *u = (struct rte_udp_hdr *)((uint8_t *)ip + ihl);
	uint16_t l4 = (uint16_t)(tot - ihl), ulen;
	struct gw_peer from;

	if (l4 < sizeof(*u))
		goto bad;
	ulen = rte_be_to_cpu_16(u->dgram_len);
	if (ulen < sizeof(*u) || ulen > l4 || u->src_port == 0)
		goto bad;
	if (u->dst_port != w->udp_port_be) {
		w->c.drops[GW_DROP_UDP_PORT]++;
		return;
	}
	/* 0: the sender computed no checksum (allowed in IPv4). */
	if (u->dgram_cksum) {
		uint64_t f = m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;

		if (p->rx_cksum && f == RTE_MBUF_F_RX_L4_CKSUM_BAD)
			goto bad;
		if (!(p->rx_cksum && f == RTE_MBUF_F_RX_L4_CKSUM_GOOD) && !udp_cksum_ok(ip, u, ulen))
			goto bad;
	}
	neigh_learn(w, slot, ip->src_addr, &eh->src_addr);
	from.ip = ip->src_addr;
	from.port = u->src_port;
	from.local_ip = ip->dst_addr;
	from.port_id = p->port_id;
	gw_engine_rx(w->eng, &from, (const uint8_t *)(u + 1), ulen - sizeof(*u), w->now_ms);
	return;
bad:
	w->c.drops[GW_DROP_UDP_HDR]++;
}

static bool rx_ipv4(struct gw_worker *w, unsigned slot, struct rte_mbuf *m, struct rte_ether_hdr *eh,
		    uint32_t len)
{
	const struct gw_port *p = &w->ports[slot];
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	uint32_t l3 = len - sizeof(*eh);
	uint16_t ihl, tot;
	uint64_t f;

	if (!rte_is_same_ether_addr(&eh->dst_addr, &p->mac)) {
		w->c.drops[GW_DROP_NOT_OURS]++;
		return false;
	}
	if (l3 < sizeof(*ip) || (ip->version_ihl >> 4) != 4)
		goto bad;
	ihl = (uint16_t)((ip->version_ihl & RTE_IPV4_HDR_IHL_MASK) * RTE_IPV4_IHL_MULTIPLIER);
	tot = rte_be_to_cpu_16(ip->total_length);
	if (ihl < sizeof(*ip) || ihl > tot || tot > l3)
		goto bad;
	f = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
	if (p->rx_cksum && f == RTE_MBUF_F_RX_IP_CKSUM_BAD)
		goto bad;
	if (!(p->rx_cksum && f == RTE_MBUF_F_RX_IP_CKSUM_GOOD) && rte_raw_cksum(ip, ihl) != 0xffff)
		goto bad;
	if (!unicast_src(ip->src_addr))
		goto bad;
	if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) {
		w->c.drops[GW_DROP_IP_FRAG]++;
		return false;
	}
	if (!our_addr(p, ip->dst_addr)) {
		w->c.drops[GW_DROP_NOT_OURS]++;
		return false;
	}
	switch (ip->next_proto_id) {
	case IPPROTO_UDP:
		rx_udp(w, slot, m, eh, ip, ihl, tot);
		return false;
	case IPPROTO_ICMP:
		return rx_icmp(w, slot, m, eh, ip, ihl, tot);
	default:
		w->c.drops[GW_DROP_PROTO]++;
		return false;
	}
bad:
	w->c.drops[GW_DROP_IP_HDR]++;
	return false;
}

/* Returns true if m was consumed (queued for TX); otherwise the caller frees it. */
static inline bool rx_one(struct gw_worker *w, unsigned slot, struct rte_mbuf *m)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	uint32_t len = rte_pktmbuf_data_len(m);

	w->c.rx_pkts++;
	w->c.rx_bytes += rte_pktmbuf_pkt_len(m);
	if (unlikely(len < sizeof(*eh))) {
		w->c.drops[GW_DROP_NOT_IPV4]++;
		return false;
	}
	/* Pools are sized for a whole frame: a chained mbuf is not ours. */
	if (unlikely(m->nb_segs != 1)) {
		w->c.drops[GW_DROP_IP_HDR]++;
		return false;
	}
	switch (eh->ether_type) {
	case RTE_BE16(RTE_ETHER_TYPE_IPV4):
		return rx_ipv4(w, slot, m, eh, len);
	case RTE_BE16(RTE_ETHER_TYPE_ARP):
		if (!rte_is_broadcast_ether_addr(&eh->dst_addr) &&
		    !rte_is_same_ether_addr(&eh->dst_addr, &w->ports[slot].mac)) {
			w->c.drops[GW_DROP_ARP]++;
			return false;
		}
		return rx_arp(w, slot, m, eh, len);
	default:
		w->c.drops[GW_DROP_NOT_IPV4]++;
		return false;
	}
}

static void rx_port(struct gw_worker *w, unsigned slot)
{
	struct rte_mbuf *pkts[GW_BURST], *dead[GW_BURST];
	uint16_t n, ndead = 0;

	n = rte_eth_rx_burst(w->ports[slot].port_id, (uint16_t)w->id, pkts, GW_BURST);
	if (!n)
		return;
	for (uint16_t i = 0; i < n; i++) {
		if (i + 1 < n)
			rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
		if (!rx_one(w, slot, pkts[i]))
			dead[ndead++] = pkts[i];
	}
	if (ndead)
		rte_pktmbuf_free_bulk(dead, ndead);
}

/* ---- the loop ---- */

static inline void turn_rx(struct gw_worker *w)
{
	w->now_ms = rte_rdtsc() / w->tsc_per_ms;
	for (unsigned s = 0; s < w->nports; s++)
		rx_port(w, s);
}

static inline void turn_tx(struct gw_worker *w)
{
	for (unsigned s = 0; s < w->nports; s++)
		txq_flush(w, s);
}

int gw_net_worker_main(void *arg)
{
	struct gw_worker *w = arg;
	uint64_t deadline;

	while (!__atomic_load_n(&gw_stop_flag, __ATOMIC_RELAXED)) {
		turn_rx(w);
		gw_engine_poll(w->eng, w->now_ms);
		turn_tx(w);
	}
	/* Stop: refuse new work, keep answering until what went to storage
	 * has come back and every session has been told (CLOSE). */
	gw_engine_stop_admitting(w->eng);
	deadline = w->now_ms + GW_DRAIN_MS;
	w->drain_rc = -ETIMEDOUT;
	while (w->now_ms < deadline) {
		bool done;

		turn_rx(w);
		done = gw_engine_drained(w->eng, w->now_ms);
		turn_tx(w);
		if (done) {
			w->drain_rc = 0;
			break;
		}
	}
	return 0;
}

void gw_net_worker_fini(struct gw_worker *w)
{
	for (unsigned s = 0; s < GW_PORTS_MAX; s++) {
		for (uint16_t i = 0; i < w->txq[s].n; i++)
			rte_pktmbuf_free(w->txq[s].m[i]);
		w->txq[s].n = 0;
	}
}
