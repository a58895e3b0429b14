"""
test_seats.py - seat admission under concurrency (docs/control.md "Seats and
devices"): the register script is atomic, so 50 simultaneous registrations
against 10 seats admit exactly 10; a known name takes no new seat; a
release frees exactly one; relayed devices each take a seat; a retransmitted
proof gets the identical REG_OK (docs/protocol.md 4.3).
"""
import threading

import harness as h


def register_all(env, key, names, conns=5, peer_of=lambda i: "203.0.113.%d" % (i % 250 + 1),
                 flags=0):
    """Register every name at once: one thread per name over `conns` links."""
    links = [env.link("gw-seat-%d-%d" % (id(names) % 10000, i)) for i in range(conns)]
    results = [None] * len(names)
    start = threading.Barrier(len(names))

    def one(i):
        start.wait()
        try:
            results[i] = links[i % conns].register(key, names[i], peer=peer_of(i), flags=flags)
        except Exception as e:  # recorded, asserted by the caller
            results[i] = {"ok": False, "_exc": repr(e)}

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for l in links:
        l.close()
    return results


class SeatAdmission(h.EnvTestCase):

    def test_50_concurrent_registrations_admit_exactly_max_seats(self):
        org = self.env.add_org("seats-50", seats=10)
        names = ["host-%02d" % i for i in range(50)]
        res = register_all(self.env, org["_key"], names)
        ok = [r for r in res if r.get("ok")]
        full = [r for r in res if h.link_err(r) == h.E_SEATS_FULL]
        other = [r for r in res if not r.get("ok") and h.link_err(r) != h.E_SEATS_FULL]
        self.assertEqual(other, [], "every refusal must be seats full (3)")
        self.assertEqual(len(ok), 10, "exactly max_seats registrations succeed")
        self.assertEqual(len(full), 40)
        for r in full:
            self.assertEqual(r["error"].get("name"), "seats full")
            self.assertTrue(r["error"].get("message"))
        ids = [r["device_id"] for r in ok]
        self.assertEqual(len(set(ids)), 10, "device ids are distinct")
        devs = self.env.admin_ok("device.list", {"org": "seats-50"})
        self.assertEqual(len(devs), 10)
        self.assertEqual(sorted(d["id"] for d in devs), sorted(ids))
        self.assertEqual(self.env.org("seats-50")["seats_used"], 10)
        usage = self.env.admin_ok("usage", {"org": "seats-50"})
        self.assertEqual(usage[0]["seats_used"], 10)
        with self.env.rdb() as r:
            self.assertEqual(r.cmd("HLEN", "tg:org:%s:devices" % org["guid"]), 10)

    def test_reply_fields_have_the_documented_shapes(self):
        org = self.env.add_org("seats-shape", seats=2, policy="compress+ec:4+2")
        lk = self.env.link("gw-shape")
        rep = lk.register(org["_key"], "shape-1", peer="203.0.113.200")
        self.assertTrue(rep.get("ok"), rep)
        self.assertEqual(h.guid_bytes(rep["org"]), h.guid_bytes(org["guid"]))
        self.assertRegex(rep["device_id"], r"^[0-9a-f]{32}$")
        self.assertRegex(rep["wrapped_cred"], r"^[0-9a-f]{64}$")
        self.assertRegex(rep["wrap_tag"], r"^[0-9a-f]{32}$")
        self.assertEqual(rep["policy"], "compress+ec:4+2")
        cred = h.unwrap_cred(org["_key"].v, rep["_cn"], rep["_sn"], h.guid_bytes(org["guid"]),
                             bytes.fromhex(rep["device_id"]), bytes.fromhex(rep["wrapped_cred"]),
                             bytes.fromhex(rep["wrap_tag"]))
        self.assertIsNotNone(cred, "REG_OK must open with HKDF(V, cn||sn) / IV sn[0:12] / AAD "
                             "org_guid||device_id (docs/protocol.md 4.3)")
        with self.env.rdb() as r:
            self.assertEqual(r.cmd("HGET", "tg:dev:" + rep["device_id"], "cred"), cred.hex())
        au = lk.auth(rep["device_id"], cred, peer="203.0.113.200")
        self.assertTrue(au.get("ok"), au)
        self.assertEqual(au["device_name"], "shape-1")
        self.assertEqual(au["role"], "user")
        self.assertIs(au["relay"], False)
        self.assertEqual(au["state"], "active")
        self.assertEqual(au["policy"], "compress+ec:4+2")
        self.assertEqual(h.guid_bytes(au["org"]), h.guid_bytes(org["guid"]))
        self.assertEqual(au["session_key"], h.session_key(cred, au["_cn"], au["_sn"]).hex(),
                         "session key = HKDF(cred, cn||sn, 'tidegate session v1')")
        bad = lk.auth(rep["device_id"], bytes(32), peer="203.0.113.200")
        self.assertLinkErr(bad, h.E_BAD_KEY, "auth with a wrong credential")

    def test_reregistering_a_known_name_takes_no_new_seat_even_when_full(self):
        org = self.env.add_org("seats-again", seats=2)
        lk = self.env.link("gw-again")
        first = lk.register(org["_key"], "laptop", peer="203.0.113.201")
        self.assertTrue(first.get("ok"), first)
        self.assertTrue(lk.register(org["_key"], "desktop", peer="203.0.113.201").get("ok"))
        self.assertEqual(self.env.org("seats-again")["seats_used"], 2)
        again = lk.register(org["_key"], "laptop", peer="203.0.113.201")
        self.assertTrue(again.get("ok"), "a known name must be admitted while full: %r" % again)
        self.assertEqual(again["device_id"], first["device_id"])
        self.assertEqual(self.env.org("seats-again")["seats_used"], 2)
        gb = h.guid_bytes(org["guid"])
        did = bytes.fromhex(first["device_id"])
        c1 = h.unwrap_cred(org["_key"].v, first["_cn"], first["_sn"], gb, did,
                           bytes.fromhex(first["wrapped_cred"]), bytes.fromhex(first["wrap_tag"]))
        c2 = h.unwrap_cred(org["_key"].v, again["_cn"], again["_sn"], gb, did,
                           bytes.fromhex(again["wrapped_cred"]), bytes.fromhex(again["wrap_tag"]))
        self.assertIsNotNone(c1)
        self.assertIsNotNone(c2)
        self.assertNotEqual(c1, c2, "re-registration issues a new credential")
        self.assertLinkErr(lk.register(org["_key"], "third", peer="203.0.113.201"), h.E_SEATS_FULL)

    def test_concurrent_reregistrations_of_one_name_take_one_seat(self):
        org = self.env.add_org("seats-same", seats=5)
        res = register_all(self.env, org["_key"], ["same-name"] * 20)
        self.assertTrue(all(r.get("ok") for r in res), [r for r in res if not r.get("ok")][:3])
        self.assertEqual(len({r["device_id"] for r in res}), 1)
        self.assertEqual(self.env.org("seats-same")["seats_used"], 1)

    def test_retransmitted_proof_gets_the_identical_reply(self):
        org = self.env.add_org("seats-retx", seats=3)
        lk = self.env.link("gw-retx")
        cn, sn = b"\x11" * 16, b"\x22" * 16
        a = lk.register(org["_key"], "retx", peer="203.0.113.202", cn=cn, sn=sn)
        b = lk.register(org["_key"], "retx", peer="203.0.113.202", cn=cn, sn=sn)
        self.assertTrue(a.get("ok") and b.get("ok"), (a, b))
        for f in ("device_id", "wrapped_cred", "wrap_tag"):
            self.assertEqual(a[f], b[f], "docs/protocol.md 4.3: a retransmitted proof (same "
                             "key_id, cn, sn) gets the identical REG_OK (%s differs)" % f)
        self.assertEqual(self.env.org("seats-retx")["seats_used"], 1)

    def test_release_frees_exactly_one_seat(self):
        org = self.env.add_org("seats-rel", seats=10)
        res = register_all(self.env, org["_key"], ["rel-%02d" % i for i in range(10)])
        self.assertEqual(sum(1 for r in res if r.get("ok")), 10)
        victim = res[3]
        self.assertEqual(self.env.admin_ok("device.release",
                                           {"org": "seats-rel", "device": victim["device_id"]}), {})
        self.assertEqual(self.env.org("seats-rel")["seats_used"], 9)
        # Two newcomers race for the one free seat.
        res2 = register_all(self.env, org["_key"], ["new-a", "new-b", "new-c", "new-d"], conns=2)
        self.assertEqual(sum(1 for r in res2 if r.get("ok")), 1, res2)
        self.assertEqual(sum(1 for r in res2 if h.link_err(r) == h.E_SEATS_FULL), 3)
        self.assertEqual(self.env.org("seats-rel")["seats_used"], 10)
        self.assertEqual(len(self.env.admin_ok("device.list", {"org": "seats-rel"})), 10)
        # The released device's credential is revoked.
        lk = self.env.link("gw-rel")
        cred = h.unwrap_cred(org["_key"].v, victim["_cn"], victim["_sn"], h.guid_bytes(org["guid"]),
                             bytes.fromhex(victim["device_id"]),
                             bytes.fromhex(victim["wrapped_cred"]), bytes.fromhex(victim["wrap_tag"]))
        self.assertIsNotNone(cred)
        self.assertLinkErr(lk.auth(victim["device_id"], cred, peer="203.0.113.203"), h.E_BAD_KEY,
                           "auth of a released device")

    def test_relayed_devices_each_take_a_seat_in_a_hosted_org(self):
        org = self.env.add_org("seats-hosted", seats=3, hosted=True)
        res = register_all(self.env, org["_key"], ["relayed-%d" % i for i in range(5)], conns=1,
                           peer_of=lambda i: "203.0.113.210", flags=h.TG_RF_RELAY)
        self.assertEqual(sum(1 for r in res if r.get("ok")), 3)
        self.assertEqual(sum(1 for r in res if h.link_err(r) == h.E_SEATS_FULL), 2)
        devs = self.env.admin_ok("device.list", {"org": "seats-hosted"})
        self.assertEqual(len(devs), 3)
        self.assertTrue(all(d["relay"] is True for d in devs), devs)
        self.assertEqual(self.env.org("seats-hosted")["seats_used"], 3)

    def test_relay_flag_is_refused_for_an_org_that_is_not_hosted(self):
        org = self.env.add_org("seats-nothosted", seats=3)
        lk = self.env.link("gw-nothosted")
        rep = lk.register(org["_key"], "sneaky", peer="203.0.113.211", flags=h.TG_RF_RELAY)
        self.assertLinkErr(rep, h.E_BAD_REQUEST, "docs/protocol.md 5.6: relay only for hosted orgs")
        self.assertEqual(self.env.org("seats-nothosted")["seats_used"], 0)
