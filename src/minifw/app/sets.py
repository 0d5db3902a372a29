"""Operations on named sets: ban, unban, import, list, flush, and keeping sets across loads.

Every change is validated first, then written to the kernel (one libnftables transaction) inside
a set-record transaction that commits only if the kernel took it. Bad input raises before
anything is touched. Element counts and listings come from the record (``setstore``), never from
the kernel.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import time
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Iterable, Iterator

from ..compile import sets as ksets
from ..store import journal
from ..errors import ConfigError, KernelError, StateError
from ..kernel import seam
from ..kernel.seam import PartialAdd
from ..model.sets import (
    DEFAULT_SET, SET_NAME_RE, covering, element_kind, first_overlap, format_duration,
    normalise_element,
    parse_duration,
)
from ..store.setrecord import (
    CONFIG, RECOVER, RUNTIME, SetStore, distinct_sorted, now, pack, parse_import,
)
from ..store.state import Store, in_dir, write_atomic
from .results.bans import Banned
from . import results as _results  # the other set results load when first built (PEP 562)
from .settle import settle_intent
from . import guard as lockout

if TYPE_CHECKING:
    from ..model.ruleset import Ruleset
    from .results.sets import Flushed, Imported, Recovered, SetPage, SetSummary
    from .results.unbans import Unbanned

LOAD_CHUNK = 250_000


def fresh_load(ruleset: Ruleset) -> dict[str, Any]:
    """What a load of ``ruleset`` into an empty namespace sends, for ``check``: the load
    document, then each ``[[set]]``'s elements and, for ``blocked``, its ban chain (a real load
    sends those after the document, from the record, with runtime elements too)."""
    from ..compile import nft as compiler  # lazy: a ban needs neither it nor the rule model
    document = compiler.build_load(ruleset)
    for definition in ruleset.sets:
        cmds = ksets.build_elements("add", definition.name,
                                    ((e, None) for e in definition.elements))
        if definition.name == DEFAULT_SET and definition.elements:
            cmds += ksets.build_ban_chain({element_kind(e) for e in definition.elements})
        document["nftables"] += cmds
    return document


def _pending_module() -> Any:
    from . import pending  # loaded only when a change waits for confirmation
    return pending


def _kernel_element(elem: Any, at: int) -> tuple[str, int]:
    """(element text, absolute expiry or 0) of one element of an ``nft -j`` set listing."""
    expiry = 0
    if isinstance(elem, dict) and "elem" in elem:
        if elem["elem"].get("expires"):
            expiry = at + int(elem["elem"]["expires"])
        elem = elem["elem"]["val"]
    if isinstance(elem, dict) and "prefix" in elem:
        return f"{elem['prefix']['addr']}/{elem['prefix']['len']}", expiry
    return normalise_element(str(elem)), expiry


def crowdsec_armed(ruleset: Any, listing: Any, state_dir: str | os.PathLike[str],
                   kernel: seam.Kernel | None = None) -> Any:
    """``ruleset`` with [crowdsec]'s drop rule looking up only the backing sets that hold
    elements (the record) or that the kernel looks up now (``listing``, a terse one; None: the
    table is not there). A load never narrows the live lookups, so a path that loads all four
    (a settle, a rollback, an ``add``'s chain rebuild) and a later ``up`` agree, and a kill
    between a sync's record and its kernel writes leaves no hole. Unchanged (all four) without
    [crowdsec], or where the record cannot be read."""
    if ruleset.crowdsec is None:
        return ruleset
    import dataclasses
    import sqlite3
    from ..kernel import table
    from ..model.crowdsec import CROWDSEC_RULE
    name = ruleset.crowdsec.set
    try:
        kinds = set(SetService(state_dir, kernel).record.kinds(name))
    except (StateError, OSError, sqlite3.Error):  # unreadable here: the load says so itself
        return ruleset
    if listing is not None:
        kinds |= ksets.live_set_lookups(table.items(listing, "rule"), name, CROWDSEC_RULE)
    return dataclasses.replace(ruleset, crowdsec_armed=frozenset(kinds))


class SetService:
    def __init__(self, state_dir: str | os.PathLike[str], kernel: seam.Kernel | None = None):
        self.store = Store(state_dir)
        self.kernel = kernel or seam.default()
        self.record = SetStore(state_dir, may_create=self._record_may_start_empty)
        self._journal_file = in_dir(state_dir, "sets.journal")  # a str: no pathlib on a ban
        self.apply_seconds = 0.0  # time spent in the kernel transaction, for bench/scale
        self._sent = False        # an import's single addresses all reached the kernel

    @property
    def journal_file(self) -> Path:
        from pathlib import Path
        return Path(self._journal_file)

    # ---- helpers -------------------------------------------------------------------------
    def _record_may_start_empty(self) -> bool:
        """A missing sets.db starts empty only where nothing says it held anything: minifw
        is not up here and no set of minifw's in the kernel holds an element (a listing of
        those sets: slow at 1M elements, but this runs only when sets.db is missing)."""
        state = self.store.load_or_none()
        if state is None or state.loaded:
            return False
        try:
            kernel_sets, _, _ = self.kernel.kernel_objects()
            return not any(self.kernel.set_elements(kset)
                           for kset in kernel_sets if ksets.owner_of(kset))
        except KernelError:
            return True  # no kernel to ask (not root): the writer will fail on the kernel

    @contextlib.contextmanager
    def _writing(self, op: str | None = None, confirm: int | None = None,
                 exempt: bool = False) -> Iterator[Any]:
        """The writers' lock, the recovery of whatever a kill interrupted before, and the
        pending change's gate (app.pending): yields the change to confirm, if ``confirm``."""
        with self.store.locked():
            self.recover_interrupted()
            change = None
            if confirm is not None or os.path.exists(in_dir(self.store.dir_text, "pending.json")):
                from . import pending  # only when a change is or will be pending
                change = pending.gate(self.store, self.kernel, self, op, confirm, exempt)
            try:
                yield change
            except BaseException:
                if change is not None:
                    change.abandon()
                raise
            if change is not None:
                change.arm()

    def recover_interrupted(self, sets: bool = True) -> None:
        """Settle a ruleset change, then a set change, that a kill interrupted (the lock held)."""
        settle_intent(self.store, self.kernel, self._resend_all if sets else None)
        if sets:
            self.finish_journal()

    def _resend_all(self, ruleset: Ruleset) -> None:
        """After a load a kill interrupted: every set again from the record (adds are
        idempotent)."""
        kernel_sets, _, _ = self.kernel.kernel_objects()
        self.after_load(ruleset, kernel_sets)
        for name in self.record.names():
            self.resend(name)

    def _journal(self, op: str, name: str, **what: Any) -> None:
        write_atomic(self._journal_file, journal.encode(op, name, **what))

    def _journal_done(self) -> None:
        try:
            os.unlink(self._journal_file)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StateError(f"cannot remove {self._journal_file}: {exc.strerror}; it is not "
                             "minifw's journal: move it away") from exc

    @contextlib.contextmanager
    def _journaled(self, op: str, name: str, **what: Any) -> Iterator[None]:
        """Journal a set change before the kernel sees it; drop the journal once the record
        committed, or once the change failed and was taken back (a kill leaves it)."""
        self._journal(op, name, **what)
        try:
            yield
        except Exception:
            self._journal_done()
            raise
        self._journal_done()

    def pending(self) -> bool:
        """A change interrupted by a kill waits to be settled."""
        return self.journal_file.exists() or self.store.intent_file.exists()

    def settle_pending(self) -> None:
        """For readers: settle an interrupted change first, under the lock, if there is one
        (an overdue change waiting for confirmation is rolled back there too)."""
        if self.pending() or (os.path.exists(in_dir(self.store.dir_text, "pending.json"))
                              and _pending_module().overdue(self.store.dir)):
            with self._writing():
                pass

    def finish_journal(self) -> str | None:
        """Redo the set change a kill interrupted (the lock held): each step is idempotent, so
        the kernel and the record end up with the whole change. Returns its op, if any."""
        try:
            with open(self._journal_file, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StateError(f"{self._journal_file} is a directory, not minifw's journal (it "
                             "holds no state); move it away") from None
        except OSError as exc:
            raise StateError(f"cannot read {self._journal_file}: {exc.strerror}") from exc
        try:
            entry = journal.decode(data)
        except journal.JournalError as exc:
            raise StateError(f"{self._journal_file} (a set change interrupted by a kill) is "
                             f"damaged: {exc}; {RECOVER}") from None
        op, name, items, expiry = entry["op"], entry["set"], entry["items"], entry["expiry"]
        left = expiry - now() if expiry else None
        try:
            if left is not None and left <= 0:
                pass  # it has expired meanwhile, in the kernel too
            elif op == "ban":
                self._ban(name, items, left, expiry)
            elif op == "unban":
                self._unban(name, items)
            elif op == "flush":
                if self.record.exists(name):
                    self._flush(name)
            else:
                self._import_all(name, entry["four"], entry["six"], items, left, expiry,
                                 self._journal_file)
        except KernelError as exc:
            self._journal_done()
            raise StateError(f"the '{op}' of set {name} interrupted by a kill could not be "
                             f"completed ({exc}); the record was kept; if the kernel disagrees "
                             f"with it, {RECOVER}") from exc
        self._journal_done()
        return op

    def _name(self, name: str, source: str) -> str:
        if not SET_NAME_RE.match(name):
            raise ConfigError(f"'{name}' is not a set name: 1-32 letters, digits or '_', starting "
                              "with a letter", file=source)
        return name

    def _timeout(self, name: str, timeout: str | None, source: str) -> int | None:
        if timeout is None:
            return self.record.default_timeout(name)
        try:
            return parse_duration(timeout)
        except ValueError as exc:
            raise ConfigError(f"--timeout: {exc}", file=source) from None

    def _up(self) -> bool:
        return self.store.load().loaded

    def _ensure(self, name: str, adding: Iterable[ksets.Kind] = ()) -> list[dict[str, Any]]:
        """Commands that create the set's backing sets and, for ``blocked``, arm the ban chain's
        lookups of the backing sets that elements of the kinds ``adding`` are about to enter."""
        cmds: list[dict[str, Any]] = [{"add": {"table": {"family": ksets.FAMILY,
                                                          "name": ksets.TABLE}}}]
        cmds += ksets.build_set_decls(name)
        if name == DEFAULT_SET:
            _, _, live = self.kernel.kernel_objects()
            # chains missing or unknown: arm what the record holds (it already has the new items)
            want = (live if live is not None else self.record.kinds(name)) | set(adding)
            if want != live:
                cmds += ksets.build_ban_chain(want)
        else:  # the crowdsec set: its drop rule looks up what is about to hold elements
            cmds += self.arm_commands(name, adding=adding)[0]
        return cmds

    def arm_commands(self, name: str, kinds: Any = None, adding: Iterable[ksets.Kind] = ()
                     ) -> tuple[list[dict[str, Any]], frozenset]:
        """(commands, kinds looked up after them) that make the applied [crowdsec] drop rule
        look up the backing sets of ``kinds`` (None: those the record holds, and ``adding``)
        it does not yet: none when ``name`` is not the crowdsec set of the loaded ruleset,
        found before the record is read (a ban into another set pays nothing)."""
        state = self.store.load_or_none()
        raw = state.ruleset.get("crowdsec") if state is not None and state.loaded else None
        if not isinstance(raw, dict) or raw.get("set", "crowdsec") != name:
            return [], frozenset()
        if kinds is None:
            kinds = self.record.kinds(name) | set(adding)
        from ..compile import names, nft as compiler  # lazy: a ban elsewhere never needs them
        from ..kernel import table
        from ..model.crowdsec import CROWDSEC_RULE
        from ..model.ruleset import Ruleset
        listing = self.kernel.listing()
        live = ksets.live_set_lookups(table.items(listing, "rule"), name, CROWDSEC_RULE)
        missing = frozenset(kinds) - live
        if not missing:
            return [], live
        ruleset = Ruleset.from_toml(state.ruleset)
        rule = ruleset.get(CROWDSEC_RULE)
        chains = {c["name"] for c in table.items(listing, "chain")}
        exists = rule is not None and names.rule_chain(rule.hook, rule.priority) in chains
        return compiler.build_crowdsec_arm(ruleset, missing, exists), live | missing

    def _run(self, cmds: list[dict[str, Any]]) -> None:
        self.kernel.open()  # libnftables' one-off set-up is not the transaction's cost
        start = time.perf_counter()
        try:
            self.kernel.run({"nftables": cmds})
        finally:
            self.apply_seconds += time.perf_counter() - start

    def _guard(self, check, name: str, items: list[str], guard: lockout.Guard | None,
               *packed: tuple[list[bytes], list[bytes]]) -> tuple[str, ...]:
        """The lockout guard on a set change, while minifw is up (a change made while it is
        down reaches the kernel at the next 'up', which is guarded itself)."""
        if guard is None:
            return ()
        state = self.store.load()
        if not state.loaded:
            return ()
        return check(self.kernel, self.store.dir_text, state.ruleset, name, items, guard,
                     *packed)

    def _check_cidrs(self, name: str, new: list[str], source: str) -> None:
        if not new:
            return
        present = set(self.record.cidrs(name))
        clash = first_overlap(sorted(present | set(new)))
        if clash:
            raise ConfigError(f"{clash[0]} overlaps {clash[1]} in set {name}; the kernel keeps "
                              "CIDRs of one set disjoint. Unban one of them first", file=source)

    # ---- ban / unban -----------------------------------------------------------------------
    def ban(self, elements: Iterable[str], timeout: str | None,
            name: str = DEFAULT_SET, guard: lockout.Guard | None = None,
            confirm: int | None = None) -> Banned:
        source = "minifw ban"
        name = self._name(name, source)
        items: list[str] = []
        for raw in elements:
            try:
                items.append(normalise_element(raw))
            except ValueError as exc:
                raise ConfigError(str(exc), file=source) from None
        items = list(dict.fromkeys(items))
        with self._writing("ban", confirm, exempt=True) as change:
            seconds = self._timeout(name, timeout, source)
            expiry = now() + seconds if seconds else 0
            self._check_cidrs(name, [i for i in items if "/" in i and not self.record.get(name, i)],
                              source)
            guarded = self._guard(lockout.ban_check, name, items, guard)
            if change is not None:
                change.set_diff(name, "ban", {i: self.record.get(name, i) for i in items})
            with self._journaled("ban", name, items=items, expiry=expiry):
                config, where = self._ban(name, items, seconds, expiry)
        until = f" for {format_duration(seconds)}" if seconds else ""
        kept = "".join(f"\n{i} stays permanent in set {name}: the config lists it"
                       for i in items if i in config)
        mapped = [f"{i} is an IPv4-mapped IPv6 address: IPv4 packets from "
                  f"{ipaddress.IPv6Address(i).ipv4_mapped} do not match it; ban that address"
                  for i in items if i.startswith("::ffff:") and "/" not in i
                  and ipaddress.IPv6Address(i).ipv4_mapped]
        kept += f"\n{change.notice()}" if change is not None else ""
        return Banned(f"banned {len(items)} element(s) in set {name}{until}{where}{kept}",
                      guarded + tuple(mapped), set=name, banned=tuple(items), timeout=seconds,
                      apply_ms=round(self.apply_seconds * 1000, 3))

    def _ban(self, name: str, items: list[str], seconds: int | None,
             expiry: int) -> tuple[set[str], str]:
        """Record and apply a ban (the lock held); (config elements among ``items``, where)."""
        present = [i for i in items if self.record.get(name, i)]
        config = self.record.config_elements(name) & set(items) if seconds else set()
        with self.record.transaction() as db:
            if not self.record.exists(name):
                self.record.declare(db, name, None)
            self.record.put(db, name, ((i, expiry) for i in items), RUNTIME)
            if not self._up():
                return config, " (minifw is down: recorded, applied at the next 'minifw up')"
            cmds = self._ensure(name, {element_kind(i) for i in items})
            # re-banning refreshes the timeout: delete then add in the same transaction;
            # an element the config lists stays permanent
            refresh = ksets.build_elements("delete", name, ((i, None) for i in present))
            add = ksets.build_elements("add", name, ((i, None if i in config else seconds)
                                                     for i in items))
            try:
                self._run(cmds + refresh + add)
            except KernelError:
                if not refresh:
                    raise
                self._run(cmds + add)
        return config, ""

    def unban(self, elements: Iterable[str], name: str = DEFAULT_SET,
              guard: lockout.Guard | None = None, confirm: int | None = None) -> Unbanned:
        source = "minifw unban"
        name = self._name(name, source)
        items = []
        for raw in elements:
            try:
                items.append(normalise_element(raw))
            except ValueError as exc:
                raise ConfigError(str(exc), file=source) from None
        with self._writing("unban", confirm, exempt=True) as change:
            items = list(dict.fromkeys(items))
            guarded = self._guard(lockout.unban_check, name, items, guard)
            if change is not None:
                change.set_diff(name, "unban", {i: self.record.get(name, i) for i in items})
            with self._journaled("unban", name, items=items):
                lines, removed, absent = self._unban(name, items)
        if removed:
            lines.insert(0, f"unbanned {len(removed)} element(s) from set {name}")
        if change is not None:
            lines.append(change.notice())
        return _results.Unbanned("\n".join(lines), guarded, set=name, unbanned=tuple(removed),
                                 absent=tuple(absent), messages=tuple(lines),
                                 apply_ms=round(self.apply_seconds * 1000, 3))

    def _unban(self, name: str, items: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Remove runtime elements (the lock held): (messages, removed, absent)."""
        lines: list[str] = []
        removed: list[str] = []
        absent: list[str] = []
        with self.record.transaction() as db:
            for item in items:
                row = self.record.get(name, item)
                if row and row[1] & RUNTIME:
                    removed.append(item)
                    if row[1] & CONFIG:
                        lines.append(f"{item} stays in set {name}: the config lists it")
                    continue
                if row:
                    lines.append(f"{item} is in set {name} from the config; remove it there "
                                 "and run 'minifw reload'")
                    continue
                absent.append(item)
                cover = covering(item, self.record.cidrs(name))
                if cover:
                    lines.append(f"{item} is not banned itself; it is covered by "
                                 f"{', '.join(cover)} in set {name}; unban that CIDR to lift "
                                 "it")
                else:
                    lines.append(f"{item} is not in set {name}; nothing to unban")
            self.record.drop_origin(db, name, removed, RUNTIME)
            gone = [i for i in removed if self.record.get(name, i) is None]
            if gone and self._up():
                delete = ksets.build_elements("delete", name, ((i, None) for i in gone))
                try:
                    self._run(delete)
                except KernelError:
                    # An element may have expired in the kernel a moment before the record:
                    # added and deleted in one transaction, each goes whether it was there or
                    # not, so a refusal now is a real one, and the record keeps them all.
                    self._run(ksets.build_elements("add", name, ((i, None) for i in gone))
                              + delete)
        return lines, removed, absent

    # ---- import / flush / list -------------------------------------------------------------
    def import_file(self, name: str, path: str, skip_invalid: bool,
                    timeout: str | None, guard: lockout.Guard | None = None,
                    confirm: int | None = None) -> Imported:
        source = "minifw set import"
        name = self._name(name, source)
        try:
            with open(path, encoding="utf-8", errors="strict") as fh:
                four, six, cidrs, skipped = parse_import(fh, path, skip_invalid)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the import file: {exc}", file=path) from exc
        cidrs = list(dict.fromkeys(cidrs))
        inner = first_overlap(cidrs)
        if inner:
            raise ConfigError(f"{inner[0]} overlaps {inner[1]}; nothing was imported", file=path)
        with self._writing("import", confirm, exempt=True) as change:
            seconds = self._timeout(name, timeout, source)
            expiry = now() + seconds if seconds else 0
            self._check_cidrs(name, [c for c in cidrs if not self.record.get(name, c)], path)
            guarded = self._guard(lockout.ban_check, name, cidrs, guard, (four, six))
            if change is not None:  # element by element: what each one was before
                from ..store.setrecord import unpack
                change.set_diff(name, "import", {
                    e: self.record.get(name, e)
                    for e in itertools.chain((unpack(k) for k in four), (unpack(k) for k in six),
                                             cidrs)})
            with self._journaled("import", name, items=cidrs, expiry=expiry, four=four, six=six):
                count, up = self._import_all(name, four, six, cidrs, seconds, expiry, path)
            where = "" if up else (" (minifw is down: recorded, applied at the next "
                                   "'minifw up')")
        del four, six, cidrs
        if change is not None:
            where += f"\n{change.notice()}"
        return _results.Imported(f"imported {count} element(s) into set {name}{where}",
                                 guarded + tuple([f"skipped {s}" for s in skipped][:20]
                                       + ([f"... and {len(skipped) - 20} more skipped lines"]
                                          if len(skipped) > 20 else [])),
                                 set=name, imported=count, skipped=len(skipped),
                                 apply_ms=round(self.apply_seconds * 1000, 3))

    def _import_all(self, name: str, four: list[bytes], six: list[bytes], cidrs: list[str],
                    seconds: int | None, expiry: int, path: str) -> tuple[int, bool]:
        """Record and apply an import (the lock held): (element count, minifw up?)."""
        up = self._up()
        if up:  # the backing sets exist, and are looked up, before elements arrive
            kinds = {element_kind(c) for c in cidrs}
            kinds |= {(4, False)} if four else set()
            kinds |= {(6, False)} if six else set()
            self._run(self._ensure(name, kinds))
        cidr_cmds = ksets.build_bulk_add(name, [], cidrs, seconds) if up else []
        self._sent = False
        try:
            count = self._import(name, four, six, cidrs, cidr_cmds, seconds, expiry, up)
        except KernelError as exc:
            if not (self._sent or isinstance(exc, PartialAdd)):
                raise
            # The record did not take the import, but the kernel took (part of) its single
            # addresses: put those sets back as the record has them (flushed and refilled,
            # so for a moment they are empty; this runs only when the kernel failed us).
            self._run(ksets.build_flush_singles(name))
            self._load_all(name, singles_only=True)
            raise KernelError(f"{path}: set {name}: the import failed and was taken "
                              f"back: {exc}") from exc
        config = self.record.config_elements(name) if up and seconds else set()
        if config:  # the import gave some a timeout in the kernel: they stay permanent
            keys = set(four) | set(six)
            touched = [e for e in config if (e in cidrs if "/" in e else pack(e) in keys)]
            del keys
            if touched:
                self._run(ksets.build_elements("add", name, ((e, None) for e in touched)))
        return count, up

    def _import(self, name: str, four: list[bytes], six: list[bytes], cidrs: list[str],
                cidr_cmds: list[dict[str, Any]], seconds: int | None, expiry: int,
                up: bool) -> int:
        """Record the import and, when minifw is up, send it to the kernel meanwhile; the
        record commits only if the kernel took all of it. Returns the element count."""
        with self.record.transaction() as db:
            if not self.record.exists(name):
                self.record.declare(db, name, None)
            # The kernel transaction runs in a thread (libnftables releases the GIL) while
            # the record is written here; the record commits only if the kernel took it.
            failure: list[BaseException] = []

            def apply() -> None:
                try:
                    start = time.perf_counter()
                    # single addresses: nf_tables batches straight over netlink, built from
                    # the packed addresses (repeats are harmless: the kernel refreshes their
                    # timeout)
                    self.kernel.add_elements(ksets.TABLE, [
                        (ksets.kernel_name(name, 4, False), four),
                        (ksets.kernel_name(name, 6, False), six)],
                        seconds * 1000 if seconds else None)
                    self._sent = True
                    self.apply_seconds += time.perf_counter() - start
                    if cidr_cmds:
                        self._run(cidr_cmds)
                except BaseException as exc:  # re-raised below, in this thread
                    failure.append(exc)

            import threading  # an import's kernel work overlaps its record work; a ban has none
            worker = threading.Thread(target=apply) if up else None
            if worker:
                worker.start()
            count = len(cidrs)
            try:
                # while the kernel works (the GIL is free during the send): sort, de-repeat
                # and record each IP version as one block
                for keys in (four, six):
                    count += self.record.import_keys(db, name, distinct_sorted(keys), expiry)
                if cidrs:
                    self.record.put_sorted(db, name, sorted(cidrs), expiry, RUNTIME, "cidr")
                    self.record.retally(db, name)
            finally:
                if worker:
                    worker.join()
            if failure:
                raise failure[0]
        return count

    def flush(self, name: str) -> Flushed:
        name = self._name(name, "minifw set flush")
        with self._writing("set flush"):
            if not self.record.exists(name):
                raise ConfigError(f"there is no set '{name}'", file="minifw set flush")
            before = self.record.counts(name)["elements"]
            with self._journaled("flush", name):
                self._flush(name)
        return _results.Flushed(f"flushed set {name}: {before} element(s) removed (config "
                                "elements return at the next 'minifw reload')", set=name,
                                removed=before)

    def _flush(self, name: str) -> None:
        with self.record.transaction() as db:
            self.record.flush(db, name)
            if self._up():
                cmds = self._ensure(name) + ksets.build_flush(name)
                if name == DEFAULT_SET:  # nothing left to look up
                    cmds += ksets.build_ban_chain(())
                self._run(cmds)

    def list_set(self, name: str, page: int, page_size: int) -> SetPage:
        """One page of set ``name``'s elements; ``page`` counts from 0 here (the result's
        from 1)."""
        name = self._name(name, "minifw set list")
        self.settle_pending()
        if not self.record.exists(name):
            raise ConfigError(f"there is no set '{name}'", file="minifw set list")
        at = now()
        counts = self.record.counts(name, at)
        rows = self.record.page(name, page * page_size, page_size, at)
        element = _results.SetElement
        origins: dict[str, str] = {}
        if os.path.exists(in_dir(self.store.dir_text, "crowdsec.db")):  # a CrowdSec-fed set
            from ..store.decisions import element_origins
            origins = element_origins(self.store.dir_text, name, [a for a, _ in rows])
        return _results.SetPage(set=name, **counts, page=page + 1, page_size=page_size,
                                pages=max(1, -(-counts["elements"] // page_size)),
                                items=tuple(element(element=a, expires_in=(e - at) if e else None,
                                                    origin=origins.get(a))
                                            for a, e in rows))

    def summary(self) -> list[SetSummary]:
        at = now()
        return [_results.SetSummary(name=n, **self.record.counts(n, at))
                for n in self.record.names()]

    def recover(self) -> Recovered:
        """Rebuild the set record from the kernel's sets: one listing of each backing set.
        Timeouts keep what the kernel has left of them; elements the loaded config lists are
        config elements, the others runtime ones. A pending set journal is dropped: the
        kernel is the truth now."""
        with self.store.locked():
            self.recover_interrupted(sets=False)
            state = self.store.load_or_none()
            definitions = []
            if state is not None and state.loaded:
                try:
                    from ..model.ruleset import Ruleset
                    definitions = list(Ruleset.from_toml(state.ruleset).sets)
                except ConfigError:
                    definitions = []
            kernel_sets, _, _ = self.kernel.kernel_objects()
            found: dict[str, list[tuple[str, int]]] = {d.name: [] for d in definitions}
            at = now()
            for kset in sorted(kernel_sets):
                owner = ksets.owner_of(kset)
                if owner is None:
                    continue
                rows = found.setdefault(owner, [])
                rows += [_kernel_element(e, at) for e in self.kernel.set_elements(kset)]
            kept = self.record.rebuild(found, {d.name: d.timeout for d in definitions},
                                       {d.name: set(d.elements) for d in definitions})
            self._journal_done()
        total = sum(len(v) for v in found.values())
        return _results.Recovered(
            f"rebuilt the set record {self.record.path} from the kernel: {total} "
            f"element(s) in {len(found)} set(s)"
            + (f"; the previous files are kept as {kept}*" if kept else ""),
            sets={k: len(v) for k, v in found.items()},
            kept=str(kept) if kept else None)

    # ---- across loads ----------------------------------------------------------------------
    def compact(self) -> int:
        return self.record.compact()

    def after_load(self, ruleset: Ruleset, present_before: set[str]) -> None:
        """Bring the kernel's named sets in line with the config and the record, sending only the
        difference to sets that were already loaded, and everything to sets that were not."""
        needed = ruleset.set_names()
        wanted = list(dict.fromkeys(needed + self.record.names()))
        kernel_sets, _, live_bans = self.kernel.kernel_objects()
        with self.record.transaction() as db:
            for name in wanted:
                definition = ruleset.get_set(name)
                if definition is not None or not self.record.exists(name):
                    self.record.declare(db, name, definition.timeout if definition else None)
                config = set(definition.elements) if definition else set()
                old = self.record.config_elements(name)
                added = [e for e in (definition.elements if definition else ()) if e not in old]
                added += [e for e in self.record.config_with_expiry(name) if e in config]
                dropped = sorted(old - config)
                self.record.put(db, name, ((e, 0) for e in added), CONFIG)
                self.record.drop_origin(db, name, dropped, CONFIG)
                gone = [e for e in dropped if self.record.get(name, e) is None]
                if (name not in needed and name != DEFAULT_SET
                        and self.record.counts(name)["elements"] == 0):
                    # the config dropped it and nothing was banned into it: it goes
                    self.record.forget(db, name)
                    stale = [c for c in ksets.build_set_delete(name)
                             if c["delete"]["set"]["name"] in kernel_sets]
                    if stale:
                        self.kernel.run({"nftables": stale})
                    continue
                loaded = all(k in present_before for k in ksets.kernel_names(name))
                cmds: list[dict[str, Any]] = []
                if not all(k in kernel_sets for k in ksets.kernel_names(name)):
                    cmds += ksets.build_set_decls(name)
                if name == DEFAULT_SET:  # look up exactly the backing sets that hold elements
                    armed = self.record.kinds(name)
                    if armed != live_bans:
                        cmds += ksets.build_ban_chain(armed)
                if loaded:
                    cmds += ksets.build_elements("delete", name, ((e, None) for e in gone))
                    cmds += ksets.build_elements("add", name, ((e, None) for e in added))
                    if cmds:
                        self.kernel.run({"nftables": cmds})
                    continue
                if cmds:
                    self.kernel.run({"nftables": cmds})
                self._load_all(name)

    def resend(self, name: str) -> None:
        """Send every recorded element of ``name`` to the kernel again (adds are idempotent):
        after a kill may have cut a load short."""
        self._load_all(name)

    def _load_all(self, name: str, singles_only: bool = False) -> None:
        """Send every live recorded element of ``name`` with its remaining time: rows in chunks
        through libnftables, each imported block through nfnl (``singles_only``: leave the
        CIDRs, which go to the interval sets, out)."""
        at = now()
        rows = self.record.live(name, at)
        while True:
            chunk = list(itertools.islice(rows, LOAD_CHUNK))
            if not chunk:
                break
            if singles_only:
                chunk = [row for row in chunk if "/" not in row[0]]
            cmds = ksets.build_restore(name, chunk, at)
            if cmds:
                self.kernel.run({"nftables": cmds})
        for bid, width, expiry, _, _ in self.record.blocks(name, at):
            keys = self.record.block_keys(bid)
            self.kernel.add_elements(ksets.TABLE, [(ksets.kernel_name(name, 6 if width == 16 else 4,
                                                                  False), keys)],
                                     (expiry - at) * 1000 if expiry else None)
            del keys
