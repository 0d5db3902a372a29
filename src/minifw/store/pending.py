"""A change applied with ``--confirm SECONDS``: what a rollback restores, on disk.

``pending.json`` in the state directory holds, until ``minifw confirm`` or a rollback:

- ``op``, ``seconds``, ``started``, ``deadline`` (wall-clock epoch seconds: the deadline must
  survive a reboot, so no monotonic clock);
- ``state_before``: state.json's exact text before the change (None: there was none), from
  whose ruleset model a rollback rebuilds the old ruleset (an ``nft -j`` snapshot cannot be fed
  back: the hook chains' xtables rules are refused by the JSON parser);
- ``config`` and ``config_new``: for add/delete, the config file and its new text, written to
  the file only at ``confirm`` (so a rollback leaves the file untouched);
- ``config_sha``: for up/reload, the SHA-256 of the config text that was loaded;
- ``sets``: per-element set diffs (what each touched element was before), so a ban or an
  import rolls back element by element, never with a set flush;
- ``hooks``: for up/reload/add/delete, the [[hook]] files whose runners were wanted before
  (None: not recorded), so a rollback brings the runners back in line too;
- ``timer``: the pid of the process that rolls back at the deadline.

``rolledback.json`` says what was last rolled back, when and why, for ``status``.

Written through a rename, so a kill leaves the old file or the new one; anything else (a
truncated or foreign file) is reported as damage, in one sentence.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from ..errors import NEED_ROOT, StateError
from .state import write_atomic

FORMAT = "minifw-pending 1"
OPS = ("up", "reload", "add", "delete", "ban", "unban", "import")
PENDING = "pending.json"
ROLLED_BACK = "rolledback.json"
FIX = ("remove it to keep the change as it is now, or restore the previous config with "
       "'minifw reload --config FILE'")


@dataclasses.dataclass
class SetDiff:
    """One set change under confirmation: ``before`` maps each element it touched to the
    (expiry, origin) it had (None: it was absent)."""

    set: str
    op: str
    before: dict[str, tuple[int, int] | None]

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "op": self.op,
                "before": [[e, list(v) if v else None] for e, v in self.before.items()]}


@dataclasses.dataclass
class Pending:
    id: str
    op: str
    seconds: int
    started: float
    deadline: float
    state_before: str | None = None
    config: str | None = None
    config_new: str | None = None
    config_sha: str | None = None
    sets: list[SetDiff] = dataclasses.field(default_factory=list)
    hooks: list[str] | None = None
    timer: int | None = None

    def left(self, at: float) -> float:
        return self.deadline - at

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "id": self.id, "op": self.op, "seconds": self.seconds,
                "started": self.started, "deadline": self.deadline,
                "state_before": self.state_before, "config": self.config,
                "config_new": self.config_new, "config_sha": self.config_sha,
                "sets": [d.to_json() for d in self.sets], "hooks": self.hooks,
                "timer": self.timer}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def pending_from_json(data: Any) -> Pending:
    """A Pending from the parsed JSON; ValueError saying what is wrong. Pure."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("it is not a minifw pending change")
    if data.get("op") not in OPS:
        raise ValueError("its 'op' is not a change minifw can confirm")
    if not isinstance(data.get("id"), str):
        raise ValueError("its 'id' is missing")
    seconds = data.get("seconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 1:
        raise ValueError("its 'seconds' is not a whole number of seconds")
    if not (_number(data.get("started")) and _number(data.get("deadline"))):
        raise ValueError("its 'started' or 'deadline' is not a time")
    for key in ("state_before", "config", "config_new", "config_sha"):
        if not _text_or_none(data.get(key)):
            raise ValueError(f"its '{key}' is not text")
    hooks = data.get("hooks")
    if hooks is not None and not (isinstance(hooks, list)
                                  and all(isinstance(h, str) for h in hooks)):
        raise ValueError("its 'hooks' is not a list of files")
    timer = data.get("timer")
    if timer is not None and (not isinstance(timer, int) or isinstance(timer, bool)):
        raise ValueError("its 'timer' is not a process id")
    diffs = []
    raw = data.get("sets", [])
    if not isinstance(raw, list):
        raise ValueError("its 'sets' is not a list")
    for entry in raw:
        if not (isinstance(entry, dict) and isinstance(entry.get("set"), str)
                and entry.get("op") in ("ban", "unban", "import")
                and isinstance(entry.get("before"), list)):
            raise ValueError("a set diff has the wrong shape")
        before: dict[str, tuple[int, int] | None] = {}
        for item in entry["before"]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and (item[1] is None or (isinstance(item[1], list) and len(item[1]) == 2
                                             and all(isinstance(v, int) for v in item[1])))):
                raise ValueError("a set diff's element has the wrong shape")
            before[item[0]] = tuple(item[1]) if item[1] else None
        diffs.append(SetDiff(entry["set"], entry["op"], before))
    return Pending(id=data["id"], op=data["op"], seconds=seconds, started=data["started"],
                   deadline=data["deadline"], state_before=data.get("state_before"),
                   config=data.get("config"), config_new=data.get("config_new"),
                   config_sha=data.get("config_sha"), sets=diffs, hooks=hooks, timer=timer)


def decode(text: str | bytes) -> Pending:
    """Parse pending.json's text; ValueError (truncated, not JSON, wrong shape)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"it is not JSON ({exc.__class__.__name__}: {exc})") from None
    return pending_from_json(data)


def encode(pending: Pending) -> str:
    return json.dumps(pending.to_json(), separators=(",", ":")) + "\n"


def path_of(state_dir: Path) -> Path:
    return Path(state_dir) / PENDING


def exists(state_dir: Path) -> bool:
    return os.path.lexists(path_of(state_dir))


def read(state_dir: Path) -> Pending | None:
    """The pending change, or None; StateError in one sentence for a damaged file."""
    path = path_of(state_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise StateError(f"{path} is a directory, not minifw's pending change; move it "
                         "away") from None
    except PermissionError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}; {NEED_ROOT}") from exc
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return decode(raw)
    except ValueError as exc:
        raise StateError(f"{path} (a change waiting for 'minifw confirm') is damaged: {exc}; "
                         f"{FIX}") from None


def write(state_dir: Path, pending: Pending) -> None:
    write_atomic(path_of(state_dir), encode(pending))


def clear(state_dir: Path) -> None:
    try:
        path_of(state_dir).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(f"cannot remove {path_of(state_dir)}: {exc.strerror}") from exc


# ---- the last rollback, for status -----------------------------------------------------------

def write_rolled_back(state_dir: Path, op: str, at: float, why: str,
                      config: str | None, config_sha: str | None) -> None:
    write_atomic(Path(state_dir) / ROLLED_BACK,
                 json.dumps({"op": op, "at": at, "why": why, "config": config,
                             "config_sha": config_sha}) + "\n")


def read_rolled_back(state_dir: Path) -> dict[str, Any] | None:
    """What was last rolled back ({op, at, why, config, config_sha}), or None (a damaged
    record says nothing: it is informative only)."""
    try:
        data = json.loads((Path(state_dir) / ROLLED_BACK).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("op"), str) and _number(data.get("at"))
            and isinstance(data.get("why"), str)):
        return None
    return data
