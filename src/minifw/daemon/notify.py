"""sd_notify: the datagram systemd's ``Type=notify`` waits for (``READY=1``, ``STATUS=...``).

``$NOTIFY_SOCKET`` names a unix datagram socket: a path, or an abstract name written with a
leading '@'. Without it (not started by systemd) nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("minifw.daemon")


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=serving"``...) as one datagram; True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name; not notifying",
                    address)
        return False
    payload = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ["NOTIFY_SOCKET"],
                    exc.strerror or exc)
        return False
    return True


def reloading() -> tuple[str, str]:
    """RELOADING=1 with the MONOTONIC_USEC systemd (253 and later) asks to go with it."""
    return "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
