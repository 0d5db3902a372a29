"""The real CrowdSec LAPI for kernel tests (minifw/lab/lapi.py): skip where Debian's crowdsec is
not installed, and a module-scoped fixture that builds the fleet lab and starts LAPI once."""

from __future__ import annotations

import shutil

import pytest

from kit import need_root, new_lab
from minifw.lab.lapi import SYSTEM_CONFIG, Lapi, fleet_lab


def need_crowdsec() -> None:
    for tool in ("crowdsec", "cscli"):
        if shutil.which(tool) is None or not SYSTEM_CONFIG.exists():
            pytest.skip(f"{tool} is not installed (Debian package crowdsec; `make install`)")


@pytest.fixture(scope="module")
def lapi_fleet(request):
    """Once per module: the fleet lab (``FLEET_HOSTS`` hosts, a module global, default 3) with
    LAPI running. Yields (lapi, hub, hosts, attacker)."""
    need_root()
    need_crowdsec()
    with new_lab() as lab:
        hub, hosts, attacker = fleet_lab(lab, getattr(request.module, "FLEET_HOSTS", 3))
        lapi = Lapi(hub)
        lapi.start()
        try:
            yield lapi, hub, hosts, attacker
        finally:
            lapi.stop()
