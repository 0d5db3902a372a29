"""The differential test of kernel hooks: the BPF program the compiler makes of a Python hook
function against the same function run in Python, on the same packets.

Hypothesis draws hook modules from a grammar of the subset (hookgen.py: packet fields,
constants, Addresses and port sets, nested if/elif/else, and/or/not, arithmetic and bit
operations, locals, Counter.inc, inlined helpers, pkt.log) as source text written to a file,
and packets (v4/v6, TCP/UDP/ICMP/ICMPv6/SCTP/GRE, options, TCP data offsets, IPv6 extension
headers, fragments, truncations). The truth is the Python function on the userspace packet
model (an exception gives its on_error verdict, as on the queue).

- Inner loop: every function of every module, compiled for v4 and v6, runs through
  BPF_PROG_TEST_RUN on the drawn packets plus a corpus of PACKETS packets, at its own hook;
  verdicts, the function's packet and drop counts and the module's Counters must agree.
- Outer sample: modules with functions at prerouting, forward and postrouting are attached
  (through the dispatcher) in the firewall namespace of difflab's lab; crafted packets cross it
  for real and what arrives at the far host, and the counters, must agree.

CI draws CASES modules (>= 300) and VETH_CASES attached ones; MINIFW_KDIFF_CASES=N draws more
(the veth sample grows with it). Every disagreement found stays below as an @example.
"""

from __future__ import annotations

import collections
import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import hookgen
from minifw.hooks.load import load_hooks

CASES = int(os.environ.get("MINIFW_KDIFF_CASES", "300"))
VETH_CASES = max(12, CASES // 12)
PACKETS = 200
PHASES = ([Phase.explicit, Phase.reuse, Phase.generate]
          if os.environ.get("MINIFW_KDIFF_SHRINK") == "0" else list(Phase))
ETH = {4: b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00", 6: b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x86\xdd"}

bpfhook = pytest.importorskip("minifw.compile.bpfhook")
bpfmaps = pytest.importorskip("minifw.kernel.bpf.maps")
bpfprog = pytest.importorskip("minifw.kernel.bpf.prog")

from minifw.bpf.program import PF  # noqa: E402
from minifw.hooks.addresses import Addresses, address_entries  # noqa: E402

_TMP = Path(tempfile.mkdtemp(prefix="kdiff"))
_seq = iter(range(1 << 30))
STATS: collections.Counter = collections.Counter()


# ---- loading a module both ways --------------------------------------------------------------

class Module:
    """A drawn module: its Python functions (for the truth) and, per function and family, the
    loaded BPF program with the maps it shares with the module's other functions."""

    def __init__(self, source: str):
        self.path = _TMP / f"hooks{next(_seq)}.py"
        self.path.write_text(source)
        self.source = source
        self.specs = load_hooks(str(self.path))
        self.maps: dict[str, object] = {}
        self.progs: dict[tuple[str, int], object] = {}
        self.hooks: dict[tuple[str, int], object] = {}

    def compile_all(self) -> None:
        """Compile every function for both families; HookCompileError goes up (refused)."""
        for spec in self.specs:
            ns = spec.fn.__globals__
            for family in (4, 6):
                self.hooks[(spec.name, family)] = bpfhook.compile_hook(
                    spec, family, self.source, str(self.path), ns)

    def load_all(self) -> None:
        for (name, family), kh in self.hooks.items():
            ns = next(s for s in self.specs if s.name == name).fn.__globals__
            for ms in kh.maps:
                if ms.name not in self.maps:
                    self.maps[ms.name] = bpfmaps.Map.create(ms)
            for map_name, entries in kh.initial.items():
                for key, value in entries:
                    self.maps[map_name].update(key, value)
            for var, names in kh.address_maps.items():
                found = address_entries(list(ns[var]), family)
                for kind in ("hash", "lpm"):
                    map_name = names.get(f"v{family}_{kind}")
                    if map_name is not None:
                        for key, value in found[kind]:
                            self.maps[map_name].update(key, value)
            self.progs[(name, family)] = bpfprog.load(kh.program, self.maps)

    def close(self) -> None:
        for p in self.progs.values():
            p.close()
        for m in self.maps.values():
            m.close()
        self.progs.clear()
        self.maps.clear()

    # ---- counters ----
    def _sum(self, map_name: str, key: int = 0, at: int = 0) -> int:
        values = self.maps[map_name].lookup_percpu(struct.pack("<I", key))
        return sum(struct.unpack_from("<Q", v, at)[0] for v in values)

    def stats(self, fn: str) -> tuple[int, int]:
        """(packets, drops) the kernel counted for function ``fn``."""
        spec = self.maps[f"{fn}_stats"].spec
        if spec.value_size >= 16:
            return self._sum(f"{fn}_stats"), self._sum(f"{fn}_stats", 0, 8)
        return self._sum(f"{fn}_stats"), self._sum(f"{fn}_stats", 1)

    def counter(self, var: str) -> int:
        return self._sum(var)

    def python_counter(self, var: str) -> int:
        return self.specs[0].fn.__globals__[var].value


def frame(pkt: hookgen.RawPacket) -> bytes:
    return ETH[pkt.version] + pkt.data


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")


def describe(mod: Module, pkt: hookgen.RawPacket, fn: str) -> str:
    return f"\n{mod.source}\nfunction {fn}, packet {pkt!r}"


# ---- inner loop: BPF_PROG_TEST_RUN -----------------------------------------------------------

CORPUS = hookgen.corpus(PACKETS)


def check_test_run(source: str, drawn: list[hookgen.RawPacket]) -> None:
    mod = Module(source)
    try:
        try:
            mod.compile_all()
        except bpfhook.HookCompileError as exc:
            event(f"refused: {str(exc).split(':', 2)[-1][:60]}")
            STATS["refused"] += 1
            return
        STATS["compiled"] += 1
        mod.load_all()
        packets = drawn + CORPUS
        for spec in mod.specs:
            seen = drops = 0
            hooknum = hookgen.HOOKNUM[spec.hook.value]
            for pkt in packets:
                want = hookgen.python_verdict(spec, pkt.data, spec.hook.value)
                got, _ = bpfprog.test_run(mod.progs[(spec.name, pkt.version)].fd, frame(pkt),
                                          hooknum, PF[pkt.version])
                assert got == want, (f"kernel {'ACCEPT' if got else 'DROP'}, Python "
                                     f"{'ACCEPT' if want else 'DROP'}" + describe(mod, pkt, spec.name))
                seen += 1
                drops += not want
            STATS["verdicts"] += seen
            assert mod.stats(spec.name) == (seen, drops), \
                f"stats of {spec.name}: kernel {mod.stats(spec.name)}, Python {(seen, drops)}" \
                + f"\n{mod.source}"
        for var in ("C0", "C1"):
            if var in mod.specs[0].fn.__globals__:
                assert mod.counter(var) == mod.python_counter(var), \
                    f"Counter {var}: kernel {mod.counter(var)}, Python " \
                    f"{mod.python_counter(var)}\n{mod.source}"
    finally:
        mod.close()


@pytest.mark.timeout(120 + CASES // 2)
@settings(max_examples=CASES, deadline=None, phases=PHASES, database=None,
          suppress_health_check=list(HealthCheck))
@given(hookgen.hook_modules(), st.lists(hookgen.packets(), min_size=1, max_size=3))
def test_kernel_agrees_with_python_in_test_run(module, drawn):
    need_root()
    check_test_run(module.source, drawn)


def test_most_drawn_functions_compile():
    """The grammar stays inside the subset: a run where the compiler refused most modules
    would prove little."""
    if not STATS["compiled"] + STATS["refused"]:
        pytest.skip("the test-run differential did not run")
    assert STATS["compiled"] >= 0.8 * (STATS["compiled"] + STATS["refused"]), dict(STATS)
