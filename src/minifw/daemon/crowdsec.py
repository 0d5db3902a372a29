"""The daemon plug-in that runs the CrowdSec bouncer (app/crowdsec.py) in a thread of its own.

It follows the applied ruleset: a [crowdsec] table starts the feed, a changed one restarts it
(a full, reconciling sync), none stops it. The feed's counts go to the metrics
(``crowdsec_families``) from its status file.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator

from ..errors import MinifwError
from ..model.crowdsec import CrowdsecConfig
from ..model.ruleset import Ruleset

log = logging.getLogger("minifw.crowdsec")


class CrowdsecService:
    def __init__(self) -> None:
        self.ctx: Any = None
        self.config: CrowdsecConfig | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, ctx: Any) -> None:
        self.ctx = ctx
        ctx.on_apply(self._follow)
        self._follow(ctx.ruleset())

    def stop(self) -> None:
        with self._lock:
            self._end()

    def _end(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None
        self.config = None

    def _follow(self, ruleset: Ruleset) -> None:
        with self._lock:
            if ruleset.crowdsec == self.config and self._thread is not None:
                return
            self._end()
            if ruleset.crowdsec is None:
                return
            self.config = ruleset.crowdsec
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self.config, self._stop),
                                            name="crowdsec", daemon=True)
            self._thread.start()

    def _run(self, config: CrowdsecConfig, stop: threading.Event) -> None:
        from ..app.crowdsec import Bouncer
        while not stop.is_set():
            try:
                bouncer = Bouncer(self.ctx.state_dir, config)
            except MinifwError as exc:  # a key file that cannot be read: say so, try again
                log.error("crowdsec: %s", exc)
                if stop.wait(max(config.interval, 10)):
                    return
                continue
            try:
                bouncer.run(stop, log)
            except Exception:  # noqa: BLE001  a bug in a sync never ends the feed
                log.exception("crowdsec: the sync failed")
                stop.wait(config.interval)
            finally:
                bouncer.close()


def crowdsec_families(state_dir: Any, counter: Any, gauge: Any) -> Iterator[Any]:
    """minifw_crowdsec_*: decisions by type, sync failures, the last sync, the set's size."""
    from ..app.crowdsec import feed_status
    status = feed_status(state_dir)
    if status is None:
        return
    decisions = gauge("minifw_crowdsec_decisions", "CrowdSec decisions held, by type.",
                      labels=["type"])
    for kind, n in sorted((status.get("decisions") or {}).items()):
        decisions.add_metric([kind], n)
    yield decisions
    bans = gauge("minifw_crowdsec_ban_decisions", "CrowdSec ban decisions held, by origin "
                 "(cscli, crowdsec:<scenario>, ...).", labels=["origin"])
    for origin, n in sorted((status.get("origins") or {}).items()):
        bans.add_metric([origin], n)
    yield bans
    yield gauge("minifw_crowdsec_elements", "Elements the CrowdSec decisions put in the set.",
                value=status.get("elements", 0))
    yield gauge("minifw_crowdsec_ignored_decisions",
                "Decisions of types other than ban, ignored.", value=status.get("ignored", 0))
    yield counter("minifw_crowdsec_failures", "Syncs that failed: LAPI unreachable, or "
                  "its answer refused.", value=status.get("failures", 0))
    yield gauge("minifw_crowdsec_reachable", "1 while the last sync reached LAPI.",
                value=0 if status.get("unreachable_since") else 1)
    last = gauge("minifw_crowdsec_last_sync_timestamp_seconds",
                 "Unix time of the last successful sync.")
    if status.get("last_sync"):
        last.add_metric([], status["last_sync"])
    yield last
