"""
test_leases.py - quota leases over the gateway link (docs/control.md "Quota
leases"): concurrent gateways never reserve past the quota, commits move
bytes into used exactly once, a vanished gateway's reservation comes back
after its lease's lifetime plus the 1 s sweep, alerts are recorded once per
level crossed, and a full quota answers QUOTA_EXCEEDED.
"""
import json
import re
import threading
import time

import harness as h
from harness import MiB

TTL_MS = 2000


def gw(env, name):
    return env.link(name)


class QuotaLeases(h.EnvTestCase):
    env_kwargs = {"lease_ttl_ms": TTL_MS, "lease_bytes": "64M"}

    def lease(self, lk, org, n):
        return lk.request("lease", org=org["guid"], bytes=n)

    def commit(self, lk, org, seq, stored, logical=None, unique=None, chunks=1, dup=0):
        return lk.request("commit", org=org["guid"], commit_seq=seq, stored_bytes=stored,
                          logical_bytes=stored if logical is None else logical,
                          unique_bytes=stored if unique is None else unique,
                          chunks=chunks, dup_chunks=dup)

    def redis_now_ms(self):
        with self.env.rdb() as r:
            s, us = r.cmd("TIME")
        return int(s) * 1000 + int(us) // 1000

    def test_hello_announces_provider_lease_ttl_and_lease_bytes(self):
        lk = gw(self.env, "gw-hello")
        hr = lk.hello_reply
        self.assertEqual(hr.get("op"), "hello")
        self.assertIs(hr.get("ok"), True)
        self.assertEqual(h.guid_bytes(hr["provider_guid"]), h.guid_bytes(self.env.provider_guid()))
        self.assertEqual(hr["lease_ttl_ms"], TTL_MS)
        self.assertEqual(hr["lease_bytes"], 64 * MiB)

    def test_concurrent_leases_from_many_gateways_never_exceed_the_quota(self):
        org = self.env.add_org("lease-race", quota="100M")
        links = [gw(self.env, "gw-race-%02d" % i) for i in range(16)]
        res = [None] * 16
        bar = threading.Barrier(16)

        def one(i):
            bar.wait()
            res[i] = self.lease(links[i], org, 7 * MiB)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        [t.start() for t in ts]
        [t.join(30) for t in ts]
        granted = [r["granted"] for r in res if r.get("ok")]
        refused = [r for r in res if not r.get("ok")]
        for r in refused:
            self.assertLinkErr(r, h.E_QUOTA_EXCEEDED)
        self.assertTrue(all(0 < g <= 7 * MiB for g in granted), granted)
        self.assertLessEqual(sum(granted), 100 * MiB, "reserved past the quota")
        # 14 x 7 MiB, then the 2 MiB remainder (>= the 1 MiB minimum useful grant), then nothing.
        self.assertEqual(sum(granted), 100 * MiB, "a useful remainder must be granted")
        self.assertEqual(len(refused), 1)
        for r in res:
            if r.get("ok"):
                self.assertEqual(h.guid_bytes(r["org"]), h.guid_bytes(org["guid"]))
                self.assertGreater(r["expires_ms"], 0)
        self.assertEqual(self.env.org("lease-race")["reserved_bytes"], sum(granted))
        self.assertEqual(self.env.org("lease-race")["used_bytes"], 0)

    def test_concurrent_lease_commit_release_cycles_account_every_byte(self):
        org = self.env.add_org("lease-cycle", quota="64M")
        n = 6
        links = [gw(self.env, "gw-cycle-%d" % i) for i in range(n)]
        stored = [0] * n
        errors = []

        def worker(i):
            seq = 0
            try:
                while True:
                    r = self.lease(links[i], org, 3 * MiB)
                    if not r.get("ok"):
                        if h.link_err(r) != h.E_QUOTA_EXCEEDED:
                            errors.append(r)
                        return
                    g = r["granted"]
                    use = max(1, g // 2)
                    seq += 1
                    c = self.commit(links[i], org, seq, use)
                    if not c.get("ok") or c.get("applied") is not True:
                        errors.append(c)
                        return
                    stored[i] += use
                    rel = links[i].request("release", org=org["guid"], bytes=g - use)
                    if not rel.get("ok"):
                        errors.append(rel)
                        return
            except Exception as e:
                errors.append(repr(e))

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        [t.start() for t in ts]
        [t.join(120) for t in ts]
        self.assertEqual(errors, [])
        o = self.env.org("lease-cycle")
        self.assertEqual(o["used_bytes"], sum(stored), "used_bytes must be the sum of commits")
        self.assertLessEqual(o["used_bytes"], 64 * MiB)
        self.assertGreater(o["used_bytes"], 63 * MiB, "quota_exceeded before the quota was used")
        self.assertEqual(o["reserved_bytes"], 0, "every unused byte was released")
        self.assertEqual(o["bytes_stored"], sum(stored))

    def test_commit_moves_bytes_from_the_lease_into_used_and_counters(self):
        org = self.env.add_org("lease-commit", quota="1G")
        lk = gw(self.env, "gw-commit")
        r = self.lease(lk, org, 10 * MiB)
        self.assertEqual(r.get("granted"), 10 * MiB, r)
        c = self.commit(lk, org, 1, 3 * MiB, logical=5 * MiB, unique=4 * MiB, chunks=5, dup=1)
        self.assertIs(c.get("applied"), True, c)
        o = self.env.org("lease-commit")
        self.assertEqual(o["used_bytes"], 3 * MiB)
        self.assertEqual(o["reserved_bytes"], 7 * MiB, "commit takes the stored bytes out of the lease")
        self.assertEqual(o["bytes_received"], 5 * MiB)
        self.assertEqual(o["bytes_unique"], 4 * MiB)
        self.assertEqual(o["bytes_stored"], 3 * MiB)
        self.assertEqual(o["chunks"], 5)
        self.assertEqual(o["dup_chunks"], 1)

    def test_commit_replay_with_the_same_seq_is_not_applied_twice(self):
        org = self.env.add_org("lease-replay", quota="1G")
        lk = gw(self.env, "gw-replay")
        self.assertTrue(self.lease(lk, org, 20 * MiB).get("ok"))
        self.assertIs(self.commit(lk, org, 1, 2 * MiB, chunks=2).get("applied"), True)
        before = self.env.org("lease-replay")
        rep = self.commit(lk, org, 1, 2 * MiB, chunks=2)
        self.assertIs(rep.get("ok"), True, "a replay is acknowledged: %r" % rep)
        self.assertIs(rep.get("applied"), False)
        self.assertEqual(self.env.org("lease-replay"), before)
        self.assertIs(self.commit(lk, org, 2, 1 * MiB).get("applied"), True)
        self.assertIs(self.commit(lk, org, 1, 2 * MiB).get("applied"), False, "older seq replayed")
        self.assertEqual(self.env.org("lease-replay")["used_bytes"], 3 * MiB)
        # Exactly once across a restart of tidegate-control too.
        self.env.stop_control()
        self.env.start_control()
        lk = gw(self.env, "gw-replay")
        rep = self.commit(lk, org, 2, 1 * MiB)
        self.assertIs(rep.get("applied"), False, "replay after a daemon restart: %r" % rep)
        self.assertEqual(self.env.org("lease-replay")["used_bytes"], 3 * MiB)
        self.assertTrue(self.lease(lk, org, 4 * MiB).get("ok"))
        self.assertIs(self.commit(lk, org, 3, 1 * MiB).get("applied"), True)
        self.assertEqual(self.env.org("lease-replay")["used_bytes"], 4 * MiB)

    def test_release_gives_unused_bytes_back(self):
        org = self.env.add_org("lease-release", quota="1G")
        lk = gw(self.env, "gw-release")
        self.assertEqual(self.lease(lk, org, 10 * MiB).get("granted"), 10 * MiB)
        self.assertEqual(lk.request("release", org=org["guid"], bytes=4 * MiB).get("ok"), True)
        self.assertEqual(self.env.org("lease-release")["reserved_bytes"], 6 * MiB)
        self.assertEqual(lk.request("release", org=org["guid"], bytes=6 * MiB).get("ok"), True)
        self.assertEqual(self.env.org("lease-release")["reserved_bytes"], 0)

    def test_lease_grants_the_remainder_only_when_it_is_useful(self):
        org = self.env.add_org("lease-min", quota="4M")
        a, b = gw(self.env, "gw-min-a"), gw(self.env, "gw-min-b")
        self.assertEqual(self.lease(a, org, 3 * MiB + MiB // 2).get("granted"), 3 * MiB + MiB // 2)
        # 512 KiB left: less than the 1 MiB minimum useful grant.
        self.assertLinkErr(self.lease(b, org, 4 * MiB), h.E_QUOTA_EXCEEDED)
        # Asking for less than 1 MiB: what is asked is the minimum.
        r = self.lease(b, org, 256 * 1024)
        self.assertEqual(r.get("granted"), 256 * 1024, r)
        self.assertLinkErr(self.lease(b, org, 1 * MiB), h.E_QUOTA_EXCEEDED)
        r = self.lease(b, org, 256 * 1024)
        self.assertEqual(r.get("granted"), 256 * 1024, r)
        self.assertEqual(self.env.org("lease-min")["reserved_bytes"], 4 * MiB)

    def test_a_silent_gateways_lease_expires_in_the_sweep(self):
        org = self.env.add_org("lease-sweep", quota="1G")
        lk = gw(self.env, "gw-silent")
        r = self.lease(lk, org, 10 * MiB)
        t0 = time.monotonic()
        self.assertEqual(r.get("granted"), 10 * MiB, r)
        # expires_ms: the lease's remaining life, or its end in Redis time.
        exp = r["expires_ms"]
        left = exp if exp <= 10 * TTL_MS else exp - self.redis_now_ms()
        self.assertTrue(TTL_MS - 500 <= left <= TTL_MS + 100,
                        "expires_ms %d is not the lease TTL from now (left %d ms)" % (exp, left))
        time.sleep(0.5)
        self.assertEqual(self.env.org("lease-sweep")["reserved_bytes"], 10 * MiB,
                         "a live lease must stay reserved")
        h.wait_for(lambda: self.env.org("lease-sweep")["reserved_bytes"] == 0,
                   TTL_MS / 1000 + 1 + 2, 0.1, what="the sweep to reclaim an expired lease")
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, TTL_MS / 1000 - 0.3, "reclaimed before it expired")
        self.assertTrue(lk.hello_reply["ok"])

    def test_a_vanished_gateways_reservation_comes_back(self):
        org = self.env.add_org("lease-vanish", quota="50M")
        a, b = gw(self.env, "gw-vanish-a"), gw(self.env, "gw-vanish-b")
        self.assertEqual(self.lease(a, org, 50 * MiB).get("granted"), 50 * MiB)
        self.assertLinkErr(self.lease(b, org, 10 * MiB), h.E_QUOTA_EXCEEDED)
        a.close()
        t0 = time.monotonic()
        h.wait_for(lambda: self.env.org("lease-vanish")["reserved_bytes"] == 0,
                   TTL_MS / 1000 + 1 + 2, 0.1, what="the vanished gateway's lease to come back")
        self.assertLess(time.monotonic() - t0, TTL_MS / 1000 + 1 + 2)
        r = self.lease(b, org, 50 * MiB)
        self.assertEqual(r.get("granted"), 50 * MiB, "the full remainder: %r" % r)
        gws = {g["name"]: g for g in self.env.admin_ok("gateways")}
        self.assertNotIn("gw-vanish-a", gws)
        self.assertIn("gw-vanish-b", gws)

    def test_alerts_at_80_90_100_percent_are_recorded_once_each(self):
        org = self.env.add_org("lease-alerts", quota="100M")
        lk = gw(self.env, "gw-alerts")
        self.assertEqual(self.lease(lk, org, 100 * MiB).get("granted"), 100 * MiB)
        seq = [0]

        def to(pct_mib):
            used = self.env.org("lease-alerts")["used_bytes"]
            seq[0] += 1
            c = self.commit(lk, org, seq[0], pct_mib * MiB - used)
            self.assertIs(c.get("applied"), True, c)

        def levels():
            return [a["level"] for a in self.env.admin_ok("alerts", {"org": "lease-alerts"})]

        steps = [(79, 0, []), (81, 80, [80]), (85, 80, [80]), (89, 80, [80]), (91, 90, [90, 80]),
                 (99, 90, [90, 80]), (100, 100, [100, 90, 80])]
        for pct, level, want in steps:
            to(pct)
            self.assertEqual(self.env.org("lease-alerts")["alert_level"], level, "at %d %%" % pct)
            self.assertEqual(levels(), want, "alerts at %d %%" % pct)
        rep = self.lease(lk, org, 1 * MiB)
        self.assertLinkErr(rep, h.E_QUOTA_EXCEEDED, "lease at 100 %")
        self.assertEqual(rep["error"].get("name"), "quota exceeded")
        for a in self.env.admin_ok("alerts", {"org": "lease-alerts"}):
            self.assertEqual(a["quota"], 100 * MiB)
        with self.env.rdb() as r:
            recs = [a for a in r.cmd("LRANGE", "tg:alerts", 0, -1) if org["guid"] in a]
            self.assertEqual(len(recs), 3)
        # ... and each is logged by the daemon, once.
        log = self.env.log()
        for level in (80, 90, 100):
            self.assertEqual(len(re.findall(r"alert: organization %s reached %d%% of its quota"
                                            % (org["guid"], level), log)), 1,
                             "alert at %d %% not logged once" % level)
        # Falling below clears the level without an alert; crossing again alerts again.
        self.env.admin_ok("org.set", {"org": "lease-alerts", "quota": 200 * MiB})
        self.assertTrue(self.lease(lk, org, 100 * MiB).get("ok"))
        to(101)
        self.assertEqual(self.env.org("lease-alerts")["alert_level"], 0)
        self.assertEqual(levels(), [100, 90, 80])
        to(163)
        self.assertEqual(self.env.org("lease-alerts")["alert_level"], 80)
        self.assertEqual(levels(), [80, 100, 90, 80])

    def test_one_commit_crossing_several_levels_raises_each_alert(self):
        org = self.env.add_org("lease-jump", quota="10M")
        lk = gw(self.env, "gw-jump")
        self.assertEqual(self.lease(lk, org, 10 * MiB).get("granted"), 10 * MiB)
        self.assertIs(self.commit(lk, org, 1, 7 * MiB).get("applied"), True)     # 70 %
        self.assertIs(self.commit(lk, org, 2, 3 * MiB).get("applied"), True)     # 100 %
        al = self.env.admin_ok("alerts", {"org": "lease-jump"})
        self.assertEqual([a["level"] for a in al], [100, 90, 80],
                         "a jump from 70 to 100 % crosses three levels: three alerts")
        self.assertTrue(all(a["used_bytes"] == 10 * MiB for a in al), al)
        self.assertEqual(self.env.org("lease-jump")["alert_level"], 100)
        log = self.env.log()
        for level in (80, 90, 100):
            self.assertEqual(len(re.findall(r"alert: organization %s reached %d%% of its quota"
                                            % (org["guid"], level), log)), 1, level)
        # Raising the quota through org.set re-evaluates, downward: no alert.
        self.env.admin_ok("org.set", {"org": "lease-jump", "quota": "100M"})
        self.assertEqual(self.env.org("lease-jump")["alert_level"], 0)
        self.assertEqual(len(self.env.admin_ok("alerts", {"org": "lease-jump"})), 3)
        # Lowering it below what is used raises them again, from org.set.
        self.env.admin_ok("org.set", {"org": "lease-jump", "quota": "10M"})
        self.assertEqual([a["level"] for a in self.env.admin_ok("alerts", {"org": "lease-jump"})],
                         [100, 90, 80, 100, 90, 80])
        self.assertEqual(len(re.findall(r"alert: organization %s reached 100%% of its quota "
                                        r"\(lease-jump\)" % org["guid"], self.env.log())), 1)

    def test_policy_op_returns_the_orgs_policy_and_limits(self):
        org = self.env.add_org("lease-policy", policy="ec:6+2", restore_limit_user="1G",
                               restore_limit_admin="unlimited")
        lk = gw(self.env, "gw-policy")
        r = lk.request("policy", org=org["guid"])
        self.assertTrue(r.get("ok"), r)
        self.assertEqual(r["policy"], "ec:6+2")
        self.assertEqual(r["state"], "active")
        self.assertEqual(r["restore_limit_user"], 1 << 30)
        self.assertEqual(r["restore_limit_admin"], -1)
        self.assertEqual(h.guid_bytes(r["org"]), h.guid_bytes(org["guid"]))

    def test_gateways_shows_each_gateways_leases(self):
        org = self.env.add_org("lease-gwlist", quota="1G")
        lk = gw(self.env, "gw-with-lease")
        self.assertTrue(self.lease(lk, org, 5 * MiB).get("ok"))
        gws = {g["name"]: g for g in self.env.admin_ok("gateways")}
        self.assertIn("gw-with-lease", gws)
        txt = json.dumps(gws["gw-with-lease"]["leases"])
        self.assertIn(str(5 * MiB), txt)
        self.assertTrue(org["guid"] in txt or org["guid"].replace("-", "") in txt, txt)
