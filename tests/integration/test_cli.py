"""
test_cli.py - an organization's whole life through tidegate-ctl, the way an
administrator drives it (docs/control.md "Admin socket", "tidegate-ctl"):
add, list, show, set, deactivate, reactivate, delete, key rotation, devices,
usage, billing, alerts, gateways, provider, and the exit codes.
"""
import csv
import io
import json
import os
import re

import harness as h
from harness import GiB, MiB


class OrgLifeCycleThroughCtl(h.EnvTestCase):

    def ctl_ok(self, *args):
        rc, out, err = self.env.ctl(*args)
        self.assertEqual(rc, 0, "tidegate-ctl %s: rc %d, stderr %r" % (" ".join(args), rc, err))
        self.assertIsNotNone(out, "tidegate-ctl --json %s printed no JSON" % " ".join(args))
        return out

    def add(self, name, *extra, seats=5, quota="10G"):
        return self.ctl_ok("org", "add", name, "--seats", str(seats), "--quota", quota, *extra)

    def test_org_add_shows_key_once_in_tg1_base32_form(self):
        org = self.add("acme-add")
        key = org.get("registration_key")
        self.assertRegex(key or "", h.KEY_RE, "registration_key must be TG1- + 64 base32 chars")
        self.assertRegex(org["guid"], h.GUID_RE)
        self.assertEqual(org["name"], "acme-add")
        self.assertEqual(org["max_seats"], 5)
        self.assertEqual(org["quota"], 10 * GiB)
        self.assertEqual(org["state"], "active")
        self.assertEqual(org["seats_used"], 0)
        self.assertEqual(org["used_bytes"], 0)
        self.assertEqual(org["alert_level"], 0)
        kid, _ = h.parse_regkey(key)
        self.assertEqual(org["key_id"], kid.hex(), "key_id is the key's first 8 bytes")
        # Shown once: neither show nor list nor usage repeats it.
        for args in (("org", "show", "acme-add"), ("org", "list"), ("usage",)):
            rc, out, err = self.env.ctl(*args)
            self.assertEqual(rc, 0, err)
            self.assertNotIn("registration_key", json.dumps(out))
            self.assertNotIn(key[4:20], json.dumps(out))

    def test_redis_keeps_only_key_id_and_salted_verifier(self):
        org = self.add("acme-verifier")
        kid, secret = h.parse_regkey(org["registration_key"])
        pg = h.guid_bytes(self.env.provider_guid())
        v = h.regkey_verifier(h.regkey_salt(pg, kid), secret)
        with self.env.rdb() as r:
            rec = r.hgetall("tg:org:" + org["guid"])
            self.assertEqual(rec.get("key_id"), kid.hex())
            self.assertEqual(rec.get("key_verifier"), v.hex(),
                             "key_verifier must be HMAC-SHA256(tg_regkey_salt(provider, key_id), secret)")
            self.assertEqual(r.cmd("HGET", "tg:keyid", kid.hex()), org["guid"])
            self.assertEqual(r.cmd("HGET", "tg:orgname", "acme-verifier"), org["guid"])
            self.assertEqual(r.cmd("SISMEMBER", "tg:orgs", org["guid"]), 1)
            everything = json.dumps(r.dump(exclude=()))
        for form in (secret.hex(), org["registration_key"][4:], org["registration_key"][-40:]):
            self.assertNotIn(form, everything, "the key secret must never be stored")

    def test_org_add_takes_every_field_flag(self):
        guid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
        org = self.ctl_ok("org", "add", "acme-full", "--seats", "7", "--quota", "500G",
                          "--guid", guid, "--hosted", "--contact-name", "Ada Lovelace",
                          "--contact-email", "ada@example.com", "--contact-phone", "+44 20 7946 0000",
                          "--restore-limit-user", "64M", "--restore-limit-admin", "unlimited",
                          "--policy", "compress+ec:4+2", "--terms-accepted")
        want = {"name": "acme-full", "guid": guid, "max_seats": 7, "quota": 500 * GiB,
                "hosted": True, "contact_name": "Ada Lovelace",
                "contact_email": "ada@example.com", "contact_phone": "+44 20 7946 0000",
                "restore_limit_user": 64 * MiB, "restore_limit_admin": -1,
                "policy": "compress+ec:4+2", "terms_accepted": True, "state": "active"}
        shown = self.ctl_ok("org", "show", guid)
        for k, v in want.items():
            self.assertEqual(org.get(k), v, "org add result field %s" % k)
            self.assertEqual(shown.get(k), v, "org show field %s" % k)

    def test_org_list_and_show_by_name_or_guid(self):
        a = self.add("acme-list-a")
        b = self.add("acme-list-b")
        lst = self.ctl_ok("org", "list")
        self.assertIsInstance(lst, list)
        names = [o["name"] for o in lst]
        self.assertIn("acme-list-a", names)
        self.assertIn("acme-list-b", names)
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(self.ctl_ok("org", "show", "acme-list-a")["guid"], a["guid"])
        by_guid = self.ctl_ok("org", "show", b["guid"])
        self.assertEqual(by_guid["name"], "acme-list-b")
        by_name = self.ctl_ok("org", "show", "acme-list-b")
        self.assertEqual(by_guid, by_name)

    def test_org_set_changes_each_field_and_nothing_else(self):
        self.add("acme-set")
        changes = [
            (("--seats", "12"), "max_seats", 12),
            (("--quota", "2T"), "quota", 2 << 40),
            (("--contact-name", "Grace Hopper"), "contact_name", "Grace Hopper"),
            (("--contact-email", "grace@example.org"), "contact_email", "grace@example.org"),
            (("--contact-phone", "555-0100"), "contact_phone", "555-0100"),
            (("--restore-limit-user", "0"), "restore_limit_user", 0),
            (("--restore-limit-admin", "1G"), "restore_limit_admin", GiB),
            (("--restore-limit-user", "unlimited"), "restore_limit_user", -1),
            (("--policy", "ec:8+3"), "policy", "ec:8+3"),
            (("--policy", "compress"), "policy", "compress"),
        ]
        for flags, field, value in changes:
            with self.subTest(flags=flags):
                before = self.ctl_ok("org", "show", "acme-set")
                res = self.ctl_ok("org", "set", "acme-set", *flags)
                self.assertEqual(res.get(field), value)
                after = self.ctl_ok("org", "show", "acme-set")
                self.assertEqual(after.get(field), value)
                for k in before:
                    if k != field:
                        self.assertEqual(after.get(k), before.get(k), "org set %s changed %s"
                                         % (flags, k))

    def test_org_set_booleans_and_rename_through_the_admin_socket(self):
        org = self.add("acme-bool")
        for field, value in (("hosted", True), ("terms_accepted", True), ("hosted", False),
                             ("terms_accepted", False)):
            res = self.env.admin_ok("org.set", {"org": "acme-bool", field: value})
            self.assertIs(res[field], value)
            self.assertIs(self.env.org("acme-bool")[field], value)
        res = self.env.admin_ok("org.set", {"org": "acme-bool", "name": "acme-renamed"})
        self.assertEqual(res["name"], "acme-renamed")
        self.assertEqual(self.env.org("acme-renamed")["guid"], org["guid"])
        self.assertAdminErr(self.env.admin("org.show", {"org": "acme-bool"}), "unknown_org", "org")

    def test_deactivate_reactivate_and_delete_only_when_deactivated(self):
        org = self.add("acme-del")
        key = h.RegKey(org["registration_key"], self.env.provider_guid())
        lk = self.env.link("gw-del")
        self.assertIsNone(h.link_err(lk.register(key, "pc-1", peer="198.51.100.1")))

        rc, _, err = self.env.ctl("org", "delete", "acme-del")
        self.assertEqual(rc, 1, "deleting an active org must be refused (exit 1)")
        self.assertIn("org_active", err)
        self.assertEqual(self.ctl_ok("org", "show", "acme-del")["state"], "active")

        self.assertEqual(self.ctl_ok("org", "deactivate", "acme-del")["state"], "deactivated")
        self.assertEqual(self.ctl_ok("org", "show", "acme-del")["state"], "deactivated")
        self.assertEqual(self.ctl_ok("org", "reactivate", "acme-del")["state"], "active")
        self.assertEqual(self.ctl_ok("org", "show", "acme-del")["state"], "active")
        self.ctl_ok("org", "deactivate", "acme-del")

        rc, out, err = self.env.ctl("org", "delete", "acme-del")
        self.assertEqual(rc, 0, err)
        rc, _, err = self.env.ctl("org", "show", "acme-del")
        self.assertEqual(rc, 1)
        self.assertIn("unknown_org", err)
        self.assertNotIn("acme-del", [o["name"] for o in self.ctl_ok("org", "list")])
        # Its key and devices are gone with it.
        self.assertEqual(h.link_err(lk.register(key, "pc-2", peer="198.51.100.1")), h.E_UNKNOWN_ORG)
        with self.env.rdb() as r:
            left = [k for k in r.cmd("KEYS", "tg:*") if org["guid"] in k]
            self.assertEqual(left, [], "keys of the deleted org remain")
            self.assertIsNone(r.cmd("HGET", "tg:keyid", org["key_id"]))
            self.assertIsNone(r.cmd("HGET", "tg:orgname", "acme-del"))
            self.assertEqual(r.cmd("SISMEMBER", "tg:orgs", org["guid"]), 0)
            for k in r.cmd("KEYS", "tg:dev:*"):
                if r.cmd("TYPE", k) == "hash":
                    self.assertNotEqual(r.cmd("HGET", k, "org"), org["guid"],
                                        "device %s of the deleted org remains" % k)
        # The name is free again.
        self.add("acme-del")

    def test_key_rotate_retires_the_old_key_and_keeps_devices(self):
        org = self.add("acme-rot")
        pg = self.env.provider_guid()
        old = h.RegKey(org["registration_key"], pg)
        lk = self.env.link("gw-rot")
        reg = lk.register(old, "pc-before", peer="198.51.100.2")
        self.assertIsNone(h.link_err(reg), reg)
        cred = h.unwrap_cred(old.v, reg["_cn"], reg["_sn"], h.guid_bytes(org["guid"]),
                             bytes.fromhex(reg["device_id"]), bytes.fromhex(reg["wrapped_cred"]),
                             bytes.fromhex(reg["wrap_tag"]))
        self.assertIsNotNone(cred, "wrapped_cred does not open under the spec's wrap key")

        rot = self.ctl_ok("key", "rotate", "acme-rot")
        self.assertRegex(rot.get("registration_key", ""), h.KEY_RE)
        new = h.RegKey(rot["registration_key"], pg)
        self.assertEqual(rot.get("key_id"), new.key_id.hex())
        self.assertNotEqual(new.key_id, old.key_id)
        self.assertEqual(self.ctl_ok("org", "show", "acme-rot")["key_id"], new.key_id.hex())

        # docs/protocol.md 4.1: the old key record is deleted -> UNKNOWN_ORG.
        self.assertEqual(h.link_err(lk.register(old, "pc-old", peer="198.51.100.2")),
                         h.E_UNKNOWN_ORG, "the old key must stop working at once")
        rep = lk.register(new, "pc-new", peer="198.51.100.2")
        self.assertIsNone(h.link_err(rep), rep)
        self.assertEqual(h.guid_bytes(rep["org"]), h.guid_bytes(org["guid"]))
        # Registered devices keep their credentials.
        names = sorted(d["name"] for d in self.ctl_ok("device", "list", "acme-rot"))
        self.assertEqual(names, ["pc-before", "pc-new"])
        au = lk.auth(reg["device_id"], cred, peer="198.51.100.2")
        self.assertIsNone(h.link_err(au), "a device registered before rotation must still auth: %r" % au)
        self.assertEqual(self.ctl_ok("org", "show", "acme-rot")["seats_used"], 2)

    def test_device_list_release_and_role(self):
        org = self.add("acme-dev", seats=3)
        key = h.RegKey(org["registration_key"], self.env.provider_guid())
        lk = self.env.link("gw-dev")
        ids = {}
        for n in ("pc-a", "pc-b", "pc-c"):
            rep = lk.register(key, n, peer="198.51.100.3")
            self.assertIsNone(h.link_err(rep), rep)
            ids[n] = rep["device_id"]
        devs = self.ctl_ok("device", "list", "acme-dev")
        self.assertEqual(sorted(d["name"] for d in devs), ["pc-a", "pc-b", "pc-c"])
        for d in devs:
            self.assertEqual(d["id"], ids[d["name"]])
            self.assertRegex(d["id"], r"^[0-9a-f]{32}$")
            self.assertIs(d["relay"], False)
            self.assertEqual(d["role"], "user")
            self.assertIn("created", d)

        res = self.ctl_ok("device", "set", "acme-dev", "pc-b", "--role", "admin")
        self.assertEqual(res["role"], "admin")
        self.assertEqual({d["name"]: d["role"] for d in self.ctl_ok("device", "list", "acme-dev")},
                         {"pc-a": "user", "pc-b": "admin", "pc-c": "user"})
        rc, _, err = self.env.ctl("device", "set", "acme-dev", "pc-b", "--role", "root")
        self.assertEqual(rc, 1, "role 'root' must be refused")
        self.assertIn("bad_value", err)

        # Full, then release by name and by id: each frees exactly one seat.
        self.assertEqual(h.link_err(lk.register(key, "pc-d", peer="198.51.100.3")), h.E_SEATS_FULL)
        self.assertEqual(self.ctl_ok("device", "release", "acme-dev", "pc-a"), {})
        self.assertEqual(self.ctl_ok("org", "show", "acme-dev")["seats_used"], 2)
        self.ctl_ok("device", "release", "acme-dev", ids["pc-c"])
        self.assertEqual(self.ctl_ok("org", "show", "acme-dev")["seats_used"], 1)
        self.assertEqual([d["name"] for d in self.ctl_ok("device", "list", "acme-dev")], ["pc-b"])
        rc, _, err = self.env.ctl("device", "release", "acme-dev", "pc-a")
        self.assertEqual(rc, 1)
        self.assertIn("unknown_device", err)
        with self.env.rdb() as r:
            self.assertIsNone(r.cmd("HGET", "tg:dev:" + ids["pc-a"], "cred"),
                              "a released device's credential must be revoked")

    def test_usage_reports_seats_and_ratios_per_org(self):
        org = self.add("acme-usage", seats=4)
        key = h.RegKey(org["registration_key"], self.env.provider_guid())
        lk = self.env.link("gw-usage")
        for n in ("u1", "u2"):
            self.assertIsNone(h.link_err(lk.register(key, n, peer="198.51.100.4")))
        lease = lk.request("lease", org=org["guid"], bytes=8 * MiB)
        self.assertTrue(lease.get("ok"), lease)
        c = lk.request("commit", org=org["guid"], commit_seq=1, stored_bytes=2 * MiB,
                       logical_bytes=12 * MiB, unique_bytes=4 * MiB, chunks=12, dup_chunks=8)
        self.assertTrue(c.get("ok"), c)
        lk.request("release", org=org["guid"], bytes=6 * MiB)
        one = self.ctl_ok("usage", "acme-usage")
        self.assertIsInstance(one, list)
        self.assertEqual(len(one), 1)
        u = one[0]
        self.assertEqual(h.guid_bytes(u["org"]), h.guid_bytes(org["guid"]))
        self.assertEqual(u["name"], "acme-usage")
        self.assertEqual(u["seats_used"], 2)
        self.assertEqual(u["max_seats"], 4)
        self.assertEqual(u["bytes_received"], 12 * MiB)
        self.assertEqual(u["bytes_stored"], 2 * MiB)
        self.assertEqual(u["quota"], 10 * GiB)
        self.assertAlmostEqual(u["dedup_ratio"], 3.0, places=3)        # 12 / 4
        self.assertAlmostEqual(u["compression_ratio"], 2.0, places=3)  # 4 / 2
        # quota_fill as a fraction or a percentage, rounded to 4 decimals at most.
        f = 2 * MiB / (10 * GiB)
        self.assertTrue(abs(u["quota_fill"] - f) <= 5e-5 or abs(u["quota_fill"] - 100 * f) <= 5e-3,
                        "quota_fill %r is not used/quota" % u["quota_fill"])
        # An org with nothing stored has ratios of 1.0, not a division by zero.
        self.add("acme-usage-empty")
        allu = {x["name"]: x for x in self.ctl_ok("usage")}
        self.assertIn("acme-usage", allu)
        self.assertEqual(allu["acme-usage-empty"]["dedup_ratio"], 1.0)
        self.assertEqual(allu["acme-usage-empty"]["compression_ratio"], 1.0)
        self.assertEqual(len(allu), len(self.ctl_ok("org", "list")))

    def test_billing_export_csv_has_header_and_one_row_per_org(self):
        self.add("acme-bill")
        orgs = self.ctl_ok("org", "list")
        res = self.ctl_ok("billing", "export", "--format", "csv")
        self.assertEqual(res.get("format"), "csv")
        rows = list(csv.reader(io.StringIO(res["data"])))
        rows = [r for r in rows if r]
        self.assertEqual(len(rows), len(orgs) + 1, "header row + one row per org")
        header = rows[0]
        self.assertTrue(any("name" in c for c in header), header)
        self.assertTrue(any("seats" in c for c in header), header)
        names = [r[header.index("name")] for r in rows[1:]] if "name" in header else \
            [r for r in rows[1:]]
        self.assertEqual(sorted(names), sorted(o["name"] for o in orgs))

    def test_billing_export_json_has_one_record_per_org(self):
        self.add("acme-bill-json")
        orgs = self.ctl_ok("org", "list")
        res = self.ctl_ok("billing", "export", "--format", "json")
        self.assertEqual(res.get("format"), "json")
        data = res["data"]
        recs = json.loads(data) if isinstance(data, str) else data
        self.assertIsInstance(recs, list)
        self.assertEqual(sorted(r["name"] for r in recs), sorted(o["name"] for o in orgs))
        rc, _, err = self.env.ctl("billing", "export", "--format", "xml")
        self.assertIn(rc, (1, 2), "format xml must be refused")

    def test_alerts_lists_records_and_filters_by_org(self):
        org = self.add("acme-alert", quota="10M")
        lk = self.env.link("gw-alert")
        self.assertTrue(lk.request("lease", org=org["guid"], bytes=10 * MiB)["ok"])
        used = 0
        for seq, n in ((1, 8 * MiB + MiB // 2), (2, 700 * 1024)):  # 85 %, then 91.8 %
            used += n
            c = lk.request("commit", org=org["guid"], commit_seq=seq, stored_bytes=n,
                           logical_bytes=n, unique_bytes=n, chunks=1, dup_chunks=0)
            self.assertTrue(c.get("ok"), c)
        al = self.ctl_ok("alerts", "acme-alert")
        self.assertEqual([a["level"] for a in al], [90, 80], "newest first, one per level crossed")
        for a in al:
            self.assertEqual(a["name"], "acme-alert")
            self.assertEqual(h.guid_bytes(a["org"]), h.guid_bytes(org["guid"]))
            self.assertEqual(a["quota"], 10 * MiB)
            self.assertIn("time", a)
        self.assertEqual(al[0]["used_bytes"], used)
        self.assertEqual(al[1]["used_bytes"], 8 * MiB + MiB // 2)
        self.add("acme-quiet")
        self.assertEqual(self.ctl_ok("alerts", "acme-quiet"), [])
        self.assertGreaterEqual(len(self.ctl_ok("alerts")), 2)

    def test_gateways_lists_connected_gateways_only(self):
        lk = self.env.link("gw-listed", pid=4242)
        gws = {g["name"]: g for g in self.ctl_ok("gateways")}
        self.assertIn("gw-listed", gws)
        # The pid the gateway said in hello, or the one its socket's peer
        # credentials prove: the same number for a real gateway.
        self.assertIn(gws["gw-listed"]["pid"], (4242, os.getpid()))
        self.assertIn("connected_since", gws["gw-listed"])
        self.assertIn("leases", gws["gw-listed"])
        lk.close()
        h.wait_for(lambda: "gw-listed" not in [g["name"] for g in self.ctl_ok("gateways")], 3,
                   what="a closed gateway to leave the gateways list")

    def test_provider_show_reports_guid_counters_and_redis(self):
        p = self.ctl_ok("provider", "show")
        self.assertRegex(p["guid"], h.GUID_RE)
        self.assertIn("created", p)
        self.assertIsInstance(p["bad_key_attempts"], int)
        self.assertIsInstance(p["rate_limited"], int)
        self.assertEqual(p["redis"], "up")
        self.assertEqual(h.guid_bytes(self.env.link("gw-prov").hello_reply["provider_guid"]),
                         h.guid_bytes(p["guid"]))

    def test_human_output_without_json(self):
        self.add("acme-human")
        rc, out, err = self.env.ctl("org", "list", json=False)
        self.assertEqual(rc, 0, err)
        self.assertIn("acme-human", out)
        rc, out, err = self.env.ctl("org", "show", "acme-human", json=False)
        self.assertEqual(rc, 0, err)
        self.assertIn("acme-human", out)


class WholeLifeCycleThroughCtl(h.EnvTestCase):
    """One organization from org add to org delete, every step through
    tidegate-ctl --json, the devices and the gateway through the link."""

    def ctl_ok(self, *args):
        rc, out, err = self.env.ctl(*args)
        self.assertEqual(rc, 0, "tidegate-ctl %s: rc %d, stderr %r" % (" ".join(args), rc, err))
        return out

    def ctl_refused(self, code, *args):
        rc, out, err = self.env.ctl(*args)
        self.assertEqual(rc, 1, "tidegate-ctl %s must be refused: rc %d %r" % (args, rc, out))
        self.assertIn(code, err)

    def test_whole_org_life_cycle_through_ctl(self):
        env = self.env
        pg = env.provider_guid()
        # add, list, show
        org = self.ctl_ok("org", "add", "life", "--seats", "2", "--quota", "10M", "--policy",
                          "compress", "--contact-email", "ops@life.example",
                          "--restore-limit-user", "0")
        key, guid = h.RegKey(org["registration_key"], pg), org["guid"]
        self.assertIn("life", [o["name"] for o in self.ctl_ok("org", "list")])
        shown = self.ctl_ok("org", "show", "life")
        self.assertEqual((shown["guid"], shown["max_seats"], shown["quota"], shown["state"],
                          shown["contact_email"], shown["restore_limit_user"]),
                         (guid, 2, 10 * MiB, "active", "ops@life.example", 0))
        # devices take seats up to max_seats
        lk = env.link("gw-life")
        ids = {}
        for n in ("pc-1", "pc-2"):
            rep = lk.register(key, n, peer="198.51.100.20")
            self.assertTrue(rep.get("ok"), rep)
            ids[n] = rep["device_id"]
        self.assertEqual(h.link_err(lk.register(key, "pc-3", peer="198.51.100.20")),
                         h.E_SEATS_FULL)
        # set: one more seat, and the third device fits
        self.assertEqual(self.ctl_ok("org", "set", "life", "--seats", "3")["max_seats"], 3)
        self.assertTrue(lk.register(key, "pc-3", peer="198.51.100.20").get("ok"))
        self.assertEqual(sorted(d["name"] for d in self.ctl_ok("device", "list", "life")),
                         ["pc-1", "pc-2", "pc-3"])
        # quota: lease, commits, alerts at 80 and 90 %
        self.assertEqual(lk.request("lease", org=guid, bytes=10 * MiB)["granted"], 10 * MiB)
        for seq, n in ((1, 8 * MiB + MiB // 2), (2, MiB)):
            c = lk.request("commit", org=guid, commit_seq=seq, stored_bytes=n,
                           logical_bytes=2 * n, unique_bytes=n, chunks=1, dup_chunks=0)
            self.assertIs(c.get("applied"), True, c)
        self.assertEqual([a["level"] for a in self.ctl_ok("alerts", "life")], [90, 80])
        u = self.ctl_ok("usage", "life")[0]
        self.assertEqual((u["seats_used"], u["max_seats"], u["bytes_stored"], u["bytes_received"]),
                         (3, 3, 9 * MiB + MiB // 2, 19 * MiB))
        # billing: the same numbers in CSV and JSON
        rows = list(csv.DictReader(io.StringIO(self.ctl_ok("billing", "export", "--format",
                                                           "csv")["data"])))
        row = [r for r in rows if r["name"] == "life"][0]
        self.assertEqual((row["org"], int(row["seats_used"]), int(row["bytes_stored"])),
                         (guid, 3, 9 * MiB + MiB // 2))
        recs = json.loads(self.ctl_ok("billing", "export", "--format", "json")["data"])
        rec = [r for r in recs if r["name"] == "life"][0]
        self.assertEqual((rec["bytes_received"], rec["dedup_ratio"]), (19 * MiB, 2.0))
        self.assertIn("gw-life", [g["name"] for g in self.ctl_ok("gateways")])
        # release a device, rotate the key: the old key stops, the new one admits
        self.assertEqual(self.ctl_ok("device", "release", "life", "pc-1"), {})
        new = h.RegKey(self.ctl_ok("key", "rotate", "life")["registration_key"], pg)
        self.assertEqual(h.link_err(lk.register(key, "pc-4", peer="198.51.100.20")),
                         h.E_UNKNOWN_ORG)
        self.assertTrue(lk.register(new, "pc-4", peer="198.51.100.20").get("ok"))
        self.assertEqual(self.ctl_ok("org", "show", "life")["seats_used"], 3)
        # deactivate: pushed, refused; reactivate; delete only when deactivated
        lk.drain_pushes()
        self.assertEqual(self.ctl_ok("org", "deactivate", "life")["state"], "deactivated")
        m = lk.next_push(1.0)
        self.assertEqual((m or {}).get("state"), "deactivated", m)
        self.assertEqual(h.link_err(lk.register(new, "pc-2", peer="198.51.100.20")),
                         h.E_ORG_DEACTIVATED)
        self.assertEqual(h.link_err(lk.request("lease", org=guid, bytes=MiB)),
                         h.E_ORG_DEACTIVATED)
        self.assertEqual(self.ctl_ok("org", "reactivate", "life")["state"], "active")
        self.ctl_refused("org_active", "org", "delete", "life")
        self.ctl_ok("org", "deactivate", "life")
        self.assertEqual(self.ctl_ok("org", "delete", "life"), {})
        self.ctl_refused("unknown_org", "org", "show", "life")
        self.assertNotIn("life", [o["name"] for o in self.ctl_ok("org", "list")])
        self.assertNotIn("life", [u["name"] for u in self.ctl_ok("usage")])
        with env.rdb() as r:
            self.assertEqual([k for k in r.cmd("KEYS", "tg:*") if guid in k], [])
            for d in ids.values():
                self.assertEqual(r.cmd("EXISTS", "tg:dev:" + d), 0)


class CtlHumanOutput(h.EnvTestCase):
    """Every command prints something a person reads (tables, forms) by
    default, and the raw JSON result only with --json."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        env = cls.env
        cls.org = env.add_org("tab-org", seats=3, quota="10M")
        cls.lk = lk = env.link("gw-tab")
        rep = lk.register(cls.org["_key"], "tab-pc", peer="198.51.100.30")
        assert rep.get("ok"), rep
        cls.device_id = rep["device_id"]
        assert lk.request("lease", org=cls.org["guid"], bytes=9 * MiB)["granted"] == 9 * MiB
        c = lk.request("commit", org=cls.org["guid"], commit_seq=1, stored_bytes=9 * MiB,
                       logical_bytes=18 * MiB, unique_bytes=9 * MiB, chunks=1, dup_chunks=0)
        assert c.get("applied"), c

    def human(self, *args):
        rc, out, err = self.env.ctl(*args, json=False)
        self.assertEqual(rc, 0, "%r: rc %d %r" % (args, rc, err))
        self.assertTrue(out.strip(), "%r printed nothing" % (args,))
        if args[:2] != ("billing", "export"):
            with self.assertRaises(ValueError, msg="%r printed JSON without --json" % (args,)):
                json.loads(out)
        return out

    def assertTable(self, out, headers, *cells):
        lines = out.splitlines()
        for hd in headers:
            self.assertIn(hd, lines[0], "header %r missing: %r" % (hd, lines[0]))
        body = "\n".join(lines[1:])
        for c in cells:
            self.assertIn(c, body, out)

    def test_org_list_is_a_table(self):
        self.assertTable(self.human("org", "list"),
                         ("NAME", "GUID", "STATE", "SEATS", "USED", "QUOTA", "FILL", "POLICY"),
                         "tab-org", self.org["guid"], "active", "1/3", "9 MiB", "10 MiB", "90%")

    def test_org_show_set_add_and_state_changes_print_a_form(self):
        for args in (("org", "show", "tab-org"), ("org", "set", "tab-org", "--seats", "3")):
            out = self.human(*args)
            for label, value in (("Name", "tab-org"), ("GUID", self.org["guid"]),
                                 ("Seats", "1 used of 3"), ("Quota", "10 MiB"),
                                 ("Alert", "90%")):
                self.assertRegex(out, r"(?m)^\s*%s\s+.*%s" % (label, re.escape(value)), args)
        out = self.human("org", "add", "tab-new", "--seats", "1", "--quota", "1G")
        self.assertRegex(out, r"TG1-[A-Z2-7]{64}")
        self.assertIn("shown only this once", out)
        self.assertIn("deactivated", self.human("org", "deactivate", "tab-new"))
        self.assertIn("active", self.human("org", "reactivate", "tab-new"))
        out = self.human("key", "rotate", "tab-new")
        self.assertRegex(out, r"TG1-[A-Z2-7]{64}")
        self.human("org", "deactivate", "tab-new")
        self.assertIn("tab-new", self.human("org", "delete", "tab-new"))

    def test_device_commands(self):
        self.assertTable(self.human("device", "list", "tab-org"),
                         ("NAME", "ID", "ROLE", "RELAY", "CREATED"),
                         "tab-pc", self.device_id, "user")
        out = self.human("device", "set", "tab-org", "tab-pc", "--role", "admin")
        self.assertRegex(out, r"(?m)^\s*Role\s+admin")
        self.human("device", "set", "tab-org", "tab-pc", "--role", "user")

    def test_device_release_says_what_it_did(self):
        org = self.env.add_org("tab-rel", seats=1)
        self.assertTrue(self.lk.register(org["_key"], "rel-pc", peer="198.51.100.31").get("ok"))
        out = self.human("device", "release", "tab-rel", "rel-pc")
        self.assertIn("rel-pc", out)
        self.assertIn("seat", out)
        self.assertIn("No devices", self.human("device", "list", "tab-rel"))

    def test_usage_alerts_gateways_provider(self):
        self.assertTable(self.human("usage"), ("NAME", "SEATS", "RECEIVED", "STORED", "QUOTA",
                                               "FILL", "DEDUP", "COMPRESSION"),
                         "tab-org", "18 MiB", "9 MiB", "2.00x")
        self.assertTable(self.human("usage", "tab-org"), ("NAME", "SEATS"), "tab-org")
        self.assertTable(self.human("alerts", "tab-org"), ("TIME", "NAME", "LEVEL", "USED", "QUOTA"),
                         "tab-org", "90%")
        self.assertTable(self.human("alerts"), ("TIME", "NAME", "LEVEL"), "tab-org")
        self.assertTable(self.human("gateways"), ("NAME", "PID", "CONNECTED SINCE", "LEASES"),
                         "gw-tab")
        out = self.human("provider", "show")
        self.assertIn(self.env.provider_guid(), out)
        self.assertRegex(out, r"(?m)^\s*Redis\s+up")

    def test_billing_export_prints_the_export_itself(self):
        out = self.human("billing", "export", "--format", "csv")
        self.assertTrue(out.startswith("org,name,seats_used"), out[:80])
        self.assertIn("tab-org", out)
        recs = json.loads(self.human("billing", "export", "--format", "json"))
        self.assertIn("tab-org", [r["name"] for r in recs])


class CtlExitCodes(h.EnvTestCase):

    def test_exit_0_on_success(self):
        rc, out, err = self.env.ctl("org", "list")
        self.assertEqual(rc, 0, err)
        self.assertIsInstance(out, list)

    def test_exit_1_when_the_control_plane_refuses(self):
        rc, out, err = self.env.ctl("org", "show", "no-such-org")
        self.assertEqual(rc, 1)
        self.assertIn("unknown_org", err)
        self.assertTrue(err.strip(), "the error message goes to stderr")

    def test_exit_2_on_usage_errors_without_touching_the_socket(self):
        nowhere = os.path.join(self.env.tmp, "nowhere.sock")
        for args in (("frobnicate",), ("org",), ("org", "add"), ("org", "add", "x", "--seats"),
                     ("org", "add", "x", "--seats", "5", "--quota", "1G", "--bogus"),
                     ("org", "show"), ("device", "set", "o", "d"),
                     ("billing", "export", "--format")):
            with self.subTest(args=args):
                rc, _, err = self.env.ctl(*args, socket_path=nowhere)
                self.assertEqual(rc, 2, "usage error %r must exit 2 before connecting (stderr %r)"
                                 % (args, err))

    def test_exit_3_when_the_socket_is_missing(self):
        rc, _, err = self.env.ctl("org", "list", socket_path=os.path.join(self.env.tmp, "gone.sock"))
        self.assertEqual(rc, 3, err)

    COMMANDS = [("org", "add"), ("org", "list"), ("org", "show"), ("org", "set"),
                ("org", "deactivate"), ("org", "reactivate"), ("org", "delete"),
                ("key", "rotate"), ("device", "list"), ("device", "release"), ("device", "set"),
                ("usage",), ("billing", "export"), ("alerts",), ("gateways",),
                ("provider", "show")]

    def test_help_on_every_command_sends_nothing(self):
        nowhere = os.path.join(self.env.tmp, "nowhere.sock")
        rc, top, _ = self.env.ctl("--help", json=False, socket_path=nowhere)
        self.assertEqual(rc, 0)
        for words in self.COMMANDS:
            with self.subTest(words=words):
                self.assertIn(" ".join(words), top, "--help must list every command")
                rc, out, err = self.env.ctl(*(words + ("--help",)), json=False,
                                            socket_path=nowhere)
                self.assertEqual(rc, 0, "%r: rc %d %r" % (words, rc, err))
                self.assertIn("Usage: tidegate-ctl", out)
                self.assertIn(" ".join(words), out.splitlines()[0])
        for code in ("0 ok", "1 refused", "2 usage", "3 cannot reach", "4 unavailable",
                     "5 permission denied"):
            self.assertIn(code, " ".join(top.split()), "exit codes must be documented")

    def test_help_on_every_level(self):
        nowhere = os.path.join(self.env.tmp, "nowhere.sock")
        for args, word in ((("--help",), "org"), (("org", "--help"), "add"),
                           (("org", "add", "--help"), "--seats"),
                           (("org", "set", "--help"), "--quota"),
                           (("device", "--help"), "release"), (("key", "--help"), "rotate"),
                           (("billing", "export", "--help"), "--format"),
                           (("usage", "--help"), "usage")):
            with self.subTest(args=args):
                rc, out, err = self.env.ctl(*args, json=False, socket_path=nowhere)
                self.assertEqual(rc, 0, "%r: rc %d %r" % (args, rc, err))
                self.assertIn(word, out + err)
