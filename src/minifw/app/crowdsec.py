"""minifw as a CrowdSec bouncer: LAPI's decision stream into a named set.

``Bouncer.sync()`` reads ``/v1/decisions/stream`` (``startup=true`` the first time: a full
reconcile, so elements LAPI no longer has leave the set), records every decision
(store/decisions.py) and gives the set their union (model/decisions.py), sending only the
difference to the kernel:
- new single addresses go straight over netlink, one batch per expiry (fast at 100k);
- removed or re-timed elements, and CIDRs, go in one libnftables transaction.

A sync is a plain set change (exempt from a pending --confirm change: sets are kept across
loads, so it applies to both rulesets). LAPI unreachable or a bad answer changes nothing: the
bans stay, the status says so, and the caller retries with backoff.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ..compile import sets as ksets
from ..errors import DecisionError, FleetError, KernelError, MinifwError
from ..fleet.lapi import SHARE_SCENARIO, Lapi, read_secret
from ..kernel import seam
from ..model.crowdsec import CrowdsecConfig
from ..model.decisions import Element, parse_stream, union
from ..model.sets import MAX_TIMEOUT
from ..store.decisions import DecisionStore
from ..store.setrecord import CONFIG, RUNTIME, now, pack
from .sets import SetService

# a capped expiry (a decision longer than the kernel's 49 days) is refreshed once it is a day
# short of the cap, not at every sync
REFRESH_SLACK = 86400
NETLINK_GROUPS = 64   # more distinct expiries than this: one libnftables transaction instead
BULK = 1000          # changes from this many on are recorded in bulk, then counted again
BACKOFF_MAX = 60.0   # seconds, and at most 4 intervals: a returning LAPI is caught up soon
# a delta sync recomputes only what it touches; a full union this often still refreshes capped
# expiries (REFRESH_SLACK) and the element count
FULL_EVERY = REFRESH_SLACK // 2


@dataclasses.dataclass(frozen=True)
class Synced:
    startup: bool
    decisions: int
    ignored: int
    added: int
    removed: int
    elements: int
    seconds: float
    fetch_seconds: float = 0.0   # of ``seconds``: waiting for LAPI's answer
    kernel_seconds: float = 0.0  # of ``seconds``: in kernel transactions

    @property
    def message(self) -> str:
        return (f"crowdsec: {'startup ' if self.startup else ''}sync: {self.decisions} "
                f"decision(s), {self.elements} element(s) in the set (+{self.added} "
                f"-{self.removed}), {self.ignored} non-ban ignored, in "
                f"{self.seconds * 1000:.0f} ms")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lapi_for(config: CrowdsecConfig) -> Lapi:
    key = read_secret(config.key_file, "the CrowdSec key file")
    password = (read_secret(config.password_file, "the CrowdSec password file")
                if config.share and config.password_file else None)
    return Lapi(config.url, key, config.login, password)


class Bouncer:
    def __init__(self, state_dir: Any, config: CrowdsecConfig,
                 kernel: seam.Kernel | None = None, lapi: Lapi | None = None):
        self.config = config
        self.sets = SetService(state_dir, kernel)
        self.record = DecisionStore(state_dir)
        self.lapi = lapi or lapi_for(config)
        self.started = False      # the startup (full) stream went in
        self.full_at = 0          # when the last full union was made
        self.elements = 0         # elements the feed gave, as of the last sync
        self._ensured = False     # the set's kernel sets were declared by this bouncer
        self._armed: frozenset = frozenset()   # the drop rule's lookups this bouncer saw live

    def close(self) -> None:
        self.record.close()

    # ---- status -----------------------------------------------------------------------------
    def _status(self, **changes: Any) -> dict[str, Any]:
        status = self.record.status()
        for key, value in changes.items():
            if key.endswith("+"):
                status[key[:-1]] = int(status.get(key[:-1], 0)) + value
            else:
                status[key] = value
        status["url"] = self.config.url
        status["set"] = self.config.set
        self.record.set_status(status)
        return status

    # ---- the sync ---------------------------------------------------------------------------
    def sync(self) -> Synced:
        startup = not self.started
        start = time.perf_counter()
        at = now()
        try:
            body = self.lapi.stream(startup)
        except FleetError as exc:
            old = self.record.status().get("unreachable_since")
            self._status(**{"failures+": 1, "unreachable_since": old or at,
                            "last_error": str(exc)})
            raise
        fetched = time.perf_counter() - start
        try:
            stream = parse_stream(body)
        except DecisionError as exc:
            self._status(**{"failures+": 1, "refused+": 1, "last_error": str(exc),
                            "unreachable_since": None})
            raise
        name = self.config.set
        if not startup and not stream.new and not stream.deleted:
            # nothing changed (expiries run out in the kernel on their own): no union to make
            status = self._status(last_sync=at, unreachable_since=None, last_error=None)
            return Synced(False, sum((status.get("decisions") or {}).values()),
                          status.get("ignored", 0), 0, 0, status.get("elements", 0),
                          time.perf_counter() - start, time.perf_counter() - start)
        try:
            with self.sets._writing("crowdsec sync", None, exempt=True):
                self.record.apply(stream.new, [d.id for d in stream.deleted], at, startup)
                if startup or at - self.full_at >= FULL_EVERY:
                    want, _ = self.wanted(at)
                    added, removed = self._apply(name, want, at)
                    self.full_at, self.elements = at, len(want)
                else:
                    added, removed = self._apply_delta(name, stream, at)
                    self.elements += added - removed
        except KernelError:
            self.started = False   # the next sync reconciles from a full stream
            self._ensured = False
            self._armed = frozenset()
            raise
        self.started = True
        counts = self.record.count()
        ignored = sum(n for kind, n in counts.items() if kind != "ban")
        result = Synced(startup, sum(counts.values()), ignored, added, removed, self.elements,
                        time.perf_counter() - start, fetched, self.sets.apply_seconds)
        self._status(last_sync=at, unreachable_since=None, last_error=None,
                     decisions=counts, origins=self.record.count_origins(), ignored=ignored,
                     elements=self.elements)
        return result

    def wanted(self, at: int) -> tuple[dict[str, Element], int]:
        """The union of the recorded decisions, without minifw's own shared bans (they are in
        ``blocked`` already: never echoed back)."""
        return self._union(self.record.all(), at)

    def _union(self, decisions: Any, at: int) -> tuple[dict[str, Element], int]:
        own = self.record.shared(at)
        return union(((d, e) for d, e in decisions
                      if not (own and d.scenario == SHARE_SCENARIO and d.value in own)), at)

    def _apply_delta(self, name: str, stream: Any, at: int) -> tuple[int, int]:
        """``_apply`` for the elements a delta stream touches alone (the lock held). Single
        addresses and ranges are separate kernel sets, so the union's singles are per address:
        only the addresses of the new and deleted decisions are made again; the ranges' union
        is made again (from the range decisions alone) only when a range decision changed."""
        values = {d.value for d in stream.new + stream.deleted}
        singles = sorted(v for v in values if "/" not in v)
        want, _ = self._union(self.record.on_values(singles), at)
        record = self.sets.record
        current: dict[str, int] = {}
        if record.exists(name):
            for v in singles:
                row = record.get(name, v, at)
                if row is not None and not row[1] & CONFIG:
                    current[v] = row[0]
            if len(singles) < len(values):
                current.update(record.live(name, at, ("cidr",)))
        if len(singles) < len(values):
            ranges, _ = self._union(self.record.ranges(), at)
            want.update(ranges)
            for e in record.config_elements(name) if current else ():
                current.pop(e, None)
        return self._apply(name, want, at, current)

    def _apply(self, name: str, want: dict[str, Element], at: int,
               current: dict[str, int] | None = None) -> tuple[int, int]:
        """The set's record and kernel elements made ``want`` (the lock held): (added,
        removed). ``current``: the elements ``want`` is to replace (all the feed's if None)."""
        record = self.sets.record
        if current is None:
            current = dict(record.live(name, at)) if record.exists(name) else {}
            for e in record.config_elements(name) if current else ():
                current.pop(e, None)   # a [[set]]'s own elements are the config's, not the feed's
        cap = at + MAX_TIMEOUT - REFRESH_SLACK
        gone = [e for e in current if e not in want]
        changed = [e for e, el in want.items() if e in current and current[e] != el.expiry
                   and not (current[e] >= cap and el.expiry >= cap)]
        new = [e for e in want if e not in current]
        # which decision gives each element (set list, explain, events): the new and re-timed
        # ones, and all of them at a startup sync
        given = want if not self.started else {e: want[e] for e in changed + new}
        self.record.set_elements(name, gone, ((e, el.decision, el.label)
                                              for e, el in given.items()))
        if not (gone or changed or new):
            return 0, 0
        with record.transaction() as db:
            if not record.exists(name):
                record.declare(db, name, None)
            if len(gone) + len(changed) + len(new) < BULK:
                record.drop_origin(db, name, gone, RUNTIME)
                record.put(db, name, ((e, want[e].expiry) for e in changed + new), RUNTIME)
            else:
                record.drop_origin(db, name, gone, RUNTIME)
                record.put_rows(db, name, [(e, want[e].expiry) for e in changed + new],
                                RUNTIME)
                record.retally(db, name)
            if self.sets._up():
                if new or not self.started:
                    self._arm(name)
                self._send(name, want, gone, changed, new, at)
        return len(new), len(gone)

    def _arm(self, name: str) -> None:
        """Before new elements go in: the drop rule looks up every backing set the record
        holds elements of (a first range, or a first address of a family, adds its lookup).
        What this bouncer armed is remembered: only a kind it has not seen reads the kernel."""
        kinds = frozenset(self.sets.record.kinds(name))
        if kinds <= self._armed:
            return
        cmds, self._armed = self.sets.arm_commands(name, kinds)
        if cmds:
            self.sets._run(cmds)

    def _send(self, name: str, want: dict[str, Element], gone: list[str], changed: list[str],
              new: list[str], at: int) -> None:
        # the backing sets once per bouncer: libnftables reads the whole set to declare it again
        # (a third of a second at 100k elements)
        cmds = [] if self._ensured else self.sets._ensure(name)
        # add-then-delete: each goes whether the kernel still had it or had expired it. The
        # ranges' adds go in a transaction of their own: nft 1.0.6 refuses a piece of a range
        # added after that range was added and deleted in one transaction ("interval overlaps")
        redo = gone + changed
        ranges = [e for e in redo if "/" in e]
        if ranges:
            self.sets._run(cmds + ksets.build_elements("add", name, ((e, None) for e in ranges)))
            self._ensured = True
            cmds = []
        cmds += ksets.build_elements("add", name, ((e, None) for e in redo if "/" not in e))
        cmds += ksets.build_elements("delete", name, ((e, None) for e in redo))
        singles: dict[int, list[bytes]] = {}
        later = changed + [e for e in new if "/" in e]
        for e in new:
            if "/" not in e:
                singles.setdefault(want[e].expiry, []).append(pack(e))
        if len(singles) > NETLINK_GROUPS:
            later += [e for e in new if "/" not in e]
            singles = {}
        cmds += ksets.build_elements("add", name, ((e, want[e].expiry - at) for e in later))
        if cmds:
            self.sets._run(cmds)
        self._ensured = True
        start = time.perf_counter()
        for expiry, keys in singles.items():
            v4 = [k for k in keys if len(k) == 4]
            v6 = [k for k in keys if len(k) == 16]
            self.sets.kernel.add_elements(ksets.TABLE, [
                (ksets.kernel_name(name, 4, False), v4), (ksets.kernel_name(name, 6, False), v6)],
                max(1, expiry - at) * 1000)
        self.sets.apply_seconds += time.perf_counter() - start

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, stop: Any, log: Any, once: bool = False) -> Synced | None:
        """Sync every ``interval`` until ``stop`` (a threading.Event) is set; on a failure
        retry with backoff (doubling from the interval, at most a minute), the set untouched."""
        delay = float(self.config.interval)
        while True:
            try:
                result = self.sync()
                delay = float(self.config.interval)
                log.info("%s", result.message)
                if once:
                    return result
            except (FleetError, KernelError) as exc:
                if once:
                    raise
                log.error("crowdsec: %s; the set is left as it was, retrying in %.0f s",
                          exc, delay)
                wait = delay
                delay = min(BACKOFF_MAX, 4.0 * self.config.interval, delay * 2)
                if stop.wait(wait):
                    return None
                continue
            if stop.wait(self.config.interval):
                return None


def configured(state_dir: Any, config_file: str | None = None) -> CrowdsecConfig:
    """The [crowdsec] table of ``config_file``, else of the applied ruleset."""
    from ..errors import ConfigError
    from ..model.ruleset import Ruleset
    from ..store.state import Store
    if config_file is not None:
        from ..model.config import parse_config
        try:
            with open(config_file, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the config: {exc}", file=config_file) from exc
        ruleset = parse_config(text, config_file)
        where = config_file
    else:
        state = Store(state_dir).load()
        ruleset = Ruleset.from_toml(state.ruleset) if state.loaded else Ruleset()
        where = "the applied ruleset" if state.loaded else None
    if ruleset.crowdsec is None:
        raise ConfigError(f"there is no [crowdsec] table in {where}; add one, or give "
                          "--config FILE" if where else "minifw is down here, so there is no "
                          "applied [crowdsec] table; run 'minifw up' or give --config FILE")
    return ruleset.crowdsec


def feed_status(state_dir: Any) -> dict[str, Any] | None:
    """The feed's status file, or None where no sync ever ran."""
    return DecisionStore(state_dir).status() or None


def status_text(status: dict[str, Any]) -> str:
    """``status``'s crowdsec line."""
    since = status.get("unreachable_since")
    if since:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        return (f"crowdsec: unreachable since {stamp} ({status.get('failures', 0)} "
                f"failure(s)); bans kept: {status.get('elements', 0)} element(s) in set "
                f"{status.get('set')}")
    last = status.get("last_sync")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last)) if last else "never"
    decisions = sum((status.get("decisions") or {}).values())
    text = (f"crowdsec: synced {stamp} from {status.get('url')}: {decisions} decision(s), "
            f"{status.get('elements', 0)} element(s) in set {status.get('set')}")
    if status.get("last_error"):
        text += f"; the last answer was refused: {status['last_error']}"
    return text


# ---- share = true: minifw's own bans into the fleet --------------------------------------------
SHARE_PERMANENT = 365 * 86400   # a ban without a timeout is shared for a year (unban lifts it)


def _sharing(store: Any) -> CrowdsecConfig | None:
    """The applied [crowdsec] table when it says share = true (read from state.json)."""
    state = store.load()
    raw = state.ruleset.get("crowdsec") if state.loaded else None
    if not isinstance(raw, dict) or raw.get("share") is not True:
        return None
    return CrowdsecConfig.from_toml(raw)


def share_ban(store: Any, banned: Any) -> Any:
    """After ``minifw ban`` into ``blocked``: the same ban as a LAPI decision (scenario
    ``minifw/ban``), so every other host gets it. It is recorded as this host's own first,
    so the stream never brings it back into the CrowdSec set here. A LAPI failure is a
    warning: the local ban stands."""
    from ..model.sets import DEFAULT_SET
    config = _sharing(store) if banned.set == DEFAULT_SET else None
    if config is None or not banned.banned:
        return banned
    seconds = banned.timeout or SHARE_PERMANENT
    record = DecisionStore(store.dir_text)
    try:
        lapi = lapi_for(config)
        for item in banned.banned:
            record.share(item, now() + seconds)
            lapi.add_decision(item, seconds)
    except MinifwError as exc:
        return dataclasses.replace(banned, warnings=banned.warnings + (
            f"not shared with CrowdSec: {exc}",))
    finally:
        record.close()
    return dataclasses.replace(banned, message=banned.message + "; shared with CrowdSec")


def share_unban(store: Any, unbanned: Any) -> Any:
    """After ``minifw unban`` from ``blocked``: the shared decisions are deleted in LAPI."""
    from ..model.sets import DEFAULT_SET
    config = _sharing(store) if unbanned.set == DEFAULT_SET else None
    if config is None or not unbanned.unbanned:
        return unbanned
    record = DecisionStore(store.dir_text)
    try:
        own = record.shared(0)
        lapi = lapi_for(config)
        for item in unbanned.unbanned:
            if item in own:
                lapi.delete_decisions(item)
                record.unshare(item)
    except MinifwError as exc:
        return dataclasses.replace(unbanned, warnings=unbanned.warnings + (
            f"the CrowdSec decision was not deleted: {exc}",))
    finally:
        record.close()
    return unbanned



def decided_by(state_dir: Any, ruleset: Any, explanation: Any) -> str | None:
    """explain's line when a rule on the CrowdSec set decided the packet: "decided by set
    crowdsec, decision 1234 from cscli" (the element that holds its source address)."""
    from ..model.setdefs import SetRef
    name = ruleset.crowdsec.set
    rule = ruleset.get(explanation.rule) if explanation.rule else None
    if rule is None or SetRef(name) not in rule.src or explanation.verdict != "drop":
        return None
    record = DecisionStore(state_dir)
    try:
        found = record.origin_of(name, explanation.probe.src)
    finally:
        record.close()
    return None if found is None else f"decided by set {name}, decision {found[0]} from {found[1]}"
