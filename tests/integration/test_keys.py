"""
test_keys.py - registration keys and who may talk to tidegate-control
(docs/control.md "Registration keys", "Admin socket"; docs/protocol.md 4):
the harness's device crypto matches the spec's test vectors; one
organization's key never admits a device into another; a proof is bound to
its key id, nonces and name; wrong guesses from one source are rate limited
after 5 failures while other sources go on; and the sockets admit only root
and the admin group.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import time

import harness as h


def _r(a, b):
    return bytes(range(a, b + 1))


class DeviceCryptoMatchesProtocolVectors(h.unittest.TestCase):
    """If these fail, every registration test below is meaningless."""

    def test_harness_crypto_reproduces_docs_protocol_4_9(self):
        kid, sec, salt, pg = _r(0, 7), _r(0x20, 0x3f), _r(0x40, 0x4f), _r(0x50, 0x5f)
        cn, sn, org, did, cred = _r(0x60, 0x6f), _r(0x70, 0x7f), _r(0x80, 0x8f), _r(0x90, 0x9f), \
            _r(0xa0, 0xbf)
        self.assertEqual(h.format_regkey(kid, sec),
                         "TG1-AAAQEAYEAUDAOIBBEIRSIJJGE4UCSKRLFQWS4LZQGEZDGNBVGY3TQOJ2HM6D2PR7")
        self.assertEqual(h.parse_regkey(h.format_regkey(kid, sec)), (kid, sec))
        v = h.regkey_verifier(salt, sec)
        self.assertEqual(v.hex(), "9913ecebb3d8e7938aa9c04102d6bfbe386dbf07f2a22c6138a01cdb22c390e0")
        self.assertEqual(h.reg_proof(v, pg, kid, cn, sn, 0, b"laptop-01").hex(),
                         "2d72631c8e79f044d1a3254db51fe4e0523cba5020c0999280594f671ca2614e")
        self.assertEqual(h.reg_wrap_key(v, cn, sn).hex(),
                         "a99e3d3ba0fcacc66ebb9479b8bf449b234199dd27de92709d4f48bfd5c9f6ac")
        ct = bytes.fromhex("7430722e73b0b81543aa710ee970bfcb5e741aeac9420945e734d4448b154f85")
        tag = bytes.fromhex("544eb0ef099110c539aa7d0efcdb767d")
        self.assertEqual(h.unwrap_cred(v, cn, sn, org, did, ct, tag), cred)
        self.assertIsNone(h.unwrap_cred(v, cn, sn, org, did, ct, bytes(16)), "GCM must check the tag")
        self.assertEqual(h.auth_proof(cred, did, cn, sn, 1408, 0).hex(),
                         "00236de6dce7d259798643e4a539a089607c002da423f6e697a2466cf1d0c040")


class KeyIsolation(h.EnvTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.a = cls.env.add_org("iso-a", seats=5)
        cls.b = cls.env.add_org("iso-b", seats=5)

    def seats(self):
        return (self.env.org("iso-a")["seats_used"], self.env.org("iso-b")["seats_used"])

    def test_a_key_registers_only_into_its_own_org(self):
        lk = self.env.link("gw-iso-1")
        rep = lk.register(self.a["_key"], "a-laptop", peer="192.0.2.101")
        self.assertTrue(rep.get("ok"), rep)
        self.assertEqual(h.guid_bytes(rep["org"]), h.guid_bytes(self.a["guid"]))
        self.assertIn("a-laptop", [d["name"] for d in self.env.admin_ok("device.list",
                                                                         {"org": "iso-a"})])
        self.assertNotIn("a-laptop", [d["name"] for d in self.env.admin_ok("device.list",
                                                                            {"org": "iso-b"})])
        with self.env.rdb() as r:
            self.assertEqual(r.cmd("HGET", "tg:dev:" + rep["device_id"], "org"), self.a["guid"])

    def test_a_secret_with_another_orgs_key_id_is_a_bad_key(self):
        lk = self.env.link("gw-iso-2")
        before = self.seats()
        ka, kb = self.a["_key"], self.b["_key"]
        # What a device holding A's secret computes after B's REG_CHALLENGE (B's salt).
        v_forged = h.regkey_verifier(h.regkey_salt(ka.pg, kb.key_id), ka.secret)
        for v in (v_forged, ka.v):
            rep = lk.register(ka, "intruder", peer="192.0.2.102", key_id=kb.key_id, v=v)
            self.assertLinkErr(rep, h.E_BAD_KEY, "A's secret under B's key id")
        self.assertEqual(self.seats(), before)
        self.assertNotIn("intruder", json.dumps(self.env.admin_ok("device.list", {"org": "iso-b"})))

    def test_unknown_key_id_or_provider_is_unknown_org(self):
        lk = self.env.link("gw-iso-3")
        ka = self.a["_key"]
        self.assertLinkErr(lk.register(ka, "x", peer="192.0.2.103", key_id=secrets.token_bytes(8)),
                           h.E_UNKNOWN_ORG, "random key id")
        self.assertLinkErr(lk.register(ka, "x", peer="192.0.2.103", pg=secrets.token_bytes(16)),
                           h.E_UNKNOWN_ORG, "another provider's GUID")

    def test_the_proof_is_bound_to_name_nonces_and_flags(self):
        lk = self.env.link("gw-iso-4")
        ka = self.a["_key"]
        before = self.seats()
        cn, sn = secrets.token_bytes(16), secrets.token_bytes(16)
        for what, proof_args, send in (
                ("name", (cn, sn, 0, b"honest"), dict(name="swapped", cn=cn, sn=sn)),
                ("server nonce", (cn, sn, 0, b"n1"), dict(name="n1", cn=cn, sn=secrets.token_bytes(16))),
                ("client nonce", (cn, sn, 0, b"n2"), dict(name="n2", cn=secrets.token_bytes(16), sn=sn)),
                ("flags", (cn, sn, 0, b"n3"), dict(name="n3", cn=cn, sn=sn, flags=h.TG_RF_RELAY))):
            p = h.reg_proof(ka.v, ka.pg, ka.key_id, *proof_args)
            rep = lk.register(ka, peer="192.0.2.104", proof=p, **send)
            self.assertFalse(rep.get("ok"), "a proof for another %s was accepted" % what)
            self.assertIn(h.link_err(rep), (h.E_BAD_KEY, h.E_BAD_REQUEST), rep)
        self.assertEqual(self.seats(), before)


class RateLimiting(h.EnvTestCase):

    def counters(self):
        p = self.env.admin_ok("provider.show")
        return p["bad_key_attempts"], p["rate_limited"]

    def test_five_failures_lock_a_source_out_while_others_go_on(self):
        org = self.env.add_org("rl-org", seats=10)
        k = org["_key"]
        lk = self.env.link("gw-rl")
        bad0, lim0 = self.counters()
        attacker, honest = "198.18.0.66", "198.18.0.77"
        for i in range(5):
            rep = lk.register(k, "guess", peer=attacker, v=secrets.token_bytes(32))
            self.assertLinkErr(rep, h.E_BAD_KEY, "wrong guess %d" % (i + 1))
        # Locked out now: even the right proof is refused without being checked.
        self.assertLinkErr(lk.register(k, "right-key", peer=attacker), h.E_RATE_LIMITED,
                           "6th attempt after 5 failures")
        self.assertEqual(self.env.org("rl-org")["seats_used"], 0)
        rep = lk.register(k, "honest-pc", peer=honest)
        self.assertTrue(rep.get("ok"), "another source must not be locked out: %r" % rep)
        bad1, lim1 = self.counters()
        self.assertEqual(bad1 - bad0, 5, "bad_key_attempts counts each wrong proof")
        self.assertGreaterEqual(lim1 - lim0, 1, "rate_limited counts refusals")
        with self.env.rdb() as r:
            ttl = r.cmd("TTL", "tg:rl:" + attacker)
            self.assertTrue(0 < ttl <= 600, "tg:rl:<source> has the 10 minute window as TTL (%r)" % ttl)
            self.assertEqual(r.cmd("EXISTS", "tg:rl:" + honest), 0)
        # The lockout is 2^(5-5) = 1 s: it ends.
        time.sleep(2.2)
        rep = lk.register(k, "right-key", peer=attacker)
        self.assertTrue(rep.get("ok"), "the lockout must end: %r" % rep)

    def test_lockout_doubles_with_each_further_failure(self):
        org = self.env.add_org("rl-double", seats=10)
        k = org["_key"]
        lk = self.env.link("gw-rl2")
        src = "198.18.1.66"
        for _ in range(5):
            self.assertLinkErr(lk.register(k, "g", peer=src, v=secrets.token_bytes(32)), h.E_BAD_KEY)
        time.sleep(1.3)                         # 1 s lockout over
        self.assertLinkErr(lk.register(k, "g", peer=src, v=secrets.token_bytes(32)), h.E_BAD_KEY)
        t6 = time.monotonic()                   # 6th failure: 2 s lockout
        time.sleep(1.3)
        self.assertLinkErr(lk.register(k, "ok-pc", peer=src), h.E_RATE_LIMITED,
                           "1.3 s into a 2 s lockout")
        time.sleep(max(0, 2.4 - (time.monotonic() - t6)))
        self.assertTrue(lk.register(k, "ok-pc", peer=src).get("ok"))

    def test_correct_proofs_refused_for_seats_are_not_failures(self):
        org = self.env.add_org("rl-seats", seats=1)
        lk = self.env.link("gw-rl3")
        src = "198.18.2.66"
        self.assertTrue(lk.register(org["_key"], "only", peer=src).get("ok"))
        bad0, _ = self.counters()
        for i in range(7):
            self.assertLinkErr(lk.register(org["_key"], "more-%d" % i, peer=src), h.E_SEATS_FULL)
        self.assertEqual(self.counters()[0], bad0)


    def test_wrong_auth_proofs_count_and_lock_the_source_out_too(self):
        org = self.env.add_org("rl-auth", seats=2)
        lk = self.env.link("gw-rl4")
        reg = lk.register(org["_key"], "auth-pc", peer="198.18.3.1")
        self.assertTrue(reg.get("ok"), reg)
        cred = h.unwrap_cred(org["_key"].v, reg["_cn"], reg["_sn"], h.guid_bytes(org["guid"]),
                             bytes.fromhex(reg["device_id"]), bytes.fromhex(reg["wrapped_cred"]),
                             bytes.fromhex(reg["wrap_tag"]))
        src = "198.18.3.66"
        bad0, lim0 = self.counters()
        for i in range(5):
            self.assertLinkErr(lk.auth(reg["device_id"], secrets.token_bytes(32), peer=src),
                               h.E_BAD_KEY, "wrong credential %d" % (i + 1))
        self.assertLinkErr(lk.auth(reg["device_id"], cred, peer=src), h.E_RATE_LIMITED,
                           "the right credential from a locked-out source")
        self.assertTrue(lk.auth(reg["device_id"], cred, peer="198.18.3.77").get("ok"),
                        "another source is not locked out")
        bad1, lim1 = self.counters()
        self.assertEqual(bad1 - bad0, 5)
        self.assertEqual(lim1 - lim0, 1)
        # The port is not part of the source: changing it does not reset the count.
        self.assertLinkErr(lk.auth(reg["device_id"], cred, peer=src + ":4242"), h.E_RATE_LIMITED)


class KeysComeFromACsprng(h.EnvTestCase):

    def test_keys_are_unique_unpredictable_and_never_repeat(self):
        keys = [h.parse_regkey(self.env.add_org("rnd-%02d" % i, seats=1)["registration_key"])
                for i in range(16)]
        keys += [h.parse_regkey(self.env.admin_ok("key.rotate", {"org": "rnd-00"})
                                ["registration_key"]) for _ in range(8)]
        ids = [k for k, _ in keys]
        secrets_ = [s for _, s in keys]
        self.assertEqual(len(set(ids)), len(ids), "key ids repeat")
        self.assertEqual(len(set(secrets_)), len(secrets_), "secrets repeat")
        # A counter or a clock would leave most bits alike from one key to
        # the next; CSPRNG output differs in about half of them.
        blob = b"".join(secrets_)
        ones = sum(bin(b).count("1") for b in blob)
        self.assertTrue(0.45 < ones / (8 * len(blob)) < 0.55, "bit balance %d/%d"
                        % (ones, 8 * len(blob)))
        for (a, b) in zip(secrets_, secrets_[1:]):
            diff = sum(bin(x ^ y).count("1") for x, y in zip(a, b))
            self.assertTrue(64 < diff < 192, "consecutive secrets differ in %d of 256 bits" % diff)


def _as_user(uid, gid, fn):
    """Run fn() in a forked child with uid/gid and no supplementary groups;
    return what it returned (JSON-able) or the exception text."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                out = {"ok": fn()}
            except Exception as e:
                out = {"exc": repr(e)}
            os.write(wr, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(wr)
    data = b""
    while True:
        c = os.read(rd, 65536)
        if not c:
            break
        data += c
    os.close(rd)
    os.waitpid(pid, 0)
    return json.loads(data or b'{"exc": "child wrote nothing"}')


NOBODY, NOGROUP, ADM = 65534, 65534, 4


class SocketPermissions(h.EnvTestCase):
    env_kwargs = {"admin_group": "adm"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.modes = {p: os.stat(p).st_mode & 0o777 for p in (cls.env.admin_sock,
                                                            cls.env.gateway_sock)}
        # Let others reach the sockets at all, so that the peer-credential check
        # is what stands in their way (the mode check is asserted separately).
        os.chmod(cls.env.tmp, 0o711)
        for p in cls.modes:
            os.chmod(p, 0o666)

    def test_sockets_are_created_with_mode_0660(self):
        for p, m in self.modes.items():
            self.assertEqual(m, 0o660, "%s has mode %o" % (os.path.basename(p), m))

    def test_sockets_belong_to_the_admin_group(self):
        for p in self.modes:
            self.assertEqual(os.stat(p).st_gid, ADM, "mode 0660 lets the group in only if the "
                             "socket is the group's: %s" % os.path.basename(p))

    def test_setpriv_nobody_is_refused_and_an_adm_member_is_let_in(self):
        setpriv = shutil.which("setpriv")
        if not setpriv:
            self.skipTest("setpriv (util-linux) not installed")
        rc, _, _ = self.env.ctl("provider", "show", user=0)   # copies tidegate-ctl into TMP
        self.assertEqual(rc, 0)
        ctl = os.path.join(self.env.tmp, "tidegate-ctl")

        def run(*ids):
            p = subprocess.run([setpriv] + list(ids) + [ctl, "--socket", self.env.admin_sock,
                                                         "--json", "org", "list"],
                               capture_output=True, timeout=30)
            return p.returncode, p.stdout.decode(), p.stderr.decode()
        rc, out, err = run("--reuid=65534", "--regid=65534", "--clear-groups")
        self.assertEqual(rc, 5, (rc, out, err))
        self.assertIn("permission_denied", err)
        rc, out, err = run("--reuid=65534", "--regid=%d" % ADM, "--clear-groups")
        self.assertEqual(rc, 0, (rc, out, err))
        self.assertIsInstance(json.loads(out), list)

    def admin_as(self, uid, gid):
        path = self.env.admin_sock

        def talk():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            try:
                s.sendall(b'{"cmd": "org.list"}\n')
            except OSError:
                pass
            buf, closed = b"", False
            while True:
                try:
                    c = s.recv(65536)
                except ConnectionResetError:
                    closed = True       # closed with our request unread
                    break
                except OSError:
                    break
                if not c:
                    closed = True
                    break
                buf += c
                if b"\n" in buf and b"permission_denied" not in buf:
                    break
            s.close()
            return {"data": buf.decode(), "closed": closed}
        return _as_user(uid, gid, talk)

    def test_outsider_gets_permission_denied_and_is_closed(self):
        res = self.admin_as(NOBODY, NOGROUP)
        self.assertIn("ok", res, res)
        lines = res["ok"]["data"].splitlines()
        self.assertEqual(len(lines), 1, "one reply: %r" % res)
        self.assertTrue(res["ok"]["closed"], "the connection must be closed after the refusal")
        rep = json.loads(lines[0])
        self.assertIs(rep.get("ok"), False)
        self.assertEqual(rep["error"]["code"], "permission_denied")

    def test_ctl_run_by_an_outsider_exits_5(self):
        rc, _, err = self.env.ctl("org", "list", user=NOBODY, group=NOGROUP)
        self.assertEqual(rc, 5, "rc %d stderr %r" % (rc, err))
        self.assertIn("permission_denied", err)

    def test_admin_group_member_is_allowed(self):
        res = self.admin_as(NOBODY, ADM)
        self.assertIn("ok", res, res)
        rep = json.loads(res["ok"]["data"].splitlines()[0])
        self.assertIs(rep.get("ok"), True, "a member of the admin group (peer gid) was refused: %r"
                      % rep)

    def test_gateway_link_refuses_an_outsider(self):
        path = self.env.gateway_sock

        def hello():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.settimeout(10)
            s.connect(path)
            try:
                s.send(json.dumps({"op": "hello", "gateway": "evil", "pid": 1}).encode())
                m = s.recv(65536)
            except OSError as e:
                m = repr(e).encode()
            s.close()
            return m.decode(errors="replace")
        res = _as_user(NOBODY, NOGROUP, hello)
        self.assertIn("ok", res, res)
        got = res["ok"]
        try:
            rep = json.loads(got)
        except ValueError:
            rep = {}
        self.assertIsNot(rep.get("ok"), True, "hello from an outsider accepted: %r" % got)
        if rep:
            self.assertIn("permission_denied", json.dumps(rep))
        self.assertNotIn("evil", [g["name"] for g in self.env.admin_ok("gateways")])

    def test_root_is_allowed(self):
        res = self.admin_as(0, 0)
        self.assertIs(json.loads(res["ok"]["data"].splitlines()[0]).get("ok"), True)
