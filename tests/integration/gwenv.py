"""
gwenv.py - the end-to-end bench: a real tidegate-gateway on a veth pair, its
clients in a network namespace, and harness.py's Redis + tidegate-control.

The gateway is a DPDK process, so the only honest way to test it is the way
it runs: its own port (net_af_packet on the host end of a veth pair), real
frames from real tidegate-push / tidegate-restore processes that sit in a
network namespace on the other end, and a real control plane behind it.

    namespace tgc-<id>                      root namespace
    tgc0 169.254.77.2/24  <--- veth --->  tgg-<id> (no IP; DPDK net_af_packet)
    tidegate-push/-restore                 tidegate-gateway 169.254.77.1
                                           tidegate-control + redis-server

The host end is named tgg-<id>, not tgg0, so that two benches (two engineers,
or run.sh beside a quick start) never fight over one interface name; inside
the namespace the client end is tgc0 as docs describe.

What lives here:
  GwEnv         the whole bench: start(), stop() (returns what went wrong),
                ctl(), add_org(), push(), restore(), telemetry(), logs
  Hugepages     reserve 512 x 2 MiB once per process (mounting hugetlbfs if
                needed) or say why not, so the gateway runs --no-huge instead
  Telemetry     DPDK's telemetry socket (SOCK_SEQPACKET, JSON)
  ClientResult  exit code, parsed --json, stderr of one client run
  trees         make_real_tree(), make_tree(), compare_trees()

Every GwEnv registers itself with harness's cleanup list, so namespaces,
veths and processes go away on a failing test, at exit and on SIGTERM.
TG_ITEST_KEEP=1 keeps the temp directory; TG_ITEST_HUGE=0 forces --no-huge.

Python 3 standard library only.
"""
import atexit
import concurrent.futures
import hashlib
import json as jsonlib
import os
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import TG_BUILD, wait_for  # noqa: E402

GW_BIN = os.path.join(TG_BUILD, "gateway", "tidegate-gateway")
PUSH_BIN = os.path.join(TG_BUILD, "client", "tidegate-push")
RESTORE_BIN = os.path.join(TG_BUILD, "client", "tidegate-restore")

GW_IP = "169.254.77.1"
CLIENT_IP = "169.254.77.2"
PREFIX_LEN = 24
CLIENT_IF = "tgc0"
HUGEPAGES = 512
DPDK_RUN = "/var/run/dpdk"

# Client exit codes (docs: CLI contracts): 10 + enum tg_err.
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_LOCAL = 3
EXIT_BAD_KEY = 11
EXIT_UNKNOWN_ORG = 12
EXIT_SEATS_FULL = 13
EXIT_QUOTA = 14
EXIT_DEACTIVATED = 15
EXIT_RESTORE_LIMIT = 16
EXIT_NOT_FOUND = 23
EXIT_STORAGE = 24
EXIT_BAD_REQUEST = 25
EXIT_TIMEOUT = 30

MiB = 1 << 20


def is_root():
    return os.geteuid() == 0


def missing_binaries():
    """The binaries the bench needs that are not built, by path."""
    need = [harness.CONTROL_BIN, harness.CTL_BIN, GW_BIN, PUSH_BIN, RESTORE_BIN]
    return [p for p in need if not os.access(p, os.X_OK)]


def skip_reason():
    """Why the end-to-end tests cannot run here, or None."""
    if not is_root():
        return "not root: network namespaces, veths and hugepages need root"
    miss = missing_binaries()
    if miss:
        return "not built: " + ", ".join(os.path.relpath(p, TG_BUILD) for p in miss)
    for tool in ("ip", "ethtool"):
        if not shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin:" + os.environ.get("PATH", "")):
            return "%s not installed (deploy/install-deps.sh)" % tool
    return None


def _run(argv, check=True, timeout=30):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                               p.stderr.decode(errors="replace").strip()))
    return p


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def _read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


# -------------------------------------------------------------- hugepages ---

class Hugepages:
    """512 x 2 MiB hugepages for the process's gateways, or the reason why not.
    Done once per process and undone at exit (only what this process did)."""

    NR = "/proc/sys/vm/nr_hugepages"
    FREE = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"
    state = None          # None: not tried; True: reserved; str: why not
    _prev_nr = None
    _mounted = None

    @classmethod
    def _mountpoint(cls):
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] == "hugetlbfs" and "pagesize=1G" not in parts[3]:
                    return parts[1]
        return None

    @classmethod
    def reserve(cls):
        if cls.state is not None:
            return cls.state
        if os.environ.get("TG_ITEST_HUGE") == "0":
            cls.state = "TG_ITEST_HUGE=0"
            return cls.state
        try:
            if cls._mountpoint() is None:
                os.makedirs("/dev/hugepages", exist_ok=True)
                _run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", "/dev/hugepages"])
                cls._mounted = "/dev/hugepages"
            free = _read_int(cls.FREE)
            if free < HUGEPAGES:
                cls._prev_nr = _read_int(cls.NR)
                _write(cls.NR, cls._prev_nr + HUGEPAGES - free)
                free = _read_int(cls.FREE)
            if free < HUGEPAGES:
                cls.release()
                cls.state = "only %d free 2 MiB hugepages after asking for %d" % (free, HUGEPAGES)
            else:
                cls.state = True
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
            cls.release()
            cls.state = "cannot reserve hugepages: %s" % e
        return cls.state

    @classmethod
    def release(cls):
        if cls._prev_nr is not None:
            # Another bench (another process) may be using the pages by now:
            # give them back only when every reserved page is free.
            try:
                if _read_int(cls.FREE) >= _read_int(cls.NR):
                    _write(cls.NR, cls._prev_nr)
            except OSError:
                pass
            cls._prev_nr = None
        if cls._mounted:
            subprocess.run(["umount", cls._mounted], capture_output=True)
            cls._mounted = None


def _cleanup_all():
    # Gateways first (they hold hugepages and the veths), then the pages.
    harness.cleanup_all()
    Hugepages.release()


atexit.register(_cleanup_all)


def _on_term(signum, frame):
    _cleanup_all()
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


# -------------------------------------------------------------- telemetry ---

class Telemetry:
    """DPDK's telemetry v2 socket: on connect the process sends one JSON info
    message ({"version", "pid", "max_output_len"}); then each command sent
    gets one JSON reply {"<command>": data}."""

    def __init__(self, path, timeout=5.0):
        self.path = path
        self.timeout = timeout

    def cmd(self, command):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            info = jsonlib.loads(s.recv(65536))
            bufsz = max(int(info.get("max_output_len", 16384)), 16384) + 1024
            s.send(command.encode())
            rep = s.recv(bufsz)
        if not rep:
            raise RuntimeError("telemetry closed without answering %s" % command)
        data = jsonlib.loads(rep)
        if not isinstance(data, dict) or len(data) != 1:
            raise RuntimeError("telemetry %s: unexpected reply %r" % (command, data))
        return next(iter(data.values()))

    def stats(self):
        return self.cmd("/tidegate/stats")


def counter_delta(before, after):
    """after - before for every integer counter (nested dicts flattened a.b)."""
    out = {}

    def walk(b, a, prefix):
        for k, v in a.items():
            bv = b.get(k) if isinstance(b, dict) else None
            if isinstance(v, dict):
                walk(bv or {}, v, prefix + k + ".")
            elif isinstance(v, int) and not isinstance(v, bool):
                out[prefix + k] = v - (bv if isinstance(bv, int) else 0)
    walk(before, after, "")
    return out


# ----------------------------------------------------------------- client ---

class ClientResult:
    def __init__(self, argv, rc, stdout, stderr, seconds):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        # --json prints one object per line (one per device for a relay);
        # json is the last one, jsons all of them in order.
        self.jsons = []
        for line in stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.jsons.append(jsonlib.loads(line))
                except ValueError:
                    pass
        self.json = self.jsons[-1] if self.jsons else None

    def __getitem__(self, k):
        if self.json is None:
            raise AssertionError("no --json output from %s" % self.describe())
        return self.json[k]

    def describe(self):
        return ("`%s` -> exit %s in %.1fs\nstdout: %s\nstderr: %s"
                % (" ".join(self.argv[3:]), self.rc, self.seconds,
                   self.stdout.strip()[-2000:], self.stderr.strip()[-2000:]))

    __str__ = describe


# ------------------------------------------------------------------ bench ---

class GwEnv:
    """redis-server + tidegate-control (harness.Env) + a namespace + veth +
    tidegate-gateway. start() may raise; stop() never does and returns a
    description of what went wrong (gateway crash, bad exit) or None."""

    def __init__(self, workers=1, io_threads=2, store_dirs=4, env_kwargs=None, gw_extra=(),
                 client_timeout=30):
        self.id = secrets.token_hex(3)
        self.ns = "tgc-" + self.id
        self.host_if = "tgg-" + self.id
        self.prefix = "tg-" + self.id
        self.name = "gw-" + self.id
        self.workers = workers
        self.io_threads = io_threads
        self.nstore = store_dirs
        self.gw_extra = list(gw_extra)
        self.client_timeout = client_timeout
        self.env = harness.Env(**(env_kwargs or {}))
        self.tmp = tempfile.mkdtemp(prefix="tg-e2e-")
        self.store_dirs = [os.path.join(self.tmp, "store", "d%02d" % i) for i in range(store_dirs)]
        self.gw = None
        self.gw_log = os.path.join(self.tmp, "gateway.log")
        self.net_up = False
        self.huge = None
        self.crashes = []
        self._stopped = False
        self._seq = 0
        # Stopped before harness's Envs (the gateway before its control plane).
        harness._envs.insert(0, self)

    # -- life cycle --

    def start(self):
        self.env.start()
        self.setup_net()
        for d in self.store_dirs:
            os.makedirs(d, exist_ok=True)
        self.start_gateway()
        return self

    def setup_net(self):
        _run(["ip", "netns", "add", self.ns])
        self.net_up = True
        # The peer is created straight inside the namespace: no tgc0 ever
        # exists in the root namespace, so benches cannot collide on it.
        _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", CLIENT_IF,
              "netns", self.ns])
        nsx = ["ip", "netns", "exec", self.ns]
        _run(nsx + ["ip", "link", "set", "lo", "up"])
        _run(nsx + ["ip", "addr", "add", "%s/%d" % (CLIENT_IP, PREFIX_LEN), "dev", CLIENT_IF])
        # IPv6 router solicitations and the like are noise to the gateway.
        _run(nsx + ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        _run(["sysctl", "-q", "-w", "net.ipv6.conf.%s.disable_ipv6=1" % self.host_if], check=False)
        _run(nsx + ["ip", "link", "set", CLIENT_IF, "up"])
        # veth would hand af_packet frames with checksums left to an offload
        # that never happens: the gateway would drop them as bad UDP.
        _run(nsx + ["ethtool", "-K", CLIENT_IF, "tx", "off"])
        _run(["ip", "link", "set", self.host_if, "up"])

    def teardown_net(self):
        if not self.net_up:
            return
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        for _ in range(20):
            p = subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            if p.returncode == 0 or not os.path.exists("/run/netns/" + self.ns):
                break
            time.sleep(0.1)
        self.net_up = False

    def gateway_argv(self):
        self.huge = Hugepages.reserve()
        argv = [GW_BIN, "-l", ",".join(str(i) for i in range(self.workers + 1)),
                "--main-lcore", "0", "--file-prefix", self.prefix, "--no-pci",
                "--log-level", "lib.eal:warning",
                "--vdev", "net_af_packet0,iface=%s,framecnt=8192,qpairs=%d"
                % (self.host_if, self.workers)]
        if self.huge is True:
            argv += ["--huge-unlink"]
        else:
            argv += ["--no-huge", "-m", "1024"]
        argv += ["--", "--addr", "0=%s/%d" % (GW_IP, PREFIX_LEN),
                 "--control-sock", self.env.gateway_sock, "--name", self.name,
                 "--io-threads", str(self.io_threads)]
        for d in self.store_dirs:
            argv += ["--store-dir", d]
        return argv + self.gw_extra

    def start_gateway(self, timeout=90):
        log = open(self.gw_log, "ab")
        self.gw = subprocess.Popen(self.gateway_argv(), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, preexec_fn=harness._pdeathsig)
        log.close()
        start = os.path.getsize(self.gw_log)

        def ready():
            if self.gw.poll() is not None:
                raise RuntimeError("tidegate-gateway exited with %s before 'ready':\n%s"
                                   % (self.gw.returncode, self.tail(40)))
            with open(self.gw_log, "rb") as f:
                f.seek(start)
                return b"ready" in f.read()
        try:
            wait_for(ready, timeout, 0.1, what="tidegate-gateway's 'ready' line")
        except RuntimeError as e:
            raise AssertionError(str(e))
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.tail(40)))

    def gateway_alive(self):
        return self.gw is not None and self.gw.poll() is None

    def check_gateway(self, where):
        """Record a dead gateway and start a new one, so later tests still run."""
        if self.gw is not None and self.gw.poll() is not None:
            self.crashes.append("tidegate-gateway died (status %s) before %s:\n%s"
                                % (self.gw.returncode, where, self.tail(40)))
            self.start_gateway()
            return False
        return True

    def stop_gateway(self, sig=signal.SIGTERM, timeout=30):
        """SIGTERM; None if it exited 0 in time, else what happened."""
        if self.gw is None:
            return None
        gw, self.gw = self.gw, None
        try:
            if gw.poll() is not None:
                return "tidegate-gateway had died (status %s)\n%s" % (gw.returncode, self.tail(40))
            gw.send_signal(sig)
            try:
                gw.wait(timeout)
            except subprocess.TimeoutExpired:
                gw.kill()
                gw.wait(10)
                return "tidegate-gateway ignored SIGTERM for %d s\n%s" % (timeout, self.tail(40))
        finally:
            # EAL's runtime directory (config, telemetry socket) outlives a
            # killed process; nothing else will ever remove it.
            shutil.rmtree(os.path.join(DPDK_RUN, self.prefix), ignore_errors=True)
        if gw.returncode != 0:
            return "tidegate-gateway exited with %s on SIGTERM\n%s" % (gw.returncode, self.tail(40))
        return None

    def stop(self):
        if self._stopped:
            return None
        self._stopped = True
        problems = list(self.crashes)
        try:
            p = self.stop_gateway()
            if p:
                problems.append(p)
        except Exception as e:  # cleanup goes on whatever happens
            problems.append("stopping the gateway: %r" % e)
        try:
            self.teardown_net()
        except Exception as e:
            problems.append("removing the namespace: %r" % e)
        try:
            p = self.env.stop()
            if p:
                problems.append(p)
        except Exception as e:
            problems.append("stopping tidegate-control: %r" % e)
        if os.environ.get("TG_ITEST_KEEP"):
            sys.stderr.write("kept %s\n" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self in harness._envs:
            harness._envs.remove(self)
        return "\n".join(problems) or None

    def tail(self, n=30):
        try:
            with open(self.gw_log, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "--- tidegate-gateway log (tail) ---\n" + "\n".join(lines[-n:])
        except OSError:
            return "(no gateway log)"

    def logs(self, n=15):
        return self.tail(n) + "\n--- tidegate-control log (tail) ---\n" + \
            self.env.tail("control.log", n)

    # -- control plane --

    def ctl(self, *args, **kw):
        return self.env.ctl(*args, **kw)

    def ctl_ok(self, *args):
        rc, out, err = self.env.ctl(*args)
        if rc != 0:
            raise AssertionError("tidegate-ctl %s: exit %d: %s" % (" ".join(map(str, args)), rc, err))
        return out

    def provider_guid(self):
        return self.ctl_ok("provider", "show")["guid"]

    def add_org(self, name, seats=10, quota="1G", *flags):
        """tidegate-ctl org add; the result carries registration_key."""
        org = self.ctl_ok("org", "add", name, "--seats", seats, "--quota", quota, *flags)
        if "registration_key" not in org:
            raise AssertionError("org add gave no registration_key: %r" % org)
        return org

    def org(self, name):
        return self.ctl_ok("org", "show", name)

    # -- clients --

    def creds_path(self, name):
        d = os.path.join(self.tmp, "creds")
        os.makedirs(d, mode=0o700, exist_ok=True)
        return os.path.join(d, name)

    def scratch(self, name):
        """A fresh directory under the bench's temp dir."""
        self._seq += 1
        p = os.path.join(self.tmp, "%s-%d" % (name, self._seq))
        os.makedirs(p)
        return p

    def client(self, binary, args, timeout=None):
        argv = ["ip", "netns", "exec", self.ns, binary] + [str(a) for a in args]
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, preexec_fn=harness._pdeathsig)
        try:
            out, err = p.communicate(timeout=timeout or (self.client_timeout * 4 + 300))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += b"\n[gwenv: killed after the test's time limit]"
            rc = "killed"
        else:
            rc = p.returncode
        return ClientResult(argv, rc, out.decode(errors="replace"), err.decode(errors="replace"),
                            time.monotonic() - t0)

    def _common(self, device, creds, relay, extra):
        """device: a name, or a list of names (a relay's devices, push only)."""
        a = ["-g", GW_IP, "-c", creds, "--json", "-q", "--timeout", self.client_timeout]
        for d in [device] if isinstance(device, str) else device:
            a += ["-n", d]
        if relay:
            a.append("--relay")
        return a + list(extra)

    def push(self, paths, device, creds, org=None, relay=False, label=None, key=None,
             extra=(), timeout=None):
        """tidegate-push; org (an add_org() result) supplies key and provider."""
        a = self._common(device, creds, relay, extra)
        if org is not None or key is not None:
            a += ["-P", self.provider_guid(), "-k", key or org["registration_key"]]
        if label is not None:
            a += ["-l", label]
        if isinstance(paths, str):
            paths = [paths]
        return self.client(PUSH_BIN, a + (["--"] + list(paths) if paths else []), timeout)

    def register(self, device, creds, org=None, key=None, relay=False):
        return self.push([], device, creds, org=org, key=key, relay=relay,
                         extra=["--register-only"])

    def restore(self, target, device, creds, backup=None, relay=False, admin=False,
                from_device=None, force=False, extra=(), timeout=None):
        a = self._common(device, creds, relay, extra)
        if backup is not None:
            a += ["-b", backup]
        if admin:
            a.append("--admin")
        if from_device:
            a += ["--from-device", from_device]
        if force:
            a.append("--force")
        return self.client(RESTORE_BIN, a + ["--", target], timeout)

    def parallel(self, *calls):
        """Run (fn, args, kwargs) calls at once; their results in order."""
        with concurrent.futures.ThreadPoolExecutor(len(calls)) as ex:
            futs = [ex.submit(fn, *a, **kw) for fn, a, kw in calls]
            return [f.result() for f in futs]

    # -- telemetry --

    def telemetry(self):
        return Telemetry(os.path.join(DPDK_RUN, self.prefix, "dpdk_telemetry.v2"))

    def stats_settled(self, key="chunks_stored", quiet=1.0, timeout=30):
        """/tidegate/stats once `key` has not moved for `quiet` seconds (the
        storage threads may still finish chunks after a client has gone)."""
        t = self.telemetry()
        last = t.stats()
        since = time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            time.sleep(0.2)
            cur = t.stats()
            if cur.get(key) != last.get(key):
                since = time.monotonic()
            last = cur
            if time.monotonic() - since >= quiet:
                break
        return last


# ------------------------------------------------------------------ trees ---

def _copy_entry(src, dst):
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copy2(src, dst)
    else:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _copy_some(src_root, dst_root, budget, max_file=8 * MiB, want=None):
    """Copy files of src_root (sorted walk) into dst_root until budget bytes;
    directories keep their modes and mtimes. Returns bytes copied."""
    copied = 0
    dirs = []
    for dirpath, dirnames, filenames in os.walk(src_root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, src_root)
        out = os.path.normpath(os.path.join(dst_root, rel))
        made = False
        for fn in sorted(filenames):
            if copied >= budget:
                break
            sp = os.path.join(dirpath, fn)
            try:
                st = os.lstat(sp)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_size > max_file or
                                             (want and not want(fn))):
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue
            if not made:
                os.makedirs(out, exist_ok=True)
                dirs.append((dirpath, out))
                made = True
            try:
                copied += _copy_entry(sp, os.path.join(out, fn))
            except OSError:
                continue
        if copied >= budget:
            break
    for sp, dp in reversed(dirs):
        try:
            shutil.copystat(sp, dp)
        except OSError:
            pass
    return copied


def make_real_tree(dst, doc_bytes=20 * MiB, lib_bytes=14 * MiB):
    """Tens of MB of real files, copied so they cannot change under the test:
    /usr/share/doc (text, gzip, symlinks) and shared libraries from /usr/lib,
    plus hand-made cases: modes, empty file, sub-second mtimes, odd names,
    symlinks (relative, absolute, dangling), a multi-chunk file."""
    os.makedirs(dst, exist_ok=True)
    _copy_some("/usr/share/doc", os.path.join(dst, "doc"), doc_bytes)
    libdir = "/usr/lib/x86_64-linux-gnu"
    if not os.path.isdir(libdir):
        libdir = "/usr/lib"
    _copy_some(libdir, os.path.join(dst, "lib"), lib_bytes, max_file=4 * MiB,
               want=lambda n: ".so" in n)
    sp = os.path.join(dst, "special")
    os.makedirs(os.path.join(sp, "private"))
    rnd = random.Random(20240404)
    files = {
        "secret.txt": (0o600, b"only root reads this\n"),
        "script.sh": (0o755, b"#!/bin/sh\necho hello\n"),
        "readonly": (0o444, b"read only\n" * 100),
        "empty": (0o644, b""),
        "with space and \u00e9t\u00e9.txt": (0o640, b"name test\n"),
        "private/deep": (0o600, bytes(rnd.getrandbits(8) for _ in range(3000))),
        # Bigger than TG_CHUNK_MAX: several chunks whatever the CDC does.
        "big.bin": (0o644, rnd.randbytes(6 * MiB) + b"tail" * 1000),
    }
    for name, (mode, data) in files.items():
        p = os.path.join(sp, name)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
    os.symlink("secret.txt", os.path.join(sp, "link-rel"))
    os.symlink("/etc/hostname", os.path.join(sp, "link-abs"))
    os.symlink("does/not/exist", os.path.join(sp, "link-dangling"))
    os.utime(os.path.join(sp, "script.sh"), ns=(1600000000123456789, 1600000000123456789))
    os.utime(os.path.join(sp, "empty"), ns=(1000000000000000001, 1000000000000000001))
    os.chmod(os.path.join(sp, "private"), 0o700)
    os.utime(os.path.join(sp, "private"), ns=(1500000000987654321, 1500000000987654321))
    os.utime(sp, ns=(1400000000000000000, 1400000000000000000))
    return dst


def make_tree(dst, seed, nfiles=8, size=256 * 1024, compressible=True):
    """A small tree whose content is unique to seed (no dedup with any other
    seed): half text-like, half random when compressible, else all random."""
    rnd = random.Random(seed)
    os.makedirs(os.path.join(dst, "sub"), exist_ok=True)
    tag = ("seed %r\n" % (seed,)).encode()
    for i in range(nfiles):
        p = os.path.join(dst, "sub" if i % 2 else "", "f%03d.dat" % i)
        if compressible and i % 2 == 0:
            words = [b"alpha", b"beta", b"gamma", b"delta", tag.strip()]
            data = b" ".join(rnd.choice(words) for _ in range(size // 5))[:size]
        else:
            data = rnd.randbytes(size)
        with open(p, "wb") as f:
            f.write(tag + data)
        os.chmod(p, 0o640 if i % 3 else 0o600)
        os.utime(p, ns=(1700000000000000000 + i * 1000003, 1700000000000000000 + i * 1000003))
    return dst


def tree_bytes(root):
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            st = os.lstat(os.path.join(dirpath, fn))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _snapshot(root):
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            m = st.st_mode
            if stat.S_ISLNK(m):
                snap[rel] = ("link", None, None, os.readlink(p))
            elif stat.S_ISDIR(m):
                snap[rel] = ("dir", stat.S_IMODE(m), st.st_mtime_ns, None)
            elif stat.S_ISREG(m):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for blk in iter(lambda: f.read(1 << 20), b""):
                        h.update(blk)
                snap[rel] = ("file", stat.S_IMODE(m), st.st_mtime_ns,
                             (st.st_size, h.hexdigest()))
            else:
                snap[rel] = ("other", stat.S_IMODE(m), None, None)
    return snap


def restored_root(target, src):
    """Where a restore of src landed inside target: target/<basename(src)>
    when the client keeps the top directory's name, else target itself."""
    cand = os.path.join(target, os.path.basename(os.path.normpath(src)))
    entries = os.listdir(target)
    if entries == [os.path.basename(os.path.normpath(src))] and os.path.isdir(cand) \
            and not os.path.isdir(os.path.join(src, os.path.basename(os.path.normpath(src)))):
        return cand
    return target


def compare_trees(src, target, limit=20):
    """Differences between src and its restore in target (content, type,
    permission bits, mtimes to the nanosecond for files and directories,
    symlink targets), as lines; [] when identical."""
    dst = restored_root(target, src)
    a, b = _snapshot(src), _snapshot(dst)
    diffs = []
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            diffs.append("missing in restore: %s (%s)" % (rel, a[rel][0]))
        elif rel not in a:
            diffs.append("extra in restore: %s (%s)" % (rel, b[rel][0]))
        else:
            ta, tb = a[rel], b[rel]
            if ta[0] != tb[0]:
                diffs.append("%s: type %s restored as %s" % (rel, ta[0], tb[0]))
                continue
            if ta[3] != tb[3]:
                what = "content" if ta[0] == "file" else "target"
                diffs.append("%s: %s differs (%r vs %r)" % (rel, what, ta[3], tb[3]))
            if ta[1] != tb[1]:
                diffs.append("%s: mode %o restored as %o" % (rel, ta[1], tb[1]))
            if ta[2] != tb[2]:
                diffs.append("%s: mtime %d restored as %d" % (rel, ta[2], tb[2]))
        if len(diffs) >= limit:
            diffs.append("... (stopped after %d differences)" % limit)
            break
    return diffs


def count_entries(root):
    n = 0
    for _, dirnames, filenames in os.walk(root):
        n += len(dirnames) + len(filenames)
    return n

