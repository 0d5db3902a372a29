"""pkt.log records from the ringbuf back to text. Pure.

A record is a u64 format id (LogFormat.id), then one slot per value of the f-string: 8 bytes
for ints (None: INT64_MIN), bools, protocol and hook numbers; 16 for addresses."""

from __future__ import annotations

import ipaddress
import struct
from typing import Iterable

from ...errors import MinifwError
from ...hooks.packet import HOOK_NAMES, PROTO_NAMES
from .model import NONE, LogFormat

_Q = struct.Struct("<q")


def _text(kind: str, raw: bytes) -> str:
    if kind == "addr4":
        return str(ipaddress.IPv4Address(raw[:4]))
    if kind == "addr6":
        return str(ipaddress.IPv6Address(raw[:16]))
    value = _Q.unpack(raw[:8])[0]
    if value == NONE:
        return "None"
    if kind == "bool":
        return str(bool(value))
    if kind == "proto":
        return str(PROTO_NAMES.get(value, value))
    if kind == "hook":
        return HOOK_NAMES[value] if 0 <= value < 5 else str(value)
    return str(value)


def decode_log(record: bytes, logs: Iterable[LogFormat]) -> tuple[str, str]:
    """(function name, text) of one ringbuf record."""
    if len(record) < 8:
        raise MinifwError(f"a log record of {len(record)} bytes is too short")
    fmt_id = int.from_bytes(record[:8], "little")
    fmt = next((f for f in logs if f.id == fmt_id), None)
    if fmt is None:
        raise MinifwError(f"a log record names format {fmt_id:#x}, which no hook has")
    out, at = [], 8
    for kind, value in fmt.parts:
        if kind == "text":
            out.append(value)
            continue
        size = 16 if value.startswith("addr") else 8
        if at + size > len(record):
            raise MinifwError("a log record is shorter than its format")
        out.append(_text(value, record[at:at + size]))
        at += size
    return fmt.fn, "".join(out)
