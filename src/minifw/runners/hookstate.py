"""Hook runners' records in the state directory: ``<state-dir>/hooks/runner-<pid>.json``.

The kernel listing shows the xtables NFQUEUE rule without its queue number or flags, so these
records are where ``status`` reads them from, and how a restarted runner finds the chains a
killed one left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import StateError
from ..model.types import Hook, HookPoint
from ..store.state import write_atomic


@dataclasses.dataclass(frozen=True)
class QueueRecord:
    """One hook function of a runner: its queue, chain and settings (``Placement.to_state``)."""

    function: str
    hook: str
    priority: int
    queue: int
    chain: str
    flow_chain: str | None = None
    fail: str = "open"
    on_error: str = "accept"
    per_flow: bool = False
    flow_mark: int | None = None
    payload: bool = False
    bypass: bool = False

    @property
    def point(self) -> HookPoint:
        return HookPoint(Hook(self.hook), self.priority)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "QueueRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunnerRecord:
    """A hook runner's record. ``alive`` comes from the process table when it is read; a
    record that could not be read is ``damaged`` (why), with the pid its file name gives."""

    pid: int
    file: str | None
    queues: tuple[QueueRecord, ...] = ()
    managed: bool = False
    digest: str | None = None
    started: float | None = None
    backend: str | None = None
    conntrack: bool = False
    log: str | None = None
    alive: bool = False
    damaged: str | None = None
    path: str | None = None

    @property
    def chains(self) -> list[str]:
        names = []
        for q in self.queues:
            names.append(q.chain)
            if q.flow_chain:
                names.append(q.flow_chain)
        return names

    @classmethod
    def from_json(cls, data: dict[str, Any], alive: bool = False) -> "RunnerRecord":
        return cls(pid=data["pid"], file=data["file"], managed=bool(data.get("managed", False)),
                   digest=data.get("digest"), started=data.get("started"),
                   backend=data.get("backend"), conntrack=bool(data.get("conntrack", False)),
                   log=data.get("log"),
                   queues=tuple(QueueRecord.from_json(q) for q in data.get("queues", [])),
                   alive=alive)

    def to_json(self) -> dict[str, Any]:
        """The record file's content (``alive`` and ``damaged`` are never stored)."""
        return {"pid": self.pid, "file": self.file, "managed": self.managed,
                "digest": self.digest, "started": self.started, "backend": self.backend,
                "conntrack": self.conntrack, "log": self.log,
                "queues": [q.to_json() for q in self.queues]}


@dataclasses.dataclass(frozen=True)
class HookStatus:
    """One hook function of a runner, for ``status``."""

    queue: QueueRecord
    pid: int
    file: str | None
    running: bool
    managed: bool
    backend: str | None
    log: str | None

    def to_json(self) -> dict[str, Any]:
        return {**self.queue.to_json(), "pid": self.pid, "file": self.file,
                "running": self.running, "managed": self.managed, "backend": self.backend,
                "log": self.log}


@dataclasses.dataclass(frozen=True)
class HookProblem:
    """A hook not running as asked, and why. ``file`` is None for a damaged runner record."""

    file: str | None
    running: bool
    functions: tuple[str, ...]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "running": self.running, "functions": list(self.functions),
                "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class StartFailure:
    """The last start of a [[hook]] file that failed, and the runners kept instead."""

    file: str
    reason: str
    time: float | None = None
    kept: tuple[int, ...] = ()


def hooks_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "hooks"


def made_hooks_dir(state_dir: Path) -> Path:
    """The runners' folder, created if missing; a file or a broken path in its way is said as
    a StateError naming it."""
    folder = hooks_dir(state_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise StateError(f"cannot create {folder}: {exc.strerror or exc}; move whatever is in "
                         "its way") from exc
    return folder


def record_path(state_dir: Path, pid: int) -> Path:
    return hooks_dir(state_dir) / f"runner-{pid}.json"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is dead for our purposes
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def file_digest(file: str) -> str | None:
    """What a runner's code is judged by on reload: the hook file's bytes (modules it imports
    are not looked at; ``reload --restart-hooks`` restarts every runner)."""
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError:
        return None


def write_record(state_dir: Path, record: RunnerRecord) -> Path:
    path = record_path(state_dir, record.pid)
    made_hooks_dir(state_dir)
    write_atomic(path, json.dumps(record.to_json(), indent=1) + "\n")
    return path


def remove_record(state_dir: Path, pid: int) -> None:
    for path in (record_path(state_dir, pid), stats_path(state_dir, pid)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ---- a live runner's counts: ``runner-<pid>.stats`` (JSON), rewritten every STATS_EVERY s ----
STATS_EVERY = 1.0
STATS_KEYS = ("packets", "drops", "errors")


def stats_path(state_dir: Path, pid: int) -> Path:
    return hooks_dir(state_dir) / f"runner-{pid}.stats"


def write_stats(state_dir: Path, pid: int, counts: dict[str, int]) -> None:
    write_atomic(stats_path(state_dir, pid),
                 json.dumps({k: int(counts.get(k, 0)) for k in STATS_KEYS}) + "\n")


def read_stats(state_dir: Path, pid: int) -> dict[str, int] | None:
    """A runner's last reported packets, drops and errors (None: none reported, or unreadable)."""
    try:
        data = json.loads(stats_path(state_dir, pid).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    counts = {k: data.get(k) for k in STATS_KEYS}
    if any(not isinstance(v, int) or isinstance(v, bool) for v in counts.values()):
        return None
    return counts  # type: ignore[return-value]


def records(state_dir: Path) -> list[RunnerRecord]:
    """Every runner record, each with ``alive`` set from the process table.

    A record that cannot be read or has the wrong shape is kept as ``damaged`` (with the pid
    its file name gives, no file and no queues): it is reported, never signalled (the pid may
    belong to another process by now), and never silently skipped."""
    out = []
    folder = hooks_dir(state_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("runner-*.json")):
        stem = path.name[len("runner-"):-len(".json")]
        pid = int(stem) if stem.isascii() and stem.isdigit() else 0
        try:
            rec = json.loads(path.read_text())
            problem = record_problem(rec, pid)
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({exc.__class__.__name__})"
        if problem:
            out.append(RunnerRecord(pid=pid, file=None, damaged=f"{path} is {problem}",
                                    path=str(path), log=str(folder / f"runner-{pid}.log")))
            continue
        out.append(RunnerRecord.from_json(rec, alive=pid_alive(pid)))
    return out


_QUEUE_FIELDS = {"chain": str, "function": str, "queue": int, "hook": str, "priority": int}


def record_problem(rec: Any, pid: int) -> str | None:
    """What is wrong with a runner record's shape, or None. Pure: the caller reads the file."""
    if not isinstance(rec, dict):
        return f"not a JSON object but {type(rec).__name__}"
    if pid <= 0 or rec.get("pid") != pid or isinstance(rec.get("pid"), bool):
        return f"not the record of pid {pid}"
    if not isinstance(rec.get("file"), str):
        return "missing its hook file"
    queues = rec.get("queues")
    if not isinstance(queues, list):
        return "missing its queues"
    for q in queues:
        if not isinstance(q, dict) or any(
                not isinstance(q.get(k), t) or isinstance(q.get(k), bool)
                for k, t in _QUEUE_FIELDS.items()):
            return "holding a queue entry of the wrong shape"
        if q.get("flow_chain") is not None and not isinstance(q["flow_chain"], str):
            return "holding a queue entry of the wrong shape"
    return None


# ---- what should run, and why something does not -------------------------------------------
# ``wanted.json`` lists the [[hook]] files the last ``up``/``reload`` asked for; a
# ``failed-<digest>.json`` per file keeps the last start that failed (and which runner, if any,
# was kept running instead). ``status`` reads both, so a hook that is not running as configured
# is never silent.

def _failure_path(state_dir: Path, file: str) -> Path:
    name = hashlib.sha256(file.encode(errors="surrogateescape")).hexdigest()[:16]
    return hooks_dir(state_dir) / f"failed-{name}.json"


def write_failure(state_dir: Path, file: str, reason: str, kept: list[int]) -> None:
    path = _failure_path(state_dir, file)
    made_hooks_dir(state_dir)
    write_atomic(path, json.dumps({"file": file, "reason": reason, "time": time.time(),
                                   "kept": kept}, indent=1) + "\n")


def clear_failure(state_dir: Path, file: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _failure_path(state_dir, file).unlink()


def failures(state_dir: Path) -> list[StartFailure]:
    folder = hooks_dir(state_dir)
    out = []
    for path in sorted(folder.glob("failed-*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("file"), str):
            kept = rec.get("kept")
            out.append(StartFailure(
                file=rec["file"], reason=str(rec.get("reason", "")), time=rec.get("time"),
                kept=tuple(p for p in kept if isinstance(p, int)) if isinstance(kept, list)
                else ()))
    return out


def write_wanted(state_dir: Path, files: list[str]) -> None:
    path = hooks_dir(state_dir) / "wanted.json"
    made_hooks_dir(state_dir)
    write_atomic(path, json.dumps({"files": list(files)}, indent=1) + "\n")


def wanted(state_dir: Path) -> list[str]:
    try:
        data = json.loads((hooks_dir(state_dir) / "wanted.json").read_text())
    except (OSError, ValueError):
        return []
    files = data.get("files") if isinstance(data, dict) else None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def forget_all(state_dir: Path) -> None:
    """``down``: nothing is wanted any more, and old failures no longer matter."""
    folder = hooks_dir(state_dir)
    if folder.exists() and not folder.is_dir():
        raise StateError(f"{folder} is not a directory; move it away (it holds no state)")
    with contextlib.suppress(FileNotFoundError):
        (folder / "wanted.json").unlink()
    for path in folder.glob("failed-*.json") if folder.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
