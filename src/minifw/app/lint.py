"""The lint at the edge: the config's findings with their file and line, this host's
interfaces, and ``--strict``, which turns the findings into a refusal."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..engine.lint import Finding, lint
from ..errors import ConfigError
from ..kernel import ifaces
from ..model.lines import table_line
from ..model.ruleset import Ruleset


@dataclasses.dataclass(frozen=True)
class Located:
    """A finding, said of its [[rule]]'s line in the config file."""

    finding: Finding
    file: str
    line: int | None

    def text(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.finding.line()}"

    def to_json(self) -> dict[str, Any]:
        return {**self.finding.to_json(), "file": self.file, "line": self.line}


def findings(text: str, path: str, ruleset: Ruleset) -> tuple[Located, ...]:
    """The lint's findings on ``ruleset`` (read from ``text`` at ``path``), in rule order."""
    order = [r.id for r in ruleset.rules]
    return tuple(Located(f, path, table_line(text, "rule", order.index(f.rule)))
                 for f in lint(ruleset, ifaces.names()))


def enforce(found: tuple[Located, ...], strict: bool) -> tuple[str, ...]:
    """The warning lines; under ``strict``, a refusal (raised before anything changes)."""
    if strict and found:
        first = found[0]
        more = f" (and {len(found) - 1} more; 'minifw check' lists them)" if len(found) > 1 else ""
        raise ConfigError(f"--strict refuses a config with lint findings: "
                          f"{first.finding.line()}{more}", file=first.file, line=first.line)
    return tuple(f.text() for f in found)
