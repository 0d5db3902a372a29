"""Confirm or roll back: a change applied with ``--confirm SECONDS`` is undone unless
``minifw confirm`` runs in time.

The pending change lives in the state directory (``store.pending``), never only in memory, and
three things undo it once its deadline has passed, whichever comes first:

- a timer process started with its own session (``app.pending_timer``): it outlives the CLI
  and the SSH session whose loss a lockout causes (SIGHUP ignored, its own process group, so
  a kill of the CLI's group misses it);
- the next writer of this state directory (``gate``), ``up`` at boot included: a reboot or a
  crash while a change is pending never makes it permanent;
- ``minifw rollback``, at once.

A rollback rebuilds the old ruleset from the saved model (state.json's text from before the
change, compiled as a load does: ONE transaction), puts the named sets back element by element
(never with a flush), and writes state.json back byte for byte. The config file is written only
at ``confirm``, so a rollback leaves it as it was.

This module does not import the set operations (``app.sets`` calls in here); the callers hand
their ``SetService`` in.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

from ..errors import ConfigError, MinifwError, StateError
from ..kernel import kmsg, seam
from ..store import pending as record
from ..store.pending import Pending, SetDiff
from ..store.setrecord import RUNTIME, now
from ..store.state import REDERIVE, State, Store, state_from_json, write_atomic

RULESET_OPS = ("up", "reload", "add", "delete")
TIMER_MODULE = "minifw.app.pending_timer"


def config_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}") from exc


def spawn_timer(state_dir: Path, ident: str) -> int:
    """Start the rollback timer in a session of its own (detached from the terminal and the
    CLI's process group, so neither a hangup nor a kill of that group reaches it). While a
    daemon serves the state directory, it runs the timer (and re-arms it if restarted); the
    pid is then the daemon's."""
    import subprocess
    import sys
    from ..control import client
    if client.daemon_running(state_dir):
        try:
            return int(client.request(state_dir, "pending.arm", id=ident, timeout=10)["pid"])
        except (MinifwError, KeyError, TypeError, ValueError):
            pass  # the daemon did not take it: a timer process of its own, as without one
    proc = subprocess.Popen([sys.executable, "-m", TIMER_MODULE, str(Path(state_dir).resolve()),
                             ident], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                            cwd="/")
    return proc.pid


def _timer_for(kernel: seam.Kernel) -> Callable[[Path, str], int] | None:
    # Only the real kernel gets a timer process: a fake lives in this process alone, and a
    # timer would roll back against the real kernel of whatever namespace it runs in.
    return spawn_timer if type(kernel) is seam.Kernel else None


class Change:
    """A change being applied with ``--confirm``: recorded before the kernel sees it, armed
    (deadline set, timer started) once it went in, dropped if it failed."""

    def __init__(self, store: Store, op: str, seconds: int,
                 timer: Callable[[Path, str], int] | None):
        self.store = store
        self.timer = timer
        started = time.time()
        self.pending = Pending(id=os.urandom(8).hex(), op=op, seconds=seconds, started=started,
                               deadline=started + seconds,
                               state_before=_read_text(store.file))
        if op in RULESET_OPS:
            from ..runners import hookstate
            self.pending.hooks = hookstate.wanted(store.dir)
        self.dropped = False
        self._save()
        if timer is not None:
            # started before the kernel sees the change, so that no moment exists where the
            # change is in and nothing would undo it; it re-reads the deadline, which is set
            # again once the change is in (``arm``)
            self.pending.timer = timer(store.dir, self.pending.id)
            self._save()

    def _save(self) -> None:
        record.write(self.store.dir, self.pending)

    def loaded(self, path: str, text: str) -> None:
        """up/reload: the config text that was loaded (``up`` will not load it again
        unconfirmed once it was rolled back)."""
        self.pending.config, self.pending.config_sha = path, config_digest(text)
        self._save()

    def keep_config(self, path: str, text: str) -> None:
        """add/delete: the config file's new text, written to it only at ``confirm``."""
        self.pending.config, self.pending.config_new = path, text
        self._save()

    def set_diff(self, name: str, op: str, before: dict[str, tuple[int, int] | None]) -> None:
        self.pending.sets.append(SetDiff(name, op, before))
        self._save()

    def drop(self) -> None:
        """Nothing changed (``up`` found it already loaded): nothing to confirm."""
        if not self.dropped:
            self.dropped = True
            record.clear(self.store.dir)
            _stop_timer(self.pending)

    def abandon(self) -> None:
        """The command failed. If its change was taken back (state.json as before), there is
        nothing to confirm; if the change is in nonetheless (a hook runner that did not start
        after the load, say), it stays on the timer like any other."""
        if self.pending.op in RULESET_OPS and not self.dropped \
                and _read_text(self.store.file) != self.pending.state_before:
            self.arm()
        else:
            self.drop()

    def arm(self) -> None:
        if self.dropped:
            return
        self.pending.deadline = time.time() + self.pending.seconds  # from when it is in force
        self._save()

    def notice(self) -> str:
        return (f"the {self.pending.op} will be rolled back in {self.pending.seconds} s "
                "unless 'minifw confirm' runs")


def gate(store: Store, kernel: seam.Kernel, sets: Any, op: str | None, seconds: int | None,
         exempt: bool = False) -> Change | None:
    """Called by every writer, the lock held, after an interrupted change was settled: an
    overdue pending change is rolled back first; a change while one is pending is refused
    (``op`` None: a reader or a timer; ``exempt``: a plain ban, unban or import, as feeds run
    them, which applies to both rulesets since sets are kept across loads). With ``seconds``,
    the new change is recorded for confirmation."""
    pending = record.read(store.dir)
    if pending is not None:
        left = pending.left(time.time())
        if left <= 0:
            rollback(store, kernel, sets, pending,
                     f"not confirmed within {pending.seconds} s")
        elif op == "up" and pending.timer is not None and not _timer_alive(pending):
            # `up` at boot within the window: the reboot ended the timer, and the change
            # it guarded is no longer in the kernel to be confirmed
            rollback(store, kernel, sets, pending, "its timer was gone: a reboot or a crash")
        elif op is not None and not (exempt and seconds is None):
            raise StateError(f"{_article(pending.op)} {pending.op} is waiting for confirmation ({math.ceil(left)} s "
                             "left); run 'minifw confirm' to keep it or 'minifw rollback' to "
                             f"undo it before another {op}")
    if seconds is None:
        return None
    return Change(store, op or "change", seconds, _timer_for(kernel))


def _article(op: str) -> str:
    return "an" if op[:1] in "aeiou" else "a"


def overdue(state_dir: Path) -> bool:
    """A pending change whose deadline passed (readers then take the lock to roll it back)."""
    try:
        pending = record.read(state_dir)
    except StateError:
        return False
    return pending is not None and pending.left(time.time()) <= 0


# ---- rollback -------------------------------------------------------------------------------

def rollback(store: Store, kernel: seam.Kernel, sets: Any, pending: Pending,
             why: str) -> tuple[float, str]:
    """Undo ``pending`` (the lock held): the ruleset, then each set diff, then state.json byte
    for byte; the kernel log and ``rolledback.json`` say so. Returns (when, why)."""
    if pending.op in RULESET_OPS:
        _restore_ruleset(store, kernel, sets, pending)
    for diff in reversed(pending.sets):
        _restore_set(sets, diff)
    if pending.op in RULESET_OPS:
        _restore_state_file(store, pending.state_before)
    record.clear(store.dir)
    _stop_timer(pending)
    at = time.time()
    record.write_rolled_back(store.dir, pending.op, at, why, pending.config, pending.config_sha)
    kmsg.write_line("minifw", f"rolled back {pending.op} ({why})")
    if pending.op in RULESET_OPS:
        from ..runners import supervise
        supervise.applied(store.dir)  # the daemon's plug-ins follow the ruleset
    return at, why


def _state_before(store: Store, pending: Pending) -> State:
    if pending.state_before is None:
        return State()
    try:
        return state_from_json(json.loads(pending.state_before))
    except (ValueError, RecursionError) as exc:
        raise StateError(f"{record.path_of(store.dir)}: the saved state to roll back to is "
                         f"damaged ({exc}); {REDERIVE}") from None


def _restore_ruleset(store: Store, kernel: seam.Kernel, sets: Any, pending: Pending) -> None:
    """The old ruleset, rebuilt from its model as a load does: ONE transaction, which also
    deletes the chains of [[hook]] runners the change started; then the sets brought in line
    with it, and the runners with the hook files wanted before (as ``reload`` does: make
    before break). An intent is written first, so a kill in the middle is settled by the next
    command."""
    from ..compile import nft as compiler
    from ..runners import supervise
    from ..model.ruleset import Ruleset
    before = _state_before(store, pending)
    if before.loaded:
        try:
            ruleset = Ruleset.from_toml(before.ruleset)
        except ConfigError as exc:
            raise StateError(f"the ruleset to roll back to does not load ({exc}); "
                             f"{REDERIVE}") from None
        runners = (supervise.plan_runners(pending.hooks, store.dir)
                   if pending.hooks is not None else None)
        chains, limits = kernel.objects()
        kernel_sets, _, _ = kernel.kernel_objects()
        document = compiler.build_load(ruleset, chains, limits, kernel_sets)
        if runners is not None:
            document["nftables"] += supervise.retire_commands(runners, chains)
        store.write_intent("load", before)
        kernel.run(document)
        sets.after_load(ruleset, kernel_sets)
        store.commit(before)
        if runners is not None:
            supervise.apply(runners, store.dir)  # a runner that fails is recorded for status
        return
    # the change was the first `up`: minifw goes down again
    store.write_intent("down", before)
    if kernel.exists():
        kernel.run(compiler.build_down())
    supervise.stop_all(store.dir)
    supervise.forget(store.dir)
    store.commit(before)


def _restore_state_file(store: Store, text: str | None) -> None:
    if text is None:
        try:
            store.file.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StateError(f"cannot remove {store.file}: {exc.strerror}") from exc
    else:
        write_atomic(store.file, text)  # byte-identical, not re-serialized


def plan_set_restore(diff: SetDiff, at: int) -> tuple[list[str], dict[int, list[str]]]:
    """What puts one set back, element by element. Pure. (elements whose runtime entry goes:
    absent before, there from the config only, or expired meanwhile; {expiry (0: none):
    elements banned again with the expiry they had})."""
    drop: list[str] = []
    again: dict[int, list[str]] = {}
    for element, was in diff.before.items():
        if was is None or not was[1] & RUNTIME or (was[0] and was[0] <= at):
            drop.append(element)
        else:
            again.setdefault(was[0], []).append(element)
    return drop, again


def _restore_set(sets: Any, diff: SetDiff) -> None:
    at = now()
    drop, again = plan_set_restore(diff, at)
    if drop:
        sets._unban(diff.set, drop)
    for expiry, items in sorted(again.items()):
        sets._ban(diff.set, items, (expiry - at) if expiry else None, expiry)


def _cmdline(pid: int | None) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _timer_process(pending: Pending) -> bool:
    """The pid is still ``pending``'s timer process (a pid may have been reused since: a
    reboot)."""
    cmdline = _cmdline(pending.timer)
    return TIMER_MODULE.encode() in cmdline and pending.id.encode() in cmdline


def _timer_alive(pending: Pending) -> bool:
    """``pending``'s timer runs: its own process, or a ``minifw daemon`` that took it."""
    cmdline = _cmdline(pending.timer)
    daemon = b"daemon" in cmdline and any(a.endswith(b"minifw") for a in cmdline)
    return daemon or _timer_process(pending)


def _stop_timer(pending: Pending) -> None:
    """End the timer of ``pending`` (unless this is it, or a daemon: its timer sees the change
    gone and ends by itself)."""
    pid = pending.timer
    if not pid or pid == os.getpid():
        return
    if _timer_process(pending):
        import signal
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


# ---- confirm, rollback now, status ------------------------------------------------------------

def confirm(store: Store, kernel: seam.Kernel, sets: Any) -> tuple[Pending, str | None]:
    """Keep the pending change (the lock held): an add/delete's config text goes to the file
    now, the record and the timer go. Too late (overdue): it is rolled back instead, and
    said as an error."""
    pending = record.read(store.dir)
    if pending is None:
        raise StateError("nothing is waiting for confirmation")
    if pending.left(time.time()) <= 0:
        rollback(store, kernel, sets, pending, f"not confirmed within {pending.seconds} s")
        raise StateError(f"too late: the {pending.op} was not confirmed within "
                         f"{pending.seconds} s and has been rolled back")
    written = None
    if pending.config_new is not None and pending.config:
        write_atomic(Path(pending.config), pending.config_new)
        written = pending.config
    record.clear(store.dir)
    try:
        (store.dir / record.ROLLED_BACK).unlink()
    except OSError:
        pass
    _stop_timer(pending)
    return pending, written


def rollback_now(store: Store, kernel: seam.Kernel, sets: Any) -> tuple[Pending, str]:
    pending = record.read(store.dir)
    if pending is None:
        raise StateError("nothing is waiting for confirmation; there is nothing to roll back")
    _, why = rollback(store, kernel, sets, pending, "by 'minifw rollback'")
    return pending, why


def refuse_rolled_back(state_dir: Path, path: str, text: str) -> None:
    """``up`` without --confirm does not load again the very config text whose load was
    rolled back (a reboot after a lockout must not bring the lockout back)."""
    last = record.read_rolled_back(state_dir)
    if last and last.get("config") == path and last.get("config_sha") == config_digest(text):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"]))
        raise StateError(f"{path} holds the {last['op']} that was rolled back at {at} "
                         f"({last['why']}); the previous ruleset stays; fix the file, or run "
                         "'minifw up --confirm SECONDS' to try it again")


def describe(state_dir: Path) -> tuple[Any, Any, str | None]:
    """(PendingChange or None, RollbackRecord or None, a warning) for ``status``."""
    from .results.pending import PendingChange, RollbackRecord
    warning = None
    change = None
    try:
        pending = record.read(state_dir)
    except StateError as exc:
        pending, warning = None, str(exc)
    if pending is not None:
        change = PendingChange(op=pending.op, seconds=pending.seconds, started=pending.started,
                               deadline=pending.deadline,
                               seconds_left=max(0, math.ceil(pending.left(time.time()))))
    last = record.read_rolled_back(state_dir)
    done = RollbackRecord(op=last["op"], at=last["at"], why=last["why"]) if last else None
    return change, done, warning
