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
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from ..compile import hooks as plan
from ..errors import ConfigError, KernelError, MinifwError, PacketError, UnsupportedError
from ..events.hookevents import Sender
from .kplace import queue_specs
from ..hooks import HookSpec
from ..hooks.packet import HotPacket, PurePacket, _hot
from ..kernel import nfnl, nft
from ..kernel.nfqueue import RCVBUF_START, QueueBusy, QueueSocket
from ..hooks import ACCEPT, DROP
from ..netlink.nfqueue import (
    AFTER_PACKET_HDR, FULL_COPY_RANGE, HEADER_COPY_RANGE, PACKET_HDR_LEN, PACKET_MSG_TYPE,
    Nfqa, decode_packet, read_head, read_queue_and_id, split_datagram,
)
from ..netlink.nlmsg import NlmsgType, parse_error
from ..netlink.verdicts import ERROR, VerdictRuns
from . import hookstate

QUEUE_BASE = 1000
QUEUE_LIMIT = 65535
BURST = 64
RECV_SIZE = 1 << 16
# receive slots per datagram: a header-only copy (128 bytes of packet) plus every attribute the
# kernel may add (interfaces, marks, hardware address, timestamp, conntrack...) fits 2 KB
HEADER_SLOT = 2048
FULL_SLOT = RECV_SIZE + 4096
_PACKET_TYPE = PACKET_MSG_TYPE
_PACKET_HDR = int(Nfqa.PACKET_HDR)
_ERROR_TYPE = int(NlmsgType.ERROR)
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
    """Per-queue serving state: the function, its verdict rules, and its verdict runs."""

    __slots__ = ("placement", "fn", "name", "error_verdict", "flow_mark", "logger", "full",
                 "env", "runs", "seen", "reports", "on_drop", "report_drop")

    def __init__(self, placement: plan.Placement, logger: Callable[[str], None],
                 ifname: Callable[[int], str | None] | None = None,
                 events: Sender | None = None):
        spec = placement.spec
        self.placement = placement
        self.fn = spec.fn
        self.name = spec.name
        self.error_verdict = int(spec.error_verdict)
        self.flow_mark = spec.flow_mark if spec.per_flow else 0
        self.logger = logger
        self.full = spec.payload
        # hook events (events/hookevents.py): pkt.log() reports through the env; DROPs
        # through on_drop, which the runner's watcher arms only while a daemon listens
        hook, prio = spec.hook.value, spec.priority
        reporter = None
        self.report_drop: Callable[[Any], None] | None = None
        if events is not None:
            name = spec.name
            reporter = (lambda pkt, text: events.report(name, hook, prio, "log", pkt, text))
            self.report_drop = (lambda pkt: events.report(name, hook, prio, "drop", pkt))
        self.on_drop: Callable[[Any], None] | None = None
        self.env = Packet.environment(ifname, logger, self.full, reporter)
        # the stop verdict: for a packet the function had no verdict for when the runner
        # stopped (docs/hooks.md)
        self.runs = VerdictRuns(placement.queue, self.error_verdict,
                                self.error_verdict if spec.fail_open else 0)
        self.seen = 0  # packets given to the function
        self.reports = 0  # errors logged so far (they are rate-limited)

    @property
    def errors(self) -> int:
        return self.runs.errors

    @property
    def dropped(self) -> int:
        return self.runs.dropped


class Runner:
    _wake = -1  # the signal wake-up descriptor while serve() runs
    _rx: Any = None  # the burst receiver, which keeps the last burst for stop()
    events: Sender | None = None  # hook events to the daemon (None: never reported)
    _burst: Any = None  # the C loop's Burst while it serves (its counts are in it)

    def __init__(self, file: str, state_dir: Path, managed: bool = False,
                 replaces: tuple[int, ...] = (), specs: list[HookSpec] | None = None):
        self.file = os.path.abspath(file)
        self.state_dir = Path(state_dir)
        self.managed = managed
        # live runners whose chains our install transaction swaps for ours (make before break)
        self.replaces = set(replaces)
        self.pid = os.getpid()
        self.digest = hookstate.file_digest(self.file)  # before loading: a later edit restarts
        # the functions that run on the queue (the others are in the kernel: kattach)
        self.specs = queue_specs(self.file) if specs is None else specs
        if not self.specs:
            raise ConfigError("has no hook function for the queue: all of them run in the "
                              "kernel", file=self.file)
        self.qs: QueueSocket | None = None
        self.placements: list[plan.Placement] = []
        self.ctx: dict[int, QueueCtx] = {}
        self.native_queue = False
        self.conntrack = False
        self.kmsg = KernelLog(f"minifw[{self.pid}]")
        self.events = Sender(self.state_dir)
        self._ifnames: dict[int, str | None] = {}
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
        others = plan.hook_points(chains, leaving=stale)
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
                                        self._ifname, self.events)
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
        reporter = _StatsReporter(self)
        stop_watching = threading.Event()
        try:
            with _signal_wakeup() as wake:
                self._wake = wake
                if self.events is not None:
                    self._arm_events()
                    threading.Thread(target=self._watch_events, args=(stop_watching,),
                                     name="hook-events", daemon=True).start()
                self._serve()
        finally:  # however serve ends, its threads end with it
            self._wake = -1
            stop_watching.set()
            reporter.stop()

    def _arm_events(self) -> None:
        """Arm the DROP reports while a daemon's events socket exists, disarm them otherwise:
        with no daemon, a DROP costs nothing more than before."""
        assert self.events is not None
        active = self.events.refresh()
        for ctx in self.ctx.values():
            ctx.on_drop = ctx.report_drop if active else None
            if self._burst is not None:
                self._burst.on_drop = ctx.on_drop

    def _watch_events(self, stop: threading.Event) -> None:
        # a daemon that comes up is found within a quarter second (one stat); one that
        # listens is checked once a second
        while not stop.wait(1.0 if self.events is not None and self.events.active else 0.25):
            try:
                self._arm_events()
            except Exception:  # noqa: BLE001  events are optional: never stop the runner
                log.exception("hook events: the watcher failed")

    def counts(self) -> dict[str, int]:
        """Packets given to the functions, drops and errors so far (the C loop's share, not
        yet stored in the queue's runs, included)."""
        burst = self._burst
        totals = {"packets": 0, "drops": 0, "errors": 0}
        for ctx in self.ctx.values():
            totals["packets"] += ctx.seen
            totals["drops"] += ctx.dropped
            totals["errors"] += ctx.errors
        if burst is not None:
            totals["packets"] += burst.seen
            totals["drops"] += getattr(burst, "dropped", 0)
            totals["errors"] += getattr(burst, "errors", 0)
        return totals

    def _serve(self) -> None:
        # what exists now (modules, the hook file's tables) lives as long as the runner: keep
        # it out of the collector's scans, which otherwise revisit it as packets allocate
        gc.freeze()
        receiver = self._receiver()
        if len(self.ctx) == 1 and Packet is HotPacket and hasattr(receiver, "address"):
            (ctx,) = self.ctx.values()
            if not ctx.flow_mark:  # the C loop serves one queue without marks
                return self._serve_hot(ctx, receiver)
        receive = receiver.receive
        ctxs = self.ctx
        handle = self._handle
        flush = self._flush
        decide = self._decide
        head = read_head
        queue_and_id = read_queue_and_id
        expect_len = AFTER_PACKET_HDR
        ptype, hdr_len, hdr_type = _PACKET_TYPE, PACKET_HDR_LEN, _PACKET_HDR
        new = Packet.from_datagram
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
                if n >= expect_len:
                    length, kind, alen, atype = head(data)
                    if length == n and kind == ptype and alen == hdr_len and atype == hdr_type:
                        queue, packet_id = queue_and_id(data)
                        ctx = ctxs.get(queue)
                        if ctx is not None:
                            decide(ctx, new(data, ctx.env), packet_id)
                        continue
                handle(data)
            flush()

    def _serve_hot(self, ctx: QueueCtx, receiver: Any) -> None:
        """_serve in C (hooks/_hot.c): ``Burst.serve`` receives, calls the function on every
        plain queued packet of the queue, and sends the batch verdicts, burst after burst,
        without coming back here. It returns at a datagram of any other shape, which takes the
        general path here (then ``Burst.decide`` goes on with the rest of the burst), and on a
        receive error (ENOBUFS).

        The Burst runs the queue's VerdictRuns (netlink/verdicts.py): it takes the state from
        ctx.runs when it is entered and leaves it there whenever it returns, so the general
        path and stop() find it where they look."""
        burst = _hot.Burst(ctx.runs, ctx.fn, ctx.env, Packet, ACCEPT, DROP,
                           lambda exc: self._failed(ctx, exc),
                           lambda pkt, v: self._odd_verdict(ctx, v), StopRunner)
        burst.on_drop = ctx.on_drop
        self._burst = burst
        buf, lengths = receiver.buf, receiver.lengths
        slot, entry, len_at = receiver.slot_size, receiver.entry_size, receiver.len_at
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
                    data = receiver.datagram(i)
                    if data is not None:
                        self._handle(data)
                    i = burst.decide(buf, lengths, i + 1, n, slot, entry, len_at)
                self._flush()
        finally:
            self._burst = None
            ctx.seen += burst.seen

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

    def _failed(self, ctx: QueueCtx, exc: BaseException) -> None:
        """The hook raised: log it (its on_error verdict applies)."""
        self._report(ctx, exc)

    def _odd_verdict(self, ctx: QueueCtx, v: Any) -> None:
        """Anything other than ACCEPT or DROP: an error (its on_error verdict applies)."""
        try:
            raise TypeError(f"a hook function must return ACCEPT or DROP, not {v!r}")
        except TypeError as exc:
            self._report(ctx, exc)

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
                    self._decide(ctx, Packet(q, *ctx.env), q.id)
            elif msg_type == _ERROR_TYPE:
                try:
                    err, _ = parse_error(memoryview(data)[start:end])
                except PacketError:
                    continue
                if err:
                    log.warning("the kernel refused a verdict: %s", os.strerror(err))

    def _decide(self, ctx: QueueCtx, pkt: Any, packet_id: int) -> None:
        """Call the hook function on one packet and hand its verdict to the queue's runs (the
        per-packet step of the Python loops; the C loop has its own, in hooks/_hot.c)."""
        ctx.seen += 1
        try:
            v = ctx.fn(pkt)
        except StopRunner:
            raise
        except BaseException as exc:  # sys.exit() in a hook is the hook's error too
            self._failed(ctx, exc)
        else:
            if v is ACCEPT:
                ctx.runs.decide(packet_id, 1,
                                self._flow_mark(ctx, pkt) if ctx.flow_mark else None)
                return
            if v is DROP:
                ctx.runs.decide(packet_id, 0)
                if ctx.on_drop is not None:
                    try:
                        ctx.on_drop(pkt)
                    except Exception:  # noqa: BLE001  an event lost, never a verdict (as in C)
                        pass
                return
            self._odd_verdict(ctx, v)
        # the error verdict; an accepted first packet of a flow is marked as any other
        mark = self._flow_mark(ctx, pkt) if ctx.flow_mark and ctx.error_verdict else None
        ctx.runs.decide(packet_id, ERROR, mark)

    def _report(self, ctx: QueueCtx, exc: BaseException) -> None:
        ctx.reports += 1
        n = ctx.reports
        if n <= 20 or n % 1000 == 0:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.error("hook %s raised (error #%d; on_error=%s applies):\n%s", ctx.name, n,
                      "accept" if ctx.error_verdict else "drop", text.rstrip())

    def _flush(self) -> None:
        """Close every open run and send the verdict messages, in order, in one send."""
        runs = [ctx.runs for ctx in self.ctx.values()]
        out = []
        for r in runs:
            r.close()
            out += r.out
        if out:
            assert self.qs is not None
            try:
                self.qs.sock.send(b"".join(out))
            except OSError as exc:
                raise KernelError(f"sending verdicts failed: {exc}") from exc
            # cleared after the send: a stop landing in between sends them again (the kernel
            # refuses verdicts for answered packets), rather than never
            for r in runs:
                r.out.clear()

    # ---- shutdown ------------------------------------------------------------------------
    def stop(self) -> None:
        """Remove our chains, answer what is still queued, unbind, forget our record."""
        try:
            if self.qs is not None:
                with _quiet():
                    self._undecided()
                    self._flush()
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
            if self.events is not None:
                self.events.close()

    def _undecided(self) -> None:
        """The packets of a burst a stop interrupted that the function did not decide: each
        gets its hook's stop verdict, one packet per message (VerdictRuns.stop).

        The receiver keeps the last burst. Its packets of one queue come in id order and are
        decided in that order, so the undecided ones are those after the queue's last decided
        packet. Their verdicts go out before anything is drained: the batch verdict of a later
        packet would otherwise answer them with that packet's verdict (a DROP hook's packet
        let through at stop)."""
        last_burst = getattr(self._rx, "last_burst", None)
        if last_burst is None:
            return
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
                if ctx is None or not ctx.runs.undecided(q.id):
                    continue
                ctx.runs.stop(q.id)
                log.info("hook %s: packet %d had no verdict when the runner stopped: %s",
                         ctx.name, q.id, "accept" if ctx.runs.stop_verdict else "drop")

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


class _StatsReporter:
    """Writes the runner's counts to ``runner-<pid>.stats`` every STATS_EVERY seconds, for the
    daemon's ``status`` and metrics. A thread: the serve loops never stop for it (the C loop
    lets go of the GIL while it waits for packets)."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stats", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        failing = False
        while True:
            try:
                hookstate.write_stats(self.runner.state_dir, self.runner.pid,
                                      self.runner.counts())
                failing = False
            except (OSError, MinifwError) as exc:
                if not failing:  # said once while it lasts, not every second
                    log.warning("cannot write the runner's counts: %s", exc)
                failing = True
            if self._done.wait(hookstate.STATS_EVERY):
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=2)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, (KernelError, OSError))


def setup_logging(state_dir: Path, foreground: bool) -> Path:
    folder = hookstate.made_hooks_dir(state_dir)
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
        ready: Callable[[Runner], None] | None = None,
        specs: list[HookSpec] | None = None) -> Runner:
    """Run until SIGTERM/SIGINT. Errors before serving propagate (as MinifwError)."""
    def on_signal(signum, frame):
        raise StopRunner()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    runner = None
    try:
        runner = Runner(file, state_dir, managed=managed, replaces=replaces, specs=specs)
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
