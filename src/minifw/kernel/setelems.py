"""One set's per-element counters, read with our own GETSETELEM dump (netlink/setelems.py)."""

from __future__ import annotations

import errno as errno_mod
import socket

from ..errors import KernelError
from ..netlink import setelems
from .nfnl import open_socket

RCVBUF = 1 << 22
TIMEOUT = 5.0


def element_counters(table: str, set_name: str) -> list[tuple[bytes, int, int, int]]:
    """(key, flags, packets, bytes) of every element of set ``inet table set_name``.
    KernelError if the set does not exist or the dump fails."""
    sock = open_socket(RCVBUF)
    try:
        sock.settimeout(TIMEOUT)
        sock.sendall(setelems.request(table, set_name))
        decoder = setelems.Decoder()
        out: list[tuple[bytes, int, int, int]] = []
        buf = bytearray(1 << 18)
        while not decoder.done:
            n = sock.recv_into(buf)
            if not n:
                break
            out += decoder.receive_data(bytes(buf[:n]))
        return out
    except setelems.DumpRefused as exc:
        what = "no such set" if exc.errno == errno_mod.ENOENT else f"errno {exc.errno}"
        raise KernelError(f"cannot read the elements of set {set_name}: {what}") from exc
    except (OSError, socket.timeout) as exc:
        raise KernelError(f"netlink error while reading set {set_name}: {exc}") from exc
    finally:
        sock.close()
