"""The verdict runs of one NFQUEUE queue: packet decisions in, verdict messages out. Pure.

Every serve loop of the hook runner answers its packets through this one state machine: the
Python loops call it, and the C loop (hooks/_hot.c, ``Burst``) runs the same machine in C on
the same state (see "The C loop" below).

    runs = VerdictRuns(queue=7, error_verdict=DROP, stop_verdict=DROP)
    runs.decide(41, ACCEPT)         # packet 41: the function accepted it
    runs.decide(42, ACCEPT)         #   (same verdict and mark: the same run)
    runs.decide(43, ERROR)          # the function failed: the queue's error verdict applies
    runs.close()                    # end of a burst: the open run's message goes out
    sock.send(b"".join(runs.out)); runs.out.clear()

The contract
------------
- The kernel numbers a queue's packets in ascending order (modulo 2**32) and a batch verdict
  (NFQNL_MSG_VERDICT_BATCH, id N) answers every packet of the queue not answered yet whose id
  is not after N. Packets are decided in the order they were queued.
- ``decide(id, verdict, mark=None)``: verdict is DROP (0), ACCEPT (1) or ERROR (-1: the function
  raised or returned something else; the queue's ``error_verdict`` applies and ``errors``
  counts it). A mark goes with an accepted packet only (a dropped one is never marked). Equal
  verdict and mark extend the open run; anything else closes it (its batch verdict, for its
  last id, goes to ``out``) and opens a new one. Every DROP counts in ``dropped``.
- ``close()``: the open run's batch verdict goes to ``out``; no run is open after.
- ``stop(id)``: a packet the function did not decide (a stop interrupted its burst) gets the
  queue's ``stop_verdict`` in a verdict of its own (NFQNL_MSG_VERDICT), after the open run is
  closed. ``undecided(id)`` says which packets those are: the ones after ``last``.
- Messages go to ``out`` in order; the caller sends them in that order and then clears it.
  So the batch verdict that closes a run answers exactly that run's packets: the ones before
  it were answered by earlier messages. tests/unit/test_verdicts.py checks this property for
  any sequence of ids, verdicts, marks, errors and stops.

The state, all of it in these attributes: ``verdict`` and ``mark`` (of the last decision),
``last`` (the last decided id, or None before the first), ``open`` (the run ending at
``last`` has no message yet), ``errors``, ``dropped``, ``out``.

The C loop
----------
hooks/_hot.c's ``Burst`` serves one queue without marks. It loads this state from the
VerdictRuns it was given when it is entered (``serve``, ``decide``) and stores it back before
it returns, by any way out (a StopRunner included), so the Python side continues a run the C
side opened and the other way round. In between it runs ``decide`` and ``close`` as above on
its copy, with ``prefix(DROP)`` and ``prefix(ACCEPT)`` for the messages, and sends ``out``
itself at the end of a burst. A change to this contract is a change to ``Burst`` too.
"""

from __future__ import annotations

from .nfqueue import VerdictWriter

DROP, ACCEPT, ERROR = 0, 1, -1
_ID_MASK = 0xFFFFFFFF


class VerdictRuns:
    """One queue's verdict runs (the module docstring has the contract)."""

    __slots__ = ("queue", "error_verdict", "stop_verdict", "verdict", "mark", "last", "open",
                 "errors", "dropped", "out", "_writer")

    def __init__(self, queue: int, error_verdict: int = DROP, stop_verdict: int = DROP):
        if error_verdict not in (DROP, ACCEPT) or stop_verdict not in (DROP, ACCEPT):
            raise ValueError("the error and stop verdicts are DROP (0) or ACCEPT (1)")
        self.queue = queue
        self.error_verdict = error_verdict
        self.stop_verdict = stop_verdict
        self.verdict: int | None = None
        self.mark: int | None = None
        self.last: int | None = None
        self.open = False
        self.errors = 0
        self.dropped = 0
        self.out: list[bytes] = []
        self._writer = VerdictWriter()

    def prefix(self, verdict: int, mark: int | None = None) -> bytes:
        """A batch verdict message of this queue but its last 4 bytes (the big-endian id)."""
        return self._writer.batch(self.queue, 0, verdict, mark)[:-4]

    def decide(self, packet_id: int, verdict: int, mark: int | None = None) -> None:
        if verdict < 0:
            verdict = self.error_verdict
            self.errors += 1
        if not verdict:
            mark = None
            self.dropped += 1
        if self.open:
            if verdict == self.verdict and mark == self.mark:  # the usual case: the run goes on
                self.last = packet_id
                return
            self._emit()
        self.verdict = verdict
        self.mark = mark
        self.last = packet_id
        self.open = True

    def close(self) -> None:
        if self.open:
            self._emit()
            self.open = False

    def _emit(self) -> None:
        """The open run's batch verdict: every packet up to ``last``."""
        self.out.append(self._writer.batch(self.queue, self.last,  # type: ignore[arg-type]
                                           self.verdict, self.mark))  # type: ignore[arg-type]

    def undecided(self, packet_id: int) -> bool:
        """Whether ``packet_id`` comes after every packet decided here (ids wrap at 2**32)."""
        last = self.last
        return last is None or 0 < (packet_id - last) & _ID_MASK < 1 << 31

    def stop(self, packet_id: int) -> None:
        """Answer an undecided packet with the stop verdict, on its own."""
        self.close()
        self.out.append(VerdictWriter.single(self.queue, packet_id, self.stop_verdict))
        if not self.stop_verdict:
            self.dropped += 1

    def __repr__(self) -> str:
        return (f"VerdictRuns(queue={self.queue}, verdict={self.verdict}, mark={self.mark}, "
                f"last={self.last}, open={self.open}, {len(self.out)} messages)")


__all__ = ["VerdictRuns", "DROP", "ACCEPT", "ERROR"]
