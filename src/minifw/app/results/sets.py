"""Results of the set operations other than ban and unban (results/bans.py)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any, Mapping

from .base import Outcome, _frozen

# ---- sets -------------------------------------------------------------------------------------

@_frozen
class Imported(Outcome):
    set: str
    imported: int
    skipped: int
    apply_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "imported": self.imported, "skipped": self.skipped,
                "apply_ms": self.apply_ms}


@_frozen
class Flushed(Outcome):
    set: str
    removed: int

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "removed": self.removed}


@_frozen
class Recovered(Outcome):
    sets: Mapping[str, int]    # set -> elements found in the kernel
    kept: str | None           # where the previous record files were kept

    def to_json(self) -> dict[str, Any]:
        return {"sets": dict(self.sets), "kept": self.kept}


@_frozen
class SetElement:
    element: str
    expires_in: int | None     # seconds left; None: permanent
    origin: str | None = None  # a fed set's element: "cscli", "crowdsec:<scenario>" (+ decision)

    def to_json(self) -> dict[str, Any]:
        out = {"element": self.element, "expires_in": self.expires_in}
        if self.origin is not None:
            out["origin"] = self.origin
        return out


@_frozen
class SetPage:
    """One page of a set's elements. ``page`` counts from 1."""

    set: str
    addresses: int
    cidrs: int
    elements: int
    page: int
    page_size: int
    pages: int
    items: tuple[SetElement, ...]

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "addresses": self.addresses, "cidrs": self.cidrs,
                "elements": self.elements, "page": self.page, "page_size": self.page_size,
                "pages": self.pages, "items": [i.to_json() for i in self.items]}


@_frozen
class SetSummary:
    """A named set's live element counts."""

    name: str
    addresses: int
    cidrs: int
    elements: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "addresses": self.addresses, "cidrs": self.cidrs,
                "elements": self.elements}
