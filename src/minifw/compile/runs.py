"""Rule lists compiled for speed: runs of look-alike rules become one set lookup. Pure.

A *run* is ``MIN_RUN`` or more consecutive rules of one chain that are identical except for one
field (src, dst, sport or dport), with action accept or drop and no log or limit. Every rule of a
run has the same verdict, so "the first rule that matches" and "any rule matches" decide the same:
the run compiles into one nft rule per IP version, ``<field> @r_<chain>_<n>[_v4|_v6] ... verdict``,
over a named set with per-element counters. Values shared by two rules of a run, or overlapping
ranges, end the run (the kernel refuses overlapping interval elements). Users still see, count and
delete the rules one by one: ``element_owners`` maps each element back to its rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from ..model.rule import PortRange, Rule
from ..model.setdefs import SetRef
from ..model.types import Action

MIN_RUN = 8
FIELDS = ("src", "dst", "sport", "dport")
_PAYLOAD_FIELD = {"src": "saddr", "dst": "daddr", "sport": "sport", "dport": "dport"}


@dataclasses.dataclass(frozen=True)
class Run:
    field: str
    rules: tuple[Rule, ...]


Item = Rule | Run


_SHAPES: dict[tuple[int, str], tuple[Rule, Any]] = {}  # by rule identity (the rule held)


def shape(rule: Rule, field: str) -> Any:
    """Everything of the rule but its id, comment and ``field``: equal in a run. Remembered:
    a reload plans the chains of the old and the new ruleset, which share their Rule objects."""
    known = _SHAPES.get((id(rule), field))
    if known is not None and known[0] is rule:
        return known[1]
    if len(_SHAPES) > 200_000:
        _SHAPES.clear()
    value = _shape(rule, field)
    _SHAPES[(id(rule), field)] = (rule, value)
    return value


def _shape(rule: Rule, field: str) -> Any:
    body = rule.to_toml()
    for key in ("id", "comment", field):
        body.pop(key, None)
    return repr(sorted(body.items()))


def _mergeable(rule: Rule, field: str) -> bool:
    values = getattr(rule, field)
    return (rule.action in (Action.ACCEPT, Action.DROP) and rule.log is None
            and rule.limit is None and bool(values)
            and not any(isinstance(v, SetRef) for v in values))


def _spans(rule: Rule, field: str) -> list[tuple[int, int, int]]:
    """(kind, lo, hi) of each value: kind is 4 or 6 for addresses, 0 for ports."""
    out = []
    for v in getattr(rule, field):
        if isinstance(v, PortRange):
            out.append((0, v.lo, v.hi))
        else:
            out.append((v.version, int(v.network_address), int(v.broadcast_address)))
    return out


class _Spans:
    """Non-overlapping value ranges seen so far in a run (sorted per kind, bisect-free for speed:
    a dict of exact singletons plus a list of ranges, which stay few in practice)."""

    def __init__(self):
        self.points: set[tuple[int, int]] = set()
        self.ranges: list[tuple[int, int, int]] = []

    def clashes(self, spans: list[tuple[int, int, int]]) -> bool:
        local = _Spans()
        for kind, lo, hi in spans:
            for other in (self, local):
                if lo == hi and (kind, lo) in other.points:
                    return True
                if any(k == kind and lo <= h and l <= hi for k, l, h in other.ranges):
                    return True
                if lo != hi and any(k == kind and lo <= p <= hi for k, p in other.points):
                    return True
            local.add(kind, lo, hi)
        return False

    def add(self, kind: int, lo: int, hi: int) -> None:
        if lo == hi:
            self.points.add((kind, lo))
        else:
            self.ranges.append((kind, lo, hi))


_PLANS: list[tuple[tuple[Rule, ...], int, list[Item]]] = []  # the latest plans made


def plan_chain(rules: list[Rule], min_run: int = MIN_RUN) -> list[Item]:
    """The chain's rules, with runs of at least ``min_run`` look-alike rules grouped.

    A reload plans the same chains several times (counters to carry, the load): the last few
    plans are remembered by the identity of their rules (held, so identities stay theirs)."""
    for held, size, plan in _PLANS:
        if size == min_run and len(held) == len(rules) and all(
                a is b for a, b in zip(held, rules)):
            return list(plan)
    plan = _plan(rules, min_run)
    _PLANS[:] = [(tuple(rules), min_run, plan)] + _PLANS[:7]
    return list(plan)


def _plan(rules: list[Rule], min_run: int) -> list[Item]:
    items: list[Item] = []
    i = 0
    while i < len(rules):
        best: tuple[str, int] | None = None
        for field in FIELDS:
            if not _mergeable(rules[i], field):
                continue
            first = shape(rules[i], field)
            seen = _Spans()
            j = i
            while (j < len(rules) and _mergeable(rules[j], field)
                   and shape(rules[j], field) == first):
                spans = _spans(rules[j], field)
                if seen.clashes(spans):
                    break
                for span in spans:
                    seen.add(*span)
                j += 1
            if j - i >= min_run and (best is None or j - i > best[1] - i):
                best = (field, j)
        if best is None:
            items.append(rules[i])
            i += 1
        else:
            items.append(Run(best[0], tuple(rules[i:best[1]])))
            i = best[1]
    return items


def has_runs(rules: list[Rule]) -> bool:
    return any(isinstance(item, Run) for item in plan_chain(rules))


# ---- compilation ----------------------------------------------------------------------------

def run_set_name(chain: str, index: int, version: int | None) -> str:
    return f"r_{chain}_{index}" + ("" if version is None else f"_v{version}")


def parse_run_set_name(name: str) -> tuple[str, int, int | None] | None:
    """(chain, index, IP version or None) of a ``run_set_name``; None if it is not one."""
    if not name.startswith("r_"):
        return None
    body, version = name[2:], None
    if body.endswith(("_v4", "_v6")):
        body, version = body[:-3], int(body[-1])
    chain, _, index = body.rpartition("_")
    if not chain or not index.isdigit() or index != str(int(index)):
        return None
    return chain, int(index), version


def is_run_set(name: str, chain: str | None = None) -> bool:
    return name.startswith(f"r_{chain}_" if chain else "r_")


def element_of(value: Any) -> Any:
    """The nft JSON element for one value of a run."""
    if isinstance(value, PortRange):
        return value.lo if value.lo == value.hi else {"range": [value.lo, value.hi]}
    full = 32 if value.version == 4 else 128
    if value.prefixlen == full:
        return str(value.network_address)
    return {"prefix": {"addr": str(value.network_address), "len": value.prefixlen}}


def element_key(elem: Any) -> str:
    """A hashable key of an element, the same for what we send and what nft lists back."""
    if isinstance(elem, dict) and "elem" in elem:
        elem = elem["elem"]["val"]
    if isinstance(elem, dict) and "prefix" in elem:
        return f"{elem['prefix']['addr']}/{elem['prefix']['len']}"
    if isinstance(elem, dict) and "range" in elem:
        return f"{elem['range'][0]}-{elem['range'][1]}"
    return str(elem)


def element_owners(run: Run) -> dict[str, str]:
    """element key -> id of the rule it came from."""
    return {element_key(element_of(v)): rule.id for rule in run.rules
            for v in getattr(rule, run.field)}


def run_groups(run: Run) -> list[tuple[int | None, list[Any]]]:
    """(IP version or None for ports, values) per backing set of a run."""
    values = [v for rule in run.rules for v in getattr(rule, run.field)]
    if run.field in ("sport", "dport"):
        return [(None, values)]
    return [(ver, [v for v in values if v.version == ver]) for ver in (4, 6)
            if any(v.version == ver for v in values)]


def build_run(run: Run, chain: str, index: int, drop_policy: bool, ref, body_builder,
              comment: str, helper_comment: str | None = None,
              keep: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """``add`` commands: the run's sets (with their elements) and its nft rules.

    ``body_builder(rule, drop_policy)`` gives (helper or None, body) pairs; a helper (the
    capped event log of ``[events] drops``) becomes one rule per run set, before the run's,
    looking the packet up in a shadow set without counters, with the prefix ``run:<set>``.
    ``keep``: run sets left in place with their element counters, each with the elements it
    holds; only the difference is sent (``carry_elements``).
    """
    cmds: list[dict[str, Any]] = []
    for version, values in run_groups(run):
        name = run_set_name(chain, index, version)
        ranged = is_ranged(values)
        if version is None:
            kind = "inet_service"
        else:
            kind = "ipv4_addr" if version == 4 else "ipv6_addr"
        decl = ref(name=name, type=kind, stmt=[{"counter": None}])
        if ranged:
            decl["flags"] = ["interval"]
        elements = [element_of(v) for v in values]
        if keep is not None and name in keep:
            cmds.extend(carry_elements(name, keep[name], elements, ref))
        else:
            cmds.append({"add": {"set": decl}})
            cmds.append({"add": {"element": ref(name=name, elem=elements)}})
        sample = dataclasses.replace(run.rules[0], **{run.field: tuple(values)})
        for helper, body in body_builder(sample, drop_policy):
            if helper is not None:
                shadow = shadow_set_name(name)
                cmds.append({"add": {"set": {k: v for k, v in decl.items() if k != "stmt"}
                                     | {"name": shadow}}})
                cmds.append({"add": {"element": ref(name=shadow, elem=elements)}})
                cmds.append({"add": {"rule": ref(
                    chain=chain, comment=helper_comment or comment,
                    expr=_retarget(_swap(helper, run.field, f"@{shadow}"), f"run:{name}"))}})
            cmds.append({"add": {"rule": ref(chain=chain, comment=comment,
                                             expr=_swap(body, run.field, f"@{name}"))}})
    return cmds


def is_ranged(values: list[Any]) -> bool:
    """Whether a run set of these values needs the interval flag."""
    return any((isinstance(v, PortRange) and v.lo != v.hi)
               or (not isinstance(v, PortRange) and v.num_addresses > 1) for v in values)


def carry_elements(name: str, held: list[Any], wanted: list[Any], ref) -> list[dict[str, Any]]:
    """Commands that turn the kept set ``name`` from ``held`` into ``wanted`` elements:
    elements in both are not touched, so their counters run on."""
    have = {element_key(e): e for e in held}
    want = {element_key(e): e for e in wanted}
    gone = [e for k, e in have.items() if k not in want]
    new = [e for k, e in want.items() if k not in have]
    cmds: list[dict[str, Any]] = []
    if gone:
        cmds.append({"delete": {"element": ref(name=name, elem=gone)}})
    if new:
        cmds.append({"add": {"element": ref(name=name, elem=new)}})
    return cmds


def shadow_set_name(name: str) -> str:
    return f"{name}_e"


def _retarget(body: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """``body`` with its NFLOG statement's prefix set to ``prefix``."""
    return [{"log": {**e["log"], "prefix": prefix}} if isinstance(e, dict) and "group" in
            e.get("log", {}) else e for e in body]


def _swap(body: list[dict[str, Any]], field: str, right: str) -> list[dict[str, Any]]:
    """``body`` with its ``field`` match turned into a lookup of ``right``, moved after the
    rule's other matches: a set's element counter runs on every lookup that finds the element,
    so a lookup ahead of a match that then fails would count packets the rule never took."""
    wanted = _PAYLOAD_FIELD[field]
    out = []
    lookup = None
    for expr in body:
        match = expr.get("match") if isinstance(expr, dict) else None
        left = match.get("left") if match else None
        if isinstance(left, dict) and left.get("payload", {}).get("field") == wanted:
            lookup = {"match": {**match, "right": right}}
            continue
        out.append(expr)
    if lookup is not None:
        at = next((i for i, e in enumerate(out) if not (isinstance(e, dict) and "match" in e)),
                  len(out))
        out.insert(at, lookup)
    return out


def run_comment(run: Run, index: int) -> str:
    return f"run {index}: {run.rules[0].id} .. {run.rules[-1].id}"[:127]


def sets_of(chain: str, names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if is_run_set(n, chain))
