"""
test_restore.py - restore.authorize (docs/control.md "Web restore",
docs/protocol.md 3.16): a restore may not exceed the requester's limit
(0 = disabled -> RESTORE_OVER_LIMIT, -1 = unlimited), a user device
restores only its own backups, an admin device any backup of its own
organization, and another organization's device or backup is NOT_FOUND.
"""
import secrets

import harness as h
from harness import MiB

USER_LIMIT, ADMIN_LIMIT = 10 * MiB, 100 * MiB


class RestoreAuthorize(h.EnvTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        env = cls.env
        cls.org = env.add_org("rs-org", seats=10, restore_limit_user=USER_LIMIT,
                              restore_limit_admin=ADMIN_LIMIT)
        cls.other = env.add_org("rs-other", seats=10, restore_limit_user="unlimited",
                                restore_limit_admin="unlimited")
        cls.lk = lk = env.link("gw-restore")
        cls.dev = {}
        for org, name in ((cls.org, "user-1"), (cls.org, "admin-1"), (cls.org, "user-2"),
                          (cls.other, "stranger")):
            rep = lk.register(org["_key"], name, peer="192.0.2.120")
            assert rep.get("ok"), rep
            cls.dev[name] = rep["device_id"]
        env.admin_ok("device.set", {"org": "rs-org", "device": "admin-1", "role": "admin"})
        env.admin_ok("device.set", {"org": "rs-other", "device": "stranger", "role": "admin"})
        cls.bk = {}
        for org, dev, label, size in ((cls.org, "user-1", "u1-small", 5 * MiB),
                                      (cls.org, "user-1", "u1-big", 50 * MiB),
                                      (cls.org, "user-2", "u2-old", 5 * MiB),
                                      (cls.org, "user-2", "u2-new", 6 * MiB),
                                      (cls.org, "admin-1", "a1-huge", 200 * MiB),
                                      (cls.other, "stranger", "s-1", 1 * MiB)):
            root = secrets.token_bytes(16).hex()
            rep = lk.request("backup.record", org=org["guid"], device_id=cls.dev[dev],
                             root_id=root, root_len=4096, nfiles=3, logical_bytes=size, name=label)
            assert rep.get("ok"), rep
            cls.bk[label] = (rep["backup_id"], root, size)

    def setUp(self):
        super().setUp()
        self.env.admin_ok("org.set", {"org": "rs-org", "restore_limit_user": USER_LIMIT,
                                      "restore_limit_admin": ADMIN_LIMIT})
        self.env.admin_ok("device.set", {"org": "rs-org", "device": "user-2", "role": "user"})

    def auth(self, who, backup, target=None, admin=False, org=None):
        args = dict(org=(org or self.org)["guid"], device_id=self.dev[who],
                    backup_id=self.bk[backup][0] if isinstance(backup, str) else backup,
                    admin=admin)
        if target is not None:
            args["target_device"] = self.dev[target]
        return self.lk.request("restore.authorize", **args)

    def assertGranted(self, rep, backup):
        self.assertTrue(rep.get("ok"), rep)
        bid, root, size = self.bk[backup]
        self.assertEqual(rep["backup_id"], bid)
        self.assertEqual(rep["root_id"], root)
        self.assertEqual(rep["root_len"], 4096)
        self.assertEqual(rep["total_bytes"], size)
        self.assertIn("created", rep)

    def test_backup_record_returns_distinct_ids_per_device(self):
        # Backups are kept per device (tg:dev:<id>:backups): ids are unique there.
        self.assertNotEqual(self.bk["u1-small"][0], self.bk["u1-big"][0])
        self.assertNotEqual(self.bk["u2-old"][0], self.bk["u2-new"][0])
        for v in self.bk.values():
            self.assertIsInstance(v[0], int)
            self.assertGreater(v[0], 0, "0 means latest, so no backup may have id 0")

    def test_user_restores_own_backup_within_the_user_limit(self):
        self.assertGranted(self.auth("user-1", "u1-small"), "u1-small")

    def test_user_over_the_user_limit_is_refused(self):
        self.assertLinkErr(self.auth("user-1", "u1-big"), h.E_RESTORE_OVER_LIMIT)

    def test_backup_id_0_means_the_newest_of_the_device(self):
        self.assertGranted(self.auth("user-2", 0), "u2-new")
        self.assertGranted(self.auth("admin-1", 0, target="user-2", admin=True), "u2-new")

    def test_admin_device_restores_another_devices_backup_within_the_admin_limit(self):
        self.assertGranted(self.auth("admin-1", "u1-big", target="user-1", admin=True), "u1-big")

    def test_admin_over_the_admin_limit_is_refused(self):
        self.assertLinkErr(self.auth("admin-1", "a1-huge", target="admin-1", admin=True),
                           h.E_RESTORE_OVER_LIMIT)

    def test_user_device_cannot_restore_another_devices_backup(self):
        for rep in (self.auth("user-1", "u2-old", target="user-2"),
                    self.auth("user-1", "u2-old", target="user-2", admin=True),
                    self.auth("user-1", 0, target="user-2")):
            self.assertFalse(rep.get("ok"), rep)
            self.assertIn(h.link_err(rep), (h.E_NOT_FOUND, h.E_BAD_REQUEST), rep)

    def test_role_change_takes_effect_at_once(self):
        self.env.admin_ok("device.set", {"org": "rs-org", "device": "user-2", "role": "admin"})
        self.assertGranted(self.auth("user-2", "u1-small", target="user-1", admin=True), "u1-small")

    def test_limit_0_disables_web_restore(self):
        self.env.admin_ok("org.set", {"org": "rs-org", "restore_limit_user": 0})
        self.assertLinkErr(self.auth("user-1", "u1-small"), h.E_RESTORE_OVER_LIMIT, "limit 0")
        self.env.admin_ok("org.set", {"org": "rs-org", "restore_limit_admin": 0})
        self.assertLinkErr(self.auth("admin-1", "u1-small", target="user-1", admin=True),
                           h.E_RESTORE_OVER_LIMIT, "admin limit 0")

    def test_limit_unlimited_allows_any_size(self):
        self.env.admin_ok("org.set", {"org": "rs-org", "restore_limit_user": "unlimited"})
        self.assertGranted(self.auth("user-1", "u1-big"), "u1-big")

    def test_another_orgs_device_or_backup_is_not_found(self):
        self.assertLinkErr(self.auth("admin-1", 0, target="stranger", admin=True), h.E_NOT_FOUND,
                           "another org's device")
        self.assertLinkErr(self.auth("admin-1", "s-1", target="stranger", admin=True),
                           h.E_NOT_FOUND, "another org's backup via its device")
        # The stranger's own org does not open this org's backups either.
        self.assertLinkErr(self.auth("stranger", "u1-small", target="user-1", admin=True,
                                     org=self.other), h.E_NOT_FOUND)

    def test_unknown_backup_is_not_found(self):
        self.assertLinkErr(self.auth("user-1", 987654321), h.E_NOT_FOUND)
        self.assertLinkErr(self.auth("admin-1", 987654321, target="user-1", admin=True),
                           h.E_NOT_FOUND)

    def test_a_device_without_backups_has_no_latest(self):
        lk = self.lk
        rep = lk.register(self.org["_key"], "fresh", peer="192.0.2.121")
        self.assertTrue(rep.get("ok"), rep)
        self.assertLinkErr(lk.request("restore.authorize", org=self.org["guid"],
                                      device_id=rep["device_id"], backup_id=0, admin=False),
                           h.E_NOT_FOUND)
