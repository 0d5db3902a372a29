"""The CLI of named sets: ban, unban, set import/list/flush. Registered by cli.main."""

from __future__ import annotations

import click

from ..model.sets import DEFAULT_SET, format_duration
from ..app.sets import SetService
from ..store.state import state_dir_from_env
from .common import dump, emit, guarded, json_option


def _sets(ctx: click.Context) -> SetService:
    return SetService(state_dir_from_env(ctx.obj["state_dir"]))


@click.command()
@click.argument("elements", nargs=-1, required=True, metavar="ADDR|CIDR...")
@click.option("--timeout", metavar="DURATION", help="e.g. 30s, 10m, 1h, 2d (default: the set's "
              "timeout, or none).")
@click.option("--set", "set_name", default=DEFAULT_SET, show_default=True, metavar="NAME")
@json_option
@click.pass_context
@guarded
def ban(ctx, elements, timeout, set_name, as_json):
    """Add addresses or CIDRs to a set (default 'blocked', dropped at prerouting)."""
    outcome = _sets(ctx).ban(elements, timeout, set_name)
    dump(outcome.data) if as_json else emit(outcome)


@click.command()
@click.argument("elements", nargs=-1, required=True, metavar="ADDR|CIDR...")
@click.option("--set", "set_name", default=DEFAULT_SET, show_default=True, metavar="NAME")
@json_option
@click.pass_context
@guarded
def unban(ctx, elements, set_name, as_json):
    """Remove addresses or CIDRs from a set. Absent ones are reported; the exit status stays 0."""
    outcome = _sets(ctx).unban(elements, set_name)
    dump(outcome.data) if as_json else emit(outcome)


@click.group(name="set")
def set_group():
    """Named address sets: import, list, flush, recover."""


@set_group.command(name="import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--skip-invalid", is_flag=True, help="Skip bad lines (reported) instead of "
              "refusing the whole file.")
@click.option("--timeout", metavar="DURATION", help="Timeout of every imported element.")
@json_option
@click.pass_context
@guarded
def import_(ctx, name, file, skip_invalid, timeout, as_json):
    """Add one address or CIDR per line of FILE ('#' starts a comment) to set NAME."""
    outcome = _sets(ctx).import_file(name, file, skip_invalid, timeout)
    dump(outcome.data) if as_json else emit(outcome)


@set_group.command(name="list")
@click.argument("name")
@click.option("--page", type=click.IntRange(min=1, max=2**31), default=1,  # SQLite: 64-bit offsets
              show_default=True)
@click.option("--page-size", type=click.IntRange(min=1, max=100_000), default=100,
              show_default=True)
@json_option
@click.pass_context
@guarded
def list_(ctx, name, page, page_size, as_json):
    """List a set's elements, one page at a time, with each one's remaining timeout."""
    data = _sets(ctx).list_set(name, page - 1, page_size)
    if as_json:
        data["page"] = page
        dump(data)
        return
    click.echo(f"set {name}: {data['elements']} elements ({data['addresses']} addresses, "
               f"{data['cidrs']} CIDRs); page {page} of {data['pages']}")
    for item in data["items"]:
        left = item["expires_in"]
        click.echo(f"  {item['element']:<43} {'permanent' if left is None else 'expires in ' + format_duration(max(left, 1))}")


@set_group.command()
@json_option
@click.pass_context
@guarded
def recover(ctx, as_json):
    """Rebuild the set record (sets.db) from the kernel's sets, when it is missing or damaged."""
    outcome = _sets(ctx).recover()
    dump(outcome.data) if as_json else emit(outcome)


@set_group.command()
@click.argument("name")
@click.pass_context
@guarded
def flush(ctx, name):
    """Remove every element of a set."""
    emit(_sets(ctx).flush(name))


COMMANDS = (ban, unban, set_group)
