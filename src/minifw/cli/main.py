"""The command line: argv -> ``Firewall`` calls -> printed results. The only place that prints
or exits."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..api import Firewall
from ..model.rule import RULE_KEYS
from ..model.types import (
    CT_STATES, ICMP_TYPES, ICMPV6_TYPES, LIMIT_UNITS, Action, Family, Hook, Proto,
)
from .common import (
    config_option, confirm_option, dump, emit, fail, flag_fields, guard_options, guarded,
    json_option, one_line,
)
from .diff import diff
from .daemon import confirm_via_daemon, daemon, runner_lines
from .events import log_command
from .explain import explain
from .lint import lint_verdict, strict_option
from .hooks import hook_group, run_hooks
from .nat import nat_group
from .crowdsec import crowdsec_group
from .sets import COMMANDS as SET_COMMANDS
from .top import top


def _firewall(ctx: click.Context) -> Firewall:
    return Firewall(ctx.obj["state_dir"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state-dir", envvar="MINIFW_STATE_DIR", metavar="DIR",
              help="State directory, one per instance (default /var/lib/minifw).")
@click.version_option(package_name="minifw")
@click.pass_context
def cli(ctx: click.Context, state_dir: str | None) -> None:
    """minifw: a programmable firewall on Netfilter."""
    ctx.obj = {"state_dir": state_dir}


@cli.command()
@config_option
@guard_options
@confirm_option
@strict_option
@click.pass_context
@guarded
def up(ctx, config, guard, force, confirm, strict):
    """Load the config into the kernel (like insmod). Idempotent. Without --config: the
    loaded config again, else /etc/minifw/minifw.toml."""
    emit(_firewall(ctx).up(config, guard=guard, force=force, confirm=confirm, strict=strict))


@cli.command()
@click.pass_context
@guarded
def down(ctx):
    """Remove everything minifw installed (like rmmod)."""
    emit(_firewall(ctx).down())


@cli.command()
@config_option
@click.option("--restart-hooks", is_flag=True,
              help="Restart every [[hook]] runner, not only those whose file changed.")
@guard_options
@confirm_option
@strict_option
@click.pass_context
@guarded
def reload(ctx, config, restart_hooks, guard, force, confirm, strict):
    """Re-read the config and replace the live ruleset atomically; restart [[hook]] runners
    whose file changed, stop those no longer listed, start new ones."""
    emit(_firewall(ctx).reload(config, restart_hooks=restart_hooks, guard=guard, force=force,
                               confirm=confirm, strict=strict))


@cli.command()
@json_option
@click.pass_context
@guarded
def confirm(ctx, as_json):
    """Keep the change made with --confirm (an add/delete's config file is written now)."""
    served = confirm_via_daemon(ctx.obj["state_dir"])
    if served is not None:
        for w in [] if as_json else served.get("warnings") or []:
            click.echo(f"warning: {w}", err=True)
        dump(served["result"]) if as_json else click.echo(served["message"])
        return
    done = _firewall(ctx).confirm()
    dump(done.to_json()) if as_json else emit(done)


@cli.command()
@json_option
@click.pass_context
@guarded
def rollback(ctx, as_json):
    """Undo the change made with --confirm, now."""
    done = _firewall(ctx).rollback()
    dump(done.to_json()) if as_json else emit(done)


@cli.command()
@config_option
@click.option("--guard", "guard", multiple=True, metavar="ADDR:PORT",
              help="Also check connections from ADDR to this host's PORT; repeatable.")
@json_option
@strict_option
@click.pass_context
@guarded
def check(ctx, config, guard, as_json, strict):
    """Validate a config and print what would be applied, without applying it, what the
    lockout guard finds (never refused here) and what the lint finds (shadowed rules,
    ineffective limits, redundant state, missing interfaces; errors under --strict)."""
    checked = _firewall(ctx).check(config, guard=guard)
    if as_json:
        dump(checked.to_json())
        lint_verdict(checked.lint, strict, quiet=True)
        return
    lint_verdict(checked.lint, strict)
    for line in checked.guard:
        click.echo(f"guard: {line}")
    ruleset, document = checked.ruleset, checked.document
    for hook in ruleset.drop_hooks:
        click.echo(f"policy {hook.value}: drop (stateful={str(ruleset.stateful).lower()})")
    for (hook, prio), rules in ruleset.chains():
        click.echo(f"{hook.value} priority {prio}:")
        for rule in rules:
            click.echo(f"  {_rule_line(rule.id, rule.match_dict(), rule.action.value, rule.log)}")
    for nat in ruleset.nats:  # [[nat]], in config order
        to = f" to {nat.to.format()}" if nat.to is not None else ""
        click.echo(f"nat at {nat.hook.value} priority {nat.priority}: "
                   f"{_rule_line(nat.id, nat.match_dict(), nat.kind.value, None)}{to}")
    click.echo(f"ok: {len(ruleset.rules)} rules, {len(document['nftables'])} nftables commands")
    lint_verdict(checked.lint, strict, quiet=True)


def _rule_line(rule_id: str, match: dict, action: str, log: str | None) -> str:
    parts = [f"{k}={_fmt(v)}" for k, v in match.items()]
    text = f"{rule_id:<24} {' '.join(parts) or '(any)'} -> {action}"
    return text + (f" log {log!r}" if log else "")


def _fmt(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


@cli.command()
@json_option
@click.pass_context
@guarded
def status(ctx, as_json):
    """Show whether minifw is loaded, its hooks and priorities, and other tables at its hooks.

    Exits 1 (after printing everything) when the firewall is not in force as asked: table
    inet minifw is gone while the state says up, a [[hook]] file or `minifw run` hook is
    not running (its runner failed to start or died), or `up` fell back to the last good
    ruleset, or to nothing (failsafe)."""
    st = _firewall(ctx).status()
    served = {"daemon": st.daemon, "runners": st.runners} if st.daemon else None
    if as_json:
        dump(st.to_json())
        _status_fails(st)
        return
    fallen = st.failsafe is not None  # then the ruleset in force is not the config's
    click.echo(f"minifw: {'loaded' if st.loaded else 'not loaded'}"
               + (f" from {st.config}" if st.loaded and st.config and not fallen else ""))
    if fallen:
        click.echo(st.failsafe.line())
        if st.failsafe.hook_files_not_started:
            click.echo("failsafe: hook files not started: "
                       + ", ".join(st.failsafe.hook_files_not_started))
    for c in st.chains:
        extra = f"{c.rules} rules" if c.kind == "rules" else c.kind
        click.echo(f"  {c.hook:<12} priority {c.priority:>6}  {c.chain:<22} {extra}")
    click.echo(f"rules: {st.rules}  sets: {st.sets}")
    for h in st.hooks:
        q = h.queue
        click.echo(f"  hook {q.function} at {q.hook}/{q.priority}: queue {q.queue} "
                   f"fail-{q.fail}{' per-flow' if q.per_flow else ''} pid {h.pid} "
                   f"{'running' if h.running else 'DEAD (chains left in place)'}")
    for k in st.kernel_hooks:
        counts = (f" packets {k.packets} drops {k.drops}" if k.packets is not None else "")
        counts += f" log lines lost {k.log_lost}" if k.log_lost else ""
        counters = "".join(f" {n}={v}" for n, v in k.counters)
        click.echo(f"  hook {k.function} at {k.hook}/{k.priority}: {k.where} ({k.reason})"
                   f"{counts}{counters}")
    for line in runner_lines(served) if served else ():
        click.echo(line)
    for s in st.set_elements:
        click.echo(f"  set {s.name:<16} {s.elements:>9} elements ({s.addresses} "
                   f"addresses, {s.cidrs} CIDRs)")
    if st.crowdsec is not None:
        from ..app.crowdsec import status_text
        click.echo(status_text(st.crowdsec))
    if st.pending:
        p = st.pending
        click.echo(f"pending: {p.op} rolls back in {p.seconds_left} s unless 'minifw confirm' "
                   f"runs (--confirm {p.seconds})")
    if st.rolled_back:
        r = st.rolled_back
        click.echo(f"rolled back: {r.op} at {_when(r.at)} ({r.why})")
    for w in st.warnings:
        click.echo(f"warning: {w}")
    for p in st.hook_problems:
        click.echo(f"warning: {_problem_text(p)}")
    _status_fails(st)


def _when(epoch: float) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _problem_text(p: Any) -> str:
    if p.file is None:  # a damaged runner record: the reason says it all
        return p.reason
    state = "was not restarted" if p.running else "is not running"
    return f"hook file {p.file} {state}: {p.reason}"


def _status_fails(st: Any) -> None:
    """A firewall that is not in force as asked makes `status` fail, in one line: failsafe,
    the table gone from under a loaded state, or a hook that is not running."""
    if st.failsafe is not None:
        what = ("runs the last good ruleset" if st.failsafe.running
                else "has no ruleset loaded")
        fail(f"minifw is in failsafe: it {what}, since {st.failsafe.config} did not load at "
             f"{st.failsafe.since}; fix it, then run 'minifw reload'")
    if st.table_missing:
        fail("minifw should be up, but table inet minifw is missing (flushed by another "
              "tool?); run 'minifw reload'")
    problems = st.hook_problems
    if len(problems) == 1:
        fail(_problem_text(problems[0]))
    elif problems:
        fail(f"{len(problems)} hooks are not running as asked: "
              f"{', '.join(p.file or 'a damaged runner record' for p in problems)}; "
              "'minifw status' says why")


@cli.command(name="list")
@json_option
@click.pass_context
@guarded
def list_(ctx, as_json):
    """List the live rules in evaluation order, with counters."""
    listing = _firewall(ctx).list()
    if as_json:
        dump(listing.to_json())
        return
    hdr = f"{'hook/prio':<18} {'id':<24} {'packets':>9} {'bytes':>11}  rule"
    click.echo(hdr)
    for r in listing.rules:
        where = f"{r.hook}/{r.priority}"
        line = _rule_line("", dict(r.match), r.action, r.log).strip()
        tag = " [runtime]" if r.runtime else ""
        click.echo(f"{where:<18} {r.id:<24} {r.packets:>9} {r.bytes:>11}  {line}{tag}")
    for p in listing.policies or ():
        click.echo(f"{p.hook + '/1000':<18} {'policy ' + p.hook:<24} {p.packets:>9} "
                   f"{p.bytes:>11}  drop what no rule accepted")
    for b in listing.bans or ():
        click.echo(f"{b.hook + '/' + str(b.priority):<18} {'ban ' + b.set:<24} {b.packets:>9} "
                   f"{b.bytes:>11}  drop what set {b.set} holds")
    for k in listing.kernel_hooks:
        counters = "".join(f", {n}={v}" for n, v in k.counters)
        click.echo(f"{k.hook + '/' + str(k.priority):<18} {'hook ' + k.function:<24} "
                   f"{'?' if k.packets is None else k.packets:>9} {'-':>11}  in the kernel: "
                   f"{'?' if k.drops is None else k.drops} dropped{counters}"
                   f"{f', {k.log_lost} log lines lost' if k.log_lost else ''}")


def _choices(kind: Any) -> str:
    return " | ".join(m.value for m in kind)


@cli.command()
@click.option("--id", "rule_id", help="1-64 letters, digits, '_', '.', '-' (default: derived "
              "from the rule).")
@click.option("--hook", help=f"{_choices(Hook)} (default input).")
@click.option("--priority", type=int, help="An integer below 1000 (default 0).")
@click.option("--family", help=f"{_choices(Family)} (default any).")
@click.option("--proto", help=f"{_choices(Proto)} (default any).")
@click.option("--src", multiple=True, help="Address, CIDR or @set; repeat or comma-separate.")
@click.option("--dst", multiple=True, help="Address, CIDR or @set; repeat or comma-separate.")
@click.option("--sport", multiple=True, help="Port 0-65535 or lo-hi range (tcp, udp); repeat "
              "or comma-separate.")
@click.option("--dport", multiple=True, help="Port 0-65535 or lo-hi range (tcp, udp); repeat "
              "or comma-separate.")
@click.option("--iif", multiple=True, help="Interface name, 'eth*' for a prefix (prerouting, "
              "input, forward).")
@click.option("--oif", multiple=True, help="Interface name, 'eth*' for a prefix (forward, "
              "output, postrouting).")
@click.option("--state", multiple=True, help=f"{' | '.join(CT_STATES)}; repeat or "
              "comma-separate.")
@click.option("--icmp-type", "icmp_type", multiple=True,
              help=f"0-255, or for icmp: {' | '.join(ICMP_TYPES)}; for icmpv6: "
                   f"{' | '.join(ICMPV6_TYPES)}.")
@click.option("--action", required=True, help=f"{_choices(Action)}.")
@click.option("--log", help="Kernel-log prefix, at most 127 bytes.")
@click.option("--limit", help=f"RATE/UNIT [burst N], UNIT one of {' | '.join(LIMIT_UNITS)}.")
@click.option("--comment", help="Free text kept with the rule.")
@click.option("--position", type=click.IntRange(min=0), help="0-based place within its chain.")
@click.option("--runtime", is_flag=True, help="Change the live ruleset only, not the config.")
@guard_options
@confirm_option
@json_option
@click.pass_context
@guarded
def add(ctx, rule_id, position, runtime, guard, force, confirm, as_json, **flags):
    """Add one rule to the live ruleset (and the config file, unless --runtime)."""
    fields = flag_fields(rule_id, flags, RULE_KEYS)
    added = _firewall(ctx).add(fields, position=position, runtime=runtime, guard=guard,
                               force=force, confirm=confirm)
    dump(added.to_json()) if as_json else emit(added)


@cli.command()
@click.argument("rule_id")
@click.option("--runtime", is_flag=True, help="Change the live ruleset only, not the config.")
@guard_options
@confirm_option
@click.pass_context
@guarded
def delete(ctx, rule_id, runtime, guard, force, confirm):
    """Delete one rule by id from the live ruleset (and the config file, unless --runtime)."""
    emit(_firewall(ctx).delete(rule_id, runtime=runtime, guard=guard, force=force,
                               confirm=confirm))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return its exit status; usage errors are one line too.

    Usage errors keep click's status 2 (the convention for "you called it wrongly"); the usage
    text is shown by --help only."""
    try:
        code = cli.main(args=argv, prog_name="minifw", standalone_mode=False)
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "minifw"
        hint = f" (see '{path} --help')"
        click.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except click.Abort:
        click.echo("error: aborted", err=True)
        return 1
    return code if isinstance(code, int) else 0


def main() -> None:
    sys.exit(run())


cli.add_command(run_hooks)
cli.add_command(hook_group)
for _command in SET_COMMANDS:
    cli.add_command(_command)
cli.add_command(explain)
cli.add_command(daemon)
cli.add_command(log_command)
cli.add_command(top)
cli.add_command(nat_group)
cli.add_command(diff)
cli.add_command(crowdsec_group)
