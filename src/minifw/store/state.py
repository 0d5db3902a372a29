"""minifw's own state on disk: what is loaded, from which config, and the writers' lock.

One state directory per instance (``--state-dir`` / ``MINIFW_STATE_DIR``), so independent
instances, one per network namespace, run side by side.

A change of the loaded ruleset reaches the kernel before ``state.json`` is rewritten. So the
state it will have is written first, to ``intent.json``, and removed once ``state.json`` says
the same (``commit``). A kill in between leaves the intent behind; the next command that takes
the lock settles it against the kernel (service.settle_intent) before anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import time
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Iterator

from ..errors import NEED_ROOT, StateError

DEFAULT_STATE_DIR = "/var/lib/minifw"
DEFAULT_CONFIG = "/etc/minifw/minifw.toml"
WAIT_NOTICE = 1.0  # seconds a writer waits for the lock before it says so
REDERIVE = "run 'minifw reload --config FILE' (or 'minifw up --config FILE') to rewrite it"


def state_dir_name(explicit: str | None) -> str:
    """The state directory's name, as ``str(state_dir_from_env(explicit))`` (no pathlib)."""
    return path_text(explicit or os.environ.get("MINIFW_STATE_DIR") or DEFAULT_STATE_DIR)


def state_dir_from_env(explicit: str | None) -> Path:
    from pathlib import Path
    return Path(state_dir_name(explicit))


def path_text(path: str | os.PathLike[str]) -> str:
    """``str(pathlib.Path(path))`` without importing pathlib (it costs ``minifw ban`` 4-6 ms of
    start-up, with urllib.parse and fnmatch): repeated slashes and '.' parts dropped, '..'
    kept, POSIX's special leading '//' kept."""
    text = os.fspath(path)
    root = "//" if text[:2] == "//" and text[2:3] != "/" else "/" if text[:1] == "/" else ""
    rest = "/".join(part for part in text.split("/") if part and part != ".")
    return root + rest if root or rest else "."


def in_dir(directory: str | os.PathLike[str], name: str) -> str:
    """``str(pathlib.Path(directory) / name)`` for a plain file name, without pathlib."""
    text = path_text(directory)
    return name if text == "." else os.path.join(text, name)


@dataclasses.dataclass
class State:
    """state.json: whether minifw is up here, from which config, and the live ruleset."""

    loaded: bool = False
    config: str | None = None
    ruleset: dict[str, Any] = dataclasses.field(default_factory=dict)  # the live ruleset, TOML form


def state_from_json(data: Any) -> State:
    """A State from the parsed JSON of state.json; ValueError saying what is wrong. Pure."""
    if not isinstance(data, dict):
        raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
    loaded, config, ruleset = data.get("loaded", False), data.get("config"), data.get("ruleset")
    if not isinstance(loaded, bool):
        raise ValueError("its 'loaded' is not true or false")
    if config is not None and not isinstance(config, str):
        raise ValueError("its 'config' is not a file name")
    if ruleset is None:
        ruleset = {}
    if not isinstance(ruleset, dict):
        raise ValueError("its 'ruleset' is not an object")
    runtime = ruleset.get("runtime", [])
    if not isinstance(runtime, list) or not all(isinstance(i, str) for i in runtime):
        raise ValueError("its 'ruleset.runtime' is not a list of rule ids")
    return State(loaded=loaded, config=config, ruleset=ruleset)


class Store:
    # Told when a writer has waited WAIT_NOTICE seconds for the lock. The wait happens before
    # any result exists, so the CLI sets this to print the notice at once; by default, silence.
    on_wait: Callable[[str], None] = staticmethod(lambda message: None)

    # The file names are str (os, os.path) and the Path forms are built on demand: pathlib is
    # no part of a ban's start-up.
    def __init__(self, directory: str | os.PathLike[str]):
        self._dir = path_text(directory)
        self._file = in_dir(self._dir, "state.json")
        self._intent_file = in_dir(self._dir, "intent.json")
        self._lock_file = in_dir(self._dir, "lock")

    @property
    def dir(self) -> Path:
        from pathlib import Path
        return Path(self._dir)

    @property
    def dir_text(self) -> str:
        """The state directory as text: for the paths a ban builds (no pathlib)."""
        return self._dir

    @property
    def file(self) -> Path:
        from pathlib import Path
        return Path(self._file)

    @property
    def intent_file(self) -> Path:
        from pathlib import Path
        return Path(self._intent_file)

    @property
    def lock_file(self) -> Path:
        from pathlib import Path
        return Path(self._lock_file)

    def _ensure(self) -> None:
        try:
            os.makedirs(self._dir, mode=0o750, exist_ok=True)
        except OSError as exc:
            raise _state_file_error(exc, self._dir, "create state directory", "") from exc

    def _read(self, path: str) -> State | None:
        try:
            with open(path) as fh:
                data = json.loads(fh.read())
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StateError(f"{path} is a directory, not minifw's state file; move it away and "
                             f"{REDERIVE}") from None
        except PermissionError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}; {NEED_ROOT}") from exc
        except (OSError, ValueError, RecursionError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else f"it is not JSON ({_why(exc)})"
            raise StateError(f"cannot read {path}: {why}; {REDERIVE}") from None
        try:
            return state_from_json(data)
        except ValueError as exc:
            raise StateError(f"{path} is damaged: {exc}; {REDERIVE}") from None

    def load(self) -> State:
        return self._read(self._file) or State()

    def load_or_none(self) -> State | None:
        """The state, or None when state.json is damaged (for the commands that rewrite it)."""
        try:
            return self.load()
        except StateError:
            return None

    def save(self, state: State) -> None:
        self._ensure()
        _replace(self._file, _dumps(state) + "\n")

    # ---- the intent: the state a ruleset change in flight will leave -----------------------
    def write_intent(self, op: str, state: State, config_text: str | None = None) -> None:
        """Before the kernel changes: the state it will have (and, for add/delete, the config
        file's new text)."""
        self._ensure()
        _replace(self._intent_file, f'{{"op": {json.dumps(op)}, "config_text": '
                                   f'{json.dumps(config_text)}, "state": {_dumps(state)}}}\n')

    def read_intent(self) -> tuple[str, State, str | None] | None:
        """(op, state, config text) of a change interrupted by a kill, or None."""
        try:
            with open(self._intent_file) as fh:
                data = json.loads(fh.read())
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StateError(f"{self._intent_file} is a directory, not minifw's (it holds no "
                             "state); move it away") from None
        except PermissionError as exc:
            raise StateError(f"cannot read {self._intent_file}: {exc.strerror}; "
                             f"{NEED_ROOT}") from exc
        except (OSError, ValueError, RecursionError) as exc:
            raise StateError(f"{self._intent_file} (a ruleset change in flight) is damaged: "
                             f"{_why(exc)}; {REDERIVE}") from None
        try:
            if not isinstance(data, dict) or data.get("op") not in ("load", "edit", "down") \
                    or not (data.get("config_text") is None
                            or isinstance(data["config_text"], str)):
                raise ValueError("it has the wrong shape")
            return data["op"], state_from_json(data.get("state")), data.get("config_text")
        except ValueError as exc:
            raise StateError(f"{self._intent_file} (a ruleset change in flight) is damaged: "
                             f"{exc}; {REDERIVE}") from None

    def clear_intent(self) -> None:
        try:
            os.unlink(self._intent_file)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise StateError(f"{self._intent_file} is a directory, not minifw's (it holds no "
                             "state); move it away") from None
        except OSError as exc:
            raise _state_file_error(exc, self._intent_file, "remove", "") from exc

    def commit(self, state: State) -> None:
        """The kernel took the change: state.json says so, and the intent goes."""
        self.save(state)
        self.clear_intent()

    # ---- the lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize writers: one mutating command at a time per state directory. The holder's
        pid is in the lock file, for the notice of a writer that waits."""
        self._ensure()
        try:
            fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise _state_file_error(exc, self._lock_file, "open the lock file",
                                    "not minifw's lock file (it holds no state); remove that "
                                    "directory") from exc
        try:
            try:
                self._acquire(fd)
                # written over, then cut to length: truncating to 0 and writing makes ext4
                # flush the file at close (its replace-by-truncate heuristic), 3-4 ms a command
                mine = f"{os.getpid()}\n".encode()
                os.pwrite(fd, mine, 0)
                os.ftruncate(fd, len(mine))
            except OSError as exc:
                raise _state_file_error(exc, self._lock_file, "take the lock", "") from exc
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + WAIT_NOTICE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        # the first line: a holder writing meanwhile has its pid in front of the old one's rest
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").partition("\n")[0].strip()
        self.on_wait(f"waiting for another minifw command (pid "
                     f"{holder if holder.isdigit() else 'unknown'})")
        fcntl.flock(fd, fcntl.LOCK_EX)


def _dumps(state: State) -> str:
    # no dataclasses.asdict: its deep copy of a 10k-rule ruleset costs more than the write
    return json.dumps({"loaded": state.loaded, "config": state.config,
                       "ruleset": state.ruleset}, separators=(",", ":"))


def _replace(path: str, text: str) -> None:
    try:
        _write_atomic(path, text)
    except OSError as exc:
        raise _state_file_error(exc, path, "write",
                                "not minifw's; move it away and run the command again") from exc


def _state_file_error(exc: OSError, path: str, doing: str, if_directory: str) -> StateError:
    """A state file's OSError, said for the operator: a directory in the file's place, a lack
    of privilege, or the system's reason."""
    if isinstance(exc, IsADirectoryError) and if_directory:
        return StateError(f"{path} is a directory, {if_directory}")
    why = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StateError(f"cannot {doing} {path}: {why}; {NEED_ROOT}")
    return StateError(f"cannot {doing} {path}: {why}")


def _why(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _temporary_beside(path: str) -> tuple[int, str]:
    """What tempfile.mkstemp(dir=<path's directory>, prefix=f".{<path's name>}.") gives (a new file, 0600,
    O_EXCL, a random name), without importing tempfile and, through it, shutil, random, bz2 and
    lzma: ``minifw ban`` writes its journal through here, and its start-up is its cost."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    parent, name = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(parent, f".{name}.{os.urandom(6).hex()}")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", parent or ".")


def write_atomic(path: str | os.PathLike[str], text: str | bytes) -> None:
    """Write through a temporary file and rename, so readers never see half a file. A failure
    is a StateError naming the file."""
    try:
        _write_atomic(path, text)
    except OSError as exc:
        raise _state_file_error(exc, path_text(path), "write",
                                "not a file minifw may replace; move it away") from exc


def _write_atomic(path: str | os.PathLike[str], text: str | bytes) -> None:
    path = path_text(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
