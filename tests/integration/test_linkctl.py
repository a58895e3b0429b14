"""
test_linkctl.py - the gateway link through tg_link (control/link_client.c),
the C client tidegate-gateway links against, driven by tidegate-linkctl
(docs/protocol.md section 9): hello, requests and their replies, refusals
with the wire error code, pushes (an org_update reaches a listening client
within a second of a deactivation), and the exit codes scripts rely on.
"""
import json
import os
import select
import subprocess
import time
import unittest

import harness as h
from harness import MiB


def have_linkctl():
    return os.access(h.LINKCTL_BIN, os.X_OK)


class LinkctlThroughTgLink(h.EnvTestCase):

    @classmethod
    def setUpClass(cls):
        if not have_linkctl():
            raise unittest.SkipTest("tidegate-linkctl not built in %s" % h.TG_BUILD)
        super().setUpClass()
        cls.org = cls.env.add_org("lc-org", seats=3, quota="100M", policy="ec:4+2")

    def linkctl(self, *args, gateway="lc-gw", timeout=20):
        argv = [h.LINKCTL_BIN, "--socket", self.env.gateway_sock]
        if gateway:
            argv += ["--gateway", gateway]
        p = subprocess.run(argv + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
        out = p.stdout.decode(errors="replace")
        lines = [json.loads(l) for l in out.splitlines() if l.strip()]
        return p.returncode, lines, p.stderr.decode(errors="replace")

    def test_hello_reply_carries_provider_guid_and_lease_terms(self):
        rc, lines, err = self.linkctl("hello")
        self.assertEqual(rc, 0, err)
        hr = lines[0]
        self.assertIs(hr["ok"], True)
        self.assertEqual(h.guid_bytes(hr["provider_guid"]), h.guid_bytes(self.env.provider_guid()))
        self.assertEqual(hr["lease_ttl_ms"], self.env.lease_ttl_ms)
        self.assertEqual(hr["lease_bytes"], 64 * MiB)

    def test_lease_commit_release_round_trip(self):
        g = self.org["guid"]
        rc, lines, err = self.linkctl("lease", "org=" + g, "bytes:=%d" % (8 * MiB), gateway="lc-a")
        self.assertEqual(rc, 0, err)
        self.assertEqual(lines[0]["granted"], 8 * MiB)
        self.assertIsInstance(lines[0]["seq"], int)
        rc, lines, err = self.linkctl("commit", "org=" + g, "commit_seq:=1",
                                      "stored_bytes:=%d" % (3 * MiB), "logical_bytes:=%d" % (6 * MiB),
                                      "unique_bytes:=%d" % (3 * MiB), "chunks:=2", "dup_chunks:=1",
                                      gateway="lc-a")
        self.assertEqual(rc, 0, err)
        self.assertIs(lines[0]["applied"], True)
        rc, lines, err = self.linkctl("release", json.dumps({"org": g, "bytes": 5 * MiB}),
                                      gateway="lc-a")
        self.assertEqual(rc, 0, err)
        o = self.env.org("lc-org")
        self.assertEqual((o["used_bytes"], o["reserved_bytes"], o["bytes_received"]),
                         (3 * MiB, 0, 6 * MiB))

    def test_policy_op(self):
        rc, lines, err = self.linkctl("policy", "org=" + self.org["guid"])
        self.assertEqual(rc, 0, err)
        self.assertEqual((lines[0]["policy"], lines[0]["state"]), ("ec:4+2", "active"))

    def test_a_refusal_prints_the_wire_error_and_exits_1(self):
        full = self.env.add_org("lc-full", seats=1, quota="1M")
        rc, lines, err = self.linkctl("lease", "org=" + full["guid"], "bytes:=%d" % MiB)
        self.assertEqual((rc, lines[0].get("granted")), (0, MiB), err)
        rc, lines, err = self.linkctl("lease", "org=" + full["guid"], "bytes:=%d" % MiB)
        self.assertEqual(rc, 1, (lines, err))
        self.assertIs(lines[0]["ok"], False)
        self.assertEqual(lines[0]["error"]["code"], h.E_QUOTA_EXCEEDED)
        self.assertEqual(lines[0]["error"]["name"], "quota exceeded")
        rc, lines, _ = self.linkctl("lease", "org=00000000-0000-4000-8000-000000000000",
                                    "bytes:=1048576")
        self.assertEqual(rc, 1)
        self.assertEqual(lines[0]["error"]["code"], h.E_UNKNOWN_ORG)
        self.assertEqual(lines[0]["error"]["name"], "unknown organization")

    def test_a_duplicate_gateway_name_is_refused(self):
        lk = self.env.link("lc-taken")
        rc, _, err = self.linkctl("hello", gateway="lc-taken")
        self.assertEqual(rc, 3, err)
        self.assertIn("already", err)
        self.assertTrue(lk.request("policy", org=self.org["guid"]).get("ok"),
                        "the first gateway of that name is undisturbed")

    def test_usage_and_unreachable_exit_codes(self):
        rc, _, _ = self.linkctl("--bogus", "1")
        self.assertEqual(rc, 2)
        rc, _, _ = self.linkctl("lease", "not-a-field")
        self.assertEqual(rc, 2)
        rc, _, _ = self.linkctl("hello", gateway="bad name!")
        self.assertEqual(rc, 2)
        p = subprocess.run([h.LINKCTL_BIN, "--socket", os.path.join(self.env.tmp, "none.sock"),
                            "hello"], capture_output=True, timeout=20)
        self.assertEqual(p.returncode, 3)
        p = subprocess.run([h.LINKCTL_BIN, "--help"], capture_output=True, timeout=20)
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"--listen", p.stdout)

    def test_deactivate_push_reaches_a_listening_tg_link_within_1s(self):
        org = self.env.add_org("lc-push", seats=1, policy="compress")
        p = subprocess.Popen([h.LINKCTL_BIN, "--socket", self.env.gateway_sock, "--gateway",
                              "lc-listener", "--listen", "6"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, preexec_fn=h._pdeathsig)
        try:
            h.wait_for(lambda: "lc-listener" in [g["name"] for g in
                                                 self.env.admin_ok("gateways")],
                       5, what="tidegate-linkctl to say hello")
            t0 = time.monotonic()
            rc, _, err = self.env.ctl("org", "deactivate", "lc-push")
            self.assertEqual(rc, 0, err)
            buf, got = b"", None
            while got is None and time.monotonic() - t0 < 1.0:
                r, _, _ = select.select([p.stdout], [], [], max(0, 1.0 - (time.monotonic() - t0)))
                if not r:
                    break
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    m = json.loads(line) if line.strip().startswith("{") else {}
                    if m.get("op") == "org_update" and m.get("org") == org["guid"]:
                        got = m
            took = time.monotonic() - t0
            self.assertIsNotNone(got, "no org_update within 1 s through tg_link: %r" % buf)
            self.assertLess(took, 1.0)
            self.assertEqual(got["state"], "deactivated")
            self.assertEqual(got["policy"], "compress")
        finally:
            p.kill()
            p.communicate(timeout=10)
