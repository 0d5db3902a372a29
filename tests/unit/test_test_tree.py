"""`make test` collects tests/ as one tree of rootless modules: two test files with one
basename make the whole run stop at collection, so every basename must be unique."""

from __future__ import annotations

import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_basename_is_unique():
    seen = collections.defaultdict(list)
    for path in TESTS.rglob("*.py"):
        seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items()
               if len(paths) > 1 and name not in ("__init__.py", "conftest.py")}
    assert not clashes, clashes
