"""The reliability suite: fuzz, kill -9, corrupt state, concurrent writers, stop races.

CI runs small counts; ``MINIFW_RELIABILITY=full`` runs the full ones. Tests that need root
create their own namespaces (prefix ``$MINIFW_LAB_PREFIX``) exactly as tests/kernel does.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))

FULL = os.environ.get("MINIFW_RELIABILITY") == "full"


def scale(ci: int, full: int) -> int:
    """How many cases to run: ``ci`` in make test, ``full`` under MINIFW_RELIABILITY=full."""
    return full if FULL else ci


def report(name: str, **figures) -> None:
    """Print a suite figure on its own line (shown with -s, and in the captured output)."""
    text = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\nreliability {name}: {text}", file=sys.stderr)


@pytest.fixture
def lab():
    from kit import need_root, new_lab
    need_root()
    with new_lab() as lab:
        yield lab
