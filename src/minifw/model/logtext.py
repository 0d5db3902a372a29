"""Text checks shared by rules and sets: kernel-log prefixes and control characters. Pure."""

from __future__ import annotations

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

from .types import LOG_PREFIX_MAX


def has_control(text: str) -> bool:
    """Control characters (C0, DEL, C1) split error lines and nft's text; refused in names."""
    return any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in text)


def parse_log_prefix(raw: Any, err, field: str) -> str:
    """A kernel-log prefix: non-empty text that fits the kernel's prefix buffer."""
    if not isinstance(raw, str) or not raw.strip():
        raise err(field, "must be a non-empty string (the kernel-log prefix)")
    if len(raw.encode()) > LOG_PREFIX_MAX:
        raise err(field, f"is {len(raw.encode())} bytes; the kernel allows at most "
                         f"{LOG_PREFIX_MAX}")
    if has_control(raw) or '"' in raw:
        raise err(field, "must not contain control characters or '\"'")
    return raw
