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
import itertools
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
    expiry INTEGER NOT NULL DEFAULT 0,
    origin INTEGER NOT NULL,
    PRIMARY KEY (name, addr)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cidr (
    name   TEXT    NOT NULL,
    addr   TEXT    NOT NULL,
    expiry INTEGER NOT NULL DEFAULT 0,
    origin INTEGER NOT NULL,
    PRIMARY KEY (name, addr)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tally (
    name   TEXT    NOT NULL,
    kind   TEXT    NOT NULL,
    expiry INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (name, kind, expiry)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS named (
    name    TEXT PRIMARY KEY,
    timeout INTEGER
);
"""


def _table(addr: str) -> str:
    return "cidr" if "/" in addr else "elem"


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
                db.execute("PRAGMA cache_size=-131072")  # 128 MiB while importing
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
        """Live elements by kind, from the tally (element counts per expiry): O(distinct
        expiries), never a scan of the elements."""
        at = now() if at is None else at
        by = dict(self.db.execute(
            "SELECT kind, sum(n) FROM tally WHERE name=? AND (expiry=0 OR expiry>?) "
            "GROUP BY kind", (name, at)).fetchall())
        singles, nets = by.get("elem", 0), by.get("cidr", 0)
        return {"addresses": singles, "cidrs": nets, "elements": singles + nets}

    def get(self, name: str, addr: str, at: int | None = None) -> tuple[int, int] | None:
        """(expiry, origin) of a live element, or None."""
        at = now() if at is None else at
        return self.db.execute(
            f"SELECT expiry, origin FROM {_table(addr)} WHERE name=? AND addr=? "
            "AND (expiry=0 OR expiry>?)", (name, addr, at)).fetchone()

    def cidrs(self, name: str, at: int | None = None) -> list[str]:
        at = now() if at is None else at
        return [r[0] for r in self.db.execute(
            "SELECT addr FROM cidr WHERE name=? AND (expiry=0 OR expiry>?)", (name, at))]

    def page(self, name: str, offset: int, limit: int, at: int | None = None) -> list[tuple[str, int]]:
        """One page: CIDRs first (few), then single addresses, each in text order."""
        at = now() if at is None else at
        out = self.db.execute(
            "SELECT addr, expiry FROM cidr WHERE name=? AND (expiry=0 OR expiry>?) "
            "ORDER BY addr LIMIT ? OFFSET ?", (name, at, limit, offset)).fetchall()
        if len(out) < limit:
            skip = max(0, offset - self.db.execute(
                "SELECT count(*) FROM cidr WHERE name=? AND (expiry=0 OR expiry>?)",
                (name, at)).fetchone()[0])
            out += self.db.execute(
                "SELECT addr, expiry FROM elem WHERE name=? AND (expiry=0 OR expiry>?) "
                "ORDER BY addr LIMIT ? OFFSET ?", (name, at, limit - len(out), skip)).fetchall()
        return out

    def live(self, name: str, at: int | None = None) -> Iterator[tuple[str, int]]:
        at = now() if at is None else at
        for table in ("elem", "cidr"):
            yield from self.db.execute(
                f"SELECT addr, expiry FROM {table} WHERE name=? AND (expiry=0 OR expiry>?)",
                (name, at))

    def config_elements(self, name: str) -> set[str]:
        return {r[0] for table in ("elem", "cidr") for r in self.db.execute(
            f"SELECT addr FROM {table} WHERE name=? AND origin & 1", (name,))}

    # ---- writes (inside transaction()) --------------------------------------------------
    def declare(self, db: sqlite3.Connection, name: str, timeout: int | None) -> None:
        db.execute("INSERT INTO named (name, timeout) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                   "SET timeout=excluded.timeout", (name, timeout))

    def _count(self, db: sqlite3.Connection, name: str, table: str, expiry: int,
               delta: int) -> None:
        db.execute("INSERT INTO tally (name, kind, expiry, n) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT(name, kind, expiry) DO UPDATE SET n = n + excluded.n",
                   (name, table, expiry, delta))

    def retally(self, db: sqlite3.Connection, name: str) -> None:
        """Recount a set from its elements (one scan in SQLite): after bulk changes."""
        db.execute("DELETE FROM tally WHERE name=?", (name,))
        for table in ("elem", "cidr"):
            db.execute(f"INSERT INTO tally (name, kind, expiry, n) SELECT name, '{table}', "
                       f"expiry, count(*) FROM {table} WHERE name=? GROUP BY expiry", (name,))

    def put(self, db: sqlite3.Connection, name: str, items: Iterable[tuple[str, int]],
            origin: int) -> None:
        """Insert (addr, expiry) pairs, or refresh their expiry and add ``origin``. For a few
        elements (bans, config entries); keeps the tally exact."""
        for addr, expiry in items:
            table = _table(addr)
            old = db.execute(f"SELECT expiry FROM {table} WHERE name=? AND addr=?",
                             (name, addr)).fetchone()
            db.execute(
                f"INSERT INTO {table} (name, addr, expiry, origin) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name, addr) DO UPDATE SET expiry=excluded.expiry, "
                "origin=origin | excluded.origin", (name, addr, expiry, origin))
            if old:
                self._count(db, name, table, old[0], -1)
            self._count(db, name, table, expiry, 1)

    def put_sorted(self, db: sqlite3.Connection, name: str, addrs: list[str], expiry: int,
                   origin: int, table: str) -> None:
        """Bulk form of ``put`` for an import: ``addrs`` sorted, all of one kind. The caller
        runs ``retally`` once after. Into an empty set it is a plain insert (no conflict
        clause to evaluate per row)."""
        empty = db.execute(f"SELECT 1 FROM {table} WHERE name=? LIMIT 1", (name,)).fetchone() \
            is None
        upsert = "" if empty else ("ON CONFLICT(name, addr) DO UPDATE SET expiry=excluded.expiry, "
                                   "origin=origin | excluded.origin")
        db.executemany(
            f"INSERT INTO {table} (name, addr, expiry, origin) VALUES (?1, ?2, ?3, ?4) {upsert}",
            zip(itertools.repeat(name), addrs, itertools.repeat(expiry), itertools.repeat(origin)))

    def drop_origin(self, db: sqlite3.Connection, name: str, addrs: Iterable[str],
                    origin: int) -> None:
        for addr in addrs:
            t = _table(addr)
            db.execute(f"UPDATE {t} SET origin = origin & ~? WHERE name=? AND addr=?",
                       (origin, name, addr))
            row = db.execute(f"SELECT expiry FROM {t} WHERE name=? AND addr=? AND origin=0",
                             (name, addr)).fetchone()
            if row:
                db.execute(f"DELETE FROM {t} WHERE name=? AND addr=?", (name, addr))
                self._count(db, name, t, row[0], -1)

    def flush(self, db: sqlite3.Connection, name: str) -> None:
        db.execute("DELETE FROM elem WHERE name=?", (name,))
        db.execute("DELETE FROM cidr WHERE name=?", (name,))
        db.execute("DELETE FROM tally WHERE name=?", (name,))

    def forget(self, db: sqlite3.Connection, name: str) -> None:
        self.flush(db, name)
        db.execute("DELETE FROM named WHERE name=?", (name,))

    def compact(self) -> int:
        """Drop expired elements and fold the journal (WAL) into the database file."""
        with self.transaction() as db:
            at = now()
            gone = sum(db.execute(f"DELETE FROM {t} WHERE expiry != 0 AND expiry <= ?",
                                  (at,)).rowcount for t in ("elem", "cidr"))
            db.execute("DELETE FROM tally WHERE expiry != 0 AND expiry <= ?", (at,))
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

    Fast path: a file of bare addresses is checked with ``inet_pton`` inside one comprehension
    per IP version (no Python-level loop body). Anything else (comments, CIDRs, bad lines) takes
    the line-by-line path, which knows line numbers.
    """
    lines = fh.read().splitlines()
    pton, ntop, v4, v6 = socket.inet_pton, socket.inet_ntop, socket.AF_INET, socket.AF_INET6
    try:
        if not any("/" in line or "#" in line for line in lines):
            bare = [line.strip() for line in lines]
            bare = [line for line in bare if line]
            six = [line for line in bare if ":" in line]
            four = [line for line in bare if ":" not in line] if len(six) != len(bare) else []
            for line in four:
                pton(v4, line)  # glibc accepts only the canonical dotted quad
            return four + [ntop(v6, pton(v6, line)) for line in six], [], []
    except OSError:
        pass
    return _parse_lines(lines, source, skip_invalid)


def _parse_lines(lines: list[str], source: str,
                 skip_invalid: bool) -> tuple[list[str], list[str], list[str]]:
    singles: list[str] = []
    cidrs: list[str] = []
    skipped: list[str] = []
    pton, ntop, v4, v6 = socket.inet_pton, socket.inet_ntop, socket.AF_INET, socket.AF_INET6
    append = singles.append
    for lineno, raw in enumerate(lines, 1):
        text = raw
        if "#" in text:
            text = text.split("#", 1)[0]
        text = text.strip()
        if not text:
            continue
        if "/" not in text:
            try:
                if ":" in text:
                    append(ntop(v6, pton(v6, text)))
                else:
                    pton(v4, text)
                    append(text)
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
