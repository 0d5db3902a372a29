"""BPF netfilter links: a program attached at (family, hook, priority) in the caller's network
namespace. There is no in-place update; ``attach.py`` swaps programs behind a dispatcher."""

from __future__ import annotations

import struct

from ...bpf.program import ATTACH_NETFILTER, FAMILY, HOOK_NAMES
from . import sys as bpfsys
from .maps import obj_info
from .sys import BpfError, attr, bpf

F_IP_DEFRAG = 1
DEFRAG_MIN_PRIORITY = -400  # NF_IP_PRI_CONNTRACK_DEFRAG: defrag needs a later priority
PRIORITY_MIN, PRIORITY_MAX = -(1 << 31) + 1, (1 << 31) - 2  # INT_MIN and INT_MAX are reserved


def link_create(prog_fd: int, pf: int, hooknum: int, priority: int, defrag: bool = False) -> int:
    """Attach ``prog_fd``; the returned link fd holds the attachment until closed or unpinned."""
    where = f"{FAMILY.get(pf, pf)}/{HOOK_NAMES.get(hooknum, hooknum)} priority {priority}"
    a = attr((0, "I", prog_fd), (8, "I", ATTACH_NETFILTER), (16, "I", pf), (20, "I", hooknum),
             (24, "i", priority), (28, "I", F_IP_DEFRAG if defrag else 0))
    try:
        return bpf(bpfsys.LINK_CREATE, a, f"attach at {where}")
    except BpfError as exc:
        if exc.errno == 16:  # EBUSY
            raise BpfError(f"cannot attach at {where}: another BPF program is attached at the "
                           "same family, hook and priority", exc.errno) from None
        if exc.errno == 34:  # ERANGE
            why = (f"defragmentation needs a priority above {DEFRAG_MIN_PRIORITY}"
                   if defrag and priority <= DEFRAG_MIN_PRIORITY else
                   f"the priority must be within {PRIORITY_MIN}..{PRIORITY_MAX}")
            raise BpfError(f"cannot attach at {where}: {why}", exc.errno) from None
        raise


def link_info(fd: int) -> dict:
    """A netfilter link's ids and place: {id, prog_id, pf, hook, priority, flags}."""
    raw = obj_info(fd, 64)
    _type, link_id, prog_id = struct.unpack_from("<III", raw)
    pf, hook, priority, flags = struct.unpack_from("<IIiI", raw, 16)
    return {"id": link_id, "prog_id": prog_id, "pf": pf, "hook": hook, "priority": priority,
            "flags": flags}
