"""BPF maps: create, open a pinned one, read, write, iterate, pin."""

from __future__ import annotations

import ctypes
import os
import struct

from ...bpf.program import F_NO_PREALLOC, MAP_TYPES, MapSpec, kernel_name
from . import sys as bpfsys
from .sys import BpfError, addr, attr, bpf

KINDS = {num: name for name, num in MAP_TYPES.items()}
ANY, NOEXIST, EXIST = 0, 1, 2  # update flags
_PERCPU = {"percpu_array", "percpu_hash"}


def possible_cpus() -> int:
    """The kernel's possible CPUs (a per-CPU value has one slot each, 8-byte aligned)."""
    try:
        with open("/sys/devices/system/cpu/possible") as fh:
            text = fh.read().strip()
    except OSError as exc:
        raise BpfError(f"cannot read the possible CPUs: {exc}") from exc
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


class Map:
    """An open BPF map: its fd and the spec it was made from (or read back from the kernel)."""

    def __init__(self, fd: int, spec: MapSpec):
        self.fd = fd
        self.spec = spec

    # -- lifetime ------------------------------------------------------------------------
    @classmethod
    def create(cls, spec: MapSpec) -> "Map":
        flags = spec.flags
        if spec.kind == "lpm_trie":
            flags |= F_NO_PREALLOC  # the kernel refuses an LPM trie without it
        a = attr((0, "I", MAP_TYPES[spec.kind]), (4, "I", spec.key_size),
                 (8, "I", spec.value_size), (12, "I", spec.max_entries), (16, "I", flags),
                 (28, "16s", kernel_name(spec.name).encode()))
        return cls(bpf(bpfsys.MAP_CREATE, a, f"create map {spec.name!r}"), spec)

    @classmethod
    def open_pinned(cls, path: str) -> "Map":
        fd = obj_get(path)
        try:
            return cls(fd, map_info(fd, os.path.basename(path)))
        except BaseException:
            bpfsys.close(fd)
            raise

    def pin(self, path: str) -> None:
        obj_pin(self.fd, path)

    def close(self) -> None:
        if self.fd >= 0:
            bpfsys.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Map":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- elements ------------------------------------------------------------------------
    def _key(self, key: bytes) -> ctypes.Array:
        if len(key) != self.spec.key_size:
            raise BpfError(f"map {self.spec.name!r}: a key is {self.spec.key_size} bytes, "
                           f"not {len(key)}")
        return ctypes.create_string_buffer(bytes(key), len(key))

    def _value_size(self) -> int:
        if self.spec.kind in _PERCPU:
            return ((self.spec.value_size + 7) // 8 * 8) * possible_cpus()
        return self.spec.value_size

    def update(self, key: bytes, value: bytes, flags: int = ANY) -> None:
        size = self._value_size()
        if len(value) != size:
            raise BpfError(f"map {self.spec.name!r}: a value is {size} bytes, not {len(value)}")
        k, v = self._key(key), ctypes.create_string_buffer(bytes(value), len(value))
        bpf(bpfsys.MAP_UPDATE_ELEM, attr((0, "I", self.fd), (8, "Q", addr(k)),
                                         (16, "Q", addr(v)), (24, "Q", flags)),
            f"update map {self.spec.name!r}")

    def _lookup_raw(self, key: bytes) -> bytes | None:
        k, v = self._key(key), ctypes.create_string_buffer(self._value_size())
        try:
            bpf(bpfsys.MAP_LOOKUP_ELEM, attr((0, "I", self.fd), (8, "Q", addr(k)),
                                             (16, "Q", addr(v))),
                f"look up in map {self.spec.name!r}")
        except BpfError as exc:
            if exc.errno == 2:  # ENOENT
                return None
            raise
        return v.raw

    def lookup(self, key: bytes) -> bytes | None:
        """The value (for a prog_array: the program's id, 4 bytes), or None."""
        raw = self._lookup_raw(key)
        if raw is None or self.spec.kind not in _PERCPU:
            return raw
        return raw[:self.spec.value_size]

    def lookup_percpu(self, key: bytes) -> list[bytes]:
        """One value per possible CPU (per-CPU maps only)."""
        if self.spec.kind not in _PERCPU:
            raise BpfError(f"map {self.spec.name!r} is not per-CPU")
        raw = self._lookup_raw(key)
        if raw is None:
            return []
        step = (self.spec.value_size + 7) // 8 * 8
        return [raw[i:i + self.spec.value_size] for i in range(0, len(raw), step)]

    def delete(self, key: bytes) -> bool:
        k = self._key(key)
        try:
            bpf(bpfsys.MAP_DELETE_ELEM, attr((0, "I", self.fd), (8, "Q", addr(k))),
                f"delete from map {self.spec.name!r}")
        except BpfError as exc:
            if exc.errno == 2:
                return False
            raise
        return True

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        nxt = ctypes.create_string_buffer(self.spec.key_size)
        key = None
        while True:
            try:
                bpf(bpfsys.MAP_GET_NEXT_KEY, attr((0, "I", self.fd), (8, "Q", addr(key)),
                                                  (16, "Q", addr(nxt))),
                    f"list map {self.spec.name!r}")
            except BpfError as exc:
                if exc.errno == 2:  # past the last key
                    return out
                raise
            out.append(nxt.raw)
            key = ctypes.create_string_buffer(nxt.raw, self.spec.key_size)

    def items(self) -> list[tuple[bytes, bytes]]:
        out = []
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:  # deleted meanwhile
                out.append((key, value))
        return out


# -- objects by path and id ------------------------------------------------------------------

def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(os.fsencode(path))
    bpf(bpfsys.OBJ_PIN, attr((0, "Q", addr(p)), (8, "I", fd)), f"pin {path}")


def obj_get(path: str) -> int:
    p = ctypes.create_string_buffer(os.fsencode(path))
    return bpf(bpfsys.OBJ_GET, attr((0, "Q", addr(p))), f"open pinned {path}")


def obj_info(fd: int, size: int) -> bytes:
    info = ctypes.create_string_buffer(size)
    bpf(bpfsys.OBJ_GET_INFO_BY_FD, attr((0, "I", fd), (4, "I", size), (8, "Q", addr(info))),
        "read object info")
    return info.raw


def map_info(fd: int, name: str | None = None) -> MapSpec:
    """The spec of an open map as the kernel knows it (``name`` overrides its 15-char name)."""
    raw = obj_info(fd, 88)
    kind, _id, key_size, value_size, max_entries, flags = struct.unpack_from("<6I", raw)
    kname = raw[24:40].split(b"\0")[0].decode()
    if kind not in KINDS:
        raise BpfError(f"map {name or kname!r} is of type {kind}, which minifw does not use")
    return MapSpec(name or kname, KINDS[kind], key_size, value_size, max_entries, flags)
