"""The TOML config: parse text into a Ruleset, and edit text in place keeping comments and layout.

Pure: functions take and return text; reading and writing files is the caller's business.
"""

from __future__ import annotations

import gc
import re
import tomllib
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, RuleError
from .nat import Nat, NatError, nat_line
from .lines import key_line, set_line, toml_error_line
from .rule import Rule
from .ruleset import Ruleset
from .sets import SetError
from .suggest import unknown as unknown_text

if TYPE_CHECKING:
    import tomlkit

# tomlkit (about 15 ms to import) is loaded only by the config edits of `add` and `delete`:
# the other commands never pay for it.

TOP_KEYS = ("policy", "events", "rule", "hook", "set", "nat", "crowdsec")  # [[hook]]: minifw.hooks.config;
# [[set]]: model.sets; [[nat]]: model.nat
_RULE_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*rule[ \t]*\]\]", re.MULTILINE)
_TABLE_HEADER = re.compile(r"^\s*\[")


def _loads(text: str) -> dict:
    """tomllib.loads with the cyclic collector paused: a finalizer it ran deep in tomllib's
    recursion would hit the recursion limit itself and print a stray warning to stderr."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return tomllib.loads(text)
    finally:
        if enabled:
            gc.enable()


def parse_config(text: str, file: str) -> Ruleset:
    try:
        data = _loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = toml_error_line(str(exc))
        raise ConfigError(f"TOML syntax error: {exc}", file=file, line=line) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError("arrays or tables are nested too deeply to read", file=file) from None
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(unknown_text(f"top-level key '{unknown[0]}'", unknown[0], TOP_KEYS,
                                       "valid keys are [policy], [events], [[rule]], [[set]], "
                                       "[[nat]], [[hook]] and [crowdsec]"), file=file, line=key_line(text, unknown[0]))
    try:
        return Ruleset.from_toml(data)
    except NatError as exc:
        raise exc.located(file, nat_line(text, exc.nat, data, exc.field)) from None
    except RuleError as exc:
        raise exc.located(file, _error_line(text, data, exc)) from None


def _error_line(text: str, data: dict[str, Any], exc: RuleError) -> int | None:
    """The line an error is about: its [[rule]], its [[set]], its [policy] or [events] key, its
    table."""
    field = exc.field or ""
    if isinstance(exc, SetError):
        return set_line(text, data, exc.set_name, field)
    if exc.rule is not None:
        return _rule_line(text, exc.rule, data, exc.field)
    if field.startswith(("policy.", "events.", "crowdsec.")):
        table, key = field.split(".", 1)
        return key_line(text, key, table=table)
    return key_line(text, field) if field else None


def _rule_line(text: str, rule_label: str | None, data: dict[str, Any],
               field: str | None = None) -> int | None:
    """The line of the [[rule]] header of the rule an error names (by id or '#N').

    A duplicate id is said of its second use, the rule that made it a duplicate.
    """
    if rule_label is None:
        return None
    rules = data.get("rule", [])
    index = None
    if rule_label.startswith("#") and rule_label[1:].isdigit():
        index = int(rule_label[1:]) - 1
    else:
        ids = [r.get("id") if isinstance(r, dict) else None for r in rules]
        if rule_label in ids:
            index = ids.index(rule_label)
            if field == "id" and ids.count(rule_label) > 1:
                index = ids.index(rule_label, index + 1)
    if index is None:
        return None
    headers = [m.start() for m in _RULE_HEADER.finditer(text)]
    if index >= len(headers):
        return None
    return text.count("\n", 0, headers[index]) + 1


# ---- editing, for `add` and `delete` ---------------------------------------------------------

def add_rule_text(text: str, rule: Rule | Nat, before: str | None, kind: str = "rule") -> str:
    """Insert ``rule`` as a [[rule]] table before the rule with id ``before`` (or at the end).
    ``kind="nat"``: a Nat as a [[nat]] table, the same way."""
    import tomlkit
    doc = tomlkit.parse(text)
    table = tomlkit.table()
    for key, value in rule.to_toml().items():
        table.add(key, value)
    if kind not in doc:
        aot = tomlkit.aot()
        aot.append(table)
        doc.append(kind, aot)
        return tomlkit.dumps(doc)
    aot = doc[kind]
    if before is None:
        aot.append(table)
        return tomlkit.dumps(doc)
    index = _index_of(doc, before, kind)
    spliced = _splice_rule_lines(text, index, table, kind)
    if spliced is not None:
        return spliced
    aot.insert(index, table)
    return tomlkit.dumps(doc)


def _splice_rule_lines(text: str, index: int, table: Any, kind: str = "rule") -> str | None:
    """``text`` with ``table`` as a new [[rule]] placed above the ``index``-th [[rule]] and above
    the comment lines written right over it (they describe that rule; tomlkit would put the new
    table between them and their rule), unless those comments open the file. None when the
    text is too unusual to edit by lines."""
    import tomlkit
    layout = _rule_layout(text, index, kind)
    if layout is None:
        return None
    lines, headers, original, rules = layout
    at = headers[index]
    while at > 0 and lines[at - 1].lstrip().startswith("#"):
        at -= 1
    if at == 0:  # comments from the top of the file down to the rule: the file's own header
        at = headers[index]
    block = tomlkit.document()
    aot = tomlkit.aot()
    aot.append(table)
    block.append(kind, aot)
    new = tomlkit.dumps(block).strip("\n") + "\n\n"
    if at > 0 and not lines[at - 1].endswith("\n"):
        return None
    result = "".join(lines[:at]) + new + "".join(lines[at:])
    added = tomllib.loads(new)[kind][0]
    return _checked(result, original, rules[:index] + [added] + rules[index:], kind)


def _rule_layout(text: str, index: int, kind: str = "rule"):
    """(lines, the line numbers of the [[rule]] (or [[kind]]) headers, the parsed text, its
    rules), or None when the headers found by lines do not line up with the parsed rules."""
    lines = text.splitlines(keepends=True)
    header = _RULE_HEADER if kind == "rule" else re.compile(
        rf"^[ \t]*\[\[[ \t]*{kind}[ \t]*\]\]")
    headers = [i for i, line in enumerate(lines) if header.match(line)]
    original = tomllib.loads(text)
    rules = original.get(kind, [])
    if len(headers) != len(rules) or index >= len(headers):
        return None
    return lines, headers, original, rules


def _checked(result: str, original: dict[str, Any], rules: list[Any],
             kind: str = "rule") -> str | None:
    """``result`` if it parses to ``original`` with exactly ``rules`` as its [[rule]] list."""
    try:
        after = tomllib.loads(result)
    except tomllib.TOMLDecodeError:
        return None
    if after.get(kind, []) != rules:
        return None
    if {k: v for k, v in after.items() if k != kind} != {
            k: v for k, v in original.items() if k != kind}:
        return None
    return result


def delete_rule_text(text: str, rule_id: str, kind: str = "rule") -> str:
    """``text`` without the [[rule]] (``kind="nat"``: [[nat]]) of id ``rule_id``."""
    import tomlkit
    doc = tomlkit.parse(text)
    index = _index_of(doc, rule_id, kind)
    cut = _cut_rule_lines(text, index, kind)
    if cut is not None:
        return cut
    del doc[kind][index]
    if len(doc[kind]) == 0:
        del doc[kind]
    return tomlkit.dumps(doc)


def _cut_rule_lines(text: str, index: int, kind: str = "rule") -> str | None:
    """``text`` without the lines of the ``index``-th [[rule]], from its header to its last key.

    Comments and blank lines after its last key stay: they precede (and describe) whatever comes
    next, and tomlkit would delete them with the table. None when the text is too unusual to cut
    by lines (the result is checked by parsing it).
    """
    layout = _rule_layout(text, index, kind)
    if layout is None:
        return None
    lines, headers, original, before = layout
    start = headers[index]
    end = next((i for i in range(start + 1, len(lines)) if _TABLE_HEADER.match(lines[i])),
               len(lines))
    last = start
    for i in range(start + 1, end):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            last = i
    rest = lines[last + 1:]
    if start > 0 and not lines[start - 1].strip() and rest and not rest[0].strip():
        rest = rest[1:]  # the blank lines on both sides of the cut become one
    return _checked("".join(lines[:start] + rest), original, before[:index] + before[index + 1:],
                    kind)


def _index_of(doc: tomlkit.TOMLDocument, rule_id: str, kind: str = "rule") -> int:
    model = Nat if kind == "nat" else Rule
    for i, table in enumerate(doc.get(kind, [])):
        if model.from_toml(table.unwrap(), index=i).id == rule_id:
            return i
    if kind == "nat":
        raise NatError("is not in the config file", nat=rule_id, field="id")
    raise RuleError("is not in the config file", rule=rule_id, field="id")
