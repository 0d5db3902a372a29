"""Chains for Python hook functions, in table ``inet minifw``. Pure.

Each hook function gets one base chain at its (hook, priority), named ``hook_q<queue>_<name>``
(never a declarative name, so ``up``/``reload`` leave it alone), holding:

- with ``per_flow``: first ``ct mark & BIT != 0 counter accept`` (flows Python accepted);
- ``counter`` + queue to the function's own queue number, with ``bypass`` when fail-open.

A ``per_flow`` function also gets ``flow_q<queue>_<name>`` at priority + 1, where
``meta mark & BIT != 0 ct mark set ct mark | BIT`` copies the verdict's mark into conntrack.

Two renderings of the same plan: libnftables JSON for kernels with the nft ``queue``
expression, and a hand-built nfnetlink batch with the xtables NFQUEUE target for kernels
without it (CONFIG_NFT_QUEUE unset).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from ..hooks import HookSpec
from ..model.types import Hook
from ..netlink import nftables as nl
from . import names
from .nft import FAMILY, TABLE


@dataclasses.dataclass(frozen=True)
class Placement:
    """One hook function placed in the kernel: its queue and chain names."""

    spec: HookSpec
    queue: int

    @property
    def chain(self) -> str:
        return names.hook_chain(self.queue, self.spec.name)

    @property
    def flow_chain(self) -> str | None:
        return names.flow_chain(self.queue, self.spec.name) if self.spec.per_flow else None

    @property
    def queue_flags(self) -> nl.QueueFlag:
        return nl.QueueFlag.BYPASS if self.spec.fail_open else nl.QueueFlag(0)

    @property
    def comment(self) -> str:
        return (f"minifw hook {self.spec.name} queue {self.queue} "
                f"fail-{self.spec.fail}")

    def to_state(self) -> dict[str, Any]:
        s = self.spec
        return {"function": s.name, "hook": s.hook.value, "priority": s.priority,
                "queue": self.queue, "chain": self.chain, "flow_chain": self.flow_chain,
                "fail": s.fail, "on_error": s.on_error, "per_flow": s.per_flow,
                "flow_mark": s.flow_mark, "payload": s.payload,
                "bypass": bool(self.queue_flags & nl.QueueFlag.BYPASS)}


# ---- clashes with declarative chains ----------------------------------------------------------

def clashes(hook_points: Iterable[tuple[str, int, str]],
            declarative: Iterable[tuple[str, int, str]]) -> list[str]:
    """Sentences for each (hook, priority) shared by a hook function and a declarative chain.

    Both arguments are (hook, priority, label) triples.
    """
    taken = {(h, p): label for h, p, label in declarative}
    out = []
    for h, p, label in hook_points:
        if (h, p) in taken:
            out.append(f"{label} and {taken[(h, p)]} are both at {h} priority {p}; their "
                       "relative order would be undefined, so move one of them to another "
                       "priority.")
    return out


def declarative_points(chains: Iterable[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(hook, prio, label) of the declarative base chains in a ``list chains`` JSON listing."""
    return [(c["hook"], c["prio"], f"declarative chain {c['name']}") for c in chains
            if c.get("table") == TABLE and c.get("family") == FAMILY and "hook" in c
            and names.is_declarative(c["name"])]


def hook_points(chains: Iterable[dict[str, Any]],
                leaving: Iterable[str] = ()) -> list[tuple[str, int, str]]:
    """(hook, prio, label) of the hook-function base chains in a ``list chains`` listing,
    except those named in ``leaving`` (chains about to be removed)."""
    gone = set(leaving)
    return [(c["hook"], c["prio"], f"hook chain {c['name']}") for c in chains
            if c.get("table") == TABLE and c.get("family") == FAMILY and "hook" in c
            and c["name"] not in gone and names.kind_of(c["name"]) is names.Kind.HOOK_FUNCTION]


def ruleset_points(chains: Iterable[tuple[Hook, int]]) -> list[tuple[str, int, str]]:
    return [(h.value, p, f"rule chain {names.rule_chain(h, p)}") for h, p in chains]


# ---- xtables path: one nfnetlink batch --------------------------------------------------------

def _flow_skip(mark: int) -> list[bytes]:
    return [nl.expr_ct_load(nl.CtKey.MARK), nl.expr_bitwise(mark, 0),
            nl.expr_cmp(nl.CmpOp.NEQ, 0), nl.expr_counter(), nl.expr_verdict(nl.NfVerdict.ACCEPT)]


def _flow_save(mark: int) -> list[bytes]:
    return [nl.expr_meta_load(nl.MetaKey.MARK), nl.expr_bitwise(mark, 0),
            nl.expr_cmp(nl.CmpOp.NEQ, 0), nl.expr_ct_load(nl.CtKey.MARK),
            nl.expr_bitwise(~mark & 0xFFFFFFFF, mark), nl.expr_ct_store(nl.CtKey.MARK)]


def build_install_batch(placements: Iterable[Placement], remove: Iterable[str] = (),
                        native_queue: bool = False, first_seq: int = 1) -> nl.NftBatch:
    """ONE transaction: remove stale hook chains, then add each placement's chains and rules."""
    batch = nl.NftBatch(first_seq=first_seq)
    batch.add_table(TABLE)
    for name in remove:
        batch.delete_chain(TABLE, name)
    for p in placements:
        s = p.spec
        batch.add_chain(TABLE, p.chain, s.hook.value, s.priority)
        if s.per_flow:
            batch.add_rule(TABLE, p.chain, _flow_skip(s.flow_mark),
                           f"minifw hook {s.name}: flow already accepted")
        queue = (nl.expr_queue(p.queue, p.queue_flags) if native_queue
                 else nl.expr_xt_nfqueue(p.queue, p.queue_flags))
        batch.add_rule(TABLE, p.chain, [nl.expr_counter(), queue], p.comment)
        if p.flow_chain:
            batch.add_chain(TABLE, p.flow_chain, s.hook.value, s.priority + 1)
            batch.add_rule(TABLE, p.flow_chain, _flow_save(s.flow_mark),
                           f"minifw hook {s.name}: remember accepted flow")
    return batch


def build_remove_batch(chains: Iterable[str], first_seq: int = 1) -> nl.NftBatch:
    batch = nl.NftBatch(first_seq=first_seq)
    for name in chains:
        batch.delete_chain(TABLE, name)
    return batch


# ---- nft queue path: libnftables JSON ---------------------------------------------------------

def _ref(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **kw}


def build_install_json(placements: Iterable[Placement],
                       remove: Iterable[str] = ()) -> dict[str, Any]:
    """The same plan as build_install_batch, for a kernel with the nft ``queue`` expression."""
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name in remove:
        cmds.append({"delete": {"chain": _ref(name=name)}})
    for p in placements:
        s = p.spec
        cmds.append({"add": {"chain": _ref(name=p.chain, type="filter", hook=s.hook.value,
                                           prio=s.priority, policy="accept")}})
        if s.per_flow:
            cmds.append({"add": {"rule": _ref(chain=p.chain, comment=(
                f"minifw hook {s.name}: flow already accepted"), expr=[
                {"match": {"op": "!=", "left": {"&": [{"ct": {"key": "mark"}}, s.flow_mark]},
                           "right": 0}},
                {"counter": None}, {"accept": None}])}})
        queue: dict[str, Any] = {"num": p.queue}
        if s.fail_open:
            queue["flags"] = ["bypass"]
        cmds.append({"add": {"rule": _ref(chain=p.chain, comment=p.comment,
                                          expr=[{"counter": None}, {"queue": queue}])}})
        if p.flow_chain:
            cmds.append({"add": {"chain": _ref(name=p.flow_chain, type="filter",
                                               hook=s.hook.value, prio=s.priority + 1,
                                               policy="accept")}})
            cmds.append({"add": {"rule": _ref(chain=p.flow_chain, comment=(
                f"minifw hook {s.name}: remember accepted flow"), expr=[
                {"match": {"op": "!=", "left": {"&": [{"meta": {"key": "mark"}}, s.flow_mark]},
                           "right": 0}},
                {"mangle": {"key": {"ct": {"key": "mark"}},
                            "value": {"|": [{"ct": {"key": "mark"}}, s.flow_mark]}}}])}})
    return {"nftables": cmds}


def build_remove_json(chains: Iterable[str]) -> dict[str, Any]:
    return {"nftables": [{"delete": {"chain": _ref(name=n)}} for n in chains]}


def build_queue_probe_batch(first_seq: int = 1) -> nl.NftBatch:
    """A transaction that succeeds only if the kernel has the nft ``queue`` expression, and
    leaves nothing behind. Our own batch, so the answer is an errno: ENOENT on the rule of a
    table this same transaction creates can only mean "no such expression" (libnftables
    answers with text, whose wording changes with the other tables present)."""
    return _probe_batch(nl.expr_queue(0, nl.QueueFlag.BYPASS), first_seq)


def build_xt_probe_batch(first_seq: int = 1) -> nl.NftBatch:
    """The same probe for the xtables NFQUEUE target (nft_compat)."""
    return _probe_batch(nl.expr_xt_nfqueue(0, nl.QueueFlag.BYPASS), first_seq)


def _probe_batch(queue: bytes, first_seq: int) -> nl.NftBatch:
    batch = nl.NftBatch(first_seq=first_seq)
    batch.add_table("minifw_probe")
    batch.add_plain_chain("minifw_probe", "probe")
    batch.add_rule("minifw_probe", "probe", [queue])
    batch.delete_table("minifw_probe")
    return batch
