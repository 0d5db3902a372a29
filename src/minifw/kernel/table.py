"""What the application reads from the live ``inet minifw`` table, derived from terse listings.

Terse listings only: set elements are never pulled. nft 1.0.6 fetches every set element for
``list table``, ``list tables`` and ``list chain`` even in terse mode (33 s and 645 MB with 1M
elements). Only ``list ruleset`` (terse), ``list chains`` and ``list sets`` (terse) stay fast, so
the kernel seam (``seam.Kernel``) reads ``list ruleset`` once per question and derives the answer
here. These functions do no I/O, so the real kernel and the fake share them.
"""

from __future__ import annotations

import dataclasses
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

from ..compile import sets as ksets
from ..compile import names
from ..compile.sets import FAMILY, TABLE
from ..errors import KernelError

Listing = "dict[str, Any]"  # libnftables JSON: {"nftables": [{"table": {...}}, {"chain": ...}]}


@dataclasses.dataclass(frozen=True)
class LiveRule:
    """One rule of a live chain: its handle, minifw rule id (from the comment), counters."""

    handle: int
    rule_id: str | None
    packets: int
    bytes: int


def items(listing: Listing, kind: str) -> list[dict[str, Any]]:
    return [obj[kind] for obj in listing.get("nftables", []) if kind in obj]


def mine(everything: Listing) -> Listing:
    """A listing of every table, trimmed to ``inet minifw``."""
    return {"nftables": [obj for obj in everything.get("nftables", [])
                         if any(isinstance(v, dict) and v.get("family") == FAMILY
                                and v.get("table", v.get("name")) == TABLE
                                for v in obj.values())]}


def exists(found: Listing) -> bool:
    return bool(items(found, "table"))


def objects(found: Listing) -> tuple[list[str], list[str]]:
    """Names of the chains and limit objects in the table (empty if there is no table)."""
    return ([c["name"] for c in items(found, "chain")],
            [lim["name"] for lim in items(found, "limit")])


def declarative_layout(found: Listing) -> dict[str, list[str | None]]:
    """Each declarative chain of the live table with its rules' comments, in kernel order."""
    layout: dict[str, list[str | None]] = {c["name"]: [] for c in items(found, "chain")
                                           if names.is_declarative(c["name"])}
    for rule in items(found, "rule"):
        if rule.get("chain") in layout:
            layout[rule["chain"]].append(rule.get("comment"))
    return layout


def chain_rules(found: Listing, chain: str) -> list[LiveRule]:
    """The rules of one chain in kernel order, with handles and summed-up counters."""
    from ..compile.comments import rule_id_of_comment  # lazy: a ban never needs it
    if not any(c["name"] == chain for c in items(found, "chain")):
        raise KernelError(f"chain {chain} is not in table {FAMILY} {TABLE}")
    out = []
    for rule in items(found, "rule"):
        if rule.get("chain") != chain:
            continue
        packets, byte_count = counted(rule)
        out.append(LiveRule(rule["handle"], rule_id_of_comment(rule.get("comment")),
                            packets, byte_count))
    return out


def counted(rule: dict) -> tuple[int, int]:
    """(packets, bytes) of a listed rule's counter statements, summed (0, 0 without any)."""
    packets = byte_count = 0
    for expr in rule.get("expr", []):
        counter = expr.get("counter") if isinstance(expr, dict) else None
        if isinstance(counter, dict):
            packets += counter.get("packets", 0)
            byte_count += counter.get("bytes", 0)
    return packets, byte_count


def base_chains(chains: Listing) -> list[dict]:
    """Every base chain of a ``list chains`` listing: family, table, name, hook, prio."""
    return [c for c in items(chains, "chain") if "hook" in c]


def kernel_objects(found: Listing) -> tuple[set[str], set[str], frozenset[ksets.Kind] | None]:
    """Names of the sets and chains in ``inet minifw`` and the lookups of the live ban chains
    (None: missing or laid out otherwise), from one terse listing (no set elements)."""
    chains = {c["name"] for c in items(found, "chain")}
    return ({s["name"] for s in items(found, "set")}, chains,
            ksets.live_ban_lookups(chains, items(found, "rule")))
