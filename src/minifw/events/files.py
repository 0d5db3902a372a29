"""events.jsonl in the state directory: written in whole lines, rotated by size; read back with
the filters of ``minifw log``.

Whole lines only: each batch is ONE write(2) of complete lines to a file opened O_APPEND, and a
file is rotated before a line would take it past ``max_bytes`` (a file reaches max_bytes
exactly, never more, unless one line alone is larger). A writer killed mid-write can leave a
tail without its newline: the next writer cuts it off before appending, and readers never
parse a line that has no newline.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from ..errors import StateError
from .record import FIELDS, parse_ts

FILE_NAME = "events.jsonl"
_CHUNK = 1 << 16


def events_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / FILE_NAME


def rotated(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
_KEYS: dict[str, str] = {}  # key -> its JSON text and the colon


def encode(event: dict[str, Any]) -> bytes:
    """One event as its line: compact JSON, ASCII only (so no byte of a line is a newline but
    the last), ending in a newline; what json.dumps(event, separators=(",", ":")) gives.

    The reader's hot path: a string that needs no escape (an address, a time, a rule id) is
    quoted as it is, and the JSON encoder does the rest (1.4x json.dumps here)."""
    parts = []
    add = parts.append
    for k, v in event.items():
        key = _KEYS.get(k)
        if key is None:
            key = _KEYS[k] = _ENCODE(str(k)) + ":"
        if v is None:
            add(key + "null")
        elif type(v) is str and v.isascii() and v.isprintable() and '"' not in v \
                and "\\" not in v:
            add(f'{key}"{v}"')
        elif type(v) is int:
            add(key + str(v))
        else:
            add(key + _ENCODE(v))
    return ("{" + ",".join(parts) + "}\n").encode()


class EventFile:
    """The writer. ``write_lines`` appends whole lines and rotates by size."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int, keep: int):
        if max_bytes < 1 or keep < 0:
            raise ValueError("max_bytes must be positive and keep not negative")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.fd = -1
        self.size = 0
        self.rotations = 0
        self._open()

    def configure(self, *, max_bytes: int, keep: int) -> None:
        """New limits (a reload): they apply from the next write."""
        self.max_bytes, self.keep = max_bytes, keep

    def _open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                              0o640)
            self.size = os.fstat(self.fd).st_size
            self._cut_partial_tail()
        except OSError as exc:
            raise StateError(f"cannot open the events file {self.path}: {exc.strerror}.") \
                from exc

    def _cut_partial_tail(self) -> None:
        """A writer killed mid-write may have left a line without its newline: remove it."""
        if not self.size:
            return
        with open(self.path, "rb") as f:
            end = self.size
            while end > 0:
                start = max(0, end - _CHUNK)
                f.seek(start)
                block = f.read(end - start)
                if end == self.size and block.endswith(b"\n"):
                    return
                at = block.rfind(b"\n")
                if at >= 0:
                    end = start + at + 1
                    break
                end = start
        os.ftruncate(self.fd, end)
        self.size = end

    def write_lines(self, lines: Iterable[bytes]) -> int:
        """Append ``lines`` (each ends in a newline); returns the bytes written. A file is
        rotated before the line that would take it past max_bytes."""
        batch: list[bytes] = []
        pending = 0
        written = 0
        for line in lines:
            if self.size + pending + len(line) > self.max_bytes and self.size + pending > 0:
                written += self._flush(batch, pending)
                batch, pending = [], 0
                self.rotate()
            batch.append(line)
            pending += len(line)
        return written + self._flush(batch, pending)

    def _flush(self, batch: list[bytes], size: int) -> int:
        if not batch:
            return 0
        data = b"".join(batch)
        try:
            done = os.write(self.fd, data)
            while done < len(data):  # only on a full disk or a signal mid-way
                done += os.write(self.fd, data[done:])
        except OSError as exc:
            # a half-written line must not stay for readers: cut back to where the batch began
            self._truncate_to(self.size)
            raise StateError(f"cannot write the events file {self.path}: {exc.strerror}.") \
                from exc
        self.size += size
        return size

    def _truncate_to(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError:
            pass

    def rotate(self) -> None:
        """events.jsonl -> .1 -> .2 ... up to .keep; the oldest beyond keep is deleted."""
        os.close(self.fd)
        self.fd = -1
        try:
            if self.keep == 0:
                os.unlink(self.path)
            else:
                for n in range(self.keep, 0, -1):
                    src = self.path if n == 1 else rotated(self.path, n - 1)
                    try:
                        os.replace(src, rotated(self.path, n))
                    except FileNotFoundError:
                        pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._open()
                raise StateError(f"cannot rotate the events file {self.path}: "
                                 f"{exc.strerror}.") from exc
        self.rotations += 1
        self._open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# The line of an event from record.build_event (FIELDS, in order), its values str, int or None.
_LINE = ('{"ts":"%s","rule":%s,"hook":%s,"priority":%s,"action":%s,"family":%s,"proto":%s,'
         '"src":%s,"dst":%s,"sport":%s,"dport":%s,"icmp_type":%s,"iif":%s,"oif":%s,"len":%s,'
         '"prefix":%s}\n')
# value -> its JSON text: a flood repeats its rule, addresses, ports and names (str and int
# values only: True == 1 would share an entry)
_JSON_OF: dict[Any, str] = {None: "null"}


def _json_of(value: Any) -> str:
    text = _JSON_OF.get(value)
    if text is None:
        text = _ENCODE(value)
        if len(_JSON_OF) >= 65536:
            _JSON_OF.clear()
            _JSON_OF[None] = "null"
        _JSON_OF[value] = text
    return text


def encode_event(e: dict[str, Any]) -> bytes:
    """``encode`` for an event as record.build_event makes it (its ts from format_ts, every
    other value str, int or None): one format, each value's JSON text looked up. Anything else
    (a hook's event with its message) takes ``encode``."""
    if len(e) != len(FIELDS):
        return encode(e)
    j = _JSON_OF.get
    v = (e["rule"], e["hook"], e["priority"], e["action"], e["family"], e["proto"], e["src"],
         e["dst"], e["sport"], e["dport"], e["icmp_type"], e["iif"], e["oif"], e["len"],
         e["prefix"])
    return (_LINE % (e["ts"], *[j(x) or _json_of(x) for x in v])).encode()


# ---- reading -------------------------------------------------------------------------------

_SINCE = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """``10m``, ``30s``, ``2h``, ``1d`` (before ``now``) or an RFC 3339 UTC time -> seconds since
    the epoch. ValueError for anything else."""
    m = _SINCE.match(text.strip())
    if m:
        return now - int(m.group(1)) * _UNIT[m.group(2)]
    ts = parse_ts(text.strip())
    if ts is None:
        raise ValueError(f"{text!r} is neither a duration (10m, 30s, 2h, 1d) nor a time like "
                         "2026-12-02T11:30:00.000000Z")
    return ts


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR or a single address; ValueError otherwise."""
    return ipaddress.ip_network(text.strip(), strict=False)


class EventFilter:
    """The filters of ``minifw log``: all given must match."""

    def __init__(self, *, rule: str | None = None, src: Any = None, dst: Any = None,
                 since: float | None = None):
        self.rule, self.src, self.dst, self.since = rule, src, dst, since

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EventFilter":
        """The filter a ``log.follow`` request carries; ValueError when a value is bad."""
        rule = data.get("rule")
        src, dst, since = data.get("src"), data.get("dst"), data.get("since")
        if rule is not None and not isinstance(rule, str):
            raise ValueError("'rule' must be a string")
        if since is not None and not isinstance(since, (int, float)):
            raise ValueError("'since' must be a number of seconds since the epoch")
        for key, value in (("src", src), ("dst", dst)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"'{key}' must be a CIDR")
        return cls(rule=rule, src=parse_network(src) if src else None,
                   dst=parse_network(dst) if dst else None, since=since)

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "src": str(self.src) if self.src else None,
                "dst": str(self.dst) if self.dst else None, "since": self.since}

    def match(self, event: dict[str, Any]) -> bool:
        if self.rule is not None and event.get("rule") != self.rule:
            return False
        if self.src is not None and not _within(event.get("src"), self.src):
            return False
        if self.dst is not None and not _within(event.get("dst"), self.dst):
            return False
        if self.since is not None:
            ts = parse_ts(event.get("ts"))  # type: ignore[arg-type]
            if ts is None or ts < self.since:
                return False
        return True


def _within(address: Any, network: Any) -> bool:
    if not isinstance(address, str):
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.version == network.version and ip in network


def decode(line: bytes) -> dict[str, Any] | None:
    """The event of one complete line; None for a line that is not a JSON object."""
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def check_directory(path: Path) -> None:
    """The events file's directory (the state directory) must be one, if it exists at all
    (no state directory yet: no events yet)."""
    folder = path.parent
    if os.path.lexists(folder) and not folder.is_dir():
        raise StateError(f"the state directory {folder} is not a directory.")


def files_newest_first(path: Path) -> list[Path]:
    found = [path] if path.exists() else []
    n = 1
    while rotated(path, n).exists():
        found.append(rotated(path, n))
        n += 1
    return found


def _open_events(path: Path) -> BinaryIO | None:
    """The file opened for reading, or None when it was rotated away meanwhile."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read the events file {path}: {exc.strerror}.") from exc


def lines_newest_first(path: Path) -> Iterator[bytes]:
    """The complete lines of one file, last first, read from its end in blocks: the last N
    events cost a block or two, whatever the file's size. A tail without its newline is being
    written (or was left by a killed writer): it is not a line."""
    f = _open_events(path)
    if f is None:
        return
    with f:
        pos = f.seek(0, os.SEEK_END)
        carry = b""  # the end of a line whose start is in an earlier block
        tail = True  # the last newline is not found yet
        while pos > 0:
            start = max(0, pos - _CHUNK)
            f.seek(start)
            pieces = (f.read(pos - start) + carry).split(b"\n")
            pos = start
            if tail:
                if len(pieces) == 1:
                    carry = pieces[0]
                    continue
                pieces.pop()  # after the last newline
                tail = False
            carry = pieces.pop(0) if pos > 0 else b""
            yield from reversed(pieces)


def iter_events(path: Path, where: EventFilter) -> Iterator[dict[str, Any]]:
    """Every event of the file and its rotated ones that matches, oldest first, streamed (for
    ``minifw log`` without -n: memory stays flat whatever the files hold)."""
    check_directory(path)
    for file in reversed(files_newest_first(path)):
        f = _open_events(file)
        if f is None:
            continue
        with f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # being written
                event = decode(line)
                if event is not None and where.match(event):
                    yield event


def read_events(path: Path, where: EventFilter, last: int | None = None) -> list[dict[str, Any]]:
    """The events of the file and its rotated ones that match, oldest first; only the ``last``
    ones when given. Reads newest first, from the end, and stops as soon as it has enough (or,
    with a ``since``, at the first event before it)."""
    check_directory(path)
    found: list[dict[str, Any]] = []
    if last == 0:
        return found
    for file in files_newest_first(path):
        stop = False
        for line in lines_newest_first(file):
            event = decode(line)
            if event is None:
                continue
            if where.since is not None:
                ts = parse_ts(event.get("ts"))  # type: ignore[arg-type]
                if ts is not None and ts < where.since:
                    stop = True  # events are written in time order
                    break
            if where.match(event):
                found.append(event)
                if last is not None and len(found) >= last:
                    stop = True
                    break
        if stop:
            break
    found.reverse()
    return found


def follow(path: Path, where: EventFilter, *, poll: float = 0.2,
           stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The events appended from now on, across rotations: when the file is replaced, the rest
    of the old one is read, then the new one from its start. ``stop()`` true ends it."""
    check_directory(path)
    f = None
    ino = None
    buf = b""
    first = True
    try:
        while stop is None or not stop():
            if f is None:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    first = False  # the file that appears is new: read it whole
                    time.sleep(poll)
                    continue
                ino = os.fstat(f.fileno()).st_ino
                if first:
                    f.seek(0, os.SEEK_END)
                    first = False
            chunk = f.read(_CHUNK)
            if chunk:
                buf += chunk
                cut = buf.rfind(b"\n") + 1
                lines, buf = buf[:cut].split(b"\n")[:-1], buf[cut:]
                for line in lines:
                    event = decode(line)
                    if event is not None and where.match(event):
                        yield event
                continue
            try:
                now_ino = os.stat(path).st_ino
            except FileNotFoundError:
                now_ino = None
            if now_ino != ino:  # rotated: the old file is complete, go on with the new one
                f.close()
                f, buf = None, b""
                continue
            if f.tell() > os.fstat(f.fileno()).st_size:  # a partial tail was cut
                f.seek(0, os.SEEK_END)
                buf = b""
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()
