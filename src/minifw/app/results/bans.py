"""Results of ban and unban: a module of their own, so that the commands a ban feed runs
define no other result (each frozen dataclass costs most of a millisecond at start)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

from .base import Outcome, _frozen


@_frozen
class Banned(Outcome):
    """What a ban added, to which set, and for how long."""

    set: str
    banned: tuple[str, ...]
    timeout: int | None        # seconds
    apply_ms: float            # time in the kernel transaction

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "banned": list(self.banned), "timeout": self.timeout,
                "apply_ms": self.apply_ms}


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
