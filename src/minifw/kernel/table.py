"""Reads of the live ``inet minifw`` table. Terse listings only: set elements are never pulled."""

from __future__ import annotations

import dataclasses

from ..compile.nft import FAMILY, TABLE, rule_id_of_comment
from ..errors import KernelError
from . import nft


@dataclasses.dataclass(frozen=True)
class LiveRule:
    handle: int
    rule_id: str | None
    packets: int
    bytes: int


def exists() -> bool:
    return nft.table_exists(FAMILY, TABLE)


def objects() -> tuple[list[str], list[str]]:
    """Names of the chains and limit objects in the table (empty if there is no table)."""
    try:
        listing = nft.query(f"list table {FAMILY} {TABLE}")
    except KernelError:
        return [], []
    return ([c["name"] for c in nft.items(listing, "chain")],
            [lim["name"] for lim in nft.items(listing, "limit")])


def chain_rules(chain: str) -> list[LiveRule]:
    """The rules of one chain in kernel order, with handles and summed-up counters."""
    listing = nft.query(f"list chain {FAMILY} {TABLE} {chain}")
    out = []
    for rule in nft.items(listing, "rule"):
        packets = byte_count = 0
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):
                packets += counter.get("packets", 0)
                byte_count += counter.get("bytes", 0)
        out.append(LiveRule(rule["handle"], rule_id_of_comment(rule.get("comment")),
                            packets, byte_count))
    return out


def base_chains() -> list[dict]:
    """Every base chain of every table in this namespace: family, table, name, hook, prio."""
    listing = nft.query("list chains")
    return [c for c in nft.items(listing, "chain") if "hook" in c]
