import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# A shared or busy machine makes input generation slow and examples slow: neither is a defect
# of the code under test, so neither fails a run (a hang still does: every test has a timeout).
settings.register_profile("minifw", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("minifw")

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
