"""``minifw top``: the busiest rules, drop policies, sets and hook functions, live (rich), with
the latest events underneath; ``--once --json`` samples the rates over one interval for scripts.

It reads the counters itself (app/counters.py), so it works with or without a daemon; when a
daemon serves the state directory, the runners' counts come from it.
"""

from __future__ import annotations

import time
from typing import Any

import click

from .common import dump, guarded, json_option


def _daemon_runners(state_dir: str | None):
    """A function giving the daemon's runner status, or None-giving when no daemon runs."""
    from .daemon import daemon_part

    def runners() -> list[dict[str, Any]] | None:
        part = daemon_part(state_dir)
        return None if part is None else list(part.get("runners") or [])
    return runners


@click.command(name="top")
@click.option("--once", is_flag=True, help="Sample once over the interval, print, and exit "
              "(--json implies it).")
@click.option("--interval", "-i", type=click.FloatRange(min=0.1, max=3600), default=1.0,
              show_default=True, help="Seconds between readings.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows per table, and events shown.")
@json_option
@click.pass_context
@guarded
def top(ctx: click.Context, once: bool, interval: float, limit: int, as_json: bool) -> None:
    """Packets, bytes and drops per second of the busiest rules, drop policies, sets and hook
    functions, updated every interval, with the latest events underneath."""
    from ..app import counters, rates
    from ..store.state import state_dir_from_env
    state_dir = state_dir_from_env(ctx.obj["state_dir"])
    sampler = counters.Sampler(state_dir, runners=_daemon_runners(ctx.obj["state_dir"]))
    labels = sampler.labels()
    before = sampler.sample()
    if once or as_json:
        time.sleep(interval)
        found = rates.rates(before, sampler.sample(), labels)
        events = counters.latest_events(state_dir, limit)
        if as_json:
            dump({**found.to_json(), "events": events})
        else:
            from rich.console import Console
            Console().print(_view(found, events, limit))
        return
    from rich.live import Live
    with Live(auto_refresh=False, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                if sampler.stale():  # an apply since: rules and runs as they are now
                    sampler = counters.Sampler(state_dir, runners=sampler.runners)
                    labels = sampler.labels()
                after = sampler.sample()
                found = rates.rates(before, after, labels)
                live.update(_view(found, counters.latest_events(state_dir, limit), limit),
                            refresh=True)
                before = after
        except KeyboardInterrupt:
            return


def _num(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = round(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


_COLUMNS = ("pkts/s", "bytes/s", "drops/s", "packets")


def _table(title: str, first: str, rows: tuple, limit: int, detail) -> Any:
    from rich.table import Table
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column(first)
    table.add_column("where")
    for name in _COLUMNS:
        table.add_column(name, justify="right")
    for row in rows[:limit]:
        table.add_row(row.name, detail(row), _num(row.packets_per_second),
                      _num(row.bytes_per_second), _num(row.drops_per_second), _num(row.packets))
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more"
    return table


def _event_line(event: dict[str, Any]) -> str:
    ports = (f":{event.get('sport')} -> " if event.get("sport") is not None else " -> ")
    return (f"{event.get('ts', '?')} {event.get('rule')} {event.get('action') or ''} "
            f"{event.get('proto') or ''} {event.get('src')}{ports}{event.get('dst')}"
            + (f":{event.get('dport')}" if event.get("dport") is not None else ""))


def _view(found: Any, events: list[dict[str, Any]], limit: int) -> Any:
    from rich.console import Group
    from rich.text import Text
    state = "up" if found.up else "NOT LOADED"
    parts: list[Any] = [Text(f"minifw {state}: rates over {found.seconds:.1f} s", style="bold")]
    parts.append(_table("rules", "rule", found.rules, limit,
                        lambda r: f"{r.labels.get('hook')}/{r.labels.get('priority')} "
                                  f"{r.labels.get('action')}"))
    if found.policies:
        parts.append(_table("drop policies", "hook", found.policies, limit, lambda r: "policy"))
    if found.sets:
        parts.append(_table("sets", "set", found.sets, limit,
                            lambda r: f"{r.labels.get('elements')} elements"))
    if found.hooks:
        parts.append(_table("hook functions", "function", found.hooks, limit,
                            lambda r: f"{r.labels.get('hook')}/{r.labels.get('priority')} "
                                      f"queue {r.labels.get('queue')}"))
    parts.append(Text("latest events", style="bold"))
    parts += [Text(_event_line(e)) for e in events] or [Text("(none)")]
    return Group(*parts)
