"""The reliability suite: fuzz, kill -9, corrupt state, concurrent writers, stop races.

CI runs small counts; ``MINIFW_RELIABILITY=full`` runs the full ones (see rkit.py). Tests that
need root create their own namespaces (prefix ``$MINIFW_LAB_PREFIX``) as tests/kernel does.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))

import rkit  # noqa: E402


def pytest_collection_modifyitems(items):
    # Full counts run 5-10 times the cases: give each such test an hour rather than the
    # suite's default, unless it sets its own.
    if rkit.FULL:
        for item in items:
            if "tests/reliability" in str(item.fspath) and not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(3600))


def pytest_terminal_summary(terminalreporter):
    if rkit.FIGURES:
        terminalreporter.section(f"reliability figures ({'full' if rkit.FULL else 'ci'} counts)")
        for line in rkit.FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def lab():
    from kit import need_root, new_lab
    need_root()
    with new_lab() as lab:
        yield lab
