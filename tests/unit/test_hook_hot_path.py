"""The runner's hot path without a kernel: packets built straight from datagrams read the same
fields as the codec's QueuedPacket path, the C core (hooks/_hot.c) reads what the pure-Python
core reads, garbage raises only PacketError, and the serve loops (Python, and C per burst)
answer every packet with the right batch verdicts (runs of equal verdicts, ids in order)."""

import atexit
import ipaddress
import os
import shutil
import tempfile
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifw.compile import hooks as plan
from minifw.runners import runner as R
from minifw.errors import PacketError
from minifw.hooks import ACCEPT, DROP, make_spec
from minifw.hooks.packet import HotPacket, Packet, PurePacket
from minifw.kernel import mmsg
from minifw.netlink.nfqueue import NfqueueCodec, split_datagram
from minifw.netlink.nlmsg import attr, message, nfgen

from test_nfqueue_codec import PING, UDP6, _touch_all

FIELDS = ("version", "src", "dst", "proto", "sport", "dport", "icmp_type", "length", "iif",
          "oif", "hook", "mark", "ct_state", "raw", "id")


def udp4(pid, src="198.18.0.2", dport=9, queue=7, mark=None, fill=8):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 1, 0x4000, 64, 17, 0,
                     ipaddress.IPv4Address(src).packed, bytes([198, 18, 0, 1]))
    body = nfgen(0, queue) + attr(1, struct.pack(">IHB", pid, 0x0800, 1))
    if mark is not None:
        body += attr(3, struct.pack(">I", mark))
    body += (attr(5, struct.pack(">I", 2)) + attr(9, struct.pack(">HH8s", 6, 0, b"\1" * 6))
             + attr(10, ip + struct.pack("!HHHH", 4000, dport, 16, 0) + b"x" * fill))
    return message((3 << 8) | 0, 0, 0, body)


def fields(pkt):
    out = {}
    for name in FIELDS:
        try:
            out[name] = getattr(pkt, name)
        except PacketError as exc:
            out[name] = ("error", str(exc))
    return out


CORES = [PurePacket, HotPacket]


def test_the_c_core_is_built():
    # the install builds hooks/_hot.c (gcc and the Python headers are in the Makefile's
    # packages); without it the C-core tests below would test nothing
    assert HotPacket is not None and Packet is HotPacket


@pytest.mark.parametrize("cls", CORES, ids=["pure", "C"])
@pytest.mark.parametrize("data", [PING, UDP6, udp4(5), udp4(6, mark=9)])
def test_datagram_packet_reads_what_the_codec_reads(data, cls):
    (ev,) = NfqueueCodec().receive_data(data)
    env = cls.environment(None, None, False)
    for _ in range(2):  # the second read takes the remembered attribute layout
        assert fields(cls.from_datagram(data, env)) == fields(cls(ev, full_copy=False))


def _ip4(ihl=5, frag=0x4000, proto=17, total=36, tail=b"", src=b"\xc6\x12\x00\x02"):
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0, src,
                       b"\xc6\x12\x00\x01")
    return head + b"\x00" * (4 * ihl - 20) + tail


# IPv4 variants around the C core's fast path: options, fragments, short, other protocols
SHAPES = [_ip4(tail=b"\x0f\xa0\x00\x09" + b"\x00" * 4), _ip4(6, tail=b"\x00\x16\x00\x17"),
          _ip4(frag=0x2000 | 3, tail=b"abcd"), _ip4(tail=b"\x0f"), _ip4(proto=1, tail=b"\x08\0\0\0"),
          _ip4(proto=6, tail=b"\x00\x50\x01\xbb" + b"\x00" * 8 + b"\x50" + b"\x00" * 7),
          _ip4(proto=47, tail=b"\x00" * 8), _ip4(proto=132, tail=b"\x00\x01\x00\x02"),
          _ip4(ihl=4, tail=b"\x00" * 8), _ip4()[:19], b""]


@pytest.mark.parametrize("ip", SHAPES)
def test_the_c_core_reads_what_the_pure_core_reads(ip):
    data = _datagram(ip, pid=3)
    env = Packet.environment(None, None, False)
    for _ in range(2):
        assert fields(HotPacket.from_datagram(data, env)) == fields(
            PurePacket.from_datagram(data, env))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=80), st.sampled_from(SHAPES))
def test_fuzz_the_c_core_against_the_pure_core(noise, ip):
    env = Packet.environment(None, None, False)
    for data in (_datagram(ip[:len(noise) // 2] + noise), _datagram(noise),
                 udp4(1)[:32] + noise):
        data = struct.pack("=I", len(data)) + data[4:]
        assert fields(HotPacket.from_datagram(data, env)) == fields(
            PurePacket.from_datagram(data, env))


@pytest.mark.parametrize("cls", CORES, ids=["pure", "C"])
def test_same_length_other_layout_is_walked_again(cls):
    env = cls.environment(None, None, False)
    plain = udp4(1)
    marked = udp4(2, mark=7, fill=0)  # 8 bytes of mark attribute, 8 bytes less payload
    assert len(plain) == len(marked)
    assert cls.from_datagram(plain, env).dport == 9
    pkt = cls.from_datagram(marked, env)
    assert pkt.mark == 7 and pkt.dport == 9 and len(pkt.raw) == 36 - 8


@pytest.mark.parametrize("cls", CORES, ids=["pure", "C"])
def test_addresses_compare_and_hash_like_ipaddress(cls):
    env = cls.environment(None, None, False)
    a = cls.from_datagram(udp4(1, src="198.18.9.7"), env).src
    b = cls.from_datagram(udp4(2, src="198.18.9.7"), env).src
    assert a == b == "198.18.9.7" and a == ipaddress.ip_address("198.18.9.7")
    assert hash(a) == hash(ipaddress.ip_address("198.18.9.7"))
    assert a in {ipaddress.ip_address("198.18.9.7")} and a in ipaddress.ip_network("198.18.0.0/15")
    assert a != "198.18.9.8" and str(a) == "198.18.9.7"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(CORES))
def test_fuzz_datagram_packets_raise_only_packet_error(tail, cls):
    head = udp4(1)[:32]  # a valid netlink header and packet header, then garbage
    data = struct.pack("=I", 32 + len(tail)) + head[4:] + tail
    _touch_all(cls.from_datagram(data, cls.environment(None, None, False)))


# ---- the serve loops, on a fake socket ----------------------------------------------------------

class FakeSocket:
    def __init__(self, datagrams):
        self.datagrams = list(datagrams)
        self.sent = []

    def recv(self, size, flags=0):
        if not self.datagrams:
            raise R.StopRunner()
        item = self.datagrams.pop(0)
        if item is None:  # the queue is empty for now: end the burst
            raise BlockingIOError()
        return item

    def send(self, data):
        self.sent.append(data)
        return len(data)


class FakeReceiver:
    """The burst receiver's interface: None in the list ends a burst; the end stops the runner."""

    def __init__(self, sock):
        self.sock = sock
        self.on_truncated = None
        self.last = []

    def last_burst(self):
        return list(self.last)

    def receive(self):
        self.last = burst = []
        while self.sock.datagrams:
            item = self.sock.datagrams.pop(0)
            if item is None:
                return burst
            burst.append(item)
        if burst:
            return burst
        raise R.StopRunner()


class PairQueueSocket:
    """A real datagram socket pair for the runner's C loop, which makes its own system calls:
    it receives from ``sock`` with recvmmsg and sends its verdicts there. A feeder thread
    writes the list's bursts into the other end one at a time (the next once the verdicts of
    the last came back, or after a short wait when none come) and collects the verdicts; after
    the last burst it stops the runner as SIGTERM would (a signal that raises StopRunner).
    TRUNCATED in the list stands for a datagram longer than the receiver's slot."""

    def __init__(self, datagrams):
        self.sock, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.bursts = [[]]
        for item in datagrams:
            if item is None:
                self.bursts.append([])
            else:
                self.bursts[-1].append(item)
        self.bursts = [b for b in self.bursts if b]
        self.sent = []  # the verdict datagrams, as FakeSocket has them
        self.done = threading.Event()

    def receiver(self, slot_size, slots):
        return mmsg.BurstReceiver(self.sock, slots, slot_size)

    def feed(self, main):
        answered = -1  # the highest packet id a batch verdict answered so far
        for burst in self.bursts:
            last = -1
            for data in burst:
                self.peer.send(b"x" * (R.HEADER_SLOT + 100) if data is TRUNCATED else data)
                last = max([last] + [ev.id for ev in _events(data)])
            end = time.monotonic() + (3 if last >= 0 else 0.2)
            while answered < last and time.monotonic() < end and not self.done.is_set():
                self.peer.settimeout(max(end - time.monotonic(), 0.01))
                try:
                    data = self.peer.recv(65536)
                except socket.timeout:
                    break
                self.sent.append(data)
                answered = max([answered] + [m[2] for m in _messages(data)])
        if not self.done.is_set():
            signal.pthread_kill(main, signal.SIGALRM)

    def run(self, r):
        def stop(*_):
            if not self.done.is_set():
                raise R.StopRunner()

        old = signal.signal(signal.SIGALRM, stop)
        feeder = threading.Thread(target=self.feed, args=(threading.get_ident(),))
        feeder.start()
        try:
            r.serve()
        except R.StopRunner:
            pass
        finally:
            self.done.set()
            feeder.join()
            signal.signal(signal.SIGALRM, old)

    def close(self):  # what stop() calls last: the test reads the verdicts after
        pass

    def drain(self):
        """Collect what was sent after the feeder ended (a stop's flush)."""
        self.peer.setblocking(False)
        while True:
            try:
                self.sent.append(self.peer.recv(65536))
            except BlockingIOError:
                break


TRUNCATED = b"truncated"
LOOPS = ["python", "python-pure", "C"]


@pytest.fixture(params=LOOPS)
def loop(request, monkeypatch):
    """Which serve loop the runner takes: Python over C-core or pure packets, or the C loop."""
    if request.param == "python-pure":
        monkeypatch.setattr(R, "Packet", PurePacket)
    monkeypatch.setattr(Fakes, "C", request.param == "C")
    return request.param


class Fakes:
    C = False  # the C loop: a real socket pair instead of the fake socket


class FakeQueueSocket:
    def __init__(self, datagrams):
        self.sock = FakeSocket(datagrams)

    def receiver(self, slot_size, slots):
        return FakeReceiver(self.sock)


# serve() writes the runner's counts for the daemon once a second: into a directory of their own
STATE_DIR = tempfile.mkdtemp(prefix="minifw-hot-")
atexit.register(shutil.rmtree, STATE_DIR, True)


def make_runner(fns, datagrams, **spec_args):
    r = R.Runner.__new__(R.Runner)
    r.state_dir, r.pid = Path(STATE_DIR), os.getpid()
    r.qs = PairQueueSocket(datagrams) if Fakes.C else FakeQueueSocket(datagrams)
    r.placements, r.ctx, r._ifnames = [], {}, {}
    # (queue, id) of the well-formed queued packets among the datagrams
    r.test_ids = {(ev.queue, ev.id) for data in datagrams for ev in _events(data)}
    for queue, fn in fns.items():
        p = plan.Placement(make_spec(fn, "input", 0, name=f"f{queue}", **spec_args), queue)
        r.placements.append(p)
        r.ctx[queue] = R.QueueCtx(p, lambda text: None, r._ifname)
    return r


def _events(data):
    """The queued packets in a datagram (none if it is malformed or a placeholder)."""
    try:
        return NfqueueCodec().receive_data(data)
    except (PacketError, TypeError):
        return []


def _messages(data):
    """(queue, verdict, last id, mark) of the batch verdicts in one datagram."""
    out = []
    for _kind, _seq, start, end in split_datagram(data):
        body = data[start:end]
        queue = struct.unpack_from(">H", body, 2)[0]
        mark = None
        if struct.unpack_from("=HH", body, 4)[1] == 3:
            mark = struct.unpack_from(">I", body, 8)[0]
        verdict, last = struct.unpack_from(">II", body, len(body) - 8)
        out.append((queue, verdict, last, mark))
    return out


def verdicts(r):
    """(queue, verdict, last id, mark) of every batch verdict sent, in order."""
    if isinstance(r.qs, PairQueueSocket):
        r.qs.drain()
    sent = r.qs.sent if isinstance(r.qs, PairQueueSocket) else r.qs.sock.sent
    return [m for data in sent for m in _messages(data)]


def decided(r, messages):
    """What each queued packet got from these batch verdicts, in order: a batch verdict answers
    every packet of its queue up to its id that no earlier one answered."""
    out = {}
    for queue, v, last, mark in messages:
        for q, pid in sorted(r.test_ids):
            if q == queue and pid <= last and (q, pid) not in out:
                out[(q, pid)] = (v, mark)
    return out


def assert_verdicts(r, expected):
    """The batch verdicts sent are the expected ones. The C loop receives from a real socket,
    where bursts split as the scheduler runs the feeder: there, what each packet got counts."""
    if isinstance(r.qs, PairQueueSocket):
        assert decided(r, verdicts(r)) == decided(r, expected)
    else:
        assert verdicts(r) == expected


def serve(r):
    if isinstance(r.qs, PairQueueSocket):
        return r.qs.run(r)
    try:
        r.serve()
    except R.StopRunner:
        pass


def odd_drop(pkt):
    return DROP if pkt.id % 2 else ACCEPT


def test_single_queue_runs_of_equal_verdicts(loop):
    data = [udp4(i) for i in (2, 4, 5, 7, 8)] + [None] + [udp4(i) for i in (10, 11)] + [None]
    r = make_runner({7: odd_drop}, data)
    serve(r)
    assert_verdicts(r, [(7, 1, 4, None), (7, 0, 7, None), (7, 1, 8, None),
                           (7, 1, 10, None), (7, 0, 11, None)])
    ctx = r.ctx[7]
    assert (ctx.seen, ctx.dropped, ctx.errors) == (7, 3, 0)


def test_stop_mid_burst_leaves_the_open_run_for_stop_to_answer(loop):
    def stop_at_4(pkt):  # SIGTERM's handler raises StopRunner wherever the loop is
        if pkt.id == 4:
            raise R.StopRunner()
        return odd_drop(pkt)

    r = make_runner({7: stop_at_4}, [udp4(2), udp4(3), udp4(4), udp4(6)])
    serve(r)
    assert not {(7, 4), (7, 6)} & decided(r, verdicts(r)).keys()  # (3: if its burst ended)
    r._flush()
    assert_verdicts(r, [(7, 1, 2, None), (7, 0, 3, None)])
    assert decided(r, verdicts(r)).keys() == {(7, 2), (7, 3)}
    assert r.ctx[7].seen == 3


def test_stop_in_the_general_path_leaves_the_open_run_for_stop_to_answer(loop):
    odd = udp4(3)  # not a plain queued packet: the general path decides it, and stops
    swapped = odd[:20] + odd[32:40] + odd[20:32] + odd[40:]

    def stop_at_3(pkt):
        if pkt.id == 3:
            raise R.StopRunner()
        return ACCEPT

    r = make_runner({7: stop_at_3}, [udp4(1), udp4(2), swapped, udp4(4)])
    serve(r)
    r._flush()  # what stop() does first
    assert decided(r, verdicts(r)) == {(7, 1): (1, None), (7, 2): (1, None)}


def test_waiting_stop_after_a_burst_answered_it(loop):
    r = make_runner({7: odd_drop}, [udp4(2), udp4(4)])
    serve(r)  # the burst is answered before the receiver waits again (and stops)
    assert_verdicts(r, [(7, 1, 4, None)])


def test_errors_and_odd_returns_take_on_error(loop):
    def bad(pkt):
        if pkt.id == 3:
            raise ValueError("boom")
        return "yes" if pkt.id == 4 else ACCEPT

    r = make_runner({7: bad}, [udp4(i) for i in (1, 3, 4, 5)] + [None], on_error="drop")
    serve(r)
    assert_verdicts(r, [(7, 1, 1, None), (7, 0, 4, None), (7, 1, 5, None)])
    assert (r.ctx[7].errors, r.ctx[7].dropped) == (2, 2)


def test_other_datagrams_take_the_general_path(loop):
    # a packet whose first attribute is not the packet header, then a normal one
    odd = udp4(3)  # swap the packet header (20:32) and the input interface (32:40)
    swapped = odd[:20] + odd[32:40] + odd[20:32] + odd[40:]
    r = make_runner({7: odd_drop}, [udp4(2), swapped, udp4(4), None])
    serve(r)
    assert_verdicts(r, [(7, 1, 2, None), (7, 0, 3, None), (7, 1, 4, None)])


def test_several_queues_and_per_flow_marks(loop):
    fns = {7: odd_drop, 8: lambda pkt: ACCEPT}
    data = [udp4(1, queue=7), udp4(1, queue=8, mark=0x10), udp4(2, queue=7),
            udp4(2, queue=8), udp4(9, queue=99), None]
    r = make_runner(fns, data, per_flow=True, flow_mark=0x20000000)
    serve(r)
    assert sorted(verdicts(r)) == sorted([
        (7, 0, 1, None), (7, 1, 2, 0x20000000),
        (8, 1, 2, 0x20000000)] + [(8, 1, 1, 0x20000010)])


def test_receive_buffer_setting(monkeypatch):
    from minifw.errors import ConfigError
    monkeypatch.delenv(R.RCVBUF_ENV, raising=False)
    assert R.rcvbuf_setting() == 4 << 20
    monkeypatch.setenv(R.RCVBUF_ENV, "65536")
    assert R.rcvbuf_setting() == 65536
    for bad in ("abc", "100"):
        monkeypatch.setenv(R.RCVBUF_ENV, bad)
        with pytest.raises(ConfigError, match="MINIFW_HOOK_RCVBUF.*at least 4096"):
            R.rcvbuf_setting()


def _datagram(ip: bytes, pid: int = 1) -> bytes:
    v6 = ip[:1] and ip[0] >> 4 == 6
    body = nfgen(0, 7) + attr(1, struct.pack(">IHB", pid, 0x86DD if v6 else 0x0800, 1))
    return message((3 << 8) | 0, 0, 0, body + attr(10, ip))


def _v6(next_header: int, rest: bytes) -> bytes:
    return (struct.pack("!IHBB", 0x60000000, len(rest), next_header, 64)
            + ipaddress.IPv6Address("fd00::2").packed + ipaddress.IPv6Address("fd00::1").packed
            + rest)


@pytest.mark.parametrize("rest", [b"\x06\x00\x00\x00",                  # hop-by-hop cut short
                                  b"\x06\xff" + b"\x00" * 30])          # one that runs past the end
@pytest.mark.parametrize("cls", CORES, ids=["pure", "C"])
def test_broken_ipv6_extension_headers_leave_the_addresses_readable(rest, cls):
    pkt = cls.from_datagram(_datagram(_v6(0, rest)), cls.environment(None, None, False))
    assert pkt.version == 6 and pkt.src == "fd00::2" and pkt.dst == "fd00::1"
    for name in ("proto", "proto_number", "sport", "dport", "icmp_type", "payload"):
        with pytest.raises(PacketError, match="extension header"):
            getattr(pkt, name)


@pytest.mark.parametrize("cls", CORES, ids=["pure", "C"])
def test_a_tcp_data_offset_below_five_raises(cls):
    tcp = struct.pack("!HHIIBBHHH", 4000, 80, 1, 0, 0x00, 0x18, 512, 0, 0) + b"data"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
                     bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])) + tcp
    pkt = cls.from_datagram(_datagram(ip), cls.environment(None, None, False))
    assert pkt.dport == 80
    with pytest.raises(PacketError, match="data offset 0"):
        pkt.payload


@pytest.mark.parametrize("queues", [{7: None}, {7: None, 8: None}])   # one queue, and several
def test_sys_exit_and_keyboardinterrupt_in_a_hook_are_its_errors(queues, loop):
    import sys

    def leaves(pkt):
        if pkt.id == 3:
            sys.exit("bye")
        if pkt.id == 4:
            raise KeyboardInterrupt
        return ACCEPT

    r = make_runner({q: leaves for q in queues}, [udp4(i) for i in (1, 3, 4, 5)] + [None],
                    on_error="drop", fail="closed")
    serve(r)                                  # the loop kept going after both
    assert_verdicts(r, [(7, 1, 1, None), (7, 0, 4, None), (7, 1, 5, None)])
    assert r.ctx[7].errors == 2


def test_hook_arguments_that_chain_names_or_flags_cannot_take_are_refused(tmp_path):
    from minifw.errors import ConfigError
    with pytest.raises(ConfigError, match="per_flow must be True or False"):
        make_spec(odd_drop, "input", per_flow="no")
    with pytest.raises(ConfigError, match="payload must be True or False"):
        make_spec(odd_drop, "input", payload=1)
    with pytest.raises(ConfigError, match="chain names"):
        make_spec(odd_drop, "input", name='drop "x"; flush ruleset')
    assert make_spec(lambda p: ACCEPT, "input").name == "lambda_"
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(0)\n")
    from minifw.hooks.load import load_hooks
    with pytest.raises(ConfigError, match="SystemExit"):
        load_hooks(str(exits))


def test_c_loop_reports_a_datagram_longer_than_its_slot_and_goes_on(monkeypatch):
    monkeypatch.setattr(Fakes, "C", True)
    r = make_runner({7: odd_drop}, [udp4(2), TRUNCATED, udp4(4), udp4(5), None])
    reported = []
    monkeypatch.setattr(r, "_truncated", lambda head, size: reported.append(size))
    serve(r)
    assert reported == [R.HEADER_SLOT + 100]
    assert_verdicts(r, [(7, 1, 4, None), (7, 0, 5, None)])


def test_hook_errors_are_logged_with_their_traceback(loop, caplog):
    def broken(pkt):
        return {}[pkt.dport]  # KeyError, raised in the hook's own line

    r = make_runner({7: broken}, [udp4(1), None], on_error="drop")
    with caplog.at_level("ERROR", logger="minifw.hooks"):
        serve(r)
    assert_verdicts(r, [(7, 0, 1, None)])
    text = caplog.text
    assert "hook f7 raised" in text and "KeyError: 9" in text and "in broken" in text


def test_packets_a_hook_keeps_stay_readable_after_their_burst(loop):
    kept = []

    def keep(pkt):
        kept.append(pkt)
        return ACCEPT

    r = make_runner({7: keep}, [udp4(1, src="198.18.9.1"), udp4(2, src="198.18.9.2"), None,
                                udp4(3, src="198.18.9.3", dport=53), None])
    serve(r)
    assert [(p.id, str(p.src), p.dport, p.proto) for p in kept] == [
        (1, "198.18.9.1", 9, "udp"), (2, "198.18.9.2", 9, "udp"), (3, "198.18.9.3", 53, "udp")]


# ---- a stop wakes every serve loop, whenever it lands ------------------------------------------

def _asleep_in_a_receive(tid):
    """Whether thread ``tid`` sleeps in the kernel in something other than a lock (the GIL)."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/self/task/{tid}/wchan") as f:
            wchan = f.read()
    except OSError:
        return False
    return state == "S" and wchan not in ("", "0") and "futex" not in wchan


# serve loop -> (hook functions, packet core, receiver): "C" is the C cycle (hooks/_hot.c);
# "python" the general Python loop (several queues) over C packets; "python-pure" the Python
# loop of one queue over pure-Python packets (MINIFW_PURE_PYTHON=1); "recv-loop" the Python
# loop of one queue over plain recv calls (no recvmmsg in the C library)
STOP_LOOPS = {
    "C": ({7: odd_drop}, HotPacket, mmsg.BurstReceiver),
    "python": ({7: odd_drop, 8: odd_drop}, HotPacket, mmsg.BurstReceiver),
    "python-pure": ({7: odd_drop}, PurePacket, mmsg.BurstReceiver),
    "recv-loop": ({7: odd_drop}, HotPacket, mmsg.RecvLoop),
}


@pytest.mark.parametrize("where", list(STOP_LOOPS))
def test_a_stop_that_lands_while_the_loop_waits_uninterrupted_ends_it(where, monkeypatch):
    """The race of issue 11: the signal's C handler runs (Python's handler is then due) but the
    serve loop's wait in the kernel is not interrupted, so only the signal wake-up descriptor
    can end it. Deterministically: the loop sleeps in its receive, and the signal is delivered
    to another thread (as a process-wide SIGTERM may be). Before the fix the loop slept on
    until a rescue signal to its own thread."""
    fns, core, receiver_cls = STOP_LOOPS[where]
    monkeypatch.setattr(R, "Packet", core)
    monkeypatch.setattr(Fakes, "C", True)
    r = make_runner(fns, [])
    r.test_ids = {(7, i) for i in (1, 2, 3, 4, 5)}
    pair = r.qs
    monkeypatch.setattr(pair, "receiver", lambda size, slots: receiver_cls(pair.sock, slots, size))
    main = threading.get_ident()
    main_tid = threading.get_native_id()
    done = threading.Event()
    seen = {"rescued": False, "asleep": False}

    def feed():
        for i in (1, 2, 3, 4, 5):
            pair.peer.send(udp4(i))
        answered = -1
        pair.peer.settimeout(10)
        while answered < 5:  # the burst's verdicts: the loop goes back to its wait
            data = pair.peer.recv(65536)
            pair.sent.append(data)
            answered = max([answered] + [m[2] for m in _messages(data)])
        end = time.monotonic() + 10
        while not _asleep_in_a_receive(main_tid) and time.monotonic() < end:
            time.sleep(0.001)
        seen["asleep"] = _asleep_in_a_receive(main_tid)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # lands in this thread
        if not done.wait(10):  # generous: the loop did not wake; end the test anyway
            seen["rescued"] = True
            while not done.is_set():
                signal.pthread_kill(main, signal.SIGUSR1)
                done.wait(1)

    def stop(*_):
        if not done.is_set():
            raise R.StopRunner()

    old = signal.signal(signal.SIGUSR1, stop)
    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        try:
            r.serve()
        except R.StopRunner:
            pass
        done.set()
        feeder.join()
    finally:
        done.set()
        signal.signal(signal.SIGUSR1, old)
    assert seen["asleep"], "the serve loop never waited in the kernel"
    assert not seen["rescued"], "the stop did not wake the serve loop"
    assert decided(r, verdicts(r)) == {(7, i): (i % 2 ^ 1, None) for i in (1, 2, 3, 4, 5)}


def test_the_suite_gives_every_test_a_timeout(pytestconfig):
    # a hang prints every thread's stack and fails the run (pytest-timeout, thread method: it
    # leaves SIGALRM to the tests above)
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
    assert pytestconfig.getini("timeout_method") == "thread"


# ---- a stop mid-burst: the packets the function did not decide get its stop verdict -----------

def kernel_answers(sent, ids):
    """What each packet id of queue 7 got from the verdict messages, as the kernel applies
    them in order: a batch verdict answers every packet up to its id not answered yet, a
    single verdict its own packet."""
    got = {}
    for data in sent:
        for kind, _seq, start, end in split_datagram(data):
            body = data[start:end]
            if struct.unpack_from(">H", body, 2)[0] != 7:
                continue
            verdict, last = struct.unpack_from(">II", body, len(body) - 8)
            batch = kind & 0xFF == 3  # NFQNL_MSG_VERDICT_BATCH; 1 is NFQNL_MSG_VERDICT
            for pid in ids:
                if pid not in got and (pid <= last if batch else pid == last):
                    got[pid] = verdict
    return got


@pytest.mark.parametrize("fail,on_error,stop_verdict",
                         [("open", "drop", 0), ("closed", "accept", 0), ("open", "accept", 1)])
@pytest.mark.parametrize("where", list(STOP_LOOPS))
def test_a_stop_mid_burst_gives_undecided_packets_the_stop_verdict(where, fail, on_error,
                                                                  stop_verdict, monkeypatch,
                                                                  tmp_path):
    """Packets 1-6 arrive in one burst; the stop lands in the function at packet 4 (as SIGTERM's
    handler raises StopRunner there). Packet 7 comes after and is drained by stop(), and its
    function accepts it: its batch verdict (every id up to 7) used to answer 4-6 too, so 5 and
    6, which the function drops, passed. They must get the stop verdict: drop for a
    fail-closed hook or on_error="drop", else accept (docs/hooks.md)."""
    _fns, core, receiver_cls = STOP_LOOPS[where]
    verdict_of = {1: ACCEPT, 2: DROP, 3: ACCEPT, 5: DROP, 6: DROP, 7: ACCEPT}
    stopped = []

    def hook(pkt):
        if pkt.id == 4 and not stopped:
            stopped.append(4)
            raise R.StopRunner()
        return verdict_of[pkt.id]

    fns = {7: hook, 8: odd_drop} if where == "python" else {7: hook}
    monkeypatch.setattr(R, "Packet", core)
    monkeypatch.setattr(Fakes, "C", True)
    r = make_runner(fns, [], fail=fail, on_error=on_error)
    r.state_dir, r.pid, r.installed = tmp_path, 0, False
    r.kmsg = R.KernelLog.__new__(R.KernelLog)
    r.kmsg.fd = None
    pair = r.qs
    monkeypatch.setattr(pair, "receiver", lambda size, slots: receiver_cls(pair.sock, slots, size))
    for i in range(1, 7):  # all queued before the first receive: one burst
        pair.peer.send(udp4(i))
    with pytest.raises(R.StopRunner):
        r.serve()
    assert stopped == [4]
    pair.peer.send(udp4(7))
    r.stop()
    pair.drain()
    pair.sock.close()
    pair.peer.close()
    assert kernel_answers(pair.sent, range(1, 8)) == {
        1: 1, 2: 0, 3: 1, 4: stop_verdict, 5: stop_verdict, 6: stop_verdict, 7: 1}
    assert r.ctx[7].seen == 5  # 1-4, and 7 in the drain
