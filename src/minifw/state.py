"""minifw's own state on disk: what is loaded, from which config, and the writers' lock.

One state directory per instance (``--state-dir`` / ``MINIFW_STATE_DIR``), so independent
instances, one per network namespace, run side by side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import StateError

DEFAULT_STATE_DIR = "/var/lib/minifw"
DEFAULT_CONFIG = "/etc/minifw/minifw.toml"


def state_dir_from_env(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("MINIFW_STATE_DIR") or DEFAULT_STATE_DIR)


@dataclasses.dataclass
class State:
    loaded: bool = False
    config: str | None = None
    ruleset: dict[str, Any] = dataclasses.field(default_factory=dict)  # the live ruleset, TOML form


class Store:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.file = self.dir / "state.json"

    def _ensure(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.dir}: {exc.strerror}") from exc

    def load(self) -> State:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return State()
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {self.file}: {exc}; remove it and run 'minifw up'") from exc
        return State(loaded=bool(data.get("loaded")), config=data.get("config"),
                     ruleset=data.get("ruleset") or {})

    def save(self, state: State) -> None:
        self._ensure()
        write_atomic(self.file, json.dumps(dataclasses.asdict(state), indent=1) + "\n")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize writers: one mutating command at a time per state directory."""
        self._ensure()
        with open(self.dir / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
