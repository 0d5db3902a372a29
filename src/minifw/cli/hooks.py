"""``minifw run FILE.py``: run Python hook functions in the foreground."""

from __future__ import annotations

import click

from ..store.state import state_dir_from_env
from .common import guarded


@click.command(name="run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
@guarded
def run_hooks(ctx: click.Context, file: str) -> None:
    """Run the @hook functions in FILE on real packets until Ctrl-C or SIGTERM.

    Each function gets its own chain at its hook and priority in table inet minifw; stopping
    removes them. The log (also every pkt.log line) goes to stderr and the state directory.
    """
    # here, not at the top: the runner's modules would weigh on every other command's start
    from ..runners import runner as hook_runner
    state_dir = state_dir_from_env(ctx.obj["state_dir"])
    log_path = hook_runner.setup_logging(state_dir, foreground=True)

    def ready(r: hook_runner.Runner) -> None:
        names = ", ".join(f"{p.spec.name}@{p.spec.hook.value}/{p.spec.priority}"
                          for p in r.placements)
        click.echo(f"minifw: running {len(r.placements)} hook functions ({names}); "
                   f"log {log_path}; Ctrl-C stops", err=True)

    hook_runner.run(file, state_dir, ready=ready)
    click.echo("minifw: hook chains removed", err=True)
