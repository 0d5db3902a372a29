"""``minifw run FILE.py`` (hook functions in the foreground) and ``minifw hook set``."""

from __future__ import annotations

import click

from ..store.state import state_dir_from_env
from .common import dump, emit, guarded, json_option


@click.command(name="run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
@guarded
def run_hooks(ctx: click.Context, file: str) -> None:
    """Run the @hook functions in FILE on real packets until Ctrl-C or SIGTERM.

    Kernel functions (where="kernel", or "auto" where they compile) are attached as BPF
    programs at their hook and priority; queue functions get a chain each in table inet
    minifw. Stopping detaches and removes them. The log (also every pkt.log line) goes to
    stderr and the state directory; kernel pkt.log lines also to the kernel log.
    """
    from ..runners import krun, runner as hook_runner
    state_dir = state_dir_from_env(ctx.obj["state_dir"])
    log_path = hook_runner.setup_logging(state_dir, foreground=True)

    def ready(plan, runner) -> None:
        names = ", ".join(f"{p.spec.name}@{p.spec.hook.value}/{p.spec.priority} "
                          f"({p.choice.where})" for p in plan.placed)
        click.echo(f"minifw: running {len(plan.placed)} hook functions ({names}); "
                   f"log {log_path}; Ctrl-C stops", err=True)

    krun.run(file, state_dir, ready=ready)
    click.echo("minifw: hook functions removed", err=True)


@click.group(name="hook")
def hook_group() -> None:
    """Kernel hook functions of [[hook]] files, while they run."""


@hook_group.command(name="set")
@click.argument("target", metavar="FILE:NAME")
@click.argument("op", type=click.Choice(["add", "del"]))
@click.argument("addrs", nargs=-1, required=True, metavar="ADDR...")
@click.option("--timeout", type=float, metavar="SECONDS",
              help="With add: the entries expire after SECONDS.")
@json_option
@click.pass_context
@guarded
def hook_set(ctx: click.Context, target: str, op: str, addrs: tuple[str, ...],
             timeout: float | None, as_json: bool) -> None:
    """Add or delete addresses and CIDRs of the module-level Addresses NAME of the [[hook]]
    FILE while its kernel functions run (no reload; 'reload' starts again from the file)."""
    from ..api import Firewall
    from ..errors import ConfigError
    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise ConfigError(f"{target!r}: give FILE:NAME, the hook file and the name of its "
                          "module-level Addresses")
    done = Firewall(ctx.obj["state_dir"]).hook_set(file, name, op, list(addrs), timeout)
    if as_json:
        dump(done.to_json())
    else:
        emit(done)
