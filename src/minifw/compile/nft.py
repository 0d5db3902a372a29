"""Ruleset -> libnftables JSON commands. Pure: no I/O, deterministic output (golden-tested).

Layout of table ``inet minifw``:
- one base chain per (hook, priority) in use, named ``<hook>_<priority>`` (``m`` for minus);
- one policy chain ``<hook>_policy`` at priority 1000 for each hook whose policy is drop
  (``names`` builds and parses every chain name);
- one named limit object ``limit_<id>`` per rule with a rate limit, so a rule compiled into
  several nft rules (IPv4 + IPv6, TCP reset + ICMP reject) shares one token bucket.

Every nft rule carries a counter and the comment ``<rule id>`` (or ``<rule id>: <comment>``),
which is how minifw finds a rule's handles and counters again.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..model.rule import Network, PortRange, Rule
from ..model.ruleset import Ruleset
from ..model.setdefs import SetRef
from . import names, nat, runs
from .sets import build_set_decls
from .sets import match_alternatives as set_matches
from ..model.types import (
    ND_TYPES, POLICY_PRIORITY, Action, Family, Hook, Proto,
)

TABLE = "minifw"
FAMILY = "inet"
COMMENT_MAX = 127
# From this many elements on, a port list is written as ranges only (a single port as p-p), so
# that its anonymous set is an interval set: as a hash set, 32,767 single ports took nft 1.0.6
# and the kernel 5 s to load, as an interval set 0.4 s. Below it, sets stay as nft writes them.
PORT_INTERVAL_AT = 256

Expr = dict[str, Any]
Command = dict[str, Any]


# ---- names (of chains: names.py) -------------------------------------------------------------

def limit_name(rule_id: str) -> str:
    return f"limit_{rule_id}"


def rule_comment(rule: Rule) -> str:
    text = rule.id if not rule.comment else f"{rule.id}: {rule.comment}"
    raw = text.encode()[:COMMENT_MAX]
    return raw.decode(errors="ignore")


def rule_id_of_comment(comment: str | None) -> str | None:
    if not comment:
        return None
    return comment.split(": ", 1)[0]


# ---- expressions -----------------------------------------------------------------------------

def _match(left: Expr, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def _value_set(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


def _net(net: Network) -> Any:
    full = 32 if net.version == 4 else 128
    if net.prefixlen == full:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def merge_ports(ports: Iterable[PortRange]) -> list[PortRange]:
    """Sorted ranges with overlapping and adjacent ones merged: the same ports, fewest elements.

    A list of every port 1-65535 becomes one range, one interval element: as 65,535 elements,
    the kernel took over 40 s to load it."""
    merged: list[PortRange] = []
    for p in sorted(ports, key=lambda r: (r.lo, r.hi)):
        if merged and p.lo <= merged[-1].hi + 1:
            if p.hi > merged[-1].hi:
                merged[-1] = PortRange(merged[-1].lo, p.hi)
        else:
            merged.append(p)
    return merged


def _ports(ports: Iterable[PortRange]) -> Any:
    merged = merge_ports(ports)
    if len(merged) >= PORT_INTERVAL_AT:  # every element a range: nft makes an interval set
        return {"set": [{"range": [p.lo, p.hi]} for p in merged]}
    return _value_set([p.lo if p.lo == p.hi else {"range": [p.lo, p.hi]} for p in merged])


def _nets_of(nets: Iterable[Network], family: Family) -> list[Network]:
    version = 4 if family is Family.IP else 6
    return [n for n in nets if not isinstance(n, SetRef) and n.version == version]


def _mark_accept(hook: Hook) -> list[Expr]:
    return [{"mangle": {"key": _meta("mark"),
                        "value": {"|": [_meta("mark"), hook.mark_bit]}}},
            {"accept": None}]


def _reject(family: Family | None, tcp: bool) -> Expr:
    if tcp:
        return {"reject": {"type": "tcp reset"}}
    kind = {Family.IP: "icmp", Family.IP6: "icmpv6"}.get(family, "icmpx")  # type: ignore[arg-type]
    return {"reject": {"type": kind, "expr": "port-unreachable"}}


def build_rule_bodies(rule: Rule, drop_policy: bool) -> list[list[Expr]]:
    """The expression lists of the nft rules one minifw rule compiles into, in order."""
    families = rule.families
    split = not (families == (Family.IP, Family.IP6) and not rule.src and not rule.dst)
    variants: list[Family | None] = list(families) if split else [None]
    bodies = []
    for family in variants:
        # A set reference matches through two lookups (hash, interval): one nft rule per pair.
        alternatives: list[list[Expr]] = [[]]
        addressed = False
        for key, field in (("src", "saddr"), ("dst", "daddr")):
            nets = getattr(rule, key)
            if nets and family is not None:
                version = 4 if family is Family.IP else 6
                if isinstance(nets[0], SetRef):
                    lookups = set_matches(nets[0].name, field, version)
                    alternatives = [alt + [m] for alt in alternatives for m in lookups]
                else:
                    proto = "ip" if family is Family.IP else "ip6"
                    chosen = [_net(n) for n in _nets_of(nets, family)]
                    for alt in alternatives:
                        alt.append(_match(_payload(proto, field), _value_set(chosen)))
                addressed = True
        if family is not None and not addressed:
            nfproto = "ipv4" if family is Family.IP else "ipv6"
            alternatives[0].insert(0, _match(_meta("nfproto"), nfproto))
        for matches in alternatives:
            bodies.extend(_finish_bodies(rule, family, drop_policy, matches))
    return bodies


def _finish_bodies(rule: Rule, family: Family | None, drop_policy: bool,
                   matches: list[Expr]) -> list[list[Expr]]:
    bodies = []
    if rule.proto is not Proto.ANY:
        matches.append(_match(_meta("l4proto"), rule.proto.number))
    if rule.sport:
        matches.append(_match(_payload(rule.proto.value, "sport"), _ports(rule.sport)))
    if rule.dport:
        matches.append(_match(_payload(rule.proto.value, "dport"), _ports(rule.dport)))
    if rule.icmp_type:
        matches.append(_match(_payload(rule.proto.value, "type"),
                              _value_set(list(rule.icmp_type))))
    if rule.iif:
        matches.append(_match(_meta("iifname"), _value_set(list(rule.iif))))
    if rule.oif:
        matches.append(_match(_meta("oifname"), _value_set(list(rule.oif))))
    if rule.state:
        matches.append(_match({"ct": {"key": "state"}}, _value_set(list(rule.state))))
    for tail in _action_tails(rule, family, drop_policy):
        bodies.append(tail(matches))
    return bodies


def _action_tails(rule: Rule, family: Family | None, drop_policy: bool):
    """One or two finishers: reject of 'any' proto needs a TCP reset rule and an ICMP one."""
    def finish(extra: list[Expr], verdict: list[Expr]):
        def tail(matches: list[Expr]) -> list[Expr]:
            body = list(matches) + extra
            if rule.limit is not None:
                body.append({"limit": limit_name(rule.id)})
            body.append({"counter": None})
            if rule.log is not None:
                body.append({"log": {"prefix": log_prefix(rule.log)}})
            return body + verdict
        return tail

    if rule.action is Action.ACCEPT:
        return [finish([], _mark_accept(rule.hook) if drop_policy else [{"accept": None}])]
    if rule.action is Action.DROP:
        return [finish([], [{"drop": None}])]
    if rule.action is Action.LOG:
        return [finish([], [])]
    if rule.proto is Proto.TCP:
        return [finish([], [_reject(family, tcp=True)])]
    if rule.proto is Proto.ANY:
        return [finish([_match(_meta("l4proto"), Proto.TCP.number)], [_reject(family, tcp=True)]),
                finish([], [_reject(family, tcp=False)])]
    return [finish([], [_reject(family, tcp=False)])]


def log_prefix(text: str) -> str:
    """The kernel prints the prefix right before "IN=...": end it with a space if there is room."""
    if not text[-1].isspace() and len(text.encode()) < 127:
        return text + " "
    return text


# ---- commands --------------------------------------------------------------------------------

def _ref(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **kw}


def _base_chain(name: str, hook: Hook, priority: int) -> Command:
    return {"chain": _ref(name=name, type="filter", hook=hook.value, prio=priority,
                          policy="accept")}


def build_table() -> Command:
    return {"add": {"table": {"family": FAMILY, "name": TABLE}}}


def build_nft_rules(rule: Rule, ruleset: Ruleset) -> list[dict[str, Any]]:
    """The ``rule`` objects (without handles) that ``rule`` compiles into."""
    chain = names.rule_chain(rule.hook, rule.priority)
    drop = ruleset.policy(rule.hook) is Action.DROP
    return [{"rule": _ref(chain=chain, expr=body, comment=rule_comment(rule))}
            for body in build_rule_bodies(rule, drop)]


def build_limit(rule: Rule) -> dict[str, Any]:
    assert rule.limit is not None
    obj = _ref(name=limit_name(rule.id), rate=rule.limit.rate, per=rule.limit.unit)
    if rule.limit.burst is not None:
        obj["burst"] = rule.limit.burst
    return {"limit": obj}


def build_policy_rules(hook: Hook, stateful: bool) -> list[dict[str, Any]]:
    """Rules of a drop policy chain: stateful accepts, then accept what a rule accepted, else drop."""
    chain = names.policy_chain(hook)
    bodies: list[list[Expr]] = []
    if stateful:
        bodies.append([_match({"ct": {"key": "state"}}, {"set": ["established", "related"]}),
                       {"accept": None}])
        if hook in (Hook.PREROUTING, Hook.INPUT):
            bodies.append([_match(_meta("iifname"), "lo"), {"accept": None}])
        elif hook in (Hook.OUTPUT, Hook.POSTROUTING):
            bodies.append([_match(_meta("oifname"), "lo"), {"accept": None}])
        bodies.append([_match(_meta("l4proto"), Proto.ICMPV6.number),
                       _match(_payload("icmpv6", "type"), {"set": list(ND_TYPES)}),
                       {"accept": None}])
    bodies.append([_match({"&": [_meta("mark"), hook.mark_bit]}, 0, op="!="), {"accept": None}])
    bodies.append([{"counter": None}, {"drop": None}])
    return [{"rule": _ref(chain=chain, expr=body, comment=f"policy {hook.value}")}
            for body in bodies]


def build_load(ruleset: Ruleset, existing_chains: Iterable[str] = (),
               existing_limits: Iterable[str] = (),
               existing_sets: Iterable[str] = ()) -> dict[str, Any]:
    """ONE transaction that replaces the declarative chains and limits of ``inet minifw``.

    Chains that are not declarative (hook functions) are left untouched; the table is never
    deleted, so they survive a reload.
    """
    cmds: list[Command] = [build_table()]
    wanted: dict[str, Command] = {}
    for (hook, priority), _ in ruleset.chains():
        name = names.rule_chain(hook, priority)
        wanted[name] = _base_chain(name, hook, priority)
    for hook in ruleset.drop_hooks:
        name = names.policy_chain(hook)
        wanted[name] = _base_chain(name, hook, POLICY_PRIORITY)
    wanted.update(nat.wanted_chains(ruleset))
    existing = [c for c in existing_chains if names.is_declarative(c)]
    for name in sorted(existing):
        cmds.append({"flush": {"chain": _ref(name=name)}})
        if name not in wanted:
            cmds.append({"delete": {"chain": _ref(name=name)}})
    for name in sorted(existing_limits):
        cmds.append({"delete": {"limit": _ref(name=name)}})
    # Run sets belong to the flushed chains; named sets (and their elements) are kept.
    cmds.extend({"delete": {"set": _ref(name=n)}} for n in sorted(existing_sets)
                if runs.is_run_set(n))
    for name in ruleset.set_names():
        cmds.extend(build_set_decls(name))
    for name, chain in wanted.items():
        cmds.append({"add": chain})
    for (hook, priority), rules in ruleset.chains():
        cmds.extend(build_chain_rules(names.rule_chain(hook, priority), rules, ruleset))
    cmds.extend(nat.build_nat_load(ruleset, build_rule_bodies))
    cmds.extend(nat.build_policy_accepts(ruleset))  # first in their policy chains
    for hook in ruleset.drop_hooks:
        cmds.extend({"add": r} for r in build_policy_rules(hook, ruleset.stateful))
    return {"nftables": cmds}


def expected_layout(document: dict[str, Any]) -> dict[str, list[str | None]]:
    """What declarative_layout() reads back once ``document`` (a build_load) is applied: each
    declarative chain with its rules' comments, in order."""
    layout: dict[str, list[str | None]] = {}
    for cmd in document["nftables"]:
        added = cmd.get("add", {})
        if "chain" in added and names.is_declarative(added["chain"]["name"]):
            layout.setdefault(added["chain"]["name"], [])
        elif "rule" in added and names.is_declarative(added["rule"]["chain"]):
            layout.setdefault(added["rule"]["chain"], []).append(added["rule"].get("comment"))
    return layout


def build_chain_rules(chain: str, rules: list[Rule], ruleset: Ruleset) -> list[Command]:
    """``add`` commands for one chain's rules, runs of look-alike rules merged into set lookups."""
    drop = ruleset.policy(rules[0].hook) is Action.DROP if rules else False
    cmds: list[Command] = []
    for index, item in enumerate(runs.plan_chain(rules)):
        if isinstance(item, runs.Run):
            cmds.extend(runs.build_run(item, chain, index, drop, _ref, build_rule_bodies,
                                       runs.run_comment(item, index)))
            continue
        if item.limit is not None:
            cmds.append({"add": build_limit(item)})
        cmds.extend({"add": r} for r in build_nft_rules(item, ruleset))
    return cmds


def build_chain_rebuild(chain: str, rules: list[Rule], ruleset: Ruleset, exists: bool,
                        existing_sets: Iterable[str], dropped: Iterable[Rule] = ()) -> dict[str, Any]:
    """ONE transaction that refills one chain: how ``add``/``delete`` edit a chain with runs."""
    cmds: list[Command] = []
    if exists:
        cmds.append({"flush": {"chain": _ref(name=chain)}})
    cmds.extend({"delete": {"set": _ref(name=n)}} for n in runs.sets_of(chain, existing_sets))
    cmds.extend({"delete": {"limit": _ref(name=limit_name(r.id))}} for r in dropped
                if r.limit is not None)
    if rules:
        if not exists:
            cmds.append({"add": _base_chain(chain, rules[0].hook, rules[0].priority)})
        for r in rules:  # limits of surviving rules were flushed with nothing: re-add is a no-op
            if r.limit is not None:
                cmds.append({"add": build_limit(r)})
        cmds.extend(c for c in build_chain_rules(chain, rules, ruleset)
                    if "limit" not in c.get("add", {}))
    elif exists:
        cmds.append({"delete": {"chain": _ref(name=chain)}})
    return {"nftables": cmds}


def build_add(rule: Rule, ruleset: Ruleset, chain_exists: bool,
              before_handle: int | None) -> dict[str, Any]:
    """Add one rule to the live table: before the nft rule ``before_handle``, or at the chain's end.

    ``ruleset`` is the ruleset the rule joins (it decides whether accept sets the policy mark).
    """
    cmds: list[Command] = []
    for ref in dict.fromkeys(r.name for r in rule.src + rule.dst if isinstance(r, SetRef)):
        cmds.extend(build_set_decls(ref))  # idempotent: a loaded set keeps its elements
    if not chain_exists:
        name = names.rule_chain(rule.hook, rule.priority)
        cmds.append({"add": _base_chain(name, rule.hook, rule.priority)})
    if rule.limit is not None:
        cmds.append({"add": build_limit(rule)})
    for nft_rule in build_nft_rules(rule, ruleset):
        if before_handle is None:
            cmds.append({"add": nft_rule})
        else:
            nft_rule["rule"]["handle"] = before_handle
            cmds.append({"insert": nft_rule})
    return {"nftables": cmds}


def build_delete(rule: Rule, handles: Iterable[int], delete_chain: bool) -> dict[str, Any]:
    chain = names.rule_chain(rule.hook, rule.priority)
    cmds: list[Command] = [{"delete": {"rule": _ref(chain=chain, handle=h)}} for h in handles]
    if delete_chain:
        cmds.append({"delete": {"chain": _ref(name=chain)}})
    if rule.limit is not None:
        cmds.append({"delete": {"limit": _ref(name=limit_name(rule.id))}})
    return {"nftables": cmds}


def build_down() -> dict[str, Any]:
    return {"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]}

