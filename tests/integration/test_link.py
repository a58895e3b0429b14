"""
test_link.py - the gateway link's framing (docs/control.md "Gateway link"):
every request with a seq gets exactly one reply with that seq, also when it
is malformed; messages that are not requests, or longer than 64 KiB, never
take the daemon down or disturb other gateways.
"""
import json
import socket

import harness as h


class LinkFraming(h.EnvTestCase):

    def raw_link(self, hello=True):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(5)
        s.connect(self.env.gateway_sock)
        if hello:
            s.send(json.dumps({"op": "hello", "gateway": "gw-raw", "pid": 1}).encode())
            self.assertTrue(json.loads(s.recv(65536)).get("ok"))
        return s

    witnesses = 0

    def still_serving(self):
        LinkFraming.witnesses += 1
        org = self.env.add_org("lf-witness-%d" % LinkFraming.witnesses, seats=1)
        with self.env.link("gw-witness") as lk:
            self.assertTrue(lk.register(org["_key"], "w", peer="192.0.2.160").get("ok"))
        self.assertIsNone(self.env.control.poll(), "tidegate-control died")

    def test_malformed_requests_get_one_error_reply_with_their_seq(self):
        s = self.raw_link()
        try:
            for seq, msg in ((101, {"op": "no.such.op"}),
                             (102, {"op": "register"}),
                             (103, {"op": "lease", "org": "nonsense", "bytes": "lots"}),
                             (104, {"op": "register", "provider_guid": "zz", "key_id": "00",
                                    "client_nonce": "", "server_nonce": "", "flags": 0,
                                    "name": "x", "proof": "not hex", "peer": "192.0.2.161"}),
                             (105, {"op": "commit", "org": 5, "commit_seq": -1}),
                             (106, {"op": "auth", "device_id": "00" * 16}),
                             (107, {"op": "restore.authorize", "backup_id": "x"})):
                msg["seq"] = seq
                s.send(json.dumps(msg).encode())
                rep = json.loads(s.recv(65536))
                self.assertEqual(rep.get("seq"), seq, rep)
                self.assertIs(rep.get("ok"), False, rep)
                self.assertIsInstance(rep.get("error", {}).get("code"), int, rep)
                self.assertTrue(rep["error"].get("message"), rep)
        finally:
            s.close()
        self.still_serving()

    def test_garbage_and_oversized_messages_do_not_hurt_the_daemon(self):
        for payload in (b"not json", b"[1, 2, 3]", b"{}", b'{"seq": "x"}', b"\x00\xff" * 10,
                        b'{"op": "lease", "seq": 1' + b" " * (70 * 1024) + b"}"):
            s = self.raw_link()
            try:
                try:
                    s.send(payload)
                    s.settimeout(1)
                    s.recv(65536)
                except OSError:
                    pass
            finally:
                s.close()
        self.still_serving()

    def test_requests_before_hello_are_not_served(self):
        org = self.env.add_org("lf-nohello", seats=1)
        s = self.raw_link(hello=False)
        try:
            s.send(json.dumps({"op": "lease", "seq": 9, "org": org["guid"], "bytes": 1 << 20}).encode())
            try:
                rep = json.loads(s.recv(65536) or b"{}")
            except (OSError, ValueError):
                rep = {}
        finally:
            s.close()
        self.assertIsNot(rep.get("ok"), True, "a lease before hello: %r" % rep)
        self.assertEqual(self.env.org("lf-nohello")["reserved_bytes"], 0)
        self.still_serving()
