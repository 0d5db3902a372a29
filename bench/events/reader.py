"""The NFLOG reader alone, for bench/events: NflogSocket -> one JSON line per packet -> a file.

    reader.py GROUP OUT.jsonl STATS.json [--copy-range N] [--qthreshold N] [--timeout-ms N]
              [--nlbufsiz N] [--no-json]

Runs until SIGTERM, then writes its counters (received, lost, overruns, CPU seconds and where
they went: receive + decode, event building, writing) to STATS.json. The event is built the
way the issue describes it (ts, rule, family, proto, addresses, ports, len, prefix...) with
json.dumps, so its cost stands for a real writer's. ``--no-json`` receives and decodes only.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import signal
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from minifw.kernel.nflog import NflogSocket  # noqa: E402

PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
_PORTS = struct.Struct(">HH").unpack_from


def event(p) -> dict:
    data = p.payload
    if p.family == 2:
        proto, ihl = data[9], (data[0] & 15) * 4
        src, dst = str(ipaddress.IPv4Address(data[12:16])), str(ipaddress.IPv4Address(data[16:20]))
        length, l4 = (data[2] << 8) | data[3], ihl
    else:
        proto = data[6]
        src, dst = str(ipaddress.IPv6Address(data[8:24])), str(ipaddress.IPv6Address(data[24:40]))
        length, l4 = ((data[4] << 8) | data[5]) + 40, 40
    sport = dport = icmp_type = None
    if proto in (6, 17) and len(data) >= l4 + 4:
        sport, dport = _PORTS(data, l4)
    elif proto in (1, 58) and len(data) > l4:
        icmp_type = data[l4]
    ts = p.timestamp if p.timestamp is not None else time.time()
    return {"ts": datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "rule": p.prefix, "hook": HOOKS[p.hook],
            "priority": 0, "action": "drop", "family": "ip" if p.family == 2 else "ip6",
            "proto": PROTOS.get(proto, str(proto)), "src": src, "dst": dst, "sport": sport,
            "dport": dport, "icmp_type": icmp_type, "iif": p.indev, "oif": p.outdev,
            "len": length, "prefix": p.prefix}


class FastLines:
    """The same event as ``event`` + json.dumps, as a JSON line built with one % format: the
    parts a rule's events share (rule, hook, family, prefix) are JSON-encoded once, addresses
    go through inet_ntop, and the time stamp's seconds are formatted once per second. What
    a writer can reach in Python; ``--fast`` uses it."""

    def __init__(self) -> None:
        self._heads: dict[tuple, str] = {}
        self._sec = -1
        self._stamp = ""

    def _head(self, p, proto: int) -> str:
        key = (p.prefix, p.hook, p.family, proto)
        head = self._heads.get(key)
        if head is None:
            head = self._heads[key] = (
                '", "rule": %s, "hook": "%s", "priority": 0, "action": "drop", "family": "%s", '
                '"proto": %s, ' % (json.dumps(p.prefix), HOOKS[p.hook],
                                   "ip" if p.family == 2 else "ip6",
                                   json.dumps(PROTOS.get(proto, str(proto))))
            ).replace("%", "%%")
        return head

    def lines(self, packets) -> str:
        out = []
        now = time.time()
        ntop = socket.inet_ntop
        for p in packets:
            data = p.payload
            ts = p.timestamp or now
            sec = int(ts)
            if sec != self._sec:
                self._sec = sec
                self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            if p.family == 2:
                proto, l4 = data[9], (data[0] & 15) * 4
                src, dst = ntop(socket.AF_INET, data[12:16]), ntop(socket.AF_INET, data[16:20])
                length = (data[2] << 8) | data[3]
            else:
                proto, l4 = data[6], 40
                src, dst = ntop(socket.AF_INET6, data[8:24]), ntop(socket.AF_INET6, data[24:40])
                length = ((data[4] << 8) | data[5]) + 40
            sport = dport = icmp = "null"
            if proto == 6 or proto == 17:
                sport, dport = _PORTS(data, l4)
            elif proto == 1 or proto == 58:
                icmp = data[l4]
            out.append(('{"ts": "%s.%06dZ' + self._head(p, proto) + '"src": "%s", "dst": "%s", '
                        '"sport": %s, "dport": %s, "icmp_type": %s, "iif": %s, "oif": %s, '
                        '"len": %d, "prefix": %s}\n')
                       % (self._stamp, (ts - sec) * 1e6, src, dst, sport, dport, icmp,
                          p.indev if p.indev is not None else "null",
                          p.outdev if p.outdev is not None else "null", length,
                          json.dumps(p.prefix)))
        return "".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("group", type=int)
    ap.add_argument("out")
    ap.add_argument("stats")
    ap.add_argument("--copy-range", type=int, default=128)
    ap.add_argument("--qthreshold", type=int, default=1000)
    ap.add_argument("--timeout-ms", type=int, default=100)
    ap.add_argument("--nlbufsiz", type=int, default=65536)
    ap.add_argument("--no-json", action="store_true")
    ap.add_argument("--fast", action="store_true", help="FastLines instead of json.dumps")
    args = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sock = NflogSocket(args.group, copy_range=args.copy_range, qthreshold=args.qthreshold,
                       timeout_ms=args.timeout_ms, nlbufsiz=args.nlbufsiz)
    fast = FastLines()
    t_recv = t_build = t_write = 0.0
    clock = time.process_time
    with open(args.out, "w", buffering=1 << 20) as out:
        Path(args.stats + ".ready").touch()
        while not stop:
            if not sock.wait(0.1):
                continue
            c0 = clock()
            packets = sock.receive()
            c1 = clock()
            if args.no_json:
                t_recv += c1 - c0
                continue
            if args.fast:
                text = fast.lines(packets)
            else:
                text = "".join([json.dumps(event(p)) + "\n" for p in packets])
            c2 = clock()
            out.write(text)
            out.flush()  # whole lines only, as they come
            c3 = clock()
            t_recv, t_build, t_write = t_recv + c1 - c0, t_build + c2 - c1, t_write + c3 - c2
    Path(args.stats).write_text(json.dumps({
        "received": sock.received, "lost": sock.lost, "overruns": sock.overruns,
        "rcvbuf": sock.rcvbuf, "cpu": clock(), "cpu_receive": t_recv, "cpu_build": t_build,
        "cpu_write": t_write}))
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
