"""minifw's own record of named-set elements, and the fast import parser.

The record lives in ``<state dir>/sets.db`` (SQLite, WAL mode). It is what makes bans survive
``down``/``up``, ``reload`` and reboots, and what ``status`` and ``set list`` read: the kernel is
never asked for set elements (listing 1M elements takes nft 1.0.6 over 30 s and 645 MB).

- A ban appends a few pages to the write-ahead log (the journal); nothing rewrites the whole list.
- ``compact()`` (run by ``up``) drops expired elements and checkpoints the journal into the
  database file.
- Elements keep their absolute expiry (Unix seconds, 0 = never), so a re-load after a reboot gives
  each one only its remaining time.

``origin`` is a bit field: 1 = listed in the config's ``[[set]]``, 2 = added at runtime (ban or
import). An element leaves the record when neither bit is left.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from .errors import ConfigError, StateError
from .model.sets import normalise_element

CONFIG, RUNTIME = 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS elem (
    name   TEXT    NOT NULL,
    addr   TEXT    NOT NULL,
    net    INTEGER NOT NULL,
    expiry INTEGER NOT NULL DEFAULT 0,
    origin INTEGER NOT NULL,
    PRIMARY KEY (name, addr)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS elem_net ON elem (name, net);
CREATE TABLE IF NOT EXISTS named (
    name    TEXT PRIMARY KEY,
    timeout INTEGER
);
"""


def now() -> int:
    return int(time.time())


class SetStore:
    def __init__(self, directory: Path):
        self.path = Path(directory) / "sets.db"
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
                db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise StateError(f"cannot open the set record {self.path}: {exc}") from exc
            self._db = db
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Commit only if the block (including its kernel change) succeeds."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ---- reads -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM named ORDER BY name")]

    def exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM named WHERE name=?", (name,)).fetchone() is not None

    def default_timeout(self, name: str) -> int | None:
        row = self.db.execute("SELECT timeout FROM named WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def counts(self, name: str, at: int | None = None) -> dict[str, int]:
        at = now() if at is None else at
        rows = self.db.execute(
            "SELECT net, count(*) FROM elem WHERE name=? AND (expiry=0 OR expiry>?) GROUP BY net",
            (name, at)).fetchall()
        by = dict(rows)
        return {"addresses": by.get(0, 0), "cidrs": by.get(1, 0),
                "elements": by.get(0, 0) + by.get(1, 0)}

    def get(self, name: str, addr: str, at: int | None = None) -> tuple[int, int] | None:
        """(expiry, origin) of a live element, or None."""
        at = now() if at is None else at
        return self.db.execute(
            "SELECT expiry, origin FROM elem WHERE name=? AND addr=? AND (expiry=0 OR expiry>?)",
            (name, addr, at)).fetchone()

    def cidrs(self, name: str, at: int | None = None) -> list[str]:
        at = now() if at is None else at
        return [r[0] for r in self.db.execute(
            "SELECT addr FROM elem WHERE name=? AND net=1 AND (expiry=0 OR expiry>?)", (name, at))]

    def page(self, name: str, offset: int, limit: int, at: int | None = None) -> list[tuple[str, int]]:
        at = now() if at is None else at
        return self.db.execute(
            "SELECT addr, expiry FROM elem WHERE name=? AND (expiry=0 OR expiry>?) "
            "ORDER BY addr LIMIT ? OFFSET ?", (name, at, limit, offset)).fetchall()

    def live(self, name: str, at: int | None = None) -> Iterator[tuple[str, int]]:
        at = now() if at is None else at
        yield from self.db.execute(
            "SELECT addr, expiry FROM elem WHERE name=? AND (expiry=0 OR expiry>?)", (name, at))

    def config_elements(self, name: str) -> set[str]:
        return {r[0] for r in self.db.execute(
            "SELECT addr FROM elem WHERE name=? AND origin & 1", (name,))}

    # ---- writes (inside transaction()) --------------------------------------------------
    def declare(self, db: sqlite3.Connection, name: str, timeout: int | None) -> None:
        db.execute("INSERT INTO named (name, timeout) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                   "SET timeout=excluded.timeout", (name, timeout))

    def put(self, db: sqlite3.Connection, name: str, items: Iterable[tuple[str, int]],
            origin: int) -> None:
        """Insert (addr, expiry) pairs, or refresh their expiry and add ``origin``."""
        db.executemany(
            "INSERT INTO elem (name, addr, net, expiry, origin) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name, addr) DO UPDATE SET expiry=excluded.expiry, "
            "origin=origin | excluded.origin",
            ((name, a, 1 if "/" in a else 0, e, origin) for a, e in items))

    def drop_origin(self, db: sqlite3.Connection, name: str, addrs: Iterable[str],
                    origin: int) -> None:
        db.executemany("UPDATE elem SET origin = origin & ~? WHERE name=? AND addr=?",
                       ((origin, name, a) for a in addrs))
        db.execute("DELETE FROM elem WHERE name=? AND origin=0", (name,))

    def remove(self, db: sqlite3.Connection, name: str, addrs: Iterable[str]) -> None:
        db.executemany("DELETE FROM elem WHERE name=? AND addr=?", ((name, a) for a in addrs))

    def flush(self, db: sqlite3.Connection, name: str) -> None:
        db.execute("DELETE FROM elem WHERE name=?", (name,))

    def forget(self, db: sqlite3.Connection, name: str) -> None:
        db.execute("DELETE FROM elem WHERE name=?", (name,))
        db.execute("DELETE FROM named WHERE name=?", (name,))

    def compact(self) -> int:
        """Drop expired elements and fold the journal (WAL) into the database file."""
        with self.transaction() as db:
            gone = db.execute("DELETE FROM elem WHERE expiry != 0 AND expiry <= ?",
                              (now(),)).rowcount
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# ---- the import parser: inet_pton fast path, ipaddress only for CIDRs and failures -----------

def parse_import(fh: TextIO, source: str, skip_invalid: bool) -> tuple[list[str], list[str], list[str]]:
    """(single addresses, CIDRs, skipped-line messages) of an import file.

    One address or CIDR per line; ``#`` starts a comment. Without ``skip_invalid`` the first bad
    line raises ConfigError naming the file and line, and nothing is applied.
    """
    singles: list[str] = []
    cidrs: list[str] = []
    skipped: list[str] = []
    pton, ntop, v4, v6 = socket.inet_pton, socket.inet_ntop, socket.AF_INET, socket.AF_INET6
    append = singles.append
    for lineno, raw in enumerate(fh, 1):
        text = raw
        if "#" in text:
            text = text.split("#", 1)[0]
        text = text.strip()
        if not text:
            continue
        if "/" not in text:
            try:
                pton(v4, text)  # glibc accepts only the canonical dotted quad
                append(text)
                continue
            except OSError:
                pass
            try:
                append(ntop(v6, pton(v6, text)))
                continue
            except OSError:
                pass
        try:
            elem = normalise_element(text)
        except ValueError as exc:
            if not skip_invalid:
                raise ConfigError(f"{exc}; nothing was imported (use --skip-invalid to skip bad "
                                  "lines)", file=source, line=lineno) from None
            skipped.append(f"{source}:{lineno}: {exc}")
            continue
        (cidrs if "/" in elem else singles).append(elem)
    return singles, cidrs, skipped
