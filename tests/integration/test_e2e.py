#!/usr/bin/env python3
"""
test_e2e.py - tidegate end to end, as TAP: the real tidegate-gateway (DPDK,
net_af_packet on a veth), real tidegate-push / tidegate-restore in a network
namespace, a real tidegate-control and redis-server (gwenv.py, harness.py).

One case per requirement of issue 4's "Integration tests" list, plus the
gateway's clean stop on SIGTERM. Every case makes its own organization, so
their data never mix; the gateway is shared (started once, checked before
every case, restarted and reported if it died).

Needs root (namespaces, veths, hugepages) and a build with the gateway and
the client ($TG_BUILD); otherwise every case is skipped with the reason.
`-k WORD` runs only the cases whose name contains WORD.
"""
import os
import re
import secrets
import shutil
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gwenv  # noqa: E402
import harness  # noqa: E402
from gwenv import (EXIT_BAD_KEY, EXIT_DEACTIVATED, EXIT_NOT_FOUND, EXIT_QUOTA,  # noqa: E402
                   EXIT_RESTORE_LIMIT, EXIT_SEATS_FULL, EXIT_UNKNOWN_ORG, MiB,
                   compare_trees, make_real_tree, make_tree, tree_bytes)


def _err_line(tool, words):
    """stderr must name the error on a line of its own: 'tidegate-push: ...words...'."""
    return re.compile(r"^%s: .*(%s)" % (re.escape(tool), words), re.I | re.M)


class E2E(unittest.TestCase):
    bench = None
    real = None            # (org, creds, tree, first push result)

    @classmethod
    def setUpClass(cls):
        why = gwenv.skip_reason()
        if why:
            raise unittest.SkipTest(why)
        cls.bench = gwenv.GwEnv()
        try:
            cls.bench.start()
        except BaseException:
            cls.bench.stop()
            cls.bench = None
            raise
        cls.provider = cls.bench.provider_guid()

    @classmethod
    def tearDownClass(cls):
        if cls.bench:
            problem = cls.bench.stop()
            cls.bench = None
            if problem:
                raise AssertionError(problem)

    def setUp(self):
        if self.bench.gw is not None:
            self.bench.check_gateway(self.id())

    # -- helpers --

    @staticmethod
    def note(fmt, *args):
        """One TAP diagnostic line: the numbers a case measured."""
        sys.stdout.write("# " + (fmt % args).replace("\n", " ") + "\n")
        sys.stdout.flush()

    def ok(self, res, what):
        self.assertEqual(res.rc, 0, "%s failed:\n%s\n%s" % (what, res, self.bench.logs()))
        self.assertIsInstance(res.json, dict, "%s: no --json object on stdout:\n%s" % (what, res))
        return res.json

    def fails(self, res, code, tool, words, what):
        self.assertEqual(res.rc, code, "%s: expected exit %d:\n%s\n%s"
                         % (what, code, res, self.bench.logs(8)))
        self.assertRegex(res.stderr, _err_line(tool, words),
                         "%s: stderr does not name the error clearly" % what)
        self.note("%s: exit %d, %s", what, res.rc, res.stderr.strip().splitlines()[-1])

    def same_tree(self, src, target, what):
        diffs = compare_trees(src, target)
        self.assertEqual(diffs, [], "%s: the restore differs from the source:\n%s"
                         % (what, "\n".join(diffs)))

    def org(self, tag, *args, seats=5, quota="4G"):
        return self.bench.add_org("%s-%s" % (tag, self.bench.id), seats, quota, *args)

    def real_backup(self):
        """The first backup of the real tree (made once, by whichever case
        needs it first)."""
        if E2E.real is None:
            b = self.bench
            tree = make_real_tree(os.path.join(b.scratch("real"), "tree"))
            org = self.org("real")
            creds = b.creds_path("real")
            res = b.push(tree, "dev-real", creds, org=org)
            E2E.real = (org, creds, tree, self.ok(res, "first backup of the real tree"))
        return E2E.real

    # -- the cases --

    def test_01_real_tree_restores_byte_identical_with_modes_and_mtimes(self):
        org, creds, tree, first = self.real_backup()
        nreg = sum(1 for d, _, fs in os.walk(tree) for n in fs
                   if not os.path.islink(os.path.join(d, n)))
        self.assertEqual(first["logical_bytes"], tree_bytes(tree), first)
        self.assertGreater(tree_bytes(tree), 20 * MiB, "the tree is not tens of MB")
        self.assertGreater(first["chunks"], 10, first)
        self.assertGreaterEqual(first["files"], nreg, first)
        target = self.bench.scratch("restore-real")
        res = self.bench.restore(target, "dev-real", creds)
        rj = self.ok(res, "restore of the real tree")
        self.assertEqual(rj["backup_id"], first["backup_id"], rj)
        self.assertEqual(rj["bytes"], first["logical_bytes"], rj)
        self.same_tree(tree, target, "real tree")
        self.note("real tree: %d bytes, %d files, %d chunks, push %.1fs, restore %.1fs",
                  first["logical_bytes"], first["files"], first["chunks"], first["seconds"],
                  rj["seconds"])

    def test_02_second_backup_of_unchanged_tree_sends_under_5_percent(self):
        org, creds, tree, first = self.real_backup()
        res = self.bench.push(tree, "dev-real", creds)
        second = self.ok(res, "second backup of the unchanged tree")
        self.assertEqual(second["logical_bytes"], first["logical_bytes"], second)
        self.assertNotEqual(second["backup_id"], first["backup_id"], second)
        self.assertLess(second["data_bytes"], 0.05 * second["logical_bytes"],
                        "second backup sent %d DATA bytes of %d logical (%.2f %%): %r"
                        % (second["data_bytes"], second["logical_bytes"],
                           100.0 * second["data_bytes"] / max(1, second["logical_bytes"]), second))
        self.assertLess(second["chunks_needed"], 0.05 * second["chunks_offered"] + 3, second)
        self.note("second backup: data_bytes %d of %d, needed %d of %d chunks",
                  second["data_bytes"], second["logical_bytes"], second["chunks_needed"],
                  second["chunks_offered"])

    def test_03_two_orgs_at_once_each_restores_only_its_own(self):
        b = self.bench
        oa, ob = self.org("orga"), self.org("orgb")
        ta = make_tree(os.path.join(b.scratch("ta"), "t"), "org-a", nfiles=12, size=512 * 1024)
        tb = make_tree(os.path.join(b.scratch("tb"), "t"), "org-b", nfiles=12, size=512 * 1024)
        ca, cb = b.creds_path("orga"), b.creds_path("orgb")
        ra, rb = b.parallel((b.push, (ta, "dev-a", ca), {"org": oa}),
                            (b.push, (tb, "dev-b", cb), {"org": ob}))
        ja, jb = self.ok(ra, "org A's backup"), self.ok(rb, "org B's backup")
        self.assertNotEqual(ja["org"], jb["org"])
        for dev, creds, src, what in (("dev-a", ca, ta, "org A"), ("dev-b", cb, tb, "org B")):
            target = b.scratch("restore")
            self.ok(b.restore(target, dev, creds), what + "'s restore")
            self.same_tree(src, target, what)
        # Even with the org-admin role, A cannot name B's device or backup.
        b.ctl_ok("device", "set", oa["name"], "dev-a", "--role", "admin")
        target = b.scratch("cross")
        res = b.restore(target, "dev-a", ca, admin=True, from_device=jb["device_id"])
        self.fails(res, EXIT_NOT_FOUND, "tidegate-restore", "not found",
                   "org A restoring org B's device")
        self.assertEqual(os.listdir(target), [], "a refused restore wrote files")
        if jb["backup_id"] != ja["backup_id"]:
            res = b.restore(target, "dev-a", ca, backup=jb["backup_id"])
            self.fails(res, EXIT_NOT_FOUND, "tidegate-restore", "not found",
                       "org A restoring org B's backup id")
        # No dedup across tenants: B's data is new to A, every chunk needed.
        res = b.push(tb, "dev-a", ca, label="b-copy")
        j = self.ok(res, "org A backing up org B's files")
        self.assertEqual(j["chunks_needed"], j["chunks_offered"],
                         "org A was spared chunks that only org B has: %r" % j)

    def test_04_hosted_org_relays_three_devices_each_restores_alone(self):
        b = self.bench
        oh = self.org("hosted", "--hosted", seats=3)
        creds = b.creds_path("relay")
        names = ["srv-%d" % i for i in range(3)]
        trees = [make_tree(os.path.join(b.scratch(n), "t"), "hosted-" + n, nfiles=6)
                 for n in names]
        # One relay process, as the customer's backup server runs it: it
        # registers each device and backs up device i's tree i.
        res = b.push(trees, names, creds, org=oh, relay=True)
        self.ok(res, "the relay's backup of 3 devices")
        js = res.jsons
        self.assertEqual(len(js), 3, "one --json object per device expected:\n%s" % res)
        self.assertEqual(len({j["device_id"] for j in js}), 3, js)
        self.assertEqual([j["logical_bytes"] for j in js], [tree_bytes(t) for t in trees], js)
        self.assertEqual(b.org(oh["name"])["seats_used"], 3)
        devs = b.ctl_ok("device", "list", oh["name"])
        self.assertEqual(sorted(d["name"] for d in devs), names, devs)
        self.assertTrue(all(d["relay"] for d in devs), devs)
        with open(creds) as f:
            lines = [ln.split() for ln in f if ln.strip()]
        self.assertEqual(sorted(ln[3] for ln in lines), names, lines)
        self.assertTrue(all(ln[4] == "1" for ln in lines), lines)
        for n, t in zip(names, trees):
            target = b.scratch("restore-" + n)
            self.ok(b.restore(target, n, creds, relay=True), "restore of relayed " + n)
            self.same_tree(t, target, "relayed device " + n)
        res = b.register("srv-3", creds, org=oh, relay=True)
        self.fails(res, EXIT_SEATS_FULL, "tidegate-push", "seats full",
                   "a fourth relayed device in 3 seats")
        self.assertEqual(b.org(oh["name"])["seats_used"], 3)

    def test_05_seats_full_wrong_key_deactivated_org_are_clear_errors(self):
        b = self.bench
        with self.subTest("seats full"):
            o = self.org("seats", seats=1)
            c = b.creds_path("seats")
            self.ok(b.register("first", c, org=o), "the one seat")
            self.fails(b.register("second", c, org=o), EXIT_SEATS_FULL, "tidegate-push",
                       "seats full", "a second device in one seat")
            self.assertEqual(b.org(o["name"])["seats_used"], 1)
        with self.subTest("wrong registration key"):
            o = self.org("wrongkey")
            kid, _ = harness.parse_regkey(o["registration_key"])
            wrong = harness.format_regkey(kid, secrets.token_bytes(32))
            c = b.creds_path("wrongkey")
            self.fails(b.register("dev", c, key=wrong), EXIT_BAD_KEY, "tidegate-push",
                       "key", "the org's key id with a wrong secret")
            unknown = harness.format_regkey(secrets.token_bytes(8), secrets.token_bytes(32))
            self.fails(b.register("dev", c, key=unknown), EXIT_UNKNOWN_ORG, "tidegate-push",
                       "org|key", "a key no organization has")
            self.assertEqual(b.org(o["name"])["seats_used"], 0)
        with self.subTest("deactivated organization"):
            o = self.org("deact")
            c = b.creds_path("deact")
            t = make_tree(os.path.join(b.scratch("deact"), "t"), "deact", nfiles=4)
            self.ok(b.push(t, "dev", c, org=o), "backup before deactivation")
            b.ctl_ok("org", "deactivate", o["name"])
            self.fails(b.push(t, "dev", c), EXIT_DEACTIVATED, "tidegate-push",
                       "deactivated", "backup of a deactivated org")
            self.fails(b.restore(b.scratch("deact-r"), "dev", c), EXIT_DEACTIVATED,
                       "tidegate-restore", "deactivated", "restore of a deactivated org")
            self.fails(b.register("newdev", c, org=o), EXIT_DEACTIVATED, "tidegate-push",
                       "deactivated", "registration into a deactivated org")

    def test_06_quota_reached_mid_backup_keeps_what_was_acknowledged(self):
        """Quota 4 MiB, 12 MiB of incompressible files. The push must fail
        with exit 14 after the gateway acknowledged S > 0 chunks (telemetry
        chunks_stored). After raising the quota the same tree is pushed
        again: the gateway already has exactly those S chunks (up to the two
        manifest chunks of the first try, whose stream header carries its
        own time), needs every other one, and the completed backup restores
        byte-identically, so the acknowledged chunks were durable and right."""
        b = self.bench
        o = self.org("quota", quota="4M")
        c = b.creds_path("quota")
        t = make_tree(os.path.join(b.scratch("quota"), "t"), "quota", nfiles=12,
                      size=MiB, compressible=False)
        before = b.stats_settled()
        res = b.push(t, "dev", c, org=o)
        self.fails(res, EXIT_QUOTA, "tidegate-push", "quota", "backup over the quota")
        after = b.stats_settled()
        acked = after["chunks_stored"] - before["chunks_stored"]
        self.assertGreater(acked, 0, "the quota error came before any chunk was stored")
        b.ctl_ok("org", "set", o["name"], "--quota", "1G")
        j = self.ok(b.push(t, "dev", c), "the same backup after raising the quota")
        kept = j["chunks_offered"] - j["chunks_needed"]
        self.note("quota: %d chunks acknowledged before exit 14, %d of %d offered already "
                  "there on the retry", acked, kept, j["chunks_offered"])
        self.assertTrue(acked - 2 <= kept <= acked,
                        "%d chunks were acknowledged before the quota error, the gateway "
                        "still had %d of them: %r" % (acked, kept, j))
        target = b.scratch("quota-r")
        self.ok(b.restore(target, "dev", c), "restore after the quota error")
        self.same_tree(t, target, "tree backed up across the quota error")

    def test_07_restore_over_web_limit_refused_admin_limit_applies(self):
        b = self.bench
        o = self.org("rlimit", "--restore-limit-user", "1M", "--restore-limit-admin", "64M")
        c = b.creds_path("rlimit")
        t = make_tree(os.path.join(b.scratch("rl"), "t"), "rlimit", nfiles=6, size=512 * 1024)
        self.ok(b.push(t, "dev", c, org=o), "backup of 3 MiB")
        target = b.scratch("rl-user")
        self.fails(b.restore(target, "dev", c), EXIT_RESTORE_LIMIT, "tidegate-restore",
                   "limit", "a 3 MiB restore with a 1 MiB user limit")
        self.assertEqual(os.listdir(target), [], "a refused restore wrote files")
        b.ctl_ok("device", "set", o["name"], "dev", "--role", "admin")
        self.ok(b.restore(target, "dev", c, admin=True), "the org admin's restore (64 MiB limit)")
        self.same_tree(t, target, "admin restore")
        # The admin's limit is a limit too: below the backup's size it refuses.
        b.ctl_ok("org", "set", o["name"], "--restore-limit-admin", "2M")
        self.fails(b.restore(b.scratch("rl-admin2"), "dev", c, admin=True), EXIT_RESTORE_LIMIT,
                   "tidegate-restore", "limit", "a 3 MiB restore with a 2 MiB admin limit")

    def test_08_telemetry_counters_match_what_was_sent(self):
        b = self.bench
        tel = b.telemetry()
        info = tel.cmd("/tidegate/info")
        self.assertEqual(info.get("provider_guid"), self.provider, info)
        self.assertEqual(info.get("name"), b.name, info)
        o = self.org("telemetry")
        c = b.creds_path("telemetry")
        t = make_tree(os.path.join(b.scratch("tel"), "t"), "telemetry", nfiles=8,
                      size=512 * 1024)
        before = b.stats_settled()
        j = self.ok(b.push(t, "dev", c, org=o), "backup")
        d = gwenv.counter_delta(before, b.stats_settled())
        want = {
            "proto_rx_pkts": j["packets"],          # every datagram the client sent
            "proto_rx_bytes": j["wire_bytes"],      # and their UDP payload bytes
            "data_bytes": j["data_bytes"],
            "offered_ids": j["chunks_offered"],
            "needed_ids": j["chunks_needed"],
            "chunks_stored": j["chunks_needed"],    # new org: each needed chunk is stored
            "registrations": 1,
        }
        got = {k: d.get(k) for k in want}
        self.note("telemetry deltas %r, client retransmits %d", got, j["retransmits"])
        if j["retransmits"] == 0:
            self.assertEqual(got, want, "telemetry deltas vs the client's --json %r" % j)
        else:
            # Frames lost on the veth were sent but never received: the
            # gateway saw at most what was sent, and each loss cost a resend.
            slack = j["retransmits"] + 8
            for k in ("proto_rx_pkts", "proto_rx_bytes", "data_bytes"):
                self.assertLessEqual(got[k], want[k], (k, got, j))
            self.assertGreaterEqual(got["proto_rx_pkts"], want["proto_rx_pkts"] - slack, (got, j))
            self.assertGreaterEqual(got["offered_ids"], want["offered_ids"], (got, j))
            for k in ("needed_ids", "chunks_stored", "registrations"):
                self.assertEqual(got[k], want[k], (k, got, j))
        self.assertGreaterEqual(d.get("sessions_opened", 0), 1, d)
        before = b.stats_settled("chunks_served")
        rj = self.ok(b.restore(b.scratch("tel-r"), "dev", c), "restore")
        d = gwenv.counter_delta(before, b.stats_settled("chunks_served"))
        self.assertEqual(d.get("restores"), 1, d)
        self.assertGreaterEqual(d.get("chunks_served", 0), rj["chunks"], (d, rj))

    def test_09_restore_survives_m_lost_shard_directories(self):
        """Policy compress+ec:2+2 over the 4 shard directories: every chunk
        has a shard in each. With the org's shards gone from 2 directories
        (M) the restore is still byte-identical; with 3 gone it fails with a
        clear error instead of writing wrong data."""
        b = self.bench
        o = self.org("ec", "--policy", "compress+ec:2+2")
        c = b.creds_path("ec")
        t = make_tree(os.path.join(b.scratch("ec"), "t"), "ec", nfiles=8, size=256 * 1024)
        self.ok(b.push(t, "dev", c, org=o), "backup with ec:2+2")
        orgdirs = [os.path.join(d, o["guid"].replace("-", "")) for d in b.store_dirs]
        for d in orgdirs:
            self.assertTrue(os.path.isdir(d), "no shards of the org in %s (layout "
                            "<dir>/<org hex>/..., tg_store.h): %s" % (d, os.listdir(os.path.dirname(d))))
        for d in orgdirs[:2]:
            shutil.rmtree(d)
        target = b.scratch("ec-r")
        self.ok(b.restore(target, "dev", c), "restore with 2 of 4 shard directories lost")
        self.same_tree(t, target, "restore with M shards lost")
        shutil.rmtree(orgdirs[2])
        res = b.restore(b.scratch("ec-r3"), "dev", c)
        self.assertIn(res.rc, (gwenv.EXIT_NOT_FOUND, gwenv.EXIT_STORAGE),
                      "restore with 3 of 4 shard directories lost:\n%s" % res)
        self.note("3 of 4 shard directories lost: exit %d, %s", res.rc,
                  res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "")

    def test_10_gateway_exits_0_on_sigterm_and_commits_usage(self):
        b = self.bench
        org, _, _, first = self.real_backup()
        problem = b.stop_gateway()
        self.assertIsNone(problem, problem)
        shown = b.org(org["name"])
        self.assertGreater(shown["used_bytes"], 0, shown)
        self.assertGreaterEqual(shown["bytes_received"], first["logical_bytes"], shown)


if __name__ == "__main__":
    harness.main([sys.modules[__name__]])
