"""`python -m minifw.lab.demo_hooks`: the article's two hook functions, written in Python.

Same namespaces as `make demo`; the server runs examples/seed_hooks.py (drop ICMP at
prerouting -300, drop one source address at -299, each drop logged to dmesg) through
`minifw up` with a [[hook]] config, then `minifw down`. Everything is removed on every exit.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import demo
from .demo import check, dmesg, say, step
from . import Lab

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def run() -> bool:
    good = True
    with Lab(prefix=f"demoh{os.getpid() % 10000}") as lab:
        step("Setting up namespaces: client, server, blocked (198.18.0.0/15, no route out)")
        server, client, blocked = lab.seed_topology()
        server.serve_http(80)
        lab.tmp.mkdir(parents=True, exist_ok=True)
        for name in ("seed_hooks.py", "seed_hooks.toml"):
            shutil.copy(EXAMPLES / name, lab.tmp / name)
        try:
            step("minifw up --config seed_hooks.toml   ([[hook]] file = \"seed_hooks.py\")")
            say(server.minifw("up", "--config", str(lab.tmp / "seed_hooks.toml")).stdout.strip())
            say(server.minifw("status").stdout.rstrip())
            pid = json.loads(server.minifw("status", "--json").stdout)["hooks"][0]["pid"]

            step("Python hooks at work: ping dropped, HTTP passes, the blocked host times out")
            good &= check("client pings server", client.ping("198.18.0.1", count=2), False)
            good &= check("client gets HTTP",
                          client.http_get("http://198.18.0.1/") is not None, True)
            good &= check("blocked host gets HTTP",
                          blocked.http_get("http://198.18.2.1/", timeout=2) is not None, False)

            step("The kernel log (dmesg): pkt.log() writes to /dev/kmsg, like printk")
            time.sleep(0.2)
            lines = [line for _, line in dmesg() if f"minifw[{pid}]:" in line]
            for line in lines[-6:]:
                say(f"   {line[:150]}")
            good &= check("dmesg has 'Drop ICMP packet'",
                          any("Drop ICMP packet" in line for line in lines), True)
            good &= check("dmesg has 'Drop packet from 198.18.2.2'",
                          any("Drop packet from 198.18.2.2" in line for line in lines), True)
        finally:
            step("minifw down   (stops the runner, removes the table)")
            say(server.minifw("down", check=False).stdout.strip())
        good &= check("client pings server", client.ping("198.18.0.1"), True)
        tables = json.loads(server.run("nft -j list ruleset").stdout)["nftables"]
        good &= check("no table left in the server namespace",
                      any("table" in obj for obj in tables), False)
    step("Cleaned up: namespaces deleted")
    return good


def main() -> int:
    return demo.main(run)


if __name__ == "__main__":
    sys.exit(main())
