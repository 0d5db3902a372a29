"""The control socket's protocol: JSON lines, Sans-IO (bytes in, requests out; dicts in, bytes
out). No socket here: the daemon's server and the client both frame through it.

A request is one line, a JSON object with a string ``op``: ``{"op": "status"}\\n``. A reply is
one line: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. A streaming op (such as
``log.follow``) answers with one line per item until the client hangs up.

A request line is at most MAX_REQUEST bytes (its newline not counted). A longer one is
refused as soon as the limit is passed, and the rest of it, up to its newline, is skipped, so
the connection goes on with the next request.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ControlError

MAX_REQUEST = 64 * 1024
# a reply may carry a status listing: the client reads longer lines than it may send
MAX_REPLY = 64 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line (JSON never holds a raw newline)."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def parse_request(line: bytes) -> dict[str, Any]:
    """A request line (without its newline) as a dict with a string ``op``."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ControlError(f"the request is not JSON: {_why(exc)}") from None
    if not isinstance(request, dict):
        raise ControlError(f"the request must be a JSON object, not {_kind(request)}")
    op = request.get("op")
    if not isinstance(op, str) or not op:
        raise ControlError('the request has no "op" (a string naming the operation)')
    return request


def parse_reply(line: bytes) -> dict[str, Any]:
    """A reply line as a dict; an ``"ok": false`` reply raises its error."""
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ControlError(f"the daemon's reply is not JSON: {_why(exc)}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"the daemon's reply is {_kind(reply)}, not a JSON object")
    if reply.get("ok") is False:
        raise ControlError(str(reply.get("error") or "the daemon refused the request"))
    return reply


def unknown_op(op: str, known: list[str]) -> ControlError:
    return ControlError(f"unknown op {op!r}; the daemon knows {', '.join(sorted(known))}")


class LineReader:
    """Split a byte stream into lines of at most ``limit`` bytes.

    ``receive_data`` returns, in order, each whole line (bytes, without the newline) and a
    ControlError for each line over the limit; the overlong line is reported once, when the
    limit is passed, and skipped up to its newline."""

    def __init__(self, limit: int = MAX_REQUEST):
        self.limit = limit
        self._buf = bytearray()
        self._skipping = False

    def receive_data(self, data: bytes) -> list[bytes | ControlError]:
        out: list[bytes | ControlError] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            elif len(self._buf) + end - start > self.limit:
                out.append(self._oversized())
            else:
                self._buf += data[start:end]
                out.append(bytes(self._buf))
            self._buf.clear()
            start = end + 1
        if not self._skipping:
            self._buf += data[start:]
            if len(self._buf) > self.limit:
                out.append(self._oversized())
                self._buf.clear()
                self._skipping = True
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held (0 while an overlong one is skipped)."""
        return len(self._buf)

    def _oversized(self) -> ControlError:
        return ControlError(f"the request is longer than {self.limit} bytes; send one JSON "
                            "object per line")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _why(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(":")[0]
