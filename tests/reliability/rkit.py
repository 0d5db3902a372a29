"""Helpers of the reliability suite: how many cases to run, and the figures to print."""

import os

FULL = os.environ.get("MINIFW_RELIABILITY") == "full"
FIGURES: list[str] = []


def scale(ci: int, full: int) -> int:
    """How many cases to run: ``ci`` in make test, ``full`` under MINIFW_RELIABILITY=full."""
    return full if FULL else ci


def report(name: str, **figures) -> None:
    """Keep a suite figure; all of them are printed at the end of the pytest run."""
    FIGURES.append(f"{name}: " + " ".join(f"{k}={v}" for k, v in figures.items()))
