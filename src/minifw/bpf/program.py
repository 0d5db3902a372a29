"""A BPF netfilter program ready to load: its instructions and the maps it names. Pure."""

from __future__ import annotations

import dataclasses

from .asm import Asm

NF_DROP = 0
NF_ACCEPT = 1
PF = {4: 2, 6: 10}
HOOK_NUMBERS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
BPF_F_NO_PREALLOC = 1


@dataclasses.dataclass(frozen=True)
class MapSpec:
    name: str            # unique within one hook module; also the pin file name
    kind: str            # "hash" | "lpm_trie" | "array" | "percpu_array" | "prog_array" | "ringbuf"
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0       # e.g. BPF_F_NO_PREALLOC (1) for lpm_trie


@dataclasses.dataclass(frozen=True)
class Program:
    name: str                    # <= 15 chars are shown by the kernel; full name kept here
    asm: Asm                     # instructions with symbolic map names and kfunc names
    maps: tuple[MapSpec, ...]    # every map the program references by name
    license: str = "Dual MIT/GPL"
