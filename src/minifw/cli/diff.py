"""``minifw diff``: the live ruleset against a config, rule by rule. Registered by cli.main."""

from __future__ import annotations

import click

from ..api import Firewall
from .common import config_option, dump, guarded, json_option


def _rule_text(rule: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in rule.items() if k != "id") or "(any)"


@click.command()
@config_option
@json_option
@click.pass_context
@guarded
def diff(ctx, config, as_json):
    """Show what loading a config would change in the live ruleset, rule by rule (added,
    removed, changed, reordered chains, other sections), without changing anything."""
    found = Firewall(ctx.obj["state_dir"]).diff(config)
    if as_json:
        dump(found.to_json())
        return
    if not found.loaded:
        click.echo("minifw is not loaded here: everything below would be added")
    elif found.config != found.wanted:
        click.echo(f"loaded from {found.config}, not {found.wanted}")
    if found.loaded and not found.in_sync:
        click.echo("the kernel does not hold the loaded ruleset: 'up' would load it again")
    for a in found.added:
        click.echo(f"+ {a['id']:<24} {_rule_text(a['rule'])}")
    for r in found.removed:
        click.echo(f"- {r['id']:<24} {_rule_text(r['rule'])}")
    for c in found.changed:
        click.echo(f"~ {c['id']:<24} {_rule_text(c['live'])}")
        click.echo(f"  {'':<24} -> {_rule_text(c['wanted'])}")
    for chain in found.moved:
        click.echo(f"order changed in chain {chain}")
    for section in found.sections:
        click.echo(f"[{section}] differs")
    click.echo("up to date" if found.up_to_date else "changes: 'minifw up --config "
               f"{found.wanted}' would apply them")
