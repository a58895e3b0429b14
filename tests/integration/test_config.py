"""
test_config.py - tidegate-control's configuration (control/config.c, one
declarative table behind the file, the flags, --help, --print-config-example
and --check-config): a bad line is fatal at start and names the file and
the line, a bad flag names the flag, values from the file take effect and
flags override them, the example in deploy/ is the generated one and
documents every option once, and the Redis options (password, database,
Unix socket) really reach Redis.
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import harness as h
from harness import MiB


def closed_port():
    return h.free_port()   # nothing listens there


def run_control(args, timeout=5):
    """Run tidegate-control to completion (config errors, --check-config...)."""
    p = subprocess.run([h.CONTROL_BIN] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def option_names():
    """Every option, as --help lists it (the table's order)."""
    rc, out, _ = run_control(["--help"])
    assert rc == 0
    names = re.findall(r"^  --([a-z][a-z-]+) [A-Z]", out, re.M)
    return [n for n in names if n != "config"]


def parse_effective(text):
    """--check-config's output: {option: value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, _, v = line.partition("=")
        out[k.strip()] = v.strip()
    return out


class BadConfigIsFatal(unittest.TestCase):
    """No Redis needed: the daemon must refuse to start at all."""

    @classmethod
    def setUpClass(cls):
        if not h.have_binaries():
            raise unittest.SkipTest("tidegate-control not built in %s" % h.TG_BUILD)
        cls.tmp = tempfile.mkdtemp(prefix="tg-itest-cfg-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def start_with(self, text, *flags):
        path = os.path.join(self.tmp, "t.conf")
        with open(path, "w") as f:
            f.write(text)
        adm, gws = os.path.join(self.tmp, "a.sock"), os.path.join(self.tmp, "g.sock")
        for p in (adm, gws):
            if os.path.exists(p):
                os.unlink(p)
        t0 = time.monotonic()
        rc, out, err = run_control(["--config", path, "--admin-socket", adm,
                                    "--gateway-socket", gws, "--redis-port",
                                    str(closed_port())] + list(flags))
        return rc, err, path, time.monotonic() - t0, (os.path.exists(adm) or os.path.exists(gws))

    GOOD = "# tidegate-control\nredis-host = 127.0.0.1\n\n"   # lines 1-3

    CASES = [
        ("unknown key", GOOD + "redis-prot = 6379\n", 4, "unknown option"),
        ("unknown key in a section", GOOD + "[redis]\nport = 6379\nbogus = 1\n", 6,
         "unknown option"),
        ("not key = value", GOOD + "redis-port 6379\n", 4, "expected"),
        ("unterminated section", GOOD + "[redis\n", 4, "expected"),
        ("not a number", GOOD + "redis-port = many\n", 4, "not an integer"),
        ("number out of range", GOOD + "redis-port = 70000\n", 4, "out of range"),
        ("negative timeout", GOOD + "redis-timeout-ms = -5\n", 4, "out of range"),
        ("lease ttl too short", GOOD + "lease-ttl-ms = 5\n", 4, "out of range"),
        ("size with a bad unit", GOOD + "lease-bytes = 64X\n", 4, "not a size"),
        ("size too small", GOOD + "lease-bytes = 1K\n", 4, "out of range"),
        ("fractional size", GOOD + "lease-bytes = 1.5G\n", 4, "not a size"),
        ("alert levels not ascending", GOOD + "alert-levels = 90,80,100\n", 4, "ascending"),
        ("two alert levels", GOOD + "alert-levels = 80,90\n", 4, "ascending"),
        ("alert level over 100", GOOD + "alert-levels = 80,90,101\n", 4, "ascending"),
        ("bad log level", GOOD + "log-level = chatty\n", 4, "not a level"),
        ("option set twice", GOOD + "redis-port = 6379\nredis_port = 6380\n", 5, "already set"),
        ("socket path too long", GOOD + "admin-socket = /" + "x" * 120 + "\n", 4, "bytes long"),
        ("empty group", GOOD + "admin-group =\n", 4, "bytes long"),
        ("line too long", GOOD + "redis-password = " + "p" * 250 + "\n", 4, "longer than"),
        ("value with a trailing comment", GOOD + "redis-port = 6379 # the default\n", 4,
         "not an integer"),
    ]

    def test_each_bad_line_stops_the_daemon_naming_file_and_line(self):
        for label, text, line, words in self.CASES:
            with self.subTest(label):
                rc, err, path, took, made = self.start_with(text)
                self.assertEqual(rc, 2, "%s: exit status %d, stderr %r" % (label, rc, err))
                self.assertIn("%s:%d:" % (path, line), err, "%s: the message must name "
                              "FILE:LINE" % label)
                self.assertIn(words, err, label)
                self.assertEqual(err.count("\n"), 1, "one message line: %r" % err)
                self.assertFalse(made, "%s: sockets were created before the config was "
                                 "known to be good" % label)
                self.assertLess(took, 3, "a config error must stop the daemon at once")

    def test_a_missing_config_file_is_fatal(self):
        rc, _, err = run_control(["--config", os.path.join(self.tmp, "nope.conf")])
        self.assertEqual(rc, 2)
        self.assertIn("nope.conf", err)
        self.assertIn("cannot open", err)

    def test_each_bad_flag_stops_the_daemon_naming_the_flag(self):
        for flags, words in ((["--redis-port", "0"], "--redis-port"),
                             (["--lease-bytes", "lots"], "--lease-bytes"),
                             (["--alert-levels", "1,2"], "--alert-levels"),
                             (["--no-such-option", "1"], "--no-such-option"),
                             (["--redis_port", "6379"], "--redis_port"),
                             (["--redis-port"], "needs a value"),
                             (["stray"], "stray"),
                             (["--admin-socket", "/tmp/same", "--gateway-socket", "/tmp/same"],
                              "both")):
            with self.subTest(flags=flags):
                rc, _, err = run_control(flags)
                self.assertEqual(rc, 2, "%r: rc %d %r" % (flags, rc, err))
                self.assertIn(words, err)

    def test_check_config_shows_defaults_then_file_then_flags(self):
        rc, out, err = run_control(["--check-config"])
        self.assertEqual(rc, 0, err)
        base = parse_effective(out)
        self.assertEqual(sorted(base), sorted(option_names()), "every option, once")
        self.assertEqual(base["lease-ttl-ms"], "30000")
        self.assertEqual(base["alert-levels"], "80,90,100")
        path = os.path.join(self.tmp, "prec.conf")
        with open(path, "w") as f:
            f.write("lease-ttl-ms = 7000\nlease-bytes = 32M\nadmin-socket = /tmp/tg-a.sock\n"
                    "gateway-socket = /tmp/tg-g.sock\nadmin-group = adm\n[redis]\nport = 7001\n"
                    "password = not-for-the-log\n[alert]\nlevels = 50, 75, 95\n")
        rc, out, err = run_control(["--lease-bytes", "48M", "--config", path, "--log-level", "7",
                                    "--check-config"])
        self.assertEqual(rc, 0, err)
        eff = parse_effective(out)
        self.assertEqual(eff["lease-ttl-ms"], "7000", "from the file")
        self.assertEqual(eff["redis-port"], "7001", "from the file's [redis] section")
        self.assertEqual(eff["alert-levels"], "50,75,95")
        self.assertEqual((eff["admin-socket"], eff["gateway-socket"], eff["admin-group"]),
                         ("/tmp/tg-a.sock", "/tmp/tg-g.sock", "adm"))
        self.assertEqual(eff["lease-bytes"], "48M", "a flag overrides the file, wherever it is")
        self.assertEqual(eff["log-level"], "debug")
        self.assertEqual(eff["redis-host"], base["redis-host"], "untouched: the default")
        self.assertNotIn("not-for-the-log", out, "the password is not printed")
        self.assertIn("set", eff["redis-password"])

    def test_help_lists_every_option_with_its_default(self):
        rc, out, _ = run_control(["--help"])
        self.assertEqual(rc, 0)
        names = option_names()
        for want in ("redis-host", "redis-port", "redis-password", "redis-db", "admin-socket",
                     "gateway-socket", "admin-group", "lease-bytes", "lease-ttl-ms",
                     "alert-levels", "log-level"):
            self.assertIn(want, names)
        self.assertEqual(out.count("(default:"), len(names))
        for flag in ("--config", "--print-config-example", "--check-config", "--version"):
            self.assertIn(flag, out)

    def test_print_config_example_documents_every_option_once_and_loads(self):
        rc, example, err = run_control(["--print-config-example"])
        self.assertEqual(rc, 0, err)
        for name in option_names():
            self.assertEqual(len(re.findall(r"^#%s =" % re.escape(name), example, re.M)), 1,
                             "%s must appear exactly once in the example" % name)
        # Commented out as shipped, it loads; uncommented it loads too, and
        # gives exactly the built-in defaults.
        uncommented = re.sub(r"^#([a-z][a-z-]* =)", r"\1", example, flags=re.M)
        for label, text in (("as shipped", example), ("uncommented", uncommented)):
            with self.subTest(label):
                path = os.path.join(self.tmp, "example.conf")
                with open(path, "w") as f:
                    f.write(text)
                rc, out, err = run_control(["--config", path, "--check-config"])
                self.assertEqual(rc, 0, err)
                self.assertEqual(parse_effective(out),
                                 parse_effective(run_control(["--check-config"])[1]))

    def test_deploy_example_is_the_generated_one(self):
        path = os.path.join(h.TG_SRC, "deploy", "tidegate-control.conf.example")
        self.assertTrue(os.path.exists(path), "deploy/tidegate-control.conf.example is missing")
        with open(path) as f:
            shipped = f.read()
        self.assertEqual(shipped, run_control(["--print-config-example"])[1],
                         "regenerate it: tidegate-control --print-config-example > %s" % path)


class ConfigFileReachesRedis(h.EnvTestCase):
    """Redis with a password, the tenant data in database 3, alert levels
    50/75/95, all from a config file; the harness's flags (sockets, port,
    lease-bytes 64M) override what the file says about those."""

    @classmethod
    def setUpClass(cls):
        if not h.have_binaries():
            raise unittest.SkipTest("tidegate-control not built in %s" % h.TG_BUILD)
        cls.env = env = h.Env(lease_bytes="64M", redis_password="s3cret pass", redis_db=3)
        conf = os.path.join(env.tmp, "control.conf")
        with open(conf, "w") as f:
            f.write("; written by test_config.py\n"
                    "alert-levels = 50,75,95\n"
                    "lease-bytes = 32M\n"
                    "[redis]\n"
                    "password = s3cret pass\n"
                    "db = 3\n"
                    "timeout-ms = 1500\n")
        env.extra = ["--config", conf]
        try:
            env.start()
        except BaseException:
            env.stop()
            raise

    def test_password_and_database_come_from_the_file(self):
        guid = self.env.provider_guid()
        with self.env.rdb() as r:
            self.assertEqual(r.cmd("HGET", "tg:provider", "guid"), guid)
        with self.env.rdb(db=0) as r:
            self.assertEqual(r.cmd("KEYS", "tg:*"), [], "nothing may land in database 0")

    def test_flags_override_the_file(self):
        self.assertEqual(self.env.link("gw-cfg").hello_reply["lease_bytes"], 64 * MiB)

    def test_alert_levels_from_the_file_are_used_and_logged(self):
        org = self.env.add_org("cfg-alerts", quota="100M")
        lk = self.env.link("gw-cfg-alerts")
        self.assertEqual(lk.request("lease", org=org["guid"], bytes=100 * MiB)["granted"],
                         100 * MiB)
        seq = 0
        for mib, level in ((49, 0), (51, 50), (76, 75), (96, 95)):
            seq += 1
            used = self.env.org("cfg-alerts")["used_bytes"]
            c = lk.request("commit", org=org["guid"], commit_seq=seq, stored_bytes=mib * MiB - used,
                           logical_bytes=1, unique_bytes=1, chunks=1, dup_chunks=0)
            self.assertIs(c.get("applied"), True, c)
            self.assertEqual(self.env.org("cfg-alerts")["alert_level"], level, "at %d %%" % mib)
        self.assertEqual([a["level"] for a in self.env.admin_ok("alerts", {"org": "cfg-alerts"})],
                         [95, 75, 50])
        log = self.env.log()
        for level in (50, 75, 95):
            self.assertRegex(log, r"alert: organization \S+ .*reached %d%% of its quota" % level)

    def test_a_wrong_password_keeps_the_daemon_down_and_says_why(self):
        env = self.env
        adm, gws = os.path.join(env.tmp, "wrong-a.sock"), os.path.join(env.tmp, "wrong-g.sock")
        logp = os.path.join(env.tmp, "wrong.log")
        with open(logp, "wb") as log:
            p = subprocess.Popen([h.CONTROL_BIN, "--redis-port", str(env.port), "--redis-password",
                                  "not the password", "--admin-socket", adm, "--gateway-socket",
                                  gws, "--admin-group", "adm"], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, preexec_fn=h._pdeathsig)
        try:
            h.wait_for(lambda: os.path.exists(adm), 10, what="the second daemon's socket")
            time.sleep(0.5)
            self.assertEqual(env.admin("provider.show", path=adm)["result"]["redis"], "down")
            self.assertAdminErr(env.admin("org.list", path=adm), "unavailable")
            with open(logp, "rb") as f:
                text = f.read().decode(errors="replace")
            self.assertIn("AUTH", text, "the log must say the AUTH step failed: %r" % text)
            self.assertIsNone(p.poll(), "a bad password is not a reason to exit: Redis may be "
                              "reconfigured, the daemon retries")
        finally:
            p.terminate()
            p.wait(10)
        self.assertEqual(p.returncode, 0, "the second daemon must exit 0 on SIGTERM (a "
                         "sanitizer report makes it fail)")


class RedisOverUnixSocket(h.EnvTestCase):
    """redis-host may be the path of Redis's Unix socket."""

    @classmethod
    def setUpClass(cls):
        if not h.have_binaries():
            raise unittest.SkipTest("tidegate-control not built in %s" % h.TG_BUILD)
        cls.env = env = h.Env()
        cls.rsock = os.path.join(env.tmp, "redis.sock")
        env.redis_extra = ["--unixsocket", cls.rsock, "--unixsocketperm", "700"]
        # Flags apply in order: this one wins over the harness's 127.0.0.1,
        # and the TCP port it still passes is not used.
        env.extra = ["--redis-host", cls.rsock]
        try:
            env.start()
        except BaseException:
            env.stop()
            raise

    def test_the_daemon_talks_to_redis_over_its_unix_socket(self):
        guid = self.env.provider_guid()
        with self.env.rdb() as r:
            self.assertEqual(r.cmd("HGET", "tg:provider", "guid"), guid)
            clients = r.cmd("CLIENT", "LIST")
        self.assertRegex(clients, r"addr=/|addr=\S*redis\.sock|laddr=\S*redis\.sock",
                         "no client connected over the Unix socket: %s" % clients)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.rsock)
        s.close()
