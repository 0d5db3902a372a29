"""What the operations return: one frozen dataclass per kind of answer.

Each result's ``to_json()`` is what ``--json`` prints for it, so the CLI and the Python API
give the same data. Results that only report (up, down, ...) carry a ``message`` and
``warnings`` for the CLI to print, and typed fields for programs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..model.types import HookPoint, point_order

if TYPE_CHECKING:
    from ..daemon.hookstate import HookProblem, HookStatus
    from ..engine.explain import Explanation, Probe, Step
    from ..model import Ruleset

_frozen = dataclasses.dataclass(frozen=True, kw_only=True)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an operation did, said in one message (and warnings), for the CLI to print."""

    message: str
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "warnings": list(self.warnings)}


# ---- whole-ruleset operations ---------------------------------------------------------------

@_frozen
class Loaded(Outcome):
    """``up`` or ``reload``: the config now in force."""

    config: str
    rules: int
    hook_files: int = 0
    changed: bool = True   # False: ``up`` found it already loaded


@_frozen
class Unloaded(Outcome):
    """``down``: ``removed`` is False when minifw was not loaded."""

    removed: bool


@_frozen
class Checked:
    """``check``: the parsed ruleset and the nftables document a load would send."""

    ruleset: "Ruleset"
    document: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.document


# ---- rule edits -------------------------------------------------------------------------------

@_frozen
class RuleAdded(Outcome):
    id: str
    point: HookPoint
    saved_to: str | None   # the config file, or None for a runtime-only rule

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}


@_frozen
class RuleDeleted(Outcome):
    id: str
    saved_to: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}


# ---- reads: status and list -------------------------------------------------------------------

@_frozen
class ChainInfo:
    """One base chain of table inet minifw, as the kernel has it."""

    hook: str
    priority: int | None
    chain: str
    kind: str              # rules | policy | bans | hook-function | flow-cache | other
    rules: int | None      # for kind "rules": how many rules the ruleset puts there

    def to_json(self) -> dict[str, Any]:
        return {"hook": self.hook, "priority": self.priority, "chain": self.chain,
                "kind": self.kind, "rules": self.rules}


def chains_in_order(chains: Iterable[ChainInfo]) -> list[ChainInfo]:
    return sorted(chains, key=lambda c: point_order(c.hook, c.priority))


@_frozen
class ForeignChain:
    """A base chain of another table at a hook minifw uses: it can drop what minifw accepts."""

    family: str
    table: str
    chain: str
    hook: str
    priority: int | None

    @classmethod
    def select(cls, chains: Iterable[Mapping[str, Any]], hooks: Iterable[str],
               families: Iterable[str] | None = None) -> list["ForeignChain"]:
        """The base chains (``table.base_chains()`` entries) of tables other than minifw's at
        ``hooks`` (and of ``families``, if given)."""
        from ..compile.nft import FAMILY, TABLE

        wanted = set(hooks)
        fams = set(families) if families is not None else None
        return [cls(family=c["family"], table=c["table"], chain=c["name"], hook=c["hook"],
                    priority=c.get("prio"))
                for c in chains
                if (c.get("family"), c.get("table")) != (FAMILY, TABLE)
                and c.get("hook") in wanted and (fams is None or c.get("family") in fams)]

    def warning(self, consequence: str = "it can drop what minifw accepts") -> str:
        return (f"table {self.family} {self.table} has base chain {self.chain} at {self.hook} "
                f"priority {self.priority}: {consequence}")

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "table": self.table, "chain": self.chain,
                "hook": self.hook, "priority": self.priority}


@_frozen
class SetSummary:
    """A named set's live element counts."""

    name: str
    addresses: int
    cidrs: int
    elements: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "addresses": self.addresses, "cidrs": self.cidrs,
                "elements": self.elements}


@_frozen
class Status:
    loaded: bool                       # minifw is up and its table is in the kernel
    config: str | None
    policies: Mapping[str, str]        # hook -> accept | drop
    stateful: bool
    chains: tuple[ChainInfo, ...]
    rules: int
    set_elements: tuple[SetSummary, ...]
    foreign_chains: tuple[ForeignChain, ...]
    warnings: tuple[str, ...]
    table_missing: bool                # the state says up, the table is gone
    hooks: tuple["HookStatus", ...]    # one per hook function of every runner
    hook_problems: tuple["HookProblem", ...]

    @property
    def sets(self) -> int:
        return len(self.set_elements)

    @property
    def in_force(self) -> bool:
        """The firewall runs as asked: no table gone from under it, no hook not running."""
        return not self.table_missing and not self.hook_problems

    def to_json(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "config": self.config, "policies": dict(self.policies),
                "stateful": self.stateful, "chains": [c.to_json() for c in self.chains],
                "rules": self.rules, "sets": self.sets,
                "set_elements": [s.to_json() for s in self.set_elements],
                "foreign_chains": [f.to_json() for f in self.foreign_chains],
                "warnings": list(self.warnings), "table_missing": self.table_missing,
                "hooks": [h.to_json() for h in self.hooks],
                "hook_problems": [p.to_json() for p in self.hook_problems]}


@_frozen
class ListedRule:
    id: str
    hook: str
    priority: int
    match: Mapping[str, Any]
    action: str
    log: str | None
    comment: str | None
    packets: int
    bytes: int
    runtime: bool          # added with --runtime: not in the config file

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "hook": self.hook, "priority": self.priority,
                "match": dict(self.match), "action": self.action, "log": self.log,
                "comment": self.comment, "packets": self.packets, "bytes": self.bytes,
                "runtime": self.runtime}


@_frozen
class PolicyCounter:
    """What a hook's drop policy dropped."""

    hook: str
    policy: str
    packets: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"hook": self.hook, "policy": self.policy, "packets": self.packets,
                "bytes": self.bytes}


@_frozen
class RuleListing:
    """``list``: the live rules in evaluation order. ``policies`` is None when minifw is
    not up."""

    rules: tuple[ListedRule, ...] = ()
    policies: tuple[PolicyCounter, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rules": [r.to_json() for r in self.rules]}
        if self.policies is not None:
            out["policies"] = [p.to_json() for p in self.policies]
        return out


# ---- sets -------------------------------------------------------------------------------------

@_frozen
class Banned(Outcome):
    set: str
    banned: tuple[str, ...]
    timeout: int | None        # seconds
    apply_ms: float            # time in the kernel transaction

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "banned": list(self.banned), "timeout": self.timeout,
                "apply_ms": self.apply_ms}


@_frozen
class Unbanned(Outcome):
    set: str
    unbanned: tuple[str, ...]
    absent: tuple[str, ...]
    messages: tuple[str, ...]
    apply_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "unbanned": list(self.unbanned), "absent": list(self.absent),
                "messages": list(self.messages), "apply_ms": self.apply_ms}


@_frozen
class Imported(Outcome):
    set: str
    imported: int
    skipped: int
    apply_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "imported": self.imported, "skipped": self.skipped,
                "apply_ms": self.apply_ms}


@_frozen
class Flushed(Outcome):
    set: str
    removed: int

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "removed": self.removed}


@_frozen
class Recovered(Outcome):
    sets: Mapping[str, int]    # set -> elements found in the kernel
    kept: str | None           # where the previous record files were kept

    def to_json(self) -> dict[str, Any]:
        return {"sets": dict(self.sets), "kept": self.kept}


@_frozen
class SetElement:
    element: str
    expires_in: int | None     # seconds left; None: permanent

    def to_json(self) -> dict[str, Any]:
        return {"element": self.element, "expires_in": self.expires_in}


@_frozen
class SetPage:
    """One page of a set's elements. ``page`` counts from 1."""

    set: str
    addresses: int
    cidrs: int
    elements: int
    page: int
    page_size: int
    pages: int
    items: tuple[SetElement, ...]

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "addresses": self.addresses, "cidrs": self.cidrs,
                "elements": self.elements, "page": self.page, "page_size": self.page_size,
                "pages": self.pages, "items": [i.to_json() for i in self.items]}


# ---- explain ----------------------------------------------------------------------------------

@_frozen
class Decider:
    """One rule (or policy, or hook function) that decided packets of a capture."""

    decider: str
    rule: str | None
    decided_by: str
    hook: str
    priority: int
    packets: int
    verdicts: Mapping[str, int]
    first_packet: int

    def to_json(self) -> dict[str, Any]:
        return {"decider": self.decider, "rule": self.rule, "decided_by": self.decided_by,
                "hook": self.hook, "priority": self.priority, "packets": self.packets,
                "verdicts": dict(self.verdicts), "first_packet": self.first_packet}


@_frozen
class CaptureSummary:
    """``explain --pcap``: every packet of a capture explained, summed up by decider."""

    capture: str
    path: str
    packets: int
    explained: int
    skipped: Mapping[str, int]     # reason -> packets
    verdicts: Mapping[str, int]
    deciders: tuple[Decider, ...]  # most packets first
    versions: frozenset[int] = frozenset()   # IP versions seen
    ruleset: str = ""              # which ruleset answered: the live one, or a config file
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"capture": self.capture, "path": self.path, "packets": self.packets,
                "explained": self.explained, "skipped": dict(self.skipped),
                "verdicts": dict(self.verdicts),
                "deciders": [d.to_json() for d in self.deciders]}


@_frozen
class Explained:
    """``explain`` of one packet: the engine's Explanation, which ruleset answered, the
    warnings (other tables' chains at the packet's hooks) and what hook functions logged."""

    explanation: "Explanation"
    ruleset: str
    warnings: tuple[str, ...] = ()
    hook_logs: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return self.explanation.verdict

    @property
    def rule(self) -> str | None:
        return self.explanation.rule

    @property
    def decided_by(self) -> str:
        return self.explanation.decided_by

    @property
    def decider(self) -> str:
        return self.explanation.decider

    @property
    def point(self) -> HookPoint:
        return HookPoint(self.explanation.hook, self.explanation.priority)

    @property
    def probe(self) -> "Probe":
        return self.explanation.probe

    @property
    def trace(self) -> tuple["Step", ...]:
        return self.explanation.trace

    def to_json(self) -> dict[str, Any]:
        return self.explanation.to_json()
