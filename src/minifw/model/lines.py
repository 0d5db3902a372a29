"""Where in the config text an error lies: the line of a table, a key, a [[rule]] or [[set]].
Pure; found on the text by lines (tomllib keeps no positions)."""

from __future__ import annotations

import re
from typing import Any

_HEADER = re.compile(r"^[ \t]*\[")


def toml_error_line(message: str) -> int | None:
    m = re.search(r"line (\d+)", message)
    return int(m.group(1)) if m else None


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def table_line(text: str, name: str, index: int) -> int | None:
    """The line of the ``index``-th ``[[name]]`` header."""
    pattern = re.compile(rf"^[ \t]*\[\[[ \t]*{re.escape(name)}[ \t]*\]\]", re.MULTILINE)
    headers = [m.start() for m in pattern.finditer(text)]
    return _line_of(text, headers[index]) if 0 <= index < len(headers) else None


def key_line(text: str, key: str, table: str | None = None) -> int | None:
    """The line of top-level ``key`` (as ``key = ``, ``key.x = `` or a ``[key]``/``[[key]]``
    header), or of ``key`` inside ``[table]`` (else that table's header line)."""
    k = re.escape(key)
    lines = text.splitlines()
    section: str | None = None
    header_at = None
    for i, line in enumerate(lines, 1):
        m = re.match(r"^[ \t]*\[\[?[ \t]*([^\]]+?)[ \t]*\]", line)
        if m:
            section = m.group(1)
            if table is None and re.fullmatch(rf"{k}(\..*)?", section):
                return i
            if table is not None and section == table:
                header_at = i
            continue
        if table is None and section is None and re.match(rf"^[ \t]*{k}[ \t]*[=.]", line):
            return i
        if table is not None:
            if section == table and re.match(rf"^[ \t]*{k}[ \t]*=", line):
                return i
            if section is None and re.match(rf"^[ \t]*{re.escape(table)}[ \t]*\.[ \t]*{k}[ \t]*=",
                                            line):
                return i
    if table is not None:
        return header_at or key_line(text, table)
    return None


def set_line(text: str, data: dict[str, Any], label: str | None, field: str | None) -> int | None:
    """The [[set]] header of the set an error names (by name or '#N'); a name defined twice
    is said of its second definition."""
    sets = data.get("set", [])
    if not isinstance(sets, list) or label is None:
        return key_line(text, "set")
    if label.startswith("#") and label[1:].isdigit():
        return table_line(text, "set", int(label[1:]) - 1)
    names = [s.get("name") if isinstance(s, dict) else None for s in sets]
    if label not in names:
        return key_line(text, "set")
    index = names.index(label)
    if field == "name" and names.count(label) > 1:
        index = names.index(label, index + 1)
    return table_line(text, "set", index)
