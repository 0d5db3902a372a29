"""What the operations return: one frozen dataclass per kind of answer.

Each result's ``to_json()`` is what ``--json`` prints for it, so the CLI and the Python API
give the same data. Results that only report (up, down, ...) carry a ``message`` and
``warnings`` for the CLI to print, and typed fields for programs.

One module per group of operations (base, rules, bans, unbans, sets, pending, explain), each
loaded on first use: a frozen dataclass costs most of a millisecond to define, and ``minifw ban``
should not pay for the status and explain results, nor for unban's. Every name is also
importable from here (PEP 562).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

_HOME = {
    "Outcome": "base",
    "Loaded": "rules",
    "Unloaded": "rules",
    "Checked": "rules",
    "RuleAdded": "rules",
    "RuleDeleted": "rules",
    "ChainInfo": "rules",
    "chains_in_order": "rules",
    "ForeignChain": "rules",
    "Status": "rules",
    "FailsafeInfo": "rules",
    "ListedRule": "rules",
    "PolicyCounter": "rules",
    "BanCounter": "rules",
    "RuleListing": "rules",
    "Banned": "bans",
    "Unbanned": "unbans",
    "Imported": "sets",
    "Flushed": "sets",
    "Recovered": "sets",
    "SetElement": "sets",
    "SetPage": "sets",
    "SetSummary": "sets",
    "PendingChange": "pending",
    "RollbackRecord": "pending",
    "Confirmed": "pending",
    "RolledBack": "pending",
    "Decider": "explain",
    "CaptureSummary": "explain",
    "Explained": "explain",
    "NatAdded": "nat",
    "NatDeleted": "nat",
    "ListedNat": "nat",
    "NatListing": "nat",
    "Diffed": "diff",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
