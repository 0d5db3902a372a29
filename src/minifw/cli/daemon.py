"""``minifw daemon``: the long-running process (src/minifw/daemon), in the foreground."""

from __future__ import annotations

import click

from ..store.state import state_dir_from_env
from .common import config_option, guarded


@click.command(name="daemon")
@config_option
@click.option("--metrics", metavar="HOST:PORT",
              help="Serve Prometheus metrics on HOST:PORT (off unless given).")
@click.pass_context
@guarded
def daemon(ctx: click.Context, config: str | None, metrics: str | None) -> None:
    """Do what 'up' does, then own the hook runners (restarted when they die), the control
    socket and the events and metrics, until SIGTERM, which does what 'down' does. SIGHUP
    reloads. systemd runs it (Type=notify): see systemd/minifw.service."""
    from ..daemon.main import serve
    serve(state_dir_from_env(ctx.obj["state_dir"]), config, metrics)


def daemon_part(state_dir: str | None) -> dict | None:
    """What the daemon serving this state directory says of itself and its runners (the
    control socket's ``status``), or None when no daemon runs."""
    from ..control import client
    where = state_dir_from_env(state_dir)
    if not client.daemon_running(where):
        return None
    return client.request(where, "status", timeout=30)


def runner_lines(part: dict) -> list[str]:
    """``status`` lines for the daemon and each supervised runner."""
    d = part.get("daemon") or {}
    lines = [f"daemon: pid {d.get('pid')}, up {_duration(d.get('uptime'))}"]
    for r in part.get("runners") or []:
        if r.get("state") == "running":
            how = f"pid {r.get('pid')}, up {_duration(r.get('uptime'))}"
        else:
            how = f"next start in {_duration(r.get('next_start_in'))}"
        counts = ", ".join(f"{r.get(k) if r.get(k) is not None else '-'} {k}"
                           for k in ("packets", "drops", "errors"))
        line = (f"  runner {r.get('file')}: {r.get('state')} ({how}), "
                f"{r.get('restarts')} restarts, {counts}")
        if r.get("last_exit"):
            line += f"; last exit: {r['last_exit']}"
        lines.append(line)
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s")


def confirm_via_daemon(state_dir: str | None) -> dict | None:
    """``confirm`` by the daemon when one runs (it owns the confirm timers then): the reply
    (``message``, ``warnings``, ``result``: the ``Confirmed`` as JSON), or None when no
    daemon runs."""
    from ..control import client
    where = state_dir_from_env(state_dir)
    if not client.daemon_running(where):
        return None
    return client.request(where, "confirm")
