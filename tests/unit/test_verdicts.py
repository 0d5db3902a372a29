"""The verdict-run state machine (netlink/verdicts.py): coalesced batch verdicts answer every
packet as per-packet verdicts would, for any sequence of ids, verdicts, marks, errors and
stops; the C loop (hooks/_hot.c's Burst) runs the same machine; and the wire layout the C file
reads is the one minifw/netlink defines."""

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifw.hooks import ACCEPT as HOOK_ACCEPT, DROP as HOOK_DROP
from minifw.hooks.packet import HotPacket
from minifw.netlink import nfqueue
from minifw.netlink.nfqueue import decode_verdicts
from minifw.netlink.verdicts import ACCEPT, DROP, ERROR, VerdictRuns
from minifw.netlink.nlmsg import attr, message, nfgen

HOT_C = Path(nfqueue.__file__).resolve().parents[1] / "hooks" / "_hot.c"
WRAP = 1 << 32


def after(a, b):
    """The kernel's nfq_id_after: a comes after b (ids wrap at 2**32)."""
    return 0 < (a - b) % WRAP < 1 << 31


def kernel(queued, messages, queue=7):
    """What each queued packet gets from the messages, applied as nfnetlink_queue does: a
    batch verdict answers the waiting packets in queue order up to the first one after its id;
    a single verdict its own packet. Returns ({id: (verdict, mark)}, ids still waiting)."""
    waiting = list(queued)
    got = {}
    for m in messages:
        assert m.queue == queue
        if m.batch:
            while waiting and not after(waiting[0], m.packet_id):
                got[waiting.pop(0)] = (m.verdict, m.mark)
        elif m.packet_id in waiting:
            waiting.remove(m.packet_id)
            got[m.packet_id] = (m.verdict, m.mark)
    return got, waiting


def sent(runs):
    return [m for data in runs.out for m in decode_verdicts(data)]


MARKS = st.sampled_from([None, 0, 0x10, 0x20000000])
DECISION = st.tuples(st.integers(1, 3), st.sampled_from([DROP, ACCEPT, ERROR]), MARKS,
                     st.booleans())


@settings(max_examples=500, deadline=None)
@given(start=st.one_of(st.integers(0, WRAP - 1), st.integers(WRAP - 8, WRAP - 1)),
       decisions=st.lists(DECISION, max_size=40), stops=st.integers(0, 4),
       drained=st.lists(DECISION, max_size=4), error_verdict=st.sampled_from([DROP, ACCEPT]),
       stop_verdict=st.sampled_from([DROP, ACCEPT]))
def test_coalesced_batch_verdicts_equal_per_packet_verdicts(start, decisions, stops, drained,
                                                             error_verdict, stop_verdict):
    """Packets are decided in id order (gaps of 1-3, wrapping at 2**32), a burst may end after
    any of them (close); a stop leaves some undecided, and packets decided after it (stop()'s
    drain) follow. Every packet gets exactly what it would get from a verdict of its own."""
    runs = VerdictRuns(7, error_verdict, stop_verdict)
    expected = {}
    ids = []
    runs_expected = 0  # batch verdicts: one per maximal run of equal (verdict, mark)
    key = None
    pid = start

    def decide(gap, verdict, mark, end_burst):
        nonlocal pid, key, runs_expected
        pid = (pid + gap) % WRAP
        ids.append(pid)
        v = error_verdict if verdict == ERROR else verdict
        want = (v, mark if v == ACCEPT else None)
        expected[pid] = want
        if want != key:
            runs_expected += 1
        key = want
        runs.decide(pid, verdict, mark)
        if end_burst:
            runs.close()
            key = None

    for step in decisions:
        decide(*step)
    stopped = []
    for _ in range(stops):
        pid = (pid + 1) % WRAP
        ids.append(pid)
        stopped.append(pid)
        expected[pid] = (stop_verdict, None)
        assert runs.undecided(pid)
    assert not any(runs.undecided(p) for p in ids[:len(ids) - stops])
    for p in stopped:
        runs.stop(p)
        key = None  # (the open run was closed first)
    for step in drained:
        decide(*step)
    runs.close()

    messages = sent(runs)
    got, waiting = kernel(ids, messages)
    assert waiting == [] and got == expected
    assert sum(m.batch for m in messages) == runs_expected
    assert [m.packet_id for m in messages if not m.batch] == stopped
    outcomes = [(v if v != ERROR else error_verdict) for _g, v, _m, _e in decisions + drained]
    assert runs.errors == sum(v == ERROR for _g, v, _m, _e in decisions + drained)
    assert runs.dropped == outcomes.count(DROP) + (stops if stop_verdict == DROP else 0)
    assert not runs.open


def test_a_run_of_exactly_one_packet():
    runs = VerdictRuns(7)
    runs.close()
    assert runs.out == []                       # nothing decided: nothing to say
    runs.decide(5, ACCEPT)
    assert runs.out == [] and runs.open         # open until the burst ends
    runs.close()
    (m,) = sent(runs)
    assert (m.batch, m.verdict, m.packet_id, m.mark) == (True, ACCEPT, 5, None)
    runs.close()
    assert len(runs.out) == 1                   # closed once


def test_a_changed_verdict_or_mark_splits_a_run_and_an_equal_one_extends_it():
    runs = VerdictRuns(7)
    for pid, verdict, mark in [(1, ACCEPT, 0x10), (2, ACCEPT, 0x10), (3, ACCEPT, 0x20),
                               (4, ACCEPT, None), (5, ACCEPT, 0), (6, DROP, None),
                               (7, DROP, 0x10), (8, ACCEPT, 0)]:
        runs.decide(pid, verdict, mark)
    runs.close()
    # None (the mark left as it is) and 0 (set to 0) differ; a drop carries no mark
    assert [(m.packet_id, m.verdict, m.mark) for m in sent(runs)] == [
        (2, ACCEPT, 0x10), (3, ACCEPT, 0x20), (4, ACCEPT, None), (5, ACCEPT, 0), (7, DROP, None),
        (8, ACCEPT, 0)]


def test_id_gaps_and_the_wrap_stay_in_one_run():
    runs = VerdictRuns(7)
    for pid in (WRAP - 2, WRAP - 1, 0, 9):
        runs.decide(pid, DROP)
    runs.close()
    (m,) = sent(runs)
    assert m.packet_id == 9
    got, waiting = kernel([WRAP - 2, WRAP - 1, 0, 9], [m])
    assert waiting == [] and set(got) == {WRAP - 2, WRAP - 1, 0, 9}


def test_errors_take_the_error_verdict_and_count():
    runs = VerdictRuns(7, error_verdict=ACCEPT)
    runs.decide(1, ERROR, 0x10)
    runs.decide(2, ACCEPT, 0x10)
    runs.decide(3, ERROR)
    closed = VerdictRuns(7, error_verdict=DROP)
    closed.decide(1, ERROR, 0x10)
    runs.close()
    closed.close()
    assert [(m.packet_id, m.verdict, m.mark) for m in sent(runs)] == [
        (2, ACCEPT, 0x10), (3, ACCEPT, None)]
    assert [(m.packet_id, m.verdict, m.mark) for m in sent(closed)] == [(1, DROP, None)]
    assert (runs.errors, runs.dropped, closed.errors, closed.dropped) == (2, 0, 1, 1)


@pytest.mark.parametrize("last,pid,undecided", [
    (10, 9, False), (10, 10, False), (10, 11, True),           # both sides of the last id
    (WRAP - 1, 0, True), (0, WRAP - 1, False),                 # across the wrap
    (10, 10 + (1 << 31) - 1, True), (10, 10 + (1 << 31), False),   # the half of the id space
])
def test_undecided_means_after_the_last_decided_packet(last, pid, undecided):
    runs = VerdictRuns(7)
    assert runs.undecided(pid)                  # nothing decided yet
    runs.decide(last, ACCEPT)
    runs.close()                                # a closed run still counts as decided
    assert runs.undecided(pid % WRAP) is undecided


def test_a_stop_verdict_closes_the_open_run_first_and_answers_one_packet():
    runs = VerdictRuns(7, stop_verdict=DROP)
    runs.decide(1, ACCEPT)
    runs.stop(2)
    runs.decide(3, ACCEPT)                      # drained after the stop
    runs.close()
    assert [(m.batch, m.packet_id, m.verdict) for m in sent(runs)] == [
        (True, 1, ACCEPT), (False, 2, DROP), (True, 3, ACCEPT)]
    assert kernel([1, 2, 3], sent(runs))[0] == {1: (1, None), 2: (0, None), 3: (1, None)}
    assert runs.dropped == 1


def test_verdicts_other_than_drop_or_accept_are_refused_as_policies():
    with pytest.raises(ValueError):
        VerdictRuns(7, error_verdict=2)
    with pytest.raises(ValueError):
        VerdictRuns(7, stop_verdict=-1)


# ---- the C loop runs the same machine ----------------------------------------------------------

SLOT, ENTRY, LEN_AT = 256, 16, 8


def datagram(pid, queue=7):
    body = nfgen(0, queue) + attr(1, struct.pack(">IHB", pid, 0x0800, 1))
    return message((3 << 8) | 0, 0, 0, body + attr(10, b"\x45" + bytes(19)))


def slots(datagrams):
    """The receiver's buffers as the C loop reads them: one datagram per slot, its length at
    LEN_AT of its entry."""
    buf = bytearray(SLOT * len(datagrams))
    lens = bytearray(ENTRY * len(datagrams))
    for i, d in enumerate(datagrams):
        buf[i * SLOT:i * SLOT + len(d)] = d
        struct.pack_into("=I", lens, i * ENTRY + LEN_AT, len(d))
    return buf, lens


class Odd:
    """What a hook returns that is neither ACCEPT nor DROP."""


OUTCOMES = {"accept": HOOK_ACCEPT, "drop": HOOK_DROP, "raise": None, "odd": Odd()}


@pytest.mark.skipif(HotPacket is None, reason="the C core is not built")
@settings(max_examples=300, deadline=None)
@given(start=st.integers(WRAP - 6, WRAP + 6), first=st.lists(st.tuples(
    st.integers(1, 3), st.sampled_from(list(OUTCOMES))), max_size=12),
    python=st.lists(st.tuples(st.integers(1, 3), st.sampled_from([DROP, ACCEPT, ERROR])),
                    max_size=3),
    then=st.lists(st.tuples(st.integers(1, 3), st.sampled_from(list(OUTCOMES))), max_size=12),
    error_verdict=st.sampled_from([DROP, ACCEPT]))
def test_the_c_burst_decides_as_the_python_machine(start, first, python, then, error_verdict):
    """Burst.decide over a burst, then the Python side decides a few packets (the general path),
    then Burst.decide again: the VerdictRuns ends with the same state and the same messages,
    byte for byte, as one that decided every packet in Python."""
    from minifw.hooks import _hot

    c_runs, py_runs = VerdictRuns(7, error_verdict), VerdictRuns(7, error_verdict)
    plan = {}
    pid = start % WRAP
    steps = []
    for part, items in (("c", first), ("py", python), ("c", then)):
        batch = []
        for gap, what in items:
            pid = (pid + gap) % WRAP
            batch.append((pid, what))
        steps.append((part, batch))
    reported = []

    def hook(pkt):
        what = plan[pkt.id]
        if what == "raise":
            raise ValueError(pkt.id)
        return OUTCOMES[what]

    burst = _hot.Burst(c_runs, hook, HotPacket.environment(None, None, False), HotPacket,
                       HOOK_ACCEPT, HOOK_DROP, reported.append,
                       lambda pkt, v: reported.append(v), RuntimeError)
    code = {"accept": ACCEPT, "drop": DROP, "raise": ERROR, "odd": ERROR}
    for part, batch in steps:
        if part == "py":
            for p, verdict in batch:
                c_runs.decide(p, verdict)
                py_runs.decide(p, verdict)
            continue
        if not batch:
            continue
        plan.update(batch)
        buf, lens = slots([datagram(p) for p, _ in batch])
        assert burst.decide(buf, lens, 0, len(batch), SLOT, ENTRY, LEN_AT) == len(batch)
        for p, what in batch:
            py_runs.decide(p, code[what])
    assert burst.seen == len(first) + len(then)
    assert len(reported) == sum(w in ("raise", "odd") for _p, w in first + then)
    for name in ("verdict", "mark", "last", "open", "errors", "dropped"):
        assert getattr(c_runs, name) == getattr(py_runs, name), name
    c_runs.close()
    py_runs.close()
    assert b"".join(c_runs.out) == b"".join(py_runs.out)  # (C adds its messages in one piece)


@pytest.mark.skipif(HotPacket is None, reason="the C core is not built")
def test_the_c_burst_stops_at_another_shape_and_keeps_the_state_on_a_stop():
    from minifw.hooks import _hot

    class Stop(Exception):
        pass

    def hook(pkt):
        if pkt.id == 4:
            raise Stop
        return HOOK_DROP if pkt.id % 2 else HOOK_ACCEPT

    runs = VerdictRuns(7)
    burst = _hot.Burst(runs, hook, HotPacket.environment(None, None, False), HotPacket,
                       HOOK_ACCEPT, HOOK_DROP, print, print, Stop)
    buf, lens = slots([datagram(1), datagram(2), datagram(2, queue=8), datagram(3),
                       datagram(4), datagram(5)])
    assert burst.decide(buf, lens, 0, 6, SLOT, ENTRY, LEN_AT) == 2    # queue 8's: not ours
    assert (runs.last, runs.verdict, runs.open) == (2, ACCEPT, True)
    with pytest.raises(Stop):
        burst.decide(buf, lens, 3, 6, SLOT, ENTRY, LEN_AT)
    # stored on the way out: 3 decided (its run open), 4 and 5 not
    assert (runs.last, runs.verdict, runs.open, runs.dropped) == (3, DROP, True, 2)
    assert [(m.packet_id, m.verdict) for m in sent(runs)] == [(1, DROP), (2, ACCEPT)]
    assert not runs.undecided(3) and runs.undecided(4) and runs.undecided(5)


# ---- the wire layout is defined once -----------------------------------------------------------

def test_the_c_files_layout_is_the_one_minifw_netlink_defines():
    defines = {name: int(value, 0) for name, value in
               re.findall(r"^#define (NFQ_\w+) (\S+)", HOT_C.read_text(), re.M)}
    assert defines == nfqueue.HOT_DEFINES


def test_the_layout_reads_what_the_codec_decodes():
    data = datagram(0xA1B2C3D4, queue=0x1234)
    (q,) = nfqueue.NfqueueCodec().receive_data(data)
    assert nfqueue.read_head(data) == (len(data), nfqueue.PACKET_MSG_TYPE,
                                       nfqueue.PACKET_HDR_LEN, nfqueue.Nfqa.PACKET_HDR)
    assert nfqueue.read_queue_and_id(data) == (q.queue, q.id) == (0x1234, 0xA1B2C3D4)
    assert data[nfqueue.HOOK_AT] == q.hook == 1
    assert struct.unpack_from("=HH", data, nfqueue.AFTER_PACKET_HDR)[1] == nfqueue.Nfqa.PAYLOAD
