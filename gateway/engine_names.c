/*
 * engine_names.c - names of the drop reasons (enum gw_drop) for telemetry.
 *
 * A file of its own in the protocol library: the linker pulls it only when
 * nothing linked before the library defines gw_drop_name(), so the shell may
 * keep its own copy without a clash.
 */
#include "gw.h"

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
