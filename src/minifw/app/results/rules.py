"""Results of the whole-ruleset operations, rule edits, status and list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ...model.types import HookPoint, point_order
from .base import Outcome, _frozen

if TYPE_CHECKING:
    from ...runners.hookstate import HookProblem, HookStatus
    from ...model import Ruleset
    from .pending import PendingChange, RollbackRecord
    from .sets import SetSummary

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
    guard: tuple[str, ...] = ()   # the lockout guard's findings, one line each (never refused)
    lint: tuple[Any, ...] = ()    # app.lint.Located: the lint's findings

    def to_json(self) -> dict[str, Any]:
        # the document stays what nft -j -f takes; the guard's and lint's lines ride beside it
        out = {**self.document, "guard": list(self.guard)} if self.guard else self.document
        return {**out, "lint": [f.to_json() for f in self.lint]} if self.lint else out


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
    type: str = "filter"   # a nat chain translates addresses rather than filter

    @classmethod
    def select(cls, chains: Iterable[Mapping[str, Any]], hooks: Iterable[str],
               families: Iterable[str] | None = None) -> list["ForeignChain"]:
        """The base chains (``table.base_chains()`` entries) of tables other than minifw's at
        ``hooks`` (and of ``families``, if given)."""
        from ...compile.nft import FAMILY, TABLE

        wanted = set(hooks)
        fams = set(families) if families is not None else None
        return [cls(family=c["family"], table=c["table"], chain=c["name"], hook=c["hook"],
                    priority=c.get("prio"), type=c.get("type", "filter"))
                for c in chains
                if (c.get("family"), c.get("table")) != (FAMILY, TABLE)
                and c.get("hook") in wanted and (fams is None or c.get("family") in fams)]

    def warning(self, consequence: str = "it can drop what minifw accepts") -> str:
        kind = ""
        if self.type == "nat":  # minifw's own [[nat]] does the same in inet minifw
            kind, consequence = "nat ", ("it translates addresses outside minifw (minifw's "
                                         "[[nat]] can do it instead, and explain then knows of it)")
        return (f"table {self.family} {self.table} has {kind}base chain {self.chain} at "
                f"{self.hook} priority {self.priority}: {consequence}")

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "table": self.table, "chain": self.chain,
                "hook": self.hook, "priority": self.priority}


@_frozen
class FailsafeInfo:
    """``up`` fell back (store/lastgood.py): ``config`` failed with ``error`` at ``since``;
    ``last_good_at``/``last_good_config``/``last_good_rules`` describe the last good ruleset
    (None: there was none, or ``load_error`` says why it could not be used or loaded);
    ``running``: it is in the kernel now. Times are ISO 8601, UTC."""

    since: str
    config: str
    error: str
    running: bool
    last_good_at: str | None = None
    last_good_config: str | None = None
    last_good_rules: int | None = None
    load_error: str | None = None
    hook_files_not_started: tuple[str, ...] = ()

    def line(self) -> str:
        """What ``status`` prints, in one line."""
        if self.running:
            return (f"failsafe: running the last good ruleset from {self.last_good_at}, "
                    f"config error: {self.error}")
        if self.last_good_at is not None:
            what = (f"the last good ruleset from {self.last_good_at} is not loaded"
                    + (f" ({self.load_error})" if self.load_error else ""))
        elif self.load_error:
            what = f"the last good ruleset cannot be used ({self.load_error})"
        else:
            what = "no last good ruleset exists"
        return f"failsafe: {what}, nothing is loaded, config error: {self.error}"

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "config": self.config, "error": self.error,
                "running": self.running,
                "last_good": None if self.last_good_at is None else {
                    "at": self.last_good_at, "config": self.last_good_config,
                    "rules": self.last_good_rules},
                "load_error": self.load_error,
                "hook_files_not_started": list(self.hook_files_not_started)}


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
    failsafe: FailsafeInfo | None = None   # ``up`` fell back to the last good ruleset (or none)
    pending: "PendingChange | None" = None       # a change waiting for 'minifw confirm'
    rolled_back: "RollbackRecord | None" = None  # the last change rolled back
    # what a running daemon says of itself and its runners (the control socket's ``status``)
    daemon: Mapping[str, Any] | None = None
    runners: tuple[Mapping[str, Any], ...] = ()
    # every [[hook]] function's place (kernel or queue) and reason; kernel ones' counts
    kernel_hooks: tuple[Any, ...] = ()

    @property
    def sets(self) -> int:
        return len(self.set_elements)

    @property
    def in_force(self) -> bool:
        """The firewall runs as asked: no table gone from under it, no hook not running, not
        in failsafe."""
        return not self.table_missing and not self.hook_problems and self.failsafe is None

    def to_json(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "config": self.config, "policies": dict(self.policies),
                "stateful": self.stateful, "chains": [c.to_json() for c in self.chains],
                "rules": self.rules, "sets": self.sets,
                "set_elements": [s.to_json() for s in self.set_elements],
                "foreign_chains": [f.to_json() for f in self.foreign_chains],
                "warnings": list(self.warnings), "table_missing": self.table_missing,
                "hooks": [h.to_json() for h in self.hooks],
                "hook_problems": [p.to_json() for p in self.hook_problems],
                "failsafe": None if self.failsafe is None else self.failsafe.to_json(),
                "pending": self.pending.to_json() if self.pending else None,
                "rolled_back": self.rolled_back.to_json() if self.rolled_back else None,
                "daemon": None if self.daemon is None else dict(self.daemon),
                "kernel_hooks": [k.to_json() for k in self.kernel_hooks],
                **({"runners": [dict(r) for r in self.runners]} if self.daemon else {})}


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
class BanCounter:
    """What the ban chain dropped for a set (the set ``blocked``)."""

    set: str
    hook: str
    priority: int
    packets: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "hook": self.hook, "priority": self.priority,
                "packets": self.packets, "bytes": self.bytes}


@_frozen
class RuleListing:
    """``list``: the live rules in evaluation order. ``policies`` and ``bans`` are None when
    minifw is not up; ``bans`` is empty while the ban chain is not there."""

    rules: tuple[ListedRule, ...] = ()
    policies: tuple[PolicyCounter, ...] | None = None
    bans: tuple[BanCounter, ...] | None = None
    kernel_hooks: tuple[Any, ...] = ()   # app.khooks.KernelHookStatus of kernel functions

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rules": [r.to_json() for r in self.rules]}
        if self.policies is not None:
            out["policies"] = [p.to_json() for p in self.policies]
        if self.bans is not None:
            out["bans"] = [b.to_json() for b in self.bans]
        if self.kernel_hooks:
            out["kernel_hooks"] = [k.to_json() for k in self.kernel_hooks]
        return out
