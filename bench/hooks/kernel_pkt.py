#!/usr/bin/env python3
"""Per-packet cost of bench/hooks' kernel hook (minifw_kernel.py's parse_lookup) through
BPF_PROG_TEST_RUN, nothing attached: ns per packet of the compiled program alone, behind the
dispatcher's tail call, and of a program that only returns ACCEPT (the floor of test_run
itself), for the bench's accepted UDP and TCP packets and a dropped one.
Usage (root, from the repo): .venv/bin/python bench/hooks/kernel_pkt.py [--repeat N]"""

from __future__ import annotations

import argparse
import runpy
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from minifw.bpf.asm import R0, Asm  # noqa: E402
from minifw.bpf.dispatch import PROGS, dispatcher  # noqa: E402
from minifw.bpf.program import Program  # noqa: E402
from minifw.compile.bpfhook import compile_hook  # noqa: E402
from minifw.hooks.addresses import address_entries  # noqa: E402
from minifw.kernel.bpf import kbtf  # noqa: E402
from minifw.kernel.bpf.maps import Map  # noqa: E402
from minifw.kernel.bpf.prog import load, test_run  # noqa: E402

ETH = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00"


def ip4(proto: int, body: bytes, src: str = "198.18.0.2", dst: str = "198.18.0.1") -> bytes:
    a = [bytes(int(x) for x in s.split(".")) for s in (src, dst)]
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0x4000, 64, proto, 0,
                       a[0], a[1]) + body


PACKETS = {
    "udp 64": ip4(17, struct.pack("!HHHH", 40000, 5001, 8 + 18, 0) + b"\0" * 18),
    "tcp 1448": ip4(6, struct.pack("!HHIIBBHHH", 40000, 5201, 1, 0, 8 << 4, 0x10, 512, 0, 0)
                    + b"\1" * 12 + b"\0" * 1448),
    "udp dropped": ip4(17, struct.pack("!HHHH", 40000, 5001, 26, 0) + b"\0" * 18,
                       src="198.18.9.7"),
}


def ns(fd: int, ip: bytes, repeat: int) -> float:
    return min(test_run(fd, ETH + ip, 1, 2, repeat=repeat)[1] for _ in range(7))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1_000_000)
    args = ap.parse_args()
    file = ROOT / "bench" / "hooks" / "minifw_kernel.py"
    module = runpy.run_path(str(file))
    kh = compile_hook(module["parse_lookup"].__minifw_hook__, 4, file.read_text(), str(file),
                      module, kbtf.offsets())
    maps = {m.name: Map.create(m) for m in kh.maps}
    for var, names in kh.address_maps.items():
        for kind, entries in address_entries(list(module[var]), 4).items():
            for key, value in entries:
                maps[names[f"v4_{kind}"]].update(key, value)
    for name, entries in kh.initial.items():
        for key, value in entries:
            maps[name].update(key, value)
    prog = load(kh.program, maps)
    a = Asm()
    a.mov(R0, 1)
    a.exit()
    floor = load(Program("accept", a, ()), {})
    disp_map = Map.create(PROGS)
    disp_map.update(struct.pack("<I", 0), struct.pack("<I", prog.fd))
    disp = load(dispatcher(), {PROGS.name: disp_map})
    print(f"parse_lookup v4: {len(kh.program.asm.insns)} instructions")
    try:
        for name, ip in PACKETS.items():
            f, p, d = (ns(x.fd, ip, args.repeat) for x in (floor, prog, disp))
            print(f"{name:12} accept-only {f:5.1f} ns  hook {p:5.1f} ns (+{p - f:.1f})  "
                  f"dispatcher+hook {d:5.1f} ns (+{d - f:.1f})  verdict "
                  f"{test_run(prog.fd, ETH + ip, 1, 2)[0]}")
    finally:
        for x in (disp, prog, floor):
            x.close()
        for m in (*maps.values(), disp_map):
            m.close()


if __name__ == "__main__":
    main()
