"""The lockout guard at the commands: before a change to what the kernel accepts, would the NEW
ruleset (live sets included) cut a protected connection? If so, refuse with one line
(``LockoutError``) before anything changed, unless ``force``, which applies and warns.

The decisions are ``minifw.engine.guard``'s; the connections come from the kernel seam
(``Kernel.connections``: SSH_CONNECTION, sessions to sshd, ``--guard`` peers). A hook
function's verdict is decided at run time: it warns and never refuses.

Cost: ``minifw ban ADDR`` into the default set ``blocked`` runs this on every call. That set is
dropped by source at prerouting before any rule, so a ban there cuts a protected connection
exactly when its client is covered by a banned element: ``ban_check`` asks the kernel seam for
the candidate clients (the socket tables and SSH_CONNECTION, no /proc/*/fd walk) and loads the
explain engine only when one is covered, or for other sets, or when a rule uses ``@blocked``.
"""

from __future__ import annotations

import ipaddress

from ..errors import LockoutError

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Iterable, Sequence

    from ..engine.guard import Connection, Finding, GuardSpec
    from ..kernel.seam import Kernel
    from ..model.ruleset import Ruleset

DEFAULT_SET = "blocked"   # model.sets.DEFAULT_SET, without loading the set model for it


class Guard:
    """What a command asks of the guard: extra ``--guard ADDR:PORT`` peers, and ``force``.
    The values are parsed here, so a malformed one fails before the lock is taken."""

    def __init__(self, guards: Iterable[str] = (), force: bool = False):
        guards = list(guards)
        if guards:
            from ..engine.guard import parse_guard
            self.specs: list[GuardSpec] = [parse_guard(g) for g in guards]
        else:
            self.specs = []
        self.force = bool(force)


OFF = None  # a Guard of None: callers that are not commands (a rollback, a boot) pass none


def verdict(findings: Sequence[Finding], connections: Sequence[Connection],
            ruleset: Ruleset | None, guard: Guard) -> tuple[str, ...]:
    """Raise LockoutError for a blocking finding unless forced; return the warnings: the
    forced cut, the runtime verdicts, and "nothing could be checked" where that applies."""
    from ..engine.guard import no_connection_warning, refusal, runtime_warnings

    warnings = []
    line = refusal(findings)
    if line is not None:
        if not guard.force:
            raise LockoutError(line, tuple(findings))
        warnings.append("--force: " + line.replace("; use --force to apply anyway", ""))
    warnings += runtime_warnings(findings)
    if not connections and ruleset is not None:
        nothing = no_connection_warning(ruleset)
        if nothing:
            warnings.append(nothing)
    return tuple(warnings)


# ---- whole rulesets: up, reload, add, delete, check ------------------------------------------

def findings_for(kernel: Kernel, state_dir: Path, ruleset: Ruleset, guard: Guard,
                 hook_functions: Sequence | None = None,
                 ) -> tuple[list[Finding], list[Connection]]:
    """The findings of ``ruleset`` on every protected connection, with the live sets of
    ``state_dir`` and the config's own [[set]] elements, and the running hook functions."""
    from ..engine.guard import check

    connections = kernel.connections(guard.specs)
    if not connections:
        return [], []
    functions = running_functions(state_dir) if hook_functions is None else hook_functions
    return check(ruleset, connections, set_lookup(state_dir, ruleset), functions), connections


def check_ruleset(kernel: Kernel, state_dir: Path, ruleset: Ruleset,
                  guard: Guard | None) -> tuple[str, ...]:
    """Refuse (LockoutError) or return the warnings, for a change to ``ruleset``."""
    if guard is None:
        return ()
    findings, connections = findings_for(kernel, state_dir, ruleset, guard)
    return verdict(findings, connections, ruleset, guard)


def report(kernel: Kernel, state_dir: Path, ruleset: Ruleset,
           guard: Guard | None) -> tuple[str, ...]:
    """For ``check``: what the guard would say of ``ruleset``, refusing nothing: the refusal's
    line as it would be, then the warnings. Where the connections cannot be read (no root),
    the guard says so instead of failing the check."""
    if guard is None:
        return ()
    from ..errors import MinifwError

    try:
        findings, connections = findings_for(kernel, state_dir, ruleset, guard)
    except (OSError, MinifwError) as exc:
        return (f"the lockout guard could not check: {exc}",)
    from ..engine.guard import describe

    cuts = tuple(f"refused without --force: this change would cut {describe(f)}"
                 for f in findings if f.blocks)
    return cuts + verdict(findings, connections, ruleset, Guard(force=True))[1 if cuts else 0:]


def running_functions(state_dir: Path) -> tuple:
    """The hook functions of the live hook runners, as ``explain`` takes them."""
    from ..runners import hookstate
    from ..engine.explain import HookFunction
    from ..model.types import Hook

    return tuple(HookFunction(q.function, Hook(q.hook), q.priority)
                 for rec in hookstate.records(state_dir) if rec.alive for q in rec.queues)


def set_lookup(state_dir: Path, ruleset: Ruleset | None = None,
               adding: dict[str, list[str]] | None = None,
               removing: dict[str, set[str]] | None = None) -> Callable[[str, Any], bool | None]:
    """Set membership after the change: the set record (what the kernel's sets hold), the
    config's [[set]] elements, plus ``adding`` and minus ``removing`` (name -> elements)."""
    import os

    from ..store.setrecord import SetStore

    # no record yet: nothing is in the kernel's sets (and `check` must not create one)
    store = SetStore(state_dir) if os.path.isfile(os.path.join(state_dir, "sets.db")) else None
    config = {s.name: list(s.elements) for s in ruleset.sets} if ruleset is not None else {}
    adding = adding or {}
    removing = removing or {}

    def lookup(name: str, addr) -> bool | None:
        gone = removing.get(name, set())
        extra = config.get(name, []) + adding.get(name, [])
        if _covered(addr, [e for e in extra if e not in gone]):
            return True
        if store is None or not store.exists(name):
            return None if name not in config and name not in adding else False
        if str(addr) not in gone and store.get(name, str(addr)) is not None:
            return True
        return _covered(addr, [c for c in store.cidrs(name) if c not in gone])
    return lookup


def _covered(addr, elements: Iterable[str]) -> bool:
    for e in elements:
        net = ipaddress.ip_network(e, strict=False)
        if net.version == addr.version and addr in net:
            return True
    return False


# ---- set changes: ban, unban, set import ------------------------------------------------------

def _mentions(data: Any, text: str) -> bool:
    """Whether a saved ruleset (its TOML form) mentions ``text`` anywhere: a rule on a set."""
    if isinstance(data, str):
        return text in data
    if isinstance(data, dict):
        return any(_mentions(v, text) for v in data.values())
    if isinstance(data, list):
        return any(_mentions(v, text) for v in data)
    return False


def _live(saved: dict) -> Ruleset:
    from ..model.ruleset import Ruleset
    return Ruleset.from_toml(saved)


def ban_check(kernel: Kernel, state_dir: Path, saved: dict, name: str, items: list[str],
              guard: Guard | None, packed: tuple = ((), ())) -> tuple[str, ...]:
    """Before ``items`` (and ``packed`` addresses, an import's IPv4 and IPv6 lists) enter set
    ``name``: refuse or return the warnings. ``saved`` is the live ruleset's TOML form."""
    if guard is None:
        return ()

    def imported(addr) -> bool:  # a scan per client: no set of a million keys is built
        return addr.packed in packed[addr.version == 6]

    if name == DEFAULT_SET and not _mentions(saved, f"@{name}") and not guard.specs:
        # dropped by source before any rule: only a covered client can be cut
        if not any(_covered(c, items) or imported(c) for c in kernel.clients()):
            return ()
    elif name != DEFAULT_SET and not _mentions(saved, f"@{name}"):
        return ()   # no rule uses the set: its elements decide nothing
    from ..engine.guard import check

    ruleset = _live(saved)
    connections = kernel.connections(guard.specs)
    if not connections:
        return ()
    extra = list(items) + [str(c.client) for c in connections if imported(c.client)]
    findings = check(ruleset, connections, set_lookup(state_dir, None, {name: extra}),
                     running_functions(state_dir))
    return verdict(findings, connections, None, guard)


def unban_check(kernel: Kernel, state_dir: Path, saved: dict, name: str, items: list[str],
                guard: Guard | None) -> tuple[str, ...]:
    """Before ``items`` leave set ``name``: that matters only where an accept rule uses it."""
    if guard is None or not _mentions(saved, f"@{name}"):
        return ()
    ruleset = _live(saved)
    if not any(r.action.value == "accept" and _mentions(r.match_dict(), f"@{name}")
               for r in ruleset.rules):
        return ()
    from ..engine.guard import check

    connections = kernel.connections(guard.specs)
    if not connections:
        return ()
    findings = check(ruleset, connections,
                     set_lookup(state_dir, None, removing={name: set(items)}),
                     running_functions(state_dir))
    return verdict(findings, connections, None, guard)
