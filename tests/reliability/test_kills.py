"""kill -9 at random moments during up (10k rules), reload, set import (200k) and ban.

After each kill the next command converges (exit 0, nothing left in flight), and the kernel
equals the record: the declarative chains hold what state.json's ruleset compiles to, and set
membership agrees on every banned address, on the first and last address of every kernel batch
of the import (each batch is one kernel transaction, so a half-applied import shows there) and
on a random sample; the whole set is counted from the kernel once per kind.

Kill moments are drawn uniformly within the measured duration of the operation; one lab per
kind, generated files reused.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import rkit

from minifw.compile import names
from minifw.compile import nft as compiler
from minifw.kernel.nfnl import CHUNK
from minifw.lab import MINIFW
from minifw.model import Ruleset
from minifw.store.setrecord import SetStore

KILLS = rkit.scale(20, 100)
KERNCOUNT = str(Path(__file__).with_name("kerncount.py"))
SEED = int(os.environ.get("MINIFW_KILL_SEED", time.time_ns() % 100_000))
IMPORT_SIZE = 200_000
RULES = 10_000
RELOAD_RULES = 2_000

SMALL = """
[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
action = "accept"

[[rule]]
id = "icmp"
proto = "icmp"
action = "drop"
"""


def big_config(n: int) -> str:
    parts = []
    for i in range(n):
        parts.append(f'[[rule]]\nid = "r{i}"\nproto = "tcp"\nsrc = "198.19.{i // 250}.{i % 250 + 1}"\n'
                     f'dport = {1000 + i % 3000}\naction = "{"drop" if i % 7 else "accept"}"\n')
    return "\n".join(parts)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kills")
    (d / "small.toml").write_text(SMALL)
    base = int.from_bytes(socket.inet_aton("198.18.128.0"), "big")
    addrs = [socket.inet_ntoa((base + i).to_bytes(4, "big")) for i in range(IMPORT_SIZE)]
    (d / "import.txt").write_text("\n".join(addrs) + "\n")
    return d, addrs


def run(host, *args, timeout=120):
    proc = host.minifw(*args, check=False, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    return proc


def timed(host, *args) -> float:
    start = time.perf_counter()
    run(host, *args)
    return time.perf_counter() - start


def kill_during(host, args, at: float) -> bool:
    """Start ``minifw ARGS`` and kill -9 it ``at`` seconds in; True if it was still running."""
    proc = subprocess.Popen(["ip", "netns", "exec", host.ns, MINIFW, *args],
                            env={**os.environ, "MINIFW_STATE_DIR": str(host.state_dir)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=at)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def nothing_in_flight(host) -> None:
    left = [f for f in ("intent.json", "sets.journal") if (host.state_dir / f).exists()]
    assert not left, f"still in flight after the next command: {left}"


# ---- rules: the kernel's declarative chains against state.json ---------------------------------

def kernel_layout(host) -> dict[str, list]:
    found = json.loads(host.run(["nft", "-j", "-t", "list", "ruleset"]).stdout)["nftables"]
    mine = lambda o: o.get("family") == "inet" and o.get("table") == "minifw"  # noqa: E731
    layout = {o["chain"]["name"]: [] for o in found if "chain" in o and mine(o["chain"])
              and names.is_declarative(o["chain"]["name"])}
    for o in found:
        if "rule" in o and mine(o["rule"]) and o["rule"]["chain"] in layout:
            layout[o["rule"]["chain"]].append(o["rule"].get("comment"))
    return layout


def kill_rule_loads(lab, files, kind: str, rules: int) -> None:
    d, _ = files
    host = lab.host("server")
    host.state_dir.mkdir(parents=True, exist_ok=True)
    cfg = d / f"{kind}.toml"
    texts = {"small": SMALL, "big": SMALL + big_config(rules)}
    # what each config compiles to, computed once: the checks compare against these
    known = {}
    for name, text in texts.items():
        ruleset = Ruleset.from_toml(tomllib.loads(text))
        known[name] = (ruleset.to_toml(),
                       compiler.expected_layout(compiler.build_load(ruleset)))
    (d / f"{kind}-big.toml").write_text(texts["big"])
    (d / f"{kind}-small.toml").write_text(texts["small"])
    cfg.write_text(SMALL)
    run(host, "up", "--config", str(cfg))

    def command(target: str) -> list[str]:
        if kind == "up":
            return ["up", "--config", str(d / f"{kind}-{target}.toml")]
        cfg.write_text(texts[target])
        return ["reload"]

    duration = timed(host, *command("big"))
    duration = max(duration, timed(host, *command("small")))
    rng = random.Random(SEED)
    killed = converged = pending = 0
    target = "big"
    for _ in range(KILLS):
        killed += kill_during(host, command(target), rng.uniform(0, duration))
        pending += (host.state_dir / "intent.json").exists()
        status = json.loads(run(host, "status", "--json").stdout)  # the next command
        nothing_in_flight(host)
        state = json.loads((host.state_dir / "state.json").read_text())
        now = next(n for n, (toml, _) in known.items() if toml == state["ruleset"])
        assert state["loaded"]
        assert kernel_layout(host) == known[now][1]
        assert status["rules"] == len(known[now][0].get("rule", []))
        assert not [c for c in status["chains"] if c["kind"] == "other"]
        converged += 1
        target = "small" if now == "big" else "big"
    rkit.report(f"kill -9 during {kind} ({rules} rules)", kills=KILLS, cut_short=killed,
                converged=converged, change_in_flight_after_kill=pending,
                op_seconds=round(duration, 2), seed=SEED)


def test_kill_during_up(lab, files):
    kill_rule_loads(lab, files, "up", RULES)


def test_kill_during_reload(lab, files):
    kill_rule_loads(lab, files, "reload", RELOAD_RULES)


# ---- sets: the kernel's elements against sets.db ----------------------------------------------

def kernel_has(host, kset: str, keys: list[bytes]) -> set[bytes]:
    out = host.run([sys.executable, KERNCOUNT, "probe", "minifw", kset],
                   input="\n".join(k.hex() for k in keys)).stdout
    return {bytes.fromhex(line) for line in out.split()}


def kernel_count(host, kset: str) -> int:
    return len(host.run([sys.executable, KERNCOUNT, "minifw", kset], timeout=120).stdout.split())


def record_has(host, name: str, addrs: list[str]) -> set[str]:
    record = SetStore(host.state_dir)
    try:
        return {a for a in addrs if record.get(name, a)}
    finally:
        record.close()


def record_count(host, name: str) -> int:
    status = json.loads(run(host, "status", "--json").stdout)
    return next((s["elements"] for s in status["set_elements"] if s["name"] == name), 0)


def agree(host, addrs: list[str]) -> None:
    keys = [socket.inet_aton(a) for a in addrs]
    in_kernel = {socket.inet_ntoa(k) for k in kernel_has(host, "s_blocked_v4", keys)}
    assert in_kernel == record_has(host, "blocked", addrs)


BANS = ["198.18.5.1", "198.18.5.2", "198.18.5.3"]


def sets_lab(lab, files):
    d, addrs = files
    host = lab.host("server")
    host.state_dir.mkdir(parents=True, exist_ok=True)
    run(host, "up", "--config", str(d / "small.toml"))
    run(host, "ban", *BANS)
    return host, d, addrs


def test_kill_during_set_import(lab, files):
    host, d, addrs = sets_lab(lab, files)
    path = str(d / "import.txt")
    duration = timed(host, "set", "import", "blocked", path)
    assert record_count(host, "blocked") == IMPORT_SIZE + len(BANS)
    # every kernel batch's first and last address: a half-applied import shows there
    edges = sorted({i for s in range(0, IMPORT_SIZE, CHUNK) for i in (s, min(s + CHUNK,
                                                                            IMPORT_SIZE) - 1)})
    rng = random.Random(SEED)
    killed = converged = half = 0
    worst = 0
    for _ in range(KILLS):
        run(host, "set", "flush", "blocked")
        run(host, "ban", *BANS)
        cut = kill_during(host, ["set", "import", "blocked", path], rng.uniform(0, duration))
        killed += cut
        # before recovery: how much of the import is in the kernel but not in the record
        probe = [addrs[i] for i in edges]
        keys = [socket.inet_aton(a) for a in probe]
        present = kernel_has(host, "s_blocked_v4", keys)
        recorded = record_has(host, "blocked", probe[:1])
        batches = sum(1 for s in range(0, len(edges), 2) if keys[s] in present)
        if batches and not recorded:
            half += 1
            worst = max(worst, batches * CHUNK)
        count = record_count(host, "blocked")  # status is the next command
        nothing_in_flight(host)
        assert count in (len(BANS), IMPORT_SIZE + len(BANS))
        agree(host, BANS + probe + rng.sample(addrs, 300))
        converged += 1
    assert kernel_count(host, "s_blocked_v4") == record_count(host, "blocked")
    rkit.report(f"kill -9 during set import ({IMPORT_SIZE})", kills=KILLS, cut_short=killed,
                converged=converged, half_applied_before_recovery=half,
                max_elements_half_applied=worst, op_seconds=round(duration, 2), seed=SEED)


def test_kill_during_ban(lab, files):
    host, d, addrs = sets_lab(lab, files)
    duration = timed(host, "ban", "198.18.6.1", "--timeout", "1h")
    rng = random.Random(SEED)
    tried = ["198.18.6.1"]
    killed = converged = 0
    for i in range(KILLS):
        addr = f"198.18.6.{i + 2}"
        tried.append(addr)
        args = ["ban", addr] + (["--timeout", "1h"] if i % 2 else [])
        killed += kill_during(host, args, rng.uniform(0, duration))
        count = record_count(host, "blocked")  # status is the next command
        nothing_in_flight(host)
        agree(host, BANS + tried)
        assert kernel_count(host, "s_blocked_v4") == count
        converged += 1
    rkit.report("kill -9 during ban", kills=KILLS, cut_short=killed, converged=converged,
                op_seconds=round(duration, 3), seed=SEED)
