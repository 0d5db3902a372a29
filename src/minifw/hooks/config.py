"""``[[hook]]`` tables of the config: Python hook files that ``minifw up`` runs. Pure.

    [[hook]]
    file = "hooks.py"        # relative to the config file's directory
"""

from __future__ import annotations

import posixpath
import tomllib
from typing import Any

from ..errors import ConfigError
from ..model.lines import key_line, table_line, toml_error_line
from ..model.suggest import unknown as unknown_text

HOOK_KEYS = ("file",)


def hook_files(text: str, config_path: str) -> list[str]:
    """Absolute paths of the hook files a config names, in order, without duplicates."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", file=config_path,
                          line=toml_error_line(str(exc))) from None
    entries = data.get("hook", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("hook must be written as [[hook]] tables with a file key",
                          file=config_path, line=key_line(text, "hook"))
    base = posixpath.dirname(posixpath.abspath(config_path))
    out: list[str] = []
    for i, entry in enumerate(entries, 1):
        unknown = [k for k in entry if k not in HOOK_KEYS]
        if unknown:
            raise ConfigError(f"[[hook]] #{i}: " + unknown_text(
                f"key '{unknown[0]}'", unknown[0], HOOK_KEYS, "the only key is 'file'"),
                file=config_path, line=table_line(text, "hook", i - 1))
        file = entry.get("file")
        if not isinstance(file, str) or not file.strip():
            raise ConfigError(f"[[hook]] #{i}: 'file' must name a Python file of @hook "
                              "functions", file=config_path, line=table_line(text, "hook", i - 1))
        path = posixpath.normpath(posixpath.join(base, file))
        if path not in out:
            out.append(path)
    return out
