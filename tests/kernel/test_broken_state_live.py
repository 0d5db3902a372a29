"""The real edges with broken state: the minifw CLI, as root in a namespace, on a set record
whose pages are garbled and a state file nested too deeply. Each command says one line or
succeeds; a refused one leaves the kernel as it was; ``set recover`` brings the record back.
(Every command against every breakage, on the fake kernel: tests/unit/test_broken_state.py.)"""

from __future__ import annotations

import json

from kit import ruleset_shape, up, write_config

CONFIG = """
[[rule]]
id = "ping"
proto = "icmp"
action = "drop"

[[set]]
name = "blocked"
elements = ["198.18.9.9"]
"""


def garble_pages(db) -> None:
    """Keep the header (it passes the header check), garble the pages: SQLite fails on the
    first query. The write-ahead log goes too (a ban checkpoints it into the file)."""
    data = bytearray(db.read_bytes())
    for i in range(4096, len(data)):
        data[i] = (i * 7 + 13) & 0xFF
    db.write_bytes(bytes(data))
    for extra in ("-wal", "-shm"):
        db.with_name(db.name + extra).unlink(missing_ok=True)


def contents(host) -> dict:
    """The namespace's ruleset without handles and counter values: a refused reload may have
    replaced the chains with the very same rules before the record failed it."""
    def scrub(node):
        if isinstance(node, dict):
            return {k: scrub(v) for k, v in node.items() if k != "handle"}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node
    return scrub(ruleset_shape(host))


def one_line_or_success(result) -> bool:
    err = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result
    if result.returncode == 0:
        return True
    assert len(err) == 1 and err[0].startswith("error: "), result
    return False


def blocked(host) -> set[str]:
    out = host.run(["nft", "-j", "list", "set", "inet", "minifw", "s_blocked_v4"]).stdout
    return {e if isinstance(e, str) else e["elem"]["val"]
            for s in json.loads(out)["nftables"] if "set" in s for e in s["set"].get("elem", [])}


def test_a_garbled_set_record_with_the_real_kernel(lab):
    host = lab.host("fw")
    config = up(host, CONFIG)
    host.minifw("ban", "198.18.5.5")
    imports = write_config(lab, "198.18.7.1\n198.18.7.2\n", "import.txt")
    garble_pages(host.state_dir / "sets.db")
    refused = 0
    for argv in (["status"], ["list"], ["ban", "198.18.5.6"], ["unban", "198.18.5.5"],
                 ["set", "list", "blocked"], ["set", "import", "blocked", str(imports)],
                 ["set", "flush", "blocked"], ["reload"], ["up", "--config", str(config)],
                 ["explain", "--proto", "icmp", "--src", "198.18.0.2", "--dst", "198.18.0.1"],
                 ["add", "--id", "web", "--proto", "tcp", "--dport", "80", "--action",
                  "accept", "--runtime"]):
        before = contents(host)
        result = host.minifw(*argv, check=False)
        if not one_line_or_success(result):
            refused += 1
            assert "sets.db" in result.stderr, result
            assert contents(host) == before, argv  # refused: the kernel as it was
    assert refused >= 6
    assert blocked(host) == {"198.18.9.9", "198.18.5.5"}
    recovered = host.minifw("set", "recover", "--json")
    assert json.loads(recovered.stdout)["sets"] == {"blocked": 2}
    host.minifw("ban", "198.18.5.6")
    assert blocked(host) == {"198.18.9.9", "198.18.5.5", "198.18.5.6"}


def test_a_state_file_nested_too_deeply_with_the_real_kernel(lab):
    host = lab.host("fw")
    config = up(host, CONFIG)
    (host.state_dir / "state.json").write_text("[" * 200_000 + "]" * 200_000)
    before = ruleset_shape(host)
    for argv in (["status"], ["list"], ["reload"], ["add", "--id", "web", "--proto", "tcp",
                                                    "--dport", "80", "--action", "accept"]):
        result = host.minifw(*argv, check=False)
        assert not one_line_or_success(result), argv
        assert "state.json" in result.stderr and "nested too deeply" in result.stderr
    assert ruleset_shape(host) == before
    host.minifw("up", "--config", str(config))  # up rewrites a damaged state
    assert json.loads(host.minifw("status", "--json").stdout)["loaded"] is True
