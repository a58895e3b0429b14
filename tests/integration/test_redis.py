"""
test_redis.py - Redis dies (SIGKILL) and comes back on the same port with its
append-only file (docs/control.md "Architecture"): while it is down every
request that needs it is answered at once with `unavailable` (admin) or
UNAVAILABLE (9, gateway link) and nothing is queued; tidegate-control
reconnects by itself, everything stored survived, and the Lua scripts work
again, including after the script cache is flushed under a live connection
(the NOSCRIPT reload).

The scenario runs once in setUpClass and records what it saw; each test
asserts one property of the record, so one broken property does not hide
the others.

LeaseOutlivesOutage: a gateway admitted before Redis dies keeps its link
and its lease through the outage; once Redis is back the same lease is
still reserved and spent by commits, and pushes still reach the gateway.

RedisHangs: a Redis that stops answering (SIGSTOP) is treated as down after
redis-timeout-ms: requests are answered `unavailable` instead of waiting,
and service resumes by itself when it answers again (SIGCONT).
"""
import signal
import time

import harness as h
from harness import MiB


def observe(rec, key, fn):
    t0 = time.monotonic()
    try:
        rec[key] = fn()
    except Exception as e:  # the test that reads it reports it
        rec[key] = e
    rec[key + "_s"] = time.monotonic() - t0


class RedisKilledAndRestarted(h.EnvTestCase):
    rec = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.scenario()
        except BaseException:
            cls.env.stop()
            cls.env = None
            raise

    @classmethod
    def snapshot(cls):
        env = cls.env
        snap = {"orgs": env.admin_ok("org.list"), "usage": env.admin_ok("usage"),
                "alerts": env.admin_ok("alerts")}
        for o in snap["orgs"]:
            snap["dev:" + o["name"]] = env.admin_ok("device.list", {"org": o["guid"]})
        p = env.admin_ok("provider.show")
        snap["provider"] = (p["guid"], p["created"])
        with env.rdb() as r:
            # Lease bookkeeping is the sweep's to tidy once Redis is back.
            snap["redis"] = {k: v for k, v in r.dump().items() if ":lease_" not in k}
        return snap

    @classmethod
    def scenario(cls):
        env, rec = cls.env, {}
        cls.rec = rec
        pg = env.provider_guid()
        acme = env.add_org("r-acme", seats=5, quota="10M", policy="compress")
        other = env.add_org("r-other", seats=2, quota="1G")
        key = acme["_key"]
        rec["acme"], rec["key"] = acme, key
        lk = env.link("gw-r1")
        devs = {}
        for n in ("r-pc1", "r-pc2", "r-pc3"):
            rep = lk.register(key, n, peer="192.0.2.50")
            assert rep.get("ok"), rep
            cred = h.unwrap_cred(key.v, rep["_cn"], rep["_sn"], h.guid_bytes(acme["guid"]),
                                 bytes.fromhex(rep["device_id"]), bytes.fromhex(rep["wrapped_cred"]),
                                 bytes.fromhex(rep["wrap_tag"]))
            devs[n] = (rep["device_id"], cred)
        rec["devs"] = devs
        assert lk.request("lease", org=acme["guid"], bytes=9 * MiB)["granted"] == 9 * MiB
        for seq, n in ((1, 4 * MiB), (2, 4 * MiB + MiB // 2)):
            c = lk.request("commit", org=acme["guid"], commit_seq=seq, stored_bytes=n,
                           logical_bytes=2 * n, unique_bytes=n, chunks=3, dup_chunks=1)
            assert c.get("applied") is True, c
        assert lk.request("release", org=acme["guid"], bytes=MiB // 2)["ok"]
        env.admin_ok("device.set", {"org": "r-acme", "device": "r-pc2", "role": "admin"})
        env.admin_ok("org.deactivate", {"org": "r-other"})
        rec["other"] = other
        rec["before"] = cls.snapshot()
        assert rec["before"]["orgs"] and acme["guid"] in str(rec["before"]["redis"])

        # -- Redis dies --
        env.kill_redis()
        control_pid = env.control.pid
        t0 = time.monotonic()

        def noticed():
            r = env.admin("org.list", timeout=5)
            return r if not r.get("ok") else None
        observe(rec, "down_first", lambda: h.wait_for(noticed, 5, 0.05, what="unavailable"))
        rec["down_noticed_s"] = time.monotonic() - t0
        observe(rec, "down_org_list", lambda: env.admin("org.list"))
        observe(rec, "down_org_show", lambda: env.admin("org.show", {"org": "r-acme"}))
        observe(rec, "down_org_add", lambda: env.admin("org.add", {"name": "r-ghost", "max_seats": 1,
                                                                   "quota": "1G"}))
        observe(rec, "down_set", lambda: env.admin("org.set", {"org": "r-acme", "max_seats": 99}))
        observe(rec, "down_ctl", lambda: env.ctl("org", "list"))
        observe(rec, "down_ctl_usage", lambda: env.ctl("usage"))
        observe(rec, "down_provider", lambda: env.admin("provider.show"))
        observe(rec, "down_register", lambda: lk.register(key, "r-pc-new", peer="192.0.2.51"))
        observe(rec, "down_register_known", lambda: lk.register(key, "r-pc1", peer="192.0.2.51"))
        observe(rec, "down_lease", lambda: lk.request("lease", org=acme["guid"], bytes=MiB))
        observe(rec, "down_commit", lambda: lk.request("commit", org=acme["guid"], commit_seq=3,
                                                       stored_bytes=1, logical_bytes=1,
                                                       unique_bytes=1, chunks=1, dup_chunks=0))
        observe(rec, "down_auth", lambda: lk.auth(devs["r-pc1"][0], devs["r-pc1"][1],
                                                  peer="192.0.2.51"))
        observe(rec, "down_hello", lambda: env.link("gw-during-outage").hello_reply)

        # -- Redis comes back on the same port and directory --
        env.start_redis()
        t1 = time.monotonic()

        def back():
            return env.admin("org.list", timeout=5).get("ok")
        observe(rec, "recovered", lambda: h.wait_for(back, 20, 0.1, what="recovery"))
        rec["recovery_s"] = time.monotonic() - t1
        rec["control_alive"] = env.control.poll() is None and env.control.pid == control_pid
        observe(rec, "after", cls.snapshot)
        observe(rec, "after_register_known", lambda: lk.register(key, "r-pc1", peer="192.0.2.52"))
        observe(rec, "after_auth", lambda: lk.auth(devs["r-pc3"][0], devs["r-pc3"][1],
                                                   peer="192.0.2.52"))
        observe(rec, "after_commit_replay", lambda: lk.request(
            "commit", org=acme["guid"], commit_seq=2, stored_bytes=4 * MiB + MiB // 2,
            logical_bytes=9 * MiB, unique_bytes=4 * MiB + MiB // 2, chunks=3, dup_chunks=1))
        observe(rec, "after_used", lambda: env.org("r-acme")["used_bytes"])
        observe(rec, "after_register_new", lambda: lk.register(key, "r-pc4", peer="192.0.2.52"))
        observe(rec, "after_lease", lambda: lk.request("lease", org=acme["guid"], bytes=MiB // 4))
        observe(rec, "after_other_register", lambda: lk.register(other["_key"], "x",
                                                                 peer="192.0.2.52"))

        # -- the script cache vanishes under a live connection: NOSCRIPT --
        def flush():
            with env.rdb() as r:
                return r.cmd("SCRIPT", "FLUSH")
        observe(rec, "flush", flush)
        observe(rec, "noscript_lease", lambda: lk.request("lease", org=acme["guid"],
                                                          bytes=MiB // 4))
        observe(rec, "noscript_register", lambda: lk.register(key, "r-pc5", peer="192.0.2.53"))
        observe(rec, "noscript_add", lambda: env.admin("org.add", {"name": "r-after-flush",
                                                                   "max_seats": 1, "quota": "1G"}))
        observe(rec, "noscript_commit", lambda: lk.request(
            "commit", org=acme["guid"], commit_seq=3, stored_bytes=MiB // 4,
            logical_bytes=MiB // 4, unique_bytes=MiB // 4, chunks=1, dup_chunks=0))

    def get(self, key):
        v = self.rec.get(key)
        if isinstance(v, Exception):
            self.fail("%s raised %r" % (key, v))
        return v

    # -- while Redis is down --

    def test_admin_commands_answer_unavailable_at_once_while_redis_is_down(self):
        self.assertLess(self.rec["down_noticed_s"], 3.0, "took too long to notice Redis died")
        for k in ("down_org_list", "down_org_show", "down_org_add", "down_set"):
            with self.subTest(k):
                self.assertAdminErr(self.get(k), "unavailable")
                self.assertLess(self.rec[k + "_s"], 1.0, "%s was not answered at once" % k)

    def test_ctl_exits_4_while_redis_is_down(self):
        for k in ("down_ctl", "down_ctl_usage"):
            rc, _, err = self.get(k)
            self.assertEqual(rc, 4, "%s: rc %d stderr %r" % (k, rc, err))
            self.assertIn("unavailable", err)

    def test_provider_show_reports_redis_down(self):
        rep = self.get("down_provider")
        self.assertIs(rep.get("ok"), True, "provider.show has a `redis` field (up/down): %r" % rep)
        self.assertEqual(rep["result"]["redis"], "down")

    def test_link_ops_answer_unavailable_9_while_redis_is_down(self):
        for k in ("down_register", "down_register_known", "down_lease", "down_commit", "down_auth"):
            with self.subTest(k):
                self.assertLinkErr(self.get(k), h.E_UNAVAILABLE, k)
                self.assertEqual(self.get(k)["error"].get("name"), "control plane unavailable")
                self.assertLess(self.rec[k + "_s"], 1.0, "%s was not answered at once" % k)

    def test_nothing_refused_during_the_outage_is_applied_later(self):
        self.get("recovered")
        names = [o["name"] for o in self.get("after")["orgs"]]
        self.assertNotIn("r-ghost", names)
        self.assertEqual([o for o in self.get("after")["orgs"] if o["name"] == "r-acme"][0]
                         ["max_seats"], 5)
        self.assertNotIn("r-pc-new", [d["name"] for d in self.get("after")["dev:r-acme"]])

    # -- after Redis is back --

    def test_control_recovers_by_itself_within_a_few_seconds(self):
        self.assertTrue(self.get("recovered"))
        self.assertTrue(self.rec["control_alive"], "tidegate-control must not exit or restart")
        self.assertLess(self.rec["recovery_s"], 7.0,
                        "backoff is capped at 5 s and the cron ticks each second")

    def test_orgs_devices_seats_keys_and_usage_survive(self):
        before, after = self.get("before"), self.get("after")
        for k in sorted(before):
            with self.subTest(k):
                self.assertEqual(after.get(k), before[k], "%s changed across the Redis restart" % k)
        acme = [o for o in after["orgs"] if o["name"] == "r-acme"][0]
        self.assertEqual(acme["seats_used"], 3)
        self.assertEqual(acme["used_bytes"], 8 * MiB + MiB // 2)
        self.assertEqual(acme["alert_level"], 80)

    def test_keys_and_credentials_work_after_the_restart(self):
        again = self.get("after_register_known")
        self.assertTrue(again.get("ok"), again)
        self.assertEqual(again["device_id"], self.rec["devs"]["r-pc1"][0])
        au = self.get("after_auth")
        self.assertTrue(au.get("ok"), au)
        self.assertEqual(au["device_name"], "r-pc3")
        new = self.get("after_register_new")
        self.assertTrue(new.get("ok"), new)
        self.assertLinkErr(self.get("after_other_register"), h.E_ORG_DEACTIVATED)

    def test_commit_sequence_survives_the_restart(self):
        rep = self.get("after_commit_replay")
        self.assertIs(rep.get("ok"), True, rep)
        self.assertIs(rep.get("applied"), False, "commit_seq 2 was applied before the restart")
        self.assertEqual(self.get("after_used"), 8 * MiB + MiB // 2)

    def test_leases_work_after_the_restart(self):
        rep = self.get("after_lease")
        self.assertEqual(rep.get("granted"), MiB // 4, rep)

    def test_scripts_reload_after_noscript(self):
        self.assertEqual(self.get("flush"), "OK")
        self.assertEqual(self.get("noscript_lease").get("granted"), MiB // 4,
                         self.rec["noscript_lease"])
        self.assertTrue(self.get("noscript_register").get("ok"), self.rec["noscript_register"])
        self.assertTrue(self.get("noscript_add").get("ok"), self.rec["noscript_add"])
        self.assertIs(self.get("noscript_commit").get("applied"), True, self.rec["noscript_commit"])


class LeaseOutlivesOutage(h.EnvTestCase):
    """docs/control.md: admitted sessions keep their leases until they
    expire; the control plane neither drops the gateway nor the lease."""
    env_kwargs = {"lease_ttl_ms": 60000}

    def test_a_lease_granted_before_the_outage_lives_on_and_is_spent_after(self):
        env = self.env
        org = env.add_org("keep-org", seats=2, quota="100M")
        lk = env.link("gw-keep")
        self.assertEqual(lk.request("lease", org=org["guid"], bytes=20 * MiB)["granted"], 20 * MiB)
        env.kill_redis()
        h.wait_for(lambda: not env.admin("org.list").get("ok"), 5, what="the outage to be noticed")
        rep = lk.request("lease", org=org["guid"], bytes=MiB)
        self.assertLinkErr(rep, h.E_UNAVAILABLE, "a new lease while Redis is down")
        self.assertEqual(rep["error"]["name"], "control plane unavailable")
        rep = lk.register(org["_key"], "newcomer", peer="192.0.2.180")
        self.assertLinkErr(rep, h.E_UNAVAILABLE, "a new registration while Redis is down")
        gws = {g["name"]: g for g in env.admin_ok("gateways")}
        self.assertIn("gw-keep", gws, "the admitted gateway stays connected during the outage")
        env.start_redis()
        h.wait_for(lambda: env.admin("org.list").get("ok"), 20, 0.1, what="recovery")
        self.assertEqual(env.org("keep-org")["reserved_bytes"], 20 * MiB,
                         "the lease survived the outage (AOF) and was not revoked")
        leases = {g["name"]: g for g in env.admin_ok("gateways")}["gw-keep"]["leases"]
        self.assertEqual([(l["bytes"], l["org"]) for l in leases], [(20 * MiB, org["guid"])])
        self.assertGreater(leases[0]["expires_ms"], 30000, "its expiry is unchanged")
        c = lk.request("commit", org=org["guid"], commit_seq=1, stored_bytes=5 * MiB,
                       logical_bytes=5 * MiB, unique_bytes=5 * MiB, chunks=1, dup_chunks=0)
        self.assertIs(c.get("applied"), True, "the same link, no reconnect: %r" % c)
        o = env.org("keep-org")
        self.assertEqual((o["used_bytes"], o["reserved_bytes"]), (5 * MiB, 15 * MiB))
        lk.drain_pushes()
        t0 = time.monotonic()
        env.admin_ok("org.deactivate", {"org": "keep-org"})
        m = lk.next_push(1.0)
        self.assertIsNotNone(m, "no push within 1 s after the outage")
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual((m["op"], m["state"]), ("org_update", "deactivated"))


class RedisHangs(h.EnvTestCase):
    env_kwargs = {"extra": ["--redis-timeout-ms", "500"]}

    def test_a_hung_redis_is_down_after_the_timeout_and_recovers_by_itself(self):
        env = self.env
        org = env.add_org("hang-org", seats=2)
        lk = env.link("gw-hang")
        env.redis.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            rep = env.admin("org.show", {"org": "hang-org"})
            first = time.monotonic() - t0
            self.assertAdminErr(rep, "unavailable")
            self.assertLess(first, 2.0, "the first request waits the timeout (0.5 s), no more")
            t0 = time.monotonic()
            self.assertAdminErr(env.admin("org.list"), "unavailable")
            rep = lk.request("lease", org=org["guid"], bytes=MiB)
            self.assertLinkErr(rep, h.E_UNAVAILABLE)
            self.assertLess(time.monotonic() - t0, 1.0, "once down, answered at once")
            self.assertEqual(env.admin_ok("provider.show")["redis"], "down")
        finally:
            env.redis.send_signal(signal.SIGCONT)
        h.wait_for(lambda: env.admin("org.list").get("ok"), 10, 0.1, what="recovery after SIGCONT")
        self.assertEqual(lk.request("lease", org=org["guid"], bytes=MiB).get("granted"), MiB)
        self.assertEqual(env.org("hang-org")["reserved_bytes"], MiB)
