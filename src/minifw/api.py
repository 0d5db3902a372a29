"""The public Python API: ``Firewall``, one instance of minifw (one state directory).

    from minifw import Firewall
    fw = Firewall(state_dir="/var/lib/minifw")
    fw.up("/etc/minifw/minifw.toml")
    fw.ban("198.18.7.7", timeout="10m")
    print(fw.status().loaded)

Every method returns a typed, frozen result (``minifw.app.results``) whose ``to_json()`` is
what the CLI's ``--json`` prints, and raises only ``minifw.errors.MinifwError`` and its
subclasses. The CLI is a thin layer over this class. Operations that touch the kernel need
root (CAP_NET_ADMIN) in the network namespace they run in; ``check`` and ``explain(config=...)``
read files only. The operation modules load on first use, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import os
import sys
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Iterable, Mapping, TypeVar

    T = TypeVar("T")

from .errors import MinifwError, StateError

if TYPE_CHECKING:
    from .app.results import (
        Banned, CaptureSummary, Checked, Confirmed, Explained, Flushed, Imported, Loaded,
        Recovered, RolledBack, RuleAdded, RuleDeleted, RuleListing, SetPage, SetSummary,
        Status, Unbanned, Unloaded,
    )
    from .app.khooks import HookSetDone
    from .app.nat import NatService
    from .app.results.nat import NatAdded, NatDeleted, NatListing
    from .app.rules import Service
    from .app.sets import SetService

__all__ = ["Firewall"]

PROBE_KEYS = ("proto", "src", "dst", "sport", "dport", "iif", "oif", "path", "state",
              "icmp_type")


def _foreign(exc: BaseException) -> MinifwError | None:
    """A foreign error that escaped the edges, as one of the tree (None: a bug, left as is)."""
    if isinstance(exc, OSError):
        from .errors import NEED_ROOT
        what = exc.strerror or str(exc) or type(exc).__name__
        if exc.filename is not None:
            what = f"{exc.filename}: {what}"
        return StateError(f"{what}; {NEED_ROOT}" if isinstance(exc, PermissionError) else what)
    # sqlite3's C core (the set record's, and home of sqlite3's errors); if it is not
    # imported, the error cannot be one of its own
    sqlite3 = sys.modules.get("_sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        return StateError(f"the set record failed: {exc}")
    if isinstance(exc, RecursionError):
        return MinifwError("the input is nested too deeply")
    if isinstance(exc, UnicodeError):
        return MinifwError(f"the input is not valid text: {exc}")
    return None


def _in_tree(fn: Callable[..., T]) -> Callable[..., T]:
    """Raise only from minifw's exception tree: wrap what slipped past an edge."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except MinifwError:
            raise
        except Exception as exc:
            mapped = _foreign(exc)
            if mapped is None:
                raise
            raise mapped from exc
    return wrapper


def _duration(timeout: str | int | None) -> str | None:
    """Seconds (an int) or a duration text such as ``"10m"``."""
    if isinstance(timeout, int) and not isinstance(timeout, bool):
        return f"{timeout}s"
    return timeout


MAX_CONFIRM = 86400  # a day: longer is a typo, not a confirmation window


def _confirm(seconds: int | None) -> int | None:
    """``confirm=``: None, or whole seconds from 1 to a day."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) \
            or not 1 <= seconds <= MAX_CONFIRM:
        from .errors import ConfigError
        raise ConfigError(f"{seconds!r} is not a confirmation window: give whole seconds from 1 "
                          f"to {MAX_CONFIRM}", file="--confirm")
    return seconds


def _elements(elements: str | Iterable[str]) -> list[str]:
    return [elements] if isinstance(elements, str) else list(elements)


class Firewall:
    """One minifw instance: its state directory and the network namespace the process is in.

    ``state_dir``: defaults to ``$MINIFW_STATE_DIR``, else ``/var/lib/minifw``."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None):
        from .store.state import state_dir_name

        # a str inside (pathlib is no part of a ban's start-up); a Path for users, on demand
        self._state_dir = state_dir_name(str(state_dir) if state_dir else None)

    @functools.cached_property
    def state_dir(self) -> Path:
        """This instance's state directory."""
        from pathlib import Path
        return Path(self._state_dir)

    def __repr__(self) -> str:
        return f"Firewall(state_dir={self._state_dir!r})"

    # The operation modules, loaded on first use: `ban` needs none of the rule machinery.
    @functools.cached_property
    def _rules(self) -> "Service":
        from .app.rules import Service
        return Service(self.state_dir)

    @property
    def _sets(self) -> "SetService":
        from .app.sets import SetService
        return SetService(self._state_dir)  # fresh each call: it counts its kernel time

    # ---- whole ruleset ---------------------------------------------------------------------
    @_in_tree
    def check(self, config: str | os.PathLike[str] | None = None, *,
              guard: Iterable[str] | None = None) -> "Checked":
        """Validate a config (and its [[hook]] files) and build what a load would send,
        without applying it. ``config`` defaults to /etc/minifw/minifw.toml. The lockout
        guard's findings on it are in ``guard``, the lint's in ``lint`` (never refused here)."""
        return self._rules.check(_path(config), guard=_guard(guard, True))

    @_in_tree
    def up(self, config: str | os.PathLike[str] | None = None, *,
           guard: Iterable[str] | None = None, force: bool = False,
           confirm: int | None = None, strict: bool = False) -> "Loaded":
        """Load the config into the kernel, start its [[hook]] runners. Idempotent.
        ``config`` defaults to the loaded one, else /etc/minifw/minifw.toml. The lint's
        findings are warnings; ``strict`` refuses them (ConfigError, nothing changed). With
        minifw not loaded (as at boot), a bad config loads the last good ruleset instead (or
        nothing) and raises ``FailsafeError``; ``status().failsafe`` reports it.
        The lockout guard refuses (LockoutError) a ruleset that would cut a protected
        connection (SSH_CONNECTION, sessions to sshd, ``guard`` "ADDR:PORT" peers) unless
        ``force``; the same holds for reload, add, delete, ban, unban and import_set.
        ``confirm``: seconds after which the change is rolled back unless ``confirm()`` runs
        (this holds for every method that takes it)."""
        return self._rules.up(_path(config), guard=_guard(guard, force), confirm=_confirm(confirm),
                              strict=strict)

    @_in_tree
    def down(self) -> "Unloaded":
        """Remove table inet minifw and stop every hook runner of this state directory."""
        return self._rules.down()

    @_in_tree
    def reload(self, config: str | os.PathLike[str] | None = None,
               restart_hooks: bool = False, *, guard: Iterable[str] | None = None,
               force: bool = False, confirm: int | None = None,
               strict: bool = False) -> "Loaded":
        """Replace the live ruleset atomically from ``config`` (default: the loaded one);
        ``strict`` as for ``up``."""
        return self._rules.reload(_path(config), restart_hooks=restart_hooks,
                                  guard=_guard(guard, force), confirm=_confirm(confirm),
                                  strict=strict)

    @_in_tree
    def confirm(self) -> "Confirmed":
        """Keep the change made with ``confirm=``: an add/delete's config file is written now."""
        return self._rules.confirm()

    @_in_tree
    def rollback(self) -> "RolledBack":
        """Undo the change made with ``confirm=`` at once: the ruleset, the sets, the state."""
        return self._rules.rollback()

    # ---- rules -----------------------------------------------------------------------------
    @_in_tree
    def add(self, rule: Mapping[str, Any] | None = None, /, *, position: int | None = None,
            runtime: bool = False, guard: Iterable[str] | None = None, force: bool = False,
            confirm: int | None = None, **fields: Any) -> "RuleAdded":
        """Add one rule, given as a dict of its TOML keys and/or as keywords
        (``add(id="ssh", proto="tcp", dport=22, action="accept")``). ``position``: its
        0-based place within its chain (default: last). ``runtime``: leave the config file
        as it is."""
        merged = {**(rule or {}), **fields}
        if position is not None and (isinstance(position, bool) or position < 0):
            from .errors import RuleError
            raise RuleError(f"{position!r} is not a position: give 0 or more",
                            field="position", file="minifw add")
        return self._rules.add(merged, position, runtime, guard=_guard(guard, force),
                               confirm=_confirm(confirm))

    @_in_tree
    def delete(self, rule_id: str, runtime: bool = False, *,
               guard: Iterable[str] | None = None, force: bool = False,
               confirm: int | None = None) -> "RuleDeleted":
        """Delete one rule by id (from the config file too, unless ``runtime``)."""
        return self._rules.delete(rule_id, runtime, guard=_guard(guard, force),
                                  confirm=_confirm(confirm))

    # ---- reads -----------------------------------------------------------------------------
    @_in_tree
    def status(self) -> "Status":
        """What is loaded, the base chains in the kernel, sets, hook runners and warnings.
        ``status().in_force`` is False where the CLI's ``status`` exits 1."""
        return self._rules.status()

    @_in_tree
    def list(self) -> "RuleListing":
        """The live rules in evaluation order, with their counters."""
        return self._rules.list_rules()

    # ---- NAT ([[nat]] entries; app/nat.py) -----------------------------------------------------
    @property
    def _nat(self) -> "NatService":
        from .app.nat import NatService
        return NatService(self._rules)

    @_in_tree
    def nat_add(self, entry: Mapping[str, Any] | None = None, /, *, runtime: bool = False,
                **fields: Any) -> "NatAdded":
        """Add one [[nat]] entry live, last in its chain (``nat_add(kind="masquerade",
        oif="wan0")``); saved to the config file unless ``runtime``."""
        return self._nat.add({**(entry or {}), **fields}, runtime)

    @_in_tree
    def nat_delete(self, nat_id: str, runtime: bool = False) -> "NatDeleted":
        """Delete one [[nat]] entry by id (from the config file too, unless ``runtime``)."""
        return self._nat.delete(nat_id, runtime)

    @_in_tree
    def nat_list(self) -> "NatListing":
        """The live [[nat]] entries with their counters (first packets of flows)."""
        return self._nat.list()

    @_in_tree
    def hook_set(self, file: str | os.PathLike[str], name: str, op: str,
                 addrs: str | Iterable[str], timeout: float | None = None) -> "HookSetDone":
        """Add (``op="add"``, for ``timeout`` seconds if given) or delete (``"del"``)
        addresses and CIDRs of the module-level ``Addresses`` ``name`` of a [[hook]] file
        whose functions run in the kernel: its maps change while they run, no reload."""
        from .app import khooks
        return khooks.hook_set(self.state_dir, os.path.abspath(os.fspath(file)), name, op,
                               _elements(addrs), timeout)

    # ---- sets ------------------------------------------------------------------------------
    @_in_tree
    def ban(self, elements: str | Iterable[str], timeout: str | int | None = None,
            set: str = "blocked", *, guard: Iterable[str] | None = None,
            force: bool = False, confirm: int | None = None) -> "Banned":
        """Add addresses or CIDRs to a set (``blocked``, the default, is dropped at
        prerouting). ``timeout``: seconds or a duration such as ``"10m"``."""
        return self._sets.ban(_elements(elements), _duration(timeout), set,
                              guard=_guard(guard, force), confirm=_confirm(confirm))

    @_in_tree
    def unban(self, elements: str | Iterable[str], set: str = "blocked", *,
              guard: Iterable[str] | None = None, force: bool = False,
              confirm: int | None = None) -> "Unbanned":
        """Remove addresses or CIDRs from a set; absent ones are reported, not refused."""
        return self._sets.unban(_elements(elements), set, guard=_guard(guard, force),
                                confirm=_confirm(confirm))

    @_in_tree
    def import_set(self, name: str, file: str | os.PathLike[str], skip_invalid: bool = False,
                   timeout: str | int | None = None, *, guard: Iterable[str] | None = None,
                   force: bool = False, confirm: int | None = None) -> "Imported":
        """Add one address or CIDR per line of ``file`` to set ``name``."""
        return self._sets.import_file(name, os.fspath(file), skip_invalid, _duration(timeout),
                                      guard=_guard(guard, force), confirm=_confirm(confirm))

    @_in_tree
    def list_set(self, name: str, page: int = 1, page_size: int = 100) -> "SetPage":
        """One page (counted from 1) of a set's elements, with their remaining timeouts."""
        return self._sets.list_set(name, page - 1, page_size)

    @_in_tree
    def flush_set(self, name: str) -> "Flushed":
        """Remove every element of a set."""
        return self._sets.flush(name)

    @_in_tree
    def recover_sets(self) -> "Recovered":
        """Rebuild the set record (sets.db) from the kernel's sets."""
        return self._sets.recover()

    @_in_tree
    def sets(self) -> list["SetSummary"]:
        """Every named set with its element counts."""
        return self._sets.summary()

    # ---- explain ---------------------------------------------------------------------------
    @_in_tree
    def explain(self, *, config: str | os.PathLike[str] | None = None,
                pcap: str | os.PathLike[str] | None = None, run_hooks: bool = False,
                direction: str | None = None, iface: str | None = None,
                proto: str | None = None, src: str | None = None, dst: str | None = None,
                sport: int | str | None = None, dport: int | str | None = None,
                iif: str | None = None, oif: str | None = None, path: str | None = None,
                state: str | None = None,
                icmp_type: int | str | None = None) -> "Explained | CaptureSummary":
        """Which rule decides a packet, with the trace of every rule it met.

        The packet is described by keywords (``proto``, ``src``, ``dst``, ``dport``, ...;
        ``path`` is in, forward or out). The ruleset is ``config`` if given, else the live
        one. With ``pcap``, every packet of a capture is explained and summed up instead
        (only ``path``, ``iif``, ``oif``, ``state``, ``direction`` (in, out, all) and
        ``iface`` (the capture interface's name or MAC) apply then)."""
        from .app import explain as ex
        from .app.results import Explained
        from .engine.explain import Probe
        from .errors import PacketError

        source = ex.ruleset_source(self.state_dir, _path(config), run_hooks)
        if pcap is not None:
            if run_hooks:
                raise PacketError("--run-hooks: explains one packet at a time; leave it out "
                                  "with --pcap")
            given = {"proto": proto, "src": src, "dst": dst, "sport": sport, "dport": dport,
                     "icmp_type": icmp_type}
            extra = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
            if extra:
                raise PacketError(f"{extra[0]}: with --pcap, the packets come from the "
                                  "capture; only --path, --iif, --oif and --state apply")
            kind = path or "in"
            if kind not in ("in", "forward", "out"):
                raise PacketError(f"--path: unknown path {kind!r}; expected in, forward or out")
            way = direction or "in"
            if way not in ("in", "out", "all"):
                raise PacketError(f"--direction: {way!r}; expected in, out or all")
            if kind == "in" and oif is not None and way == "in":
                raise PacketError("--oif: a packet to this host (--path in) has no output "
                                  "interface")
            if kind == "out" and iif is not None:
                raise PacketError("--iif: a packet sent by this host (--path out) has no "
                                  "input interface")
            import dataclasses
            summary = ex.explain_capture(source, os.fspath(pcap), path_kind=kind, iif=iif,
                                         oif=oif, state=state, direction=way, iface=iface,
                                         path_given=path is not None)
            warnings = ex.foreign_chains(ex.path_hooks(kind), summary.versions)
            return dataclasses.replace(summary, warnings=tuple(warnings))
        for flag, value in (("--direction", direction), ("--iface", iface)):
            if value is not None:
                raise PacketError(f"{flag}: applies to --pcap captures only")
        probe = Probe.describe(proto=proto, src=src, dst=dst, path=path, sport=sport,
                               dport=dport, icmp_type=icmp_type, iif=iif, oif=oif, state=state)
        logs: list[str] = []
        probe, decision, route = ex.routed(source, probe, path_given=path is not None,
                                           oif_given=oif is not None)
        result = ex.explain_one(source, probe, run_hooks, logs, decision)
        warnings = ex.foreign_chains(ex.path_hooks(probe.path), [probe.version])
        return Explained(explanation=result, ruleset=source.where, warnings=tuple(warnings),
                         hook_logs=tuple(logs), route=route)


def _guard(guard: Iterable[str] | None, force: bool):
    """The lockout guard's request: ``guard`` lists extra "ADDR:PORT" peers to protect;
    ``force`` applies a change that would cut one (with a warning)."""
    from .app.guard import Guard
    return Guard([guard] if isinstance(guard, str) else (guard or ()), force)


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)
