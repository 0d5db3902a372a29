"""Hook runners' records in the state directory: ``<state-dir>/hooks/runner-<pid>.json``.

The kernel listing shows the xtables NFQUEUE rule without its queue number or flags, so these
records are where ``status`` reads them from, and how a restarted runner finds the chains a
killed one left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..state import write_atomic


def hooks_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "hooks"


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


def write_record(state_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(state_dir, record["pid"])
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    write_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def remove_record(state_dir: Path, pid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_path(state_dir, pid).unlink()


def records(state_dir: Path) -> list[dict[str, Any]]:
    """Every runner record, each with ``alive`` set from the process table."""
    out = []
    folder = hooks_dir(state_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("runner-*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rec["alive"] = pid_alive(int(rec.get("pid", 0)))
        out.append(rec)
    return out


def chains_of(record: dict[str, Any]) -> list[str]:
    names = []
    for q in record.get("queues", []):
        names.append(q["chain"])
        if q.get("flow_chain"):
            names.append(q["flow_chain"])
    return names


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
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    write_atomic(path, json.dumps({"file": file, "reason": reason, "time": time.time(),
                                   "kept": kept}, indent=1) + "\n")


def clear_failure(state_dir: Path, file: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _failure_path(state_dir, file).unlink()


def failures(state_dir: Path) -> list[dict[str, Any]]:
    folder = hooks_dir(state_dir)
    out = []
    for path in sorted(folder.glob("failed-*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("file"), str):
            out.append(rec)
    return out


def write_wanted(state_dir: Path, files: list[str]) -> None:
    path = hooks_dir(state_dir) / "wanted.json"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
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
    with contextlib.suppress(FileNotFoundError):
        (hooks_dir(state_dir) / "wanted.json").unlink()
    folder = hooks_dir(state_dir)
    for path in folder.glob("failed-*.json") if folder.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
