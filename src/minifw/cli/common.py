"""What every command shares: the one-line error guard, privilege, and output."""

from __future__ import annotations

import functools
import json
import re
import sys
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any, Iterable

from ..app.results.base import Outcome
from ..errors import MinifwError
from ..kernel import privilege
from ..errors import NEED_ROOT
from ..store.state import Store


# Commands that read only the files they are given; all others touch the kernel or the state
# directory. `explain` asks for privilege itself unless --config names a file.
_PURE_COMMANDS = frozenset({"check", "explain"})


def one_line(message: str) -> str:
    """``message`` with control characters escaped as repr() would: an error is ONE line, even
    when it quotes an id, a set name or a file line that carries a newline, CR or escape."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


# What click.echo does with text, without importing click (3.5x Python's own start-up): the
# fast path of cli/entry.py prints through here, and so does every click command, so both
# print alike. Off a terminal, ANSI sequences are stripped (click's pattern).
_ANSI = re.compile(r"\033\[[0-?]*[ -/]*[@-~]")


def echo(message: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    text = message + "\n"
    if not stream.isatty():
        text = _ANSI.sub("", text)
    stream.write(text)
    stream.flush()


def fail(message: str, code: int = 1) -> None:
    echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


def privileged() -> bool:
    return privilege.privileged()


def require_privilege() -> None:
    """Say once, before anything is tried, that the kernel and the state need root."""
    if not privileged():
        fail(f"{NEED_ROOT}; run it with sudo, or 'minifw check' / 'minifw explain --config "
              "FILE' to work on a file without root")


def guarded(fn):
    """Turn every failure of a command into ONE line ``error: ...`` on stderr and exit 1.

    minifw's own errors are the rule: each edge (libnftables, netlink, SQLite, files) wraps
    the foreign ones where they arise. Anything else that escapes is a bug: it still gets one
    line, named as such, so that the operator never sees a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if fn.__name__ not in _PURE_COMMANDS:
            require_privilege()
        try:
            return fn(*args, **kwargs)
        except MinifwError as exc:
            fail(str(exc))
        except MemoryError:
            fail("out of memory")
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:  # noqa: BLE001  a bug: still one line, named as such
            fail(f"internal error ({type(exc).__name__}: {exc}); please report it")
    return wrapper


def _say_waiting(message: str) -> None:
    echo(message, err=True)


Store.on_wait = staticmethod(_say_waiting)


def emit(outcome: Outcome) -> None:
    for w in outcome.warnings:
        echo(f"warning: {w}", err=True)
    echo(outcome.message)


def dump(data: Any) -> None:
    echo(json.dumps(data, indent=2))


# Decorators that load click when the click commands are defined, never on the fast path.
def json_option(fn):
    import click
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def confirm_option(fn):
    import click
    return click.option("--confirm", "confirm", metavar="SECONDS",
                        type=click.IntRange(min=1, max=86400),
                        help="Roll the change back unless 'minifw confirm' runs within "
                             "SECONDS.")(fn)


def config_option(fn):
    import click
    return click.option("--config", "-c", "config", metavar="FILE",
                        help="Config file (default /etc/minifw/minifw.toml).")(fn)


def guard_options(fn):
    """--guard ADDR:PORT (repeatable) and --force, for the commands the lockout guard checks."""
    import click
    fn = click.option("--force", is_flag=True, help="Apply even if the lockout guard finds that "
                      "the change cuts a protected connection (it warns).")(fn)
    return click.option("--guard", "guard", multiple=True, metavar="ADDR:PORT",
                        help="Also protect connections from ADDR to this host's PORT (a "
                        "bastion, a VPN peer); repeatable.")(fn)


def _multi(values: tuple[str, ...]) -> list[str]:
    """Repeated flags and comma-separated values both give lists."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _int_or_text(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def flag_fields(entry_id: str | None, flags: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The TOML fields of `add`'s (or `nat add`'s) flags: repeated flags become lists (a list
    of one becomes its value, but ``state`` stays a list), port and ICMP type numbers ints."""
    fields: dict[str, Any] = {}
    if entry_id is not None:
        fields["id"] = entry_id
    for key in keys:
        value = flags.get(key)
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            items: list[Any] = _multi(value)
            if key in ("sport", "dport", "icmp_type"):
                items = [_int_or_text(i) for i in items]
            fields[key] = items if len(items) != 1 or key == "state" else items[0]
        else:
            fields[key] = value
    return fields
