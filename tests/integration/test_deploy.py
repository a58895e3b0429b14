#!/usr/bin/env python3
"""
test_deploy.py - deploy/ as an operator meets it, as TAP.

  units      every systemd unit, as install.sh writes it, passes
             `systemd-analyze verify` with no warning (a unit with a typo
             would only warn and still exit 0, so warnings fail the test),
             and the gateway template wires what the docs promise
  hugepages  hugepages.sh reserve / show / release round trip on the real
             pool (by 2 pages above what is there, back to it), idempotence,
             dry run, clear errors
  nic-bind   nic-bind.sh --help; it refuses, in --dry-run, the host's NIC with
             the default route; in a private network namespace, an interface
             with an address or a default route; with a fake sysfs (never a
             real NIC), the vfio-pci bind and unbind it would run
  install    install.sh --dry-run changes nothing; a real install into a
             temp --prefix: files, modes, paths rewritten into the units,
             the group and user created, an operator's config kept on reinstall
  configs    the control example passes `tidegate-control --check-config`
             and is what --print-config-example prints; the gateway example,
             uncommented, passes the gateway's parser; redis.conf and
             sentinel.conf load in real redis-server processes, and
             tidegate-control works against that redis.conf (password)
  docs       docs/operations.md explains every gateway drop reason

Root is needed for hugepages, namespaces and accounts; those cases are
skipped with the reason otherwise. Nothing here unbinds, binds or changes a
real NIC: nic-bind.sh only ever runs with --dry-run.

Environment: TG_BUILD (build directory), TG_SRC (source tree).
"""
import glob
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import TG_BUILD, TG_SRC, free_port, wait_for  # noqa: E402

DEPLOY = os.path.join(TG_SRC, "deploy")
HUGEPAGES = os.path.join(DEPLOY, "hugepages.sh")
NIC_BIND = os.path.join(DEPLOY, "nic-bind.sh")
INSTALL = os.path.join(DEPLOY, "install.sh")
CONTROL_BIN = os.path.join(TG_BUILD, "control", "tidegate-control")
CTL_BIN = os.path.join(TG_BUILD, "control", "tidegate-ctl")
GW_BIN = os.path.join(TG_BUILD, "gateway", "tidegate-gateway")
UNITS = ["tidegate-control.service", "tidegate-gateway@.service",
         "tidegate-hugepages.service", "tidegate-nic-bind@.service"]
REDIS_PASSWORD = "CHANGE-ME-tidegate-redis-password"  # the placeholder in redis.conf


def run(argv, timeout=60, env=None, input=None):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          input=input)


def is_root():
    return os.geteuid() == 0


def built():
    need = [CONTROL_BIN, CTL_BIN, GW_BIN,
            os.path.join(TG_BUILD, "client", "tidegate-push"),
            os.path.join(TG_BUILD, "client", "tidegate-restore")]
    missing = [p for p in need if not os.access(p, os.X_OK)]
    return "not built: " + ", ".join(missing) if missing else None


def unit(path):
    """A unit file as {section: [(key, value), ...]} (keys repeat in units)."""
    out = {}
    sec = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                sec = line.strip("[]")
                out.setdefault(sec, [])
                continue
            k, _, v = line.partition("=")
            out[sec].append((k.strip(), v.strip()))
    return out


def values(u, sec, key):
    return [v for k, v in u.get(sec, []) if k == key]


def words(u, sec, key):
    return " ".join(values(u, sec, key)).split()


# ---------------------------------------------------------------- install ---

class Installed:
    """One real install into a temp prefix, shared by the unit and install
    tests. As root, with a unique group and user (removed at the end) so the
    account step runs for real without touching a 'tidegate' the host has."""

    tmp = prefix = sysconf = unitdir = group = user = None
    result = None
    error = None

    @classmethod
    def get(cls):
        if cls.result is None and cls.error is None:
            cls._install()
        if cls.error:
            raise unittest.SkipTest(cls.error)
        return cls

    @classmethod
    def _install(cls):
        why = built()
        if why:
            cls.error = why
            return
        cls.tmp = tempfile.mkdtemp(prefix="tg-deploy-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        cls.sysconf = os.path.join(cls.prefix, "etc", "tidegate")
        cls.unitdir = os.path.join(cls.prefix, "lib", "systemd", "system")
        argv = [INSTALL, "--build", TG_BUILD, "--prefix", cls.prefix]
        if is_root():
            tag = secrets.token_hex(3)
            cls.group = "tgt" + tag
            cls.user = "tgt" + tag
            argv += ["--group", cls.group, "--user", cls.user]
        else:
            argv += ["--no-accounts"]
        cls.result = run(argv, timeout=120)
        if cls.result.returncode != 0:
            cls.error = None  # the install test reports it

    @classmethod
    def cleanup(cls):
        if cls.user:
            subprocess.run(["userdel", cls.user], capture_output=True)
        if cls.group:
            subprocess.run(["groupdel", cls.group], capture_output=True)
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        cls.user = cls.group = cls.tmp = None


class TestInstall(unittest.TestCase):

    def test_dry_run_changes_nothing(self):
        why = built()
        if why:
            self.skipTest(why)
        tmp = tempfile.mkdtemp(prefix="tg-deploy-dry-")
        try:
            prefix = os.path.join(tmp, "p")
            r = run([INSTALL, "--dry-run", "--build", TG_BUILD, "--prefix", prefix,
                     "--group", "tgt-never", "--user", "tgt-never"])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("would run: install -m 0755 %s/control/tidegate-control %s/bin/tidegate-control"
                          % (TG_BUILD, prefix), r.stdout)
            self.assertIn("would run: groupadd --system tgt-never", r.stdout)
            self.assertFalse(os.path.exists(prefix), "dry run created %s" % prefix)
            with self.assertRaises(KeyError):
                grp.getgrnam("tgt-never")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_missing_build_is_refused(self):
        tmp = tempfile.mkdtemp(prefix="tg-deploy-nob-")
        try:
            r = run([INSTALL, "--build", os.path.join(tmp, "nothing"),
                     "--prefix", os.path.join(tmp, "p"), "--no-accounts"])
            self.assertEqual(r.returncode, 1)
            self.assertIn("not built", r.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "p")))
            r = run([INSTALL, "--prefix"])
            self.assertEqual(r.returncode, 2)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_install_into_temp_prefix(self):
        inst = Installed.get()
        r = inst.result
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        p = inst.prefix
        for b in ["tidegate-control", "tidegate-ctl", "tidegate-gateway", "tidegate-push",
                  "tidegate-restore"]:
            f = os.path.join(p, "bin", b)
            self.assertTrue(os.access(f, os.X_OK), f)
        for s in ["tidegate-hugepages", "tidegate-nic-bind"]:
            f = os.path.join(p, "sbin", s)
            self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o755, f)
        for u in UNITS:
            self.assertTrue(os.path.isfile(os.path.join(inst.unitdir, u)), u)
        for e in ["tidegate-control.conf.example", "tidegate-gateway.conf.example",
                  "tidegate-gateway.env.example", "redis.conf.example", "sentinel.conf.example"]:
            self.assertTrue(os.path.isfile(os.path.join(inst.sysconf, e)), e)
        self.assertTrue(os.path.isfile(os.path.join(p, "share", "doc", "tidegate", "operations.md")))
        conf = os.path.join(inst.sysconf, "control.conf")
        st = os.stat(conf)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        if inst.group:
            g = grp.getgrnam(inst.group)
            u = pwd.getpwnam(inst.user)
            self.assertEqual(u.pw_gid, g.gr_gid)
            self.assertEqual(st.st_gid, g.gr_gid, "control.conf not readable by the group")
            self.assertEqual(os.stat(inst.sysconf).st_gid, g.gr_gid)
        # Every path in the installed units is the installed one.
        for u in UNITS:
            lines = [ln for ln in open(os.path.join(inst.unitdir, u)).read().splitlines()
                     if not ln.startswith("#")]
            text = "\n".join(lines)
            self.assertNotIn("/usr/local/", text, u)
            self.assertNotIn("/etc/tidegate/", text.replace(inst.sysconf + "/", ""), u)
            if inst.group and u in ("tidegate-control.service", "tidegate-gateway@.service"):
                self.assertRegex(text, r"(?m)^Group=%s$" % inst.group)
            for line in lines:
                if line.startswith(("ExecStart=", "ExecStartPre=", "ExecStop=")):
                    exe = line.split("=", 1)[1].split()[0]
                    self.assertTrue(os.access(exe, os.X_OK), "%s: %s" % (u, line))

    def test_installed_control_conf_checks(self):
        inst = Installed.get()
        conf = os.path.join(inst.sysconf, "control.conf")
        r = run([os.path.join(inst.prefix, "bin", "tidegate-control"), "--config", conf,
                 "--check-config"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("admin-group = %s" % (inst.group or "tidegate"), r.stdout)

    def test_reinstall_keeps_operator_config(self):
        inst = Installed.get()
        conf = os.path.join(inst.sysconf, "control.conf")
        example = os.path.join(inst.sysconf, "tidegate-control.conf.example")
        with open(conf, "a") as f:
            f.write("redis-port = 6380\n")
        with open(example, "a") as f:
            f.write("# stale\n")
        argv = [INSTALL, "--build", TG_BUILD, "--prefix", inst.prefix]
        argv += ["--group", inst.group, "--user", inst.user] if inst.group else ["--no-accounts"]
        r = run(argv, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("redis-port = 6380", open(conf).read())
        self.assertIn("exists: kept", r.stdout)
        self.assertNotIn("# stale", open(example).read(), "the example was not refreshed")
        if inst.group:
            self.assertIn("group %s exists" % inst.group, r.stdout)


# ------------------------------------------------------------------ units ---

class TestUnits(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.analyze = shutil.which("systemd-analyze")

    def verify(self, unitdir, name):
        env = dict(os.environ, SYSTEMD_UNIT_PATH=unitdir + ":", SYSTEMD_LOG_COLOR="0")
        return run([self.analyze, "verify", "--man=no", os.path.join(unitdir, name)], env=env)

    def test_every_unit_verifies_clean(self):
        if not self.analyze:
            self.skipTest("systemd-analyze not installed (package systemd)")
        inst = Installed.get()
        self.assertEqual(inst.result.returncode, 0, inst.result.stderr)
        for name in ["tidegate-control.service", "tidegate-hugepages.service",
                     "tidegate-gateway@ingest1.service", "tidegate-nic-bind@ingest1.service"]:
            with self.subTest(unit=name):
                r = self.verify(inst.unitdir, name)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stderr.strip(), "", "warnings:\n" + r.stderr)

    def test_verify_catches_a_bad_unit(self):
        # The check above means something only if a typo makes it fail.
        if not self.analyze:
            self.skipTest("systemd-analyze not installed (package systemd)")
        inst = Installed.get()
        tmp = tempfile.mkdtemp(prefix="tg-deploy-bad-")
        try:
            text = open(os.path.join(inst.unitdir, "tidegate-control.service")).read()
            self.assertIn("Restart=on-failure\n", text)
            with open(os.path.join(tmp, "tidegate-control.service"), "w") as f:
                f.write(text.replace("Restart=on-failure\n", "Restart=sometimes\n"))
            r = self.verify(tmp, "tidegate-control.service")
            self.assertIn("restart", r.stderr.lower())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_gateway_template_wiring(self):
        u = unit(os.path.join(DEPLOY, "systemd", "tidegate-gateway@.service"))
        for dep in ["tidegate-hugepages.service", "tidegate-nic-bind@%i.service"]:
            self.assertIn(dep, words(u, "Unit", "Requires"))
            self.assertIn(dep, words(u, "Unit", "After"))
        self.assertEqual(values(u, "Service", "Restart"), ["on-failure"])
        self.assertTrue(values(u, "Unit", "StartLimitBurst"), "no restart limit")
        self.assertEqual(values(u, "Service", "LimitMEMLOCK"), ["infinity"])
        self.assertEqual(values(u, "Service", "Group"), ["tidegate"])
        self.assertTrue(values(u, "Service", "RuntimeDirectory")[0].startswith("tidegate/"))
        argv = values(u, "Service", "ExecStart")[0].split()
        self.assertEqual(argv[argv.index("--file-prefix") + 1], "%i")
        self.assertEqual(argv[argv.index("--config") + 1], "/etc/tidegate/gateway-%i.conf")
        self.assertLess(argv.index("$TG_EAL_ARGS"), argv.index("--"))
        self.assertIn("/etc/tidegate/gateway-%i.env", values(u, "Service", "EnvironmentFile"))

        c = unit(os.path.join(DEPLOY, "systemd", "tidegate-control.service"))
        self.assertEqual(values(c, "Service", "RuntimeDirectory"), ["tidegate"])
        self.assertEqual(values(c, "Service", "Restart"), ["on-failure"])
        self.assertEqual(values(c, "Service", "RestartPreventExitStatus"), ["2"])
        for name, script in [("tidegate-hugepages.service", "tidegate-hugepages"),
                             ("tidegate-nic-bind@.service", "tidegate-nic-bind")]:
            o = unit(os.path.join(DEPLOY, "systemd", name))
            self.assertEqual(values(o, "Service", "Type"), ["oneshot"], name)
            self.assertEqual(values(o, "Service", "RemainAfterExit"), ["yes"], name)
            self.assertTrue(values(o, "Service", "ExecStart")[0].startswith("/usr/local/sbin/" + script))

    def test_control_config_error_exits_2(self):
        # RestartPreventExitStatus=2 relies on tidegate-control exiting 2 on a
        # bad configuration: check that contract.
        why = built()
        if why:
            self.skipTest(why)
        tmp = tempfile.mkdtemp(prefix="tg-deploy-c2-")
        try:
            bad = os.path.join(tmp, "bad.conf")
            with open(bad, "w") as f:
                f.write("redis-port = 70000\n")
            r = run([CONTROL_BIN, "--config", bad, "--check-config"])
            self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
            self.assertIn("%s:1:" % bad, r.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------- hugepages ---

def huge_show(size="2M"):
    r = run([HUGEPAGES, "show", "-s", size])
    assert r.returncode == 0, r.stderr
    pools, mounts = {}, {}
    for line in r.stdout.splitlines():
        m = re.match(r"^size=(\d+)kB node=(\S*) total=(\d+) free=(\d+) in_use=(\d+)$", line)
        if m:
            pools[m.group(2)] = (int(m.group(3)), int(m.group(4)), int(m.group(5)))
        m = re.match(r"^mount=(\S+) pagesize=(\d+)kB$", line)
        if m:
            mounts[m.group(1)] = int(m.group(2))
    return pools, mounts


class TestHugepages(unittest.TestCase):

    def test_help_and_usage_errors(self):
        r = run([HUGEPAGES, "--help"])
        self.assertEqual(r.returncode, 0)
        for w in ["reserve", "release", "show", "--pages", "--size", "--dry-run"]:
            self.assertIn(w, r.stdout)
        self.assertEqual(run([HUGEPAGES]).returncode, 2)
        self.assertEqual(run([HUGEPAGES, "frobnicate"]).returncode, 2)
        r = run([HUGEPAGES, "reserve", "-s", "2M"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--pages", r.stderr)
        r = run([HUGEPAGES, "reserve", "-n", "many"])
        self.assertEqual(r.returncode, 2)
        r = run([HUGEPAGES, "reserve", "-n", "1", "-s", "3M"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("valid sizes", r.stderr)

    def skip_unless_pool(self):
        if not is_root():
            self.skipTest("needs root")
        if not os.access("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", os.W_OK):
            self.skipTest("2 MiB hugepage pool not writable here")
        if not shutil.which("dpdk-hugepages.py"):
            self.skipTest("dpdk-hugepages.py not installed (package dpdk)")

    def test_dry_run_changes_nothing(self):
        self.skip_unless_pool()
        before, _ = huge_show()
        tmp = tempfile.mkdtemp(prefix="tg-deploy-hp-")
        try:
            mnt = os.path.join(tmp, "huge")
            want = max(t for t, _, _ in before.values()) + 100
            r = run([HUGEPAGES, "--dry-run", "reserve", "-n", str(want), "-s", "2M", "-m", mnt])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("would run: dpdk-hugepages.py -p 2048K -r %dK" % (want * 2048), r.stdout)
            self.assertIn("would run: mount -t hugetlbfs", r.stdout)
            after, mounts = huge_show()
            self.assertEqual({n: t for n, (t, _, _) in before.items()},
                             {n: t for n, (t, _, _) in after.items()})
            self.assertNotIn(mnt, mounts)
            self.assertFalse(os.path.exists(mnt))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_reserve_show_release_round_trip(self):
        # Two pages above what is there (other benches may hold the rest),
        # on a private mount point, then back to exactly what was there.
        self.skip_unless_pool()
        before, _ = huge_show()
        self.assertTrue(before, "no 2 MiB pool in show")
        base = max(t for t, _, _ in before.values())
        tmp = tempfile.mkdtemp(prefix="tg-deploy-hp-")
        mnt = os.path.join(tmp, "huge")
        try:
            r = run([HUGEPAGES, "reserve", "-n", str(base + 2), "-s", "2M", "-m", mnt])
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            pools, mounts = huge_show()
            for node, (total, _, _) in pools.items():
                self.assertEqual(total, base + 2, "node %s" % node)
            self.assertEqual(mounts.get(mnt), 2048)
            # Idempotent: the same call again changes nothing and says so.
            r = run([HUGEPAGES, "reserve", "-n", str(base + 2), "-s", "2M", "-m", mnt])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("nothing to do", r.stdout)
            self.assertIn("already mounted", r.stdout)
            # Never lowers: asking for fewer keeps what is reserved.
            r = run([HUGEPAGES, "reserve", "-n", "1", "-s", "2M", "--no-mount"])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual({t for t, _, _ in huge_show()[0].values()}, {base + 2})
            r = run([HUGEPAGES, "release", "-n", str(base), "-s", "2M", "--unmount", "-m", mnt])
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            pools, mounts = huge_show()
            for node, (total, _, _) in pools.items():
                self.assertEqual(total, base, "node %s" % node)
            self.assertNotIn(mnt, mounts)
        finally:
            if huge_show()[1].get(mnt):
                subprocess.run(["umount", mnt], capture_output=True)
            if {t for t, _, _ in huge_show()[0].values()} == {base + 2}:
                run([HUGEPAGES, "release", "-n", str(base), "-s", "2M"])
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------- nic-bind ---

def default_route_dev():
    r = run(["ip", "-4", "route", "show", "default"])
    m = re.search(r"\bdev (\S+)", r.stdout)
    if not m:
        r = run(["ip", "-6", "route", "show", "default"])
        m = re.search(r"\bdev (\S+)", r.stdout)
    return m.group(1) if m else None


class TestNicBind(unittest.TestCase):

    def test_help(self):
        r = run([NIC_BIND, "--help"])
        self.assertEqual(r.returncode, 0)
        for w in ["bind", "unbind", "status", "--force", "--dry-run", "vfio-pci", "default route"]:
            self.assertIn(w, r.stdout)
        self.assertEqual(run([NIC_BIND]).returncode, 2)
        self.assertEqual(run([NIC_BIND, "--dry-run", "bind"]).returncode, 2)
        r = run([NIC_BIND, "--dry-run", "--allow-none", "bind"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_refuses_the_nic_with_the_default_route(self):
        dev = default_route_dev()
        if not dev:
            self.skipTest("this host has no default route")
        r = run([NIC_BIND, "--dry-run", "bind", dev])
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("refusing", r.stderr)
        self.assertIn("default route", r.stderr)
        self.assertNotIn("would run", r.stdout)
        # The same NIC named by its PCI address, when it has one.
        link = os.path.realpath("/sys/class/net/%s/device" % dev)
        pci = [c for c in link.split("/") if re.match(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$", c)]
        if pci:
            r = run([NIC_BIND, "--dry-run", "bind", pci[-1]])
            self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            self.assertIn("interface %s is in use" % dev, r.stderr)


class TestNicBindNamespace(unittest.TestCase):
    """A private namespace with a veth pair: the safety checks look at what the
    namespace has, and a fake sysfs makes veth end tga look like PCI
    function 0000:99:00.0 on ixgbe, so the bind path runs to its end in
    --dry-run without a real NIC anywhere near it."""

    PCI = "0000:99:00.0"
    PCI2 = "0000:99:00.1"

    def setUp(self):
        if not is_root():
            self.skipTest("needs root (network namespace)")
        self.ns = "tgd-" + secrets.token_hex(3)
        r = run(["ip", "netns", "add", self.ns])
        if r.returncode:
            self.skipTest("cannot make a network namespace: " + r.stderr.strip())
        self.addCleanup(run, ["ip", "netns", "del", self.ns])
        for argv in (["link", "add", "name", "tga", "type", "veth", "peer", "name", "tgb"],
                     ["link", "set", "tga", "up"], ["link", "set", "tgb", "up"]):
            r = run(["ip", "-n", self.ns] + argv)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.tmp = tempfile.mkdtemp(prefix="tg-deploy-nic-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sys = os.path.join(self.tmp, "sys")
        dev = os.path.join(self.sys, "devices", "pci0000:99", self.PCI)
        os.makedirs(dev)
        for d in ["class/net/tga", "class/net/tgb", "bus/pci/devices", "bus/pci/drivers/ixgbe",
                  "bus/pci/drivers/vfio-pci", "kernel/iommu_groups/7"]:
            os.makedirs(os.path.join(self.sys, d))
        os.symlink(dev, os.path.join(self.sys, "class/net/tga/device"))
        os.symlink(dev, os.path.join(self.sys, "bus/pci/devices", self.PCI))
        # tgb: a second function, for the several-NICs case.
        dev2 = os.path.join(self.sys, "devices", "pci0000:99", self.PCI2)
        os.makedirs(dev2)
        os.symlink(dev2, os.path.join(self.sys, "class/net/tgb/device"))
        os.symlink(dev2, os.path.join(self.sys, "bus/pci/devices", self.PCI2))
        os.symlink(os.path.join(self.sys, "bus/pci/drivers/ixgbe"), os.path.join(dev2, "driver"))
        self.set_driver("ixgbe")
        self.state = os.path.join(self.tmp, "state")

    def set_driver(self, drv):
        link = os.path.join(self.sys, "devices", "pci0000:99", self.PCI, "driver")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.join(self.sys, "bus/pci/drivers", drv), link)

    def nic(self, *args):
        env = dict(os.environ, NIC_BIND_SYSFS=self.sys)
        return run(["ip", "netns", "exec", self.ns, NIC_BIND, "--dry-run",
                    "--state-dir", self.state] + list(args), env=env)

    def ip(self, *args):
        r = run(["ip", "-n", self.ns] + list(args))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_free_nic_would_be_bound(self):
        r = self.nic("bind", self.PCI)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("would run: dpdk-devbind.py -b vfio-pci %s" % self.PCI, r.stdout)
        self.assertIn("would record kernel driver ixgbe", r.stdout)
        self.assertFalse(os.path.exists(self.state), "dry run wrote the state")
        # By interface name too.
        r = self.nic("bind", "tga")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("-b vfio-pci %s" % self.PCI, r.stdout)

    def test_refuses_a_nic_with_an_address(self):
        self.ip("addr", "add", "169.254.88.1/24", "dev", "tga")
        for dev in ("tga", self.PCI):
            r = self.nic("bind", dev)
            self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            self.assertIn("address 169.254.88.1/24", r.stderr)
            self.assertNotIn("would run", r.stdout)
        r = self.nic("--force", "bind", self.PCI)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("-b vfio-pci %s --force" % self.PCI, r.stdout)

    def test_refuses_a_nic_with_the_default_route(self):
        self.ip("route", "add", "default", "dev", "tga")
        r = self.nic("bind", self.PCI)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("default route", r.stderr)
        self.assertNotIn("would run", r.stdout)

    def test_refuses_before_binding_any_of_several(self):
        # One bad NIC in the list: nothing at all is bound.
        self.ip("addr", "add", "169.254.88.1/24", "dev", "tga")
        r = self.nic("bind", self.PCI2)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("-b vfio-pci %s" % self.PCI2, r.stdout)
        r = self.nic("bind", self.PCI2, self.PCI)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertNotIn("would run", r.stdout)

    def test_virtual_interface_is_not_bindable(self):
        self.ip("link", "add", "name", "tgv", "type", "veth", "peer", "name", "tgw")
        os.makedirs(os.path.join(self.sys, "class/net/tgv"))   # no device link: virtual
        r = self.nic("bind", "tgv")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a PCI device", r.stderr)
        self.assertIn("net_af_packet", r.stderr)

    def test_unbind_gives_it_back(self):
        r = self.nic("unbind", self.PCI)
        self.assertEqual(r.returncode, 0)
        self.assertIn("nothing to do", r.stdout)   # on ixgbe already
        self.set_driver("vfio-pci")
        os.makedirs(self.state)
        with open(os.path.join(self.state, self.PCI + ".driver"), "w") as f:
            f.write("ixgbe\n")
        r = self.nic("unbind", self.PCI)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("would run: dpdk-devbind.py -b ixgbe %s" % self.PCI, r.stdout)
        r = self.nic("unbind", "--driver", "i40e", self.PCI)
        self.assertIn("-b i40e %s" % self.PCI, r.stdout)
        r = self.nic("bind", self.PCI)
        self.assertEqual(r.returncode, 0)
        self.assertIn("already bound to vfio-pci", r.stdout)
        self.assertNotIn("would run: dpdk-devbind", r.stdout)


# ---------------------------------------------------------------- configs ---

class Proc:
    def __init__(self, argv, log):
        self.log = log
        self.p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                  preexec_fn=harness._pdeathsig)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def tail(self):
        try:
            return open(self.log, errors="replace").read()[-2000:]
        except OSError:
            return ""


def redis_cli(port, *args, password=REDIS_PASSWORD):
    argv = ["redis-cli", "-p", str(port)]
    if password:
        argv += ["-a", password, "--no-auth-warning"]
    return run(argv + list(args), timeout=10).stdout.strip()


class TestConfigs(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tg-deploy-cfg-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.procs = []
        self.addCleanup(lambda: [p.stop() for p in reversed(self.procs)])

    def test_control_example_is_generated_and_checks(self):
        if built():
            self.skipTest(built())
        ex = os.path.join(DEPLOY, "tidegate-control.conf.example")
        r = run([CONTROL_BIN, "--print-config-example"])
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout, open(ex).read(),
                         "deploy/tidegate-control.conf.example differs from --print-config-example")
        r = run([CONTROL_BIN, "--config", ex, "--check-config"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration OK", r.stdout)
        # Every option, uncommented with its default, is still a valid file.
        text = re.sub(r"(?m)^#([a-z-]+ = )", r"\1", open(ex).read())
        f = os.path.join(self.tmp, "all.conf")
        open(f, "w").write(text)
        r = run([CONTROL_BIN, "--config", f, "--check-config"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def gateway_parse(self, conf):
        # --check-config parses the options and the file and prints the
        # result without starting EAL: no hugepages, no port.
        return run([GW_BIN, "--check-config", "--config", conf], timeout=30)

    def test_gateway_example_parses(self):
        if built():
            self.skipTest(built())
        ex = open(os.path.join(DEPLOY, "tidegate-gateway.conf.example")).read()
        dirs = []

        def store(m):
            d = os.path.join(self.tmp, "store%d" % len(dirs))
            os.mkdir(d)
            dirs.append(d)
            return "store-dir = " + d

        text = re.sub(r"(?m)^#([a-z-]+ = )", r"\1", ex)
        text = re.sub(r"(?m)^store-dir = .*$", store, text)
        keys = re.findall(r"(?m)^([a-z-]+) = ", text)
        self.assertGreaterEqual(len(set(keys)), 9, keys)
        good = os.path.join(self.tmp, "gw.conf")
        open(good, "w").write(text)
        r = self.gateway_parse(good)
        self.assertEqual(r.returncode, 0, "the example does not parse:\n" + r.stderr)
        self.assertIn("[gateway]", r.stdout)
        for d in dirs:
            self.assertIn("store-dir = " + d + "\n", r.stdout)
        # The probe can tell a bad file: a value out of range stops it first.
        bad = os.path.join(self.tmp, "bad.conf")
        open(bad, "w").write(text.replace("mtu = 1500", "mtu = 99999"))
        r = self.gateway_parse(bad)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, re.escape(bad) + r":\d+: mtu:")
        self.assertNotIn("[gateway]", r.stdout)

    def start_redis(self, port):
        conf = os.path.join(DEPLOY, "redis", "redis.conf")
        p = Proc(["redis-server", conf, "--port", str(port), "--dir", self.tmp,
                  "--daemonize", "no", "--save", ""], os.path.join(self.tmp, "redis.log"))
        self.procs.append(p)
        wait_for(lambda: redis_cli(port, "ping") == "PONG", 10, what="redis-server with redis.conf")
        return p

    def test_redis_conf_loads_and_means_it(self):
        if not shutil.which("redis-server") or not shutil.which("redis-cli"):
            self.skipTest("redis-server / redis-cli not installed")
        port = free_port()
        self.start_redis(port)
        self.assertIn("NOAUTH", run(["redis-cli", "-p", str(port), "get", "x"]).stdout)
        cfg = {}
        for k in ["appendonly", "appendfsync", "maxmemory-policy", "protected-mode", "bind",
                  "aof-use-rdb-preamble"]:
            out = redis_cli(port, "config", "get", k).splitlines()
            cfg[k] = out[1] if len(out) > 1 else None
        self.assertEqual(cfg["appendonly"], "yes")
        self.assertEqual(cfg["appendfsync"], "everysec")
        self.assertEqual(cfg["maxmemory-policy"], "noeviction")
        self.assertEqual(cfg["protected-mode"], "yes")
        self.assertEqual(cfg["bind"].split(), ["127.0.0.1", "-::1"])
        # noeviction: at the limit, writes are refused, nothing is dropped.
        self.assertEqual(redis_cli(port, "set", "tg:keep", "1"), "OK")
        redis_cli(port, "config", "set", "maxmemory", "1")
        self.assertIn("OOM", redis_cli(port, "set", "tg:more", "2"))
        self.assertEqual(redis_cli(port, "get", "tg:keep"), "1")
        redis_cli(port, "config", "set", "maxmemory", "1gb")
        self.assertTrue(glob.glob(os.path.join(self.tmp, "appendonlydir", "*.aof")))

    def test_control_runs_against_redis_conf(self):
        if built():
            self.skipTest(built())
        if not shutil.which("redis-server"):
            self.skipTest("redis-server not installed")
        port = free_port()
        self.start_redis(port)
        conf = os.path.join(self.tmp, "control.conf")
        admin = os.path.join(self.tmp, "admin.sock")
        with open(conf, "w") as f:
            f.write("[redis]\nhost = 127.0.0.1\nport = %d\npassword = %s\n"
                    % (port, REDIS_PASSWORD))
        c = Proc([CONTROL_BIN, "--config", conf, "--admin-socket", admin,
                  "--gateway-socket", os.path.join(self.tmp, "gw.sock"),
                  "--admin-group", "root"], os.path.join(self.tmp, "control.log"))
        self.procs.append(c)

        def up():
            r = run([CTL_BIN, "--socket", admin, "--json", "provider", "show"], timeout=10)
            return r.returncode == 0 and '"up"' in r.stdout

        wait_for(up, 15, what="tidegate-control on redis.conf's Redis\n" + c.tail())
        r = run([CTL_BIN, "--socket", admin, "--json", "org", "add", "deploy-test", "--seats", "2",
                 "--quota", "1G"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(redis_cli(port, "scard", "tg:orgs"), "1")

    def test_sentinel_conf_loads(self):
        if not shutil.which("redis-server"):
            self.skipTest("redis-server not installed")
        port = free_port()
        self.start_redis(port)
        sport = free_port()
        text = open(os.path.join(DEPLOY, "redis", "sentinel.conf")).read()
        self.assertIn("sentinel monitor tidegate 10.0.0.11 6379 2", text)
        text = text.replace("sentinel monitor tidegate 10.0.0.11 6379 2",
                            "sentinel monitor tidegate 127.0.0.1 %d 2" % port)
        text = re.sub(r"(?m)^port 26379$", "port %d" % sport, text)
        text = re.sub(r"(?m)^bind .*$", "bind 127.0.0.1", text)
        text = re.sub(r"(?m)^dir .*$", "dir " + self.tmp, text)
        f = os.path.join(self.tmp, "sentinel.conf")   # Sentinel rewrites its file
        open(f, "w").write(text)
        s = Proc(["redis-server", f, "--sentinel"], os.path.join(self.tmp, "sentinel.log"))
        self.procs.append(s)
        addr = wait_for(lambda: redis_cli(sport, "sentinel", "get-master-addr-by-name", "tidegate",
                                          password=None).split(),
                        10, what="Sentinel to answer\n" + s.tail())
        self.assertEqual(addr, ["127.0.0.1", str(port)])
        # auth-pass matches redis.conf's requirepass: Sentinel sees a healthy
        # master (a wrong password would leave it unable to talk to it).
        flags = wait_for(lambda: "master" == self.sentinel_field(sport, "flags") and
                         self.sentinel_field(sport, "role-reported") == "master",
                         10, what="Sentinel to see the master")
        self.assertTrue(flags)
        self.assertEqual(self.sentinel_field(sport, "quorum"), "2")

    @staticmethod
    def sentinel_field(sport, name):
        out = redis_cli(sport, "sentinel", "master", "tidegate", password=None).splitlines()
        d = dict(zip(out[0::2], out[1::2]))
        return d.get(name)


# ------------------------------------------------------------------- docs ---

class TestDocs(unittest.TestCase):

    def test_operations_explains_every_drop_reason(self):
        names = re.findall(r'\[GW_DROP_\w+\] = "(\w+)"',
                           open(os.path.join(TG_SRC, "gateway", "engine_names.c")).read())
        self.assertGreater(len(names), 10)
        doc = open(os.path.join(TG_SRC, "docs", "operations.md")).read()
        missing = [n for n in names if "`%s`" % n not in doc]
        self.assertEqual(missing, [], "drop reasons not in docs/operations.md")

    def test_operations_has_a_runbook_for_every_alert(self):
        doc = open(os.path.join(TG_SRC, "docs", "operations.md")).read()
        for h in ["Quota 80 %", "Quota 90 %", "Quota 100 %", "Control plane unavailable",
                  "Gateway down", "Storage errors", "Seats full"]:
            self.assertRegex(doc, r"(?m)^#+ .*%s" % re.escape(h), h)


if __name__ == "__main__":
    try:
        harness.main([sys.modules[__name__]])
    finally:
        Installed.cleanup()
