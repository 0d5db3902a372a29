"""Hook runners started by ``minifw up`` for ``[[hook]]`` files: start, stop, report, and keep
declarative chains and hook chains off each other's (hook, priority).

One owner for runners: while a ``minifw daemon`` serves the state directory, ``apply`` and
``stop_all`` hand the work to it over the control socket (the caller holds the writers' lock,
so the daemon acts for it); in the daemon's own process they go to its supervisor
(``set_owner``). With no daemon, they start and stop runners here, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Protocol

from ..compile import hooks as plan
from ..control import client
from ..compile.nat import nat_points
from ..errors import ConfigError, KernelError, MinifwError, StateError
from ..kernel import nfnl, nft
from ..model.ruleset import Ruleset
from ..model.types import Hook
from . import hookstate, kattach
from .kplace import ModulePlan, place, tell

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def validate(files: Iterable[str], ruleset: Ruleset) -> dict[str, ModulePlan]:
    """Load each hook file (as the runner will), place its functions (a where="kernel" one
    that does not compile is refused here) and check it against the ruleset's chains, before
    anything in the kernel changes. Returns the plans by file, for ``plan_runners``: each
    file is loaded and compiled once per up or reload."""
    rule_points = plan.ruleset_points(k for k, _ in ruleset.chains())
    rule_points += [(h.value, 1000, f"the drop policy chain of {h.value}")
                    for h in ruleset.drop_hooks]
    rule_points += _nat_points(ruleset)
    seen: dict[tuple[str, int], str] = {}
    plans = {}
    for file in files:
        plans[file] = place(file, quiet=True)
        specs = plans[file].module.specs
        ours = [(s.hook.value, s.priority, f"hook function '{s.name}' ({file})") for s in specs]
        problems = plan.clashes(ours, rule_points)
        for h, p, label in ours:
            if (h, p) in seen:
                problems.append(f"{label} and {seen[(h, p)]} are both at {h} priority {p}; "
                                "give each its own priority.")
            seen[(h, p)] = label
        if problems:
            raise ConfigError(problems[0], file=file)
    return plans


def check_rule_points(points: Iterable[tuple[Hook, int]], leaving: Iterable[str] = (),
                      state_dir: Path | None = None) -> None:
    """Refuse declarative chains at a (hook, priority) a live hook function holds, except the
    chains in ``leaving`` (those of runners about to be stopped); with ``state_dir``, a BPF
    hook that ``up`` did not attach (``minifw run``'s) counts too."""
    try:
        chains = nft.items(nft.query("list chains"), "chain")
    except KernelError:
        return
    taken = plan.hook_points(chains, leaving) + _bpf_points(state_dir)
    problems = plan.clashes(plan.ruleset_points(points), taken)
    if problems:
        raise ConfigError(problems[0])


def _bpf_points(state_dir: Path | None) -> list[tuple[str, int, str]]:
    if state_dir is None:
        return []
    try:
        return kattach.unrecorded_points(Path(state_dir))
    except MinifwError as exc:  # the pins cannot be read: say so rather than guess
        raise StateError(f"cannot read the BPF hooks attached here: {exc}") from exc


def _nat_points(ruleset: Ruleset) -> list[tuple[str, int, str]]:
    return [(h.value, p, "the kernel's NAT ([[nat]] is configured; a hook function there sees "
             "the original or the translated address, whichever chain came first)")
            for h, p in nat_points(ruleset)]


def check_nat_points(ruleset: Ruleset, leaving: Iterable[str] = (),
                     state_dir: Path | None = None) -> None:
    """Refuse [[nat]] while a live hook function (one ``minifw run`` started, say) holds a
    priority where the kernel runs NAT, except the chains in ``leaving``; with ``state_dir``,
    a BPF hook that ``up`` did not attach counts too."""
    if not ruleset.nats:
        return
    try:
        chains = nft.items(nft.query("list chains"), "chain")
    except KernelError:
        return
    taken = plan.hook_points(chains, leaving) + _bpf_points(state_dir)
    problems = plan.clashes(taken, _nat_points(ruleset))
    if problems:
        raise ConfigError(problems[0])


def running(state_dir: Path) -> list[hookstate.RunnerRecord]:
    return [r for r in hookstate.records(state_dir) if r.alive]


@dataclasses.dataclass
class RunnerPlan:
    """What bringing the runners in line with a config's [[hook]] files takes.

    Make before break: a runner that restarts (its file changed, or ``--restart-hooks``) is
    not stopped first. Its successor binds queues of its own (other numbers, so other chain
    names) and, in ONE nf_tables transaction, deletes the old runner's chains and adds its
    own: each packet meets either the old hook or the new one, never neither. Only then does
    the old runner stop (it answers what it still holds). If the successor fails to start,
    the old runner simply goes on, and the failure is recorded for ``status``.
    """

    files: list[str]                 # the [[hook]] files the config asks for
    retire: list[hookstate.RunnerRecord]  # managed runners (live or dead) whose file left the config
    replace: dict[str, list[int]]    # file -> live managed runners its new runner takes over
    start: list[str]                 # files that get a new runner
    restart: list[str]               # of ``start``, files that had a runner (live or dead)
    restart_all: bool = False        # asked with ``--restart-hooks`` (the daemon plans again)
    # every [[hook]] file placed (kplace): ``apply`` attaches their kernel functions here;
    # ``files`` keeps only those with a function for the queue
    kernel: list[ModulePlan] = dataclasses.field(default_factory=list)

    @property
    def leaving_chains(self) -> list[str]:
        """Chains that go for good: those of retired runners. (A restarted hook keeps its
        (hook, priority); its successor takes it.)"""
        return [c for r in self.retire for c in r.chains]

    def describe(self) -> str:
        parts = []
        if self.restart:
            parts.append(f"restarted {len(self.restart)} hook runners")
        if len(self.start) > len(self.restart):
            parts.append(f"started {len(self.start) - len(self.restart)} hook runners")
        ended = sum(1 for r in self.retire if r.alive)
        if ended:
            parts.append(f"stopped {ended} hook runners")
        return ", ".join(parts)


def plan_runners(files: list[str], state_dir: Path, restart_all: bool = False,
                 placed_by_file: dict[str, ModulePlan] | None = None) -> RunnerPlan:
    """Runners that ``minifw up`` started (managed) are replaced when their file changed since
    they loaded it (all of them with ``restart_all``), and retired when their file left the
    config; every file without a live runner then starts. Runners of ``minifw run``
    (unmanaged) are never stopped here, and their files are not started a second time.
    A file whose functions all run in the kernel needs no runner. ``placed_by_file``:
    ``validate``'s plans (a file missing from it is placed here)."""
    placed, queued = [], []
    for f in files:
        try:
            plan_ = (placed_by_file or {}).get(f)
            if plan_ is None:
                plan_ = place(f)
            else:
                tell(plan_)
        except ConfigError:  # its runner fails to start the same way, said in status
            queued.append(f)
            continue
        placed.append(plan_)
        if plan_.queue_specs:
            queued.append(f)
    files = queued
    records = hookstate.records(state_dir)
    wanted = set(files)
    retire = [r for r in records if r.managed and r.file not in wanted]
    replace: dict[str, list[int]] = {}
    for r in records:
        if r.alive and r.managed and r.file in wanted and (
                restart_all or (r.digest is not None
                                and r.digest != hookstate.file_digest(r.file))):
            replace.setdefault(r.file, []).append(r.pid)
    replacing = {p for pids in replace.values() for p in pids}
    kept = {r.file for r in records if r.alive and r.pid not in replacing}
    start = [f for f in files if f not in kept]
    had = {r.file for r in records}
    return RunnerPlan(list(files), retire, replace, start, [f for f in start if f in had],
                      restart_all, placed)


def retire_commands(runner_plan: RunnerPlan, live_chains: Iterable[str]) -> list[dict[str, Any]]:
    """libnftables commands deleting the retired runners' chains: ``reload`` puts them in its
    ruleset transaction, so a rule chain taking their place comes in the same commit."""
    live = set(live_chains)
    gone = [c for c in runner_plan.leaving_chains if c in live]
    return plan.build_remove_json(gone)["nftables"] if gone else []


class Owner(Protocol):
    """The daemon's supervisor, in the daemon's own process."""

    state_dir: Path

    def apply(self, files: list[str], restart_all: bool) -> list[str]: ...

    def stop_all(self) -> int: ...

    def spawned(self, proc: subprocess.Popen, file: str) -> None: ...

    def applied(self) -> None: ...


_owner: Owner | None = None


def set_owner(owner: Owner | None) -> None:
    global _owner
    _owner = owner


def _local_owner(state_dir: Path) -> Owner | None:
    if _owner is not None and os.path.abspath(_owner.state_dir) == os.path.abspath(state_dir):
        return _owner
    return None


def apply(runner_plan: RunnerPlan, state_dir: Path) -> list[str]:
    """The kernel functions attached (here: links are pinned, whoever makes them), then
    ``apply_here`` by the runners' one owner: the daemon when it serves ``state_dir``."""
    failed = kattach.apply(runner_plan.kernel, state_dir, keep=runner_plan.files,
                           force=runner_plan.restart_all)
    return failed + _apply_runners(runner_plan, state_dir)


def _apply_runners(runner_plan: RunnerPlan, state_dir: Path) -> list[str]:
    owner = _local_owner(state_dir)
    if owner is not None:
        return owner.apply(runner_plan.files, runner_plan.restart_all)
    if client.daemon_running(state_dir):
        reply = client.request(state_dir, "runners.apply", files=runner_plan.files,
                               restart_all=runner_plan.restart_all)
        return [str(f) for f in reply.get("failed", [])]
    return apply_here(runner_plan, state_dir)


def applied(state_dir: Path) -> None:
    """Tell the daemon, if one serves ``state_dir``, that the ruleset changed (its plug-ins
    follow the applied ruleset). Best effort: a daemon that does not answer is its problem."""
    owner = _local_owner(state_dir)
    if owner is not None:
        owner.applied()
        return
    with contextlib.suppress(MinifwError):
        if client.daemon_running(state_dir):
            client.request(state_dir, "applied", timeout=10)


def apply_here(runner_plan: RunnerPlan, state_dir: Path) -> list[str]:
    """Retire, then start (each successor replacing its predecessor), then stop what was
    replaced. Returns one sentence per file whose runner did not start; each is also recorded
    for ``status``. Never raises for a runner that fails: the others still get their turn."""
    retired = [r.pid for r in runner_plan.retire]
    if retired:
        stop_pids(state_dir, retired)
    failed = []
    for file in runner_plan.start:
        old = runner_plan.replace.get(file, [])
        try:
            start(file, state_dir, replaces=old)
        except MinifwError as exc:
            problem = _start_failed(file, state_dir, old, exc)
            if problem:
                failed.append(problem)
                continue
        hookstate.clear_failure(state_dir, file)
        if old:
            stop_pids(state_dir, old)
    wanted = set(runner_plan.files)
    for rec in hookstate.failures(state_dir):
        if rec.file not in wanted:
            hookstate.clear_failure(state_dir, rec.file)
    hookstate.write_wanted(state_dir, runner_plan.files)
    return failed


def _start_failed(file: str, state_dir: Path, old: list[int], exc: MinifwError) -> str | None:
    """Record a failed start and say what it left; make sure a kept predecessor still has its
    chains. None: a restore brought the file's hooks back after all."""
    reason = str(exc).rstrip(".")
    kept = [p for p in old if hookstate.pid_alive(p)]
    if kept and not _chains_live(state_dir, kept):
        # the successor failed after its swap commit (and removed its chains on the way out):
        # the predecessor serves nothing now, so stop it and start the file afresh
        stop_pids(state_dir, kept)
        kept = []
        try:
            start(file, state_dir)
            return None
        except MinifwError as again:
            reason = str(again).rstrip(".")
    hookstate.write_failure(state_dir, file, reason, kept)
    if kept:
        return (f"{reason}; the previous runner (pid {', '.join(map(str, kept))}) keeps "
                "running the hook file as it was when it started")
    return f"{reason}; its hook functions are not running"


def _chains_live(state_dir: Path, pids: list[int]) -> bool:
    try:
        live = _live_chain_names()
    except MinifwError:
        return True  # cannot tell: do not stop a runner on a guess
    wanted = [c for r in hookstate.records(state_dir) if r.pid in pids for c in r.chains]
    return bool(wanted) and all(c in live for c in wanted)


def _live_chain_names() -> set[str]:
    return {c["name"] for c in nft.items(nft.query("list chains"), "chain")
            if c.get("table") == plan.TABLE and c.get("family") == plan.FAMILY}


def start(file: str, state_dir: Path, replaces: Iterable[int] = ()) -> dict[str, Any]:
    """Start a managed runner for ``file`` and wait until its chains are in (its record is
    written). ``replaces``: live runners whose chains its install transaction swaps out."""
    folder = hookstate.hooks_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    err_path = folder / f"start-{os.getpid()}-{time.monotonic_ns()}.err"
    argv = [sys.executable, "-m", "minifw.runners.runner", file, "--state-dir", str(state_dir)]
    for pid in replaces:
        argv += ["--replaces", str(pid)]
    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True, close_fds=True)
    if _owner is not None:  # the daemon keeps its children, for their exit status
        _owner.spawned(proc, file)
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
    those that do not stop and remove their chains for them. Returns how many were running.
    The daemon does it when it serves ``state_dir`` (see ``apply``). Kernel hook functions are
    detached and unpinned here."""
    kattach.clear(state_dir)
    owner = _local_owner(state_dir)
    if owner is not None:
        return owner.stop_all()
    if client.daemon_running(state_dir):
        return int(client.request(state_dir, "runners.stop").get("stopped", 0))
    return stop_pids(state_dir, None)


def forget(state_dir: Path) -> None:
    """``down``: no hook file is wanted any more, and past start failures are moot."""
    hookstate.forget_all(state_dir)


def stop_pids(state_dir: Path, pids: list[int] | None) -> int:
    """stop_all for the runners with these pids (None: every runner, and dead ones' records)."""
    recs = [r for r in hookstate.records(state_dir) if pids is None or r.pid in pids]
    for r in recs:
        if r.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGTERM)
    end = time.monotonic() + STOP_TIMEOUT
    pending = [r for r in recs if r.alive]
    while pending and time.monotonic() < end:
        time.sleep(0.05)
        pending = [r for r in pending if hookstate.pid_alive(r.pid)]
    for r in pending:
        _kill(r.pid)
    # `down` returns only once they are gone: SIGKILL is delivered, not yet done
    end = time.monotonic() + STOP_TIMEOUT
    while any(hookstate.pid_alive(r.pid) for r in pending) and time.monotonic() < end:
        time.sleep(0.01)
    leftovers = [r for r in recs if not r.alive or r in pending]
    if leftovers:
        with contextlib.suppress(MinifwError):
            live = _live_chain_names()
            chains = [c for r in leftovers for c in r.chains if c in live]
            if chains:
                nfnl.send_batch(plan.build_remove_batch(chains))
    for r in recs:
        if r.damaged:
            with contextlib.suppress(OSError):
                Path(r.path).unlink()
        else:
            hookstate.remove_record(state_dir, r.pid)
    return sum(1 for r in recs if r.alive)


def status(state_dir: Path) -> list[hookstate.HookStatus]:
    """One entry per hook function of every runner, with its queue settings from our state."""
    return [hookstate.HookStatus(queue=q, pid=r.pid, file=r.file, running=r.alive,
                                 managed=r.managed, backend=r.backend, log=r.log)
            for r in hookstate.records(state_dir) for q in r.queues]


def problems(state_dir: Path) -> list[hookstate.HookProblem]:
    """Every hook that is not running as the last ``up``/``reload`` (or ``minifw run``) asked,
    with why: a start that failed (and whether a previous runner was kept), or a runner that
    died (and what its chains, left in place, now do with packets)."""
    Problem = hookstate.HookProblem
    records = hookstate.records(state_dir)
    fails = {f.file: f for f in hookstate.failures(state_dir)}
    alive = {r.file for r in records if r.alive}
    out = []
    for file in dict.fromkeys([*hookstate.wanted(state_dir), *fails]):
        fail = fails.get(file)
        dead = [r for r in records if r.file == file and not r.alive]
        if file in alive:
            if fail:
                out.append(Problem(file, True, (), f"{fail.reason}; the previous runner keeps "
                                   "running the hook file as it was when it started"))
            continue
        reason = fail.reason if fail else "its runner is not running"
        out.append(Problem(file, False, tuple(q.function for r in dead for q in r.queues),
                           reason + _left(dead)))
    covered = {p.file for p in out}
    for r in records:
        if r.damaged:
            out.append(Problem(None, False, (),
                               f"runner record {r.damaged}: minifw cannot tell which runner or "
                               f"chains it stood for (pid {r.pid} is not signalled); 'minifw "
                               "reload --restart-hooks' or 'minifw down' replaces it"))
        elif not r.alive and r.file not in covered:
            out.append(Problem(r.file, False, tuple(q.function for q in r.queues),
                               f"its runner (pid {r.pid}) died; see {r.log}" + _left([r])))
    return out


def _left(dead: list[hookstate.RunnerRecord]) -> str:
    """What a dead runner's chains, still in the kernel, do with packets."""
    queues = [q for r in dead for q in r.queues]
    if not queues:
        return "; nothing of it is in the kernel"
    closed = [q.function for q in queues if q.fail == "closed"]
    if closed:
        return (f"; its fail-closed chains stay and drop what they queue ({', '.join(closed)})")
    return "; its fail-open chains stay and let packets pass unchecked"
