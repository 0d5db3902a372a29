"""The rollback timer: ``python -m minifw.app.pending_timer STATE_DIR ID``.

Started by a command run with ``--confirm``, in a session of its own, so it outlives the CLI,
the shell and the SSH session (a lockout ends all three). It sleeps until the pending change's
deadline, then takes the writers' lock like any command; the lock's gate rolls the change back
if it is still pending. A change confirmed, rolled back or replaced meanwhile ends it.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from ..errors import MinifwError
from ..kernel import kmsg
from ..store import pending as record
from .sets import SetService


def wait_and_roll_back(state_dir: Path, ident: str) -> int:
    while True:
        try:
            pending = record.read(state_dir)
        except MinifwError:
            return 1  # damaged: the next command says so
        if pending is None or pending.id != ident:
            return 0
        left = pending.deadline - time.time()
        if left > 0:
            time.sleep(min(left, 5.0))  # re-read: the deadline is reset once the change is in
            continue
        try:
            # The lock's gate rolls the change back if it is still overdue once the lock is
            # ours; if the command that made it still held the lock, its deadline has moved
            # on meanwhile, and the loop waits for that one.
            with SetService(state_dir)._writing():
                pass
        except MinifwError as exc:
            kmsg.write_line("minifw", f"the rollback of a {pending.op} failed: {exc}")
            return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m minifw.app.pending_timer STATE_DIR ID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal's hangup is not ours
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return wait_and_roll_back(Path(args[0]), args[1])


if __name__ == "__main__":
    sys.exit(main())
