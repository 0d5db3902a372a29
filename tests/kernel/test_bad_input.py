"""Section 8: every bad input is refused through the CLI with ONE line ``error: ...`` naming the
file, the rule id and the field, a non-zero exit, and the namespace's ruleset, the config file
and minifw's state left byte-identical. Each case goes through ``up``, ``reload`` and, where the
flags can express it, ``add``.

One namespace with only ``lo`` serves the whole module: no traffic moves a counter in it, so
``nft -j list ruleset`` is comparable byte for byte.
"""

import sys
from pathlib import Path

import pytest

from kit import need_root, new_lab, ruleset_text, write_config

GOOD = """\
# The loaded, valid config.
[policy]
input = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = [80, 443]
limit = "50/second"
action = "accept"

[[rule]]
id = "drop-icmp"
hook = "prerouting"
priority = -300
proto = "icmp"
action = "drop"
log = "Drop ICMP packet"
"""


def rule(rule_id, **fields):
    body = "".join(f"{k} = {v}\n" for k, v in fields.items())
    return f'\n[[rule]]\nid = "{rule_id}"\n{body}'


# (case, the bad rule appended to GOOD, rule id and field the error must name, add flags or None)
CASES = [
    ("unknown-key", rule("r1", action='"drop"', colour='"red"'), "r1", "colour", None),
    ("bad-address", rule("r2", src='"198.18.0.300"', action='"drop"'), "r2", "src",
     ["--src", "198.18.0.300"]),
    ("bad-ipv6", rule("r3", dst='["198.18.0.1", "fd00::zz"]', action='"drop"'), "r3", "dst",
     ["--dst", "fd00::zz"]),
    ("cidr-host-bits", rule("r4", dst='"198.18.0.1/24"', action='"drop"'), "r4", "dst",
     ["--dst", "198.18.0.1/24"]),
    ("cidr-bad-length", rule("r5", src='"fd00::/129"', action='"drop"'), "r5", "src",
     ["--src", "fd00::/129"]),
    ("port-out-of-range", rule("r6", proto='"tcp"', dport="70000", action='"drop"'), "r6",
     "dport", ["--proto", "tcp", "--dport", "70000"]),
    ("port-empty-range", rule("r7", proto='"udp"', sport='"90-80"', action='"drop"'), "r7",
     "sport", ["--proto", "udp", "--sport", "90-80"]),
    ("port-not-a-number", rule("r8", proto='"tcp"', dport='["http"]', action='"drop"'), "r8",
     "dport", ["--proto", "tcp", "--dport", "http"]),
    ("port-without-proto", rule("r9", dport="80", action='"drop"'), "r9", "dport",
     ["--dport", "80"]),
    ("port-with-icmp", rule("r10", proto='"icmp"', sport="1", action='"drop"'), "r10", "sport",
     ["--proto", "icmp", "--sport", "1"]),
    ("unknown-hook", rule("r11", hook='"ingress"', action='"drop"'), "r11", "hook",
     ["--hook", "ingress"]),
    ("unknown-action", rule("r12", action='"allow"'), "r12", "action", ["--action", "allow"]),
    ("duplicate-id", rule("web", proto='"udp"', action='"drop"'), "web", "id",
     ["--id", "web", "--proto", "udp"]),
    ("priority-1000", rule("r13", priority="1000", action='"drop"'), "r13", "priority",
     ["--priority", "1000"]),
    ("priority-above-1000", rule("r14", priority="5000", action='"drop"'), "r14", "priority",
     ["--priority", "5000"]),
    ("log-128-bytes", rule("r15", action='"drop"', log=f'"{"x" * 128}"'), "r15", "log",
     ["--log", "x" * 128]),
    ("log-128-utf8-bytes", rule("r16", action='"drop"', log=f'"{"é" * 64}"'), "r16", "log",
     ["--log", "é" * 64]),
    ("reject-at-postrouting", rule("r17", hook='"postrouting"', action='"reject"'), "r17",
     "action", ["--hook", "postrouting", "--action", "reject"]),
    ("state-at-prerouting-200", rule("r18", hook='"prerouting"', priority="-200",
                                     state='["established"]', action='"accept"'), "r18", "state",
     ["--hook", "prerouting", "--priority", "-200", "--state", "established"]),
    ("state-at-output-300", rule("r19", hook='"output"', priority="-300", state='"new"',
                                 action='"drop"'), "r19", "state",
     ["--hook", "output", "--priority", "-300", "--state", "new"]),
    ("iif-at-output", rule("r20", hook='"output"', iif='"eth0"', action='"drop"'), "r20", "iif",
     ["--hook", "output", "--iif", "eth0"]),
    ("iif-at-postrouting", rule("r21", hook='"postrouting"', iif='"eth0"', action='"drop"'),
     "r21", "iif", ["--hook", "postrouting", "--iif", "eth0"]),
    ("oif-at-prerouting", rule("r22", hook='"prerouting"', oif='"eth0"', action='"drop"'),
     "r22", "oif", ["--hook", "prerouting", "--oif", "eth0"]),
    ("limit-rate-too-large", rule("r24", action='"accept"', limit='"99999999999999999999/second"'),
     "r24", "limit", ["--limit", "99999999999999999999/second"]),
    ("limit-burst-overflow", rule("r25", action='"accept"', limit='"1/week burst 4294967295"'),
     "r25", "limit", ["--limit", "1/week burst 4294967295"]),
    ("oif-at-input", rule("r23", oif='["eth0"]', action='"drop"'), "r23", "oif",
     ["--oif", "eth0"]),
]


@pytest.fixture(scope="module")
def fw():
    need_root()
    with new_lab() as lab:
        host = lab.host("fw")
        path = write_config(lab, GOOD, "good.toml")
        host.minifw("up", "--config", str(path))
        yield host, path


class Snapshot:
    """The namespace's ruleset and the given files, to compare byte for byte after a refusal."""

    def __init__(self, host, *files):
        self.host = host
        self.files = [f for f in files if f is not None]
        self.ruleset = ruleset_text(host)
        self.contents = [f.read_bytes() if f.exists() else None for f in self.files]
        assert '"minifw"' in self.ruleset

    def unchanged(self):
        assert ruleset_text(self.host) == self.ruleset
        for f, before in zip(self.files, self.contents):
            assert (f.read_bytes() if f.exists() else None) == before, f"{f} changed"


def refused(host, *argv, names, files=()):
    """Run the CLI; it must fail with one ``error:`` line naming each of ``names``."""
    snap = Snapshot(host, host.state_dir / "state.json", *files)
    proc = host.minifw(*argv, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    assert proc.stdout == ""
    snap.unchanged()
    return lines[0]


@pytest.mark.parametrize("case,snippet,rule_id,field,_", CASES, ids=[c[0] for c in CASES])
def test_up_refuses(fw, case, snippet, rule_id, field, _):
    host, good = fw
    text = GOOD + snippet
    bad = write_config(host.lab, text, f"bad-{case}.toml")
    # The error points at the offending [[rule]] header: the last one (for a duplicate id too).
    line = max(i + 1 for i, line in enumerate(text.splitlines()) if line == "[[rule]]")
    refused(host, "up", "--config", str(bad),
            names=[f"{bad}:{line}:", f"'{rule_id}'", f"'{field}'"], files=[bad, good])


@pytest.mark.parametrize("case,snippet,rule_id,field,_", CASES, ids=[c[0] for c in CASES])
def test_reload_refuses(fw, case, snippet, rule_id, field, _):
    host, good = fw
    good.write_text(GOOD + snippet)     # the operator edits the loaded file, then reloads
    try:
        refused(host, "reload", names=[str(good), f"'{rule_id}'", f"'{field}'"], files=[good])
    finally:
        good.write_text(GOOD)


ADD_CASES = [c for c in CASES if c[4] is not None]


@pytest.mark.parametrize("case,snippet,rule_id,field,flags", ADD_CASES,
                         ids=[c[0] for c in ADD_CASES])
def test_add_refuses(fw, case, snippet, rule_id, field, flags):
    host, good = fw
    argv = list(flags)
    if "--id" not in argv:
        argv = ["--id", rule_id] + argv
    if "--action" not in argv:
        argv += ["--action", "drop"]
    for runtime in ([], ["--runtime"]):
        refused(host, "add", *argv, *runtime, names=[f"'{rule_id}'", f"'{field}'"], files=[good])


def test_add_past_the_end_of_a_chain(fw):
    host, good = fw
    refused(host, "add", "--id", "late", "--proto", "udp", "--action", "drop", "--position", "5",
            names=["'late'", "'position'"], files=[good])


def test_delete_of_an_unknown_id(fw):
    host, good = fw
    refused(host, "delete", "no-such-rule", names=["'no-such-rule'", "'id'"], files=[good])


def test_unknown_policy_hook(fw):
    host, good = fw
    bad = write_config(host.lab, '[policy]\ningress = "drop"\n' + GOOD.split("[policy]")[1]
                       .split("\n", 2)[2], "bad-policy.toml")
    refused(host, "up", "--config", str(bad), names=[str(bad), "'policy.ingress'"],
            files=[bad, good])


def test_missing_file_points_to_the_example(fw):
    host, good = fw
    missing = host.lab.tmp / "nope.toml"
    refused(host, "up", "--config", str(missing), names=[str(missing), "examples/seed.toml"],
            files=[good])
    refused(host, "reload", "--config", str(missing), names=[str(missing), "examples/seed.toml"],
            files=[good])
    # No --config, nothing loaded (a state directory of its own) and no
    # /etc/minifw/minifw.toml: minifw never loads hidden rules. (With a config loaded, `up`
    # takes that one again: tests/kernel/test_lint_live.py.)
    default = "/etc/minifw/minifw.toml"
    if not Path(default).exists():
        fresh = host.lab.tmp / "fresh-state"
        refused(host, "--state-dir", str(fresh), "up", names=[default, "examples/seed.toml"],
                files=[good])


def test_toml_syntax_error_names_its_line(fw):
    host, good = fw
    text = GOOD + '\n[[rule]]\nid = "broken"\naction = drop\n'
    line = text.splitlines().index("action = drop") + 1
    bad = write_config(host.lab, text, "bad-syntax.toml")
    msg = refused(host, "up", "--config", str(bad), names=[f"{bad}:{line}"], files=[bad, good])
    assert "TOML" in msg
    good.write_text(text)
    try:
        refused(host, "reload", names=[f"{good}:{line}"], files=[good])
        # add edits the loaded file: a broken file is refused before the kernel is touched.
        refused(host, "add", "--id", "fine", "--proto", "udp", "--action", "drop",
                names=[f"{good}:{line}"], files=[good])
    finally:
        good.write_text(GOOD)


QUEUE = """
import sys
from minifw.errors import KernelError, UnsupportedError
from minifw.kernel import nft
doc = {"nftables": [
    {"add": {"chain": {"family": "inet", "table": "minifw", "name": "hookfn_queue"}}},
    {"add": {"rule": {"family": "inet", "table": "minifw", "chain": "hookfn_queue",
                      "expr": [{"queue": {"num": 3}}]}}}]}
try:
    nft.run(doc)
except UnsupportedError as exc:
    print("UnsupportedError", exc)
except KernelError as exc:
    print("KernelError", exc)
else:
    print("applied")
"""


def test_a_kernel_without_a_feature(fw):
    """This kernel has no nft ``queue`` expression: the whole transaction is refused."""
    host, good = fw
    snap = Snapshot(host, good)
    out = host.run([sys.executable, "-c", QUEUE]).stdout
    assert out.startswith(("UnsupportedError", "KernelError")), out
    snap.unchanged()   # the chain of the same transaction was not created either
