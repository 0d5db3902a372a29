"""[[nat]] -> libnftables JSON: the NAT chains of ``inet minifw`` and the policy accepts of the
flows they translate. Pure.

- ``nat_prerouting`` and ``nat_output`` (type nat, dstnat -100) hold dnat and redirect,
  ``nat_postrouting`` (srcnat 100) masquerade and snat, in config order: the first entry that
  matches translates, as in the kernel's NAT chains (they see the first packet of each flow
  only; later packets follow conntrack).
- An inet table must name the family of an address: ``dnat ip to``, ``dnat ip6 to``. The
  entry's family comes from ``to`` (``Nat.match_rule`` narrows it).
- A port forward opens its own path: with a drop policy at forward, ``ct status dnat accept``
  goes first in the forward policy chain (priority 1000), before its drop of unmarked packets
  (an accept at any earlier priority is undone by that drop); a redirect does the same at input.
  A rule that drops such flows before the policy chain still drops them.

The match part of each nft rule is the rule compiler's (``bodies``, passed in by compile/nft.py,
as for runs, so that neither module imports the other).
"""

from __future__ import annotations

from typing import Any, Callable

from ..model.nat import NAT_PRIORITY, Nat, NatKind
from ..model.ruleset import Ruleset
from ..model.setdefs import SetRef
from ..model.types import Action, Family, Hook
from . import names
from .sets import FAMILY, TABLE, build_set_decls

Command = dict[str, Any]
Bodies = Callable[..., list[list[dict[str, Any]]]]  # nft.build_rule_bodies(rule, drop_policy)

# The comment of the policy accept; no rule id holds a space, so it names no rule.
ACCEPT_COMMENT = "nat accepts"


def _ref(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **kw}


def nat_points(ruleset: Ruleset) -> list[tuple[Hook, int]]:
    """Where the kernel runs NAT, if the ruleset has any: no filter chain or hook function may
    sit there (model/nat.py says why)."""
    return list(NAT_PRIORITY.items()) if ruleset.nats else []


def nat_chain_command(hook: Hook) -> Command:
    return {"chain": _ref(name=names.nat_chain(hook), type="nat", hook=hook.value,
                          prio=NAT_PRIORITY[hook], policy="accept")}


def _statement(nat: Nat, family: Family | None) -> dict[str, Any]:
    to = nat.to
    if nat.kind is NatKind.MASQUERADE:
        return {"masquerade": None}
    if nat.kind is NatKind.REDIRECT:
        return {"redirect": None if to is None else {"port": _port(to.port)}}
    assert to is not None and to.lo is not None and family is not None
    arg: dict[str, Any] = {"family": family.value,
                           "addr": str(to.lo) if to.lo == to.hi
                           else {"range": [str(to.lo), str(to.hi)]}}
    if to.port is not None:
        arg["port"] = _port(to.port)
    return {nat.kind.value: arg}


def _port(port) -> Any:
    return port.lo if port.lo == port.hi else {"range": [port.lo, port.hi]}


def build_nat_rules(nat: Nat, bodies: Bodies) -> list[dict[str, Any]]:
    """The ``rule`` objects (without handles) one entry compiles into."""
    rule = nat.match_rule()
    family = rule.families[0] if len(rule.families) == 1 else None
    comment = rule.id if not rule.comment else f"{rule.id}: {rule.comment}"
    comment = comment.encode()[:127].decode(errors="ignore")
    return [{"rule": _ref(chain=names.nat_chain(nat.hook), comment=comment,
                          expr=body + [_statement(nat, family)])}
            for body in bodies(rule, False)]


def accept_hooks(ruleset: Ruleset) -> list[Hook]:
    """The drop-policy hooks whose policy chain accepts translated flows: forward for a port
    forward (dnat at prerouting), input for a redirect."""
    hooks = []
    if ruleset.policy(Hook.FORWARD) is Action.DROP and any(
            n.kind is NatKind.DNAT and n.hook is Hook.PREROUTING for n in ruleset.nats):
        hooks.append(Hook.FORWARD)
    if ruleset.policy(Hook.INPUT) is Action.DROP and any(
            n.kind is NatKind.REDIRECT for n in ruleset.nats):
        hooks.append(Hook.INPUT)
    return hooks


def policy_accept(hook: Hook) -> dict[str, Any]:
    """``ct status dnat accept``, the first rule of ``hook``'s policy chain."""
    return {"rule": _ref(chain=names.policy_chain(hook), comment=ACCEPT_COMMENT, expr=[
        {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
        {"accept": None}])}


# ---- whole loads (compile/nft.py's build_load calls these) -------------------------------------

def wanted_chains(ruleset: Ruleset) -> dict[str, Command]:
    hooks = [h for h in NAT_PRIORITY if any(n.hook is h for n in ruleset.nats)]
    return {names.nat_chain(h): nat_chain_command(h) for h in hooks}


def build_policy_accepts(ruleset: Ruleset) -> list[Command]:
    """Added before the policy chains' own rules, so they come first."""
    return [{"add": policy_accept(h)} for h in accept_hooks(ruleset)]


def build_nat_load(ruleset: Ruleset, bodies: Bodies) -> list[Command]:
    return [{"add": r} for n in ruleset.nats for r in build_nat_rules(n, bodies)]


# ---- incremental edits (minifw nat add / delete) -----------------------------------------------

def build_nat_add(nat: Nat, before: Ruleset, after: Ruleset, chains: set[str],
                  bodies: Bodies) -> dict[str, Any]:
    """Append one entry to its live chain (entries keep config order: a new one goes last),
    creating the chain and the policy accept it needs."""
    cmds: list[Command] = []
    for ref in dict.fromkeys(r.name for r in nat.src + nat.dst if isinstance(r, SetRef)):
        cmds.extend(build_set_decls(ref))  # idempotent: a loaded set keeps its elements
    if names.nat_chain(nat.hook) not in chains:
        cmds.append({"add": nat_chain_command(nat.hook)})
    cmds.extend({"add": r} for r in build_nat_rules(nat, bodies))
    for hook in accept_hooks(after):
        if hook not in accept_hooks(before):
            cmds.append({"insert": policy_accept(hook)})  # insert without a handle: first
    return {"nftables": cmds}


def build_nat_delete(nat: Nat, handles: list[int], delete_chain: bool,
                     accept_handles: dict[Hook, list[int]]) -> dict[str, Any]:
    """Delete one entry's nft rules (and its chain if it held nothing else), and the policy
    accepts (``accept_handles``, by hook) no entry needs any more."""
    chain = names.nat_chain(nat.hook)
    cmds: list[Command] = [{"delete": {"rule": _ref(chain=chain, handle=h)}} for h in handles]
    if delete_chain:
        cmds.append({"delete": {"chain": _ref(name=chain)}})
    for hook, hs in accept_handles.items():
        cmds.extend({"delete": {"rule": _ref(chain=names.policy_chain(hook), handle=h)}}
                    for h in hs)
    return {"nftables": cmds}
