""""Did you mean": the closest valid key or value to a misspelt one. Pure.

Closest is the fewest edits, a swap of two neighbouring letters counting as one (``dprot`` is
one swap from ``dport``, two edits from ``proto``); difflib's likeness breaks ties and takes
over when no name is within a few edits."""

from __future__ import annotations

import difflib
from typing import Iterable


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def closest(word: object, choices: Iterable[str]) -> str | None:
    if not isinstance(word, str) or not word:
        return None
    choices = [c for c in choices if c != word]
    allowed = 1 if len(word) <= 4 else 2
    near = [(d, -difflib.SequenceMatcher(None, word, c).ratio(), c)
            for c in choices if (d := _edits(word.lower(), c.lower())) <= allowed]
    if near:
        return min(near)[2]
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return found[0] if found else None


def unknown(what: str, word: object, choices: Iterable[str], valid: str) -> str:
    """``unknown key; did you mean 'dport'?``, else the list of valid ones (``valid``)."""
    near = closest(word, choices)
    if near is not None:
        return f"unknown {what}; did you mean '{near}'?"
    return f"unknown {what}; {valid}"
