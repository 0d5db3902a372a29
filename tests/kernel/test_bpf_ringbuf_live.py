"""The ringbuf reader on records a real program writes (through BPF_PROG_TEST_RUN): order,
a full buffer, wrap-around, discarded records, waiting."""

import struct
import threading

import pytest

from bpfprogs import ipv4
from kit import need_root
from minifw.bpf.asm import B, DW, R0, R1, R2, R3, R4, R6, R10, Asm, reg
from minifw.bpf.program import MapSpec, PF, Program
from minifw.kernel.bpf import kbtf
from minifw.kernel.bpf.maps import Map
from minifw.kernel.bpf.prog import load
from minifw.kernel.bpf.prog import test_run as run
from minifw.kernel.bpf.ringbuf import RingbufReader
from minifw.kernel.bpf.sys import BpfError

RINGBUF_OUTPUT, RINGBUF_RESERVE, RINGBUF_SUBMIT, RINGBUF_DISCARD = 130, 131, 132, 133
LOG = MapSpec("log", "ringbuf", 0, 0, 4096)


@pytest.fixture(autouse=True)
def _root():
    need_root()


def output_program(size: int) -> Program:
    """Write ``size`` bytes (the first 8: the hook number, the rest zero) per packet."""
    a = Asm()
    a.ldx(DW, R2, R1, 0)                       # ctx->state
    a.ldx(B, R2, R2, kbtf.member_offset("nf_hook_state", "hook"))
    for off in range(-size, 0, 8):
        a.st(DW, R10, off, 0)
    a.stx(DW, R10, -size, R2)
    a.ld_map(R1, "log")
    a.mov(R2, reg(R10))
    a.alu(0x00, R2, -size)
    a.mov(R3, size)
    a.mov(R4, 0)
    a.call(RINGBUF_OUTPUT)
    a.mov(R0, 1)
    a.exit()
    return Program("rb_out", a, (LOG,))


def reserve_program() -> Program:
    """Reserve 8 bytes, write the hook number; discard at hook 1 (input), submit otherwise."""
    a = Asm()
    a.ldx(DW, R6, R1, 0)
    a.ldx(B, R6, R6, kbtf.member_offset("nf_hook_state", "hook"))
    a.ld_map(R1, "log")
    a.mov(R2, 8)
    a.mov(R3, 0)
    a.call(RINGBUF_RESERVE)
    a.jmp("==", R0, 0, "out")
    a.stx(DW, R0, 0, R6)
    a.mov(R1, reg(R0))
    a.mov(R2, 0)
    a.jmp("==", R6, 1, "discard")
    a.call(RINGBUF_SUBMIT)
    a.ja("out")
    a.label("discard")
    a.call(RINGBUF_DISCARD)
    a.label("out")
    a.mov(R0, 1)
    a.exit()
    return Program("rb_reserve", a, (LOG,))


def test_records_in_order_a_full_buffer_and_wrap_around():
    with Map.create(LOG) as log, RingbufReader(log) as reader, \
            load(output_program(24), {"log": log}) as prog:
        assert reader.poll(0) == []
        for hook in (0, 2, 4):
            run(prog.fd, ipv4(17), hook, PF[4])
        records = reader.poll(0)
        assert [struct.unpack_from("<Q", r)[0] for r in records] == [0, 2, 4]
        assert all(len(r) == 24 for r in records)
        # 32 bytes a record (8 header + 24): the kernel keeps the data under the size
        # (producer - consumer <= size - 1), so 127 fit in 4096; the rest are refused
        run(prog.fd, ipv4(17), 3, PF[4], repeat=200)
        assert len(reader.poll(0)) == 127
        # consumed: there is room again, and records now wrap past the end of the area
        run(prog.fd, ipv4(17), 1, PF[4], repeat=100)
        wrapped = reader.poll(0)
        assert len(wrapped) == 100
        assert {struct.unpack_from("<Q", r)[0] for r in wrapped} == {1}


def test_discarded_records_are_skipped_and_counted():
    with Map.create(LOG) as log, RingbufReader(log) as reader, \
            load(reserve_program(), {"log": log}) as prog:
        for hook in (0, 1, 3, 1, 4):
            run(prog.fd, ipv4(17), hook, PF[4])
        assert [struct.unpack("<Q", r)[0] for r in reader.poll(0)] == [0, 3, 4]
        assert reader.discarded == 2


def test_poll_waits_for_the_first_record():
    with Map.create(LOG) as log, RingbufReader(log) as reader, \
            load(output_program(8), {"log": log}) as prog:
        timer = threading.Timer(0.2, lambda: run(prog.fd, ipv4(17), 2, PF[4]))
        timer.start()
        try:
            records = reader.poll(5)
        finally:
            timer.join()
        assert [struct.unpack("<Q", r)[0] for r in records] == [2]
        assert reader.poll(0.05) == []


def test_only_a_ringbuf_is_read():
    with Map.create(MapSpec("a", "array", 4, 8, 1)) as m:
        with pytest.raises(BpfError, match="not a ringbuf"):
            RingbufReader(m)
