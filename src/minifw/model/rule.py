"""The Rule: one declarative firewall rule, validated on construction from its TOML form.

``Rule.from_toml(dict)`` and ``rule.to_toml()`` are a pair: a rule read back from what it wrote
is the same rule. Every check that can be made without the kernel is made here, so bad input is
refused before anything is applied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from typing import Any, Iterable

from ..errors import RuleError
from .logtext import has_control, parse_log_prefix
from .setdefs import SetRef
from .suggest import unknown as unknown_text
from .sets import SET_NAME_RE
from .types import (
    CONNTRACK_PRIORITY, CT_STATES, HOOKS_BEFORE_CONNTRACK, HOOKS_WITH_IIF, HOOKS_WITH_OIF,
    HOOKS_WITH_REJECT, ICMP_TYPES, ICMPV6_TYPES, LIMIT_DEFAULT_BURST, LIMIT_MAX,
    LIMIT_UNIT_SECONDS, LIMIT_UNITS, POLICY_PRIORITY, PRIORITY_MIN, Action,
    Family, Hook, Proto,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RULE_KEYS = ("id", "hook", "priority", "family", "proto", "src", "dst", "sport", "dport",
             "iif", "oif", "state", "icmp_type", "action", "log", "limit", "comment")
MATCH_KEYS = ("family", "proto", "src", "dst", "sport", "dport", "iif", "oif", "state",
              "icmp_type", "limit")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IFNAME_RE = re.compile(r"^[^\s/\"\\]{1,15}$")  # IFNAMSIZ is 16 with the NUL; '*' is nft's wildcard
LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+?)s?\s*(?:burst\s+(\d+)\s*)?$")



def content_digest(fields: dict[str, Any]) -> str:
    """Eight hex digits of an entry's TOML fields, its id and comment left out: the stem of
    generated ids, so they survive reordering and comment edits."""
    body = {k: v for k, v in fields.items() if k not in ("id", "comment")}
    return hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()[:8]

@dataclasses.dataclass(frozen=True)
class PortRange:
    lo: int
    hi: int

    def __contains__(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def format(self) -> int | str:
        return self.lo if self.lo == self.hi else f"{self.lo}-{self.hi}"


@dataclasses.dataclass(frozen=True)
class Limit:
    rate: int
    unit: str
    burst: int | None = None

    def format(self) -> str:
        text = f"{self.rate}/{self.unit}"
        return f"{text} burst {self.burst}" if self.burst is not None else text


@dataclasses.dataclass(frozen=True)
class Rule:
    id: str
    action: Action
    hook: Hook = Hook.INPUT
    priority: int = 0
    family: Family = Family.ANY
    proto: Proto = Proto.ANY
    src: tuple[Network | SetRef, ...] = ()   # a SetRef is always alone
    dst: tuple[Network | SetRef, ...] = ()
    sport: tuple[PortRange, ...] = ()
    dport: tuple[PortRange, ...] = ()
    iif: tuple[str, ...] = ()
    oif: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    icmp_type: tuple[str | int, ...] = ()
    log: str | None = None
    limit: Limit | None = None
    comment: str | None = None
    explicit_id: bool = True  # False when the id was generated; then it is not written back

    # ---- derived -------------------------------------------------------------------------
    @property
    def families(self) -> tuple[Family, ...]:
        """The concrete families (ip, ip6) this rule can match, in that order."""
        return _families(self.family, self.proto, self.src, self.dst)

    def match_dict(self) -> dict[str, Any]:
        """The match keys in TOML form, only those set."""
        out = self.to_toml()
        return {k: out[k] for k in MATCH_KEYS if k in out}

    # ---- TOML pair -----------------------------------------------------------------------
    @classmethod
    def from_toml(cls, data: dict[str, Any], *, index: int | None = None) -> "Rule":
        """Validate one ``[[rule]]`` table. ``index`` is used only to name an id-less rule."""
        rid = data.get("id")
        label = rid if isinstance(rid, str) else (f"#{index + 1}" if index is not None else "new")
        unknown = [k for k in data if k not in RULE_KEYS]
        if unknown:
            raise RuleError(unknown_text("key", unknown[0], RULE_KEYS,
                                         f"valid keys are {', '.join(RULE_KEYS)}"),
                            rule=label, field=unknown[0])
        if "action" not in data:
            raise RuleError("is required (accept, drop, reject or log)", rule=label, field="action")
        f = _Fields(label, data)
        hook = f.enum("hook", Hook, Hook.INPUT)
        action = f.enum("action", Action, None)
        priority = f.priority()
        family = f.enum("family", Family, Family.ANY)
        proto = f.enum("proto", Proto, Proto.ANY)
        rule_kwargs = dict(
            action=action, hook=hook, priority=priority, family=family, proto=proto,
            src=f.addresses("src"), dst=f.addresses("dst"),
            sport=f.ports("sport"), dport=f.ports("dport"),
            iif=f.ifnames("iif"), oif=f.ifnames("oif"),
            state=f.states(), icmp_type=f.icmp_types(proto),
            log=f.log_prefix(), limit=f.limit(), comment=f.text("comment"),
        )
        if rid is None:
            rule = cls(id="", explicit_id=False, **rule_kwargs)
            rule = dataclasses.replace(rule, id=rule.generated_id())
        else:
            if not isinstance(rid, str) or not ID_RE.match(rid):
                raise RuleError("must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                                "letter or digit", rule=label, field="id")
            rule = cls(id=rid, **rule_kwargs)
        rule.check()
        return rule

    def to_toml(self) -> dict[str, Any]:
        """The rule as a TOML table, with defaults left out. Lists of one are written as scalars."""
        out: dict[str, Any] = {}
        if self.explicit_id:
            out["id"] = self.id
        if self.hook is not Hook.INPUT:
            out["hook"] = self.hook.value
        if self.priority != 0:
            out["priority"] = self.priority
        if self.family is not Family.ANY:
            out["family"] = self.family.value
        if self.proto is not Proto.ANY:
            out["proto"] = self.proto.value
        for key in ("src", "dst"):
            nets = getattr(self, key)
            if nets:
                out[key] = _one_or_list([_format_net(n) for n in nets])
        for key in ("sport", "dport"):
            ports = getattr(self, key)
            if ports:
                out[key] = _one_or_list([p.format() for p in ports])
        for key in ("iif", "oif", "icmp_type"):
            vals = getattr(self, key)
            if vals:
                out[key] = _one_or_list(list(vals))
        if self.state:
            out["state"] = list(self.state)
        out["action"] = self.action.value
        if self.log is not None:
            out["log"] = self.log
        if self.limit is not None:
            out["limit"] = self.limit.format()
        if self.comment is not None:
            out["comment"] = self.comment
        return out

    def generated_id(self) -> str:
        """A content-derived id: stable across reloads and independent of the rule's position."""
        return f"{self.hook.value}-{self.action.value}-{content_digest(self.to_toml())}"

    # ---- cross-field checks -------------------------------------------------------------
    def check(self) -> None:
        """Refuse rules the kernel would refuse, or that could never match."""
        err = _error_for(self.id)
        if (self.sport or self.dport) and not self.proto.has_ports:
            raise err("sport" if self.sport else "dport",
                      "ports need proto = \"tcp\" or \"udp\"")
        if self.action is Action.REJECT and self.hook not in HOOKS_WITH_REJECT:
            raise err("action", "reject is refused by the kernel at postrouting; use drop")
        if self.iif and self.hook not in HOOKS_WITH_IIF:
            raise err("iif", f"can never match at {self.hook.value}: packets there have no "
                             "input interface")
        if self.oif and self.hook not in HOOKS_WITH_OIF:
            raise err("oif", f"can never match at {self.hook.value}: the output interface is "
                             "not known before routing")
        if (self.state and self.hook in HOOKS_BEFORE_CONNTRACK
                and self.priority <= CONNTRACK_PRIORITY):
            raise err("state", f"conntrack runs at priority {CONNTRACK_PRIORITY}; at "
                               f"{self.hook.value} priority {self.priority} every packet is "
                               f"still untracked. Use a priority above {CONNTRACK_PRIORITY}")
        if self.action is Action.LOG and self.log is None:
            raise err("log", "action \"log\" needs a log prefix")
        if not self.families:
            raise err(_family_culprit(self), "the rule can never match: its family, proto and "
                                              "addresses select no common IP version")


# ---- field parsing ----------------------------------------------------------------------------

def _error_for(rule_id: str | None):
    def make(field: str, message: str) -> RuleError:
        return RuleError(message, rule=rule_id, field=field)
    return make


class _Fields:
    """Reads and validates one field at a time, naming the rule and field on error."""

    def __init__(self, label: str | None, data: dict[str, Any]):
        self.data = data
        self.err = _error_for(label)

    def enum(self, key: str, kind, default):
        raw = self.data.get(key)
        if raw is None:
            return default
        try:
            return kind(raw)
        except ValueError:
            valid = " | ".join(m.value for m in kind)
            raise self.err(key, unknown_text(f"value {raw!r}", raw, [m.value for m in kind],
                                             f"expected {valid}")) from None

    def priority(self) -> int:
        raw = self.data.get("priority", 0)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.err("priority", f"must be an integer, not {raw!r}")
        if raw >= POLICY_PRIORITY:
            raise self.err("priority", f"must be below {POLICY_PRIORITY}, where the policy "
                                       f"chain runs; got {raw}")
        if raw < PRIORITY_MIN:
            raise self.err("priority", f"is below the kernel's range: it must be between "
                                       f"{PRIORITY_MIN} and {POLICY_PRIORITY - 1}; got {raw}")
        return raw

    def listed(self, key: str) -> list[Any]:
        raw = self.data.get(key)
        if raw is None:
            return []
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise self.err(key, "is an empty list; leave the key out to match anything")
        return items

    def addresses(self, key: str) -> tuple[Network | SetRef, ...]:
        nets: list[Network | SetRef] = []
        items = self.listed(key)
        for item in items:
            if not isinstance(item, str):
                raise self.err(key, f"{item!r} is not an address string")
            if item.startswith("@"):
                if len(items) > 1:
                    raise self.err(key, f"a set reference ({item}) must be the only value; put "
                                        "the other addresses into the set")
                if not SET_NAME_RE.match(item[1:]):
                    raise self.err(key, f"{item!r} is not a set name (letters, digits, '_')")
                nets.append(SetRef(item[1:]))
                continue
            nets.append(parse_network(item, self.err, key))
        return tuple(nets)

    def ports(self, key: str) -> tuple[PortRange, ...]:
        return tuple(parse_port(item, self.err, key) for item in self.listed(key))

    def ifnames(self, key: str) -> tuple[str, ...]:
        names = self.listed(key)
        for name in names:
            if not isinstance(name, str) or not IFNAME_RE.match(name):
                raise self.err(key, f"{name!r} is not an interface name (1-15 characters, "
                                    "no spaces or '/'; '*' at the end matches a prefix)")
        return tuple(names)

    def states(self) -> tuple[str, ...]:
        states = self.listed("state")
        for s in states:
            if s not in CT_STATES:
                raise self.err("state", unknown_text(f"conntrack state {s!r}", s, CT_STATES,
                                                     f"expected {' | '.join(CT_STATES)}"))
        return tuple(dict.fromkeys(states))

    def icmp_types(self, proto: Proto) -> tuple[str | int, ...]:
        types = self.listed("icmp_type")
        if not types:
            return ()
        if proto is Proto.ICMP:
            names = ICMP_TYPES
        elif proto is Proto.ICMPV6:
            names = ICMPV6_TYPES
        else:
            raise self.err("icmp_type", "needs proto = \"icmp\" or \"icmpv6\"")
        for t in types:
            if isinstance(t, bool) or not (t in names or (isinstance(t, int) and 0 <= t <= 255)):
                raise self.err("icmp_type", unknown_text(
                    f"{proto.value} type {t!r}", t, names,
                    f"expected one of {', '.join(names)} or a number 0-255"))
        return tuple(types)

    def log_prefix(self) -> str | None:
        raw = self.data.get("log")
        return None if raw is None else parse_log_prefix(raw, self.err, "log")

    def limit(self) -> Limit | None:
        raw = self.data.get("limit")
        return None if raw is None else parse_limit(raw, self.err, "limit")

    def text(self, key: str) -> str | None:
        raw = self.data.get(key)
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise self.err(key, "must be a string")
        if has_control(raw):
            raise self.err(key, f"{raw!r} contains control characters; nftables keeps "
                                "comments as plain text")
        return raw


def parse_limit(raw: Any, err, field: str) -> Limit:
    """A rate such as "10/second burst 20", within what the kernel's token bucket holds."""
    m = LIMIT_RE.match(raw) if isinstance(raw, str) else None
    if not m or m.group(2) not in LIMIT_UNITS or int(m.group(1)) < 1:
        raise err(field, f"{raw!r} is not a rate such as \"10/second\" or "
                         f"\"100/minute burst 20\" (units: {', '.join(LIMIT_UNITS)})")
    rate, unit = int(m.group(1)), m.group(2)
    burst = int(m.group(3)) if m.group(3) else None
    if rate > LIMIT_MAX:
        raise err(field, f"rate {rate} is above the kernel's limit of {LIMIT_MAX}")
    if burst is not None and not 1 <= burst <= LIMIT_MAX:
        raise err(field, f"burst {burst} must be between 1 and {LIMIT_MAX}")
    # The kernel keeps the bucket as (nanoseconds per unit / rate) * burst in 64 bits.
    if (LIMIT_UNIT_SECONDS[unit] * 10**9 // rate) * (burst or LIMIT_DEFAULT_BURST) >= 2**64:
        raise err(field, f"burst {burst} at {rate}/{unit} overflows the kernel's "
                         "token bucket; use a smaller burst or a shorter unit")
    return Limit(rate, unit, burst)


def parse_network(text: str, err, field: str) -> Network:
    if text != text.strip():
        raise err(field, f"{text!r} has spaces around it; write {text.strip()!r}")
    if "%" in text:  # Python takes a zone (fe80::1%eth0); nft matches bare addresses
        raise err(field, f"{text!r} carries a zone (%...); leave the zone out")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            raise err(field, f"{text!r} has host bits set; did you mean {fixed}?") from None
        raise err(field, f"{text!r} is not an IPv4 or IPv6 address or CIDR") from None


def parse_port(item: Any, err, field: str) -> PortRange:
    if isinstance(item, bool):
        raise err(field, f"{item!r} is not a port")
    if isinstance(item, int):
        lo = hi = item
    elif isinstance(item, str) and re.fullmatch(r"[0-9]{1,5}(-[0-9]{1,5})?", item):
        # "80" and "80-90": ASCII digits only (int() would take "٨٠" and " 80 "); no spaces
        parts = [int(p) for p in item.split("-")]
        lo, hi = parts[0], parts[-1]
    else:
        raise err(field, f"{item!r} is not a port, a \"lo-hi\" range or a list of them")
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535):
        raise err(field, f"{item!r} is out of range 0-65535")
    if lo > hi:
        raise err(field, f"{item!r} is an empty range")
    return PortRange(lo, hi)


def _format_net(net: Network | SetRef) -> str:
    if isinstance(net, SetRef):
        return net.format()
    full = 32 if net.version == 4 else 128
    return str(net.network_address) if net.prefixlen == full else str(net)


def _one_or_list(values: list) -> Any:
    return values[0] if len(values) == 1 else values


def _families(family: Family, proto: Proto, src: Iterable[Network],
              dst: Iterable[Network]) -> tuple[Family, ...]:
    allowed = {Family.IP, Family.IP6} if family is Family.ANY else {family}
    if proto is Proto.ICMP:
        allowed &= {Family.IP}
    elif proto is Proto.ICMPV6:
        allowed &= {Family.IP6}
    for nets in (src, dst):
        nets = [n for n in nets if not isinstance(n, SetRef)]  # a set holds both versions
        if nets:
            allowed &= {Family.IP if n.version == 4 else Family.IP6 for n in nets}
    return tuple(f for f in (Family.IP, Family.IP6) if f in allowed)


def _family_culprit(rule: Rule) -> str:
    for key in ("dst", "src", "proto"):
        if getattr(rule, key):
            if key == "proto" and rule.proto is Proto.ANY:
                continue
            return key
    return "family"
