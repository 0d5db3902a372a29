"""Results of ``minifw nat add / delete / list``."""

from __future__ import annotations

from typing import Any, Mapping

from .base import Outcome, _frozen


@_frozen
class NatAdded(Outcome):
    id: str
    saved_to: str | None   # the config file, or None for a runtime-only entry

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}


@_frozen
class NatDeleted(Outcome):
    id: str
    saved_to: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}


@_frozen
class ListedNat:
    """One live [[nat]] entry. Its counters count the first packet of each flow it matched:
    later packets follow conntrack and never pass the NAT chain."""

    id: str
    kind: str
    hook: str
    priority: int
    match: Mapping[str, Any]
    to: str | int | None
    comment: str | None
    packets: int
    bytes: int
    runtime: bool          # added with --runtime: not in the config file

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "hook": self.hook, "priority": self.priority,
                "match": dict(self.match), "to": self.to, "comment": self.comment,
                "packets": self.packets, "bytes": self.bytes, "runtime": self.runtime}


@_frozen
class NatListing:
    """``nat list``: the live entries in config order (each chain's order)."""

    nats: tuple[ListedNat, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"nats": [n.to_json() for n in self.nats]}
