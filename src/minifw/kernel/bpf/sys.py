"""The bpf(2) syscall through ctypes: a command number and a ``union bpf_attr`` built as bytes.

Attribute layouts are the ones of include/uapi/linux/bpf.h; each command module packs its own.
"""

from __future__ import annotations

import ctypes
import errno as errnos
import os
import platform
import struct

from ...errors import KernelError

# __NR_bpf
_NR = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361,
       "s390x": 351, "i686": 357}

MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD, OBJ_PIN, OBJ_GET = 5, 6, 7
PROG_TEST_RUN = 10
PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 13, 14, 15
LINK_CREATE = 28
ATTR_SIZE = 160  # larger than any layout used here; the kernel checks the tail is zero

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(KernelError):
    """A bpf(2) call the kernel refused; ``errno`` is its error number."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def _nr() -> int:
    try:
        return _NR[platform.machine()]
    except KeyError:
        raise BpfError(f"no bpf(2) syscall number known for {platform.machine()}") from None


def bpf(cmd: int, attr: ctypes.Array, what: str) -> int:
    """Run one bpf(2) command on ``attr`` (a ctypes buffer the kernel may write back into)."""
    ret = _libc.syscall(_nr(), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(f"{what}: {os.strerror(err)} ({errnos.errorcode.get(err, err)})", err)
    return ret


def attr(*fields: tuple[int, str, int | bytes]) -> ctypes.Array:
    """A zeroed bpf_attr with ``(offset, struct format, value)`` fields packed in."""
    buf = ctypes.create_string_buffer(ATTR_SIZE)
    for off, fmt, value in fields:
        struct.pack_into("<" + fmt, buf, off, value)
    return buf


def addr(buf) -> int:
    """The address of a ctypes buffer, for a bpf_attr's __aligned_u64 pointer fields."""
    return ctypes.addressof(buf) if buf is not None else 0


def close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
