"""Supervision of the hook runners: the daemon's children, restarted with backoff when they die.

The daemon is the runners' one owner (runners/supervise.py hands it every start and stop). A
runner that dies keeps its chains in the kernel until its successor's install transaction
swaps them for its own, so fail-open and fail-closed keep their meaning meanwhile. Each
[[hook]] file has a slot:

- ``running``: its runner is alive;
- ``restarting``: it died; the next start is due after the backoff;
- ``failed``: the last start did not come up; it is tried again after the backoff.

The backoff doubles from 1 s to 30 s with each death or failed start in a row, and starts over
once a runner has stayed up for STABLE seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import MinifwError
from ..runners import hookstate, supervise

log = logging.getLogger("minifw.daemon")

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE = 30.0
TICK = 0.1


def backoff(failures: int) -> float:
    """Seconds before the next start after ``failures`` deaths or failed starts in a row
    (1, 2, 4 ... 30)."""
    if failures < 1:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** min(failures - 1, 16))


def exit_reason(returncode: int | None) -> str:
    """A runner's end, said from its exit status (None: not our child, so not known)."""
    if returncode is None:
        return "it exited (not a child of this daemon: its exit status is unknown)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


@dataclasses.dataclass
class Slot:
    """One [[hook]] file under supervision."""

    file: str
    state: str = "running"
    pid: int | None = None
    started: float | None = None      # wall clock, for uptime
    restarts: int = 0                 # starts by the supervisor after a death
    failures: int = 0                 # deaths or failed starts in a row (the backoff's count)
    due: float = 0.0                  # monotonic time of the next start
    last_exit: str | None = None

    def to_json(self, stats: dict[str, Any] | None) -> dict[str, Any]:
        now = time.time()
        up = self.state == "running" and self.started is not None
        return {"file": self.file, "state": self.state, "pid": self.pid,
                "uptime": round(now - self.started, 3) if up else None,
                "restarts": self.restarts, "last_exit": self.last_exit,
                "next_start_in": (round(max(0.0, self.due - time.monotonic()), 3)
                                  if self.state != "running" else None),
                "packets": (stats or {}).get("packets"), "drops": (stats or {}).get("drops"),
                "errors": (stats or {}).get("errors")}


class Supervisor:
    """The runners' owner in the daemon (runners.supervise.Owner)."""

    def __init__(self, state_dir: Path, on_change: Callable[[], None] | None = None):
        self.state_dir = Path(state_dir)
        self.slots: dict[str, Slot] = {}
        self.children: dict[int, subprocess.Popen] = {}
        self.on_applied = on_change
        self._lock = threading.RLock()   # one start or stop at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the Owner interface (runners.supervise) --------------------------------------------
    def apply(self, files: list[str], restart_all: bool) -> list[str]:
        with self._lock:
            runner_plan = supervise.plan_runners(files, self.state_dir, restart_all)
            failed = supervise.apply_here(runner_plan, self.state_dir)
            self._adopt(files)
            return failed

    def stop_all(self) -> int:
        with self._lock:
            self.slots.clear()
            stopped = supervise.stop_pids(self.state_dir, None)
            self._reap()
            return stopped

    def spawned(self, proc: subprocess.Popen, file: str) -> None:
        self.children[proc.pid] = proc

    def applied(self) -> None:
        if self.on_applied is not None:
            self.on_applied()

    # ---- supervision --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def status(self) -> list[dict[str, Any]]:
        slots = list(self.slots.values())
        return [s.to_json(_stats(self.state_dir, s.pid)) for s in slots]

    def _adopt(self, files: list[str]) -> None:
        """Slots for exactly ``files``, each on its live managed runner (started by us or, at
        the daemon's start, by a command run before it)."""
        live = {r.file: r for r in hookstate.records(self.state_dir) if r.alive and r.managed}
        why = {f.file: f.reason for f in hookstate.failures(self.state_dir)}
        slots = {}
        for file in files:
            slot = self.slots.get(file) or Slot(file)
            rec = live.get(file)
            if rec is not None:
                if slot.pid != rec.pid:
                    slot.pid, slot.started = rec.pid, rec.started or time.time()
                slot.state = "running"
            elif slot.state == "running":  # its start failed just now
                self._failed(slot, why.get(file, "its runner did not start"))
            slots[file] = slot
        self.slots = slots

    def _loop(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick()
            except Exception:  # noqa: BLE001  supervision goes on whatever one pass met
                log.exception("supervision pass failed")

    def tick(self) -> None:
        with self._lock:
            self._reap()
            now = time.monotonic()
            for slot in list(self.slots.values()):
                if self._stop.is_set():
                    return
                if slot.state == "running" and slot.pid and not hookstate.pid_alive(slot.pid):
                    self._died(slot)
                elif slot.state != "running" and now >= slot.due:
                    self._restart(slot)

    def _died(self, slot: Slot) -> None:
        proc = self.children.pop(slot.pid, None) if slot.pid else None
        code = proc.wait() if proc is not None else None
        ran = time.time() - slot.started if slot.started else 0.0
        if ran >= STABLE:
            slot.failures = 0
        slot.failures += 1
        slot.last_exit = exit_reason(code)
        slot.state = "restarting"
        slot.due = time.monotonic() + backoff(slot.failures)
        log.warning("hook runner %s (pid %s) for %s; restarting in %g s", slot.last_exit,
                    slot.pid, slot.file, backoff(slot.failures))

    def _restart(self, slot: Slot) -> None:
        try:
            started = supervise.start(slot.file, self.state_dir)
        except MinifwError as exc:
            self._failed(slot, str(exc))
            hookstate.write_failure(self.state_dir, slot.file, str(exc), [])
            return
        hookstate.clear_failure(self.state_dir, slot.file)
        slot.pid, slot.started = started["pid"], time.time()
        slot.state = "running"
        slot.restarts += 1
        log.info("hook runner for %s restarted (pid %d, restart #%d)", slot.file, slot.pid,
                 slot.restarts)

    def _failed(self, slot: Slot, reason: str) -> None:
        slot.failures += 1
        slot.state = "failed"
        slot.last_exit = reason
        slot.pid = None
        slot.due = time.monotonic() + backoff(slot.failures)
        log.error("hook runner for %s failed: %s; next start in %g s", slot.file, reason,
                  backoff(slot.failures))

    def _reap(self) -> None:
        """Collect children that ended outside supervision (stopped, replaced)."""
        watched = {s.pid for s in self.slots.values()}
        for pid, proc in list(self.children.items()):
            if pid not in watched and proc.poll() is not None:
                del self.children[pid]


def _stats(state_dir: Path, pid: int | None) -> dict[str, Any] | None:
    """The counts a runner reports (runners/hookstate.py ``read_stats``)."""
    if pid is None:
        return None
    return hookstate.read_stats(state_dir, pid)

