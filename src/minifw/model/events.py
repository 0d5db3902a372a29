"""The ``[events]`` table: which drops also go to NFLOG, how often, and where the events go. Pure.

    [events]
    drops = true             # drop rules, bans and drop policies send events too (default false)
    limit = "1000/second"    # per-rule event cap; "off" sends every packet
    group = 100              # NFLOG group
    max_bytes = 16777216     # events.jsonl is rotated at this size
    keep = 5                 # rotated files kept: events.jsonl.1 ... .5

Rules with ``log`` always send events (uncapped, as their kernel-log line is); ``drops`` adds
the rest. The cap applies to the events only, never to the drop (compile/events.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import RuleError
from .rule import Limit, parse_limit
from . import suggest

EVENTS_KEYS = ("drops", "limit", "group", "max_bytes", "keep")
DEFAULT_LIMIT = Limit(1000, "second")
GROUP_MAX = 65535               # NFLOG groups are 16 bits
MAX_BYTES_MIN = 4096            # room for a few events: each line is a few hundred bytes
MAX_BYTES_MAX = 2**40
KEEP_MAX = 100


@dataclasses.dataclass(frozen=True)
class EventsConfig:
    drops: bool = False
    limit: Limit | None = DEFAULT_LIMIT   # None: no cap ("off")
    group: int = 100
    max_bytes: int = 16 * 1024 * 1024
    keep: int = 5

    @classmethod
    def from_toml(cls, data: Any) -> "EventsConfig":
        if not isinstance(data, dict):
            raise RuleError("must be a table such as [events] drops = true", field="events")

        def err(field: str, message: str) -> RuleError:
            return RuleError(message, field=f"events.{field}")

        unknown = [k for k in data if k not in EVENTS_KEYS]
        if unknown:
            raise err(unknown[0], suggest.unknown("key", unknown[0], EVENTS_KEYS,
                                                  f"valid keys are {', '.join(EVENTS_KEYS)}"))
        drops = data.get("drops", cls.drops)
        if not isinstance(drops, bool):
            raise err("drops", "must be true or false")
        raw = data.get("limit")
        limit = (DEFAULT_LIMIT if raw is None else None if raw == "off"
                 else parse_limit(raw, err, "limit"))
        group = _integer(data, "group", cls.group, 0, GROUP_MAX, err)
        max_bytes = _integer(data, "max_bytes", cls.max_bytes, MAX_BYTES_MIN, MAX_BYTES_MAX, err)
        keep = _integer(data, "keep", cls.keep, 0, KEEP_MAX, err)
        return cls(drops=drops, limit=limit, group=group, max_bytes=max_bytes, keep=keep)

    def to_toml(self) -> dict[str, Any]:
        """Only what differs from the defaults (an empty table: leave [events] out)."""
        out: dict[str, Any] = {}
        default = EventsConfig()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                out[f.name] = ("off" if value is None else value.format()
                               if isinstance(value, Limit) else value)
        return out


def _integer(data: dict[str, Any], key: str, default: int, lo: int, hi: int, err) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise err(key, f"must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise err(key, f"must be between {lo} and {hi}; got {value}")
    return value
