"""One reading of every counter minifw keeps, for metrics and ``top``: rules (merged runs
included), drop policies, sets, hook functions and their runners, NFQUEUE drops.

A reading never lists a ban set's elements: rules and chains come from one terse listing, merged
runs from their own (small) sets, set sizes from the set record's tally. What depends only on
the ruleset (which rule owns which run element, each rule's labels) is a ``Layout``, built once
per applied ruleset: with 10k rules it costs about a second, the reading itself a fraction.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..compile import names, runs
from ..compile import sets as ksets
from ..compile.comments import rule_id_of_comment
from ..errors import KernelError, MinifwError, StateError
from ..kernel import queuestats, seam, table
from ..model.rule import PortRange
from ..model.ruleset import Ruleset
from ..netlink.setelems import INTERVAL_END
from ..runners import hookstate
from ..store.setrecord import SetStore, now


@dataclasses.dataclass(frozen=True)
class RuleInfo:
    id: str
    hook: str
    priority: int
    action: str


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a reading needs to know of the applied ruleset."""

    rules: tuple[RuleInfo, ...] = ()
    run_sets: dict[str, dict[bytes, str]] = dataclasses.field(default_factory=dict)
    drop_hooks: tuple[str, ...] = ()

    @classmethod
    def of(cls, ruleset: Ruleset) -> "Layout":
        return cls(rules=tuple(RuleInfo(r.id, r.hook.value, r.priority, r.action.value)
                               for r in ruleset.ordered()),
                   run_sets=_run_keys(ruleset),
                   drop_hooks=tuple(h.value for h in ruleset.drop_hooks))


def _run_keys(ruleset: Ruleset) -> dict[str, dict[bytes, str]]:
    """Each merged run's backing set -> {element key as the kernel dumps it: rule id}. An
    interval element's key is its first value (a prefix's network address, a port range's
    low end); its end element carries the INTERVAL_END flag and no counter."""
    out: dict[str, dict[bytes, str]] = {}
    for (hook, prio), rules in ruleset.chains():
        chain = names.rule_chain(hook, prio)
        for index, item in enumerate(runs.plan_chain(rules)):
            if not isinstance(item, runs.Run):
                continue
            for rule in item.rules:
                for value in getattr(rule, item.field):
                    if isinstance(value, PortRange):
                        version, key = None, value.lo.to_bytes(2, "big")
                    else:
                        version, key = value.version, value.network_address.packed
                    out.setdefault(runs.run_set_name(chain, index, version), {})[key] = rule.id
    return out


@dataclasses.dataclass(frozen=True)
class HookInfo:
    """A hook function's chain: packets its queue rule sent to its runner (kernel counter)."""

    function: str
    queue: int
    hook: str | None
    priority: int | None
    file: str | None
    packets: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class SetInfo:
    name: str
    elements: int
    packets: int  # dropped by the ban chain (the default set) or 0
    bytes: int


@dataclasses.dataclass(frozen=True)
class Sample:
    """Counters at one moment (``at``: monotonic seconds)."""

    at: float
    up: bool
    rules: dict[str, tuple[int, int]]          # rule id -> packets, bytes
    policies: dict[str, tuple[int, int]]       # hook -> packets, bytes its drop policy dropped
    sets: dict[str, SetInfo]
    hooks: dict[str, HookInfo]                 # function -> its chain's counter
    runners: tuple[dict[str, Any], ...]        # each runner's status (daemon or records)
    queues: dict[int, queuestats.QueueStats]
    # kernel hook functions: (function, hook, priority, packets, drops), from their stats maps
    # (function, hook, priority, packets, drops, log lines lost)
    kernel_hooks: tuple[tuple[str, str, int, int, int, int], ...] = ()


def read(kernel: seam.Kernel, state_dir: Path, layout: Layout,
         runners: list[dict[str, Any]] | None = None) -> Sample:
    """Read every counter once. ``runners``: the daemon's runner status; without one, the
    runners' records and the counts they report are read from the state directory."""
    at = time.monotonic()
    try:
        listing = kernel.listing()
    except KernelError:
        listing = {"nftables": []}
    # a rule's helpers (its rate-limited log rule, "log <id>") are never taken for it, nor a
    # policy's or a ban's (no verdict): only the rules that decide count
    known = {r.id for r in layout.rules}
    rules: dict[str, list[int]] = {}
    policies = {h: [0, 0] for h in layout.drop_hooks}
    drops: dict[str, list[int]] = {}
    queued: dict[str, list[int]] = {}
    for rule in table.items(listing, "rule"):
        chain = names.parse(rule.get("chain", ""))
        if chain is None:
            continue
        packets, nbytes = table.counted(rule)
        into = None
        if chain.kind is names.Kind.RULES:
            rid = rule_id_of_comment(rule.get("comment"))
            into = rules.setdefault(rid, [0, 0]) if rid in known else None
        elif chain.kind is names.Kind.POLICY and _drops(rule):
            into = policies.setdefault(chain.hook.value, [0, 0])
        elif chain.kind in (names.Kind.BANS, names.Kind.BANS_BY_VERSION) and _drops(rule):
            owner = ksets.owner_of(_lookup(rule) or "")
            into = drops.setdefault(owner, [0, 0]) if owner else None
        elif chain.kind is names.Kind.HOOK_FUNCTION:
            into = queued.setdefault(f"{chain.queue}:{chain.function}", [0, 0])
        if into is not None:
            into[0] += packets
            into[1] += nbytes
    merged = {rid: [0, 0] for owners in layout.run_sets.values() for rid in owners.values()}
    for name, owners in layout.run_sets.items():
        try:
            elements = kernel.element_counters(name)
        except KernelError:
            continue
        for key, flags, packets, nbytes in elements:
            rid = None if flags & INTERVAL_END else owners.get(key)
            if rid is not None:
                merged[rid][0] += packets
                merged[rid][1] += nbytes
    rules.update(merged)
    if runners is None:
        runners = local_runners(state_dir)
    return Sample(at=at, up=table.exists(listing),
                  rules={k: (v[0], v[1]) for k, v in rules.items()},
                  policies={k: (v[0], v[1]) for k, v in policies.items()},
                  sets=_sets(state_dir, drops),
                  hooks=_hooks(state_dir, queued), runners=tuple(runners),
                  queues=queuestats.read(), kernel_hooks=_kernel_hooks(state_dir))


def _kernel_hooks(state_dir: Path) -> tuple[tuple[str, str, int, int, int, int], ...]:
    from .khooks import status
    try:
        found = status(state_dir)
    except MinifwError:  # a damaged record: status says so; a scrape goes on without it
        return ()
    return tuple((k.function, k.hook, k.priority, k.packets, k.drops, k.log_lost or 0)
                 for k in found
                 if k.where == "kernel" and k.packets is not None)


def _drops(rule: dict[str, Any]) -> bool:
    return any(isinstance(e, dict) and "drop" in e for e in rule.get("expr", []))


def _lookup(rule: dict[str, Any]) -> str | None:
    for expr in rule.get("expr", []):
        right = expr.get("match", {}).get("right") if isinstance(expr, dict) else None
        if isinstance(right, str) and right.startswith("@"):
            return right[1:]
    return None


def _sets(state_dir: Path, drops: dict[str, list[int]]) -> dict[str, SetInfo]:
    """Each named set's live size from the record's tally (never its elements)."""
    record = SetStore(state_dir, may_create=lambda: False)  # a reading creates nothing
    try:
        at = now()
        sizes = {n: record.counts(n, at)["elements"] for n in record.names()}
    except MinifwError:
        sizes = {}
    finally:
        record.close()
    return {n: SetInfo(n, sizes.get(n, 0), *drops.get(n, (0, 0)))
            for n in sorted({*sizes, *drops})}


def _hooks(state_dir: Path, queued: dict[str, list[int]]) -> dict[str, HookInfo]:
    where = {q.queue: (q, r.file) for r in hookstate.records(state_dir) for q in r.queues}
    out = {}
    for key, (packets, nbytes) in sorted(queued.items()):
        queue, function = int(key.split(":", 1)[0]), key.split(":", 1)[1]
        rec, file = where.get(queue, (None, None))
        out[function] = HookInfo(function, queue, rec.hook if rec else None,
                                 rec.priority if rec else None, file, packets, nbytes)
    return out


def local_runners(state_dir: Path) -> list[dict[str, Any]]:
    """Runner status without a daemon: each runner record, alive or not, with the counts its
    runner last reported (when it reports them)."""
    read_stats = getattr(hookstate, "read_stats", None)
    out = []
    for r in hookstate.records(state_dir):
        if r.damaged:
            continue
        stats = (read_stats(state_dir, r.pid) if read_stats and r.alive else None) or {}
        out.append({"file": r.file, "state": "running" if r.alive else "failed", "pid": r.pid,
                    "restarts": None, "packets": stats.get("packets"),
                    "drops": stats.get("drops"), "errors": stats.get("errors")})
    return out


class Sampler:
    """Readings of one state directory's counters, for ``top``: the layout comes from the
    applied ruleset once; ``runners`` (the daemon's, when one runs) is asked at each reading."""

    def __init__(self, state_dir: Path, kernel: seam.Kernel | None = None,
                 runners: Callable[[], list[dict[str, Any]] | None] | None = None):
        from ..store.state import Store
        self.state_dir = Path(state_dir)
        self.kernel = kernel or seam.default()
        self.runners = runners or (lambda: None)
        store = Store(self.state_dir)
        self._stamp = _stamp(store.file)
        state = store.load()  # a state directory minifw cannot use is an error, as for status
        ruleset = Ruleset()
        if state.loaded:
            try:
                ruleset = Ruleset.from_toml(state.ruleset)
            except MinifwError as exc:
                raise StateError(f"{store.file} is damaged: its ruleset does not load "
                                 f"({exc})") from None
        self.layout = Layout.of(ruleset)

    def labels(self) -> dict[str, dict[str, Any]]:
        """rule id -> its hook, priority and action."""
        return {r.id: {"hook": r.hook, "priority": r.priority, "action": r.action}
                for r in self.layout.rules}

    def sample(self) -> Sample:
        return read(self.kernel, self.state_dir, self.layout, self.runners())

    def stale(self) -> bool:
        """Whether the applied ruleset changed since (state.json was rewritten)."""
        from ..store.state import Store
        return _stamp(Store(self.state_dir).file) != self._stamp


def _stamp(path: Any) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


def latest_events(state_dir: Path, count: int) -> list[dict[str, Any]]:
    """The last ``count`` events of events.jsonl and its rotated files, oldest first."""
    from ..events.files import EventFilter, events_path, read_events
    return read_events(events_path(state_dir), EventFilter(), last=count)
