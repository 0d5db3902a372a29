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
