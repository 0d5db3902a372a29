"""Helpers shared by the kernel tests: topologies, probes, and reads of minifw and nft state.

A probe that expects an answer waits up to LONG seconds and returns as soon as it comes; a probe
that expects silence (a drop) waits SHORT seconds, which is ample on a veth link.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minifw.lab import Lab

PROBE = str(Path(__file__).with_name("probe.py"))
SHORT = 0.6
LONG = 3.0

_labs = itertools.count()
LAB_PREFIX = os.environ.get("MINIFW_LAB_PREFIX", "mk")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")


def new_lab() -> Lab:
    """A lab whose namespaces are named ``$MINIFW_LAB_PREFIX<pid>x<n>-<host>``."""
    return Lab(prefix=f"{LAB_PREFIX}{os.getpid() % 10000}x{next(_labs)}")


# Addresses: 198.18.0.0/15 and fd00::/8 only, inside namespaces the test made.
SERVER4, CLIENT4, SERVER6, CLIENT6 = "198.18.0.1", "198.18.0.2", "fd00::1", "fd00::2"
SERVER4B, CLIENT4B, SERVER6B, CLIENT6B = "198.18.1.1", "198.18.1.2", "fd00:1::1", "fd00:1::2"


# ---- topologies -------------------------------------------------------------------------------

def pair(lab, second_client: bool = False):
    """server <-eth-c/eth0-> client (and server <-eth-d/eth0-> client2 when asked)."""
    server = lab.host("server")
    client = lab.host("client")
    lab.link(server, [f"{SERVER4}/24", f"{SERVER6}/64"], client, [f"{CLIENT4}/24", f"{CLIENT6}/64"],
             a_if="eth-c", b_if="eth0")
    if not second_client:
        return server, client
    client2 = lab.host("client2")
    lab.link(server, [f"{SERVER4B}/24", f"{SERVER6B}/64"], client2,
             [f"{CLIENT4B}/24", f"{CLIENT6B}/64"], a_if="eth-d", b_if="eth0")
    return server, client, client2


R_CLIENT4, R_SERVER4, R4_C, R4_S = "198.18.10.2", "198.18.11.2", "198.18.10.1", "198.18.11.1"
R_CLIENT6, R_SERVER6, R6_C, R6_S = "fd00:10::2", "fd00:11::2", "fd00:10::1", "fd00:11::1"


def routed(lab):
    """client <-> router <-> server, the router forwarding between two /24s and two /64s."""
    client = lab.host("client")
    router = lab.host("router", forwarding=True)
    server = lab.host("server")
    lab.link(client, [f"{R_CLIENT4}/24", f"{R_CLIENT6}/64"], router, [f"{R4_C}/24", f"{R6_C}/64"],
             a_if="eth0", b_if="eth-c")
    lab.link(server, [f"{R_SERVER4}/24", f"{R_SERVER6}/64"], router, [f"{R4_S}/24", f"{R6_S}/64"],
             a_if="eth0", b_if="eth-s")
    for host, via4, via6 in ((client, R4_C, R6_C), (server, R4_S, R6_S)):
        host.run(["ip", "route", "add", "default", "via", via4])
        host.run(["ip", "-6", "route", "add", "default", "via", via6])
    return client, router, server


# ---- traffic ----------------------------------------------------------------------------------

def serve(host, tcp=(), udp=()):
    """Start dual-stack TCP and UDP echo servers in ``host``; return once all ports are bound."""
    ready = host.lab.tmp / f"ready-{host.name}-{time.monotonic_ns()}"
    host.lab.tmp.mkdir(parents=True, exist_ok=True)
    host.popen([sys.executable, PROBE, "serve", str(ready), "--tcp", ",".join(map(str, tcp)),
                "--udp", ",".join(map(str, udp))])
    wait_until(ready.exists, what=f"echo servers in {host.name}")


def _probe_argv(kind: str, addr: str, port: int | None, expect: str,
                sport: int | None) -> tuple[list[str], float]:
    timeout = SHORT if expect == "timeout" else LONG
    if kind == "ping":
        return ["ping", "-n", "-c", "1", "-W", str(timeout), addr], timeout
    argv = [sys.executable, PROBE, kind, addr, str(port), "--timeout", str(timeout)]
    if sport:
        argv += ["--sport", str(sport)]
    return argv, timeout


def _probe_result(kind: str, returncode: int, stdout: str) -> str:
    if kind == "ping":
        if returncode == 0:
            return "reply"
        return "unreachable" if "nreachable" in stdout else "timeout"
    return stdout.strip()


def probe(host, kind: str, addr: str, port: int | None = None, *, expect: str,
          sport: int | None = None) -> str:
    """One tcp/udp/ping attempt; its timeout follows ``expect`` (silence is waited for briefly).

    Results: tcp open|refused|timeout, udp reply|refused|timeout, ping reply|unreachable|timeout.
    """
    argv, timeout = _probe_argv(kind, addr, port, expect, sport)
    proc = host.run(argv, check=False, timeout=timeout + 10)
    return _probe_result(kind, proc.returncode, proc.stdout)


def reach(host, kind: str, addr: str, port: int | None = None, *, expect: str,
          sport: int | None = None) -> None:
    got = probe(host, kind, addr, port, expect=expect, sport=sport)
    assert got == expect, f"{kind} {addr} {port or ''} from {host.name}: {got}, expected {expect}"


class Probes:
    """Independent probes run side by side, so their waits overlap; checked together on exit."""

    def __init__(self):
        self.items = []
        self.done = False

    def expect(self, host, kind: str, addr: str, port: int | None = None, *, expect: str,
               sport: int | None = None) -> None:
        assert not self.done, "a probe was added after the batch ran"
        self.items.append((host, kind, addr, port, expect, sport))

    def run(self) -> None:
        assert not self.done and self.items, "a batch runs once, with probes in it"
        self.done = True
        started = []
        for host, kind, addr, port, expect, sport in self.items:
            argv, timeout = _probe_argv(kind, addr, port, expect, sport)
            proc = subprocess.Popen(["ip", "netns", "exec", host.ns, *argv],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            started.append((proc, timeout))
        failures = []
        for (proc, timeout), (host, kind, addr, port, expect, _) in zip(started, self.items):
            out, _ = proc.communicate(timeout=timeout + 20)
            got = _probe_result(kind, proc.returncode, out)
            if got != expect:
                failures.append(f"{kind} {addr} {port or ''} from {host.name}: {got}, "
                                f"expected {expect}")
        assert not failures, "; ".join(failures)


@contextlib.contextmanager
def probes():
    batch = Probes()
    yield batch
    batch.run()


def ping_burst(host, addr: str, count: int) -> int:
    """Send ``count`` echo requests back to back; return how many replies came."""
    proc = host.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.002", "-W", str(LONG), addr],
                    check=False, timeout=LONG + 20)
    for line in proc.stdout.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    raise AssertionError(f"ping printed no summary: {proc.stdout} {proc.stderr}")


def wait_until(predicate, timeout: float = 10, what: str = "condition"):
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---- minifw and nft ---------------------------------------------------------------------------

def write_config(lab, text: str, name: str = "minifw.toml") -> Path:
    lab.tmp.mkdir(parents=True, exist_ok=True)
    path = lab.tmp / name
    path.write_text(text)
    return path


def up(host, text: str, name: str | None = None) -> Path:
    path = write_config(host.lab, text, name or f"{host.name}.toml")
    host.minifw("up", "--config", str(path))
    return path


def rules(host) -> dict[str, dict]:
    """``minifw list --json`` rules by id."""
    data = json.loads(host.minifw("list", "--json").stdout)
    return {r["id"]: r for r in data["rules"]}


def listing(host) -> dict:
    return json.loads(host.minifw("list", "--json").stdout)


def ruleset_text(host) -> str:
    return host.run(["nft", "-j", "list", "ruleset"]).stdout


def nft_objects(host, kind: str) -> list[dict]:
    """Objects of one kind (rule, chain, table, limit) in the namespace's ruleset, via nft -j."""
    data = json.loads(ruleset_text(host))
    return [obj[kind] for obj in data["nftables"] if kind in obj]


def nft_chain_ids(host, chain: str) -> list[str]:
    """Rule ids (the comment up to ': ') of the nft rules in one minifw chain, in kernel order."""
    return [r.get("comment", "").split(": ")[0] for r in nft_objects(host, "rule")
            if r["table"] == "minifw" and r["chain"] == chain]


def counter(host, rule_id: str) -> int:
    return rules(host)[rule_id]["packets"]


def dmesg_count(*needles: str) -> int:
    """How many kernel-log lines contain every one of ``needles``."""
    out = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if all(n in line for n in needles))


def reload_with(host, path: Path, text: str) -> None:
    """Rewrite the loaded config and ``minifw reload`` it."""
    path.write_text(text)
    host.minifw("reload")


def ruleset_shape(host) -> dict:
    """``nft -j list ruleset`` with counter values zeroed: stray IPv6 multicast (MLD, router
    solicitations) may hit a counter at any time; handles, chains and expressions must not move."""
    data = json.loads(ruleset_text(host))

    def scrub(node):
        if isinstance(node, dict):
            return {k: ({"packets": 0, "bytes": 0} if k == "counter" and isinstance(v, dict)
                        else scrub(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node
    return scrub(data)
