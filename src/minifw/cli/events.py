"""``minifw log``: the events of events.jsonl (and its rotated files), filtered; ``-f`` follows,
over the daemon's control socket when it runs, else by following the file across rotations."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Iterator

import click

from ..events.files import EventFilter, events_path, follow, iter_events, parse_network, \
    parse_since, read_events
from ..events.record import format_line
from ..store.state import state_dir_from_env
from .common import echo, guarded, json_option

FOLLOW_BACKLOG = 10  # lines -f shows before following, unless -n says otherwise


def _check(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return value
    return callback


@click.command(name="log")
@click.option("-f", "--follow", "following", is_flag=True,
              help="Keep printing new events as they come (Ctrl-C stops).")
@json_option
@click.option("--rule", metavar="ID", help="Only events of this rule id (or policy:<hook>, "
              "set:<name>, hook:<function>).")
@click.option("--src", metavar="CIDR", callback=_check(parse_network),
              help="Only packets from this network or address.")
@click.option("--dst", metavar="CIDR", callback=_check(parse_network),
              help="Only packets to this network or address.")
@click.option("--since", metavar="WHEN", callback=_check(lambda t: parse_since(t, 0.0)),
              help="Only events since WHEN: 10m, 30s, 2h, 1d ago, or an RFC 3339 UTC time.")
@click.option("-n", "last", type=click.IntRange(min=0), metavar="N",
              help=f"Only the last N events (with -f: default {FOLLOW_BACKLOG}).")
@click.pass_context
@guarded
def log_command(ctx: click.Context, following: bool, as_json: bool, rule: str | None,
                src: str | None, dst: str | None, since: str | None, last: int | None) -> None:
    """Show the structured events: drops and logged packets of rules, bans, drop policies and
    hook functions, one readable line each (or JSON lines with --json)."""
    state_dir = state_dir_from_env(ctx.obj["state_dir"])
    where = EventFilter(rule=rule, src=parse_network(src) if src else None,
                        dst=parse_network(dst) if dst else None,
                        since=parse_since(since, time.time()) if since else None)
    show = _printer(as_json)
    if following and last is None:
        last = FOLLOW_BACKLOG
    path = events_path(state_dir)
    try:
        if last is None and not following:
            for event in iter_events(path, where):
                show(event)
        elif last:
            for event in read_events(path, where, last):
                show(event)
        if following:
            for event in _live(state_dir, path, where):
                show(event)
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `minifw log | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush at exit either
        os.close(devnull)


def _printer(as_json: bool) -> Callable[[dict[str, Any]], None]:
    if as_json:
        return lambda event: echo(json.dumps(event, separators=(",", ":")))
    return lambda event: echo(format_line(event))


def _live(state_dir: Any, path: Any, where: EventFilter) -> Iterator[dict[str, Any]]:
    """New events: from the daemon's ``log.follow`` when it runs, else from the file."""
    from ..control import client
    if client.daemon_running(state_dir):
        for message in client.stream(state_dir, "log.follow", filter=where.to_json()):
            event = message.get("event")
            if isinstance(event, dict):
                yield event
        return
    yield from follow(path, where)
