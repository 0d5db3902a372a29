"""NFQUEUE drops per queue, from ``/proc/net/netfilter/nfnetlink_queue`` (this namespace's).

Each line is one bound queue (net/netfilter/nfnetlink_queue.c, seq_show): queue number, peer
port id, packets waiting, copy mode, copy range, ``queue_dropped`` (the queue was full),
``user_dropped`` (the netlink socket's buffer was full), last packet id, and a constant 1.
"""

from __future__ import annotations

import dataclasses

PROC = "/proc/net/netfilter/nfnetlink_queue"
FIELDS = 9


@dataclasses.dataclass(frozen=True)
class QueueStats:
    queue: int
    waiting: int
    queue_dropped: int
    user_dropped: int


def parse(text: str) -> dict[int, QueueStats]:
    """Queue number -> its counts; lines of another shape are skipped."""
    out = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) != FIELDS or not all(c.lstrip("-").isdigit() for c in cols):
            continue
        num, _portid, waiting, _mode, _range, qdropped, udropped = map(int, cols[:7])
        out[num] = QueueStats(num, waiting, qdropped, udropped)
    return out


def read() -> dict[int, QueueStats]:
    """The queues bound in this network namespace (none when the module is not loaded)."""
    try:
        with open(PROC) as fh:
            return parse(fh.read())
    except OSError:
        return {}
