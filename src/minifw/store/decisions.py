"""The record of CrowdSec decisions, ``<state dir>/crowdsec.db`` (SQLite), and the feed's
status, ``<state dir>/crowdsec.json``.

Every decision LAPI gave is kept (several may cover one address); the set gets their union
(model/decisions.py). ``own`` marks the decisions of minifw's own shared bans, which never
come back into the set. The status file says when the last sync was, since when LAPI is
unreachable, and the counts the metrics and ``status`` show.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Iterable, Iterator

from ..errors import StateError
from ..model.decisions import Decision
from .state import in_dir, write_atomic

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decision (
    id       INTEGER PRIMARY KEY,
    origin   TEXT    NOT NULL,
    scenario TEXT    NOT NULL,
    scope    TEXT    NOT NULL,
    type     TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    expiry   INTEGER NOT NULL
);
-- a sync's delta reads the decisions on the values it touches, and the ranges, alone
CREATE INDEX IF NOT EXISTS decision_value ON decision (value);
CREATE INDEX IF NOT EXISTS decision_scope ON decision (scope);
CREATE TABLE IF NOT EXISTS element (
    name     TEXT    NOT NULL,
    addr     TEXT    NOT NULL,
    decision INTEGER NOT NULL,
    label    TEXT    NOT NULL,
    PRIMARY KEY (name, addr)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shared (
    value    TEXT    PRIMARY KEY,
    expiry   INTEGER NOT NULL
);
"""


class DecisionStore:
    def __init__(self, state_dir: str | os.PathLike[str]):
        self.path = in_dir(state_dir, "crowdsec.db")
        self.status_path = in_dir(state_dir, "crowdsec.json")
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise StateError(f"cannot open the decision record {self.path}: {exc}; move "
                                 "it away (the next sync starts over from LAPI)") from exc
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _write(self, fn, *args: Any) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                fn(self.db, *args)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the decision record {self.path}: {exc}") from exc

    def apply(self, new: Iterable[Decision], deleted: Iterable[int], at: int,
              replace: bool) -> None:
        """Record a stream: ``replace`` (startup) forgets every decision LAPI did not give
        again; else the ``deleted`` ids go and the ``new`` ones are added."""
        def write(db: sqlite3.Connection) -> None:
            if replace:
                db.execute("DELETE FROM decision")
            else:
                db.executemany("DELETE FROM decision WHERE id=?", ((i,) for i in deleted))
            db.executemany(
                "INSERT OR REPLACE INTO decision VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((d.id, d.origin, d.scenario, d.scope, d.type, d.value, d.expiry(at))
                 for d in new))
            db.execute("DELETE FROM decision WHERE expiry <= ?", (at,))
        self._write(write)

    def all(self) -> Iterator[tuple[Decision, int]]:
        return self._select("")

    def on_values(self, values: list[str]) -> Iterator[tuple[Decision, int]]:
        """The decisions on exactly these values."""
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            yield from self._select(f"WHERE value IN ({','.join('?' * len(chunk))})", *chunk)

    def ranges(self) -> Iterator[tuple[Decision, int]]:
        return self._select("WHERE scope='Range'")

    def _select(self, where: str, *args: Any) -> Iterator[tuple[Decision, int]]:
        for i, origin, scenario, scope, kind, value, expiry in self.db.execute(
                "SELECT id, origin, scenario, scope, type, value, expiry FROM decision "
                + where, args):
            yield Decision(i, origin, scenario, scope, kind, value, 0), expiry

    def count(self) -> dict[str, int]:
        """Decisions by type."""
        return dict(self.db.execute("SELECT type, count(*) FROM decision GROUP BY type"))

    def count_origins(self) -> dict[str, int]:
        """Ban decisions by origin label ("cscli", "crowdsec:<scenario>", ...)."""
        return dict(self.db.execute(
            "SELECT CASE WHEN origin='crowdsec' THEN 'crowdsec:' || scenario ELSE origin END, "
            "count(*) FROM decision WHERE type='ban' GROUP BY 1"))

    def set_elements(self, name: str, gone: Iterable[str],
                     given: Iterable[tuple[str, int, str]]) -> None:
        """Which decision gives each element of set ``name`` (for set list, explain)."""
        def write(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM element WHERE name=? AND addr=?",
                           ((name, a) for a in gone))
            db.executemany("INSERT OR REPLACE INTO element VALUES (?, ?, ?, ?)",
                           ((name, a, d, label) for a, d, label in given))
        self._write(write)

    def origins(self, name: str, addrs: list[str]) -> dict[str, tuple[int, str]]:
        """element -> (decision id, origin label) for the elements of ``addrs`` the feed gave."""
        out: dict[str, tuple[int, str]] = {}
        try:
            for i in range(0, len(addrs), 500):
                chunk = addrs[i:i + 500]
                out.update((a, (d, label)) for a, d, label in self.db.execute(
                    f"SELECT addr, decision, label FROM element WHERE name=? AND addr IN "
                    f"({','.join('?' * len(chunk))})", (name, *chunk)))
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the decision record {self.path}: {exc}") from exc
        return out

    def origin_of(self, name: str, address: str) -> tuple[int, str] | None:
        """(decision id, origin label) of the element of set ``name`` that holds
        ``address``: the address itself, else the narrowest CIDR around it."""
        import ipaddress
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            return None
        candidates = [str(addr)] + [str(ipaddress.ip_network(f"{addr}/{n}", strict=False))
                                    for n in range(addr.max_prefixlen - 1, -1, -1)]
        found = self.origins(name, candidates)
        return next((found[c] for c in candidates if c in found), None)

    def covering(self, value: str) -> list[tuple[int, str, str, int]]:
        """(id, origin, scenario, expiry) of the decisions on exactly ``value``."""
        return self.db.execute("SELECT id, origin, scenario, expiry FROM decision WHERE "
                               "value=? AND type='ban' ORDER BY expiry DESC",
                               (value,)).fetchall()

    # ---- minifw's own shared bans -----------------------------------------------------------
    def share(self, value: str, expiry: int) -> None:
        self._write(lambda db: db.execute("INSERT OR REPLACE INTO shared VALUES (?, ?)",
                                          (value, expiry)))

    def unshare(self, value: str) -> None:
        self._write(lambda db: db.execute("DELETE FROM shared WHERE value=?", (value,)))

    def shared(self, at: int) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT value FROM shared WHERE expiry > ? OR "
                                              "expiry = 0", (at,))}

    # ---- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        try:
            with open(self.status_path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a torn or foreign file: the next sync writes it again
        return data if isinstance(data, dict) else {}

    def set_status(self, status: dict[str, Any]) -> None:
        write_atomic(self.status_path, json.dumps(status, sort_keys=True).encode())


def element_origins(state_dir: Any, name: str, addrs: list[str]) -> dict[str, str]:
    """``set list``'s origin of each element the CrowdSec feed gave: "cscli, decision 12"."""
    record = DecisionStore(state_dir)
    try:
        return {a: f"{label}, decision {d}" for a, (d, label) in
                record.origins(name, addrs).items()}
    finally:
        record.close()
