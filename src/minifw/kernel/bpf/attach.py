"""Programs attached behind a dispatcher, pinned so they outlive the process.

Per (family, hook, priority) one directory under the namespace's pin directory holds two pins:
``link`` (the netfilter link of the dispatcher) and ``progs`` (its one-entry prog_array). The
first attach creates them; every later one replaces progs[0], which the kernel does atomically,
so a reload drops no packet. The prog_array must stay pinned: when its last user reference
goes, the kernel empties it and the dispatcher would accept everything."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import time

from ...bpf.dispatch import PROGS, dispatcher
from ...bpf.program import FAMILY, HOOK_NAMES
from . import sys as bpfsys
from .link import link_create, link_info
from .maps import Map, obj_get, obj_pin
from .pins import MARK
from .prog import load, prog_name
from .sys import BpfError, attr, bpf

_DIR = re.compile(r"^(\d+)_(\d+)_(-?\d+)$")
_KEY0 = struct.pack("<I", 0)


def _fd_by_id(prog_id: int) -> int:
    return bpf(bpfsys.PROG_GET_FD_BY_ID, attr((0, "I", prog_id)), f"open program {prog_id}")


def _wait_gone(prog_id: int, timeout: float = 2.0) -> bool:
    """Wait until program ``prog_id`` is freed: the kernel drops its id only after the link
    that held it has unregistered its netfilter hook."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            bpfsys.close(_fd_by_id(prog_id))
        except BpfError as exc:
            if exc.errno == 2:  # ENOENT
                return True
            raise
        time.sleep(0.002)
    return False


class Attachments:
    """The dispatchers pinned under ``pin_dir`` (one network namespace's directory): attach,
    swap, list, detach. Attach and detach must run in that network namespace."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir

    def _dir(self, pf: int, hook: int, priority: int) -> str:
        if pf not in FAMILY or hook not in HOOK_NAMES:
            raise BpfError(f"no netfilter family {pf} with hook {hook}")
        return os.path.join(self.pin_dir, f"{pf}_{hook}_{priority}")

    @contextlib.contextmanager
    def _locked(self):
        """One attach or detach at a time per namespace, across processes (a daemon's reload
        and a `minifw run`): bpffs holds no regular files, so the directory itself is locked."""
        try:
            os.makedirs(self.pin_dir, mode=0o700, exist_ok=True)
            fd = os.open(self.pin_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise BpfError(f"cannot open the pin directory {self.pin_dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def attach(self, pf: int, hook: int, priority: int, prog_fd: int,
               defrag: bool = False) -> None:
        """Run ``prog_fd`` at (pf, hook, priority): a swap when a dispatcher is there already."""
        with self._locked():
            try:
                self._attach(pf, hook, priority, prog_fd, defrag)
            except OSError as exc:  # the pin directory: full, read-only, removed under us
                raise BpfError(f"cannot attach under {self.pin_dir}: {exc}") from exc

    def _attach(self, pf: int, hook: int, priority: int, prog_fd: int, defrag: bool) -> None:
        where = self._dir(pf, hook, priority)
        if os.path.exists(os.path.join(where, "link")):
            with Map.open_pinned(os.path.join(where, "progs")) as progs:
                progs.update(_KEY0, struct.pack("<I", prog_fd))
            return
        self._remove(where)  # pins a crash left half made
        os.makedirs(where, mode=0o700, exist_ok=True)
        try:
            with contextlib.ExitStack() as stack:
                progs = stack.enter_context(Map.create(PROGS))
                # the entry first: from its first packet the dispatcher runs the real program
                progs.update(_KEY0, struct.pack("<I", prog_fd))
                disp = stack.enter_context(load(dispatcher(), {PROGS.name: progs}))
                link = link_create(disp.fd, pf, hook, priority, defrag)
                stack.callback(bpfsys.close, link)
                progs.pin(os.path.join(where, "progs"))
                obj_pin(link, os.path.join(where, "link"))
        except BaseException:
            self._remove(where)
            raise

    def _remove(self, where: str) -> None:
        for name in ("link", "progs"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(where, name))
        with contextlib.suppress(OSError):
            os.rmdir(where)

    def detach(self, pf: int, hook: int, priority: int) -> bool:
        """Remove the dispatcher at (pf, hook, priority); False if none was there. Returns
        once the hook is unregistered (the kernel frees a link in a work item, later), unless
        another process still holds the link's fd."""
        with self._locked():
            return self._detach(pf, hook, priority)

    def _detach(self, pf: int, hook: int, priority: int) -> bool:
        where = self._dir(pf, hook, priority)
        dispatcher_id = None
        with contextlib.suppress(BpfError):
            link = obj_get(os.path.join(where, "link"))
            try:
                dispatcher_id = link_info(link)["prog_id"]
            finally:
                bpfsys.close(link)
        self._remove(where)
        if dispatcher_id is not None:
            _wait_gone(dispatcher_id)
        return dispatcher_id is not None

    def entries(self) -> list[dict]:
        """One dict per dispatcher: pf, hook, priority, the running program's id and name
        (None if the entry is empty), and the link's id."""
        out = []
        try:
            names = sorted(os.listdir(self.pin_dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BpfError(f"cannot list {self.pin_dir}: {exc}") from exc
        for name in names:
            m = _DIR.match(name)
            if not m or not os.path.exists(os.path.join(self.pin_dir, name, "link")):
                continue
            pf, hook, priority = (int(g) for g in m.groups())
            entry = {"pf": pf, "hook": hook, "priority": priority, "prog_id": None,
                     "name": None, "link_id": None}
            with Map.open_pinned(os.path.join(self.pin_dir, name, "progs")) as progs:
                value = progs.lookup(_KEY0)
            if value is not None:
                entry["prog_id"] = struct.unpack("<I", value)[0]
                with contextlib.suppress(BpfError):  # unloaded meanwhile
                    fd = _fd_by_id(entry["prog_id"])
                    try:
                        entry["name"] = prog_name(fd)
                    finally:
                        bpfsys.close(fd)
            link = obj_get(os.path.join(self.pin_dir, name, "link"))
            try:
                entry["link_id"] = link_info(link)["id"]
            finally:
                bpfsys.close(link)
            out.append(entry)
        return out

    def clear(self) -> int:
        """Detach everything pinned here (``down``), and remove the directory; the count."""
        count = 0
        for entry in self.entries():
            count += self.detach(entry["pf"], entry["hook"], entry["priority"])
        with contextlib.suppress(OSError):
            for name in os.listdir(self.pin_dir):  # half-made directories of a crash
                if _DIR.match(name):
                    self._remove(os.path.join(self.pin_dir, name))
                elif name.startswith(MARK):  # the namespace's marker (pins.py)
                    os.rmdir(os.path.join(self.pin_dir, name))
            os.rmdir(self.pin_dir)
        return count
