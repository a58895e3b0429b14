"""
test_startup.py - tidegate-control before and after it first reaches Redis
(docs/control.md "Architecture", "Redis schema"): started while Redis is
down it serves its sockets at once, answers `unavailable` (admin) and
refuses gateways (no provider GUID to give them yet), retries with a
backoff that doubles instead of hammering Redis, and serves by itself once
Redis is up, without a restart. The provider GUID is made at that first
start, kept in Redis (tg:provider), and the same after the daemon restarts
or a second daemon joins the same Redis.
"""
import os
import re
import subprocess
import time
import unittest

import harness as h


class StartBeforeRedis(h.EnvTestCase):
    rec = {}

    @classmethod
    def setUpClass(cls):
        if not h.have_binaries():
            raise unittest.SkipTest("tidegate-control not built in %s" % h.TG_BUILD)
        cls.env = env = h.Env()
        rec = cls.rec = {}
        try:
            env.port = h.free_port()          # Redis is not running yet
            t0 = time.monotonic()
            env.start_control(wait_for_redis=False)
            rec["sockets_s"] = time.monotonic() - t0
            rec["provider"] = env.admin("provider.show")
            rec["org_list"] = env.admin("org.list")
            rec["org_add"] = env.admin("org.add", {"name": "early", "max_seats": 1, "quota": "1G"})
            rec["ctl"] = env.ctl("org", "list")
            try:
                env.link("gw-early")
                rec["hello"] = "accepted"
            except h.LinkError as e:
                rec["hello"] = str(e)
            # Let the backoff run for a while, then count the attempts.
            time.sleep(max(0, 4.0 - (time.monotonic() - t0)))
            rec["log_down"] = env.log()
            rec["down_s"] = time.monotonic() - t0
            env.start_redis()
            t1 = time.monotonic()
            rec["recovered"] = h.wait_for(lambda: env.admin("org.list").get("ok"), 15, 0.1,
                                          what="the daemon to reach Redis")
            rec["recovery_s"] = time.monotonic() - t1
            rec["pid_same"] = env.control.poll() is None
        except BaseException:
            env.stop()
            cls.env = None
            raise

    def test_sockets_serve_while_redis_is_down(self):
        self.assertLess(self.rec["sockets_s"], 5)
        p = self.rec["provider"]
        self.assertIs(p.get("ok"), True, p)
        self.assertEqual(p["result"]["redis"], "down")
        self.assertEqual(p["result"]["guid"], "", "no GUID can be known before Redis is reached")
        self.assertAdminErr(self.rec["org_list"], "unavailable")
        self.assertAdminErr(self.rec["org_add"], "unavailable")
        rc, _, err = self.rec["ctl"]
        self.assertEqual(rc, 4, err)

    def test_gateways_are_told_to_come_back_later(self):
        hello = self.rec["hello"]
        self.assertNotEqual(hello, "accepted", "a gateway needs the provider GUID for REG_INIT")
        self.assertIn("unavailable", hello)
        self.assertIn("'code': 9", hello, "the wire code UNAVAILABLE")

    def test_reconnect_backs_off(self):
        log, down = self.rec["log_down"], self.rec["down_s"]
        first = len(re.findall(r"redis: cannot connect to", log))
        more = len(re.findall(r"redis: connect attempt failed", log))
        self.assertEqual(first, 1, "the first failure is logged once, loudly:\n" + log)
        attempts = first + more
        # 100 ms doubling to 5 s: attempts at ~0, 0.1, 0.3, 0.7, 1.5, 3.1 s.
        # A fixed 100 ms retry would make ~40 in 4 s, a 1 s one ~4.
        self.assertGreaterEqual(attempts, 4, "it must keep retrying (%d in %.1f s)" % (attempts, down))
        self.assertLessEqual(attempts, 8, "no backoff: %d attempts in %.1f s" % (attempts, down))

    def test_serves_by_itself_once_redis_is_up(self):
        self.assertTrue(self.rec["recovered"])
        self.assertTrue(self.rec["pid_same"], "the daemon must not exit while Redis is down")
        self.assertLess(self.rec["recovery_s"], 7, "backoff is capped at 5 s")
        org = self.env.add_org("after-start", seats=1)
        lk = self.env.link("gw-after")
        self.assertTrue(lk.register(org["_key"], "pc", peer="192.0.2.170").get("ok"))
        self.assertEqual(h.guid_bytes(lk.hello_reply["provider_guid"]),
                         h.guid_bytes(self.env.provider_guid()))
        self.assertNotIn("early", [o["name"] for o in self.env.admin_ok("org.list")],
                         "a request refused while down must not be applied later")


class ProviderGuid(h.EnvTestCase):

    def stored(self):
        with self.env.rdb() as r:
            return r.hgetall("tg:provider")

    def test_made_at_first_start_and_kept_in_redis(self):
        p = self.env.admin_ok("provider.show")
        self.assertRegex(p["guid"], h.GUID_RE)
        st = self.stored()
        self.assertEqual(st.get("guid"), p["guid"])
        self.assertEqual(int(st.get("created")), p["created"])
        with self.env.rdb() as r:
            now = int(r.cmd("TIME")[0])
        self.assertTrue(now - 120 <= p["created"] <= now, "created is when it was made")
        self.assertEqual(int(h.guid_bytes(p["guid"])[6]) >> 4, 4, "a random (v4) GUID")

    def test_same_guid_after_a_daemon_restart(self):
        before = self.env.admin_ok("provider.show")
        org = self.env.add_org("pg-org", seats=2)
        self.assertIsNone(self.env.stop_control())
        self.env.start_control()
        after = self.env.admin_ok("provider.show")
        self.assertEqual((after["guid"], after["created"]), (before["guid"], before["created"]))
        self.assertEqual(self.stored()["guid"], before["guid"])
        # Keys made before the restart are bound to that GUID and still work.
        lk = self.env.link("gw-pg")
        self.assertEqual(h.guid_bytes(lk.hello_reply["provider_guid"]), h.guid_bytes(before["guid"]))
        self.assertTrue(lk.register(org["_key"], "pc", peer="192.0.2.171").get("ok"))

    def test_a_second_daemon_on_the_same_redis_uses_the_same_guid(self):
        env = self.env
        guid = env.provider_guid()
        adm = os.path.join(env.tmp, "second-admin.sock")
        gws = os.path.join(env.tmp, "second-gw.sock")
        with open(os.path.join(env.tmp, "second.log"), "wb") as log:
            p = subprocess.Popen([h.CONTROL_BIN, "--redis-port", str(env.port), "--admin-socket",
                                  adm, "--gateway-socket", gws, "--admin-group", "adm"],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=h._pdeathsig)
        try:
            def shown():
                if not os.path.exists(adm):
                    return None
                return env.admin("provider.show", path=adm)["result"]["guid"] or None
            self.assertEqual(h.wait_for(shown, 10, what="the second daemon's GUID"), guid)
        finally:
            p.terminate()
            p.wait(10)
        self.assertEqual(p.returncode, 0, "the second daemon must exit 0 on SIGTERM (a "
                         "sanitizer report makes it fail)")
        self.assertEqual(self.stored()["guid"], guid)
