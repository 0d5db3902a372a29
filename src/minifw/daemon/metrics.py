"""The daemon's Prometheus endpoint (``minifw daemon --metrics HOST:PORT``), a plug-in.

Built with prometheus-client: its own CollectorRegistry (never the process-wide default) and one
collector that reads fresh counters at each scrape (app/counters.py), served by the library's
WSGI app and threading server (``serve``). A scrape lists no set elements but the merged runs'
(see counters.py). With 10k rules and 1M bans a scrape costs 0.45-0.55 s of CPU here, most of
it prometheus-client rendering 20k series; the reading itself 0.1 s (bench/metrics).

The default address is 127.0.0.1:9469: loopback only, since the counters name rules, sets and
hook files (who is banned is not exported, but the firewall's layout is), and 9469 is free in
Prometheus' list of default ports (9100 is node_exporter's). ``:PORT`` or ``PORT`` alone listen
on 127.0.0.1; ``[::]:9469`` or ``0.0.0.0:9469`` expose it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Iterator

from ..app import counters
from ..errors import ConfigError, MinifwError, StateError
from ..kernel import seam
from ..model.ruleset import Ruleset

log = logging.getLogger("minifw.metrics")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9469
DEFAULT_LISTEN = f"{DEFAULT_HOST}:{DEFAULT_PORT}"


def parse_listen(text: str | None) -> tuple[str, int]:
    """(host, port) of a ``--metrics`` value: HOST:PORT, [V6]:PORT, :PORT, PORT or HOST;
    empty: the default."""
    text = (text or "").strip()
    host, port = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"'{text}' is not HOST:PORT ([ADDR]:PORT for IPv6)",
                              file="--metrics")
        port = rest[1:]
    elif text.isdigit():
        host, port = "", text
    elif text.count(":") == 1:
        host, port = text.split(":")
    host = host or DEFAULT_HOST
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"'{port}' is not a port (1-65535)", file="--metrics")
    return host, int(port)


class Reading:
    """What one scrape exports, gathered by the service (or a test)."""

    def __init__(self, sample: counters.Sample, layout: counters.Layout,
                 events: dict[str, Any] | None, last_apply: float | None, seconds: float,
                 prefixes: list[tuple[str, str, str]] | None = None):
        self.sample = sample
        self.layout = layout
        self.prefixes = rule_prefixes(layout) if prefixes is None else prefixes
        self.events = events
        self.last_apply = last_apply
        self.seconds = seconds


class Collector:
    """prometheus-client's custom collector protocol: ``collect()`` yields metric families,
    all but the per-rule ones (``render_rules``)."""

    def __init__(self, read: Callable[[], Reading]):
        self.read = read

    def describe(self) -> list:
        return []  # the families depend on the live ruleset: no fixed description

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        r = self.read()
        s = r.sample
        yield GaugeMetricFamily("minifw_up", "1 when minifw's table inet minifw is loaded.",
                                value=1 if s.up else 0)
        last = GaugeMetricFamily("minifw_last_apply_timestamp_seconds",
                                 "Unix time of the last up, reload, add or delete.")
        if r.last_apply is not None:
            last.add_metric([], r.last_apply)
        yield last
        yield from _policy_set_families(s, CounterMetricFamily, GaugeMetricFamily)
        yield from _hook_families(s, CounterMetricFamily, GaugeMetricFamily)
        yield from _kernel_hook_families(s, CounterMetricFamily)
        yield from _queue_families(s, CounterMetricFamily, GaugeMetricFamily)
        yield from _event_families(r.events, CounterMetricFamily)
        if getattr(r, "state_dir", None) is not None:
            from .crowdsec import crowdsec_families
            yield from crowdsec_families(r.state_dir, CounterMetricFamily, GaugeMetricFamily)
        yield GaugeMetricFamily("minifw_metrics_read_seconds",
                                "Time this scrape took to read the counters.", value=r.seconds)


RULE_LABELS = ("rule", "hook", "priority", "action")
RULE_FAMILIES = (("minifw_rule_packets_total", "Packets each rule matched."),
                 ("minifw_rule_bytes_total", "Bytes each rule matched."))


def _label_value(text: str) -> str:
    """The text format's escapes of a label value."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def rule_prefixes(layout: counters.Layout) -> list[tuple[str, str, str]]:
    """Each rule's id and the start of its two sample lines (name and labels), made once per
    layout rather than at each scrape."""
    out = []
    for r in layout.rules:
        values = dict(zip(RULE_LABELS, (r.id, r.hook, str(r.priority), r.action)))
        # in name order, as prometheus-client writes them
        labels = ",".join(f'{k}="{_label_value(values[k])}"' for k in sorted(values))
        out.append((r.id, *(f"{name}{{{labels}}} " for name, _ in RULE_FAMILIES)))
    return out


def render_rules(r: Reading) -> str:
    """The two per-rule counter families in the text format. These are the 20k series of a
    10k-rule scrape; prometheus-client renders about 15 us a series (0.3 s for 20k, most of a
    scrape), so their lines are joined from prefixes made per layout (about 1 us a series).
    Values go through prometheus-client's own number format; a unit test checks the text is
    what it would render."""
    from prometheus_client.utils import floatToGoString as number
    found = r.sample.rules
    rows = [(prefixes, found[rid]) for rid, *prefixes in r.prefixes if rid in found]
    parts = []
    for i, (name, help_text) in enumerate(RULE_FAMILIES):
        parts.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
        parts.extend(f"{prefixes[i]}{number(got[i])}\n" for prefixes, got in rows)
    return "".join(parts)


def exposition(r: Reading) -> bytes:
    """One scrape's text: prometheus-client's rendering of the small families, then the rule
    families."""
    from prometheus_client import generate_latest
    return generate_latest(_Once(Collector(lambda: r))) + render_rules(r).encode()


class _Once:
    """What ``generate_latest`` takes: an object whose ``collect()`` yields the families."""

    def __init__(self, collector: Collector):
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        return self.collector.collect()


def _policy_set_families(s: counters.Sample, counter: Any, gauge: Any) -> Iterator[Any]:
    pol_p = counter("minifw_policy_dropped_packets", "Packets a drop policy dropped.",
                    labels=["hook"])
    pol_b = counter("minifw_policy_dropped_bytes", "Bytes a drop policy dropped.",
                    labels=["hook"])
    for hook, (packets, nbytes) in sorted(s.policies.items()):
        pol_p.add_metric([hook], packets)
        pol_b.add_metric([hook], nbytes)
    size = gauge("minifw_set_elements", "Live elements of each named set (from the set "
                 "record: addresses and CIDRs).", labels=["set"])
    set_p = counter("minifw_set_dropped_packets", "Packets the ban chain dropped for a set.",
                    labels=["set"])
    set_b = counter("minifw_set_dropped_bytes", "Bytes the ban chain dropped for a set.",
                    labels=["set"])
    for name, info in sorted(s.sets.items()):
        size.add_metric([name], info.elements)
        set_p.add_metric([name], info.packets)
        set_b.add_metric([name], info.bytes)
    yield from (pol_p, pol_b, size, set_p, set_b)


def _kernel_hook_families(s: counters.Sample, counter: Any) -> Iterator[Any]:
    labels = ["function", "hook", "priority"]
    packets = counter("minifw_kernel_hook_packets", "Packets each hook function running in the "
                      "kernel (BPF) saw, both families.", labels=labels)
    drops = counter("minifw_kernel_hook_drops", "Packets each hook function running in the "
                    "kernel (BPF) dropped.", labels=labels)
    lost = counter("minifw_kernel_hook_log_lost", "pkt.log lines of hook functions running in "
                   "the kernel that found no room in the ringbuf (no reader drains it).",
                   labels=labels)
    for function, hook, priority, n, d, gone in s.kernel_hooks:
        packets.add_metric([function, hook, str(priority)], n)
        drops.add_metric([function, hook, str(priority)], d)
        lost.add_metric([function, hook, str(priority)], gone)
    yield packets
    yield drops
    yield lost


def _hook_families(s: counters.Sample, counter: Any, gauge: Any) -> Iterator[Any]:
    labels = ["function", "hook", "priority", "queue"]
    queued = counter("minifw_hook_packets", "Packets each hook function's chain sent to its "
                     "queue (kernel counter).", labels=labels)
    for h in s.hooks.values():
        queued.add_metric([h.function, h.hook or "", str(h.priority if h.priority is not None
                                                          else ""), str(h.queue)], h.packets)
    yield queued
    verdicts = counter("minifw_hook_verdicts", "Verdicts the runner of a hook file gave "
                       "(accept: packets it did not drop).", labels=["file", "verdict"])
    errors = counter("minifw_hook_errors", "Exceptions raised by a hook file's functions.",
                     labels=["file"])
    up = gauge("minifw_runner_up", "1 while the runner of a hook file runs.", labels=["file"])
    restarts = counter("minifw_runner_restarts", "Restarts of a hook file's runner by the "
                       "daemon after it died.", labels=["file"])
    for r in s.runners:
        file = str(r.get("file"))
        up.add_metric([file], 1 if r.get("state") == "running" else 0)
        if isinstance(r.get("restarts"), int):
            restarts.add_metric([file], r["restarts"])
        packets, drops = r.get("packets"), r.get("drops")
        if isinstance(packets, int) and isinstance(drops, int):
            verdicts.add_metric([file, "drop"], drops)
            verdicts.add_metric([file, "accept"], max(0, packets - drops))
        if isinstance(r.get("errors"), int):
            errors.add_metric([file], r["errors"])
    yield from (verdicts, errors, up, restarts)


def _queue_families(s: counters.Sample, counter: Any, gauge: Any) -> Iterator[Any]:
    full = counter("minifw_nfqueue_queue_dropped", "Packets dropped because the queue was "
                   "full (queue_dropped).", labels=["queue"])
    user = counter("minifw_nfqueue_user_dropped", "Packets dropped because the runner's "
                   "socket buffer was full (user_dropped).", labels=["queue"])
    waiting = gauge("minifw_nfqueue_waiting", "Packets waiting in the queue for a verdict.",
                    labels=["queue"])
    for num, q in sorted(s.queues.items()):
        full.add_metric([str(num)], q.queue_dropped)
        user.add_metric([str(num)], q.user_dropped)
        waiting.add_metric([str(num)], q.waiting)
    yield from (full, user, waiting)


def _event_families(events: dict[str, Any] | None, counter: Any) -> Iterator[Any]:
    if events is None:  # no event service in this daemon
        return
    for key, help_text in (("written", "Events written to events.jsonl."),
                           ("lost", "Events lost (NFLOG sequence gaps, full buffers, hook "
                                    "function events dropped).")):
        if isinstance(events.get(key), int):
            yield counter(f"minifw_events_{key}", help_text, value=events[key])


class MetricsService:
    """The daemon plug-in: ``start(ctx)`` serves the endpoint, ``stop()`` ends it."""

    def __init__(self, listen: str | None = None):
        self.host, self.port = parse_listen(listen)
        self.ctx: Any = None
        self._server: Any = None
        self._lock = threading.Lock()        # one reading at a time
        self._layout: tuple[Ruleset, counters.Layout, list] | None = None
        self._last_apply: float | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self, ctx: Any) -> None:
        self.ctx = ctx
        ctx.on_apply(self._applied)
        try:
            self._server = serve(self.host, self.port, lambda: exposition(self.reading()))
        except OSError as exc:
            raise StateError(f"--metrics: cannot listen on {self.address}: "
                             f"{exc.strerror or exc}") from exc
        log.info("metrics on http://%s/metrics", self.address)
        self._warm()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- readings -------------------------------------------------------------------------
    def _applied(self, ruleset: Ruleset) -> None:
        self._last_apply = time.time()
        self._warm()

    def _warm(self) -> None:
        """Build the layout of the applied ruleset now, in the background, not in a scrape."""
        threading.Thread(target=self._safe_layout, name="metrics-layout", daemon=True).start()

    def _safe_layout(self) -> None:
        try:
            self.layout()
        except MinifwError as exc:
            log.warning("metrics: %s", exc)

    def layout(self) -> tuple[counters.Layout, list[tuple[str, str, str]]]:
        """The applied ruleset's layout and rule line prefixes, made again when it changed."""
        ruleset = self.ctx.ruleset()  # the same object until state.json changes
        with self._lock:
            if self._layout is None or self._layout[0] is not ruleset:
                layout = counters.Layout.of(ruleset)
                self._layout = (ruleset, layout, rule_prefixes(layout))
            return self._layout[1], self._layout[2]

    def reading(self) -> Reading:
        start = time.perf_counter()
        layout, prefixes = self.layout()
        with self._lock:
            sample = counters.read(seam.default(), self.ctx.state_dir, layout,
                                   self.ctx.runners())
        events = self.ctx.events.stats() if self.ctx.events is not None else None
        reading = Reading(sample, layout, events, self._last_apply or self._state_time(),
                          time.perf_counter() - start, prefixes)
        reading.state_dir = self.ctx.state_dir  # the CrowdSec feed's status is there
        return reading

    def _state_time(self) -> float | None:
        try:
            return os.stat(os.path.join(self.ctx.state_dir, "state.json")).st_mtime
        except OSError:
            return None


def serve(host: str, port: int, render: Callable[[], bytes]) -> Any:
    """prometheus-client's threading WSGI server (as its ``start_http_server``) with a small
    app around ``render``, for a scrape's speed: the text format always (prometheus-client
    renders OpenMetrics, which Prometheus asks for first, 2.5x slower with our four labels:
    1.07 s against 0.44 s for 20k series here), and no gzip (the endpoint is on loopback by
    default, and compressing 1.7 MB costs more than sending it there)."""
    import socket
    from wsgiref.simple_server import make_server
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer

    def app(environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]
        try:
            body = render()
        except MinifwError as exc:  # the kernel or the state could not be read: say so
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"error: {exc}\n".encode()]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body)))])
        return [body]

    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    httpd = make_server(sockaddr[0], port, app, Server, handler_class=_quiet_handler())
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd


def _quiet_handler() -> Any:
    from wsgiref.simple_server import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """No line per scrape on the daemon's stderr."""
    return Quiet
