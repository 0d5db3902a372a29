"""The result of an unban (results/bans.py says why it is apart)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

from .base import Outcome, _frozen


@_frozen
class Unbanned(Outcome):
    """What an unban removed from a set, and which elements were not in it."""

    set: str
    unbanned: tuple[str, ...]
    absent: tuple[str, ...]
    messages: tuple[str, ...]
    apply_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "unbanned": list(self.unbanned), "absent": list(self.absent),
                "messages": list(self.messages), "apply_ms": self.apply_ms}
