"""What a BPF netfilter program is, before it meets the kernel: its instructions and the maps
they name. Pure; ``kernel/bpf`` creates the maps, loads and attaches.

An empty prog_array entry behind the dispatcher (``bpf/dispatch.py``) accepts the packet."""

from __future__ import annotations

import dataclasses

from ..errors import MinifwError
from .asm import Asm

NF_DROP = 0
NF_ACCEPT = 1
PF = {4: 2, 6: 10}                      # family -> NFPROTO_IPV4 / NFPROTO_IPV6
FAMILY = {pf: family for family, pf in PF.items()}
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
HOOK_NAMES = {num: name for name, num in HOOKS.items()}

PROG_TYPE_NETFILTER = 32
ATTACH_NETFILTER = 45
# include/uapi/linux/bpf.h, enum bpf_map_type
MAP_TYPES = {"hash": 1, "array": 2, "prog_array": 3, "percpu_array": 6, "lpm_trie": 11,
             "ringbuf": 27}
F_NO_PREALLOC = 1
BPF_F_NO_PREALLOC = F_NO_PREALLOC
HOOK_NUMBERS = HOOKS
NAME_LEN = 15  # the kernel keeps 15 characters of a program's or map's name


class MapSpecError(MinifwError, ValueError):
    """A map spec the kernel would refuse before any syscall: an unknown kind."""


@dataclasses.dataclass(frozen=True)
class MapSpec:
    name: str            # unique within one hook module; also the pin file name
    kind: str            # one of MAP_TYPES
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0       # e.g. F_NO_PREALLOC for lpm_trie (which requires it)

    def __post_init__(self) -> None:
        if self.kind not in MAP_TYPES:
            raise MapSpecError(f"unknown map kind {self.kind!r}; use one of {sorted(MAP_TYPES)}")


@dataclasses.dataclass(frozen=True)
class Program:
    name: str                    # the kernel shows NAME_LEN characters; the full name is kept
    asm: Asm                     # instructions with symbolic map names and kfunc names
    maps: tuple[MapSpec, ...]    # every map the program references by name
    license: str = "Dual MIT/GPL"

    def kfuncs(self) -> list[str]:
        """The kernel functions the program calls, by name."""
        return sorted({i.kfunc for i in self.asm.insns if i.kfunc is not None})

    def map_names(self) -> list[str]:
        return sorted({i.map_name for i in self.asm.insns if i.map_name is not None})


def kernel_name(name: str) -> str:
    """A name the kernel accepts for a program or map: [A-Za-z0-9_.], NAME_LEN long."""
    return "".join(c if c.isalnum() and c.isascii() or c in "_." else "_"
                   for c in name)[:NAME_LEN]


# The kernel struct members compiled programs read, as (struct, member): their byte offsets
# differ between kernel builds, so they are read from the running kernel's BTF at load
# (``kernel.bpf.kbtf.offsets()``) and handed to the compiler as "struct.member" -> offset.
STRUCT_MEMBERS = (("bpf_nf_ctx", "state"), ("bpf_nf_ctx", "skb"), ("sk_buff", "mark"),
                  ("sk_buff", "len"), ("nf_hook_state", "hook"), ("nf_hook_state", "pf"),
                  ("nf_hook_state", "in"), ("nf_hook_state", "out"), ("net_device", "ifindex"))
