"""Loading a hook file: run it as a module and collect its @hook functions, with every failure
of the user's file said as a ConfigError at its line."""

from __future__ import annotations

import dataclasses
import runpy
import traceback
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MinifwError
from . import HookSpec, collect
from .addresses import check_plain_address_sets


@dataclasses.dataclass(frozen=True)
class HookModule:
    """A loaded hook file: its functions, and what the kernel compiler reads (the source text
    and the module's globals)."""

    file: str
    specs: list[HookSpec]
    source: str
    namespace: dict[str, Any]


def load_hooks(file: str) -> list[HookSpec]:
    return load_module(file).specs


def load_module(file: str) -> HookModule:
    path = Path(file)
    if not path.is_file():
        raise ConfigError("no such hook file.", file=str(file))
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the hook file: {exc}", file=str(file)) from exc
    try:
        namespace = runpy.run_path(str(path), run_name="minifw_hooks")
    except ConfigError as exc:  # a bad @hook(...): say which line of the user's file
        raise ConfigError(exc.detail, file=str(file), line=_user_line(exc, path)) from exc
    except MinifwError as exc:
        raise ConfigError(str(exc), file=str(file), line=_user_line(exc, path)) from exc
    except SyntaxError as exc:
        raise ConfigError(f"Python syntax error: {exc.msg}", file=str(file),
                          line=exc.lineno) from exc
    except Exception as exc:  # the user's module failed at import: say where
        raise ConfigError(f"the hook file raised {type(exc).__name__}: {exc}", file=str(file),
                          line=_user_line(exc, path)) from exc
    except (SystemExit, KeyboardInterrupt) as exc:  # a file that exits is no hook file
        raise ConfigError(f"the hook file raised {type(exc).__name__} ({exc!r}) at import",
                          file=str(file), line=_user_line(exc, path)) from exc
    specs = collect(namespace, str(file))
    # the same trap refused on both paths: a plain set of address strings never matches a CIDR
    # in Python, where the kernel's map would
    check_plain_address_sets(source, str(file), namespace)
    return HookModule(str(file), specs, source, namespace)


def _user_line(exc: BaseException, path: Path) -> int | None:
    tb = traceback.extract_tb(exc.__traceback__)
    return next((f.lineno for f in reversed(tb) if f.filename == str(path)), None)
