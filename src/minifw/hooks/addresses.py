"""Address sets and counters for hook functions, with one meaning in Python and in the kernel.

    BLOCKED = Addresses("198.18.2.2", "198.18.64.0/18", "fd00::66")
    HITS = Counter()

``pkt.src in BLOCKED`` is true for an address inside any of the set's CIDRs, on the queue as in
a BPF program, where the set is a hash map of single addresses plus an LPM trie of CIDRs per
family (``address_entries`` is that encoding, shared by the compiler and the runtime updates).
Pure.
"""

from __future__ import annotations

import ast
import ipaddress
import struct
from typing import Any, Iterable, Iterator

from ..errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_EXPIRY = struct.Struct("<Q")
_PREFIX = struct.Struct("<I")  # struct bpf_lpm_trie_key: u32 prefixlen (host order), then data
# An LPM trie value: the effective expiry (what the program reads, at offset 0), then the
# entry's own expiry (what the effective one is computed again from when the trie changes).
_LPM_VALUE = struct.Struct("<QQ")
LPM_VALUE_SIZE = _LPM_VALUE.size


def _network(item: Any) -> Network:
    if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return item
    if isinstance(item, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_network(item)
    if not isinstance(item, str):
        raise ConfigError(f"Addresses takes addresses and CIDRs as text, not {item!r}.")
    try:
        return ipaddress.ip_network(item.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{item!r} is not an IPv4 or IPv6 address or CIDR.") from None


class Addresses:
    """A set of IPv4/IPv6 addresses and CIDRs; ``x in A`` is CIDR containment."""

    def __init__(self, *items: Any):
        # (version, prefixlen) -> the network addresses (as ints) of that length
        self._nets: dict[tuple[int, int], set[int]] = {}
        self.add(*items)

    def add(self, *items: Any) -> None:
        for net in map(_network, items):
            self._nets.setdefault((net.version, net.prefixlen), set()).add(
                int(net.network_address))

    def discard(self, *items: Any) -> None:
        for net in map(_network, items):
            key = (net.version, net.prefixlen)
            found = self._nets.get(key)
            if found is not None:
                found.discard(int(net.network_address))
                if not found:
                    del self._nets[key]

    def __contains__(self, x: Any) -> bool:
        if isinstance(x, str):
            try:
                x = ipaddress.ip_address(x.strip())
            except ValueError:
                return False
        if not isinstance(x, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        value, bits = int(x), x.max_prefixlen
        for (version, plen), found in self._nets.items():
            if version == x.version and (value >> (bits - plen) << (bits - plen)) in found:
                return True
        return False

    def __iter__(self) -> Iterator[Network]:
        for (version, plen), found in sorted(self._nets.items()):
            for value in sorted(found):
                yield ipaddress.ip_network((value, plen)) if version == 4 \
                    else ipaddress.IPv6Network((value, plen))

    def __len__(self) -> int:
        return sum(len(v) for v in self._nets.values())

    def __repr__(self) -> str:
        return f"Addresses({', '.join(repr(str(n)) for n in self)})"


class Counter:
    """A packet counter; in the kernel a per-CPU array of one u64 that status reads."""

    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


def key_sizes(family: int) -> tuple[int, int]:
    """(hash key size, LPM key size) of an address map of ``family``."""
    n = 4 if family == 4 else 16
    return n, 4 + n


def address_entries(items: Iterable[Any], family: int, expiry_ns: int = 0
                    ) -> dict[str, list[tuple[bytes, bytes]]]:
    """The map entries of ``items`` of ``family``: single addresses under "hash" (key: the
    address, network order), CIDRs under "lpm" (key: u32 prefix length, then the address). The
    value is the u64 CLOCK_MONOTONIC expiry in ns, 0 for never."""
    if not 0 <= expiry_ns < 1 << 64:
        raise ConfigError(f"an expiry of {expiry_ns} ns does not fit in 64 bits.")
    value, alone = _EXPIRY.pack(expiry_ns), _LPM_VALUE.pack(expiry_ns, expiry_ns)
    out: dict[str, list[tuple[bytes, bytes]]] = {"hash": [], "lpm": []}
    for net in map(_network, items):
        if net.version != family:
            continue
        raw = net.network_address.packed
        if net.prefixlen == net.max_prefixlen:
            out["hash"].append((raw, value))
        else:
            # effective = own: right for a CIDR alone; lpm_writes() makes it right among others
            out["lpm"].append((_PREFIX.pack(net.prefixlen) + raw, alone))
    return out


Prefix = tuple[int, int]  # (prefix length, network address as an int)


def _later(a: int, b: int) -> int:
    """The later of two expiries, 0 (never) being the latest."""
    return 0 if a == 0 or b == 0 else max(a, b)


def effective_expiries(own: dict[Prefix, int], bits: int) -> dict[Prefix, int]:
    """Each CIDR's effective expiry: the latest of its own and those of the CIDRs that contain
    it. An LPM trie returns only the longest prefix that matches, so a program that read the
    entry's own expiry would miss an address whose longest CIDR expired while a shorter one
    still covers it; Python's containment matches it. CIDRs nest or are disjoint, so every
    other CIDR that contains the address contains the longest one."""
    lengths = sorted({plen for plen, _ in own})
    out: dict[Prefix, int] = {}
    for (plen, net), expiry in own.items():
        for shorter in lengths:
            if shorter >= plen or expiry == 0:
                break
            cover = own.get((shorter, net >> (bits - shorter) << (bits - shorter)))
            if cover is not None:
                expiry = _later(expiry, cover)
        out[(plen, net)] = expiry
    return out


def _prefix_of(key: bytes) -> Prefix:
    return _PREFIX.unpack_from(key)[0], int.from_bytes(key[4:], "big")


def lpm_writes(current: list[tuple[bytes, bytes]], changes: list[tuple[bytes, int | None]]
               ) -> list[tuple[bytes, bytes | None]]:
    """The writes that apply ``changes`` (key, own expiry, or None to delete) to a trie that
    holds ``current`` (key, value), keeping every entry's effective expiry right: (key, value)
    to update, (key, None) to delete. In the order that never lets a covered address through
    meanwhile: entries whose effective expiry rises (or that are new) first, then deletions,
    then those whose effective expiry falls."""
    if not current and not changes:
        return []
    size = len((current or changes)[0][0]) - _PREFIX.size
    bits = size * 8
    keys = {_prefix_of(k): k for k, _ in current}
    old_own = {_prefix_of(k): _LPM_VALUE.unpack(v)[1] for k, v in current}
    new_own = dict(old_own)
    for key, expiry in changes:
        prefix = _prefix_of(key)
        keys[prefix] = key
        if expiry is None:
            new_own.pop(prefix, None)
        else:
            new_own[prefix] = expiry
    old_eff, new_eff = effective_expiries(old_own, bits), effective_expiries(new_own, bits)
    rises, falls, deletes = [], [], []
    for prefix, eff in new_eff.items():
        value = _LPM_VALUE.pack(eff, new_own[prefix])
        if prefix not in old_eff:
            rises.append((keys[prefix], value))
        elif (old_eff[prefix], old_own[prefix]) != (eff, new_own[prefix]):
            before = old_eff[prefix]
            later = _later(before, eff) == eff
            (rises if later else falls).append((keys[prefix], value))
    deletes = [(keys[p], None) for p in old_own if p not in new_own]
    return rises + deletes + falls


def _is_address_text(value: Any) -> bool:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address,
                          ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return True
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def check_plain_address_sets(source: str, filename: str, module: dict[str, Any]) -> None:
    """Refuse ``pkt.src in {"1.2.3.4", ...}`` (a literal, or a module-level set, tuple, list or
    frozenset of address strings): Python compares such a set by equality and never matches a
    CIDR, where a kernel map would; ``Addresses`` means the same in both paths."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise ConfigError(f"syntax error: {exc.msg}", file=filename, line=exc.lineno) from None
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:]):
            if not isinstance(op, (ast.In, ast.NotIn)) or not (
                    isinstance(left, ast.Attribute) and left.attr in ("src", "dst")):
                continue
            values: Any = None
            if isinstance(right, (ast.Set, ast.Tuple, ast.List)):
                values = [e.value for e in right.elts if isinstance(e, ast.Constant)]
            elif isinstance(right, ast.Name):
                found = module.get(right.id)
                if isinstance(found, (set, frozenset, tuple, list)):
                    values = list(found)
            if values and any(_is_address_text(v) for v in values):
                raise ConfigError(
                    f"`{ast.unparse(left)} in {ast.unparse(right)}` compares addresses with a "
                    "plain set, which never matches a CIDR (and a kernel map would); use "
                    "minifw.Addresses(...) instead.", file=filename, line=node.lineno)
