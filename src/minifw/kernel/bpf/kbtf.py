"""The running kernel's BTF: kfunc ids and struct member offsets, cached per boot.

Parsing /sys/kernel/btf/vmlinux takes ~0.3 s; the few answers programs need are kept in
/run/minifw/btf.json keyed by the boot id and the blob's size (the ids change only with the
kernel, /run is emptied at boot), so a reload pays a JSON read."""

from __future__ import annotations

import contextlib
import json
import os
import threading

from ...bpf.btf import Btf, BtfError, parse
from ...bpf.program import STRUCT_MEMBERS

VMLINUX = "/sys/kernel/btf/vmlinux"
CACHE = "/run/minifw/btf.json"
_lock = threading.Lock()
_memo: dict[str, object] = {}
_btf: list[Btf] = []


def _key() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        return f"{boot}:{os.stat(VMLINUX).st_size}"
    except OSError as exc:
        raise BtfError(f"cannot read the kernel's BTF: {exc}") from exc


def _load_cache(key: str) -> dict:
    try:
        with open(CACHE) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data.get("values", {}) if isinstance(data, dict) and data.get("key") == key else {}


def _save_cache(key: str, values: dict) -> None:
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(CACHE), mode=0o755, exist_ok=True)
        tmp = f"{CACHE}.{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump({"key": key, "values": values}, fh)
        os.replace(tmp, CACHE)


def _vmlinux() -> Btf:
    if not _btf:
        try:
            with open(VMLINUX, "rb") as fh:
                _btf.append(parse(fh.read()))
        except OSError as exc:
            raise BtfError(f"cannot read the kernel's BTF ({VMLINUX}): {exc}") from exc
    return _btf[0]


def _answer(what: str, compute) -> int:
    with _lock:
        if not _memo:
            _memo["key"] = _key()
            _memo.update(_load_cache(_memo["key"]))
        if what not in _memo:
            _memo[what] = compute(_vmlinux())
            _save_cache(_memo["key"], {k: v for k, v in _memo.items() if k != "key"})
        return _memo[what]


def func_id(name: str) -> int:
    """A kernel function's BTF id (the imm of a kfunc call)."""
    return _answer(f"func:{name}", lambda btf: btf.func_id(name))


def member_offset(struct_name: str, member: str) -> int:
    """The byte offset of ``struct_name.member`` in the running kernel."""
    return _answer(f"member:{struct_name}.{member}",
                   lambda btf: btf.member_offset(struct_name, member))


def struct_size(name: str) -> int:
    return _answer(f"size:{name}", lambda btf: btf.struct_size(name))


def kfunc_ids(names) -> dict[str, int]:
    return {name: func_id(name) for name in names}


def offsets(members=STRUCT_MEMBERS) -> dict[str, int]:
    """"struct.member" -> byte offset in the running kernel, for the compiler."""
    return {f"{s}.{m}": member_offset(s, m) for s, m in members}
