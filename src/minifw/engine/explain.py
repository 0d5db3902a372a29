"""Evaluate a Ruleset on one packet, exactly as the compiled ``inet minifw`` table does. Pure.

The evaluator shares the rule model with the compiler (``minifw.compile.nft``) and follows the
layout the compiler emits, never nft's output:

- The packet walks the hooks of its path in Netfilter's order (``PATHS``): to this host
  prerouting -> input; forwarded prerouting -> forward -> postrouting; sent by this host
  output -> postrouting.
- At each hook, the base chains run by priority: one chain per (hook, priority) of the rules, a
  chain per Python hook function, and the policy chain at priority 1000 for a drop policy.
- Within a chain the rules run in order. ``drop`` and ``reject`` end the packet's trip. ``accept``
  ends only that chain: the packet goes on to the next priority. When the hook has a drop policy,
  an accept also sets the hook's bit in the packet mark. ``log`` logs and continues. A chain that
  ends without a verdict passes the packet on (its policy is accept).
- The policy chain of a drop policy accepts, when the policy is stateful, conntrack states
  established and related, loopback traffic and ICMPv6 neighbour discovery; then it accepts
  packets whose hook bit is set in the mark, and drops the rest.
- Conntrack runs at priority -200 of prerouting and output. Before it (priority -200 or lower
  there) a packet has no conntrack entry yet, which nftables reports as state ``invalid``.
- A rate limit is assumed to be under its rate: the rule matches.
- A Python hook function decides at run time: the verdict is ``runtime``.
- Where the default set ``blocked`` exists (a ban, an import, or a [[set]] of that name made it),
  the chain ``bans`` at prerouting priority -350 drops packets whose source is in it, before
  any rule; its kernel rule is commented ``ban blocked``, which is the decider explain names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Callable, Iterable, Sequence

from ..compile.names import BAN_CHAIN, BAN_PRIORITY
from ..compile.nat import accept_hooks
from ..errors import PacketError
from ..model.rule import IFNAME_RE, Rule
from . import nat as natmod
from ..model.sets import DEFAULT_SET
from ..model.ruleset import Ruleset
from ..model.types import (
    CONNTRACK_PRIORITY, CT_STATES, HOOKS_BEFORE_CONNTRACK, HOOKS_WITH_IIF, HOOKS_WITH_OIF,
    ICMP_TYPES, ICMPV6_TYPES, ND_TYPES, PATHS, POLICY_PRIORITY, Action, Family, Hook, Proto,
    point_order,
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

VERDICTS = ("accept", "drop", "reject", "runtime")
BAN_RULE = f"ban {DEFAULT_SET}"   # the comment of the ban chain's rules, as `nft list` shows it
DEFAULT_SPORT = 40000  # an ephemeral port, used when --sport is not given

# ICMP types that conntrack lets open a new entry; the replies to them need that entry.
_ICMP_NEW = {8: 0, 13: 14, 15: 16, 17: 18}            # request -> reply
_ICMPV6_NEW = {128: 129, 139: 140}
# ICMPv6 types conntrack leaves untracked (neighbour discovery and multicast listener messages).
_ICMPV6_UNTRACKED = frozenset({130, 131, 132, 133, 134, 135, 136, 143})
_ND_NUMBERS = frozenset(ICMPV6_TYPES[name] for name in ND_TYPES)


def icmp_type_number(proto: Proto, value: str | int) -> int:
    names = ICMP_TYPES if proto is Proto.ICMP else ICMPV6_TYPES
    return value if isinstance(value, int) else names[value]


def icmp_type_name(proto: Proto, number: int) -> str:
    names = ICMP_TYPES if proto is Proto.ICMP else ICMPV6_TYPES
    return next((n for n, v in names.items() if v == number), str(number))


def default_state(proto: Proto, icmp_type: int | None) -> str:
    """The conntrack state the kernel gives the first packet of this kind (no entry exists yet)."""
    if proto in (Proto.TCP, Proto.UDP):
        return "new"
    if proto is Proto.ICMP:
        if icmp_type in _ICMP_NEW:
            return "new"
        return "invalid"  # a reply or error without the flow it belongs to
    if icmp_type in _ICMPV6_UNTRACKED:
        return "untracked"
    if icmp_type in _ICMPV6_NEW:
        return "new"
    return "invalid"


# ---- the packet description -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Probe:
    """One packet as explain sees it: addresses, protocol, ports or ICMP type, interfaces, state.

    ``assumed`` lists the defaults that were filled in, so the answer can say what it assumed.
    """

    src: Address
    dst: Address
    proto: Proto
    path: str = "in"
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    iif: str | None = None
    oif: str | None = None
    state: str = "new"
    assumed: tuple[str, ...] = ()

    def __post_init__(self):
        _check(self)

    @property
    def version(self) -> int:
        return self.src.version

    @property
    def family(self) -> Family:
        return Family.IP if self.version == 4 else Family.IP6

    @classmethod
    def describe(cls, *, proto: str | None, src: str | None, dst: str | None,
                 path: str | None = None, sport: Any = None, dport: Any = None,
                 icmp_type: Any = None, iif: str | None = None, oif: str | None = None,
                 state: str | None = None) -> "Probe":
        """Build a probe from command-line style values, filling in and noting defaults.

        Every error names the flag at fault: ``--dport: ...``.
        """
        assumed: list[str] = []
        if proto is None:
            raise PacketError("--proto: is required (tcp, udp, icmp or icmpv6)")
        try:
            p = Proto(proto)
        except ValueError:
            raise PacketError(f"--proto: unknown protocol {proto!r}; expected tcp, udp, icmp "
                              "or icmpv6") from None
        if p is Proto.ANY:
            raise PacketError("--proto: a packet has one protocol; give tcp, udp, icmp or icmpv6")
        src_addr = _address("--src", src)
        dst_addr = _address("--dst", dst)
        sport_n = _port("--sport", sport)
        dport_n = _port("--dport", dport)
        if p.has_ports:
            if dport_n is None:
                raise PacketError(f"--dport: is required for {p.value} packets")
            if sport_n is None:
                sport_n = DEFAULT_SPORT
                assumed.append(f"sport {DEFAULT_SPORT} (not given)")
        icmp_n = None
        if icmp_type is not None and p in (Proto.ICMP, Proto.ICMPV6):
            icmp_n = _icmp_type(p, icmp_type)
        elif p in (Proto.ICMP, Proto.ICMPV6):
            icmp_n = 8 if p is Proto.ICMP else 128
            assumed.append("icmp type echo-request (not given)")
        elif icmp_type is not None:
            raise PacketError(f"--icmp-type: {p.value} packets have no ICMP type; use --proto "
                              "icmp or icmpv6")
        if state is None:
            state = default_state(p, icmp_n)
            assumed.append(f"conntrack state {state} (not given: the state of a first packet)")
        return cls(src=src_addr, dst=dst_addr, proto=p, path=path or "in", sport=sport_n,
                   dport=dport_n, icmp_type=icmp_n, iif=iif, oif=oif, state=state,
                   assumed=tuple(assumed))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "proto": self.proto.value,
                               "src": str(self.src), "dst": str(self.dst)}
        for key in ("sport", "dport", "iif", "oif"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.icmp_type is not None:
            out["icmp_type"] = icmp_type_name(self.proto, self.icmp_type)
        out["state"] = self.state
        return out


def _address(flag: str, text: str | None) -> Address:
    if text is None:
        raise PacketError(f"{flag}: is required (an IPv4 or IPv6 address)")
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise PacketError(f"{flag}: {text!r} is not an IPv4 or IPv6 address (a packet has one "
                          "address, not a CIDR)") from None


def _port(flag: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise PacketError(f"{flag}: {value!r} is not a port")
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise PacketError(f"{flag}: {value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise PacketError(f"{flag}: {port} is out of range 0-65535")
    return port


def _icmp_type(proto: Proto, value: Any) -> int:
    names = ICMP_TYPES if proto is Proto.ICMP else ICMPV6_TYPES
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    if isinstance(value, str) and value in names:
        return names[value]
    raise PacketError(f"--icmp-type: unknown {proto.value} type {value!r}; expected one of "
                      f"{', '.join(names)} or a number 0-255")


def _check(p: Probe) -> None:
    """Refuse a packet that cannot exist, naming the flag at fault."""
    if p.path not in PATHS:
        raise PacketError(f"--path: unknown path {p.path!r}; expected in, forward or out")
    if p.src.version != p.dst.version:
        raise PacketError(f"--dst: {p.dst} is IPv{p.dst.version} but --src {p.src} is "
                          f"IPv{p.src.version}; a packet has one IP version")
    if not isinstance(p.proto, Proto) or p.proto is Proto.ANY:
        raise PacketError("--proto: a packet has one protocol; give tcp, udp, icmp or icmpv6")
    if p.proto is Proto.ICMP and p.version == 6:
        raise PacketError("--proto: icmp is IPv4's; an IPv6 packet uses icmpv6")
    if p.proto is Proto.ICMPV6 and p.version == 4:
        raise PacketError("--proto: icmpv6 is IPv6's; an IPv4 packet uses icmp")
    for flag, port in (("--sport", p.sport), ("--dport", p.dport)):
        if port is not None and not p.proto.has_ports:
            raise PacketError(f"{flag}: {p.proto.value} packets have no ports; ports exist "
                              "only for tcp and udp")
        if port is not None and not 0 <= port <= 65535:
            raise PacketError(f"{flag}: {port} is out of range 0-65535")
    if p.proto.has_ports and (p.sport is None or p.dport is None):
        raise PacketError(f"--{'sport' if p.sport is None else 'dport'}: is required for "
                          f"{p.proto.value} packets")
    if p.icmp_type is not None and p.proto.has_ports:
        raise PacketError(f"--icmp-type: {p.proto.value} packets have no ICMP type")
    if p.icmp_type is None and not p.proto.has_ports:
        raise PacketError(f"--icmp-type: is required for {p.proto.value} packets")
    if p.icmp_type is not None and not 0 <= p.icmp_type <= 255:
        raise PacketError(f"--icmp-type: {p.icmp_type} is out of range 0-255")
    if p.path == "in" and p.oif is not None:
        raise PacketError("--oif: a packet to this host (--path in) has no output interface")
    if p.path == "out" and p.iif is not None:
        raise PacketError("--iif: a packet sent by this host (--path out) has no input "
                          "interface")
    for flag, name in (("--iif", p.iif), ("--oif", p.oif)):
        if name is not None and (not IFNAME_RE.match(name) or name.endswith("*")):
            raise PacketError(f"{flag}: {name!r} is not an interface name (1-15 characters, no "
                              "spaces, '/' or '*')")
    if p.state not in CT_STATES:
        raise PacketError(f"--state: unknown conntrack state {p.state!r}; expected "
                          f"{' | '.join(CT_STATES)}")
    if p.iif == "lo" and p.path == "forward":
        raise PacketError("--iif: the kernel never forwards packets that came in on lo")


# ---- hook functions ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HookFunction:
    """A Python hook function's chain: it decides at run time, so explain stops there."""

    name: str
    hook: Hook
    priority: int
    where: str = "queue"           # "kernel": a BPF program compiled from the function

    @property
    def decides(self) -> str:
        if self.where == "kernel":
            return f"decided in the kernel by hook function {self.name}"
        return "a Python hook function decides at run time"


# ---- the answer -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """One rule (or policy check, or hook function) the packet met, and what came of it."""

    hook: Hook
    priority: int
    kind: str                      # "rule" | "policy" | "hook-function"
    name: str | None               # rule id, policy check name, or hook function name
    matched: bool
    result: str                    # "no match", "accept", "drop", "reject", "log", "runtime"
    match: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hook": self.hook.value, "priority": self.priority,
                               "kind": self.kind, "rule" if self.kind == "rule" else "name":
                               self.name, "matched": self.matched, "result": self.result}
        if self.match:
            out["match"] = self.match
        if self.note:
            out["note"] = self.note
        return out


@dataclasses.dataclass(frozen=True)
class Explanation:
    verdict: str                   # accept | drop | reject | runtime
    rule: str | None               # deciding rule id or hook function name; None for a policy
    decided_by: str                # rule | policy | hook-function
    hook: Hook
    priority: int
    trace: tuple[Step, ...]
    probe: Probe
    translations: tuple[natmod.Translation, ...] = ()   # NAT on the way (engine/nat.py)
    packet: Probe | None = None    # the packet as it left (after NAT); None: as it came

    @property
    def decider(self) -> str:
        """The rule id, or ``policy of <hook>``: the key explain --pcap sums up by."""
        if self.decided_by == "policy":
            return f"policy of {self.hook.value}"
        return self.rule or "?"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "rule": self.rule, "decided_by": self.decided_by,
                "hook": self.hook.value, "priority": self.priority,
                "trace": [s.to_json() for s in self.trace],
                **({"nat": [t.to_json() for t in self.translations],
                    "packet": self.packet.to_json()} if self.translations and self.packet
                   else {})}


# ---- evaluation -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Chain:
    priority: int
    kind: str                      # "rules" | "hook-function" | "policy" | "bans"
    rules: tuple[Rule, ...] = ()
    function: HookFunction | None = None


def chains_at(ruleset: Ruleset, hook: Hook,
              hook_functions: Iterable[HookFunction] = (), bans: bool = False) -> list[_Chain]:
    """The base chains at ``hook`` in the order the kernel runs them, as the compiler lays out
    (``bans``: the ban chain exists)."""
    chains = [_Chain(prio, "rules", tuple(rules))
              for (h, prio), rules in ruleset.chains() if h is hook]
    if bans and hook is Hook.PREROUTING:
        chains.append(_Chain(BAN_PRIORITY, "bans"))
    chains += [_Chain(f.priority, "hook-function", function=f)
               for f in hook_functions if f.hook is hook]
    if ruleset.policy(hook) is Action.DROP:
        chains.append(_Chain(POLICY_PRIORITY, "policy"))
    order = {"bans": -1, "rules": 0, "hook-function": 1, "policy": 2}
    return sorted(chains, key=lambda c: (point_order(hook, c.priority), order[c.kind]))


RunHook = Callable[[HookFunction, int], str]
# Whether an address is in a named set: True, False, or None when its contents are unknown.
SetLookup = Callable[[str, Address], "bool | None"]


def explain(ruleset: Ruleset, probe: Probe, hook_functions: Sequence[HookFunction] = (),
            run_hook: RunHook | None = None, set_lookup: SetLookup | None = None,
            address_of: natmod.AddressOf | None = None) -> Explanation:
    """What the kernel does with ``probe`` under ``ruleset``: verdict, decider and full trace.

    A hook function decides at run time: without ``run_hook`` the answer stops there with
    verdict ``runtime``. With it, ``run_hook(function, mark)`` returns the function's verdict
    on this packet ("accept" passes it on, like a rule's accept but without the policy mark;
    "drop" ends it).
    ``[[nat]]`` entries translate the packet on its way (engine/nat.py): the chains after
    a translation see the translated packet; ``address_of`` gives masquerade and redirect
    their addresses.
    """
    trace: list[Step] = []
    mark = 0
    nats = getattr(ruleset, "nats", ())
    packet = probe                 # as the chains see it: translated by NAT on the way
    translations: list[natmod.Translation] = []
    # The last thing that explicitly accepted: (rule or None, decided_by, hook, priority).
    accepted_by: tuple[str | None, str, Hook, int] | None = None

    def finish(verdict: str, rule: str | None, by: str, hook: Hook, prio: int) -> Explanation:
        return Explanation(verdict, rule, by, hook, prio, tuple(trace), probe,
                           tuple(translations), packet)

    banned = set_lookup(DEFAULT_SET, probe.src) if set_lookup is not None else None
    for hook in PATHS[probe.path]:
        drop_policy = ruleset.policy(hook) is Action.DROP
        for chain in _with_nat(chains_at(ruleset, hook, hook_functions,
                                         bans=banned is not None), hook, nats):
            if chain.kind == "nat":
                packet, done = _nat(nats, packet, hook, set_lookup, address_of, trace)
                translations += [done] if done is not None else []
                continue
            if chain.kind == "bans":
                match = {"src": f"@{DEFAULT_SET}"}
                if banned:
                    trace.append(Step(hook, chain.priority, "rule", BAN_RULE, True, "drop",
                                      match, f"src {probe.src} is banned (set @{DEFAULT_SET}, "
                                      f"chain {BAN_CHAIN})"))
                    return finish("drop", BAN_RULE, "rule", hook, chain.priority)
                trace.append(Step(hook, chain.priority, "rule", BAN_RULE, False, "no match",
                                  match, f"src {probe.src} is not in set @{DEFAULT_SET}"))
                continue
            if chain.kind == "hook-function":
                fn = chain.function
                assert fn is not None
                if run_hook is None:
                    trace.append(Step(hook, chain.priority, "hook-function", fn.name, True,
                                      "runtime", note=fn.decides))
                    return finish("runtime", fn.name, "hook-function", hook, chain.priority)
                verdict = run_hook(fn, mark)
                trace.append(Step(hook, chain.priority, "hook-function", fn.name, True, verdict,
                                  note="called on a synthesized packet (--run-hooks)"))
                if verdict == "drop":
                    return finish("drop", fn.name, "hook-function", hook, chain.priority)
                accepted_by = (fn.name, "hook-function", hook, chain.priority)
                continue
            if chain.kind == "policy":
                passed, step_list = _policy(ruleset, hook, packet, mark,
                                            any(t.is_dnat for t in translations))
                trace.extend(step_list)
                if passed is None:
                    return finish("drop", None, "policy", hook, POLICY_PRIORITY)
                accepted_by = (None, "policy", hook, POLICY_PRIORITY) if passed else accepted_by
                continue
            for rule in chain.rules:
                ok, why = rule_matches(rule, packet, hook, chain.priority, set_lookup)
                if not ok:
                    trace.append(Step(hook, chain.priority, "rule", rule.id, False, "no match",
                                      rule.match_dict(), why))
                    continue
                action = rule.action
                note = why
                if action is Action.LOG:
                    trace.append(Step(hook, chain.priority, "rule", rule.id, True, "log",
                                      rule.match_dict(), _join(note, "logged; continues")))
                    continue
                if action is Action.ACCEPT:
                    if drop_policy:
                        mark |= hook.mark_bit
                        note = _join(note, f"marked for the {hook.value} drop policy")
                    trace.append(Step(hook, chain.priority, "rule", rule.id, True, "accept",
                                      rule.match_dict(),
                                      _join(note, "passes on to the next priority")))
                    accepted_by = (rule.id, "rule", hook, chain.priority)
                    break
                trace.append(Step(hook, chain.priority, "rule", rule.id, True, action.value,
                                  rule.match_dict(), note))
                return finish(action.value, rule.id, "rule", hook, chain.priority)
    if accepted_by is not None:
        rule_id, by, hook, prio = accepted_by
        return finish("accept", rule_id, by, hook, prio)
    last = PATHS[probe.path][-1]
    return finish("accept", None, "policy", last, POLICY_PRIORITY)


def _policy(ruleset: Ruleset, hook: Hook, probe: Probe, mark: int,
            translated: bool = False) -> tuple[bool | None, list[Step]]:
    """The policy chain of a drop policy: True accepted by a stateful check (or as a
    translated flow's: ``ct status dnat``), False accepted by the mark (a rule accepted
    earlier), None dropped."""
    steps: list[Step] = []
    prio = POLICY_PRIORITY

    def check(name: str, ok: bool, note: str | None = None) -> bool:
        steps.append(Step(hook, prio, "policy", name, ok, "accept" if ok else "no match",
                          note=note))
        return ok

    if hook in accept_hooks(ruleset):  # the policy chain's first rule
        if check("ct status dnat", translated, "a port forward opens its own path"
                 if translated else "the destination was not translated"):
            return True, steps
    if ruleset.stateful:
        state = _state_seen(probe, hook, prio)
        if check("stateful: ct state established,related", state in ("established", "related"),
                 f"state {state}"):
            return True, steps
        if hook in (Hook.PREROUTING, Hook.INPUT):
            if check("stateful: iif lo", probe.iif == "lo", _iface_note("iif", probe.iif)):
                return True, steps
        elif hook in (Hook.OUTPUT, Hook.POSTROUTING):
            if check("stateful: oif lo", probe.oif == "lo", _iface_note("oif", probe.oif)):
                return True, steps
        nd = probe.proto is Proto.ICMPV6 and probe.icmp_type in _ND_NUMBERS
        if check("stateful: icmpv6 neighbour discovery", nd):
            return True, steps
    if check(f"accepted by a rule at {hook.value}", bool(mark & hook.mark_bit)):
        return False, steps
    steps.append(Step(hook, prio, "policy", f"policy {hook.value} drop", True, "drop",
                      note=f"no rule at {hook.value} accepted the packet"))
    return None, steps


def _with_nat(chains: list[_Chain], hook: Hook, nats) -> list[_Chain]:
    """``chains`` with the nat chain of ``hook`` at its place, if [[nat]] entries run there."""
    if not natmod.nats_at(nats, hook):
        return chains
    nat = _Chain(natmod.NAT_HOOKS[hook], "nat")
    return sorted([*chains, nat], key=lambda c: point_order(hook, c.priority))


def _nat(nats, packet: Probe, hook: Hook, set_lookup: SetLookup | None,
         address_of, trace: list[Step]):
    """Run the nat chain of ``hook``: the trace gets each entry tried, and the packet its
    translation."""
    def matches(entry, p, h, prio):
        return rule_matches(entry, p, h, prio, set_lookup)

    out, done, misses = natmod.translate(nats, packet, hook, matches, address_of)
    prio = natmod.NAT_HOOKS[hook]
    trace.extend(Step(hook, prio, "nat", nat_id, False,
                      "not run" if nat_id == "(not run)" else "no match", note=why)
                 for nat_id, why in misses)
    if done is not None:
        trace.append(Step(hook, prio, "nat", done.nat, done.first_packet, "translate",
                          note=_join(done.describe(), done.note)))
    return out, done


def _iface_note(key: str, name: str | None) -> str:
    return f"{key} {name}" if name is not None else f"{key} not given"


def _state_seen(probe: Probe, hook: Hook, priority: int) -> str:
    if hook in HOOKS_BEFORE_CONNTRACK and priority <= CONNTRACK_PRIORITY:
        return "invalid"  # conntrack has not run yet: no entry is attached
    return probe.state


def rule_matches(rule: Rule, p: Probe, hook: Hook, priority: int,
                 set_lookup: SetLookup | None = None) -> tuple[bool, str | None]:
    """Whether ``rule`` matches, in the order of its compiled expressions; else the first reason.

    On a match, the reason carries what was assumed (a rate limit under its rate)."""
    if p.family not in rule.families:
        fams = " or ".join("IPv4" if f is Family.IP else "IPv6" for f in rule.families)
        return False, f"the rule matches {fams} only"
    for key in ("src", "dst"):
        nets = getattr(rule, key)
        addr = getattr(p, key)
        refs = [n for n in nets if not hasattr(n, "version")]  # a set reference (@name)
        if refs:
            name = refs[0].name
            found = set_lookup(name, addr) if set_lookup is not None else None
            if found is None:
                return False, f"the contents of set @{name} are unknown; assumed not to match"
            if not found:
                return False, f"{key} {addr} is not in set @{name}"
            continue
        if nets and not any(addr in n for n in nets if n.version == addr.version):
            return False, f"{key} {addr} is not in {', '.join(str(n) for n in nets)}"
    if rule.proto is not Proto.ANY and rule.proto is not p.proto:
        return False, f"proto is {p.proto.value}, not {rule.proto.value}"
    for key in ("sport", "dport"):
        ranges = getattr(rule, key)
        port = getattr(p, key)
        if ranges and (port is None or not any(port in r for r in ranges)):
            shown = ",".join(str(r.format()) for r in ranges)
            return False, f"{key} {port} is not in {shown}"
    if rule.icmp_type:
        wanted = {icmp_type_number(rule.proto, t) for t in rule.icmp_type}
        if p.icmp_type not in wanted:
            return False, (f"icmp type {icmp_type_name(p.proto, p.icmp_type or 0)} is not "
                           f"{', '.join(str(t) for t in rule.icmp_type)}")
    for key, hooks in (("iif", HOOKS_WITH_IIF), ("oif", HOOKS_WITH_OIF)):
        names = getattr(rule, key)
        if not names:
            continue
        have = getattr(p, key) if hook in hooks else None
        if have is None:
            flag = f"--{key}"
            if hook not in hooks:
                return False, f"there is no {key} at {hook.value}"
            return False, f"{key} unknown ({flag} not given); assumed not to match"
        if not any(_ifname_match(n, have) for n in names):
            return False, f"{key} {have} is not {', '.join(names)}"
    if rule.state:
        state = _state_seen(p, hook, priority)
        if state not in rule.state:
            extra = (" (conntrack has not run yet at this priority)"
                     if state != p.state else "")
            return False, f"ct state {state}{extra} is not {', '.join(rule.state)}"
    if rule.limit is not None:
        return True, f"limit {rule.limit.format()} assumed under its rate"
    return True, None


def _ifname_match(pattern: str, name: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None
