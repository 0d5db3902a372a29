"""`python -m minifw.lab.demo_hooks`: the article's two hook functions, written in Python.

Same namespaces as `make demo`; the server runs examples/seed_hooks.py in the kernel (drop
ICMP at prerouting -300, drop the blocked host at -299, each drop logged to dmesg): first in
the foreground with `minifw run` (Ctrl-C detaches), then pinned by `minifw up` with a [[hook]]
config, its Addresses changed by `minifw hook set`, then `minifw down`. Everything is removed
on every exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import demo
from .demo import check, dmesg, say, step
from . import MINIFW, Lab

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
        seed = str(lab.tmp / "seed_hooks.py")
        err = open(lab.tmp / "run.err", "w+")
        step("minifw run seed_hooks.py   (where=\"kernel\": BPF programs at prerouting -300 "
             "and -299)")
        since = time.time()
        proc = subprocess.Popen(["ip", "netns", "exec", server.ns, MINIFW, "run", seed],
                                env=dict(os.environ, MINIFW_STATE_DIR=str(server.state_dir)),
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        lab._procs.append(proc)
        try:
            end = time.monotonic() + 20
            while "Ctrl-C stops" not in Path(err.name).read_text() and proc.poll() is None \
                    and time.monotonic() < end:
                time.sleep(0.05)
            say(Path(err.name).read_text().strip())
            good &= check("minifw run is running", proc.poll() is None, True)

            step("Python hooks in the kernel: ping dropped, HTTP passes, the blocked host "
                 "times out")
            good &= check("client pings server", client.ping("198.18.0.1", count=2), False)
            good &= check("client gets HTTP",
                          client.http_get("http://198.18.0.1/") is not None, True)
            good &= check("blocked host gets HTTP",
                          blocked.http_get("http://198.18.2.1/", timeout=2) is not None, False)

            step("The kernel log (dmesg): pkt.log() goes through a ringbuf to /dev/kmsg")
            time.sleep(0.5)
            boot = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
            lines = [line for stamp, line in dmesg()
                     if "minifw:" in line and stamp + boot >= since - 1]
            for line in lines[-6:]:
                say(f"   {line[:150]}")
            good &= check("dmesg has 'Drop ICMP packet'",
                          any("Drop ICMP packet" in line for line in lines), True)
        finally:
            step("Ctrl-C   (detaches the programs)")
            proc.send_signal(signal.SIGINT)
            try:
                good &= check("minifw run exits 0", proc.wait(timeout=10) == 0, True)
            except subprocess.TimeoutExpired:
                good &= check("minifw run exits", False, True)
        good &= check("client pings server", client.ping("198.18.0.1"), True)

        step("minifw up --config seed_hooks.toml   ([[hook]]: attached and pinned, no process)")
        try:
            say(server.minifw("up", "--config", str(lab.tmp / "seed_hooks.toml")).stdout.strip())
            good &= check("client pings server", client.ping("198.18.0.1"), False)
            step(f"minifw hook set {seed}:BLOCKED add 198.18.0.0/24   (no reload)")
            say(server.minifw("hook", "set", f"{seed}:BLOCKED", "add",
                              "198.18.0.0/24").stdout.strip())
            good &= check("client gets HTTP",
                          client.http_get("http://198.18.0.1/") is not None, False)
            say(server.minifw("status").stdout.rstrip())
        finally:
            step("minifw down   (detaches the programs, removes their pins)")
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
