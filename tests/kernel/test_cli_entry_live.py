"""The console script's fast ban/unban (cli/entry.py) against the click CLI, on the kernel.

Two hosts with the same config: every argv goes to one through `minifw` (the console script,
the fast path for ban/unban) and to the other through the click CLI; the outputs, exit codes
and the kernel's sets and ban chains must be the same, also after another tool emptied the ban
chain (the ban must notice and rebuild it, as the click path does)."""

from __future__ import annotations

import json
import re

from minifw.lab import MINIFW

from kit import ruleset_shape

PY = MINIFW.rsplit("/", 1)[0] + "/python"
CLICK = [PY, "-c", "from minifw.cli.main import main; main()"]

CONFIG = """
[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
action = "accept"
"""

STEPS = [
    ["ban", "198.18.5.1"],
    ["ban", "198.18.5.1", "--json"],
    ["ban", "198.18.5.2", "--timeout", "1h", "--json"],
    ["ban", "fd00:5::1", "198.18.6.0/24"],
    ["ban", "198.18.6.0/25"],
    ["ban", "nope"],
    ["ban"],
    ["ban", "--timeout", "5x", "198.18.5.3"],
    ["ban", "--bogus", "198.18.5.3"],
    ["ban", "--set", "web", "198.18.7.1", "--json"],
    ["unban", "198.18.5.1"],
    ["unban", "198.18.5.9", "--json"],
    ["unban", "198.18.6.5"],
    ["unban", "--set", "web", "198.18.7.1"],
]


def _plain(proc, state_dir) -> tuple[int, str, str]:
    def scrub(text: str) -> str:
        text = re.sub(r'"apply_ms": [0-9.e-]+', '"apply_ms": 0', text)
        return text.replace(str(state_dir), "STATE")
    return proc.returncode, scrub(proc.stdout), scrub(proc.stderr)


def _kernel(host) -> dict:
    """The live table with what differs by nature removed: the time left on elements."""
    def scrub(node):
        if isinstance(node, dict):
            return {k: scrub(v) for k, v in node.items() if k != "expires"}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node
    full = json.loads(host.run(["nft", "-j", "list", "table", "inet", "minifw"]).stdout)
    return {"table": scrub(full), "shape": scrub(ruleset_shape(host))}


def rules_of(kernel: dict) -> list:
    """The rules, in order, without their handles (a rebuilt chain gets new ones)."""
    return [{k: v for k, v in r["rule"].items() if k != "handle"}
            for r in kernel["shape"]["nftables"] if "rule" in r]


def test_fast_and_click_paths_agree_on_the_kernel(lab):
    fast, slow = lab.host("fast"), lab.host("click")
    lab.tmp.mkdir(parents=True, exist_ok=True)
    cfg = lab.tmp / "minifw.toml"
    cfg.write_text(CONFIG)
    for host in (fast, slow):
        host.minifw("up", "--config", str(cfg))

    def both(argv):
        a = _plain(fast.run([MINIFW, *argv], check=False), fast.state_dir)
        b = _plain(slow.run([*CLICK, *argv], check=False), slow.state_dir)
        assert a == b, argv
        return a

    for argv in STEPS:
        code, _, err = both(argv)
        if code:
            assert len(err.splitlines()) == 1 and err.startswith("error: "), (argv, err)
    assert _kernel(fast) == _kernel(slow)
    armed = _kernel(fast)

    # another tool empties the ban chain: the next ban sees it and arms the lookups again
    for host in (fast, slow):
        host.run(["nft", "flush", "chain", "inet", "minifw", "bans"])
    code, out, _ = both(["ban", "198.18.5.4", "--json"])
    assert code == 0 and json.loads(out)["banned"] == ["198.18.5.4"]
    assert _kernel(fast) == _kernel(slow)
    assert rules_of(armed) and rules_of(_kernel(fast)) == rules_of(armed)
    elements = json.loads(fast.run(["nft", "-j", "list", "set", "inet", "minifw",
                                    "s_blocked_v4"]).stdout)
    assert "198.18.5.4" in json.dumps(elements)


# What a ban must not import: each costs the start-up of every `minifw ban` (pathlib brings
# urllib.parse and fnmatch, sqlite3's Python part datetime); click, tomlkit and the rule
# machinery are for the other commands. (The lockout guard's socket-table parser,
# engine.sockets, is part of a ban: is any client of a protected connection banned?)
NOT_ON_A_BAN = ("pathlib", "typing", "subprocess", "sqlite3", "datetime", "click", "tomlkit",
                "minifw.cli.main", "minifw.app.rules", "minifw.compile.nft",
                "minifw.model.ruleset", "minifw.hooks", "minifw.runners", "minifw.engine.explain",
                "minifw.engine.guard")


def test_a_ban_on_the_kernel_imports_only_what_it_needs(lab):
    """The console script as a whole process, minifw up on the kernel in the lab: every module
    it imports, as Python's -X importtime lists them while they load (the fast path leaves by
    os._exit, so nothing can be checked at its exit)."""
    host = lab.host("fw")
    lab.tmp.mkdir(parents=True, exist_ok=True)
    cfg = lab.tmp / "minifw.toml"
    cfg.write_text(CONFIG)
    host.minifw("up", "--config", str(cfg))
    proc = host.run([PY, "-X", "importtime", MINIFW, "ban", "198.18.5.1", "--json"],
                    check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["banned"] == ["198.18.5.1"]
    loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
              if line.startswith("import time:") and "|" in line}
    assert {"_sqlite3", "nftables", "minifw.app.sets"} <= loaded  # the listing is real
    assert sorted(loaded & set(NOT_ON_A_BAN)) == []
    assert "198.18.5.1" in host.run(["nft", "-j", "list", "set", "inet", "minifw",
                                     "s_blocked_v4"]).stdout
