"""minifw from Python: up, add a rule, ban an address, explain, list, status, down.

Run it as root, in a network namespace of its own, never the machine's (it installs a drop
policy at input):

    sudo ip netns add apidemo
    sudo ip netns exec apidemo .venv/bin/python examples/api_example.py
    sudo ip netns del apidemo

Usage: api_example.py [--keep] [STATE_DIR]   (--keep: leave the firewall up at the end)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from minifw import Firewall
from minifw.errors import MinifwError, RuleError

CONFIG = """\
[policy]
input = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"
"""


def in_named_netns() -> bool:
    """This process runs in a namespace made by `ip netns add` (never the machine's own)."""
    mine = os.stat("/proc/self/ns/net")
    named = Path("/run/netns")
    return named.is_dir() and any(
        (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
        for st in (os.stat(p) for p in named.iterdir()))


def main(argv: list[str]) -> int:
    if not in_named_netns():
        print("error: run this example in a network namespace of its own, made with "
              "'ip netns add' (see its docstring)", file=sys.stderr)
        return 2
    keep = "--keep" in argv
    rest = [a for a in argv if a != "--keep"]
    work = Path(tempfile.mkdtemp(prefix="minifw-api-example-"))
    config = work / "minifw.toml"
    config.write_text(CONFIG)
    fw = Firewall(state_dir=rest[0] if rest else work / "state")

    loaded = fw.up(config)
    print(f"up: {loaded.rules} rules from {loaded.config}")

    # A rule as keywords (or a dict of the TOML keys); runtime=True leaves the file alone.
    added = fw.add(id="alt-web", proto="tcp", dport=81, action="accept", runtime=True)
    print(f"add: {added.id} at {added.point}")

    # Every failure is a MinifwError; a bad rule names the field at fault and changes nothing.
    try:
        fw.add(id="bad", proto="tcp", dport=70000, action="accept")
    except RuleError as exc:
        print(f"refused: field {exc.field}")

    banned = fw.ban("198.18.0.99", timeout="10m")
    print(f"ban: {','.join(banned.banned)} in set {banned.set} for {banned.timeout} s")

    for src, dport in (("198.18.0.2", 81), ("198.18.0.2", 82), ("198.18.0.99", 80)):
        e = fw.explain(proto="tcp", src=src, dst="198.18.0.1", dport=dport)
        print(f"explain {src} tcp/{dport}: {e.verdict} by {e.decider} at {e.point}")

    print("list:", " ".join(r.id for r in fw.list().rules))
    st = fw.status()
    sets = " ".join(f"{s.name}={s.elements}" for s in st.set_elements)
    print(f"status: loaded={st.loaded} rules={st.rules} sets: {sets}")

    if not keep:
        print(f"down: removed={fw.down().removed}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except MinifwError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
