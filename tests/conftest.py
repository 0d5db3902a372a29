import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_sessionstart(session):
    # A run that ended without closing its labs (a test timeout ends the process at once)
    # left namespaces behind: delete those whose owner is gone, before making new ones.
    if os.geteuid() == 0:
        from minifw.lab import sweep_orphans
        swept = sweep_orphans()
        if swept:
            print(f"deleted {len(swept)} namespaces left by an earlier run: {' '.join(swept)}",
                  file=sys.stderr)
