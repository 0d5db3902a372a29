"""The CLI of named sets: ban, unban, set import/list/flush. Registered by cli.main."""

from __future__ import annotations

import click

from ..api import Firewall
from ..model.sets import DEFAULT_SET, format_duration
from .common import confirm_option, dump, emit, guard_options, guarded, json_option


def _firewall(ctx: click.Context) -> Firewall:
    return Firewall(ctx.obj["state_dir"])


@click.command()
@click.argument("elements", nargs=-1, required=True, metavar="ADDR|CIDR...")
@click.option("--timeout", metavar="DURATION", help="e.g. 30s, 10m, 1h, 2d (default: the set's "
              "timeout, or none).")
@click.option("--set", "set_name", default=DEFAULT_SET, show_default=True, metavar="NAME")
@guard_options
@confirm_option
@json_option
@click.pass_context
@guarded
def ban(ctx, elements, timeout, set_name, guard, force, confirm, as_json):
    """Add addresses or CIDRs to a set (default 'blocked', dropped at prerouting)."""
    banned = _firewall(ctx).ban(elements, timeout, set=set_name, guard=guard, force=force,
                                confirm=confirm)
    dump(banned.to_json()) if as_json else emit(banned)


@click.command()
@click.argument("elements", nargs=-1, required=True, metavar="ADDR|CIDR...")
@click.option("--set", "set_name", default=DEFAULT_SET, show_default=True, metavar="NAME")
@guard_options
@confirm_option
@json_option
@click.pass_context
@guarded
def unban(ctx, elements, set_name, guard, force, confirm, as_json):
    """Remove addresses or CIDRs from a set. Absent ones are reported; the exit status stays 0."""
    unbanned = _firewall(ctx).unban(elements, set=set_name, guard=guard, force=force,
                                    confirm=confirm)
    dump(unbanned.to_json()) if as_json else emit(unbanned)


@click.group(name="set")
def set_group():
    """Named address sets: import, list, flush, recover."""


@set_group.command(name="import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--skip-invalid", is_flag=True, help="Skip bad lines (reported) instead of "
              "refusing the whole file.")
@click.option("--timeout", metavar="DURATION", help="Timeout of every imported element.")
@guard_options
@confirm_option
@json_option
@click.pass_context
@guarded
def import_(ctx, name, file, skip_invalid, timeout, guard, force, confirm, as_json):
    """Add one address or CIDR per line of FILE ('#' starts a comment) to set NAME."""
    imported = _firewall(ctx).import_set(name, file, skip_invalid=skip_invalid, timeout=timeout,
                                         guard=guard, force=force, confirm=confirm)
    dump(imported.to_json()) if as_json else emit(imported)


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
    listed = _firewall(ctx).list_set(name, page, page_size)
    if as_json:
        dump(listed.to_json())
        return
    click.echo(f"set {name}: {listed.elements} elements ({listed.addresses} addresses, "
               f"{listed.cidrs} CIDRs); page {page} of {listed.pages}")
    for item in listed.items:
        left = item.expires_in
        click.echo(f"  {item.element:<43} {'permanent' if left is None else 'expires in ' + format_duration(max(left, 1))}"
                   + (f"  {item.origin}" if item.origin else ""))


@set_group.command()
@json_option
@click.pass_context
@guarded
def recover(ctx, as_json):
    """Rebuild the set record (sets.db) from the kernel's sets, when it is missing or damaged."""
    recovered = _firewall(ctx).recover_sets()
    dump(recovered.to_json()) if as_json else emit(recovered)


@set_group.command()
@click.argument("name")
@click.pass_context
@guarded
def flush(ctx, name):
    """Remove every element of a set."""
    emit(_firewall(ctx).flush_set(name))


COMMANDS = (ban, unban, set_group)
