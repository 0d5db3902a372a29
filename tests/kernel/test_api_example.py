"""The Python API as root, in namespaces the test made: docs/api.md's example runs for real and
what it set up carries traffic; the API's results are what the CLI's --json prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kit import SERVER4, nft_objects, probes, ruleset_shape

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "api_example.py")


def api(host, code: str) -> str:
    """Run Python ``code`` (with ``fw``, a Firewall of the host's state dir) in ``host``."""
    prelude = ("import json, sys\nfrom minifw import Firewall\nfrom minifw.errors import *\n"
               f"fw = Firewall(state_dir={str(host.state_dir)!r})\n")
    return host.run([sys.executable, "-c", prelude + code]).stdout


def rule_shape(host) -> list:
    """The rules and chains, counters zeroed (set elements' timeouts tick down)."""
    return [o for o in ruleset_shape(host)["nftables"] if "rule" in o or "chain" in o]


def test_the_documented_example(net):
    server, client = net
    out = server.run([sys.executable, EXAMPLE, "--keep", str(server.state_dir)]).stdout
    lines = out.splitlines()
    assert lines[0].startswith("up: 1 rules from /") and lines[0].endswith("/minifw.toml")
    assert lines[1:] == [
        "add: alt-web at input/0",
        "refused: field dport",
        "ban: 198.18.0.99 in set blocked for 600 s",
        "explain 198.18.0.2 tcp/81: accept by alt-web at input/0",
        "explain 198.18.0.2 tcp/82: drop by policy of input at input/1000",
        "explain 198.18.0.99 tcp/80: drop by ban blocked at prerouting/-350",
        "list: web alt-web",
        "status: loaded=True rules=2 sets: blocked=1",
    ]
    # what it explained is what the kernel does
    with probes() as p:
        p.expect(client, "tcp", SERVER4, 80, expect="open")
        p.expect(client, "tcp", SERVER4, 81, expect="open")     # the rule it added
        p.expect(client, "tcp", SERVER4, 82, expect="timeout")  # the drop policy
    listed = json.loads(server.minifw("list", "--json").stdout)
    assert [(r["id"], r["runtime"]) for r in listed["rules"]] == [("web", False),
                                                                  ("alt-web", True)]
    page = json.loads(server.minifw("set", "list", "blocked", "--json").stdout)
    assert [i["element"] for i in page["items"]] == ["198.18.0.99"]

    # the API's results are the CLI's --json
    st = json.loads(api(server, "print(json.dumps(fw.status().to_json()))"))
    assert st == json.loads(server.minifw("status", "--json").stdout)
    sp = json.loads(api(server, "print(json.dumps(fw.list_set('blocked').to_json()))"))
    left = [i.pop("expires_in") for d in (sp, page) for i in d["items"]]  # time passes
    assert sp == page and all(0 < s <= 600 for s in left)

    # a refused edit raises from the tree and changes nothing
    before = rule_shape(server)
    assert api(server, "try:\n    fw.delete('nope')\nexcept RuleError as e:\n"
                       "    print(type(e).__name__, e.field)\n") == "RuleError id\n"
    assert rule_shape(server) == before

    assert api(server, "print(fw.down().removed)") == "True\n"
    assert not [t for t in nft_objects(server, "table") if t["name"] == "minifw"]
    assert api(server, "print(fw.down().removed, fw.status().loaded)") == "False False\n"
