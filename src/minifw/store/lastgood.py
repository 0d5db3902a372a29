"""The last good ruleset and the failsafe record, both in the state directory.

``lastgood.json``: the last ruleset the kernel took from ``up``, ``reload``, ``add`` or
``delete`` (its TOML form, the config it came from, when, and the [[hook]] files it had). It
outlives ``down`` and reboots: ``up`` at boot loads it when the config is broken (failsafe).

A change put on a timer (``--confirm``) is not good yet: call ``remember_good`` for it only once
it is confirmed. A rolled-back change never calls it.

``failsafe.json``: that ``up`` fell back, why, and what it loaded instead (possibly nothing).
A later good ``up`` or ``reload`` removes it, and so does ``down``.

Both are written atomically (a temporary file renamed), like state.json.
"""

from __future__ import annotations

import dataclasses
import json
import time
TYPE_CHECKING = False  # typing loads for type checkers only
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping

from ..errors import NEED_ROOT, StateError
from .state import Store, write_atomic

LAST_GOOD = "lastgood.json"
FAILSAFE = "failsafe.json"
REWRITE = "a good 'minifw up --config FILE' or 'minifw reload' rewrites it"


@dataclasses.dataclass(frozen=True)
class LastGood:
    ruleset: dict[str, Any]         # the ruleset's TOML form, as state.json holds it
    config: str | None              # the config it was loaded from
    when: float                     # Unix time it was applied (or confirmed)
    hook_files: tuple[str, ...] = ()

    @property
    def rules(self) -> int:
        return len(self.ruleset.get("rule", ()))


@dataclasses.dataclass(frozen=True)
class Failsafe:
    """``up`` could not load ``config`` (``error``) with minifw not loaded, at ``since``.
    ``last_good``: what it loaded instead, or None when there was none (or it was unreadable:
    ``load_error`` says why). ``loaded``: the last good ruleset is in the kernel."""

    since: float
    config: str
    error: str
    last_good: LastGood | None = None
    loaded: bool = False
    load_error: str | None = None


def remember_good(store: Store, ruleset: Mapping[str, Any], config: str | None,
                  when: float | None = None, hook_files: Iterable[str] = ()) -> None:
    """Save ``ruleset`` (a Ruleset's TOML form) as the last good one: call it only after the
    kernel took the change and the state says so, and for a change on a timer only at its
    confirmation."""
    store._ensure()
    data = {"ruleset": dict(ruleset), "config": config,
            "when": time.time() if when is None else when, "hook_files": list(hook_files)}
    write_atomic(store.dir / LAST_GOOD, json.dumps(data, separators=(",", ":")) + "\n")


def last_good(store: Store) -> LastGood | None:
    """The last good ruleset, or None if none was saved; StateError (one line) if damaged."""
    data = _read(store, LAST_GOOD, "the last good ruleset")
    if data is _MISSING:
        return None
    try:
        return _last_good_from(data)
    except ValueError as exc:
        raise StateError(f"{store.dir / LAST_GOOD} (the last good ruleset) is damaged: "
                         f"{exc}; {REWRITE}") from None


def record_failsafe(store: Store, failsafe: Failsafe) -> None:
    store._ensure()
    data = dataclasses.asdict(failsafe)
    write_atomic(store.dir / FAILSAFE, json.dumps(data, separators=(",", ":")) + "\n")


def failsafe(store: Store) -> Failsafe | None:
    """The failsafe ``up`` fell into, or None; StateError (one line) if the record is damaged."""
    data = _read(store, FAILSAFE, "the failsafe record")
    if data is _MISSING:
        return None
    try:
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        since, config, error = data.get("since"), data.get("config"), data.get("error")
        loaded, load_error = data.get("loaded", False), data.get("load_error")
        if not _number(since) or not isinstance(config, str) or not isinstance(error, str) \
                or not isinstance(loaded, bool) \
                or not (load_error is None or isinstance(load_error, str)):
            raise ValueError("it has the wrong shape")
        good = data.get("last_good")
        return Failsafe(since=since, config=config, error=error,
                        last_good=None if good is None else _last_good_from(good),
                        loaded=loaded, load_error=load_error)
    except ValueError as exc:
        raise StateError(f"{store.dir / FAILSAFE} (the failsafe record) is damaged: {exc}; "
                         f"{REWRITE}") from None


def clear_failsafe(store: Store) -> None:
    path = store.dir / FAILSAFE
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(f"cannot remove {path}: {exc.strerror or exc}") from exc


_MISSING = object()


def _read(store: Store, name: str, what: str) -> Any:
    """The parsed JSON of a file, or _MISSING; StateError if it cannot be read or parsed."""
    path = store.dir / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return _MISSING
    except PermissionError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}; {NEED_ROOT}") from exc
    except (OSError, ValueError, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
            "nested too deeply" if isinstance(exc, RecursionError) else f"it is not JSON ({exc})")
        raise StateError(f"cannot read {path} ({what}): {why}; {REWRITE}") from None


def _number(value: Any) -> bool:
    """A Unix time that formats: not a bool, not NaN or infinite, not before 1970 or past 5138."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 <= value < 1e11)


def _last_good_from(data: Any) -> LastGood:
    """A LastGood from parsed JSON; ValueError saying what is wrong. Pure."""
    if not isinstance(data, dict):
        raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
    ruleset, config, when = data.get("ruleset"), data.get("config"), data.get("when")
    hooks = data.get("hook_files", [])
    if not isinstance(ruleset, dict):
        raise ValueError("its 'ruleset' is not an object")
    if not isinstance(ruleset.get("rule", []), list):
        raise ValueError("its 'ruleset.rule' is not a list")
    if config is not None and not isinstance(config, str):
        raise ValueError("its 'config' is not a file name")
    if not _number(when):
        raise ValueError("its 'when' is not a time")
    if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
        raise ValueError("its 'hook_files' is not a list of file names")
    return LastGood(ruleset=ruleset, config=config, when=when, hook_files=tuple(hooks))
