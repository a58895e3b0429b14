"""
harness.py - the test bench for tidegate-control's integration tests.

Every test talks to real processes: a real redis-server (Debian's) on a free
loopback port with an append-only file, and the real tidegate-control and
tidegate-ctl from the build directory ($TG_BUILD). Nothing is mocked, so a
test that passes here passed against the daemon as it ships.

What lives here:
  Env          one Redis + one tidegate-control in a private temp directory;
               ctl() runs tidegate-ctl, admin() speaks the admin socket,
               link() opens a gateway link, kill_redis()/start_redis()
  Link         a gateway-link client (SOCK_SEQPACKET): hello, requests with
               seq (several may be in flight from several threads), pushes
  Redis        a tiny RESP client to look at (never to fix) what is stored
  device crypto (docs/protocol.md section 4) in hashlib/hmac, plus AES-GCM
               through libcrypto with ctypes, so a test can open the wrapped
               credential and prove a device's AUTH like a real client
  TapResult    unittest results as TAP, one line per test case, so meson and
               tests/run.sh count every case

Python 3 standard library only.
"""
import atexit
import base64
import ctypes
import ctypes.util
import hashlib
import hmac
import json as jsonlib
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TG_SRC = os.environ.get("TG_SRC") or os.path.dirname(os.path.dirname(HERE))
TG_BUILD = os.environ.get("TG_BUILD") or os.path.join(TG_SRC, "build")
CONTROL_BIN = os.path.join(TG_BUILD, "control", "tidegate-control")
CTL_BIN = os.path.join(TG_BUILD, "control", "tidegate-ctl")
LINKCTL_BIN = os.path.join(TG_BUILD, "control", "tidegate-linkctl")
REDIS_BIN = shutil.which("redis-server", path="/usr/bin:/usr/local/bin:" + os.environ.get("PATH", "")) \
    or "/usr/bin/redis-server"

MiB = 1 << 20
GiB = 1 << 30
GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
KEY_RE = re.compile(r"^TG1-[A-Z2-7]{64}$")
HEX_RE = re.compile(r"^[0-9a-f]+$")

# enum tg_err (dataplane/tg_proto.h): the codes the gateway link answers with.
E_BAD_KEY = 1
E_UNKNOWN_ORG = 2
E_SEATS_FULL = 3
E_QUOTA_EXCEEDED = 4
E_ORG_DEACTIVATED = 5
E_RESTORE_OVER_LIMIT = 6
E_UNAVAILABLE = 9
E_RATE_LIMITED = 11
E_NOT_FOUND = 13
E_BAD_REQUEST = 15

TG_RF_RELAY = 0x0001

_envs = []


def have_binaries():
    return os.access(CONTROL_BIN, os.X_OK) and os.access(CTL_BIN, os.X_OK)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a true value; return it, or raise."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
        except Exception as e:  # a poll may race a restart; keep polling
            last = e
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                     % (timeout, what, e))
        else:
            if last:
                return last
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                     % (timeout, what, last))
        time.sleep(interval)


# ---------------------------------------------------------------- crypto ----

def parse_regkey(s):
    """TG1- + base32(key_id || secret): (key_id 8 bytes, secret 32 bytes)."""
    if not KEY_RE.match(s):
        raise ValueError("not a registration key: %r" % s)
    raw = base64.b32decode(s[4:])
    assert len(raw) == 40
    return raw[:8], raw[8:]


def format_regkey(key_id, secret):
    return "TG1-" + base64.b32encode(key_id + secret).decode().rstrip("=")


def guid_bytes(g):
    b = bytes.fromhex(g.replace("-", ""))
    if len(b) != 16:
        raise ValueError("not a GUID: %r" % g)
    return b


def regkey_salt(provider_guid, key_id):
    return hashlib.sha256(b"tidegate salt v1" + provider_guid + key_id).digest()[:16]


def regkey_verifier(salt, secret):
    return hmac.new(salt, secret, hashlib.sha256).digest()


def reg_proof(v, provider_guid, key_id, cn, sn, flags, name):
    msg = (b"tidegate reg v1" + provider_guid + key_id + cn + sn +
           struct.pack(">H", flags) + name)
    return hmac.new(v, msg, hashlib.sha256).digest()


def auth_proof(cred, device_id, cn, sn, max_frag, flags):
    msg = (b"tidegate auth v1" + device_id + cn + sn +
           struct.pack(">HH", max_frag, flags))
    return hmac.new(cred, msg, hashlib.sha256).digest()


def hkdf(ikm, salt, info, length=32):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def reg_wrap_key(v, cn, sn):
    return hkdf(v, cn + sn, b"tidegate reg wrap v1")


def session_key(cred, cn, sn):
    return hkdf(cred, cn + sn, b"tidegate session v1")


class _Gcm:
    """AES-256-GCM open/seal through the system's libcrypto (ctypes)."""
    EVP_CTRL_GCM_SET_IVLEN = 0x9
    EVP_CTRL_GCM_GET_TAG = 0x10
    EVP_CTRL_GCM_SET_TAG = 0x11

    def __init__(self):
        name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
        lib = ctypes.CDLL(name)
        lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
        lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
        lib.EVP_aes_256_gcm.restype = ctypes.c_void_p
        for f in ("EVP_DecryptInit_ex", "EVP_EncryptInit_ex"):
            getattr(lib, f).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_char_p, ctypes.c_char_p]
        for f in ("EVP_DecryptUpdate", "EVP_EncryptUpdate"):
            getattr(lib, f).argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.POINTER(ctypes.c_int), ctypes.c_char_p,
                                        ctypes.c_int]
        for f in ("EVP_DecryptFinal_ex", "EVP_EncryptFinal_ex"):
            getattr(lib, f).argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.POINTER(ctypes.c_int)]
        lib.EVP_CIPHER_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_void_p]
        self.lib = lib

    def _run(self, enc, key, iv, aad, data, tag=None):
        lib = self.lib
        ctx = lib.EVP_CIPHER_CTX_new()
        if not ctx:
            raise MemoryError
        try:
            init = lib.EVP_EncryptInit_ex if enc else lib.EVP_DecryptInit_ex
            update = lib.EVP_EncryptUpdate if enc else lib.EVP_DecryptUpdate
            final = lib.EVP_EncryptFinal_ex if enc else lib.EVP_DecryptFinal_ex
            assert init(ctx, lib.EVP_aes_256_gcm(), None, None, None) == 1
            assert lib.EVP_CIPHER_CTX_ctrl(ctx, self.EVP_CTRL_GCM_SET_IVLEN, len(iv), None) == 1
            assert init(ctx, None, None, key, iv) == 1
            n = ctypes.c_int(0)
            if aad:
                assert update(ctx, None, ctypes.byref(n), aad, len(aad)) == 1
            out = ctypes.create_string_buffer(len(data) + 16)
            assert update(ctx, out, ctypes.byref(n), data, len(data)) == 1
            got = n.value
            if not enc:
                tbuf = ctypes.create_string_buffer(tag, 16)
                assert lib.EVP_CIPHER_CTX_ctrl(ctx, self.EVP_CTRL_GCM_SET_TAG, 16, tbuf) == 1
            m = ctypes.c_int(0)
            ok = final(ctx, ctypes.byref(out, got), ctypes.byref(m))
            if ok != 1:
                return None
            res = out.raw[:got + m.value]
            if enc:
                tbuf = ctypes.create_string_buffer(16)
                assert lib.EVP_CIPHER_CTX_ctrl(ctx, self.EVP_CTRL_GCM_GET_TAG, 16, tbuf) == 1
                return res, tbuf.raw
            return res
        finally:
            lib.EVP_CIPHER_CTX_free(ctx)

    def open(self, key, iv, aad, ct, tag):
        """Plaintext, or None when the tag does not verify."""
        return self._run(False, key, iv, aad, ct, tag)

    def seal(self, key, iv, aad, pt):
        return self._run(True, key, iv, aad, pt)


_gcm = None


def gcm():
    global _gcm
    if _gcm is None:
        _gcm = _Gcm()
    return _gcm


def unwrap_cred(v, cn, sn, org_guid, device_id, wrapped, tag):
    """The device's credential from REG_OK fields, or None if GCM refuses."""
    return gcm().open(reg_wrap_key(v, cn, sn), sn[:12], org_guid + device_id, wrapped, tag)


class RegKey:
    """A registration key as the device holds it, bound to a provider GUID."""

    def __init__(self, key_str, provider_guid_hex):
        self.text = key_str
        self.key_id, self.secret = parse_regkey(key_str)
        self.pg = guid_bytes(provider_guid_hex)
        self.salt = regkey_salt(self.pg, self.key_id)
        self.v = regkey_verifier(self.salt, self.secret)


# ------------------------------------------------------------------ redis ---

class Redis:
    """Minimal RESP client: enough to inspect what tidegate-control stored."""

    def __init__(self, port, timeout=5.0, password=None, db=0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        if password:
            self.cmd("AUTH", password)
        if db:
            self.cmd("SELECT", db)

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError("redis error: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2].decode(errors="surrogateescape")
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise RuntimeError("bad RESP line %r" % line)

    def dump(self, pattern="tg:*", exclude=("tg:gw:", "tg:rl:")):
        """Every key's type and content, for before/after comparisons."""
        snap = {}
        for k in sorted(self.cmd("KEYS", pattern)):
            if any(k.startswith(p) for p in exclude):
                continue
            t = self.cmd("TYPE", k)
            if t == "hash":
                v = self.cmd("HGETALL", k)
                v = sorted(zip(v[0::2], v[1::2]))
            elif t == "set":
                v = sorted(self.cmd("SMEMBERS", k))
            elif t == "zset":
                v = self.cmd("ZRANGE", k, 0, -1, "WITHSCORES")
            elif t == "list":
                v = self.cmd("LRANGE", k, 0, -1)
            elif t == "string":
                v = self.cmd("GET", k)
            else:
                v = None
            snap[k] = (t, v)
        return snap

    def hgetall(self, key):
        v = self.cmd("HGETALL", key)
        return dict(zip(v[0::2], v[1::2]))


# ------------------------------------------------------------------- link ---

class LinkError(Exception):
    pass


class Link:
    """One gateway's connection to tidegate-control (SOCK_SEQPACKET, JSON).

    A reader thread routes replies to waiters by seq and queues pushes, so
    several threads can have requests in flight on one connection.
    """
    _seq_lock = threading.Lock()
    _next_seq = 1

    def __init__(self, path, name, pid=None, hello=True, timeout=10.0):
        self.name = name
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.pushes = queue.Queue()
        self.hello_reply = None
        self._waiters = {}
        self._lock = threading.Lock()
        self._closed = False
        self._reader = None
        self.pid = pid if pid is not None else os.getpid()
        if hello:
            self.sock.send(jsonlib.dumps({"op": "hello", "gateway": name,
                                          "pid": self.pid}).encode())
            self.hello_reply = self._recv_one()
            if not self.hello_reply.get("ok"):
                raise LinkError("hello refused: %r" % self.hello_reply)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _recv_one(self):
        data = self.sock.recv(1 << 17)
        if not data:
            raise LinkError("link closed by tidegate-control")
        return jsonlib.loads(data)

    def _read_loop(self):
        self.sock.settimeout(None)
        while True:
            try:
                data = self.sock.recv(1 << 17)
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    self._closed = True
                    for q in self._waiters.values():
                        q.put(None)
                self.pushes.put(None)
                return
            try:
                msg = jsonlib.loads(data)
            except ValueError:
                msg = {"_unparsable": data.decode(errors="replace")}
            seq = msg.get("seq") if isinstance(msg, dict) else None
            if seq is None:
                self.pushes.put(msg)
                continue
            with self._lock:
                q = self._waiters.pop(seq, None)
            if q is not None:
                q.put(msg)
            else:
                self.pushes.put({"_unexpected": msg})

    def request(self, op, timeout=None, **fields):
        with Link._seq_lock:
            seq = Link._next_seq
            Link._next_seq += 1
        msg = dict(fields)
        msg["op"] = op
        msg["seq"] = seq
        q = queue.Queue(1)
        with self._lock:
            if self._closed:
                raise LinkError("link closed")
            self._waiters[seq] = q
        self.sock.send(jsonlib.dumps(msg).encode())
        try:
            rep = q.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise LinkError("no reply to %s seq %d within %ss" % (op, seq, timeout or self.timeout))
        if rep is None:
            raise LinkError("link closed before the reply to %s" % op)
        return rep

    def next_push(self, timeout):
        try:
            return self.pushes.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain_pushes(self):
        out = []
        while True:
            try:
                out.append(self.pushes.get_nowait())
            except queue.Empty:
                return out

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._reader:
            self._reader.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # -- device operations as a gateway forwards them --

    def register(self, key, name, flags=0, peer="192.0.2.1", cn=None, sn=None,
                 key_id=None, v=None, pg=None, proof=None):
        """Forward a REG_PROOF made with key (a RegKey). key_id / v / pg / proof
        override what the device would send, to forge wrong attempts."""
        cn = cn or secrets.token_bytes(16)
        sn = sn or secrets.token_bytes(16)
        kid = key_id if key_id is not None else key.key_id
        pgb = pg if pg is not None else key.pg
        nb = name.encode() if isinstance(name, str) else name
        if proof is None:
            proof = reg_proof(v if v is not None else key.v, pgb, kid, cn, sn, flags, nb)
        rep = self.request("register", provider_guid=pgb.hex(), key_id=kid.hex(),
                           client_nonce=cn.hex(), server_nonce=sn.hex(), flags=flags,
                           name=nb.decode(errors="surrogateescape"), proof=proof.hex(), peer=peer)
        rep["_cn"], rep["_sn"] = cn, sn
        return rep

    def auth(self, device_id_hex, cred, flags=0, max_frag=1408, peer="192.0.2.1", cn=None,
             sn=None, proof=None):
        cn = cn or secrets.token_bytes(16)
        sn = sn or secrets.token_bytes(16)
        did = bytes.fromhex(device_id_hex)
        if proof is None:
            proof = auth_proof(cred, did, cn, sn, max_frag, flags)
        rep = self.request("auth", device_id=device_id_hex, client_nonce=cn.hex(),
                           server_nonce=sn.hex(), max_frag=max_frag, flags=flags,
                           proof=proof.hex(), peer=peer)
        rep["_cn"], rep["_sn"] = cn, sn
        return rep


def link_err(rep):
    """The wire error code of a failed link reply, None if it succeeded."""
    if rep.get("ok"):
        return None
    return rep.get("error", {}).get("code")


# -------------------------------------------------------------------- env ---

def _pdeathsig():
    # The children die with the test runner, whatever kills it.
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


class Env:
    """A private Redis + tidegate-control, in its own temp directory."""

    def __init__(self, lease_ttl_ms=2000, lease_bytes="64M", admin_group="adm", extra=(),
                 redis_password=None, redis_db=0, redis_extra=()):
        self.tmp = tempfile.mkdtemp(prefix="tg-itest-")
        # What Redis is started with; tidegate-control is told through
        # `extra` (flags) or a config file, whichever the test is about.
        self.redis_password = redis_password
        self.redis_db = redis_db
        self.redis_extra = list(redis_extra)
        self.port = None
        self.redis = None
        self.control = None
        self.lease_ttl_ms = lease_ttl_ms
        self.lease_bytes = lease_bytes
        self.admin_group = admin_group
        self.extra = list(extra)
        self.admin_sock = os.path.join(self.tmp, "admin.sock")
        self.gateway_sock = os.path.join(self.tmp, "gateway.sock")
        self.links = []
        self.crashes = []
        _envs.append(self)

    # -- processes --

    def start(self):
        self.port = free_port()
        self.start_redis()
        self.start_control()
        return self

    def start_redis(self):
        log = open(os.path.join(self.tmp, "redis.log"), "ab")
        self.redis = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--dir", self.tmp, "--daemonize", "no", "--logfile", ""] +
            (["--requirepass", self.redis_password] if self.redis_password else []) +
            self.redis_extra,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig)
        log.close()

        def ping():
            if self.redis.poll() is not None:
                raise RuntimeError("redis-server exited: " + self.tail("redis.log"))
            with Redis(self.port, timeout=1, password=self.redis_password) as r:
                return r.cmd("PING") == "PONG"
        wait_for(ping, 10, what="redis-server to answer PING")

    def kill_redis(self):
        """SIGKILL: no shutdown, no final save; only the AOF survives."""
        if self.redis and self.redis.poll() is None:
            self.redis.send_signal(signal.SIGKILL)
            self.redis.wait(10)

    def control_argv(self):
        return [CONTROL_BIN, "--redis-host", "127.0.0.1", "--redis-port", str(self.port),
                "--admin-socket", self.admin_sock, "--gateway-socket", self.gateway_sock,
                "--admin-group", self.admin_group, "--lease-ttl-ms", str(self.lease_ttl_ms),
                "--lease-bytes", str(self.lease_bytes), "--log-level", "debug"] + self.extra

    def start_control(self, wait_for_redis=True):
        """Start the daemon and wait until it serves: until its admin socket
        shows the provider GUID, or (wait_for_redis=False) only until both
        sockets answer, for a daemon started while Redis is down."""
        for p in (self.admin_sock, self.gateway_sock):
            if os.path.exists(p):
                os.unlink(p)
        log = open(os.path.join(self.tmp, "control.log"), "ab")
        self.control = subprocess.Popen(self.control_argv(), stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=_pdeathsig)
        log.close()

        def ready():
            if self.control.poll() is not None:
                raise RuntimeError("tidegate-control exited with %s: %s"
                                   % (self.control.returncode, self.tail("control.log")))
            if not (os.path.exists(self.admin_sock) and os.path.exists(self.gateway_sock)):
                return False
            rep = self.admin("provider.show", timeout=2)
            if not wait_for_redis:
                return rep.get("ok")
            return rep.get("ok") and GUID_RE.match(rep["result"].get("guid", "")) is not None

        try:
            wait_for(ready, 15, 0.1, what="tidegate-control's admin socket")
        except RuntimeError as e:
            raise AssertionError(str(e))

    def stop_control(self, sig=signal.SIGTERM):
        """Stop the daemon; return why it is not well, or None: it must have
        been running (no crash meanwhile) and must exit 0 on SIGTERM."""
        if not self.control:
            return None
        if self.control.poll() is not None:
            return "tidegate-control had died (status %s)" % self.control.returncode
        self.control.send_signal(sig)
        try:
            self.control.wait(10)
        except subprocess.TimeoutExpired:
            self.control.kill()
            self.control.wait(5)
            return "tidegate-control ignored SIGTERM for 10 s"
        if self.control.returncode != 0:
            return "tidegate-control exited with status %s on SIGTERM" % self.control.returncode
        return None

    def stop(self):
        """Stop everything and remove TMP; return what went wrong with the
        daemon (see stop_control) with its log's tail, or None."""
        for l in self.links:
            try:
                l.close()
            except Exception:
                pass
        self.links = []
        problem = self.stop_control()
        if problem:
            problem += "\n" + self.tail("control.log", 40)
        if self.crashes:
            problem = "\n".join(self.crashes + [problem or ""])
        if self.redis and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait(10)
        if os.environ.get("TG_ITEST_KEEP"):
            sys.stderr.write("kept %s\n" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self in _envs:
            _envs.remove(self)
        return problem

    def log(self, name="control.log"):
        """The whole of a log in TMP (the daemon's, by default)."""
        try:
            with open(os.path.join(self.tmp, name), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, name, n=30):
        try:
            with open(os.path.join(self.tmp, name), "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no %s)" % name

    def rdb(self, db=None):
        return Redis(self.port, password=self.redis_password,
                     db=self.redis_db if db is None else db)

    # -- admin --

    def admin_raw(self, data, timeout=10.0, path=None):
        """Send raw bytes on a fresh admin connection; return every byte
        received until the daemon closes or a first full line arrives."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path or self.admin_sock)
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            buf = b""
            while b"\n" not in buf:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                buf += chunk
            return buf
        finally:
            s.close()

    def admin(self, cmd, args=None, timeout=10.0, path=None):
        req = {"cmd": cmd}
        if args is not None:
            req["args"] = args
        line = self.admin_raw((jsonlib.dumps(req) + "\n").encode(), timeout, path)
        if not line.endswith(b"\n"):
            raise AssertionError("admin %s: no complete reply line: %r" % (cmd, line))
        return jsonlib.loads(line)

    def admin_ok(self, cmd, args=None):
        rep = self.admin(cmd, args)
        if not rep.get("ok"):
            raise AssertionError("admin %s %r failed: %r" % (cmd, args, rep))
        return rep["result"]

    def ctl(self, *args, json=True, socket_path=None, timeout=30, user=None, group=None):
        ctl_bin = CTL_BIN
        if user is not None:
            # Another user may not traverse the build tree: run a copy from TMP.
            ctl_bin = os.path.join(self.tmp, "tidegate-ctl")
            if not os.path.exists(ctl_bin):
                shutil.copy(CTL_BIN, ctl_bin)
                os.chmod(ctl_bin, 0o755)
        argv = [ctl_bin, "--socket", socket_path or self.admin_sock]
        if json:
            argv.append("--json")
        argv += [str(a) for a in args]
        kw = {}
        if user is not None:
            kw.update(user=user, group=group, extra_groups=[])
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, **kw)
        out = p.stdout.decode(errors="replace")
        parsed = None
        if json and p.returncode == 0:
            try:
                parsed = jsonlib.loads(out)
            except ValueError:
                parsed = None
        return p.returncode, (parsed if json else out), p.stderr.decode(errors="replace")

    # -- gateway link --

    def link(self, name, **kw):
        l = Link(self.gateway_sock, name, **kw)
        self.links.append(l)
        return l

    def provider_guid(self):
        return self.admin_ok("provider.show")["guid"]

    # -- organizations --

    def add_org(self, name, seats=10, quota="1G", **fields):
        args = {"name": name, "max_seats": seats, "quota": quota}
        args.update(fields)
        res = self.admin_ok("org.add", args)
        res["_key"] = RegKey(res["registration_key"], self.provider_guid())
        return res

    def org(self, name):
        return self.admin_ok("org.show", {"org": name})


def cleanup_all():
    for e in list(_envs):
        try:
            e.stop()
        except Exception:
            pass


atexit.register(cleanup_all)


def _on_term(signum, frame):
    # unittest would record SystemExit as one more error and go on: stop here.
    cleanup_all()
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


class EnvTestCase(unittest.TestCase):
    """Each class gets its own Redis and tidegate-control."""
    env_kwargs = {}
    env = None

    @classmethod
    def setUpClass(cls):
        if not have_binaries():
            raise unittest.SkipTest("tidegate-control / tidegate-ctl not built in %s" % TG_BUILD)
        cls.env = Env(**cls.env_kwargs)
        try:
            cls.env.start()
        except BaseException:
            cls.env.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.env:
            problem = cls.env.stop()
            cls.env = None
            if problem:
                raise AssertionError(problem)

    def setUp(self):
        # A daemon that died in an earlier test is reported when the class
        # ends; restart it so the tests after it still say something.
        env = self.env
        if env and env.control and env.control.poll() is None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(env.admin_sock)
            except OSError:
                try:                    # dying (a sanitizer writing its report)
                    env.control.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        if env and env.control and env.control.poll() is not None:
            env.crashes.append("tidegate-control died (status %s) before %s:\n%s"
                               % (env.control.returncode, self.id(),
                                  env.tail("control.log", 40)))
            for l in env.links:
                l.close()
            env.links = []
            env.start_control()

    def assertLinkErr(self, rep, code, msg=None):
        self.assertFalse(rep.get("ok"), "%s: expected wire error %d, got success %r"
                         % (msg or "", code, rep))
        self.assertEqual(rep.get("error", {}).get("code"), code,
                         "%s: expected wire error %d, got %r" % (msg or "", code, rep))

    def assertAdminErr(self, rep, code, field=None):
        self.assertIs(rep.get("ok"), False, "expected error %s, got %r" % (code, rep))
        err = rep.get("error")
        self.assertIsInstance(err, dict, rep)
        self.assertEqual(err.get("code"), code, rep)
        self.assertIsInstance(err.get("message"), str, rep)
        self.assertTrue(err.get("message"), "empty error message: %r" % rep)
        if field is not None:
            self.assertEqual(err.get("field"), field, rep)


# -------------------------------------------------------------------- TAP ---

class TapResult(unittest.TestResult):
    """unittest results as TAP 13: one line per test case, plan at the end."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream or sys.stdout
        self.n = 0
        self.nfail = 0
        self._done = set()
        self._sub = {}
        self._t0 = {}
        self.stream.write("TAP version 13\n")

    @staticmethod
    def _name(test):
        tid = test.id()
        parts = tid.split(".")
        return ".".join(parts[-2:]) if len(parts) >= 2 else tid

    def _emit(self, test, ok, directive="", detail=""):
        self.n += 1
        if not ok:
            self.nfail += 1
        t0 = self._t0.get(id(test))
        took = " (%.1fs)" % (time.monotonic() - t0) if t0 else ""
        self.stream.write("%s %d - %s%s%s\n" % ("ok" if ok else "not ok", self.n,
                                                self._name(test), directive,
                                                "" if directive else took))
        if detail:
            for line in detail.rstrip().splitlines():
                self.stream.write("# " + line + "\n")
        self.stream.flush()
        self._done.add(id(test))

    def _logs(self, test):
        env = getattr(test, "env", None)
        if isinstance(env, Env):
            return "--- tidegate-control log (tail) ---\n" + env.tail("control.log", 15)
        return ""

    def startTest(self, test):
        super().startTest(test)
        self._t0[id(test)] = time.monotonic()

    def addSuccess(self, test):
        super().addSuccess(test)
        if id(test) not in self._done:
            self._emit(test, True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._emit(test, False, detail=self._exc_info_to_string(err, test) + self._logs(test))

    def addError(self, test, err):
        super().addError(test, err)
        self._emit(test, False, detail=self._exc_info_to_string(err, test) + self._logs(test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._emit(test, True, directive=" # SKIP " + reason.replace("\n", " "))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._sub.setdefault(id(test), []).append(
                "%s\n%s" % (subtest._subDescription(), self._exc_info_to_string(err, test)))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._emit(test, True, directive=" # TODO expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._emit(test, False, detail="unexpected success")

    def stopTest(self, test):
        if id(test) not in self._done:
            subs = self._sub.pop(id(test), None)
            if subs:
                self._emit(test, False, detail="\n".join(subs) + self._logs(test))
        super().stopTest(test)


def main(modules):
    """Run the tests of modules as TAP; -k PATTERN selects tests by name."""
    loader = unittest.TestLoader()
    argv = sys.argv[1:]
    pats = []
    while argv:
        a = argv.pop(0)
        if a == "-k" and argv:
            pats.append("*%s*" % argv.pop(0))
    if pats:
        loader.testNamePatterns = pats
    suite = unittest.TestSuite(loader.loadTestsFromModule(m) for m in modules)
    result = TapResult()
    try:
        suite.run(result)
    finally:
        cleanup_all()
    sys.stdout.write("1..%d\n" % result.n)
    sys.stdout.flush()
    sys.exit(0 if result.nfail == 0 and result.n > 0 else 1)
