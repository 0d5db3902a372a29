"""The interface names of the network namespace this process is in (for the lint)."""

from __future__ import annotations

import socket

from ..errors import KernelError


def names() -> list[str]:
    """if_nameindex(3) asks the kernel of this namespace (unlike /sys/class/net, which shows
    the namespace sysfs was mounted in)."""
    try:
        return [name for _, name in socket.if_nameindex()]
    except OSError as exc:
        raise KernelError(f"cannot list the network interfaces: {exc}") from exc
