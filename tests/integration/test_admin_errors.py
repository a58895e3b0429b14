"""
test_admin_errors.py - every bad admin request gets a clear error and changes
nothing (docs/control.md "Admin socket": "A request that fails changes
nothing"). Each case is its own test: it sends one bad request on the admin
socket, checks the error code (and `field` for bad_value), then checks that
org.list and org.show answer byte for byte as before and that Redis holds
exactly what it held.
"""
import json
import socket

import harness as h

VICTIM_GUID = "5eed0000-1111-4222-8333-944444444444"
BIG = 2 ** 70
# An integer past 64 bits cannot be parsed at all (jansson: "too big integer"),
# so the whole request is refused as bad_json, with the column in the message.
BIG_CODES = ("bad_json", "bad_value")

def req(cmd, args=None):
    d = {"cmd": cmd}
    if args is not None:
        d["args"] = args
    return d


def add(**over):
    a = {"name": "newcomer", "max_seats": 5, "quota": "10G"}
    a.update(over)
    return req("org.add", a)


def add_without(field):
    a = {"name": "newcomer", "max_seats": 5, "quota": "10G"}
    del a[field]
    return req("org.add", a)


def setv(**over):
    a = {"org": "victim"}
    a.update(over)
    return req("org.set", a)


# (label, request (dict, or raw bytes), accepted codes, field for bad_value / unknown_org)
CASES = [
    ("bad_json_unterminated", b'{"cmd": "org.list"\n', ("bad_json",), None),
    ("bad_json_garbage", b"hello there\n", ("bad_json",), None),
    ("bad_json_trailing_garbage", b'{"cmd": "org.list"} }\n', ("bad_json",), None),
    ("json_array", b'["org.list", {}]\n', ("bad_request",), None),
    ("json_scalar", b"42\n", ("bad_request", "bad_json"), None),
    ("missing_cmd", {"args": {}}, ("bad_request",), None),
    ("cmd_not_a_string", {"cmd": 7, "args": {}}, ("bad_request",), None),
    ("args_an_array", req("org.show", [1]), ("bad_request",), None),
    ("args_a_string", req("org.list", "all"), ("bad_request",), None),
    ("unknown_command", req("org.explode", {}), ("unknown_command",), None),
    ("unknown_command_empty", req("", {}), ("unknown_command", "bad_request"), None),
    # unknown organizations, by name and by GUID, for every command taking one
    ("show_unknown_org", req("org.show", {"org": "nosuch"}), ("unknown_org",), "org"),
    ("show_unknown_guid", req("org.show", {"org": "00000000-0000-4000-8000-000000000000"}),
     ("unknown_org",), "org"),
    ("show_missing_org", req("org.show", {}), ("bad_value", "bad_request"), "org"),
    ("show_org_wrong_type", req("org.show", {"org": 5}), ("bad_value", "bad_request"), "org"),
    ("set_unknown_org", req("org.set", {"org": "nosuch", "max_seats": 3}), ("unknown_org",), "org"),
    ("deactivate_unknown_org", req("org.deactivate", {"org": "nosuch"}), ("unknown_org",), "org"),
    ("reactivate_unknown_org", req("org.reactivate", {"org": "nosuch"}), ("unknown_org",), "org"),
    ("delete_unknown_org", req("org.delete", {"org": "nosuch"}), ("unknown_org",), "org"),
    ("delete_active_org", req("org.delete", {"org": "victim"}), ("org_active",), None),
    ("rotate_unknown_org", req("key.rotate", {"org": "nosuch"}), ("unknown_org",), "org"),
    ("device_list_unknown_org", req("device.list", {"org": "nosuch"}), ("unknown_org",), "org"),
    ("device_release_unknown_org", req("device.release", {"org": "nosuch", "device": "pc"}),
     ("unknown_org",), "org"),
    ("usage_unknown_org", req("usage", {"org": "nosuch"}), ("unknown_org",), "org"),
    ("alerts_unknown_org", req("alerts", {"org": "nosuch"}), ("unknown_org",), "org"),
    ("device_release_unknown_device", req("device.release", {"org": "victim", "device": "nosuch"}),
     ("unknown_device",), None),
    ("device_release_other_orgs_device", req("device.release", {"org": "victim",
                                                                "device": "bystander-pc"}),
     ("unknown_device",), None),
    ("device_set_unknown_device", req("device.set", {"org": "victim", "device": "nosuch",
                                                     "role": "admin"}), ("unknown_device",), None),
    ("device_set_bad_role", req("device.set", {"org": "victim", "device": "victim-pc",
                                               "role": "root"}), ("bad_value",), "role"),
    ("device_set_role_wrong_type", req("device.set", {"org": "victim", "device": "victim-pc",
                                                      "role": 1}), ("bad_value",), "role"),
    ("billing_bad_format", req("billing.export", {"format": "xml"}), ("bad_value",), "format"),
    # org.add: duplicates and every field's bad values
    ("add_duplicate_name", add(name="victim"), ("duplicate_name",), None),
    ("add_duplicate_guid", add(guid=VICTIM_GUID), ("duplicate_guid",), None),
    ("add_missing_name", add_without("name"), ("bad_value", "bad_request"), "name"),
    ("add_missing_max_seats", add_without("max_seats"), ("bad_value", "bad_request"), "max_seats"),
    ("add_missing_quota", add_without("quota"), ("bad_value", "bad_request"), "quota"),
]
for label, v in [("zero", 0), ("negative", -1), ("over_1000000", 1000001), ("2_pow_70", BIG),
                 ("string", "10"), ("float", 1.5), ("bool", True), ("null", None)]:
    CASES.append(("add_seats_" + label, add(max_seats=v), BIG_CODES if v is BIG else ("bad_value",),
                  "max_seats"))
for label, v in [("fraction_1_5T", "1.5T"), ("string_minus_5", "-5"), ("minus_5", -5),
                 ("2_pow_70", BIG), ("over_2_pow_60", 2 ** 60 + 1), ("under_1MiB", 1048575),
                 ("zero", 0), ("bad_unit", "10X"), ("empty", ""), ("unlimited", "unlimited"),
                 ("bool", True), ("space", "5 G"), ("unit_only", "G"), ("exponent", "1e9"),
                 ("huge_string", "2000000P"), ("over_2_pow_60_units", "1025P"), ("float", 1.5e9)]:
    CASES.append(("add_quota_" + label, add(quota=v), BIG_CODES if v is BIG else ("bad_value",),
                  "quota"))
for field in ("restore_limit_user", "restore_limit_admin"):
    for label, v in [("minus_2", -2), ("fraction", "1.5G"), ("over_2_pow_60", 2 ** 60 + 1),
                     ("word", "lots"), ("2_pow_70", BIG)]:
        CASES.append(("add_%s_%s" % (field, label), add(**{field: v}),
                      BIG_CODES if v is BIG else ("bad_value",), field))
for label, v in [("ec_1_1", "ec:1+1"), ("ec_17_1", "ec:17+1"), ("ec_4_0", "ec:4+0"),
                 ("ec_4_5", "ec:4+5"), ("compress_plus_nothing", "compress+"), ("gzip", "gzip"),
                 ("reversed", "ec:4+2+compress"), ("empty", ""), ("trailing_space", "ec:4+2 "),
                 ("number", 5), ("ec_no_parity", "ec:4")]:
    CASES.append(("add_policy_" + label, add(policy=v), ("bad_value",), "policy"))
for label, v in [("empty", ""), ("65_bytes", "n" * 65), ("space", "bad name"), ("slash", "a/b"),
                 ("non_ascii", "na\u00efve"), ("number", 123), ("null", None)]:
    CASES.append(("add_name_" + label, add(name=v), ("bad_value",), "name"))
for field in ("contact_name", "contact_email", "contact_phone"):
    for label, v in [("129_bytes", "c" * 129), ("newline", "a\nb"), ("control", "a\x01b"),
                     ("number", 5)]:
        CASES.append(("add_%s_%s" % (field, label), add(**{field: v}), ("bad_value",), field))
for label, v in [("word", "not-a-guid"), ("no_dashes", "0a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d"),
                 ("short", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4"),
                 ("non_hex", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4g"), ("number", 5)]:
    CASES.append(("add_guid_" + label, add(guid=v), ("bad_value",), "guid"))
CASES += [
    ("add_hosted_string", add(hosted="yes"), ("bad_value",), "hosted"),
    ("add_hosted_int", add(hosted=1), ("bad_value",), "hosted"),
    ("add_terms_string", add(terms_accepted="true"), ("bad_value",), "terms_accepted"),
    # org.set: bad values, forbidden fields, and all-or-nothing
    ("set_seats_zero", setv(max_seats=0), ("bad_value",), "max_seats"),
    ("set_seats_2_pow_70", setv(max_seats=BIG), BIG_CODES, "max_seats"),
    ("set_quota_fraction", setv(quota="1.5T"), ("bad_value",), "quota"),
    ("set_quota_minus_5", setv(quota="-5"), ("bad_value",), "quota"),
    ("set_policy_ec_1_1", setv(policy="ec:1+1"), ("bad_value",), "policy"),
    ("set_name_space", setv(name="bad name"), ("bad_value",), "name"),
    ("set_name_65_bytes", setv(name="n" * 65), ("bad_value",), "name"),
    ("set_name_taken", setv(name="bystander"), ("duplicate_name",), None),
    ("set_contact_129_bytes", setv(contact_email="e" * 129), ("bad_value",), "contact_email"),
    ("set_restore_limit_minus_2", setv(restore_limit_admin=-2), ("bad_value",),
     "restore_limit_admin"),
    ("set_hosted_string", setv(hosted="yes"), ("bad_value",), "hosted"),
    ("set_guid", setv(guid="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"), ("bad_value", "bad_request"),
     "guid"),
    ("set_state", setv(state="deactivated"), ("bad_value", "bad_request"), "state"),
    ("set_good_seats_with_bad_quota", setv(max_seats=7, quota="1.5T"), ("bad_value",), "quota"),
    ("set_good_policy_with_bad_name", setv(policy="compress", name="x y"), ("bad_value",), "name"),
]


class AdminErrors(h.EnvTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        env = cls.env
        victim = env.add_org("victim", seats=3, quota="10G", guid=VICTIM_GUID, policy="ec:4+2",
                             contact_name="V", restore_limit_user="1G")
        bystander = env.add_org("bystander", seats=2, quota="1G")
        lk = env.link("gw-errors")
        assert lk.register(victim["_key"], "victim-pc", peer="192.0.2.90").get("ok")
        assert lk.register(bystander["_key"], "bystander-pc", peer="192.0.2.90").get("ok")
        lk.close()

    def state(self):
        with self.env.rdb() as r:
            dump = r.dump()
        return (self.env.admin_raw(b'{"cmd": "org.list"}\n'),
                self.env.admin_raw(b'{"cmd": "org.show", "args": {"org": "victim"}}\n'),
                self.env.admin_raw(b'{"cmd": "device.list", "args": {"org": "victim"}}\n'),
                dump)

    def check_refused(self, data, codes, field):
        before = self.state()
        raw = data if isinstance(data, bytes) else (json.dumps(data) + "\n").encode()
        line = self.env.admin_raw(raw)
        self.assertTrue(line.endswith(b"\n"), "no reply line: %r" % line)
        self.assertEqual(line.count(b"\n"), 1, "exactly one reply line: %r" % line)
        rep = json.loads(line)
        self.assertIs(rep.get("ok"), False, "accepted: %r" % rep)
        self.assertNotIn("result", rep)
        err = rep.get("error") or {}
        self.assertIn(err.get("code"), codes, rep)
        self.assertIsInstance(err.get("message"), str)
        self.assertTrue(err["message"].strip(), "the error needs a message: %r" % rep)
        if field is not None and err.get("code") in ("bad_value", "unknown_org"):
            self.assertEqual(err.get("field"), field, rep)
        after = self.state()
        self.assertEqual(after[0], before[0], "org.list changed")
        self.assertEqual(after[1], before[1], "org.show victim changed")
        self.assertEqual(after[2], before[2], "device.list victim changed")
        self.assertEqual(after[3], before[3], "Redis changed")

    def test_connection_stays_usable_after_an_error(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.env.admin_sock)
        f = s.makefile("rb")
        try:
            s.sendall(b"nonsense\n")
            self.assertEqual(json.loads(f.readline())["error"]["code"], "bad_json")
            s.sendall(b'{"cmd": "org.show", "args": {"org": "victim"}}\n'
                      b'{"cmd": "org.show", "args": {"org": "bystander"}}\n')
            a, b = json.loads(f.readline()), json.loads(f.readline())
            self.assertEqual(a["result"]["name"], "victim")
            self.assertEqual(b["result"]["name"], "bystander", "pipelined requests answered in order")
        finally:
            f.close()
            s.close()

    def test_line_over_64k_gets_too_large_and_is_closed(self):
        before = self.state()
        pad = " " * (70 * 1024)
        data = ('{"cmd": "org.add", "args": {"name": "huge", "max_seats": 1, "quota": "1G"}'
                + pad + "}\n").encode()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.env.admin_sock)
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            buf = b""
            while True:
                try:
                    c = s.recv(65536)
                except ConnectionResetError:
                    break
                if not c:
                    break
                buf += c
        finally:
            s.close()
        lines = buf.splitlines()
        self.assertEqual(len(lines), 1, "one too_large reply, then close: %r" % buf[:300])
        rep = json.loads(lines[0])
        self.assertEqual(rep.get("error", {}).get("code"), "too_large", rep)
        self.assertEqual(self.state(), before)

    def test_unterminated_line_over_64k_gets_too_large(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.env.admin_sock)
        try:
            try:
                s.sendall(b"x" * (65 * 1024))
            except (BrokenPipeError, ConnectionResetError):
                pass
            buf = s.recv(65536)
        finally:
            s.close()
        self.assertEqual(json.loads(buf.splitlines()[0])["error"]["code"], "too_large")

    def test_request_just_under_64k_is_answered(self):
        data = b'{"cmd": "org.show", "args": {"org": "victim"}' + b" " * (63 * 1024) + b"}\n"
        self.assertLess(len(data), 64 * 1024)
        rep = json.loads(self.env.admin_raw(data))
        self.assertIs(rep.get("ok"), True, rep)
        self.assertEqual(rep["result"]["name"], "victim")

    def test_boundary_values_are_accepted(self):
        for i, args in enumerate([
                {"max_seats": 1, "quota": 1 << 20},
                {"max_seats": 1000000, "quota": 1 << 60},
                {"max_seats": 1, "quota": "1024P"},
                {"max_seats": 1, "quota": "1M", "restore_limit_user": 0,
                 "restore_limit_admin": "unlimited"},
                {"max_seats": 1, "quota": "1M", "restore_limit_user": -1,
                 "restore_limit_admin": 1 << 60},
                {"max_seats": 1, "quota": "64M", "policy": "ec:2+1"},
                {"max_seats": 1, "quota": "64M", "policy": "compress+ec:16+4"},
                {"max_seats": 1, "quota": "64M", "contact_name": "c" * 128}]):
            with self.subTest(args=args):
                name = "edge-%d" % i
                a = dict(args, name=name)
                res = self.env.admin("org.add", a)
                self.assertIs(res.get("ok"), True, res)
                shown = self.env.org(name)
                for k, v in args.items():
                    want = {"1024P": 1 << 60, "1M": 1 << 20, "64M": 64 << 20,
                            "unlimited": -1}.get(v, v) if isinstance(v, str) and k != "policy" \
                        and k != "contact_name" else v
                    self.assertEqual(shown[k], want, k)
        name64 = "N" * 32 + "a.b_c-" + "9" * 26
        self.assertEqual(len(name64), 64)
        self.assertIs(self.env.admin("org.add", {"name": name64, "max_seats": 1,
                                                 "quota": "1G"}).get("ok"), True)


def _make(label, data, codes, field):
    def t(self):
        self.check_refused(data, codes, field)
    t.__name__ = "test_refuses_" + label
    t.__doc__ = None
    return t


for _label, _data, _codes, _field in CASES:
    setattr(AdminErrors, "test_refuses_" + _label, _make(_label, _data, _codes, _field))
