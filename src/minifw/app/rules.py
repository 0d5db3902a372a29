"""The operations: up, down, reload, check, status, list, add, delete.

Each one validates everything first, then changes the kernel in one transaction, then writes the
config and state. Bad input raises before the kernel or any file is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Iterator

from . import guard as lockout, pending, runs_live
from .sets import SetService, crowdsec_armed, fresh_load
from ..compile import names
from ..compile import nft as compiler
from ..compile.carry import Carry, live_counters, plan_carry, previous
from ..runners import hookstate, supervise
from . import khooks
from ..errors import ConfigError, HookStartError, KernelError, MinifwError, RuleError, StateError
from ..hooks.config import hook_files
from ..kernel import seam, table
from ..model import Rule, Ruleset, add_rule_text, delete_rule_text, parse_config
from ..model.sets import DEFAULT_SET
from ..model.types import Hook, HookPoint
from .results.rules import (
    BanCounter, ChainInfo, Checked, ForeignChain, ListedRule, Loaded, PolicyCounter, RuleAdded,
    RuleDeleted, RuleListing, Status, Unloaded, chains_in_order,
)
from . import failsafe, lint as linting
from .results.pending import Confirmed, RolledBack
from .settle import settle_intent
from ..store import lastgood
from ..store.state import DEFAULT_CONFIG, REDERIVE, State, Store, write_atomic

CLI_SOURCE = "minifw add"


def read_config(path: str | os.PathLike) -> tuple[str, Ruleset]:
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        hint = (" No config is loaded implicitly: copy examples/seed.toml from the minifw "
                "source tree (or write your own) and pass it with --config.")
        raise ConfigError(f"no such config file.{hint}", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file: {exc}", file=path) from exc
    return text, parse_config(text, path)


class _Change:
    """One intended change's kernel side: ``committed`` once its transaction went in."""

    committed = False


class Service:
    def __init__(self, state_dir: Path, kernel: seam.Kernel | None = None):
        self.store = Store(state_dir)
        self.kernel = kernel or seam.default()

    # ---- whole-ruleset operations ------------------------------------------------------
    def check(self, config: str | None, guard: lockout.Guard | None = None) -> Checked:
        path = config or DEFAULT_CONFIG
        text, ruleset = read_config(path)
        supervise.validate(hook_files(text, os.path.abspath(path)), ruleset)
        found = lockout.report(self.kernel, self.store.dir, ruleset, guard)
        return Checked(ruleset=ruleset, document=fresh_load(ruleset), guard=found,
                       lint=linting.findings(text, path, ruleset))

    def up(self, config: str | None, guard: lockout.Guard | None = None,
           confirm: int | None = None, strict: bool = False) -> Loaded:
        with self._writing(rederive=True, op="up", confirm=confirm) as change:
            path = self._up_config(config)
            # not loaded (as at boot): a config that fails, or that the kernel refuses, brings
            # up the last good ruleset instead (failsafe.py); loaded: it changes nothing
            absent = not self.kernel.exists()
            try:
                text, ruleset = read_config(path)
                if change is None:
                    self._refuse_rolled_back(path, text)
                hooks = hook_files(text, path)
                placed = supervise.validate(hooks, ruleset)
            except ConfigError as exc:
                if absent:
                    failsafe.fall_back(self, path, exc)
                raise
            # --strict refuses here, never through the failsafe: the kernel stays as it is
            linted = linting.enforce(linting.findings(text, path, ruleset), strict)
            SetService(self.store.dir, self.kernel).compact()
            state = self.store.load_or_none() or State()  # damaged: up rewrites it
            if absent and state.loaded:  # from before a reboot: a refused load is taken back
                state = State(config=state.config)
                self.store.save(state)
            runners = supervise.plan_runners(hooks, self.store.dir, placed_by_file=placed)
            if (state.loaded and state.config == path and state.ruleset == ruleset.to_toml()
                    and self.kernel.exists() and self._in_sync(ruleset)):
                supervise.check_rule_points((k for k, _ in ruleset.chains()),
                                            runners.leaving_chains, self.store.dir)
                # the config loads and is in force: a failsafe ends (the last good ruleset is
                # left as saved: this up changed nothing)
                lastgood.clear_failsafe(self.store)
                _hooks_started(supervise.apply(runners, self.store.dir),
                               f"minifw is already up with {path}")
                if change is not None:
                    change.drop()
                return Loaded(f"minifw is already up with {path}; "
                              + (runners.describe() or "nothing changed"),
                              linted + self._warnings(ruleset), config=path,
                              rules=len(ruleset.rules),
                              hook_files=len(hooks), changed=False)
            guarded = lockout.check_ruleset(self.kernel, self.store.dir, ruleset, guard)
            new = State(loaded=True, config=path, ruleset=ruleset.to_toml())
            if change is not None:
                change.loaded(path, text)
            try:
                with self._intending("load", new) as txn:
                    self._load(ruleset, runners, txn)
            except (ConfigError, KernelError) as exc:
                if absent and not self.kernel.exists():  # refused whole: nothing went in
                    failsafe.fall_back(self, path, exc)
                raise
            self.store.commit(new)
            if change is None:  # on a timer, it is the last good one only once confirmed
                self._good(new, hooks)
            _hooks_started(supervise.apply(runners, self.store.dir),
                           f"minifw is up with {len(ruleset.rules)} rules from {path}")
        done = runners.describe()
        return Loaded(f"minifw is up: {len(ruleset.rules)} rules"
                      + (f", {len(hooks)} hook files" if hooks else "") + f" from {path}"
                      + (f"; {done}" if done else "") + _notice(change),
                      guarded + linted + self._warnings(ruleset),
                      config=path, rules=len(ruleset.rules), hook_files=len(hooks))

    def _up_config(self, config: str | None) -> str:
        """``up``'s config: the one given, else the one loaded (as ``reload``), else the
        default file."""
        if config:
            return os.path.abspath(config)
        state = self.store.load_or_none()
        if state is not None and state.loaded and state.config:
            return state.config
        return os.path.abspath(DEFAULT_CONFIG)

    def _in_sync(self, ruleset: Ruleset) -> bool:
        """The live declarative chains hold what the ruleset compiles to (rule by rule, by
        comment): a chain flushed or edited by another tool makes ``up`` load again."""
        listing = self.kernel.listing()
        armed = crowdsec_armed(ruleset, listing, self.store.dir, self.kernel)
        return table.declarative_layout(listing) == compiler.expected_layout(
            compiler.build_load(armed))

    def reload(self, config: str | None, restart_hooks: bool = False,
               guard: lockout.Guard | None = None, confirm: int | None = None,
               strict: bool = False) -> Loaded:
        """Replace the declarative ruleset, and bring the [[hook]] runners in line: a runner
        whose file left the config stops, one whose file changed restarts, a new file starts."""
        with self._writing(rederive=config is not None, op="reload", confirm=confirm) as change:
            state = self.store.load() if config is None else self.store.load_or_none()
            path = os.path.abspath(config) if config else state.config
            if path is None:
                raise StateError("nothing to reload: minifw has not been brought up here; "
                                 "run 'minifw up --config FILE'")
            text, ruleset = read_config(path)
            hooks = hook_files(text, path)
            placed = supervise.validate(hooks, ruleset)
            linted = linting.enforce(linting.findings(text, path, ruleset), strict)
            runners = supervise.plan_runners(hooks, self.store.dir, restart_all=restart_hooks,
                                             placed_by_file=placed)
            guarded = lockout.check_ruleset(self.kernel, self.store.dir, ruleset, guard)
            new = State(loaded=True, config=path, ruleset=ruleset.to_toml())
            if change is not None:
                change.loaded(path, text)
            with self._intending("load", new) as txn:
                self._load(ruleset, runners, txn)
            self.store.commit(new)
            if change is None:  # on a timer, it is the last good one only once confirmed
                self._good(new, hooks)
            _hooks_started(supervise.apply(runners, self.store.dir),
                           f"reloaded {len(ruleset.rules)} rules from {path}")
        done = runners.describe()
        return Loaded(f"reloaded {len(ruleset.rules)} rules from {path}"
                      + (f"; {done}" if done else "") + _notice(change),
                      guarded + linted + self._warnings(ruleset),
                      config=path, rules=len(ruleset.rules), hook_files=len(hooks))

    def _load(self, ruleset: Ruleset, runners: supervise.RunnerPlan | None = None,
              txn: _Change | None = None) -> None:
        """One transaction for the declarative chains and sets, which also deletes the chains
        of hook runners the plan retires (their file left the config), so a rule chain may
        take their place in the same commit. No runner is touched before it: if it fails,
        every hook runs on as before. (Restarts come after, make before break: see
        supervise.RunnerPlan.)"""
        leaving = runners.leaving_chains if runners else []
        supervise.check_rule_points((k for k, _ in ruleset.chains()), leaving, self.store.dir)
        supervise.check_nat_points(ruleset, leaving, self.store.dir)
        listing = self.kernel.listing()  # read once, just before the transaction
        chains, limits = table.objects(listing)
        kernel_sets, _, _ = table.kernel_objects(listing)
        ruleset = crowdsec_armed(ruleset, listing if table.exists(listing) else None,
                                 self.store.dir, self.kernel)
        carry = plan_carry(self._loaded_or_none(ruleset), ruleset, live_counters(listing),
                           kernel_sets)
        retire = supervise.retire_commands(runners, chains) if runners else []
        try:
            self.kernel.run(_with(compiler.build_load(ruleset, chains, limits, kernel_sets,
                                                      carry), retire))
        except KernelError:
            if not carry.keep:
                raise
            # a kept run set that does not hold what the state says (edited by hand?): made
            # again, its element counters from 0
            self.kernel.run(_with(compiler.build_load(ruleset, chains, limits, kernel_sets,
                                                      Carry(carry.counters)), retire))
        if txn is not None:
            txn.committed = True
        SetService(self.store.dir, self.kernel).after_load(ruleset, kernel_sets)

    def down(self) -> Unloaded:
        with self._writing(rederive=True, op="down"):
            state = self.store.load_or_none() or State()  # damaged: down rewrites it
            supervise.stop_all(self.store.dir)
            supervise.forget(self.store.dir)
            present = self.kernel.exists()
            new = dataclasses.replace(state, loaded=False, ruleset={})
            with self._intending("down", new) as txn:
                if present:
                    self.kernel.run(compiler.build_down())
                    txn.committed = True
            self.store.commit(new)
            lastgood.clear_failsafe(self.store)  # the last good ruleset stays, for the next boot
        return Unloaded("minifw is down: table inet minifw removed" if present
                        else "minifw was not loaded; nothing to remove", removed=present)

    def _loaded_or_none(self, new: Ruleset) -> Ruleset | None:
        """The ruleset in force, whose counters loading ``new`` carries over; None if none is."""
        try:
            state = self.store.load_or_none()
            return previous(state.ruleset, new) if state is not None and state.loaded else None
        except MinifwError:
            return None

    # ---- reads ---------------------------------------------------------------------------
    def _live(self, state: State | None = None) -> Ruleset:
        state = state or self.store.load()
        try:
            return Ruleset.from_toml(state.ruleset)
        except ConfigError as exc:
            raise StateError(f"{self.store.file} is damaged: its ruleset does not load "
                             f"({exc}); {REDERIVE}") from None

    def status(self) -> Status:
        SetService(self.store.dir, self.kernel).settle_pending()
        state = self.store.load()
        present = self.kernel.exists()
        live = self._live(state) if state.loaded else Ruleset()
        # What is really hooked in, read from the kernel: rule chains, policy chains, the bans
        # chain and hook-function chains alike.
        every = self.kernel.base_chains()
        rule_counts = {names.rule_chain(h, p): len(rules) for (h, p), rules in live.chains()}
        chains = []
        for c in every:
            if (c["family"], c["table"]) != (compiler.FAMILY, compiler.TABLE):
                continue
            name = c["name"]
            known = names.kind_of(name)
            kind = ("rules" if name in rule_counts else
                    known.value if known not in (None, names.Kind.RULES) else "other")
            chains.append(ChainInfo(hook=c["hook"], priority=c.get("prio"), chain=name,
                                    kind=kind, rules=rule_counts.get(name)))
        chains = chains_in_order(chains)
        foreign = ForeignChain.select(every, {c.hook for c in chains})
        set_counts = SetService(self.store.dir, self.kernel).summary()
        warnings = []
        missing = state.loaded and not present
        if missing:
            warnings.append("state says minifw is up, but table inet minifw is missing "
                            "(flushed by another tool?); run 'minifw reload'")
        warnings += [f.warning() for f in foreign]
        waiting, rolled_back, damaged = pending.describe(self.store.dir)
        if damaged:
            warnings.append(damaged)
        served = _daemon_status(self.store.dir)
        from .crowdsec import feed_status  # lazy: only where a feed ever ran
        return Status(pending=waiting, crowdsec=feed_status(self.store.dir), rolled_back=rolled_back,
                      daemon=served["daemon"] if served else None,
                      runners=tuple(served["runners"]) if served else (),
                      loaded=state.loaded and present, config=state.config,
                      policies={h.value: live.policy(h).value for h in Hook},
                      stateful=live.stateful, chains=tuple(chains), rules=len(live.rules),
                      set_elements=tuple(set_counts), foreign_chains=tuple(foreign),
                      warnings=tuple(warnings), table_missing=missing,
                      hooks=tuple(supervise.status(self.store.dir)),
                      hook_problems=tuple(supervise.problems(self.store.dir)),
                      kernel_hooks=tuple(khooks.status(self.store.dir)),
                      failsafe=failsafe.info(self.store, state.loaded and present))

    def list_rules(self) -> RuleListing:
        SetService(self.store.dir, self.kernel).settle_pending()
        state = self.store.load()
        if not state.loaded:
            return RuleListing()
        live = self._live(state)
        counters: dict[str, list[int]] = {}
        for (hook, prio), _ in live.chains():
            for lr in _chain_rules_or_empty(self.kernel, names.rule_chain(hook, prio)):
                if lr.rule_id:
                    c = counters.setdefault(lr.rule_id, [0, 0])
                    c[0] += lr.packets
                    c[1] += lr.bytes
        counters.update(runs_live.run_counters(self.kernel, live))  # rules merged into set lookups
        rules = []
        runtime = set(state.ruleset.get("runtime", []))
        for rule in live.ordered():
            packets, nbytes = counters.get(rule.id, (0, 0))
            rules.append(ListedRule(id=rule.id, hook=rule.hook.value, priority=rule.priority,
                                    match=rule.match_dict(), action=rule.action.value,
                                    log=rule.log, comment=rule.comment, packets=packets,
                                    bytes=nbytes, runtime=rule.id in runtime))
        policies = []
        for hook in live.drop_hooks:
            dropped = [lr for lr in _chain_rules_or_empty(self.kernel, names.policy_chain(hook))
                       if lr.packets or lr.bytes]
            policies.append(PolicyCounter(hook=hook.value, policy="drop",
                                          packets=sum(lr.packets for lr in dropped),
                                          bytes=sum(lr.bytes for lr in dropped)))
        return RuleListing(rules=tuple(rules), policies=tuple(policies),
                           bans=_ban_counters(self.kernel.listing()),
                           kernel_hooks=tuple(k for k in khooks.status(self.store.dir)
                                              if k.where == "kernel"))

    # ---- incremental edits -------------------------------------------------------------
    def add(self, fields: dict[str, Any], position: int | None, runtime: bool,
            guard: lockout.Guard | None = None, confirm: int | None = None) -> RuleAdded:
        with self._writing(op="add", confirm=confirm) as change:
            state = self._require_up()
            live = self._live(state)
            try:
                rule = Rule.from_toml(fields)
                new_live = live.with_rule(rule, position)
            except RuleError as exc:
                raise exc.located(CLI_SOURCE) from None
            peers = [r for r in live.rules if (r.hook, r.priority) == (rule.hook, rule.priority)]
            if position is not None and position > len(peers):
                raise RuleError(f"{position} is past the end of chain "
                                f"{rule.hook.value}/{rule.priority}, which has {len(peers)} "
                                "rules", rule=rule.id, field="position", file=CLI_SOURCE)
            later = peers[position:] if position is not None else []
            new_text = None
            if not runtime:
                text, on_disk = read_config(state.config)
                in_file = {r.id for r in on_disk.rules}
                before = next((r.id for r in later if r.id in in_file), None)
                new_text = add_rule_text(text, rule, before)
                parse_config(new_text, state.config)  # the edited file must still load
            chain = names.rule_chain(rule.hook, rule.priority)
            supervise.check_rule_points([(rule.hook, rule.priority)], state_dir=self.store.dir)
            guarded = lockout.check_ruleset(self.kernel, self.store.dir, new_live, guard)
            chains, _ = self.kernel.objects()
            before_handle = None
            if later:
                handles = {lr.rule_id: lr.handle for lr in reversed(self.kernel.chain_rules(chain))}
                before_handle = handles.get(compiler.helper_comment(later[0].id),
                                            handles.get(later[0].id))
            toml = new_live.to_toml()
            runtime_ids = list(state.ruleset.get("runtime", []))
            if runtime:
                runtime_ids.append(rule.id)
            if runtime_ids:
                toml["runtime"] = runtime_ids
            new = dataclasses.replace(state, ruleset=toml)
            if change is not None and new_text is not None:  # the file: only at confirm
                change.keep_config(state.config, new_text)
                new_text = None
            with self._intending("edit", new, new_text) as txn:
                if not runs_live.edit_chain(self.kernel, chain, live, new_live):
                    self.kernel.run(compiler.build_add(rule, new_live, chain in chains,
                                                       before_handle))
                txn.committed = True
                if new_text is not None:
                    write_atomic(Path(state.config), new_text)
            self.store.commit(new)
            if change is None:  # on a timer, it is the last good one only once confirmed
                self._good(new, keep_failsafe=True)
        where = ("runtime only" if runtime else f"saved to {state.config}" if change is None
                 else f"saved to {state.config} at 'minifw confirm'")
        return RuleAdded(f"added rule {rule.id} at {rule.hook.value}/{rule.priority} ({where})"
                         + _notice(change), guarded, id=rule.id,
                         point=HookPoint(rule.hook, rule.priority),
                         saved_to=None if runtime else state.config)

    def delete(self, rule_id: str, runtime: bool, guard: lockout.Guard | None = None,
               confirm: int | None = None) -> RuleDeleted:
        with self._writing(op="delete", confirm=confirm) as change:
            state = self._require_up()
            live = self._live(state)
            rule = live.get(rule_id)
            if rule is None:
                raise RuleError("no such rule is loaded; see 'minifw list'", rule=rule_id,
                                field="id", file="minifw delete")
            new_live = live.without(rule_id)
            new_text = None
            if not runtime:
                text, on_disk = read_config(state.config)
                if on_disk.get(rule_id) is not None:
                    new_text = delete_rule_text(text, rule_id)
                    parse_config(new_text, state.config)
            guarded = lockout.check_ruleset(self.kernel, self.store.dir, new_live, guard)
            chain = names.rule_chain(rule.hook, rule.priority)
            live_rules = self.kernel.chain_rules(chain)
            mine = (rule_id, compiler.helper_comment(rule_id))  # its helper log rules go too
            handles = [lr.handle for lr in live_rules if lr.rule_id in mine]
            last = len(handles) == len(live_rules)
            toml = new_live.to_toml()
            runtime_ids = [i for i in state.ruleset.get("runtime", []) if i != rule_id]
            if runtime_ids:
                toml["runtime"] = runtime_ids
            new = dataclasses.replace(state, ruleset=toml)
            saved = new_text is not None
            if change is not None and new_text is not None:  # the file: only at confirm
                change.keep_config(state.config, new_text)
                new_text = None
            with self._intending("edit", new, new_text) as txn:
                if not runs_live.edit_chain(self.kernel, chain, live, new_live, [rule]):
                    self.kernel.run(compiler.build_delete(rule, handles, delete_chain=last))
                txn.committed = True
                if new_text is not None:
                    write_atomic(Path(state.config), new_text)
            self.store.commit(new)
            if change is None:  # on a timer, it is the last good one only once confirmed
                self._good(new, keep_failsafe=True)
        where = ("runtime only" if runtime or not saved else f"saved to {state.config}"
                 + (" at 'minifw confirm'" if change is not None else ""))
        return RuleDeleted(f"deleted rule {rule_id} ({where})" + _notice(change), guarded,
                           id=rule_id, saved_to=None if runtime or not saved else state.config)

    # ---- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self, rederive: bool = False, op: str | None = None,
                 confirm: int | None = None) -> Iterator[pending.Change | None]:
        """The writers' lock, and the recovery of whatever a kill interrupted before.
        ``rederive``: this command rewrites the state from a config, so a damaged intent or
        state file is no obstacle. Then the pending change's gate (app.pending): an overdue
        one is rolled back, another change refused while one waits; yields the change to
        confirm, if ``confirm``."""
        with self.store.locked():
            if rederive:
                try:
                    self.store.read_intent()
                except StateError:
                    self.store.clear_intent()
            sets = SetService(self.store.dir, self.kernel)
            sets.recover_interrupted()
            change = pending.gate(self.store, self.kernel, sets, op, confirm)
            try:
                yield change
            except BaseException:
                if change is not None:
                    change.abandon()
                raise
            if change is not None:
                change.arm()
            supervise.applied(self.store.dir)  # the daemon's plug-ins follow the ruleset

    # ---- confirm or roll back ----------------------------------------------------------------
    def confirm(self) -> Confirmed:
        """Keep the change waiting for confirmation."""
        with self.store.locked():  # not through the gate: an overdue change is "too late"
            sets = SetService(self.store.dir, self.kernel)
            sets.recover_interrupted()
            done, written = pending.confirm(self.store, self.kernel, sets)
            state = self.store.load_or_none()
            if done.op in ("up", "reload", "add", "delete") and state is not None and state.loaded:
                self._good(state, keep_failsafe=done.op in ("add", "delete"))  # now it is good
        return Confirmed(f"confirmed the {done.op}: it stays"
                         + (f"; saved to {written}" if written else ""),
                         op=done.op, config_written=written)

    def rollback(self) -> RolledBack:
        """Undo the change waiting for confirmation, now."""
        with self.store.locked():
            sets = SetService(self.store.dir, self.kernel)
            sets.recover_interrupted()
            done, why = pending.rollback_now(self.store, self.kernel, sets)
        return RolledBack(f"rolled back the {done.op}: minifw is as it was before it",
                          op=done.op, why=why)

    def _refuse_rolled_back(self, path: str, text: str) -> None:
        """``up`` of the very config whose load was rolled back: the saved ruleset is put
        back in the kernel if it is not there (as at boot), and the load refused."""
        try:
            pending.refuse_rolled_back(self.store.dir, path, text)
        except StateError:
            state = self.store.load_or_none()
            if state is not None and state.loaded:
                live = self._live(state)
                if not (self.kernel.exists() and self._in_sync(live)):
                    with self._intending("load", state):
                        self._load(live)
                    self.store.clear_intent()
            raise

    @contextlib.contextmanager
    def _intending(self, op: str, new: State,
                   config_text: str | None = None) -> Iterator[_Change]:
        """Write the intended state before the kernel changes (the caller commits it after).
        If the change fails, the state is settled against the kernel at once, so state.json
        never stays behind it. A failure in the change's own transaction (``committed``
        unset: libnftables refused the batch, which changes nothing) keeps the saved state
        where the kernel cannot tell the two apart: a change of rule contents only."""
        self.store.write_intent(op, new, config_text)
        change = _Change()
        try:
            yield change
        except Exception:
            try:
                settle_intent(self.store, self.kernel, refused=not change.committed)
            except MinifwError:
                self.store.clear_intent()
            raise

    def _good(self, state: State, hooks: list[str] | None = None,
              keep_failsafe: bool = False) -> None:
        """The kernel took ``state``'s ruleset: it is the last good one, and a config that
        loaded ends the failsafe (an add or delete does not: the config was not read whole).
        A change on a timer (--confirm) must not come here before it is confirmed."""
        if hooks is None:  # an edit: the config's [[hook]] files are those of its runners
            hooks = sorted({r.file for r in hookstate.records(self.store.dir)
                            if r.managed and r.file})
        lastgood.remember_good(self.store, state.ruleset, state.config, hook_files=hooks)
        if not keep_failsafe:
            lastgood.clear_failsafe(self.store)

    def _require_up(self) -> State:
        state = self.store.load()
        if not state.loaded or not self.kernel.exists():
            raise StateError("minifw is not up in this namespace; run 'minifw up --config FILE' "
                             "first")
        if state.config is None:
            raise StateError("the loaded config is unknown; run 'minifw reload --config FILE'")
        return state

    def _warnings(self, ruleset: Ruleset) -> tuple[str, ...]:
        warnings = []
        logs = (any(r.log for r in ruleset.rules) or ruleset.policy_log is not None
                or any(s.log for s in ruleset.sets))
        if logs and not self.kernel.log_visible():
            warnings.append("log lines from this network namespace do not reach dmesg while "
                            "net.netfilter.nf_log_all_netns=0 in the machine's own namespace; "
                            "set it to 1 to see them")
        return tuple(warnings)


def _daemon_status(state_dir: Path) -> dict[str, Any] | None:
    """What the daemon serving ``state_dir`` says of itself and its runners, or None when no
    daemon runs."""
    from ..control import client
    if not client.daemon_running(state_dir):
        return None
    served = client.request(state_dir, "status", timeout=30)
    return {"daemon": served.get("daemon"), "runners": served.get("runners") or []}


def _notice(change: pending.Change | None) -> str:
    return f"\n{change.notice()}" if change is not None else ""


def _hooks_started(failed: list[str], done: str) -> None:
    """The ruleset went in; if a hook runner did not start, say so as the command's error."""
    if failed:
        what = "; and ".join(failed).replace("\n", " ")
        raise HookStartError(f"{done}, but {what}; see 'minifw status'")


def _ban_counters(listing: table.Listing) -> tuple[BanCounter, ...]:
    """The ban chain's drops (its rules are commented ``ban blocked``), if it is there."""
    chains = {c["name"] for c in table.items(listing, "chain")}
    if names.BAN_CHAIN not in chains:
        return ()
    counted = [lr for chain in (names.BAN_CHAIN, names.BAN_CHAIN_V4, names.BAN_CHAIN_V6)
               if chain in chains for lr in table.chain_rules(listing, chain)
               if lr.rule_id == f"ban {DEFAULT_SET}"]
    return (BanCounter(set=DEFAULT_SET, hook=Hook.PREROUTING.value, priority=names.BAN_PRIORITY,
                       packets=sum(lr.packets for lr in counted),
                       bytes=sum(lr.bytes for lr in counted)),)


def _with(document: dict[str, Any], commands: list[dict[str, Any]]) -> dict[str, Any]:
    document["nftables"] += commands
    return document


def _chain_rules_or_empty(kernel: seam.Kernel, chain: str) -> list[table.LiveRule]:
    try:
        return kernel.chain_rules(chain)
    except KernelError:
        return []
