"""The Nat: one ``[[nat]]`` entry (masquerade, SNAT, DNAT or redirect), validated on construction.

The match keys are those of ``[[rule]]``, read by the rule model's own field parser, so they
take the same values and fail with the same one-line errors. ``Nat.from_toml(dict)`` and
``nat.to_toml()`` are a pair, as for rules.

Where each kind runs (the kernel's NAT priorities, whatever a chain declares):
- masquerade and snat: postrouting, srcnat (100);
- dnat and redirect: prerouting, dstnat (-100), or ``hook = "output"`` for the host's own
  connections (output, dstnat).
NAT chains see only the first packet of each flow; later packets follow conntrack. So ``state``
and ``limit`` (which would count flows, not packets) are refused.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
from typing import Any

from ..errors import ConfigError, RuleError
from .rule import (ID_RE, MATCH_KEYS, Network, PortRange, Rule, _families, _Fields, content_digest,
                   parse_port)
from .setdefs import SetRef
from .types import Action, Family, Hook, Proto
from . import suggest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT_KEYS = ("id", "kind", "hook", "family", "proto", "src", "dst", "sport", "dport", "iif", "oif",
            "icmp_type", "to", "comment")
NAT_PRIORITY = {Hook.PREROUTING: -100, Hook.OUTPUT: -100, Hook.POSTROUTING: 100}
# "[v6]:port", "[v6-v6]:port", "v4:port", "v4-v4:port", or a bare address (range); port may be a range
_TO_BRACKETED = re.compile(r"^\[([^\]]+)\](?::(.+))?$")
_TO_V4_PORT = re.compile(r"^([0-9.]+(?:-[0-9.]+)?):([^:]+)$")


class NatKind(str, enum.Enum):
    MASQUERADE = "masquerade"
    SNAT = "snat"
    DNAT = "dnat"
    REDIRECT = "redirect"

    @property
    def hooks(self) -> tuple[Hook, ...]:
        """The hooks this kind may run at; the first is the default."""
        if self in (NatKind.MASQUERADE, NatKind.SNAT):
            return (Hook.POSTROUTING,)
        return (Hook.PREROUTING, Hook.OUTPUT)

    @property
    def is_source(self) -> bool:
        return self in (NatKind.MASQUERADE, NatKind.SNAT)


class NatError(RuleError):
    """A ``[[nat]]`` entry is invalid: says "nat 'ID': field 'F': ..." rather than "rule"."""

    def __init__(self, message: str, *, nat: str | None, field: str, file: str | None = None,
                 line: int | None = None):
        ConfigError.__init__(self, f"nat '{nat}': field '{field}': {message}", file=file,
                             line=line)
        self.rule, self.field, self.detail, self.nat = None, field, message, nat

    def located(self, file: str | None, line: int | None = None) -> "NatError":
        return NatError(self.detail, nat=self.nat, field=self.field or "", file=file,
                        line=line if line is not None else self.line)


def _nat_error_for(label: str | None):
    def make(field: str, message: str) -> NatError:
        return NatError(message, nat=label, field=field)
    return make


@dataclasses.dataclass(frozen=True)
class NatTarget:
    """What ``to`` translates to: an address or an address range (absent for redirect), and
    optionally a port or port range."""

    lo: Address | None = None
    hi: Address | None = None        # == lo for a single address
    port: PortRange | None = None

    @property
    def family(self) -> Family | None:
        if self.lo is None:
            return None
        return Family.IP if self.lo.version == 4 else Family.IP6

    def format(self) -> str | int:
        if self.lo is None:
            assert self.port is not None
            return self.port.format()
        addr = str(self.lo) if self.hi == self.lo else f"{self.lo}-{self.hi}"
        if self.port is None:
            return addr
        if self.lo.version == 6:
            addr = f"[{addr}]"
        return f"{addr}:{self.port.format()}"


@dataclasses.dataclass(frozen=True)
class Nat:
    id: str
    kind: NatKind
    hook: Hook = Hook.POSTROUTING
    family: Family = Family.ANY
    proto: Proto = Proto.ANY
    src: tuple[Network | SetRef, ...] = ()
    dst: tuple[Network | SetRef, ...] = ()
    sport: tuple[PortRange, ...] = ()
    dport: tuple[PortRange, ...] = ()
    iif: tuple[str, ...] = ()
    oif: tuple[str, ...] = ()
    icmp_type: tuple[str | int, ...] = ()
    to: NatTarget | None = None
    comment: str | None = None
    explicit_id: bool = True

    # ---- derived -------------------------------------------------------------------------
    @property
    def priority(self) -> int:
        return NAT_PRIORITY[self.hook]

    @property
    def families(self) -> tuple[Family, ...]:
        """The families (ip, ip6) this entry translates: its matches', narrowed by ``to``."""
        fams = _families(self.family, self.proto, self.src, self.dst)
        target = self.to.family if self.to is not None else None
        return tuple(f for f in fams if target is None or f is target)

    def match_rule(self) -> Rule:
        """The entry's matches as a rule that never decides (action log, no prefix): what the
        compiler and the engine match packets with. Its family is narrowed by ``to``."""
        families = self.families
        return self._as_rule(families[0] if len(families) == 1 else self.family, Action.LOG)

    def _as_rule(self, family: Family, action: Action) -> Rule:
        return Rule(id=self.id, action=action, hook=self.hook, priority=self.priority,
                    family=family, proto=self.proto, src=self.src, dst=self.dst,
                    sport=self.sport, dport=self.dport, iif=self.iif, oif=self.oif,
                    icmp_type=self.icmp_type, comment=self.comment)

    def match_dict(self) -> dict[str, Any]:
        """The match keys in TOML form, only those set."""
        out = self.to_toml()
        return {k: out[k] for k in MATCH_KEYS if k in out}

    # ---- TOML pair -----------------------------------------------------------------------
    @classmethod
    def from_toml(cls, data: Any, *, index: int | None = None) -> "Nat":
        if not isinstance(data, dict):
            raise NatError("must be written as [[nat]] tables", nat=_label(None, index),
                           field="nat")
        rid = data.get("id")
        label = rid if isinstance(rid, str) else _label(None, index)
        err = _nat_error_for(label)
        unknown = [k for k in data if k not in NAT_KEYS]
        if unknown:
            if unknown[0] in ("state", "limit"):
                raise err(unknown[0], "unknown key (NAT chains see only the first packet of each "
                                      f"flow); valid keys are {', '.join(NAT_KEYS)}")
            raise err(unknown[0], suggest.unknown("key", unknown[0], NAT_KEYS,
                                                  f"valid keys are {', '.join(NAT_KEYS)}"))
        if "kind" not in data:
            raise err("kind", "is required (masquerade, snat, dnat or redirect)")
        f = _Fields(label, data)
        f.err = err
        kind = f.enum("kind", NatKind, None)
        hook = f.enum("hook", Hook, kind.hooks[0])
        if hook not in kind.hooks:
            raise err("hook", f"{kind.value} runs at {' or '.join(h.value for h in kind.hooks)}"
                              f", not {hook.value}")
        proto = f.enum("proto", Proto, Proto.ANY)
        kwargs = dict(
            kind=kind, hook=hook, family=f.enum("family", Family, Family.ANY), proto=proto,
            src=f.addresses("src"), dst=f.addresses("dst"),
            sport=f.ports("sport"), dport=f.ports("dport"),
            iif=f.ifnames("iif"), oif=f.ifnames("oif"), icmp_type=f.icmp_types(proto),
            to=parse_target(data.get("to"), kind, err), comment=f.text("comment"),
        )
        if rid is None:
            nat = cls(id="", explicit_id=False, **kwargs)
            nat = dataclasses.replace(nat, id=nat.generated_id())
        else:
            if not isinstance(rid, str) or not ID_RE.match(rid):
                raise err("id", "must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                                "letter or digit")
            nat = cls(id=rid, **kwargs)
        nat.check(label)
        return nat

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.explicit_id:
            out["id"] = self.id
        out["kind"] = self.kind.value
        if self.hook is not self.kind.hooks[0]:
            out["hook"] = self.hook.value
        as_rule = self._as_rule(self.family, Action.ACCEPT).to_toml()  # the rule's forms
        out.update((k, as_rule[k]) for k in MATCH_KEYS if k in as_rule)
        if self.to is not None:
            out["to"] = self.to.format()
        if self.comment is not None:
            out["comment"] = self.comment
        return out

    def generated_id(self) -> str:
        return f"nat-{self.kind.value}-{content_digest(self.to_toml())}"

    def check(self, label: str | None = None) -> None:
        """Refuse entries that could never match or that the kernel would refuse; errors name
        ``label`` (the config's '#N' for an entry without an id) or the id."""
        err = _nat_error_for(label or self.id)
        try:  # the rule's own checks: ports need a proto, interfaces their hooks, a family
            self._as_rule(self.family, Action.ACCEPT).check()
        except RuleError as exc:
            raise err(exc.field or "", exc.detail) from None
        if self.to is not None and self.to.port is not None and not self.proto.has_ports:
            raise err("to", "a port needs proto = \"tcp\" or \"udp\"")
        if not self.families:
            raise err("to", f"is an {'IPv4' if self.to.family is Family.IP else 'IPv6'} "
                            "address but the entry matches only the other IP version")


def _label(rid: Any, index: int | None) -> str:
    return rid if isinstance(rid, str) else (f"#{index + 1}" if index is not None else "new")


# ---- `to` ---------------------------------------------------------------------------------------

def parse_target(raw: Any, kind: NatKind, err) -> NatTarget | None:
    """Read ``to`` for ``kind``: an address[:port] or address range for snat and dnat, a port
    for redirect, nothing for masquerade (it takes the output interface's address)."""
    if kind is NatKind.MASQUERADE:
        if raw is not None:
            raise err("to", "masquerade takes the address of the output interface; use kind = "
                            "\"snat\" to choose the address")
        return None
    if kind is NatKind.REDIRECT:
        if raw is None:
            return None  # the packet keeps its destination port
        if isinstance(raw, str) and not re.fullmatch(r"[0-9]{1,5}(-[0-9]{1,5})?", raw):
            raise err("to", f"{raw!r}: redirect takes a port or port range (the address is the "
                            "host's own)")
        return NatTarget(port=parse_port(raw, err, "to"))
    if raw is None:
        raise err("to", f"is required for {kind.value}: an address, \"address:port\" or an "
                        "address range")
    if not isinstance(raw, str):
        raise err("to", f"{raw!r} is not an address string")
    if raw != raw.strip() or not raw:
        raise err("to", f"{raw!r} has spaces around it; write {raw.strip()!r}")
    m = _TO_BRACKETED.match(raw)
    if m:
        addr_text, port_text = m.group(1), m.group(2)
        if port_text is None and not raw.endswith("]"):
            raise err("to", f"{raw!r} is not \"[address]:port\"")
        if ":" not in addr_text:
            raise err("to", f"{raw!r}: only IPv6 addresses are written in brackets")
    else:
        m = _TO_V4_PORT.match(raw)
        addr_text, port_text = (m.group(1), m.group(2)) if m else (raw, None)
        if port_text is None and raw.count(":") == 1:
            raise err("to", f"{raw!r} is not an address or \"address:port\"")
        if port_text is None and "]" in raw:
            raise err("to", f"{raw!r} is not \"[address]:port\"")
    lo, hi = _address_range(addr_text, raw, err)
    port = None
    if port_text is not None:
        if port_text == "" or not re.fullmatch(r"[0-9]{1,5}(-[0-9]{1,5})?", port_text):
            raise err("to", f"{raw!r}: {port_text!r} is not a port or port range")
        port = parse_port(port_text, err, "to")
    return NatTarget(lo, hi, port)


def _address_range(text: str, raw: str, err) -> tuple[Address, Address]:
    parts = text.split("-")
    if len(parts) > 2:
        raise err("to", f"{raw!r} is not an address range \"first-last\"")
    addrs = []
    for part in parts:
        if "%" in part:
            raise err("to", f"{raw!r} carries a zone (%...); leave the zone out")
        if "/" in part:
            raise err("to", f"{raw!r}: NAT translates to addresses, not a prefix; write a range "
                            "\"first-last\"")
        try:
            addrs.append(ipaddress.ip_address(part))
        except ValueError:
            raise err("to", f"{raw!r}: {part!r} is not an IPv4 or IPv6 address") from None
    lo, hi = addrs[0], addrs[-1]
    if lo.version != hi.version:
        raise err("to", f"{raw!r} mixes IPv4 and IPv6")
    if lo > hi:
        raise err("to", f"{raw!r} is an empty range")
    return lo, hi


# ---- in the Ruleset -----------------------------------------------------------------------------

def nat_point_clash(where: str) -> str:
    """Why nothing else may sit where the kernel runs NAT (said of rules and hook functions)."""
    return (f"{where} is where the kernel runs NAT, and [[nat]] is configured: a filter chain "
            "there sees the original or the translated address depending on which chain was "
            "created first. Use another priority (one above or below)")


def nats_from_toml(data: dict[str, Any]) -> tuple[Nat, ...]:
    raw = data.get("nat", [])
    if not isinstance(raw, list):
        raise NatError("must be written as [[nat]] tables", nat=None, field="nat")
    return tuple(Nat.from_toml(n, index=i) for i, n in enumerate(raw))


def check_nats(nats: tuple[Nat, ...], rules: tuple[Rule, ...], set_names: set[str]) -> None:
    """Ids unique across rules and NAT entries (counters, explain and delete name them by id);
    every ``@set`` defined; no filter rule at a NAT priority while NAT is configured."""
    if nats:
        for rule in rules:
            if NAT_PRIORITY.get(rule.hook) == rule.priority:
                raise RuleError(nat_point_clash(f"{rule.hook.value} priority {rule.priority}"),
                                rule=rule.id, field="priority")
    seen = {r.id for r in rules}
    for nat in nats:
        if nat.id in seen:
            raise NatError("is used by more than one rule or NAT entry; ids must be unique",
                           nat=nat.id, field="id")
        seen.add(nat.id)
        for key in ("src", "dst"):
            for ref in getattr(nat, key):
                if isinstance(ref, SetRef) and ref.name not in set_names:
                    raise NatError(f"set '{ref.name}' is not defined; add a [[set]] table with "
                                   f"name = \"{ref.name}\"", nat=nat.id, field=key)


_NAT_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*nat[ \t]*\]\]", re.MULTILINE)


def nat_line(text: str, label: str | None, data: dict[str, Any], field: str | None) -> int | None:
    """The line of the [[nat]] header of the entry an error names (by id or '#N'); a duplicate
    id is said of its last use."""
    raw = data.get("nat", [])
    if label is None or not isinstance(raw, list):
        return None
    ids = [n.get("id") if isinstance(n, dict) else None for n in raw]
    if label.startswith("#") and label[1:].isdigit():
        index = int(label[1:]) - 1
    elif label in ids:
        index = len(ids) - 1 - ids[::-1].index(label) if field == "id" else ids.index(label)
    else:
        return None
    headers = [m.start() for m in _NAT_HEADER.finditer(text)]
    if not 0 <= index < len(headers):
        return None
    return text.count("\n", 0, headers[index]) + 1
