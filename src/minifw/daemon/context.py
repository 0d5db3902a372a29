"""What the daemon gives its plug-ins (events, metrics): ``DaemonContext``.

A plug-in is an object with ``start(ctx)`` and ``stop()``; it runs its own threads if it
needs them. Through the context it reads the applied ruleset and the runners' status, adds ops
to the control socket, and hears of every apply (up, reload, add, delete) the daemon sees.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import MinifwError
from ..model.ruleset import Ruleset
from ..store.state import Store

if TYPE_CHECKING:
    from ..api import Firewall

log = logging.getLogger("minifw.daemon")

Reply = Callable[[dict[str, Any]], None]
# fn(request, reply) -> reply fields, or None for a streaming op that keeps ``reply`` and
# calls it per item until it raises OSError (the client hung up)
Handler = Callable[[dict[str, Any], Reply], "dict[str, Any] | None"]


class DaemonContext:
    def __init__(self, state_dir: Path, firewall: "Firewall",
                 runners: Callable[[], list[dict[str, Any]]]):
        self.state_dir = Path(state_dir)
        self.firewall = firewall
        self.events: Any = None  # the EventService, once started
        self._runners = runners
        self.handlers: dict[str, Handler] = {}
        self._listeners: list[Callable[[Ruleset], None]] = []
        self._lock = threading.Lock()
        self._cached: tuple[Any, Ruleset] | None = None
        self._changed = threading.Event()
        self._notifier: threading.Thread | None = None

    # ---- for plug-ins -----------------------------------------------------------------------
    def ruleset(self) -> Ruleset:
        """The applied ruleset (empty when minifw is not loaded), re-read when state.json
        changed."""
        store = Store(self.state_dir)
        try:
            st = os.stat(store.file)
            stamp: Any = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if self._cached is not None and self._cached[0] == stamp:
                return self._cached[1]
        state = store.load_or_none() if stamp is not None else None
        ruleset = Ruleset()
        if state is not None and state.loaded:
            try:
                ruleset = Ruleset.from_toml(state.ruleset)
            except MinifwError as exc:
                log.warning("the applied ruleset in %s does not load: %s", store.file, exc)
        with self._lock:
            self._cached = (stamp, ruleset)
        return ruleset

    def runners(self) -> list[dict[str, Any]]:
        """Each supervised hook runner's status (``state``, ``pid``, ``restarts``, ...)."""
        return self._runners()

    def handle(self, op: str, fn: Handler) -> None:
        """Serve control-socket op ``op`` with ``fn``."""
        self.handlers[op] = fn

    def on_apply(self, fn: Callable[[Ruleset], None]) -> None:
        """Call ``fn(ruleset)`` after every up, reload, add or delete the daemon sees."""
        self._listeners.append(fn)

    # ---- for the daemon ---------------------------------------------------------------------
    def applied(self) -> None:
        """Say that the ruleset changed: the listeners run in a thread of their own, so the
        command that changed it (holding the writers' lock) never waits for them. Changes in a
        quick row are told once, with the latest ruleset."""
        with self._lock:
            self._changed.set()
            if self._notifier is None or not self._notifier.is_alive():
                self._notifier = threading.Thread(target=self._tell, name="on_apply",
                                                  daemon=True)
                self._notifier.start()

    def _tell(self) -> None:
        while True:
            with self._lock:
                if not self._changed.is_set():
                    self._notifier = None
                    return
                self._changed.clear()
            ruleset = self.ruleset()
            for fn in list(self._listeners):
                try:
                    fn(ruleset)
                except Exception:  # noqa: BLE001  a plug-in's bug never stops the daemon
                    log.exception("an on_apply listener failed")
