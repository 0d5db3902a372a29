"""`minifw explain`: which rule decides a packet, and the trace that shows why."""

from __future__ import annotations

import json

import click

from ..api import Firewall
from ..app.results.explain import CaptureSummary
from ..engine.explain import Explanation, Probe, icmp_type_name
from .common import guarded, require_privilege

_ENDS = {"in": "reaches this host", "forward": "is forwarded", "out": "leaves this host"}


@click.command()
@click.option("--proto", help="tcp, udp, icmp or icmpv6.")
@click.option("--src", help="Source address.")
@click.option("--dst", help="Destination address.")
@click.option("--sport", help="Source port (tcp/udp; default 40000).")
@click.option("--dport", help="Destination port (tcp/udp).")
@click.option("--iif", help="Input interface name (paths in and forward).")
@click.option("--oif", help="Output interface name (paths forward and out).")
@click.option("--path", "path_kind", default=None, metavar="in|forward|out",
              help="To this host (in, the default), through it (forward) or from it (out).")
@click.option("--state", metavar="STATE", help="Conntrack state: new, established, related, "
              "invalid or untracked (default: what the kernel gives a first packet).")
@click.option("--icmp-type", "icmp_type", help="ICMP(v6) type name or number "
              "(default echo-request).")
@click.option("--config", "-c", "config", metavar="FILE",
              help="Explain this config instead of the live ruleset.")
@click.option("--pcap", metavar="FILE", help="Explain every packet of a pcap/pcapng capture "
              "and sum up by deciding rule.")
@click.option("--direction", type=click.Choice(["in", "out", "all"]), default=None,
              help="With --pcap: explain the packets entering the host (in, the default), "
              "leaving it (out, on the output path) or all.")
@click.option("--iface", metavar="NAME|MAC", help="With --pcap: the capture interface (its "
              "name here, or its MAC address), to tell each packet's direction where the "
              "capture has no direction flags.")
@click.option("--run-hooks", is_flag=True,
              help="Call Python hook functions on a packet synthesized from the flags.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@guarded
def explain(ctx, proto, src, dst, sport, dport, iif, oif, path_kind, state, icmp_type, config,
            pcap, direction, iface, run_hooks, as_json):
    """Name the rule that decides a packet, with the trace of every rule it met.

    Example: minifw explain --proto tcp --src 198.18.2.2 --dst 198.18.0.1 --dport 80
    """
    if config is None:  # the live ruleset: the state directory and the kernel
        require_privilege()
    result = Firewall(ctx.obj["state_dir"]).explain(
        config=config, pcap=pcap, direction=direction, iface=iface, run_hooks=run_hooks,
        proto=proto, src=src, dst=dst,
        sport=sport, dport=dport, iif=iif, oif=oif, path=path_kind, state=state,
        icmp_type=icmp_type)
    _warn(result.warnings)
    if isinstance(result, CaptureSummary):
        _print_summary(result, as_json)
        return
    for line in result.hook_logs:
        click.echo(f"hook log: {line}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    probe = result.probe
    click.echo(answer(result.explanation))
    click.echo(f"packet: {describe_probe(probe)}")
    if result.route:
        click.echo(f"route: {result.route}")
    for t in result.explanation.translations:
        click.echo(f"nat: {t.hook.value}/{t.priority} {t.nat} ({t.kind}): {t.describe()}"
                   + ("" if t.first_packet else " (follows conntrack)"))
    if probe.assumed:
        click.echo(f"assumed: {'; '.join(probe.assumed)}")
    click.echo(f"ruleset: {result.ruleset}")
    click.echo("trace:")
    for line in trace_lines(result.explanation):
        click.echo(f"  {line}")


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def answer(e: Explanation) -> str:
    """The short human answer."""
    where = f"{e.hook.value}/{e.priority}"
    if e.decided_by == "routing":
        return "drop: routing: the kernel has no route for the packet"
    if e.verdict == "runtime":
        note = e.trace[-1].note if e.trace else None
        if note and note.startswith("decided in the kernel"):
            return f"runtime: {note} at {where}"
        return f"runtime: decided at runtime by hook function {e.rule} at {where}"
    if e.decided_by == "hook-function":
        if e.verdict == "accept":
            return (f"accept: the packet {_ENDS[e.probe.path]}; hook function {e.rule} at "
                    f"{where} accepted it and nothing after dropped it")
        return f"drop: hook function {e.rule} at {where} drops the packet"
    if e.decided_by == "rule":
        if e.verdict == "accept":
            return (f"accept: the packet {_ENDS[e.probe.path]}; rule {e.rule} at {where} "
                    "accepted it and nothing after dropped it")
        return f"{e.verdict}: rule {e.rule} at {where} {e.verdict}s the packet"
    if e.verdict == "drop":
        return (f"drop: the {e.hook.value} policy drops the packet: no rule at "
                f"{e.hook.value} accepted it")
    last = next((s for s in reversed(e.trace) if s.kind == "policy" and s.result == "accept"),
                None)
    if last is not None:
        return (f"accept: the packet {_ENDS[e.probe.path]}; the {e.hook.value} drop policy "
                f"let it pass ({last.name})")
    return (f"accept: the packet {_ENDS[e.probe.path]}; no rule decided it, and the hooks it "
            "crosses accept by default")


def describe_probe(p: Probe) -> str:
    def end(addr, port) -> str:
        if port is None:
            return str(addr)
        return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
    text = f"{p.path} {p.proto.value} {end(p.src, p.sport)} -> {end(p.dst, p.dport)}"
    if p.icmp_type is not None:
        text += f" type {icmp_type_name(p.proto, p.icmp_type)}"
    for key in ("iif", "oif"):
        if getattr(p, key) is not None:
            text += f" {key} {getattr(p, key)}"
    return text + f" state {p.state}"


def trace_lines(e: Explanation) -> list[str]:
    lines = []
    for s in e.trace:
        where = f"{s.hook.value}/{s.priority}"
        if s.kind in ("nat", "route"):
            lines.append(f"{where:<17} {s.kind} {s.name}: {s.note or ''}"
                         + (" -> no match" if s.result == "no match" else ""))
            continue
        if s.kind == "rule":
            match = " ".join(f"{k}={_fmt(v)}" for k, v in s.match.items()) or "(any)"
            what = f"rule {s.name}: {match}"
        else:
            what = f"{s.kind} {s.name}"
        result = s.result if s.matched else "no match"
        note = f" ({s.note})" if s.note else ""
        lines.append(f"{where:<17} {what:<56} -> {result}{note}")
    return lines


def _fmt(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _print_summary(summary: CaptureSummary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
        return
    click.echo(f"{summary.capture}: {summary.packets} packets, {summary.explained} "
               f"explained (direction {summary.direction}, path {summary.path}), ruleset: "
               f"{summary.ruleset}")
    if summary.route:
        click.echo(f"route: {summary.route}")
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(summary.verdicts.items()))
    click.echo(f"verdicts: {verdicts or 'none'}")
    click.echo(f"{'decided by':<32} {'hook/prio':<18} {'packets':>8}  verdicts")
    for d in summary.deciders:
        vs = ", ".join(f"{k} {v}" for k, v in sorted(d.verdicts.items()))
        click.echo(f"{d.decider:<32} {d.hook + '/' + str(d.priority):<18} "
                   f"{d.packets:>8}  {vs}")
    if summary.hits:  # what the kernel's counters of these rules show for these packets
        click.echo("rule hits: " + ", ".join(f"{k} {v}" for k, v in
                                            sorted(summary.hits.items())))
    for reason, count in sorted(summary.skipped.items()):
        click.echo(f"skipped {count}: {reason}")
    for note in summary.notes:
        click.echo(f"note: {note}")
