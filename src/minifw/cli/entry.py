"""The ``minifw`` console script: ``ban`` and ``unban`` without click, the rest through click.

Callers such as fail2ban run ``minifw ban ADDR`` once per offender, so its start-up is the
command's cost, and importing click alone takes 3.5x Python's own start. This module reads
exactly the argv those two commands accept and runs them through the same ``Firewall`` calls,
guard, printing and exit codes (cli/common.py) as the click commands in cli/sets.py. Anything
else goes to the click CLI (cli/main.py) untouched: every other command, ``--help``,
``--version``, and any argv this parser does not fully understand (a missing address, an
unknown or repeated option, an option value that starts with '-'), so help and usage errors
(exit 2, one line ``error: ... (see 'minifw ban --help')``) stay click's own.
tests/unit/test_cli_entry.py runs the same argv through both paths and compares them.
"""

from __future__ import annotations

import gc
import os
import sys

# The options each fast command takes: name -> True when it takes a value.
# --guard (repeatable, parsed by the guard) is not among them: such an argv goes to click.
_FAST = {"ban": {"--timeout": True, "--set": True, "--json": False, "--force": False},
         "unban": {"--set": True, "--json": False, "--force": False}}


def main() -> None:
    argv = sys.argv[1:]
    parsed = parse(argv)
    if parsed is None:
        from .main import run as run_click
        sys.exit(run_click(argv))
    # No cyclic collection for a ban or an unban: a process this short makes few cycles,
    # while the collector's automatic runs over the modules it loads cost it 5-6 ms (about
    # 25 runs, measured). What a cycle holds is still released: _leave closes the set record,
    # and the normal way out collects at the interpreter's teardown.
    gc.disable()
    try:
        _execute(parsed)
        code = 0
    except SystemExit as exc:  # the guard's exit, after its one line
        code = exc.code
    _leave(code)


def _leave(code) -> None:
    """Exit now, without the interpreter's teardown of every module a ban loaded (about a
    sixth of the whole process, measured). What the teardown would still do is done here: the
    set record's SQLite connection is closed (it sits in a reference cycle, so only the
    teardown's collection would close it; closing checkpoints the WAL and removes it), and
    the output is flushed. Anything unusual takes the normal way out."""
    try:
        record = sys.modules.get("minifw.store.setrecord")
        if record is not None:
            record.close_open()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        sys.exit(code)
    if code is None:
        code = 0
    if not isinstance(code, int):
        sys.exit(code)
    os._exit(code)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: the process's) and return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parsed = parse(argv)
    if parsed is None:
        from .main import run as run_click
        return run_click(argv)
    _execute(parsed)
    return 0


def _execute(parsed: tuple[str, str | None, list[str], dict]) -> None:
    command, state_dir, elements, options = parsed
    _COMMANDS[command](state_dir, elements, **options)


def parse(argv: list[str]) -> tuple[str, str | None, list[str], dict] | None:
    """(command, --state-dir, elements, options) of a ban/unban argv that click would accept
    as is; None for anything else (click then reads it)."""
    state_dir = None
    at = 0
    if argv[:1] == ["--state-dir"] and len(argv) > 1 and not argv[1].startswith("-"):
        state_dir, at = argv[1], 2
    elif argv[:1] and argv[0].startswith("--state-dir="):
        state_dir, at = argv[0].partition("=")[2], 1
    if at >= len(argv) or argv[at] not in _FAST:
        return None
    command, known = argv[at], _FAST[argv[at]]
    rest = argv[at + 1:]
    elements: list[str] = []
    options: dict[str, str | bool] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if token == "--":
            elements += rest[i:]
            break
        if not token.startswith("-") or token == "-":
            elements.append(token)
            continue
        name, eq, value = token.partition("=")
        if name not in known or name in options:
            return None  # unknown (or -h, --help), or repeated: click's to judge
        if not known[name]:
            if eq:
                return None  # a value given to a flag: click's error
            options[name] = True
            continue
        if not eq:
            if i >= len(rest) or rest[i].startswith("-"):
                return None
            value = rest[i]
            i += 1
        options[name] = value
    if not elements:
        return None  # click's "missing argument"
    mapped: dict[str, str | bool | None] = {"set_name": options.get("--set"),
                                            "as_json": bool(options.get("--json", False)),
                                            "force": bool(options.get("--force", False))}
    if command == "ban":
        mapped["timeout"] = options.get("--timeout")
    return command, state_dir, elements, mapped


# The commands import what they need only when they run: the parse above needs nothing.
def _guarded(fn):
    """cli/common.py's guard (privilege first, then one line per failure), loaded on call."""
    def wrapper(*args, **kwargs):
        from .common import guarded
        return guarded(fn)(*args, **kwargs)
    wrapper.__name__ = fn.__name__
    return wrapper


@_guarded
def ban(state_dir: str | None, elements: list[str], timeout: str | None, set_name: str | None,
        as_json: bool, force: bool = False) -> None:
    from ..api import Firewall
    from ..model.sets import DEFAULT_SET
    from .common import dump, emit
    banned = Firewall(state_dir).ban(tuple(elements), timeout,
                                     set=DEFAULT_SET if set_name is None else set_name,
                                     force=force)
    dump(banned.to_json()) if as_json else emit(banned)


@_guarded
def unban(state_dir: str | None, elements: list[str], set_name: str | None,
          as_json: bool, force: bool = False) -> None:
    from ..api import Firewall
    from ..model.sets import DEFAULT_SET
    from .common import dump, emit
    unbanned = Firewall(state_dir).unban(tuple(elements),
                                         set=DEFAULT_SET if set_name is None else set_name,
                                         force=force)
    dump(unbanned.to_json()) if as_json else emit(unbanned)


_COMMANDS = {"ban": ban, "unban": unban}
