"""Kernel hook functions in the kernel: load, attach, pin, swap, remove.

Per network namespace (``kernel.bpf.pins.netns_dir()``): the dispatchers and their links are
``Attachments``' (one per (pf, hook, priority): a swap of its prog_array entry replaces a
program with no gap); each hook file's maps are pinned under ``hooks/<key>-<generation>/``,
where ``minifw hook set`` finds its Addresses maps. A record per file in the state directory
(``hooks/kernel-<key>.json``) says what is attached, for ``status``, ``reload`` and ``down``.

Every program of a file is loaded before the first swap: a file that fails to load changes
nothing. A reload makes fresh maps from the file (counters restart, and ``hook set`` changes
are replaced by the file's contents), swaps each program, then detaches the points the file no
longer uses and unpins the old maps (the old programs go with their last reference).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterable

from ..bpf.program import HOOKS as HOOK_NUMBERS, PF
from ..compile import hooks as hplan
from ..errors import ConfigError, KernelError, MinifwError, StateError
from ..hooks.addresses import LPM_VALUE_SIZE, Addresses, address_entries, lpm_writes
from ..kernel import nft
from ..store.state import write_atomic
from . import hookstate
from .kplace import FAMILIES, ModulePlan, place

RECORD_PREFIX = "kernel-"


def _kernel() -> Any:
    """The BPF kernel edge, imported where used: a queue-only setup never loads ctypes' BPF
    wrappers."""
    from ..kernel.bpf import attach, maps, pins, prog
    return attach, maps, pins, prog


def module_key(file: str) -> str:
    """A pin-directory name for a hook file: its stem (readable) and a hash of its path."""
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in Path(file).stem)[:32]
    return f"{stem}-{hashlib.sha256(os.path.abspath(file).encode()).hexdigest()[:10]}"


# ---- records -------------------------------------------------------------------------------
def record_path(state_dir: Path, file: str) -> Path:
    return hookstate.hooks_dir(state_dir) / f"{RECORD_PREFIX}{module_key(file)}.json"


def records(state_dir: Path) -> list[dict[str, Any]]:
    """The kernel hook records of this state directory; an unreadable one is said, not
    skipped: status must not show a kernel hook as absent while it is attached."""
    out = []
    folder = hookstate.hooks_dir(state_dir)
    for path in sorted(folder.glob(f"{RECORD_PREFIX}*.json")) if folder.is_dir() else ():
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("file"), str):
                raise ValueError("not a kernel hook record")
        except (OSError, ValueError) as exc:
            raise StateError(f"kernel hook record {path} is damaged ({exc}); 'minifw down' "
                             "removes every kernel hook and its record") from exc
        out.append(data)
    return out


def _points(record: dict[str, Any]) -> set[tuple[int, int, int]]:
    return {(PF[f], HOOK_NUMBERS[fn["hook"]], fn["priority"])
            for fn in record.get("functions", []) if fn["where"] == "kernel"
            for f in fn.get("families", FAMILIES)}


# ---- attaching -----------------------------------------------------------------------------
def _fill_maps(plan: ModulePlan, made: dict[str, Any]) -> None:
    """Module Addresses and the compiler's constant maps, written before the first packet."""
    ns = plan.module.namespace
    for p in plan.kernel:
        for kh in p.programs:
            for var, names in kh.address_maps.items():
                value = ns.get(var)
                items = list(value) if isinstance(value, Addresses) else []
                _write_addresses(made, names, items, 0, kh.family)
            for name, entries in kh.initial.items():
                for key, val in entries:
                    made[name].update(key, val)
            if kh.ifnames:  # names resolved at load; a missing device matches nothing
                for slot, ifname in enumerate(kh.ifnames):
                    made["ifindex"].update(struct.pack("<I", slot),
                                           struct.pack("<I", _ifindex(ifname)))


def _ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def _write_addresses(maps: dict[str, Any], names: dict[str, str], items: list[Any],
                     expiry_ns: int, family: int, delete: bool = False) -> int:
    entries = address_entries(items, family, expiry_ns)
    done = 0
    for kind in ("hash", "lpm"):
        name = names.get(f"v{family}_{kind}")
        if name is None or not entries[kind]:
            continue
        m = maps[name]
        if kind == "lpm" and m.spec.value_size == LPM_VALUE_SIZE:
            # a CIDR's effective expiry depends on the CIDRs around it (lpm_writes)
            current = m.items()
            present = {k for k, _ in current}
            if delete:
                done += sum(k in present for k, _ in entries[kind])
            else:
                done += len(entries[kind])
            changes = [(k, None if delete else expiry_ns) for k, _ in entries[kind]]
            for key, value in lpm_writes(current, changes):
                if value is None:
                    m.delete(key)
                else:
                    m.update(key, value)
            continue
        for key, value in entries[kind]:
            if delete:
                done += bool(m.delete(key))
            else:
                # (an LPM trie pinned by an older minifw holds the bare expiry)
                m.update(key, value if kind == "hash" else value[:m.spec.value_size])
                done += 1
    return done


def attach_module(plan: ModulePlan, state_dir: Path, pin_root: str | None = None,
                  pin: bool = True, hold: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load, attach (swapping any program at the same points) and record the kernel functions
    of ``plan``. Returns the record. ``pin=False`` (``minifw run``): the maps are not pinned
    and no record is written; the dispatchers still are (they are what holds a link).
    ``hold``: the maps are left open in it (the caller reads the ringbuf) instead of closed."""
    attach, maps, pins, prog = _kernel()
    root = pin_root or pins.netns_dir()
    old = _read_one(state_dir, plan.file) if pin else None
    att = attach.Attachments(root)
    check_points(plan, att, _points(old) if old else set())
    key = module_key(plan.file)
    generation = (old or {}).get("generation", 0) + 1
    map_dir = os.path.join(root, "hooks", f"{key}-{generation}")
    made: dict[str, Any] = {}
    loaded = []
    try:
        for p in plan.kernel:
            for kh in p.programs:
                for spec in kh.maps:
                    if spec.name not in made:
                        made[spec.name] = maps.Map.create(spec)
        _fill_maps(plan, made)
        for p in plan.kernel:
            for kh in p.programs:
                loaded.append((kh, _load(prog, kh, made, plan.file)))
        if pin and made:
            os.makedirs(map_dir, exist_ok=True)
            for name, m in made.items():
                m.pin(os.path.join(map_dir, name))
        for kh, lp in loaded:
            att.attach(PF[kh.family], HOOK_NUMBERS[kh.hook], kh.priority, lp.fd)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(map_dir)
        raise
    finally:
        for _, lp in loaded:
            lp.close()   # the prog_array entry holds the program now
        if hold is not None:
            hold.update(made)
        else:
            for m in made.values():
                m.close()    # the programs and the pins hold the maps
    record = _record(plan, key, generation, map_dir if pin else None)
    if old:
        gone = _points(old) - _points(record)
        for pf, hooknum, prio in sorted(gone):
            with contextlib.suppress(MinifwError):
                att.detach(pf, hooknum, prio)
        if old.get("map_dir") and old["map_dir"] != map_dir:
            with contextlib.suppress(OSError):
                shutil.rmtree(old["map_dir"])
    if pin:
        _write_record(state_dir, record)
    return record


def _write_record(state_dir: Path, record: dict[str, Any]) -> None:
    hookstate.made_hooks_dir(state_dir)
    write_atomic(record_path(state_dir, record["file"]), json.dumps(record, indent=1) + "\n")


def kernel_points(plan: ModulePlan) -> list[tuple[str, int, str]]:
    return [(p.spec.hook.value, p.spec.priority,
             f"kernel hook function '{p.spec.name}' ({plan.file})") for p in plan.kernel]


def check_points(plan: ModulePlan, att: Any, own: set[tuple[int, int, int]]) -> None:
    """Refuse a kernel function at a (hook, priority) that a chain of ours (rules, policy,
    a queue hook) or another BPF hook already holds: their order would be undefined, and a
    dispatcher there would silently swap the other file's program."""
    ours = kernel_points(plan)
    try:
        chains = nft.items(nft.query("list chains"), "chain")
    except KernelError:
        chains = []
    problems = hplan.clashes(ours, hplan.declarative_points(chains) + hplan.hook_points(chains))
    numbers = {v: k for k, v in HOOK_NUMBERS.items()}
    taken = [(numbers[e["hook"]], e["priority"], f"the BPF hook {e.get('name') or 'program'} "
              "attached there") for e in att.entries()
             if (e["pf"], e["hook"], e["priority"]) not in own]
    problems += hplan.clashes(ours, taken)
    if problems:
        raise ConfigError(problems[0], file=plan.file)


def unrecorded_points(state_dir: Path) -> list[tuple[str, int, str]]:
    """(hook, priority, label) of the BPF hooks attached in this network namespace that no
    record of ``up`` owns: a ``minifw run``'s (or one that a killed run left attached, which
    still filters). A rule chain or NAT at their point would run in an undefined order with
    them. Nothing is imported or mounted where no BPF hook was ever pinned here."""
    from ..kernel.bpf.pins import current_dir
    directory = current_dir()
    if directory is None:
        return []
    owned: set[tuple[int, int, int]] = set()
    folder = hookstate.hooks_dir(state_dir)
    for path in sorted(folder.glob(f"{RECORD_PREFIX}*.json")) if folder.is_dir() else ():
        try:
            owned |= _points(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # damaged: its points count as foreign, the safe side
    attach, _, _, _ = _kernel()
    numbers = {v: k for k, v in HOOK_NUMBERS.items()}
    out: dict[tuple[str, int], str] = {}
    for e in attach.Attachments(directory).entries():
        if (e["pf"], e["hook"], e["priority"]) in owned or e["hook"] not in numbers:
            continue
        out.setdefault((numbers[e["hook"]], e["priority"]),
                       f"the BPF hook {e.get('name') or 'program'} attached there (not by "
                       "'minifw up': a 'minifw run', or one left attached)")
    return [(h, p, label) for (h, p), label in out.items()]


def _load(prog: Any, kh: Any, made: dict[str, Any], file: str) -> Any:
    try:
        return prog.load(kh.program, {s.name: made[s.name] for s in kh.program.maps})
    except prog.VerifierError as exc:
        # the verifier's complaint, at the Python line it came from
        from ..compile.bpfhook import explain_verifier
        raise ConfigError(explain_verifier(exc.log, kh.program.asm.lines(), file),
                          file=file) from exc


def _unchanged(state_dir: Path, plan: ModulePlan) -> bool:
    old = _read_one(state_dir, plan.file)
    if old is None or old.get("digest") != hookstate.file_digest(plan.file):
        return False
    if old.get("map_dir") and not os.path.isdir(old["map_dir"]):
        return False  # its pins went (a reboot, a hand's rm): attach again
    return bool(old.get("map_dir")) == bool(plan.kernel)


def _record(plan: ModulePlan, key: str, generation: int, map_dir: str | None) -> dict[str, Any]:
    functions = []
    address_maps: dict[str, dict[str, str]] = {}
    counters: dict[str, str] = {}
    for p in plan.placed:
        fn = {"name": p.spec.name, "hook": p.spec.hook.value, "priority": p.spec.priority,
              "where": p.choice.where, "reason": p.choice.reason}
        if p.programs:
            fn["families"] = [kh.family for kh in p.programs]
            fn["stats"] = f"{p.spec.name}_stats"
            fn["logs"] = [[lf.id, lf.fn, [list(x) for x in lf.parts], lf.line]
                          for kh in p.programs[:1] for lf in kh.logs]
            for kh in p.programs:
                for var, names in kh.address_maps.items():
                    address_maps.setdefault(var, {}).update(names)
                for var in kh.counters:
                    counters[var] = var
        functions.append(fn)
    return {"file": plan.file, "key": key, "generation": generation, "map_dir": map_dir,
            "digest": hookstate.file_digest(plan.file),
            "attached": time.time(), "functions": functions, "address_maps": address_maps,
            "counters": counters}


def _read_one(state_dir: Path, file: str) -> dict[str, Any] | None:
    path = record_path(state_dir, file)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"kernel hook record {path} is damaged ({exc}); 'minifw down' "
                         "removes every kernel hook and its record") from exc


# ---- up / reload / down -------------------------------------------------------------------
def apply(plans: Iterable[ModulePlan], state_dir: Path, keep: Iterable[str] = (),
          force: bool = False) -> list[str]:
    """Bring the kernel hooks in line with the config's [[hook]] files: attach (or swap) each
    file's kernel functions, then remove those of files neither planned nor in ``keep``.
    A file attached from the same contents is left as it runs (its counts go on), unless
    ``force`` (``reload --restart-hooks``). Returns one sentence per file that failed (its
    previous programs, if any, stay)."""
    plans = list(plans)
    wanted = {p.file for p in plans} | set(keep)
    failed = []
    for plan in plans:
        if not force and _unchanged(state_dir, plan):
            continue
        if not plan.kernel:  # only the choices, for status
            remove_file(state_dir, plan.file)
            _write_record(state_dir, _record(plan, module_key(plan.file), 0, None))
            continue
        try:
            attach_module(plan, state_dir)
        except MinifwError as exc:
            failed.append(f"{plan.file}: kernel hooks not attached: {exc}")
    for rec in records(state_dir):
        if rec["file"] not in wanted:
            remove_file(state_dir, rec["file"])
    return failed


def remove_file(state_dir: Path, file: str, pin_root: str | None = None) -> None:
    rec = _read_one(state_dir, file)
    if rec is None:
        return
    if _points(rec):
        attach, _, pins, _ = _kernel()
        att = attach.Attachments(pin_root or pins.netns_dir())
        for pf, hooknum, prio in sorted(_points(rec)):
            with contextlib.suppress(MinifwError):
                att.detach(pf, hooknum, prio)
    if rec.get("map_dir"):
        with contextlib.suppress(OSError):
            shutil.rmtree(rec["map_dir"])
    with contextlib.suppress(FileNotFoundError):
        record_path(state_dir, file).unlink()


def clear(state_dir: Path) -> int:
    """``down``, rollback to nothing, failsafe: every kernel hook of this network namespace
    goes, pins included, and every record. Returns how many files had kernel hooks."""
    folder = hookstate.hooks_dir(state_dir)
    paths = list(folder.glob(f"{RECORD_PREFIX}*.json")) if folder.is_dir() else []
    attach, _, pins, _ = _kernel()
    if not any(_points(r) for r in _readable(paths)) and pins.current_dir() is None:
        # nothing attached here (no record, no dispatcher a killed `minifw run` left): no
        # bpffs to mount
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return 0
    root = pins.netns_dir()
    attach.Attachments(root).clear()
    with contextlib.suppress(OSError):
        shutil.rmtree(os.path.join(root, "hooks"))
    with contextlib.suppress(OSError):  # (Attachments.clear took it if nothing else was left)
        os.rmdir(os.path.join(root, pins.marker()))
    with contextlib.suppress(OSError):
        os.rmdir(root)
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return len(paths)


def _readable(paths: list[Path]) -> list[dict[str, Any]]:
    """Records that can be read; a damaged one counts as attached (``down`` clears all)."""
    out = []
    for path in paths:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            out.append({"functions": [{"where": "kernel", "hook": "input", "priority": 0}]})
    return out


def plans_for(files: Iterable[str]) -> list[ModulePlan]:
    return [place(f) for f in files]


# ---- reading back --------------------------------------------------------------------------
_U64 = struct.Struct("<Q")


def _percpu_sum(m: Any, offset: int) -> int:
    """The sum over CPUs of the u64 at ``offset`` of entry 0 (0 past the value's end: stats
    pinned by a minifw that had no such slot)."""
    return sum(_U64.unpack_from(v, offset)[0] if len(v) >= offset + 8 else 0
               for v in m.lookup_percpu(struct.pack("<I", 0)))


def function_counts(rec: dict[str, Any]) -> dict[str, dict[str, int]]:
    """packets, drops and log lines lost (no room in the ringbuf: no reader) of each kernel
    function of a record (both families), from its pinned per-CPU stats array; a map that
    cannot be read gives no entry."""
    _, maps, _, _ = _kernel()
    out = {}
    for fn in rec.get("functions", []):
        if fn["where"] != "kernel" or not rec.get("map_dir"):
            continue
        with contextlib.suppress(MinifwError, OSError):
            m = maps.Map.open_pinned(os.path.join(rec["map_dir"], fn["stats"]))
            try:
                # one entry: u64 packets @0, drops @8, log lines lost @16
                out[fn["name"]] = {"packets": _percpu_sum(m, 0), "drops": _percpu_sum(m, 8),
                                   "lost": _percpu_sum(m, 16)}
            finally:
                m.close()
    return out


def counter_values(rec: dict[str, Any]) -> dict[str, int]:
    """The module-level Counters of a record's file (per-CPU arrays of one u64)."""
    _, maps, _, _ = _kernel()
    out = {}
    for var, name in rec.get("counters", {}).items():
        with contextlib.suppress(MinifwError, OSError):
            m = maps.Map.open_pinned(os.path.join(rec["map_dir"], name))
            try:
                out[var] = _percpu_sum(m, 0)
            finally:
                m.close()
    return out


# ---- minifw hook set -----------------------------------------------------------------------
def hook_set(state_dir: Path, file: str, name: str, op: str, addrs: list[str],
             timeout: float | None = None) -> int:
    """Add or delete addresses of the module-level Addresses ``name`` of the attached hook file
    ``file``, in its pinned maps, while the programs run. Returns how many entries changed."""
    if op not in ("add", "del"):
        raise ConfigError(f"hook set: the operation is 'add' or 'del', not {op!r}.")
    if timeout is not None and (op != "add" or not timeout > 0):
        raise ConfigError("hook set: --timeout takes a positive number of seconds, with add.")
    rec = _read_one(state_dir, os.path.abspath(file))
    if rec is None or not rec.get("map_dir"):
        raise StateError(f"{file} has no kernel hook functions attached by 'minifw up'.")
    names = rec.get("address_maps", {}).get(name)
    if names is None:
        known = ", ".join(sorted(rec.get("address_maps", {}))) or "none"
        raise ConfigError(f"{file} has no Addresses named {name!r} that its kernel functions "
                          f"use (those it has: {known}).")
    Addresses(*addrs)  # refuses what is no address or network, before any map changes
    # bpf_ktime_get_ns() is CLOCK_MONOTONIC, as time.monotonic_ns() on Linux
    expiry = time.monotonic_ns() + int(timeout * 1e9) if timeout else 0
    _, maps, _, _ = _kernel()
    opened = {}
    try:
        for map_name in names.values():
            opened[map_name] = maps.Map.open_pinned(os.path.join(rec["map_dir"], map_name))
        return sum(_write_addresses(opened, names, list(addrs), expiry, fam, op == "del")
                   for fam in FAMILIES)
    finally:
        for m in opened.values():
            m.close()
