"""Failsafe start: ``up`` with minifw not loaded (as at boot) and a config that does not
validate, or that the kernel refuses, loads the last good ruleset instead, or nothing where
none exists, and fails with one line saying so. The state directory keeps the record
(store/lastgood.py) that ``status`` reports until a good ``up`` or ``reload``.

Only the declarative ruleset (rules, policies, sets from the set record) is loaded: the
[[hook]] runners of the last good ruleset are not started, since their Python files are read
from disk at start and may be the very thing that changed; ``status`` names them.
"""

from __future__ import annotations

import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

from ..errors import ConfigError, FailsafeError, KernelError, MinifwError, StateError
from ..model import Ruleset
from ..store import lastgood
from ..store.lastgood import Failsafe, LastGood
from ..store.state import State, Store
from .results.rules import FailsafeInfo


def stamp(when: float) -> str:
    """A record's time, ISO 8601 in UTC: the same in the error, in status and in --json."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def cause(exc: MinifwError) -> str:
    """The config's error as ``status`` repeats it."""
    if isinstance(exc, KernelError):
        return f"the kernel refused it: {exc}"
    return str(exc)


def fall_back(service: Any, path: str, error: ConfigError | KernelError) -> NoReturn:
    """Load the last good ruleset (one transaction, then its sets as a normal load sends them)
    in place of ``path``, which failed with ``error``; record the failsafe; raise
    FailsafeError saying what was loaded instead. The lock is held and minifw is not loaded.
    ``service``: the rules.Service running ``up`` (not imported: it imports this module)."""
    store = service.store
    since = time.time()
    try:
        good = lastgood.last_good(store)
        ruleset = None if good is None else Ruleset.from_toml(good.ruleset)
        unreadable = None
    except (StateError, ConfigError) as exc:
        good, ruleset, unreadable = None, None, str(exc)
    head = f"{error}; failsafe:"
    # the table is absent: a state.json from before a reboot that says up is stale, and a
    # refused load must be taken back, not applied again (settle_intent)
    store.save(State(loaded=False, config=path))
    if good is None or ruleset is None:
        record = Failsafe(since=since, config=path, error=cause(error), load_error=unreadable)
        lastgood.record_failsafe(store, record)
        why = (f"the last good ruleset cannot be used ({unreadable})" if unreadable
               else "no last good ruleset exists")
        raise FailsafeError(f"{head} {why}, so nothing was loaded: minifw filters nothing "
                            "here", loaded=False) from error
    record = Failsafe(since=since, config=path, error=cause(error), last_good=good, loaded=True)
    lastgood.record_failsafe(store, record)  # before the load: a kill leaves it said, not silent
    new = State(loaded=True, config=path, ruleset=good.ruleset)
    try:
        with service._intending("load", new) as txn:
            service._load(ruleset, txn=txn)
    except (ConfigError, KernelError) as exc:
        if service.kernel.exists():  # the rules went in, a set did not: say so, as up would
            raise FailsafeError(f"{head} the last good ruleset from {stamp(good.when)} was "
                                f"loaded, but not all its sets: {exc}", loaded=True) from error
        lastgood.record_failsafe(store, Failsafe(since=since, config=path, error=cause(error),
                                                 last_good=good, load_error=str(exc)))
        raise FailsafeError(f"{head} the last good ruleset from {stamp(good.when)} was refused "
                            f"too ({exc}), so nothing was loaded: minifw filters nothing here",
                            loaded=False) from error
    store.commit(new)
    raise FailsafeError(f"{head} loaded the last good ruleset from {stamp(good.when)} instead "
                        f"({good.rules} rules from {good.config}"
                        + _hooks_left(good) + "); see 'minifw status'", loaded=True) from error


def info(store: Store, loaded: bool) -> FailsafeInfo | None:
    """The failsafe record for ``status`` (``loaded``: minifw's table is in force)."""
    record = lastgood.failsafe(store)
    if record is None:
        return None
    good = record.last_good
    return FailsafeInfo(
        since=stamp(record.since), config=record.config, error=record.error,
        running=record.loaded and loaded,
        last_good_at=None if good is None else stamp(good.when),
        last_good_config=None if good is None else good.config,
        last_good_rules=None if good is None else good.rules, load_error=record.load_error,
        hook_files_not_started=good.hook_files if good is not None and record.loaded else ())


def _hooks_left(good: LastGood) -> str:
    n = len(good.hook_files)
    return f"; its {n} hook file{'s' if n != 1 else ''} not started" if n else ""
