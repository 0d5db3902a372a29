"""The CLI of [[nat]] entries: nat add / delete / list. Registered by cli.main."""

from __future__ import annotations

import click

from ..api import Firewall
from .common import dump, emit, flag_fields, guarded, json_option


def _firewall(ctx: click.Context) -> Firewall:
    return Firewall(ctx.obj["state_dir"])


@click.group(name="nat")
def nat_group():
    """NAT: masquerade, SNAT, DNAT (port forwards) and redirects, live."""


@nat_group.command()
@click.option("--id", "nat_id")
@click.option("--kind", required=True, help="masquerade | snat | dnat | redirect")
@click.option("--hook", help="dnat and redirect: prerouting (default) | output.")
@click.option("--family", help="ip | ip6 | any")
@click.option("--proto", help="tcp | udp | icmp | icmpv6 | any")
@click.option("--src", multiple=True, help="Address, CIDR or @set; repeat or comma-separate.")
@click.option("--dst", multiple=True)
@click.option("--sport", multiple=True, help="Port or lo-hi range; repeat or comma-separate.")
@click.option("--dport", multiple=True)
@click.option("--iif", multiple=True)
@click.option("--oif", multiple=True)
@click.option("--icmp-type", "icmp_type", multiple=True)
@click.option("--to", help="snat/dnat: ADDR[:PORT], FIRST-LAST or [V6]:PORT; redirect: PORT.")
@click.option("--comment")
@click.option("--runtime", is_flag=True, help="Change the live ruleset only, not the config.")
@json_option
@click.pass_context
@guarded
def add(ctx, nat_id, runtime, as_json, **flags):
    """Add one NAT entry, last in its chain (and to the config file, unless --runtime)."""
    from ..model.nat import NAT_KEYS  # here: the NAT model is not every command's start
    fields = flag_fields(nat_id, flags, NAT_KEYS)
    if isinstance(fields.get("to"), str) and fields["to"].isdigit():
        fields["to"] = int(fields["to"])  # a redirect's port, as the config writes it
    added = _firewall(ctx).nat_add(fields, runtime=runtime)
    dump(added.to_json()) if as_json else emit(added)


@nat_group.command()
@click.argument("nat_id", metavar="ID")
@click.option("--runtime", is_flag=True, help="Change the live ruleset only, not the config.")
@click.pass_context
@guarded
def delete(ctx, nat_id, runtime):
    """Delete one NAT entry by id (and from the config file, unless --runtime)."""
    emit(_firewall(ctx).nat_delete(nat_id, runtime=runtime))


@nat_group.command(name="list")
@json_option
@click.pass_context
@guarded
def list_(ctx, as_json):
    """List the live NAT entries with counters (the first packet of each flow they translated:
    later packets follow conntrack)."""
    listing = _firewall(ctx).nat_list()
    if as_json:
        dump(listing.to_json())
        return
    click.echo(f"{'hook/prio':<18} {'id':<24} {'packets':>9} {'bytes':>11}  entry")
    for n in listing.nats:
        match = " ".join(f"{k} {v}" for k, v in n.match.items())
        to = f" to {n.to}" if n.to is not None else ""
        tag = " [runtime]" if n.runtime else ""
        click.echo(f"{n.hook + '/' + str(n.priority):<18} {n.id:<24} {n.packets:>9} "
                   f"{n.bytes:>11}  {(match + ' ' if match else '')}{n.kind}{to}{tag}")
