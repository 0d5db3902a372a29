"""events/files.py: whole lines, rotation at exactly max_bytes, keep N, the reader's filters,
following across rotations."""

from __future__ import annotations

import ipaddress
import os
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from minifw.events import files

from minifw.errors import StateError
from minifw.events.files import (
    EventFile, EventFilter, encode, encode_event, follow, iter_events, lines_newest_first, parse_network, parse_since,
    read_events, rotated,
)
from minifw.events.record import format_ts


def ev(n: int, *, rule: str = "r", src: str = "198.18.0.2", dst: str = "198.18.0.1",
       ts: float = 1796211780.0) -> dict:
    return {"ts": format_ts(ts + n), "rule": rule, "src": src, "dst": dst, "n": n}


def line_of(size: int, n: int = 0) -> bytes:
    """A line of exactly ``size`` bytes, newline included."""
    base = encode({"n": n, "pad": ""})
    return encode({"n": n, "pad": "x" * (size - len(base))})


def test_a_file_reaches_max_bytes_exactly_then_rotates(tmp_path):
    path = tmp_path / "events.jsonl"
    f = EventFile(path, max_bytes=100, keep=2)
    f.write_lines([line_of(50, 1), line_of(50, 2)])  # exactly 100: no rotation
    assert path.stat().st_size == 100 and not rotated(path, 1).exists()
    f.write_lines([line_of(20, 3)])  # one byte past would be 120: rotate first
    assert rotated(path, 1).stat().st_size == 100 and path.stat().st_size == 20


def test_one_byte_over_rotates_one_under_does_not(tmp_path):
    over = tmp_path / "over.jsonl"
    f = EventFile(over, max_bytes=100, keep=2)
    f.write_lines([line_of(50), line_of(31), line_of(20)])  # 81 + 20 = 101
    assert rotated(over, 1).stat().st_size == 81 and over.stat().st_size == 20
    under = tmp_path / "under.jsonl"
    f2 = EventFile(under, max_bytes=100, keep=2)
    f2.write_lines([line_of(50), line_of(29), line_of(20)])  # 99
    assert under.stat().st_size == 99 and not rotated(under, 1).exists()


def test_a_line_larger_than_max_bytes_still_goes_in_whole(tmp_path):
    path = tmp_path / "events.jsonl"
    f = EventFile(path, max_bytes=10, keep=1)
    f.write_lines([line_of(30, 1), line_of(30, 2)])
    assert path.read_bytes() == line_of(30, 2)
    assert rotated(path, 1).read_bytes() == line_of(30, 1)


def test_keep_n_files_and_no_more(tmp_path):
    path = tmp_path / "events.jsonl"
    f = EventFile(path, max_bytes=60, keep=2)
    for n in range(5):
        f.write_lines([line_of(50, n)])
    assert path.read_bytes() == line_of(50, 4)
    assert rotated(path, 2).read_bytes() == line_of(50, 2)
    assert not rotated(path, 3).exists()
    assert f.rotations == 4


def test_keep_zero_keeps_only_the_current_file(tmp_path):
    path = tmp_path / "events.jsonl"
    f = EventFile(path, max_bytes=60, keep=0)
    f.write_lines([line_of(50, 1)])
    f.write_lines([line_of(50, 2)])
    assert path.read_bytes() == line_of(50, 2) and not rotated(path, 1).exists()


def test_a_partial_tail_left_by_a_killed_writer_is_cut(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(encode(ev(1)) + b'{"ts":"2026-12-02T')
    assert [e["n"] for e in read_events(path, EventFilter())] == [1]  # readers skip it
    f = EventFile(path, max_bytes=1 << 20, keep=1)
    f.write_lines([encode(ev(2))])
    assert path.read_bytes() == encode(ev(1)) + encode(ev(2))


def test_a_file_that_is_all_partial_line_is_emptied(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x" * 70000)  # no newline at all, longer than one read chunk
    f = EventFile(path, max_bytes=1 << 20, keep=1)
    assert f.size == 0 and path.stat().st_size == 0


def test_a_kill_mid_write_leaves_no_line_a_reader_parses(tmp_path):
    """A writer child killed -9 while writing: every line a reader parses is whole."""
    path = tmp_path / "events.jsonl"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        f = EventFile(path, max_bytes=1 << 16, keep=3)
        n = 0
        while True:
            f.write_lines([encode(ev(n + k)) for k in range(50)])
            n += 50
    time.sleep(0.3)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    events = read_events(path, EventFilter())
    assert events and all(set(e) == {"ts", "rule", "src", "dst", "n"} for e in events)
    ns = [e["n"] for e in events]
    assert ns == list(range(ns[0], ns[0] + len(ns)))  # no line lost or torn within the files


def test_filters():
    a = ev(1, rule="a", src="198.18.0.2", dst="198.18.1.1")
    b = ev(2, rule="b", src="fd00::2", dst="fd00::1")
    assert EventFilter(rule="a").match(a) and not EventFilter(rule="a").match(b)
    net = parse_network("198.18.0.0/24")
    assert EventFilter(src=net).match(a) and not EventFilter(src=net).match(b)
    assert not EventFilter(dst=net).match(a)
    assert EventFilter(dst=parse_network("fd00::/64")).match(b)
    assert EventFilter(src=parse_network("198.18.0.2")).match(a)
    assert not EventFilter(src=net).match({"src": None}) and \
        not EventFilter(src=net).match({"src": "junk"})


def test_since_is_inclusive_at_its_boundary():
    e = ev(0)
    t = 1796211780.0
    assert EventFilter(since=t).match(e)
    assert not EventFilter(since=t + 0.000001).match(e)
    assert not EventFilter(since=t).match({"ts": "garbage"})


def test_parse_since():
    assert parse_since("10m", 1000.0) == 400.0
    assert parse_since("30s", 1000.0) == 970.0
    assert parse_since("2h", 10000.0) == 2800.0
    assert parse_since("1d", 100000.0) == 13600.0
    assert parse_since("2026-12-02T11:43:00.000000Z", 0) == 1796211780.0
    for bad in ("10", "m", "-1m", "10w", "1.5h", "soon"):
        with pytest.raises(ValueError):
            parse_since(bad, 0)


def test_parse_network():
    assert parse_network("198.18.0.1/24") == ipaddress.ip_network("198.18.0.0/24")
    with pytest.raises(ValueError):
        parse_network("198.18.0.0/33")


def test_filter_json_round_trip_and_bad_values():
    f = EventFilter.from_json({"rule": "a", "src": "198.18.0.0/16", "since": 5})
    assert EventFilter.from_json(f.to_json()).to_json() == f.to_json()
    for bad in ({"rule": 1}, {"src": 5}, {"src": "nope"}, {"since": "yesterday"}):
        with pytest.raises(ValueError):
            EventFilter.from_json(bad)


def test_read_last_n_across_rotated_files_oldest_first(tmp_path):
    path = tmp_path / "events.jsonl"
    f = EventFile(path, max_bytes=400, keep=5)
    for n in range(20):
        f.write_lines([encode(ev(n, rule="even" if n % 2 == 0 else "odd"))])
    assert rotated(path, 1).exists()
    assert [e["n"] for e in read_events(path, EventFilter(), 3)] == [17, 18, 19]
    assert [e["n"] for e in read_events(path, EventFilter(rule="even"), 4)] == [12, 14, 16, 18]
    everything = [e["n"] for e in read_events(path, EventFilter())]
    assert everything == list(range(everything[0], 20))
    assert [e["n"] for e in iter_events(path, EventFilter())] == everything
    assert [e["n"] for e in iter_events(path, EventFilter(rule="odd"))] == \
        [n for n in everything if n % 2]
    assert [e["n"] for e in read_events(path, EventFilter(since=1796211780.0 + 18))] == [18, 19]
    assert read_events(path, EventFilter(), 0) == []
    assert read_events(tmp_path / "none.jsonl", EventFilter()) == []


def test_unparsable_lines_are_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(encode(ev(1)) + b"not json\n[1,2]\n" + encode(ev(2)) + b'{"n": 3')
    assert [e["n"] for e in read_events(path, EventFilter())] == [1, 2]
    assert [e["n"] for e in iter_events(path, EventFilter())] == [1, 2]


def test_follow_reads_across_rotations(tmp_path):
    path = tmp_path / "events.jsonl"
    f = EventFile(path, max_bytes=300, keep=3)
    f.write_lines([encode(ev(0))])  # before following: not shown
    got: list[int] = []
    done = threading.Event()

    def reader():
        for e in follow(path, EventFilter(rule="r"), poll=0.01, stop=done.is_set):
            got.append(e["n"])

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)
    for n in range(1, 13):
        f.write_lines([encode(ev(n, rule="r" if n != 5 else "other"))])
        time.sleep(0.005)
    deadline = time.time() + 3
    while len(got) < 11 and time.time() < deadline:
        time.sleep(0.01)
    done.set()
    t.join()
    assert f.rotations >= 2
    assert got == [n for n in range(1, 13) if n != 5]


def test_write_errors_are_state_errors(tmp_path):
    with pytest.raises(StateError):
        EventFile(tmp_path / "missing" / "events.jsonl", max_bytes=100, keep=1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=12),
       st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), st.integers(1, 9))
def test_lines_newest_first_at_every_block_boundary(tmp_path_factory, lines, tail, chunk):
    path = tmp_path_factory.mktemp("lines") / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines) + tail)
    saved = files._CHUNK
    files._CHUNK = chunk
    try:
        assert list(lines_newest_first(path)) == lines[::-1]
    finally:
        files._CHUNK = saved


def test_the_last_events_of_a_large_file_cost_its_end_only(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    f = EventFile(path, max_bytes=1 << 24, keep=1)
    f.write_lines([encode(ev(n)) for n in range(20000)])
    reads = []
    real_open = open

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def seek(self, *args):
            return self.handle.seek(*args)

        def read(self, n):
            reads.append(n)
            return self.handle.read(n)

    monkeypatch.setattr(files, "open", lambda p, mode: Counting(real_open(p, mode)),
                        raising=False)
    assert [e["n"] for e in read_events(path, EventFilter(), 3)] == [19997, 19998, 19999]
    assert sum(reads) <= 1 << 16


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=12),
                    st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=6), _VALUES, max_size=8))
def test_encode_is_json_dumps_in_one_ascii_line(event):
    import json
    line = encode(event)
    assert line == (json.dumps(event, separators=(",", ":")) + "\n").encode()
    assert line.isascii() and line.count(b"\n") == 1 and line.endswith(b"\n")


def test_encode_escapes_what_must_be():
    import json
    for text in ('a"b', "a\\b", "tab\t", "del\x7f", "é", "\n", "", "198.18.0.1"):
        assert json.loads(encode({"prefix": text})) == {"prefix": text}


_TEXT = st.one_of(st.none(), st.text(max_size=10))
_NUMBER = st.one_of(st.none(), st.integers(0, 70000))


@settings(max_examples=300)
@given(st.fixed_dictionaries({
    "rule": _TEXT, "hook": _TEXT, "priority": _NUMBER, "action": _TEXT, "family": _TEXT,
    "proto": _TEXT, "src": _TEXT, "dst": _TEXT, "sport": _NUMBER, "dport": _NUMBER,
    "icmp_type": _NUMBER, "iif": _TEXT, "oif": _TEXT, "len": _NUMBER, "prefix": _TEXT}),
    st.floats(0, 4e9))
def test_encode_event_is_encode_for_built_events(fields, ts):
    from types import SimpleNamespace
    from minifw.events.record import build_event
    origin = SimpleNamespace(rule=fields["rule"], hook=fields["hook"],
                             priority=fields["priority"], action=fields["action"])
    e = build_event(fields, ts=ts, origin=origin, prefix=fields["prefix"], iif=fields["iif"],
                    oif=fields["oif"])
    assert encode_event(e) == encode(e)
    assert encode_event(dict(e, message="x")) == encode(dict(e, message="x"))
