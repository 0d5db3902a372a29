"""The base of the results that report in a message, and the dataclass form all share."""

from __future__ import annotations

import dataclasses
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

_frozen = dataclasses.dataclass(frozen=True, kw_only=True)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an operation did, said in one message (and warnings), for the CLI to print."""

    message: str
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "warnings": list(self.warnings)}
