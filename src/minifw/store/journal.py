"""The journal of a set change in flight: what to redo after a kill.

A set change (ban, unban, flush, import) reaches the kernel before its record commits, and an
import reaches it in several transactions. So before the first kernel write the whole change is
written here, and removed once the record has committed. The next command that takes the lock
finds it and redoes the change (every step is idempotent), so the kernel and the record agree
again without listing the kernel's sets.

Format: a magic line, one JSON header line, the packed IPv4 then IPv6 addresses, and the SHA-256
of everything before it. Written through a rename, so a kill leaves the old file or the new one;
anything else is damage, reported as such. Pure: encode/decode only.
"""

from __future__ import annotations

import json
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

try:  # the builtin SHA-256 alone: hashlib's OpenSSL load costs a ban 3 ms at start
    from _sha256 import sha256
except ImportError:  # another Python build
    from hashlib import sha256

MAGIC = b"MINIFW-JOURNAL 1\n"
OPS = ("ban", "unban", "flush", "import")


class JournalError(ValueError):
    """The bytes are not a whole journal (truncated, altered or foreign)."""


def encode(op: str, name: str, *, items: list[str] = (), expiry: int = 0,
           four: list[bytes] = (), six: list[bytes] = ()) -> bytes:
    header = json.dumps({"op": op, "set": name, "items": list(items), "expiry": expiry,
                         "n4": len(four), "n6": len(six)}, separators=(",", ":"))
    body = MAGIC + header.encode() + b"\n" + b"".join(four) + b"".join(six)
    return body + sha256(body).digest()


def decode(data: bytes) -> dict[str, Any]:
    """The journal as a dict: op, set, items, expiry, four, six. Raises JournalError."""
    if not data.startswith(MAGIC):
        raise JournalError("it does not start like a minifw journal")
    if len(data) < len(MAGIC) + 32:
        raise JournalError("it is truncated")
    body, digest = data[:-32], data[-32:]
    if sha256(body).digest() != digest:
        raise JournalError("its checksum does not match (truncated or altered)")
    end = body.find(b"\n", len(MAGIC))
    try:
        head = json.loads(body[len(MAGIC):end])
    except ValueError as exc:
        raise JournalError(f"its header is not JSON: {exc}") from None
    if not isinstance(head, dict) or head.get("op") not in OPS \
            or not isinstance(head.get("set"), str) \
            or not isinstance(head.get("items"), list) \
            or not all(isinstance(i, str) for i in head["items"]) \
            or not all(isinstance(head.get(k), int) and head[k] >= 0
                       for k in ("expiry", "n4", "n6")):
        raise JournalError("its header has the wrong shape")
    keys = body[end + 1:]
    n4, n6 = head["n4"], head["n6"]
    if len(keys) != 4 * n4 + 16 * n6:
        raise JournalError("its address count does not match its length")
    return {"op": head["op"], "set": head["set"], "items": head["items"],
            "expiry": head["expiry"],
            "four": [keys[i:i + 4] for i in range(0, 4 * n4, 4)],
            "six": [keys[i:i + 16] for i in range(4 * n4, 4 * n4 + 16 * n6, 16)]}
