"""Fuzz: Hypothesis-generated configs and CLI argument lists, as an admin mistypes them and as an
attacker crafts them (garbage bytes, huge numbers, control characters, injection payloads,
unicode, deep nesting, a wrong type for every key).

Every case ends in success, or in a non-zero exit with exactly ONE line ``error: ...`` on stderr
(never an "internal error"), and then the namespace's ruleset and every watched file are
byte-identical to before. The cases run in one long-lived worker inside the namespace
(fuzz_worker.py: the click CLI in-process); a sample also goes through the real `minifw` binary
to show that both paths answer the same.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rkit
from fuzz_worker import Worker
from kit import need_root, new_lab

N_CONFIGS = rkit.scale(1000, 10000)
N_ARGV = rkit.scale(1000, 10000)

BASE = """\
# the loaded config every case starts from
[policy]
input = "drop"

[[set]]
name = "friends"
elements = ["198.18.7.0/24", "fd00:7::1"]

[[rule]]
id = "web"
proto = "tcp"
dport = [80, 443, "8000-8080"]
limit = "50/second"
action = "accept"

[[rule]]
id = "friends"
src = "@friends"
action = "accept"
comment = "the office"

[[rule]]
id = "drop-icmp"
hook = "prerouting"
priority = -300
proto = "icmp"
action = "drop"
log = "Drop ICMP packet"
"""

INJECTIONS = ['"; flush ruleset', "'; flush ruleset; '", "} ; delete table inet minifw ; {",
              "$(reboot)", "`id`", "x\nflush ruleset", "a\r\nb", "\x1b[2J\x1b[31mred",
              "../../../../etc/passwd", "%s%s%n", "{{7*7}}", "@blocked; drop", "\u202eevil",
              "💥", "ｄｒｏｐ", "٨٠", "0x50", "1e9", "-0", "NaN", "", " ", "\t", "--help",
              "-", "--", "*", "lo*", "a" * 300]
HUGE = st.integers(-2**80, 2**80).map(str) | st.sampled_from(
    ["99999999999999999999", "-2147483649", "-2147483648", "2147483647", "4294967296",
     "65535", "65536", "0", "-1", "999", "1000"])
VALID = st.sampled_from(["198.18.0.5", "198.18.0.0/24", "fd00::5", "fd00::/64", "80", "1-1024",
                         "tcp", "udp", "icmp", "icmpv6", "input", "prerouting", "drop",
                         "accept", "reject", "log", "10/second", "@blocked", "@friends",
                         "established", "echo-request", "eth0", "web", "friends", "blocked",
                         "30s", "2d", "new-rule", "in", "forward", "out"])
NASTY = st.one_of(VALID, HUGE, st.sampled_from(INJECTIONS), st.text(max_size=24),
                  st.text(st.characters(max_codepoint=0x1f), max_size=6))

FLAGS = {
    ("add",): ["--id", "--hook", "--priority", "--family", "--proto", "--src", "--dst",
               "--sport", "--dport", "--iif", "--oif", "--state", "--icmp-type", "--action",
               "--log", "--limit", "--comment", "--position", "--runtime", "--json"],
    ("delete",): ["--runtime"],
    ("ban",): ["--timeout", "--set", "--json"],
    ("unban",): ["--set", "--json"],
    ("set", "import"): ["--skip-invalid", "--timeout", "--json"],
    ("set", "list"): ["--page", "--page-size", "--json"],
    ("set", "flush"): [],
    ("check",): ["--config", "--json"],
    ("up",): ["--config"],
    ("reload",): ["--config", "--restart-hooks"],
    ("status",): ["--json"],
    ("list",): ["--json"],
    ("explain",): ["--proto", "--src", "--dst", "--sport", "--dport", "--iif", "--oif",
                   "--path", "--state", "--icmp-type", "--config", "--pcap", "--json"],
}
BOOL_FLAGS = {"--runtime", "--json", "--skip-invalid", "--restart-hooks"}
POSITIONALS = {("delete",): 1, ("ban",): 2, ("unban",): 2, ("set", "import"): 2,
               ("set", "list"): 1, ("set", "flush"): 1}


class Fuzz:
    def __init__(self, lab):
        self.lab = lab
        self.host = lab.host("fw")
        tmp = lab.tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.base = tmp / "base.toml"
        self.base.write_text(BASE)
        self.fuzz = tmp / "fuzz.toml"
        self.fuzz.write_text("")
        files = {"addrs.txt": b"198.18.3.1\n198.18.3.0/28\nfd00:3::1\n# c\n",
                 "garbage.txt": b"\xff\xfe\x00garbage\n1.2.3\n::::\n",
                 "nul.txt": b"198.18.3.9\x00\n", "trunc.pcap": bytes.fromhex(
                     "d4c3b2a1020004000000000000000000ffff000001000000") + b"\x00" * 7,
                 "garbage.pcap": os.urandom(64)}
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        self.paths = [str(tmp / n) for n in files] + [str(self.base), str(self.fuzz),
                                                      str(tmp / "missing.toml"), str(tmp)]
        self.watch = [str(self.base), str(self.fuzz)]
        self.worker = Worker(self.host)
        self.cases = self.refused = self.succeeded = 0
        self.restore()

    def restore(self) -> None:
        """Back to BASE loaded, after a case that succeeded and changed something."""
        self.base.write_text(BASE)  # `up` of another file, or after `down`, loads this one
        r = self.worker.ask({"op": "run", "argv": ["up", "--config", str(self.base)]})
        assert r["code"] == 0, r

    def case(self, argv: list[str]) -> dict:
        r = self.worker.ask({"op": "run", "argv": argv, "watch": self.watch})
        self.cases += 1
        self.check(argv, r)
        return r

    def check(self, argv, r) -> None:
        if r["code"] == 0:
            self.succeeded += 1
            if r["after"] != r["before"]:
                self.restore()
            return
        self.refused += 1
        lines = r["err"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, r["err"])
        assert "internal error" not in lines[0] and "Traceback" not in r["err"], (argv, lines)
        assert r["after"] == r["before"], f"{argv!r} was refused but changed something: {r}"

    def config_case(self, data: bytes, command: list[str]) -> dict:
        self.fuzz.write_bytes(data)
        return self.case(command + ["--config", str(self.fuzz)])


# ---- strategies -------------------------------------------------------------------------------

def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string (lone surrogates: refused)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


SCALARS = st.one_of(
    st.text(max_size=20).map(_toml_string), NASTY.map(_toml_string),
    st.integers(-2**70, 2**70).map(str), st.sampled_from(["-2147483648", "-2147483649", "999",
                                                          "1000", "65535", "65536", "0"]),
    st.floats(allow_nan=True).map(lambda f: {float("inf"): "inf", float("-inf"): "-inf"}.get(
        f, "nan" if f != f else repr(f))),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.just("1979-05-27T07:32:00Z"), st.integers(1, 6000).map(_deep))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.dictionaries(st.sampled_from(["a", "b", "id", "x"]), inner, max_size=3).map(
        lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}")), max_leaves=6)
RULE_KEYS = ["id", "hook", "priority", "family", "proto", "src", "dst", "sport", "dport", "iif",
             "oif", "state", "icmp_type", "action", "log", "limit", "comment"]
GOOD_VALUES = {"id": '"r"', "hook": '"input"', "priority": "0", "family": '"ip"',
               "proto": '"tcp"', "src": '"198.18.0.2"', "dst": '["198.18.0.1", "fd00::1"]',
               "sport": "1024", "dport": '[22, "80-90"]', "iif": '"eth0"', "oif": '"lo"',
               "state": '["new"]', "icmp_type": '"echo-request"', "action": '"drop"',
               "log": '"x "', "limit": '"10/second"', "comment": '"c"'}
KEY = st.sampled_from(RULE_KEYS) | st.sampled_from(["colour", "Action", "id ", "dport.x"]) | \
    st.text(st.characters(min_codepoint=0x30, max_codepoint=0x7a), min_size=1, max_size=8)


@st.composite
def rule_tables(draw) -> str:
    keys = draw(st.lists(KEY, max_size=6, unique=True))
    if draw(st.booleans()):
        keys.append("action")
    body = []
    for key in dict.fromkeys(keys):
        value = GOOD_VALUES.get(key, '"x"') if draw(st.integers(0, 2)) == 0 else draw(VALUES)
        name = key if key.replace("_", "").isalnum() and key.isascii() else _toml_string(key)
        body.append(f"{name} = {value}")
    return "[[rule]]\n" + "\n".join(body) + "\n"


@st.composite
def configs(draw) -> bytes:
    parts = []
    if draw(st.booleans()):
        parts.append("[policy]\n" + draw(st.sampled_from(
            ['input = "drop"', 'forward = "drop"\nstateful = false', 'input = 1',
             'ingress = "drop"', 'input = ["drop"]', 'stateful = "yes"'])) + "\n")
    if draw(st.integers(0, 3)) == 0:
        parts.append("[[set]]\n" + draw(st.sampled_from(
            ['name = "blocked"', 'name = "b"\nelements = [" 198.18.0.1"]', 'name = 5',
             'name = "s"\ntimeout = "100d"', 'name = "s"\nelements = ["198.18.0.0/16", '
             '"198.18.0.1"]', 'name = "a\\nb"', 'name = "s"\ncomment = "\\u0000"'])) + "\n")
    parts += draw(st.lists(rule_tables(), max_size=4))
    if draw(st.integers(0, 5)) == 0:
        parts.append(draw(st.sampled_from(["a = " + _deep(5000), "[hook]\nx = 1",
                                           "rule = 5", "[[rule]]\n[[rule]]\naction = \"drop\"",
                                           "[[rule]\n", "\x00", "\ufeff[policy]"])))
    data = "\n".join(parts).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 3)) == 0:  # bytes as a damaged disk or a bad editor leaves them
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=8)) + data[at + draw(st.integers(0, 8)):]
    return data


@st.composite
def argvs(draw) -> list[str]:
    cmd = draw(st.sampled_from(sorted(FLAGS)))
    argv = list(cmd)
    paths = st.sampled_from(FUZZ.paths) if FUZZ else st.just("x")
    for _ in range(POSITIONALS.get(cmd, 0) if draw(st.integers(0, 4)) else draw(
            st.integers(0, 3))):
        argv.append(draw(paths if cmd == ("set", "import") and len(argv) == 3 else NASTY))
    for _ in range(draw(st.integers(0, 5))):
        flag = draw(st.sampled_from(FLAGS[cmd]) if FLAGS[cmd] and draw(st.integers(0, 5))
                    else st.sampled_from(["--nope", "-x", "--id=", "--priority", "--help=1"]))
        argv.append(flag)
        if flag not in BOOL_FLAGS:
            argv.append(draw(paths if flag in ("--config", "--pcap") else NASTY))
    return argv


FUZZ: Fuzz | None = None
COMMANDS = [["check"], ["up"], ["reload"], ["explain", "--proto", "tcp", "--src", "198.18.0.2",
                                            "--dst", "198.18.0.1", "--dport", "80"]]


@pytest.fixture(scope="module")
def fuzz():
    global FUZZ
    need_root()
    with new_lab() as lab:
        FUZZ = Fuzz(lab)
        try:
            yield FUZZ
        finally:
            FUZZ.worker.close()
            FUZZ = None


SETTINGS = dict(deadline=None, database=None, derandomize=False, print_blob=True,
                suppress_health_check=list(HealthCheck))


def test_fuzzed_configs(fuzz):
    started = time.monotonic()
    before = fuzz.cases

    @settings(max_examples=N_CONFIGS, **SETTINGS)
    @given(data=configs(), command=st.sampled_from(COMMANDS))
    def one(data, command):
        fuzz.config_case(data, command)

    one()
    rkit.report("fuzz configs", cases=fuzz.cases - before, refused=fuzz.refused,
                succeeded=fuzz.succeeded, seconds=round(time.monotonic() - started, 1))
    assert fuzz.cases - before >= N_CONFIGS


def test_fuzzed_argv(fuzz):
    started = time.monotonic()
    before, refused, succeeded = fuzz.cases, fuzz.refused, fuzz.succeeded

    @settings(max_examples=N_ARGV, **SETTINGS)
    @given(argv=argvs())
    def one(argv):
        fuzz.case(argv)

    one()
    rkit.report("fuzz argv", cases=fuzz.cases - before, refused=fuzz.refused - refused,
                succeeded=fuzz.succeeded - succeeded,
                seconds=round(time.monotonic() - started, 1))
    assert fuzz.cases - before >= N_ARGV


def _samples(fz: Fuzz) -> list[list[str]]:
    t = fz.lab.tmp
    return [["add", "--id", "a\nb", "--action", "drop"], ["delete", "x\r\ny"],
            ["ban", "--set", "x\ny", "198.18.0.1"], ["set", "list", "blocked", "--page",
                                                    "99999999999999999999"],
            ["set", "import", "blocked", str(t / "nul.txt")], ["up", "--foo"], ["frob"],
            ["add", "--action"], ["add", "--id", "p", "--priority", "-2147483649", "--action",
                                  "drop"],
            ["add", "--id", "q", "--comment", '"; flush ruleset', "--action", "drop",
             "--runtime"],
            ["explain", "--pcap", str(t / "trunc.pcap"), "--config", str(fz.base)],
            ["check", "--config", str(t / "garbage.txt")], ["up", "--config", str(t)],
            ["status"], ["list", "--json"], ["unban", "198.18.250.250"]]


def test_the_binary_answers_as_the_worker(fuzz):
    """The in-process path is the real one: the same exit, stderr and (on refusal) stdout."""
    same = 0
    for argv in _samples(fuzz):
        fuzz.restore()
        a = fuzz.case(argv)
        fuzz.restore()
        b = fuzz.host.minifw(*argv, check=False)
        assert (a["code"], a["err"]) == (b.returncode, b.stderr), argv
        if a["code"] != 0:
            assert a["out"] == b.stdout, argv
        same += 1
    rkit.report("fuzz binary vs worker", cases=same)
