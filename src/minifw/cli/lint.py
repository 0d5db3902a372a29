"""The lint's findings in `check`, and --strict (for check, up and reload)."""

from __future__ import annotations

from typing import Any, Sequence

from .common import echo, fail


def strict_option(fn):
    import click
    return click.option("--strict", is_flag=True,
                        help="Refuse a config the lint finds fault with (shadowed rules, "
                             "ineffective limits, redundant state, missing interfaces).")(fn)


def lint_verdict(found: Sequence[Any], strict: bool, quiet: bool = False) -> None:
    """Print each finding (a warning; an error under --strict) unless ``quiet``; under
    --strict, exit 1 once all is printed."""
    if not quiet:
        for f in found:
            echo(f"{'error' if strict else 'warning'}: {f.text()}", err=True)
    if strict and found and quiet:
        fail(f"--strict: the lint found {len(found)} problem{'s' if len(found) > 1 else ''}")
