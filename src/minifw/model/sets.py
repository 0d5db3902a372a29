"""Named address sets: ``[[set]]`` tables, ``@name`` references, durations and elements. Pure.

A named set holds single addresses and CIDRs of both IP versions. The kernel side keeps them in
up to four nft sets (see ``compile.sets``); this module only knows the user's view:

    [[set]]
    name = "blocked"
    timeout = "1h"          # optional default element timeout
    elements = ["198.18.2.2", "198.18.64.0/18", "fd00::1"]

Element validation here uses ``ipaddress`` (exact, slow); the import path has its own fast
validator at the kernel edge. The types ``SetRef`` and ``SetDef`` are in model.setdefs:
``minifw ban`` uses this module and neither type (a frozen dataclass costs its start-up).
"""

from __future__ import annotations

import ipaddress
import re
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

from ..errors import ConfigError, RuleError

DEFAULT_SET = "blocked"
SET_KEYS = ("name", "timeout", "elements", "comment", "log")
SET_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_TIMEOUT = 49 * 86400  # the kernel keeps element timeouts in ms in 32 bits, about 49.7 days


class SetError(RuleError):
    """A ``[[set]]`` table is invalid: says "set 'NAME': field 'F': ..." rather than "rule"."""

    def __init__(self, message: str, *, set_name: str, field: str, file: str | None = None,
                 line: int | None = None):
        ConfigError.__init__(self, f"set '{set_name}': field '{field}': {message}", file=file,
                             line=line)
        self.rule, self.field, self.detail, self.set_name = None, field, message, set_name

    def located(self, file: str | None, line: int | None = None) -> "SetError":
        return SetError(self.detail, set_name=self.set_name, field=self.field or "", file=file,
                        line=line if line is not None else self.line)


def parse_duration(value: Any) -> int:
    """``"90s"``, ``"10m"``, ``"1h30m"``, ``"2d"`` or a number of seconds -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str) and re.fullmatch(r"(?:\d+[smhdw])+", value.strip()):
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION_RE.findall(value.strip()))
    else:
        raise ValueError(f"{value!r} is not a duration such as \"30s\", \"10m\", \"1h\" or \"2d\"")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    if seconds > MAX_TIMEOUT:
        raise ValueError(f"{value!r} is longer than the kernel's limit of 49 days; leave the "
                         "timeout out for a permanent element")
    return seconds


def format_duration(seconds: int) -> str:
    out = ""
    for unit in ("d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            out += f"{n}{unit}"
    return out or "0s"


def normalise_element(item: Any) -> str:
    """An address or CIDR in canonical text; raises ValueError with a sentence otherwise."""
    if not isinstance(item, str):
        raise ValueError(f"{item!r} is not an address string")
    text = item.strip()
    if "%" in text:  # Python takes a zone (fe80::1%eth0); nftables sets hold bare addresses
        raise ValueError(f"{item!r} carries a zone (%...); a set holds bare addresses: leave "
                         "the zone out")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 or IPv6 address or CIDR") from None
        raise ValueError(f"{item!r} has host bits set; did you mean {fixed}?") from None
    full = 32 if net.version == 4 else 128
    return str(net.network_address) if net.prefixlen == full else str(net)


def element_kind(text: str) -> tuple[int, bool]:
    """(IP version, is a CIDR) of a normalised element."""
    return (6 if ":" in text else 4), "/" in text


def first_overlap(elements: list[str]) -> tuple[str, str] | None:
    """Two elements whose address ranges overlap (the kernel refuses such interval elements)."""
    spans = []
    for text in elements:
        net = ipaddress.ip_network(text)
        spans.append((net.version, int(net.network_address), int(net.broadcast_address), text))
    spans.sort()
    for (v1, _, hi1, t1), (v2, lo2, _, t2) in zip(spans, spans[1:]):
        if v1 == v2 and lo2 <= hi1:
            return t1, t2
    return None


def covering(address: str, cidrs: list[str]) -> list[str]:
    """The CIDRs among ``cidrs`` that contain ``address``."""
    addr = ipaddress.ip_address(address.split("/")[0])
    out = []
    for c in cidrs:
        net = ipaddress.ip_network(c)
        if net.version == addr.version and addr in net:
            out.append(c)
    return out
