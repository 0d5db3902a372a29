"""Loading BPF netfilter programs (with the verifier's log when refused) and running them on a
frame with BPF_PROG_TEST_RUN."""

from __future__ import annotations

import ctypes
import re
import struct
from typing import Mapping

from ...bpf.asm import AsmError
from ...bpf.btf import BtfError
from ...bpf.program import ATTACH_NETFILTER, PROG_TYPE_NETFILTER, Program, kernel_name
from . import kbtf
from . import sys as bpfsys
from .maps import Map, obj_info
from .sys import BpfError, addr, attr, bpf

LOG_SIZE = 1 << 20
LOG_MAX = 1 << 26
_LOG_INSN = re.compile(r"^(\d+): \(", re.M)


class VerifierError(BpfError):
    """The verifier refused a program: ``log`` is its text, ``insn`` the slot it stopped at."""

    def __init__(self, message: str, errno: int | None, log: str, insn: int | None):
        super().__init__(message, errno)
        self.log = log
        self.insn = insn


class Loaded:
    """A loaded program: its fd (held until ``close``) and kernel id."""

    def __init__(self, fd: int, name: str):
        self.fd = fd
        self.name = name
        self.id = prog_id(fd)

    def close(self) -> None:
        if self.fd >= 0:
            bpfsys.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Loaded":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prog_id(fd: int) -> int:
    return struct.unpack_from("<I", obj_info(fd, 80), 4)[0]


def prog_name(fd: int) -> str:
    return obj_info(fd, 80)[64:80].split(b"\0")[0].decode()


def last_insn(log: str) -> int | None:
    """The slot index of the last instruction the verifier printed: where it stopped."""
    found = _LOG_INSN.findall(log)
    return int(found[-1]) if found else None


def load(program: Program, maps: Mapping[str, Map]) -> Loaded:
    """Load ``program`` with ``maps`` (by name) and kfunc ids from the running kernel."""
    try:
        kfuncs = kbtf.kfunc_ids(program.kfuncs())
        code = program.asm.assemble({name: m.fd for name, m in maps.items()}, kfuncs)
    except (AsmError, BtfError) as exc:
        raise BpfError(f"program {program.name!r}: {exc}") from exc
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(program.license.encode())

    def attempt(log_level: int, log) -> int:
        a = attr((0, "I", PROG_TYPE_NETFILTER), (4, "I", len(code) // 8), (8, "Q", addr(insns)),
                 (16, "Q", addr(lic)), (24, "I", log_level),
                 (28, "I", len(log) if log is not None else 0), (32, "Q", addr(log)),
                 (48, "16s", kernel_name(program.name).encode()),
                 (68, "I", ATTACH_NETFILTER))
        return bpf(bpfsys.PROG_LOAD, a, f"load program {program.name!r}")

    try:
        fd = attempt(0, None)  # no log on the fast path; load again with one to explain
    except BpfError as first:
        size = LOG_SIZE
        while True:
            log = ctypes.create_string_buffer(size)
            try:
                fd = attempt(1, log)
                break  # refused once, accepted with a log: a transient failure
            except BpfError as exc:
                if exc.errno == 28 and size < LOG_MAX:  # ENOSPC: the log did not fit
                    size *= 4
                    continue
                text = log.value.decode("utf-8", "replace")
                if not text:
                    raise BpfError(str(first), first.errno) from first
                lines = [line for line in text.strip().splitlines() if line.strip()]
                reason = next((line for line in reversed(lines)
                               if not line.startswith(("processed ", "verification time"))),
                              "refused")
                raise VerifierError(f"the verifier refused program {program.name!r}: {reason}",
                                    exc.errno, text, last_insn(text)) from None
    try:
        return Loaded(fd, program.name)
    except BaseException:
        bpfsys.close(fd)
        raise


LOCAL_OUT = 3


def test_run(fd: int, frame: bytes, hook: int, pf: int, repeat: int = 1) -> tuple[int, int]:
    """Run program ``fd`` on ``frame`` (Ethernet header first) as if at ``hook`` of family
    ``pf``: (return value, average duration in ns)."""
    if hook == LOCAL_OUT:  # the kernel takes the IP packet alone there (no eth_type_trans)
        frame = bytes(frame)[14:]
    data = ctypes.create_string_buffer(bytes(frame), len(frame))
    ctx = ctypes.create_string_buffer(bytes([hook, pf]), 2)
    a = attr((0, "I", fd), (8, "I", len(frame)), (16, "Q", addr(data)), (32, "I", repeat),
             (40, "I", 2), (48, "Q", addr(ctx)))
    bpf(bpfsys.PROG_TEST_RUN, a, "test-run program")
    retval, = struct.unpack_from("<I", a, 4)
    duration, = struct.unpack_from("<I", a, 36)
    return retval, duration
