"""
test_deactivate.py - a deactivated organization (docs/control.md "Seats and
devices", "Gateway link"): registration and AUTH answer ORG_DEACTIVATED
(a wrong proof still gets BAD_KEY: nothing is revealed before the proof
is checked), and every connected gateway receives an org_update push within
a second of the organization being set, deactivated, reactivated, deleted
or having its key rotated.
"""
import secrets
import time

import harness as h


class DeactivatedOrg(h.EnvTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        env = cls.env
        cls.org = env.add_org("de-org", seats=5, policy="compress")
        cls.g1 = env.link("gw-de-1")
        cls.g2 = env.link("gw-de-2")
        rep = cls.g1.register(cls.org["_key"], "de-pc", peer="192.0.2.140")
        assert rep.get("ok"), rep
        cls.device_id = rep["device_id"]
        cls.cred = h.unwrap_cred(cls.org["_key"].v, rep["_cn"], rep["_sn"],
                                 h.guid_bytes(cls.org["guid"]), bytes.fromhex(rep["device_id"]),
                                 bytes.fromhex(rep["wrapped_cred"]), bytes.fromhex(rep["wrap_tag"]))

    def setUp(self):
        super().setUp()
        if self.env.org("de-org")["state"] != "active":
            self.env.admin_ok("org.reactivate", {"org": "de-org"})
        time.sleep(0.2)
        for g in (self.g1, self.g2):
            g.drain_pushes()

    def push_for(self, g, guid, deadline):
        """The first org_update for guid that arrives before deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            m = g.next_push(left)
            if m is None:
                return None
            if m.get("op") == "org_update" and h.guid_bytes(m.get("org", "0" * 32)) == \
                    h.guid_bytes(guid):
                return m

    def expect_push(self, action, guid, check=None):
        t0 = time.monotonic()
        action()
        deadline = t0 + 1.0
        for g in (self.g1, self.g2):
            m = self.push_for(g, guid, deadline)
            self.assertIsNotNone(m, "%s got no org_update within 1 s" % g.name)
            self.assertNotIn("seq", m, "a push carries no seq")
            if check:
                check(m)
        return m

    def test_deactivate_pushes_org_update_to_every_gateway_within_1s(self):
        def check(m):
            self.assertEqual(m["state"], "deactivated")
            self.assertEqual(m["policy"], "compress")
        self.expect_push(lambda: self.assertEqual(self.env.ctl("org", "deactivate", "de-org")[0], 0),
                         self.org["guid"], check)

    def test_register_into_a_deactivated_org_is_org_deactivated(self):
        self.env.admin_ok("org.deactivate", {"org": "de-org"})
        seats = self.env.org("de-org")["seats_used"]
        lk = self.g1
        rep = lk.register(self.org["_key"], "de-new", peer="192.0.2.141")
        self.assertLinkErr(rep, h.E_ORG_DEACTIVATED)
        self.assertTrue(rep["error"].get("name") and rep["error"].get("message"), rep)
        rep = lk.register(self.org["_key"], "de-pc", peer="192.0.2.141")
        self.assertLinkErr(rep, h.E_ORG_DEACTIVATED, "a known device name")
        self.assertEqual(self.env.org("de-org")["seats_used"], seats)

    def test_a_wrong_proof_for_a_deactivated_org_is_still_bad_key(self):
        self.env.admin_ok("org.deactivate", {"org": "de-org"})
        rep = self.g1.register(self.org["_key"], "de-guess", peer="192.0.2.142",
                               v=secrets.token_bytes(32))
        self.assertLinkErr(rep, h.E_BAD_KEY, "the proof is checked before the state is revealed")

    def test_auth_of_a_deactivated_orgs_device_is_org_deactivated(self):
        self.assertIsNotNone(self.cred)
        self.assertTrue(self.g1.auth(self.device_id, self.cred, peer="192.0.2.143").get("ok"))
        self.env.admin_ok("org.deactivate", {"org": "de-org"})
        self.assertLinkErr(self.g1.auth(self.device_id, self.cred, peer="192.0.2.143"),
                           h.E_ORG_DEACTIVATED)
        r = self.g1.request("policy", org=self.org["guid"])
        self.assertEqual(r.get("state"), "deactivated", r)

    def test_reactivate_pushes_and_admits_again(self):
        self.env.admin_ok("org.deactivate", {"org": "de-org"})
        time.sleep(0.2)
        for g in (self.g1, self.g2):
            g.drain_pushes()
        self.expect_push(lambda: self.env.admin_ok("org.reactivate", {"org": "de-org"}),
                         self.org["guid"], lambda m: self.assertEqual(m["state"], "active"))
        self.assertTrue(self.g1.register(self.org["_key"], "de-back", peer="192.0.2.144").get("ok"))

    def test_set_pushes_the_new_policy(self):
        self.expect_push(lambda: self.env.admin_ok("org.set", {"org": "de-org",
                                                               "policy": "ec:4+2"}),
                         self.org["guid"], lambda m: (self.assertEqual(m["policy"], "ec:4+2"),
                                                      self.assertEqual(m["state"], "active")))
        self.env.admin_ok("org.set", {"org": "de-org", "policy": "compress"})

    def test_key_rotation_pushes(self):
        rot = {}

        def do():
            rot.update(self.env.admin_ok("key.rotate", {"org": "de-org"}))
        self.expect_push(do, self.org["guid"])
        type(self).org["_key"] = h.RegKey(rot["registration_key"], self.env.provider_guid())

    def test_delete_pushes(self):
        tmp = self.env.add_org("de-gone", seats=1)
        self.env.admin_ok("org.deactivate", {"org": "de-gone"})
        time.sleep(0.2)
        for g in (self.g1, self.g2):
            g.drain_pushes()
        self.expect_push(lambda: self.env.admin_ok("org.delete", {"org": "de-gone"}), tmp["guid"])

    def test_a_refused_change_pushes_nothing(self):
        self.env.admin("org.set", {"org": "de-org", "policy": "ec:1+1"})
        self.assertIsNone(self.push_for(self.g1, self.org["guid"], time.monotonic() + 0.7))
