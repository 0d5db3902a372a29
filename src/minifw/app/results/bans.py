"""The result of a ban: a module of its own, so that the command a ban feed runs defines no
other result (each frozen dataclass costs most of a millisecond at start); unban's is in
results/unbans.py."""

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

