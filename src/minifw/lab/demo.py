"""`make demo`: the article's mini-firewall, reproduced with minifw in throwaway namespaces.

    client  198.18.0.2 ──┐
                         ├── server 198.18.0.1 / 198.18.2.1   (minifw runs here)
    blocked 198.18.2.2 ──┘

It loads examples/seed.toml into the server, shows ping failing while HTTP works, the blocked
host timing out, the kernel-log lines and counters, a live delete, and `down` restoring it all.
Everything is removed on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import Lab, LabError

SEED = Path(__file__).resolve().parents[3] / "examples" / "seed.toml"
LOG_ALL_NETNS = "/proc/sys/net/netfilter/nf_log_all_netns"


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n== {text}")


def check(label: str, ok: bool, want: bool) -> bool:
    mark = "ok " if ok == want else "UNEXPECTED"
    say(f"   [{mark}] {label}: {'yes' if ok else 'no'}")
    return ok == want


@contextlib.contextmanager
def kernel_log_from_namespaces():
    """nft `log` lines from a namespace reach dmesg only while this sysctl is 1; restore it."""
    try:
        old = Path(LOG_ALL_NETNS).read_text().strip()
    except OSError:
        old = None
    if old is not None:
        Path(LOG_ALL_NETNS).write_text("1\n")
    try:
        yield
    finally:
        if old is not None:
            Path(LOG_ALL_NETNS).write_text(old + "\n")


def dmesg() -> list[tuple[float, str]]:
    """Kernel-log lines with their timestamps (the ring buffer rotates, so count by time)."""
    out = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
    lines = []
    for line in out:
        stamp, _, _ = line.lstrip("[ ").partition("]")
        try:
            lines.append((float(stamp), line))
        except ValueError:
            continue
    return lines


def _terminate(signum, frame):
    raise KeyboardInterrupt


def run() -> bool:
    good = True
    with kernel_log_from_namespaces(), Lab(prefix=f"demo{os.getpid() % 10000}") as lab:
        step("Setting up namespaces: client, server, blocked (198.18.0.0/15, no route out)")
        server, client, blocked = lab.seed_topology()
        www = lab.tmp / "www"
        www.mkdir(parents=True, exist_ok=True)
        (www / "index.html").write_text("hello from the server\n")
        server.serve_http(80, str(www))
        config = lab.tmp / "seed.toml"
        shutil.copy(SEED, config)

        step("Before minifw: everything passes")
        good &= check("client pings server", client.ping("198.18.0.1"), True)
        good &= check("client gets HTTP", client.http_get("http://198.18.0.1/") is not None, True)
        good &= check("blocked host gets HTTP",
                      blocked.http_get("http://198.18.2.1/") is not None, True)

        step(f"minifw up --config {SEED.name}   (like insmod mini_firewall.ko)")
        log_start = max((t for t, _ in dmesg()), default=0.0)
        say(server.minifw("up", "--config", str(config)).stdout.strip())
        say(server.minifw("status").stdout.rstrip())

        step("With minifw: ping is dropped, HTTP passes, the blocked host times out")
        good &= check("client pings server", client.ping("198.18.0.1", count=2), False)
        good &= check("client gets HTTP", client.http_get("http://198.18.0.1/") is not None, True)
        good &= check("blocked host gets HTTP",
                      blocked.http_get("http://198.18.2.1/", timeout=2) is not None, False)

        step("The kernel log (dmesg), as printk wrote it in the article")
        time.sleep(0.2)
        lines = [line for t, line in dmesg() if t > log_start
                 and ("Drop ICMP packet" in line or "Drop packet from 198.18.2.2" in line)]
        for line in lines[-6:]:
            say(f"   {line[:150]}")
        good &= check("dmesg has 'Drop ICMP packet'",
                      any("Drop ICMP packet" in line for line in lines), True)
        good &= check("dmesg has 'Drop packet from 198.18.2.2'",
                      any("Drop packet from 198.18.2.2" in line for line in lines), True)

        step("Counters: minifw list")
        say(server.minifw("list").stdout.rstrip())
        rules = json.loads(server.minifw("list", "--json").stdout)["rules"]
        good &= check("both rules counted drops", all(r["packets"] > 0 for r in rules), True)

        step("A live change: minifw delete drop-icmp (the article's 'next step')")
        say(server.minifw("delete", "drop-icmp").stdout.strip())
        good &= check("client pings server", client.ping("198.18.0.1"), True)
        good &= check("blocked host still gets nothing",
                      blocked.http_get("http://198.18.2.1/", timeout=1) is not None, False)

        step("minifw down   (like rmmod)")
        say(server.minifw("down").stdout.strip())
        good &= check("blocked host gets HTTP",
                      blocked.http_get("http://198.18.2.1/") is not None, True)
        tables = json.loads(server.run("nft -j list ruleset").stdout)["nftables"]
        good &= check("no table left in the server namespace",
                      any("table" in obj for obj in tables), False)
    step("Cleaned up: namespaces deleted, nf_log_all_netns restored")
    return good


def main(run=run) -> int:
    """Run a demo with root checked, SIGTERM treated as Ctrl-C, and one exit status."""
    if os.geteuid() != 0:
        print("error: the demo needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    try:
        ok = run()
    except KeyboardInterrupt:
        print("\ninterrupted; everything was cleaned up", file=sys.stderr)
        return 130
    except (LabError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    say("\nDemo finished: all as expected." if ok else "\nDemo finished with UNEXPECTED results.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
