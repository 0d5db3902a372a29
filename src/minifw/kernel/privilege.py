"""Whether this process may change the kernel's firewall: root, or CAP_NET_ADMIN."""

from __future__ import annotations

import functools
import os

CAP_NET_ADMIN = 12  # linux/capability.h


def has_net_admin(proc_status: str) -> bool:
    """Whether a /proc/PID/status text shows CAP_NET_ADMIN among the effective capabilities."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split(":", 1)[1].strip(), 16) >> CAP_NET_ADMIN & 1)
            except ValueError:
                return False
    return False


@functools.cache
def privileged() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        from pathlib import Path  # not root: rare, and pathlib costs a ban's start-up
        return has_net_admin(Path("/proc/self/status").read_text())
    except OSError:
        return False
