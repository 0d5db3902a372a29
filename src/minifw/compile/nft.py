"""Ruleset -> libnftables JSON commands. Pure: no I/O, deterministic output (golden-tested).

Layout of table ``inet minifw``:
- one base chain per (hook, priority) in use, named ``<hook>_<priority>`` (``m`` for minus);
- one policy chain ``<hook>_policy`` at priority 1000 for each hook whose policy is drop
  (``names`` builds and parses every chain name);
- one named limit object ``limit_<id>`` per rule with a rate limit, so a rule compiled into
  several nft rules (IPv4 + IPv6, TCP reset + ICMP reject) shares one token bucket.

Every nft rule carries a counter and the comment ``<rule id>`` (or ``<rule id>: <comment>``),
which is how minifw finds a rule's handles and counters again.

Logging (compile/events.py names the NFLOG prefixes):
- a rule with ``log`` has two log statements: the kernel-log one, then NFLOG with the rule id
  as prefix, in group ``[events] group``;
- a limited log must never limit a drop, so every capped log (``[events] drops``, ``[policy]
  log``, ``[[set]] log``) is a *helper* rule of its own, with no verdict and no counter, right
  before the rule that drops. Its comment ``log <owner>`` is never taken for a rule's: ids hold
  no space. A merged run gets one helper per run set, which looks the packet up in a shadow set
  without counters (``<run set>_e``): a lookup of the run set itself would count each packet
  twice in the element counters;
- bans log in the chain ``bans_log``, right before the ban chain drops.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from ..model.crowdsec import CROWDSEC_RULE
from ..model.events import EventsConfig
from ..model.rule import Limit, Network, PortRange, Rule
from ..model.ruleset import Ruleset
from ..model.setdefs import SetRef
from ..model.sets import DEFAULT_SET
from . import events as prefixes
from . import names, nat, runs
from .carry import Carry, apply_counters
from .comments import COMMENT_MAX, helper_comment
from .sets import KINDS, build_set_decls, kernel_name
from .sets import match_alternatives as set_matches
from ..model.types import (
    ND_TYPES, POLICY_PRIORITY, Action, Family, Hook, Proto,
)

TABLE = "minifw"
FAMILY = "inet"
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


def limit_stmt(limit: Limit) -> Expr:
    obj: dict[str, Any] = {"rate": limit.rate, "per": limit.unit}
    if limit.burst is not None:
        obj["burst"] = limit.burst
    return {"limit": obj}


def nflog_stmt(prefix: str, events: EventsConfig) -> Expr:
    return {"log": {"prefix": prefix, "group": events.group}}


def capped(matches: list[Expr], log: Expr, limit: Limit | None) -> list[Expr]:
    """A helper rule's body: its matches, the cap, the log; no verdict, no counter."""
    return list(matches) + ([limit_stmt(limit)] if limit is not None else []) + [log]


def sends_drop_events(rule: Rule, events: EventsConfig) -> bool:
    return events.drops and rule.action in (Action.DROP, Action.REJECT)


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


def build_rule_bodies(rule: Rule, drop_policy: bool,
                      events: EventsConfig = EventsConfig()) -> list[list[Expr]]:
    """The expression lists of the nft rules one minifw rule compiles into, in order."""
    return [body for _, body in rule_bodies(rule, drop_policy, events)]


def rule_bodies(rule: Rule, drop_policy: bool, events: EventsConfig,
                armed: frozenset[tuple[int, bool]] | None = None,
                ) -> list[tuple[list[Expr] | None, list[Expr]]]:
    """(helper body or None, body) of each nft rule ``rule`` compiles into: the helper is the
    capped event log that goes right before the body (``[events] drops``). ``armed``: the
    backing-set kinds a set reference looks up (None: all four); a family left with none
    compiles to nothing."""
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
                    lookups = [m for m, cidr in zip(set_matches(nets[0].name, field, version),
                                                    (False, True))
                               if armed is None or (version, cidr) in armed]
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
            bodies.extend(_finish_bodies(rule, family, drop_policy, matches, events))
    return bodies


def _finish_bodies(rule: Rule, family: Family | None, drop_policy: bool,
                   matches: list[Expr], events: EventsConfig):
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
    # A drop that logs already sends its events; one with a rate limit sends them from the
    # rule itself (the limit caps them): a helper would not share the rule's token bucket.
    helped = sends_drop_events(rule, events) and rule.log is None and rule.limit is None
    for extra, tail in _action_tails(rule, family, drop_policy, events):
        matched = list(matches) + extra
        helper = capped(matched, nflog_stmt(rule.id, events), events.limit) if helped else None
        bodies.append((helper, tail(matched)))
    return bodies


def _action_tails(rule: Rule, family: Family | None, drop_policy: bool, events: EventsConfig):
    """One or two finishers: reject of 'any' proto needs a TCP reset rule and an ICMP one."""
    def finish(extra: list[Expr], verdict: list[Expr]):
        """(matches added to the rule's, the finisher of the body after all matches)"""
        def tail(matched: list[Expr]) -> list[Expr]:
            body = list(matched)
            if rule.limit is not None:
                body.append({"limit": limit_name(rule.id)})
            body.append({"counter": None})
            if rule.log is not None:
                body.append({"log": {"prefix": log_prefix(rule.log)}})
            if rule.log is not None or (rule.limit is not None
                                        and sends_drop_events(rule, events)):
                body.append(nflog_stmt(rule.id, events))
            return body + verdict
        return extra, tail

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


def armed_for(rule: Rule, ruleset: Ruleset) -> frozenset[tuple[int, bool]] | None:
    """The lookups ``rule`` compiles: narrowed for [crowdsec]'s own drop rule alone (a user
    rule's ``@crowdsec`` keeps all four, so that arming a kind never has to find it)."""
    return ruleset.crowdsec_armed if rule.id == CROWDSEC_RULE else None


def build_nft_rules(rule: Rule, ruleset: Ruleset) -> list[dict[str, Any]]:
    """The ``rule`` objects (without handles) that ``rule`` compiles into, helpers included."""
    chain = names.rule_chain(rule.hook, rule.priority)
    drop = ruleset.policy(rule.hook) is Action.DROP
    out = []
    for helper, body in rule_bodies(rule, drop, ruleset.events, armed_for(rule, ruleset)):
        if helper is not None:
            out.append({"rule": _ref(chain=chain, expr=helper, comment=helper_comment(rule.id))})
        out.append({"rule": _ref(chain=chain, expr=body, comment=rule_comment(rule))})
    return out


def build_crowdsec_arm(ruleset: Ruleset, kinds: frozenset[tuple[int, bool]],
                       chain_exists: bool) -> list[Command]:
    """Commands that make [crowdsec]'s drop rule look up the backing sets ``kinds`` too: its
    nft rules for them, inserted at the head of its chain (the rule is the first at its
    priority; each helper stays right before its rule), and the chain first if it is not
    there (nothing was armed)."""
    rule = ruleset.get(CROWDSEC_RULE)
    if rule is None or not kinds:
        return []
    chain = names.rule_chain(rule.hook, rule.priority)
    cmds: list[Command] = []
    if not chain_exists:
        cmds.append({"add": _base_chain(chain, rule.hook, rule.priority)})
    armed = dataclasses.replace(ruleset, crowdsec_armed=kinds)
    cmds += [{"insert": r} for r in reversed(build_nft_rules(rule, armed))]
    return cmds


def build_limit(rule: Rule) -> dict[str, Any]:
    assert rule.limit is not None
    obj = _ref(name=limit_name(rule.id), rate=rule.limit.rate, per=rule.limit.unit)
    if rule.limit.burst is not None:
        obj["burst"] = rule.limit.burst
    return {"limit": obj}


def build_policy_rules(hook: Hook, stateful: bool,
                       ruleset: Ruleset = Ruleset()) -> list[dict[str, Any]]:
    """Rules of a drop policy chain: stateful accepts, then accept what a rule accepted, else
    (logged, capped, by helpers of their own) drop."""
    chain = names.policy_chain(hook)
    owner = f"policy {hook.value}"
    helpers = []
    if ruleset.policy_log is not None:
        helpers.append(capped([], {"log": {"prefix": log_prefix(ruleset.policy_log)}},
                              ruleset.policy_log_limit))
    if ruleset.events.drops:
        helpers.append(capped([], nflog_stmt(prefixes.policy_prefix(hook), ruleset.events),
                              ruleset.events.limit))
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
    return ([{"rule": _ref(chain=chain, expr=body, comment=owner)} for body in bodies]
            + [{"rule": _ref(chain=chain, expr=body, comment=helper_comment(owner))}
               for body in helpers]
            + [{"rule": _ref(chain=chain, expr=[{"counter": None}, {"drop": None}],
                             comment=owner)}])


def ban_log_set(ruleset: Ruleset) -> bool:
    """Whether bans are logged: [[set]] blocked asks for it, or [events] drops."""
    blocked = ruleset.get_set(DEFAULT_SET)
    return ruleset.events.drops or (blocked is not None and blocked.log is not None)


def build_ban_log_rules(ruleset: Ruleset) -> list[dict[str, Any]]:
    """The chain ``bans_log``: per backing set of ``blocked``, the capped kernel log and event
    of the packets the ban chain (one priority later) drops. Helpers only: no verdict."""
    blocked = ruleset.get_set(DEFAULT_SET)
    out = []
    for version, cidr in KINDS:
        field = "saddr"
        match = _match(_payload("ip" if version == 4 else "ip6", field),
                       f"@{kernel_name(DEFAULT_SET, version, cidr)}")
        bodies = []
        if blocked is not None and blocked.log is not None:
            bodies.append(capped([match], {"log": {"prefix": log_prefix(blocked.log)}},
                                 ruleset.policy_log_limit))
        if ruleset.events.drops:
            bodies.append(capped([match], nflog_stmt(prefixes.set_prefix(DEFAULT_SET),
                                                     ruleset.events), ruleset.events.limit))
        out += [{"rule": _ref(chain=names.BAN_LOG_CHAIN, expr=body,
                              comment=helper_comment(f"ban {DEFAULT_SET}"))} for body in bodies]
    return out


def build_load(ruleset: Ruleset, existing_chains: Iterable[str] = (),
               existing_limits: Iterable[str] = (),
               existing_sets: Iterable[str] = (), carry: Carry = Carry()) -> dict[str, Any]:
    """ONE transaction that replaces the declarative chains and limits of ``inet minifw``.

    Chains that are not declarative (hook functions) are left untouched; the table is never
    deleted, so they survive a reload. ``carry``: the counters the unchanged rules keep
    (compile/carry.py).
    """
    cmds: list[Command] = [build_table()]
    wanted: dict[str, Command] = {}
    filled: list[tuple[str, list[Command]]] = []
    for (hook, priority), rules in ruleset.chains():
        name = names.rule_chain(hook, priority)
        chain_cmds = build_chain_rules(name, rules, ruleset, carry.keep)
        if not any("rule" in c.get("add", {}) for c in chain_cmds):
            continue  # [crowdsec]'s rule alone, with nothing armed: no chain, no cost
        wanted[name] = _base_chain(name, hook, priority)
        filled.append((name, chain_cmds))
    for hook in ruleset.drop_hooks:
        name = names.policy_chain(hook)
        wanted[name] = _base_chain(name, hook, POLICY_PRIORITY)
    if ban_log_set(ruleset):
        wanted[names.BAN_LOG_CHAIN] = _base_chain(names.BAN_LOG_CHAIN, Hook.PREROUTING,
                                                  names.BAN_LOG_PRIORITY)
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
                if runs.is_run_set(n) and n not in carry.keep)
    set_names = ruleset.set_names()
    if ban_log_set(ruleset) and DEFAULT_SET not in set_names:
        set_names.append(DEFAULT_SET)  # bans_log looks it up: a ban may fill it later
    for name in set_names:
        cmds.extend(build_set_decls(name))
    for name, chain in wanted.items():
        cmds.append({"add": chain})
    for _, chain_cmds in filled:
        cmds.extend(chain_cmds)
    cmds.extend(nat.build_nat_load(ruleset, build_rule_bodies))
    cmds.extend(nat.build_policy_accepts(ruleset))  # first in their policy chains
    for hook in ruleset.drop_hooks:
        cmds.extend({"add": r} for r in build_policy_rules(hook, ruleset.stateful, ruleset))
    if ban_log_set(ruleset):
        cmds.extend({"add": r} for r in build_ban_log_rules(ruleset))
    apply_counters(cmds, carry.counters)
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


def build_chain_rules(chain: str, rules: list[Rule], ruleset: Ruleset,
                      keep: dict[str, list[Any]] | None = None) -> list[Command]:
    """``add`` commands for one chain's rules, runs of look-alike rules merged into set lookups
    (``keep``: run sets left in place, with the elements they hold)."""
    drop = ruleset.policy(rules[0].hook) is Action.DROP if rules else False
    cmds: list[Command] = []
    for index, item in enumerate(runs.plan_chain(rules)):
        if isinstance(item, runs.Run):
            comment = runs.run_comment(item, index)
            cmds.extend(runs.build_run(item, chain, index, drop, _ref, _run_bodies(ruleset),
                                       comment, helper_comment(comment), keep))
            continue
        if item.limit is not None:
            cmds.append({"add": build_limit(item)})
        cmds.extend({"add": r} for r in build_nft_rules(item, ruleset))
    return cmds


def _run_bodies(ruleset: Ruleset):
    """The body builder ``runs.build_run`` uses: (helper or None, body) pairs; a run's helper
    gets the run set's prefix there."""
    def build(rule: Rule, drop_policy: bool):
        return rule_bodies(rule, drop_policy, ruleset.events, armed_for(rule, ruleset))
    return build


def build_chain_rebuild(chain: str, rules: list[Rule], ruleset: Ruleset, exists: bool,
                        existing_sets: Iterable[str], dropped: Iterable[Rule] = (),
                        carry: Carry = Carry()) -> dict[str, Any]:
    """ONE transaction that refills one chain: how ``add``/``delete`` edit a chain with runs."""
    cmds: list[Command] = []
    if exists:
        cmds.append({"flush": {"chain": _ref(name=chain)}})
    cmds.extend({"delete": {"set": _ref(name=n)}} for n in runs.sets_of(chain, existing_sets)
                if n not in carry.keep)
    cmds.extend({"delete": {"limit": _ref(name=limit_name(r.id))}} for r in dropped
                if r.limit is not None)
    if rules:
        if not exists:
            cmds.append({"add": _base_chain(chain, rules[0].hook, rules[0].priority)})
        for r in rules:  # limits of surviving rules were flushed with nothing: re-add is a no-op
            if r.limit is not None:
                cmds.append({"add": build_limit(r)})
        cmds.extend(c for c in build_chain_rules(chain, rules, ruleset, carry.keep)
                    if "limit" not in c.get("add", {}))
    elif exists:
        cmds.append({"delete": {"chain": _ref(name=chain)}})
    apply_counters(cmds, carry.counters)
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

