"""Named sets -> nft sets and element commands. Pure.

One named set ``NAME`` is backed by four kernel sets in table ``inet minifw``:

    s_NAME_v4     ipv4_addr, hash, flags timeout            single IPv4 addresses
    s_NAME_v4net  ipv4_addr, flags interval, timeout        IPv4 CIDRs
    s_NAME_v6     ipv6_addr, hash, flags timeout            single IPv6 addresses
    s_NAME_v6net  ipv6_addr, flags interval, timeout        IPv6 CIDRs

Single addresses only ever go to the hash sets, so a ban or an import of addresses never pays for
nft 1.0.6's interval overlap check (over a minute per element at 1M). The default set ``blocked``
is dropped at prerouting by the chain ``bans`` (priority ``BAN_PRIORITY``), which is not a
declarative chain: reloads leave it alone.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any, Iterable

from ..model.sets import DEFAULT_SET, element_kind
from .names import BAN_CHAIN, BAN_CHAIN_V4, BAN_CHAIN_V6, BAN_PRIORITY

TABLE = "minifw"
FAMILY = "inet"
# The kernel walks a set with timeouts every gc-interval (default 1 s) to free expired elements;
# at 1M elements that walk costs packets. Expired elements never match anyway, so walk rarely.
GC_INTERVAL = 60
KINDS = ((4, False), (4, True), (6, False), (6, True))
_SUFFIX = {(4, False): "v4", (4, True): "v4net", (6, False): "v6", (6, True): "v6net"}

Command = "dict[str, Any]"  # a type alias, for annotations only


def _ref(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **kw}


def kernel_name(name: str, version: int, cidr: bool) -> str:
    return f"s_{name}_{_SUFFIX[(version, cidr)]}"


def kernel_names(name: str) -> list[str]:
    return [kernel_name(name, v, c) for v, c in KINDS]


def owner_of(kernel_set: str) -> str | None:
    """The named set a kernel set belongs to, or None if it is not a named-set backing set."""
    if not kernel_set.startswith("s_"):
        return None
    base, _, suffix = kernel_set[2:].rpartition("_")
    return base if suffix in _SUFFIX.values() and base else None


def build_set_decls(name: str) -> list[Command]:
    """``add set`` for the four backing sets. ``add`` is idempotent: a loaded set keeps its elements."""
    cmds = []
    for version, cidr in KINDS:
        flags = ["interval", "timeout"] if cidr else ["timeout"]
        cmds.append({"add": {"set": _ref(name=kernel_name(name, version, cidr),
                                         type="ipv4_addr" if version == 4 else "ipv6_addr",
                                         flags=flags, **{"gc-interval": GC_INTERVAL})}})
    return cmds


def build_set_delete(name: str) -> list[Command]:
    return [{"delete": {"set": _ref(name=n)}} for n in kernel_names(name)]


def match_alternatives(name: str, field: str, version: int) -> list[dict[str, Any]]:
    """The matches (hash lookup, interval lookup) that together mean ``<field> in @name``."""
    proto = "ip" if version == 4 else "ip6"
    return [{"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": field}},
                       "right": f"@{kernel_name(name, version, cidr)}"}}
            for cidr in (False, True)]


def element_value(text: str, timeout: int | None = None) -> Any:
    """The JSON of one element; ``timeout`` in whole seconds (remaining time)."""
    if "/" in text:
        addr, length = text.split("/")
        val: Any = {"prefix": {"addr": addr, "len": int(length)}}
    else:
        val = text
    if timeout is None:
        return val
    return {"elem": {"val": val, "timeout": max(1, int(timeout))}}


def build_elements(op: str, name: str, items: Iterable[tuple[str, int | None]]) -> list[Command]:
    """``op`` ("add", "create" or "delete") of (element, remaining timeout) pairs, grouped by
    backing set. Deletes carry no timeout."""
    groups: dict[str, list[Any]] = {}
    for text, timeout in items:
        version, cidr = element_kind(text)
        value = element_value(text, None if op == "delete" else timeout)
        groups.setdefault(kernel_name(name, version, cidr), []).append(value)
    return [{op: {"element": _ref(name=kset, elem=elems)}} for kset, elems in groups.items()]


def build_bulk_add(name: str, singles: list[str], cidrs: list[str],
                   timeout: int | None) -> list[Command]:
    """``add`` of an import: the single addresses go to the hash sets only, in one command per
    backing set, built without a per-element function call (1M elements in well under a second)."""
    v6 = [a for a in singles if ":" in a]
    v4 = [a for a in singles if ":" not in a] if len(v6) != len(singles) else []
    groups = [(kernel_name(name, 4, False), v4), (kernel_name(name, 6, False), v6)]
    cmds = []
    for kset, elems in groups:
        if not elems:
            continue
        if timeout is not None:
            t = max(1, int(timeout))
            elems = [{"elem": {"val": a, "timeout": t}} for a in elems]
        cmds.append({"add": {"element": _ref(name=kset, elem=elems)}})
    if cidrs:
        cmds += build_elements("add", name, ((c, timeout) for c in cidrs))
    return cmds


def build_restore(name: str, rows: list[tuple[str, int]], at: int) -> list[Command]:
    """``add`` of recorded (address, absolute expiry or 0) rows, each with its remaining time.
    Rows already expired at ``at`` are left out."""
    groups: dict[str, list[Any]] = {}
    for addr, expiry in rows:
        if expiry and expiry <= at:
            continue
        if "/" in addr:
            groups.setdefault(kernel_name(name, 6 if ":" in addr else 4, True), []).append(
                element_value(addr, (expiry - at) if expiry else None))
            continue
        kset = kernel_name(name, 6 if ":" in addr else 4, False)
        groups.setdefault(kset, []).append(
            {"elem": {"val": addr, "timeout": expiry - at}} if expiry else addr)
    return [{"add": {"element": _ref(name=k, elem=v)}} for k, v in groups.items()]


def build_flush(name: str) -> list[Command]:
    return [{"flush": {"set": _ref(name=n)}} for n in kernel_names(name)]


def build_flush_singles(name: str) -> list[Command]:
    """Flush the two hash sets (single addresses) of a named set, not its CIDRs."""
    return [{"flush": {"set": _ref(name=kernel_name(name, v, False))}} for v in (4, 6)]


Kind = tuple[int, bool]  # (IP version, CIDR?): which of the four backing sets
_BAN_SET_KINDS = {kernel_name(DEFAULT_SET, *k): k for k in KINDS}  # backing set -> its kind
_DISPATCH = {"vmap": {"key": {"meta": {"key": "nfproto"}},
                      "data": {"set": [["ipv4", {"goto": {"target": BAN_CHAIN_V4}}],
                                       ["ipv6", {"goto": {"target": BAN_CHAIN_V6}}]]}}}


def _ban_rule(chain: str, shape: str) -> Command:
    """One rule of ``ban_layout``: the verdict map, or a lookup of one backing set."""
    if shape == "dispatch":
        return {"add": {"rule": _ref(chain=chain, comment="bans: by IP version",
                                     expr=[_DISPATCH])}}
    version, cidr = _BAN_SET_KINDS[shape]
    match = match_alternatives(DEFAULT_SET, "saddr", version)[1 if cidr else 0]
    return {"add": {"rule": _ref(chain=chain, comment=f"ban {DEFAULT_SET}",
                                 expr=[match, {"counter": None}, {"drop": None}])}}


def ban_layout(armed: Iterable[Kind]) -> dict[str, list[str]]:
    """What each ban chain holds for the lookups ``armed``, rule by rule: a backing set's name
    for a lookup, ``"dispatch"`` for the verdict map. The base chain looks up only the backing
    sets that hold elements, since every lookup costs each packet, even of an empty set:
    - none armed: the base chain is empty;
    - one IP version: its lookups sit in the base chain (``ip saddr`` carries the version check);
    - both: a ``meta nfproto`` verdict map sends each packet to its version's chain, so a packet
      meets only its own version's lookups.

    Measured A/B against no firewall with the bench's IPv6 flood (bench/scale's method, 16-24
    rounds): four lookups in one chain (v4 first) 0.88x, the v6 ones first 0.91-0.93x, the
    verdict map 0.94-0.98x (no firewall 0.97-1.03x)."""
    armed = set(armed)
    names = [(v, kernel_name(DEFAULT_SET, v, c)) for v, c in KINDS if (v, c) in armed]
    if len({v for v, _ in names}) < 2:
        return {BAN_CHAIN: [n for _, n in names], BAN_CHAIN_V4: [], BAN_CHAIN_V6: []}
    return {BAN_CHAIN: ["dispatch"],
            BAN_CHAIN_V4: [n for v, n in names if v == 4],
            BAN_CHAIN_V6: [n for v, n in names if v == 6]}


def build_ban_chain(armed: Iterable[Kind]) -> list[Command]:
    """(Re)build the prerouting chain that drops the default set, with ``ban_layout(armed)``.
    Each lookup rule is commented ``ban blocked``. Flush and refill go in one transaction with
    the caller's commands, so no packet ever meets a half-built chain."""
    layout = ban_layout(armed)
    decls = {BAN_CHAIN_V4: _ref(name=BAN_CHAIN_V4), BAN_CHAIN_V6: _ref(name=BAN_CHAIN_V6),
             BAN_CHAIN: _ref(name=BAN_CHAIN, type="filter", hook="prerouting",
                             prio=BAN_PRIORITY, policy="accept")}
    cmds: list[Command] = []
    for chain, decl in decls.items():  # regular chains first: the verdict map jumps to them
        cmds += [{"add": {"chain": decl}}, {"flush": {"chain": _ref(name=chain)}}]
        cmds += [_ban_rule(chain, shape) for shape in layout[chain]]
    return cmds


def _rule_shape(rule: dict[str, Any]) -> str | None:
    """A live rule as ``ban_layout`` writes it: the set it looks up, "dispatch", or None."""
    for expr in rule.get("expr", []):
        if not isinstance(expr, dict):
            continue
        right = expr.get("match", {}).get("right")
        if isinstance(right, str) and right.startswith("@"):
            return right[1:]
        if "vmap" in expr:
            return "dispatch"
    return None


def live_set_lookups(rules: Iterable[dict[str, Any]], name: str, rule_id: str) -> frozenset[Kind]:
    """The backing sets of ``name`` that the live nft rules of minifw rule ``rule_id`` (found by
    their comment) look up, from a terse listing's rules."""
    backing = {kernel_name(name, v, c): (v, c) for v, c in KINDS}
    out = set()
    for rule in rules:
        comment = rule.get("comment") or ""
        if comment == rule_id or comment.startswith(f"{rule_id}:"):
            shape = _rule_shape(rule)
            if shape in backing:
                out.add(backing[shape])
    return frozenset(out)


def live_ban_lookups(chains: Iterable[str], rules: Iterable[dict[str, Any]]) -> frozenset[Kind] | None:
    """The backing sets the live ban chains look up, from a terse listing's chain names and
    rules; None when the chains are missing or laid out otherwise (older minifw, another tool),
    so that the caller rebuilds them."""
    if not {BAN_CHAIN, BAN_CHAIN_V4, BAN_CHAIN_V6} <= set(chains):
        return None
    live: dict[str, list[str | None]] = {BAN_CHAIN: [], BAN_CHAIN_V4: [], BAN_CHAIN_V6: []}
    for rule in rules:
        if rule.get("chain") in live:
            live[rule["chain"]].append(_rule_shape(rule))
    armed = frozenset(_BAN_SET_KINDS[n] for shapes in live.values() for n in shapes
                      if n in _BAN_SET_KINDS)
    return armed if ban_layout(armed) == live else None
