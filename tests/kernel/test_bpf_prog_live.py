"""Loading BPF netfilter programs into the running kernel: verdicts through BPF_PROG_TEST_RUN
(no attach, no traffic), the verifier's refusal, maps."""

import struct

import pytest

from bpfprogs import accept_all, drop_icmp, ipv4, ipv6
from kit import need_root
from minifw.bpf.asm import DW, R0, R1, R2, R3, W, Asm
from minifw.bpf.program import HOOKS, NF_ACCEPT, NF_DROP, PF, MapSpec, Program
from minifw.kernel.bpf import kbtf
from minifw.kernel.bpf.maps import Map, possible_cpus
from minifw.kernel.bpf.prog import VerifierError, load
from minifw.kernel.bpf.prog import test_run as run
from minifw.kernel.bpf.sys import BpfError


@pytest.fixture(autouse=True)
def _root():
    need_root()


@pytest.mark.parametrize("frame, pf, want", [
    (ipv4(1), PF[4], NF_DROP), (ipv4(17), PF[4], NF_ACCEPT), (ipv4(6), PF[4], NF_ACCEPT),
    (ipv6(58), PF[6], NF_DROP), (ipv6(17), PF[6], NF_ACCEPT), (ipv6(6), PF[6], NF_ACCEPT)])
def test_drop_icmp_verdicts(frame, pf, want):
    with load(drop_icmp(), {}) as prog:
        assert prog.id > 0
        retval, duration = run(prog.fd, frame, HOOKS["prerouting"], pf, repeat=10)
        assert retval == want
        assert duration > 0


def test_a_frame_shorter_than_an_ip_header_is_refused_by_test_run():
    with load(drop_icmp(), {}) as prog:
        assert run(prog.fd, ipv4(1, b"")[:14 + 20], 0, PF[4])[0] == NF_DROP
        with pytest.raises(BpfError) as info:
            run(prog.fd, ipv4(1, b"")[:14 + 19], 0, PF[4])
        assert info.value.errno == 22


def test_the_verifier_log_and_the_slot_it_stopped_at():
    a = Asm()
    a.mov(R0, 1)
    a.ldx(DW, R0, R1, 0)   # slot 1: ctx->state, fine
    a.ldx(DW, R0, R1, 16)  # slot 2: past the end of bpf_nf_ctx
    a.mov(R0, 1)
    a.exit()
    with pytest.raises(VerifierError) as info:
        load(Program("bad_ctx", a, ()), {})
    assert info.value.insn == 2
    assert "invalid bpf_context access" in info.value.log
    assert "bad_ctx" in str(info.value)


def test_a_return_value_other_than_0_or_1_is_refused():
    a = Asm()
    a.mov(R0, 2)
    a.exit()
    with pytest.raises(VerifierError) as info:
        load(Program("ret2", a, ()), {})
    assert info.value.insn == 1


def test_kfunc_ids_come_from_the_running_kernel():
    assert kbtf.func_id("bpf_dynptr_from_skb") > 0
    assert kbtf.func_id("bpf_dynptr_slice") != kbtf.func_id("bpf_dynptr_from_skb")
    assert kbtf.member_offset("bpf_nf_ctx", "skb") == 8
    assert kbtf.struct_size("bpf_nf_ctx") == 16


def test_unknown_kfunc_is_a_clear_error():
    a = accept_all().asm
    a.kcall("no_such_kfunc_here")
    with pytest.raises(BpfError, match="no_such_kfunc_here"):
        load(Program("x", a, ()), {})


def test_hash_map_roundtrip_and_iteration():
    with Map.create(MapSpec("h", "hash", 4, 8, 4)) as m:
        assert m.lookup(b"\0\0\0\1") is None
        m.update(b"\0\0\0\1", struct.pack("<Q", 7))
        m.update(b"\0\0\0\2", struct.pack("<Q", 8))
        assert m.lookup(b"\0\0\0\1") == struct.pack("<Q", 7)
        assert sorted(m.keys()) == [b"\0\0\0\1", b"\0\0\0\2"]
        assert dict(m.items())[b"\0\0\0\2"] == struct.pack("<Q", 8)
        assert m.delete(b"\0\0\0\1") is True
        assert m.delete(b"\0\0\0\1") is False
        with pytest.raises(BpfError, match="4 bytes, not 3"):
            m.lookup(b"\0\0\1")
        for i in range(3, 6):  # 4 entries fit; the fifth is refused
            m.update(struct.pack(">I", i), bytes(8))
        with pytest.raises(BpfError) as info:
            m.update(struct.pack(">I", 9), bytes(8))
        assert info.value.errno == 7  # E2BIG


def test_lpm_trie_matches_the_longest_prefix():
    with Map.create(MapSpec("lpm", "lpm_trie", 8, 8, 16)) as m:
        m.update(struct.pack("<I", 16) + bytes([198, 18, 0, 0]), struct.pack("<Q", 1))
        m.update(struct.pack("<I", 24) + bytes([198, 18, 2, 0]), struct.pack("<Q", 2))
        assert m.lookup(struct.pack("<I", 32) + bytes([198, 18, 2, 9])) == struct.pack("<Q", 2)
        assert m.lookup(struct.pack("<I", 32) + bytes([198, 18, 3, 9])) == struct.pack("<Q", 1)
        assert m.lookup(struct.pack("<I", 32) + bytes([198, 19, 0, 1])) is None


def test_percpu_array_has_one_value_per_possible_cpu():
    with Map.create(MapSpec("pc", "percpu_array", 4, 8, 2)) as m:
        values = m.lookup_percpu(struct.pack("<I", 1))
        assert len(values) == possible_cpus()
        assert values == [bytes(8)] * possible_cpus()
        m.update(struct.pack("<I", 1), b"".join(struct.pack("<Q", i) for i in range(possible_cpus())))
        assert [struct.unpack("<Q", v)[0] for v in m.lookup_percpu(struct.pack("<I", 1))] == \
            list(range(possible_cpus()))
        assert m.lookup(struct.pack("<I", 1)) == struct.pack("<Q", 0)


def test_struct_offsets_for_the_compiler():
    found = kbtf.offsets()
    assert set(found) == {"bpf_nf_ctx.state", "bpf_nf_ctx.skb", "sk_buff.mark", "sk_buff.len",
                          "nf_hook_state.hook", "nf_hook_state.pf", "nf_hook_state.in",
                          "nf_hook_state.out", "net_device.ifindex"}
    assert found["bpf_nf_ctx.state"] == 0 and found["bpf_nf_ctx.skb"] == 8
    assert found["nf_hook_state.hook"] == 0 and found["nf_hook_state.pf"] == 1
    # in and out are consecutive pointers; the rest lie inside their structs
    assert found["nf_hook_state.out"] == found["nf_hook_state.in"] + 8
    assert 0 < found["sk_buff.len"] < kbtf.struct_size("sk_buff")
    assert 0 < found["sk_buff.mark"] < kbtf.struct_size("sk_buff")
    assert 0 < found["net_device.ifindex"] < kbtf.struct_size("net_device")


def test_a_program_reads_skb_len_and_mark_at_the_btf_offsets():
    """skb->len through the BTF offset: the frame's IP length (the Ethernet header is pulled)."""
    off = kbtf.offsets()
    a = Asm()
    a.ldx(DW, R1, R1, off["bpf_nf_ctx.skb"])
    a.ldx(W, R2, R1, off["sk_buff.len"])
    a.ldx(W, R3, R1, off["sk_buff.mark"])
    a.mov(R0, 0)
    a.jmp("!=", R3, 0, "out")
    a.jmp("!=", R2, 28, "out")
    a.mov(R0, 1)
    a.label("out")
    a.exit()
    with load(Program("lenmark", a, ()), {}) as prog:
        assert run(prog.fd, ipv4(17, bytes(8)), 0, PF[4])[0] == NF_ACCEPT
        assert run(prog.fd, ipv4(17, bytes(9)), 0, PF[4])[0] == NF_DROP


@pytest.mark.parametrize("hook", sorted(HOOKS.values()))
def test_every_hook_sees_the_ip_header_at_offset_0(hook):
    """At output the kernel's test-run takes the IP packet alone: test_run strips the Ethernet
    header there, so one frame means the same packet at every hook."""
    with load(drop_icmp(), {}) as prog:
        assert run(prog.fd, ipv4(1), hook, PF[4])[0] == NF_DROP
        assert run(prog.fd, ipv4(17), hook, PF[4])[0] == NF_ACCEPT
        assert run(prog.fd, ipv6(58), hook, PF[6])[0] == NF_DROP
        assert run(prog.fd, ipv6(17), hook, PF[6])[0] == NF_ACCEPT
