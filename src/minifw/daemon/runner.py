"""The hook runner: load a Python file of @hook functions, queue packets to them, give verdicts.

Start-up order, so no packet meets a chain without a listener:
1. load the file and validate the hook functions;
2. probe the kernel (nft ``queue`` expression, else the xtables NFQUEUE target);
3. bind one queue per function (header-only copies, GSO, fail-open unless fail="closed");
4. in ONE nf_tables transaction, remove chains a killed runner left behind and add ours;
5. serve: receive in bursts, call the functions, answer with batch verdicts.

SIGTERM or SIGINT removes our chains, answers what is still queued, and unbinds. The serve
loops never block in a receive: they wait in poll on the queue socket and the signal wake-up
descriptor together (see _signal_wakeup), so a stop wakes them whenever it lands.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import gc
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from ..compile import hooks as plan
from ..errors import ConfigError, KernelError, MinifwError, PacketError, UnsupportedError
from ..hooks.load import load_hooks
from ..hooks.packet import HotPacket, PurePacket, _hot
from ..kernel import nfnl, nft
from ..kernel.nfqueue import RCVBUF_START, QueueBusy, QueueSocket
from ..hooks import ACCEPT, DROP
from ..netlink.nfqueue import (
    FULL_COPY_RANGE, HEADER_COPY_RANGE, VerdictWriter, decode_packet, split_datagram,
)
from ..netlink.nlmsg import NlmsgType, parse_error
from . import hookstate

QUEUE_BASE = 1000
QUEUE_LIMIT = 65535
BURST = 64
RECV_SIZE = 1 << 16
# receive slots per datagram: a header-only copy (128 bytes of packet) plus every attribute the
# kernel may add (interfaces, marks, hardware address, timestamp, conntrack...) fits 2 KB
HEADER_SLOT = 2048
FULL_SLOT = RECV_SIZE + 4096
_PACKET_TYPE = (3 << 8) | 0
_ERROR_TYPE = int(NlmsgType.ERROR)
# The hot path's view of a datagram, in ONE unpack in host byte order: netlink length and type,
# the queue number, the first attribute's length and type (NFQA_PACKET_HDR is 11 bytes), the
# packet id. The queue number and the id are big-endian on the wire: read in host order they
# are byte-swapped on little-endian hosts, so the queues are looked up by their swapped number
# and an id is swapped back only when a verdict is written (once per run of packets).
_FAST = struct.Struct("=IH12xHHHI").unpack_from
_FAST_MIN = 32
if sys.byteorder == "little":
    def _swap16(v: int) -> int:
        return ((v & 0xFF) << 8) | (v >> 8)

    def _swap32(v: int) -> int:
        return int.from_bytes(v.to_bytes(4, "little"), "big")
else:  # pragma: no cover - big-endian hosts read network order already
    def _swap16(v: int) -> int:
        return v

    def _swap32(v: int) -> int:
        return v
_ERROR_VERDICT = {0: DROP, 1: ACCEPT}
log = logging.getLogger("minifw.hooks")


RCVBUF_ENV = "MINIFW_HOOK_RCVBUF"
PURE_ENV = "MINIFW_PURE_PYTHON"
# The packets hooks get: with the C core (hooks/_hot.c) where it was built, unless
# MINIFW_PURE_PYTHON=1 asks for the pure-Python path (which then also runs the serve loops).
Packet = PurePacket if HotPacket is None or os.environ.get(PURE_ENV) else HotPacket


def rcvbuf_setting() -> int:
    """The queue socket's starting receive buffer in bytes: $MINIFW_HOOK_RCVBUF, else 4 MiB.
    (It doubles on each ENOBUFS, up to 64 MiB.)"""
    text = os.environ.get(RCVBUF_ENV)
    if not text:
        return RCVBUF_START
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 4096:
        raise ConfigError(f"the receive buffer must be a number of bytes, at least 4096, not "
                          f"{text!r}.", file=f"${RCVBUF_ENV}")
    return value


class StopRunner(BaseException):
    """Raised by the signal handler to leave the receive loop."""


@contextlib.contextmanager
def _signal_wakeup() -> Iterator[int]:
    """A descriptor that becomes readable when a signal arrives: the read end of a pipe the C
    signal handler writes to (signal.set_wakeup_fd), -1 outside the main thread (where it
    cannot be set, and where no handler would run anyway).

    Python runs a handler between bytecodes, so a signal that lands after the serve loop last
    looked and before it blocks in the kernel would not end the wait. The loops poll this with
    the queue socket instead (mmsg, hooks/_hot.c): a signal at any moment, delivered to any
    thread, wakes them. (signalfd and ppoll would need the signal blocked in every thread,
    and signalfd bypasses Python's handlers.)"""
    if threading.current_thread() is not threading.main_thread():
        yield -1
        return
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old = None
    try:
        old = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        yield rfd
    finally:
        # a stop can land right after set_wakeup_fd returned, before its result was kept: ours
        # is then set, and must not outlive the pipe (later signals would write to a closed,
        # or reused, descriptor). The one before is lost then: none, in a runner.
        current = signal.set_wakeup_fd(-1 if old is None else old)
        if old is None and current != wfd:
            signal.set_wakeup_fd(current)
        os.close(rfd)
        os.close(wfd)


class KernelLog:
    """Lines for /dev/kmsg (dmesg). The kernel rate-limits writers (printk_devkmsg=ratelimit:
    about 10 lines per 5 s per open file); lines over the limit are dropped by the kernel."""

    def __init__(self, ident: str):
        self.ident = ident
        try:
            self.fd: int | None = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("cannot open /dev/kmsg (%s); pkt.log lines go to this log only",
                        exc.strerror)
            self.fd = None

    def write(self, text: str) -> None:
        if self.fd is None:
            return
        line = f"<6>{self.ident}: {text}".replace("\n", " ")[:900] + "\n"
        try:
            os.write(self.fd, line.encode(errors="replace"))
        except OSError:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class QueueCtx:
    """Per-queue serving state: the function, its verdict rules, and the open verdict run."""

    __slots__ = ("placement", "fn", "name", "error_verdict", "stop_verdict", "flow_mark",
                 "logger", "full", "env", "run_v", "run_mark", "run_last", "seen", "errors",
                 "dropped")

    def __init__(self, placement: plan.Placement, logger: Callable[[str], None],
                 ifname: Callable[[int], str | None] | None = None):
        spec = placement.spec
        self.placement = placement
        self.fn = spec.fn
        self.name = spec.name
        self.error_verdict = int(spec.error_verdict)
        # for a packet the function had no verdict for when the runner stopped (docs/hooks.md)
        self.stop_verdict = self.error_verdict if spec.fail_open else 0
        self.flow_mark = spec.flow_mark if spec.per_flow else 0
        self.logger = logger
        self.full = spec.payload
        self.env = Packet.environment(ifname, logger, self.full)
        self.run_v: int | None = None
        self.run_mark: int | None = None
        # the last packet id of the open run, as the hot path reads it (see _FAST)
        self.run_last: int | None = None
        self.seen = 0
        self.errors = 0
        self.dropped = 0


class Runner:
    _wake = -1  # the signal wake-up descriptor while serve() runs
    _rx: Any = None  # the burst receiver, which keeps the last burst for stop()

    def __init__(self, file: str, state_dir: Path, managed: bool = False,
                 replaces: tuple[int, ...] = ()):
        self.file = os.path.abspath(file)
        self.state_dir = Path(state_dir)
        self.managed = managed
        # live runners whose chains our install transaction swaps for ours (make before break)
        self.replaces = set(replaces)
        self.pid = os.getpid()
        self.digest = hookstate.file_digest(self.file)  # before loading: a later edit restarts
        self.specs = load_hooks(self.file)
        self.qs: QueueSocket | None = None
        self.placements: list[plan.Placement] = []
        self.ctx: dict[int, QueueCtx] = {}
        self.native_queue = False
        self.conntrack = False
        self.kmsg = KernelLog(f"minifw[{self.pid}]")
        self._ifnames: dict[int, str | None] = {}
        self._out: list[bytes] = []
        self._verdicts = VerdictWriter()
        self.installed = False
        self.created_table = False

    # ---- start-up ------------------------------------------------------------------------
    def probe(self) -> str:
        # our own batches: the kernel's errno decides, never libnftables' wording
        self.native_queue = nfnl.supported(plan.build_queue_probe_batch())
        if self.native_queue:
            return "nft queue"
        if not nfnl.supported(plan.build_xt_probe_batch()):
            raise UnsupportedError(
                "this kernel has neither the nft queue expression (CONFIG_NFT_QUEUE) nor the "
                "xtables NFQUEUE target (nft_compat, xt_NFQUEUE); Python hooks cannot run here")
        return "xtables NFQUEUE target"

    def _check_clashes(self) -> None:
        chains = nft.items(nft.query("list chains"), "chain")
        ours = [(s.hook.value, s.priority, f"hook function '{s.name}'") for s in self.specs]
        problems = plan.clashes(ours, plan.declarative_points(chains))
        # every other hook chain counts, except those we replace: a dead runner's of this file,
        # or a live one's we take over
        stale = {c for r in self._taken_over() for c in r.chains}
        others = [p for p in plan.hook_points(chains) if p[2].split()[-1] not in stale]
        problems += plan.clashes(ours, others)
        if problems:
            raise ConfigError(problems[0], file=self.file)

    def _taken_over(self) -> list[hookstate.RunnerRecord]:
        """Records whose chains our install removes: dead runners of this same file (another
        file's stale fail-closed chains stay until its own runner replaces them), and the live
        runners we replace."""
        return [r for r in hookstate.records(self.state_dir)
                if (not r.alive and r.file == self.file) or r.pid in self.replaces]

    def start(self) -> None:
        backend = self.probe()
        self._check_clashes()
        taken = self._taken_over()
        stale_records = [r for r in taken if not r.alive]
        used = {q.queue for r in hookstate.records(self.state_dir) if r.alive for q in r.queues}
        self.qs = QueueSocket(rcvbuf_setting())
        queue = QUEUE_BASE
        for spec in self.specs:
            while True:
                while queue in used:
                    queue += 1
                if queue > QUEUE_LIMIT:
                    raise KernelError("no free queue number is left between "
                                      f"{QUEUE_BASE} and {QUEUE_LIMIT}.")
                try:
                    self.qs.bind(queue, FULL_COPY_RANGE if spec.payload else HEADER_COPY_RANGE,
                                 fail_open=spec.fail_open)
                    break
                except QueueBusy:
                    queue += 1
            used.add(queue)
            placement = plan.Placement(spec, queue)
            self.placements.append(placement)
            self.ctx[queue] = QueueCtx(placement, self._logger_for(spec.name),
                                        self._ifname)
        self.conntrack = self.qs.enable_conntrack(self.placements[0].queue)
        if self.conntrack:
            for p in self.placements[1:]:
                self.qs.enable_conntrack(p.queue)
        stale = [c for r in taken for c in r.chains]
        live = set(c["name"] for c in nft.items(nft.query("list chains"), "chain")
                   if c.get("table") == plan.TABLE and c.get("family") == plan.FAMILY)
        stale = [c for c in stale if c in live]
        self.created_table = not nft.table_exists(plan.FAMILY, plan.TABLE)
        if self.native_queue:
            nft.run(plan.build_install_json(self.placements, stale))
        else:
            nfnl.send_batch(plan.build_install_batch(self.placements, stale))
        self.installed = True
        for r in stale_records:
            hookstate.remove_record(self.state_dir, r.pid)
        hookstate.write_record(self.state_dir, self.record(backend))
        for p in self.placements:
            s = p.spec
            log.info("hook %s at %s priority %d on queue %d (fail-%s, on_error=%s%s) via %s",
                     s.name, s.hook.value, s.priority, p.queue, s.fail, s.on_error,
                     ", per-flow" if s.per_flow else "", backend)
        log.info("hot path: %s", "C (hooks/_hot.c)" if Packet is HotPacket else "pure Python")
        if not self.conntrack:
            log.info("conntrack info is not available on queued packets here "
                     "(NFQA_CFG_F_CONNTRACK: EOPNOTSUPP); pkt.ct_state is None")

    def record(self, backend: str) -> hookstate.RunnerRecord:
        return hookstate.RunnerRecord(
            pid=self.pid, file=self.file, managed=self.managed, digest=self.digest,
            started=time.time(), backend=backend, conntrack=self.conntrack,
            log=str(hookstate.hooks_dir(self.state_dir) / f"runner-{self.pid}.log"),
            queues=tuple(hookstate.QueueRecord.from_json(p.to_state())
                         for p in self.placements))

    def _logger_for(self, name: str) -> Callable[[str], None]:
        kmsg = self.kmsg

        def logger(text: str) -> None:
            log.info("%s: %s", name, text)
            kmsg.write(f"{name}: {text}")
        return logger

    def _ifname(self, index: int) -> str | None:
        try:
            return self._ifnames[index]
        except KeyError:
            try:
                name: str | None = socket.if_indextoname(index)
            except OSError:
                name = None
            self._ifnames[index] = name
            return name

    # ---- serving -------------------------------------------------------------------------
    def serve(self) -> None:
        """Receive in bursts (one recvmmsg call: it waits for the first datagram and takes up
        to BURST that are already queued), decide each packet, and answer each burst with
        batch verdicts (one send).

        This is the hot path: the kernel sends one queued packet per datagram, so everything
        below runs once per packet. It reads only the fixed-offset fields a verdict needs (the
        queue and the packet id) and builds the packet object without walking any netlink
        attribute: the hook's first field access does that. Anything unusual (several
        messages, acknowledgements, errors) goes to _handle.

        The receivers wait for packets in poll, on the queue socket and the signal wake-up
        descriptor together, so a stop wakes the loop whenever it lands.
        """
        assert self.qs is not None
        with _signal_wakeup() as wake:
            self._wake = wake
            try:
                self._serve()
            finally:
                self._wake = -1

    def _serve(self) -> None:
        # what exists now (modules, the hook file's tables) lives as long as the runner: keep
        # it out of the collector's scans, which otherwise revisit it as packets allocate
        gc.freeze()
        if len(self.ctx) == 1:
            (ctx,) = self.ctx.values()
            if not ctx.flow_mark:
                return self._serve_one(ctx)
        receive = self._receiver().receive
        ctxs = self.ctx
        handle = self._handle
        flush = self._flush
        failed = self._failed
        out_append = self._out.append
        verdict_msg = self._verdicts.batch
        fast = _FAST
        expect_len = _FAST_MIN
        ptype = _PACKET_TYPE
        swap = _swap32
        by_wire = {_swap16(q): ctx for q, ctx in ctxs.items()}
        packet_cls = Packet
        new = packet_cls.__new__  # object.__new__, or the C core's
        accept, drop = ACCEPT, DROP
        while True:
            try:
                burst = receive()
            except OSError as exc:
                if exc.errno == errno_mod.ENOBUFS:
                    self._on_enobufs()
                    continue
                raise KernelError(f"receiving from the queue failed: {exc}") from exc
            for data in burst:
                n = len(data)
                # the usual case: the datagram is one queued-packet message whose first
                # attribute is the packet header (as the kernel writes it)
                if n < expect_len:
                    handle(data)
                    continue
                length, kind, wire_queue, alen, atype, wire_id = fast(data)
                if length != n or kind != ptype or alen != 11 or atype != 1:
                    handle(data)
                    continue
                ctx = by_wire.get(wire_queue)
                if ctx is None:
                    continue
                pkt = new(packet_cls)
                pkt._q = None
                pkt._data = data
                pkt._l3 = None
                pkt._env = ctx.env
                ctx.seen += 1
                try:
                    v = ctx.fn(pkt)
                except StopRunner:
                    raise
                except BaseException as exc:  # sys.exit() in a hook is the hook's error too
                    v = failed(ctx, exc)
                if v is accept:
                    verdict = 1
                    mark = self._flow_mark(ctx, pkt) if ctx.flow_mark else None
                elif v is drop:
                    verdict = 0
                    mark = None
                    ctx.dropped += 1
                else:
                    verdict, mark = self._odd_verdict(ctx, pkt, v)
                last = ctx.run_last
                if last is None:
                    ctx.run_v = verdict
                    ctx.run_mark = mark
                elif verdict != ctx.run_v or mark != ctx.run_mark:
                    out_append(verdict_msg(ctx.placement.queue, swap(last), ctx.run_v,
                                           ctx.run_mark))
                    ctx.run_v = verdict
                    ctx.run_mark = mark
                ctx.run_last = wire_id
            flush()

    def _serve_one(self, ctx: QueueCtx) -> None:
        """serve() for the common case of one hook function without per-flow mode: the same
        steps, with the verdict run and the counters in local variables (written back to ctx
        before anything else reads them: _handle, _flush, and on the way out)."""
        assert self.qs is not None
        receiver = self._receiver()
        if Packet is HotPacket and hasattr(receiver, "address"):  # the C loop needs slots
            return self._serve_one_hot(ctx, receiver)
        receive = receiver.receive
        handle = self._handle
        flush = self._flush
        failed = self._failed
        out_append = self._out.append
        verdict_msg = self._verdicts.batch
        fast = _FAST
        expect_len = _FAST_MIN
        ptype = _PACKET_TYPE
        swap = _swap32
        queue = ctx.placement.queue
        wire_queue = _swap16(queue)
        fn = ctx.fn
        env = ctx.env
        packet_cls = Packet
        new = packet_cls.__new__  # object.__new__, or the C core's
        accept, drop = ACCEPT, DROP
        run_v: int | None = None
        run_last: int | None = None
        seen = dropped = 0
        try:
            while True:
                try:
                    burst = receive()
                except OSError as exc:
                    if exc.errno == errno_mod.ENOBUFS:
                        ctx.run_v, ctx.run_mark, ctx.run_last = run_v, None, run_last
                        run_last = None
                        self._on_enobufs()
                        continue
                    raise KernelError(f"receiving from the queue failed: {exc}") from exc
                for data in burst:
                    n = len(data)
                    if n >= expect_len:
                        length, kind, wq, alen, atype, wire_id = fast(data)
                        if (length == n and kind == ptype and alen == 11 and atype == 1
                                and wq == wire_queue):
                            pkt = new(packet_cls)
                            pkt._q = None
                            pkt._data = data
                            pkt._l3 = None
                            pkt._env = env
                            seen += 1
                            try:
                                v = fn(pkt)
                            except StopRunner:
                                raise
                            except BaseException as exc:  # as in serve()
                                v = failed(ctx, exc)
                            if v is accept:
                                verdict = 1
                            elif v is drop:
                                verdict = 0
                                dropped += 1
                            else:
                                verdict = self._odd_verdict(ctx, pkt, v)[0]
                            if verdict != run_v:
                                if run_last is not None:
                                    out_append(verdict_msg(queue, swap(run_last), run_v))
                                run_v = verdict
                            run_last = wire_id
                            continue
                    ctx.run_v, ctx.run_mark, ctx.run_last = run_v, None, run_last
                    handle(data)
                    run_v, run_last = ctx.run_v, ctx.run_last
                ctx.run_v, ctx.run_mark, ctx.run_last = run_v, None, run_last
                run_last = None
                flush()
        finally:
            if run_last is not None:
                ctx.run_v, ctx.run_mark, ctx.run_last = run_v, None, run_last
            ctx.seen += seen
            ctx.dropped += dropped

    def _serve_one_hot(self, ctx: QueueCtx, receiver: Any) -> None:
        """_serve_one in C (hooks/_hot.c): ``Burst.serve`` receives, calls the function on
        every plain queued packet of the queue, and sends the batch verdicts, burst after
        burst, without coming back here. It returns at a datagram of any other shape, which
        takes the general path here as in _serve_one, and on a receive error (ENOBUFS).

        The open verdict run lives in the Burst; to_ctx hands it (and the verdict messages
        not sent yet, in order) to ctx and _out, where _handle and _flush expect them."""
        queue = ctx.placement.queue
        prefixes = tuple(self._verdicts.batch(queue, 0, v)[:-4] for v in (0, 1))
        burst = _hot.Burst(ctx.fn, ctx.env, Packet, ACCEPT, DROP,
                           lambda exc: self._failed(ctx, exc),
                           lambda pkt, v: self._odd_verdict(ctx, pkt, v)[0],
                           prefixes, StopRunner, _swap16(queue))
        buf, lengths = receiver.buf, receiver.lengths
        slot, entry, len_at = receiver.slot_size, receiver.entry_size, receiver.len_at
        out = self._out

        def to_ctx() -> None:
            burst.pending(out)  # (in one call: a stop cannot land between taking and keeping)
            if burst.run_last is not None:  # (else ctx may hold it: a stop in _handle)
                ctx.run_v, ctx.run_mark, ctx.run_last = burst.run_v, None, burst.run_last
                burst.run_last = None

        def from_ctx() -> None:
            burst.run_v, burst.run_last = ctx.run_v, ctx.run_last
            ctx.run_last = None

        try:
            while True:
                try:
                    r = burst.serve(receiver.fd, receiver.address, receiver.slots, buf, lengths,
                                    slot, entry, len_at, receiver.wake_fd)
                except OSError as exc:
                    raise KernelError(f"sending verdicts failed: {exc}") from exc
                if type(r) is int:
                    if r == -errno_mod.ENOBUFS:
                        self._on_enobufs()
                        continue
                    raise KernelError(f"receiving from the queue failed: {os.strerror(-r)}")
                n, i = r
                while i < n:  # datagram i is not a plain queued packet of this queue
                    to_ctx()
                    data = receiver.datagram(i)
                    if data is not None:
                        self._handle(data)
                    from_ctx()
                    i = burst.decide(buf, lengths, i + 1, n, slot, entry, len_at)
                to_ctx()
                self._flush()
        finally:
            to_ctx()
            ctx.seen += burst.seen
            ctx.dropped += burst.dropped

    def _receiver(self) -> Any:
        """The burst receiver: header-only copies fit small slots; a queue with whole-packet
        copies needs slots of a whole netlink message (65535 bytes of packet + attributes)."""
        assert self.qs is not None
        full = any(p.spec.payload for p in self.placements)
        receiver = self.qs.receiver(FULL_SLOT if full else HEADER_SLOT, BURST)
        receiver.on_truncated = self._truncated
        receiver.wake_fd = self._wake
        self._rx = receiver
        return receiver

    def _truncated(self, head: bytes, size: int) -> None:
        log.error("a datagram of %d bytes from the kernel did not fit the receive buffer and "
                  "was dropped (its packet is answered by the next verdict of its queue)", size)

    @staticmethod
    def _flow_mark(ctx: QueueCtx, pkt: Packet) -> int | None:
        """The mark of an accepted first packet of a flow (per-flow mode); None if unreadable."""
        try:
            return pkt._queued().mark | ctx.flow_mark
        except PacketError as exc:
            log.error("a queued packet could not be decoded: %s", exc)
            return None

    def _failed(self, ctx: QueueCtx, exc: BaseException) -> Any:
        """The hook raised: log it, and apply its on_error verdict."""
        ctx.errors += 1
        self._report(ctx, exc)
        return _ERROR_VERDICT[ctx.error_verdict]

    def _odd_verdict(self, ctx: QueueCtx, pkt: Packet, v: Any) -> tuple[int, int | None]:
        """Anything other than ACCEPT or DROP: an error, on_error applies."""
        try:
            raise TypeError(f"a hook function must return ACCEPT or DROP, not {v!r}")
        except TypeError as exc:
            ctx.errors += 1
            self._report(ctx, exc)
        if ctx.error_verdict:
            return 1, self._flow_mark(ctx, pkt) if ctx.flow_mark else None
        ctx.dropped += 1
        return 0, None

    def _on_enobufs(self) -> None:
        assert self.qs is not None
        size = self.qs.grow_rcvbuf()
        log.warning("the socket receive buffer overflowed (ENOBUFS #%d): packets were lost "
                    "in the kernel; buffer is now %d bytes", self.qs.enobufs, size)
        self._flush()

    def _handle(self, data: bytes) -> None:
        """Any datagram: several messages, acknowledgements, errors."""
        try:
            messages = split_datagram(data)
        except PacketError as exc:
            log.error("dropped a malformed datagram from the kernel: %s", exc)
            return
        for msg_type, _seq, start, end in messages:
            if msg_type == _PACKET_TYPE:
                try:
                    q = decode_packet(data, start, end)
                except PacketError as exc:
                    log.error("a queued packet could not be decoded: %s", exc)
                    continue
                ctx = self.ctx.get(q.queue)
                if ctx is not None:
                    self._decide(ctx, q)
            elif msg_type == _ERROR_TYPE:
                try:
                    err, _ = parse_error(memoryview(data)[start:end])
                except PacketError:
                    continue
                if err:
                    log.warning("the kernel refused a verdict: %s", os.strerror(err))

    def _decide(self, ctx: QueueCtx, q: Any) -> None:
        """Call the hook function and extend (or close and open) the queue's verdict run."""
        ctx.seen += 1
        pkt = Packet(q, *ctx.env)
        try:
            v = ctx.fn(pkt)
            if v is ACCEPT:
                verdict = 1
            elif v is DROP:
                verdict = 0
            else:
                raise TypeError(f"a hook function must return ACCEPT or DROP, not {v!r}")
        except StopRunner:
            raise
        except BaseException as exc:  # as in serve()
            verdict = ctx.error_verdict
            ctx.errors += 1
            self._report(ctx, exc)
        mark = None
        if verdict == 0:
            ctx.dropped += 1
        elif ctx.flow_mark:
            mark = self._flow_mark(ctx, pkt)
        if ctx.run_last is not None and (verdict != ctx.run_v or mark != ctx.run_mark):
            self._out.append(self._verdicts.batch(q.queue, _swap32(ctx.run_last), ctx.run_v,
                                                  ctx.run_mark))
        ctx.run_v, ctx.run_mark, ctx.run_last = verdict, mark, _swap32(q.id)

    def _report(self, ctx: QueueCtx, exc: BaseException) -> None:
        n = ctx.errors
        if n <= 20 or n % 1000 == 0:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.error("hook %s raised (error #%d; on_error=%s applies):\n%s", ctx.name, n,
                      "accept" if ctx.error_verdict else "drop", text.rstrip())

    def _flush(self, tail: list[bytes] | None = None) -> None:
        out = self._out
        for queue, ctx in self.ctx.items():
            if ctx.run_last is not None:
                out.append(self._verdicts.batch(queue, _swap32(ctx.run_last), ctx.run_v,
                                                ctx.run_mark))
                ctx.run_last = None
        if tail:
            out.extend(tail)
        if out:
            assert self.qs is not None
            data = b"".join(out)
            try:
                self.qs.sock.send(data)
            except OSError as exc:
                raise KernelError(f"sending verdicts failed: {exc}") from exc
            # cleared after the send: a stop landing in between sends them again (the kernel
            # refuses verdicts for answered packets), rather than never
            out.clear()

    # ---- shutdown ------------------------------------------------------------------------
    def stop(self) -> None:
        """Remove our chains, answer what is still queued, unbind, forget our record."""
        try:
            if self.qs is not None:
                with _quiet():
                    undecided = self._undecided()  # (before the flush closes the open runs)
                    self._flush(undecided)
            if self.installed:
                chains = [c for p in self.placements for c in (p.chain, p.flow_chain) if c]
                try:
                    if self.native_queue:
                        nft.run(plan.build_remove_json(chains))
                    else:
                        nfnl.send_batch(plan.build_remove_batch(chains))
                except KernelError as exc:
                    log.warning("could not remove hook chains (already gone?): %s", exc)
                self.installed = False
                if self.created_table:  # leave no trace, unless something else moved in
                    with _quiet():
                        nfnl.send_batch(plan.build_remove_batch([]).delete_table(
                            plan.TABLE, only_if_empty=True))
            if self.qs is not None:
                self._drain()
                self.qs.close()
                self.qs = None
        finally:
            hookstate.remove_record(self.state_dir, self.pid)
            for ctx in self.ctx.values():
                log.info("hook %s: %d packets, %d dropped, %d errors", ctx.name, ctx.seen,
                         ctx.dropped, ctx.errors)
            self.kmsg.close()

    def _undecided(self) -> list[bytes]:
        """Verdicts for the packets of a burst a stop interrupted that the function did not
        decide: each gets its hook's stop verdict, one packet per message (NFQNL_MSG_VERDICT).

        The receiver keeps the last burst. Its packets of one queue come in id order and are
        decided in that order, so the decided ones are those up to the queue's open run (which
        ends at the last decided packet); the rest have none. Sent after the open runs and
        before anything is drained: the batch verdict of a later packet would otherwise answer
        them with that packet's verdict (a DROP hook's packet let through at stop)."""
        last_burst = getattr(self._rx, "last_burst", None)
        if last_burst is None:
            return []
        out = []
        for data in last_burst():
            try:
                messages = split_datagram(data)
            except PacketError:
                continue
            for msg_type, _seq, start, end in messages:
                if msg_type != _PACKET_TYPE:
                    continue
                try:
                    q = decode_packet(data, start, end)
                except PacketError:
                    continue
                ctx = self.ctx.get(q.queue)
                if ctx is None:
                    continue
                if ctx.run_last is not None and not 0 < (
                        q.id - _swap32(ctx.run_last)) & 0xFFFFFFFF < 1 << 31:
                    continue  # decided: in the open run or before it
                out.append(self._verdicts.single(q.queue, q.id, ctx.stop_verdict))
                if not ctx.stop_verdict:
                    ctx.dropped += 1
                log.info("hook %s: packet %d had no verdict when the runner stopped: %s",
                         ctx.name, q.id, "accept" if ctx.stop_verdict else "drop")
        return out

    def _drain(self) -> None:
        assert self.qs is not None
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            try:
                data = self.qs.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, OSError):
                break
            self._handle(data)
        with _quiet():
            self._flush()


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, (KernelError, OSError))


def setup_logging(state_dir: Path, foreground: bool) -> Path:
    folder = hookstate.hooks_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    path = folder / f"runner-{os.getpid()}.log"
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    return path


def run(file: str, state_dir: Path, *, managed: bool = False, replaces: tuple[int, ...] = (),
        ready: Callable[[Runner], None] | None = None) -> Runner:
    """Run until SIGTERM/SIGINT. Errors before serving propagate (as MinifwError)."""
    def on_signal(signum, frame):
        raise StopRunner()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    runner = None
    try:
        runner = Runner(file, state_dir, managed=managed, replaces=replaces)
        runner.start()
        if ready is not None:
            ready(runner)
        runner.serve()
    except StopRunner:
        pass
    finally:
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        if runner is not None:
            runner.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return runner  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """Background entry point used by ``minifw up`` for [[hook]] files."""
    import argparse
    parser = argparse.ArgumentParser(prog="minifw-hook-runner")
    parser.add_argument("file")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--replaces", type=int, action="append", default=[], metavar="PID")
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    setup_logging(state_dir, foreground=False)
    try:
        run(args.file, state_dir, managed=True, replaces=tuple(args.replaces))
    except MinifwError as exc:
        log.error("error: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        # after serving began, nobody waits for this line: keep it for `minifw status`
        hookstate.write_failure(state_dir, os.path.abspath(args.file), str(exc), [])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
