"""``@name`` references and ``[[set]]`` definitions: the set types of the rule model. Pure.

Importable from ``model.sets`` as well, which loads this module on first use: ``minifw ban``
needs neither type (see model/sets.py).
"""

from __future__ import annotations

import dataclasses
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

from ..errors import RuleError
from .suggest import unknown as unknown_text
from .sets import (
    DEFAULT_SET, SET_KEYS, SET_NAME_RE, SetError, first_overlap, format_duration,
    normalise_element,
    parse_duration,
)


@dataclasses.dataclass(frozen=True)
class SetRef:
    """``@name`` in a rule's ``src`` or ``dst``: match any address in the named set."""

    name: str

    def format(self) -> str:
        return f"@{self.name}"


@dataclasses.dataclass(frozen=True)
class SetDef:
    """A [[set]] of the config: its name, default timeout and elements."""

    name: str
    timeout: int | None = None        # seconds
    elements: tuple[str, ...] = ()    # normalised text, config order
    comment: str | None = None
    log: str | None = None            # kernel-log prefix for the packets a ban of it drops

    @classmethod
    def from_toml(cls, data: Any, *, index: int = 0) -> "SetDef":
        if not isinstance(data, dict):
            raise SetError("must be written as [[set]] tables", set_name=f"#{index + 1}",
                           field="set")
        label = data.get("name") if isinstance(data.get("name"), str) else f"#{index + 1}"

        def err(field: str, message: str) -> RuleError:
            return SetError(message, set_name=label, field=field)

        unknown = [k for k in data if k not in SET_KEYS]
        if unknown:
            raise err(unknown[0], unknown_text("key", unknown[0], SET_KEYS,
                                               f"valid keys are {', '.join(SET_KEYS)}"))
        name = data.get("name")
        if not isinstance(name, str) or not SET_NAME_RE.match(name):
            raise err("name", "is required: 1-32 letters, digits or '_', starting with a letter")
        timeout = None
        if data.get("timeout") is not None:
            try:
                timeout = parse_duration(data["timeout"])
            except ValueError as exc:
                raise err("timeout", str(exc)) from None
        raw = data.get("elements", [])
        if not isinstance(raw, list):
            raise err("elements", "must be a list of addresses or CIDRs")
        elements: list[str] = []
        seen: set[str] = set()
        for item in raw:
            if isinstance(item, str) and item != item.strip():
                raise err("elements", f"{item!r} has spaces around it; write {item.strip()!r}")
            try:
                text = normalise_element(item)
            except ValueError as exc:
                raise err("elements", str(exc)) from None
            if text not in seen:
                seen.add(text)
                elements.append(text)
        overlap = first_overlap(elements)
        if overlap:
            raise err("elements", f"{overlap[0]} overlaps {overlap[1]}; keep only one of them")
        comment = data.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise err("comment", "must be a string")
        if comment is not None and any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in comment):
            raise err("comment", f"{comment!r} contains control characters")
        log = None
        if data.get("log") is not None and name != DEFAULT_SET:
            raise err("log", f"logs bans, which go to the set '{DEFAULT_SET}' only; rules "
                             f"that use @{name} log with their own log key")
        if data.get("log") is not None:
            from .logtext import parse_log_prefix  # lazy: model.types costs a ban's start
            log = parse_log_prefix(data["log"], err, "log")
        return cls(name=name, timeout=timeout, elements=tuple(elements), comment=comment, log=log)

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.timeout is not None:
            out["timeout"] = format_duration(self.timeout)
        out["elements"] = list(self.elements)
        if self.comment is not None:
            out["comment"] = self.comment
        if self.log is not None:
            out["log"] = self.log
        return out
