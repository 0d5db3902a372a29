"""journald's native protocol: one datagram per event to /run/systemd/journal/socket.

Each field is ``NAME=value\n``; a value with a newline takes the binary-safe form
``NAME\n`` + its length (64-bit little-endian) + the value + ``\n``. The socket is
non-blocking: a journald that cannot keep up costs an error count, never the reader's time.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from .record import FIELDS, format_line

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "minifw"
# syslog priorities: a drop is a notice, a logged packet that was not dropped is info
PRIORITY_DROP = 5
PRIORITY_OTHER = 6
_LEN = struct.Struct("<Q")


def field(name: str, value: Any) -> bytes:
    """One field in the native protocol's form."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    key = name.encode()
    if b"\n" in data:
        return key + b"\n" + _LEN.pack(len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def build_datagram(event: dict[str, Any]) -> bytes:
    """MESSAGE (the readable line), PRIORITY, SYSLOG_IDENTIFIER and one MINIFW_<FIELD> per
    event field that has a value."""
    parts = [field("MESSAGE", format_line(event)),
             field("PRIORITY", PRIORITY_DROP if event.get("action") == "drop"
                   else PRIORITY_OTHER),
             field("SYSLOG_IDENTIFIER", IDENTIFIER)]
    for key in FIELDS + ("message",):
        value = event.get(key)
        if value is not None:
            parts.append(field(f"MINIFW_{key.upper()}", value))
    return b"".join(parts)


class Journal:
    """Sends events to journald when its socket exists (``path`` is a parameter for tests)."""

    def __init__(self, path: str = JOURNAL_SOCKET):
        self.path = path
        self.sent = 0
        self.errors = 0
        self.sock: socket.socket | None = None
        if os.path.exists(path):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, event: dict[str, Any]) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendto(build_datagram(event), self.path)
        except OSError:  # full (EAGAIN), journald gone (ENOENT, ECONNREFUSED), too large
            self.errors += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
