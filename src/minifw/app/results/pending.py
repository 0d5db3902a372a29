"""Results of confirm-or-rollback: the pending change ``status`` shows, the last rollback, and
the outcomes of ``confirm`` and ``rollback``."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from .base import Outcome, _frozen


@_frozen
class PendingChange:
    """A change applied with ``--confirm``: rolled back at ``deadline`` unless confirmed."""

    op: str
    seconds: int           # the --confirm value
    started: float         # epoch seconds
    deadline: float        # epoch seconds
    seconds_left: int      # 0 once overdue (the next command rolls it back)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "seconds": self.seconds, "started": self.started,
                "deadline": self.deadline, "seconds_left": self.seconds_left}


@_frozen
class RollbackRecord:
    """The last change that was rolled back: which, when (epoch seconds) and why."""

    op: str
    at: float
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "at": self.at, "why": self.why}


@_frozen
class Confirmed(Outcome):
    op: str
    config_written: str | None   # the config file an add/delete wrote at confirm

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "op": self.op, "config_written": self.config_written}


@_frozen
class RolledBack(Outcome):
    op: str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "op": self.op, "why": self.why}
