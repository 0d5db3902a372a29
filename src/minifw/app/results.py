"""What the operations return."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Outcome:
    """What an operation did, for the CLI to print."""

    message: str
    warnings: list[str] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
