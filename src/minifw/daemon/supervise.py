"""Hook runners started by ``minifw up`` for ``[[hook]]`` files: start, stop, report, and keep
declarative chains and hook chains off each other's (hook, priority)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from ..compile import hooks as plan
from ..errors import ConfigError, KernelError, MinifwError, StateError
from ..kernel import nfnl, nft
from ..model.ruleset import Ruleset
from ..model.types import Hook
from . import hookstate

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def validate(files: Iterable[str], ruleset: Ruleset) -> None:
    """Load each hook file (as the runner will) and check it against the ruleset's chains,
    before anything in the kernel changes."""
    from .runner import load_hooks
    rule_points = plan.ruleset_points(k for k, _ in ruleset.chains())
    rule_points += [(h.value, 1000, f"the drop policy chain of {h.value}")
                    for h in ruleset.drop_hooks]
    seen: dict[tuple[str, int], str] = {}
    for file in files:
        specs = load_hooks(file)
        ours = [(s.hook.value, s.priority, f"hook function '{s.name}' ({file})") for s in specs]
        problems = plan.clashes(ours, rule_points)
        for h, p, label in ours:
            if (h, p) in seen:
                problems.append(f"{label} and {seen[(h, p)]} are both at {h} priority {p}; "
                                "give each its own priority.")
            seen[(h, p)] = label
        if problems:
            raise ConfigError(problems[0], file=file)


def check_rule_points(points: Iterable[tuple[Hook, int]], leaving: Iterable[str] = ()) -> None:
    """Refuse declarative chains at a (hook, priority) a live hook function holds, except the
    chains in ``leaving`` (those of runners about to be stopped)."""
    try:
        chains = nft.items(nft.query("list chains"), "chain")
    except KernelError:
        return
    gone = set(leaving)
    held = [p for p in plan.hook_points(chains) if p[2].split()[-1] not in gone]
    problems = plan.clashes(plan.ruleset_points(points), held)
    if problems:
        raise ConfigError(problems[0])


def running(state_dir: Path) -> list[dict[str, Any]]:
    return [r for r in hookstate.records(state_dir) if r["alive"]]


@dataclasses.dataclass
class RunnerPlan:
    """What bringing the runners in line with a config's [[hook]] files takes."""

    stop: list[dict[str, Any]]   # live managed runners: file dropped from the config or changed
    start: list[str]             # files without a live runner once the stops are done
    restart: list[str]           # of ``start``, files that had a runner (stopped now, or dead)

    @property
    def leaving_chains(self) -> list[str]:
        return [c for r in self.stop for c in hookstate.chains_of(r)]

    def describe(self) -> str:
        parts = []
        if self.restart:
            parts.append(f"restarted {len(self.restart)} hook runners")
        if len(self.start) > len(self.restart):
            parts.append(f"started {len(self.start) - len(self.restart)} hook runners")
        ended = sum(1 for r in self.stop if r["file"] not in self.start)
        if ended:
            parts.append(f"stopped {ended} hook runners")
        return ", ".join(parts)


def plan_runners(files: list[str], state_dir: Path, restart_all: bool = False) -> RunnerPlan:
    """Runners that ``minifw up`` started (managed) stop when their file left the config or
    changed since they loaded it (all of them with ``restart_all``); every file without a live
    runner then starts. Runners of ``minifw run`` (unmanaged) are never stopped here, and their
    files are not started a second time."""
    records = hookstate.records(state_dir)
    live = [r for r in records if r["alive"]]
    wanted = set(files)
    stop = [r for r in live if r.get("managed") and (
        restart_all or r["file"] not in wanted
        or (r.get("digest") is not None and r["digest"] != hookstate.file_digest(r["file"])))]
    stopping = {r["pid"] for r in stop}
    kept = {r["file"] for r in live if r["pid"] not in stopping}
    start = [f for f in files if f not in kept]
    had = {r["file"] for r in records}
    return RunnerPlan(stop, start, [f for f in start if f in had])


def apply_stops(runner_plan: RunnerPlan, state_dir: Path) -> None:
    if runner_plan.stop:
        stop_pids(state_dir, [r["pid"] for r in runner_plan.stop])


def apply_starts(runner_plan: RunnerPlan, state_dir: Path) -> None:
    for file in runner_plan.start:
        start(file, state_dir)


def start(file: str, state_dir: Path) -> dict[str, Any]:
    folder = hookstate.hooks_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    err_path = folder / f"start-{os.getpid()}-{time.monotonic_ns()}.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "minifw.daemon.runner", file, "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True, close_fds=True)
    record = hookstate.record_path(state_dir, proc.pid)
    end = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < end:
            if record.exists():
                return {"pid": proc.pid, "file": file}
            if proc.poll() is not None:
                text = err_path.read_text().strip().splitlines()
                reason = text[-1] if text else f"it exited with status {proc.returncode}"
                raise StateError(f"the hook runner for {file} did not start: "
                                 f"{reason.removeprefix('error: ')}")
            time.sleep(0.05)
        _kill(proc.pid)
        raise StateError(f"the hook runner for {file} did not become ready within "
                         f"{START_TIMEOUT:g} s; see {folder}")
    finally:
        with contextlib.suppress(OSError):
            if err_path.stat().st_size == 0 or proc.poll() is not None:
                err_path.unlink()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_all(state_dir: Path) -> int:
    """Stop every runner of this state directory (SIGTERM: they remove their chains); kill
    those that do not stop and remove their chains for them. Returns how many were running."""
    return stop_pids(state_dir, None)


def stop_pids(state_dir: Path, pids: list[int] | None) -> int:
    """stop_all for the runners with these pids (None: every runner, and dead ones' records)."""
    recs = [r for r in hookstate.records(state_dir) if pids is None or r["pid"] in pids]
    for r in recs:
        if r["alive"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(r["pid"], signal.SIGTERM)
    end = time.monotonic() + STOP_TIMEOUT
    pending = [r for r in recs if r["alive"]]
    while pending and time.monotonic() < end:
        time.sleep(0.05)
        pending = [r for r in pending if hookstate.pid_alive(r["pid"])]
    for r in pending:
        _kill(r["pid"])
    leftovers = [r for r in recs if not r["alive"] or r in pending]
    if leftovers:
        with contextlib.suppress(MinifwError):
            live = {c["name"] for c in nft.items(nft.query("list chains"), "chain")
                    if c.get("table") == plan.TABLE}
            chains = [c for r in leftovers for c in hookstate.chains_of(r) if c in live]
            if chains:
                nfnl.send_batch(plan.build_remove_batch(chains))
    for r in recs:
        hookstate.remove_record(state_dir, r["pid"])
    return sum(1 for r in recs if r["alive"])


def status(state_dir: Path) -> list[dict[str, Any]]:
    """One entry per hook function of every runner, with its queue settings from our state."""
    out = []
    for r in hookstate.records(state_dir):
        for q in r.get("queues", []):
            out.append({**q, "pid": r["pid"], "file": r["file"], "running": r["alive"],
                        "managed": r.get("managed", False), "backend": r.get("backend"),
                        "log": r.get("log")})
    return out
