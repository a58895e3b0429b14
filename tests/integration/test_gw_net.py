"""
test_gw_net.py - tidegate-gateway's network shell against real frames, as TAP.

The gateway runs as it ships: a DPDK process on net_af_packet, on the host
end of a veth pair whose other end sits in a network namespace (gwenv.py),
with a real redis-server and tidegate-control behind it.

    namespace tgc-<id>                       root namespace
    tgc0 169.254.77.2/24  <---- veth ---->  tgg-<id> (no IP, net_af_packet)
    kernel stack, raw and packet sockets     tidegate-gateway 169.254.77.1

Proved here, each against the counters read through DPDK's telemetry
socket (/tidegate/stats, the protocol dpdk-telemetry.py speaks):
  - the kernel in the namespace resolves the gateway's address by ARP, and
    an ARP request for another address is dropped as "arp";
  - ICMP echo requests get correct echo replies (same id, seq, payload,
    valid checksum), a bad one gets none and is counted "icmp";
  - the gateway answers on UDP with frames the kernel accepts (checksums
    right): a datagram of another protocol version gets ERROR(VERSION);
  - each malformed or foreign frame lands in exactly its own drop reason
    and in no other: bad IP checksum, fragment, other address, other IP
    protocol, bad UDP checksum or length, another UDP port, garbage to our
    port (the codec), non-IPv4 ethertype; a zero UDP checksum is accepted;
  - /tidegate/info and /tidegate/lcore,N answer as documented;
  - start-up errors name the bad option or FILE:LINE and exit 1;
  - SIGTERM stops the gateway with exit status 0.

Frames are crafted with Python's standard library (AF_PACKET and raw
sockets inside the namespace), so every field is exactly what the test says.
"""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import gwenv  # noqa: E402

GW_IP = gwenv.GW_IP
CLIENT_IP = gwenv.CLIENT_IP
UDP_PORT = 7447

# Runs inside the namespace (ip netns exec NS python3 -c HELPER op ...) and
# prints one JSON object.
HELPER = r'''
import json, os, socket, struct, sys, time

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s

op = sys.argv[1]
out = {}
if op == "raw":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((sys.argv[2], 0))
    for h in sys.argv[3:]:
        s.send(bytes.fromhex(h))
    out["sent"] = len(sys.argv) - 3
elif op == "udp":
    ip, port, data, wait = sys.argv[2], int(sys.argv[3]), bytes.fromhex(sys.argv[4]), float(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.sendto(data, (ip, port))
    if wait > 0:
        s.settimeout(wait)
        try:
            d, a = s.recvfrom(65536)
            out["reply"] = d.hex()
            out["from"] = list(a)
        except socket.timeout:
            out["reply"] = None
elif op == "ping":
    ip, count, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ident = os.getpid() & 0xffff
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(0.5)
    replies = []
    for seq in range(1, count + 1):
        payload = bytes((seq + i) & 0xff for i in range(size))
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        c = 0xffff - csum(hdr + payload)
        s.sendto(struct.pack("!BBHHH", 8, 0, c, ident, seq) + payload, (ip, 0))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                d, a = s.recvfrom(65536)
            except socket.timeout:
                continue
            ihl = (d[0] & 15) * 4
            icmp = d[ihl:]
            t, code, ck, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if t != 0 or rid != ident or rseq != seq:
                continue
            replies.append({"seq": rseq, "src": a[0], "payload_ok": icmp[8:] == payload,
                            "cksum_ok": csum(icmp) == 0xffff,
                            "ip_cksum_ok": csum(d[:ihl]) == 0xffff})
            break
    out["replies"] = replies
print(json.dumps(out))
'''


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return 0xffff - s


def mac_bytes(s):
    return bytes.fromhex(s.replace(":", ""))


def ipb(s):
    return socket.inet_aton(s)


def eth(dst, src, etype, payload):
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", etype) + payload


def ipv4(src, dst, proto, payload, bad_cksum=False, frag=0, ident=0x1234, total=None):
    tot = total if total is not None else 20 + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, ident, frag, 64, proto, 0, ipb(src), ipb(dst))
    c = checksum(h)
    if bad_cksum:
        c ^= 0x5a5a
    return h[:10] + struct.pack("!H", c) + h[12:] + payload


def udp(src, dst, sport, dport, data, cksum="good", length=None):
    ln = length if length is not None else 8 + len(data)
    h = struct.pack("!HHHH", sport, dport, ln, 0)
    if cksum == "zero":
        c = 0
    else:
        ph = ipb(src) + ipb(dst) + struct.pack("!BBH", 0, 17, ln)
        c = checksum(ph + h + data) or 0xffff
        if cksum == "bad":
            c ^= 0x0f0f
    return h[:6] + struct.pack("!H", c) + data


def arp_request(smac, sip, tip):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_bytes(smac) + ipb(sip) + \
        b"\0" * 6 + ipb(tip)


def icmp_echo(ident, seq, payload, bad_cksum=False, itype=8):
    h = struct.pack("!BBHHH", itype, 0, 0, ident, seq)
    c = checksum(h + payload)
    if bad_cksum:
        c ^= 0x1111
    return struct.pack("!BBHHH", itype, 0, c, ident, seq) + payload


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


class CounterMixin:
    """/tidegate/stats, flattened ("drops.codec"), and exact deltas."""

    def stats(self):
        return flat(self.tel.stats())

    def expect_delta(self, before, want, settle=0.3, timeout=5.0):
        """Wait until every counter in want moved by at least its value,
        then (after settle) check that it moved by exactly that much and
        that no drop reason outside want moved at all."""
        deadline = time.monotonic() + timeout
        while True:
            cur = self.stats()
            if all(cur[k] - before[k] >= v for k, v in want.items()):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(settle)
        cur = self.stats()
        delta = {k: cur[k] - before[k] for k in cur if isinstance(cur[k], int)}
        for k, v in want.items():
            self.assertEqual(delta[k], v, "%s moved by %d, expected %d (all moves: %r)"
                             % (k, delta[k], v, {a: b for a, b in delta.items() if b}))
        for k, v in delta.items():
            if k.startswith("drops.") and k not in want:
                self.assertEqual(v, 0, "%s moved by %d unexpectedly (all moves: %r)"
                                 % (k, v, {a: b for a, b in delta.items() if b}))
        return cur



class GwNet(CounterMixin, unittest.TestCase):
    """One gateway for the class; tests run in name order (SIGTERM last)."""
    g = None

    @classmethod
    def setUpClass(cls):
        why = None
        if not gwenv.is_root():
            why = "not root: namespaces and veths need root"
        elif not os.access(gwenv.GW_BIN, os.X_OK) or not harness.have_binaries():
            why = "tidegate-gateway or tidegate-control not built in %s" % harness.TG_BUILD
        if why:
            raise unittest.SkipTest(why)
        cls.g = gwenv.GwEnv(workers=1, io_threads=1, store_dirs=2)
        try:
            cls.g.start()
        except BaseException:
            cls.g.stop()
            raise
        cls.tel = cls.g.telemetry()
        with open("/sys/class/net/%s/address" % cls.g.host_if) as f:
            cls.gw_mac = f.read().strip()
        link = json.loads(cls.ns(["ip", "-j", "link", "show", gwenv.CLIENT_IF]))
        cls.client_mac = link[0]["address"]

    @classmethod
    def tearDownClass(cls):
        if cls.g is not None:
            problems = cls.g.stop()
            if problems:
                raise AssertionError(problems)

    # -- helpers --

    @classmethod
    def ns(cls, argv, timeout=30):
        p = subprocess.run(["ip", "netns", "exec", cls.g.ns] + argv, capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise AssertionError("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                                      p.stderr.decode(errors="replace")))
        return p.stdout.decode()

    def helper(self, *args):
        return json.loads(self.ns([sys.executable, "-c", HELPER] + [str(a) for a in args]))

    def send_frames(self, *frames):
        self.helper("raw", gwenv.CLIENT_IF, *[f.hex() for f in frames])

    def assert_alive(self):
        self.assertTrue(self.g.gateway_alive(), "gateway died:\n" + self.g.tail(30))

    # -- tests --

    def test_1_arp_resolves_gateway_address(self):
        self.ns(["ip", "neigh", "flush", "dev", gwenv.CLIENT_IF])
        before = self.stats()
        # The kernel must resolve 169.254.77.1 before this datagram can leave.
        self.helper("udp", GW_IP, 9, "00", 0)

        def resolved():
            out = json.loads(self.ns(["ip", "-j", "neigh", "show", GW_IP, "dev",
                                      gwenv.CLIENT_IF]) or "[]")
            return out and out[0].get("lladdr") and out[0]
        n = harness.wait_for(resolved, 5, what="the namespace's ARP entry for the gateway")
        self.assertEqual(n["lladdr"].lower(), self.gw_mac.lower())
        self.assertNotIn("FAILED", n.get("state", []))
        self.expect_delta(before, {"drops.udp_port": 1})
        self.assertGreaterEqual(self.stats()["arp_replies"] - before["arp_replies"], 1)

    def test_2_arp_for_another_address_dropped(self):
        before = self.stats()
        self.send_frames(eth("ff:ff:ff:ff:ff:ff", self.client_mac, 0x0806,
                             arp_request(self.client_mac, CLIENT_IP, "169.254.77.9")))
        after = self.expect_delta(before, {"drops.arp": 1})
        self.assertEqual(after["arp_replies"], before["arp_replies"])

    def test_3_ping_gets_echo_replies(self):
        before = self.stats()
        for size, count in ((56, 5), (1400, 2)):
            rep = self.helper("ping", GW_IP, count, size)["replies"]
            self.assertEqual(len(rep), count, "echo replies for %d-byte pings: %r" % (size, rep))
            for r in rep:
                self.assertEqual(r["src"], GW_IP)
                self.assertTrue(r["payload_ok"] and r["cksum_ok"] and r["ip_cksum_ok"], r)
        self.expect_delta(before, {"icmp_echo_replies": 7})

    def test_4_bad_icmp_gets_no_reply_and_is_counted(self):
        before = self.stats()
        self.send_frames(
            eth(self.gw_mac, self.client_mac, 0x0800,
                ipv4(CLIENT_IP, GW_IP, 1, icmp_echo(7, 1, b"x" * 32, bad_cksum=True))),
            eth(self.gw_mac, self.client_mac, 0x0800,
                ipv4(CLIENT_IP, GW_IP, 1, icmp_echo(7, 2, b"\0" * 12, itype=13))))
        after = self.expect_delta(before, {"drops.icmp": 2})
        self.assertEqual(after["icmp_echo_replies"], before["icmp_echo_replies"])

    def test_5_other_version_answered_with_error_over_udp(self):
        # magic "TG", version 2, type 1: the one codec reject that is answered.
        pkt = struct.pack("!HBBHHQ", 0x5447, 2, 1, 0, 8, 0) + b"\0" * 8
        before = self.stats()
        r = self.helper("udp", GW_IP, UDP_PORT, pkt.hex(), 3)
        self.assertIsNotNone(r["reply"], "no ERROR for a version-2 datagram:\n" + self.g.tail(10))
        self.assertEqual(r["from"], [GW_IP, UDP_PORT])
        rep = bytes.fromhex(r["reply"])
        magic, ver, typ = struct.unpack("!HBB", rep[:4])
        self.assertEqual((magic, ver, typ), (0x5447, 1, 19))
        after = self.expect_delta(before, {"drops.codec": 1, "perr.version": 1})
        self.assertGreaterEqual(after["tx_pkts"] - before["tx_pkts"], 1)

    def test_6_each_bad_frame_counted_under_its_reason(self):
        gm, cm = self.gw_mac, self.client_mac
        garbage = b"not a tidegate datagram, just bytes"
        cases = [
            ("udp garbage to our port (kernel socket)", None, {"drops.codec": 1, "perr.magic": 1}),
            ("udp to another port (kernel socket)", None, {"drops.udp_port": 1}),
            ("bad IPv4 header checksum",
             eth(gm, cm, 0x0800, ipv4(CLIENT_IP, GW_IP, 17,
                                      udp(CLIENT_IP, GW_IP, 5000, UDP_PORT, garbage),
                                      bad_cksum=True)),
             {"drops.ip_hdr": 1}),
            ("IPv4 total length past the frame",
             eth(gm, cm, 0x0800, ipv4(CLIENT_IP, GW_IP, 17,
                                      udp(CLIENT_IP, GW_IP, 5000, UDP_PORT, garbage), total=1400)),
             {"drops.ip_hdr": 1}),
            # No IPv4 fragment here: net_af_packet's fanout socket asks the
            # kernel to defragment (PACKET_FANOUT_FLAG_DEFRAG), so fragments
            # never reach the PMD. GwTap proves the fragment drop.
            ("IPv4 to another address on the subnet",
             eth(gm, cm, 0x0800, ipv4(CLIENT_IP, "169.254.77.9", 17,
                                      udp(CLIENT_IP, "169.254.77.9", 5000, UDP_PORT, garbage))),
             {"drops.not_ours": 1}),
            ("IP protocol 253 (not UDP, not ICMP)",
             eth(gm, cm, 0x0800, ipv4(CLIENT_IP, GW_IP, 253, garbage)),
             {"drops.proto": 1}),
            ("TCP SYN to our port",
             eth(gm, cm, 0x0800, ipv4(CLIENT_IP, GW_IP, 6,
                                      struct.pack("!HHIIBBHHH", 5000, UDP_PORT, 1, 0, 0x50, 2,
                                                  1024, 0, 0))),
             {"drops.proto": 1}),
            ("UDP with a wrong checksum",
             eth(gm, cm, 0x0800, ipv4(CLIENT_IP, GW_IP, 17,
                                      udp(CLIENT_IP, GW_IP, 5000, UDP_PORT, garbage, cksum="bad"))),
             {"drops.udp_hdr": 1}),
            ("UDP length past the IP payload",
             eth(gm, cm, 0x0800, ipv4(CLIENT_IP, GW_IP, 17,
                                      udp(CLIENT_IP, GW_IP, 5000, UDP_PORT, garbage, cksum="zero",
                                          length=200))),
             {"drops.udp_hdr": 1}),
            ("UDP with checksum 0 reaches the codec",
             eth(gm, cm, 0x0800, ipv4(CLIENT_IP, GW_IP, 17,
                                      udp(CLIENT_IP, GW_IP, 5000, UDP_PORT, garbage, cksum="zero"))),
             {"drops.codec": 1, "perr.magic": 1}),
            ("IPv6 ethertype",
             eth(gm, cm, 0x86dd, b"\x60" + b"\0" * 39),
             {"drops.not_ipv4": 1}),
        ]
        for name, frame, want in cases:
            with self.subTest(case=name):
                before = self.stats()
                if frame is not None:
                    self.send_frames(frame)
                elif "another port" in name:
                    self.helper("udp", GW_IP, 9999, garbage.hex(), 0)
                else:
                    self.helper("udp", GW_IP, UDP_PORT, garbage.hex(), 0)
                after = self.expect_delta(before, want)
                # Nothing malformed reached the protocol as a valid datagram.
                self.assertEqual(after["proto_rx_pkts"], before["proto_rx_pkts"])
                self.assertGreaterEqual(after["rx_pkts"] - before["rx_pkts"], 1)
        self.assert_alive()

    def test_7_telemetry_info_and_lcore(self):
        info = self.tel.cmd("/tidegate/info")
        self.assertEqual(info["name"], self.g.name)
        self.assertEqual(info["workers"], 1)
        self.assertEqual(info["udp_port"], UDP_PORT)
        self.assertEqual(info["addresses"], ["0=%s/24" % GW_IP])
        self.assertEqual(info["provider_guid"], self.g.provider_guid())
        self.assertEqual(info["control_link_up"], 1)
        self.assertEqual((info["mtu"], info["frag_size"]), (1500, 1408))
        self.assertEqual((info["sessions_per_worker"], info["mem_mb_per_worker"]), (1024, 256))
        self.assertTrue(info["version"])
        stats = self.tel.stats()
        one = self.tel.cmd("/tidegate/lcore,0")
        self.assertEqual(one["worker"], 0)
        # One worker: its counters are the sum (nothing arrives meanwhile
        # but, possibly, the namespace's ARP refreshes).
        self.assertEqual(one["drops"], stats["drops"])
        self.assertGreaterEqual(one["rx_pkts"], stats["rx_pkts"])
        self.assertEqual(set(one) - {"worker"}, set(stats))
        self.assertIsNone(self.tel.cmd("/tidegate/lcore,1"))
        self.assertIsNone(self.tel.cmd("/tidegate/lcore,x"))

    def test_9_sigterm_exits_0(self):
        problem = self.g.stop_gateway()
        self.assertIsNone(problem, problem)
        with open(self.g.gw_log, "rb") as f:
            log = f.read().decode(errors="replace")
        self.assertIn("tidegate-gateway: info: stopped", log)


TAP_GW_IP = "169.254.78.1"
TAP_PEER_IP = "169.254.78.2"
TAP_PEER_MAC = "02:11:22:33:44:55"


class TapGwEnv(gwenv.GwEnv):
    """GwEnv plus a net_tap port (port 1, 169.254.78.1/24). Its kernel end,
    tgt-<id>, has no address; the test writes frames into it and reads what
    the gateway sends with a packet socket. The tap goes away with the
    gateway's process."""

    def gateway_argv(self):
        argv = super().gateway_argv()
        i = argv.index("--")
        self.tap_if = "tgt-" + self.id
        return argv[:i] + ["--vdev", "net_tap0,iface=" + self.tap_if] + argv[i:] + \
            ["--addr", "1=%s/24" % TAP_GW_IP]


class GwTap(CounterMixin, unittest.TestCase):
    """The same shell on a second PMD: net_tap delivers IPv4 fragments
    (net_af_packet's kernel defragments them first) and offers checksum
    offloads, so the RX checksum flags and the TX offload path run here,
    and every frame the gateway sends is read back and checked byte by byte."""
    g = None

    @classmethod
    def setUpClass(cls):
        if not gwenv.is_root():
            raise unittest.SkipTest("not root: taps and veths need root")
        if not os.access(gwenv.GW_BIN, os.X_OK) or not harness.have_binaries():
            raise unittest.SkipTest("tidegate-gateway or tidegate-control not built")
        # The shipped example plus a few keys: it must parse, and the
        # command line must win (GwEnv passes --name and --addr).
        cls.conf = tempfile.NamedTemporaryFile("w", prefix="tg-gwconf-", suffix=".conf",
                                               delete=False)
        with open(os.path.join(harness.TG_SRC, "deploy", "tidegate-gateway.conf.example")) as f:
            cls.conf.write(f.read())
        cls.conf.write("name = from-file\naddr = 0=169.254.99.1/24\nmem-mb = 64\n"
                       "sessions = 64\n")
        cls.conf.close()
        cls.g = TapGwEnv(workers=1, io_threads=1, store_dirs=2,
                         gw_extra=["--config", cls.conf.name])
        try:
            cls.g.start()
            subprocess.run(["sysctl", "-q", "-w", "net.ipv6.conf.%s.disable_ipv6=1"
                            % cls.g.tap_if], capture_output=True)
            with open(cls.g.gw_log) as f:
                m = re.search(r"port 1 \(net_tap0\): mac (\S+),", f.read())
            if not m:
                raise AssertionError("no 'port 1 (net_tap0)' line:\n" + cls.g.tail(20))
            cls.gw_mac = m.group(1).lower()
            cls.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
            cls.sock.bind((cls.g.tap_if, 0))
            time.sleep(0.5)  # let the kernel's own start-up chatter pass
        except BaseException:
            cls.g.stop()
            raise
        cls.tel = cls.g.telemetry()

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "conf", None):
            os.unlink(cls.conf.name)
        if cls.g is not None:
            if getattr(cls, "sock", None):
                cls.sock.close()
            problems = cls.g.stop()
            if problems:
                raise AssertionError(problems)

    def send(self, *frames):
        for f in frames:
            self.sock.send(f)

    def recv_from_gw(self, pred, timeout=3.0):
        """The first frame the gateway sent that satisfies pred, or None."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue  # our own frames
            if data[6:12] == mac_bytes(self.gw_mac) and pred(data):
                return data
        return None

    def peer_ipv4(self, proto, payload, **kw):
        return eth(self.gw_mac, TAP_PEER_MAC, 0x0800,
                   ipv4(TAP_PEER_IP, TAP_GW_IP, proto, payload, **kw))

    def check_ipv4_to_peer(self, f, proto):
        self.assertEqual(f[0:6], mac_bytes(TAP_PEER_MAC))
        self.assertEqual(struct.unpack("!H", f[12:14])[0], 0x0800)
        ip = f[14:34]
        self.assertEqual(ip[0], 0x45)
        self.assertEqual(checksum(ip), 0, "IPv4 header checksum wrong")
        self.assertEqual(ip[9], proto)
        self.assertEqual(ip[12:16], ipb(TAP_GW_IP))
        self.assertEqual(ip[16:20], ipb(TAP_PEER_IP))
        tot = struct.unpack("!H", ip[2:4])[0]
        self.assertLessEqual(tot, len(f) - 14)
        if len(f) > 60:  # a minimum-size frame may carry padding
            self.assertEqual(tot, len(f) - 14)
        return ip

    def test_arp_request_answered_with_our_mac(self):
        before = self.stats()
        self.send(eth("ff:ff:ff:ff:ff:ff", TAP_PEER_MAC, 0x0806,
                      arp_request(TAP_PEER_MAC, TAP_PEER_IP, TAP_GW_IP)))
        f = self.recv_from_gw(lambda d: d[12:14] == b"\x08\x06")
        self.assertIsNotNone(f, "no ARP reply")
        self.assertEqual(f[0:6], mac_bytes(TAP_PEER_MAC))
        op, sha, spa, tha, tpa = struct.unpack("!6xH6s4s6s4s", f[14:42])
        self.assertEqual((op, sha, spa, tha, tpa),
                         (2, mac_bytes(self.gw_mac), ipb(TAP_GW_IP), mac_bytes(TAP_PEER_MAC),
                          ipb(TAP_PEER_IP)))
        self.expect_delta(before, {"arp_replies": 1})

    def test_config_file_read_and_command_line_wins(self):
        info = self.tel.cmd("/tidegate/info")
        self.assertEqual((info["sessions_per_worker"], info["mem_mb_per_worker"]), (64, 64))
        self.assertEqual(info["name"], self.g.name)       # --name beats the file
        self.assertEqual(info["addresses"], ["0=%s/24" % GW_IP, "1=%s/24" % TAP_GW_IP])
        with open(self.g.gw_log) as f:
            ready = [l for l in f if "ready" in l]
        self.assertTrue(ready and "0 (net_af_packet0), 1 (net_tap0)" in ready[0], ready)

    def test_fragments_dropped_as_ip_frag(self):
        data = udp(TAP_PEER_IP, TAP_GW_IP, 5000, UDP_PORT, b"y" * 40)
        before = self.stats()
        self.send(self.peer_ipv4(17, data, frag=0x2000),     # MF
                  self.peer_ipv4(17, data, frag=0x0003))     # offset 24
        self.expect_delta(before, {"drops.ip_frag": 2})

    def test_checksums_checked_with_offload_flags(self):
        g = b"garbage through the tap"
        for name, frame, want in (
                ("bad IPv4 checksum",
                 self.peer_ipv4(17, udp(TAP_PEER_IP, TAP_GW_IP, 5000, UDP_PORT, g), bad_cksum=True),
                 {"drops.ip_hdr": 1}),
                ("bad UDP checksum",
                 self.peer_ipv4(17, udp(TAP_PEER_IP, TAP_GW_IP, 5000, UDP_PORT, g, cksum="bad")),
                 {"drops.udp_hdr": 1}),
                ("good UDP checksum",
                 self.peer_ipv4(17, udp(TAP_PEER_IP, TAP_GW_IP, 5000, UDP_PORT, g)),
                 {"drops.codec": 1, "perr.magic": 1})):
            with self.subTest(case=name):
                before = self.stats()
                self.send(frame)
                self.expect_delta(before, want)

    def test_udp_answer_has_right_headers_and_checksums(self):
        pkt = struct.pack("!HBBHHQ", 0x5447, 2, 1, 0, 8, 0) + b"\0" * 8
        before = self.stats()
        self.send(self.peer_ipv4(17, udp(TAP_PEER_IP, TAP_GW_IP, 40123, UDP_PORT, pkt)))
        f = self.recv_from_gw(lambda d: d[12:14] == b"\x08\x00" and d[23] == 17)
        self.assertIsNotNone(f, "no UDP answer on the tap:\n" + self.g.tail(10))
        ip = self.check_ipv4_to_peer(f, 17)
        self.assertTrue(struct.unpack("!H", ip[6:8])[0] & 0x4000, "DF not set")
        tot = struct.unpack("!H", ip[2:4])[0]
        u = f[34:14 + tot]
        sport, dport, ulen, uck = struct.unpack("!HHHH", u[:8])
        self.assertEqual((sport, dport, ulen), (UDP_PORT, 40123, len(u)))
        ph = ipb(TAP_GW_IP) + ipb(TAP_PEER_IP) + struct.pack("!BBH", 0, 17, ulen)
        self.assertNotEqual(uck, 0)
        self.assertEqual(checksum(ph + u), 0, "UDP checksum wrong")
        self.assertEqual(struct.unpack("!HBB", u[8:12]), (0x5447, 1, 19))
        self.expect_delta(before, {"drops.codec": 1, "perr.version": 1})

    def test_answer_goes_to_mac_learned_from_ipv4_source(self):
        # Senders the gateway never saw ARP from: one on the subnet, one
        # behind a router (off-subnet source, the router's MAC).
        pkt = struct.pack("!HBBHHQ", 0x5447, 2, 1, 0, 8, 0) + b"\0" * 8
        for src_ip, src_mac in (("169.254.78.3", "02:11:22:33:44:66"),
                                ("10.9.8.7", "02:11:22:33:44:77")):
            with self.subTest(src=src_ip):
                self.send(eth(self.gw_mac, src_mac, 0x0800,
                              ipv4(src_ip, TAP_GW_IP, 17,
                                   udp(src_ip, TAP_GW_IP, 40000, UDP_PORT, pkt))))
                f = self.recv_from_gw(lambda d: d[12:14] == b"\x08\x00" and d[23] == 17 and
                                      d[30:34] == ipb(src_ip))
                self.assertIsNotNone(f, "no answer to %s" % src_ip)
                self.assertEqual(f[0:6], mac_bytes(src_mac))

    def test_echo_reply_has_right_headers_and_checksums(self):
        payload = bytes(range(200))
        before = self.stats()
        self.send(self.peer_ipv4(1, icmp_echo(0x4242, 9, payload)))
        f = self.recv_from_gw(lambda d: d[12:14] == b"\x08\x00" and d[23] == 1)
        self.assertIsNotNone(f, "no echo reply on the tap")
        ip = self.check_ipv4_to_peer(f, 1)
        tot = struct.unpack("!H", ip[2:4])[0]
        ic = f[34:14 + tot]
        self.assertEqual(checksum(ic), 0, "ICMP checksum wrong")
        self.assertEqual(struct.unpack("!BBxxHH", ic[:8]), (0, 0, 0x4242, 9))
        self.assertEqual(ic[8:], payload)
        self.expect_delta(before, {"icmp_echo_replies": 1})



class GwStartupErrors(unittest.TestCase):
    """Option and config-file errors: exit 1 and a message naming the culprit
    (checked before EAL starts, so no port or hugepage is needed)."""

    def run_gw(self, *args):
        if not os.access(gwenv.GW_BIN, os.X_OK):
            self.skipTest("tidegate-gateway not built")
        p = subprocess.run([gwenv.GW_BIN] + list(args), capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tg-gwcfg-")

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.tmp])

    def test_help_lists_every_option_and_exits_0(self):
        rc, out, _ = self.run_gw("--help")
        self.assertEqual(rc, 0)
        for opt in ("--config", "--addr", "--udp-port", "--control-sock", "--name", "--store-dir",
                    "--io-threads", "--mtu", "--mem-mb", "--sessions", "--version"):
            self.assertIn(opt, out)

    def test_bad_option_value_named(self):
        for args, word in ((["--mtu", "abc"], "--mtu"), (["--udp-port", "0"], "--udp-port"),
                           (["--addr", "0=169.254.1.1/33"], "--addr"),
                           (["--store-dir", os.path.join(self.tmp, "nope")], "--store-dir"),
                           (["--bogus"], "--bogus")):
            with self.subTest(args=args):
                base = ["--addr", "0=169.254.1.1/24", "--store-dir", self.tmp]
                rc, _, err = self.run_gw("--", *(base + args))
                self.assertEqual(rc, 1, err)
                self.assertIn(word, err)
                self.assertIn("tidegate-gateway: error:", err)

    def test_bad_config_line_named_file_and_line(self):
        path = os.path.join(self.tmp, "gw.conf")
        with open(path, "w") as f:
            f.write("[gateway]\naddr = 0=169.254.1.1/24\nmtu = 70000\n")
        rc, _, err = self.run_gw("--", "--config", path, "--store-dir", self.tmp)
        self.assertEqual(rc, 1, err)
        self.assertIn("%s:3:" % path, err)
        with open(path, "w") as f:
            f.write("[gateway]\n# a comment\nstore-dir = %s\nno-such-key = 1\n" % self.tmp)
        rc, _, err = self.run_gw("--", "--config", path, "--addr", "0=169.254.1.1/24")
        self.assertEqual(rc, 1, err)
        self.assertIn("%s:4:" % path, err)
        self.assertIn("no-such-key", err)


if __name__ == "__main__":
    harness.main([sys.modules[__name__]])
