"""Compiled hook functions run two ways on the same bytes: in the kernel through
BPF_PROG_TEST_RUN (no attach, no traffic) and in Python over the queue's packet model.

The stable API the differential tests build on:

    with KernelRun(source, "fn_name", family) as k:     # compiles, creates maps, loads
        k.kernel(ip_bytes, "prerouting") -> 0 | 1        # NF_DROP / NF_ACCEPT (any hook)
        k.python(ip_bytes, "prerouting") -> 0 | 1        # the same function on the queue path
        k.stats() -> (packets, drops)
        k.counter("HITS") -> int
        k.logs() -> [(fn, text), ...]                     # pkt.log records, in order
"""

from __future__ import annotations

import struct
from typing import Any

from minifw.bpf.program import HOOKS, PF
from minifw.compile.bpfhook import compile_hook, decode_log
from minifw.hooks import ACCEPT, DROP
from minifw.hooks.addresses import Addresses, address_entries
from minifw.hooks.packet import PurePacket
from minifw.kernel.bpf import kbtf
from minifw.kernel.bpf.maps import Map
from minifw.kernel.bpf.prog import load
from minifw.kernel.bpf.ringbuf import RingbufReader
from minifw.kernel.bpf.prog import test_run as _test_run
from minifw.netlink.nfqueue import QueuedPacket

_ETH = {4: b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00",
        6: b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x86\xdd"}


class KernelRun:
    def __init__(self, source: str, fn_name: str, family: int, filename: str = "<hooks>",
                 module: dict[str, Any] | None = None, layout: dict[str, int] | None = None):
        if module is None:
            module = {"__name__": "hookmod"}
            exec(compile(source, filename, "exec"), module)  # noqa: S102  the test's own code
        self.module, self.family = module, family
        self.fn = module[fn_name]
        self.spec = self.fn.__minifw_hook__
        self.hook = compile_hook(self.spec, family, source, filename, module,
                                 kbtf.offsets() if layout is None else layout)
        self.maps: dict[str, Map] = {}
        self.prog = None
        try:
            for spec in self.hook.maps:
                self.maps[spec.name] = Map.create(spec)
            for name, entries in self.hook.initial.items():
                for key, value in entries:
                    self.maps[name].update(key, value)
            for var, names in self.hook.address_maps.items():
                for fam in (4, 6):
                    found = address_entries(module[var], fam)
                    for kind in ("hash", "lpm"):
                        for key, value in found[kind]:
                            self.maps[names[f"v{fam}_{kind}"]].update(key, value)
            self.prog = load(self.hook.program, self.maps)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.prog is not None:
            self.prog.close()
            self.prog = None
        for m in self.maps.values():
            m.close()
        self.maps = {}

    def __enter__(self) -> "KernelRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def kernel(self, ip: bytes, hook: str = "prerouting") -> int:
        assert self.prog is not None
        # prog.test_run drops the Ethernet header itself at output (LOCAL_OUT)
        return _test_run(self.prog.fd, _ETH[self.family] + ip, HOOKS[hook], PF[self.family])[0]

    def python(self, ip: bytes, hook: str = "prerouting", logs: list | None = None) -> int:
        """The verdict the queue runner gives: ACCEPT/DROP, else (an exception, another
        return value) the on_error verdict."""
        queued = QueuedPacket(0, 1, 0x0800 if self.family == 4 else 0x86DD,
                              HOOKS[hook], payload=ip)
        pkt = PurePacket(queued, logger=None if logs is None else logs.append)
        try:
            v = self.fn(pkt)
        except Exception:  # noqa: BLE001  the hook's error: on_error applies
            return int(self.spec.error_verdict)
        if v is ACCEPT or v is DROP:
            return int(v)
        return int(self.spec.error_verdict)

    def stats(self) -> tuple[int, int]:
        values = self.maps[f"{self.hook.name}_stats"].lookup_percpu(b"\0" * 4)
        packets = sum(struct.unpack_from("<Q", v, 0)[0] for v in values)
        drops = sum(struct.unpack_from("<Q", v, 8)[0] for v in values)
        return packets, drops

    def counter(self, var: str) -> int:
        return sum(struct.unpack("<Q", v[:8])[0]
                   for v in self.maps[var].lookup_percpu(b"\0" * 4))

    def logs(self) -> list[tuple[str, str]]:
        """The pkt.log records written so far, decoded."""
        with RingbufReader(self.maps["log"]) as reader:
            return [decode_log(r, self.hook.logs) for r in reader.read()]


def addresses(module: dict[str, Any]) -> list[str]:
    return [k for k, v in module.items() if isinstance(v, Addresses)]
