"""An in-memory kernel for unit tests: ``FakeKernel`` stands where ``seam.Kernel`` would.

It applies the libnftables JSON documents minifw's compiler produces (add, insert, flush and
delete of tables, chains, rules, sets, elements and limit objects) as the kernel would: each
document is ONE transaction, applied whole or not at all, with the kernel's refusals for what
minifw can get wrong (a missing object, a busy chain or set, a missing element, a duplicate
``create``, an element of the wrong family or an overlapping interval). Its listings have the
shape of ``nft -j``'s, so the same derivations (``kernel.table``) read them.

Tests script failures: ``refuse_next()`` makes a coming transaction fail with nothing applied,
``fail_after_commit()`` one that applies and then reports a failure (as a lost netlink ack or a
kill would leave it). ``sent`` records every transaction, with what became of it.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import socket
from typing import Any, Callable

from ..compile.runs import element_key
from ..errors import KernelError
from . import nft
from ..netlink.nftables import chunked
from .nfnl import CHUNK
from .seam import Kernel, PartialAdd

Document = dict[str, Any]


@dataclasses.dataclass
class Sent:
    """One transaction the fake received: ``kind`` is "document" or "elements"."""
    kind: str
    commands: list[dict[str, Any]]
    outcome: str = "applied"  # or "refused", "applied, then failed"


@dataclasses.dataclass
class _Failure:
    skip: int
    after_commit: bool
    only: str | None
    why: str


class _Refused(Exception):
    """A refusal inside one transaction (becomes the KernelError libnftables would give)."""


class FakeKernel(Kernel):
    def connections(self, guards=()) -> list:
        """``sessions``, plus each --guard peer as a connection to 198.18.0.1 or fd00::1."""
        import ipaddress
        local = {4: ipaddress.ip_address("198.18.0.1"), 6: ipaddress.ip_address("fd00::1")}
        return list(self.sessions) + [g.connection(local[g.peer.version]) for g in guards]

    def clients(self) -> list:
        return [c.client for c in self.sessions]

    def __init__(self, *, log_visible: bool = True, chunk: int = CHUNK):
        # (family, name) -> {"chains": {name: decl}, "rules": [rule], "sets": {name: set},
        #                    "limits": {name: decl}, "handle": last handle}
        self.tables: dict[tuple[str, str], dict[str, Any]] = {}
        self.sent: list[Sent] = []
        self.chunk = chunk
        self._log_visible = log_visible
        self.sessions: list = []   # the lockout guard's connections here (engine.guard.Connection)
        self._failures: list[_Failure] = []
        self.opened = 0

    # ---- scripting failures ------------------------------------------------------------------
    def refuse_next(self, skip: int = 0, only: str | None = None,
                    why: str = "Operation not permitted") -> None:
        """Refuse the transaction after ``skip`` more (of kind ``only``, if given) went
        through: nothing of it applies and KernelError is raised."""
        self._failures.append(_Failure(skip, False, only, why))

    def fail_after_commit(self, skip: int = 0, only: str | None = None,
                          why: str = "Connection timed out") -> None:
        """Like ``refuse_next``, but the transaction is applied before the error is raised."""
        self._failures.append(_Failure(skip, True, only, why))

    def _planned(self, kind: str) -> _Failure | None:
        for failure in self._failures:
            if failure.only not in (None, kind):
                continue
            if failure.skip:
                failure.skip -= 1
                continue
            self._failures.remove(failure)
            return failure
        return None

    # ---- the primitives of seam.Kernel -------------------------------------------------------
    def open(self) -> None:
        self.opened += 1

    def run(self, document: Document) -> None:
        commands = copy.deepcopy(document["nftables"])
        self._transaction("document", commands, lambda tables: self._apply(tables, commands))

    def add_elements(self, table_name: str, groups: list[tuple[str, list[bytes]]],
                     timeout_ms: int | None) -> None:
        done = 0
        for transaction in chunked(groups, self.chunk):  # as the real sender cuts them
            elems = [{"add": {"element": {
                "family": "inet", "table": table_name, "name": kset,
                "elem": [_unpacked(k) if timeout_ms is None else
                         {"elem": {"val": _unpacked(k), "timeout": max(1, timeout_ms // 1000)}}
                         for k in keys]}}} for kset, keys in transaction]
            try:
                self._transaction("elements", elems, lambda tables: self._apply(tables, elems))
            except KernelError as exc:
                if done == 0:
                    raise
                raise PartialAdd(f"{exc} (after {done * self.chunk} addresses went in)",
                                 done) from exc
            done += 1

    def ruleset(self) -> Document:
        out: list[dict[str, Any]] = []
        for (family, name), t in self.tables.items():
            out.append({"table": {"family": family, "name": name, "handle": 1}})
            for chain in t["chains"].values():
                out.append({"chain": dict(chain)})
            for s in t["sets"].values():
                out.append({"set": {k: v for k, v in s.items() if k != "elems"}})
            for lim in t["limits"].values():
                out.append({"limit": dict(lim)})
            # nft lists rules chain by chain, each in its order
            for chain in t["chains"]:
                out += [{"rule": dict(r)} for r in t["rules"] if r["chain"] == chain]
        return {"nftables": out}

    def chains(self) -> Document:
        return {"nftables": [{"chain": dict(c)} for t in self.tables.values()
                             for c in t["chains"].values()]}

    def set_elements(self, name: str) -> list[Any]:
        t = self.tables.get(("inet", "minifw"))
        if t is None or name not in t["sets"]:
            raise nft.refused(f"Error: No such file or directory; did you mean set "
                              f"'{name}'?")
        s = t["sets"][name]
        counted = any("counter" in st for st in s.get("stmt", []))
        out = []
        for val, timeout in s["elems"].values():
            if timeout is None and not counted:
                out.append(copy.deepcopy(val))
                continue
            elem: dict[str, Any] = {"val": copy.deepcopy(val)}
            if timeout is not None:
                elem.update(timeout=timeout, expires=timeout)
            if counted:
                elem["counter"] = {"packets": 0, "bytes": 0}
            out.append({"elem": elem})
        return out

    def element_counters(self, name: str) -> list[tuple[bytes, int, int, int]]:
        """As the real dump: each element's first key (a range's or prefix's start), packed."""
        out = []
        for e in self.set_elements(name):
            elem = e["elem"] if isinstance(e, dict) and "elem" in e else {"val": e}
            val = elem["val"]
            if isinstance(val, dict):
                val = (val["prefix"]["addr"] if "prefix" in val else val["range"][0])
            key = (int(val).to_bytes(2, "big") if isinstance(val, int) else
                   socket.inet_pton(socket.AF_INET6 if ":" in val else socket.AF_INET, val))
            counter = elem.get("counter") or {}
            out.append((key, 0, counter.get("packets", 0), counter.get("bytes", 0)))
        return out

    def log_visible(self) -> bool:
        return self._log_visible

    # ---- what tests look at ------------------------------------------------------------------
    def elements(self, name: str) -> set[str]:
        """The element keys of one set of ``inet minifw`` ("198.18.0.1", "198.18.1.0/24")."""
        t = self.tables.get(("inet", "minifw"))
        return set(t["sets"][name]["elems"]) if t and name in t["sets"] else set()

    def add_foreign_chain(self, family: str, table_name: str, name: str, hook: str,
                          prio: int) -> None:
        """A base chain of another tool's table (for the warnings about other tables)."""
        t = self.tables.setdefault((family, table_name), _new_table())
        t["chains"][name] = {"family": family, "table": table_name, "name": name,
                             "handle": _next(t), "type": "filter", "hook": hook, "prio": prio,
                             "policy": "accept"}

    # ---- one transaction ---------------------------------------------------------------------
    def _transaction(self, kind: str, commands: list[dict[str, Any]],
                     apply: Callable[[dict], None]) -> None:
        record = Sent(kind, commands)
        self.sent.append(record)
        failure = self._planned(kind)
        if failure is not None and not failure.after_commit:
            record.outcome = "refused"
            raise nft.refused(f"Error: Could not process rule: {failure.why}")
        work = copy.deepcopy(self.tables)
        try:
            apply(work)
        except _Refused as exc:
            record.outcome = "refused"
            raise nft.refused(f"Error: Could not process rule: {exc}") from None
        self.tables = work
        if failure is not None:
            record.outcome = "applied, then failed"
            raise nft.refused(f"Error: {failure.why}")

    def _apply(self, tables: dict, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            ((verb, body),) = command.items()
            ((kind, obj),) = body.items()
            handler = getattr(self, f"_{verb}_{kind}", None)
            if handler is None:
                raise _Refused(f"Operation not supported ({verb} {kind})")
            handler(tables, obj)

    # tables
    def _add_table(self, tables: dict, obj: dict) -> None:
        tables.setdefault((obj["family"], obj["name"]), _new_table())

    def _delete_table(self, tables: dict, obj: dict) -> None:
        if tables.pop((obj["family"], obj["name"]), None) is None:
            raise _Refused("No such file or directory")

    def _table(self, tables: dict, obj: dict) -> dict[str, Any]:
        t = tables.get((obj["family"], obj["table"]))
        if t is None:
            raise _Refused("No such file or directory")
        return t

    # chains
    def _add_chain(self, tables: dict, obj: dict) -> None:
        t = self._table(tables, obj)
        old = t["chains"].get(obj["name"])
        if old is not None:
            if old.get("hook") != obj.get("hook") or old.get("prio") != obj.get("prio"):
                raise _Refused("Device or resource busy")
            return
        chain = {"family": obj["family"], "table": obj["table"], "name": obj["name"],
                 "handle": _next(t)}
        chain.update({k: obj[k] for k in ("type", "hook", "prio", "policy") if k in obj})
        t["chains"][obj["name"]] = chain

    def _chain(self, tables: dict, obj: dict, key: str = "name") -> dict[str, Any]:
        t = self._table(tables, obj)
        if obj[key] not in t["chains"]:
            raise _Refused("No such file or directory")
        return t

    def _flush_chain(self, tables: dict, obj: dict) -> None:
        t = self._chain(tables, obj)
        t["rules"] = [r for r in t["rules"] if r["chain"] != obj["name"]]

    def _delete_chain(self, tables: dict, obj: dict) -> None:
        t = self._chain(tables, obj)
        name = obj["name"]
        # the kernel deletes a chain's own rules with it, but not a chain others jump to
        if any(_mentions(r["expr"], {"goto": {"target": name}}) or
               _mentions(r["expr"], {"jump": {"target": name}}) for r in t["rules"]):
            raise _Refused("Device or resource busy")
        t["rules"] = [r for r in t["rules"] if r["chain"] != name]
        del t["chains"][name]

    # rules
    def _add_rule(self, tables: dict, obj: dict, insert: bool = False) -> None:
        t = self._chain(tables, obj, "chain")
        for ref in _set_refs(obj.get("expr", [])):
            if ref not in t["sets"]:
                raise _Refused(f"No such file or directory (set {ref})")
        for ref in _limit_refs(obj.get("expr", [])):
            if ref not in t["limits"]:
                raise _Refused(f"No such file or directory (limit {ref})")
        for target in _targets(obj.get("expr", [])):
            if target not in t["chains"]:
                raise _Refused(f"No such file or directory (chain {target})")
        rule = {"family": obj["family"], "table": obj["table"], "chain": obj["chain"],
                "handle": _next(t), "expr": copy.deepcopy(obj.get("expr", []))}
        if obj.get("comment") is not None:
            rule["comment"] = obj["comment"]
        at = len(t["rules"])
        if "handle" in obj:  # insert before it, add after it (nft's "position")
            found = [i for i, r in enumerate(t["rules"])
                     if r["handle"] == obj["handle"] and r["chain"] == obj["chain"]]
            if not found:
                raise _Refused("No such file or directory (rule handle)")
            at = found[0] if insert else found[0] + 1
        elif insert:
            mine = [i for i, r in enumerate(t["rules"]) if r["chain"] == obj["chain"]]
            at = mine[0] if mine else at
        t["rules"].insert(at, rule)

    def _insert_rule(self, tables: dict, obj: dict) -> None:
        self._add_rule(tables, obj, insert=True)

    def _delete_rule(self, tables: dict, obj: dict) -> None:
        t = self._chain(tables, obj, "chain")
        keep = [r for r in t["rules"]
                if not (r["chain"] == obj["chain"] and r["handle"] == obj["handle"])]
        if len(keep) == len(t["rules"]):
            raise _Refused("No such file or directory")
        t["rules"] = keep

    # sets and elements
    def _add_set(self, tables: dict, obj: dict) -> None:
        t = self._table(tables, obj)
        if obj["name"] in t["sets"]:
            return
        s = {k: copy.deepcopy(v) for k, v in obj.items()}
        s["handle"] = _next(t)
        s["elems"] = {}
        t["sets"][obj["name"]] = s

    def _set(self, tables: dict, obj: dict) -> dict[str, Any]:
        t = self._table(tables, obj)
        s = t["sets"].get(obj["name"])
        if s is None:
            raise _Refused("No such file or directory")
        return s

    def _delete_set(self, tables: dict, obj: dict) -> None:
        t = self._table(tables, obj)
        self._set(tables, obj)
        if any(obj["name"] in _set_refs(r["expr"]) for r in t["rules"]):
            raise _Refused("Device or resource busy")
        del t["sets"][obj["name"]]

    def _flush_set(self, tables: dict, obj: dict) -> None:
        self._set(tables, obj)["elems"].clear()

    def _add_element(self, tables: dict, obj: dict, create: bool = False) -> None:
        s = self._set(tables, obj)
        for elem in obj["elem"]:
            key = element_key(elem)
            _check_element(s, key)
            if key in s["elems"]:
                if create:
                    raise _Refused("File exists")
                continue  # the kernel keeps the element as it is (its timeout too)
            if "interval" in s.get("flags", []) and "/" in key:
                net = ipaddress.ip_network(key)
                if any("/" in k and ipaddress.ip_network(k).overlaps(net) for k in s["elems"]):
                    raise _Refused("File exists (interval overlaps)")
            val = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
            timeout = elem["elem"].get("timeout") if isinstance(elem, dict) and "elem" in elem \
                else None
            if timeout is None and "timeout" in s:
                timeout = s["timeout"]
            s["elems"][key] = (copy.deepcopy(val), timeout)

    def _create_element(self, tables: dict, obj: dict) -> None:
        self._add_element(tables, obj, create=True)

    def _delete_element(self, tables: dict, obj: dict) -> None:
        s = self._set(tables, obj)
        for elem in obj["elem"]:
            if s["elems"].pop(element_key(elem), None) is None:
                raise _Refused("No such file or directory")

    # limit objects
    def _add_limit(self, tables: dict, obj: dict) -> None:
        t = self._table(tables, obj)
        if obj["name"] not in t["limits"]:
            t["limits"][obj["name"]] = {**copy.deepcopy(obj), "handle": _next(t)}

    def _delete_limit(self, tables: dict, obj: dict) -> None:
        t = self._table(tables, obj)
        if obj["name"] not in t["limits"]:
            raise _Refused("No such file or directory")
        if any(obj["name"] in _limit_refs(r["expr"]) for r in t["rules"]):
            raise _Refused("Device or resource busy")
        del t["limits"][obj["name"]]


def _new_table() -> dict[str, Any]:
    return {"chains": {}, "rules": [], "sets": {}, "limits": {}, "handle": 0}


def _next(t: dict[str, Any]) -> int:
    t["handle"] += 1
    return t["handle"]


def _walk(expr: Any):
    yield expr
    if isinstance(expr, dict):
        for v in expr.values():
            yield from _walk(v)
    elif isinstance(expr, list):
        for v in expr:
            yield from _walk(v)


def _set_refs(expr: Any) -> set[str]:
    return {v[1:] for v in _walk(expr) if isinstance(v, str) and v.startswith("@")}


def _limit_refs(expr: Any) -> set[str]:
    return {v["limit"] for v in _walk(expr) if isinstance(v, dict)
            and isinstance(v.get("limit"), str)}


def _targets(expr: Any) -> set[str]:
    return {v[verb]["target"] for v in _walk(expr) if isinstance(v, dict)
            for verb in ("goto", "jump") if isinstance(v.get(verb), dict)}


def _mentions(expr: Any, wanted: dict) -> bool:
    text = json.dumps(wanted)
    return any(isinstance(v, dict) and json.dumps(v) == text for v in _walk(expr))


def _check_element(s: dict[str, Any], key: str) -> None:
    """The kernel's checks of an element against its set's type and flags."""
    kind = s.get("type")
    if kind in ("ipv4_addr", "ipv6_addr"):
        try:
            net = ipaddress.ip_network(key)
        except ValueError:
            raise _Refused(f"Invalid argument (element {key})") from None
        if net.version != (4 if kind == "ipv4_addr" else 6):
            raise _Refused(f"Invalid argument (element {key} in a set of {kind})")
        if net.num_addresses > 1 and "interval" not in s.get("flags", []):
            raise _Refused("Invalid argument (a prefix in a set without the interval flag)")


def _unpacked(key: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(key) == 16 else socket.AF_INET, key)
