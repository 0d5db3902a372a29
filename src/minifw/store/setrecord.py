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

Two layouts, and every live element is in exactly one of them:

- ``elem``/``cidr`` rows, one per element: bans, config elements, CIDRs.
- ``block`` rows, one per import of single addresses and IP version: the addresses packed
  (4 or 16 bytes each), sorted and distinct, in one blob, with one expiry for all, origin
  runtime, and a bitmap of the ones removed since (``dead``). Writing 1M rows costs SQLite 4-6 s
  on this machine; one 16 MB blob costs a few ms. A lookup is a binary search through SQLite's
  incremental blob I/O (about 20 reads of 16 bytes), and a removal flips one bit in place, so a
  ban or unban stays O(log n) with 1M imported. ``compact()`` rewrites blocks without their dead
  addresses.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import inspect
import itertools
import operator
import os
import stat
import time
import weakref

# sqlite3's C core: the same connect, Connection and errors without sqlite3.dbapi2, which loads
# datetime for date adapters the record never uses (2-3 ms of a ban's start)
import _sqlite3 as sqlite3
# socket's C core: the same functions without socket.py's start cost (5 ms of a ban's 80)
from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable, Iterable, Iterator, TextIO

from ..errors import NEED_ROOT, ConfigError, MinifwError, StateError
from ..model.sets import normalise_element
from .state import in_dir, path_text

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
CREATE TABLE IF NOT EXISTS block (
    id     INTEGER PRIMARY KEY,
    name   TEXT    NOT NULL,
    width  INTEGER NOT NULL,
    expiry INTEGER NOT NULL DEFAULT 0,
    n      INTEGER NOT NULL,
    live   INTEGER NOT NULL,
    data   BLOB    NOT NULL,
    dead   BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS block_name ON block (name);
CREATE TABLE IF NOT EXISTS named (
    name    TEXT PRIMARY KEY,
    timeout INTEGER
);
"""


def _table(addr: str) -> str:
    return "cidr" if "/" in addr else "elem"


def now() -> int:
    return int(time.time())


def pack(addr: str) -> bytes:
    """The packed form of a normalised single address (4 or 16 bytes)."""
    return inet_pton(AF_INET6 if ":" in addr else AF_INET, addr)


def unpack(key: bytes) -> str:
    return inet_ntop(AF_INET6 if len(key) == 16 else AF_INET, key)


def distinct_sorted(keys: list[bytes]) -> list[bytes]:
    """``keys`` sorted without repeats (a new list)."""
    out = sorted(keys)
    if any(map(operator.eq, out, itertools.islice(out, 1, None))):
        out = [k for k, prev in zip(out, itertools.chain((None,), out)) if k != prev]
    return out


_LIVE_BITS = bytes(8 - bin(b).count("1") for b in range(256))  # live addresses per dead-map byte


RECOVER = "run 'minifw set recover' to rebuild it from the kernel's sets"
_TABLES = ("block", "cidr", "elem", "named", "tally")


def header_problem(head: bytes, size: int) -> str | None:
    """What is wrong with a database file whose first bytes are ``head`` and whose length is
    ``size``, judged from its 100-byte header alone; None if it looks whole. Pure."""
    if size == 0:
        return "empty (0 bytes)"
    if size < 100 or not head.startswith(b"SQLite format 3\0"):
        return "not an SQLite database"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    if page < 512 or page & (page - 1):
        return "damaged (bad page size)"
    if pages and page * pages > size:
        return f"truncated ({size} of {page * pages} bytes)"
    return None


def _is_dir(path: str) -> bool:
    """``pathlib.Path(path).is_dir()``: False where nothing is, the error where stat fails
    otherwise (os.path.isdir would hide a permission error)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return False
        raise
    except ValueError:
        return False


class SetStore:
    """``may_create``: whether a missing sets.db may start empty (a fresh state directory); if
    not, a missing record is an error, never an empty set."""

    def __init__(self, directory: str | os.PathLike[str],
                 may_create: Callable[[], bool] | None = None):
        # a str for the record's own use; ``path``, a Path, on demand (pathlib is no part of
        # a ban's start-up)
        self._dir = path_text(directory)
        self._path = in_dir(self._dir, "sets.db")
        self._db: sqlite3.Connection | None = None
        self._may_create = may_create

    @property
    def path(self) -> Path:
        from pathlib import Path
        return Path(self._path)

    def damaged(self, what: str) -> StateError:
        return StateError(f"the set record {self._path} is {what}; {RECOVER}")

    def failed(self, exc: BaseException, doing: str = "cannot read") -> StateError:
        """SQLite's or the file system's error, as minifw's: the one place that says it."""
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            return self.damaged(f"unreadable ({exc})")
        if isinstance(exc, sqlite3.Error):
            return StateError(f"the set record {self._path} failed: {exc}")
        why = getattr(exc, "strerror", None) or str(exc)
        if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
            why = f"{why}; {NEED_ROOT}"
        return StateError(f"{doing} the set record {self._path}: {why}")

    def _check_file(self) -> bool:
        """True if sets.db exists and looks whole; False if it is missing; raises if damaged."""
        for extra in ("", "-wal", "-shm"):
            p = f"{self._path}{extra}"
            if _is_dir(p):
                raise StateError(f"{p} is a directory, not minifw's set record (it holds no "
                                 "state); move it away")
        try:
            with open(self._path, "rb") as fh:
                head = fh.read(100)
                size = os.fstat(fh.fileno()).st_size
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self.failed(exc) from exc
        problem = header_problem(head, size)
        if problem:
            raise self.damaged(problem)
        return True

    def _create(self) -> None:
        """A new, empty record, made under another name and renamed: a sets.db that exists is
        always a whole one."""
        tmp = in_dir(self._dir, ".sets.db.new")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        for extra in ("-wal", "-shm"):  # left from a record that is gone: not ours any more
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self._path}{extra}")
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            # one transaction: one sync for the whole schema, not one per table (0.1-0.3 s on
            # a disk, measured); the file is not in use until it is renamed anyway
            db.executescript(f"BEGIN;{_SCHEMA};COMMIT;")
        finally:
            db.close()
        os.replace(tmp, self._path)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                os.makedirs(self._dir, mode=0o750, exist_ok=True)
                if not self._check_file():
                    if self._may_create is not None and not self._may_create():
                        raise StateError(
                            f"the set record {self._path} is missing while minifw has state "
                            f"here; {RECOVER}")
                    self._create()
                db = sqlite3.connect(self._path, isolation_level=None, timeout=30)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.execute("PRAGMA cache_size=-131072")  # 128 MiB while importing
                    found = {r[0] for r in db.execute(
                        "SELECT name FROM sqlite_master WHERE type='table'")}
                except BaseException:
                    db.close()
                    raise
                if "elem" not in found:
                    db.close()
                    raise self.damaged("missing its tables")
                if not set(_TABLES) <= found:  # a record from before a table was added
                    db.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise self.damaged(f"unreadable ({exc})") from exc
            except (OSError, sqlite3.Error) as exc:
                raise self.failed(exc, "cannot open") from exc
            self._db = db
            _OPEN.add(self)
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Commit only if the block (including its kernel change) succeeds."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.failed(exc) from exc
        try:
            yield db
        except BaseException:
            # the block's own error is the one to tell; a rollback that fails as well (the
            # file went bad meanwhile) leaves the transaction to SQLite's own recovery
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
            # Fold the change into the database file now: a -wal file damaged later then
            # loses nothing (SQLite ignores a write-ahead log whose checksums do not match).
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise self.failed(exc) from exc

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

    def kinds(self, name: str, at: int | None = None) -> set[tuple[int, bool]]:
        """Which backing sets (IP version, CIDR?) hold live elements of ``name``. Each probe
        stops at its first hit; addresses banned one by one are few next to imported blocks."""
        at = now() if at is None else at
        live = "name=? AND (expiry=0 OR expiry>?)"
        out = {(4 if w == 4 else 6, False) for (w,) in self.db.execute(
            f"SELECT DISTINCT width FROM block WHERE {live} AND live>0", (name, at))}
        for table, cidr in (("elem", False), ("cidr", True)):
            for version, has in ((4, "NOT"), (6, "")):
                if (version, cidr) not in out and self.db.execute(
                        f"SELECT 1 FROM {table} WHERE {live} AND {has} instr(addr, ':') LIMIT 1",
                        (name, at)).fetchone():
                    out.add((version, cidr))
        return out

    def get(self, name: str, addr: str, at: int | None = None) -> tuple[int, int] | None:
        """(expiry, origin) of a live element, or None."""
        at = now() if at is None else at
        row = self.db.execute(
            f"SELECT expiry, origin FROM {_table(addr)} WHERE name=? AND addr=? "
            "AND (expiry=0 OR expiry>?)", (name, addr, at)).fetchone()
        if row or "/" in addr:
            return row
        hit = self._block_hit(name, pack(addr))
        if hit and (hit[2] == 0 or hit[2] > at):
            return hit[2], RUNTIME
        return None

    # ---- blocks ------------------------------------------------------------------------
    def _block_hit(self, name: str, key: bytes) -> tuple[int, int, int] | None:
        """(block id, index, expiry) of the block entry holding ``key`` (expired or not), unless
        it was removed. A binary search through blob I/O: O(log n), nothing loaded."""
        width = len(key)
        for bid, n, expiry in self.db.execute(
                "SELECT id, n, expiry FROM block WHERE name=? AND width=? AND live>0",
                (name, width)).fetchall():
            with self.db.blobopen("block", "data", bid, readonly=True) as blob:
                lo, hi = 0, n
                while lo < hi:
                    mid = (lo + hi) // 2
                    blob.seek(mid * width)
                    if blob.read(width) < key:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo == n:
                    continue
                blob.seek(lo * width)
                if blob.read(width) != key:
                    continue
            with self.db.blobopen("block", "dead", bid, readonly=True) as dead:
                dead.seek(lo // 8)
                if dead.read(1)[0] >> (lo % 8) & 1:
                    continue
            return bid, lo, expiry
        return None

    def _kill(self, db: sqlite3.Connection, name: str, bid: int, indices: Iterable[int]) -> int:
        """Mark addresses of block ``bid`` as removed (in place); returns how many were live."""
        with db.blobopen("block", "dead", bid, readonly=False) as dead:
            bitmap = bytearray(dead.read())
            killed = 0
            for i in indices:
                bit = 1 << (i % 8)
                if not bitmap[i // 8] & bit:
                    bitmap[i // 8] |= bit
                    killed += 1
            if killed:
                dead.seek(0)
                dead.write(bytes(bitmap))
        if killed:
            (expiry,) = db.execute("SELECT expiry FROM block WHERE id=?", (bid,)).fetchone()
            db.execute("UPDATE block SET live = live - ? WHERE id=?", (killed, bid))
            self._count(db, name, "elem", expiry, -killed)
        return killed

    def _live_keys(self, bid: int, width: int, n: int, live: int, start: int = 0,
                   limit: int | None = None) -> list[bytes]:
        """Live addresses of a block, from the ``start``-th live one, at most ``limit``."""
        limit = live if limit is None else limit
        with self.db.blobopen("block", "data", bid, readonly=True) as blob:
            if live == n:  # nothing removed: one slice
                blob.seek(start * width)
                data = blob.read(min(limit, n - start) * width)
                return [data[i:i + width] for i in range(0, len(data), width)]
            with self.db.blobopen("block", "dead", bid, readonly=True) as dead:
                bitmap = dead.read()
            out: list[bytes] = []
            seen = 0
            for byte_no, byte in enumerate(bitmap):
                here = _LIVE_BITS[byte] - (8 * (byte_no + 1) - n if 8 * (byte_no + 1) > n else 0)
                if seen + here <= start:
                    seen += here
                    continue
                for i in range(byte_no * 8, min(n, byte_no * 8 + 8)):
                    if byte >> (i % 8) & 1:
                        continue
                    if seen >= start:
                        blob.seek(i * width)
                        out.append(blob.read(width))
                        if len(out) == limit:
                            return out
                    seen += 1
            return out

    def blocks(self, name: str, at: int | None = None) -> list[tuple[int, int, int, int, int]]:
        """(id, width, expiry, n, live) of the live, unexpired blocks of ``name``, oldest first."""
        at = now() if at is None else at
        return self.db.execute(
            "SELECT id, width, expiry, n, live FROM block WHERE name=? AND live>0 AND "
            "(expiry=0 OR expiry>?) ORDER BY id", (name, at)).fetchall()

    def block_keys(self, bid: int) -> list[bytes]:
        """Every live address of one block (for a full load into the kernel)."""
        width, n, live = self.db.execute("SELECT width, n, live FROM block WHERE id=?",
                                         (bid,)).fetchone()
        return self._live_keys(bid, width, n, live)

    def cidrs(self, name: str, at: int | None = None) -> list[str]:
        at = now() if at is None else at
        return [r[0] for r in self.db.execute(
            "SELECT addr FROM cidr WHERE name=? AND (expiry=0 OR expiry>?)", (name, at))]

    def page(self, name: str, offset: int, limit: int, at: int | None = None) -> list[tuple[str, int]]:
        """One page: CIDRs first (few), then single addresses added one by one (bans, config),
        each in text order, then imported addresses, import by import, in address order."""
        at = now() if at is None else at
        out: list[tuple[str, int]] = []
        skip = offset
        for table in ("cidr", "elem"):
            if len(out) < limit:
                out += self.db.execute(
                    f"SELECT addr, expiry FROM {table} WHERE name=? AND (expiry=0 OR expiry>?) "
                    "ORDER BY addr LIMIT ? OFFSET ?", (name, at, limit - len(out), skip)).fetchall()
            if skip:
                skip = max(0, skip - self.db.execute(
                    f"SELECT count(*) FROM {table} WHERE name=? AND (expiry=0 OR expiry>?)",
                    (name, at)).fetchone()[0])
        for bid, width, expiry, n, live in self.blocks(name, at):
            if len(out) >= limit:
                break
            if skip >= live:
                skip -= live
                continue
            out += [(unpack(k), expiry)
                    for k in self._live_keys(bid, width, n, live, skip, limit - len(out))]
            skip = 0
        return out

    def live(self, name: str, at: int | None = None,
             tables: tuple[str, ...] = ("elem", "cidr")) -> Iterator[tuple[str, int]]:
        """Live element rows (not blocks: see ``blocks``)."""
        at = now() if at is None else at
        for table in tables:
            yield from self.db.execute(
                f"SELECT addr, expiry FROM {table} WHERE name=? AND (expiry=0 OR expiry>?)",
                (name, at))

    def config_with_expiry(self, name: str) -> list[str]:
        """Config elements whose row carries an expiry (a ban with a timeout gave it one, before
        config elements were kept permanent): they are made permanent again at the next load."""
        return [r[0] for table in ("elem", "cidr") for r in self.db.execute(
            f"SELECT addr FROM {table} WHERE name=? AND origin & 1 AND expiry != 0", (name,))]

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
        for expiry, live in db.execute("SELECT expiry, sum(live) FROM block WHERE name=? "
                                       "GROUP BY expiry", (name,)).fetchall():
            self._count(db, name, "elem", expiry, live)

    def put(self, db: sqlite3.Connection, name: str, items: Iterable[tuple[str, int]],
            origin: int) -> None:
        """Insert (addr, expiry) pairs, or refresh their expiry and add ``origin``. For a few
        elements (bans, config entries); keeps the tally exact. An element the config lists
        is permanent: a ban with a timeout does not give it an expiry."""
        for addr, expiry in items:
            table = _table(addr)
            old = db.execute(f"SELECT expiry, origin FROM {table} WHERE name=? AND addr=?",
                             (name, addr)).fetchone()
            was = 0
            if not old and table == "elem":  # imported before: it moves from its block to a row
                hit = self._block_hit(name, pack(addr))
                if hit:
                    self._kill(db, name, hit[0], [hit[1]])
                    was = RUNTIME
            if (origin | (old[1] if old else 0)) & CONFIG:
                expiry = 0
            db.execute(
                f"INSERT INTO {table} (name, addr, expiry, origin) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name, addr) DO UPDATE SET expiry=excluded.expiry, "
                "origin=origin | excluded.origin", (name, addr, expiry, origin | was))
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
        # a config element stays permanent (see ``put``)
        upsert = "" if empty else ("ON CONFLICT(name, addr) DO UPDATE SET expiry=CASE WHEN "
                                   "origin & 1 THEN 0 ELSE excluded.expiry END, "
                                   "origin=origin | excluded.origin")
        db.executemany(
            f"INSERT INTO {table} (name, addr, expiry, origin) VALUES (?1, ?2, ?3, ?4) {upsert}",
            zip(itertools.repeat(name), addrs, itertools.repeat(expiry), itertools.repeat(origin)))

    def put_rows(self, db: sqlite3.Connection, name: str, rows: list[tuple[str, int]],
                 origin: int) -> None:
        """Bulk form of ``put`` for (addr, expiry) rows of a feed, each with its own expiry,
        none held in an imported block (a feed's set has none): one statement per table,
        and the caller runs ``retally`` once after. A config element stays permanent."""
        for table in ("elem", "cidr"):
            db.executemany(
                f"INSERT INTO {table} (name, addr, expiry, origin) VALUES (?1, ?2, ?3, ?4) "
                "ON CONFLICT(name, addr) DO UPDATE SET expiry=CASE WHEN origin & 1 THEN 0 "
                "ELSE excluded.expiry END, origin=origin | excluded.origin",
                ((name, a, e, origin) for a, e in rows if (_table(a) == table)))

    def import_keys(self, db: sqlite3.Connection, name: str, keys: list[bytes], expiry: int) -> int:
        """Record an import of single addresses of one width (``keys`` sorted and distinct, as
        from ``distinct_sorted``) as one block with ``expiry``: the bulk form of ``put`` with
        origin runtime. Addresses that already have a row keep it (expiry refreshed, origin
        runtime added); older blocks lose the ones imported again. Returns len(keys)."""
        if not keys:
            return 0
        width = len(keys[0])
        taken: list[int] = []
        for addr, old in db.execute("SELECT addr, expiry FROM elem WHERE name=?",
                                    (name,)).fetchall():
            key = pack(addr)
            i = bisect.bisect_left(keys, key)
            if len(key) == width and i < len(keys) and keys[i] == key:
                taken.append(i)
                db.execute("UPDATE elem SET expiry=?, origin = origin | ? WHERE name=? AND "
                           "addr=?", (expiry, RUNTIME, name, addr))
                self._count(db, name, "elem", old, -1)
                self._count(db, name, "elem", expiry, 1)
        older = db.execute("SELECT id, n, live FROM block WHERE name=? AND width=? AND live>0",
                           (name, width)).fetchall()
        if older:
            new = set(keys)
            for bid, n, live in older:
                with db.blobopen("block", "data", bid, readonly=True) as blob:
                    data = blob.read()
                self._kill(db, name, bid, [i // width for i in range(0, n * width, width)
                                           if data[i:i + width] in new])
        total = len(keys)
        if taken:
            drop = set(taken)
            keys = [k for i, k in enumerate(keys) if i not in drop]
        if keys:
            db.execute("INSERT INTO block (name, width, expiry, n, live, data, dead) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (name, width, expiry, len(keys), len(keys),
                                                         b"".join(keys), bytes(-(-len(keys) // 8))))
            self._count(db, name, "elem", expiry, len(keys))
        return total

    def drop_origin(self, db: sqlite3.Connection, name: str, addrs: Iterable[str],
                    origin: int) -> None:
        for addr in addrs:
            t = _table(addr)
            if origin & RUNTIME and t == "elem" and db.execute(
                    "SELECT 1 FROM elem WHERE name=? AND addr=?", (name, addr)).fetchone() is None:
                hit = self._block_hit(name, pack(addr))  # block addresses are runtime only
                if hit:
                    self._kill(db, name, hit[0], [hit[1]])
                continue
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
        db.execute("DELETE FROM block WHERE name=?", (name,))
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
            gone += db.execute("SELECT coalesce(sum(live), 0) FROM block WHERE expiry != 0 AND "
                               "expiry <= ?", (at,)).fetchone()[0]
            db.execute("DELETE FROM block WHERE live = 0 OR (expiry != 0 AND expiry <= ?)", (at,))
            for (bid,) in db.execute("SELECT id FROM block WHERE live < n").fetchall():
                keys = self.block_keys(bid)  # rewrite without the removed addresses
                db.execute("UPDATE block SET data=?, dead=?, n=live WHERE id=?",
                           (b"".join(keys), bytes(-(-len(keys) // 8)), bid))
            db.execute("DELETE FROM tally WHERE expiry != 0 AND expiry <= ?", (at,))
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

    def rebuild(self, found: dict[str, list[tuple[str, int]]], timeouts: dict[str, int | None],
                config: dict[str, set[str]]) -> Path | None:
        """Replace the record by what the kernel holds: ``found`` maps each named set to its
        (element, absolute expiry or 0) pairs. Elements the config lists get origin config, the
        others runtime. The old files are kept aside, under a name returned."""
        self.close()
        # built aside and renamed into place: a kill meanwhile leaves the old files, never a
        # half-filled record that would pass for a whole one
        from pathlib import Path  # a rebuild is rare: a ban never loads pathlib
        work = Path(self._dir) / ".recover"
        import shutil  # lazy: only a rebuild needs it, and it loads bz2 and lzma
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o750)
        fresh = SetStore(work)
        with fresh.transaction() as db:
            for name, elements in found.items():
                fresh.declare(db, name, timeouts.get(name))
                listed = config.get(name, set())
                groups: dict[tuple[int, int], list[bytes]] = {}
                rows: list[tuple[str, int, int]] = []
                for addr, expiry in elements:
                    if addr in listed:
                        rows.append((addr, 0, CONFIG))
                    elif "/" in addr:
                        rows.append((addr, expiry, RUNTIME))
                    else:
                        key = pack(addr)
                        groups.setdefault((len(key), expiry), []).append(key)
                for (_, expiry), keys in sorted(groups.items()):
                    if len(keys) >= 64:  # many of one expiry: an import, kept as a block
                        fresh.import_keys(db, name, distinct_sorted(keys), expiry)
                    else:
                        rows += [(unpack(k), expiry, RUNTIME) for k in keys]
                for addr, expiry, origin in rows:
                    fresh.put(db, name, [(addr, expiry)], origin)
        fresh.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fresh.close()
        kept = None
        if any(Path(f"{self._path}{extra}").exists() for extra in ("", "-wal", "-shm")):
            kept = self.path.with_name(f"sets.db.before-recover-{int(time.time())}")
            for extra in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self._path}{extra}", f"{kept}{extra}")
        os.replace(work / "sets.db", self._path)
        import shutil  # lazy: only a rebuild needs it, and it loads bz2 and lzma
        shutil.rmtree(work, ignore_errors=True)
        return kept

    def close(self) -> None:
        if self._db is not None:
            _OPEN.discard(self)
            self._db.close()
            self._db = None


# The records with a connection open (weakly: a record nobody holds still goes as before).
_OPEN: weakref.WeakSet[SetStore] = weakref.WeakSet()


def close_open() -> None:
    """Close every record's connection still open (closing the last one checkpoints the WAL
    and removes it). For a process that leaves by os._exit (cli/entry.py): a connection sits
    in a reference cycle (its statement cache), so without this only a full collection, which
    costs a ban 2-4 ms, would close it."""
    for record in list(_OPEN):
        record.close()


def _mapped(fn):
    """``fn`` (a SetStore method) with SQLite's and the file system's errors said as minifw's."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def rows(self: SetStore, *args, **kwargs):
            try:
                yield from fn(self, *args, **kwargs)
            except MinifwError:
                raise
            except (sqlite3.Error, OSError) as exc:
                raise self.failed(exc) from exc
        return rows

    @functools.wraps(fn)
    def wrapper(self: SetStore, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except MinifwError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise self.failed(exc) from exc
    return wrapper


# Every way into the record: SQLite's errors never leave it (the SQLite edge).
for _name in ("names", "exists", "default_timeout", "counts", "kinds", "get", "blocks",
              "block_keys", "cidrs", "page", "live", "config_with_expiry", "config_elements",
              "declare", "retally", "put", "put_sorted", "import_keys", "drop_origin", "flush",
              "forget", "compact", "rebuild"):
    setattr(SetStore, _name, _mapped(getattr(SetStore, _name)))
del _name

# ---- the import parser: inet_pton fast path, ipaddress only for CIDRs and failures -----------

Parsed = tuple[list[bytes], list[bytes], list[str], list[str]]


def parse_import(fh: TextIO, source: str, skip_invalid: bool) -> Parsed:
    """(packed IPv4 addresses, packed IPv6 addresses, CIDRs, skipped-line messages) of an
    import file, in file order, repeats kept.

    One address or CIDR per line; ``#`` starts a comment. Without ``skip_invalid`` the first bad
    line raises ConfigError naming the file and line, and nothing is applied.

    Fast path: a file of bare addresses (whole-line comments allowed) is packed with
    ``inet_pton`` inside one comprehension per IP version (no Python-level loop body); no text
    form is kept. Anything else (trailing comments, CIDRs, bad lines) takes the line-by-line
    path, which knows line numbers.
    """
    lines = fh.read().splitlines()
    pton, v4, v6 = inet_pton, AF_INET, AF_INET6
    bare = [line for line in map(str.strip, lines) if line and line[0] != "#"]
    joined = "\n".join(bare)
    if "/" not in joined and "#" not in joined:
        try:
            six = [line for line in bare if ":" in line]
            four = [line for line in bare if ":" not in line] if len(six) != len(bare) else []
            del bare, joined
            # glibc accepts only the canonical dotted quad for IPv4
            return [pton(v4, a) for a in four], [pton(v6, a) for a in six], [], []
        except (OSError, ValueError):  # ValueError: a NUL byte in the line
            pass
    return _parse_lines(lines, source, skip_invalid)


def _parse_lines(lines: list[str], source: str, skip_invalid: bool) -> Parsed:
    four: list[bytes] = []
    six: list[bytes] = []
    cidrs: list[str] = []
    skipped: list[str] = []
    pton, v4, v6 = inet_pton, AF_INET, AF_INET6
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
                    six.append(pton(v6, text))
                else:
                    four.append(pton(v4, text))
                continue
            except (OSError, ValueError):  # ValueError: a NUL byte in the line
                pass
        try:
            elem = normalise_element(text)
        except ValueError as exc:
            if not skip_invalid:
                raise ConfigError(f"{exc}; nothing was imported (use --skip-invalid to skip bad "
                                  "lines)", file=source, line=lineno) from None
            skipped.append(f"{source}:{lineno}: {exc}")
            continue
        if "/" in elem:
            cidrs.append(elem)
        else:
            (six if ":" in elem else four).append(pack(elem))
    return four, six, cidrs, skipped
