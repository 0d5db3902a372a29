"""``[[hook]]`` tables of the config: Python hook files that ``minifw up`` runs. Pure.

    [[hook]]
    file = "hooks.py"        # relative to the config file's directory
"""

from __future__ import annotations

import posixpath
import tomllib
from typing import Any

from ..errors import ConfigError

HOOK_KEYS = ("file",)


def hook_files(text: str, config_path: str) -> list[str]:
    """Absolute paths of the hook files a config names, in order, without duplicates."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", file=config_path) from None
    entries = data.get("hook", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("hook must be written as [[hook]] tables with a file key",
                          file=config_path)
    base = posixpath.dirname(posixpath.abspath(config_path))
    out: list[str] = []
    for i, entry in enumerate(entries, 1):
        unknown = [k for k in entry if k not in HOOK_KEYS]
        if unknown:
            raise ConfigError(f"[[hook]] #{i}: unknown key '{unknown[0]}'; the only key is "
                              "'file'", file=config_path)
        file = entry.get("file")
        if not isinstance(file, str) or not file.strip():
            raise ConfigError(f"[[hook]] #{i}: 'file' must name a Python file of @hook "
                              "functions", file=config_path)
        path = posixpath.normpath(posixpath.join(base, file))
        if path not in out:
            out.append(path)
    return out
