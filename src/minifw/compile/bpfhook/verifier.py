"""The verifier's refusal, said with the Python line it came from. Pure."""

from __future__ import annotations

import re
from typing import Sequence

_INSN = re.compile(r"^(\d+): \(")


def explain_verifier(log: str, lines: Sequence[int | None], filename: str) -> str:
    """One sentence: the line of ``filename`` whose instructions the verifier stopped at and
    the verifier's own last words. ``lines`` is Asm.lines() (slot -> source line)."""
    rows = [r.strip() for r in log.splitlines() if r.strip()]
    slot = None
    for row in rows:
        m = _INSN.match(row)
        if m:
            slot = int(m.group(1))
    reason = next((r for r in reversed(rows) if not _INSN.match(r)
                   and not r.startswith(("processed ", "verification time", "stack depth"))),
                  "no reason given")
    line = lines[slot] if slot is not None and 0 <= slot < len(lines) else None
    where = f"{filename}:{line}" if line is not None else filename
    return f"{where}: the kernel's verifier refused the compiled hook: {reason}"
