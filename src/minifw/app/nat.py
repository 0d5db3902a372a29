"""``minifw nat add / delete / list``: [[nat]] entries edited live and incrementally.

As ``add``/``delete`` of rules (app/rules.py, whose locking, intent and state machinery this
reuses): everything is validated first, then one transaction changes the kernel, then the
config file (comments kept, model/config.py) and the state are written. An entry goes last in
its chain, as it goes last in the config. The first port forward (redirect) also puts the
``ct status dnat`` accept into the forward (input) policy chain, and the last one takes it out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..compile import names
from ..compile import nat as natc
from ..compile import nft as compiler
from ..errors import RuleError
from ..model import add_rule_text, delete_rule_text, parse_config
from ..model.nat import Nat, NatError
from ..model.ruleset import Ruleset
from ..runners import supervise
from ..store.state import State, write_atomic
from .results.nat import ListedNat, NatAdded, NatDeleted, NatListing
from .rules import Service, _chain_rules_or_empty, read_config

CLI_SOURCE = "minifw nat add"


class NatService:
    def __init__(self, rules: Service):
        self.rules = rules
        self.kernel = rules.kernel

    def add(self, fields: dict[str, Any], runtime: bool) -> NatAdded:
        svc = self.rules
        with svc._writing(op="add"):
            state = svc._require_up()
            live = svc._live(state)
            try:
                nat = Nat.from_toml(fields)
                new_live = dataclasses.replace(live, nats=live.nats + (nat,))
            except RuleError as exc:
                raise exc.located(CLI_SOURCE) from None
            new_text = None
            if not runtime:
                text, _ = read_config(state.config)
                new_text = add_rule_text(text, nat, None, kind="nat")
                parse_config(new_text, state.config)  # the edited file must still load
            supervise.check_nat_points(new_live, state_dir=svc.store.dir)
            chains, _ = self.kernel.objects()
            document = natc.build_nat_add(nat, live, new_live, set(chains),
                                          compiler.build_rule_bodies)
            new = _state(state, new_live, add=nat.id if runtime else None)
            self._commit(state, new, document, new_text)
        where = "runtime only" if runtime else f"saved to {state.config}"
        return NatAdded(f"added NAT entry {nat.id} ({nat.kind.value}) at {nat.hook.value}/"
                        f"{nat.priority} ({where})", id=nat.id,
                        saved_to=None if runtime else state.config)

    def delete(self, nat_id: str, runtime: bool) -> NatDeleted:
        svc = self.rules
        with svc._writing(op="delete"):
            state = svc._require_up()
            live = svc._live(state)
            nat = next((n for n in live.nats if n.id == nat_id), None)
            if nat is None:
                raise NatError("no such NAT entry is loaded; see 'minifw nat list'", nat=nat_id,
                               field="id", file="minifw nat delete")
            new_live = dataclasses.replace(live, nats=tuple(n for n in live.nats
                                                            if n.id != nat_id))
            new_text = None
            if not runtime:
                text, on_disk = read_config(state.config)
                if any(n.id == nat_id for n in on_disk.nats):
                    new_text = delete_rule_text(text, nat_id, kind="nat")
                    parse_config(new_text, state.config)
            live_rules = self.kernel.chain_rules(names.nat_chain(nat.hook))
            handles = [lr.handle for lr in live_rules if lr.rule_id == nat_id]
            accepts = {h: [lr.handle for lr in _chain_rules_or_empty(
                               self.kernel, names.policy_chain(h))
                           if lr.rule_id == natc.ACCEPT_COMMENT]
                       for h in natc.accept_hooks(live) if h not in natc.accept_hooks(new_live)}
            document = natc.build_nat_delete(nat, handles, len(handles) == len(live_rules),
                                             accepts)
            self._commit(state, _state(state, new_live, remove=nat_id), document, new_text)
        saved = new_text is not None
        return NatDeleted(f"deleted NAT entry {nat_id} ("
                          + (f"saved to {state.config})" if saved else "runtime only)"),
                          id=nat_id, saved_to=state.config if saved else None)

    def _commit(self, state: State, new: State, document: dict[str, Any],
                new_text: str | None) -> None:
        svc = self.rules
        with svc._intending("edit", new, new_text) as txn:
            self.kernel.run(document)
            txn.committed = True
            if new_text is not None:
                write_atomic(Path(state.config), new_text)
        svc.store.commit(new)
        svc._good(new, keep_failsafe=True)

    def list(self) -> NatListing:
        state = self.rules.store.load()
        if not state.loaded:
            return NatListing()
        live = self.rules._live(state)
        counters: dict[str, list[int]] = {}
        for chain in {names.nat_chain(n.hook) for n in live.nats}:
            for lr in _chain_rules_or_empty(self.kernel, chain):
                c = counters.setdefault(lr.rule_id or "", [0, 0])
                c[0] += lr.packets
                c[1] += lr.bytes
        runtime = set(state.ruleset.get("runtime", []))
        out = []
        for n in live.nats:
            packets, nbytes = counters.get(n.id, (0, 0))
            out.append(ListedNat(id=n.id, kind=n.kind.value, hook=n.hook.value,
                                 priority=n.priority, match=n.match_dict(),
                                 to=n.to.format() if n.to else None, comment=n.comment,
                                 packets=packets, bytes=nbytes, runtime=n.id in runtime))
        return NatListing(nats=tuple(out))


def _state(state: State, ruleset: Ruleset, add: str | None = None,
           remove: str | None = None) -> State:
    """``state`` with ``ruleset``, its list of runtime-only ids (rules and entries) kept."""
    toml = ruleset.to_toml()
    ids = [i for i in state.ruleset.get("runtime", []) if i != remove] + ([add] if add else [])
    if ids:
        toml["runtime"] = ids
    return dataclasses.replace(state, ruleset=toml)
