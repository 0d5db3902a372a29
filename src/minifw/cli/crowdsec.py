"""``minifw crowdsec sync [--once]``: the CrowdSec bouncer where no daemon runs it."""

from __future__ import annotations

import logging
import signal
import threading

import click

from .common import config_option, dump, echo, guarded, json_option


@click.group(name="crowdsec")
def crowdsec_group():
    """CrowdSec: LAPI's decisions into a set ([crowdsec] in the config)."""


@crowdsec_group.command()
@click.option("--once", is_flag=True, help="One sync (a full one), then exit.")
@config_option
@json_option
@click.pass_context
@guarded
def sync(ctx, once, config, as_json):
    """Read LAPI's decision stream into the set, once or every interval until stopped."""
    from ..app.crowdsec import Bouncer, configured
    state_dir = ctx.obj["state_dir"]
    bouncer = Bouncer(state_dir, configured(state_dir, config))
    try:
        if once:
            result = bouncer.sync()
            dump(result.to_json()) if as_json else echo(result.message)
            return
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        bouncer.run(stop, logging.getLogger("minifw.crowdsec"))
    finally:
        bouncer.close()
